"""What a result depends on, as short stable digests: models, files and records.

Resume and `palign run` accept earlier work only while everything it was made from is the
same. Names are not identities: `--model dir/` and `--model ./dir` are one model, and a model
rebuilt at the same path is another. So a local model is its resolved path plus a digest of
its small files (config, tokenizer) read whole and of its weight files sampled at the start,
middle and end (random re-initialisation changes every byte; a copy to another machine keeps
the digest, where mtimes would not). A hub name is the cached snapshot's commit when there is
one. Files are digested whole with xxh3 (GB/s), records as canonical JSON.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import xxhash

# Weight files are sampled, not read whole: this many bytes at the start, middle and end.
SAMPLE_BYTES = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
CHUNK = 1 << 22


def _sampled(path: Path, size: int) -> bytes:
    """xxh3 of a big file's size and three windows of it."""
    h = xxhash.xxh3_64()
    h.update(str(size).encode())
    with open(path, "rb") as f:
        for start in (0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)):
            f.seek(start)
            h.update(f.read(SAMPLE_BYTES))
    return h.digest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """xxh3-64 of a file's whole content, hex."""
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _model_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        # checkpoints and caches inside a run's model directory are not the model
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "checkpoint-", "runs")))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def local_model_digest(root: Path) -> str:
    h = xxhash.xxh3_64()
    for path in _model_files(root):
        rel = path.relative_to(root).as_posix()
        size = path.stat().st_size
        h.update(rel.encode() + b"\0")
        if path.suffix in WEIGHT_SUFFIXES and size > 3 * SAMPLE_BYTES:
            h.update(_sampled(path, size))
        else:
            h.update(bytes.fromhex(file_digest(path)))
    return h.hexdigest()


def hub_snapshot(name: str, repo_type: str = "model") -> str | None:
    """The commit of the cached snapshot of a hub model (what `from_pretrained` would load),
    or of a hub dataset with `repo_type="dataset"`."""
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub"
    )
    ref = Path(cache) / f"{repo_type}s--{name.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def is_local_model(model: str) -> bool:
    return Path(model).expanduser().exists()


def normalize_model(model: str) -> str:
    """One spelling per model: a local path resolved absolute; a hub or served name as given."""
    if is_local_model(model):
        return str(Path(model).expanduser().resolve())
    return model


def model_identity(model: str) -> dict[str, Any]:
    """`{"model": normalized, "digest": ...}`: what a stage's outputs depend on of its model."""
    name = normalize_model(model)
    if is_local_model(model):
        path = Path(name)
        digest = local_model_digest(path) if path.is_dir() else file_digest(path)
        return {"model": name, "digest": digest}
    commit = hub_snapshot(model)
    return {"model": name, "digest": f"hub:{commit}" if commit else None}


def dataset_identity(spec: str) -> dict[str, Any]:
    """An `hf:NAME[:CONFIG][@SPLIT]` input: the spec, plus the cached snapshot's commit for a
    hub dataset (None when none is cached), or a digest of the files of one saved to disk."""
    from palign_cli.sources import parse_hf_spec

    name = parse_hf_spec(spec)[0]
    if Path(name).expanduser().is_dir():
        return {"spec": spec, "digest": local_model_digest(Path(name).expanduser())}
    return {"spec": spec, "snapshot": hub_snapshot(name, "dataset")}


def canonical(obj: Any) -> bytes:
    """JSON with sorted keys: equal records give equal bytes, whatever their field order."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)


def record_digest(obj: Mapping[str, Any], leave_out: Iterable[str] = ()) -> int:
    """An 8-byte digest of a record's fields, minus `leave_out` (the id, a stage's own fields)."""
    skip = set(leave_out)
    return xxhash.xxh3_64_intdigest(canonical({k: v for k, v in obj.items() if k not in skip}))


def text_digest(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))
