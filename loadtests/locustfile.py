"""Locust users of the Taizhou Tong load test. Run through the runner, which sizes the plan, prepares the fixtures
and writes the run spec this file reads (`TZT_LOADTEST_RUN`):

    python -m loadtests.run --scenario event_entry [--attendees 40000 --window-minutes 45 --gates 60]

Users (FastHttpUser; each is one person "slot": one arrival every `seconds_in_system` seconds):
- RiderUser: shows a code at an entry gate (a device code made offline when the phone has a device key, else a
  server code, POST /api/v1/codes/personal), the gate verifies it online (signed POST /api/v1/verify, transit)
  and keeps a tap; the ride; the same at the exit gate.
- CheckpointUser: opens the code on the way and shows it at a checkpoint, which verifies it online (signed,
  health: the checkpoint scene).
- AttendeeUser (event_entry): holds a paid ticket; opens the code on the way and shows it at the gate of their
  ticket's entrance, which verifies it online in the event scene (occasion: the session).
- PayerUser: creates an order with an Idempotency-Key (some are retried with the same key and must get the same
  order), pays it in the channel's sandbox, relays the channel's signed notification to our notify endpoint and
  checks the order is paid.
- GateUser (fixed count, one per gate): uploads the taps it holds every `tap_batch_seconds` (signed
  POST /api/v1/gates/taps) with the code each rider showed as the tap's proof; a batch not acknowledged with a
  2xx answer is kept and sent again.
- WeChatLoginUser: a WeChat user opens the city's mini-program: its phone gets a wx.login code (from the WeChat
  sandbox's test control, as WeChat would give it) and logs in with it as the resident it is linked to; a share
  are users never seen, answered 422 phone-required, who tap the getPhoneNumber button and log in with both
  codes (a new resident, L1).
- AlipayLoginUser: an Alipay user linked to a resident: my.getAuthCode (the Alipay sandbox), login.
- TicketBuyerUser (ticket_rush; fixed count): drives its share of the rush's buyers, each when due: arrives
  around the opening and joins the sale's queue, polls at half its estimated wait (2 to 30 s), holds a ticket
  with its pass once admitted (the other class when one is sold out), pays it in a channel's sandbox (the
  notification relayed), checks it holds a valid ticket; told sold out (409) it stops. Each buyer is tallied
  with a ticket or sold out.
- OneLoginUser: a resident opens a department's app from Taizhou Tong: the web-view asks GET /oidc/authorize
  with the resident's bearer session (302 back to the app with a code), the department's server exchanges the
  code with its PKCE verifier (POST /oidc/token, client_secret_basic) and reads GET /oidc/userinfo; a share also
  refresh (the answer carries the next refresh token).

Every answer is ok, shed (429/503 with Retry-After; reported under the name + " [shed]") or a failure."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import gevent
from cryptography.hazmat.primitives.serialization import load_der_private_key
from geventhttpclient.client import HTTPClientPool
from locust import FastHttpUser, LoadTestShape, constant, constant_pacing, events, task
from locust.runners import MasterRunner, WorkerRunner

from app_backend.composition.sizing import Stage
from app_backend.organisations.signing import sign_request
from code_service.holder import DeviceWallet
from loadtests.fixtures import Org, ResidentPool, TokenBook
from loadtests.shapes import target_at
from loadtests.slo import SHED_SUFFIX, classify
from loadtests.tally import Tally


def _spec() -> dict[str, Any]:
    path = os.environ.get("TZT_LOADTEST_RUN")
    if not path:
        raise SystemExit("TZT_LOADTEST_RUN is not set: start load tests with `python -m loadtests.run`")
    return dict(json.loads(Path(path).read_text()))


SPEC = _spec()
FIXTURES = json.loads(Path(SPEC["fixtures"]).read_text())
TOKENS = TokenBook(Path(SPEC["tokens"]))
POOL = ResidentPool(FIXTURES["residents"])
TALLY = Tally(Path(SPEC["out_dir"]))
ORGS = {role: Org(**org) for role, org in FIXTURES["orgs"].items()}
RUSH: dict[str, Any] = FIXTURES.get("rush") or {}  # the ticket rush's sale and its buyer drivers
VISITS = {visit["user_class"]: visit for visit in SPEC["visits"]}
STATIONS = ["泰州站", "鼓楼路", "坡子街", "稻河古街区", "海陵北路", "凤城河", "医药城", "高港"]
VERIFY = "/api/v1/verify"
TIMEOUT_S = float(SPEC["timeout_s"])
rng = random.Random()  # noqa: S311 - simulated behaviour, not security


class PlanShape(LoadTestShape):
    """The plan's stages (ramp, plateau, surge, decay), the gates on top."""

    stages = tuple(Stage(**stage) for stage in SPEC["stages"])
    fixed_users = int(SPEC["gates"]) + int(RUSH.get("drivers", 0))  # the gates, the rush's buyer drivers

    def tick(self) -> tuple[int, float] | None:
        return target_at(self.stages, self.get_run_time(), self.fixed_users)


