"""What the provider refuses, with the OAuth error a department's app expects: PKCE mismatches and `plain`, wrong
redirect URIs, reused codes (and what they bought), replayed refresh tokens (and their family)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from tests.app_backend.oidc.department import (
    REDIRECT,
    app_for,
    authorize,
    browser,
    discover,
    log_in,
    registered,
)
from tests.conftest import ApiClient
from tests.helpers import bearer, login, set_resident_status


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def _code(client: ApiClient, reg: dict, resident: dict) -> tuple[str, str, dict]:
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        answer, verifier, _ = await authorize(client, app, meta, resident)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"], verifier, meta


async def test_a_code_without_its_verifier_or_with_another_is_refused(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    location, _, meta = await _code(client, reg, resident)
    async with app_for(client, reg) as app:
        with pytest.raises(OAuthError) as wrong:
            await app.fetch_token(
                meta["token_endpoint"], authorization_response=location, code_verifier=generate_token(48)
            )
        assert wrong.value.error == "invalid_grant"
    location, _, meta = await _code(client, reg, resident)
    async with app_for(client, reg) as app:
        with pytest.raises(OAuthError) as missing:
            await app.fetch_token(meta["token_endpoint"], authorization_response=location)
        assert missing.value.error == "invalid_request"


async def test_plain_pkce_and_no_pkce_are_refused_at_the_authorization_endpoint(client: ApiClient) -> None:
    reg = await registered(client, client_type="public", token_endpoint_auth_method="none")
    assert reg["client_secret"] is None
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        verifier = generate_token(48)
        for extra in (
            {"code_challenge": verifier, "code_challenge_method": "plain"},
            {"code_challenge": create_s256_code_challenge(verifier)},  # no method means plain (RFC 7636)
            {},
        ):
            url, state = app.create_authorization_url(meta["authorization_endpoint"], **extra)
            answer = await browser(client).get(url, headers=bearer(resident))
            assert answer.status_code == 302, answer.text
            back = _query(answer.headers["location"])
            assert back["error"] == "invalid_request" and back["state"] == state, back
            assert "S256" in back["error_description"] or "PKCE" in back["error_description"]
        # With S256 the same public client logs in, with no secret at all.
        token = await log_in(client, app, meta, resident)
        assert token["access_token"] and token["refresh_token"]


async def test_a_redirect_uri_that_is_not_registered_exactly_is_never_redirected_to(
    client: ApiClient,
) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        for wrong in (
            REDIRECT + "/",
            REDIRECT + "?x=1",
            REDIRECT.replace("https", "http"),
            "https://evil.example/cb",
        ):
            url, _ = app.create_authorization_url(
                meta["authorization_endpoint"], redirect_uri=wrong, code_verifier=generate_token(48)
            )
            answer = await browser(client).get(url, headers=bearer(resident))
            assert answer.status_code == 400, wrong
            assert "location" not in answer.headers
            assert "invalid_request" in answer.text and "Redirect URI" in answer.text
        unknown = await browser(client).get(
            meta["authorization_endpoint"], params={"client_id": "tzo_nobody", "response_type": "code"}
        )
        assert unknown.status_code == 400 and "invalid_client" in unknown.text


async def test_a_token_request_with_another_redirect_uri_is_refused(client: ApiClient) -> None:
    reg = await registered(client, redirect_uris=[REDIRECT, REDIRECT + "/2"])
    resident = await login(client)
    location, verifier, meta = await _code(client, reg, resident)
    async with app_for(client, reg) as app:
        app.redirect_uri = REDIRECT + "/2"
        with pytest.raises(OAuthError) as refused:
            await app.fetch_token(
                meta["token_endpoint"], authorization_response=location, code_verifier=verifier
            )
        assert refused.value.error == "invalid_grant"


async def test_a_reused_code_is_refused_and_what_it_bought_is_revoked(client: ApiClient, db: object) -> None:
    reg = await registered(client)
    resident = await login(client)
    location, verifier, meta = await _code(client, reg, resident)
    async with app_for(client, reg) as app:
        first = await app.fetch_token(
            meta["token_endpoint"], authorization_response=location, code_verifier=verifier
        )
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 200
    async with app_for(client, reg) as thief:
        with pytest.raises(OAuthError) as refused:
            await thief.fetch_token(
                meta["token_endpoint"], authorization_response=location, code_verifier=verifier
            )
        assert refused.value.error == "invalid_grant"
    async with app_for(client, reg, token=dict(first)) as app:
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 401
        with pytest.raises(OAuthError) as renewal:
            await app.refresh_token(meta["token_endpoint"])
        assert renewal.value.error == "invalid_grant"


async def test_a_code_presented_twice_at_once_buys_one_token(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    location, verifier, meta = await _code(client, reg, resident)
    code = _query(location)["code"]
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    auth = (reg["client"]["client_id"], reg["client_secret"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app)) as http:
        answers = await asyncio.gather(
            *(http.post(meta["token_endpoint"], data=body, auth=auth) for _ in range(4))
        )
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400]
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)


async def test_a_replayed_refresh_token_revokes_the_family(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident)
        stolen = token["refresh_token"]
        renewed = await app.refresh_token(meta["token_endpoint"])
    async with app_for(client, reg) as thief:
        with pytest.raises(OAuthError) as replay:
            await thief.refresh_token(meta["token_endpoint"], refresh_token=stolen)
        assert replay.value.error == "invalid_grant"
    async with app_for(client, reg, token=dict(renewed)) as owner:
        assert (await owner.get(meta["userinfo_endpoint"])).status_code == 401
        with pytest.raises(OAuthError):
            await owner.refresh_token(meta["token_endpoint"])


async def test_a_client_is_authenticated_at_the_token_endpoint(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    location, verifier, meta = await _code(client, reg, resident)
    async with app_for(client, {**reg, "client_secret": "tzos_wrong"}) as app:
        with pytest.raises(OAuthError) as refused:
            await app.fetch_token(
                meta["token_endpoint"], authorization_response=location, code_verifier=verifier
            )
        assert refused.value.error == "invalid_client"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app)) as http:
        nonsense = await http.post(meta["token_endpoint"], data={"grant_type": "password"})
        assert nonsense.status_code == 400 and nonsense.json()["error"] == "unsupported_grant_type"
        empty = await http.post(
            meta["token_endpoint"], content=b"{}", headers={"Content-Type": "application/json"}
        )
        assert empty.status_code == 400 and "error" in empty.json()


async def test_malformed_protocol_requests_are_4xx_never_500(client: ApiClient) -> None:
    reg = await registered(client)
    client_id = reg["client"]["client_id"]
    auth = (client_id, reg["client_secret"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=client.app), base_url="http://127.0.0.1:8000"
    ) as http:
        answers = [
            await http.get("/oidc/authorize"),
            await http.get("/oidc/authorize", params={"client_id": "x" * 500, "response_type": "code"}),
            await http.get("/oidc/authorize", params={"client_id": client_id, "response_type": "token"}),
            await http.get(
                "/oidc/authorize", params={"client_id": [client_id, client_id], "response_type": "code"}
            ),
            await http.post("/oidc/authorize", content=b"\xff\xfe", headers={"Content-Type": "text/plain"}),
            await http.post(
                "/oidc/token", data={"grant_type": "authorization_code", "code": "x" * 300}, auth=auth
            ),
            await http.post(
                "/oidc/token", data={"grant_type": "refresh_token", "refresh_token": "r" * 1000}, auth=auth
            ),
            await http.post(
                "/oidc/token", headers={"Authorization": "Basic !!!notbase64"}, data={"grant_type": "x"}
            ),
            await http.post(
                "/oidc/token",
                data={
                    "grant_type": "authorization_code",
                    "code": "c",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": "a.b.c",
                },
            ),
            await http.get("/oidc/userinfo", headers={"Authorization": "Bearer " + "t" * 2000}),
            await http.get("/oidc/userinfo"),
            await http.post("/oidc/revoke", data={"token": ""}, auth=auth),
            await http.get("/oidc/logout", params={"id_token_hint": "a.b.c"}),
            await http.get("/oidc/logout", params={"id_token_hint": "not a token at all"}),
            await http.get("/oidc/login", params={"next": "https://evil.example/"}),
            await http.post("/oidc/login/otp", data={"phone": "not-a-phone"}),
            await http.post("/oidc/login", data={"phone": "13800000009", "otp": "000000"}),
        ]
    statuses = [a.status_code for a in answers]
    assert all(s < 500 for s in statuses), statuses
    assert all(s >= 400 for s in statuses if s not in (200, 302)), statuses
    assert (
        "evil.example" not in answers[-3].text
    )  # the log-in page returns only to the authorization endpoint
    assert answers[-2].status_code == 400 and "phone" in answers[-2].text


async def test_a_code_buys_no_token_once_its_resident_is_blocked(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    location, verifier, meta = await _code(client, reg, resident)
    await set_resident_status(client, client.app.state.services, resident["resident_id"], "blocked")
    async with app_for(client, reg) as app:
        with pytest.raises(OAuthError) as refused:
            await app.fetch_token(
                meta["token_endpoint"], authorization_response=location, code_verifier=verifier
            )
        assert refused.value.error == "invalid_grant"
