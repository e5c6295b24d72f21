"""What the simulated people and gates need before the clock starts, made through the public API, and read back
by the Locust processes.

Residents log in the way a phone does (OTP, the dev SMS outbox, login) and real-name (L2, the level transit and
health require) as a person the dev registry is given for them. Riders sign a WeChat withholding
agreement: the agreement's sign URL is opened at the WeChat sandbox (the rider confirming in WeChat) and the
sandbox's signed notification reaches our notify endpoint, which activates it. A share of residents register a
device key and keep the device credential, to show device codes made offline. For the logins, every resident
links a WeChat and an Alipay user of the city's mini-programs from the app (a fresh code of each, minted by the
channel's sandbox as the phone's wx.login / my.getAuthCode would give it). Machine credentials (gates,
checkpoints) and the demo department's one-login client come from the credentials file `tzt serve` writes for
the demo organisations.

Access tokens last 15 minutes and refresh tokens are single use (a second use ends the session), so only the
runner refreshes, into a tokens file the Locust processes re-read when it changes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OTP_PATH = "/api/v1/auth/otp"
AGREEMENTS_PATH = "/api/v1/payments/transit/agreements"
CONCURRENCY = 16


@dataclass
class Resident:
    id: str
    phone: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    rider: bool = False
    wallet: dict[str, str] | None = field(
        default=None, repr=False
    )  # {"key": DER PKCS#8 b64, "credential": b64}
    wechat_openid: str = ""  # the WeChat user of the city's mini-program linked to this resident
    alipay_user_id: str = ""  # the Alipay user (the sandbox's user id: codes are minted for it)


@dataclass(frozen=True)
class Org:
    name: str
    key_id: str
    secret: str = field(repr=False)
    organisation_id: str = ""


def pick_org(credentials: dict[str, Any], scopes: Iterable[str], prefer_kind: str = "") -> Org:
    """The first organisation whose credential holds every scope (preferring one of `prefer_kind`)."""
    wanted = set(scopes)
    found = [
        (name, c)
        for name, c in credentials.items()
        if isinstance(c, dict) and wanted <= set(c.get("scopes", []))
    ]
    found.sort(key=lambda item: item[1].get("kind") != prefer_kind)
    if not found:
        raise RuntimeError(f"no organisation in the credentials file holds {sorted(wanted)}")
    name, cred = found[0]
    return Org(name, cred["key_id"], cred["secret"], cred.get("organisation_id", ""))


def payee_of(credentials: dict[str, Any]) -> str:
    for cred in credentials.values():
        if isinstance(cred, dict) and cred.get("kind") == "merchant":
            return str(cred["organisation_id"])
    raise RuntimeError("no merchant organisation in the credentials file to be paid")


@dataclass(frozen=True)
class MiniProgram:
    """One mini-program of a channel as the backend is configured with it, and its sandbox's base URL (whose
    test controls play the phone: `/_sandbox/codes` is what wx.login or my.getAuthCode gives)."""

    channel: str
    app_id: str
    sandbox: str


def mini_programs_of(config: dict[str, Any]) -> dict[str, MiniProgram]:
    """The city's own mini-program of each channel (the first app listed: the one payments are made by), from
    the mini-program config `tzt serve` writes (mini-programs.json, TZT_MINI_PROGRAM_CONFIG)."""
    found = {}
    if config.get("wechat"):
        app = config["wechat"][0]
        found["wechat"] = MiniProgram("wechat", app["app_id"], app["api_base_url"].rstrip("/"))
    if config.get("alipay"):
        app = config["alipay"][0]
        found["alipay"] = MiniProgram("alipay", app["app_id"], app["gateway_url"].removesuffix("/gateway.do"))
    return found


def one_login_client(credentials: dict[str, Any]) -> dict[str, str]:
    """The demo department's confidential one-login client (seeded by `tzt serve`, under "one_login")."""
    found = credentials.get("one_login")
    if not isinstance(found, dict) or not found.get("client_id"):
        raise RuntimeError('no one-login client ("one_login") in the credentials file')
    return {k: str(found[k]) for k in ("client_id", "client_secret", "redirect_uri")}


def _phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


def _check(answer: Any, status: int, what: str) -> Any:
    if answer.status_code != status:
        raise RuntimeError(f"{what}: HTTP {answer.status_code} {answer.text[:300]}")
    return answer.json() if answer.content else None


