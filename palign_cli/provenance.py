"""What each step of `palign run` was made from, so a rerun redoes exactly what changed.

A step's key is a digest of its command line, its options, the identity of every input and
of its model. An input made by an earlier step is known by that step's key and build (a new
build each time the step starts from scratch); a data file by its content; an `hf:` input by
its spec and cached snapshot; a model by identity.model_identity (a model rebuilt at the same
path is another model). So a change anywhere reaches every step downstream through the keys,
as in Make, DVC or Snakemake, without reading any output back.

Each step's record lives in RUN/.palign/steps/NAME.json: its key and build, whether it
finished, and the parts of the key, to say why a step reruns. Decisions:
- key changed (or never run, or --force): redo from scratch (the stage's --overwrite);
- same key, not finished: resume, unless the fresh start never got as far as rewriting the
  output (its marker is untouched): then start from scratch again, or old records survive;
- same key, finished, outputs there: skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from palign_cli.errors import UsageError
from palign_cli.identity import canonical, dataset_identity, file_digest, model_identity
from palign_cli.pipeline import Source, Step
from palign_cli.records import write_atomic

KEY_VERSION = 1
STATE_DIR = ".palign"


@dataclass(frozen=True)
class Decision:
    step: Step
    action: str  # "skip", "resume" or "fresh"
    why: str  # "" for skip
    key: str
    build: str
    components: dict[str, Any]

    @property
    def argv(self) -> tuple[str, ...]:
        return (*self.step.argv, "--overwrite") if self.action == "fresh" else self.step.argv


def record_path(run_dir: str, step: Step) -> Path:
    return Path(run_dir) / STATE_DIR / "steps" / f"{step.name.replace(':', '__')}.json"


def read_record(run_dir: str, step: Step) -> dict[str, Any] | None:
    """The step's record; an unreadable one counts as none (the step is redone, never trusted)."""
    try:
        record = orjson.loads(record_path(run_dir, step).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("key"), str) and isinstance(record.get("build"), str)
    return record if ok else None


def identity(src: Source) -> dict[str, Any]:
    """What a source is now, read from the source itself."""
    if src.kind == "model":
        return model_identity(src.path)
    if src.path.startswith("hf:"):
        return dataset_identity(src.path)
    if not os.path.isfile(src.path):
        return {"missing": src.path}
    return {"digest": file_digest(src.path)}


class _Produced:
    """The identity of each step's output as its readers see it: for a step decided in this
    run, its new key and build; for one left out (--from/--until), its record, or failing
    that the file's own content."""

    def __init__(self, run_dir: str, steps: Sequence[Step]):
        self.run_dir, self.by_name = run_dir, {s.name: s for s in steps}
        self.decided: dict[str, dict[str, Any]] = {}
        self.cache: dict[tuple[str, str], dict[str, Any]] = {}

    def __call__(self, src: Source) -> dict[str, Any]:
        if src.made_by in self.decided:
            return self.decided[src.made_by]
        if src.made_by is not None:
            rec = read_record(self.run_dir, self.by_name[src.made_by])
            if rec is not None:
                return {"step": src.made_by, "key": rec["key"], "build": rec["build"], "finished": bool(rec.get("finished"))}
        if (src.kind, src.path) not in self.cache:  # the base model is read by several steps
            self.cache[(src.kind, src.path)] = identity(src)
        return self.cache[(src.kind, src.path)]


def decide(run_dir: str, steps: Sequence[Step], chosen: Sequence[Step], force: bool = False) -> list[Decision]:
    """For each chosen step, in order: skip, resume or run from scratch, and why."""
    produced = _Produced(run_dir, steps)
    decisions = []
    for step in chosen:
        parts = {
            "version": KEY_VERSION,
            "argv": list(step.argv),
            "options": list(step.options),
            "inputs": {src.path: produced(src) for src in step.inputs},
            "model": produced(step.model) if step.model else None,
        }
        key = hashlib.sha256(canonical(parts)).hexdigest()[:32]
        record = read_record(run_dir, step)
        action, why = _judge(step, key, parts, record, force)
        build = record["build"] if record and action != "fresh" else uuid.uuid4().hex[:16]
        decisions.append(Decision(step, action, why, key, build, parts))
        produced.decided[step.name] = {"step": step.name, "key": key, "build": build, "finished": True}
    return decisions


def _judge(step: Step, key: str, parts: dict[str, Any], record: dict[str, Any] | None, force: bool) -> tuple[str, str]:
    if force:
        return "fresh", "forced (--force)"
    if record is None:
        return "fresh", "never run"
    if record["key"] != key:
        return "fresh", changes(record.get("components") or {}, parts)
    if not record.get("finished"):
        if record.get("fresh") and snapshot(step.marker) == record.get("marker"):
            return "fresh", "not finished"  # its fresh start failed before it began: begin again
        return "resume", "not finished"
    missing = [o for o in step.outputs if not os.path.exists(o)]
    if missing:
        return "fresh", f"output {missing[0]} missing"
    return "skip", ""


def changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why a key changed, in the words of the pipeline: options, inputs, model, upstream steps."""
    why = []
    flags = _changed_flags(old.get("options") or [], new["options"])
    if flags:
        why.append(f"options changed ({', '.join(flags)})")
    old_inputs = old.get("inputs") or {}
    for path, ident in new["inputs"].items():
        if old_inputs.get(path) != ident:
            why.append(f"upstream step {ident['step']} redone" if "step" in ident else f"input {path} changed")
    model = new["model"]
    if old.get("model") != model:
        why.append(f"upstream step {model['step']} redone" if model and "step" in model else "model changed")
    if not why and old.get("argv") != new["argv"]:
        why.append("command changed")
    return "; ".join(why) or "palign's step key changed"


def _changed_flags(old: Sequence[str], new: Sequence[str]) -> list[str]:
    a, b = _by_flag(old), _by_flag(new)
    return [f for f in dict.fromkeys([*b, *a]) if a.get(f) != b.get(f)]


def _by_flag(options: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    flag = None
    for token in options:
        if token.startswith("--"):
            flag = token
            out.setdefault(flag, [])
        elif flag is not None:
            out[flag].append(token)
    return out


def snapshot(path: str) -> list[int] | None:
    """Enough of a file's state to tell whether anything rewrote it since."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def started(run_dir: str, d: Decision) -> None:
    """Recorded before the stage starts: an interrupted step then resumes under the same key."""
    fresh = d.action == "fresh"
    _write(run_dir, d, finished=False, fresh=fresh, marker=snapshot(d.step.marker) if fresh else None)


def finished(run_dir: str, d: Decision) -> None:
    _write(run_dir, d, finished=True, fresh=False, marker=None)


def _write(run_dir: str, d: Decision, **state: Any) -> None:
    record = {"key": d.key, "build": d.build, **state, "command": list(d.argv),
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "components": d.components}
    write_atomic(record_path(run_dir, d.step), orjson.dumps(record, option=orjson.OPT_INDENT_2))


@contextlib.contextmanager
def run_lock(run_dir: str) -> Iterator[None]:
    """One `palign run` per run directory: a second one would redo steps under the first."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(run_dir) / STATE_DIR / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise UsageError(f"{run_dir} is in use by another palign run (pid {holder}); wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
