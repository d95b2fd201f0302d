"""palign infer's overhead over calling the engine directly, on the same engine in one run.

Both paths generate the same samples (same prompts, same per-record seeds, same batches):
`direct` calls backend.generate batch by batch; `palign` runs the infer stage end to end
(JSONL read, ids, resume bookkeeping, JSONL write). The ratio palign/direct is the overhead.

    python benchmarks/bench_infer_overhead.py --backend hf [--problems 60 --n 2 --max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "math500.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    ap.add_argument("--model", default=None, help="default: a fresh tiny model")
    ap.add_argument("--problems", type=int, default=60)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from palign_cli.backends import BackendOptions, make_backend
    from palign_cli.records import StageIO
    from palign_cli.stages.infer import InferConfig, build_prompt, run_infer
    from palign_cli.tiny_model import build_tiny_model

    tmp = tempfile.mkdtemp()
    model = args.model or str(build_tiny_model(Path(tmp) / "tiny"))
    inp = Path(tmp) / "in.jsonl"
    with open(DATA) as src, open(inp, "w") as dst:
        for _, line in zip(range(args.problems), src):
            dst.write(line)
    records = [json.loads(x) for x in inp.read_text().splitlines()]
    engine = make_backend(args.backend, BackendOptions(model=model, dtype="float32", max_model_len=4096))
    cfg = InferConfig.make(model=model, backend=args.backend, n=args.n, max_tokens=args.max_tokens)

    def direct() -> None:
        for i in range(0, len(records), args.batch_size):
            batch = records[i:i + args.batch_size]
            engine.generate([build_prompt(r["question"], cfg) for r in batch], [cfg.request(str(r["id"])) for r in batch])

    def palign() -> None:
        out = Path(tmp) / "out.jsonl"
        with StageIO(str(inp), str(out), stage="infer", config=cfg.fingerprint(), overwrite=True,
                     required={"question": ("question",)}) as io:
            run_infer(io, engine, cfg, batch_size=args.batch_size)

    direct()  # warm-up (engine caches, allocator)
    times = {"direct": [], "palign": []}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        for name, fn in (("direct", direct), ("palign", palign)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    d, p = min(times["direct"]), min(times["palign"])
    print(f"backend={args.backend} problems={args.problems} n={args.n} max_tokens={args.max_tokens}")
    print(f"direct engine calls: {d:.3f} s (best of {args.repeats})")
    print(f"palign infer stage:  {p:.3f} s (best of {args.repeats})")
    print(f"overhead ratio palign/direct: {p / d:.3f}")
    engine.close()


if __name__ == "__main__":
    sys.exit(main())
