"""Setup through the API, outside any measured window: residents logged in, their withholding agreements,
device credentials, fresh server codes, and one sample answer of each verify row."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadtests.bench.endpoints import AUTHORIZE_PATH, ISSUE_PATH, TILES_PATH, VERIFY_PATH


@dataclass
class Resident:
    phone: str
    token: str


def _random_phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


async def create_residents(base: str, count: int) -> list[Resident]:
    import httpx

    rng = random.SystemRandom()
    phones = list({_random_phone(rng) for _ in range(count * 2)})[:count]
    gate = asyncio.Semaphore(16)

    async def one(client: httpx.AsyncClient, phone: str) -> Resident:
        async with gate:
            sent = await client.post("/api/v1/auth/otp", json={"phone": phone})
            if sent.status_code != 202:
                raise RuntimeError(f"OTP for a bench resident: {sent.status_code} {sent.text}")
            outbox = (await client.get("/api/v1/dev/outbox", params={"phone": phone})).json()
            found = re.search(r"\d{6}", outbox["messages"][-1]["text"])
            assert found is not None
            login = await client.post("/api/v1/auth/login", json={"phone": phone, "otp": found.group(0)})
            if login.status_code != 200:
                raise RuntimeError(f"login of a bench resident: {login.status_code} {login.text}")
            return Resident(phone, login.json()["access_token"])

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return list(await asyncio.gather(*(one(client, p) for p in phones)))


async def real_name(base: str, residents: Sequence[Resident]) -> None:
    """Residents at L2, the level transit and health require (below it a verification is refused early, and the
    rows would measure a refusal): as the load-test kit makes its residents (loadtests.fixtures)."""
    import httpx

    from loadtests.fixtures import Resident as Person
    from loadtests.fixtures import real_name_residents

    people = [Person("", r.phone, r.token, "") for r in residents]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await real_name_residents(client, people)


async def give_agreements(base: str, residents: Sequence[Resident]) -> None:
    """Withholding agreements through the WeChat sandbox, so that transit answers are the usual 'ok' (a refused
    single-use code costs one more Redis command to give its claim back)."""
    import httpx

    from loadtests.fixtures import Resident as Rider
    from loadtests.fixtures import sign_agreements

    riders = [Rider("", r.phone, r.token, "") for r in residents]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client, httpx.AsyncClient(timeout=30) as http:
        await sign_agreements(client, http, riders)


async def issue_codes(base: str, residents: Sequence[Resident]) -> list[str]:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post(ISSUE_PATH, headers={"Authorization": f"Bearer {r.token}"}) for r in residents)
        )
    return [a.json()["code"] for a in answers if a.status_code == 200]


async def device_wallets(base: str, residents: Sequence[Resident]) -> list[tuple[bytes, str]]:
    import httpx
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from code_service.holder import DeviceWallet

    out = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for resident in residents:
            wallet = DeviceWallet.create()
            answer = await client.post(
                "/api/v1/codes/device-credentials",
                json={"public_key": wallet.public_key_b64},
                headers={"Authorization": f"Bearer {resident.token}"},
            )
            if answer.status_code != 201:
                raise RuntimeError(f"device credential: {answer.status_code} {answer.text}")
            key_der = wallet.pending_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
            out.append((key_der, answer.json()["credential"]))
    return out


def sample_answer(
    base: str, creds: dict[str, str], code: str, scene: str, extra: dict[str, str] | None = None
) -> tuple[int, str]:
    import httpx

    from app_backend.organisations.signing import sign_request

    body = json.dumps({"code": code, "scene": scene, **(extra or {})}).encode()
    headers = sign_request(creds["key_id"], creds["secret"], "POST", VERIFY_PATH, body)
    answer = httpx.post(
        base + VERIFY_PATH, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=10
    )
    return answer.status_code, answer.text


@dataclass
class MiniProgram:
    """The city's WeChat mini-program as `tzt serve` configured it (its sandbox) and WeChat users linked to
    residents through it."""

    sandbox: str
    app_id: str
    openids: list[str]


async def mini_program_users(base: str, config: dict[str, Any], count: int) -> MiniProgram:
    """`count` WeChat users of the city's mini-program, each linked by a first login with the phone button."""
    import httpx

    app = config["wechat"][0]
    sandbox, app_id = app["api_base_url"].rstrip("/"), app["app_id"]
    rng = random.SystemRandom()

    async def one(client: httpx.AsyncClient, phone: str) -> str:
        wx = (await client.post(f"{sandbox}/_sandbox/codes", json={"appid": app_id})).json()
        phone_code = (
            await client.post(f"{sandbox}/_sandbox/phone-codes", json={"appid": app_id, "phone": phone})
        ).json()["code"]
        login = await client.post(
            f"{base}/api/v1/mini-programs/wechat/login",
            json={"app_id": app_id, "code": wx["code"], "phone_code": phone_code},
        )
        if login.status_code != 200:
            raise RuntimeError(f"mini-program login of a bench user: {login.status_code} {login.text}")
        return str(wx["openid"])

    phones = list({_random_phone(rng) for _ in range(count * 2)})[:count]
    async with httpx.AsyncClient(timeout=30) as client:
        openids = list(await asyncio.gather(*(one(client, p) for p in phones)))
    return MiniProgram(sandbox, app_id, openids)


