"""One login's jobs: back-channel logouts delivered (and retried), the ID-token key rotated on the code keys'
schedule, and spent codes and tokens purged."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app_backend.audit.service import AuditTrail
from app_backend.kernel.actors import Actor
from app_backend.kernel.module import Platform
from app_backend.oidc.service import OidcService

_ACTOR = Actor("system", "oidc-key-rotation")


async def deliver_backchannel_logouts(ctx: dict[str, Any]) -> dict[str, int]:
    """Every minute: signed logout tokens POSTed to the clients a session had logged in to."""
    platform: Platform = ctx["platform"]
    oidc = platform.get(OidcService)
    async with platform.pool.acquire() as conn, conn.transaction():
        return await oidc.deliver_due_logouts(conn)


async def stage_due_id_token_key(ctx: dict[str, Any]) -> str | None:
    """The kid staged, or None: a successor is published a day before it signs, every TZT_KEY_ROTATION_DAYS."""
    platform: Platform = ctx["platform"]
    every = dt.timedelta(days=platform.settings.key_rotation_days)
    async with platform.pool.acquire() as conn, conn.transaction():
        change = await platform.get(OidcService).keys.stage_if_due(conn, every)
        if change is None:
            return None
        await platform.get(AuditTrail).record(
            conn,
            _ACTOR,
            "oidc.key_staged",
            target_type="oidc_signing_key",
            target_id=change.key.kid,
            detail={
                "signs_from": change.key.signs_from.isoformat(),
                "previous": change.previous.kid if change.previous else "",
            },
        )
        return change.key.kid


async def purge_spent_codes_and_tokens(ctx: dict[str, Any]) -> int:
    platform: Platform = ctx["platform"]
    async with platform.pool.acquire() as conn, conn.transaction():
        return await platform.get(OidcService).purge(conn)
