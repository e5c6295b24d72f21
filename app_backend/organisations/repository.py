"""All SQL for organisations and their API credentials."""

from __future__ import annotations

import uuid
from typing import Any

_ORGANISATION = "id, name, kind, location, status, created_at, rate_limit_per_second"


class OrganisationRepository:
    async def create(
        self, conn: Any, name: str, kind: str, location: str | None, rate_limit: int | None = None
    ) -> Any:
        return await conn.fetchrow(
            f"""INSERT INTO identity.organisations (name, kind, location, rate_limit_per_second)
                VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING {_ORGANISATION}""",
            name,
            kind,
            location,
            rate_limit,
        )

    async def set_rate_limit(self, conn: Any, organisation_id: uuid.UUID, rate_limit: int | None) -> Any:
        return await conn.fetchrow(
            f"""UPDATE identity.organisations SET rate_limit_per_second = $2 WHERE id = $1
                RETURNING {_ORGANISATION}""",
            organisation_id,
            rate_limit,
        )

    async def get(self, conn: Any, organisation_id: uuid.UUID) -> Any:
        return await conn.fetchrow(
            f"SELECT {_ORGANISATION} FROM identity.organisations WHERE id = $1",
            organisation_id,
        )

    async def get_by_name(self, conn: Any, name: str) -> Any:
        return await conn.fetchrow(
            f"SELECT {_ORGANISATION} FROM identity.organisations WHERE name = $1",
            name,
        )

    async def list_all(self, conn: Any) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            f"SELECT {_ORGANISATION} FROM identity.organisations ORDER BY name"
        )
        return rows

    async def add_credential(
        self,
        conn: Any,
        key_id: str,
        organisation_id: uuid.UUID,
        secret_enc: bytes,
        scopes: list[str],
        label: str,
    ) -> None:
        await conn.execute(
            """INSERT INTO identity.api_credentials (key_id, organisation_id, secret_enc, scopes, label)
               VALUES ($1, $2, $3, $4, $5)""",
            key_id,
            organisation_id,
            secret_enc,
            scopes,
            label,
        )

    async def credentials(self, conn: Any, organisation_id: uuid.UUID) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            """SELECT key_id, scopes, label, created_at, revoked_at FROM identity.api_credentials
               WHERE organisation_id = $1 ORDER BY created_at""",
            organisation_id,
        )
        return rows

    async def revoke_credential(self, conn: Any, organisation_id: uuid.UUID, key_id: str) -> bool:
        result: str = await conn.execute(
            """UPDATE identity.api_credentials SET revoked_at = now()
               WHERE key_id = $1 AND organisation_id = $2 AND revoked_at IS NULL""",
            key_id,
            organisation_id,
        )
        return result.endswith(" 1")

    async def credential_for_auth(self, conn: Any, key_id: str) -> Any:
        return await conn.fetchrow(
            """SELECT c.key_id, c.secret_enc, c.scopes, c.revoked_at, o.id AS organisation_id,
                      o.name AS organisation_name, o.kind AS organisation_kind, o.status AS organisation_status,
                      o.rate_limit_per_second
               FROM identity.api_credentials c JOIN identity.organisations o ON o.id = c.organisation_id
               WHERE c.key_id = $1""",
            key_id,
        )
