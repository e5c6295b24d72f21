"""Rotation by itself: the cron jobs stage the next signing key, and the next scene-key epoch, once the one in use
has been used for its period. Both follow one key schedule (code_service.keys.service.KeySchedule)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app_backend.audit.service import AuditTrail
from app_backend.kernel.actors import Actor
from app_backend.kernel.module import Platform
from code_service.container import CodeServices

_ACTOR = Actor("system", "key-rotation")


async def stage_due_signing_key(ctx: dict[str, Any]) -> str | None:
    """The kid staged, or None when no rotation is due. Every worker runs it; one stages, the others find it done."""
    platform: Platform = ctx["platform"]
    every = dt.timedelta(days=platform.settings.key_rotation_days)
    async with platform.pool.acquire() as conn, conn.transaction():
        change = await platform.get(CodeServices).keys.stage_if_due(conn, every)
        if change is None:
            return None
        await platform.get(AuditTrail).record(
            conn,
            _ACTOR,
            "codes.key_staged",
            target_type="signing_key",
            target_id=change.key.kid,
            detail={
                "signs_from": change.key.signs_from.isoformat(),
                "previous": change.previous.kid if change.previous else "",
            },
        )
        return change.key.kid


async def stage_due_scene_epoch(ctx: dict[str, Any]) -> str | None:
    """The epoch staged (hex), or None when no rotation is due: weekly (SCENE_ROTATION_PERIOD), as the signing
    key's job does monthly. Every worker runs it; one stages, the others find it done."""
    platform: Platform = ctx["platform"]
    async with platform.pool.acquire() as conn, conn.transaction():
        change = await platform.get(CodeServices).scene_keys.stage_if_due(conn)
        if change is None:
            return None
        await platform.get(AuditTrail).record(
            conn,
            _ACTOR,
            "codes.scene_epoch_staged",
            target_type="scene_epoch",
            target_id=change.key.kid,
            detail={
                "used_from": change.key.signs_from.isoformat(),
                "previous": change.previous.kid if change.previous else "",
            },
        )
        return change.key.kid
