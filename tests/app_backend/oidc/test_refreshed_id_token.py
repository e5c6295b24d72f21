"""A refresh of an `openid` grant answers a new ID token too (OIDC Core 12.2): the same pairwise `sub`, `iss` and
`aud`, `auth_time` of the original authentication, no `nonce`; checked by Authlib's client as a department's app
checks it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.app_backend.oidc.department import (
    app_for,
    discover,
    issuer,
    log_in,
    parse_id_token,
    registered,
    verified_claims,
)
from tests.conftest import ApiClient
from tests.helpers import login, real_named


async def test_a_refresh_answers_a_new_id_token_for_the_same_authentication(
    client: ApiClient, db: Any
) -> None:
    reg = await registered(client)
    resident = await real_named(client, client.app.state.services)
    async with app_for(client, reg, scope="openid profile") as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident, nonce="n-refresh-1")
        original = await parse_id_token(client, reg, token, nonce="n-refresh-1")
        # The session authenticated an hour ago, as far as the grant knows: a new ID token must say so, not now.
        await db.execute(
            "UPDATE oidc.grants SET auth_time = auth_time - interval '1 hour' WHERE browser_session_id = $1",
            uuid.UUID(original["sid"]),
        )
        before = time.time()
        renewed = await app.refresh_token(meta["token_endpoint"])
        assert renewed["refresh_token"] != token["refresh_token"] and "id_token" in renewed
        claims = await parse_id_token(client, reg, renewed)  # no nonce asked, none given
        assert "nonce" not in claims
        assert claims["sub"] == original["sub"] and claims["iss"] == original["iss"] == issuer(client)
        assert claims["aud"] == original["aud"] == reg["client"]["client_id"]
        assert claims["auth_time"] == original["auth_time"] - 3600
        assert claims["acr"] == original["acr"] == "L2" and claims["sid"] == original["sid"]
        assert claims["iat"] >= int(before) and claims["exp"] - claims["iat"] <= 600
        assert renewed["id_token"] != token["id_token"]
        # Verified on its own too (ES256, a key of the JWKS); and each refresh renews it.
        assert (await verified_claims(app, meta, renewed["id_token"]))["sub"] == original["sub"]
        again = await app.refresh_token(meta["token_endpoint"])
        third = await parse_id_token(client, reg, again)
        assert third["sub"] == original["sub"] and third["auth_time"] == claims["auth_time"]
        # The refreshed ID token releases nothing the login did not: one id_token release, at login.
        releases = await db.fetch(
            "SELECT via FROM oidc.releases WHERE client_id = $1 ORDER BY id", reg["client"]["client_id"]
        )
        assert [r["via"] for r in releases] == ["id_token"]


async def test_a_refresh_without_openid_in_its_scope_answers_no_id_token(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg, scope="openid profile") as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident)
        assert "id_token" in token
        # A refresh narrowed to scopes without openid is plain OAuth: no ID token.
        narrowed = await app.refresh_token(meta["token_endpoint"], scope="profile")
        assert "id_token" not in narrowed and narrowed["scope"] == "profile"
