"""Base45 (RFC 9285): bytes to the QR alphanumeric character set, 1.5 characters per byte."""

from __future__ import annotations

import struct
from functools import lru_cache

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


_PAIRS: tuple[str, ...] = ()


def _pair_table() -> tuple[str, ...]:
    """The three characters of every 16-bit pair (65,536 strings, about 4 MB), made on first use: the issuing
    server encodes one code per display, and a table lookup per pair is ten times the Python loop's speed."""
    global _PAIRS
    if not _PAIRS:
        _PAIRS = tuple(ALPHABET[n % 45] + ALPHABET[n // 45 % 45] + ALPHABET[n // 2025] for n in range(65536))
    return _PAIRS


def b45encode(data: bytes) -> str:
    pairs = len(data) // 2
    out = "".join(map(_pair_table().__getitem__, struct.unpack(f">{pairs}H", data[: 2 * pairs])))
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += ALPHABET[c] + ALPHABET[d]
    return out


# Every character maps to its value as one byte (255 marks characters outside the alphabet), so the text
# becomes a bytes object in C.
_VALUE_TABLE = bytes(_INDEX.get(chr(i), 255) for i in range(256))


def _lane_masks(triples: int) -> tuple[int, int]:
    """For `triples` 24-bit lanes: the low byte of every lane, and the high byte of every lane."""
    return int.from_bytes(b"\0\0\xff" * triples, "big"), int.from_bytes(b"\xff\0\0" * triples, "big")


# A QR code holds at most 4,296 alphanumeric characters (1,432 triples): only sizes up to that are remembered,
# so odd input cannot make the cache large.
_QR_TRIPLES = 1432
_cached_lane_masks = lru_cache(maxsize=16)(_lane_masks)


def b45decode(text: str) -> bytes:
    """Decodes all triples at once with big-integer arithmetic (SIMD within a register): about fifteen C-level
    steps whatever the length, instead of a Python loop over the triples.

    The values of the characters, read as one big-endian integer, hold each triple `c d e` in a 24-bit lane as
    `c·2¹⁶ + d·2⁸ + e`. Masking and shifting give three integers holding c, d and e in every lane, and
    `c + 45·d + 2025·e` is at most 91,124 < 2²⁴, so the sum never carries into the next lane. A lane above 65,535
    has a non-zero high byte; otherwise its two low bytes are the decoded pair, and dropping every third byte
    of the lanes leaves the output."""
    try:
        values = text.encode("ascii").translate(_VALUE_TABLE)
    except UnicodeEncodeError:
        raise ValueError("not base45") from None
    if 255 in values:
        raise ValueError("not base45")
    size = len(values)
    rest = size % 3
    if rest == 1:
        raise ValueError("not base45: bad length")
    triples = size // 3
    low, high = _cached_lane_masks(triples) if triples <= _QR_TRIPLES else _lane_masks(triples)
    lanes = int.from_bytes(values[: size - rest], "big")
    sums = (lanes >> 16 & low) + 45 * (lanes >> 8 & low) + 2025 * (lanes & low)
    if sums & high:
        raise ValueError("not base45: value out of range")
    out = bytearray(sums.to_bytes(3 * triples, "big"))
    del out[::3]
    if rest:
        last = values[-2] + values[-1] * 45
        if last > 0xFF:
            raise ValueError("not base45: value out of range")
        out.append(last)
    return bytes(out)
