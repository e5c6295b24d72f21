"""Residents become real-named (L2) and face-verified (L3); their personal data stays encrypted, masked and
out of the logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from app_backend.composition.logging import configure_logging
from app_backend.identity.validators import id_number_check_char
from tests.helpers import (
    bearer,
    enrol_person,
    login,
    random_id_number,
    random_ip,
    random_phone,
    real_named,
    staff,
)

REAL_NAME = "/api/v1/me/real-name"
FACE_SESSIONS = "/api/v1/me/face-verification/sessions"
FACE = "/api/v1/me/face-verification"
_NAME_CHARS = "琮璟瑄琰璘珩瑾瑜璠琛珏琳瓒玥璐珺琪瑶"


_rng = random.SystemRandom()


def random_name() -> str:
    """A three-character name that no other stored text contains (so scanning for it means something)."""
    return "".join(_rng.choice(_NAME_CHARS) for _ in range(3))


def not_the_name(name: str) -> str:
    """A name that certainly differs from `name` (a random one might not)."""
    return name + "琮"


def with_check(first17: str) -> str:
    return first17 + id_number_check_char(first17)


def field_of(response: Any) -> str:
    return str(response.json()["errors"][0]["field"])


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if field is not None:
        assert field_of(response) == field, body
        assert field in body["detail"], body
    return body


async def me(client: Any, tokens: dict[str, Any]) -> dict[str, Any]:
    response = await client.get("/api/v1/me", headers=bearer(tokens))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def enrolled_person(services: Any, *owners: dict[str, Any]) -> tuple[str, str]:
    """A registry person; the phones of `owners` (logged-in residents) are registered to them by the carriers."""
    name, id_number = random_name(), random_id_number()
    await enrol_person(services, name, id_number)
    for owner in owners:
        await enrol_person(services, name, id_number, owner["phone"])
    return name, id_number


async def real_name(client: Any, tokens: dict[str, Any], name: str, id_number: str) -> Any:
    return await client.post(REAL_NAME, json={"name": name, "id_number": id_number}, headers=bearer(tokens))


async def start_liveness(client: Any, tokens: dict[str, Any]) -> str:
    response = await client.post(FACE_SESSIONS, headers=bearer(tokens))
    assert response.status_code == 200, response.text
    assert response.json()["provider"] == "dev" and response.json()["expires_in"] > 0
    return str(response.json()["session_id"])


async def vendor_result(client: Any, session_id: str, outcome: str = "pass") -> str:
    """What the liveness vendor's SDK hands the app after the face check."""
    response = await client.post(f"/api/v1/dev/liveness/{session_id}", json={"outcome": outcome})
    assert response.status_code == 200, response.text
    return str(response.json()["result_token"])


async def confirm_face(client: Any, tokens: dict[str, Any], session_id: str, token: str) -> Any:
    return await client.post(
        FACE, json={"session_id": session_id, "result_token": token}, headers=bearer(tokens)
    )


# --- real-name (L2) -----------------------------------------------------------------------------------------


async def test_real_name_raises_the_level_and_the_profile_shows_it_masked(client, services):
    tokens = await login(client)
    name, id_number = await enrolled_person(services, tokens)
    response = await real_name(client, tokens, name, id_number)
    assert response.status_code == 200, response.text
    assert response.json() == {"level": "L2"}

    profile = await me(client, tokens)
    assert profile["level"] == "L2"
    assert profile["name"] == name[0] + "*" * (len(name) - 1)
    assert profile["id_number"] == id_number[:3] + "*" * 11 + id_number[-4:]
    assert profile["real_name_verified_at"] is not None and profile["face_verified_at"] is None
    text = json.dumps(profile, ensure_ascii=False)
    assert id_number not in text and name not in text and tokens["phone"] not in text


async def test_two_character_name_and_lowercase_x_are_accepted(client, services):
    id_number = random_id_number()
    while not id_number.endswith("X"):  # one number in eleven ends in X
        id_number = random_id_number()
    tokens = await login(client)
    await enrol_person(services, "张琮", id_number, tokens["phone"])
    response = await real_name(client, tokens, "  张琮 ", id_number.lower())
    assert response.status_code == 200, response.text
    profile = await me(client, tokens)
    assert profile["name"] == "张*"
    assert profile["id_number"] == f"{id_number[:3]}***********{id_number[-4:]}"


