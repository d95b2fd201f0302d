"""`palign eval`'s grading policy through the real CLI and the real math-verify: the second
opinion's flips (per sample, per rule, in the table), --strict, --count-cut, prompt_too_long
apart from cut, and resumes refused when a policy changes."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from palign_cli.cli import app

runner = CliRunner()

TIME = {"id": "t", "question": "When do they arrive?", "answer": r"\text{4:30 p.m.}",
        "outputs": [r"They arrive at \boxed{4:30}.", r"\boxed{5:30}", r"\boxed{4:30 \text{ p.m.}}"]}
TENTH = {"id": "d", "question": "Express your answer as a decimal to the nearest tenth.", "answer": "2.5",
         "outputs": [r"\boxed{2.47}", r"\boxed{2.5}"]}
CUT = {"id": "c", "question": "1+1?", "answer": "2", "outputs": [r"so far \boxed{2} but then", r"\boxed{2}", ""],
       "finish_reasons": ["length", "stop", "prompt_too_long"], "output_tokens": [50, 5, 0]}


def write_jsonl(path: Path, rows) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(*args: str):
    return runner.invoke(app, ["eval", "--workers", "1", *args])


def graded(tmp_path: Path, rows, *flags: str, name: str = "g") -> tuple[dict, dict, str]:
    src = write_jsonl(tmp_path / f"{name}_in.jsonl", rows)
    out, summary = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
    result = run("-i", str(src), "-o", str(out), "--summary", str(summary), *flags)
    assert result.exit_code == 0, result.output
    return {r["id"]: r for r in read_jsonl(out)}, json.loads(summary.read_text()), result.stderr


def test_second_opinion_flips_are_per_sample_per_rule_and_in_the_table(tmp_path):
    recs, s, stderr = graded(tmp_path, [TIME, TENTH])
    assert recs["t"]["labels"] == [1, 0, 1]
    assert recs["t"]["flipped_by"] == ["time_of_day", None, "time_of_day"]
    assert recs["d"]["labels"] == [1, 1] and recs["d"]["flipped_by"] == ["stated_tolerance", None]  # the question's precision
    row = next(iter(s["files"].values()))
    assert row["flipped"] == 3 and row["flipped_by"] == {"stated_tolerance": 1, "time_of_day": 2}
    assert s["average"]["flipped_by"] == row["flipped_by"] and s["average"]["flipped"] == 3
    assert s["config"]["strict"] is False and s["config"]["count_cut"] == "credit"
    assert "flipped" in stderr and "cut samples count as credit" in stderr


def test_strict_has_no_second_opinion(tmp_path):
    recs, s, _ = graded(tmp_path, [TIME, TENTH], "--strict")
    assert recs["t"]["labels"] == [0, 0, 0] and recs["d"]["labels"] == [0, 1]
    assert recs["t"]["flipped_by"] == [None] * 3
    row = next(iter(s["files"].values()))
    assert row["flipped"] == 0 and row["flipped_by"] == {}
    assert s["config"]["strict"] is True


def test_count_cut_credit_is_the_default_and_wrong_zeroes_cut_samples(tmp_path):
    recs, s, stderr = graded(tmp_path, [CUT], name="credit")
    assert recs["c"]["labels"] == [1, 1, 0]  # today's behaviour: a cut sample is graded as it stands
    assert "cut samples count as credit" in stderr
    recs, s, stderr = graded(tmp_path, [CUT], "--count-cut", "wrong", name="wrong")
    assert recs["c"]["labels"] == [0, 1, 0]
    assert recs["c"]["preds"][0] == "2" and recs["c"]["pass_at"]["1"] == pytest.approx(1 / 3)
    assert s["config"]["count_cut"] == "wrong" and "cut samples count as wrong" in stderr


def test_prompt_too_long_is_counted_apart_from_cut(tmp_path):
    _, s, stderr = graded(tmp_path, [CUT])
    row = next(iter(s["files"].values()))
    assert row["truncated_share"] == pytest.approx(1 / 3)  # only "length": cut by --max-tokens
    assert row["prompt_too_long"] == 1 and s["average"]["prompt_too_long"] == 1
    assert "too long" in stderr


def test_resume_under_another_policy_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [TIME])
    out = tmp_path / "g.jsonl"
    assert run("-i", str(src), "-o", str(out)).exit_code == 0
    for flags, key in ((["--strict"], "strict:"), (["--count-cut", "wrong"], "count_cut:")):
        result = run("-i", str(src), "-o", str(out), *flags)
        assert result.exit_code == 2, result.output
        assert "different config" in result.stderr and key in result.stderr
    again = run("-i", str(src), "-o", str(out))
    assert again.exit_code == 0 and "1 already done" in again.stderr


def test_graded_rules_version_is_in_the_fingerprint(tmp_path):
    from palign_cli.grading import RULES

    src = write_jsonl(tmp_path / "in.jsonl", [TIME])
    out = tmp_path / "g.jsonl"
    assert run("-i", str(src), "-o", str(out)).exit_code == 0
    meta = json.loads((tmp_path / "g.jsonl.meta.json").read_text())
    assert RULES in json.dumps(meta)


def test_a_bad_flipped_by_in_a_graded_record_is_a_one_line_error(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [TIME, TENTH])
    out = tmp_path / "g.jsonl"
    assert run("-i", str(src), "-o", str(out)).exit_code == 0
    lines = out.read_text().splitlines()
    first = json.loads(lines[0])
    first["flipped_by"] = ["made_up", None, None]
    out.write_text(json.dumps(first) + "\n")  # as if interrupted after an edited first record
    result = run("-i", str(src), "-o", str(out))
    assert result.exit_code == 2, result.output
    assert "field 'flipped_by'" in result.stderr and f"{out}:1" in result.stderr
