"""JSONL in and out, the one place that does it: streaming reads, ids, resume, shards, rejects.

Every stage reads records and writes records through `StageIO`, so resume, torn-line recovery,
provenance checks, sharding and bad-input handling behave the same everywhere. Memory stays
flat in the input size: records are read one line at a time and written per batch.

- `reading`: sources, fields and their types, ids, shards;
- `writing`: the locked output and its meta, rejects, atomic whole-file writes;
- `stage_io`: `StageIO`, which wires both for a stage run.
"""

from palign_cli.records.reading import (
    DEFAULT_FIELDS,
    STDIO,
    OnInvalid,
    Record,
    Shard,
    batched,
    check_role,
    count_lines,
    display_name,
    dumps,
    field_names,
    implicit_id,
    iter_items,
    iter_lines,
    parse_line,
    read_output,
    read_records,
    record_id,
    resolve_field,
    short_hash,
)
from palign_cli.records.stage_io import StageIO
from palign_cli.records.writing import (
    Finished,
    JsonlSink,
    RejectSink,
    cut_torn_line,
    input_digest,
    is_regular_output,
    meta_path,
    rejects_path,
    same_file,
    write_atomic,
    write_json,
)

__all__ = [
    "DEFAULT_FIELDS", "STDIO", "Finished", "JsonlSink", "OnInvalid", "Record", "RejectSink", "Shard", "StageIO",
    "batched", "check_role", "count_lines", "cut_torn_line", "display_name", "dumps", "field_names",
    "implicit_id", "input_digest", "is_regular_output", "iter_items", "iter_lines", "meta_path", "parse_line",
    "read_output", "read_records", "record_id", "rejects_path", "resolve_field", "same_file", "short_hash",
    "write_atomic", "write_json",
]
