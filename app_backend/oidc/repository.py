"""All SQL of the one-login provider."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_KEY_LOCK = 0x747A6F69  # "tzoi": staging and switching ID-token keys serialise on it

_CLIENT = """c.client_id, c.organisation_id, o.name AS organisation_name, c.name, c.purpose, c.client_type,
             c.auth_method, c.secret_hash, c.jwks, c.redirect_uris, c.post_logout_redirect_uris,
             c.backchannel_logout_uri, c.sector, c.scopes, c.created_at, c.revoked_at"""


class ClientRow(msgspec.Struct, frozen=True):
    client_id: str
    organisation_id: uuid.UUID
    organisation_name: str
    name: str
    purpose: str
    client_type: str
    auth_method: str
    secret_hash: bytes | None
    jwks: dict[str, object] | None
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    backchannel_logout_uri: str | None
    sector: str
    scopes: list[str]
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class SubjectCandidateRow(msgspec.Struct, frozen=True):
    resident_id: uuid.UUID
    sector: str


class ClientRepository:
    async def residents_of_organisation(
        self, conn: Connection, organisation_id: uuid.UUID
    ) -> list[SubjectCandidateRow]:
        """Every resident who logged in to one of the organisation's apps, with each app's sector: the only
        residents a `sub` the organisation holds can name."""
        return await fetch_rows(
            conn,
            SubjectCandidateRow,
            """SELECT DISTINCT g.resident_id, c.sector
               FROM oidc.grants g JOIN oidc.clients c ON c.client_id = g.client_id
               WHERE c.organisation_id = $1""",
            organisation_id,
        )

    async def insert(
        self,
        conn: Connection,
        client_id: str,
        organisation_id: uuid.UUID,
        name: str,
        purpose: str,
        client_type: str,
        auth_method: str,
        secret_hash: bytes | None,
        jwks: dict[str, object] | None,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str],
        backchannel_logout_uri: str | None,
        sector: str,
        scopes: list[str],
    ) -> None:
        await conn.execute(
            """INSERT INTO oidc.clients (client_id, organisation_id, name, purpose, client_type, auth_method,
                   secret_hash, jwks, redirect_uris, post_logout_redirect_uris, backchannel_logout_uri, sector,
                   scopes)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
            client_id,
            organisation_id,
            name,
            purpose,
            client_type,
            auth_method,
            secret_hash,
            jwks,
            redirect_uris,
            post_logout_redirect_uris,
            backchannel_logout_uri,
            sector,
            scopes,
        )

    async def get(self, conn: Connection, client_id: str) -> ClientRow | None:
        return await fetch_row(
            conn,
            ClientRow,
            f"""SELECT {_CLIENT} FROM oidc.clients c JOIN organisations.organisations o ON o.id = c.organisation_id
                WHERE c.client_id = $1""",
            client_id,
        )

    async def list_all(self, conn: Connection, organisation_id: uuid.UUID | None) -> list[ClientRow]:
        return await fetch_rows(
            conn,
            ClientRow,
            f"""SELECT {_CLIENT} FROM oidc.clients c JOIN organisations.organisations o ON o.id = c.organisation_id
                WHERE $1::uuid IS NULL OR c.organisation_id = $1 ORDER BY c.created_at""",
            organisation_id,
        )

    async def revoke(self, conn: Connection, client_id: str) -> bool:
        done: str = await conn.execute(
            "UPDATE oidc.clients SET revoked_at = now() WHERE client_id = $1 AND revoked_at IS NULL",
            client_id,
        )
        return done.endswith(" 1")


class OidcKeyRow(msgspec.Struct, frozen=True):
    """An ID-token signing key on the key schedule (code_service.keys.service.KeySchedule); the private half is
    AES-GCM ciphertext (FieldCipher)."""

    kid: str
    private_enc: bytes
    public_jwk: dict[str, str]
    created_at: dt.datetime
    signs_from: dt.datetime
    signs_until: dt.datetime | None
    retire_at: dt.datetime | None


_KEY_COLUMNS = "kid, private_enc, public_jwk, created_at, signs_from, signs_until, retire_at"


