"""Robust edges (issue 11): every failure is one line with the right exit code, and nothing
already done is lost.

One row per defect the issue reproduced (and the neighbours found on the way), each through the
real CLI: the exit code, a single stderr line saying what and where, and the output file
unchanged or valid. Rows that need a model use a scripted engine registered like any other
(`--backend scripted`) with `--model` on the real tiny model directory, so no weights load.
Elsewhere: Ctrl-C against a slow server is in test_openai_stops.py, `palign run`'s up-front
checks in test_pipeline.py, `palign report`'s read-back checks in test_report.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from palign_cli import backends
from palign_cli.backends.base import Backend, Capabilities, Sample
from palign_cli.cli import app, guarded

runner = CliRunner()


class Scripted(Backend):
    name = "scripted"
    capabilities = Capabilities(count_tokens=True)

    def __init__(self, options):
        self.options = options

    def _generate(self, prompts, params):
        if os.environ.get("PALIGN_TEST_BUG"):
            raise ValueError("boom")
        return [[Sample("so \\boxed{1}", "stop", 3)] * p.n for p in params]

    def score(self, prompts, candidates):
        return [[-0.1, -3.0] for _ in prompts]

    def context_length(self):
        return 64 if os.environ.get("PALIGN_TEST_SHORT") else None

    def count_tokens(self, prompt):
        return sum(len(text.split()) for _, text in prompt.messages)


@pytest.fixture(autouse=True)
def scripted():
    backends.register(backends.Engine("scripted", Scripted))
    yield
    backends.unregister("scripted")


def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def problems(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"p{i}", "question": f"question {i}?", "answer": "1"} for i in range(start, start + n)]


def infer(model, inp, out, *extra, env=None):
    return runner.invoke(app, ["infer", "--backend", "scripted", "--model", str(model), "-i", str(inp), "-o", str(out), *extra], env=env)


def one_line(result) -> str:
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines() if x.strip()]


# ----- 1. fields of the wrong type ------------------------------------------------------------


@pytest.mark.parametrize("bad,expected", [
    ({"id": "p1", "question": 7}, ":2: field 'question' is not a string (it is a number)"),
    ({"id": "p1", "question": ["a", "b"]}, ":2: field 'question' is not a string (it is a list)"),
    ({"id": "p1", "question": True}, ":2: field 'question' is not a string (it is a boolean)"),
])
def test_a_field_of_the_wrong_type_is_one_line_and_earlier_records_are_written(tiny_model, tmp_path, bad, expected):
    inp = write(tmp_path / "in.jsonl", [problems(1)[0], bad, problems(1, 2)[0]])
    out = tmp_path / "out.jsonl"
    result = infer(tiny_model, inp, out, "--batch-size", "8")
    assert result.exit_code == 2
    assert one_line(result) == f"error: {inp}{expected}"
    assert ids(out) == ["p0"]
    skipped = infer(tiny_model, inp, out, "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    assert ids(out) == ["p0", "p2"]
    assert [json.loads(x)["line"] for x in Path(f"{out}.rejects.jsonl").read_text().splitlines()] == [2]


@pytest.mark.parametrize("gold,expected", [
    (["0"], "must be a string or a number, not a list"),
    ({"value": "0"}, "must be a string or a number, not an object"),
    (True, "must be a string or a number, not a boolean"),
])
def test_align_and_eval_refuse_the_same_golds(tiny_model, tmp_path, gold, expected):
    rec = {"id": "a", "question": "q?", "answer": gold, "prefix": "First,", "outputs": ["\\boxed{0}"]}
    inp = write(tmp_path / "in.jsonl", [rec])
    aligned = runner.invoke(app, ["align", "--backend", "scripted", "--model", tiny_model, "-i", str(inp), "-o", str(tmp_path / "a.jsonl")])
    graded = runner.invoke(app, ["eval", "-i", str(inp), "-o", str(tmp_path / "e.jsonl")])
    for result in (aligned, graded):
        assert result.exit_code == 2
        assert one_line(result) == f"error: {inp}:1: field 'answer' {expected}"


def test_an_int_column_of_a_parquet_file_is_one_line(tiny_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "question": [1, 2]}), path)
    result = infer(tiny_model, path, tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert one_line(result) == f"error: {path}:1: field 'question' is not a string (it is a number)"


@pytest.mark.parametrize("name,content,expected", [
    ("in.parquet", b"PAR1 this is not parquet", "is not a valid Parquet file"),
    ("in.parquet", b"", "is not a valid Parquet file"),
    ("in.csv", b"id,question\na,q?,extra\n", ":2: has 3 cells; the header names 2"),
    ("in.csv", b"id,question\na,\"q?\"x\n", ":2: is not valid CSV"),
    ("in.json", b"[{\"id\": 1,", "is not a valid JSON array"),
    ("in.json", b"[1, 2]", ":1: is not a JSON object"),
    ("in.jsonl", b"\xff\xfe\n", ":1: is not valid UTF-8"),
])
def test_a_source_that_does_not_parse_is_one_line(tiny_model, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    result = infer(tiny_model, path, tmp_path / "out.jsonl")
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith(f"error: {path}") and expected in line, line


# ----- 3. operating-system errors ------------------------------------------------------------


def test_a_full_disk_names_the_file_and_says_a_rerun_resumes(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", problems(3))
    result = infer(tiny_model, inp, "/dev/full")
    assert result.exit_code == 1
    assert one_line(result) == "error: /dev/full: No space left on device; rerun the same command to resume"


def test_an_output_where_nothing_can_be_created_is_one_line(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", problems(2))
    result = infer(tiny_model, inp, "/proc/palign-test/out.jsonl")
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith("error: /proc/palign-test") and "; rerun the same command to resume" in line, line


def test_an_output_that_is_a_directory_is_bad_usage(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", problems(2))
    (tmp_path / "d").mkdir()
    result = infer(tiny_model, inp, tmp_path / "d")
    assert result.exit_code == 2
    assert one_line(result) == f"error: -o {tmp_path / 'd'}: is a directory, expected a JSONL file"


def test_a_train_run_dir_that_is_a_file_is_one_line(tiny_model, tmp_path):
    aligned = write(tmp_path / "a.jsonl", [{"id": "a", "question": "q?", "verified": True, "target": "t"}])
    run_dir = tmp_path / "run"
    run_dir.write_text("not a directory")
    result = runner.invoke(app, ["train", "-i", str(aligned), "--model", tiny_model, "--run-dir", str(run_dir), "--dry-run"])
    assert result.exit_code in (1, 2)
    line = one_line(result)
    assert str(run_dir) in line and line.startswith("error: "), line
    assert run_dir.read_text() == "not a directory"


# ----- anything unexpected --------------------------------------------------------------------


def test_an_unexpected_exception_is_one_line_and_palign_debug_shows_the_traceback(tiny_model, tmp_path):
    inp, out = write(tmp_path / "in.jsonl", problems(2)), tmp_path / "out.jsonl"
    result = infer(tiny_model, inp, out, env={"PALIGN_TEST_BUG": "1"})
    assert result.exit_code == 1
    assert one_line(result) == ("error: unexpected ValueError: boom (a bug in palign; rerun with PALIGN_DEBUG=1 for "
                                "the traceback)")
    debug = infer(tiny_model, inp, out, env={"PALIGN_TEST_BUG": "1", "PALIGN_DEBUG": "1"})
    assert isinstance(debug.exception, ValueError)  # raised, so Python prints its traceback


def test_guarded_keeps_click_exits_and_names_os_errors_paths():
    import typer

    def exits():
        raise typer.Exit(3)

    def missing():
        open("/nonexistent/palign/file")

    app2 = typer.Typer()
    app2.command("a")(guarded(exits))
    app2.command("b")(guarded(missing, resumes=False))
    assert runner.invoke(app2, ["a"]).exit_code == 3
    result = runner.invoke(app2, ["b"])
    assert result.exit_code == 1
    assert one_line(result) == "error: /nonexistent/palign/file: No such file or directory"


# ----- 5. files read back ---------------------------------------------------------------------


@pytest.mark.parametrize("meta", [b"", b"{not json", b"[]", b'{"stage": "infer"}'])
def test_a_corrupt_or_empty_meta_file_is_one_line_and_the_output_is_kept(tiny_model, tmp_path, meta):
    inp, out = write(tmp_path / "in.jsonl", problems(2)), tmp_path / "out.jsonl"
    assert infer(tiny_model, inp, out).exit_code == 0
    kept = out.read_bytes()
    Path(f"{out}.meta.json").write_bytes(meta)
    result = infer(tiny_model, inp, out)
    assert result.exit_code == 2
    assert "unreadable or not palign's; use --overwrite to start fresh" in one_line(result)
    assert out.read_bytes() == kept


def test_an_output_being_resumed_with_a_line_that_is_not_json_is_one_line(tiny_model, tmp_path):
    inp, out = write(tmp_path / "in.jsonl", problems(3)), tmp_path / "out.jsonl"
    assert infer(tiny_model, inp, out).exit_code == 0
    out.write_text("not json\n" + out.read_text())
    kept = out.read_bytes()
    result = infer(tiny_model, inp, out)
    assert result.exit_code == 2
    assert one_line(result).startswith(f"error: {out}:1: is not valid JSON in the output being resumed")
    assert out.read_bytes() == kept


# ----- 6. the smaller ones --------------------------------------------------------------------


def test_rejects_are_rewritten_per_run_and_by_overwrite(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", [problems(1)[0], "{broken", problems(1, 1)[0]])
    out = tmp_path / "out.jsonl"
    rejects = Path(f"{out}.rejects.jsonl")
    for extra in ([], [], ["--overwrite"]):
        result = infer(tiny_model, inp, out, "--skip-invalid", *extra)
        assert result.exit_code == 0, result.output
        assert len(rejects.read_text().splitlines()) == 1
    assert ids(out) == ["p0", "p1"]


def test_rejects_with_stdout_output_are_said_and_can_be_placed(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inp = write(tmp_path / "in.jsonl", [problems(1)[0], "{broken"])
    result = infer(tiny_model, inp, "-", "--skip-invalid")
    assert result.exit_code == 0
    assert "1 rejected record(s) set aside in palign-rejects.jsonl" in result.stderr
    placed = infer(tiny_model, inp, "-", "--skip-invalid", "--rejects", str(tmp_path / "bad.jsonl"))
    assert placed.exit_code == 0
    assert f"set aside in {tmp_path / 'bad.jsonl'}" in placed.stderr
    assert json.loads((tmp_path / "bad.jsonl").read_text())["line"] == 2


def test_rejects_naming_the_input_are_refused(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", problems(2))
    kept = inp.read_bytes()
    result = infer(tiny_model, inp, tmp_path / "out.jsonl", "--skip-invalid", "--rejects", str(inp))
    assert result.exit_code == 2
    assert one_line(result) == f"error: -i {inp} and --rejects {inp} are the same file; write to another file"
    assert inp.read_bytes() == kept


def test_a_prompt_longer_than_the_context_is_counted_on_its_own(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", [{"id": "long", "question": "word " * 200}, {"id": "short", "question": "q?"}])
    out = tmp_path / "out.jsonl"
    result = infer(tiny_model, inp, out, "--n", "1", env={"PALIGN_TEST_SHORT": "1"})
    assert result.exit_code == 0, result.output
    assert "0 cut by --max-tokens, 1 with a prompt longer than the context" in result.stderr
    finish = {json.loads(x)["id"]: json.loads(x)["finish_reasons"] for x in out.read_text().splitlines()}
    assert finish == {"long": ["prompt_too_long"], "short": ["stop"]}


def test_dev_null_gets_no_meta_file(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", problems(2))
    assert infer(tiny_model, inp, "/dev/null").exit_code == 0
    assert not Path("/dev/null.meta.json").exists() and not Path("/dev/null.lock").exists()


@pytest.mark.parametrize("labels,expected", [
    (["yes"], "field 'labels'"),
    ("1", "field 'labels'"),
    ([1, 0, 1, 1, 1], "field 'labels'"),
])
def test_eval_resuming_an_output_with_odd_labels_is_one_line(tmp_path, labels, expected):
    rows = [{"id": f"p{i}", "question": "q?", "answer": "1", "outputs": ["\\boxed{1}"]} for i in range(3)]
    inp, out = write(tmp_path / "in.jsonl", rows), tmp_path / "graded.jsonl"
    assert runner.invoke(app, ["eval", "-i", str(inp), "-o", str(out)]).exit_code == 0
    graded = [json.loads(x) for x in out.read_text().splitlines()]
    graded[1]["labels"] = labels
    out.write_text("".join(json.dumps(r) + "\n" for r in graded))
    kept = out.read_bytes()
    result = runner.invoke(app, ["eval", "-i", str(inp), "-o", str(out)])
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith(f"error: {out}:2: ") and expected in line, line
    assert out.read_bytes() == kept
