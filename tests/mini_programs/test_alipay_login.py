"""Logging in from an Alipay mini-program, through alipay-sdk-python against the Alipay sandbox: oauth.token for
the auth code, the phone from my.getPhoneNumber's signed and encrypted answer, codes Alipay refuses, Alipay down."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.helpers import bearer, random_phone
from tests.mini_programs.sandboxes import ALIPAY_CITY, ALIPAY_DEPARTMENT, AlipayMiniSandbox

LOGIN = "/api/v1/mini-programs/alipay/login"


async def alipay_login(
    client: Any, sandbox: AlipayMiniSandbox, phone: str | None = None, app_id: str = ALIPAY_CITY, **user: Any
) -> tuple[Any, dict[str, Any]]:
    auth = await sandbox.auth_code(app_id, **user)
    body = {"app_id": app_id, "code": auth["code"]}
    if phone:
        body["phone_response"] = await sandbox.phone_response(phone, app_id)
    return await client.post(LOGIN, json=body), auth


async def test_a_first_login_with_the_phone_and_a_returning_one_without(
    client: Any, alipay_mini_sandbox: AlipayMiniSandbox, db: Any, services: Any
) -> None:
    first, auth = await alipay_login(client, alipay_mini_sandbox, random_phone())
    assert first.status_code == 200, first.text
    assert first.json()["new_resident"] is True
    again, _ = await alipay_login(client, alipay_mini_sandbox, user_id=auth["user_id"])
    assert again.status_code == 200, again.text
    assert again.json()["resident_id"] == first.json()["resident_id"]
    row = await db.fetchrow(
        "SELECT subject_enc, session_key_enc FROM mini_programs.identities WHERE resident_id = $1",
        uuid.UUID(first.json()["resident_id"]),
    )
    # The open_id is the subject (apps since 2023); Alipay's access token is kept encrypted, never answered.
    assert services.platform.cipher.decrypt("mini.subject", row["subject_enc"]) == auth["open_id"]
    access_token = services.platform.cipher.decrypt("mini.session_key", row["session_key_enc"])
    assert access_token.startswith("authusr") and access_token not in again.text + first.text


async def test_an_older_app_identifies_by_user_id_and_a_department_app_finds_the_same_resident(
    client: Any, alipay_mini_sandbox: AlipayMiniSandbox
) -> None:
    city, auth = await alipay_login(client, alipay_mini_sandbox, random_phone(), id_kind="both")
    assert city.status_code == 200, city.text
    department, _ = await alipay_login(
        client, alipay_mini_sandbox, app_id=ALIPAY_DEPARTMENT, user_id=auth["user_id"], id_kind="user_id"
    )
    assert department.status_code == 200, department.text
    assert department.json()["resident_id"] == city.json()["resident_id"]


async def test_expired_reused_and_foreign_codes_are_refused_naming_the_code(
    client: Any, alipay_mini_sandbox: AlipayMiniSandbox
) -> None:
    expired = await alipay_mini_sandbox.auth_code(expired=True)
    answer = await client.post(LOGIN, json={"app_id": ALIPAY_CITY, "code": expired["code"]})
    assert answer.status_code == 401 and answer.json()["type"].endswith("/mini-code-invalid"), answer.text
    assert answer.json()["errors"][0]["field"] == "code"
    first, auth = await alipay_login(client, alipay_mini_sandbox, random_phone())
    assert first.status_code == 200
    # The same code again (what a replayed request carries)
    reused = await client.post(LOGIN, json={"app_id": ALIPAY_CITY, "code": auth["code"]})
    assert reused.status_code == 401 and reused.json()["type"].endswith("/mini-code-invalid")
    department = await alipay_mini_sandbox.auth_code(ALIPAY_DEPARTMENT)
    foreign = await client.post(LOGIN, json={"app_id": ALIPAY_CITY, "code": department["code"]})
    assert foreign.status_code == 401


async def test_a_phone_answer_not_signed_by_alipay_or_not_json_is_refused_naming_it(
    client: Any, alipay_mini_sandbox: AlipayMiniSandbox
) -> None:
    auth = await alipay_mini_sandbox.auth_code()
    tampered = await alipay_mini_sandbox.phone_response(random_phone(), tamper=True)
    answer = await client.post(
        LOGIN, json={"app_id": ALIPAY_CITY, "code": auth["code"], "phone_response": tampered}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["field"] == "phone_response" and "signature" in answer.text
    # Another app's answer is encrypted with another AES key and signed over another text: refused the same way.
    other = json.loads(await alipay_mini_sandbox.phone_response(random_phone(), ALIPAY_DEPARTMENT))
    other["response"] = other["response"][:-4] + "AAA="
    for bad in ("not json", json.dumps(other), json.dumps({"sign": "x"})):
        refused = await client.post(LOGIN, json={"app_id": ALIPAY_CITY, "code": "x", "phone_response": bad})
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "phone_response"


async def test_alipay_down_rate_limiting_or_answering_unsigned_is_a_503(
    client: Any, alipay_mini_sandbox: AlipayMiniSandbox
) -> None:
    for mode, kind in (
        ("error", "dependency-unavailable"),
        ("busy", "dependency-unavailable"),
        ("rate_limit", "dependency-rate-limited"),
    ):
        await alipay_mini_sandbox.fault("alipay.system.oauth.token", mode)
        auth = await alipay_mini_sandbox.auth_code()
        answer = await client.post(LOGIN, json={"app_id": ALIPAY_CITY, "code": auth["code"]})
        assert answer.status_code == 503, (mode, answer.text)
        assert answer.json()["type"].endswith(f"/{kind}") and "retry-after" in answer.headers


async def test_bad_input_names_the_field(client: Any) -> None:
    unknown = await client.post(LOGIN, json={"app_id": "2021999999999999", "code": "x"})
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "app_id"
    wechat_app = await client.post(LOGIN, json={"app_id": "wxd930ea5d5a258f4f", "code": "x"})
    assert wechat_app.status_code == 400 and wechat_app.json()["errors"][0]["field"] == "app_id"
    long = await client.post(LOGIN, json={"app_id": ALIPAY_CITY, "code": "x" * 129})
    assert long.status_code == 400 and "code" in long.text
    tokens_needed = await client.get("/api/v1/me/mini-program-identities")
    assert tokens_needed.status_code == 401
    assert (
        await client.get("/api/v1/me/mini-program-identities", headers=bearer({"access_token": "x"}))
    ).status_code == 401
