"""The gate's deny list: device credentials that are revoked, superseded, of a blocked account, or of a rider in debt.

Ids are 8 bytes, held as sorted arrays of unsigned 64-bit integers (8 bytes per entry: ten million entries take
80 MB) plus small sets for the changes since the last compaction; a lookup is a set probe and a binary search,
a few microseconds. Documents come from GET /api/v1/gates/deny-list as compact JWS (ES256) signed by a platform
key in the JWKS; see docs/code-format.md, "Deny list"."""

from __future__ import annotations

import base64
import json
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from code_service.verifier.format import verify_raw

# Every entry is a device credential id; the kind says why it is refused (docs/code-format.md 8).
KINDS = ("credential", "account", "debtor")
_COMPACT_AT = 50_000


def pack_ids(ids: Iterable[bytes]) -> str:
    return base64.b64encode(b"".join(ids)).decode()


def unpack_ids(text: str) -> array[int]:
    """Big-endian 8-byte ids to an array of unsigned 64-bit integers, at C speed."""
    raw = base64.b64decode(text)
    if len(raw) % 8:
        raise ValueError("packed ids must be a multiple of 8 bytes")
    ids = array("Q")
    ids.frombytes(raw)
    if sys.byteorder == "little":
        ids.byteswap()
    return ids


class IdSet:
    """A compact sorted base plus add/remove sets, compacted when the sets grow."""

    __slots__ = ("_added", "_base", "_removed")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._base = array("Q", sorted(set(ids)))
        self._added: set[int] = set()
        self._removed: set[int] = set()

    @classmethod
    def from_sorted(cls, ids: array[int]) -> IdSet:
        """A full snapshot arrives sorted and unique; checking that is one pass, sorting it again is not needed."""
        if any(a >= b for a, b in pairwise(ids)):
            raise ValueError("snapshot ids must be sorted and unique")
        made = cls()
        made._base = ids
        return made

    def __contains__(self, value: int) -> bool:
        if value in self._added:
            return True
        if value in self._removed:
            return False
        base = self._base
        i = bisect_left(base, value)
        return i < len(base) and base[i] == value

    def __len__(self) -> int:
        return len(self._base) + len(self._added) - len(self._removed)

    def add(self, value: int) -> None:
        self._removed.discard(value)
        self._added.add(value)
        self._maybe_compact()

    def remove(self, value: int) -> None:
        self._added.discard(value)
        self._removed.add(value)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if len(self._added) + len(self._removed) >= _COMPACT_AT:
            merged = set(self._base).union(self._added).difference(self._removed)
            self._base = array("Q", sorted(merged))
            self._added.clear()
            self._removed.clear()

    def memory_bytes(self) -> int:
        return self._base.buffer_info()[1] * self._base.itemsize + 60 * (
            len(self._added) + len(self._removed)
        )


class DenyListError(ValueError):
    pass


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DenyList:
    def __init__(self) -> None:
        self.version = 0
        self.issued_at = 0
        self.sets = {kind: IdSet() for kind in KINDS}

    def denies(self, kind: str, ident: bytes) -> bool:
        return int.from_bytes(ident, "big") in self.sets[kind]

    def apply_document(self, jws: str, key_for: Callable[[str], ec.EllipticCurvePublicKey | None]) -> None:
        """Verifies a signed deny-list document and applies it (a full snapshot or a delta after our version)."""
        try:
            header_b64, payload_b64, sig_b64 = jws.split(".")
            header = json.loads(_b64url(header_b64))
            key = key_for(header.get("kid", "")) if header.get("alg") == "ES256" else None
            if key is None:
                raise DenyListError("deny list signed by an unknown key")
            if not verify_raw(key, _b64url(sig_b64), f"{header_b64}.{payload_b64}".encode()):
                raise DenyListError("deny list signature does not verify")
            body: dict[str, Any] = json.loads(_b64url(payload_b64))
        except (ValueError, KeyError) as exc:
            raise DenyListError(f"malformed deny list: {exc}") from None
        self.apply(body)

    def apply(self, body: dict[str, Any]) -> None:
        if body.get("full"):
            self.sets = {kind: IdSet.from_sorted(unpack_ids(body[kind]["add"])) for kind in KINDS}
        else:
            if int(body["since"]) != self.version:
                raise DenyListError(
                    f"delta from version {body['since']} does not follow ours ({self.version})"
                )
            for kind in KINDS:
                target = self.sets[kind]
                for value in unpack_ids(body[kind]["remove"]):
                    target.remove(value)
                for value in unpack_ids(body[kind]["add"]):
                    target.add(value)
        self.version = int(body["version"])
        self.issued_at = int(body["issued_at"])
