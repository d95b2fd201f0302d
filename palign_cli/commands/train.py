"""`palign train`: write LLaMA-Factory's files for the aligned data, then run llamafactory-cli."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer

from palign_cli import options as o
from palign_cli.config import opt
from palign_cli.options import EngineChoice, Group, IOOptions, field_group, with_groups

NAME = "train"
LF_PANEL = "LLaMA-Factory"


class FinetuningType(str, Enum):
    lora = "lora"
    full = "full"


@dataclass(frozen=True)
class TrainFlags:
    """palign train's own flags: the run directory and what goes into LLaMA-Factory's YAML."""

    run_dir: Path = opt(..., "--run-dir", help="Run directory: data, train.yaml, LoRA adapter (ckpt/), the trained student (model/).", panel=o.IO_PANEL)
    finetuning_type: FinetuningType | None = opt(None, "--finetuning-type", help="lora (the paper's) or full. [default: lora]", panel=LF_PANEL)
    template: str | None = opt(None, "--template", help="LLaMA-Factory chat template name. Default: parse the student's own chat template, the one `palign infer` uses.", panel=LF_PANEL)
    cutoff_len: int | None = opt(None, "--cutoff-len", help="Max tokens per row; longer rows are dropped and counted. [default: 16384]", panel=LF_PANEL, min=1)
    set_: list[str] | None = opt(None, "--set", help="Override any train.yaml key (YAML-typed value); repeatable.", panel=LF_PANEL, metavar="KEY=VALUE")
    config: Path | None = opt(None, "--config", help="Base LLaMA-Factory YAML instead of configs/llamafactory_{lora,full}.yaml.", panel=LF_PANEL)
    deepspeed: Path | None = opt(None, "--deepspeed", help="DeepSpeed JSON config; runs through torchrun (FORCE_TORCHRUN=1).", panel=LF_PANEL, metavar="CONFIG")
    merge: bool = opt(True, "--merge/--no-merge", help="LoRA: merge the adapter into RUN/model, a plain model every backend loads.", panel=LF_PANEL)
    llamafactory_cli: str | None = opt(None, "--llamafactory-cli", help="The llamafactory-cli to run [default: $PALIGN_LLAMAFACTORY_CLI, else PATH].", panel=LF_PANEL)
    include_unchecked: bool = opt(False, "--include-unchecked", help="Also train on records `palign align --no-verify` left unchecked (verified: null).", panel=o.IO_PANEL)
    overwrite: bool = opt(False, "--overwrite", help="Delete RUN's checkpoints and train from scratch instead of resuming.", panel=o.IO_PANEL)
    dry_run: bool = opt(False, "--dry-run", help="Write and check the files, print the commands on stdout, run nothing.")


@with_groups(
    io=Group(IOOptions(), only=("input",)), fields=field_group("question"), engine=Group(EngineChoice(), only=("model",)),
    flags=Group(TrainFlags()),
)
def command(**groups) -> None:
    """Fine-tune the student on the verified targets with LLaMA-Factory.

    Writes RUN/sft.jsonl (alpaca form; the instruction is exactly the prompt `palign infer`
    sends), dataset_info.json and train.yaml (the paper's LoRA settings, every path absolute),
    then runs `llamafactory-cli train train.yaml` in RUN and exits with its status; a LoRA
    adapter is then merged, so the student is always RUN/model. Rows longer than cutoff_len
    are dropped and counted, never cut. A rerun on the same RUN resumes from the last
    checkpoint, or says the run is done. Multi-GPU and multi-node: FORCE_TORCHRUN, NNODES,
    NODE_RANK, MASTER_ADDR, MASTER_PORT pass through to llamafactory-cli from the environment;
    --deepspeed sets FORCE_TORCHRUN=1.
    """
    import shlex

    from palign_cli import console, llamafactory
    from palign_cli.stages.train import (
        TrainRequest,
        child_env,
        commands,
        describe,
        execute,
        prepare,
    )

    f: TrainFlags = groups["flags"]
    dry_run = f.dry_run
    cli = llamafactory.find_cli(f.llamafactory_cli) if dry_run else llamafactory.require_cli(f.llamafactory_cli)
    req = TrainRequest(
        input=groups["io"].input, model=groups["engine"].model, run_dir=f.run_dir,
        finetuning_type=f.finetuning_type.value if f.finetuning_type else None,
        config_file=str(f.config) if f.config else None, template=f.template, cutoff_len=f.cutoff_len,
        deepspeed=str(f.deepspeed) if f.deepspeed else None, overrides=tuple(f.set_ or ()),
        question_field=groups["fields"].question_field, include_unchecked=f.include_unchecked, merge=f.merge,
        overwrite=f.overwrite, dry_run=dry_run,
    )
    plan = prepare(req, cli)
    stats = plan.stats
    mean = stats.total_tokens / max(stats.used, 1)
    console.info(f"train: {describe(stats, plan.config['cutoff_len'])}; longest {stats.max_tokens} tokens, mean {mean:.0f}")
    console.info(f"train: wrote {plan.paths.train_yaml}" + (f"; resuming from {plan.resume_from.name}" if plan.resume_from else ""))
    distributed = {k: v for k, v in child_env(plan).items() if k in llamafactory.DISTRIBUTED_ENV}
    if distributed:
        console.info("train: " + " ".join(f"{k}={v}" for k, v in distributed.items()))
    todo = commands(plan, cli or Path("llamafactory-cli"))
    if not todo:
        console.info(f"train: {plan.paths.run_dir} is already trained; student model: {plan.model_dir}")
        return
    if dry_run:
        if cli is None:
            console.warn(f"llamafactory-cli not found; {llamafactory.INSTALL_HINT}")
        env = "".join(f"{k}={shlex.quote(v)} " for k, v in plan.env_added.items())
        for argv in todo:
            typer.echo(f"cd {shlex.quote(str(plan.paths.run_dir))} && {env}{shlex.join(argv)}")
        return
    rc = execute(plan, cli)
    if rc != 0:
        console.err.print(f"error: llamafactory-cli exited with status {rc}; log: {plan.paths.log}", style="red", markup=False)
        raise typer.Exit(rc)
    console.info(f"train: done; student model: {plan.model_dir}  (palign infer --model {shlex.quote(str(plan.model_dir))})")
