"""JSONL in and out, the one place that does it: streaming reads, ids, resume, shards, rejects.

Every stage reads records and writes records through `StageIO`, so resume, torn-line recovery,
provenance checks, sharding and bad-input handling behave the same everywhere. Memory stays
flat in the input size: records are read one line at a time and written per batch; what is
kept per record is an 8-byte digest of its id (and, on resume, one of its input) in a compact
table (`digests.py`), never the records or their id strings.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from palign_cli import __version__
from palign_cli.config import config_diff
from palign_cli.digests import DigestTable, id_key
from palign_cli.errors import ConfigMismatch, InputError, UsageError
from palign_cli.identity import record_digest
from palign_cli.locking import OutputLock

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


# ----- reading ------------------------------------------------------------------------------


@dataclass
class Record:
    """One input record: the untouched object, where it came from, its id and resolved fields."""

    data: dict[str, Any]
    line: int
    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = ""


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


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def check_role(role: str, value: Any, path: str, lineno: int, name: str) -> Any:
    """A resolved field checked for the type its role needs; golds come back as text.

    Golds may be numbers (AMC golds are often floats like 27.0, written as "27"); every other
    role is text, and `outputs` a list of texts. The same rules hold in every stage, so align
    and eval accept and refuse the same golds.
    """
    where = display_name(path)
    if role == "answer":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(where, lineno, f"must be a string or a number, not {_type_name(value)}", field=name)
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else repr(value)
        return str(value)
    if role == "outputs":
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise InputError(where, lineno, f"must be a list of strings, not {_type_name(value)}", field=name)
        for i, text in enumerate(value):
            if not isinstance(text, str):
                raise InputError(where, lineno, f"entry {i} is {_type_name(text)}, not a string", field=name)
        return value
    if role in ("question", "cot", "prefix") and not isinstance(value, str):
        raise InputError(where, lineno, f"is not a string (it is {_type_name(value)})", field=name)
    return value


def resolve_field(obj: Mapping[str, Any], names: Sequence[str], path: str, lineno: int, role: str = "") -> Any:
    """The value of the first of `names` present, type-checked for its role; missing or empty
    is an InputError."""
    for name in names:
        if name in obj and obj[name] is not None:
            value = obj[name]
            if isinstance(value, str) and not value.strip():
                raise InputError(display_name(path), lineno, "is empty", field=name)
            if isinstance(value, (list, dict)) and not value:
                raise InputError(display_name(path), lineno, "is empty", field=name)
            return check_role(role, value, path, lineno, name)
    raise InputError(display_name(path), lineno, "is missing", field="|".join(names))


def _optional_field(obj: Mapping[str, Any], names: Sequence[str], path: str, lineno: int, role: str) -> Any:
    for name in names:
        if obj.get(name) is not None:
            return check_role(role, obj[name], path, lineno, name)
    return None


def implicit_id(fields: Mapping[str, Any], raw: bytes) -> str:
    """The id of a record without one: a hash of what makes it distinct for the stage.

    One role (infer's question): a short hash of its text, as before. Several (truncate's
    question and CoT): of all of them, so several teachers' CoTs for one question differ.
    """
    values = [v for v in fields.values() if v is not None]
    if not values:
        return short_hash(raw.decode("utf-8", "replace"))
    if len(values) == 1:
        only = values[0]
        return short_hash(only if isinstance(only, str) else orjson.dumps(only).decode())
    return short_hash(orjson.dumps(values).decode())


def record_id(obj: Mapping[str, Any], id_field: str, fields: Mapping[str, Any], raw: bytes = b"") -> str:
    """The input's own id if it has one, else `implicit_id` of its fields."""
    value = obj.get(id_field)
    if value is not None and str(value) != "":
        return str(value)
    return implicit_id(fields, raw)


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


OnInvalid = Callable[[InputError, bytes], None]


def read_records(
    path: str,
    *,
    id_field: str = "id",
    required: Mapping[str, Sequence[str]] | None = None,
    optional: Mapping[str, Sequence[str]] | None = None,
    on_invalid: OnInvalid | None = None,
) -> Iterator[Record]:
    """Stream records with their line numbers, ids and resolved, type-checked fields.

    `required` maps a role ("question") to the field names it may appear under; a record
    missing one raises InputError, or, when `on_invalid(error, raw)` is given, is handed to it
    and skipped.
    """
    required = required or {}
    optional = optional or {}
    for lineno, item in iter_items(path):
        raw = item if isinstance(item, bytes) else dumps(item)
        try:
            obj = parse_line(path, lineno, item) if isinstance(item, bytes) else item
            fields = {role: resolve_field(obj, names, path, lineno, role) for role, names in required.items()}
            for role, names in optional.items():
                fields[role] = _optional_field(obj, names, path, lineno, role)
            rid = record_id(obj, id_field, {r: fields[r] for r in required}, raw)
        except InputError as err:
            if on_invalid is None:
                raise
            on_invalid(err, raw)
            continue
        if id_field not in obj or obj[id_field] is None or str(obj[id_field]) == "":
            obj[id_field] = rid
        yield Record(obj, lineno, rid, fields, source=path)


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


