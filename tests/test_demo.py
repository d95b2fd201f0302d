"""The whole chain on the tiny model, CPU only: truncate -> align -> train (real LLaMA-Factory)
-> infer -> eval through `palign run` with the demo config, then a rerun that skips it all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT, require_real


def test_demo_pipeline_runs_end_to_end_and_resumes(tiny_model, tmp_path):
    cli = os.environ.get("PALIGN_LLAMAFACTORY_CLI")
    if not cli or not Path(cli).exists():
        require_real("llamafactory-cli", "set PALIGN_LLAMAFACTORY_CLI (make lf installs it)")
    spec = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    spec["run_dir"] = str(tmp_path / "run")
    model = tmp_path / "model"  # a copy: rebuilt below
    shutil.copytree(tiny_model, model)
    spec["model"] = str(model)
    for key in ("cots",):
        spec["data"][key] = str(ROOT / "data" / "demo" / "cots.jsonl")
    spec["data"]["benchmarks"] = {"aime24": str(ROOT / "data" / "demo" / "aime24.jsonl")}
    pipeline = tmp_path / "demo.yaml"
    pipeline.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "palign_cli", "run", str(pipeline)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-4000:]
    run = tmp_path / "run"
    trunc = [json.loads(x) for x in (run / "truncate.jsonl").read_text().splitlines()]
    assert len(trunc) == 6 and all(r["long_cot"].startswith(r["prefix"]) for r in trunc)
    assert (run / "train" / "model" / "config.json").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert "aime24" in json.dumps(summary)
    assert "pass@1" in first.stderr and "run finished" in first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("skipped") == 5
    # the base model rebuilt at the same path: every step that reads it is redone, and infer
    # follows the trained student it reads, and eval follows infer
    rebuilt = subprocess.run([sys.executable, "-m", "palign_cli", "tiny-model", str(model), "--seed", "7"],
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    steps = [line for line in dry.stdout.splitlines() if not line.startswith(" ")]
    assert steps == ["truncate: run: model changed", "align: run: upstream step truncate redone; model changed",
                     "train: run: upstream step align redone; model changed",
                     "infer:aime24: run: upstream step train redone", "eval: run: upstream step infer:aime24 redone"]
    assert dry.stdout.count("--overwrite") == 5
