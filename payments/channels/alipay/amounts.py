"""fen <-> yuan for Alipay's amount strings, with Decimal only (never float)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

_CENT = Decimal("0.01")


def fen_to_yuan(fen: int) -> str:
    """12345 -> "123.45"; -5 -> "-0.05"."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError("amounts are integer fen")
    return str((Decimal(fen) / 100).quantize(_CENT))


def yuan_to_fen(text: str) -> int:
    """ "123.45" -> 12345 exactly; refuses more than two decimals, exponents, blanks and non-numbers."""
    raw = text.strip()
    if not raw or any(ch not in "0123456789.-+" for ch in raw):
        raise ValueError(f"not a yuan amount: {text!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"not a yuan amount: {text!r}") from None
    fen = value * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"more than two decimals: {text!r}")
    return int(fen)
