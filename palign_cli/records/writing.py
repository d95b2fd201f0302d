"""Writing records: the locked, resumable output, its meta file, rejects, atomic writes.

A file output is locked for the whole run and carries its stage config and model in
`OUT.meta.json`; resuming it under others is refused. What is kept per finished record is an
8-byte digest of its id and one of its input roles (`digests.py`), never the record.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from palign_cli.records.reading import STDIO, count_lines, dumps, read_output


@contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Give an OSError raised while writing the path it was writing: a full disk reports no
    file name of its own, and the user's one-line error must say which file failed."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file so that a reader (or a crash) sees the old one or the new, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with naming(tmp):
        tmp.write_bytes(data)
    os.replace(tmp, target)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str) + b"\n")


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
        if Path(path).is_dir():
            raise UsageError(f"-o {path}: is a directory, expected a JSONL file")
        if not is_regular_output(path):
            self._f: IO[bytes] = sys.stdout.buffer if path == STDIO else open(path, "ab")
            return
        out = Path(path)
        meta = meta_path(path)
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
            with naming(self.path):
                self._f.write(blob)
                self._f.flush()
            self.written += blob.count(b"\n")

    def close(self) -> None:
        try:
            with naming(self.path):
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
        with naming(self.path):
            self._f.write(dumps(entry))
            self._f.flush()
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def rejects_path(output: str) -> str:
    return "palign-rejects.jsonl" if not is_regular_output(output) else f"{output}.rejects.jsonl"
