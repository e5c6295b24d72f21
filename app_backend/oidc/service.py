"""The rules of one login: who may register a client, whose browser session is whose, what the resident consented
to release to which department, pairwise subjects, levels as `acr`, single-use codes and refresh tokens (a reused
one revokes its whole family), releases recorded where the resident sees them, and back-channel logout owed to
the departments a session logged in to. Callers own the transaction; no Litestar here."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx
import structlog
from authlib.oauth2.rfc6749 import OAuth2Request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, import_key
from redis.asyncio import Redis

from app_backend.audit.service import AuditTrail
from app_backend.identity.schemas import ReleasableResident
from app_backend.identity.service import IdentityServices
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, invalid_field, not_found
from app_backend.kernel.settings import Settings
from app_backend.oidc.keys import IdTokenKeys
from app_backend.oidc.provider import IssuedToken, RegisteredClient, Resident
from app_backend.oidc.repository import (
    BrowserSessionRow,
    ClaimedCodeRow,
    ClientRepository,
    ClientRow,
    GrantRepository,
    LogoutRepository,
    ReleaseRepository,
)
from app_backend.oidc.schemas import (
    ACR_VALUES,
    CLAIM_SCOPES,
    CLAIMS_OF_SCOPE,
    SCOPES,
    Client,
    ClientRegistered,
    ClientRegistration,
    Consent,
    DataRelease,
)
from app_backend.organisations.service import OrganisationServices

_log = structlog.get_logger("oidc")
CODE_TTL = 120  # seconds; RFC 6749 asks for at most 10 minutes
LOGOUT_TOKEN_TTL = 120
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A back-channel logout is retried this many times, backing off, then abandoned (and left for operations to see).
LOGOUT_ATTEMPTS = 8
_CLIENT_KINDS = frozenset({"department"})
# The authorization request's own parameter, added by the provider when it sends the resident to log in again
# (prompt=login, max_age): a ticket saying when it asked, signed over the request's other parameters.
REAUTH_PARAM = "tzt_reauth"
# How long a log-in asked for may take (the page, an SMS code, typing it) before the request asks again.
REAUTH_TTL = 900


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def level_of_acr(acr: str) -> int | None:
    return int(acr[1]) if acr in ACR_VALUES else None


def required_level(acr_values: str | None) -> int | None:
    """The level a request's `acr_values` asks at least: the lowest of the levels it names (it accepts any of
    them); None when it names none we know."""
    levels = [lvl for v in (acr_values or "").split() if (lvl := level_of_acr(v)) is not None]
    return min(levels) if levels else None


def claim_groups(scope: str) -> list[str]:
    """The claim groups a scope string asks for, in the order of CLAIM_SCOPES."""
    asked = set(scope.split())
    return [s for s in CLAIM_SCOPES if s in asked]


def userinfo_claims(
    person: ReleasableResident, subject: str, groups: list[str]
) -> tuple[dict[str, object], list[str]]:
    """What userinfo answers for the consented claim groups, and the groups actually released (a group the
    resident has nothing for, such as real_name before real-name verification, is left out)."""
    claims: dict[str, object] = {"sub": subject}
    released: list[str] = []
    values: dict[str, dict[str, object] | None] = {
        "profile": {"name": person.masked_name} if person.masked_name else None,
        "phone": {"phone_number": person.phone, "phone_number_verified": True},
        "real_name": {"real_name": person.name} if person.name else None,
        "id_number": {"id_number": person.id_number} if person.id_number else None,
    }
    for group in groups:
        found = values.get(group)
        if found:
            claims.update(found)
            released.append(group)
    return claims, released


@dataclass(frozen=True)
class AuthorizeOutcome:
    """What the authorization endpoint must do next, once Authlib has validated the request."""

    client: ClientRow
    requested: list[str]  # claim groups asked for and allowed for the client
    missing: list[str]  # of those, the ones the resident has not consented to
    level_needed: int | None  # the level acr_values asks for, when the resident's is below it


class OidcService:
    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        redis: Redis,
        audit: AuditTrail,
        identity: IdentityServices,
        organisations: OrganisationServices,
        keys: IdTokenKeys,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.audit = audit
        self.identity = identity
        self.organisations = organisations
        self.keys = keys
        self._clients = ClientRepository()
        self._grants = GrantRepository()
        self._releases = ReleaseRepository()
        self._logouts = LogoutRepository()
        self._secret_key = hmac.new(settings.token_pepper, b"oidc-client-secret", hashlib.sha256).digest()
        self._token_key = hmac.new(settings.token_pepper, b"oidc-token", hashlib.sha256).digest()
        self._session_key = hmac.new(settings.token_pepper, b"oidc-browser-session", hashlib.sha256).digest()
        self.issuer = settings.public_base_url.rstrip("/")
        # Tests replace the transport to reach a department's receiver in-process; None: the network.
        self.logout_transport: httpx.AsyncBaseTransport | None = None

    # -- digests and subjects ----------------------------------------------------------------------------------

    def _digest(self, key: bytes, value: str) -> bytes:
        return hmac.new(key, value.encode(), hashlib.sha256).digest()

    def token_hash(self, token: str) -> bytes:
        return self._digest(self._token_key, token)

    def subject(self, sector: str, resident_id: uuid.UUID) -> str:
        """The pairwise subject (OIDC Core 8.1): the same resident is a different `sub` in each sector, and no
        department can compute another's without the server's secret."""
        mac = hmac.new(self.settings.pairwise_secret, f"{sector}\x00{resident_id}".encode(), hashlib.sha256)
        return _b64url(mac.digest())

    async def resident_for_subject(
        self, conn: Connection, organisation_id: uuid.UUID, sub: str
    ) -> uuid.UUID | None:
        """The resident a `sub` the organisation received from one login names, or None. Subjects are pairwise
        and cannot be reversed, so the residents who logged in to the organisation's apps are tried (as many
        HMACs as that, compared in constant time); another organisation's subject names nobody here."""
        found = None
        for row in await self._clients.residents_of_organisation(conn, organisation_id):
            if hmac.compare_digest(self.subject(row.sector, row.resident_id), sub):
                found = row.resident_id
        return found

    def csrf_token(self, session_id: uuid.UUID) -> str:
        return _b64url(self._digest(self._session_key, f"consent:{session_id}"))[:32]

    # -- clients (operations) ----------------------------------------------------------------------------------

    def _client_view(self, row: ClientRow) -> Client:
        return Client(
            client_id=row.client_id,
            organisation_id=row.organisation_id,
            organisation_name=row.organisation_name,
            name=row.name,
            purpose=row.purpose,
            client_type=row.client_type,
            token_endpoint_auth_method=row.auth_method,
            redirect_uris=list(row.redirect_uris),
            post_logout_redirect_uris=list(row.post_logout_redirect_uris),
            backchannel_logout_uri=row.backchannel_logout_uri,
            scopes=list(row.scopes),
            sector=row.sector,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    async def register_client(
        self, conn: Connection, reg: ClientRegistration, actor: Actor
    ) -> ClientRegistered:
        organisation = await self.organisations.organisations.organisation(conn, reg.organisation_id)
        if organisation is None:
            raise invalid_field("organisation_id", "no such organisation", status=404)
        if organisation.kind not in _CLIENT_KINDS or organisation.status != "active":
            raise invalid_field("organisation_id", "one login is for active departments", status=409)
        method = _auth_method(reg)
        for index, uri in enumerate(reg.redirect_uris):
            _check_uri(f"redirect_uris[{index}]", uri, self.settings.is_dev)
        for index, uri in enumerate(reg.post_logout_redirect_uris):
            _check_uri(f"post_logout_redirect_uris[{index}]", uri, self.settings.is_dev)
        if reg.backchannel_logout_uri is not None:
            _check_uri("backchannel_logout_uri", reg.backchannel_logout_uri, self.settings.is_dev)
        unknown = sorted(set(reg.scopes) - set(SCOPES))
        if unknown:
            raise invalid_field(
                "scopes", f"unknown scopes: {', '.join(unknown)} (known: {', '.join(SCOPES)})"
            )
        if "openid" not in reg.scopes:
            raise invalid_field("scopes", "must include openid")
        sector = f"organisation:{organisation.id}"
        if reg.sector_identifier_uri is not None:
            _check_uri("sector_identifier_uri", reg.sector_identifier_uri, self.settings.is_dev)
            sector = f"host:{urlsplit(reg.sector_identifier_uri).hostname}"
        jwks = _client_jwks(reg.jwks) if method == "private_key_jwt" else None
        if reg.jwks is not None and method != "private_key_jwt":
            raise invalid_field("jwks", "only for token_endpoint_auth_method private_key_jwt")
        secret = "tzos_" + secrets.token_urlsafe(32) if method.startswith("client_secret") else None
        client_id = "tzo_" + secrets.token_hex(10)
        await self._clients.insert(
            conn,
            client_id,
            organisation.id,
            reg.name,
            reg.purpose,
            reg.client_type,
            method,
            self._digest(self._secret_key, secret) if secret else None,
            jwks,
            list(dict.fromkeys(reg.redirect_uris)),
            list(dict.fromkeys(reg.post_logout_redirect_uris)),
            reg.backchannel_logout_uri,
            sector,
            [s for s in SCOPES if s in reg.scopes],
        )
        await self.audit.record(
            conn,
            actor,
            "admin.oidc_client_register",
            target_type="oidc_client",
            target_id=client_id,
            detail={"organisation": str(organisation.id), "auth_method": method, "scopes": list(reg.scopes)},
        )
        row = await self._clients.get(conn, client_id)
        assert row is not None  # inserted above, in this transaction
        return ClientRegistered(client=self._client_view(row), client_secret=secret)

    async def clients(self, conn: Connection, organisation_id: uuid.UUID | None) -> list[Client]:
        return [self._client_view(r) for r in await self._clients.list_all(conn, organisation_id)]

    async def revoke_client(self, conn: Connection, client_id: str, actor: Actor) -> None:
        if not await self._clients.revoke(conn, client_id):
            raise not_found("client_id: no active client with this id")
        revoked = await self._grants.revoke_grants_of(conn, "client revoked", client_id=client_id)
        await self.audit.record(
            conn,
            actor,
            "admin.oidc_client_revoke",
            target_type="oidc_client",
            target_id=client_id,
            detail={"grants_revoked": revoked},
        )

    async def active_client(self, conn: Connection, client_id: str) -> ClientRow | None:
        row = await self._clients.get(conn, client_id)
        return row if row is not None and row.revoked_at is None else None

    def registered(self, row: ClientRow) -> RegisteredClient:
        def matches(secret: str) -> bool:
            return row.secret_hash is not None and hmac.compare_digest(
                self._digest(self._secret_key, secret), row.secret_hash
            )

        return RegisteredClient(row, matches)

    # -- browser sessions --------------------------------------------------------------------------------------

    async def open_session(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        identity_session_id: uuid.UUID | None,
        auth_time: dt.datetime | None = None,
    ) -> tuple[str, uuid.UUID]:
        """A new browser session: the cookie's value (only its keyed hash is stored) and the session's id.
        `auth_time` is when the resident authenticated (the app's login, for a session opened from its token in
        a web-view); now when None (the provider's own log-in page just did)."""
        token = "tzb_" + secrets.token_urlsafe(32)
        session_id = await self._grants.open_session(
            conn,
            self._digest(self._session_key, token),
            resident_id,
            identity_session_id,
            self.settings.oidc_session_max_age,
            auth_time,
        )
        return token, session_id

    # -- authenticating again (prompt=login, max_age) --------------------------------------------------------

    def _reauth_mac(self, asked_ms: int, params: list[tuple[str, str]]) -> str:
        canonical = urlencode(sorted((k, v) for k, v in params if k != REAUTH_PARAM))
        return _b64url(self._digest(self._session_key, f"reauth:{asked_ms}:{canonical}"))[:32]

    def reauthentication_ticket(self, params: list[tuple[str, str]]) -> str:
        """What the provider adds to an authorization request (REAUTH_PARAM) when it sends the resident to log in
        again: when it asked, signed over the request's other parameters, so neither can be changed."""
        asked_ms = int(time.time() * 1000)
        return f"{asked_ms}.{self._reauth_mac(asked_ms, params)}"

    def _asked_at(self, params: list[tuple[str, str]]) -> float | None:
        """When this very request sent the resident to log in again (its ticket, if genuine and recent)."""
        tickets = [v for k, v in params if k == REAUTH_PARAM]
        if len(tickets) != 1:
            return None
        stamp, _, mac = tickets[0].partition(".")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 15):
            return None
        if not hmac.compare_digest(mac, self._reauth_mac(int(stamp), params)):
            return None
        asked = int(stamp) / 1000
        return asked if 0 <= time.time() - asked <= REAUTH_TTL else None

    def authentication_required(self, params: list[tuple[str, str]], auth_time: dt.datetime) -> bool:
        """Whether the resident must authenticate (log in) again before a code is issued for this request: it
        says `prompt=login`, or its `max_age` is shorter than the time since the session's authentication
        (OIDC Core 3.1.2.1), and the resident has not logged in since this request sent them to. Raises
        ValueError for a `max_age` that is not a number of seconds."""
        first = dict(reversed(params))
        prompt = (first.get("prompt") or "").split()
        raw_max_age = first.get("max_age")
        max_age = None
        if raw_max_age is not None:
            if not (raw_max_age.isascii() and raw_max_age.isdigit() and len(raw_max_age) <= 10):
                raise ValueError("max_age must be a whole number of seconds")
            max_age = int(raw_max_age)
        if "login" not in prompt and max_age is None:
            return False
        asked = self._asked_at(params)
        if asked is not None and auth_time.timestamp() >= asked:
            return False  # logged in after this request asked: that is the authentication it wanted
        if "login" in prompt:
            return True
        assert max_age is not None
        return time.time() - auth_time.timestamp() > max_age

    async def session(self, conn: Connection, cookie: str | None) -> BrowserSessionRow | None:
        if not cookie or len(cookie) > 128:
            return None
        found = await self._grants.session(conn, self._digest(self._session_key, cookie))
        if found is None or not await self.identity.directory.resident_active(conn, found.resident_id):
            return None
        return found

    async def resident(self, conn: Connection, session: BrowserSessionRow) -> Resident:
        """The session's resident with the level the account has now (not the level at log-in)."""
        person = await self.identity.directory.releasable(conn, session.resident_id)
        return Resident(
            resident_id=session.resident_id,
            level=person.level if person is not None else 1,
            browser_session_id=session.id,
            auth_time=session.auth_time,
        )

    # -- authorization -----------------------------------------------------------------------------------------

    async def assess(
        self, conn: Connection, client_id: str, scope: str, acr_values: str | None, resident: Resident
    ) -> AuthorizeOutcome:
        client = await self.active_client(conn, client_id)
        assert client is not None  # Authlib validated the request against this client
        requested = claim_groups(scope)
        consented = await self._grants.consented(conn, resident.resident_id, client.client_id)
        needed = required_level(acr_values)
        return AuthorizeOutcome(
            client=client,
            requested=requested,
            missing=[c for c in requested if c not in consented],
            level_needed=needed if needed is not None and resident.level < needed else None,
        )

    async def consent(
        self, conn: Connection, resident: Resident, client: ClientRow, claims: list[str], actor: Actor
    ) -> None:
        if claims:
            await self._grants.consent(conn, resident.resident_id, client.client_id, claims)
        await self.audit.record(
            conn,
            actor,
            "oidc.consent",
            target_type="oidc_client",
            target_id=client.client_id,
            detail={"claims": claims},
        )

    async def consented(self, conn: Connection, resident_id: uuid.UUID, client_id: str) -> frozenset[str]:
        return frozenset(await self._grants.consented(conn, resident_id, client_id))

    # -- residents: consents and data-access history -----------------------------------------------------------

    async def consents_of(self, conn: Connection, resident_id: uuid.UUID) -> list[Consent]:
        by_client: dict[str, Consent] = {}
        for row in await self._grants.consents_of(conn, resident_id):
            found = by_client.get(row.client_id)
            if found is None:
                by_client[row.client_id] = Consent(
                    client_id=row.client_id,
                    client_name=row.client_name,
                    organisation=row.organisation_name,
                    purpose=row.purpose,
                    claims=[row.claim],
                    granted_at=row.granted_at,
                )
            else:
                found.claims.append(row.claim)
                found.granted_at = max(found.granted_at, row.granted_at)
        for consent in by_client.values():
            consent.claims = [c for c in CLAIM_SCOPES if c in consent.claims]
        return list(by_client.values())

    async def revoke_consent(
        self, conn: Connection, resident_id: uuid.UUID, client_id: str, actor: Actor
    ) -> None:
        """Withdraws every consent given to the client and ends what it holds: its tokens stop working now."""
        if not await self._grants.revoke_consents(conn, resident_id, client_id):
            raise not_found("client_id: no consent given to this client")
        await self._grants.revoke_grants_of(
            conn, "consent withdrawn", client_id=client_id, resident_id=resident_id
        )
        await self.audit.record(
            conn, actor, "oidc.consent_revoke", target_type="oidc_client", target_id=client_id
        )

    async def data_access(self, conn: Connection, resident_id: uuid.UUID, limit: int) -> list[DataRelease]:
        return [
            DataRelease(
                at=r.at,
                organisation=r.organisation_name,
                client=r.client_name,
                claims=list(r.claims),
                purpose=r.purpose,
                via=r.via,
            )
            for r in await self._releases.of_resident(conn, resident_id, limit)
        ]

    # -- userinfo ----------------------------------------------------------------------------------------------

    async def userinfo(self, conn: Connection, access_token: str | None) -> dict[str, object]:
        if not access_token:
            raise _invalid_token("a bearer access token is required")
        found = await self._grants.find_access_token(conn, self.token_hash(access_token))
        if (
            found is None
            or found.used_or_revoked
            or found.grant_revoked
            or found.expires_at.timestamp() <= time.time()
        ):
            raise _invalid_token("the access token is unknown, expired or revoked")
        if "openid" not in found.scope.split():
            raise DomainError(
                403,
                "insufficient-scope",
                "authorization: the token was not granted the openid scope",
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="openid"'},
            )
        client = await self.active_client(conn, found.client_id)
        person = await self.identity.directory.releasable(conn, found.resident_id)
        if client is None or person is None or not person.active:
            raise _invalid_token("the access token is no longer valid")
        # Only what is consented now: a consent withdrawn since revokes the grant, and what was never consented
        # was never in the grant's scope.
        consented = await self._grants.consented(conn, found.resident_id, client.client_id)
        groups = [g for g in claim_groups(found.scope) if g in consented]
        claims, released = userinfo_claims(person, self.subject(client.sector, found.resident_id), groups)
        await self._releases.record(conn, found.resident_id, client, ["sub", *released], "userinfo")
        return claims

    # -- logout ------------------------------------------------------------------------------------------------

    async def end_session(self, conn: Connection, session_id: uuid.UUID, actor: Actor) -> int:
        """Ends a browser session: its grants are revoked and every client it logged in to that listens is owed a
        back-channel logout (delivered by the job). Returns how many are owed."""
        if not await self._grants.end_session(conn, session_id):
            return 0
        owed = 0
        for client in await self._grants.clients_of_session(conn, session_id):
            if client.backchannel_logout_uri:
                await self._logouts.owe(
                    conn, client.client_id, self.subject(client.sector, client.resident_id), str(session_id)
                )
                owed += 1
        await self._grants.revoke_grants_of_session(conn, session_id, "logged out")
        await self.audit.record(
            conn,
            actor,
            "oidc.logout",
            target_type="oidc_session",
            target_id=str(session_id),
            detail={"owed": owed},
        )
        return owed

    async def logout_token(self, client_id: str, subject: str, sid: str) -> str:
        """A signed logout token (OIDC Back-Channel Logout 1.0, section 2.4)."""
        key = await self.keys.signer()
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_TTL,
            "jti": secrets.token_urlsafe(16),
            "sub": subject,
            "sid": sid,
            "events": {LOGOUT_EVENT: {}},
        }
        return jwt.encode({"alg": "ES256", "kid": str(key.kid), "typ": "logout+jwt"}, claims, key, ["ES256"])

    async def deliver_due_logouts(self, conn: Connection, limit: int = 50) -> dict[str, int]:
        """POSTs each due logout token; a failure is retried with backoff, then abandoned."""
        counts = {"delivered": 0, "retrying": 0, "abandoned": 0}
        due = await self._logouts.claim_due(conn, limit)
        if not due:
            return counts
        async with httpx.AsyncClient(timeout=5.0, transport=self.logout_transport) as http:
            for item in due:
                error = "client has no backchannel_logout_uri"
                if item.backchannel_logout_uri:
                    token = await self.logout_token(item.client_id, item.subject, item.sid)
                    try:
                        answer = await http.post(item.backchannel_logout_uri, data={"logout_token": token})
                        error = "" if answer.status_code in (200, 204) else f"HTTP {answer.status_code}"
                    except httpx.HTTPError as exc:
                        error = type(exc).__name__
                if not error:
                    await self._logouts.delivered(conn, item.id)
                    counts["delivered"] += 1
                    continue
                give_up = item.attempts + 1 >= LOGOUT_ATTEMPTS or not item.backchannel_logout_uri
                await self._logouts.failed(conn, item.id, error, None if give_up else 30.0 * 2**item.attempts)
                counts["abandoned" if give_up else "retrying"] += 1
                _log.warning("back-channel logout not delivered", client_id=item.client_id, error=error)
        return counts

    async def purge(self, conn: Connection) -> int:
        return await self._grants.purge_expired(conn)

    def store(self, conn: Connection, actor: Actor) -> ProtocolStore:
        return ProtocolStore(self, conn, actor)

    # -- discovery ---------------------------------------------------------------------------------------------

    def discovery(self) -> dict[str, object]:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oidc/authorize",
            "token_endpoint": f"{base}/oidc/token",
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "jwks_uri": f"{base}/oidc/jwks",
            "revocation_endpoint": f"{base}/oidc/revoke",
            "end_session_endpoint": f"{base}/oidc/logout",
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": [
                "private_key_jwt",
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256"],
            "revocation_endpoint_auth_methods_supported": [
                "private_key_jwt",
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "sub",
                "acr",
                "auth_time",
                "sid",
                *(claim for group in CLAIM_SCOPES for claim in CLAIMS_OF_SCOPE[group]),
            ],
            "acr_values_supported": list(ACR_VALUES),
            "prompt_values_supported": ["none", "login", "consent"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            "ui_locales_supported": ["zh-CN"],
        }


