"""The executable itself: help, version, error paths with exact exit codes, pipes, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from palign_cli import __version__
from palign_cli.cli import app

runner = CliRunner()
STAGES = ["truncate", "align", "train", "infer", "eval"]


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for stage in STAGES:
        assert stage in result.output


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_has_help(stage):
    result = runner.invoke(app, [stage, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"palign {__version__}"


def test_python_dash_m_and_no_heavy_imports():
    code = "import sys, runpy; sys.argv=['palign','--help']\ntry:\n runpy.run_module('palign_cli', run_name='__main__')\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False False")


@pytest.fixture
def bench(tmp_path):
    p = tmp_path / "bench.jsonl"
    p.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i}+{i}?", "answer": str(2 * i)}) + "\n" for i in range(6)))
    return p


def infer_args(model, inp, out, *extra):
    return ["infer", "-i", str(inp), "-o", str(out), "--model", model, "--backend", "hf",
            "--max-tokens", "8", "--n", "2", "--dtype", "float32", *extra]


def test_malformed_line_exits_2_and_keeps_output(tiny_model, bench, tmp_path):
    out = tmp_path / "out.jsonl"
    assert runner.invoke(app, infer_args(tiny_model, bench, out)).exit_code == 0
    before = out.read_bytes()
    with open(bench, "a") as f:
        f.write('{"id": "bad", "question": \n')
    result = runner.invoke(app, infer_args(tiny_model, bench, out))
    assert result.exit_code == 2
    assert f"error: {bench}:7: is not valid JSON" in result.output
    assert out.read_bytes() == before


def test_missing_field_exits_2(tiny_model, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "question": "q"}\n{"id": "b", "text": "q"}\n')
    result = runner.invoke(app, infer_args(tiny_model, inp, tmp_path / "o.jsonl"))
    assert result.exit_code == 2
    assert f"{inp}:2: field 'question|problem' is missing" in result.output
    assert len(lines(tmp_path / "o.jsonl")) == 1  # the good record before it was written


def test_skip_invalid_sets_bad_records_aside(tiny_model, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "question": "q"}\n{"id": "b", "text": "q"}\n{"id": "c", "problem": "r"}\n')
    out = tmp_path / "o.jsonl"
    result = runner.invoke(app, infer_args(tiny_model, inp, out, "--skip-invalid"))
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in lines(out)] == ["a", "c"]
    assert lines(f"{out}.rejects.jsonl")[0]["line"] == 2


def test_bad_shard_exits_2(tiny_model, bench, tmp_path):
    result = runner.invoke(app, infer_args(tiny_model, bench, tmp_path / "o.jsonl", "--shard", "4/4"))
    assert result.exit_code == 2
    assert "--shard I/N needs 0 <= I < N, got '4/4'" in result.output


def test_config_mismatch_on_resume_exits_2(tiny_model, bench, tmp_path):
    out = tmp_path / "o.jsonl"
    assert runner.invoke(app, infer_args(tiny_model, bench, out)).exit_code == 0
    result = runner.invoke(app, infer_args(tiny_model, bench, out, "--temperature", "0.9"))
    assert result.exit_code == 2
    assert "different config (temperature: 0.6 -> 0.9)" in result.output
    assert len(lines(out)) == 6


def test_missing_input_file_exits_2(tiny_model, tmp_path):
    result = runner.invoke(app, infer_args(tiny_model, tmp_path / "nope.jsonl", tmp_path / "o.jsonl"))
    assert result.exit_code == 2
    assert "nope.jsonl: no such file" in result.output


def test_stdin_to_stdout_pipe_carries_only_jsonl(tiny_model, bench):
    cmd = [sys.executable, "-m", "palign_cli", *infer_args(tiny_model, "-", "-")]
    proc = subprocess.run(cmd, input=bench.read_bytes(), capture_output=True, check=True)
    records = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["id"] for r in records] == [f"p{i}" for i in range(6)]
    assert all(len(r["outputs"]) == 2 for r in records)
    assert b"infer: 6 problems" in proc.stderr


def test_shards_concatenate_to_the_whole(tiny_model, bench, tmp_path):
    ids = []
    for i in range(3):
        out = tmp_path / f"s{i}.jsonl"
        assert runner.invoke(app, infer_args(tiny_model, bench, out, "--shard", f"{i}/3")).exit_code == 0
        ids += [r["id"] for r in lines(out)]
    assert sorted(ids) == sorted(f"p{i}" for i in range(6))


def test_sigkill_mid_run_then_resume_gives_every_id_once(tiny_model, tmp_path):
    inp = tmp_path / "in.jsonl"
    n = 40
    inp.write_text("".join(json.dumps({"id": f"r{i}", "question": "x " * 50 + str(i)}) + "\n" for i in range(n)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "palign_cli", "infer", "-i", str(inp), "-o", str(out), "--model", tiny_model,
           "--backend", "hf", "--max-tokens", "64", "--n", "1", "--batch-size", "1", "--dtype", "float32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = out.read_bytes().count(b"\n")
    assert 3 <= partial < n, "the run should have been killed mid-way"
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    ids = [json.loads(x)["id"] for x in raw.splitlines()]
    assert sorted(ids) == sorted(f"r{i}" for i in range(n))
    assert f"{partial} already done" in result.stderr or "already done" in result.stderr
