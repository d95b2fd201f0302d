"""`palign run`: the five stages from one YAML, each as its own `palign` process.

Each stage runs as a subprocess of the same executable with flags built from its YAML section
(the keys are the stage's own flags, so nothing here knows a stage's internals and an unknown
key fails exactly as a mistyped flag would). A separate process per stage also gives every
stage a clean GPU: vLLM does not reliably release memory within one process.

A stage that finished is recorded in RUN_DIR/.done/STAGE.json with its command line and the
size and mtime of its inputs; a rerun skips it while both are unchanged. A stage that did not
finish simply runs again and resumes its own output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palign_cli.errors import UsageError

STAGES = ("truncate", "align", "train", "infer", "eval")
RESTARTABLE = {"truncate", "align", "infer", "eval"}
TOP_KEYS = {"run_dir", "model", "backend", "engine", "data", *STAGES}


@dataclass(frozen=True)
class Step:
    stage: str
    name: str  # "infer:aime24" for per-benchmark steps
    argv: tuple[str, ...]
    inputs: tuple[str, ...]


def load_pipeline(path: str) -> dict[str, Any]:
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UsageError(f"{path}: cannot read pipeline ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc})") from None
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    for key in ("run_dir", "model", "data"):
        if key not in spec:
            raise UsageError(f"{path}: missing key '{key}'")
    base = Path(path).absolute().parent  # not resolve(): configs/ may be a symlink
    spec["run_dir"] = _resolve(base, spec["run_dir"])
    data = spec["data"]
    if "cots" in data:
        data["cots"] = _resolve(base, data["cots"])
    data["benchmarks"] = {k: _resolve(base, v) for k, v in (data.get("benchmarks") or {}).items()}
    # A path (./x, ../x, /x, ~/x) is relative to this file; anything else is a hub name.
    if str(spec["model"]).startswith((".", "/", "~")) or Path(_resolve(base, spec["model"])).exists():
        spec["model"] = _resolve(base, spec["model"])
    return spec


def _resolve(base: Path, value: str) -> str:
    return value if value.startswith("hf:") else os.path.normpath(base / os.path.expanduser(value))


def flags(options: Mapping[str, Any] | None) -> list[str]:
    """YAML keys to CLI flags: `max_tokens: 64` -> --max-tokens 64; true -> bare flag.

    A false value writes nothing (the flag's default); to switch a default off use the flag's
    negative name: `no_verify: true` -> --no-verify.
    """
    out: list[str] = []
    for key, value in (options or {}).items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out


def plan(spec: Mapping[str, Any]) -> list[Step]:
    run = Path(spec["run_dir"])
    engine = ["--backend", spec.get("backend", "auto"), *flags(spec.get("engine"))]
    model = spec["model"]
    trunc, aligned, train_dir = run / "truncate.jsonl", run / "align.jsonl", run / "train"
    steps = []
    if "cots" in spec["data"]:
        cots = spec["data"]["cots"]
        steps.append(Step("truncate", "truncate", ("truncate", "-i", cots, "-o", str(trunc), "--model", model,
                                                   *engine, *flags(spec.get("truncate"))), (cots,)))
        steps.append(Step("align", "align", ("align", "-i", str(trunc), "-o", str(aligned), "--model", model,
                                             *engine, *flags(spec.get("align"))), (str(trunc),)))
        steps.append(Step("train", "train", ("train", "-i", str(aligned), "--model", model, "--run-dir", str(train_dir),
                                             *flags(spec.get("train"))), (str(aligned),)))
        student = str(train_dir / "model")
    else:
        student = model
    infer_opts = dict(spec.get("infer") or {})
    student = infer_opts.pop("model", student)
    graded = []
    for name, path in spec["data"]["benchmarks"].items():
        out = run / "infer" / f"{name}.jsonl"
        steps.append(Step("infer", f"infer:{name}", ("infer", "-i", path, "-o", str(out), "--model", student,
                                                     *engine, *flags(infer_opts)), (path,)))
        graded.append(str(out))
    if graded:
        inputs = [x for g in graded for x in ("-i", g)]
        steps.append(Step("eval", "eval", ("eval", *inputs, "-o", str(run / "graded.jsonl"),
                                           "--summary", str(run / "summary.json"), *flags(spec.get("eval"))),
                          tuple(graded)))
    return steps


def select(steps: list[Step], start: str | None, until: str | None) -> list[Step]:
    for name in (start, until):
        if name is not None and name not in STAGES:
            raise UsageError(f"--from/--until must be one of {', '.join(STAGES)}; got {name!r}")
    lo = STAGES.index(start) if start else 0
    hi = STAGES.index(until) if until else len(STAGES) - 1
    return [s for s in steps if lo <= STAGES.index(s.stage) <= hi]


def fingerprint(step: Step) -> str:
    state = {"argv": step.argv, "inputs": [_stat(p) for p in step.inputs]}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _stat(path: str) -> list[Any]:
    p = Path(path)
    if not p.exists():
        return [path, None]
    if p.is_dir():
        return [path, "dir"]
    st = p.stat()
    return [path, st.st_size, st.st_mtime_ns]


def marker(run_dir: str, step: Step) -> Path:
    return Path(run_dir) / ".done" / f"{step.name.replace(':', '__')}.json"


def is_done(run_dir: str, step: Step) -> bool:
    m = marker(run_dir, step)
    return m.exists() and json.loads(m.read_text()).get("fingerprint") == fingerprint(step)


def changed_since_done(run_dir: str, step: Step) -> bool:
    m = marker(run_dir, step)
    return m.exists() and tuple(json.loads(m.read_text()).get("argv", ())) != step.argv


def run_steps(
    spec: Mapping[str, Any], steps: list[Step], say: Callable[[str], None], force: bool = False
) -> int:
    """Run each step not already done; stop at the first failure and return its exit code."""
    Path(spec["run_dir"]).mkdir(parents=True, exist_ok=True)
    for step in steps:
        if not force and is_done(spec["run_dir"], step):
            say(f"== {step.name}: done earlier with the same options and inputs; skipped")
            continue
        argv = list(step.argv)
        if changed_since_done(spec["run_dir"], step) and step.stage in RESTARTABLE:
            argv.append("--overwrite")  # the user changed this stage's options: redo it fresh
        say(f"== {step.name}: palign {' '.join(argv)}")
        code = subprocess.call([sys.executable, "-m", "palign_cli", *argv], env=os.environ.copy())
        if code != 0:
            say(f"== {step.name} failed with exit code {code}; rerun `palign run` to resume it")
            return code
        m = marker(spec["run_dir"], step)
        m.parent.mkdir(parents=True, exist_ok=True)
        m.write_text(json.dumps({"fingerprint": fingerprint(step), "argv": step.argv}, indent=2))
    return 0
