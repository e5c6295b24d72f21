"""The machine-request signature: HMAC-SHA256 over method, path with query, timestamp, nonce and body hash.

Both sides live here: `sign_request` is what a department's or a gate's client does; the server recomputes the
same canonical string. See docs/api.md for the scheme written out for integrators."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SCHEME = "TZT-HMAC-SHA256"
HEADER_KEY = "X-Tzt-Key-Id"
HEADER_TIMESTAMP = "X-Tzt-Timestamp"
HEADER_NONCE = "X-Tzt-Nonce"
HEADER_SIGNATURE = "X-Tzt-Signature"


def canonical_string(method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join(
        [SCHEME, method.upper(), path_with_query, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    ).encode()


def signature(secret: str, method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(
        secret.encode(), canonical_string(method, path_with_query, timestamp, nonce, body), hashlib.sha256
    ).hexdigest()


def sign_request(
    key_id: str,
    secret: str,
    method: str,
    path_with_query: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    return {
        HEADER_KEY: key_id,
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature(secret, method, path_with_query, ts, nonce, body),
    }