def read_output(path: str | os.PathLike[str], *, what: str = "output") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSONL file palign wrote, streamed; a line that is not a JSON object
    is an InputError naming it (a torn last line is the caller's to cut first)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InputError(str(path), lineno, f"is not valid JSON in the {what}; fix or remove it, or use --overwrite") from None
            if not isinstance(obj, dict):
                raise InputError(str(path), lineno, f"is not a JSON object in the {what}; fix or remove it, or use --overwrite")
            yield lineno, obj


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file so that a reader (or a crash) sees the old one or the new, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str) + b"\n")


# ----- the output -------------------------------------------------------------------------


def meta_path(output: str) -> Path:
    return Path(f"{output}.meta.json")


def is_regular_output(path: str) -> bool:
    """Whether `-o` is a file palign can resume: not stdout, not a device such as /dev/null."""
    if path == STDIO:
        return False
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError:
        return True  # let opening it report the problem
    return stat.S_ISREG(mode)


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file, by any spelling: symlinks, relative paths, hard links."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# Flags of an id in the table: finished in the output, seen in this run's input, and (while
# verifying a resume) found in the input with an unchanged digest.
DONE, SEEN, MATCHED = 1, 2, 4


@dataclass
class Finished:
    """The ids of a run in one table: those the output already holds (with a digest of the input
    roles each was made from) and those this run's input has shown so far."""

    table: DigestTable = field(default_factory=lambda: DigestTable(values=False))
    count: int = 0

    def __contains__(self, key: int) -> bool:
        return bool(self.table.flags(key) & DONE)

    def __len__(self) -> int:
        return self.count


