"""Per-record seeds: derived from the run's --seed and the record id, never from position.

A record keeps its seed whatever batch, shard or resumed run it lands in, so its samples are
reproducible on the same engine.
"""

from __future__ import annotations

import hashlib


def record_seed(base: int, rid: str) -> int:
    digest = hashlib.sha256(f"{base}:{rid}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