class OidcKeyRepository:
    async def lock(self, conn: Connection) -> None:
        """Held until the transaction ends."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEY_LOCK)

    async def insert(
        self,
        conn: Connection,
        kid: str,
        private_enc: bytes,
        public_jwk: dict[str, str],
        created_at: dt.datetime,
        signs_from: dt.datetime,
    ) -> OidcKeyRow:
        row = await fetch_row(
            conn,
            OidcKeyRow,
            f"""INSERT INTO oidc.signing_keys (kid, private_enc, public_jwk, created_at, signs_from)
                VALUES ($1, $2, $3, $4, $5) RETURNING {_KEY_COLUMNS}""",
            kid,
            private_enc,
            public_jwk,
            created_at,
            signs_from,
        )
        assert row is not None  # RETURNING always answers
        return row

    async def live(self, conn: Connection, at: dt.datetime) -> list[OidcKeyRow]:
        return await fetch_rows(
            conn,
            OidcKeyRow,
            f"""SELECT {_KEY_COLUMNS} FROM oidc.signing_keys WHERE retire_at IS NULL OR retire_at > $1
                ORDER BY signs_from DESC, created_at DESC""",
            at,
        )

    async def end(
        self, conn: Connection, kid: str, signs_until: dt.datetime, retire_at: dt.datetime
    ) -> OidcKeyRow | None:
        return await fetch_row(
            conn,
            OidcKeyRow,
            f"""UPDATE oidc.signing_keys SET signs_until = $2, retire_at = $3 WHERE kid = $1
                RETURNING {_KEY_COLUMNS}""",
            kid,
            signs_until,
            retire_at,
        )


class BrowserSessionRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    resident_id: uuid.UUID
    identity_session_id: uuid.UUID | None
    auth_time: dt.datetime
    expires_at: dt.datetime


class CodeRow(msgspec.Struct, frozen=True):
    grant_id: uuid.UUID
    client_id: str
    resident_id: uuid.UUID
    browser_session_id: uuid.UUID
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    acr: int
    auth_time: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None


class ClaimedCodeRow(CodeRow, frozen=True):
    """A code spent by this exchange, with the standing its resident has now (read in the same statement)."""

    resident_level: int | None = None  # None: no such resident
    resident_active: bool = False


_CODE = """grant_id, client_id, resident_id, browser_session_id, redirect_uri, scope, nonce, code_challenge,
           code_challenge_method, acr, auth_time, expires_at, used_at"""


class TokenGrantRow(msgspec.Struct, frozen=True):
    """A token with the grant (family) it belongs to."""

    grant_id: uuid.UUID
    client_id: str
    resident_id: uuid.UUID
    browser_session_id: uuid.UUID
    scope: str
    acr: int
    auth_time: dt.datetime
    expires_at: dt.datetime
    used_or_revoked: bool
    grant_revoked: bool


class ConsentRow(msgspec.Struct, frozen=True):
    client_id: str
    client_name: str
    organisation_name: str
    purpose: str
    claim: str
    granted_at: dt.datetime


class ReleaseRow(msgspec.Struct, frozen=True):
    at: dt.datetime
    organisation_name: str
    client_name: str
    claims: list[str]
    purpose: str
    via: str


class SessionClientRow(msgspec.Struct, frozen=True):
    """A client that holds a grant from a browser session, with where it hears of the session's end."""

    client_id: str
    resident_id: uuid.UUID
    sector: str
    backchannel_logout_uri: str | None


class DeliveryRow(msgspec.Struct, frozen=True):
    id: int
    client_id: str
    subject: str
    sid: str
    attempts: int
    backchannel_logout_uri: str | None


