"""Identifier checks: resident ID numbers (GB 11643-1999), credit codes (GB 32100-2015), phones, names."""

from __future__ import annotations

import datetime as dt
import re

from app_backend.kernel.clock import BUSINESS_TZ

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# GB/T 2260 province-level prefixes (including Taiwan, Hong Kong and Macao).
PROVINCE_CODES = frozenset(
    {
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
    }
)
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# ASCII only: str.isdigit() and \d also take full-width, Arabic-Indic, superscript... digits, which would give
# one phone or ID number a second spelling (a second keyed hash, so a second account) or crash int().
_PHONE = re.compile(r"1[3-9][0-9]{9}")
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")


class InvalidIdentifier(ValueError):
    """The message says, in words a resident understands, what is wrong."""


def id_number_check_char(first17: str) -> str:
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def validate_id_number(raw: str, today: dt.date | None = None) -> str:
    """Returns the normalised 18-character number or raises InvalidIdentifier."""
    value = raw.strip().upper()
    if len(value) != 18:
        raise InvalidIdentifier("must be 18 characters")
    if not _ID_SHAPE.fullmatch(value):
        raise InvalidIdentifier("must be 17 digits followed by a digit or X")
    if value[:2] not in PROVINCE_CODES:
        raise InvalidIdentifier("unknown region code")
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise InvalidIdentifier("birth date does not exist") from None
    today = today or dt.datetime.now(BUSINESS_TZ).date()
    if born > today:
        raise InvalidIdentifier("birth date is in the future")
    if born.year < 1900:
        raise InvalidIdentifier("birth date is before 1900")
    if id_number_check_char(value[:17]) != value[17]:
        raise InvalidIdentifier("check character does not match")
    return value


def uscc_check_char(first17: str) -> str:
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def normalise_uscc(raw: str) -> str:
    """Checks length and alphabet only; the checksum is separate because an audited override may waive it."""
    value = raw.strip().upper()
    if len(value) != 18:
        raise InvalidIdentifier("must be 18 characters")
    bad = sorted({c for c in value if c not in USCC_ALPHABET})
    if bad:
        raise InvalidIdentifier(f"characters not allowed in a credit code: {''.join(bad)}")
    return value


def uscc_checksum_ok(value: str) -> bool:
    return uscc_check_char(value[:17]) == value[17]


def validate_uscc(raw: str) -> str:
    value = normalise_uscc(raw)
    if not uscc_checksum_ok(value):
        raise InvalidIdentifier("check character does not match")
    return value


def normalise_phone(raw: str) -> str:
    value = re.sub(r"[\s-]", "", raw)
    if value.startswith("+86"):
        value = value[3:]
    if not _PHONE.fullmatch(value):
        raise InvalidIdentifier("must be a mainland mobile number (11 digits starting with 1)")
    return value


def normalise_name(raw: str) -> str:
    value = " ".join(raw.split())
    if not 1 <= len(value) <= 64:
        raise InvalidIdentifier("must be 1 to 64 characters")
    if any(not (c.isalpha() or c in " ·.-'") for c in value):
        raise InvalidIdentifier("may contain letters, spaces and the separators · . - ' only")
    return value