async def _gather(items: Sequence[Any], work: Any) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Any) -> Any:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def _bearer(resident: Resident) -> dict[str, str]:
    return {"Authorization": f"Bearer {resident.access_token}"}


async def create_residents(client: Any, count: int) -> list[Resident]:
    rng = random.SystemRandom()
    phones = list(dict.fromkeys(_phone(rng) for _ in range(count * 2)))[:count]

    async def one(phone: str) -> Resident:
        _check(await client.post(OTP_PATH, json={"phone": phone}), 202, "OTP for a load-test resident")
        outbox = _check(await client.get("/api/v1/dev/outbox", params={"phone": phone}), 200, "dev outbox")
        found = re.search(r"\d{6}", outbox["messages"][-1]["text"])
        if found is None:
            raise RuntimeError("no code in the dev outbox message")
        tokens = _check(
            await client.post("/api/v1/auth/login", json={"phone": phone, "otp": found.group(0)}),
            200,
            "login",
        )
        return Resident(str(tokens["resident_id"]), phone, tokens["access_token"], tokens["refresh_token"])

    return await _gather(phones, one)


def _id_number(rng: random.Random) -> str:
    """A valid, random ID number of a Taizhou district (the check character as GB 11643 computes it)."""
    from app_backend.identity.validators import id_number_check_char

    born = f"{rng.randrange(1950, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    first17 = f"321202{born}{rng.randrange(1000):03d}"
    return first17 + id_number_check_char(first17)


async def real_name_residents(client: Any, residents: Sequence[Resident]) -> None:
    """Residents at L2, the level transit and health require (docs/api.md: each scene's minimum level). The
    person is enrolled in the dev population registry with the resident's phone (a dev-only route: real-name
    needs the registry to hold the person and the carriers to have the phone registered to them), then the
    resident real-names through the API as a phone would."""
    rng = random.SystemRandom()

    async def one(resident: Resident) -> None:
        for _ in range(3):  # another run may have claimed a random ID number already
            person = {"name": "周瑜", "id_number": _id_number(rng)}
            _check(
                await client.post("/api/v1/dev/registry/people", json={**person, "phones": [resident.phone]}),
                204,
                "dev registry enrolment",
            )
            answer = await client.post("/api/v1/me/real-name", json=person, headers=_bearer(resident))
            if answer.status_code != 409:
                _check(answer, 200, "real-name")
                return
        raise RuntimeError("real-name of a load-test resident: every ID number tried was taken")

    await _gather(residents, one)


async def sign_agreements(
    client: Any, http: Any, residents: Sequence[Resident], within_s: float = 30.0
) -> None:
    """Every resident given signs a WeChat withholding agreement and waits for it to be active."""

    async def sign(resident: Resident) -> None:
        made = _check(
            await client.post(
                AGREEMENTS_PATH,
                headers=_bearer(resident),
                json={"channel": "wechat", "payer_channel_id": "oLoad" + secrets.token_hex(8)},
            ),
            201,
            "withholding agreement",
        )
        # The rider confirms in WeChat: the sandbox signs the contract and sends its notification to our
        # notify endpoint itself; it is relayed here too so that activation does not wait on its retries.
        confirmed = _check(await http.get(made["sign_params"]["url"]), 200, "WeChat sandbox papay page")
        note = confirmed["notification"]
        await client.post(
            "/api/v1/payments/notify/wechat",
            content=note["body"],
            headers={"Content-Type": note["content_type"]},
        )

    async def active(resident: Resident) -> bool:
        mine = _check(await client.get(AGREEMENTS_PATH, headers=_bearer(resident)), 200, "my agreements")
        return any(a["status"] == "active" for a in mine)

    await _gather(residents, sign)
    deadline = time.monotonic() + within_s
    waiting = list(residents)
    while waiting:
        flags = await _gather(waiting, active)
        waiting = [r for r, ok in zip(waiting, flags, strict=True) if not ok]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(waiting)} withholding agreements did not become active in {within_s:g} s"
            )
        if waiting:
            await asyncio.sleep(0.5)
    for resident in residents:
        resident.rider = True


