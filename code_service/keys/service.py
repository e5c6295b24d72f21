"""Platform signing keys and scene-key epochs, both on one key schedule (published before they are used, retired
after what used them has expired): staging, scheduled and emergency rotation, the signer and the epoch in use, the
published key set (JWKS) and what each verifier receives of the scene keys."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeAlias, TypeVar

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app_backend.kernel.clock import now as utc_now
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection
from code_service.keys.repository import KeyRepository, KeyRow, SceneEpochRow, SceneKeyRepository
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
# How often a process reloads the key rows (a staged key, an emergency switch made elsewhere). The schedule itself
# needs no reload: which key signs and which are published is worked out from the loaded rows at each call.
_RELOAD = 30.0
# How long HTTP caches may keep the JWKS answer: a staged key is published a day ahead, so five minutes is safe.
JWKS_MAX_AGE = 300

# --- The key schedule ---------------------------------------------------------------------------------------------
# Verifiers refresh the JWKS at least daily (docs/code-format.md 5.1), so a gate may hold a key set up to 24 h old.
VERIFIER_REFRESH = dt.timedelta(hours=24)
# A staged key reaches a gate at most _RELOAD + JWKS_MAX_AGE (30 s + 300 s) after it is staged, gate clocks
# drift, and a gate's daily refresh may run some minutes late: an hour covers all of that.
PUBLISH_MARGIN = dt.timedelta(hours=1)
PUBLISH_LEAD = VERIFIER_REFRESH + PUBLISH_MARGIN
# The longest-lived thing a key signs is a device credential (24 h); server codes live a minute. Verifiers accept
# 30 s of skew, and after an emergency switch a process may sign with the old key until its next reload (30 s):
# an hour more covers both with room. Keeping a public key published longer costs nothing.
RETIRE_MARGIN = dt.timedelta(hours=1)
RETIRE_AFTER = dt.timedelta(seconds=MAX_CREDENTIAL_LIFETIME) + RETIRE_MARGIN
# How long a key signs before the cron job stages its successor (TZT_KEY_ROTATION_DAYS overrides it).
ROTATION_PERIOD = dt.timedelta(days=30)


class ScheduledKey(Protocol):
    """A key on a schedule: published from `created_at`, signing from `signs_from` until `signs_until` (None: until
    a successor is staged), published until `retire_at` (None: until it has a successor). For a scene-key epoch,
    "signing" is being the epoch codes are issued with."""

    @property
    def kid(self) -> str: ...

    @property
    def created_at(self) -> dt.datetime: ...

    @property
    def signs_from(self) -> dt.datetime: ...

    @property
    def signs_until(self) -> dt.datetime | None: ...

    @property
    def retire_at(self) -> dt.datetime | None: ...


K = TypeVar("K", bound=ScheduledKey)
K_co = TypeVar("K_co", bound=ScheduledKey, covariant=True)


@dataclass(frozen=True)
class KeyTimes:
    """The four instants of a key (see ScheduledKey)."""

    created_at: dt.datetime
    signs_from: dt.datetime
    signs_until: dt.datetime | None = None
    retire_at: dt.datetime | None = None


@dataclass(frozen=True)
class KeySchedule:
    """The life of a key, as a pure policy with the time passed in: a key is published `publish_lead` before it
    signs, signs until its successor takes over, and stays published `retire_after` longer, until everything it
    signed has expired. Both families of keys that verifiers cache follow it, the platform's signing keys
    (KeyService) and the scene-key epochs (SceneKeyService): each stores the four instants of ScheduledKey and asks
    this class which key signs, which are published, and when to stage the next."""

    publish_lead: dt.timedelta = PUBLISH_LEAD
    retire_after: dt.timedelta = RETIRE_AFTER

    @staticmethod
    def signs(key: ScheduledKey, at: dt.datetime) -> bool:
        return key.signs_from <= at and (key.signs_until is None or at < key.signs_until)

    @staticmethod
    def published(key: ScheduledKey, at: dt.datetime) -> bool:
        return key.created_at <= at and (key.retire_at is None or at < key.retire_at)

    def signer(self, keys: Iterable[K], at: dt.datetime) -> K | None:
        """The key that signs at `at`: the newest whose signing has begun and not ended."""
        signing = [k for k in keys if self.signs(k, at)]
        return max(signing, key=lambda k: (k.signs_from, k.created_at)) if signing else None

    def published_set(self, keys: Iterable[K], at: dt.datetime) -> list[K]:
        """The keys a verifier must know at `at`, newest first."""
        shown = [k for k in keys if self.published(k, at)]
        return sorted(shown, key=lambda k: (k.signs_from, k.created_at), reverse=True)

    def state(self, key: ScheduledKey, at: dt.datetime) -> str:
        """In a word: staged, signing, retiring (published, no longer signing) or retired."""
        if self.signs(key, at):
            return "signing"
        if not self.published(key, at) and key.created_at <= at:
            return "retired"
        return "staged" if key.signs_from > at else "retiring"

    @staticmethod
    def staged_keys(keys: Iterable[K], at: dt.datetime) -> list[K]:
        """Keys published or scheduled that have not signed yet and will (a cancelled one never signs)."""
        return [
            k for k in keys if k.signs_from > at and (k.signs_until is None or k.signs_until > k.signs_from)
        ]

    def due(self, keys: Sequence[K], at: dt.datetime, every: dt.timedelta) -> bool:
        """Whether to stage a successor now, so that it takes over once the signer has signed for `every`. Never
        while a successor is staged, and never without a signer (the first key is made, signing at once)."""
        signer = self.signer(keys, at)
        if signer is None or self.staged_keys(keys, at):
            return False
        return at + self.publish_lead >= signer.signs_from + every

    def staging(self, at: dt.datetime) -> KeyTimes:
        """A successor staged at `at`: published now, signing once every verifier has refreshed."""
        return KeyTimes(created_at=at, signs_from=at + self.publish_lead)

    def handing_over(self, takeover: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """(signs_until, retire_at) of a key whose successor signs from `takeover`."""
        return takeover, takeover + self.retire_after

    @staticmethod
    def first(at: dt.datetime) -> KeyTimes:
        """The first key, or an emergency successor: signing at once. A verifier that has not refreshed since
        refuses what it signs (unknown-key) until it refreshes."""
        return KeyTimes(created_at=at, signs_from=at)

    @staticmethod
    def withdrawing(at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """(signs_until, retire_at) of a compromised key: it stops signing and leaves the published set now."""
        return at, at

    @staticmethod
    def next_change(keys: Iterable[ScheduledKey], at: dt.datetime) -> dt.datetime | None:
        """The first instant after `at` at which the signer or the published set may change."""
        later = [
            t
            for k in keys
            for t in (k.created_at, k.signs_from, k.signs_until, k.retire_at)
            if t is not None and t > at
        ]
        return min(later) if later else None

    def held_until(self, key: ScheduledKey, at: dt.datetime, every: dt.timedelta) -> dt.datetime:
        """Until when a verifier that fetched the published set at `at` must keep `key`: its retire_at once its
        successor is staged; before that, the earliest the schedule could retire it (its successor staged when
        due, or at `at` if that is past). A successor is staged `publish_lead` before it takes over, so a
        verifier refreshing within the lead learns the real instant before this one has passed."""
        if key.retire_at is not None:
            return key.retire_at
        return max(key.signs_from + every, at + self.publish_lead) + self.retire_after


DEFAULT_SCHEDULE = KeySchedule()

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


@dataclass(frozen=True)
class KeyChange(Generic[K]):
    """What a rotation did: the key it made (or found staged), and the key that hands over to it."""

    key: K
    created: bool
    previous: K | None = None


class KeyRows(Protocol[K_co]):
    """The SQL a family of scheduled keys needs (code_service/keys/repository.py)."""

    async def lock(self, conn: Connection) -> None: ...

    async def live(self, conn: Connection, at: dt.datetime) -> Sequence[K_co]: ...

    async def end(
        self, conn: Connection, kid: str, signs_until: dt.datetime, retire_at: dt.datetime
    ) -> K_co | None: ...


class ScheduledKeys(Generic[K]):
    """One family of keys on the key schedule: staging, the cron job's rotation and the emergency switch (each in
    the caller's transaction, under the family's advisory lock), and each process's view of the rows. A process
    reloads the rows every `_RELOAD` seconds and works out from them, at each call and with its clock, which key
    is in use and which are published: a staged key takes over in every process at its `signs_from`, all at once;
    an emergency switch made elsewhere reaches a process at its next reload. Subclasses make a key (`_create`) and
    derive what they serve from the rows (`_derive`)."""

    # How long a key is used before the cron job stages its successor, unless the job says otherwise.
    period: dt.timedelta = ROTATION_PERIOD

    def __init__(
        self,
        pool: asyncpg.Pool,
        repo: KeyRows[K],
        schedule: KeySchedule,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._pool = pool
        self._repo = repo
        self.schedule = schedule
        self.clock = clock
        self._rows: Sequence[K] = []
        self.reload_every = _RELOAD  # seconds of the monotonic clock
        self._loaded_at = -math.inf
        # The derived view holds for clock instants in [_view_from, _view_until).
        self._view_from: dt.datetime | None = None
        self._view_until: dt.datetime | None = None

    async def _create(self, conn: Connection, times: KeyTimes) -> K:
        raise NotImplementedError

    def _derive(self, at: dt.datetime) -> None:
        raise NotImplementedError

    # -- changes (each in the caller's transaction) ---------------------------------------------------------------

    async def _ensure(self, conn: Connection) -> K:
        """The key in use now, made (in use at once) when there is none: on a fresh database nothing used a key
        yet, so no verifier can be missing it."""
        await self._repo.lock(conn)
        at = self.clock()
        current = self.schedule.signer(await self._repo.live(conn, at), at)
        if current is None:
            current = await self._create(conn, self.schedule.first(at))
        self.invalidate()
        return current

    async def stage(self, conn: Connection) -> KeyChange[K]:
        """Stages the successor of the key in use now: published at once, in use after the publish lead, when
        every verifier that refreshes daily has it. A successor already staged is returned, not doubled."""
        await self._repo.lock(conn)
        at = self.clock()
        rows = await self._repo.live(conn, at)
        staged = self.schedule.staged_keys(rows, at)
        current = self.schedule.signer(rows, at)
        if staged:
            return KeyChange(key=staged[0], created=False, previous=current)
        return await self._stage_after(conn, current, at)

    async def stage_if_due(self, conn: Connection, every: dt.timedelta | None = None) -> KeyChange[K] | None:
        """The cron job's rotation: stages a successor once the key in use now has been used for about `every`
        (the family's period by default). Several workers may run it at once; the lock lets one stage and the
        others find it staged."""
        await self._repo.lock(conn)
        at = self.clock()
        rows = await self._repo.live(conn, at)
        if not self.schedule.due(rows, at, self.period if every is None else every):
            return None
        return await self._stage_after(conn, self.schedule.signer(rows, at), at)

    async def _stage_after(self, conn: Connection, current: K | None, at: dt.datetime) -> KeyChange[K]:
        if current is None:  # nothing in use: the first key is used at once
            key = await self._create(conn, self.schedule.first(at))
            self.invalidate()
            return KeyChange(key=key, created=True)
        key = await self._create(conn, self.schedule.staging(at))
        previous = await self._repo.end(conn, current.kid, *self.schedule.handing_over(key.signs_from))
        self.invalidate()
        return KeyChange(key=key, created=True, previous=previous)

    async def rotate_now(self, conn: Connection, withdraw: bool = False) -> KeyChange[K]:
        """Emergency rotation, for a key that may have leaked: a new key is used at once. Offline verifiers that
        have not refreshed since do not know it (up to a day). The old key stays published until what used it
        has expired, or leaves at once with `withdraw`. Keys staged but not yet in use are never used."""
        await self._repo.lock(conn)
        at = self.clock()
        rows = await self._repo.live(conn, at)
        current = self.schedule.signer(rows, at)
        for staged in self.schedule.staged_keys(rows, at):
            await self._repo.end(conn, staged.kid, staged.signs_from, at)
        key = await self._create(conn, self.schedule.first(at))
        previous = None
        if current is not None:
            ending = self.schedule.withdrawing(at) if withdraw else self.schedule.handing_over(at)
            previous = await self._repo.end(conn, current.kid, *ending)
        self.invalidate()
        return KeyChange(key=key, created=True, previous=previous)

    async def live(self, conn: Connection) -> list[K]:
        """Every key not yet retired, newest first (for `tzt keys list`)."""
        return list(await self._repo.live(conn, self.clock()))

    # -- the keys in use ------------------------------------------------------------------------------------------

    async def _refresh(self) -> dt.datetime:
        """Brings the view up to the clock; returns the instant it holds for. No database round trip unless the
        rows are due for a reload, or no key is in use (then one is made at once, as on a fresh database)."""
        at = self.clock()
        reload = time.monotonic() - self._loaded_at >= self.reload_every
        if not reload and self._view_from is not None and self._view_from <= at:
            if self._view_until is None or at < self._view_until:
                return self._view_from
        if reload or self.schedule.signer(self._rows, at) is None:
            async with self._pool.acquire() as conn:
                rows = await self._repo.live(conn, at)
                if self.schedule.signer(rows, at) is None:
                    async with conn.transaction():
                        await self._ensure(conn)
                    at = self.clock()  # the key ensured is in use from the instant it was made
                    rows = await self._repo.live(conn, at)
            self._rows = rows
            self._loaded_at = time.monotonic()
        self._derive(at)
        self._view_from = at
        self._view_until = self.schedule.next_change(self._rows, at)
        return at

    def invalidate(self) -> None:
        """Reload the rows at the next call (after a change made here, or when a test moves the clock)."""
        self._loaded_at = -math.inf
        self._view_from = None


class KeyService(ScheduledKeys[KeyRow]):
    """The platform's signing keys: the signer in use, the published set (JWKS), and the keys as they stood when
    a late proof (an offline gate's tap) was made."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: FieldCipher,
        schedule: KeySchedule = DEFAULT_SCHEDULE,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._keys = KeyRepository()
        super().__init__(pool, self._keys, schedule, clock)
        self._box = box
        self._signer: Signer | None = None
        self._public: dict[bytes, ec.EllipticCurvePublicKey] = {}
        self._jwks: Jwks = {"keys": []}

    async def _create(self, conn: Connection, times: KeyTimes) -> KeyRow:
        private_key = ec.generate_private_key(ec.SECP256R1())
        kid = kid_for(private_key.public_key()).hex()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return await self._keys.insert(
            conn,
            kid,
            self._box.encrypt(_FIELD, pem),
            compressed_point(private_key.public_key()),
            times.created_at,
            times.signs_from,
        )

    async def ensure(self, conn: Connection) -> str:
        """The kid of the key signing now, made (signing at once) when there is none."""
        return (await self._ensure(conn)).kid

    # -- the keys in use ------------------------------------------------------------------------------------------

    def _derive(self, at: dt.datetime) -> None:
        rows = self._rows
        signer = self.schedule.signer(rows, at)
        assert signer is not None  # ensured by _refresh
        if self._signer is None or self._signer.kid != signer.kid:
            pem = self._box.decrypt(_FIELD, signer.private_enc).encode()
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._signer = Signer(signer.kid, key)
        published = self.schedule.published_set(rows, at)
        self._public = {bytes.fromhex(r.kid): load_point(r.public_point) for r in published}
        self._jwks = {"keys": [jwk_for(kid.hex(), key) for kid, key in self._public.items()]}

    async def signer(self) -> Signer:
        await self._refresh()
        assert self._signer is not None
        return self._signer

    async def ticket_signer(
        self, conn: Connection, ticket_id: uuid.UUID, occasion_id: uuid.UUID, not_after: dt.datetime
    ) -> Signer:
        """The signer for a printed ticket valid until `not_after`, in the caller's transaction: the key in use is
        kept published until the ticket has expired (a printed ticket outlives the key's usual retirement; the
        code format's rule "published until everything it signed has expired" holds for tickets too)."""
        for _ in range(2):
            signer = await self.signer()
            if await self._keys.hold_for_tickets(conn, signer.kid, ticket_id, occasion_id, not_after):
                return signer
            self.invalidate()  # withdrawn meanwhile, elsewhere: the key in use now signs
        raise RuntimeError("no signing key could be held for a printed ticket")

    async def public_key(self, kid: bytes) -> ec.EllipticCurvePublicKey | None:
        await self._refresh()
        return self._public.get(kid)

    async def public_key_at(
        self, conn: Connection, kid: bytes, at: float
    ) -> ec.EllipticCurvePublicKey | None:
        """The platform key `kid` as it stood at `at` (Unix seconds): a published key, or one retired since then
        in the normal way, so a proof made while it was published (a tap an offline gate uploads days later)
        still verifies; a withdrawn (compromised) key proves nothing after its withdrawal."""
        key = await self.public_key(kid)
        if key is not None:
            return key
        row = await self._keys.published_at(conn, kid.hex(), dt.datetime.fromtimestamp(at, dt.UTC))
        return load_point(row.public_point) if row is not None else None

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
        """Every key published now: the signer, a staged successor, and keys whose codes and credentials may still
        be alive."""
        await self._refresh()
        return self._jwks


# -- scene keys (docs/code-format.md 5.4) ----------------------------------------------------------------------

_SCENE_FIELD = "codes.scene_keys"
# An epoch masks the flags of the codes issued during it. Epochs follow the key schedule of the signing keys
# (KeySchedule): published PUBLISH_LEAD before codes use them, kept RETIRE_AFTER after, when every code of them has
# expired. They rotate weekly rather than monthly, since stolen scene keys read codes until the epochs they hold are
# over: an answer holds the epoch in use and, in the day before a change, the next one.
SCENE_ROTATION_PERIOD = dt.timedelta(days=7)
# What the scene-key answer tells verifiers: refresh at least daily, as for the JWKS.
SCENE_REFRESH_WITHIN = int(VERIFIER_REFRESH.total_seconds())
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

    __slots__ = ("epoch", "keys")

    def __init__(self, epoch: bytes, keys: dict[str, bytes]) -> None:
        self.epoch = epoch
        self.keys = keys


class SceneKeyService(ScheduledKeys[SceneEpochRow]):
    """Scene-key epochs on the key schedule, as signing keys are: the epoch codes are issued with now, the keys
    online verification unmasks with, and what each verifier receives. The cron job stages the next epoch
    (code_service.keys.tasks); `tzt keys rotate --scene-keys [--now]` stages or switches by hand. With no epoch
    in use at all (a fresh database), the first is made at once: nothing was issued before it."""

    period = SCENE_ROTATION_PERIOD

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: FieldCipher,
        schedule: KeySchedule = DEFAULT_SCHEDULE,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._epochs = SceneKeyRepository()
        super().__init__(pool, self._epochs, schedule, clock)
        self._box = box
        self._keys: dict[bytes, dict[str, bytes]] = {}  # decrypted once per epoch, by id
        self._current: SceneEpoch | None = None
        self._published: dict[bytes, SceneEpoch] = {}

    async def _create(self, conn: Connection, times: KeyTimes) -> SceneEpochRow:
        keys = {scene: secrets.token_bytes(SCENE_KEY_LEN) for scene in SCENES}
        sealed = self._box.encrypt(
            _SCENE_FIELD, json.dumps({scene: base64.b64encode(k).decode() for scene, k in keys.items()})
        )
        while True:
            row = await self._epochs.insert(
                conn, secrets.token_bytes(EPOCH_LEN), sealed, times.created_at, times.signs_from
            )
            if row is not None:
                return row
            # a 4-byte id already taken: draw another

    def _epoch(self, row: SceneEpochRow) -> SceneEpoch:
        keys = self._keys.get(row.epoch)
        if keys is None:
            stored = json.loads(self._box.decrypt(_SCENE_FIELD, row.keys_enc))
            keys = self._keys[row.epoch] = {scene: base64.b64decode(stored[scene]) for scene in SCENES}
        return SceneEpoch(row.epoch, keys)

    def _derive(self, at: dt.datetime) -> None:
        current = self.schedule.signer(self._rows, at)
        assert current is not None  # ensured by _refresh
        self._published = {row.epoch: self._epoch(row) for row in self.schedule.published_set(self._rows, at)}
        self._current = self._published.get(current.epoch) or self._epoch(current)
        # Forget the keys of retired epochs.
        self._keys = {epoch: keys for epoch, keys in self._keys.items() if epoch in self._published}

    async def current(self) -> SceneEpoch:
        """The epoch codes are issued with now: the newest whose use has begun."""
        await self._refresh()
        assert self._current is not None
        return self._current

    async def epoch(self, epoch: bytes) -> SceneEpoch | None:
        """An epoch's keys, while codes of it may be valid (for the platform's own verification). No database
        round trip: the view is worked out from the rows each process reloads every 30 s."""
        await self._refresh()
        return self._published.get(epoch)

    async def epoch_of_proof(self, conn: Connection, epoch: bytes) -> SceneEpoch | None:
        """An epoch's keys for a code the platform signed, however long ago (a tap an offline gate uploads days
        later, within the upload delay): an epoch published now, or one retired since in the normal way. A
        withdrawn epoch reads nothing, as its keys leave every verifier."""
        found = await self.epoch(epoch)
        if found is not None:
            return found
        row = await self._epochs.kept(conn, epoch)
        return self._epoch(row) if row is not None else None

    async def document(self, scenes: list[str]) -> SceneKeysDocument:
        """The answer of GET /api/v1/gates/scene-keys for a verifier allowed `scenes`: every epoch published now
        (the one in use, a staged one, and those whose codes may still be valid), oldest first."""
        await self._refresh()
        at = self.clock()
        rows = sorted(self.schedule.published_set(self._rows, at), key=lambda r: (r.signs_from, r.created_at))
        return SceneKeysDocument(
            issued_at=int(at.timestamp()),
            refresh_within=SCENE_REFRESH_WITHIN,
            epochs=[
                SceneKeyEpoch(
                    epoch=row.epoch.hex(),
                    not_before=int(row.signs_from.timestamp()),
                    not_after=int(self.schedule.held_until(row, at, self.period).timestamp()),
                    keys={scene: _b64url(self._epoch(row).keys[scene]) for scene in scenes},
                )
                for row in rows
            ],
        )
