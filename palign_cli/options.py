"""Option types shared by the subcommands, spelled as vLLM and transformers spell them."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

IO_PANEL = "Input and output"
ENGINE_PANEL = "Engine"
SAMPLING_PANEL = "Sampling (vLLM's names)"


class BackendName(str, Enum):
    auto = "auto"
    vllm = "vllm"
    hf = "hf"
    openai = "openai"


Input = Annotated[
    str,
    typer.Option("-i", "--input", help="Input JSONL file, or - for stdin.", rich_help_panel=IO_PANEL),
]
Output = Annotated[
    str,
    typer.Option("-o", "--output", help="Output JSONL file (resumed if it exists), or - for stdout.", rich_help_panel=IO_PANEL),
]
Overwrite = Annotated[
    bool,
    typer.Option("--overwrite", help="Start fresh instead of resuming an existing output.", rich_help_panel=IO_PANEL),
]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", metavar="I/N", help="Process only shard I of N (split by id); outputs concatenate.", rich_help_panel=IO_PANEL),
]
SkipInvalid = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Set bad records aside in OUTPUT.rejects.jsonl and go on.", rich_help_panel=IO_PANEL),
]
IdField = Annotated[
    str, typer.Option("--id-field", help="Field holding the record id.", rich_help_panel=IO_PANEL)
]
QuestionField = Annotated[
    str | None,
    typer.Option("--question-field", help="Question field [default: question|problem].", rich_help_panel=IO_PANEL),
]
AnswerField = Annotated[
    str | None,
    typer.Option("--answer-field", help="Gold answer field [default: answer|gold].", rich_help_panel=IO_PANEL),
]
CotField = Annotated[
    str | None,
    typer.Option("--cot-field", help="Teacher CoT field [default: long_cot|Long-CoT].", rich_help_panel=IO_PANEL),
]
BatchSize = Annotated[
    int,
    typer.Option("--batch-size", min=1, help="Records per engine call (and per output flush).", rich_help_panel=IO_PANEL),
]

Model = Annotated[
    str,
    typer.Option("--model", envvar="PALIGN_MODEL", help="Model path or name (the served name for --backend openai).", rich_help_panel=ENGINE_PANEL),
]
Backend = Annotated[
    BackendName,
    typer.Option("--backend", envvar="PALIGN_BACKEND", help="auto: vllm when installed and a GPU is present, else hf.", rich_help_panel=ENGINE_PANEL),
]
Dtype = Annotated[
    str, typer.Option("--dtype", help="auto, float32, bfloat16, float16.", rich_help_panel=ENGINE_PANEL)
]
MaxModelLen = Annotated[
    int | None,
    typer.Option("--max-model-len", help="Context length cap (vLLM's name).", rich_help_panel=ENGINE_PANEL),
]
TensorParallel = Annotated[
    int,
    typer.Option("--tensor-parallel-size", "-tp", min=1, help="vLLM tensor parallel GPUs.", rich_help_panel=ENGINE_PANEL),
]
GpuMemory = Annotated[
    float,
    typer.Option("--gpu-memory-utilization", help="vLLM's share of GPU memory.", rich_help_panel=ENGINE_PANEL),
]
BaseUrl = Annotated[
    str | None,
    typer.Option("--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.", rich_help_panel=ENGINE_PANEL),
]
MaxConcurrency = Annotated[
    int,
    typer.Option("--max-concurrency", min=1, help="openai: requests in flight at once.", rich_help_panel=ENGINE_PANEL),
]
TokenBudget = Annotated[
    int,
    typer.Option("--token-budget", min=256, help="hf: padded tokens per forward batch.", rich_help_panel=ENGINE_PANEL),
]

N = Annotated[int, typer.Option("--n", min=1, help="Samples per prompt.", rich_help_panel=SAMPLING_PANEL)]
Temperature = Annotated[
    float, typer.Option("--temperature", min=0.0, help="0 is greedy.", rich_help_panel=SAMPLING_PANEL)
]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, rich_help_panel=SAMPLING_PANEL)]
TopK = Annotated[int, typer.Option("--top-k", help="-1 is off.", rich_help_panel=SAMPLING_PANEL)]
RepetitionPenalty = Annotated[
    float, typer.Option("--repetition-penalty", min=0.0, rich_help_panel=SAMPLING_PANEL)
]
MaxTokens = Annotated[
    int, typer.Option("--max-tokens", min=1, help="New tokens per sample.", rich_help_panel=SAMPLING_PANEL)
]
Seed = Annotated[
    int, typer.Option("--seed", help="Base seed; each record's seed derives from it and the id.", rich_help_panel=SAMPLING_PANEL)
]
EnableThinking = Annotated[
    bool | None,
    typer.Option("--enable-thinking/--disable-thinking", help="Passed to chat templates that know it (Qwen3).", rich_help_panel=SAMPLING_PANEL),
]
