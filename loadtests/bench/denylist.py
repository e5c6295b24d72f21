"""Part `denylist`: IdSet.from_sorted over ten million sorted random ids: bytes held, lookup time present and
absent, and the full-snapshot apply a gate does."""

from __future__ import annotations

import base64
import os
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any


def denylist_benchmark(entries: int, lookups: int = 200_000) -> dict[str, float]:
    from code_service.verifier.denylist import DenyList, IdSet, pack_ids

    # Sorted random 64-bit ids without sorting ten million Python ints: a running sum of random gaps.
    gaps = array("I")
    gaps.frombytes(os.urandom(4 * entries))
    scale = (2**64 - 1) // (entries * 2**32)
    started = time.perf_counter()
    ids = array("Q", accumulate((g + 1) * scale for g in gaps))
    generated = time.perf_counter() - started
    del gaps
    started = time.perf_counter()
    made = IdSet.from_sorted(ids)
    from_sorted = time.perf_counter() - started
    rng = random.Random(7)  # noqa: S311 (benchmark sampling, not security)
    present = [ids[rng.randrange(entries)] for _ in range(lookups)]
    absent: list[int] = []
    while len(absent) < lookups:
        value = rng.getrandbits(64)
        if value not in made:
            absent.append(value)

    def per_lookup(values: Sequence[Any], probe: Callable[[Any], bool]) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for value in values:
                probe(value)
            best = min(best, (time.perf_counter() - started) / len(values))
        return best * 1e6

    hits = sum(1 for v in present[:1000] if v in made)
    assert hits == 1000
    contains = made.__contains__
    deny = DenyList()
    deny.sets["credential"] = made
    present_bytes = [v.to_bytes(8, "big") for v in present]
    absent_bytes = [v.to_bytes(8, "big") for v in absent]

    def denies(ident: bytes) -> bool:
        return deny.denies("credential", ident)

    result = {
        "entries": float(len(made)),
        "memory_bytes": float(made.memory_bytes()),
        "getsizeof": float(sys.getsizeof(ids)),
        "generate_s": generated,
        "from_sorted_s": from_sorted,
        "present_us": per_lookup(present, contains),
        "absent_us": per_lookup(absent, contains),
        "denies_present_us": per_lookup(present_bytes, denies),
        "denies_absent_us": per_lookup(absent_bytes, denies),
    }
    # What a gate does on a full sync: base64 of big-endian ids in, a verified-sorted IdSet out.
    big_endian = array("Q", ids)
    if sys.byteorder == "little":
        big_endian.byteswap()
    document = {
        "full": True,
        "version": 1,
        "issued_at": int(time.time()),
        "credential": {"add": base64.b64encode(big_endian.tobytes()).decode(), "remove": ""},
        "account": {"add": pack_ids([]), "remove": ""},
        "debtor": {"add": pack_ids([]), "remove": ""},
    }
    del big_endian
    started = time.perf_counter()
    DenyList().apply(document)
    result["snapshot_apply_s"] = time.perf_counter() - started
    return result