class ProtocolStore:
    """The storage behind Authlib's hooks for one request, on its connection (app_backend/oidc/provider.py)."""

    def __init__(self, service: OidcService, conn: Connection, actor: Actor) -> None:
        self._s = service
        self._conn = conn
        self._actor = actor
        self._grants = service._grants
        self.id_token_ttl = service.settings.oidc_access_token_ttl

    async def client(self, client_id: str) -> RegisteredClient | None:
        if not client_id or len(client_id) > 64:
            return None
        row = await self._s.active_client(self._conn, client_id)
        return None if row is None else self._s.registered(row)

    async def signing_key(self) -> ECKey:
        return await self._s.keys.signer()

    async def jwks(self) -> dict[str, list[dict[str, str]]]:
        return await self._s.keys.jwks()

    async def first_use_of_assertion(self, client_id: str, jti: str) -> bool:
        claimed = await self._s.redis.set(f"oidc:jti:{client_id}:{jti[:128]}", 1, nx=True, ex=900)
        return bool(claimed)

    async def save_code(self, code: str, client: ClientRow, user: Resident, request: OAuth2Request) -> None:
        data = request.payload.data
        # Only what was consented goes into the code (and so the grant): a claim never consented is never released.
        scope = " ".join(s for s in (request.scope or "").split() if s == "openid" or s in user.consented)
        await self._grants.save_code(
            self._conn,
            self._s.token_hash(code),
            uuid.uuid4(),
            client.client_id,
            user.resident_id,
            user.browser_session_id,
            data.get("redirect_uri") or "",
            scope,
            data.get("nonce"),
            data.get("code_challenge"),
            data.get("code_challenge_method"),
            user.level,
            user.auth_time,
            CODE_TTL,
        )

    async def claim_code(self, code: str, client: ClientRow) -> ClaimedCodeRow | None:
        digest = self._s.token_hash(code)
        row = await self._grants.claim_code(self._conn, digest, client.client_id)
        if row is not None:
            return row
        known = await self._grants.find_code(self._conn, digest)
        if known is not None and known.used_at is not None and known.client_id == client.client_id:
            # A spent code came back: someone else may hold it. Whatever it bought is revoked (RFC 6749 4.1.2),
            # with its audit record (the exchange holds no transaction of its own).
            async with self._conn.transaction():
                await self._grants.revoke_grant(self._conn, known.grant_id, "authorization code reused")
                await self._s.audit.record(
                    self._conn,
                    self._actor,
                    "oidc.code_reuse",
                    target_type="oidc_grant",
                    target_id=str(known.grant_id),
                    outcome="revoked",
                    detail={"client_id": client.client_id},
                )
        return None

    @staticmethod
    def resident_of_code(row: ClaimedCodeRow) -> Resident | None:
        """The resident a spent code was for, at the level the account has now (read when it was spent)."""
        if row.resident_level is None or not row.resident_active:
            return None
        return Resident(
            resident_id=row.resident_id,
            level=row.resident_level,
            browser_session_id=row.browser_session_id,
            auth_time=row.auth_time,
        )

    async def resident_of_grant(
        self, resident_id: uuid.UUID, browser_session_id: uuid.UUID, auth_time: dt.datetime
    ) -> Resident | None:
        person = await self._s.identity.directory.releasable(self._conn, resident_id)
        if person is None or not person.active:
            return None
        return Resident(
            resident_id=resident_id,
            level=person.level,
            browser_session_id=browser_session_id,
            auth_time=auth_time,
        )

    async def use_refresh_token(self, token: str, client: ClientRow) -> IssuedToken | None:
        if not token or len(token) > 256:
            return None
        digest = self._s.token_hash(token)
        row = await self._grants.use_refresh_token(self._conn, digest, client.client_id)
        if row is not None:
            return IssuedToken(row, "refresh_token", digest)
        known = await self._grants.find_refresh_token(self._conn, digest)
        if known is not None and known.used_or_revoked and known.client_id == client.client_id:
            # A spent refresh token came back: end the whole family, thief and owner alike (as the app's do).
            await self._grants.revoke_grant(self._conn, known.grant_id, "refresh token reused")
            await self._s.audit.record(
                self._conn,
                self._actor,
                "oidc.refresh_reuse",
                target_type="oidc_grant",
                target_id=str(known.grant_id),
                outcome="revoked",
                detail={"client_id": client.client_id},
            )
        return None

    def new_tokens(self, scope: str, include_refresh_token: bool) -> dict[str, str | int]:
        token: dict[str, str | int] = {
            "token_type": "Bearer",
            "access_token": "tzat_" + secrets.token_urlsafe(32),
            "expires_in": self._s.settings.oidc_access_token_ttl,
            "scope": scope,
        }
        if include_refresh_token:
            token["refresh_token"] = "tzrt_" + secrets.token_urlsafe(32)
        return token

    async def save_token(
        self, token: dict[str, object], request: OAuth2Request, outcome: dict[str, object]
    ) -> None:
        code = request.authorization_code
        client: ClientRow = request.client.row
        user: Resident = request.user
        grant_id = code.row.grant_id if code is not None else request.refresh_token.row.grant_id
        # The ID token (made after this hook) carries the pairwise subject for this client's sector.
        request.user = Resident(
            resident_id=user.resident_id,
            level=user.level,
            browser_session_id=user.browser_session_id,
            auth_time=user.auth_time,
            subject=self._s.subject(client.sector, user.resident_id),
        )
        refresh = token.get("refresh_token")
        scope = str(token.get("scope", ""))
        released = code is not None and "openid" in scope.split()
        await self._grants.issue(
            self._conn,
            grant_id,
            code.row if code is not None else None,
            scope,
            self._s.token_hash(str(token["access_token"])),
            self._s.settings.oidc_access_token_ttl,
            self._s.token_hash(str(refresh)) if refresh else None,
            self._s.settings.refresh_token_ttl,
            (client, ["sub", "acr"]) if released else None,
        )
        outcome.update(grant_id=grant_id, client_id=client.client_id)

    async def find_token(self, token: str, hint: str | None) -> IssuedToken | None:
        if not token or len(token) > 256:
            return None
        digest = self._s.token_hash(token)
        kinds = (
            ["refresh_token", "access_token"]
            if hint == "refresh_token"
            else ["access_token", "refresh_token"]
        )
        for kind in kinds:
            finder = (
                self._grants.find_refresh_token if kind == "refresh_token" else self._grants.find_access_token
            )
            row = await finder(self._conn, digest)
            if row is not None:
                return IssuedToken(row, kind, digest)
        return None

    async def revoke_token(self, token: IssuedToken) -> None:
        """A refresh token takes its whole grant with it (RFC 7009 2.1); an access token goes alone."""
        if token.kind == "refresh_token":
            await self._grants.revoke_grant(self._conn, token.row.grant_id, "revoked by the client")
        else:
            await self._grants.revoke_access_token(self._conn, token.token_hash)