async def login_codes(mini: MiniProgram, count: int) -> list[str]:
    """`count` fresh wx.login codes spread over the linked users (each code logs in once)."""
    import httpx

    per_user = max(1, -(-count // len(mini.openids)))
    codes: list[str] = []
    async with httpx.AsyncClient(timeout=60) as client:
        for openid in mini.openids:
            answer = await client.post(
                f"{mini.sandbox}/_sandbox/codes",
                json={"appid": mini.app_id, "openid": openid, "count": per_user},
            )
            codes += answer.json()["codes"]
    random.SystemRandom().shuffle(codes)
    return codes[:count]


async def authorization_codes(
    base: str, residents: Sequence[Resident], client: dict[str, str], count: int
) -> list[tuple[str, str]]:
    """`count` fresh one-login authorization codes for the demo department's app, with their PKCE verifiers:
    each resident's app session asks the authorization endpoint (scope openid: no consent page), as the app's
    web-view does. Codes live two minutes: mint them just before the token row."""
    import base64
    import hashlib
    import secrets
    from urllib.parse import parse_qs, urlsplit

    import httpx

    gate = asyncio.Semaphore(8)

    async def one(http: httpx.AsyncClient, resident: Resident) -> tuple[str, str] | None:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        params = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uri"],
            "scope": "openid",
            "state": secrets.token_hex(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        async with gate:
            answer = await http.get(
                AUTHORIZE_PATH, params=params, headers={"Authorization": f"Bearer {resident.token}"}
            )
        codes = parse_qs(urlsplit(answer.headers.get("location", "")).query).get("code")
        return (codes[0], verifier) if answer.status_code == 302 and codes else None

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        minted = await asyncio.gather(*(one(http, residents[i % len(residents)]) for i in range(count)))
    return [m for m in minted if m is not None]


def demo_tiles(base: str) -> dict[str, str]:
    """The live demo tiles' ids by name (the catalogue, no token)."""
    import httpx

    answer = httpx.get(base + TILES_PATH, timeout=30)
    answer.raise_for_status()
    return {t["name"]: t["id"] for t in answer.json()["tiles"]}


async def ticket_sales(base: str, count: int) -> list[dict[str, str]]:
    """Sessions on sale for the hold row (issue 17), set up through the API as an organiser would: the demo staff
    member makes an organising department with events:publish, which publishes an event, a venue and `count`
    sessions and opens their sales (one class of 1,000,000 tickets each, no queue, 20 per person). Each:
    {"session_id", "class_id"}."""
    import datetime as dt

    import httpx

    from app_backend.composition.seed import DEMO_STAFF_PHONE
    from app_backend.organisations.signing import sign_request

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await client.post("/api/v1/auth/otp", json={"phone": DEMO_STAFF_PHONE})
        outbox = (await client.get("/api/v1/dev/outbox", params={"phone": DEMO_STAFF_PHONE})).json()
        found = re.search(r"\d{6}", outbox["messages"][-1]["text"])
        assert found is not None
        login = await client.post(
            "/api/v1/auth/login", json={"phone": DEMO_STAFF_PHONE, "otp": found.group(0)}
        )
        staff = {"Authorization": f"Bearer {login.json()['access_token']}"}
        name = f"省运会组委会-{random.SystemRandom().randrange(10**6)}"
        org = await client.post(
            "/api/v1/admin/organisations",
            headers=staff,
            json={"name": name, "kind": "department", "location": "泰州"},
        )
        org.raise_for_status()
        issued = await client.post(
            f"/api/v1/admin/organisations/{org.json()['id']}/credentials",
            headers=staff,
            json={"scopes": ["events:publish"]},
        )
        issued.raise_for_status()
        key_id, secret = issued.json()["key_id"], issued.json()["secret"]

        async def signed(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            raw = json.dumps(body).encode()
            headers = sign_request(key_id, secret, method, path, raw)
            headers["Content-Type"] = "application/json"
            answer = await client.request(method, path, content=raw, headers=headers)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"ticket sale set-up: {path}: {answer.status_code} {answer.text}")
            return answer.json()  # type: ignore[no-any-return]

        manage = "/api/v1/events/manage"
        event = await signed(
            "POST",
            f"{manage}/events",
            {"name": "省运会", "description": "基准", "starts_on": "2026-09-01", "ends_on": "2026-09-15"},
        )
        competition = await signed(
            "POST", f"{manage}/events/{event['id']}/competitions", {"sport": "游泳", "name": "游泳决赛"}
        )
        venue = await signed(
            "POST",
            f"{manage}/venues",
            {
                "name": "泰州市体育中心游泳馆",
                "address": "泰州市海陵区体育路1号",
                "district": "321202",
                "sections": ["A区"],
                "entrances": ["东门"],
                "transport_notes": "",
                "accessibility_notes": "",
                "gate_verifiers": [],
            },
        )
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        sales = []
        for n in range(count):
            session = await signed(
                "POST",
                f"{manage}/sessions",
                {
                    "competition_id": competition["id"],
                    "venue_id": venue["id"],
                    "title": f"游泳决赛 基准第{n + 1}场",
                    "starts_at": (now + dt.timedelta(days=7)).isoformat(),
                    "ends_at": (now + dt.timedelta(days=7, hours=2)).isoformat(),
                },
            )
            sale = await signed(
                "PUT",
                f"/api/v1/tickets/sessions/{session['id']}/sale",
                {
                    "classes": [{"name": "A区看台", "price_fen": 8000, "section": "A区", "quota": 1_000_000}],
                    "opens_at": (now - dt.timedelta(minutes=1)).isoformat(),
                    "closes_at": (now + dt.timedelta(days=1)).isoformat(),
                    "per_person": 20,
                    "admit_per_minute": 0,
                },
            )
            sales.append({"session_id": session["id"], "class_id": sale["classes"][0]["id"]})
    return sales


PER_PERSON = 20


def hold_requests(
    sales: Sequence[dict[str, str]], tokens: Sequence[str], count: int
) -> list[tuple[str, str]]:
    """(token, body) per request: each resident holds one ticket for themself, their j-th request in the j-th
    session (cycling), so the per-person limit (20 per session) refuses none while count <= 20 x sessions x
    residents (then the requests are cut there)."""
    count = min(count, PER_PERSON * len(sales) * len(tokens))
    return [
        (
            tokens[i % len(tokens)],
            json.dumps(
                {
                    "session_id": sales[(i // len(tokens)) % len(sales)]["session_id"],
                    "class_id": sales[(i // len(tokens)) % len(sales)]["class_id"],
                    "attendees": [{}],
                }
            ),
        )
        for i in range(count)
    ]
