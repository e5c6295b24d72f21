"""All SQL for organisations and their API credentials."""

from __future__ import annotations

import uuid
from typing import Any


class OrganisationRepository:
    async def create(self, conn: Any, name: str, kind: str, location: str | None) -> Any:
        return await conn.fetchrow(
            """INSERT INTO identity.organisations (name, kind, location) VALUES ($1, $2, $3)
               ON CONFLICT (name) DO NOTHING RETURNING id, name, kind, location, status, created_at""",
            name,
            kind,
            location,
        )

    async def get(self, conn: Any, organisation_id: uuid.UUID) -> Any:
        return await conn.fetchrow(
            "SELECT id, name, kind, location, status, created_at FROM identity.organisations WHERE id = $1",
            organisation_id,
        )

    async def get_by_name(self, conn: Any, name: str) -> Any:
        return await conn.fetchrow(
            "SELECT id, name, kind, location, status, created_at FROM identity.organisations WHERE name = $1",
            name,
        )

    async def list_all(self, conn: Any) -> list[Any]:
        rows: list[Any] = await conn.fetch(
            "SELECT id, name, kind, location, status, created_at FROM identity.organisations ORDER BY name"
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
                      o.name AS organisation_name, o.kind AS organisation_kind, o.status AS organisation_status
               FROM identity.api_credentials c JOIN identity.organisations o ON o.id = c.organisation_id
               WHERE c.key_id = $1""",
            key_id,
        )
