"""The provider's ID-token keys (ES256), on the code keys' schedule (docs/decisions/0006): a key is published in the
JWKS a day before it signs and stays published a day after its successor takes over, so a department that caches
the JWKS never meets an ID token it cannot verify, and tokens signed before a rotation still verify after it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import asyncpg
from joserfc.jwk import ECKey

from app_backend.kernel.clock import now as utc_now
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import Connection
from app_backend.oidc.repository import OidcKeyRepository, OidcKeyRow
from code_service.keys.service import DEFAULT_SCHEDULE, KeySchedule, KeyTimes, ScheduledKeys

_FIELD = "oidc.signing_key"


class IdTokenKeys(ScheduledKeys[OidcKeyRow]):
    """The signer of ID tokens and logout tokens, and the published key set."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: FieldCipher,
        schedule: KeySchedule = DEFAULT_SCHEDULE,
        clock: Callable[[], dt.datetime] = utc_now,
        period: dt.timedelta | None = None,
    ) -> None:
        self._keys = OidcKeyRepository()
        super().__init__(pool, self._keys, schedule, clock)
        if period is not None:
            self.period = period
        self._box = box
        self._signer: ECKey | None = None
        self._jwks: dict[str, list[dict[str, str]]] = {"keys": []}

    async def _create(self, conn: Connection, times: KeyTimes) -> OidcKeyRow:
        key = ECKey.generate_key("P-256", private=True)
        kid = key.thumbprint()
        public = {name: str(value) for name, value in key.as_dict(private=False).items()}
        public |= {"kid": kid, "alg": "ES256", "use": "sig"}
        pem = key.as_pem(private=True).decode()
        return await self._keys.insert(
            conn, kid, self._box.encrypt(_FIELD, pem), public, times.created_at, times.signs_from
        )

    def _derive(self, at: dt.datetime) -> None:
        signer = self.schedule.signer(self._rows, at)
        assert signer is not None  # ensured by _refresh
        if self._signer is None or self._signer.kid != signer.kid:
            pem = self._box.decrypt(_FIELD, signer.private_enc)
            self._signer = ECKey.import_key(pem, {"kid": signer.kid, "alg": "ES256", "use": "sig"})
        self._jwks = {"keys": [dict(r.public_jwk) for r in self.schedule.published_set(self._rows, at)]}

    async def signer(self) -> ECKey:
        await self._refresh()
        assert self._signer is not None
        return self._signer

    async def jwks(self) -> dict[str, list[dict[str, str]]]:
        await self._refresh()
        return self._jwks

    async def ensure(self, conn: Connection) -> str:
        return (await self._ensure(conn)).kid
