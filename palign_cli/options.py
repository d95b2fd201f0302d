"""Command-line options: option groups mapped to Typer once, and the few options of their own.

An option group is a frozen dataclass from `config.py` (or `BackendOptions`) whose fields carry
their flag, help and bounds. `with_groups` adds a group's fields to a command's signature with
the stage's own defaults (so `--help` shows them) and hands the command the built object, so a
command function keeps only the parameters that are its own.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from palign_cli.config import ENGINE_PANEL, IO_PANEL, SAMPLING_PANEL, cli_fields, opt

__all__ = ["ENGINE_PANEL", "IO_PANEL", "SAMPLING_PANEL", "Group", "with_groups"]


# ----- groups to Typer parameters ----------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A group as one command shows it: the stage's defaults, and which fields it offers."""

    defaults: Any  # an instance of the group's dataclass, holding this stage's defaults
    only: tuple[str, ...] | None = None  # the fields offered as flags (None: every cli field)
    panel: str | None = None  # overrides the fields' own panels

    @property
    def cls(self) -> type:
        return type(self.defaults)

    def fields(self) -> list[dataclasses.Field]:
        return [f for f in cli_fields(self.cls) if self.only is None or f.name in self.only]

    def params(self) -> list[inspect.Parameter]:
        hints = typing.get_type_hints(self.cls)
        out = []
        for f in self.fields():
            meta = f.metadata
            decls = meta["decls"] or ("--" + f.name.replace("_", "-"),)
            option = typer.Option(*decls, help=meta["help"] or None, rich_help_panel=self.panel or meta["panel"], **meta["click"])
            out.append(inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY,
                default=getattr(self.defaults, f.name), annotation=Annotated[hints[f.name], option],
            ))
        return out

    def build(self, values: dict[str, Any]) -> Any:
        return dataclasses.replace(self.defaults, **values)


def with_groups(**groups: Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the flags of each group; it receives each group built, by keyword.

    `@with_groups(sampling=Group(Sampling(n=3)))` on `def command(..., sampling: Sampling)`
    offers --n, --temperature, ... with this stage's defaults in --help.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values()
               if p.name not in groups and p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = {name: g.params() for name, g in groups.items()}
        names = [p.name for p in own] + [p.name for ps in added.values() for p in ps]
        twice = {n for n in names if names.count(n) > 1}
        if twice:
            raise TypeError(f"{fn.__name__}: option names given twice: {sorted(twice)}")

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            built = {name: g.build({p.name: kwargs.pop(p.name) for p in added[name]}) for name, g in groups.items()}
            return fn(**kwargs, **built)

        required = [p for p in own if p.default is inspect.Parameter.empty]
        optional = [p for p in own if p.default is not inspect.Parameter.empty]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in required + optional]
        params += [p for ps in added.values() for p in ps]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return wrap


# ----- the groups every stage shares -------------------------------------------------------


@dataclass(frozen=True)
class IOOptions:
    """Where records come from and go, and how bad ones and earlier runs are treated."""

    input: str = opt(..., "-i", "--input", help="Input JSONL (or .parquet, .csv, .json, hf:NAME[:CONFIG][@SPLIT]), or - for stdin.", panel=IO_PANEL)
    output: str = opt("-", "-o", "--output", help="Output JSONL file (resumed if it exists), or - for stdout.", panel=IO_PANEL)
    overwrite: bool = opt(False, "--overwrite", help="Start fresh instead of resuming an existing output.", panel=IO_PANEL)
    shard: str | None = opt(None, "--shard", help="Process only shard I of N (split by id); outputs concatenate.", panel=IO_PANEL, metavar="I/N")
    skip_invalid: bool = opt(False, "--skip-invalid", help="Set bad records aside in OUTPUT.rejects.jsonl and go on.", panel=IO_PANEL)
    rejects: str | None = opt(None, "--rejects", help="Where --skip-invalid sets bad records aside [default: OUTPUT.rejects.jsonl; ./palign-rejects.jsonl with -o -].", panel=IO_PANEL, metavar="PATH")
    id_field: str = opt("id", help="Field holding the record id.", panel=IO_PANEL)
    batch_size: int = opt(64, help="Records per engine call (and per output flush).", panel=IO_PANEL, min=1)


@dataclass(frozen=True)
class FieldNames:
    """Which input fields hold the question, gold answer and teacher CoT."""

    question_field: str | None = opt(None, help="Question field [default: question|problem].", panel=IO_PANEL)
    answer_field: str | None = opt(None, help="Gold answer field [default: answer|gold].", panel=IO_PANEL)
    cot_field: str | None = opt(None, help="Teacher CoT field [default: long_cot|Long-CoT].", panel=IO_PANEL)

    def roles(self, *wanted: str) -> dict[str, tuple[str, ...]]:
        """{role: the names it may appear under} for the roles a stage reads."""
        from palign_cli.records import field_names

        return {role: field_names(role, getattr(self, f"{role}_field")) for role in wanted}


@dataclass(frozen=True)
class EngineChoice:
    """Which engine, which model, and the settings only that engine knows."""

    model: str = opt(..., "--model", help="Model path or name (the served name for --backend openai).", panel=ENGINE_PANEL, envvar="PALIGN_MODEL")
    backend: str = opt("auto", "--backend", help="auto (vllm when installed and a GPU is present, else hf), hf, vllm, openai, or a registered engine.", panel=ENGINE_PANEL, envvar="PALIGN_BACKEND", metavar="NAME")
    engine_opt: list[str] | None = opt(None, "--engine-opt", help="An engine's own setting, KEY=VALUE (vllm: any vllm.LLM argument, e.g. max_num_seqs=256; hf: device=cuda:1). Repeatable.", panel=ENGINE_PANEL, metavar="KEY=VALUE")


def io_group(batch_size: int | None = 64, *, stdin: bool = True) -> Group:
    """The I/O flags with this stage's batch size (None: the stage batches on its own)."""
    only = tuple(f.name for f in cli_fields(IOOptions) if f.name != "batch_size" or batch_size is not None)
    return Group(IOOptions(batch_size=batch_size or 64), only=only)


def field_group(*roles: str) -> Group:
    return Group(FieldNames(), only=tuple(f"{r}_field" for r in roles))


def engine_groups() -> dict[str, Group]:
    """--model, --backend, --engine-opt and the shared engine flags (BackendOptions)."""
    from palign_cli.backends.base import BackendOptions

    return {"engine": Group(EngineChoice()), "engine_options": Group(BackendOptions(model=""))}
