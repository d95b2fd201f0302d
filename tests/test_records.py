"""Record I/O: reading, ids, resume, torn lines, shards, rejects."""

from __future__ import annotations

import json

import pytest

from palign_cli.digests import id_key
from palign_cli.errors import ConfigMismatch, InputError, UsageError
from palign_cli.records import JsonlSink, Shard, StageIO, read_records, short_hash

Q = {"question": ("question", "problem")}


def write_lines(path, lines: list[bytes | str]) -> None:
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else line.encode())
            f.write(b"\n")


def test_reader_keeps_line_numbers_and_ids(tmp_path):
    p = tmp_path / "in.jsonl"
    write_lines(p, ['{"id": 7, "question": "a"}', "", '{"problem": "b"}'])
    recs = list(read_records(str(p), required=Q))
    assert [(r.line, r.id) for r in recs] == [(1, "7"), (3, short_hash("b"))]
    assert recs[1].data["id"] == short_hash("b")  # the hash id is written out, so resume finds it
    assert recs[1].fields["question"] == "b"


@pytest.mark.parametrize(
    "line,message",
    [
        (b'{"question": "a"', "in.jsonl:2: is not valid JSON (unexpected end of data)"),
        (b'{"question": "caf\xe9"}', "in.jsonl:2: is not valid UTF-8"),
        (b'[1, 2]', "in.jsonl:2: is not a JSON object"),
        (b'{"q": "a"}', "in.jsonl:2: field 'question|problem' is missing"),
        (b'{"question": "  "}', "in.jsonl:2: field 'question' is empty"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    p = tmp_path / "in.jsonl"
    write_lines(p, ['{"question": "ok"}', line])
    with pytest.raises(InputError) as exc:
        list(read_records(str(p), required=Q))
    assert str(exc.value).endswith(message[len("in.jsonl"):])
    assert str(exc.value).startswith(str(p))
    assert exc.value.line == 2


def test_torn_last_line_is_dropped_and_redone(tmp_path):
    out = tmp_path / "out.jsonl"
    sink = JsonlSink(str(out), stage="s", config={"a": 1})
    sink.write([{"id": "1"}, {"id": "2"}])
    sink.close()
    with open(out, "ab") as f:
        f.write(b'{"id": "3", "x": "half')  # the writer died here
    sink = JsonlSink(str(out), stage="s", config={"a": 1})
    assert len(sink.done) == 2 and all(id_key("", i) in sink.done for i in ("1", "2"))
    sink.write([{"id": "3"}])
    sink.close()
    lines = out.read_bytes().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["1", "2", "3"]


def test_resume_refuses_a_different_config(tmp_path):
    out = tmp_path / "out.jsonl"
    JsonlSink(str(out), stage="infer", config={"n": 3, "t": 0.6}).write([{"id": "1"}])
    with pytest.raises(ConfigMismatch, match=r"n: 3 -> 4"):
        JsonlSink(str(out), stage="infer", config={"n": 4, "t": 0.6})
    with pytest.raises(ConfigMismatch, match="palign infer"):
        JsonlSink(str(out), stage="eval", config={"n": 3, "t": 0.6})
    assert out.read_text().count("\n") == 1  # nothing lost


def test_overwrite_starts_fresh(tmp_path):
    out = tmp_path / "out.jsonl"
    JsonlSink(str(out), stage="s", config={"n": 3}).write([{"id": "1"}])
    sink = JsonlSink(str(out), stage="s", config={"n": 4}, overwrite=True)
    assert len(sink.done) == 0
    assert out.read_bytes() == b""


def test_stageio_skips_done_and_sets_rejects_aside(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, ['{"id": "a", "question": "1"}', "not json", '{"id": "b", "question": "2"}'])
    with StageIO(str(inp), str(out), stage="s", config={}, required=Q, skip_invalid=True) as io:
        first = [r.id for r in io.pending()]
        io.write([{"id": "a", "question": "1"}])  # a stage's output carries its input fields
    assert first == ["a", "b"]
    rejects = [json.loads(x) for x in open(f"{out}.rejects.jsonl")]
    assert rejects[0]["line"] == 2 and "not valid JSON" in rejects[0]["error"]
    with StageIO(str(inp), str(out), stage="s", config={}, required=Q, skip_invalid=True) as io:
        assert [r.id for r in io.pending()] == ["b"]
        assert io.skipped == 1


def test_same_input_and_output_is_refused(tmp_path):
    p = tmp_path / "x.jsonl"
    write_lines(p, ['{"question": "a"}'])
    with pytest.raises(UsageError, match="same file"):
        StageIO(str(p), str(p), stage="s", config={}, required=Q)
    assert p.read_text().startswith('{"question"')


@pytest.mark.parametrize("text", ["2/2", "a/b", "1", "-1/3", "0/0"])
def test_bad_shard(text):
    with pytest.raises(UsageError, match="--shard"):
        Shard.parse(text)


def test_shards_partition_ids():
    ids = [f"id-{i}" for i in range(1000)]
    shards = [Shard.parse(f"{i}/4") for i in range(4)]
    owners = [[s.owns(x) for s in shards].count(True) for x in ids]
    assert owners == [1] * 1000
    sizes = [sum(s.owns(x) for x in ids) for s in shards]
    assert all(200 < n < 300 for n in sizes)