class JsonlSink:
    """Appends records to a file (or stdout), one flush per batch, resuming what is there.

    A file output is locked for the whole run (one writer per output); its stage config and
    model sit beside it in `OUT.meta.json` and a resume under others is refused.
    """

    def __init__(
        self,
        path: str,
        *,
        stage: str,
        config: Mapping[str, Any],
        overwrite: bool = False,
        id_field: str = "id",
        defaults: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        source_field: str | None = None,
    ):
        self.path = path
        self.id_field, self.source_field = id_field, source_field
        self.roles = dict(roles or {})
        self.done = Finished()
        self.written = 0
        self.lock: OutputLock | None = None
        if not is_regular_output(path):
            self._f: IO[bytes] = sys.stdout.buffer if path == STDIO else open(path, "ab")
            return
        out = Path(path)
        meta = meta_path(path)
        if out.is_dir():
            raise UsageError(f"-o {path}: is a directory, expected a JSONL file")
        self.lock = OutputLock(path)
        try:
            current = {"stage": stage, "config": dict(config), "model": dict(model) if model else None}
            if out.exists() and out.stat().st_size > 0 and not overwrite:
                self._check_meta(out, meta, current, defaults or {})
                self._recover(out)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(b"")
            write_json(meta, {**current, "palign_version": __version__})
            self._f = open(out, "ab")
        except BaseException:
            self.lock.release()
            raise

    @staticmethod
    def _check_meta(out: Path, meta: Path, current: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        fix = "rerun with the same options to resume, --overwrite to start fresh, or another -o"
        if not meta.exists():
            raise ConfigMismatch(
                f"{out} exists but {meta.name} does not, so its config is unknown; "
                "use --overwrite to start fresh or write to another file"
            )
        try:
            stored = orjson.loads(meta.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            stored = None
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise ConfigMismatch(f"{meta}: unreadable or not palign's; use --overwrite to start fresh, or another -o")
        if stored.get("stage") != current["stage"]:
            raise ConfigMismatch(
                f"{out} was written by 'palign {stored.get('stage')}', not 'palign {current['stage']}'; "
                "use --overwrite or another output file"
            )
        diff = config_diff(stored["config"], current["config"], defaults)
        if diff:
            raise ConfigMismatch(f"{out} was written with a different config ({diff}); {fix}")
        before, now = stored.get("model"), current.get("model")
        if before and now and before.get("digest") != now.get("digest") and before.get("model") == now.get("model"):
            raise ConfigMismatch(
                f"{out} was written with another version of the model at {now['model']} (its files "
                f"changed since: rebuilt or retrained); --overwrite to start over with this one, or another -o"
            )

    def _recover(self, path: Path) -> None:
        """Load what is finished (a digest per id), after cutting a torn last line."""
        cut_torn_line(path)
        self.done = Finished(DigestTable(values=True, expected=count_lines(str(path)) or 0))
        for lineno, obj in read_output(path, what="output being resumed"):
            rid = obj.get(self.id_field)
            if rid is None:
                continue
            source = str(obj.get(self.source_field, "")) if self.source_field else ""
            key = id_key(source, str(rid))
            if key in self.done:
                raise InputError(str(path), lineno, f"id {rid!r} appears twice in the output being resumed; use --overwrite to start over", field=self.id_field)
            self.done.table.put(key, input_digest(obj, self.roles), DONE)
            self.done.count += 1

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        blob = b"".join(dumps(r) for r in records)
        if blob:
            self._f.write(blob)
            self._f.flush()
            self.written += blob.count(b"\n")

    def close(self) -> None:
        try:
            if self.path != STDIO:
                self._f.close()
            else:
                self._f.flush()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None


def cut_torn_line(path: Path) -> None:
    """Drop a last line without its newline: the writer died mid-line; that record is redone."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        # scan back for the last newline (lines can be long: read in chunks)
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            chunk = f.read(end - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        else:
            keep = 0
    with open(path, "r+b") as f:
        f.truncate(keep)


def input_digest(obj: Mapping[str, Any], roles: Mapping[str, Sequence[str]]) -> int:
    """An 8-byte digest of the fields a stage reads of a record (its roles), by the same names
    on the input side and in the output (which carries the input's fields untouched)."""
    picked = {role: next((obj[n] for n in names if obj.get(n) is not None), None) for role, names in sorted(roles.items())}
    return record_digest(picked)


class RejectSink:
    """Where `--skip-invalid` sets bad records aside: the error and the raw line, per line.

    Rewritten by every run: a resumed run meets every bad record again (they are never done),
    so appending would list them twice.
    """

    def __init__(self, path: str):
        self.path = path
        self.count = 0
        self._f: IO[bytes] | None = None
        if os.path.exists(path) and is_regular_output(path):
            os.remove(path)

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
    return "palign-rejects.jsonl" if not is_regular_output(output) else f"{output}.rejects.jsonl"


# ----- a stage's I/O --------------------------------------------------------------------------


class StageIO:
    """Input, output, resume, shard and rejects of one stage run, wired the same for all stages.

    Use as a context manager: iterate `pending()` (or `batches()`) for the records still to
    do, `write()` each finished batch. `skipped` counts records already done, `rejected` those
    set aside. Several inputs may go into one output (`palign eval`): then each record's
    source is part of its key, and `source_field` names where the output records it.
    """

    def __init__(
        self,
        input: str | Sequence[str],
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
        rejects: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        source_field: str | None = None,
        source_name: Callable[[str], str] | None = None,
    ):
        self.inputs = [input] if isinstance(input, str) else list(input)
        self.input = self.inputs[0]
        self._read_paths = list(self.inputs)  # what is actually read (stdin may be spooled)
        self.output = output
        self.id_field = id_field
        self.required, self.optional = dict(required or {}), dict(optional or {})
        self.shard = shard or Shard()
        self.source_field = source_field
        self.source_name = source_name or (lambda p: p)
        self.skipped = 0
        self._check_paths()
        self.sink = JsonlSink(
            output, stage=stage, config=config, overwrite=overwrite, id_field=id_field, defaults=defaults,
            model=model, roles=self.roles, source_field=source_field,
        )
        try:
            self.rejects = RejectSink(rejects or rejects_path(output)) if skip_invalid else None
            self._spooled: list[Any] = []
            if len(self.sink.done):
                self._verify_finished()
            else:  # sized for the input up front where it is a file: no rehashing on the way
                self.sink.done.table = DigestTable(values=False, expected=self.total() or 0)
        except BaseException:
            self.sink.close()
            raise

    @property
    def roles(self) -> dict[str, Sequence[str]]:
        return {**self.required, **self.optional}

    def _check_paths(self) -> None:
        from palign_cli import sources

        for path in self.inputs:
            local = path != STDIO and not sources.is_hf_spec(path)
            if local and not Path(path).exists():
                raise UsageError(f"{path}: no such file")
            if local and Path(path).is_dir():
                raise UsageError(f"{path}: is a directory, expected a JSONL file")
            if local and self.output != STDIO:
                for written in (self.output, str(meta_path(self.output)), rejects_path(self.output)):
                    if os.path.exists(written) and same_file(path, written):
                        raise UsageError(f"-i {path} and -o {self.output} are the same file; write to another file")

    def __enter__(self) -> StageIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.rejects is not None:
                self.rejects.close()
        finally:
            self.sink.close()
            for spool in self._spooled:
                spool.close()

    @property
    def rejected(self) -> int:
        return self.rejects.count if self.rejects else 0

    def reject_or_raise(self, err: InputError, rec: Record) -> None:
        """A record found bad after reading (a stage's own check): set aside, or stop the run."""
        if self.rejects is None:
            raise err
        self.rejects(err, dumps(rec.data))

    def total(self) -> int | None:
        """Upper bound of records to do (for a progress bar), or None when unknown."""
        counts = [count_lines(p) for p in self.inputs]
        if any(n is None for n in counts) or self.shard.count > 1:
            return None
        return max(sum(counts) - len(self.sink.done), 0)  # type: ignore[arg-type]

    def _key(self, path: str, rid: str) -> int:
        return id_key(self.source_name(path) if self.source_field else "", rid)

    def _records(self, name: str, path: str, on_invalid: OnInvalid | None) -> Iterator[Record]:
        """The records of one input with duplicate ids caught (bad input: both lines named)."""
        table = self.sink.done.table
        for rec in read_records(path, id_field=self.id_field, required=self.required, optional=self.optional, on_invalid=on_invalid):
            key = self._key(name, rec.id)
            if table.flags(key) & SEEN:
                err = InputError(display_name(name), rec.line, f"repeats id {rec.id!r} of {self._first_line(path, rec)}; ids must be unique", field=self.id_field)
                if on_invalid is None:
                    raise err
                on_invalid(err, dumps(rec.data))
                continue
            table.put(key, flags=SEEN)
            rec.source = name
            yield rec

    def _first_line(self, path: str, dup: Record) -> str:
        """Where an id was first seen, found by reading the input again (only on this error path)."""
        if path == STDIO:
            return "an earlier line"
        for rec in read_records(path, id_field=self.id_field, required=self.required, optional=self.optional, on_invalid=lambda e, r: None):
            if rec.line >= dup.line:
                break
            if rec.id == dup.id:
                return f"line {rec.line}"
        return "an earlier line"

    def _verify_finished(self) -> None:
        """Before anything is written: every finished record's input is still there, unchanged.

        An input that grew resumes; an edited record, another file or a different order of
        sources is refused with what changed. The input is read once more for this (stdin is
        first spooled to a temporary file, so memory stays flat).
        """
        matched = 0
        table = self.sink.done.table
        for i, (name, path) in enumerate(zip(self.inputs, self._read_paths)):
            if path == STDIO:
                path = self._read_paths[i] = self._spool_stdin()
            for rec in read_records(path, id_field=self.id_field, required=self.required, optional=self.optional, on_invalid=lambda err, raw: None):
                key = self._key(name, rec.id)
                flags = table.flags(key)
                if not flags & DONE or flags & MATCHED:
                    continue
                if table.get(key) != input_digest(rec.data, self.roles):
                    names = "/".join(sorted(self.roles))
                    raise ConfigMismatch(
                        f"{display_name(name)}:{rec.line}: record {rec.id!r} changed since it was processed into "
                        f"{self.output} (its {names} differ); --overwrite to start over, or another -o"
                    )
                table.put(key, flags=MATCHED)
                matched += 1
        missing = len(self.sink.done) - matched
        if missing:
            names = ", ".join(display_name(p) for p in self.inputs)
            raise ConfigMismatch(
                f"{self.output} holds {missing} finished record(s) whose ids are not in {names}: it was made from "
                "another input; --overwrite to start over, or another -o"
            )

    def _spool_stdin(self) -> str:
        spool = tempfile.NamedTemporaryFile(prefix="palign-stdin-", suffix=".jsonl")
        while chunk := sys.stdin.buffer.read(1 << 20):
            spool.write(chunk)
        spool.flush()
        self._spooled.append(spool)
        return spool.name

    def pending(self) -> Iterator[Record]:
        for name, path in zip(self.inputs, self._read_paths):
            for rec in self._records(name, path, on_invalid=self.rejects):
                if not self.shard.owns(rec.id):
                    continue
                if self._key(name, rec.id) in self.sink.done:
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