@events.test_start.add_listener
def _started(environment: Any, **_: Any) -> None:
    """The master (or the only process) notes when the shape's clock started: the runner's windows count from it."""
    if not isinstance(environment.runner, WorkerRunner):
        (Path(SPEC["out_dir"]) / "started.json").write_text(json.dumps({"started_at": time.time()}))


@events.test_stop.add_listener
def _stopped(**_: Any) -> None:
    TALLY.dump()


@events.quitting.add_listener
def _quitting(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        TALLY.dump()


# ------------------------------------------------------------------------------------------------------------
# Phones and gates of this process
# ------------------------------------------------------------------------------------------------------------

_wallets: dict[str, DeviceWallet] = {}


def wallet_of(resident: dict[str, Any]) -> DeviceWallet | None:
    """The phone's device key and credential (loaded once per process, counters from a random start so that
    two processes showing the same phone's codes in the same second do not make the same code id)."""
    if not resident.get("wallet"):
        return None
    wallet = _wallets.get(resident["id"])
    if wallet is None:
        key = load_der_private_key(base64.b64decode(resident["wallet"]["key"]), None)
        # The key the credential was asked with (a fresh one per credential): the wallet's pending key.
        wallet = DeviceWallet(pending_key=key)  # type: ignore[arg-type]
        wallet.load_credential(resident["wallet"]["credential"])
        wallet.counter = rng.randrange(0x10000)
        _wallets[resident["id"]] = wallet
    return wallet


def times(mean: float) -> int:
    """A whole number of actions with the given mean (1.5 -> 1 or 2)."""
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0)


class GateHub:
    """The taps of this process's gates, until uploaded. A tap goes to a running gate at random; taps made
    while no gate runs here wait for the next gate's upload."""

    def __init__(self) -> None:
        self.held: dict[str, list[dict[str, Any]]] = {}
        self.waiting: list[dict[str, Any]] = []

    def open(self, gate_id: str) -> None:
        self.held[gate_id] = []

    def close(self, gate_id: str) -> list[dict[str, Any]]:
        return self.held.pop(gate_id, [])

    def keep(self, tap: dict[str, Any]) -> None:
        gates = list(self.held)
        (self.held[rng.choice(gates)] if gates else self.waiting).append(tap)

    def take(self, gate_id: str, limit: int = 5000) -> list[dict[str, Any]]:
        mine = self.held.get(gate_id, [])
        batch = (mine + self.waiting)[:limit]
        taken = len(batch)
        from_mine = min(taken, len(mine))
        del mine[:from_mine]
        del self.waiting[: taken - from_mine]
        return batch

    def give_back(self, gate_id: str, taps: list[dict[str, Any]]) -> None:
        (self.held[gate_id] if gate_id in self.held else self.waiting)[:0] = taps


HUB = GateHub()


def _tap(code: str, answer: dict[str, Any], direction: str, station: str, gate_id: str) -> dict[str, Any]:
    """A tap as a gate uploads it: the scanned code is its proof (the platform derives the rider from it)."""
    return {
        "tap_id": "lt-" + uuid.uuid4().hex,
        "gate_id": gate_id,
        "line": "1",
        "station": station,
        "direction": direction,
        "tapped_at": dt.datetime.now(dt.UTC).isoformat(),
        "code": code,
        "rider_token": str(answer.get("rider_token", "")),
    }


