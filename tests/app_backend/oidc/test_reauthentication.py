"""`prompt=login` and `max_age` (OIDC Core 3.1.2.1): the resident logs in again on the provider's SMS page before a
code is issued, and the ID token's `auth_time` is that new authentication; `prompt=none` when a log-in is needed
answers `login_required` to the client. A department's app is Authlib's client, as in the other tests."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.app_backend.oidc.department import (
    REDIRECT,
    app_for,
    authorize,
    browser,
    consent_form,
    discover,
    log_in,
    parse_id_token,
    registered,
)
from tests.conftest import ApiClient
from tests.helpers import bearer, login, otp_from_outbox, random_ip


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def _log_in_again(client: ApiClient, agent: httpx.AsyncClient, to_login: str, phone: str) -> str:
    """The resident on the provider's log-in page: asks for a code, types it; returns where it sends them."""
    assert to_login.startswith("/oidc/login?next="), to_login
    page = await agent.get(to_login)
    assert page.status_code == 200 and "登录泰州通" in page.text
    next_path = _query(to_login)["next"]
    sent = await agent.post(
        "/oidc/login/otp", data={"phone": phone, "next": next_path}, headers={"X-Forwarded-For": random_ip()}
    )
    assert sent.status_code == 200, sent.text
    code = await otp_from_outbox(client, phone)
    done = await agent.post("/oidc/login", data={"phone": phone, "otp": code, "next": next_path})
    assert done.status_code == 303 and done.headers["location"] == next_path, done.text
    return next_path


async def _token(
    app: AsyncOAuth2Client, meta: dict[str, Any], location: str, verifier: str
) -> dict[str, Any]:
    assert location.startswith(REDIRECT) and "code=" in location, location
    token = await app.fetch_token(
        meta["token_endpoint"], authorization_response=location, code_verifier=verifier
    )
    return dict(token)


async def _backdate(db: Any, sid: str, seconds: int) -> None:
    """As if the browser session had authenticated `seconds` earlier."""
    await db.execute(
        "UPDATE oidc.browser_sessions SET auth_time = auth_time - make_interval(secs => $2) WHERE id = $1",
        uuid.UUID(sid),
        float(seconds),
    )


async def test_discovery_offers_prompt_login(client: ApiClient) -> None:
    reg = await registered(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
    assert set(meta["prompt_values_supported"]) == {"none", "login", "consent"}


async def test_prompt_login_makes_a_logged_in_resident_authenticate_again(client: ApiClient, db: Any) -> None:
    reg = await registered(client)
    resident = await login(client)
    agent = browser(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        first = await log_in(
            client, app, meta, resident, user_agent=agent
        )  # consents; the browser has a session
        before = await parse_id_token(client, reg, first)
        await _backdate(db, before["sid"], 3600)
        # Without prompt=login the session answers at once (consented before), with its authentication time.
        quiet, _, _ = await authorize(client, app, meta, resident, user_agent=agent)
        assert quiet.status_code == 302 and quiet.headers["location"].startswith(REDIRECT)

        verifier = generate_token(48)
        url, state = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, prompt="login", nonce="n-again"
        )
        asked = await agent.get(url)
        assert asked.status_code == 302, asked.text
        to_login = asked.headers["location"]
        assert to_login.startswith("/oidc/login?next=") and "code=" not in to_login
        # Going back to the request without logging in is asked again: the session is not a new log-in.
        skipped = await agent.get(_query(to_login)["next"])
        assert skipped.status_code == 302 and skipped.headers["location"].startswith("/oidc/login?next=")
        # Nor with a ticket the provider did not sign.
        forged = _query(to_login)["next"].replace("tzt_reauth=", "tzt_reauth=1")
        assert (await agent.get(forged)).headers["location"].startswith("/oidc/login?next=")

        logged_in_at = int(time.time())
        back = await _log_in_again(client, agent, to_login, resident["phone"])
        answer = await agent.get(back)
        assert answer.status_code == 302, answer.text
        assert _query(answer.headers["location"])["state"] == state
        token = await _token(app, meta, answer.headers["location"], verifier)
        claims = await parse_id_token(client, reg, token, nonce="n-again")
        assert claims["sub"] == before["sub"] and claims["auth_time"] >= logged_in_at
        assert claims["auth_time"] > before["auth_time"] - 3600 and claims["sid"] != before["sid"]
        # The ticket belongs to that request: carried over to another one, it does not stand for a log-in.
        ticket = _query(back)["tzt_reauth"]
        other, _ = app.create_authorization_url(
            meta["authorization_endpoint"],
            code_verifier=generate_token(48),
            prompt="login",
            tzt_reauth=ticket,
        )
        moved = await agent.get(other)
        assert moved.status_code == 302 and moved.headers["location"].startswith("/oidc/login?next=")


async def test_max_age_older_than_the_session_asks_for_a_log_in_first(client: ApiClient, db: Any) -> None:
    reg = await registered(client)
    resident = await login(client)
    agent = browser(client)
    async with app_for(client, reg, scope="openid phone") as app:
        meta = await discover(app, client)
        # A first visit with the app's token opens the browser session; no consent given yet.
        verifier = generate_token(48)
        url, _ = app.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
        page = await agent.get(url, headers=bearer(resident))
        assert page.status_code == 200 and "授权登录" in page.text
        sid = await db.fetchval(
            "SELECT id FROM oidc.browser_sessions WHERE resident_id = $1", uuid.UUID(resident["resident_id"])
        )
        await _backdate(db, str(sid), 3600)

        # Authenticated an hour ago: max_age=7200 is met (the ID token says when), max_age=600 is not.
        url, _ = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, max_age="7200"
        )
        page = await agent.get(url)
        assert page.status_code == 200 and "授权登录" in page.text
        url, state = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, max_age="600"
        )
        asked = await agent.get(url)
        assert asked.status_code == 302 and asked.headers["location"].startswith("/oidc/login?next="), (
            asked.text
        )
        logged_in_at = int(time.time())
        back = await _log_in_again(client, agent, asked.headers["location"], resident["phone"])
        # Logged in again: the consent page (first time for this app), and its answer carries on the request.
        page = await agent.get(back)
        assert page.status_code == 200 and "授权登录" in page.text, page.text
        hidden, boxes = consent_form(page.text)
        assert boxes == ["phone"]
        answer = await agent.post(
            "/oidc/authorize",
            content=urlencode([*hidden, ("decision", "allow"), ("sensitive", "phone")]),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 302 and _query(answer.headers["location"])["state"] == state, answer.text
        token = await _token(app, meta, answer.headers["location"], verifier)
        claims = await parse_id_token(client, reg, token)
        assert claims["auth_time"] >= logged_in_at

        # max_age=0 asks every time, and is satisfied by the log-in it asked for (no loop).
        url, state = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, max_age="0"
        )
        asked = await agent.get(url)
        assert asked.headers["location"].startswith("/oidc/login?next=")
        back = await _log_in_again(client, agent, asked.headers["location"], resident["phone"])
        answer = await agent.get(back)
        assert answer.status_code == 302 and answer.headers["location"].startswith(REDIRECT), answer.text
        assert (
            await parse_id_token(client, reg, await _token(app, meta, answer.headers["location"], verifier))
        )["auth_time"] >= claims["auth_time"]

        # A max_age that is not a number of seconds is the client's error, told to the client.
        url, state = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, max_age="ten"
        )
        bad = await agent.get(url)
        assert bad.status_code == 302 and _query(bad.headers["location"])["error"] == "invalid_request"
        assert _query(bad.headers["location"])["state"] == state


