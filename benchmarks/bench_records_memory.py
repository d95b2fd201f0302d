"""Peak memory of reading and re-writing JSONL through palign's record I/O, by file size.

Each size runs in fresh subprocesses (so peak RSS is their own): stream every record through
StageIO (parse, type checks, id, the duplicate-id check) and write it back with the stage
writer, in batches of 256; then run again over the finished output ("resume"): every finished
record's input digest is loaded and verified against the input before anything is skipped.
Memory must stay flat as the file grows (8-byte digests per id, never the records or ids);
the printed ratio is peak(largest) / peak(smallest).

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
    n = n or io.skipped
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
            mb = os.path.getsize(inp) / 2**20
            for phase in ("fresh", "resume"):
                res = subprocess.run([sys.executable, "-c", CHILD, inp, out], capture_output=True, text=True, check=True)
                done, secs, rss_kb = res.stdout.split()
                assert int(done) == n
                rows.append((phase, n, mb, float(secs), int(rss_kb) / 1024))
            os.remove(inp)
            os.remove(out)
    print(f"{'run':>7} {'records':>10} {'file MiB':>9} {'seconds':>8} {'rec/s':>9} {'peak RSS MiB':>13}")
    for phase, n, mb, secs, rss in rows:
        print(f"{phase:>7} {n:>10} {mb:>9.1f} {secs:>8.2f} {n / secs:>9.0f} {rss:>13.1f}")
    for phase in ("fresh", "resume"):
        mine = [r for r in rows if r[0] == phase]
        print(f"{phase}: peak RSS ratio largest/smallest file: {mine[-1][4] / mine[0][4]:.2f} "
              f"(file grew {mine[-1][1] / mine[0][1]:.0f}x)")


if __name__ == "__main__":
    main()