# ------------------------------------------------------------------------------------------------------------
# Users
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    outcome: str
    status: int
    body: Any = None
    retry_after: float = 0.0  # what a shed answer's Retry-After asked for, in seconds

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _no_answer(error: BaseException | None) -> str:
    """What kind of "no answer": geventhttpclient wraps the cause (`original`) in RetriesExceeded."""
    cause = getattr(error, "original", None) or error
    if isinstance(cause, TimeoutError | gevent.Timeout):
        return "no answer: timeout"
    if isinstance(cause, ConnectionRefusedError):
        return "no answer: connection refused"
    if isinstance(cause, ConnectionError):
        return "no answer: connection reset or closed"
    return f"no answer: {type(cause).__name__}"


def _failure_text(status: int, error: BaseException | None) -> str:
    if not status:
        return _no_answer(error)
    if status in (429, 503):
        return f"HTTP {status} without Retry-After"
    return f"HTTP {status}"


def _body(response: Any) -> Any:
    """JSON answers parsed; others (the channels' notify acknowledgements) as text."""
    if not response.content:
        return None
    if "json" in (response.headers.get("Content-Type") or ""):
        return response.json()
    return response.text


def shared_connections() -> HTTPClientPool | None:
    """One connection pool for every user of a class in this process, as a load balancer's upstream pool would
    be; with `--connections 0` every user (phone, gate) holds its own connections to the server instead."""
    if not SPEC["connections"]:
        return None
    return HTTPClientPool(
        concurrency=int(SPEC["connections"]), network_timeout=TIMEOUT_S, connection_timeout=TIMEOUT_S
    )


