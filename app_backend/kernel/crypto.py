"""Personal data at rest: AES-GCM ciphertexts, keyed-hash lookups, masking on the way out."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"


class FieldCipher:
    """Encrypts one field value; the field name is bound as associated data so ciphertexts cannot be swapped."""

    def __init__(self, data_key: bytes, index_key: bytes) -> None:
        self._aead = AESGCM(data_key[:32])
        self._index_key = index_key

    def encrypt(self, field: str, plaintext: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), field.encode())

    def decrypt(self, field: str, blob: bytes) -> str:
        if blob[:1] != _VERSION:
            raise ValueError("unknown ciphertext version")
        return self._aead.decrypt(blob[1:13], blob[13:], field.encode()).decode()

    def lookup_hash(self, field: str, value: str) -> bytes:
        """A keyed hash: equal values find each other without the database ever holding the plaintext."""
        return hmac.new(self._index_key, f"{field}\x00{value}".encode(), hashlib.sha256).digest()


def mask(value: str, head: int, tail: int) -> str:
    """Keep `head` and `tail` characters, star the rest; short values never reveal more than half."""
    n = len(value)
    if n == 0:
        return ""
    if head + tail >= n:
        keep = max(1, n // 2) if n > 1 else 0
        head, tail = min(head, keep), 0
    return value[:head] + "*" * (n - head - tail) + (value[n - tail :] if tail else "")