_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _future_birth() -> str:
    tomorrow = dt.date.today() + dt.timedelta(days=2)
    return with_check(f"321202{tomorrow:%Y%m%d}001")


# (id_number as sent, what the detail says)
_BAD_ID_NUMBERS = {
    "checksum": (lambda n: n[:17] + ("0" if n[17] != "0" else "1"), "check character"),
    "feb-30": (lambda n: with_check("32120219900230001"), "birth date"),
    "month-13": (lambda n: with_check("32120219901301001"), "birth date"),
    "future-birth": (lambda n: _future_birth(), "future"),
    "unknown-province": (lambda n: with_check("99" + n[2:17]), "region"),
    "too-short": (lambda n: n[:17], "18 characters"),
    "too-long": (lambda n: n + "1", "18 characters"),
    "letters": (lambda n: n[:10] + "AB" + n[12:], "digits"),
    "full-width-digits": (lambda n: n[:14] + n[14:17].translate(_FULL_WIDTH) + n[17], "digits"),
    "superscript-digit": (lambda n: n[:15] + "²" + n[16:], "digits"),
}


@pytest.mark.parametrize("case", sorted(_BAD_ID_NUMBERS))
async def test_bad_id_numbers_are_400_naming_the_field_and_store_nothing(client, services, case):
    make, says = _BAD_ID_NUMBERS[case]
    tokens = await login(client)
    name, id_number = await enrolled_person(services)
    response = await real_name(client, tokens, name, make(id_number))
    body = assert_problem(response, 400, "id_number")
    assert says in body["detail"]
    profile = await me(client, tokens)
    assert profile["level"] == "L1" and profile["id_number"] is None and profile["name"] is None


@pytest.mark.parametrize("name", ["张3", "<b>张三</b>", "   ", "琮" * 65])
async def test_bad_names_are_400_naming_the_field(client, services, name):
    tokens = await login(client)
    _, id_number = await enrolled_person(services)
    assert_problem(await real_name(client, tokens, name, id_number), 400, "name")
    assert (await me(client, tokens))["level"] == "L1"


async def test_name_and_number_not_matching_the_registry_is_422_and_audited(client, services, db):
    tokens = await login(client)
    name, id_number = await enrolled_person(services)
    not_enrolled = random_id_number()
    for sent_name, sent_number in ((not_the_name(name), id_number), (name, not_enrolled)):
        response = await real_name(client, tokens, sent_name, sent_number)
        body = assert_problem(response, 422)
        assert {e["field"] for e in body["errors"]} == {"name", "id_number"}
        assert "name" in body["detail"] and "id_number" in body["detail"]
    assert (await me(client, tokens))["level"] == "L1"
    outcomes = await db.fetch(
        "SELECT outcome FROM audit.events WHERE action = 'resident.real_name' AND target_id = $1",
        tokens["resident_id"],
    )
    assert [r["outcome"] for r in outcomes] == ["no-match", "no-match"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "张三"}, "id_number"),
        ({"id_number": "110105194912310011"}, "name"),
        ({"name": 123, "id_number": "110105194912310011"}, "name"),
        ({"name": "张三", "id_number": 110105194912310011}, "id_number"),
        ({"name": ["张三"], "id_number": "110105194912310011"}, "name"),
        ({"name": None, "id_number": "110105194912310011"}, "name"),
        ({"name": "", "id_number": "110105194912310011"}, "name"),
        ({"name": "张三", "id_number": "1" * 33}, "id_number"),
        ({"name": "张三", "id_number": "110105194912310011", "age": 30}, "age"),
    ],
)
async def test_missing_fields_and_wrong_json_types_are_400_naming_the_field(client, body, field):
    tokens = await login(client)
    response = await client.post(REAL_NAME, json=body, headers=bearer(tokens))
    assert_problem(response, 400, field)