class GrantRepository:
    """Browser sessions, consents, codes, grants and their tokens."""

    # -- browser sessions ---------------------------------------------------------------------------------------

    async def open_session(
        self,
        conn: Connection,
        token_hash: bytes,
        resident_id: uuid.UUID,
        identity_session_id: uuid.UUID | None,
        max_age: int,
        auth_time: dt.datetime | None = None,
    ) -> uuid.UUID:
        session_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO oidc.browser_sessions (token_hash, resident_id, identity_session_id, expires_at,
                   auth_time)
               VALUES ($1, $2, $3, now() + make_interval(secs => $4), coalesce($5, now())) RETURNING id""",
            token_hash,
            resident_id,
            identity_session_id,
            float(max_age),
            auth_time,
        )
        return session_id

    async def session(self, conn: Connection, token_hash: bytes) -> BrowserSessionRow | None:
        return await fetch_row(
            conn,
            BrowserSessionRow,
            """SELECT id, resident_id, identity_session_id, auth_time, expires_at FROM oidc.browser_sessions
               WHERE token_hash = $1 AND ended_at IS NULL AND expires_at > now()""",
            token_hash,
        )

    async def end_session(self, conn: Connection, session_id: uuid.UUID) -> bool:
        done: str = await conn.execute(
            "UPDATE oidc.browser_sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL", session_id
        )
        return done.endswith(" 1")

    async def clients_of_session(self, conn: Connection, session_id: uuid.UUID) -> list[SessionClientRow]:
        return await fetch_rows(
            conn,
            SessionClientRow,
            """SELECT DISTINCT c.client_id, g.resident_id, c.sector, c.backchannel_logout_uri
               FROM oidc.grants g JOIN oidc.clients c ON c.client_id = g.client_id
               WHERE g.browser_session_id = $1""",
            session_id,
        )

    # -- consents -----------------------------------------------------------------------------------------------

    async def consented(self, conn: Connection, resident_id: uuid.UUID, client_id: str) -> set[str]:
        rows = await conn.fetch(
            """SELECT claim FROM oidc.consents
               WHERE resident_id = $1 AND client_id = $2 AND revoked_at IS NULL""",
            resident_id,
            client_id,
        )
        return {r["claim"] for r in rows}

    async def consent(
        self, conn: Connection, resident_id: uuid.UUID, client_id: str, claims: list[str]
    ) -> None:
        await conn.execute(
            """INSERT INTO oidc.consents (resident_id, client_id, claim)
               SELECT $1, $2, unnest($3::text[])
               ON CONFLICT (resident_id, client_id, claim)
               DO UPDATE SET granted_at = now(), revoked_at = NULL WHERE oidc.consents.revoked_at IS NOT NULL""",
            resident_id,
            client_id,
            claims,
        )

    async def consents_of(self, conn: Connection, resident_id: uuid.UUID) -> list[ConsentRow]:
        return await fetch_rows(
            conn,
            ConsentRow,
            """SELECT s.client_id, c.name AS client_name, o.name AS organisation_name, c.purpose, s.claim,
                      s.granted_at
               FROM oidc.consents s
               JOIN oidc.clients c ON c.client_id = s.client_id
               JOIN organisations.organisations o ON o.id = c.organisation_id
               WHERE s.resident_id = $1 AND s.revoked_at IS NULL
               ORDER BY s.granted_at DESC, s.client_id, s.claim""",
            resident_id,
        )

    async def revoke_consents(self, conn: Connection, resident_id: uuid.UUID, client_id: str) -> int:
        done: str = await conn.execute(
            """UPDATE oidc.consents SET revoked_at = now()
               WHERE resident_id = $1 AND client_id = $2 AND revoked_at IS NULL""",
            resident_id,
            client_id,
        )
        return int(done.split()[-1])

    # -- codes --------------------------------------------------------------------------------------------------

    async def save_code(
        self,
        conn: Connection,
        code_hash: bytes,
        grant_id: uuid.UUID,
        client_id: str,
        resident_id: uuid.UUID,
        browser_session_id: uuid.UUID,
        redirect_uri: str,
        scope: str,
        nonce: str | None,
        code_challenge: str | None,
        code_challenge_method: str | None,
        acr: int,
        auth_time: dt.datetime,
        ttl: int,
    ) -> None:
        await conn.execute(
            """INSERT INTO oidc.authorization_codes (code_hash, grant_id, client_id, resident_id,
                   browser_session_id, redirect_uri, scope, nonce, code_challenge, code_challenge_method, acr,
                   auth_time, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now() + make_interval(secs => $13))""",
            code_hash,
            grant_id,
            client_id,
            resident_id,
            browser_session_id,
            redirect_uri,
            scope,
            nonce,
            code_challenge,
            code_challenge_method,
            acr,
            auth_time,
            float(ttl),
        )

    async def claim_code(self, conn: Connection, code_hash: bytes, client_id: str) -> ClaimedCodeRow | None:
        """The code, spent by this call (a code is used once, whatever the outcome of the exchange), and its
        resident's level and status now: one round trip for what the exchange asks next."""
        return await fetch_row(
            conn,
            ClaimedCodeRow,
            f"""WITH spent AS (
                    UPDATE oidc.authorization_codes SET used_at = now()
                    WHERE code_hash = $1 AND client_id = $2 AND used_at IS NULL AND expires_at > now()
                    RETURNING {_CODE}
                )
                SELECT spent.*, r.level AS resident_level, coalesce(r.status = 'active', false) AS resident_active
                FROM spent LEFT JOIN identity.residents r ON r.id = spent.resident_id""",
            code_hash,
            client_id,
        )

    async def find_code(self, conn: Connection, code_hash: bytes) -> CodeRow | None:
        return await fetch_row(
            conn, CodeRow, f"SELECT {_CODE} FROM oidc.authorization_codes WHERE code_hash = $1", code_hash
        )

    # -- grants and tokens --------------------------------------------------------------------------------------

    async def issue(
        self,
        conn: Connection,
        grant_id: uuid.UUID,
        code: CodeRow | None,
        scope: str,
        access_hash: bytes,
        access_ttl: int,
        refresh_hash: bytes | None,
        refresh_ttl: int,
        release: tuple[ClientRow, list[str]] | None,
    ) -> None:
        """In one statement (one round trip): the grant a code starts (none for a refresh), its access token, its
        refresh token when there is one, and the release of the ID token's claims when it is recorded."""
        client, claims = release if release is not None else (None, [])
        await conn.execute(
            """WITH started AS (
                   INSERT INTO oidc.grants (id, client_id, resident_id, browser_session_id, scope, acr, auth_time)
                   SELECT $1, $2, $3, $4, $5, $6, $7 WHERE $2::text IS NOT NULL
               ), access AS (
                   INSERT INTO oidc.access_tokens (token_hash, grant_id, scope, expires_at)
                   VALUES ($8, $1, $9, now() + make_interval(secs => $10))
               ), refresh AS (
                   INSERT INTO oidc.refresh_tokens (token_hash, grant_id, scope, expires_at)
                   SELECT $11, $1, $9, now() + make_interval(secs => $12) WHERE $11::bytea IS NOT NULL
               )
               INSERT INTO oidc.releases (resident_id, client_id, client_name, organisation_id, organisation_name,
                   claims, purpose, via)
               SELECT $3, $13, $14, $15, $16, $17, $18, 'id_token' WHERE $13::text IS NOT NULL""",
            grant_id,
            code.client_id if code is not None else None,
            code.resident_id if code is not None else None,
            code.browser_session_id if code is not None else None,
            code.scope if code is not None else None,
            code.acr if code is not None else None,
            code.auth_time if code is not None else None,
            access_hash,
            scope,
            float(access_ttl),
            refresh_hash,
            float(refresh_ttl),
            client.client_id if client is not None else None,
            client.name if client is not None else None,
            client.organisation_id if client is not None else None,
            client.organisation_name if client is not None else None,
            claims,
            client.purpose if client is not None else None,
        )

    async def use_refresh_token(
        self, conn: Connection, token_hash: bytes, client_id: str
    ) -> TokenGrantRow | None:
        """The refresh token, spent by this call, if it is live, of this client, and its grant stands."""
        return await fetch_row(
            conn,
            TokenGrantRow,
            """UPDATE oidc.refresh_tokens t SET used_at = now()
               FROM oidc.grants g
               WHERE t.token_hash = $1 AND g.id = t.grant_id AND g.client_id = $2 AND t.used_at IS NULL
                 AND t.expires_at > now() AND g.revoked_at IS NULL
               RETURNING g.id AS grant_id, g.client_id, g.resident_id, g.browser_session_id, t.scope, g.acr,
                         g.auth_time, t.expires_at, false AS used_or_revoked, false AS grant_revoked""",
            token_hash,
            client_id,
        )

    async def find_refresh_token(self, conn: Connection, token_hash: bytes) -> TokenGrantRow | None:
        return await fetch_row(
            conn,
            TokenGrantRow,
            """SELECT g.id AS grant_id, g.client_id, g.resident_id, g.browser_session_id, t.scope, g.acr,
                      g.auth_time, t.expires_at, t.used_at IS NOT NULL AS used_or_revoked,
                      g.revoked_at IS NOT NULL AS grant_revoked
               FROM oidc.refresh_tokens t JOIN oidc.grants g ON g.id = t.grant_id WHERE t.token_hash = $1""",
            token_hash,
        )

    async def find_access_token(self, conn: Connection, token_hash: bytes) -> TokenGrantRow | None:
        return await fetch_row(
            conn,
            TokenGrantRow,
            """SELECT g.id AS grant_id, g.client_id, g.resident_id, g.browser_session_id, t.scope, g.acr,
                      g.auth_time, t.expires_at, t.revoked_at IS NOT NULL AS used_or_revoked,
                      g.revoked_at IS NOT NULL AS grant_revoked
               FROM oidc.access_tokens t JOIN oidc.grants g ON g.id = t.grant_id WHERE t.token_hash = $1""",
            token_hash,
        )

    async def revoke_access_token(self, conn: Connection, token_hash: bytes) -> None:
        await conn.execute(
            "UPDATE oidc.access_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
            token_hash,
        )

    async def revoke_grant(self, conn: Connection, grant_id: uuid.UUID, reason: str) -> None:
        """The whole family: the grant, and with it every token of it (tokens are read with their grant)."""
        await conn.execute(
            """UPDATE oidc.grants SET revoked_at = now(), revoked_reason = $2
               WHERE id = $1 AND revoked_at IS NULL""",
            grant_id,
            reason,
        )

    async def revoke_grants_of(
        self, conn: Connection, reason: str, *, client_id: str, resident_id: uuid.UUID | None = None
    ) -> int:
        done: str = await conn.execute(
            """UPDATE oidc.grants SET revoked_at = now(), revoked_reason = $3
               WHERE client_id = $1 AND ($2::uuid IS NULL OR resident_id = $2) AND revoked_at IS NULL""",
            client_id,
            resident_id,
            reason,
        )
        return int(done.split()[-1])

    async def revoke_grants_of_session(self, conn: Connection, session_id: uuid.UUID, reason: str) -> None:
        await conn.execute(
            """UPDATE oidc.grants SET revoked_at = now(), revoked_reason = $2
               WHERE browser_session_id = $1 AND revoked_at IS NULL""",
            session_id,
            reason,
        )

    async def purge_expired(self, conn: Connection) -> int:
        """Codes and tokens a day past their expiry (reuse of a code is detected for a day after it expires)."""
        removed = 0
        for table in ("authorization_codes", "access_tokens", "refresh_tokens"):
            done: str = await conn.execute(
                f"DELETE FROM oidc.{table} WHERE expires_at < now() - interval '1 day'"
            )
            removed += int(done.split()[-1])
        return removed


