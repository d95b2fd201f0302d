"""Frozen option groups with every default in one place, and the fingerprint stored beside outputs.

An option group is a frozen dataclass whose fields say, in their metadata, how they appear on
the command line (flag, help, panel, bounds). This module never imports typer: stages and
engines use the groups as plain values, and `options.py` turns them into Typer parameters once.
A stage's config nests the groups it uses with its own defaults (`Sampling(n=3, ...)`).

The fingerprint of a config is its flattened fields (`sampling.top_k`). A resume compares the
stored fingerprint with the current one, where a field the stored one does not know (an option
added since) counts as equal while it is still at its default: adding an option never
invalidates earlier outputs, while changing a value, or a default, does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

IO_PANEL = "Input and output"
ENGINE_PANEL = "Engine"
SAMPLING_PANEL = "Sampling (vLLM's names)"


def opt(default: Any, *decls: str, help: str = "", panel: str | None = None, **click: Any) -> Any:
    """A dataclass field that is also a command-line option (`decls` default to --field-name)."""
    return field(default=default, metadata={"cli": True, "decls": decls, "help": help, "panel": panel, "click": click})


def cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in fields(cls) if f.metadata.get("cli")]


@dataclass(frozen=True)
class Sampling:
    """How a stage samples, under vLLM's names; each stage nests it with its own defaults."""

    n: int = opt(1, "--n", help="Samples per prompt.", panel=SAMPLING_PANEL, min=1)
    temperature: float = opt(1.0, help="0 is greedy.", panel=SAMPLING_PANEL, min=0.0)
    top_p: float = opt(1.0, panel=SAMPLING_PANEL, min=0.0, max=1.0)
    top_k: int = opt(-1, help="-1 is off.", panel=SAMPLING_PANEL)
    repetition_penalty: float = opt(1.0, panel=SAMPLING_PANEL, min=0.0)
    max_tokens: int = opt(256, help="New tokens per sample.", panel=SAMPLING_PANEL, min=1)
    seed: int = opt(0, help="Base seed; each record's seed derives from it and the id.", panel=SAMPLING_PANEL)
    enable_thinking: bool | None = opt(
        None, "--enable-thinking/--disable-thinking",
        help="Passed to chat templates that know it (Qwen3).", panel=SAMPLING_PANEL,
    )

    def params(self, seed: int | None, **changes: Any):
        """The engine-level request for one prompt: these settings with a per-request seed."""
        from palign_cli.backends.base import SamplingParams

        names = {f.name for f in fields(SamplingParams)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return SamplingParams(**{**values, "seed": seed, **changes})


@dataclass(frozen=True)
class Grading:
    """How samples are graded (align verifies with the same grader eval uses)."""

    grade_timeout: float = opt(5.0, "--grade-timeout", "--timeout", help="Hard limit in seconds to grade one sample; past it the sample is `timeout` (wrong, counted).", min=0.01)
    grade_workers: int | None = opt(None, "--grade-workers", "--workers", help="Grading processes [default: one per CPU].", min=1)


class CountCut(str, Enum):
    """How eval counts a sample cut by --max-tokens (finish_reason "length")."""

    credit = "credit"  # graded like any other: right if its text holds the right answer (as before)
    wrong = "wrong"  # always wrong: an unfinished solution earns nothing


@dataclass(frozen=True)
class GradingPolicy:
    """What eval counts as correct beyond the grader's reading (both change labels, so both
    are in eval's resume fingerprint)."""

    strict: bool = opt(False, "--strict", help="math-verify's verdict only: no second opinion on its known blind spots (times of day, mixed numbers, i, ...).")
    count_cut: CountCut = opt(CountCut.credit, "--count-cut", help="Samples cut by --max-tokens: credit (graded as they stand) or wrong (always 0).", case_sensitive=False)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config as one flat mapping: nested groups become `group.field` keys."""
    out: dict[str, Any] = {}
    for f in fields(value):
        item = getattr(value, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(item) and not isinstance(item, type):
            out.update(flatten(item, key + "."))
        elif isinstance(item, tuple):
            out[key] = list(item)
        else:
            out[key] = item
    return out


def defaults_of(cls: type) -> dict[str, Any]:
    """The flattened defaults of a config class (fields without a default are left out)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value, f.name + "."))
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


class Fingerprinted:
    """Mixin for stage configs: `fingerprint()` is what `OUT.meta.json` stores and compares."""

    def fingerprint(self) -> dict[str, Any]:
        return flatten(self)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return defaults_of(cls)

    @classmethod
    def make(cls, **values: Any) -> Any:
        """Build from flat names: a field of a nested group (`n=3`) changes that group's
        default for this stage (library and test use; the CLI builds the groups itself)."""
        own = {f.name for f in fields(cls)}
        groups = {f.name: f.default for f in fields(cls) if is_dataclass(f.default)}
        nested: dict[str, dict[str, Any]] = {name: {} for name in groups}
        direct: dict[str, Any] = {}
        for key, value in values.items():
            if key in own:
                direct[key] = value
                continue
            group = next((g for g, d in groups.items() if key in {f.name for f in fields(d)}), None)
            if group is None:
                raise TypeError(f"{cls.__name__} has no field {key!r}")
            nested[group][key] = value
        for group, changes in nested.items():
            if changes:
                direct[group] = dataclasses.replace(direct.get(group, groups[group]), **changes)
        return cls(**direct)


def config_diff(stored: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> str:
    """`key: old -> new; ...` for the fields that differ, or "" when the two agree.

    A key only the current config has agrees while it is at its default (an option added since
    the stored one was written); a key only the stored one has differs (an option renamed or
    removed since: what it meant cannot be checked).
    """
    defaults = defaults or {}
    parts = []
    for key in sorted(set(stored) | set(current)):
        name = key.rsplit(".", 1)[-1]  # `sampling.temperature` reads as the flag it came from
        if key not in current:
            parts.append(f"{name}: {stored[key]!r} -> <unset>")
        elif key not in stored:
            if key in defaults and current[key] == defaults[key]:
                continue
            parts.append(f"{name}: <unset> -> {current[key]!r}")
        elif stored[key] != current[key]:
            parts.append(f"{name}: {stored[key]!r} -> {current[key]!r}")
    return "; ".join(parts)
