"""Reading records: lines and rows from any source, fields resolved and type-checked, ids.

Every role's type rules live here (`check_role`), so align, eval and the other stages accept
and refuse the same values, and a bad record is an InputError naming file, line and field.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from palign_cli.errors import InputError, UsageError

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


def read_output(
    path: str | os.PathLike[str], *, what: str = "output", fix: str = "fix or remove it, or use --overwrite",
    live: bool = False,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) of a JSONL file palign (or a tool it ran) wrote, streamed; a line that is
    not a JSON object is an InputError naming it.

    A torn last line is the caller's to cut first, unless `live`: a file of a stage still
    running (read by `palign report`) ends at its last whole line, and `NaN`, which Python's
    json writes for a diverged training loss, reads as a number rather than a bad line.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = _loads_lenient(raw) if live else orjson.loads(raw)
            except ValueError:  # orjson.JSONDecodeError and json's both are
                if live and not raw.endswith(b"\n"):
                    return
                raise InputError(str(path), lineno, f"is not valid JSON in the {what}; {fix}") from None
            if not isinstance(obj, dict):
                raise InputError(str(path), lineno, f"is not a JSON object in the {what}; {fix}")
            yield lineno, obj


def _loads_lenient(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        import json

        return json.loads(raw)


def batched(items: Iterable[Any], size: int, weight: Callable[[Any], int] | None = None) -> Iterator[list[Any]]:
    """Items in batches of `size` (counted by `weight`, default one per item).

    When reading stops on a bad record (InputError), the items read before it are still
    yielded, so they are processed and written before the error ends the run.
    """
    batch: list[Any] = []
    total = 0
    try:
        for item in items:
            batch.append(item)
            total += weight(item) if weight else 1
            if total >= size:
                yield batch
                batch, total = [], 0
    except InputError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch
