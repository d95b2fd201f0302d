"""`palign tiny-model`: the offline random model tests, benchmarks and the demo run on."""

from __future__ import annotations

from typing import Annotated

import typer

NAME = "tiny-model"


def command(
    out_dir: Annotated[str, typer.Argument(help="Directory to write the model into.")],
    seed: Annotated[int, typer.Option("--seed", help="Weight init seed.")] = 0,
) -> None:
    """Build a tiny random Qwen2 model with an offline tokenizer (no hub access)."""
    from palign_cli.console import info
    from palign_cli.tiny_model import build_tiny_model

    path = build_tiny_model(out_dir, seed=seed)
    info(f"tiny model written to {path}")
