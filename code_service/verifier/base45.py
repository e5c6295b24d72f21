"""Base45 (RFC 9285): bytes to the QR alphanumeric character set, 1.5 characters per byte."""

from __future__ import annotations

from functools import lru_cache

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


# n // 2025 == n * _BY_2025 >> 32 and n // 45 == n * _BY_45 >> 32 for every n < 65,536 (checked by the tests):
# a multiplication and a shift divide every lane of a big integer at once, where `//` would not.
_BY_2025 = -(-(1 << 32) // 2025)
_BY_45 = -(-(1 << 32) // 45)
_QR_PAIRS = 2864  # what a QR code can hold (4,296 characters); larger inputs are not remembered
_CHARACTERS = bytes(ALPHABET.encode("ascii")[i] if i < 45 else 0 for i in range(256))


def _low_16_bits(pairs: int) -> int:
    return int.from_bytes(b"\0\0\0\0\0\0\xff\xff" * pairs, "big")


_cached_low_16_bits = lru_cache(maxsize=16)(_low_16_bits)


def b45encode(data: bytes) -> str:
    """All pairs at once (the decoder's SIMD-within-a-register, run backwards): each 16-bit pair n goes into a
    64-bit lane of one big integer, and n % 45, n // 45 % 45 and n // 2025 come out of a few whole-integer
    multiplications and shifts (a product is at most 2^37, so no lane spills into the next). About twenty C-level
    steps for a code, and no table: the 65,536-entry table this replaced was fast in a loop but missed the cache
    in a server busy with other work, costing several times its benchmark figure per code."""
    pairs = len(data) // 2
    lanes = bytearray(8 * pairs)
    lanes[6::8] = data[0 : 2 * pairs : 2]
    lanes[7::8] = data[1 : 2 * pairs : 2]
    n = int.from_bytes(lanes, "big")
    low = _cached_low_16_bits(pairs) if pairs <= _QR_PAIRS else _low_16_bits(pairs)
    e = n * _BY_2025 >> 32 & low
    rest = n - 2025 * e
    d = rest * _BY_45 >> 32 & low
    digits = ((rest - 45 * d) << 16 | d << 8 | e).to_bytes(8 * pairs, "big")
    out = bytearray(3 * pairs)
    out[0::3] = digits[5::8]
    out[1::3] = digits[6::8]
    out[2::3] = digits[7::8]
    text = out.translate(_CHARACTERS).decode("ascii")
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        text += ALPHABET[c] + ALPHABET[d]
    return text


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
