"""Provenance (issue 10): an output derives from exactly its current config, model and input.

Each defect the issue reproduced on main has a test here, through the real CLI. Most use a
scripted engine registered like any other (`--backend scripted`) with `--model` pointing at a
real model directory, so the model's identity is real and no weights are loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from palign_cli import backends
from palign_cli.backends.base import Backend, Sample
from palign_cli.cli import app
from palign_cli.tiny_model import build_tiny_model

runner = CliRunner()


class Echo(Backend):
    """Answers every prompt with the model directory it was built for and a counter."""

    name = "scripted"

    def __init__(self, options):
        self.model = options.model
        self.calls = 0

    def _generate(self, prompts, params):
        self.calls += len(prompts)
        return [[Sample(f"{self.model} says \\boxed{{1}}", "stop", 4)] * p.n for p in params]

    def score(self, prompts, candidates):
        return [[-0.1, -3.0] for _ in prompts]


@pytest.fixture(autouse=True)
def scripted():
    backends.register(backends.Engine("scripted", Echo))
    yield
    backends.unregister("scripted")


@pytest.fixture
def model_dir(tiny_model, tmp_path) -> Path:
    dest = tmp_path / "model"
    shutil.copytree(tiny_model, dest)
    return dest


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def problems(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "question": f"{prefix} question {i}?", "answer": "1"} for i in range(n)]


def infer(model, inp, out, *extra):
    return runner.invoke(app, ["infer", "--backend", "scripted", "--model", str(model), "-i", str(inp), "-o", str(out), "--n", "2", *extra])


# ----- 2. a stage resumes across a changed model or input ---------------------------------


def test_a_rebuilt_model_is_not_resumed(model_dir, tmp_path):
    inp, out = write(tmp_path / "a.jsonl", problems("a", 4)), tmp_path / "out.jsonl"
    assert infer(model_dir, inp, out).exit_code == 0
    kept = out.read_bytes()
    build_tiny_model(model_dir, seed=7)  # same path, new weights
    result = infer(model_dir, inp, out)
    assert result.exit_code == 2, result.output
    assert "another version of the model" in result.stderr and "--overwrite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == kept
    assert infer(model_dir, inp, out, "--overwrite").exit_code == 0


def test_the_same_model_spelled_two_ways_resumes(model_dir, tmp_path, monkeypatch):
    inp, out = write(tmp_path / "a.jsonl", problems("a", 3)), tmp_path / "out.jsonl"
    assert infer(str(model_dir) + "/", inp, out).exit_code == 0
    monkeypatch.chdir(model_dir.parent)
    again = infer("./model", inp, out)
    assert again.exit_code == 0, again.output
    assert "3 already done" in again.stderr


def test_another_input_into_the_same_output_is_refused(model_dir, tmp_path):
    a, b = write(tmp_path / "aime24.jsonl", problems("a", 3)), write(tmp_path / "aime25.jsonl", problems("b", 3))
    out = tmp_path / "m.jsonl"
    assert infer(model_dir, a, out).exit_code == 0
    result = infer(model_dir, b, out)
    assert result.exit_code == 2, result.output
    assert "3 finished record(s) whose ids are not in" in result.stderr and "another input" in result.stderr
    assert [r["id"] for r in lines(out)] == ["a-0", "a-1", "a-2"]


def test_an_input_that_grows_resumes_and_an_edited_record_is_refused(model_dir, tmp_path):
    inp, out = write(tmp_path / "a.jsonl", problems("a", 3)), tmp_path / "out.jsonl"
    assert infer(model_dir, inp, out).exit_code == 0
    write(inp, problems("a", 5))  # two lines appended
    grown = infer(model_dir, inp, out)
    assert grown.exit_code == 0, grown.output
    assert "3 already done" in grown.stderr and len(lines(out)) == 5
    edited = problems("a", 5)
    edited[1]["question"] = "a different question?"
    write(inp, edited)
    result = infer(model_dir, inp, out)
    assert result.exit_code == 2
    assert f"{inp}:2: record 'a-1' changed since it was processed" in result.stderr
    assert len(lines(out)) == 5


def test_stdin_resume_is_checked_too(model_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    rows = "".join(json.dumps(r) + "\n" for r in problems("a", 3))
    assert runner.invoke(app, ["infer", "--backend", "scripted", "--model", str(model_dir), "-i", "-", "-o", str(out)], input=rows).exit_code == 0
    other = "".join(json.dumps(r) + "\n" for r in problems("b", 2))
    result = runner.invoke(app, ["infer", "--backend", "scripted", "--model", str(model_dir), "-i", "-", "-o", str(out)], input=other)
    assert result.exit_code == 2 and "another input" in result.stderr


# ----- 3. duplicate ids ------------------------------------------------------------------


def test_a_repeated_id_is_bad_input_naming_both_lines(model_dir, tmp_path):
    rows = problems("a", 3) + [{"id": "a-1", "question": "again?"}]
    inp, out = write(tmp_path / "a.jsonl", rows), tmp_path / "out.jsonl"
    result = infer(model_dir, inp, out)
    assert result.exit_code == 2
    assert f"error: {inp}:4: field 'id' repeats id 'a-1' of line 2" in result.stderr
    assert [r["id"] for r in lines(out)] == ["a-0", "a-1", "a-2"]  # records before it are kept
    skipped = infer(model_dir, inp, tmp_path / "skip.jsonl", "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    assert [r["line"] for r in lines(tmp_path / "skip.jsonl.rejects.jsonl")] == [4]


def test_implicit_ids_tell_several_cots_of_one_question_apart(model_dir, tmp_path):
    rows = [{"question": "Same question?", "long_cot": f"Teacher {t} thinks. It is 1. Done."} for t in range(3)]
    inp, out = write(tmp_path / "cots.jsonl", rows), tmp_path / "t.jsonl"
    result = runner.invoke(app, ["truncate", "--search", "ratio:0.5", "--model", "x", "-i", str(inp), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len({r["id"] for r in lines(out)}) == 3


def test_eval_counts_each_problem_once(tmp_path):
    rows = [{"id": "p", "answer": "1", "outputs": ["\\boxed{1}"]}, {"id": "p", "answer": "1", "outputs": ["\\boxed{2}"]}]
    inp = write(tmp_path / "g.jsonl", rows)
    result = runner.invoke(app, ["eval", "--workers", "1", "-i", str(inp), "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "repeats id 'p' of line 1" in result.stderr


# ----- 4. two writers on one output ---------------------------------------------------------


def test_a_second_writer_is_refused_and_overwrite_never_touches_a_locked_output(tmp_path):
    """A real second process: `palign eval -i -` holds its output while it waits for stdin."""
    inp = write(tmp_path / "g.jsonl", [{"id": "p", "answer": "1", "outputs": ["\\boxed{1}"]}])
    out = tmp_path / "o.jsonl"
    first = subprocess.Popen(
        [sys.executable, "-m", "palign_cli", "eval", "--workers", "1", "-i", "-", "-o", str(out)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lock = Path(f"{out}.lock")
        for _ in range(300):
            if lock.exists() and lock.read_text().startswith("pid"):
                break
            time.sleep(0.1)
        for extra in ([], ["--overwrite"]):
            second = runner.invoke(app, ["eval", "--workers", "1", "-i", str(inp), "-o", str(out), *extra])
            assert second.exit_code == 2, second.output
            assert f"is being written by another palign run (pid {first.pid}" in second.stderr
        first.stdin.write(json.dumps({"id": "q", "answer": "2", "outputs": ["\\boxed{2}"]}) + "\n")
        first.stdin.close()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    assert [r["id"] for r in lines(out)] == ["q"]  # the first run's output, untouched by the second
    assert runner.invoke(app, ["eval", "--workers", "1", "-i", str(inp), "-o", str(out), "--overwrite"]).exit_code == 0


# ----- 5. -i and -o the same file by any path ------------------------------------------------


@pytest.mark.parametrize("how", ["hardlink", "symlink", "relative"])
def test_input_as_output_is_refused_before_anything_is_written(model_dir, tmp_path, monkeypatch, how):
    inp = write(tmp_path / "a.jsonl", problems("a", 2))
    before = inp.read_bytes()
    if how == "hardlink":
        out = tmp_path / "out.jsonl"
        os.link(inp, out)
    elif how == "symlink":
        out = tmp_path / "out.jsonl"
        out.symlink_to(inp)
    else:
        monkeypatch.chdir(tmp_path)
        out = Path("./sub/../a.jsonl")
        (tmp_path / "sub").mkdir()
    result = infer(model_dir, inp, out, "--overwrite")
    assert result.exit_code == 2 and "are the same file" in result.stderr
    assert inp.read_bytes() == before
    assert not Path(f"{inp}.meta.json").exists()


def test_dev_null_as_output_writes_no_meta(model_dir, tmp_path):
    def state():  # an older palign may have left these behind: they must not change
        return [os.stat(p).st_mtime_ns if os.path.exists(p) else None for p in ("/dev/null.meta.json", "/dev/null.lock")]

    before = state()
    inp = write(tmp_path / "a.jsonl", problems("a", 2))
    result = infer(model_dir, inp, "/dev/null")
    assert result.exit_code == 0, result.output
    assert state() == before
