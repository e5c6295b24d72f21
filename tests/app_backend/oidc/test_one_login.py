"""A department's app logs a resident in through the one-login provider, driven by Authlib's own OAuth client:
discovery → authorize (the resident's session) → consent → token → userinfo → refresh → logout."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.integrations.base_client import OAuthError
from authlib.oidc.discovery import OpenIDProviderMetadata

from tests.app_backend.oidc.department import (
    LOGGED_OUT,
    app_for,
    authorize,
    browser,
    discover,
    issuer,
    log_in,
    registered,
    verified_claims,
)
from tests.conftest import ApiClient
from tests.helpers import bearer, login, otp_from_outbox, random_phone, real_named


async def test_a_department_app_logs_a_resident_in_and_out(client: ApiClient, services: object) -> None:
    reg = await registered(client)
    resident = await real_named(client, client.app.state.services, name="周瑜")
    async with app_for(client, reg, scope="openid profile") as app:
        meta = await discover(app, client)
        # Authlib's own check of the discovery document, but for its demand that RS256 be offered: ID tokens are
        # ES256 only, by design (docs/decisions/0022-one-login-oidc-provider.md).
        assert meta["id_token_signing_alg_values_supported"] == ["ES256"]
        OpenIDProviderMetadata(
            {**meta, "id_token_signing_alg_values_supported": ["ES256", "RS256"]}
        ).validate()
        assert meta["issuer"] == issuer(client)
        assert meta["subject_types_supported"] == ["pairwise"]
        assert meta["code_challenge_methods_supported"] == ["S256"]

        token = await log_in(client, app, meta, resident, nonce="n-0S6_WzA2Mj")
        assert token["token_type"] == "Bearer" and token["expires_in"] <= 600
        claims = await verified_claims(app, meta, token["id_token"])
        assert claims["iss"] == issuer(client) and claims["aud"] == reg["client"]["client_id"]
        assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["acr"] == "L2"
        assert claims["sub"] != resident["resident_id"] and "name" not in claims  # no personal data in it

        info = await app.get(meta["userinfo_endpoint"])
        assert info.status_code == 200, info.text
        assert info.json() == {"sub": claims["sub"], "name": "周*"}  # masked, as profile promises

        first_refresh = token["refresh_token"]
        renewed = await app.refresh_token(meta["token_endpoint"])
        assert renewed["refresh_token"] != first_refresh and renewed["access_token"] != token["access_token"]
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 200

        agent = browser(client)
        # The browser still holds the provider's session cookie from the consent page.
        answer, _, _ = await authorize(client, app, meta, resident, user_agent=agent)
        assert (
            answer.status_code == 302 and "code=" in answer.headers["location"]
        )  # consented before: no page
        gone = await agent.get(
            meta["end_session_endpoint"],
            params={
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": LOGGED_OUT,
                "state": "bye-1",
            },
        )
        assert gone.status_code == 302, gone.text
        assert gone.headers["location"] == f"{LOGGED_OUT}?state=bye-1"
        # The session's tokens are ended with it.
        refused = await app.get(meta["userinfo_endpoint"])
        assert refused.status_code == 401
        with pytest.raises(OAuthError) as refused_refresh:
            await app.refresh_token(meta["token_endpoint"])
        assert refused_refresh.value.error == "invalid_grant"


async def test_the_resident_logs_in_on_the_h5_page_when_no_session_is_given(client: ApiClient) -> None:
    reg = await registered(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        url, _ = app.create_authorization_url(meta["authorization_endpoint"], code_verifier="v" * 50)
        agent = browser(client)
        to_login = await agent.get(url)
        assert to_login.status_code == 302 and to_login.headers["location"].startswith("/oidc/login?next=")
        page = await agent.get(to_login.headers["location"])
        assert page.status_code == 200 and "登录泰州通" in page.text
        next_path = parse_qs(urlsplit(to_login.headers["location"]).query)["next"][0]
        phone = random_phone()
        sent = await agent.post("/oidc/login/otp", data={"phone": phone, "next": next_path})
        assert sent.status_code == 200 and "验证码已发送" in sent.text
        code = await otp_from_outbox(client, phone)
        wrong = await agent.post("/oidc/login", data={"phone": phone, "otp": "12", "next": next_path})
        assert wrong.status_code == 400 and "otp: must be 6 digits" in wrong.text
        done = await agent.post("/oidc/login", data={"phone": phone, "otp": code, "next": next_path})
        assert done.status_code == 303 and done.headers["location"] == next_path
        consent = await agent.get(next_path)
        assert consent.status_code == 200 and "授权登录" in consent.text


async def test_the_app_session_is_a_bearer_token_and_a_bad_one_is_refused(client: ApiClient) -> None:
    reg = await registered(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        url, _ = app.create_authorization_url(meta["authorization_endpoint"], code_verifier="v" * 50)
        answer = await browser(client).get(url, headers={"Authorization": "Bearer not-a-token"})
        assert answer.status_code == 401
        assert answer.headers["content-type"].startswith("application/problem+json")


async def test_id_tokens_are_short_lived_and_name_the_level(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident)
        claims = await verified_claims(app, meta, token["id_token"])
        assert claims["acr"] == "L1"
        assert claims["exp"] - time.time() <= 600
        assert claims["sid"] and claims["auth_time"] <= time.time() + 1
        me = await client.get("/api/v1/me", headers=bearer(resident))
        assert me.json()["level"] == "L1"
