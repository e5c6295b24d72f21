"""The protocol, from Authlib: its authorization server, authorization-code grant with PKCE (S256 only) and the
OpenID extension, refresh-token grant, `private_key_jwt` client authentication, revocation (RFC 7009) and
RP-initiated logout. What is ours is the storage behind Authlib's hooks and the rules of this city (pairwise
subjects, levels as `acr`, consented claims only).

Authlib is synchronous and our storage is asyncpg: each protocol step runs in a greenlet on the event loop's own
thread (`run_protocol`, app_backend/kernel/bridge.py), and each hook waits for the coroutine it needs
(`Exchange.wait`), which the request's task awaits on the request's own connection and transaction. No
Litestar here: the HTTP side is `app_backend/oidc/adapter.py`."""

from __future__ import annotations

import contextvars
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6749.models import AuthorizationCodeMixin, TokenMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode, OpenIDToken
from authlib.oidc.rpinitiated import EndSessionEndpoint
from joserfc.jwk import ECKey, KeySet

from app_backend.kernel.bridge import run_synchronously, wait_for
from app_backend.oidc.repository import ClaimedCodeRow, ClientRow, TokenGrantRow
from app_backend.oidc.schemas import SCOPES

if TYPE_CHECKING:
    from app_backend.oidc.service import ProtocolStore

T = TypeVar("T")

# Client authentication methods the token and revocation endpoints accept; each client is registered with one.
# `none` last: a confidential client's request that also names its client_id is not mistaken for a public one.
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


class RegisteredClient(ClientMixin):
    """A registered client as Authlib asks about it."""

    def __init__(self, row: ClientRow, secret_matches: Callable[[str], bool]) -> None:
        self.row = row
        self.client_id = row.client_id
        self._secret_matches = secret_matches
        # Read by Authlib's RP-initiated logout.
        self.client_metadata = {"post_logout_redirect_uris": list(row.post_logout_redirect_uris)}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # always named in the request, and matched exactly

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.row.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self._secret_matches(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.row.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass(frozen=True)
class Resident:
    """The resident a grant is for, as Authlib passes it around (`request.user`)."""

    resident_id: uuid.UUID
    level: int
    browser_session_id: uuid.UUID
    auth_time: dt.datetime
    # What the resident consented to release to this client (claim groups, SCOPES minus openid).
    consented: frozenset[str] = frozenset()
    # The pairwise subject for the client at hand (set at the token endpoint).
    subject: str = ""


class IssuedCode(AuthorizationCodeMixin):
    def __init__(self, row: ClaimedCodeRow) -> None:
        self.row = row

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> str:
        return f"L{self.row.acr}"

    def get_amr(self) -> None:
        return None


class IssuedToken(TokenMixin):
    """A refresh or access token as stored, with its grant."""

    def __init__(self, row: TokenGrantRow, kind: str, token_hash: bytes) -> None:
        self.row = row
        self.kind = kind
        self.token_hash = token_hash

    def check_client(self, client: RegisteredClient) -> bool:
        return self.row.client_id == client.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.row.expires_at.timestamp() - time.time()))

    def is_expired(self) -> bool:
        return self.row.expires_at.timestamp() <= time.time()

    def is_revoked(self) -> bool:
        return self.row.used_or_revoked or self.row.grant_revoked


# --- running Authlib -------------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One protocol request: the store the hooks use and the loop they wait on."""

    store: ProtocolStore
    issuer: str
    token_endpoint: str
    # Set by the hooks for the HTTP side: the grant and resident a token response was for.
    outcome: dict[str, Any] = field(default_factory=dict)

    def wait(self, work: Awaitable[T]) -> T:
        """Called from a protocol step: the request's task awaits `work` and the step goes on with its result."""
        return wait_for(work)


_EXCHANGE: contextvars.ContextVar[Exchange] = contextvars.ContextVar("oidc_exchange")


def exchange() -> Exchange:
    return _EXCHANGE.get()


async def run_protocol(ex: Exchange, step: Callable[[Provider], T]) -> T:
    """Runs one Authlib step, with a provider for this exchange, on this thread (no worker thread: each hook's
    statement would cost two hops between threads, most of an exchange's time)."""

    def in_step() -> T:
        _EXCHANGE.set(ex)
        return step(Provider(ex))

    return await run_synchronously(in_step)


# --- Authlib's hooks -------------------------------------------------------------------------------------------


