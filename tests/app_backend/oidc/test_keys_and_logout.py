"""ID-token keys rotate like the code keys (published before they sign, kept after); clients revoke tokens (RFC
7009) and authenticate with private_key_jwt; a logout is delivered to each department's back-channel, signed,
through the job, and retried when the department does not answer."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client import OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from app_backend.oidc.service import LOGOUT_EVENT, OidcService
from app_backend.oidc.tasks import deliver_backchannel_logouts, stage_due_id_token_key
from tests.app_backend.oidc.department import (
    LOGGED_OUT,
    app_for,
    browser,
    discover,
    issuer,
    log_in,
    registered,
    transport,
    verified_claims,
)
from tests.conftest import ApiClient
from tests.helpers import SetClock, login


async def test_a_rotated_key_is_published_before_it_signs_and_old_tokens_still_verify(
    client: ApiClient,
) -> None:
    oidc: OidcService = client.app.state.oidc
    keys = oidc.keys
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        before = await log_in(client, app, meta, resident)
        old_kid = jwt.decode(before["id_token"], KeySet.import_key_set(await keys.jwks())).header["kid"]
        saved = keys.clock
        clock = SetClock(dt.datetime.now(dt.UTC))
        keys.clock = clock
        try:
            async with oidc.pool.acquire() as conn, conn.transaction():
                change = await keys.stage(conn)
            keys.invalidate()
            published = {
                k["kid"]
                for k in (await app.request("GET", meta["jwks_uri"], withhold_token=True)).json()["keys"]
            }
            assert {old_kid, change.key.kid} <= published  # staged: published, not yet signing
            during = await log_in(client, app, meta, resident)
            assert (
                jwt.decode(during["id_token"], KeySet.import_key_set(await keys.jwks())).header["kid"]
                == old_kid
            )
            clock.set(change.key.signs_from + dt.timedelta(seconds=1))
            keys.invalidate()
            after = await log_in(client, app, meta, resident)
            assert (await verified_claims(app, meta, after["id_token"]))["aud"] == reg["client"]["client_id"]
            new_kid = jwt.decode(after["id_token"], KeySet.import_key_set(await keys.jwks())).header["kid"]
            assert new_kid == change.key.kid != old_kid
            # The token signed before the rotation still verifies against the published set, until retire_at.
            assert await verified_claims(app, meta, before["id_token"])
            assert change.previous is not None and change.previous.retire_at is not None
            clock.set(change.previous.retire_at + dt.timedelta(seconds=1))
            keys.invalidate()
            assert old_kid not in {k["kid"] for k in (await keys.jwks())["keys"]}
        finally:
            keys.clock = saved
            async with oidc.pool.acquire() as conn, conn.transaction():
                await keys.rotate_now(conn)  # leave a key that signs now for the other tests
            keys.invalidate()


async def test_the_cron_job_stages_a_key_once_it_is_due(client: ApiClient) -> None:
    oidc: OidcService = client.app.state.oidc
    platform = client.app.state.platform
    saved = oidc.keys.clock
    try:
        oidc.keys.clock = SetClock(dt.datetime.now(dt.UTC))
        assert (
            await stage_due_id_token_key({"platform": platform}) is None
        )  # signing for less than the period
        oidc.keys.clock = SetClock(
            dt.datetime.now(dt.UTC) + dt.timedelta(days=platform.settings.key_rotation_days)
        )
        staged = await stage_due_id_token_key({"platform": platform})
        assert staged is not None and staged in {k["kid"] for k in (await oidc.keys.jwks())["keys"]}
        assert await stage_due_id_token_key({"platform": platform}) is None  # one successor, not two
    finally:
        oidc.keys.clock = saved
        async with oidc.pool.acquire() as conn, conn.transaction():
            await oidc.keys.rotate_now(conn)
        oidc.keys.invalidate()


async def test_clients_revoke_their_tokens(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident)
        answer = await app.revoke_token(meta["revocation_endpoint"], token=token["access_token"])
        assert answer.status_code == 200
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 401
        renewed = await app.refresh_token(meta["token_endpoint"])  # revoking an access token leaves the grant
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 200
        answer = await app.revoke_token(
            meta["revocation_endpoint"], token=renewed["refresh_token"], token_type_hint="refresh_token"
        )
        assert answer.status_code == 200
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 401  # the family went with it
        unknown = await app.revoke_token(meta["revocation_endpoint"], token="tzrt_never-issued")
        assert unknown.status_code == 200  # RFC 7009: nothing to say about a token we do not know
    other = await registered(client)
    async with app_for(client, reg) as app:
        token = await log_in(client, app, meta, resident)
    async with app_for(client, other) as stranger:
        refused = await stranger.revoke_token(meta["revocation_endpoint"], token=token["refresh_token"])
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_a_confidential_client_authenticates_with_private_key_jwt(client: ApiClient) -> None:
    key = ECKey.generate_key("P-256", private=True, parameters={"kid": "dept-1"})
    reg = await registered(
        client,
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    assert reg["client_secret"] is None
    resident = await login(client)
    token_endpoint = issuer(client) + "/oidc/token"
    app = app_for(client, {**reg, "client_secret": key})
    app.register_client_auth_method(PrivateKeyJWT(token_endpoint, alg="ES256"))
    async with app:
        meta = await discover(app, client)
        token = await log_in(client, app, meta, resident)
        assert (await app.get(meta["userinfo_endpoint"])).status_code == 200
        assert token["refresh_token"]
    stranger = ECKey.generate_key("P-256", private=True, parameters={"kid": "dept-1"})
    forged = app_for(client, {**reg, "client_secret": stranger})
    forged.register_client_auth_method(PrivateKeyJWT(token_endpoint, alg="ES256"))
    async with forged:
        with pytest.raises(OAuthError) as refused:
            await forged.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
        assert refused.value.error == "invalid_client"


class Department:
    """The department's back-channel logout receiver: it records what it is sent, or fails on request."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.failing = False

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if self.failing:
                return httpx.Response(503)
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            self.received.append(httpx.QueryParams(request.content.decode())["logout_token"])
            return httpx.Response(200)

        return httpx.MockTransport(handle)


