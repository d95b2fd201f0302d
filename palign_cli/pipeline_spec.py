"""The pipeline YAML of `palign run`, read and checked whole before any stage starts.

A mistake found after an hour of truncation is an hour lost, so everything that can be known
up front is checked up front and reported together, one line each: the YAML's shape and
types, and every stage key against that stage's own options. Keys are looked up in the real
commands of the CLI (click commands, handed in by the caller), never in a copied list, so an
option works in a pipeline the day the stage has it, and a value is judged by the very
parser the stage will use (`check_values`). Data files are checked once the steps are known
(`pipeline.check_files`): only what the chosen steps read must exist.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from palign_cli.errors import UsageError

STAGES = ("truncate", "align", "train", "infer", "eval")
ENGINE_STAGES = ("truncate", "align", "infer")  # the stages that load a model
TOP_KEYS = ("run_dir", "model", "backend", "engine", "data", *STAGES)
DATA_KEYS = ("cots", "benchmarks")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # a benchmark name becomes a file name

# Options palign run sets itself, and what to write instead.
SET_BY_RUN = {
    "input": "each stage reads the file the step before it wrote",
    "output": "each stage writes its file in run_dir",
    "run_dir": "train writes into run_dir/train",
    "summary": "eval writes run_dir/summary.json",
    "model": "use the top-level model (or infer: model: for inference only)",
    "backend": "use the top-level backend",
    "overwrite": "a step whose inputs or options changed is redone from scratch; palign run --force redoes every step",
    "dry_run": "use palign run --dry-run",
}


class PipelineInvalid(UsageError):
    """Every problem found in a pipeline, one line each, so one edit can fix them all."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(self.problems[0] + more)


@dataclass(frozen=True)
class Pipeline:
    """A checked pipeline: absolute paths, and each YAML key already rendered as its flags."""

    path: str
    run_dir: str
    model: str
    backend: str = "auto"
    cots: str | None = None
    benchmarks: dict[str, str] = field(default_factory=dict)
    engine: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sections: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    infer_model: str | None = None

    def flags(self, section: str) -> tuple[str, ...]:
        keys = self.engine if section == "engine" else self.sections.get(section, {})
        return tuple(flag for flags in keys.values() for flag in flags)


@dataclass(frozen=True)
class Opt:
    """One YAML key of a stage: the flag it names and the command parameter behind it."""

    flag: str
    param: Any  # a click (or Typer's click) Option
    opposite: str | None = None  # the other half of a --x/--no-x switch


def options_of(command: Any) -> dict[str, Opt]:
    """YAML key -> flag for every long option of a command, `--no-x` halves included."""
    found: dict[str, Opt] = {}
    for param in command.params:
        longs = [o for o in param.opts if o.startswith("--")]
        negs = [o for o in getattr(param, "secondary_opts", ()) if o.startswith("--")]
        for opt in longs:
            found[_key(opt)] = Opt(opt, param, negs[0] if negs else None)
        for opt in negs:
            found[_key(opt)] = Opt(opt, param, longs[0] if longs else None)
    return found


def _key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def kind(value: Any) -> str:
    """How a YAML value reads to a person: 'a list', 'an integer', ..."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def read(path: str) -> Any:
    """The YAML document, or a one-line error: unreadable, not YAML, or empty."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read pipeline ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: is not UTF-8 text") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UsageError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    if doc is None:
        raise UsageError(f"{path}: is empty; a pipeline needs run_dir, model and data (see configs/demo.yaml)")
    return doc


def load(path: str, commands: Mapping[str, Any]) -> tuple[Pipeline | None, list[str]]:
    """Read and check a pipeline: (the pipeline, or None if its shape is beyond use; problems)."""
    try:
        doc = read(path)
    except UsageError as exc:
        return None, [str(exc)]
    problems: list[str] = []
    pipeline = _check(path, doc, commands, problems.append)
    return pipeline, [f"{path}: {p}" for p in problems]


