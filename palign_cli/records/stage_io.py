"""A stage's I/O: inputs, output, resume, shard and rejects, wired the same for every stage."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from palign_cli.digests import DigestTable, id_key
from palign_cli.errors import ConfigMismatch, InputError, UsageError
from palign_cli.records.reading import (
    STDIO,
    OnInvalid,
    Record,
    Shard,
    batched,
    count_lines,
    display_name,
    dumps,
    read_records,
)
from palign_cli.records.writing import (
    DONE,
    MATCHED,
    SEEN,
    JsonlSink,
    RejectSink,
    input_digest,
    meta_path,
    rejects_path,
    same_file,
)


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
        self._rejects_path = rejects or rejects_path(output)
        self._check_paths()
        self.sink = JsonlSink(
            output, stage=stage, config=config, overwrite=overwrite, id_field=id_field, defaults=defaults,
            model=model, roles=self.roles, source_field=source_field,
        )
        try:
            self.rejects = RejectSink(self._rejects_path) if skip_invalid else None
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
            if not local:
                continue
            written = [(self.output, "-o"), (str(meta_path(self.output)), "-o")] if self.output != STDIO else []
            for other, flag in [*written, (self._rejects_path, "--rejects")]:
                if os.path.exists(other) and same_file(path, other):
                    raise UsageError(f"-i {path} and {flag} {other} are the same file; write to another file")

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
        """Pending records in batches of `size`; a bad record stops the run only after the
        good records read before it are yielded (see `batched`)."""
        return batched(self.pending(), size)

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.sink.write(records)
