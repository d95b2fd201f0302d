"""`palign truncate` through the real CLI on the tiny model: records, both judges, bounds, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import data_file
from typer.testing import CliRunner

from palign_cli.cli import app
from palign_cli.stages.search import BinarySearch, max_binary_probes
from palign_cli.units import split_units

runner = CliRunner()


def real(n: int, skip: int = 0) -> list[dict]:
    """The n shortest real CoTs (after `skip`), with only the fields truncate reads."""
    with open(data_file("teacher_cots_sample.jsonl"), encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    recs.sort(key=lambda r: len(r["long_cot"]))
    return [{k: r[k] for k in ("id", "question", "long_cot")} for r in recs[skip:skip + n]]


def write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def truncate(model, inp, out, *extra):
    args = ["truncate", "-i", str(inp), "-o", str(out), "--model", model, "--backend", "hf",
            "--dtype", "float32", *extra]
    return runner.invoke(app, args)


@pytest.fixture
def three(tmp_path) -> Path:
    return write(tmp_path / "in.jsonl", real(3))


def replay(record: dict, enough) -> list[int]:
    """The k sequence a binary search takes given these verdicts, over the judged units."""
    search = BinarySearch(record.get("units_fit", record["total_units"]), record["total_units"])
    ks = []
    while not search.done:
        k = search.next_probe()
        ks.append(k)
        search.feed(k, enough(k))
    assert search.outcome().k == record["prefix_units"]
    assert search.outcome().is_sufficient is record["is_sufficient"]
    return ks


def check_record(r: dict, source: dict) -> None:
    units = split_units(source["long_cot"])
    assert r["total_units"] == len(units)
    assert r["prefix"] == units.prefix(r["prefix_units"]) == source["long_cot"][: units.end(r["prefix_units"])]
    assert r["prefix_ratio"] == round(r["prefix_units"] / r["total_units"], 6)
    assert r["question"] == source["question"] and r["long_cot"] == source["long_cot"]  # passed through


def test_generate_judge(tiny_model, three, tmp_path):
    out = tmp_path / "out.jsonl"
    result = truncate(tiny_model, three, out, "--max-tokens", "4")
    assert result.exit_code == 0, result.output
    records, sources = lines(out), real(3)
    assert [r["id"] for r in records] == [s["id"] for s in sources]
    for r, s in zip(records, sources, strict=True):
        check_record(r, s)
        assert r["search"] == "binary"
        assert r["judge_calls"] == len(r["trace"]) <= max_binary_probes(r["total_units"])
        verdicts = {e["k"]: e["verdict"] == "ENOUGH" for e in r["trace"]}
        assert all(isinstance(e["reply"], str) for e in r["trace"])
        assert replay(r, lambda k, v=verdicts: v[k]) == [e["k"] for e in r["trace"]]
    assert "truncate: 3 problems" in result.output and "judge calls" in result.output


def test_logprob_judge_with_curve(tiny_model, three, tmp_path):
    out = tmp_path / "out.jsonl"
    result = truncate(tiny_model, three, out, "--judge", "logprob", "--save-curve")
    assert result.exit_code == 0, result.output
    for r, s in zip(lines(out), real(3), strict=True):
        check_record(r, s)
        curve = r["curve"]
        assert len(curve) == r["total_units"] and all(0.0 <= p <= 1.0 for p in curve)
        for e in r["trace"]:
            assert e["p_enough"] == curve[e["k"] - 1]
            assert e["verdict"] == ("ENOUGH" if e["p_enough"] >= 0.5 else "NOT_ENOUGH")
        assert replay(r, lambda k, c=curve: c[k - 1] >= 0.5) == [e["k"] for e in r["trace"]]
    assert "tokens read" in result.output


@pytest.mark.parametrize(
    "extra,expect_k,sufficient",
    [
        (["--threshold", "1.0"], "all", False),  # nothing reaches P = 1: the whole CoT
        (["--threshold", "0.0", "--search", "linear"], 1, True),  # first probe already enough
    ],
)
def test_threshold_extremes(tiny_model, three, tmp_path, extra, expect_k, sufficient):
    out = tmp_path / "out.jsonl"
    result = truncate(tiny_model, three, out, "--judge", "logprob", *extra)
    assert result.exit_code == 0, result.output
    for r in lines(out):
        assert r["prefix_units"] == (r["total_units"] if expect_k == "all" else expect_k)
        assert r["is_sufficient"] is sufficient
        if "linear" in extra:
            assert [e["k"] for e in r["trace"]] == [1] and r["search"] == "linear"


def test_reference_units(tiny_model, three, tmp_path):
    out = tmp_path / "out.jsonl"
    result = truncate(tiny_model, three, out, "--judge", "logprob", "--unit", "reference")
    assert result.exit_code == 0, result.output
    for r, s in zip(lines(out), real(3), strict=True):
        assert r["total_units"] == len(s["long_cot"].split(". "))
        assert s["long_cot"].startswith(r["prefix"])


def test_ratio_loads_no_model(three, tmp_path):
    out = tmp_path / "out.jsonl"
    result = truncate("/nonexistent/model", three, out, "--search", "ratio:0.5")
    assert result.exit_code == 0, result.output
    for r, s in zip(lines(out), real(3), strict=True):
        check_record(r, s)
        assert r["prefix_units"] == math.ceil(0.5 * r["total_units"])
        assert r["is_sufficient"] is None and r["trace"] == [] and r["search"] == "ratio:0.5"


@pytest.mark.parametrize("judge", ["generate", "logprob"])
def test_cots_longer_than_the_context_are_bounded(tiny_model, tmp_path, judge):
    inp = write(tmp_path / "in.jsonl", real(2, skip=4))
    out = tmp_path / "out.jsonl"
    result = truncate(tiny_model, inp, out, "--judge", judge, "--max-model-len", "700",
                      "--max-tokens", "4", "--threshold", "1.0")
    assert result.exit_code == 0, result.output
    for r in lines(out):
        assert 0 < r["units_fit"] < r["total_units"]
        assert "bounded by the context" in r["note"]
        assert all(e["k"] <= r["units_fit"] for e in r["trace"])
        if judge == "logprob":  # nothing is enough at threshold 1: the whole CoT, as the paper's fallback
            assert r["prefix_units"] == r["total_units"] and r["is_sufficient"] is False
    assert "2 bounded by the context" in result.output


def test_nothing_fits_the_context(tiny_model, three, tmp_path):
    out = tmp_path / "out.jsonl"
    result = truncate(tiny_model, three, out, "--max-model-len", "120")
    assert result.exit_code == 0, result.output
    for r in lines(out):
        assert r["units_fit"] == 0 and r["trace"] == []
        assert r["prefix_units"] == r["total_units"] and r["is_sufficient"] is False


def test_bad_records(tiny_model, tmp_path):
    good = real(1)[0]
    inp = write(tmp_path / "in.jsonl", [good, {"id": "b", "question": "q"}, {"id": "c", "question": "q", "long_cot": ["x"]}])
    out = tmp_path / "out.jsonl"
    result = truncate(tiny_model, inp, out, "--search", "ratio:0.5")
    assert result.exit_code == 2
    assert f"error: {inp}:2: field 'long_cot|Long-CoT' is missing" in result.output
    assert [r["id"] for r in lines(out)] == [good["id"]]
    result = truncate(tiny_model, inp, out, "--search", "ratio:0.5", "--skip-invalid", "--overwrite")
    assert result.exit_code == 0, result.output
    rejects = lines(f"{out}.rejects.jsonl")
    assert [(x["line"], x["field"]) for x in rejects] == [(2, "long_cot|Long-CoT"), (3, "long_cot")]
    assert "is not a string" in rejects[1]["error"]


def test_non_string_cot_exits_2(tiny_model, tmp_path):
    inp = write(tmp_path / "in.jsonl", [{"id": "c", "question": "q", "long_cot": 3}])
    result = truncate(tiny_model, inp, tmp_path / "o.jsonl", "--search", "ratio:0.5")
    assert result.exit_code == 2
    assert f"{inp}:1: field 'long_cot' is not a string" in result.output


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--save-curve"], "--save-curve needs --judge logprob"),
        (["--search", "bisect"], "--search must be binary, linear or ratio:R"),
        (["--search", "ratio:2"], "--search ratio:R needs 0 < R <= 1"),
        (["--unit", "word"], "Invalid value for '--unit'"),
    ],
)
def test_usage_errors_exit_2(tiny_model, three, tmp_path, extra, message):
    result = truncate(tiny_model, three, tmp_path / "o.jsonl", *extra)
    assert result.exit_code == 2
    assert message in result.output


def test_judge_prompt_file(tiny_model, three, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Judge {question} please.")
    result = truncate(tiny_model, three, tmp_path / "o.jsonl", "--judge-prompt", str(bad))
    assert result.exit_code == 2 and "prompt template lacks {reasoning_part}" in result.output
    good = tmp_path / "good.txt"
    good.write_text("Q: {question}\nSo far: {reasoning_part}\nReply [ENOUGH] or [NOT_ENOUGH].")
    out = tmp_path / "o.jsonl"
    result = truncate(tiny_model, three, out, "--judge-prompt", str(good), "--judge", "logprob")
    assert result.exit_code == 0, result.output
    assert json.loads(Path(f"{out}.meta.json").read_text())["config"]["judge_prompt"] == good.read_text()


def test_resume_with_another_config_is_refused(tiny_model, three, tmp_path):
    out = tmp_path / "o.jsonl"
    assert truncate(tiny_model, three, out, "--judge", "logprob").exit_code == 0
    result = truncate(tiny_model, three, out, "--judge", "logprob", "--threshold", "0.7")
    assert result.exit_code == 2
    assert "different config (threshold: 0.5 -> 0.7)" in result.output
    again = truncate(tiny_model, three, out, "--judge", "logprob")
    assert again.exit_code == 0 and "3 already done" in again.output
    assert len(lines(out)) == 3


def test_stdout_carries_only_jsonl(three):
    cmd = [sys.executable, "-m", "palign_cli", "truncate", "-i", str(three), "-o", "-", "--model", "unused",
           "--backend", "hf", "--search", "ratio:0.3"]
    proc = subprocess.run(cmd, capture_output=True, check=True)
    assert [json.loads(x)["search"] for x in proc.stdout.splitlines()] == ["ratio:0.3"] * 3
    assert b"truncate: 3 problems" in proc.stderr


def test_sigkill_mid_run_then_resume(tiny_model, tmp_path):
    sources = real(6)
    inp = write(tmp_path / "in.jsonl", sources)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "palign_cli", "truncate", "-i", str(inp), "-o", str(out), "--model", tiny_model,
           "--backend", "hf", "--dtype", "float32", "--max-active", "1", "--max-tokens", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = out.read_bytes()
    partial = before.count(b"\n")
    assert 2 <= partial < len(sources), "the run should have been killed mid-way"
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    raw = out.read_bytes()
    assert raw.startswith(before[: before.rfind(b"\n") + 1])  # finished records kept as they were
    records = [json.loads(x) for x in raw.splitlines()]
    assert sorted(r["id"] for r in records) == sorted(s["id"] for s in sources)
    assert f"{partial} already done" in result.stderr
    for r in records:
        check_record(r, next(s for s in sources if s["id"] == r["id"]))


@pytest.mark.slow
def test_vllm_backend_both_judges(vllm_engine, hf_engine, tmp_path):
    """The stage on a real vLLM engine; its logprob decisions agree with hf's one-pass curve."""
    from palign_cli.records import StageIO
    from palign_cli.stages.truncate import TruncateConfig, run_truncate

    inp = write(tmp_path / "in.jsonl", real(2))
    results = {}
    runs = [("vg", vllm_engine, "generate", False), ("vl", vllm_engine, "logprob", True),
            ("vp", vllm_engine, "logprob", False), ("hl", hf_engine, "logprob", True)]
    for name, engine, judge, curve in runs:
        cfg = TruncateConfig.make(model="tiny", backend=name, judge=judge, max_tokens=4, save_curve=curve)
        with StageIO(str(inp), str(tmp_path / f"{name}.jsonl"), stage="truncate", config=cfg.fingerprint(),
                     required={"question": ("question",), "cot": ("long_cot",)}) as io:
            stats = run_truncate(io, engine, cfg)
        assert stats.problems == 2
        results[name] = lines(tmp_path / f"{name}.jsonl")
    for r, s in zip(results["vg"], real(2), strict=True):
        check_record(r, s)
        assert 1 <= r["judge_calls"] <= max_binary_probes(r["total_units"])
    for v, p, h in zip(results["vl"], results["vp"], results["hl"], strict=True):
        assert [e["k"] for e in v["trace"]] == [e["k"] for e in p["trace"]] == [e["k"] for e in h["trace"]]
        assert v["prefix_units"] == p["prefix_units"] == h["prefix_units"]
        assert v["curve"] == pytest.approx(h["curve"], abs=1e-3)
        assert "curve" not in p  # vLLM without --save-curve: only the probes asked, not every cut
