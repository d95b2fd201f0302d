"""palign report: the page (rendered in headless Chromium), and what it reads back validated."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_real
from typer.testing import CliRunner

from palign_cli.cli import app

runner = CliRunner()


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


def test_a_directory_without_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {tmp_path}: holds no palign run (no truncate.jsonl, align.jsonl, train/, infer/ or summary.json); "
        "nothing to report")
    assert not (tmp_path / "report.html").exists()


def _replace_line(path: Path, lineno: int, text: str) -> None:
    rows = path.read_text().splitlines(keepends=True)
    rows[lineno - 1] = text
    path.write_text("".join(rows))


def _set_field(path: Path, lineno: int, **fields) -> None:
    rows = path.read_text().splitlines(keepends=True)
    _replace_line(path, lineno, json.dumps({**json.loads(rows[lineno - 1]), **fields}) + "\n")


BAD_FILES = [
    # (what to break, the expected one-line error after "error: RUN/")
    (lambda run: _set_field(run / "truncate.jsonl", 3, prefix_ratio="half"),
     "truncate.jsonl:3: field 'prefix_ratio' is not a number: 'half'"),
    (lambda run: _set_field(run / "truncate.jsonl", 2, prefix_ratio=1.5),
     "truncate.jsonl:2: field 'prefix_ratio' is not between 0 and 1: 1.5"),
    (lambda run: _set_field(run / "truncate.jsonl", 4, judge_calls="four"),
     "truncate.jsonl:4: field 'judge_calls' is not a whole number: 'four'"),
    (lambda run: _set_field(run / "truncate.jsonl", 5, curve=["x"]),
     "truncate.jsonl:5: field 'curve' is not a list of numbers or {k, p_enough} items"),
    (lambda run: _set_field(run / "truncate.jsonl", 5, curve=[{"k": 1, "p_enough": "x"}]),
     "truncate.jsonl:5: field 'curve' is not a list of numbers or {k, p_enough} items"),
    (lambda run: _replace_line(run / "truncate.jsonl", 6, '{"id": 5, "prefix_ra\n'),
     "truncate.jsonl:6: is not valid JSON"),
    (lambda run: _replace_line(run / "truncate.jsonl", 6, '[1, 2]\n'),
     "truncate.jsonl:6: is not a JSON object"),
    (lambda run: _set_field(run / "align.jsonl", 7, verified="yes"),
     "align.jsonl:7: field 'verified' is not true, false or null: 'yes'"),
    (lambda run: _set_field(run / "train" / "out" / "trainer_log.jsonl", 2, loss="nan?"),
     "train/out/trainer_log.jsonl:2: field 'loss' is not a number: 'nan?'"),
    (lambda run: (run / "summary.json").write_text('{"files": {"a.jsonl": {"pass@1": 0.2'),
     "summary.json: is not valid JSON"),
    (lambda run: (run / "summary.json").write_text(""),
     "summary.json: is not valid JSON"),
    (lambda run: (run / "summary.json").write_text('[1, 2]'),
     "summary.json: expected an object with 'files'"),
    (lambda run: (run / "summary.json").write_text('{"files": {"a.jsonl": {"pass@1": "high"}}}'),
     "summary.json: field 'files.a.jsonl.pass@1' is not a number: 'high'"),
    (lambda run: (run / "summary.json").write_text('{"files": {"a.jsonl": 3}}'),
     "summary.json: field 'files.a.jsonl' is not an object"),
]


@pytest.mark.parametrize("breakage,expected", BAD_FILES)
def test_a_bad_file_read_back_is_one_line_exit_2(tmp_path, breakage, expected):
    run = fake_run(tmp_path)
    breakage(run)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 2, result.output
    out = result.output.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"error: {run}/{expected}"), result.output
    assert not (run / "report.html").exists()


def test_a_torn_last_line_of_a_running_stage_is_skipped(tmp_path):
    run = fake_run(tmp_path)
    with open(run / "truncate.jsonl", "a") as f:
        f.write('{"id": 10, "prefix_rat')  # a stage still writing: no newline yet
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "10 problems, mean prefix ratio 0.55" in (run / "report.html").read_text()


def test_a_diverged_training_log_with_nan_loss_is_plotted_not_refused(tmp_path):
    run = fake_run(tmp_path)
    with open(run / "train" / "out" / "trainer_log.jsonl", "a") as f:
        f.write('{"current_steps": 6, "loss": NaN}\n')  # what Python's json.dumps writes
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert 'alt="training loss"' in (run / "report.html").read_text()
