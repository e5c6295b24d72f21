"""All SQL for organisations and their API credentials."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_ORGANISATION = "id, name, kind, location, status, created_at, rate_limit_per_second"


class OrganisationRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    kind: str
    location: str | None
    status: str
    created_at: dt.datetime
    rate_limit_per_second: int | None  # None: the platform's default


class CredentialRow(msgspec.Struct, frozen=True):
    """A credential as its organisation's staff see it: never its secret."""

    key_id: str
    scopes: list[str]
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class CredentialAuthRow(msgspec.Struct, frozen=True):
    """What checking a signed request needs: the encrypted secret, and whether key and organisation may act."""

    key_id: str
    secret_enc: bytes
    scopes: list[str]
    revoked_at: dt.datetime | None
    organisation_id: uuid.UUID
    organisation_name: str
    organisation_kind: str
    organisation_status: str
    rate_limit_per_second: int | None


class OrganisationRepository:
    async def create(
        self, conn: Connection, name: str, kind: str, location: str | None, rate_limit: int | None = None
    ) -> OrganisationRow | None:
        """None when an organisation with this name exists."""
        return await fetch_row(
            conn,
            OrganisationRow,
            f"""INSERT INTO organisations.organisations (name, kind, location, rate_limit_per_second)
                VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING {_ORGANISATION}""",
            name,
            kind,
            location,
            rate_limit,
        )

    async def set_rate_limit(
        self, conn: Connection, organisation_id: uuid.UUID, rate_limit: int | None
    ) -> OrganisationRow | None:
        return await fetch_row(
            conn,
            OrganisationRow,
            f"""UPDATE organisations.organisations SET rate_limit_per_second = $2 WHERE id = $1
                RETURNING {_ORGANISATION}""",
            organisation_id,
            rate_limit,
        )

    async def get(self, conn: Connection, organisation_id: uuid.UUID) -> OrganisationRow | None:
        return await fetch_row(
            conn,
            OrganisationRow,
            f"SELECT {_ORGANISATION} FROM organisations.organisations WHERE id = $1",
            organisation_id,
        )

    async def get_by_name(self, conn: Connection, name: str) -> OrganisationRow | None:
        return await fetch_row(
            conn,
            OrganisationRow,
            f"SELECT {_ORGANISATION} FROM organisations.organisations WHERE name = $1",
            name,
        )

    async def list_all(self, conn: Connection) -> list[OrganisationRow]:
        return await fetch_rows(
            conn, OrganisationRow, f"SELECT {_ORGANISATION} FROM organisations.organisations ORDER BY name"
        )

    async def add_credential(
        self,
        conn: Connection,
        key_id: str,
        organisation_id: uuid.UUID,
        secret_enc: bytes,
        scopes: list[str],
        label: str,
    ) -> None:
        await conn.execute(
            """INSERT INTO organisations.api_credentials (key_id, organisation_id, secret_enc, scopes, label)
               VALUES ($1, $2, $3, $4, $5)""",
            key_id,
            organisation_id,
            secret_enc,
            scopes,
            label,
        )

    async def credentials(self, conn: Connection, organisation_id: uuid.UUID) -> list[CredentialRow]:
        return await fetch_rows(
            conn,
            CredentialRow,
            """SELECT key_id, scopes, label, created_at, revoked_at FROM organisations.api_credentials
               WHERE organisation_id = $1 ORDER BY created_at""",
            organisation_id,
        )

    async def revoke_credential(self, conn: Connection, organisation_id: uuid.UUID, key_id: str) -> bool:
        result: str = await conn.execute(
            """UPDATE organisations.api_credentials SET revoked_at = now()
               WHERE key_id = $1 AND organisation_id = $2 AND revoked_at IS NULL""",
            key_id,
            organisation_id,
        )
        return result.endswith(" 1")

    async def credential_for_auth(self, conn: Connection, key_id: str) -> CredentialAuthRow | None:
        """Read on a credential-cache miss only (MachineAuth keeps the answer a few seconds)."""
        return await fetch_row(
            conn,
            CredentialAuthRow,
            """SELECT c.key_id, c.secret_enc, c.scopes, c.revoked_at, o.id AS organisation_id,
                      o.name AS organisation_name, o.kind AS organisation_kind, o.status AS organisation_status,
                      o.rate_limit_per_second
               FROM organisations.api_credentials c JOIN organisations.organisations o ON o.id = c.organisation_id
               WHERE c.key_id = $1""",
            key_id,
        )


class HeldNonceRow(msgspec.Struct, frozen=True):
    key_id: str
    nonce: str
    seconds_left: int


class UsedNonceRepository:
    """The single-use nonces of signed requests while Redis is unavailable (organisations.used_nonces)."""

    async def claim(self, conn: Connection, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        """True if the nonce was unused (now it is used, for `ttl_seconds`). The database's clock for every process;
        an expired row left by the sweep is claimed again."""
        claimed = await conn.fetchval(
            """INSERT INTO organisations.used_nonces (key_id, nonce, expires_at)
               VALUES ($1, $2, now() + make_interval(secs => $3))
               ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at
               WHERE organisations.used_nonces.expires_at <= now()
               RETURNING true""",
            key_id,
            nonce,
            float(ttl_seconds),
        )
        return bool(claimed)

    async def live(self, conn: Connection) -> list[HeldNonceRow]:
        """Every nonce still held, with the seconds it has left."""
        return await fetch_rows(
            conn,
            HeldNonceRow,
            """SELECT key_id, nonce, greatest(1, ceil(extract(epoch FROM expires_at - now())))::int AS seconds_left
               FROM organisations.used_nonces WHERE expires_at > now()""",
        )

    async def delete_expired(self, conn: Connection) -> int:
        result: str = await conn.execute("DELETE FROM organisations.used_nonces WHERE expires_at <= now()")
        return int(result.rsplit(" ", 1)[1])
