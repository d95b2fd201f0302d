"""A compact hash table of 8-byte digests, for checking millions of ids in flat memory.

A Python `set` of a million id strings costs ~100 MB; this table holds the ids' 8-byte xxh3
digests in an `array` (8 bytes a slot, 8 more where a value is kept, and 1 byte of flags),
about 12-23 MB for a million ids when the count is known up front (a file's lines). Open
addressing with double hashing over a prime number of slots, kept under 3/4 full. Two different ids share a digest with odds of about n^2 / 2^65:
one in 3.7e7 at a million ids.
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


def _is_prime(n: int) -> bool:
    if n < 4:
        return n > 1
    if n % 2 == 0:
        return False
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def capacity_for(n: int) -> int:
    """The smallest prime number of slots that holds n keys under the load limit."""
    size = max(MIN_CAPACITY, int(n / MAX_LOAD) + 1)
    while not _is_prime(size):
        size += 1
    return size


class DigestTable:
    """Keys (non-zero 64-bit ints), each with a byte of flags and, optionally, a 64-bit value."""

    def __init__(self, values: bool = True, expected: int = 0):
        self._with_values = values
        self._alloc(capacity_for(expected))
        self.count = 0

    def _alloc(self, size: int) -> None:
        self._size = size
        self._keys = array("Q", [EMPTY]) * size
        self._values = array("Q", [0]) * size if self._with_values else None
        self._flags = bytearray(size)

    def _slot(self, key: int) -> int:
        size, keys = self._size, self._keys
        i = key % size
        step = 1 + (key >> 32) % (size - 1)  # any step visits every slot of a prime-sized table
        while True:
            k = keys[i]
            if k == key or k == EMPTY:
                return i
            i = (i + step) % size

    def __contains__(self, key: int) -> bool:
        return self._keys[self._slot(key)] == key

    def __len__(self) -> int:
        return self.count

    def get(self, key: int) -> int | None:
        """The key's value (0 where values are not kept), or None when the key is absent."""
        i = self._slot(key)
        if self._keys[i] != key:
            return None
        return self._values[i] if self._values is not None else 0

    def flags(self, key: int) -> int:
        i = self._slot(key)
        return self._flags[i] if self._keys[i] == key else 0

    def put(self, key: int, value: int = 0, flags: int = 0) -> None:
        """Add the key (or update it): its value is set, `flags` are or-ed into its own."""
        i = self._slot(key)
        if self._keys[i] == EMPTY:
            if self.count + 1 > MAX_LOAD * self._size:
                self._grow()
                i = self._slot(key)
            self._keys[i] = key
            self.count += 1
        if self._values is not None and value:
            self._values[i] = value
        self._flags[i] |= flags

    def _grow(self) -> None:
        old_keys, old_values, old_flags = self._keys, self._values, self._flags
        self._alloc(capacity_for(2 * self.count))
        for j, key in enumerate(old_keys):
            if key != EMPTY:
                i = self._slot(key)
                self._keys[i] = key
                self._flags[i] = old_flags[j]
                if self._values is not None and old_values is not None:
                    self._values[i] = old_values[j]