@pytest.mark.parametrize(
    "content",
    [
        b"name=%E5%BC%A0&id_number=1",
        b'{"name": ',
        b'{"name": "\xe5\xbc',
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"\xff\xfe",
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400_not_500(client, content):
    tokens = await login(client)
    response = await client.post(
        REAL_NAME, content=content, headers={**bearer(tokens), "Content-Type": "application/json"}
    )
    assert_problem(response, 400, "body")


async def test_an_oversized_body_is_413(client, services):
    tokens = await login(client)
    padding = "琮" * (services.settings.max_body_bytes // 3 + 10)
    response = await client.post(
        REAL_NAME, json={"name": padding, "id_number": random_id_number()}, headers=bearer(tokens)
    )
    body = assert_problem(response, 413)
    assert body["errors"][0]["field"] == "body"
    assert (await me(client, tokens))["level"] == "L1"


async def test_real_name_needs_a_login(client):
    response = await client.post(REAL_NAME, json={"name": "张三", "id_number": random_id_number()})
    assert_problem(response, 401)


async def test_an_id_number_backs_one_account_only(client, services):
    first = await real_named(client, services, name=random_name())
    second = await login(client)
    await enrol_person(
        services, first["name"], first["id_number"], second["phone"]
    )  # a second phone of theirs
    response = await real_name(client, second, first["name"], first["id_number"])
    body = assert_problem(response, 409, "id_number")
    assert body["type"].endswith("id-number-taken")
    assert "face verification" in body["detail"]  # the way back for the rightful owner
    profile = await me(client, second)
    assert profile["level"] == "L1" and profile["id_number"] is None
    assert (await me(client, first))["level"] == "L2"


async def test_two_residents_racing_for_one_id_number_yield_one_winner(client, services, db):
    racers = [await login(client) for _ in range(2)]
    name, id_number = await enrolled_person(services, *racers)
    answers = await asyncio.gather(*(real_name(client, t, name, id_number) for t in racers))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 409)
    assert field_of(loser) == "id_number"
    holders = await db.fetchval(
        "SELECT count(*) FROM identity.residents WHERE id_number_hash = $1",
        services.cipher.lookup_hash("resident.id_number", id_number),
    )
    assert holders == 1
    levels = sorted([(await me(client, t))["level"] for t in racers])
    assert levels == ["L1", "L2"]


async def test_one_resident_double_submitting_gets_one_success(client, services):
    tokens = await login(client)
    name, id_number = await enrolled_person(services, tokens)
    answers = await asyncio.gather(*(real_name(client, tokens, name, id_number) for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409], [a.text for a in answers]


async def test_already_verified_is_409_and_keeps_the_first_identity(client, services):
    tokens = await real_named(client, services, name=random_name())
    other_name, other_number = await enrolled_person(services)
    for name, number in ((tokens["name"], tokens["id_number"]), (other_name, other_number)):
        response = await real_name(client, tokens, name, number)
        assert assert_problem(response, 409)["type"].endswith("already-verified")
    profile = await me(client, tokens)
    assert profile["id_number"] == tokens["id_number"][:3] + "*" * 11 + tokens["id_number"][-4:]
    # The number that was refused is still free for its owner.
    owner = await login(client)
    await enrol_person(services, other_name, other_number, owner["phone"])
    assert (await real_name(client, owner, other_name, other_number)).status_code == 200


async def test_the_sixth_real_name_attempt_in_a_day_is_429_with_retry_after(client, services):
    tokens = await login(client)
    name, id_number = await enrolled_person(services)
    for _ in range(5):
        assert (await real_name(client, tokens, not_the_name(name), id_number)).status_code == 422
    response = await real_name(client, tokens, name, id_number)  # right this time, but too late
    assert_problem(response, 429)
    assert 0 < int(response.headers["retry-after"]) <= 86400
    assert (await me(client, tokens))["level"] == "L1"
    # The limit is per resident: someone else is not held back.
    other = await login(client)
    await enrol_person(services, name, id_number, other["phone"])
    assert (await real_name(client, other, name, id_number)).status_code == 200


async def test_badly_formed_attempts_do_not_use_up_the_daily_attempts(client, services):
    tokens = await login(client)
    name, id_number = await enrolled_person(services, tokens)
    for _ in range(8):
        assert (await real_name(client, tokens, name, id_number[:17])).status_code == 400
    assert (await real_name(client, tokens, name, id_number)).status_code == 200


async def test_a_successful_real_name_is_audited_without_personal_data(client, services, db):
    tokens = await real_named(client, services, name=random_name())
    rows = await db.fetch(
        """SELECT actor_type, actor_id, target_type, target_id, outcome, ip, request_id,
                  detail::text AS detail
           FROM audit.events WHERE action = 'resident.real_name' AND target_id = $1""",
        tokens["resident_id"],
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["actor_type"], row["actor_id"], row["target_type"], row["outcome"]) == (
        "resident",
        tokens["resident_id"],
        "resident",
        "success",
    )
    assert row["request_id"] and row["ip"]
    for secret in (tokens["name"], tokens["id_number"], tokens["phone"]):
        assert secret not in row["detail"]


# --- face verification (L3) ---------------------------------------------------------------------------------


async def test_face_verification_raises_an_l2_resident_to_l3(client, services, db):
    tokens = await real_named(client, services, name=random_name())
    session_id = await start_liveness(client, tokens)
    token = await vendor_result(client, session_id, "pass")
    response = await confirm_face(client, tokens, session_id, token)
    assert response.status_code == 200, response.text
    assert response.json() == {"level": "L3"}
    profile = await me(client, tokens)
    assert profile["level"] == "L3" and profile["face_verified_at"] is not None
    audited = await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = $1 AND target_id = $2 AND outcome = 'success'",
        "resident.face_verification",
        tokens["resident_id"],
    )
    assert audited == 1
    # L3 stays L3 when real-name is tried again.
    again = await real_name(client, tokens, tokens["name"], tokens["id_number"])
    assert again.status_code == 409 and (await me(client, tokens))["level"] == "L3"


async def test_face_verification_needs_real_name_first(client):
    tokens = await login(client)
    response = await client.post(FACE_SESSIONS, headers=bearer(tokens))
    assert_problem(response, 403)


async def test_a_failed_liveness_result_is_refused_and_cannot_be_turned_into_a_pass(client, services):
    tokens = await real_named(client, services, name=random_name())
    session_id = await start_liveness(client, tokens)
    failed = await vendor_result(client, session_id, "fail")
    assert_problem(await confirm_face(client, tokens, session_id, failed), 422, "result_token")
    # The session was spent on the failure; a pass for it afterwards counts for nothing.
    late = await client.post(f"/api/v1/dev/liveness/{session_id}", json={"outcome": "pass"})
    assert late.status_code == 404
    assert (await me(client, tokens))["level"] == "L2"


async def test_a_result_for_another_residents_session_is_refused(client, services):
    alice = await real_named(client, services, name=random_name())
    bob = await real_named(client, services, name=random_name())
    alice_session = await start_liveness(client, alice)
    alice_pass = await vendor_result(client, alice_session, "pass")
    bob_session = await start_liveness(client, bob)
    # Alice's pass with Bob's own session, then Alice's session and pass outright.
    assert_problem(await confirm_face(client, bob, bob_session, alice_pass), 422, "result_token")
    assert_problem(await confirm_face(client, bob, alice_session, alice_pass), 422, "result_token")
    assert (await me(client, bob))["level"] == "L2"


async def test_a_session_cannot_be_used_twice(client, services):
    tokens = await real_named(client, services, name=random_name())
    session_id = await start_liveness(client, tokens)
    token = await vendor_result(client, session_id, "pass")
    answers = await asyncio.gather(*(confirm_face(client, tokens, session_id, token) for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 422, 422]
    assert_problem(await confirm_face(client, tokens, session_id, token), 422, "result_token")


async def test_forged_or_unknown_liveness_results_are_refused(client, services):
    tokens = await real_named(client, services, name=random_name())
    session_id = await start_liveness(client, tokens)
    token = await vendor_result(client, session_id, "pass")
    forged = "pass." + token.split(".", 1)[1][::-1]
    assert_problem(await confirm_face(client, tokens, session_id, forged), 422, "result_token")
    assert_problem(await confirm_face(client, tokens, "lv_unknown", token), 422, "result_token")
    assert (await me(client, tokens))["level"] == "L2"
    unknown = await client.post("/api/v1/dev/liveness/lv_unknown", json={"outcome": "pass"})
    assert unknown.status_code == 404
    bad_outcome = await client.post(
        f"/api/v1/dev/liveness/{await start_liveness(client, tokens)}", json={"outcome": "maybe"}
    )
    assert_problem(bad_outcome, 400, "outcome")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"result_token": "pass.x"}, "session_id"),
        ({"session_id": "lv_x"}, "result_token"),
        ({"session_id": 1, "result_token": "pass.x"}, "session_id"),
        ({"session_id": "lv_x", "result_token": "p" * 257}, "result_token"),
    ],
)
async def test_bad_face_verification_bodies_name_the_field(client, body, field):
    tokens = await login(client)
    assert_problem(await client.post(FACE, json=body, headers=bearer(tokens)), 400, field)


