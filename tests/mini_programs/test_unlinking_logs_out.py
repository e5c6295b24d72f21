"""Unlinking a WeChat or Alipay identity logs that mini-program out: the sessions opened by logging in through it
end as a logout ends one (refresh refused, access tokens 401), the calling session too when it is one of them;
the resident's other sessions go on. The login itself costs no more statements for it."""

from __future__ import annotations

from typing import Any

from app_backend.kernel.actors import Actor
from mini_programs.service import MiniProgramService
from tests.helpers import bearer, login, random_phone
from tests.mini_programs.sandboxes import WECHAT_CITY, AlipayMiniSandbox, WechatMiniSandbox
from tests.mini_programs.test_alipay_login import alipay_login
from tests.mini_programs.test_wechat_login import wechat_login

IDENTITIES = "/api/v1/me/mini-program-identities"


async def _works(client: Any, tokens: dict[str, Any]) -> bool:
    """Whether a session is alive: its access token is accepted."""
    me = await client.get("/api/v1/me", headers=bearer(tokens))
    assert me.status_code in (200, 401), me.text
    return bool(me.status_code == 200)


async def _refresh(client: Any, tokens: dict[str, Any]) -> Any:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})


async def _identity_id(client: Any, tokens: dict[str, Any], channel: str) -> str:
    listed = (await client.get(IDENTITIES, headers=bearer(tokens))).json()["identities"]
    return str(next(i["id"] for i in listed if i["channel"] == channel))


async def test_unlinking_a_wechat_identity_ends_the_sessions_opened_through_it_and_no_other(
    client: Any,
    wechat_mini_sandbox: WechatMiniSandbox,
    alipay_mini_sandbox: AlipayMiniSandbox,
    db: Any,
) -> None:
    phone = random_phone()
    first, wx = await wechat_login(client, wechat_mini_sandbox, phone)
    assert first.status_code == 200, first.text
    second, _ = await wechat_login(client, wechat_mini_sandbox, openid=wx["openid"])
    assert second.status_code == 200, second.text
    through_wechat = [first.json(), second.json()]
    # The same resident in the app (SMS log-in) and in the Alipay mini-program.
    app = await login(client, phone)
    alipay, _ = await alipay_login(client, alipay_mini_sandbox, phone)
    assert alipay.status_code == 200 and alipay.json()["resident_id"] == app["resident_id"], alipay.text
    assert first.json()["resident_id"] == app["resident_id"]
    # One of the WeChat sessions has been refreshed since: its newest tokens are what the phone holds.
    rotated = await _refresh(client, through_wechat[1])
    assert rotated.status_code == 200, rotated.text
    through_wechat[1] = rotated.json()
    assert all([await _works(client, t) for t in (*through_wechat, app, alipay.json())])

    identity = await _identity_id(client, app, "wechat")
    gone = await client.delete(f"{IDENTITIES}/{identity}", headers=bearer(app))
    assert gone.status_code == 204, gone.text

    for tokens in through_wechat:
        refused = await client.get("/api/v1/me", headers=bearer(tokens))
        assert refused.status_code == 401 and "session has ended" in refused.json()["detail"], refused.text
        refresh = await _refresh(client, tokens)
        assert refresh.status_code == 401 and refresh.json()["type"].endswith("/refresh-invalid"), (
            refresh.text
        )
    # The app's session and the Alipay mini-program's go on, and still refresh.
    for tokens in (app, alipay.json()):
        assert await _works(client, tokens)
        assert (await _refresh(client, tokens)).status_code == 200
    event = await db.fetchrow(
        "SELECT detail FROM audit.events WHERE action = 'mini_programs.unlink' AND target_id = $1", identity
    )
    assert event["detail"]["sessions_ended"] == 2
    # Logging in again from WeChat links the user anew (phone button), with a session that works.
    again, _ = await wechat_login(client, wechat_mini_sandbox, phone, openid=wx["openid"])
    assert again.status_code == 200 and again.json()["resident_id"] == app["resident_id"], again.text
    assert await _works(client, again.json())


async def test_unlinking_from_a_session_opened_through_the_identity_ends_that_session_too(
    client: Any, alipay_mini_sandbox: AlipayMiniSandbox, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    phone = random_phone()
    answer, _ = await alipay_login(client, alipay_mini_sandbox, phone)
    assert answer.status_code == 200, answer.text
    mine = answer.json()
    wechat, _ = await wechat_login(client, wechat_mini_sandbox, phone)
    assert wechat.status_code == 200, wechat.text
    identity = await _identity_id(client, mine, "alipay")
    gone = await client.delete(f"{IDENTITIES}/{identity}", headers=bearer(mine))
    assert gone.status_code == 204, gone.text  # answered, then the session is over
    assert not await _works(client, mine)
    assert (await _refresh(client, mine)).status_code == 401
    # Its other channel's session was not opened through it.
    listed = await client.get(IDENTITIES, headers=bearer(wechat.json()))
    assert listed.status_code == 200 and [i["channel"] for i in listed.json()["identities"]] == ["wechat"]
    # Another account cannot end anybody's sessions by naming the identity.
    other = await login(client)
    wechat_identity = await _identity_id(client, wechat.json(), "wechat")
    refused = await client.delete(f"{IDENTITIES}/{wechat_identity}", headers=bearer(other))
    assert refused.status_code == 404
    assert await _works(client, wechat.json())


class _Counting:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._conn, name)
        if name not in ("execute", "fetch", "fetchrow", "fetchval", "executemany"):
            return attribute

        async def counted(query: str, *args: Any, **kwargs: Any) -> Any:
            self.statements.append(" ".join(query.split())[:60])
            return await attribute(query, *args, **kwargs)

        return counted


async def test_a_returning_login_still_costs_three_statements(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox, db: Any
) -> None:
    mini: MiniProgramService = client.app.state.mini_programs
    first, wx = await wechat_login(client, wechat_mini_sandbox, random_phone())
    assert first.status_code == 200, first.text
    code = await wechat_mini_sandbox.login_code(WECHAT_CITY, openid=wx["openid"])
    who = await mini.wechat_user(WECHAT_CITY, code["code"])
    async with mini.pool.acquire() as conn, conn.transaction():
        counting = _Counting(conn)
        pair = await mini.login(
            counting, who, None, Actor("anonymous", "", "test", "127.0.0.1"), "phone_code"
        )
    # The identity found and marked, the account read with the session (tagged) and its refresh token opened,
    # the audit record: the tag rides in the session's statement.
    assert len(counting.statements) == 3, counting.statements
    origin = await db.fetchval(
        "SELECT origin FROM identity.sessions WHERE resident_id = $1 ORDER BY created_at DESC LIMIT 1",
        pair.resident_id,
    )
    identity = await db.fetchval(
        "SELECT id FROM mini_programs.identities WHERE resident_id = $1 AND app_id = $2",
        pair.resident_id,
        WECHAT_CITY,
    )
    assert origin == f"mini_programs.identity:{identity}"
