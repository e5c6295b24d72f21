"""Platform signing keys: creation, rotation, the signer in use, and the published key set (JWKS)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from collections.abc import Callable
from typing import TypeAlias

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection
from code_service.keys.repository import KeyRepository, SceneKeyRepository
from code_service.keys.schemas import SceneKeyEpoch, SceneKeysDocument
from code_service.verifier.format import (
    EPOCH_LEN,
    MAX_CREDENTIAL_LIFETIME,
    SCENE_KEY_LEN,
    SCENES,
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


# -- scene keys (docs/code-format.md 5.4) ----------------------------------------------------------------------

_SCENE_FIELD = "codes.scene_keys"
# An epoch masks the flags of the codes issued during it; its keys reach verifiers at least SCENE_PUBLISH_AHEAD
# before (they refresh at least every SCENE_REFRESH_WITHIN, plus a margin) and stay until every code of it has
# expired (the longest is a 24 h credential, plus the verifiers' clock skew).
SCENE_EPOCH_LENGTH = 7 * 86_400
SCENE_REFRESH_WITHIN = 86_400
SCENE_PUBLISH_AHEAD = SCENE_REFRESH_WITHIN + 3600
SCENE_CREATE_AHEAD = 2 * SCENE_PUBLISH_AHEAD
SCENE_RETAIN = MAX_CREDENTIAL_LIFETIME + 120
# Which scene keys an organisation's credential receives, by scope (offline gates sync with gates:sync).
SCENE_SCOPES: dict[str, tuple[str, ...]] = {
    "transit": ("verify:transit", "gates:sync"),
    "health": ("verify:health",),
    "medical": ("verify:medical",),
    "enterprise": ("verify:enterprise",),
}


def scenes_for_scopes(scopes: frozenset[str] | set[str]) -> list[str]:
    return [scene for scene in SCENES if any(scope in scopes for scope in SCENE_SCOPES[scene])]


class SceneEpoch:
    """One epoch's keys, every scene, in the clear (the platform's own view)."""

    __slots__ = ("epoch", "keys", "not_after", "use_from", "use_until")

    def __init__(self, epoch: bytes, keys: dict[str, bytes], use_from: int, use_until: int) -> None:
        self.epoch = epoch
        self.keys = keys
        self.use_from = use_from
        self.use_until = use_until
        self.not_after = use_until + SCENE_RETAIN


class SceneKeyService:
    """Scene-key epochs: the publish-ahead schedule, the epoch codes are issued with, the keys online verification
    unmasks with, and what each verifier receives. Each process caches them for `_REFRESH` seconds; the schedule
    runs on every refresh (under a lock), so no separate job is needed while any process serves codes.

    The rule: the newest epoch is created SCENE_CREATE_AHEAD (50 h) before the current one's planned end, with its
    use starting at that end, or SCENE_PUBLISH_AHEAD from now if the platform was away so long that the end is
    nearer: then the current epoch's use is extended to meet it, so no code ever uses an epoch published less than
    SCENE_PUBLISH_AHEAD before. The very first epoch (an empty table) is used at once: nothing was issued before."""

    def __init__(self, pool: asyncpg.Pool, box: FieldCipher, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._box = box
        self._clock = clock
        self._repo = SceneKeyRepository()
        self._epochs: dict[bytes, SceneEpoch] = {}
        self._loaded_at = -_REFRESH

    async def schedule(self, conn: Connection) -> None:
        """Creates the next epoch when it is due (and the first one); in its own transaction."""
        now = int(self._clock())
        async with conn.transaction():
            await self._repo.lock(conn)
            latest = await self._repo.latest(conn)
            if latest is None:
                await self._create(conn, now, now + SCENE_EPOCH_LENGTH)
                return
            planned_end = int(latest.use_until.timestamp())
            if planned_end - now > SCENE_CREATE_AHEAD:
                return
            if int(latest.use_from.timestamp()) > now:  # the next epoch exists already
                return
            start = max(planned_end, now + SCENE_PUBLISH_AHEAD)
            if start > planned_end:
                await self._repo.extend(conn, latest.epoch, _at(start))
            await self._create(conn, start, start + SCENE_EPOCH_LENGTH)

    async def _create(self, conn: Connection, use_from: int, use_until: int) -> None:
        keys = {scene: secrets.token_bytes(SCENE_KEY_LEN) for scene in SCENES}
        sealed = self._box.encrypt(
            _SCENE_FIELD, json.dumps({scene: base64.b64encode(k).decode() for scene, k in keys.items()})
        )
        while not await self._repo.insert(
            conn, secrets.token_bytes(EPOCH_LEN), sealed, _at(use_from), _at(use_until)
        ):
            pass  # a 4-byte id already taken: draw another

    async def _refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._loaded_at < _REFRESH and self._epochs:
            return
        now = int(self._clock())
        async with self._pool.acquire() as conn:
            await self.schedule(conn)
            rows = await self._repo.live(conn, _at(now - SCENE_RETAIN))
        epochs = {}
        for row in rows:
            cached = self._epochs.get(row.epoch)
            use_from, use_until = int(row.use_from.timestamp()), int(row.use_until.timestamp())
            if cached is not None:
                keys = cached.keys
            else:
                stored = json.loads(self._box.decrypt(_SCENE_FIELD, row.keys_enc))
                keys = {scene: base64.b64decode(stored[scene]) for scene in SCENES}
            epochs[row.epoch] = SceneEpoch(row.epoch, keys, use_from, use_until)
        self._epochs = epochs
        self._loaded_at = time.monotonic()

    async def current(self) -> SceneEpoch:
        """The epoch codes are issued with now: the newest whose use has begun."""
        await self._refresh()
        now = self._clock()
        started = [e for e in self._epochs.values() if e.use_from <= now]
        if not started:  # only with a clock behind the database's first epoch (tests)
            return min(self._epochs.values(), key=lambda e: e.use_from)
        return max(started, key=lambda e: e.use_from)

    async def epoch(self, epoch: bytes) -> SceneEpoch | None:
        """An epoch's keys, while codes of it may be valid (for the platform's own verification)."""
        await self._refresh()
        found = self._epochs.get(epoch)
        return found if found is not None and self._clock() <= found.not_after else None

    async def document(self, scenes: list[str]) -> SceneKeysDocument:
        """The answer of GET /api/v1/gates/scene-keys for a verifier allowed `scenes`."""
        await self._refresh()
        now = int(self._clock())
        return SceneKeysDocument(
            issued_at=now,
            refresh_within=SCENE_REFRESH_WITHIN,
            epochs=[
                SceneKeyEpoch(
                    epoch=e.epoch.hex(),
                    not_before=e.use_from,
                    not_after=e.not_after,
                    keys={scene: _b64url(e.keys[scene]) for scene in scenes},
                )
                for e in sorted(self._epochs.values(), key=lambda e: e.use_from)
                if now <= e.not_after
            ],
        )

    def invalidate(self) -> None:
        self._loaded_at = -_REFRESH


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
