"""Plumbing shared by the subcommands: engine options and stage I/O from parsed flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from palign_cli.backends.base import BackendOptions
from palign_cli.records import Shard, StageIO


def backend_options(
    model: str,
    *,
    dtype: str = "auto",
    max_model_len: int | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    base_url: str | None = None,
    max_concurrency: int = 32,
    token_budget: int = 16384,
) -> BackendOptions:
    return BackendOptions(
        model=model,
        dtype=dtype,
        max_model_len=max_model_len,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        base_url=base_url,
        max_concurrency=max_concurrency,
        token_budget=token_budget,
    )


def resolve_backend(name: str) -> str:
    """The concrete engine name (saying on stderr what `auto` chose and why), checked to exist.

    Resolved before the output is opened, so the stored config names the real engine and a
    missing engine fails before any model is loaded.
    """
    from palign_cli import console
    from palign_cli.backends import backend_requires, resolve_auto

    if name == "auto":
        name, why = resolve_auto()
        console.info(f"backend: {name} ({why})")
    backend_requires(name)
    return name


def build_backend(name: str, options: BackendOptions):
    from palign_cli.backends import make_backend

    return make_backend(name, options)


def stage_io(
    stage: str,
    input: str,
    output: str,
    config: Mapping[str, Any],
    *,
    required: Mapping[str, Sequence[str]],
    optional: Mapping[str, Sequence[str]] | None = None,
    id_field: str = "id",
    overwrite: bool = False,
    shard: str | None = None,
    skip_invalid: bool = False,
) -> StageIO:
    return StageIO(
        input,
        output,
        stage=stage,
        config=config,
        required=required,
        optional=optional,
        id_field=id_field,
        overwrite=overwrite,
        shard=Shard.parse(shard),
        skip_invalid=skip_invalid,
    )
