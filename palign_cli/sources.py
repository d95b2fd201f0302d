"""Input sources besides JSONL: Hugging Face datasets, Parquet, CSV and JSON arrays.

Each yields (position, item) where item is raw JSONL bytes (parsed by records.py, so its
errors name the line) or an already-decoded row dict. Rows are streamed: Parquet by record
batch, CSV line by line, hub datasets with `streaming=True`, datasets saved to disk through
Arrow memory-mapping. Only a `.json` file holding one top-level array is read whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from palign_cli.errors import BackendUnavailable, InputError, UsageError

HF_PREFIX = "hf:"
DATASETS_HINT = "reading hf: inputs needs the datasets library: pip install 'palign[datasets]'"


def is_hf_spec(spec: str) -> bool:
    return spec.startswith(HF_PREFIX)


def kind_of(spec: str) -> str:
    if is_hf_spec(spec):
        return "hf"
    suffix = Path(spec).suffix.lower()
    return {".parquet": "parquet", ".csv": "csv", ".json": "json"}.get(suffix, "jsonl")


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`hf:NAME[:CONFIG][@SPLIT]` -> (name, config, split)."""
    body = spec[len(HF_PREFIX):]
    split = None
    if "@" in body:
        body, split = body.rsplit("@", 1)
    name, _, config = body.partition(":")
    if not name:
        raise UsageError(f"-i {spec!r}: expected hf:NAME[:CONFIG][@SPLIT]")
    return name, config or None, split or None


def iter_hf(spec: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import datasets
    except ImportError:
        raise BackendUnavailable(DATASETS_HINT) from None
    name, config, split = parse_hf_spec(spec)
    if Path(name).is_dir():  # a dataset written by save_to_disk: memory-mapped Arrow
        ds = datasets.load_from_disk(name)
        if isinstance(ds, datasets.DatasetDict):
            split = split or ("train" if "train" in ds else next(iter(ds)))
            if split not in ds:
                raise UsageError(f"-i {spec}: no split {split!r} (has {', '.join(ds)})")
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(name, config, split=split or "train", streaming=True)
        except Exception as exc:  # offline, unknown name, bad config: all one message
            raise UsageError(f"-i {spec}: cannot load dataset {name!r}: {_first_line(exc)}") from None
    i = 0
    try:
        for i, row in enumerate(ds, 1):
            yield i, dict(row)
    except (InputError, UsageError):
        raise
    except Exception as exc:  # a shard that fails to download or decode mid-stream
        raise InputError(spec, i + 1, f"cannot be read: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def iter_parquet(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise BackendUnavailable("reading Parquet needs pyarrow: pip install 'palign[datasets]'") from None
    import pyarrow as pa

    row = 0
    try:
        for batch in _parquet_file(path).iter_batches(batch_size=1024):
            for item in batch.to_pylist():
                row += 1
                yield row, item
    except (pa.ArrowException, ValueError) as exc:  # a page or column that does not decode
        raise InputError(path, row + 1, f"is not readable Parquet: {_first_line(exc)}") from None


def _parquet_file(path: str) -> Any:
    """Open a Parquet file; one that is not Parquet (or truncated) is bad input, not a crash."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, ValueError) as exc:
        raise InputError(path, None, f"is not a valid Parquet file: {_first_line(exc)}") from None


def iter_csv(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, strict=True)  # a stray quote is an error, not a merged field
        try:
            for item in reader:
                if None in item:  # more cells than the header names
                    raise InputError(path, reader.line_num, f"has {len(reader.fieldnames or ()) + len(item[None])} "
                                     f"cells; the header names {len(reader.fieldnames or ())}")
                yield reader.line_num, dict(item)
        except UnicodeDecodeError:
            raise InputError(path, reader.line_num + 1, "is not valid UTF-8") from None
        except csv.Error as exc:
            raise InputError(path, reader.reader.line_num, f"is not valid CSV: {exc}") from None


def iter_json(path: str) -> Iterator[tuple[int, Any]]:
    """A `.json` file: one top-level array of objects, or JSON Lines under another name."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if not head.startswith(b"["):
        from palign_cli.records import iter_lines

        yield from iter_lines(path)
        return
    try:
        rows = json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"is not a valid JSON array ({exc})") from None
    for i, item in enumerate(rows, 1):
        if not isinstance(item, dict):
            raise InputError(path, i, "is not a JSON object (item of the top-level array)")
        yield i, item


def count_rows(spec: str) -> int | None:
    """Rows in a non-JSONL source when cheap to know (Parquet metadata), else None."""
    if kind_of(spec) == "parquet":
        return _parquet_file(spec).metadata.num_rows
    return None


READERS = {"hf": iter_hf, "parquet": iter_parquet, "csv": iter_csv, "json": iter_json}
