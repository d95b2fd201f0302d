"""`palign run`: the five stages from one YAML, each as its own `palign` process.

Each stage runs as a subprocess of the same executable with flags built from its YAML section
(the keys are the stage's own flags, checked against its real command before anything runs,
see pipeline_spec.py). A separate process per stage also gives every stage a clean GPU: vLLM
does not reliably release memory within one process.

The run is an incremental build, as Make, DVC and Snakemake users expect: every step knows
what it reads (`Source`s: data files, the model, files earlier steps write) and what it
writes, and provenance.py decides from those what to skip, resume or redo from scratch.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palign_cli.errors import UsageError
from palign_cli.pipeline_spec import ENGINE_STAGES, STAGES, Pipeline, check_value

TRAIN_STATE = "palign-train.json"  # train rewrites it first thing on every start (stages/train.py)


@dataclass(frozen=True)
class Source:
    """Something a step reads. `kind` says how to know it again: "data" (a file or an hf:
    spec), "model" (a directory or hub name), "file" (a file an option names)."""

    path: str
    kind: str
    where: str  # how the YAML names it (data.cots, model), for messages
    made_by: str | None = None  # the step that writes it, if one does


@dataclass(frozen=True)
class Step:
    stage: str
    name: str  # "infer:aime24" for per-benchmark steps
    base: tuple[str, ...]  # the options palign run sets: files, model, run directory
    options: tuple[str, ...]  # the YAML's: engine and the stage's own section
    inputs: tuple[Source, ...]
    model: Source | None
    outputs: tuple[str, ...]
    marker: str  # what a fresh start of the stage rewrites before anything else

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.stage, *self.base, *self.options)


def plan(p: Pipeline) -> list[Step]:
    """Every step of the pipeline, in order, wired file to file."""
    run = Path(p.run_dir)
    engine = ("--backend", p.backend, *p.flags("engine"))
    base_model = Source(p.model, "model", "model")
    trunc, aligned, train_dir = str(run / "truncate.jsonl"), str(run / "align.jsonl"), run / "train"
    steps = []
    if p.cots:
        opts = {s: (*engine, *p.flags(s)) if s in ENGINE_STAGES else p.flags(s) for s in STAGES}
        steps += [
            _step("truncate", "truncate", ("-i", p.cots, "-o", trunc, "--model", p.model), opts["truncate"],
                  [Source(p.cots, "data", "data.cots")], base_model, (trunc,)),
            _step("align", "align", ("-i", trunc, "-o", aligned, "--model", p.model), opts["align"],
                  [Source(trunc, "data", "truncate", "truncate")], base_model, (aligned,)),
            _step("train", "train", ("-i", aligned, "--model", p.model, "--run-dir", str(train_dir)), opts["train"],
                  [Source(aligned, "data", "align", "align")], base_model, (str(train_dir / "model"),),
                  marker=str(train_dir / TRAIN_STATE)),
        ]
        student = Source(str(train_dir / "model"), "model", "train", "train")
    else:
        student = base_model
    if p.infer_model:
        student = Source(p.infer_model, "model", "infer.model")
    graded = []
    for name, path in p.benchmarks.items():
        out = str(run / "infer" / f"{name}.jsonl")
        steps.append(_step("infer", f"infer:{name}", ("-i", path, "-o", out, "--model", student.path),
                           (*engine, *p.flags("infer")), [Source(path, "data", f"data.benchmarks.{name}")],
                           student, (out,)))
        graded.append(Source(out, "data", f"infer:{name}", f"infer:{name}"))
    if graded:
        out, summary = str(run / "graded.jsonl"), str(run / "summary.json")
        base = (*(x for g in graded for x in ("-i", g.path)), "-o", out, "--summary", summary)
        steps.append(_step("eval", "eval", base, p.flags("eval"), graded, None, (out, summary)))
    return steps


def _step(stage: str, name: str, base: tuple[str, ...], options: tuple[str, ...], inputs: list[Source],
          model: Source | None, outputs: tuple[str, ...], marker: str | None = None) -> Step:
    return Step(stage, name, base, tuple(options), (*inputs, *_option_files(stage, options)), model,
                outputs, marker or outputs[0])


def _option_files(stage: str, options: Sequence[str]) -> list[Source]:
    """Files an option names (a judge prompt, a LLaMA-Factory config): their content is an
    input too. Paths are as the stage sees them, relative to where palign run is started."""
    values = [v for v in options if not v.startswith("-")]
    return [Source(os.path.abspath(v), "file", f"a {stage} option") for v in dict.fromkeys(values) if os.path.isfile(v)]


def select(steps: list[Step], start: str | None, until: str | None) -> list[Step]:
    for name in (start, until):
        if name is not None and name not in STAGES:
            raise UsageError(f"--from/--until must be one of {', '.join(STAGES)}; got {name!r}")
    lo = STAGES.index(start) if start else 0
    hi = STAGES.index(until) if until else len(STAGES) - 1
    return [s for s in steps if lo <= STAGES.index(s.stage) <= hi]


def check_values(p: Pipeline, steps: Sequence[Step], commands: Mapping[str, Any]) -> list[str]:
    """Every key's value parsed by the stage's own command, as the stage will parse it."""
    problems: list[str] = []
    first = {}
    for step in steps:
        first.setdefault(step.stage, step)
    for stage, step in first.items():
        command = commands[stage]
        checks = [(f"{stage}.{k}", flags) for k, flags in p.sections.get(stage, {}).items()]
        if stage in ENGINE_STAGES:
            checks += [("backend", ("--backend", p.backend))]
            checks += [(f"engine.{k}", flags) for k, flags in p.engine.items()]
        for where, flags in checks:
            message = check_value(command, stage, step.base, flags)
            if message is not None:
                problems.append(f"{p.path}: {where}: {message}")
    return list(dict.fromkeys(problems))


def check_files(p: Pipeline, steps: Sequence[Step], chosen: Sequence[Step]) -> list[str]:
    """What the chosen steps read must be there: data files, a local model, and the files of
    earlier steps that this run will not make."""
    from palign_cli.sources import is_hf_spec, parse_hf_spec

    names = {s.name for s in chosen}
    problems = []
    if Path(p.run_dir).exists() and not Path(p.run_dir).is_dir():
        problems.append(f"run_dir: {p.run_dir} is not a directory")
    for step in chosen:
        for src in (*step.inputs, *([step.model] if step.model else [])):
            if src.made_by:
                if src.made_by not in names and not os.path.exists(src.path):
                    problems.append(f"{step.name} reads {src.path}, which step {src.made_by} has not made yet; "
                                    f"run it first (drop --from)")
            elif src.kind == "data" and is_hf_spec(src.path):
                try:
                    parse_hf_spec(src.path)
                except UsageError as exc:
                    problems.append(f"{src.where}: {exc}")
            elif src.kind == "data" and not os.path.isfile(src.path):
                problems.append(f"{src.where}: no such file: {src.path}")
            elif src.kind == "model" and os.path.isabs(src.path) and not os.path.exists(src.path):
                problems.append(f"{src.where}: no such model directory: {src.path}")
    return [f"{p.path}: {x}" for x in dict.fromkeys(problems)]


def command_line(argv: Sequence[str]) -> str:
    return "palign " + shlex.join(argv)


def run_steps(decisions: Sequence[Any], run_dir: str, say: Callable[[str], None]) -> int:
    """Run each step not skipped, recording it; stop at the first failure and return its code."""
    from palign_cli import provenance

    for d in decisions:
        if d.action == "skip":
            say(f"== {d.step.name}: skipped (done earlier with the same options, inputs and model)")
            continue
        say(f"== {d.step.name}: run: {d.why}")
        say("   " + command_line(d.argv))
        provenance.started(run_dir, d)
        code = subprocess.call([sys.executable, "-m", "palign_cli", *d.argv], env=os.environ.copy())
        if code != 0:
            say(f"== {d.step.name} failed with exit code {code}; rerun `palign run` to resume it")
            return code
        provenance.finished(run_dir, d)
    return 0
