"""JSONL in and out, the one place that does it: streaming reads, ids, resume, shards, rejects.

Every stage reads records and writes records through `StageIO`, so resume, torn-line recovery,
sharding and bad-input handling behave the same everywhere. Memory stays flat in the input
size: records are read one line at a time and written per batch. The only thing held in
memory is the set of ids already in the output (needed to skip them on resume).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from palign_cli import __version__
from palign_cli.errors import ConfigMismatch, InputError, UsageError

STDIO = "-"

# Default spellings accepted for each role; a --question-field etc. flag replaces them.
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "question": ("question", "problem"),
    "answer": ("answer", "gold"),
    "cot": ("long_cot", "Long-CoT"),
}


def display_name(path: str) -> str:
    return "<stdin>" if path == STDIO else str(path)


def field_names(role: str, override: str | None = None) -> tuple[str, ...]:
    """The names to look for a role under: the user's one name, else the common spellings."""
    return (override,) if override else DEFAULT_FIELDS[role]


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


@dataclass
class Record:
    """One input record: the untouched object, where it came from, its id and resolved fields."""

    data: dict[str, Any]
    line: int
    id: str
    fields: dict[str, Any] = field(default_factory=dict)


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw bytes) for every non-blank line of a file or stdin."""
    if path == STDIO:
        stream: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        try:
            stream = open(path, "rb")
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a directory, expected a JSONL file") from None
        close = True
    try:
        for lineno, raw in enumerate(stream, 1):
            if raw.strip():
                yield lineno, raw
    finally:
        if close:
            stream.close()


def iter_items(path: str) -> Iterator[tuple[int, bytes | dict[str, Any]]]:
    """(position, raw JSONL line or decoded row) from any supported source (see sources.py)."""
    from palign_cli import sources

    kind = sources.kind_of(path)
    if kind == "jsonl" or path == STDIO:
        return iter_lines(path)
    if not sources.is_hf_spec(path) and not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    return sources.READERS[kind](path)


def parse_line(path: str, lineno: int, raw: bytes) -> dict[str, Any]:
    """Parse one JSONL line into an object, or raise an InputError that says why not."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(display_name(path), lineno, "is not valid UTF-8") from None
        raise InputError(display_name(path), lineno, f"is not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(display_name(path), lineno, "is not a JSON object")
    return obj


def resolve_field(obj: Mapping[str, Any], names: Sequence[str], path: str, lineno: int) -> Any:
    """The value of the first of `names` present; missing or empty is an InputError."""
    for name in names:
        if name in obj and obj[name] is not None:
            value = obj[name]
            if isinstance(value, str) and not value.strip():
                raise InputError(display_name(path), lineno, "is empty", field=name)
            if isinstance(value, (list, dict)) and not value:
                raise InputError(display_name(path), lineno, "is empty", field=name)
            return value
    raise InputError(display_name(path), lineno, "is missing", field="|".join(names))


def record_id(obj: Mapping[str, Any], id_field: str, question: Any) -> str:
    """The input's own id if it has one, else a short hash of the question text (stable)."""
    value = obj.get(id_field)
    if value is not None and str(value) != "":
        return str(value)
    text = question if isinstance(question, str) else orjson.dumps(question).decode()
    return short_hash(text)


@dataclass(frozen=True)
class Shard:
    """`--shard I/N`: this process owns the ids whose hash is I modulo N."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            i, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard must look like I/N (for example 0/4), got '{text}'") from None
        if n < 1 or not 0 <= i < n:
            raise UsageError(f"--shard I/N needs 0 <= I < N, got '{text}'")
        return cls(i, n)

    def owns(self, rid: str) -> bool:
        if self.count == 1:
            return True
        digest = hashlib.sha1(rid.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


def read_records(
    path: str,
    *,
    id_field: str = "id",
    required: Mapping[str, Sequence[str]] | None = None,
    optional: Mapping[str, Sequence[str]] | None = None,
    on_invalid=None,
) -> Iterator[Record]:
    """Stream records with their line numbers, ids and resolved fields.

    `required` maps a role ("question") to the field names it may appear under; a record
    missing one raises InputError, or, when `on_invalid(error, raw)` is given, is handed to it
    and skipped.
    """
    required = required or {}
    optional = optional or {}
    for lineno, item in iter_items(path):
        raw = item if isinstance(item, bytes) else orjson.dumps(item, default=str)
        try:
            obj = parse_line(path, lineno, item) if isinstance(item, bytes) else item
            fields = {role: resolve_field(obj, names, path, lineno) for role, names in required.items()}
            for role, names in optional.items():
                fields[role] = next((obj[n] for n in names if obj.get(n) is not None), None)
            basis = fields.get("question", fields.get("cot", raw.decode("utf-8", "replace")))
            rid = record_id(obj, id_field, basis)
        except InputError as err:
            if on_invalid is None:
                raise
            on_invalid(err, raw)
            continue
        if id_field not in obj or obj[id_field] is None:
            obj[id_field] = rid
        yield Record(obj, lineno, rid, fields)


def count_lines(path: str) -> int | None:
    """Number of lines in a file (for progress totals); None for stdin."""
    from palign_cli import sources

    if path == STDIO or sources.is_hf_spec(path):
        return None
    if sources.kind_of(path) != "jsonl":
        return sources.count_rows(path)
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def dumps(obj: Any) -> bytes:
    # default=str: rows from Parquet or datasets may hold values JSON has no type for.
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY, default=str) + b"\n"


def meta_path(output: str) -> Path:
    return Path(f"{output}.meta.json")


def _describe_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = sorted(set(stored) | set(current))
    parts = [
        f"{k}: {stored.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
        for k in keys
        if stored.get(k, "<unset>") != current.get(k, "<unset>")
    ]
    return "; ".join(parts)


def recover_output(path: Path, id_field: str) -> set[str]:
    """Ids already written to `path`, after cutting off a torn last line left by a crash."""
    done: set[str] = set()
    good_end = 0
    with open(path, "rb") as f:
        offset = 0
        for lineno, raw in enumerate(f, 1):
            end = offset + len(raw)
            if not raw.endswith(b"\n"):
                break  # torn: the writer died mid-line; this record is redone
            if raw.strip():
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise InputError(str(path), lineno, "is not valid JSON in the output being resumed; fix or remove it, or use --overwrite") from None
                if isinstance(obj, dict) and obj.get(id_field) is not None:
                    done.add(str(obj[id_field]))
            offset = good_end = end
    if good_end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


class JsonlSink:
    """Appends records to a file (or stdout), one flush per batch, resuming what is there."""

    def __init__(
        self,
        path: str,
        *,
        stage: str,
        config: Mapping[str, Any],
        overwrite: bool = False,
        id_field: str = "id",
    ):
        self.path = path
        self.done: set[str] = set()
        self.written = 0
        if path == STDIO:
            self._f: IO[bytes] = sys.stdout.buffer
            return
        out = Path(path)
        meta = meta_path(path)
        current = {"stage": stage, "config": dict(config)}
        if out.exists() and out.stat().st_size > 0 and not overwrite:
            self._check_meta(out, meta, current)
            self.done = recover_output(out, id_field)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"")
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_bytes(orjson.dumps({**current, "palign_version": __version__}, option=orjson.OPT_INDENT_2))
        os.replace(tmp, meta)
        self._f = open(out, "ab")

    @staticmethod
    def _check_meta(out: Path, meta: Path, current: Mapping[str, Any]) -> None:
        if not meta.exists():
            raise ConfigMismatch(
                f"{out} exists but {meta.name} does not, so its config is unknown; "
                "use --overwrite to start fresh or write to another file"
            )
        stored = orjson.loads(meta.read_bytes())
        if stored.get("stage") != current["stage"]:
            raise ConfigMismatch(
                f"{out} was written by 'palign {stored.get('stage')}', not 'palign {current['stage']}'; "
                "use --overwrite or another output file"
            )
        if stored.get("config") != current["config"]:
            diff = _describe_diff(stored.get("config", {}), current["config"])
            raise ConfigMismatch(
                f"{out} was written with a different config ({diff}); "
                "rerun with the same options to resume, --overwrite to start fresh, or another -o"
            )

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        blob = b"".join(dumps(r) for r in records)
        if blob:
            self._f.write(blob)
            self._f.flush()
            self.written += blob.count(b"\n")

    def close(self) -> None:
        if self.path != STDIO:
            self._f.close()
        else:
            self._f.flush()


class RejectSink:
    """Where `--skip-invalid` sets bad records aside: the error and the raw line, per line."""

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._f: IO[bytes] | None = None

    def __call__(self, err: InputError, raw: bytes) -> None:
        if self._f is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab")
        entry = {
            "file": err.path,
            "line": err.line,
            "field": err.field,
            "error": str(err),
            "raw": raw.decode("utf-8", "replace").rstrip("\n"),
        }
        self._f.write(dumps(entry))
        self._f.flush()
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def rejects_path(output: str) -> str:
    return "palign-rejects.jsonl" if output == STDIO else f"{output}.rejects.jsonl"


class StageIO:
    """Input, output, resume, shard and rejects of one stage run, wired the same for all stages.

    Use as a context manager: iterate `pending()` for the records still to do, `write()` each
    finished batch. `skipped` counts records already done, `rejected` those set aside.
    """

    def __init__(
        self,
        input: str,
        output: str,
        *,
        stage: str,
        config: Mapping[str, Any],
        required: Mapping[str, Sequence[str]] | None = None,
        optional: Mapping[str, Sequence[str]] | None = None,
        id_field: str = "id",
        overwrite: bool = False,
        shard: Shard | None = None,
        skip_invalid: bool = False,
    ):
        local = input != STDIO and not input.startswith("hf:")
        if local and output != STDIO and Path(input).resolve() == Path(output).resolve():
            raise UsageError(f"-i and -o are the same file ({input}); write to another file")
        if local and not Path(input).is_file():
            raise UsageError(f"{input}: no such file")
        self.input, self.output = input, output
        self.id_field = id_field
        self.required, self.optional = required or {}, optional or {}
        self.shard = shard or Shard()
        self.skipped = 0
        self.rejects = RejectSink(rejects_path(output)) if skip_invalid else None
        self.sink = JsonlSink(output, stage=stage, config=config, overwrite=overwrite, id_field=id_field)

    def __enter__(self) -> StageIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sink.close()
        if self.rejects is not None:
            self.rejects.close()

    @property
    def rejected(self) -> int:
        return self.rejects.count if self.rejects else 0

    def total(self) -> int | None:
        """Upper bound of records to do (for a progress bar), or None when unknown."""
        n = count_lines(self.input)
        if n is None:
            return None
        if self.shard.count > 1:
            return None
        return max(n - len(self.sink.done), 0)

    def pending(self) -> Iterator[Record]:
        for rec in read_records(
            self.input,
            id_field=self.id_field,
            required=self.required,
            optional=self.optional,
            on_invalid=self.rejects,
        ):
            if not self.shard.owns(rec.id):
                continue
            if rec.id in self.sink.done:
                self.skipped += 1
                continue
            yield rec

    def batches(self, size: int) -> Iterator[list[Record]]:
        """Pending records in batches of `size`.

        When a bad record stops the run, the good records read before it are still yielded
        (and so processed and written) before the error is raised.
        """
        batch: list[Record] = []
        try:
            for rec in self.pending():
                batch.append(rec)
                if len(batch) >= size:
                    yield batch
                    batch = []
        except InputError:
            if batch:
                yield batch
            raise
        if batch:
            yield batch

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.sink.write(records)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