async def _run_job(client: ApiClient) -> dict[str, int]:
    return await deliver_backchannel_logouts({"platform": client.app.state.platform})


async def test_logout_is_delivered_to_each_department_signed_and_retried(client: ApiClient, db: Any) -> None:
    oidc: OidcService = client.app.state.oidc
    receiver = Department()
    oidc.logout_transport = receiver.transport()
    try:
        first = await registered(client, backchannel_logout_uri="https://dept.example.cn/backchannel")
        second = await registered(client, backchannel_logout_uri="https://other.example.cn/backchannel")
        quiet = await registered(client)  # no back-channel: nothing owed
        resident = await login(client)
        agent = browser(client)
        tokens: dict[str, Any] = {}
        for name, reg in (("first", first), ("second", second), ("quiet", quiet)):
            async with app_for(client, reg) as app:
                meta = await discover(app, client)
                tokens[name] = await log_in(client, app, meta, resident, user_agent=agent)
        receiver.failing = True
        gone = await agent.get(
            meta["end_session_endpoint"],
            params={"id_token_hint": tokens["quiet"]["id_token"], "post_logout_redirect_uri": LOGGED_OUT},
        )
        assert gone.status_code == 302 and gone.headers["location"] == LOGGED_OUT
        assert (await _run_job(client))["retrying"] == 2
        receiver.failing = False
        await db.execute(
            "UPDATE oidc.logout_deliveries SET next_attempt_at = now() WHERE delivered_at IS NULL"
        )  # as if the back-off had passed
        assert (await _run_job(client))["delivered"] >= 2
        assert (await _run_job(client))["delivered"] == 0  # delivered once
        keys = KeySet.import_key_set(
            (await httpx.AsyncClient(transport=transport(client)).get(meta["jwks_uri"])).json()
        )
        by_audience: dict[str, dict[str, Any]] = {}
        for token in receiver.received:
            decoded = jwt.decode(token, keys, algorithms=["ES256"])
            assert decoded.header["typ"] == "logout+jwt"
            by_audience[decoded.claims["aud"]] = dict(decoded.claims)
        for name, reg in (("first", first), ("second", second)):
            claims = by_audience[reg["client"]["client_id"]]
            id_claims = jwt.decode(tokens[name]["id_token"], keys).claims
            assert claims["sub"] == id_claims["sub"] and claims["sid"] == id_claims["sid"]
            assert claims["iss"] == issuer(client) and LOGOUT_EVENT in claims["events"]
            assert "nonce" not in claims and claims["exp"] > time.time()
        assert quiet["client"]["client_id"] not in by_audience
    finally:
        oidc.logout_transport = None


async def test_a_department_that_never_answers_is_given_up_on(client: ApiClient, db: Any) -> None:
    oidc: OidcService = client.app.state.oidc
    receiver = Department()
    receiver.failing = True
    oidc.logout_transport = receiver.transport()
    try:
        reg = await registered(client, backchannel_logout_uri="https://down.example.cn/backchannel")
        resident = await login(client)
        agent = browser(client)
        async with app_for(client, reg) as app:
            meta = await discover(app, client)
            await log_in(client, app, meta, resident, user_agent=agent)
        assert (
            await agent.get(meta["end_session_endpoint"])
        ).status_code == 200  # no hint: a page, no redirect
        outcome: dict[str, int] = {}
        for _ in range(10):
            await db.execute(
                "UPDATE oidc.logout_deliveries SET next_attempt_at = now() WHERE client_id = $1",
                reg["client"]["client_id"],
            )
            outcome = await _run_job(client)
            if outcome["abandoned"]:
                break
        row = await db.fetchrow(
            "SELECT attempts, abandoned_at, last_error FROM oidc.logout_deliveries WHERE client_id = $1",
            reg["client"]["client_id"],
        )
        assert row["abandoned_at"] is not None and row["attempts"] == 8 and row["last_error"] == "HTTP 503"
    finally:
        oidc.logout_transport = None
