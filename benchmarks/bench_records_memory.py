"""Peak memory of reading and re-writing JSONL through palign's record I/O, by file size.

Each size runs in a fresh subprocess (so peak RSS is its own): stream every record through
StageIO (parse, id, field checks) and write it back with the stage writer, in batches of 256.
Memory must stay flat as the file grows; the printed ratio is peak(largest) / peak(smallest).

    python benchmarks/bench_records_memory.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import resource, sys, time
from palign_cli.records import StageIO
inp, out = sys.argv[1], sys.argv[2]
t = time.perf_counter()
with StageIO(inp, out, stage="bench", config={}, required={"question": ("question",)}) as io:
    for batch in io.batches(256):
        io.write({**r.data, "seen": True} for r in batch)
    n = io.sink.written
print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_file(path: str, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}? " * 4, "answer": str(2 * i)}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            inp, out = os.path.join(d, f"in{n}.jsonl"), os.path.join(d, f"out{n}.jsonl")
            make_file(inp, n)
            res = subprocess.run([sys.executable, "-c", CHILD, inp, out], capture_output=True, text=True, check=True)
            written, secs, rss_kb = res.stdout.split()
            assert int(written) == n
            mb = os.path.getsize(inp) / 2**20
            rows.append((n, mb, float(secs), int(rss_kb) / 1024))
            os.remove(inp)
            os.remove(out)
    print(f"{'records':>10} {'file MiB':>9} {'seconds':>8} {'rec/s':>9} {'peak RSS MiB':>13}")
    for n, mb, secs, rss in rows:
        print(f"{n:>10} {mb:>9.1f} {secs:>8.2f} {n / secs:>9.0f} {rss:>13.1f}")
    print(f"peak RSS ratio largest/smallest file: {rows[-1][3] / rows[0][3]:.2f} "
          f"(file grew {rows[-1][0] / rows[0][0]:.0f}x)")


if __name__ == "__main__":
    main()