# --- personal data at rest, in logs, and other residents' data ----------------------------------------------


async def test_personal_data_is_encrypted_at_rest(client, services, db):
    tokens = await real_named(client, services, name=random_name())
    secrets = {"phone": tokens["phone"], "name": tokens["name"], "id_number": tokens["id_number"]}
    resident_id = uuid.UUID(tokens["resident_id"])
    row = await db.fetchrow("SELECT * FROM identity.residents WHERE id = $1", resident_id)
    for field, plaintext in secrets.items():
        blob = row[f"{field}_enc"]
        assert plaintext.encode() not in blob
        # It is the value, encrypted for that field, and nothing else.
        assert services.cipher.decrypt(f"resident.{field}", blob) == plaintext
    for value in row.values():
        if isinstance(value, bytes | str):
            raw = value if isinstance(value, bytes) else value.encode()
            assert not any(p.encode() in raw for p in secrets.values())
    as_json = await db.fetchval(
        "SELECT row_to_json(r)::text FROM identity.residents r WHERE id = $1", resident_id
    )
    for plaintext in secrets.values():
        assert plaintext not in as_json
        assert plaintext.encode().hex() not in as_json  # bytea shows as hex in JSON


async def test_no_table_holds_a_residents_personal_data_in_plain(client, services, db):
    tokens = await real_named(client, services, name=random_name())
    session = await start_liveness(client, tokens)
    verified = await confirm_face(client, tokens, session, await vendor_result(client, session))
    assert verified.status_code == 200
    tables = await db.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('identity', 'audit') AND table_type = 'BASE TABLE'"
    )
    assert {"residents", "events", "dev_population_registry"} <= {t["table_name"] for t in tables}
    for table in tables:
        name = f'"{table["table_schema"]}"."{table["table_name"]}"'
        for plaintext in (tokens["phone"], tokens["name"], tokens["id_number"]):
            hits = await db.fetchval(
                f"SELECT count(*) FROM {name} t WHERE strpos(row_to_json(t)::text, $1) > 0 "
                f"OR strpos(row_to_json(t)::text, $2) > 0",
                plaintext,
                plaintext.encode().hex(),
            )
            assert hits == 0, f"{plaintext!r} found in {name}"


