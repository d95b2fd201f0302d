"""SFT data and a LLaMA-Factory run directory from `palign align` output.

Writes, under RUN: `sft.jsonl` (alpaca form), `dataset_info.json`, `train.yaml` (every path
absolute), for LoRA `export.yaml` (merging the adapter into a plain model that every backend
loads), and `palign-train.json` (counts and the resume fingerprint). The actual training is
LLaMA-Factory's, run as a child process by the command.

The student always ends up in RUN/model: full fine-tuning trains there (its checkpoint-N
directories inside), LoRA trains its adapter in RUN/ckpt and merges it into RUN/model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from palign_cli import __version__, llamafactory
from palign_cli.errors import ConfigMismatch, InputError, UsageError
from palign_cli.identity import model_identity
from palign_cli.prompts import SOLVE_PROMPT, solve_prompt
from palign_cli.records import display_name, field_names, read_records, write_atomic

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASET_NAME = "palign_sft"
# Set by palign from its own flags and layout; --set cannot change them.
OWNED_KEYS = {"model_name_or_path": "--model", "dataset": None, "dataset_dir": "--run-dir", "output_dir": "--run-dir"}
# Keys whose values are paths: made absolute, so the YAML means the same from any directory.
PATH_KEYS = ("deepspeed", "adapter_name_or_path", "cache_dir", "tokenized_path", "media_dir", "logging_dir")
# Fine-tuning types whose output is an adapter on top of the base model (merged by export).
ADAPTER_TYPES = ("lora", "oft")
# What LLaMA-Factory's template adds around a reply: the end-of-turn token and its separator.
END_OF_TURN_TOKENS = 2


@dataclass(frozen=True)
class TrainRequest:
    """Everything the flags say about one `palign train` run."""

    input: str
    model: str
    run_dir: Path
    finetuning_type: str | None = None  # None: the config file's (lora for the default file)
    config_file: str | None = None
    template: str | None = None
    cutoff_len: int | None = None
    deepspeed: str | None = None
    overrides: tuple[str, ...] = ()
    question_field: str | None = None
    include_unchecked: bool = False
    merge: bool = True
    overwrite: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class RunPaths:
    run_dir: Path

    @property
    def dataset(self) -> Path:
        return self.run_dir / "sft.jsonl"

    @property
    def dataset_info(self) -> Path:
        return self.run_dir / "dataset_info.json"

    @property
    def train_yaml(self) -> Path:
        return self.run_dir / "train.yaml"

    @property
    def export_yaml(self) -> Path:
        return self.run_dir / "export.yaml"

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "ckpt"

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def output_dir(self, finetuning_type: str) -> Path:
        """Where LLaMA-Factory writes: an adapter beside the model, full weights as the model."""
        return self.adapter_dir if finetuning_type in ADAPTER_TYPES else self.model_dir

    @property
    def state(self) -> Path:
        return self.run_dir / "palign-train.json"

    @property
    def log(self) -> Path:
        return self.run_dir / "train.log"


@dataclass
class DatasetStats:
    """Where every input record went: counted, never silently dropped."""

    records: int = 0
    used: int = 0
    unverified: int = 0
    unchecked: int = 0  # --no-verify records left out (no --include-unchecked)
    unfinished: int = 0  # --no-verify records taken in, but no sample finished: no target
    too_long: int = 0
    max_tokens: int = 0
    total_tokens: int = 0
    sha256: str = ""


@dataclass
class TrainPlan:
    """A prepared run: files written, and what is left to do."""

    paths: RunPaths
    config: dict[str, Any]
    stats: DatasetStats
    merge: bool
    resume_from: Path | None = None
    trained: bool = False
    merged: bool = False
    env_added: dict[str, str] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.config["output_dir"])

    @property
    def model_dir(self) -> Path:
        """The directory `palign infer --model` takes once this run is done."""
        return self.paths.model_dir if self.merge else self.output_dir


# ---------------------------------------------------------------- the LLaMA-Factory config


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` with a YAML-typed value; `5e-5` is a float (plain YAML 1.1 says string)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set expects KEY=VALUE, got '{item}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return key, value


def load_base_config(req: TrainRequest) -> dict[str, Any]:
    default = CONFIGS / f"llamafactory_{req.finetuning_type or 'lora'}.yaml"
    path = Path(req.config_file) if req.config_file else default
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UsageError(f"{path}: cannot read LLaMA-Factory config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of LLaMA-Factory keys")
    return data


def build_config(req: TrainRequest, paths: RunPaths, model: str) -> dict[str, Any]:
    """The train.yaml contents: config file < flags < --set, then palign's own keys."""
    cfg = load_base_config(req)
    flags = {
        "finetuning_type": req.finetuning_type,
        "template": req.template,
        "cutoff_len": req.cutoff_len,
        "deepspeed": req.deepspeed,
    }
    cfg.update({k: v for k, v in flags.items() if v is not None})
    for item in req.overrides:
        key, value = parse_override(item)
        if key in OWNED_KEYS:
            flag = OWNED_KEYS[key]
            raise UsageError(f"--set {key}: palign sets this key" + (f"; use {flag}" if flag else ""))
        cfg[key] = value
    cfg.update(
        model_name_or_path=model,
        dataset=DATASET_NAME,
        dataset_dir=str(paths.run_dir),
    )
    if cfg.get("finetuning_type") not in ("lora", "full", "freeze", "oft"):
        raise UsageError(f"finetuning_type must be lora, full, freeze or oft, got {cfg.get('finetuning_type')!r}")
    cfg["output_dir"] = str(paths.output_dir(cfg["finetuning_type"]))
    for key in PATH_KEYS:
        if isinstance(cfg.get(key), str) and cfg[key]:
            cfg[key] = str(Path(cfg[key]).expanduser().absolute())
    if cfg.get("deepspeed") and not Path(cfg["deepspeed"]).is_file():
        raise UsageError(f"--deepspeed: {cfg['deepspeed']}: no such file")
    if not isinstance(cfg.get("cutoff_len"), int) or cfg["cutoff_len"] < 1:
        raise UsageError(f"cutoff_len must be a positive integer, got {cfg.get('cutoff_len')!r}")
    return cfg


