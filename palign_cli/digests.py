"""A compact hash table of 8-byte digests, for checking millions of ids in flat memory.

A Python `set` of a million id strings costs ~100 MB; this table holds the ids' 8-byte
xxh3 digests in an `array` (8 bytes a slot, and 8 more for a value where one is kept), about
16-32 MB for a million. Open addressing with double hashing; the capacity is a power of two
kept under 3/4 full. Two different ids share a digest with odds of about n^2 / 2^65: one in
3.7e7 at a million ids.
"""

from __future__ import annotations

from array import array

import xxhash

EMPTY = 0
MIN_CAPACITY = 1 << 10
MAX_LOAD = 0.75


def id_key(source: str, rid: str) -> int:
    """The table key of a record: its id, within its source where a stage has several inputs."""
    key = xxhash.xxh3_64_intdigest(f"{source}\0{rid}".encode())
    return key or 1  # 0 marks an empty slot


class DigestTable:
    """Keys (non-zero 64-bit ints) to optional 64-bit values."""

    def __init__(self, values: bool = True, capacity: int = MIN_CAPACITY):
        size = MIN_CAPACITY
        while size < capacity:
            size *= 2
        self._with_values = values
        self._alloc(size)
        self.count = 0

    def _alloc(self, size: int) -> None:
        self._mask = size - 1
        self._keys = array("Q", [EMPTY]) * size
        self._values = array("Q", [EMPTY]) * size if self._with_values else None

    def _slot(self, key: int) -> int:
        mask, keys = self._mask, self._keys
        i = key & mask
        step = ((key >> 32) & mask) | 1  # odd: visits every slot of a power-of-two table
        while True:
            k = keys[i]
            if k == key or k == EMPTY:
                return i
            i = (i + step) & mask

    def __contains__(self, key: int) -> bool:
        return self._keys[self._slot(key)] == key

    def __len__(self) -> int:
        return self.count

    def get(self, key: int) -> int | None:
        i = self._slot(key)
        if self._keys[i] != key:
            return None
        return self._values[i] if self._values is not None else 0

    def put(self, key: int, value: int = 0) -> None:
        i = self._slot(key)
        if self._keys[i] == EMPTY:
            if (self.count + 1) > MAX_LOAD * (self._mask + 1):
                self._grow()
                i = self._slot(key)
            self._keys[i] = key
            self.count += 1
        if self._values is not None:
            self._values[i] = value

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        self._alloc(2 * (self._mask + 1))
        for j, key in enumerate(old_keys):
            if key != EMPTY:
                i = self._slot(key)
                self._keys[i] = key
                if self._values is not None and old_values is not None:
                    self._values[i] = old_values[j]