async def test_the_app_session_counts_from_its_own_log_in_not_from_the_web_view(
    client: ApiClient, db: Any
) -> None:
    reg = await registered(client)
    resident = await login(client)
    # The app's session was opened (SMS log-in) an hour ago.
    await db.execute(
        "UPDATE identity.sessions SET created_at = created_at - interval '1 hour' WHERE resident_id = $1",
        uuid.UUID(resident["resident_id"]),
    )
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        # Opening the request in the web-view with the app's token is no new authentication.
        url, _ = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=generate_token(48), max_age="600"
        )
        asked = await browser(client).get(url, headers=bearer(resident))
        assert asked.status_code == 302 and asked.headers["location"].startswith("/oidc/login?next="), (
            asked.text
        )
        # Without max_age it logs in, and the ID token tells when the app's session authenticated.
        token = await log_in(client, app, meta, resident)
        claims = await parse_id_token(client, reg, token)
        assert time.time() - claims["auth_time"] >= 3600 - 5


async def test_prompt_none_answers_login_required_when_a_log_in_is_needed(client: ApiClient, db: Any) -> None:
    reg = await registered(client)
    resident = await login(client)
    agent = browser(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        first = await log_in(client, app, meta, resident, user_agent=agent)
        await _backdate(db, (await parse_id_token(client, reg, first))["sid"], 3600)
        for params in ({"prompt": "none", "max_age": "60"}, {"prompt": "none"}):
            url, state = app.create_authorization_url(
                meta["authorization_endpoint"], code_verifier=generate_token(48), **params
            )
            answer = await agent.get(url)
            assert answer.status_code == 302 and answer.headers["location"].startswith(REDIRECT), answer.text
            back = _query(answer.headers["location"])
            if "max_age" in params:
                assert back["error"] == "login_required" and back["state"] == state and "code" not in back
            else:
                assert "code" in back and back["state"] == state  # within any age: answered silently
        # With no session at all, too; and none with login together is a contradiction.
        url, state = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=generate_token(48), prompt="none"
        )
        nobody = await browser(client).get(url)
        back = _query(nobody.headers["location"])
        assert back["error"] == "login_required" and back["state"] == state and "code" not in back
        url, state = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=generate_token(48), prompt="none login"
        )
        both = await agent.get(url)
        assert _query(both.headers["location"])["error"] == "invalid_request"


async def test_a_fresh_browser_logs_in_once_for_prompt_login(client: ApiClient) -> None:
    reg = await registered(client)
    resident = await login(client)
    async with app_for(client, reg) as app:
        meta = await discover(app, client)
        url, _ = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=generate_token(48), prompt="login"
        )
        agent = browser(client)
        to_login = await agent.get(url)
        assert to_login.status_code == 302
        back = await _log_in_again(client, agent, to_login.headers["location"], resident["phone"])
        page = await agent.get(back)
        assert page.status_code == 200 and "授权登录" in page.text  # the consent page, not a second log-in
