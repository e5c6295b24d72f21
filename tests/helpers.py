"""What a phone, a department's client and an operator do, as small functions the tests share."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from httpx import AsyncClient as AsyncTestClient

from app_backend.composition.wiring import Services
from app_backend.identity.repository import ResidentRepository
from app_backend.identity.validators import id_number_check_char, uscc_check_char
from app_backend.organisations.signing import sign_request
from code_service.verifier.format import TYPE_PERSONAL, Flags, encode_server_code, seal_holder

_rng = random.SystemRandom()


def random_phone() -> str:
    return "1" + _rng.choice("3456789") + "".join(_rng.choice("0123456789") for _ in range(9))


def random_ip() -> str:
    return f"10.{_rng.randrange(256)}.{_rng.randrange(256)}.{_rng.randrange(1, 255)}"


class SetClock:
    """A clock a test sets (a schedule's `clock`): time moves only when the test says so."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at

    def set(self, at: dt.datetime) -> None:
        self.at = at


def random_id_number(region: str = "321202") -> str:
    born = dt.date(1950, 1, 1) + dt.timedelta(days=_rng.randrange(18000))
    first17 = f"{region}{born:%Y%m%d}{_rng.randrange(1000):03d}"
    return first17 + id_number_check_char(first17)


def nobodys_id_number() -> str:
    """A valid ID number no account of the session holds: of a district (兴化) that no test account, load-test
    resident or demo person is given, so a feed of many such numbers finds exactly the holders a test made (with
    the district every account uses, 999 random numbers met another test's account now and then)."""
    return random_id_number("321281")


def random_uscc() -> str:
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    first17 = "91321200" + "".join(_rng.choice(alphabet) for _ in range(9))
    return first17 + uscc_check_char(first17)


async def otp_from_outbox(client: AsyncTestClient, phone: str) -> str:
    response = await client.get("/api/v1/dev/outbox", params={"phone": phone})
    assert response.status_code == 200, response.text
    return re.search(r"\d{6}", response.json()["messages"][0]["text"]).group(0)  # type: ignore[union-attr]


async def login(client: AsyncTestClient, phone: str | None = None) -> dict[str, Any]:
    phone = phone or random_phone()
    ip = {"X-Forwarded-For": random_ip()}
    services = client.app.state.services
    await services.redis.delete(f"otp:cool:{services.otp._phone_key(phone)}")  # as if the minute had passed
    sent = await client.post("/api/v1/auth/otp", json={"phone": phone}, headers=ip)
    assert sent.status_code == 202, sent.text
    code = await otp_from_outbox(client, phone)
    response = await client.post("/api/v1/auth/login", json={"phone": phone, "otp": code})
    assert response.status_code == 200, response.text
    return {**response.json(), "phone": phone}


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def enrol_person(services: Services, name: str, id_number: str, phone: str | None = None) -> None:
    """A person of the dev registry; with `phone`, the dev carriers have that phone registered to them."""
    async with services.pool.acquire() as conn:
        await services.population_registry.enrol(conn, name, id_number, [phone] if phone else [])  # type: ignore[attr-defined]


async def real_named(client: AsyncTestClient, services: Services, name: str = "周瑜") -> dict[str, Any]:
    """A resident at L2: logged in, enrolled in the dev registry, verified."""
    tokens = await login(client)
    for _ in range(
        5
    ):  # a random number another test's account holds (one in a few thousand suites) is drawn again
        id_number = random_id_number()
        await enrol_person(services, name, id_number, tokens["phone"])
        response = await client.post(
            "/api/v1/me/real-name", json={"name": name, "id_number": id_number}, headers=bearer(tokens)
        )
        if response.status_code != 409 or not response.json()["type"].endswith("/id-number-taken"):
            break
    assert response.status_code == 200, response.text
    return {**tokens, "name": name, "id_number": id_number}


async def staff(client: AsyncTestClient, services: Services, role: str = "ops_admin") -> dict[str, Any]:
    tokens = await login(client)
    async with services.pool.acquire() as conn:
        await ResidentRepository().grant_role(conn, uuid.UUID(tokens["resident_id"]), role, "test")
    return tokens


async def signed(
    client: AsyncTestClient,
    credential: dict[str, Any],
    method: str,
    path: str,
    body: Any = None,
    **overrides: Any,
) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = sign_request(credential["key_id"], credential["secret"], method, path, raw, **overrides)
    if raw:
        headers["Content-Type"] = "application/json"
    return await client.request(method, path, content=raw, headers=headers)


async def machine_credential(
    client: AsyncTestClient, services: Services, scopes: list[str], kind: str = "verifier_operator"
) -> dict[str, Any]:
    """A fresh organisation with one credential holding `scopes` (issued through the admin API)."""
    admin = await staff(client, services)
    org = await client.post(
        "/api/v1/admin/organisations",
        headers=bearer(admin),
        json={"name": f"测试机构-{uuid.uuid4().hex[:10]}", "kind": kind, "location": "泰州"},
    )
    assert org.status_code == 201, org.text
    issued = await client.post(
        f"/api/v1/admin/organisations/{org.json()['id']}/credentials",
        headers=bearer(admin),
        json={"scopes": scopes},
    )
    assert issued.status_code == 201, issued.text
    return {**issued.json(), "organisation": org.json(), "admin": admin}


async def rider(client: AsyncTestClient, services: Services, *, agreement: bool = True) -> dict[str, Any]:
    """A real-named resident with an active withholding agreement (recorded as active: no channel is asked)."""
    person = await real_named(client, services)
    async with services.pool.acquire() as conn:
        if agreement:
            await services.payments.transit.grant_agreement(conn, uuid.UUID(person["resident_id"]))
        await services.codes.facts.invalidate_resident(conn, uuid.UUID(person["resident_id"]))
    return person


async def set_transit(
    services: Services, resident_id: uuid.UUID, *, has_agreement: bool, in_debt: bool, blocked: bool
) -> None:
    """Puts a rider in a transit state directly (tests of the code side; payments' own tests go through the
    channels): agreements granted or ended, a synthetic debt recorded or cleared, a block set or lifted."""
    from payments.transit.repository import TransitRepository

    transit, repo = services.payments.transit, TransitRepository()
    async with services.pool.acquire() as conn, conn.transaction():
        agreements = await repo.agreements_of(conn, resident_id)
        active = [a for a in agreements if a.status == "active"]
        if has_agreement and not active:
            await transit.grant_agreement(conn, resident_id)
        if not has_agreement:
            for row in active:
                await repo.end_agreement(conn, row.id, "test")
        debts = await repo.debts_of(conn, resident_id)
        if in_debt and not debts:
            debt = await repo.insert_deduction(
                conn,
                resident_id=resident_id,
                payee_id=uuid.uuid4(),
                agreement_id=None,
                order_id=None,
                out_trade_no=None,
                channel="",
                amount_fen=200,
            )
            await repo.deduction_failed(conn, debt.id, "refused")
        if not in_debt and debts:
            await repo.clear_debts(conn, [d.id for d in debts], "test")
        if blocked:
            await transit.block(conn, resident_id, "test")
        else:
            await transit.unblock(conn, resident_id)
        await services.codes.facts.invalidate_resident(conn, resident_id)


# --- the one code: shared by the tests of tests/code_service/ (codes, verification, gates) ----------------------


async def set_resident_status(
    client: AsyncTestClient, services: Services, resident_id: str, status: str
) -> dict[str, Any]:
    """Operations block or unblock a resident through the admin API."""
    admin = await staff(client, services)
    response = await client.post(
        f"/api/v1/admin/residents/{resident_id}/status",
        headers=bearer(admin),
        json={"status": status, "reason": "test: account review"},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def enterprise_of(client: AsyncTestClient, services: Services) -> tuple[dict[str, Any], dict[str, Any]]:
    """(its legal representative's tokens, the enterprise), created through the API by the representative."""
    rep = await real_named(client, services)
    uscc, name = random_uscc(), f"泰州一码{uuid.uuid4().hex[:8]}有限公司"
    async with services.pool.acquire() as conn:
        await services.legal_entities.enrol(conn, uscc, name, rep["id_number"])  # type: ignore[attr-defined]
    created = await client.post("/api/v1/enterprises", json={"name": name, "uscc": uscc}, headers=bearer(rep))
    assert created.status_code == 201, created.text
    return rep, created.json()


async def join_enterprise(
    client: AsyncTestClient,
    admin: dict[str, Any],
    enterprise_id: str,
    person: dict[str, Any],
    role: str = "member",
) -> dict[str, Any]:
    """`person` joins the enterprise the only way there is: an administrator invites their phone and they accept
    from their own account. Returns the accepted enterprise as the new member sees it."""
    invited = await client.post(
        f"/api/v1/enterprises/{enterprise_id}/invitations",
        json={"phone": person["phone"], "role": role},
        headers=bearer(admin),
    )
    assert invited.status_code == 201, invited.text
    accepted = await client.post(
        f"/api/v1/enterprises/invitations/{invited.json()['id']}/accept", headers=bearer(person)
    )
    assert accepted.status_code == 200, accepted.text
    return accepted.json()  # type: ignore[no-any-return]


async def personal_code(client: AsyncTestClient, person: dict[str, Any]) -> str:
    issued = await client.post("/api/v1/codes/personal", headers=bearer(person))
    assert issued.status_code == 200, issued.text
    return issued.json()["code"]  # type: ignore[no-any-return]


async def code_minter(
    client: AsyncTestClient, services: Services, person: dict[str, Any]
) -> Callable[[dt.datetime], str]:
    """Codes of `person` exactly as the platform signs them, but issued at any moment: what a gate scanned then.
    Taps are proven at their own time, so a test of taps on past days needs codes of those days. (The one place
    tests make codes of the past: a new code format changes this function alone.)"""
    issued = await opened(services, await personal_code(client, person))
    signer = await services.codes.keys.signer()
    epoch = await services.codes.scene_keys.current()
    # As code_service.module derives it: the platform's key for sealing the holder field.
    seal_key = hmac.new(services.platform.settings.token_pepper, b"code-holder-seal", hashlib.sha256).digest()

    def at(moment: dt.datetime) -> str:
        code_id = secrets.token_bytes(8)
        return encode_server_code(
            signer.private_key,
            signer.kid_bytes,
            TYPE_PERSONAL,
            code_id,
            seal_holder(seal_key, code_id, issued.subject),
            int(moment.timestamp()),
            60,
            Flags.from_byte(issued.flags),
            epoch.epoch,
            epoch.keys,
        )

    return at


async def register_device(client: AsyncTestClient, person: dict[str, Any], wallet: Any) -> dict[str, Any]:
    """Registers the wallet's key and loads the credential into it; returns the API's answer."""
    made = await client.post(
        "/api/v1/codes/device-credentials", headers=bearer(person), json={"public_key": wallet.public_key_b64}
    )
    assert made.status_code == 201, made.text
    wallet.load_credential(made.json()["credential"])
    return made.json()  # type: ignore[no-any-return]


async def verify(client: AsyncTestClient, verifier: dict[str, Any], code: str, scene: str) -> Any:
    return await signed(client, verifier, "POST", "/api/v1/verify", {"code": code, "scene": scene})


async def feed_health(
    client: AsyncTestClient, department: dict[str, Any], id_number: str, colour: str
) -> Any:
    fed = await signed(
        client, department, "PUT", "/api/v1/feeds/health", {"id_number": id_number, "colour": colour}
    )
    assert fed.status_code == 200, fed.text
    return fed.json()


async def feed_insurance(
    client: AsyncTestClient, department: dict[str, Any], id_number: str, insured: bool
) -> Any:
    fed = await signed(
        client, department, "PUT", "/api/v1/feeds/insurance", {"id_number": id_number, "insured": insured}
    )
    assert fed.status_code == 200, fed.text
    return fed.json()


async def face_verified(client: AsyncTestClient, person: dict[str, Any]) -> dict[str, Any]:
    """Takes a real-named resident (L2) to L3 through the face check, as the app and the dev liveness vendor do."""
    started = await client.post("/api/v1/me/face-verification/sessions", headers=bearer(person))
    assert started.status_code == 200, started.text
    session_id = started.json()["session_id"]
    vendor = await client.post(f"/api/v1/dev/liveness/{session_id}", json={"outcome": "pass"})
    assert vendor.status_code == 200, vendor.text
    confirmed = await client.post(
        "/api/v1/me/face-verification",
        json={"session_id": session_id, "result_token": vendor.json()["result_token"]},
        headers=bearer(person),
    )
    assert confirmed.status_code == 200 and confirmed.json()["level"] == "L3", confirmed.text
    return person


async def opened(services: Services, code: str, scene: str = "transit", at: float | None = None) -> Any:
    """What the platform reads in a code it issued: the holder and the entitlements in the clear
    (VerificationService.verify_code), which no verifier can read."""
    import time

    async with services.pool.acquire() as conn:
        return await services.codes.verification.verify_code(  # type: ignore[attr-defined]
            conn, code, scene, time.time() if at is None else at
        )


async def scene_keys_of(client: AsyncTestClient, verifier: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/gates/scene-keys as the verifier (what an offline gate loads into OfflineVerifier.scene_keys)."""
    response = await signed(client, verifier, "GET", "/api/v1/gates/scene-keys")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