class TztUser(FastHttpUser):
    abstract = True
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    wait_time = constant_pacing(float(SPEC["seconds_in_system"]))

    def call(
        self,
        method: str,
        url: str,
        name: str = "",
        check: Any = None,
        expect: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> Answer:
        """One request, classified ok / shed / failure, with a deadline for the whole of it (waiting for a
        pooled connection included): a hung server shows as timeouts. `check(body)` may turn a 2xx answer (or
        one of the `expect`ed statuses: a redirect, the 422 that asks for the phone) into a failure by returning
        why."""
        name = name or url
        started = time.time()
        try:
            with gevent.Timeout(TIMEOUT_S):
                answer = self._send(method, url, name, check, expect, **kwargs)
        except gevent.Timeout:
            answer = Answer("failure", 0)
            self.environment.events.request.fire(
                request_type=method,
                name=name,
                response_time=(time.time() - started) * 1000,
                response_length=0,
                response=None,
                context={},
                exception=TimeoutError(f"no answer: timeout (whole request over {TIMEOUT_S:g} s)"),
            )
        TALLY.request(f"{method} {name}", started, time.time(), answer.outcome)  # type: ignore[arg-type]
        return answer

    def _send(
        self, method: str, url: str, name: str, check: Any, expect: frozenset[int], **kwargs: Any
    ) -> Answer:
        body: Any = None
        with self.client.request(method, url, name=name, catch_response=True, **kwargs) as response:
            status = response.status_code or 0
            error = getattr(response, "error", None)
            outcome = classify(
                status, response.headers.get("Retry-After") if response.headers else None, error
            )
            if status in expect:
                outcome = "ok"
            if outcome == "ok":
                body = response if 300 <= status < 400 else _body(response)
                problem = check(body) if check else None
                if problem:
                    outcome = "failure"
                    response.failure(problem)
                else:
                    response.success()
            elif outcome == "shed":
                response.request_meta["name"] = name + SHED_SUFFIX
                response.success()
            else:
                response.failure(_failure_text(status, error))
        wait = 0.0
        if outcome == "shed":
            try:
                wait = float(response.headers.get("Retry-After") or 0)
            except ValueError:
                wait = 0.0
        return Answer(outcome, status, body, wait)

    def pay_and_notify(self, channel: str, order: dict[str, Any]) -> bool:
        """The buyer pays in the channel's sandbox; the channel's signed notification reaches our endpoint."""
        paid = self.call(
            "POST",
            f"{FIXTURES['sandboxes'][channel]}/_sandbox/trades/{order['out_trade_no']}/pay",
            f"/_sandbox/trades/{{no}}/pay [{channel}]",
            json={"deliver": False},
        )
        if not paid.ok:
            return False
        note = paid.body["notification"]
        notify = f"/api/v1/payments/notify/{channel}"
        content = {"data": note["body"].encode(), "headers": {"Content-Type": note["content_type"]}}
        return self.call("POST", notify, **content).ok

    def as_resident(self, resident: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS.get(resident['id'])}"}

    def signed(self, org: Org, method: str, path: str, payload: Any, name: str = "") -> Answer:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = sign_request(org.key_id, org.secret, method, path, body)
        return self.call(
            method, path, name, data=body, headers={**headers, "Content-Type": "application/json"}
        )

    def show_code(self, resident: dict[str, Any]) -> str | None:
        wallet = wallet_of(resident)
        if wallet is not None:
            TALLY.count("device codes shown (made on the phone, no request)")
            return wallet.code()
        answer = self.call("POST", "/api/v1/codes/personal", headers=self.as_resident(resident))
        return str(answer.body["code"]) if answer.ok else None

    def verify(
        self, role: str, code: str, scene: str, at: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        answer = self.signed(
            ORGS[role], "POST", VERIFY, {"code": code, "scene": scene, **(at or {})}, f"{VERIFY} [{scene}]"
        )
        if not answer.ok:
            return None
        TALLY.verdict(scene, answer.body)
        return dict(answer.body)


class RiderUser(TztUser):
    weight = int(VISITS.get("RiderUser", {}).get("weight", 1))
    client_pool = shared_connections()

    def pass_gate(self, rider: dict[str, Any], direction: str, station: str) -> bool:
        code = self.show_code(rider)
        if code is None:
            return False
        answer = self.verify("transit", code, "transit")
        if not answer or not answer.get("allowed"):
            return False  # the gate stays shut
        HUB.keep(_tap(code, answer, direction, station, gate_id=""))
        return True

    @task
    def ride(self) -> None:
        rider = POOL.take(riders_only=True)
        entry, exit_ = rng.sample(STATIONS, 2)
        if self.pass_gate(rider, "in", entry):
            gevent.sleep(float(SPEC["ride_seconds"]))
            self.pass_gate(rider, "out", exit_)


class CheckpointUser(TztUser):
    weight = int(VISITS.get("CheckpointUser", {}).get("weight", 1))
    client_pool = shared_connections()

    @task
    def enter(self) -> None:
        visit = VISITS["CheckpointUser"]
        person = POOL.take()
        code = None
        for _ in range(times(float(visit["displays"])) or 1):
            code = self.show_code(person)
        for _ in range(times(float(visit["scans"]))):
            if code is not None:
                self.verify("checkpoint", code, "health")


class AttendeeUser(TztUser):
    """event_entry: an attendee with a paid ticket opens the code on the way and shows it at the venue gate of
    their ticket's entrance, which verifies it online in the event scene for the session."""

    weight = int(VISITS.get("AttendeeUser", {}).get("weight", 1))
    client_pool = shared_connections()

    @task
    def enter(self) -> None:
        visit, entry = VISITS["AttendeeUser"], FIXTURES["entry"]
        person = POOL.take()
        code = None
        for _ in range(times(float(visit["displays"])) or 1):
            code = self.show_code(person)
        if code is None:
            return
        at = {"occasion_id": entry["session_id"], "entrance": entry["entrances"][person["id"]]}
        for _ in range(times(float(visit["scans"]))):
            self.verify("gate", code, "event", at)


class PayerUser(TztUser):
    weight = int(VISITS.get("PayerUser", {}).get("weight", 1))
    client_pool = shared_connections()
    retry_share = 0.1  # orders sent again with the same key, as an app that did not see the answer does

    def create_order(self, payer: dict[str, Any], channel: str) -> dict[str, Any] | None:
        key = uuid.uuid4().hex
        order = {
            "purpose": "ticket",
            "amount_fen": rng.randrange(100, 50_000),
            "subject": "泰州体育中心 门票",
            "payee_id": FIXTURES["payee_id"],
            "channel": channel,
            "method": "native",
        }
        headers = {**self.as_resident(payer), "Idempotency-Key": key}
        first = self.call("POST", "/api/v1/payments/orders", json=order, headers=headers)
        if not first.ok:
            return None
        if rng.random() < self.retry_share:
            made = first.body["id"]
            self.call(
                "POST",
                "/api/v1/payments/orders",
                "/api/v1/payments/orders [retry, same key]",
                check=lambda body: None if body["id"] == made else "a second order for one Idempotency-Key",
                json=order,
                headers=headers,
            )
            TALLY.count("orders sent twice with one Idempotency-Key")
        return dict(first.body)

    @task
    def pay(self) -> None:
        payer = POOL.take()
        channel = rng.choice(sorted(FIXTURES["sandboxes"]))
        order = self.create_order(payer, channel)
        if order is None:
            return
        TALLY.count("orders created")
        if not self.pay_and_notify(channel, order):
            return
        checked = self.call(
            "GET",
            f"/api/v1/payments/orders/{order['id']}",
            "/api/v1/payments/orders/{id}",
            check=lambda body: (
                None if body["status"] == "paid" else f"order {body['status']} after notification"
            ),
            headers=self.as_resident(payer),
        )
        if checked.ok:
            TALLY.count("orders paid")


class GateUser(TztUser):
    fixed_count = int(SPEC["gates"])
    client_pool = shared_connections()
    wait_time = constant_pacing(float(SPEC["tap_batch_seconds"]))
    gate_number = 0

    def on_start(self) -> None:
        GateUser.gate_number += 1
        self.gate_id = f"L1-G{GateUser.gate_number:03d}-{os.getpid()}"
        HUB.open(self.gate_id)

    def on_stop(self) -> None:
        left = HUB.close(self.gate_id)
        if left:
            self.upload(left)

    def upload(self, taps: list[dict[str, Any]]) -> None:
        for tap in taps:
            tap["gate_id"] = tap["gate_id"] or self.gate_id
        answer = self.signed(ORGS["transit"], "POST", "/api/v1/gates/taps", {"taps": taps})
        if answer.ok:
            # Only taps the platform took (accepted now or before) must be stored; a refused one is counted by
            # reason: real codes uploaded in time should never be refused.
            outcomes = answer.body.get("taps", []) if isinstance(answer.body, dict) else []
            TALLY.taps_accepted([o["tap_id"] for o in outcomes if o.get("status") != "refused"])
            for o in outcomes:
                if o.get("status") == "refused":
                    TALLY.count(f"taps refused: {o.get('reason')}")
        else:
            HUB.give_back(self.gate_id, taps)  # the gate keeps them and tries again

    @task
    def send(self) -> None:
        taps = HUB.take(self.gate_id)
        if taps:
            self.upload(taps)


# ------------------------------------------------------------------------------------------------------------
# Logins: mini-programs and one login
# ------------------------------------------------------------------------------------------------------------

MINI = FIXTURES.get("mini_programs", {})
ONE_LOGIN = FIXTURES.get("one_login", {})
REDIRECTS = frozenset({302, 303})


def _problem(body: Any, wanted: str) -> str | None:
    """A 422 is expected only when it is the problem the flow asks for."""
    found = str(body.get("type", "")) if isinstance(body, dict) else ""
    return None if found.endswith("/" + wanted) else f"422 {found or body}"


def _signed_in(body: Any) -> str | None:
    return None if isinstance(body, dict) and body.get("access_token") else "no access token in the answer"


def _new_phone() -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


class WeChatLoginUser(TztUser):
    weight = int(VISITS.get("WeChatLoginUser", {}).get("weight", 1))
    client_pool = shared_connections()
    login = "/api/v1/mini-programs/wechat/login"

    def wx_login(self, openid: str | None = None) -> dict[str, Any] | None:
        """What wx.login gives this WeChat user (a new one when no openid is given): the sandbox plays WeChat."""
        app = MINI["wechat"]
        answer = self.call(
            "POST",
            f"{app['sandbox']}/_sandbox/codes",
            "/_sandbox/codes [wechat]",
            json={"appid": app["app_id"], **({"openid": openid} if openid else {})},
        )
        return dict(answer.body) if answer.ok else None

    def returning(self) -> None:
        resident = POOL.take()
        wx = self.wx_login(resident["wechat_openid"])
        if wx is None:
            return
        done = self.call(
            "POST",
            self.login,
            f"{self.login} [returning]",
            check=_signed_in,
            json={"app_id": MINI["wechat"]["app_id"], "code": wx["code"]},
        )
        if done.ok:
            TALLY.count("WeChat logins of returning residents")

    def first_time(self) -> None:
        app_id = MINI["wechat"]["app_id"]
        wx = self.wx_login()
        if wx is None:
            return
        asked = self.call(
            "POST",
            self.login,
            f"{self.login} [first, phone-required]",
            check=lambda body: _problem(body, "phone-required"),
            expect=frozenset({422}),
            json={"app_id": app_id, "code": wx["code"]},
        )
        if not asked.ok:
            return
        # The getPhoneNumber button, then wx.login again (the first code was spent).
        phone = self.call(
            "POST",
            f"{MINI['wechat']['sandbox']}/_sandbox/phone-codes",
            "/_sandbox/phone-codes [wechat]",
            json={"appid": app_id, "phone": _new_phone()},
        )
        again = self.wx_login(wx["openid"]) if phone.ok else None
        if again is None:
            return
        done = self.call(
            "POST",
            self.login,
            f"{self.login} [first, with phone]",
            check=_signed_in,
            json={"app_id": app_id, "code": again["code"], "phone_code": phone.body["code"]},
        )
        if done.ok:
            TALLY.count(
                "WeChat first logins: new residents"
                if done.body.get("new_resident")
                else "WeChat first logins: phone of an existing resident"
            )

    @task
    def open_mini_program(self) -> None:
        if rng.random() < float(VISITS["WeChatLoginUser"]["first_login_share"]):
            self.first_time()
        else:
            self.returning()


class AlipayLoginUser(TztUser):
    weight = int(VISITS.get("AlipayLoginUser", {}).get("weight", 1))
    client_pool = shared_connections()
    login = "/api/v1/mini-programs/alipay/login"

    @task
    def open_mini_program(self) -> None:
        resident = POOL.take()
        app = MINI["alipay"]
        auth = self.call(
            "POST",
            f"{app['sandbox']}/_sandbox/codes",
            "/_sandbox/codes [alipay]",
            json={"app_id": app["app_id"], "user_id": resident["alipay_user_id"]},
        )
        if not auth.ok:
            return
        done = self.call(
            "POST",
            self.login,
            f"{self.login} [returning]",
            check=_signed_in,
            json={"app_id": app["app_id"], "code": auth.body["code"]},
        )
        if done.ok:
            TALLY.count("Alipay logins of returning residents")


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


class OneLoginUser(TztUser):
    weight = int(VISITS.get("OneLoginUser", {}).get("weight", 1))
    client_pool = shared_connections()

    def authorize(self, resident: dict[str, Any], challenge: str, state: str) -> str | None:
        """The app's web-view: a fresh one per visit (no provider cookie of another resident), the resident's
        bearer session; the answer is a redirect back to the department's app with the code."""
        self.client.cookiejar.clear()
        params = {
            "response_type": "code",
            "client_id": ONE_LOGIN["client_id"],
            "redirect_uri": ONE_LOGIN["redirect_uri"],
            "scope": "openid",
            "state": state,
            "nonce": secrets.token_hex(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        found: dict[str, str] = {}

        def check(response: Any) -> str | None:
            if not hasattr(response, "headers"):
                return "not a redirect"
            location = response.headers.get("Location") or ""
            query = parse_qs(urlsplit(location).query)
            if not location.startswith(ONE_LOGIN["redirect_uri"]) or query.get("state") != [state]:
                return f"redirected elsewhere: {location.split('?')[0]} {query.get('error')}"
            if not query.get("code"):
                return f"no code: {query.get('error')}"
            found["code"] = query["code"][0]
            return None

        answer = self.call(
            "GET",
            "/oidc/authorize?" + urlencode(params),
            "/oidc/authorize",
            check=check,
            expect=REDIRECTS,
            headers=self.as_resident(resident),
            allow_redirects=False,
        )
        return found.get("code") if answer.ok else None

    def token(self, name: str, form: dict[str, str]) -> dict[str, Any] | None:
        """The department's server at the token endpoint (client_secret_basic)."""
        basic = base64.b64encode(f"{ONE_LOGIN['client_id']}:{ONE_LOGIN['client_secret']}".encode()).decode()

        def check(body: Any) -> str | None:
            wanted = ("access_token", "id_token", "refresh_token") if "code" in form else ("access_token",)
            missing = [k for k in wanted if not (isinstance(body, dict) and body.get(k))]
            return f"no {', '.join(missing)} in the token answer" if missing else None

        answer = self.call(
            "POST",
            "/oidc/token",
            f"/oidc/token [{name}]",
            check=check,
            data=urlencode(form).encode(),
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        return dict(answer.body) if answer.ok else None

    @task
    def open_department_app(self) -> None:
        resident = POOL.take()
        verifier, challenge = _pkce()
        code = self.authorize(resident, challenge, secrets.token_hex(8))
        if code is None:
            return
        tokens = self.token(
            "code",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": ONE_LOGIN["redirect_uri"],
                "code_verifier": verifier,
            },
        )
        if tokens is None:
            return
        info = self.call(
            "GET",
            "/oidc/userinfo",
            check=lambda body: None if isinstance(body, dict) and body.get("sub") else "no sub in userinfo",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        if not info.ok:
            return
        TALLY.count("one logins completed (code, tokens, userinfo)")
        if rng.random() < float(VISITS["OneLoginUser"]["refresh_share"]):
            renewed = self.token(
                "refresh", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
            )
            if renewed is not None:
                TALLY.count("one-login refreshes")


# ------------------------------------------------------------------------------------------------------------
# The ticket rush
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Buyer:
    """One buyer of the rush: a resident who arrives at `due`, joins the sale's queue, waits, holds a ticket,
    pays and checks it. `step` is what they do next; `done` once they have a ticket or were told sold out."""

    resident: dict[str, Any]
    due: float
    step: str = "join"
    pass_token: str = ""
    hold: dict[str, Any] | None = None
    classes_tried: int = 0
    channel: str = ""
    notification: dict[str, Any] | None = None
    done: bool = False


def rush_share(user_number: int, drivers: int, worker: int, workers: int) -> list[Buyer]:
    """The buyers one user drives: every process takes its slice of all the buyers, every user its slice of that
    (the residents in fixture order, each one buyer), each arriving at its own moment: a triangle around the
    opening over the window, as the sizing model has them."""
    residents = FIXTURES["residents"][worker::workers][user_number::drivers]
    half = float(RUSH["window_s"]) / 2
    opens = float(RUSH["opens_at"])
    return sorted(
        (Buyer(r, opens + rng.triangular(-half, half, 0.0)) for r in residents), key=lambda b: b.due
    )


def _later(seconds: float) -> float:
    return time.time() + max(0.5, seconds)


class TicketBuyerUser(TztUser):
    """Drives its share of the buyers, each when it is due: a user is a phone's worth of concurrency, not one
    buyer, so 100,000 buyers can wait in the queue at once as they would."""

    fixed_count = int(RUSH.get("drivers", 0))
    client_pool = shared_connections()
    wait_time = constant(0)
    numbers = iter(range(1_000_000))

    def on_start(self) -> None:
        runner = self.environment.runner
        worker = int(getattr(runner, "worker_index", 0) or 0) if isinstance(runner, WorkerRunner) else 0
        workers = max(1, int(SPEC.get("workers", 0) or 0))
        self.buyers = rush_share(next(self.numbers), max(1, self.fixed_count), worker, workers)

    @task
    def drive(self) -> None:
        waiting = [b for b in self.buyers if not b.done]
        if not waiting:
            gevent.sleep(1.0)
            return
        buyer = min(waiting, key=lambda b: b.due)
        pause = buyer.due - time.time()
        if pause > 0:
            gevent.sleep(min(pause, 1.0))
            return
        getattr(self, "buyer_" + buyer.step.replace("-", "_"))(buyer)

    def _finish(self, buyer: Buyer, outcome: str) -> None:
        buyer.done = True
        TALLY.count(f"buyers: {outcome}")

    def _queue(self, buyer: Buyer, answer: Answer) -> None:
        if answer.outcome == "shed":
            buyer.due = _later(answer.retry_after or 2.0)  # as the app does: when the server asks
            return
        if answer.status == 409:
            self._finish(buyer, "sold out")
            return
        if not answer.ok:
            buyer.due = _later(5.0)
            return
        view = answer.body
        if view.get("admitted") and view.get("pass_token"):
            buyer.pass_token, buyer.step, buyer.due = view["pass_token"], "hold", time.time()
            return
        if buyer.step == "join":
            TALLY.count("buyers: a queue position")
        # The app polls sooner as its turn comes: half the estimate, between 2 s and 30 s.
        buyer.step, buyer.due = (
            "poll",
            _later(min(30.0, max(2.0, float(view.get("estimate_seconds", 5)) / 2))),
        )

    def buyer_join(self, buyer: Buyer) -> None:
        path = f"/api/v1/tickets/sessions/{RUSH['session_id']}/queue"
        answer = self.call(
            "POST",
            path,
            "/api/v1/tickets/sessions/{id}/queue",
            check=None,
            expect=frozenset({409}),
            headers=self.as_resident(buyer.resident),
        )
        self._queue(buyer, answer)

    def buyer_poll(self, buyer: Buyer) -> None:
        path = f"/api/v1/tickets/sessions/{RUSH['session_id']}/queue"
        answer = self.call(
            "GET",
            path,
            "/api/v1/tickets/sessions/{id}/queue",
            expect=frozenset({409}),
            headers=self.as_resident(buyer.resident),
        )
        self._queue(buyer, answer)

    def buyer_hold(self, buyer: Buyer) -> None:
        classes = RUSH["classes"]
        chosen = classes[(hash(buyer.resident["id"]) + buyer.classes_tried) % len(classes)]
        answer = self.call(
            "POST",
            "/api/v1/tickets/holds",
            expect=frozenset({409}),
            json={
                "session_id": RUSH["session_id"],
                "class_id": chosen["id"],
                "attendees": [{}],
                "pass_token": buyer.pass_token,
            },
            headers=self.as_resident(buyer.resident),
        )
        if answer.outcome == "shed":
            buyer.due = _later(answer.retry_after or 2.0)
        elif answer.status == 409:
            buyer.classes_tried += 1
            if buyer.classes_tried >= len(classes):
                self._finish(buyer, "sold out")
        elif answer.ok:
            buyer.hold, buyer.step = dict(answer.body), "pay"
        else:
            buyer.due = _later(2.0)

    def buyer_pay(self, buyer: Buyer) -> None:
        assert buyer.hold is not None
        buyer.channel = buyer.channel or rng.choice(sorted(FIXTURES["sandboxes"]))
        answer = self.call(
            "POST",
            f"/api/v1/tickets/holds/{buyer.hold['id']}/pay",
            "/api/v1/tickets/holds/{id}/pay",
            json={"channel": buyer.channel, "method": "native"},
            headers={**self.as_resident(buyer.resident), "Idempotency-Key": f"rush-{buyer.hold['id']}"},
        )
        if not answer.ok:
            buyer.due = _later(2.0)
            return
        # The phone pays with the answer's instructions; the sandbox is told which trade by its number.
        order = self.call(
            "GET",
            f"/api/v1/payments/orders/{answer.body['order_id']}",
            "/api/v1/payments/orders/{id}",
            headers=self.as_resident(buyer.resident),
        )
        if not order.ok:
            buyer.due = _later(2.0)
            return
        buyer.channel = str(order.body["channel"])  # a hold has one order for life, at its first channel
        paid = self.call(
            "POST",
            f"{FIXTURES['sandboxes'][buyer.channel]}/_sandbox/trades/{order.body['out_trade_no']}/pay",
            f"/_sandbox/trades/{{no}}/pay [{buyer.channel}]",
            json={"deliver": False},
        )
        if not paid.ok:
            buyer.due = _later(2.0)
            return
        buyer.notification, buyer.step, buyer.due = paid.body["notification"], "notify", time.time()

    def buyer_notify(self, buyer: Buyer) -> None:
        """The channel's notification, relayed until acknowledged (channels deliver again until they are)."""
        note = buyer.notification
        assert note is not None
        answer = self.call(
            "POST",
            f"/api/v1/payments/notify/{buyer.channel}",
            data=note["body"].encode(),
            headers={"Content-Type": note["content_type"]},
        )
        buyer.step, buyer.due = ("check", time.time()) if answer.ok else ("notify", _later(2.0))

    def buyer_check(self, buyer: Buyer) -> None:
        assert buyer.hold is not None
        answer = self.call(
            "GET",
            "/api/v1/tickets",
            headers=self.as_resident(buyer.resident),
        )
        if not answer.ok:
            buyer.due = _later(2.0)
            return
        mine = [t for t in answer.body["tickets"] if t["session_id"] == RUSH["session_id"]]
        if any(t["status"] == "valid" for t in mine):
            self._finish(buyer, "a ticket")
        else:
            buyer.due = _later(1.0)