async def test_audit_records_of_a_resident_carry_no_personal_data(client, services, db):
    tokens = await login(client)
    name, id_number = await enrolled_person(services, tokens)
    await real_name(client, tokens, not_the_name(name), id_number)  # no match
    await real_name(client, tokens, name, id_number)  # success
    rows = await db.fetch(
        "SELECT row_to_json(e)::text AS line FROM audit.events e WHERE actor_id = $1 OR target_id = $1",
        tokens["resident_id"],
    )
    assert len(rows) >= 3  # login, no match, success
    for row in rows:
        for plaintext in (tokens["phone"], name, id_number):
            assert plaintext not in row["line"]


@pytest.fixture
def every_log_line_on_stdout(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """The production logging set-up at DEBUG, writing into this test's captured stdout. The session's loggers
    are cached at the tests' level (WARNING) and would say nothing: they are uncached here, restored after."""
    proxy_type = type(structlog.get_logger())
    proxies = [
        value
        for module in list(sys.modules.values())
        if getattr(module, "__name__", "").startswith("app_backend")
        for value in list(vars(module).values())
        if isinstance(value, proxy_type)
    ]
    cached = [(proxy, vars(proxy).pop("bind", None)) for proxy in proxies]
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging("DEBUG")
    if not any(getattr(h, "stream", None) is sys.stdout for h in root.handlers):
        root.addHandler(logging.StreamHandler(sys.stdout))  # library loggers too
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)
        for proxy, bind in cached:
            vars(proxy).pop("bind", None)
            if bind is not None:
                proxy.bind = bind