def _check(path: str, doc: Any, commands: Mapping[str, Any], say) -> Pipeline | None:
    if not isinstance(doc, dict):
        say(f"expected a mapping of pipeline keys (run_dir, model, data, ...), got {kind(doc)}")
        return None
    for key in doc:
        if key not in TOP_KEYS:
            say(_unknown(str(key), TOP_KEYS, "allowed: " + ", ".join(TOP_KEYS)))
    base = Path(path).absolute().parent  # not resolve(): configs/ may be a symlink
    run_dir = _text(doc, "run_dir", "a directory path", say)
    model = _text(doc, "model", "a model path or name", say)
    backend = _text(doc, "backend", "an engine name", say, required=False)
    if backend is not None:
        from palign_cli.backends import names

        if backend not in ("auto", *names()):
            say(f"backend: {backend!r} is not one of auto, {', '.join(names())}")
    data = _data(doc, base, say)
    rendered, engine, infer_model = _options(doc, data, commands, say)
    if run_dir is None or model is None or data is None:
        return None
    return Pipeline(
        path=path, run_dir=_resolve(base, run_dir), model=resolve_model(base, model),
        backend=backend or "auto", cots=data[0], benchmarks=data[1], engine=engine,
        sections=rendered, infer_model=resolve_model(base, infer_model) if infer_model else None,
    )


def _options(doc: Mapping[str, Any], data: tuple[str | None, dict[str, str]] | None,
             commands: Mapping[str, Any], say):
    """Each stage section and the engine section rendered as flags; infer's own model apart."""
    sections = {s: _mapping(doc, s, f"a mapping of palign {s}'s options", say) for s in STAGES}
    infer_model = sections["infer"].pop("model", None)
    if infer_model is not None and not isinstance(infer_model, str):
        say(f"infer.model: expected a model path or name, got {kind(infer_model)}")
        infer_model = None
    rendered = {s: _render(s, sections[s], options_of(commands[s]), say) for s in STAGES}
    engine_opts = [(s, options_of(commands[s])) for s in _engine_stages(data)]
    engine = _render("engine", _mapping(doc, "engine", "a mapping of engine options", say),
                     _common([o for _, o in engine_opts]), say, engine_opts)
    train_flags = [f for flags in rendered["train"].values() for f in flags]
    if data and data[0] and data[1] and infer_model is None and "--no-merge" in train_flags:
        say("train.merge: false leaves no model in run_dir/train/model for infer to read; drop it, "
            "or give infer: model: explicitly")
    return rendered, engine, infer_model


def _engine_stages(data: tuple[str | None, dict[str, str]] | None) -> list[str]:
    """The stages the engine section goes to: those of the steps this pipeline has."""
    cots, benchmarks = data or (None, {})
    used = [s for s in ENGINE_STAGES if (cots and s != "infer") or (benchmarks and s == "infer")]
    return used or list(ENGINE_STAGES)


def _unknown(key: str, known: Sequence[str], allowed: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]}?" if close else allowed
    return f"unknown key '{key}' ({hint})"


def _text(doc: Mapping[str, Any], key: str, what: str, say, required: bool = True) -> str | None:
    if key not in doc or doc[key] is None:
        if required:
            say(f"missing key '{key}' ({what})")
        return None
    value = doc[key]
    if not isinstance(value, str) or not value.strip():
        say(f"{key}: expected {what}, got {kind(value) if value != '' else 'an empty string'}")
        return None
    return value


def _mapping(doc: Mapping[str, Any], key: str, what: str, say) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        say(f"{key}: expected {what}, got {kind(value)}")
        return {}
    return {str(k): v for k, v in value.items()}


def _data(doc: Mapping[str, Any], base: Path, say) -> tuple[str | None, dict[str, str]] | None:
    if "data" not in doc:
        say("missing key 'data' (cots and/or benchmarks)")
        return None
    data = doc["data"] if doc["data"] is not None else {}
    if not isinstance(data, dict):
        say(f"data: expected a mapping (cots, benchmarks), got {kind(data)}")
        return None
    for key in data:
        if key not in DATA_KEYS:
            say("data: " + _unknown(str(key), DATA_KEYS, "allowed: cots, benchmarks"))
    cots = _data_file(data.get("cots"), "data.cots", base, say)
    benchmarks: dict[str, str] = {}
    raw = data.get("benchmarks")
    if raw is not None and not isinstance(raw, dict):
        say(f"data.benchmarks: expected a mapping of name: file, got {kind(raw)}")
        raw = None
    for name, spec in (raw or {}).items():
        if not NAME_RE.match(str(name)):
            say(f"data.benchmarks: name '{name}' must be letters, digits, '.', '_' or '-' (it names run_dir/infer/NAME.jsonl)")
        elif (path := _data_file(spec, f"data.benchmarks.{name}", base, say)) is not None:
            benchmarks[str(name)] = path
    if cots is None and not benchmarks and "cots" not in data and not raw:
        say("nothing to run: data has no cots and no benchmarks")
    return cots, benchmarks


