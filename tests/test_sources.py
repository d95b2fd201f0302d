"""Inputs other than JSONL: Parquet, CSV, JSON arrays and Hugging Face datasets (saved to disk)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from palign_cli.cli import app
from palign_cli.errors import InputError, UsageError
from palign_cli.records import read_records
from palign_cli.sources import parse_hf_spec

ROWS = [{"id": f"r{i}", "problem": f"What is {i}+1?", "solution": str(i + 1)} for i in range(5)]
Q = {"question": ("question", "problem")}


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("hf:simplescaling/s1K-1.1", ("simplescaling/s1K-1.1", None, None)),
        ("hf:openai/gsm8k:main@test", ("openai/gsm8k", "main", "test")),
        ("hf:/data/saved@validation", ("/data/saved", None, "validation")),
    ],
)
def test_hf_spec(spec, expected):
    assert parse_hf_spec(spec) == expected


def test_parquet_csv_json_read_the_same_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    with open(tmp_path / "d.csv", "w") as f:
        f.write("id,problem,solution\n" + "".join(f'{r["id"]},"{r["problem"]}",{r["solution"]}\n' for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    for name in ("d.parquet", "d.csv", "d.json"):
        recs = list(read_records(str(tmp_path / name), required=Q))
        assert [r.id for r in recs] == [r["id"] for r in ROWS], name
        assert [r.fields["question"] for r in recs] == [r["problem"] for r in ROWS], name


def test_csv_missing_field_names_the_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,problem\na,q1\nb,\n")
    with pytest.raises(InputError, match=r"d.csv:3: field 'problem' is empty"):
        list(read_records(str(p), required=Q))


def test_saved_dataset_through_the_cli(tiny_model, tmp_path):
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["infer", "-i", f"hf:{tmp_path / 'ds'}@test", "-o", str(out), "--model", tiny_model,
                                      "--backend", "hf", "--n", "1", "--max-tokens", "4", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [r["id"] for r in ROWS]
    assert recs[0]["solution"] == "1" and len(recs[0]["outputs"]) == 1


def test_unknown_hub_dataset_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="cannot load dataset 'no-such/dataset-xyz'"):
        list(read_records("hf:no-such/dataset-xyz", required=Q))