async def test_logs_never_contain_personal_data(client, services, capfd, every_log_line_on_stdout):
    phone = random_phone()
    name, id_number = await enrolled_person(services, {"phone": phone})
    ip = {"X-Forwarded-For": random_ip()}
    sent = await client.post("/api/v1/auth/otp", json={"phone": f"+86 {phone}"}, headers=ip)
    assert sent.status_code == 202
    # Read the SMS straight from the outbox: the test client's own request log would show a ?phone= query.
    code = re.search(r"\d{6}", (await services.dev_outbox.read(phone))[0].text).group(0)  # type: ignore[union-attr]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert (await client.post("/api/v1/auth/login", json={"phone": phone, "otp": wrong})).status_code == 401
    login_ok = await client.post("/api/v1/auth/login", json={"phone": phone, "otp": code})
    assert login_ok.status_code == 200
    tokens = login_ok.json()
    assert (await real_name(client, tokens, name, id_number[:17] + "Y")).status_code == 400
    assert (await real_name(client, tokens, not_the_name(name), id_number)).status_code == 422
    assert (await real_name(client, tokens, name, id_number)).status_code == 200
    assert (await me(client, tokens))["level"] == "L2"

    out, err = capfd.readouterr()
    logged = out + err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(line.get("path") == REAL_NAME and line.get("status") == 200 for line in lines), out[-2000:]
    secrets = (phone, name, id_number, id_number[:17], code, tokens["access_token"], tokens["refresh_token"])
    for secret in secrets:
        for spelling in {secret, json.dumps(secret)[1:-1]}:  # JSON lines escape non-ASCII: "\u5f20..."
            assert spelling not in logged, f"{secret!r} was logged"


async def test_a_resident_cannot_use_the_admin_endpoints_to_read_another_resident(client, services, db):
    victim = await real_named(client, services, name=random_name())
    snoop = await login(client)
    listing = await client.get("/api/v1/admin/organisations", headers=bearer(snoop))
    assert_problem(listing, 403)
    reveal = await client.post(
        f"/api/v1/admin/residents/{victim['resident_id']}/reveal",
        json={"reason": "just curious"},
        headers=bearer(snoop),
    )
    assert_problem(reveal, 403)
    for secret in (victim["phone"], victim["name"], victim["id_number"]):
        assert secret not in reveal.text
    denied = await db.fetchval(
        "SELECT count(*) FROM audit.events WHERE action = 'admin.access' "
        "AND actor_id = $1 AND outcome = 'denied'",
        snoop["resident_id"],
    )
    assert denied == 2

    # The same request from operations staff works, and is audited with its reason.
    admin = await staff(client, services)
    allowed = await client.post(
        f"/api/v1/admin/residents/{victim['resident_id']}/reveal",
        json={"reason": "12345 complaint 88"},
        headers=bearer(admin),
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {key: victim[key] for key in ("phone", "name", "id_number")}
    reason = await db.fetchval(
        "SELECT detail->>'reason' FROM audit.events WHERE action = $1 AND target_id = $2",
        "admin.resident_reveal",
        victim["resident_id"],
    )
    assert reason == "12345 complaint 88"


async def test_only_admin_endpoints_take_a_resident_id(client):
    schema = (await client.get("/schema/openapi.json")).json()
    taking = [
        path
        for path, operations in schema["paths"].items()
        if "resident_id" in path
        or any(
            p["name"] == "resident_id"
            for op in operations.values()
            if isinstance(op, dict)
            for p in op.get("parameters", [])
        )
    ]
    assert "/api/v1/admin/residents/{resident_id}/reveal" in taking
    assert all(path.startswith("/api/v1/admin/") for path in taking), taking


async def test_me_is_always_the_caller(client, services):
    victim = await real_named(client, services, name=random_name())
    snoop = await login(client)
    for params in ({"resident_id": victim["resident_id"]}, {"id": victim["resident_id"]}):
        response = await client.get("/api/v1/me", params=params, headers=bearer(snoop))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == snoop["resident_id"] and response.json()["name"] is None