def _invalid_token(detail: str) -> DomainError:
    return DomainError(
        401,
        "unauthenticated",
        f"authorization: {detail}",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _auth_method(reg: ClientRegistration) -> str:
    method = reg.token_endpoint_auth_method
    if reg.client_type == "public":
        if method not in (None, "none"):
            raise invalid_field(
                "token_endpoint_auth_method", "a public client has no secret: use none (PKCE)"
            )
        return "none"
    if method in (None, "none"):
        raise invalid_field(
            "token_endpoint_auth_method",
            "a confidential client needs private_key_jwt, client_secret_basic or client_secret_post",
        )
    if method == "private_key_jwt" and not reg.jwks:
        raise invalid_field("jwks", "private_key_jwt needs the client's public keys (a JWKS)")
    return method


def _check_uri(field: str, uri: str, dev: bool) -> None:
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise invalid_field(field, "must not have a fragment")
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and (loopback or dev):
        return
    raise invalid_field(field, "must be an absolute https URL (http only for loopback, or in dev)")


def _client_jwks(jwks: Mapping[str, object] | None) -> dict[str, object]:
    """The client's public keys, checked: a key set that imports, with no private parts."""
    keys = (jwks or {}).get("keys")
    if not isinstance(keys, list) or not keys or len(keys) > 5:
        raise invalid_field("jwks", 'must be a JWKS: {"keys": [1 to 5 public keys]}')
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or any(part in key for part in ("d", "p", "q", "k")):
            raise invalid_field(f"jwks.keys[{index}]", "must be a public key (no private or symmetric parts)")
        try:
            import_key(key)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise invalid_field(f"jwks.keys[{index}]", f"not a usable key ({type(exc).__name__})") from None
    try:
        KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError):
        raise invalid_field("jwks", "not a usable key set") from None
    return {"keys": keys}