def _data_file(value: Any, where: str, base: Path, say) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        say(f"{where}: expected a file path or hf: spec, got {kind(value)}")
        return None
    return _resolve(base, value)


def _resolve(base: Path, value: str) -> str:
    return value if value.startswith("hf:") else os.path.normpath(base / os.path.expanduser(value))


def is_path_like(value: str) -> bool:
    return value.startswith((".", "/", "~"))


def resolve_model(base: Path, model: str) -> str:
    """A path (./x, ../x, /x, ~/x, or one that exists) is relative to the YAML; else a hub name."""
    if is_path_like(model) or Path(_resolve(base, model)).exists():
        return _resolve(base, model)
    return model


def _common(option_maps: Sequence[dict[str, Opt]]) -> dict[str, Opt]:
    """Engine keys go to every stage that loads a model: render with the first that has the key."""
    merged: dict[str, Opt] = {}
    for opts in reversed(option_maps):
        merged.update(opts)
    return merged


def _render(section: str, options: Mapping[str, Any], known: dict[str, Opt], say,
            every: Sequence[tuple[str, dict[str, Opt]]] = ()) -> dict[str, tuple[str, ...]]:
    """Each key of a section as its flags; a key that cannot be a flag is a problem and dropped."""
    out: dict[str, tuple[str, ...]] = {}
    for raw_key, value in options.items():
        key = raw_key.replace("-", "_")
        where = f"{section}.{raw_key}"
        if key in SET_BY_RUN and not (section == "infer" and key == "model"):
            say(f"{where}: set by palign run ({SET_BY_RUN[key]})")
            continue
        missing = [stage for stage, opts in every if key not in opts]
        if key not in known or missing:
            stage = missing[0] if missing else section
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close and key not in known else ""
            say(f"{where}: not an option of palign {stage}{hint}")
            continue
        try:
            out[raw_key] = render(known[key], value)
        except ValueError as exc:
            say(f"{where}: {exc}")
    return out


def render(opt: Opt, value: Any) -> tuple[str, ...]:
    """A YAML value as flags: `64` -> --max-tokens 64; true -> the switch; false -> its --no-
    half where the option has one (else nothing, the default); a list -> the flag repeated."""
    param = opt.param
    if value is None:
        return ()
    if param.is_flag:
        if not isinstance(value, bool):
            raise ValueError(f"{opt.flag} is a switch: true or false, got {kind(value)}")
        if value:
            return (opt.flag,)
        return (opt.opposite,) if opt.opposite else ()
    if isinstance(value, bool):
        raise ValueError(f"{opt.flag} takes a value, not true/false")
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not param.multiple:
        raise ValueError(f"{opt.flag} takes one value, got a list")
    for item in items:
        if isinstance(item, (dict, list, bool)) or item is None:
            raise ValueError(f"{opt.flag} takes text or numbers, got {kind(item)} in the list")
    return tuple(x for item in items for x in (opt.flag, str(item)))


def check_value(command: Any, stage: str, base: Sequence[str], flags: Sequence[str]) -> str | None:
    """Parse `flags` exactly as the stage's own command line would; the parser's complaint,
    or None. `base` holds the options palign run sets (input, output, model)."""
    try:
        command.make_context(stage, [*base, *flags], resilient_parsing=False)
    except Exception as exc:  # the CLI's UsageError family: Typer vendors its own click
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return _plain(message, flags)
    return None


def _plain(message: str, flags: Sequence[str]) -> str:
    """'Invalid value for '--n' (env var: ...): Value error, x' -> 'x (got 'v')'."""
    text = re.sub(r"^Invalid value for '[^']*'(?: \(env var: '[^']*'\))?: ", "", message.strip())
    text = re.sub(r"^Value error, ", "", text).rstrip(".")
    values = [f for f in flags if not f.startswith("--")]
    if values and f"'{values[-1]}'" not in text and values[-1] not in text:
        text += f" (got {values[-1]!r})"
    return text
