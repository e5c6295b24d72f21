"""Logging in from a WeChat mini-program, through wechatpy against the WeChat sandbox: the first login with the
phone button, the returning resident, codes WeChat refuses, WeChat down or rate limiting us, and the session key
that never leaves the server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.helpers import bearer, login, random_phone, staff
from tests.mini_programs.sandboxes import WECHAT_CITY, WECHAT_DEPARTMENT, WechatMiniSandbox

LOGIN = "/api/v1/mini-programs/wechat/login"


async def wechat_login(
    client: Any, sandbox: WechatMiniSandbox, phone: str | None = None, app_id: str = WECHAT_CITY, **user: Any
) -> tuple[Any, dict[str, Any]]:
    """(the answer, the WeChat user) of a login from the mini-program; with `phone`, the phone button too."""
    wx = await sandbox.login_code(app_id, **user)
    body = {"app_id": app_id, "code": wx["code"]}
    if phone:
        body["phone_code"] = await sandbox.phone_code(phone, app_id)
    return await client.post(LOGIN, json=body), wx


async def test_a_first_login_with_the_phone_creates_the_resident_and_a_returning_one_needs_no_phone(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    phone = random_phone()
    first, wx = await wechat_login(client, wechat_mini_sandbox, phone)
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert tokens["new_resident"] is True and tokens["token_type"] == "Bearer" and tokens["level"] == "L1"
    again, _ = await wechat_login(client, wechat_mini_sandbox, openid=wx["openid"])
    assert again.status_code == 200, again.text
    assert again.json()["resident_id"] == tokens["resident_id"] and again.json()["new_resident"] is False
    # The app's own tokens: the profile answers, and the refresh token rotates like the app's.
    me = await client.get("/api/v1/me", headers=bearer(again.json()))
    assert me.status_code == 200 and me.json()["phone"] == phone[:3] + "****" + phone[-4:]
    rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": again.json()["refresh_token"]})
    assert rotated.status_code == 200, rotated.text


async def test_the_first_login_finds_the_resident_who_already_uses_the_app(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    app_user = await login(client)
    answer, _ = await wechat_login(client, wechat_mini_sandbox, app_user["phone"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["resident_id"] == app_user["resident_id"] and answer.json()["new_resident"] is False


async def test_an_unlinked_user_without_a_phone_is_asked_for_the_phone(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    answer, _ = await wechat_login(client, wechat_mini_sandbox)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"].endswith("/phone-required")
    assert problem["errors"][0]["field"] == "phone_code"
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_the_same_wechat_user_in_a_department_mini_program_is_the_same_resident_by_unionid(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    unionid = "o" + "u" * 27
    city, _ = await wechat_login(client, wechat_mini_sandbox, random_phone(), unionid=unionid + "1")
    assert city.status_code == 200, city.text
    # The department's mini-program has its own openid for the person; WeChat's unionid says it is the same one.
    department, _ = await wechat_login(
        client, wechat_mini_sandbox, app_id=WECHAT_DEPARTMENT, unionid=unionid + "1"
    )
    assert department.status_code == 200, department.text
    assert department.json()["resident_id"] == city.json()["resident_id"]
    listed = await client.get("/api/v1/me/mini-program-identities", headers=bearer(department.json()))
    assert sorted(i["app_id"] for i in listed.json()["identities"]) == sorted(
        [WECHAT_CITY, WECHAT_DEPARTMENT]
    )


async def test_expired_and_reused_codes_are_refused_naming_the_code(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    phone = random_phone()
    expired = await wechat_mini_sandbox.login_code(expired=True)
    answer = await client.post(LOGIN, json={"app_id": WECHAT_CITY, "code": expired["code"]})
    assert answer.status_code == 401, answer.text
    assert (
        answer.json()["type"].endswith("/mini-code-invalid") and answer.json()["errors"][0]["field"] == "code"
    )
    wx = await wechat_mini_sandbox.login_code()
    body = {
        "app_id": WECHAT_CITY,
        "code": wx["code"],
        "phone_code": await wechat_mini_sandbox.phone_code(phone),
    }
    assert (await client.post(LOGIN, json=body)).status_code == 200
    reused = await client.post(LOGIN, json={"app_id": WECHAT_CITY, "code": wx["code"]})
    assert reused.status_code == 401 and reused.json()["type"].endswith("/mini-code-used")
    # A spent phone code is refused too, naming its field.
    wx = await wechat_mini_sandbox.login_code()
    spent = await client.post(LOGIN, json={**body, "code": wx["code"]})
    assert spent.status_code == 401 and spent.json()["errors"][0]["field"] == "phone_code"


async def test_concurrent_first_logins_of_one_user_make_one_resident_and_one_link(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox, db: Any
) -> None:
    phone = random_phone()
    first = await wechat_mini_sandbox.login_code()
    bodies = []
    for _ in range(4):
        wx = await wechat_mini_sandbox.login_code(openid=first["openid"])
        bodies.append(
            {
                "app_id": WECHAT_CITY,
                "code": wx["code"],
                "phone_code": await wechat_mini_sandbox.phone_code(phone),
            }
        )
    answers = await asyncio.gather(*(client.post(LOGIN, json=b) for b in bodies))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["resident_id"] for a in answers}) == 1
    linked = await db.fetchval(
        "SELECT count(*) FROM mini_programs.identities WHERE resident_id = $1",
        uuid.UUID(answers[0].json()["resident_id"]),
    )
    assert linked == 1


async def test_wechat_down_or_rate_limiting_is_a_503_with_retry_after(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox
) -> None:
    for mode, kind in (
        ("error", "dependency-unavailable"),
        ("busy", "dependency-unavailable"),
        ("rate_limit", "dependency-rate-limited"),
    ):
        await wechat_mini_sandbox.fault("/sns/jscode2session", mode)
        wx = await wechat_mini_sandbox.login_code()
        answer = await client.post(LOGIN, json={"app_id": WECHAT_CITY, "code": wx["code"]})
        assert answer.status_code == 503, (mode, answer.text)
        assert answer.json()["type"].endswith(f"/{kind}") and int(answer.headers["retry-after"]) > 0
    # A slow WeChat is cut off at the app's timeout: a 503, not a hung request.
    await wechat_mini_sandbox.fault("/wxa/business/getuserphonenumber", "timeout", delay_s=30)
    wx = await wechat_mini_sandbox.login_code()
    body = {
        "app_id": WECHAT_CITY,
        "code": wx["code"],
        "phone_code": await wechat_mini_sandbox.phone_code(random_phone()),
    }
    # (the tests' apps wait 2 s: tests/conftest.py)
    answer = await client.post(LOGIN, json=body, timeout=60)
    assert answer.status_code == 503, answer.text


async def test_an_expired_access_token_is_fetched_again_and_shared_through_redis(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox, services: Any
) -> None:
    await wechat_mini_sandbox.control("POST", "/_sandbox/access-tokens/expire", {"appid": WECHAT_CITY})
    answer, _ = await wechat_login(client, wechat_mini_sandbox, random_phone())
    assert answer.status_code == 200, answer.text
    cached = await services.redis.get(f"mini:wechat:{WECHAT_CITY}_access_token")
    assert (
        cached is not None and 0 < await services.redis.ttl(f"mini:wechat:{WECHAT_CITY}_access_token") <= 6900
    )
    before = (await wechat_mini_sandbox.control("GET", "/_sandbox/calls")).get("/cgi-bin/stable_token", 0)
    again, _ = await wechat_login(client, wechat_mini_sandbox, random_phone())
    assert again.status_code == 200
    after = (await wechat_mini_sandbox.control("GET", "/_sandbox/calls")).get("/cgi-bin/stable_token", 0)
    assert after == before  # the cached token served


async def test_the_session_key_never_leaves_the_server_and_is_encrypted_at_rest(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox, db: Any, services: Any
) -> None:
    answer, wx = await wechat_login(client, wechat_mini_sandbox, random_phone())
    assert answer.status_code == 200
    row = await db.fetchrow(
        "SELECT id, subject_enc, session_key_enc FROM mini_programs.identities WHERE resident_id = $1",
        uuid.UUID(answer.json()["resident_id"]),
    )
    session_key = services.platform.cipher.decrypt("mini.session_key", row["session_key_enc"])
    assert len(session_key) == 24  # base64 of WeChat's 16 bytes
    assert session_key.encode() not in bytes(row["session_key_enc"])
    assert wx["openid"].encode() not in bytes(row["subject_enc"])
    listed = await client.get("/api/v1/me/mini-program-identities", headers=bearer(answer.json()))
    for text in (answer.text, listed.text):
        assert session_key not in text and wx["openid"] not in text
    assert listed.json()["identities"][0]["subject"] == wx["openid"][:4] + "*" * 20 + wx["openid"][-4:]


async def test_bad_input_names_the_field(client: Any) -> None:
    unknown = await client.post(LOGIN, json={"app_id": "wx0000000000000000", "code": "x"})
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "app_id"
    missing = await client.post(LOGIN, json={"app_id": WECHAT_CITY})
    assert missing.status_code == 400 and "code" in missing.text
    empty = await client.post(LOGIN, json={"app_id": WECHAT_CITY, "code": ""})
    assert empty.status_code == 400 and "code" in empty.text
    extra = await client.post(LOGIN, json={"app_id": WECHAT_CITY, "code": "x", "openid": "o-mine"})
    assert extra.status_code == 400 and "openid" in extra.text


async def test_a_blocked_resident_cannot_log_in_from_the_mini_program(
    client: Any, wechat_mini_sandbox: WechatMiniSandbox, services: Any
) -> None:
    answer, wx = await wechat_login(client, wechat_mini_sandbox, random_phone())
    admin = await staff(client, services)
    blocked = await client.post(
        f"/api/v1/admin/residents/{answer.json()['resident_id']}/status",
        json={"status": "blocked", "reason": "a test of the block"},
        headers=bearer(admin),
    )
    assert blocked.status_code == 200, blocked.text
    again, _ = await wechat_login(client, wechat_mini_sandbox, openid=wx["openid"])
    assert again.status_code == 403 and again.json()["type"].endswith("/resident-blocked")
