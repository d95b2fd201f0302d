"""palign infer on the real engines: n samples, finish reasons, resume with the same seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from palign_cli.prompts import solve_prompt
from palign_cli.records import StageIO
from palign_cli.stages.infer import InferConfig, build_prompt, run_infer


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.fixture
def aime(tmp_path) -> Path:
    src = (ROOT / "data" / "demo" / "aime24.jsonl").read_text().splitlines()[:6]
    p = tmp_path / "aime.jsonl"
    p.write_text("\n".join(src) + "\n")
    return p


def test_prompt_is_the_training_prompt():
    cfg = InferConfig(model="m", backend="hf")
    prompt = build_prompt("Find x.", cfg)
    assert prompt.chat() == [{"role": "user", "content": solve_prompt("Find x.")}]
    assert prompt.chat()[0]["content"] == "Please reason step by step, and put your final answer within \\boxed{}.Find x."


def run(engine, inp, out, cfg, limit=None):
    with StageIO(str(inp), str(out), stage="infer", config=cfg.fingerprint(),
                 required={"question": ("question", "problem")}) as io:
        if limit is None:
            return run_infer(io, engine, cfg, batch_size=2)
        # stop after `limit` batches, as a crash would
        batches = io.batches(2)
        for _ in range(limit):
            batch = next(batches)
            results = engine.generate([build_prompt(r.fields["question"], cfg) for r in batch],
                                      [cfg.request(r.id) for r in batch])
            io.write({**r.data, "outputs": [s.text for s in res], "finish_reasons": [s.finish_reason for s in res],
                      "output_tokens": [s.tokens for s in res]} for r, res in zip(batch, results))


@pytest.mark.parametrize("engine_name", ["hf_engine", "vllm_engine"])
def test_resumed_run_reproduces_the_same_samples(engine_name, request, aime, tmp_path):
    engine = request.getfixturevalue(engine_name)
    cfg = InferConfig.make(model="tiny", backend=engine.name, n=3, max_tokens=12, temperature=0.8, seed=11)
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    run(engine, aime, whole, cfg)
    run(engine, aime, resumed, cfg, limit=1)
    assert len(lines(resumed)) == 2
    stats = run(engine, aime, resumed, cfg)
    assert stats.records == 4
    a = {r["id"]: r["outputs"] for r in lines(whole)}
    b = {r["id"]: r["outputs"] for r in lines(resumed)}
    assert a == b and len(a) == 6
    for r in lines(whole):
        assert len(r["outputs"]) == 3 == len(r["finish_reasons"]) == len(r["output_tokens"])
        assert set(r["finish_reasons"]) <= {"stop", "length"}
        assert r["answer"] and r["url"]  # input fields pass through


def test_infer_cli_with_vllm(tiny_model, aime, tmp_path):
    from conftest import require_real, vllm_available

    if not vllm_available():
        require_real("vLLM", "not importable")
    out = tmp_path / "out.jsonl"
    # A subprocess: a second in-process vLLM engine would tear down the session engine's
    # global parallel state when it closes.
    cmd = [sys.executable, "-m", "palign_cli", "infer", "-i", str(aime), "-o", str(out), "--model", tiny_model,
           "--backend", "vllm", "--n", "2", "--max-tokens", "10", "--dtype", "float32", "--max-model-len", "4096"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    recs = lines(out)
    assert [r["id"] for r in recs] == [json.loads(x)["id"] for x in aime.read_text().splitlines()]
    assert all(len(r["outputs"]) == 2 and all(t <= 10 for t in r["output_tokens"]) for r in recs)
    assert json.loads(Path(f"{out}.meta.json").read_text())["config"]["backend"] == "vllm"