class S256Challenge(CodeChallenge):
    """PKCE with S256 for every client, and `plain` refused: a code is useless without its verifier."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE (S256) is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Unsupported 'code_challenge_method': only S256 is accepted.")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: IssuedCode) -> str | None:
        return authorization_code.row.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: IssuedCode) -> str | None:
        return authorization_code.row.code_challenge_method


class CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        ex = exchange()
        ex.wait(ex.store.save_code(code, request.client.row, request.user, request))

    def query_authorization_code(self, code: str, client: RegisteredClient) -> IssuedCode | None:
        ex = exchange()
        row = ex.wait(ex.store.claim_code(code, client.row))
        return None if row is None else IssuedCode(row)

    def delete_authorization_code(self, authorization_code: IssuedCode) -> None:
        """Nothing: a code is spent the moment it is presented (`claim_code`)."""

    def authenticate_user(self, authorization_code: IssuedCode) -> Resident | None:
        return exchange().store.resident_of_code(authorization_code.row)


class RefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh token is used once

    def authenticate_refresh_token(self, refresh_token: str) -> IssuedToken | None:
        ex = exchange()
        return ex.wait(ex.store.use_refresh_token(refresh_token, self.request.client.row))

    def authenticate_user(self, refresh_token: IssuedToken) -> Resident | None:
        ex = exchange()
        row = refresh_token.row
        return ex.wait(ex.store.resident_of_grant(row.resident_id, row.browser_session_id, row.auth_time))

    def revoke_old_credential(self, refresh_token: IssuedToken) -> None:
        """Nothing: the token was spent when it was presented (`use_refresh_token`)."""


class SignedIdToken(OpenIDToken):
    """ID tokens: ES256 with the key signing now, the pairwise subject, `acr` the level, `sid` the browser
    session (for back-channel logout). No personal claims: those go through userinfo, each release recorded."""

    def get_client_algorithm(self, client: RegisteredClient) -> str:
        return "ES256"

    def resolve_client_private_key(self, client: RegisteredClient) -> ECKey:
        ex = exchange()
        if "signing_key" not in ex.outcome:  # asked twice per token (header, then signature): one hop
            ex.outcome["signing_key"] = ex.wait(ex.store.signing_key())
        key: ECKey = ex.outcome["signing_key"]
        return key

    def get_encode_header(self, client: RegisteredClient) -> dict[str, str]:
        key = self.resolve_client_private_key(client)
        return {"alg": "ES256", "kid": str(key.kid), "typ": "JWT"}

    def get_client_claims(self, client: RegisteredClient) -> dict[str, Any]:
        ex = exchange()
        now = int(time.time())
        return {"iss": ex.issuer, "aud": client.client_id, "iat": now, "exp": now + ex.store.id_token_ttl}

    def generate_user_info(self, user: Resident, scope: str) -> dict[str, Any]:
        return {"sub": user.subject, "sid": str(user.browser_session_id)}


class IdToken(SignedIdToken, OpenIDCode):
    """The ID token of a code exchange: `auth_time`, `acr` and `nonce` from the code (Authlib's OpenIDCode)."""

    def __init__(self) -> None:
        super().__init__(require_nonce=False)

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False  # a nonce rides on a single-use code; the client checks it against its own


class RefreshedIdToken(SignedIdToken):
    """A new ID token with a refresh of an `openid` grant (OIDC Core 12.2): the same `iss`, `sub` and `aud`,
    `auth_time` of the original authentication, no `nonce`; `acr` the grant's, never above the account's level
    now (a resident demoted since is not re-asserted at the old level)."""

    def get_compatible_claims(self, request: OAuth2Request) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_compatible_claims(request)
        user: Resident = request.user
        grant: TokenGrantRow = request.refresh_token.row
        claims["auth_time"] = int(user.auth_time.timestamp())
        claims["acr"] = f"L{min(grant.acr, user.level)}"
        return claims


class ClientAssertion(JWTBearerClientAssertion):
    """`private_key_jwt` (RFC 7523): the client signs an assertion with a key of its registered JWKS."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def get_audiences(self) -> list[str]:
        ex = exchange()
        return [ex.token_endpoint, ex.issuer]

    def resolve_client_public_key(self, client: RegisteredClient) -> KeySet:
        return KeySet.import_key_set(cast(Any, client.row.jwks or {"keys": []}))

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        ex = exchange()
        return ex.wait(ex.store.first_use_of_assertion(str(claims["sub"]), str(jti)))


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        ex = exchange()
        return ex.wait(ex.store.find_token(token_string, token_type_hint))

    def revoke_token(self, token: IssuedToken, request: OAuth2Request) -> None:
        ex = exchange()
        ex.wait(ex.store.revoke_token(token))


class EndSession(EndSessionEndpoint):
    """RP-initiated logout: Authlib checks the id_token_hint against our JWKS and the post-logout redirect
    against the client's registration; ending the session is done by the HTTP side after validation."""

    def get_server_jwks(self) -> KeySet:
        ex = exchange()
        return KeySet.import_key_set(cast(Any, ex.wait(ex.store.jwks())))

    def get_algorithms(self) -> list[str]:
        return ["ES256"]

    def end_session(self, end_session_request: Any) -> None:
        """Done by the caller, asynchronously (OidcService.end_session)."""


class Provider(AuthorizationServer):
    """Authlib's authorization server for one exchange."""

    def __init__(self, ex: Exchange) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.ex = ex
        self.register_grant(CodeGrant, [S256Challenge(required=True), IdToken()])
        self.register_grant(RefreshGrant, [RefreshedIdToken()])
        self.register_token_generator("default", self._tokens)
        self.register_client_auth_method(ClientAssertion.CLIENT_AUTH_METHOD, ClientAssertion())
        self.register_endpoint(Revocation)
        self.register_endpoint(EndSession)

    def query_client(self, client_id: str) -> RegisteredClient | None:
        return self.ex.wait(self.ex.store.client(client_id))

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.ex.wait(self.ex.store.save_token(token, request, self.ex.outcome))

    def _tokens(
        self,
        grant_type: str,
        client: RegisteredClient,
        user: Resident | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        return self.ex.store.new_tokens(scope or "", include_refresh_token)

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # the HTTP side built it (adapter.py)

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals: what follows a step is done by the HTTP side with the step's outcome."""