def export_config(cfg: Mapping[str, Any], paths: RunPaths) -> dict[str, Any]:
    """`llamafactory-cli export`: base model + the trained adapter -> one plain model directory."""
    out = {
        "model_name_or_path": cfg["model_name_or_path"],
        "adapter_name_or_path": cfg["output_dir"],
        "finetuning_type": cfg["finetuning_type"],
        "trust_remote_code": bool(cfg.get("trust_remote_code", False)),
        "export_dir": str(paths.model_dir),
        "export_size": 5,
        "export_device": "cpu",
        "export_legacy_format": False,
    }
    if cfg.get("template"):
        out["template"] = cfg["template"]
    return out


def resolve_model(model: str) -> str:
    """A local model directory as an absolute path; anything else is a hub name, kept as is."""
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise UsageError(f"--model {model}: is a file, expected a model directory")
        return str(local.absolute())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UsageError(f"--model {model}: no such directory")
    return model


# ---------------------------------------------------------------- the SFT dataset


def _custom_tokenizer(model_dir: Path) -> bool:
    try:
        config = orjson.loads((model_dir / "tokenizer_config.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(config, dict) and "AutoTokenizer" in (config.get("auto_map") or {})


def load_tokenizer(model: str, trust_remote_code: bool):
    """The student's tokenizer, to count row lengths. A local `tokenizer.json` loads as a plain
    fast tokenizer, which does not import torch (AutoTokenizer does, through the model
    registry), so `palign train --dry-run` stays quick and torch-free. A tokenizer with code of
    its own (`auto_map` in tokenizer_config.json) goes through AutoTokenizer."""
    try:
        if (Path(model) / "tokenizer.json").is_file() and not _custom_tokenizer(Path(model)):
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(model)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--model {model}: cannot load its tokenizer ({first})") from None


class LengthCounter:
    """Tokens a row takes in training: chat-rendered prompt + reply + end of turn.

    Rendered with the student's own chat template, which is what LLaMA-Factory parses when no
    --template is given (and what `palign infer` sends); a named --template may add a few tokens.
    """

    def __init__(self, tokenizer: Any):
        from palign_cli.backends.template import ChatRenderer

        self.renderer = ChatRenderer(tokenizer)
        self.tokenizer = tokenizer

    def __call__(self, rows: Sequence[Mapping[str, str]]) -> list[int]:
        from palign_cli.backends.base import Prompt

        prompts = [self.renderer.render(Prompt.user(r["instruction"])) for r in rows]
        replies = [r["output"] for r in rows]
        p = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        o = self.tokenizer(replies, add_special_tokens=False)["input_ids"]
        return [len(a) + len(b) + END_OF_TURN_TOKENS for a, b in zip(p, o)]


def sft_row(question: str) -> dict[str, str]:
    """Alpaca form; the instruction is exactly the user turn `palign infer` sends."""
    return {"instruction": solve_prompt(question, SOLVE_PROMPT), "input": "", "output": ""}


def select_rows(req: TrainRequest, stats: DatasetStats) -> Iterable[dict[str, str]]:
    """Rows from verified records; unverified (and, unless asked for, unchecked) ones counted."""
    path = req.input
    records = read_records(
        path,
        required={"question": field_names("question", req.question_field)},
        optional={"verified": ("verified",), "target": ("target",)},
    )
    for rec in records:
        stats.records += 1
        verified = rec.data.get("verified")
        if verified is not None and not isinstance(verified, bool):
            raise InputError(display_name(path), rec.line, "must be true, false or null", field="verified")
        if verified is False:
            stats.unverified += 1
            continue
        if verified is None:
            if "verified" not in rec.data:
                raise InputError(display_name(path), rec.line, "is missing (is this `palign align` output?)", field="verified")
            if not req.include_unchecked:
                stats.unchecked += 1
                continue
        target = rec.fields.get("target")
        if verified is None and target is None:
            stats.unfinished += 1  # --no-verify, and no sample finished: nothing to train on
            continue
        if not isinstance(target, str) or not target.strip():
            raise InputError(display_name(path), rec.line, "is missing or empty in a verified record", field="target")
        row = sft_row(rec.fields["question"])
        row["output"] = target
        yield row


def write_dataset(req: TrainRequest, dest: Path, cutoff_len: int, count: LengthCounter) -> DatasetStats:
    """Stream the selected rows to `dest`, dropping (and counting) rows over cutoff_len."""
    from palign_cli.records import batched, dumps

    stats = DatasetStats()
    digest = hashlib.sha256()
    with open(dest, "wb") as f:
        for batch in batched(select_rows(req, stats), 64):
            for row, n in zip(batch, count(batch)):
                if n > cutoff_len:
                    stats.too_long += 1
                    continue
                line = dumps(row)
                f.write(line)
                digest.update(line)
                stats.used += 1
                stats.max_tokens = max(stats.max_tokens, n)
                stats.total_tokens += n
    stats.sha256 = digest.hexdigest()
    return stats


def dataset_info() -> dict[str, Any]:
    return {
        DATASET_NAME: {
            "file_name": "sft.jsonl",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
    }


# ---------------------------------------------------------------- the run directory


def _yaml(data: Mapping[str, Any]) -> bytes:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True).encode("utf-8")


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys if old.get(k) != new.get(k))


def check_resume(paths: RunPaths, fingerprint: Mapping[str, Any], overwrite: bool, dry_run: bool) -> None:
    """Refuse to resume training that was started with other settings or other data.

    Only a run with something to resume (a checkpoint, finished training) is protected; a
    directory holding just the files of an earlier --dry-run is simply rewritten.
    """
    outputs = [d for d in (paths.adapter_dir, paths.model_dir) if d.is_dir() and any(d.iterdir())]
    if not outputs:
        return
    if overwrite:
        if not dry_run:  # a dry run deletes nothing; the real run will
            for d in outputs:
                shutil.rmtree(d)
        return
    try:
        previous = orjson.loads(paths.state.read_bytes())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigMismatch(
            f"{outputs[0]} holds training output but {paths.state.name} is missing or unreadable; "
            "use --overwrite to start over or another --run-dir"
        ) from None
    if previous == fingerprint:
        return
    if previous.get("dataset_sha256") != fingerprint["dataset_sha256"]:
        what = "different training data (the input's verified records changed)"
    elif previous.get("base_model") != fingerprint["base_model"] and previous.get("train") == fingerprint["train"]:
        what = "another version of the base model (its files changed since: rebuilt or retrained)"
    else:
        what = f"a different config ({_diff(previous['train'], fingerprint['train'])})"
    raise ConfigMismatch(
        f"{paths.run_dir} was trained with {what}; rerun with the same input and options to "
        "resume, --overwrite to start over, or another --run-dir"
    )


def prepare(req: TrainRequest, cli: Path | None) -> TrainPlan:
    """Write every file of the run and work out what is left: train, resume, merge, or nothing."""
    paths = RunPaths(req.run_dir.expanduser().absolute())
    if paths.run_dir.exists() and not paths.run_dir.is_dir():
        raise UsageError(f"--run-dir {req.run_dir}: is a file")
    model = resolve_model(req.model)
    cfg = build_config(req, paths, model)
    if cfg.get("template"):
        llamafactory.check_template(str(cfg["template"]), cli)
    if not Path(req.input).is_file() and req.input != "-":
        raise UsageError(f"{req.input}: no such file")
    tokenizer = load_tokenizer(model, bool(cfg.get("trust_remote_code", False)))
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.dataset.with_name(paths.dataset.name + ".tmp")
    try:
        stats = write_dataset(req, tmp, cfg["cutoff_len"], LengthCounter(tokenizer))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if stats.used == 0:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{display_name(req.input)}: no usable record ({describe(stats, cfg['cutoff_len'])})")
    merge = req.merge and cfg["finetuning_type"] in ADAPTER_TYPES
    base = model_identity(str(model))  # a base model rebuilt at the same path is another model
    fingerprint = {"train": dict(cfg), "dataset_sha256": stats.sha256, "merge": merge, "base_model": base["digest"]}
    check_resume(paths, fingerprint, req.overwrite, req.dry_run)
    os.replace(tmp, paths.dataset)
    write_atomic(paths.dataset_info, orjson.dumps(dataset_info(), option=orjson.OPT_INDENT_2))

    plan = TrainPlan(paths=paths, config=cfg, stats=stats, merge=merge)
    fresh = req.overwrite  # (a dry run has deleted nothing, but plans as if it had)
    plan.trained = not fresh and llamafactory.training_finished(plan.output_dir)
    plan.merged = not fresh and merged_model_exists(paths.model_dir)
    saved = [] if fresh else llamafactory.checkpoints(plan.output_dir)
    if not plan.trained and saved and "resume_from_checkpoint" not in cfg:
        plan.resume_from = saved[-1]
        cfg = {**cfg, "resume_from_checkpoint": str(saved[-1])}
    if cfg.get("deepspeed"):
        # LLaMA-Factory refuses DeepSpeed unless its launcher goes through torchrun.
        plan.env_added["FORCE_TORCHRUN"] = "1"
    write_atomic(paths.train_yaml, _yaml(cfg))
    if merge:
        write_atomic(paths.export_yaml, _yaml(export_config(cfg, paths)))
    state = {
        "palign_version": __version__,
        "input": str(Path(req.input).absolute()) if req.input != "-" else "-",
        "fingerprint": fingerprint,
        "counts": asdict(stats),
    }
    write_atomic(paths.state, orjson.dumps(state, option=orjson.OPT_INDENT_2))
    return plan


def merged_model_exists(model_dir: Path) -> bool:
    """Weights are written after config.json, and an index after all shards."""
    return (model_dir / "config.json").is_file() and any(
        (model_dir / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")
    )


def describe(stats: DatasetStats, cutoff_len: int) -> str:
    parts = [f"{stats.records} records", f"{stats.used} used", f"{stats.unverified} not verified"]
    if stats.unchecked:
        parts.append(f"{stats.unchecked} never checked (align --no-verify; see --include-unchecked)")
    if stats.unfinished:
        parts.append(f"{stats.unfinished} never checked and with no finished sample")
    parts.append(f"{stats.too_long} over cutoff_len {cutoff_len}")
    return ", ".join(parts)


# ---------------------------------------------------------------- the child processes


def commands(plan: TrainPlan, cli: Path) -> list[list[str]]:
    """What is left to run. Relative YAML names with cwd=RUN: LLaMA-Factory's torchrun launcher
    re-splits its arguments on spaces, so a RUN path with spaces must not appear there."""
    todo = []
    if not plan.trained:
        todo.append([str(cli), "train", plan.paths.train_yaml.name])
    if plan.merge and not plan.merged and is_export_node():
        todo.append([str(cli), "export", plan.paths.export_yaml.name])
    return todo


def is_export_node() -> bool:
    """Merging happens once, on the first node of a multi-node run."""
    return os.environ.get("NODE_RANK", "0") in ("", "0")


def child_env(plan: TrainPlan) -> dict[str, str]:
    """The user's environment plus only what palign documents adding (FORCE_TORCHRUN for DeepSpeed)."""
    return {**os.environ, **plan.env_added}


def execute(plan: TrainPlan, cli: Path, echo=llamafactory.stderr_echo) -> int:
    """Run what is left, streaming LLaMA-Factory's output; the first failing exit status wins."""
    env = child_env(plan)
    for argv in commands(plan, cli):
        rc = llamafactory.run(argv, cwd=plan.paths.run_dir, env=env, echo=echo, log_path=plan.paths.log)
        if rc != 0:
            return rc
    return 0
