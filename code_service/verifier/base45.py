"""Base45 (RFC 9285): bytes to the QR alphanumeric character set, 1.5 characters per byte."""

from __future__ import annotations

import struct

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def b45encode(data: bytes) -> str:
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += (ALPHABET[c], ALPHABET[d], ALPHABET[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (ALPHABET[c], ALPHABET[d])
    return "".join(out)


# Every character maps to its value as one byte (255 marks characters outside the alphabet), so the text
# becomes a bytes object in C and the arithmetic runs over slices, not character by character.
_VALUE_TABLE = bytes(_INDEX.get(chr(i), 255) for i in range(256))


def b45decode(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base45")
    values = text.encode("ascii").translate(_VALUE_TABLE)
    if 255 in values:
        raise ValueError("not base45")
    size = len(values)
    if size % 3 == 1:
        raise ValueError("not base45: bad length")
    whole = size - size % 3
    pairs = [
        a + b * 45 + c * 2025
        for a, b, c in zip(values[0:whole:3], values[1:whole:3], values[2:whole:3], strict=True)
    ]
    if pairs and max(pairs) > 0xFFFF:
        raise ValueError("not base45: value out of range")
    out = struct.pack(f">{len(pairs)}H", *pairs)
    if size % 3 == 2:
        last = values[-2] + values[-1] * 45
        if last > 0xFF:
            raise ValueError("not base45: value out of range")
        out += bytes((last,))
    return out
