"""palign run's planning and skipping, and palign report's page (rendered in headless Chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, require_real
from typer.testing import CliRunner

from palign_cli.cli import app
from palign_cli.errors import UsageError
from palign_cli.pipeline import flags, load_pipeline, plan, select

runner = CliRunner()


@pytest.mark.parametrize(
    "options,expected",
    [
        ({"max_tokens": 64}, ["--max-tokens", "64"]),
        ({"save_curve": True, "overwrite": False}, ["--save-curve"]),
        ({"set": ["a=1", "b=2"]}, ["--set", "a=1", "--set", "b=2"]),
        ({"search": "ratio:0.5"}, ["--search", "ratio:0.5"]),
    ],
)
def test_yaml_keys_become_flags(options, expected):
    assert flags(options) == expected


def write_pipeline(tmp_path, **extra) -> Path:
    spec = {"run_dir": "run", "model": "m", "backend": "hf",
            "data": {"cots": str(ROOT / "data/demo/cots.jsonl"),
                     "benchmarks": {"aime24": str(ROOT / "data/demo/aime24.jsonl"), "amc23": str(ROOT / "data/demo/amc23.jsonl")}},
            **extra}
    p = tmp_path / "p.yaml"
    import yaml

    p.write_text(yaml.safe_dump(spec))
    return p


def test_plan_orders_stages_and_wires_files(tmp_path):
    spec = load_pipeline(str(write_pipeline(tmp_path, infer={"n": 2})))
    steps = plan(spec)
    assert [s.name for s in steps] == ["truncate", "align", "train", "infer:aime24", "infer:amc23", "eval"]
    run = tmp_path / "run"
    assert steps[1].argv[2] == str(run / "truncate.jsonl")
    infer = steps[3].argv
    assert infer[infer.index("--model") + 1] == str(run / "train" / "model")
    assert "--n" in infer and "2" in infer
    assert [s.name for s in select(steps, "infer", None)] == ["infer:aime24", "infer:amc23", "eval"]
    assert [s.name for s in select(steps, None, "align")] == ["truncate", "align"]
    with pytest.raises(UsageError, match="--from/--until"):
        select(steps, "distill", None)


def test_unknown_top_level_key_is_an_error(tmp_path):
    p = write_pipeline(tmp_path, trian={"epochs": 3})
    result = runner.invoke(app, ["run", str(p)])
    assert result.exit_code == 2
    assert "unknown keys ['trian']" in result.output


def test_dry_run_prints_commands(tmp_path):
    result = runner.invoke(app, ["run", str(write_pipeline(tmp_path)), "--dry-run", "--until", "truncate"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("palign truncate -i ")


def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "train" / "out").mkdir(parents=True)
    (run / "truncate.jsonl").write_text("".join(
        json.dumps({"id": i, "prefix_ratio": (i + 1) / 10, "total_units": 10, "judge_calls": 4,
                    "curve": [j / 10 for j in range(1, 11)]}) + "\n" for i in range(10)))
    (run / "align.jsonl").write_text("".join(json.dumps({"id": i, "verified": i % 2 == 0}) + "\n" for i in range(10)))
    (run / "train" / "out" / "trainer_log.jsonl").write_text(
        "".join(json.dumps({"current_steps": s, "loss": 2.0 / s}) + "\n" for s in range(1, 6)))
    (run / "summary.json").write_text(json.dumps({"files": {"aime24.jsonl": {"pass@1": 0.25, "pass@2": 0.4}}}))
    return run


def test_report_has_every_section_and_renders(tmp_path):
    run = fake_run(tmp_path)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    for alt in ("prefix ratio histogram", "judge calls per problem", "sufficiency curves", "verified share",
                "training loss", "pass at k"):
        assert f'alt="{alt}"' in page
    assert "0.250" in page and "http" not in page.split("<body>")[1]  # self-contained
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        require_real("chromium", "headless Chromium is needed to render the report (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
                    "--window-size=1100,1600", f"--screenshot={shot}", (run / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20) or []
    assert img.size == (1100, 1600)
    assert len(colors) > 50  # plots drawn, not a blank page