async def register_devices(client: Any, residents: Sequence[Resident]) -> None:
    """A device key per resident given, registered for a device credential (after the agreement: the credential
    carries the entitlements of the moment it is issued)."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from code_service.holder import DeviceWallet

    async def one(resident: Resident) -> None:
        wallet = DeviceWallet.create()
        answer = _check(
            await client.post(
                "/api/v1/codes/device-credentials",
                json={"public_key": wallet.public_key_b64},
                headers=_bearer(resident),
            ),
            201,
            "device credential",
        )
        # The key this credential binds (made for it alone): a phone of the kit loads it as the pending key.
        key = wallet.pending_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        resident.wallet = {"key": base64.b64encode(key).decode(), "credential": answer["credential"]}

    await _gather(residents, one)


async def link_mini_programs(
    client: Any, http: Any, residents: Sequence[Resident], apps: dict[str, MiniProgram]
) -> None:
    """Every resident links a WeChat and an Alipay user of the city's mini-programs from the app, with a fresh
    code of a user new to the sandbox: afterwards that user's logins are a returning resident's."""

    async def one(resident: Resident) -> None:
        if "wechat" in apps:
            app = apps["wechat"]
            wx = _check(
                await http.post(f"{app.sandbox}/_sandbox/codes", json={"appid": app.app_id}),
                200,
                "wx.login code (WeChat sandbox)",
            )
            _check(
                await client.post(
                    "/api/v1/me/mini-program-identities/wechat",
                    json={"app_id": app.app_id, "code": wx["code"]},
                    headers=_bearer(resident),
                ),
                201,
                "linking a WeChat mini-program user",
            )
            resident.wechat_openid = str(wx["openid"])
        if "alipay" in apps:
            app = apps["alipay"]
            auth = _check(
                await http.post(f"{app.sandbox}/_sandbox/codes", json={"app_id": app.app_id}),
                200,
                "my.getAuthCode code (Alipay sandbox)",
            )
            _check(
                await client.post(
                    "/api/v1/me/mini-program-identities/alipay",
                    json={"app_id": app.app_id, "code": auth["code"]},
                    headers=_bearer(resident),
                ),
                201,
                "linking an Alipay mini-program user",
            )
            resident.alipay_user_id = str(auth["user_id"])

    await _gather(residents, one)


async def refresh_tokens(client: Any, residents: Sequence[Resident]) -> int:
    """New access tokens for everyone (refresh tokens rotate: the old one is spent). Returns how many failed."""

    async def one(resident: Resident) -> bool:
        answer = await client.post("/api/v1/auth/refresh", json={"refresh_token": resident.refresh_token})
        if answer.status_code != 200:
            return False
        tokens = answer.json()
        resident.access_token, resident.refresh_token = tokens["access_token"], tokens["refresh_token"]
        return True

    return sum(1 for ok in await _gather(residents, one) if not ok)


def _write_private(path: Path, data: Any) -> None:
    """Atomically, readable by this user only (tokens and machine secrets of throwaway dev data)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    tmp.replace(path)


def write_tokens(path: Path, residents: Sequence[Resident]) -> None:
    _write_private(path, {"written_at": time.time(), "tokens": {r.id: r.access_token for r in residents}})


def write_fixtures(path: Path, data: dict[str, Any], residents: Sequence[Resident]) -> None:
    people = [
        {k: v for k, v in asdict(r).items() if k not in ("access_token", "refresh_token")} for r in residents
    ]
    _write_private(path, {**data, "residents": people})


# ------------------------------------------------------------------------------------------------------------
# Locust side
# ------------------------------------------------------------------------------------------------------------


class TokenBook:
    """Access tokens by resident id, re-read when the runner has written new ones."""

    def __init__(self, path: Path, check_every_s: float = 5.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self.tokens: dict[str, str] = {}
        self._mtime = 0.0
        self._checked = 0.0
        self._reload()

    def _reload(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self.tokens = json.loads(self.path.read_text())["tokens"]
            self._mtime = mtime

    def get(self, resident_id: str) -> str:
        now = time.monotonic()
        if now - self._checked > self.check_every_s:
            self._checked = now
            self._reload()
        return self.tokens[resident_id]


class ResidentPool:
    """Residents handed out round robin in an order of this process's own, so several processes spread over
    all of them and any stretch of the round mixes residents with and without a device key."""

    def __init__(self, residents: Sequence[dict[str, Any]]) -> None:
        if not residents:
            raise RuntimeError("the fixtures hold no residents")
        self.residents = list(residents)
        random.shuffle(self.residents)  # every process its own order
        self.next = 0

    def take(self, riders_only: bool = False) -> dict[str, Any]:
        for _ in range(len(self.residents)):
            self.next = (self.next + 1) % len(self.residents)
            resident = self.residents[self.next]
            if resident["rider"] or not riders_only:
                return resident
        raise RuntimeError("no rider with a withholding agreement in the fixtures")
