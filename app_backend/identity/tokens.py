"""Access tokens (short-lived JWTs with a kid) and opaque refresh tokens stored only as keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any

import jwt

ISSUER = "taizhou-tong"
AUDIENCE = "taizhou-tong-api"


class InvalidToken(Exception):
    pass


class AccessTokens:
    def __init__(self, keys: dict[str, bytes], current_kid: str, ttl: int) -> None:
        if current_kid not in keys:
            raise ValueError("the current kid must be among the keys")
        self._keys = keys
        self._kid = current_kid
        self.ttl = min(ttl, 900)  # never more than 15 minutes
        self._verified: dict[str, dict[str, Any]] = {}

    def issue(self, resident_id: uuid.UUID, session_id: uuid.UUID, level: int) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(resident_id),
            "sid": str(session_id),
            "lvl": level,
            "iat": now,
            "exp": now + self.ttl,
            "typ": "access",
        }
        return jwt.encode(claims, self._keys[self._kid], algorithm="HS256", headers={"kid": self._kid})

    def decode(self, token: str) -> dict[str, Any]:
        """Verified claims. A token already verified in this process is not parsed again until it expires:
        clients reuse one access token for many requests, and PyJWT costs about 100 microseconds each time."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and cached["exp"] > now:
            return cached
        claims = self._decode(token)
        if len(self._verified) >= 50_000:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise InvalidToken("unknown key id")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.PyJWTError:
            raise InvalidToken("token invalid") from None
        if claims.get("typ") != "access":
            raise InvalidToken("not an access token")
        return claims


class RefreshTokens:
    def __init__(self, pepper: bytes) -> None:
        self._pepper = pepper

    @staticmethod
    def new() -> str:
        return "rt_" + secrets.token_urlsafe(32)

    def digest(self, token: str) -> bytes:
        return hmac.new(self._pepper, token.encode(), hashlib.sha256).digest()
