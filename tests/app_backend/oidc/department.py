"""A department's app and a resident's browser, for the one-login tests: the app is Authlib's own OAuth client
(`AsyncOAuth2Client`, not our code) speaking HTTP to the in-process server; the browser is a cookie-keeping httpx
client that reads the consent page as a person would."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.integrations.base_client.async_app import AsyncOAuth2Mixin
from authlib.integrations.base_client.async_openid import AsyncOpenIDMixin
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import UserInfo
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import ApiClient
from tests.helpers import bearer, staff

CLIENTS = "/api/v1/admin/oidc/clients"
REDIRECT = "https://dept.example.cn/callback"
LOGGED_OUT = "https://dept.example.cn/bye"
_port = iter(range(52000, 60000))


def issuer(client: ApiClient) -> str:
    return str(client.app.state.oidc.issuer)


def transport(client: ApiClient) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=client.app, client=("testclient", next(_port)))


async def department(
    client: ApiClient, admin: dict[str, Any] | None = None, name: str = ""
) -> dict[str, Any]:
    """A department (organisation) registered by an operations administrator."""
    admin = admin or await staff(client, client.app.state.services)
    answer = await client.post(
        "/api/v1/admin/organisations",
        json={"name": name or f"泰州市测试局-{uuid.uuid4().hex[:8]}", "kind": "department"},
        headers=bearer(admin),
    )
    assert answer.status_code == 201, answer.text
    return {**answer.json(), "admin": admin}


async def register(client: ApiClient, dept: dict[str, Any], **fields: Any) -> httpx.Response:
    body = {
        "organisation_id": dept["id"],
        "name": "办事大厅",
        "purpose": "核验办事人身份，办理业务",
        "client_type": "confidential",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [REDIRECT],
        "post_logout_redirect_uris": [LOGGED_OUT],
        "scopes": ["openid", "profile", "phone", "real_name", "id_number"],
        **fields,
    }
    return await client.post(CLIENTS, json=body, headers=bearer(dept["admin"]))


async def registered(client: ApiClient, dept: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    dept = dept or await department(client)
    answer = await register(client, dept, **fields)
    assert answer.status_code == 201, answer.text
    return {**answer.json(), "department": dept}


def app_for(
    client: ApiClient, reg: dict[str, Any], scope: str = "openid profile", **kwargs: Any
) -> AsyncOAuth2Client:
    """The department's app: Authlib's client with PKCE S256, as registered."""
    method = reg["client"]["token_endpoint_auth_method"]
    return AsyncOAuth2Client(
        client_id=reg["client"]["client_id"],
        client_secret=reg.get("client_secret"),
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        redirect_uri=reg["client"]["redirect_uris"][0],
        scope=scope,
        code_challenge_method="S256",
        transport=transport(client),
        **kwargs,
    )


async def discover(app: AsyncOAuth2Client, client: ApiClient) -> dict[str, Any]:
    answer = await app.request(
        "GET", issuer(client) + "/.well-known/openid-configuration", withhold_token=True
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def browser(client: ApiClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport(client), base_url=issuer(client))


def consent_form(page: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The consent form's hidden fields, and the sensitive claims it asks separately for (its checkboxes)."""
    hidden = [
        (html.unescape(k), html.unescape(v))
        for k, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    ]
    boxes = re.findall(r'<input type="checkbox" name="sensitive" value="([^"]*)">', page)
    return hidden, boxes


async def authorize(
    client: ApiClient,
    app: AsyncOAuth2Client,
    meta: dict[str, Any],
    resident: dict[str, Any],
    *,
    tick: tuple[str, ...] = (),
    decision: str = "allow",
    user_agent: httpx.AsyncClient | None = None,
    **params: Any,
) -> tuple[httpx.Response, str, str]:
    """The resident's side: open the authorization URL in the app's web-view (its bearer token), read the
    consent page and answer it. Returns the final answer (a redirect to the client), the code verifier and the
    state."""
    verifier = generate_token(48)
    url, state = app.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, **params
    )
    agent = user_agent or browser(client)
    first = await agent.get(url, headers=bearer(resident))
    if first.status_code != 200:
        return first, verifier, state
    hidden, boxes = consent_form(first.text)
    fields = [*hidden, ("decision", decision), *(("sensitive", c) for c in tick if c in boxes)]
    answer = await agent.post(
        "/oidc/authorize",
        content=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return answer, verifier, state


async def log_in(
    client: ApiClient,
    app: AsyncOAuth2Client,
    meta: dict[str, Any],
    resident: dict[str, Any],
    **kwargs: Any,
) -> dict[str, Any]:
    """authorize → consent → token, as the department's app does it; returns the token."""
    answer, verifier, _ = await authorize(client, app, meta, resident, **kwargs)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(app.redirect_uri) and "code=" in location, location
    token = await app.fetch_token(
        meta["token_endpoint"], authorization_response=location, code_verifier=verifier
    )
    return dict(token)


async def verified_claims(app: AsyncOAuth2Client, meta: dict[str, Any], id_token: str) -> dict[str, Any]:
    """The ID token's claims, verified with joserfc against the published JWKS (ES256 only)."""
    keys = KeySet.import_key_set((await app.request("GET", meta["jwks_uri"], withhold_token=True)).json())
    decoded = jwt.decode(id_token, keys, algorithms=["ES256"])
    assert decoded.header["alg"] == "ES256"
    return dict(decoded.claims)


async def open_authorization(
    client: ApiClient, app: AsyncOAuth2Client, meta: dict[str, Any], resident: dict[str, Any], **params: Any
) -> httpx.Response:
    """Only the first step: what the resident's web-view shows for the authorization URL."""
    url, _ = app.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=generate_token(48), **params
    )
    return await browser(client).get(url, headers=bearer(resident))


class _RelyingParty(AsyncOAuth2Mixin, AsyncOpenIDMixin):
    """Authlib's OpenID client app (what its Starlette integration builds, without a web framework): it loads
    the discovery document and the JWKS and validates ID tokens as a department's app does."""

    client_cls = AsyncOAuth2Client


async def parse_id_token(
    client: ApiClient, reg: dict[str, Any], token: dict[str, Any], nonce: str | None = None
) -> UserInfo:
    """The ID token of a token response, checked by Authlib's client: ES256 against the published JWKS, `iss`
    the discovery document's issuer, `nonce` the one sent (none expected without), `at_hash` the token's access
    token, and the time claims."""
    party = _RelyingParty(
        None,
        client_id=reg["client"]["client_id"],
        client_secret=reg.get("client_secret"),
        server_metadata_url=issuer(client) + "/.well-known/openid-configuration",
        client_kwargs={"transport": transport(client)},
    )
    claims: UserInfo = await party.parse_id_token(token, nonce=nonce)
    assert claims is not None, "no id_token in the token response"
    return claims
