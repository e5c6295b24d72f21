"""Platform signing keys: creation, rotation, the signer in use, and the published key set (JWKS)."""

from __future__ import annotations

import base64
import time
from typing import TypeAlias

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection
from code_service.keys.repository import KeyRepository
from code_service.verifier.format import (
    MAX_CREDENTIAL_LIFETIME,
    compressed_point,
    kid_for,
    load_point,
    signs_again,
    verify_raw,
)

_FIELD = "codes.signing_key"
# Codes and credentials live at most 24 h; a minute more covers clock skew.
PUBLISH_GRACE = MAX_CREDENTIAL_LIFETIME + 60
_REFRESH = 30.0

Jwk: TypeAlias = dict[str, str]
Jwks: TypeAlias = dict[str, list[Jwk]]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwk_for(kid: str, public_key: ec.EllipticCurvePublicKey) -> Jwk:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "use": "sig",
        "kid": kid,
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


class Signer:
    def __init__(self, kid: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.kid = kid
        self.kid_bytes = bytes.fromhex(kid)
        self.private_key = private_key


class KeyService:
    """Each process caches the signer and the public keys for `_REFRESH` seconds: a rotation made by the CLI
    reaches every worker within that time, and until then the previous key (still published) keeps signing."""

    def __init__(self, pool: asyncpg.Pool, box: FieldCipher) -> None:
        self._pool = pool
        self._box = box
        self._repo = KeyRepository()
        self._signer: Signer | None = None
        self._public: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self._jwks: Jwks = {"keys": []}
        self._loaded_at = 0.0

    async def create(self, conn: Connection) -> str:
        private_key = ec.generate_private_key(ec.SECP256R1())
        kid = kid_for(private_key.public_key()).hex()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        await self._repo.insert(
            conn, kid, self._box.encrypt(_FIELD, pem), compressed_point(private_key.public_key())
        )
        return kid

    async def ensure(self, conn: Connection) -> str:
        row = await self._repo.current(conn)
        return row.kid if row else await self.create(conn)

    async def rotate(self, conn: Connection) -> str:
        kid = await self.create(conn)
        await self._repo.rotate_out_all_but(conn, kid)
        self._loaded_at = 0.0
        return kid

    async def _refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._loaded_at < _REFRESH and self._signer is not None:
            return
        async with self._pool.acquire() as conn:
            row = await self._repo.current(conn)
            if row is None:
                async with conn.transaction():
                    await self.ensure(conn)
                row = await self._repo.current(conn)
            published = await self._repo.published(conn, PUBLISH_GRACE)
        assert row is not None  # ensured above
        if self._signer is None or self._signer.kid != row.kid:
            pem = self._box.decrypt(_FIELD, row.private_enc).encode()
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._signer = Signer(row.kid, key)
        public = {bytes.fromhex(r.kid): load_point(r.public_point) for r in published}
        self._public = public
        self._jwks = {"keys": [jwk_for(kid.hex(), key) for kid, key in public.items()]}
        self._loaded_at = time.monotonic()

    async def signer(self) -> Signer:
        await self._refresh()
        assert self._signer is not None
        return self._signer

    async def public_key(self, kid: bytes) -> ec.EllipticCurvePublicKey | None:
        await self._refresh()
        return self._public.get(kid)

    def signed(
        self, kid: bytes, public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes
    ) -> bool:
        """Whether the platform's key `kid` (whose public half is `public_key`, from `public_key(kid)`) signed
        `data` to `signature`. The key signing now signs again and compares (signs_again: about 20 us against
        about 60 us for a P-256 verification on this machine, docs/performance.md); a signature it does not
        reproduce, or one of an earlier key, is verified as any verifier would."""
        signer = self._signer
        if (
            signer is not None
            and signer.kid_bytes == kid
            and signs_again(signer.private_key, signature, data)
        ):
            return True
        return verify_raw(public_key, signature, data)

    async def jwks(self) -> Jwks:
        await self._refresh()
        return self._jwks

    def invalidate(self) -> None:
        self._loaded_at = 0.0
