"""All SQL for platform signing keys."""

from __future__ import annotations

from typing import Any


class KeyRepository:
    async def insert(self, conn: Any, kid: str, private_enc: bytes, public_point: bytes) -> None:
        await conn.execute(
            "INSERT INTO codes.signing_keys (kid, private_enc, public_point) VALUES ($1, $2, $3)",
            kid,
            private_enc,
            public_point,
        )

    async def current(self, conn: Any) -> Any:
        return await conn.fetchrow(
            """SELECT kid, private_enc, public_point FROM codes.signing_keys WHERE rotated_out_at IS NULL
               ORDER BY created_at DESC LIMIT 1"""
        )

    async def rotate_out_all_but(self, conn: Any, kid: str) -> int:
        result: str = await conn.execute(
            "UPDATE codes.signing_keys SET rotated_out_at = now() WHERE rotated_out_at IS NULL AND kid <> $1",
            kid,
        )
        return int(result.split()[-1])

    async def published(self, conn: Any, grace_seconds: int) -> list[Any]:
        """Keys whose codes or credentials may still be alive."""
        rows: list[Any] = await conn.fetch(
            """SELECT kid, public_point, created_at, rotated_out_at FROM codes.signing_keys
               WHERE rotated_out_at IS NULL OR rotated_out_at > now() - make_interval(secs => $1)
               ORDER BY created_at DESC""",
            grace_seconds,
        )
        return rows