class ReleaseRepository:
    async def record(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        client: ClientRow,
        claims: list[str],
        via: str,
    ) -> None:
        await conn.execute(
            """INSERT INTO oidc.releases (resident_id, client_id, client_name, organisation_id,
                   organisation_name, claims, purpose, via)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            resident_id,
            client.client_id,
            client.name,
            client.organisation_id,
            client.organisation_name,
            claims,
            client.purpose,
            via,
        )

    async def of_resident(self, conn: Connection, resident_id: uuid.UUID, limit: int) -> list[ReleaseRow]:
        return await fetch_rows(
            conn,
            ReleaseRow,
            """SELECT at, organisation_name, client_name, claims, purpose, via FROM oidc.releases
               WHERE resident_id = $1 ORDER BY at DESC, id DESC LIMIT $2""",
            resident_id,
            limit,
        )


class LogoutRepository:
    async def owe(self, conn: Connection, client_id: str, subject: str, sid: str) -> None:
        await conn.execute(
            "INSERT INTO oidc.logout_deliveries (client_id, subject, sid) VALUES ($1, $2, $3)",
            client_id,
            subject,
            sid,
        )

    async def claim_due(self, conn: Connection, limit: int) -> list[DeliveryRow]:
        return await fetch_rows(
            conn,
            DeliveryRow,
            """SELECT d.id, d.client_id, d.subject, d.sid, d.attempts, c.backchannel_logout_uri
               FROM oidc.logout_deliveries d JOIN oidc.clients c ON c.client_id = d.client_id
               WHERE d.delivered_at IS NULL AND d.abandoned_at IS NULL AND d.next_attempt_at <= now()
               ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED""",
            limit,
        )

    async def delivered(self, conn: Connection, delivery_id: int) -> None:
        await conn.execute(
            "UPDATE oidc.logout_deliveries SET delivered_at = now(), attempts = attempts + 1 WHERE id = $1",
            delivery_id,
        )

    async def failed(self, conn: Connection, delivery_id: int, error: str, retry_in: float | None) -> None:
        await conn.execute(
            """UPDATE oidc.logout_deliveries SET attempts = attempts + 1, last_error = $2,
                   next_attempt_at = now() + make_interval(secs => coalesce($3, 0)),
                   abandoned_at = CASE WHEN $3::float8 IS NULL THEN now() END
               WHERE id = $1""",
            delivery_id,
            error[:500],
            retry_in,
        )
