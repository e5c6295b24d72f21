"""Operations staff manage organisations and credentials (every action audited, by role); machine clients sign
every request; the audit trail cannot be rewritten."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from typing import Any

import pytest

from app_backend.organisations.signing import HEADER_NONCE, HEADER_SIGNATURE, sign_request
from tests.helpers import bearer, login, otp_from_outbox, random_ip, real_named, signed, staff

ADMIN = "/api/v1/admin"
WHOAMI = "/api/v1/machine/whoami"
ECHO = "/api/v1/machine/echo"


async def _post(client: Any, tokens: dict[str, Any], path: str, body: Any) -> Any:
    return await client.post(ADMIN + path, json=body, headers=bearer(tokens))


async def _revoke(client: Any, admin: dict[str, Any], organisation_id: str, key_id: str) -> Any:
    return await client.delete(
        f"{ADMIN}/organisations/{organisation_id}/credentials/{key_id}", headers=bearer(admin)
    )


async def _organisation(client: Any, admin: dict[str, Any], kind: str = "department") -> dict[str, Any]:
    name = f"泰州测试机构-{uuid.uuid4().hex[:8]}"
    response = await _post(
        client, admin, "/organisations", {"name": name, "kind": kind, "location": "泰州市海陵区"}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _issue(
    client: Any, admin: dict[str, Any], organisation_id: str, scopes: list[str], label: str = "test"
) -> Any:
    return await client.post(
        f"{ADMIN}/organisations/{organisation_id}/credentials",
        json={"scopes": scopes, "label": label},
        headers=bearer(admin),
    )


async def _credential(client: Any, services: Any, scopes: list[str] | None = None) -> dict[str, Any]:
    """A fresh organisation with one credential: key_id, secret, organisation and the issuing admin."""
    admin = await staff(client, services)
    org = await _organisation(client, admin)
    issued = await _issue(client, admin, org["id"], scopes or ["feeds:health", "verify:health"])
    assert issued.status_code == 201, issued.text
    return {**issued.json(), "organisation": org, "admin": admin}


def _assert_unsigned(response: Any, mentions: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "TZT-HMAC-SHA256"
    assert response.json()["type"].endswith("signature-invalid")
    assert mentions in response.json()["detail"], response.json()["detail"]


async def _login_attempt(client: Any, phone: str) -> Any:
    """What helpers.login does, returning the answer instead of insisting on 200."""
    services = client.app.state.services
    await services.redis.delete(f"otp:cool:{services.otp._phone_key(phone)}")
    ip = {"X-Forwarded-For": random_ip()}
    sent = await client.post("/api/v1/auth/otp", json={"phone": phone}, headers=ip)
    assert sent.status_code == 202, sent.text
    code = await otp_from_outbox(client, phone)
    return await client.post("/api/v1/auth/login", json={"phone": phone, "otp": code})


# --- organisations and credentials --------------------------------------------------------------------------


async def test_admin_creates_organisation_and_issues_credential_shown_once(client, services, db):
    admin = await staff(client, services)
    org = await _organisation(client, admin, kind="verifier_operator")
    assert org["kind"] == "verifier_operator" and org["status"] == "active"
    assert org["location"] == "泰州市海陵区"

    listed = await client.get(f"{ADMIN}/organisations", headers=bearer(admin))
    assert listed.status_code == 200 and org["id"] in {o["id"] for o in listed.json()["organisations"]}

    duplicate = await client.post(
        f"{ADMIN}/organisations", json={"name": org["name"], "kind": "merchant"}, headers=bearer(admin)
    )
    assert duplicate.status_code == 409 and duplicate.json()["errors"][0]["field"] == "name"
    bad_kind = await client.post(
        f"{ADMIN}/organisations", json={"name": "x" + org["name"], "kind": "bank"}, headers=bearer(admin)
    )
    assert bad_kind.status_code == 400 and bad_kind.json()["errors"][0]["field"] == "kind"

    scopes = ["verify:transit", "gates:sync", "verify:transit"]
    issued = await _issue(client, admin, org["id"], scopes, "gate fleet")
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["key_id"].startswith("tzk_")
    assert body["secret"].startswith("tzs_") and len(body["secret"]) > 40
    assert body["scopes"] == ["gates:sync", "verify:transit"] and body["organisation_id"] == org["id"]

    listing = await client.get(f"{ADMIN}/organisations/{org['id']}/credentials", headers=bearer(admin))
    assert listing.status_code == 200
    [credential] = listing.json()["credentials"]
    assert credential["key_id"] == body["key_id"] and credential["label"] == "gate fleet"
    assert credential["revoked_at"] is None and "secret" not in credential
    assert body["secret"] not in listing.text and body["secret"][4:] not in listing.text

    # At rest the secret is AES-GCM ciphertext, not the secret.
    stored = bytes(
        await db.fetchval(
            "SELECT secret_enc FROM organisations.api_credentials WHERE key_id = $1", body["key_id"]
        )
    )
    assert body["secret"].encode() not in stored and body["secret"][4:].encode() not in stored
    assert len(stored) > len(body["secret"])


async def test_credential_scopes_are_checked(client, services):
    admin = await staff(client, services)
    org = await _organisation(client, admin)
    unknown = await _issue(client, admin, org["id"], ["feeds:health", "root:everything"])
    assert unknown.status_code == 400
    assert unknown.json()["errors"][0]["field"] == "scopes" and "root:everything" in unknown.json()["detail"]
    empty = await _issue(client, admin, org["id"], [])
    assert empty.status_code == 400 and empty.json()["errors"][0]["field"] == "scopes"
    nowhere = await _issue(client, admin, str(uuid.uuid4()), ["feeds:health"])
    assert nowhere.status_code == 404
    listing = await client.get(f"{ADMIN}/organisations/{org['id']}/credentials", headers=bearer(admin))
    assert listing.json()["credentials"] == []


async def test_a_merchant_cannot_be_given_a_health_feed_or_a_gate(client, services):
    admin = await staff(client, services)
    merchant = await _organisation(client, admin, kind="merchant")
    for scopes, named in (
        (["feeds:health"], "feeds:health"),
        (["payments:refund", "feeds:insurance"], "feeds:insurance"),
        (["gates:taps"], "gates:taps"),
        (["verify:medical"], "verify:medical"),
    ):
        refused = await _issue(client, admin, merchant["id"], scopes)
        assert refused.status_code == 400, refused.text
        assert refused.json()["errors"][0]["field"] == "scopes"
        assert named in refused.json()["detail"] and "merchant" in refused.json()["detail"]
    operations = await _organisation(client, admin, kind="operations")
    assert (await _issue(client, admin, operations["id"], ["feeds:health"])).status_code == 400
    for kind, scopes in (
        ("merchant", ["payments:refund", "settlements:read", "verify:health"]),
        ("department", ["feeds:health", "feeds:insurance", "licences:issue"]),
        ("verifier_operator", ["verify:transit", "verify:medical", "gates:taps", "gates:sync"]),
    ):
        org = await _organisation(client, admin, kind=kind)
        assert (await _issue(client, admin, org["id"], scopes)).status_code == 201, kind
    listing = await client.get(f"{ADMIN}/organisations/{merchant['id']}/credentials", headers=bearer(admin))
    assert listing.json()["credentials"] == []


async def test_an_existing_credential_beyond_its_kind_cannot_use_those_scopes(client, services, db):
    """A credential issued before scopes were bound to kinds: a merchant holding `feeds:health` still cannot
    set a health colour."""
    admin = await staff(client, services)
    merchant = await _organisation(client, admin, kind="merchant")
    issued = (await _issue(client, admin, merchant["id"], ["payments:refund"])).json()
    await db.execute(
        "UPDATE organisations.api_credentials SET scopes = $2 WHERE key_id = $1",
        issued["key_id"],
        ["payments:refund", "feeds:health"],
    )
    services.machine_auth._cache.pop(issued["key_id"], None)  # this worker's few-second credential cache
    person = await real_named(client, services)
    fed = await signed(
        client, issued, "PUT", "/api/v1/feeds/health", {"id_number": person["id_number"], "colour": "red"}
    )
    assert fed.status_code == 403, fed.text
    whoami = await signed(client, issued, "GET", WHOAMI)
    assert whoami.status_code == 200 and whoami.json()["scopes"] == ["payments:refund"]


# --- signed machine requests --------------------------------------------------------------------------------


async def test_signed_whoami_and_echo(client, services):
    credential = await _credential(client, services)
    whoami = await signed(client, credential, "GET", WHOAMI)
    assert whoami.status_code == 200, whoami.text
    assert whoami.json() == {
        "key_id": credential["key_id"],
        "organisation_id": credential["organisation"]["id"],
        "organisation_name": credential["organisation"]["name"],
        "organisation_kind": "department",
        "scopes": ["feeds:health", "verify:health"],
    }
    body = {"hello": "泰州", "n": [1, 2, 3]}
    echo = await signed(client, credential, "POST", ECHO, body)
    assert echo.status_code == 200, echo.text
    assert echo.json() == {"key_id": credential["key_id"], "received": body}

    with_query = await signed(client, credential, "GET", WHOAMI + "?probe=1&x=%E6%B3%B0")
    assert with_query.status_code == 200, with_query.text
    within_window = await signed(client, credential, "GET", WHOAMI, timestamp=int(time.time()) - 290)
    assert within_window.status_code == 200


async def test_unsigned_and_badly_signed_requests_are_401(client, services):
    credential = await _credential(client, services)

    _assert_unsigned(await client.get(WHOAMI), "header missing")
    _assert_unsigned(await client.post(ECHO, json={"a": 1}), "header missing")
    partial = sign_request(credential["key_id"], credential["secret"], "GET", WHOAMI)
    del partial[HEADER_NONCE]
    _assert_unsigned(await client.get(WHOAMI, headers=partial), "header missing")

    # Whole seconds rounded away from now, so the request is at least 301 s off whenever the server looks.
    past, future = math.floor(time.time()) - 301, math.ceil(time.time()) + 301
    _assert_unsigned(await signed(client, credential, "GET", WHOAMI, timestamp=past), "window")
    _assert_unsigned(await signed(client, credential, "GET", WHOAMI, timestamp=future), "window")
    _assert_unsigned(await signed(client, credential, "GET", WHOAMI, timestamp=0), "window")

    wrong_secret = {**credential, "secret": credential["secret"][:-2] + "xx"}
    _assert_unsigned(await signed(client, wrong_secret, "GET", WHOAMI), "does not match")
    unknown_key = {**credential, "key_id": "tzk_0000000000000000"}
    _assert_unsigned(await signed(client, unknown_key, "GET", WHOAMI), "unknown or revoked")

    # The body changes after signing.
    signed_body = json.dumps({"amount": 1}).encode()
    headers = sign_request(credential["key_id"], credential["secret"], "POST", ECHO, signed_body)
    tampered = await client.post(
        ECHO,
        content=json.dumps({"amount": 1000}).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    _assert_unsigned(tampered, "does not match")

    # The path, the query or the method changes after signing.
    headers = sign_request(credential["key_id"], credential["secret"], "POST", ECHO, b"")
    _assert_unsigned(await client.get(WHOAMI, headers=headers), "does not match")
    headers = sign_request(credential["key_id"], credential["secret"], "GET", WHOAMI + "?as=alice")
    _assert_unsigned(await client.get(WHOAMI + "?as=mallory", headers=headers), "does not match")
    headers = sign_request(credential["key_id"], credential["secret"], "GET", WHOAMI)
    _assert_unsigned(await client.get(WHOAMI + "?extra=1", headers=headers), "does not match")
    headers = sign_request(credential["key_id"], credential["secret"], "GET", ECHO)
    _assert_unsigned(await client.post(ECHO, headers=headers), "does not match")


async def test_a_replayed_nonce_is_refused(client, services):
    credential = await _credential(client, services)
    headers = sign_request(credential["key_id"], credential["secret"], "GET", WHOAMI)
    first = await client.get(WHOAMI, headers=headers)
    assert first.status_code == 200, first.text
    _assert_unsigned(await client.get(WHOAMI, headers=headers), "already used")

    # The same nonce freshly signed (new timestamp) is still a replay.
    again = await signed(
        client,
        credential,
        "GET",
        WHOAMI,
        nonce=headers[HEADER_NONCE],
        timestamp=int(headers["X-Tzt-Timestamp"]) - 1,
    )
    _assert_unsigned(again, "already used")


async def test_nonces_outside_16_to_64_safe_characters_are_refused_naming_the_header(client, services):
    credential = await _credential(client, services)
    for nonce in (
        "a",
        "0123456789abcde",
        "x" * 65,
        "0123456789abcdef/",
        "0123456789 abcdef",
        "0123456789abcdef\\",
    ):
        refused = await signed(client, credential, "GET", WHOAMI, nonce=nonce)
        _assert_unsigned(refused, "X-Tzt-Nonce: must be 16-64 characters")
    for nonce in ("0123456789abcdef", "A" * 64, "Az09-_.~" * 2, uuid.uuid4().hex):
        accepted = await signed(client, credential, "GET", WHOAMI, nonce=nonce)
        assert accepted.status_code == 200, (nonce, accepted.text)


async def test_a_bad_signature_does_not_burn_the_nonce(client, services):
    credential = await _credential(client, services)
    nonce = uuid.uuid4().hex
    forged = sign_request(credential["key_id"], "tzs_not-the-secret", "GET", WHOAMI, nonce=nonce)
    _assert_unsigned(await client.get(WHOAMI, headers=forged), "does not match")
    genuine = await signed(client, credential, "GET", WHOAMI, nonce=nonce)
    assert genuine.status_code == 200, genuine.text


async def test_nonces_are_per_credential(client, services):
    one, other = await _credential(client, services), await _credential(client, services)
    nonce = uuid.uuid4().hex
    assert (await signed(client, one, "GET", WHOAMI, nonce=nonce)).status_code == 200
    assert (await signed(client, other, "GET", WHOAMI, nonce=nonce)).status_code == 200


async def test_one_nonce_sent_concurrently_wins_once(client, services):
    credential = await _credential(client, services)
    body = {"payment": "once"}
    raw = json.dumps(body).encode()
    headers = {
        **sign_request(credential["key_id"], credential["secret"], "POST", ECHO, raw),
        "Content-Type": "application/json",
    }
    answers = await asyncio.gather(*(client.post(ECHO, content=raw, headers=headers) for _ in range(10)))
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 1 and codes.count(401) == 9, codes
    for refused in (a for a in answers if a.status_code == 401):
        _assert_unsigned(refused, "already used")


async def test_revoked_credential_is_refused_at_once(client, services, db):
    credential = await _credential(client, services)
    admin, org_id, key_id = credential["admin"], credential["organisation"]["id"], credential["key_id"]
    assert (await signed(client, credential, "GET", WHOAMI)).status_code == 200  # now cached in-process

    revoked = await _revoke(client, admin, org_id, key_id)
    assert revoked.status_code == 204, revoked.text
    _assert_unsigned(await signed(client, credential, "GET", WHOAMI), "unknown or revoked")
    _assert_unsigned(await signed(client, credential, "POST", ECHO, {"a": 1}), "unknown or revoked")

    again = await _revoke(client, admin, org_id, key_id)
    assert again.status_code == 404
    elsewhere = await _organisation(client, admin)
    wrong_org = await _revoke(client, admin, elsewhere["id"], key_id)
    assert wrong_org.status_code == 404
    listing = await client.get(f"{ADMIN}/organisations/{org_id}/credentials", headers=bearer(admin))
    assert listing.json()["credentials"][0]["revoked_at"] is not None
    assert await db.fetchval(
        "SELECT revoked_at IS NOT NULL FROM organisations.api_credentials WHERE key_id = $1", key_id
    )


async def test_revoking_one_credential_leaves_the_others_working(client, services):
    credential = await _credential(client, services)
    admin, org_id = credential["admin"], credential["organisation"]["id"]
    second = (await _issue(client, admin, org_id, ["settlements:read"])).json()
    revoked = await _revoke(client, admin, org_id, credential["key_id"])
    assert revoked.status_code == 204
    whoami = await signed(client, second, "GET", WHOAMI)
    assert whoami.status_code == 200 and whoami.json()["scopes"] == ["settlements:read"]


# --- staff roles --------------------------------------------------------------------------------------------


def _admin_routes(client: Any) -> set[tuple[str, str]]:
    found = set()
    for route in client.app.routes:
        if route.path.startswith(ADMIN):
            for method in getattr(route, "methods", ()):
                if method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                    found.add((method, route.path))
    return found


async def test_a_resident_gets_403_on_every_admin_endpoint(client, services, db):
    admin = await staff(client, services)
    org = await _organisation(client, admin)
    key_id = (await _issue(client, admin, org["id"], ["feeds:health"])).json()["key_id"]
    resident = await login(client)
    victim = await real_named(client, services)
    reason = {"reason": "curious about a neighbour"}
    calls: dict[tuple[str, str], dict[str, Any] | None] = {
        ("GET", f"{ADMIN}/organisations"): None,
        ("POST", f"{ADMIN}/organisations"): {"name": f"冒名-{uuid.uuid4().hex[:6]}", "kind": "department"},
        ("PUT", f"{ADMIN}/organisations/{{organisation_id:uuid}}/rate-limit"): {"rate_limit_per_second": 1},
        ("GET", f"{ADMIN}/organisations/{{organisation_id:uuid}}/credentials"): None,
        ("POST", f"{ADMIN}/organisations/{{organisation_id:uuid}}/credentials"): {"scopes": ["feeds:health"]},
        ("DELETE", f"{ADMIN}/organisations/{{organisation_id:uuid}}/credentials/{{key_id:str}}"): None,
        ("POST", f"{ADMIN}/staff"): {"resident_id": resident["resident_id"], "role": "ops_admin"},
        ("POST", f"{ADMIN}/residents/{{resident_id:uuid}}/status"): {"status": "blocked", **reason},
        ("POST", f"{ADMIN}/residents/{{resident_id:uuid}}/reveal"): reason,
        ("POST", f"{ADMIN}/uscc-overrides"): {"uscc": "91321200MA1XK3T7Q0", **reason},
        ("GET", f"{ADMIN}/audit"): None,
        ("GET", f"{ADMIN}/reconciliation"): None,
        ("GET", f"{ADMIN}/settlements"): None,
        ("POST", f"{ADMIN}/settlements/{{settlement_id:uuid}}/paid"): {"payout_ref": "ICBC-1"},
        ("POST", f"{ADMIN}/settlements/{{settlement_id:uuid}}/pay"): None,
        ("GET", f"{ADMIN}/settlements/{{settlement_id:uuid}}/payouts"): None,
        ("GET", f"{ADMIN}/payout-accounts/{{payee_id:uuid}}"): None,
        ("PUT", f"{ADMIN}/payout-accounts/{{payee_id:uuid}}"): {
            "channel": "alipay",
            "account_type": "ALIPAY_LOGON_ID",
            "account": "13812345678",
            "name": "冒名",
        },
        ("DELETE", f"{ADMIN}/payout-accounts/{{payee_id:uuid}}"): None,
        ("GET", f"{ADMIN}/oidc/clients"): None,
        ("POST", f"{ADMIN}/oidc/clients"): {
            "organisation_id": org["id"],
            "name": "冒名应用",
            "purpose": "冒名登录居民",
            "client_type": "public",
            "redirect_uris": ["https://evil.example/cb"],
        },
        ("DELETE", f"{ADMIN}/oidc/clients/{{client_id:str}}"): None,
        ("GET", f"{ADMIN}/tiles"): None,
        ("GET", f"{ADMIN}/tiles/reviews"): None,
        ("GET", f"{ADMIN}/tiles/{{tile_id:uuid}}"): None,
        ("POST", f"{ADMIN}/tiles/{{tile_id:uuid}}/versions/{{version:int}}/approve"): {},
        ("POST", f"{ADMIN}/tiles/{{tile_id:uuid}}/versions/{{version:int}}/reject"): reason,
        ("POST", f"{ADMIN}/tiles/{{tile_id:uuid}}/suspend"): reason,
        ("POST", f"{ADMIN}/tiles/{{tile_id:uuid}}/resume"): reason,
        ("POST", f"{ADMIN}/tiles/{{tile_id:uuid}}/rollback"): {"version": 1, **reason},
        ("POST", f"{ADMIN}/tiles/{{tile_id:uuid}}/retire"): reason,
        ("GET", f"{ADMIN}/organisations/{{organisation_id:uuid}}/message-regions"): None,
        ("PUT", f"{ADMIN}/organisations/{{organisation_id:uuid}}/message-regions"): {"regions": ["321200"]},
        ("GET", f"{ADMIN}/tiles/report"): None,
        ("GET", f"{ADMIN}/tiles/retirement-candidates"): None,
        ("POST", f"{ADMIN}/tiles/retirement-candidates/{{tile_id:uuid}}/retire"): reason,
        ("GET", f"{ADMIN}/tiles/{{tile_id:uuid}}/usage"): None,
        ("GET", f"{ADMIN}/tiles/{{tile_id:uuid}}/health"): None,
        ("GET", f"{ADMIN}/home/notices"): None,
        ("POST", f"{ADMIN}/home/notices"): {
            "kind": "outage",
            "title": "冒名公告",
            "body": "居民不得发布首页公告",
            "regions": ["321200"],
            "starts_at": "2026-01-01T00:00:00+08:00",
            "ends_at": "2026-01-02T00:00:00+08:00",
        },
        ("DELETE", f"{ADMIN}/home/notices/{{notice_id:uuid}}"): None,
    }
    assert set(calls) == _admin_routes(client), "a new admin endpoint needs a row here"
    for (method, template), body in calls.items():
        path = (
            template.replace("{organisation_id:uuid}", org["id"])
            .replace("{key_id:str}", key_id)
            .replace("{resident_id:uuid}", victim["resident_id"])
            .replace("{settlement_id:uuid}", str(uuid.uuid4()))
            .replace("{payee_id:uuid}", org["id"])
            .replace("{client_id:str}", "tzo_00000000000000000000")
            .replace("{tile_id:uuid}", str(uuid.uuid4()))
            .replace("{notice_id:uuid}", str(uuid.uuid4()))
            .replace("{version:int}", "1")
        )
        response = await client.request(method, path, json=body, headers=bearer(resident))
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert victim["id_number"] not in response.text

    # Nothing happened, and every attempt is on record.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM identity.staff_roles WHERE resident_id = $1",
            uuid.UUID(resident["resident_id"]),
        )
        == 0
    )
    assert (
        await db.fetchval(
            "SELECT status FROM identity.residents WHERE id = $1", uuid.UUID(victim["resident_id"])
        )
        == "active"
    )
    assert await db.fetchval(
        "SELECT revoked_at IS NULL FROM organisations.api_credentials WHERE key_id = $1", key_id
    )
    denied = await db.fetch(
        "SELECT target_id FROM audit.events WHERE action = 'admin.access' "
        "AND outcome = 'denied' AND actor_id = $1",
        resident["resident_id"],
    )
    assert len(denied) == len(calls)
    assert {r["target_id"] for r in denied} >= {f"{ADMIN}/audit", f"{ADMIN}/staff"}
    assert (await client.get(f"{ADMIN}/audit")).status_code == 401


async def test_auditor_reads_the_trail_but_cannot_act(client, services, db):
    auditor = await staff(client, services, role="auditor")
    page = await client.get(
        f"{ADMIN}/audit", params={"action": "admin.access", "limit": 5}, headers=bearer(auditor)
    )
    assert page.status_code == 200, page.text
    events = page.json()["events"]
    assert all(e["action"] == "admin.access" for e in events) and len(events) <= 5

    create = await _post(
        client,
        auditor,
        "/organisations",
        {"name": f"审计员机构-{uuid.uuid4().hex[:6]}", "kind": "department"},
    )
    assert create.status_code == 403 and "ops_admin" in create.json()["detail"]
    block = await _post(
        client,
        auditor,
        f"/residents/{auditor['resident_id']}/status",
        {"status": "blocked", "reason": "testing roles"},
    )
    assert block.status_code == 403

    denied = await db.fetch(
        "SELECT target_id, detail FROM audit.events WHERE action = 'admin.access' "
        "AND outcome = 'denied' AND actor_id = $1 ORDER BY id",
        auditor["resident_id"],
    )
    assert [r["target_id"] for r in denied] == [
        f"{ADMIN}/organisations",
        f"{ADMIN}/residents/{auditor['resident_id']}/status",
    ]
    assert denied[0]["detail"]["needs"] == ["ops_admin"]
    searched = await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'admin.audit_search' AND actor_id = $1",
        auditor["resident_id"],
    )
    assert searched == 1


async def test_granted_staff_role_takes_effect(client, services, db):
    admin = await staff(client, services)
    newcomer = await login(client)
    assert (await client.get(f"{ADMIN}/audit", headers=bearer(newcomer))).status_code == 403
    rid = newcomer["resident_id"]
    granted = await _post(client, admin, "/staff", {"resident_id": rid, "role": "auditor"})
    assert granted.status_code == 201, granted.text
    assert (await client.get(f"{ADMIN}/audit", headers=bearer(newcomer))).status_code == 200
    nobody = await _post(client, admin, "/staff", {"resident_id": str(uuid.uuid4()), "role": "auditor"})
    assert nobody.status_code == 404
    bad_role = await _post(client, admin, "/staff", {"resident_id": rid, "role": "root"})
    assert bad_role.status_code == 400 and bad_role.json()["errors"][0]["field"] == "role"


async def test_every_admin_action_is_audited(client, services, db):
    admin = await staff(client, services)
    org = await _organisation(client, admin)
    key_id = (await _issue(client, admin, org["id"], ["tiles:manage"])).json()["key_id"]
    assert (await _revoke(client, admin, org["id"], key_id)).status_code == 204
    newcomer = await real_named(client, services)
    rid = newcomer["resident_id"]
    grant = await _post(client, admin, "/staff", {"resident_id": rid, "role": "ops_reviewer"})
    assert grant.status_code == 201
    status = {"status": "blocked", "reason": "fraud report 12345-0001"}
    assert (await _post(client, admin, f"/residents/{rid}/status", status)).status_code == 200
    reason = {"reason": "police request 2026-17"}
    assert (await _post(client, admin, f"/residents/{rid}/reveal", reason)).status_code == 200

    rows = await db.fetch(
        "SELECT action, target_id, outcome, detail, actor_type FROM audit.events "
        "WHERE actor_id = $1 AND action LIKE 'admin.%' ORDER BY id",
        admin["resident_id"],
    )
    seen = {(r["action"], r["target_id"]): r for r in rows}
    assert all(r["outcome"] == "success" and r["actor_type"] == "staff" for r in rows)
    assert seen[("admin.organisation_create", org["id"])]["detail"] == {"kind": "department"}
    assert seen[("admin.credential_issue", org["id"])]["detail"]["key_id"] == key_id
    assert seen[("admin.credential_revoke", org["id"])]["detail"] == {"key_id": key_id}
    assert seen[("admin.staff_grant", rid)]["detail"] == {"role": "ops_reviewer"}
    assert seen[("admin.resident_status", rid)]["detail"] == status
    assert seen[("admin.resident_reveal", rid)]["detail"] == reason
    assert [r["action"] for r in rows] == [
        "admin.organisation_create",
        "admin.credential_issue",
        "admin.credential_revoke",
        "admin.staff_grant",
        "admin.resident_status",
        "admin.resident_reveal",
    ]
    # No secret in the trail.
    assert "tzs_" not in json.dumps([r["detail"] for r in rows])


# --- residents: block and reveal ----------------------------------------------------------------------------


async def test_blocking_ends_sessions_at_once_and_unblocking_restores_login(client, services, db):
    admin = await staff(client, services)
    resident = await login(client)
    other_session = await login(client, resident["phone"])
    rid = resident["resident_id"]
    assert (await client.get("/api/v1/me", headers=bearer(resident))).status_code == 200

    blocked = await _post(
        client, admin, f"/residents/{rid}/status", {"status": "blocked", "reason": "reported for fraud"}
    )
    assert blocked.status_code == 200 and blocked.json() == {"resident_id": rid, "status": "blocked"}
    for tokens in (resident, other_session):
        assert (await client.get("/api/v1/me", headers=bearer(tokens))).status_code == 401
        refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 401

    refused = await _login_attempt(client, resident["phone"])
    assert refused.status_code == 403 and refused.json()["type"].endswith("resident-blocked")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit.events WHERE action = 'auth.login' "
            "AND outcome = 'denied' AND target_id = $1",
            rid,
        )
        == 1
    )

    unblocked = await _post(
        client, admin, f"/residents/{rid}/status", {"status": "active", "reason": "report withdrawn"}
    )
    assert unblocked.status_code == 200
    back = await login(client, resident["phone"])
    assert back["resident_id"] == rid
    me = await client.get("/api/v1/me", headers=bearer(back))
    assert me.status_code == 200 and me.json()["status"] == "active"
    # Old sessions stay ended.
    assert (await client.get("/api/v1/me", headers=bearer(resident))).status_code == 401

    nobody = await _post(
        client, admin, f"/residents/{uuid.uuid4()}/status", {"status": "blocked", "reason": "no such person"}
    )
    assert nobody.status_code == 404


async def test_reveal_shows_unmasked_data_to_staff_with_a_reason(client, services, db):
    admin = await staff(client, services)
    resident = await real_named(client, services, name="诸葛亮")
    rid = resident["resident_id"]
    me = (await client.get("/api/v1/me", headers=bearer(resident))).json()
    assert me["phone"] != resident["phone"]  # masked for everyone else

    no_reason = await _post(client, admin, f"/residents/{rid}/reveal", {})
    assert no_reason.status_code == 400 and no_reason.json()["errors"][0]["field"] == "reason"
    short = await _post(client, admin, f"/residents/{rid}/reveal", {"reason": "hm"})
    assert short.status_code == 400 and short.json()["errors"][0]["field"] == "reason"

    reason = "12345 hotline ticket 88231: caller identity check"
    revealed = await _post(client, admin, f"/residents/{rid}/reveal", {"reason": reason})
    assert revealed.status_code == 200, revealed.text
    assert revealed.json() == {
        "phone": resident["phone"],
        "name": "诸葛亮",
        "id_number": resident["id_number"],
    }

    rows = await db.fetch(
        "SELECT actor_id, detail FROM audit.events WHERE action = 'admin.resident_reveal' AND target_id = $1",
        rid,
    )
    assert [(r["actor_id"], r["detail"]) for r in rows] == [(admin["resident_id"], {"reason": reason})]
    assert resident["phone"] not in json.dumps(rows[0]["detail"])

    ghost = await _post(client, admin, f"/residents/{uuid.uuid4()}/reveal", {"reason": reason})
    assert ghost.status_code == 404


async def test_signature_header_case_does_not_matter(client, services):
    credential = await _credential(client, services)
    headers = sign_request(credential["key_id"], credential["secret"], "GET", WHOAMI)
    headers[HEADER_SIGNATURE] = headers[HEADER_SIGNATURE].upper()
    assert (await client.get(WHOAMI, headers=headers)).status_code == 200


async def test_revocation_reaches_another_process_with_a_warm_cache(client, services):
    """Another server process (its own MachineAuth and cache, same Redis) refuses the key at once."""
    from app_backend.kernel.breaker import RedisBreaker
    from app_backend.kernel.redis_batch import BatchRunner
    from app_backend.organisations.service import MachineAuth

    credential = await _credential(client, services)
    batches = BatchRunner(services.redis)
    other = MachineAuth(
        services.redis,
        services.cipher,
        services.settings.signature_window,
        RedisBreaker(),
        3000,
        batches,
    )

    def request() -> tuple[str, dict[str, str]]:
        return WHOAMI, sign_request(credential["key_id"], credential["secret"], "GET", WHOAMI)

    path, headers = request()
    assert (await other.authenticate(services.side_pool, "GET", path, headers, b"")).key_id == credential[
        "key_id"
    ]
    revoked = await _revoke(
        client, credential["admin"], credential["organisation"]["id"], credential["key_id"]
    )
    assert revoked.status_code == 204
    path, headers = request()
    with pytest.raises(Exception, match="revoked"):
        await other.authenticate(services.side_pool, "GET", path, headers, b"")
    await batches.close()


async def test_a_non_ascii_digit_timestamp_is_401_not_500(client, services):
    credential = await _credential(client, services)
    headers: dict[str, Any] = sign_request(credential["key_id"], credential["secret"], "GET", WHOAMI)
    headers["X-Tzt-Timestamp"] = "²".encode("latin-1")  # str.isdigit() says yes; int() says no
    _assert_unsigned(await client.get(WHOAMI, headers=headers), "X-Tzt-Timestamp")


async def test_an_audit_cursor_past_bigint_is_400_naming_it(client, services):
    auditor = await staff(client, services, role="auditor")
    answer = await client.get(f"{ADMIN}/audit", params={"before_id": str(2**64)}, headers=bearer(auditor))
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "before_id"
