"""`palign eval` through the real CLI: infer- and reference-shaped input, several files,
the summary, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from palign_cli.cli import app

runner = CliRunner()

BOX = r"so the answer is \boxed{%s}."

# Three infer-shaped problems, n=3: correct counts 2, 3, 0.
INFER = [
    {"id": "p1", "question": "1+1?", "answer": "2", "outputs": [BOX % 2, BOX % 3, BOX % "2"], "finish_reasons": ["stop", "stop", "length"], "output_tokens": [10, 20, 30]},
    {"id": "p2", "question": "half?", "answer": r"\frac{1}{2}", "outputs": [BOX % "0.5", BOX % r"\frac12", BOX % r"\dfrac{1}{2}"], "finish_reasons": ["stop"] * 3, "output_tokens": [5, 5, 5]},
    {"id": "p3", "question": "aime", "answer": "25", "outputs": [BOX % 24, r"it is 25 or 52, so \\boxed{52}", BOX % 26], "finish_reasons": ["stop", "length", "stop"], "output_tokens": [40, 50, 60]},
]
# Reference-shaped: `output` list, numeric gold, no id, n=2.
REFERENCE = [
    {"question": "amc", "answer": 27.0, "output": [BOX % 27, BOX % 28]},
    {"question": "amc2", "answer": 3, "output": [BOX % 3, BOX % 3]},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(*args: str, workers: int = 1):
    """One worker keeps these tests light on a shared machine; the pool itself is tested in
    test_grading.py, and the several-files test runs two."""
    return runner.invoke(app, ["eval", "--workers", str(workers), *args])


def test_infer_output_is_graded_with_exact_pass_at_k(tmp_path):
    src = write_jsonl(tmp_path / "aime.jsonl", INFER)
    out, summary = tmp_path / "graded.jsonl", tmp_path / "summary.json"
    result = run("-i", str(src), "-o", str(out), "--summary", str(summary), "--k", "1,3")
    assert result.exit_code == 0, result.output
    recs = {r["id"]: r for r in read_jsonl(out)}
    assert recs["p1"]["labels"] == [1, 0, 1]
    assert recs["p2"]["labels"] == [1, 1, 1]
    assert recs["p3"]["labels"] == [0, 0, 0]
    assert recs["p1"]["preds"] == ["2", "3", "2"]
    assert recs["p1"]["grade_status"] == ["ok"] * 3
    assert recs["p1"]["pass_at"] == {"1": pytest.approx(2 / 3), "3": 1.0}
    assert recs["p3"]["pass_at"] == {"1": 0.0, "3": 0.0}
    assert recs["p1"]["source_file"] == str(src)
    assert recs["p1"]["outputs"] == INFER[0]["outputs"]  # input fields pass through
    s = json.loads(summary.read_text())
    row = s["files"][str(src)]
    assert (row["n_problems"], row["n_samples"]) == (3, 9)
    assert row["pass@1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert row["pass@3"] == pytest.approx(2 / 3)
    assert row["mean_acc"] == pytest.approx(5 / 9)
    assert row["truncated_share"] == pytest.approx(2 / 9)
    assert row["mean_output_tokens"] == pytest.approx(225 / 9)
    assert row["timeouts"] == 0 and row["ungradable_golds"] == 0
    assert row["possible_false_negatives"] == 1  # r"it is 25 or 52, so \\boxed{52}"
    assert row["no_answer"] == 0
    assert "pass@3" in result.stderr and "aime" in result.stderr


def test_reference_files_with_output_lists_and_numeric_golds(tmp_path):
    src = write_jsonl(tmp_path / "amc.jsonl", REFERENCE)
    out, summary = tmp_path / "graded.jsonl", tmp_path / "s.json"
    result = run("-i", str(src), "-o", str(out), "--summary", str(summary))
    assert result.exit_code == 0, result.output
    recs = read_jsonl(out)
    assert [r["labels"] for r in recs] == [[1, 0], [1, 1]]
    assert all(r["id"] for r in recs) and recs[0]["id"] != recs[1]["id"]  # ids made up, stable
    assert recs[0]["pass_at"] == {"1": 0.5, "2": 1.0}  # default: 1 and n
    row = json.loads(summary.read_text())["files"][str(src)]
    assert row["pass@1"] == pytest.approx(0.75) and row["pass@2"] == pytest.approx(1.0)
    assert row["truncated_share"] is None and row["mean_output_tokens"] is None


def test_stdout_carries_only_jsonl(tmp_path):
    src = write_jsonl(tmp_path / "aime.jsonl", INFER)
    result = run("-i", str(src))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(json.loads(line)["labels"] for line in lines)
    assert "average" not in result.stdout and "eval:" in result.stderr


def test_several_files_one_table_and_ids_that_collide(tmp_path):
    """Two runs of the same benchmark share ids; both are graded and resumed apart."""
    a = write_jsonl(tmp_path / "model_a.jsonl", INFER)
    b = write_jsonl(tmp_path / "model_b.jsonl", [{**r, "outputs": [BOX % r["answer"]] * 3} for r in INFER])
    ref = write_jsonl(tmp_path / "amc.jsonl", REFERENCE)
    out, summary = tmp_path / "graded.jsonl", tmp_path / "s.json"
    args = ["-i", str(a), "-i", str(b), "-i", str(ref), "-o", str(out), "--summary", str(summary), "--k", "1,3"]
    result = run(*args, workers=2)
    assert result.exit_code == 0, result.output
    recs = read_jsonl(out)
    assert len(recs) == 8
    assert {r["source_file"] for r in recs} == {str(a), str(b), str(ref)}
    s = json.loads(summary.read_text())
    assert list(s["files"]) == [str(a), str(b), str(ref)]
    assert s["files"][str(b)]["pass@1"] == pytest.approx(1.0)
    assert s["files"][str(ref)]["pass@3"] is None and s["files"][str(ref)]["skipped_for_k"]["3"] == 2
    assert s["average"]["pass@1"] == pytest.approx(((5 / 9) + 1.0 + 0.75) / 3)
    assert s["average"]["n_problems"] == 8
    for name in ("model_a", "model_b", "amc", "average"):
        assert name in result.stderr
    assert "leaves out 2 of 2 problems" in result.stderr

    # crash after the first file: only model_a's records survive, plus a torn line
    kept = [line for line in out.read_text().splitlines() if str(a) in json.loads(line)["source_file"]]
    out.write_text("\n".join(kept) + "\n" + '{"id": "p1", "torn')
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert "3 already done" in again.stderr
    recs = read_jsonl(out)
    assert len(recs) == 8
    assert sorted((r["source_file"], r["id"]) for r in recs) == sorted({(r["source_file"], r["id"]) for r in recs})
    assert json.loads(summary.read_text())["files"] == s["files"]  # resumed records counted too


def test_resume_summary_covers_records_from_the_earlier_run(tmp_path):
    src = write_jsonl(tmp_path / "aime.jsonl", INFER)
    out, summary = tmp_path / "graded.jsonl", tmp_path / "s.json"
    first = run("-i", str(src), "-o", str(out))
    assert first.exit_code == 0, first.output
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n")  # as if interrupted after one record
    again = run("-i", str(src), "-o", str(out), "--summary", str(summary))
    assert again.exit_code == 0, again.output
    assert "1 already done" in again.stderr and "2 problems" in again.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["p1", "p2", "p3"]
    row = json.loads(summary.read_text())["files"][str(src)]
    assert row["n_problems"] == 3 and row["mean_acc"] == pytest.approx(5 / 9)


def test_resume_with_other_settings_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "aime.jsonl", INFER)
    out = tmp_path / "graded.jsonl"
    assert run("-i", str(src), "-o", str(out), "--k", "1,3").exit_code == 0
    result = run("-i", str(src), "-o", str(out), "--k", "1")
    assert result.exit_code == 2
    assert "different config" in result.stderr and "k:" in result.stderr
    assert run("-i", str(src), "-o", str(out), "--k", "1", "--overwrite").exit_code == 0


def test_k_above_n_is_null_per_record_and_reported(tmp_path):
    src = write_jsonl(tmp_path / "aime.jsonl", INFER)
    out, summary = tmp_path / "g.jsonl", tmp_path / "s.json"
    result = run("-i", str(src), "-o", str(out), "--summary", str(summary), "--k", "1,5")
    assert result.exit_code == 0, result.output
    assert all(r["pass_at"]["5"] is None for r in read_jsonl(out))
    row = json.loads(summary.read_text())["files"][str(src)]
    assert row["pass@5"] is None and row["skipped_for_k"] == {"1": 0, "5": 3}
    assert "pass@5 leaves out 3 of 3 problems" in result.stderr


def test_pathological_sample_times_out_and_is_counted(tmp_path):
    rows = [{"id": "t", "answer": "5", "outputs": [r"\boxed{9^{9^{9^{9^{9}}}}}", BOX % 5]}]
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    out, summary = tmp_path / "g.jsonl", tmp_path / "s.json"
    result = run("-i", str(src), "-o", str(out), "--summary", str(summary), "--timeout", "1")
    assert result.exit_code == 0, result.output
    rec = read_jsonl(out)[0]
    assert rec["grade_status"] == ["timeout", "ok"] and rec["labels"] == [0, 1]
    assert json.loads(summary.read_text())["files"][str(src)]["timeouts"] == 1
    assert "1 timeouts" in result.stderr


def test_custom_field_names(tmp_path):
    rows = [{"id": "q", "gt": "4", "responses": [BOX % 4, BOX % 5]}]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    result = run("-i", str(src), "--answer-field", "gt", "--outputs-field", "responses")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["labels"] == [1, 0]


@pytest.mark.parametrize(
    "line,message",
    [
        (b'{"id": "x", "answer": "1", "outputs": ["a"]', ":2: is not valid JSON"),
        (b'{"id": "x", "outputs": ["a"]}', ":2: field 'answer|gold' is missing"),
        (b'{"id": "x", "answer": "1"}', ":2: field 'outputs|output' is missing"),
        (b'{"id": "x", "answer": "1", "outputs": 7}', ":2: field 'outputs' must be a list of strings"),
        (b'{"id": "x", "answer": "1", "outputs": ["a", null]}', ":2: field 'outputs' entry 1 is NoneType"),
        (b'{"id": "x", "answer": ["1"], "outputs": ["a"]}', ":2: field 'answer' must be a string or a number"),
        (b'{"id": "x", "answer": "1", "outputs": ["a", "b"], "finish_reasons": ["stop"]}', ":2: field 'finish_reasons' must be a list with one entry per sample"),
        (b'{"id": "x", "answer": "", "outputs": ["a"]}', ":2: field 'answer' is empty"),
    ],
)
def test_bad_input_is_one_line_error_with_exit_2(tmp_path, line, message):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(orjson.dumps(INFER[0]) + b"\n" + line + b"\n" + orjson.dumps(INFER[1]) + b"\n")
    out = tmp_path / "g.jsonl"
    result = run("-i", str(src), "-o", str(out))
    assert result.exit_code == 2, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"{src}{message}" in error[0], result.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["p1"]  # what came before is kept


def test_skip_invalid_sets_bad_records_aside(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(orjson.dumps(INFER[0]) + b"\n" + b'{"id": "x", "answer": "1", "outputs": 7}\nnot json\n' + orjson.dumps(INFER[1]) + b"\n")
    out = tmp_path / "g.jsonl"
    result = run("-i", str(src), "-o", str(out), "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_jsonl(out)] == ["p1", "p2"]
    rejects = read_jsonl(tmp_path / "g.jsonl.rejects.jsonl")
    assert [r["line"] for r in rejects] == [2, 3]
    assert "2 rejected" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["-i", "{a}", "-i", "{a}"], "given twice"),
        (["-i", "{a}", "--k", "0"], "--k values must be >= 1"),
        (["-i", "{a}", "-o", "{a}"], "same file"),
        (["-i", "{a}", "--summary", "{a}"], "would overwrite"),
        (["-i", "{missing}"], "no such file"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    a = write_jsonl(tmp_path / "a.jsonl", INFER)
    args = [x.format(a=a, missing=tmp_path / "nope.jsonl") for x in args]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
