"""`tzt serve` as an operator runs it: Granian with two workers, the job worker, demo data, Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app_backend.organisations.signing import sign_request
from tests.conftest import Backing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def internal_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def server(
    backing: Backing, data_dir: Path, internal_port: int
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = _free_port()
    env = {
        # Dev serves docs and metrics on the main port too; the internal listener starts when a port is set.
        "TZT_INTERNAL_PORT": str(internal_port),
        **os.environ,
        **backing.env(),
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "dev",
        "TZT_PORT": str(port),
        "TZT_WORKERS": "2",
    }
    log = data_dir / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app_backend.composition.cli", "serve"],
            start_new_session=True,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_group(proc)
            pytest.fail(f"tzt serve did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield base, proc, log
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Whatever state a test left it in, the server and everything it started are gone afterwards."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_banner_prints_the_urls(server):
    base, _, log = server
    text = log.read_text()
    assert f"{base}/schema/swagger" in text and f"{base}/healthz" in text and f"{base}/readyz" in text


def test_demo_resident_logs_in_over_real_http(server):
    base, _, _ = server
    phone = "13800000001"
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        sent = http.post("/api/v1/auth/otp", json={"phone": phone})
        assert sent.status_code in (202, 429)  # a rerun inside the cooldown minute still has a code
        code = re.search(
            r"\d{6}", http.get("/api/v1/dev/outbox", params={"phone": phone}).json()["messages"][0]["text"]
        ).group(0)
        tokens = http.post("/api/v1/auth/login", json={"phone": phone, "otp": code}).json()
        me = http.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.status_code == 200 and me.headers["x-request-id"]
        assert me.json()["level"] == "L2" and me.json()["enterprises"], "the demo resident has an enterprise"
        assert me.json()["phone"] == "138****0001"


def test_demo_gate_credential_signs_requests(server, data_dir):
    base, _, _ = server
    creds = json.loads((data_dir / "demo-credentials.json").read_text())["泰州地铁运营有限公司"]
    headers = sign_request(creds["key_id"], creds["secret"], "GET", "/api/v1/machine/whoami")
    answer = httpx.get(f"{base}/api/v1/machine/whoami", headers=headers, timeout=10)
    assert answer.status_code == 200 and "verify:transit" in answer.json()["scopes"]
    replay = httpx.get(f"{base}/api/v1/machine/whoami", headers=headers, timeout=10)
    assert replay.status_code == 401, "the second worker must refuse the nonce the first one saw"


def test_the_demo_tiles_are_live_and_their_department_manages_them(server, data_dir):
    base, _, _ = server
    with httpx.Client(base_url=base, timeout=10) as http:
        names = {t["name"] for t in http.get("/api/v1/tiles").json()["tiles"]}
        assert {"公积金查询", "社保缴费", "不动产登记", "健康档案查询"} <= names
        hits = http.get("/api/v1/tiles/search", params={"q": "gjj"}).json()["hits"]
        found = [
            (h["tile"]["name"], h["matched"])
            for h in hits
            if h["tile"]["organisation_name"] == "泰州市政务服务管理办公室"
        ]
        assert found == [("公积金查询", "pinyin")]
        records = next(t for t in http.get("/api/v1/tiles").json()["tiles"] if t["name"] == "健康档案查询")
    creds = json.loads((data_dir / "demo-credentials.json").read_text())
    assert records["oidc_client_id"] == creds["one_login"]["client_id"]  # a tap logs the resident in
    office = creds["泰州市政务服务管理办公室"]
    headers = sign_request(office["key_id"], office["secret"], "GET", "/api/v1/tiles/manage")
    mine = httpx.get(f"{base}/api/v1/tiles/manage", headers=headers, timeout=10).json()["tiles"]
    assert {t["name"] for t in mine} == {"公积金查询", "社保缴费", "不动产登记"}
    assert {t["state"] for t in mine} == {"live"}
    assert "tiles:manage" in creds["泰州市卫生健康委员会"]["scopes"]


async def test_concurrent_opens_over_real_connections_are_counted_exactly(server, client, services):
    """Issue 16: residents open a tile through `tzt serve` (two Granian workers) over several real connections at
    once; the department's figures count exactly the opens made, and exactly the residents."""
    from tests.app_backend.tiles.helpers import department, live, manage, reviewer, unique
    from tests.helpers import random_phone

    base, _, _ = server
    dept, rev = await department(client, services), await reviewer(client, services)
    tile_id = (await live(client, dept, rev, name=unique("并发")))["id"]

    async with httpx.AsyncClient(
        base_url=base, timeout=30, limits=httpx.Limits(max_connections=8, max_keepalive_connections=8)
    ) as http:

        async def resident() -> str:
            phone = random_phone()
            sent = await http.post("/api/v1/auth/otp", json={"phone": phone})
            assert sent.status_code == 202, sent.text
            text = (await http.get("/api/v1/dev/outbox", params={"phone": phone})).json()["messages"][0][
                "text"
            ]
            code = re.search(r"\d{6}", text).group(0)  # type: ignore[union-attr]
            login = await http.post("/api/v1/auth/login", json={"phone": phone, "otp": code})
            assert login.status_code == 200, login.text
            return str(login.json()["access_token"])

        tokens = [await resident() for _ in range(10)]
        answers = await asyncio.gather(
            *(
                http.post(f"/api/v1/tiles/{tile_id}/open", headers={"Authorization": f"Bearer {token}"})
                for token in tokens
                for _ in range(5)
            )
        )
    assert [a.status_code for a in answers] == [200] * 50, {a.status_code: a.text for a in answers}
    usage = (await manage(client, dept, "GET", f"/{tile_id}/usage")).json()
    assert (usage["totals"]["opens"], usage["totals"]["residents"]) == (50, 10)


def test_openapi_and_metrics_are_served(server):
    base, _, _ = server
    spec = httpx.get(f"{base}/schema/openapi.json", timeout=10).json()
    assert "/api/v1/auth/login" in spec["paths"] and "/api/v1/enterprises" in spec["paths"]
    assert httpx.get(f"{base}/schema/swagger", timeout=10).status_code == 200
    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200 and "litestar_requests_total" in metrics.text


def test_the_internal_listener_serves_docs_and_metrics_on_loopback(server, internal_port):
    inside = f"http://127.0.0.1:{internal_port}"
    deadline = time.monotonic() + 60  # its own Granian process, which may start after the public one is ready
    while True:
        try:
            httpx.get(f"{inside}/healthz", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"the internal listener did not start:\n{server[2].read_text()[-3000:]}")
            time.sleep(0.2)
    assert "/api/v1/auth/login" in httpx.get(f"{inside}/schema/openapi.json", timeout=10).json()["paths"]
    metrics = httpx.get(f"{inside}/metrics", timeout=10)
    # One registry for all processes: the public workers' requests are counted here too.
    assert metrics.status_code == 200 and 'path="/schema/openapi.json"' in metrics.text


def test_the_served_processes_run_as_the_application_role(server, backing):
    import psutil

    _, proc, _ = server
    environments = [child.environ() for child in psutil.Process(proc.pid).children(recursive=True)]
    servers = [e for e in environments if "DATABASE_URL" in e]
    assert servers and all(e["DATABASE_URL"] == backing.database_url for e in servers)
    assert not any("MIGRATION_DATABASE_URL" in e for e in environments)


def test_a_wechat_order_is_paid_through_the_sandbox_over_real_http(server, data_dir):
    """`make run` pays end to end: the sandbox delivers its signed notification to the running app."""
    base, _, _ = server
    creds = json.loads((data_dir / "demo-credentials.json").read_text())
    payee = creds["泰州示范超市"]["organisation_id"]
    config = json.loads((data_dir / "payment-channels.json").read_text())
    sandbox = config["wechat"]["api_base_url"].rstrip("/")
    with httpx.Client(base_url=base, timeout=10) as http:
        phone = "1380000" + str(int(time.time() * 1000))[-4:]  # any phone: a new resident
        http.post("/api/v1/auth/otp", json={"phone": phone})
        code = re.search(
            r"\d{6}", http.get("/api/v1/dev/outbox", params={"phone": phone}).json()["messages"][0]["text"]
        ).group(0)
        token = http.post("/api/v1/auth/login", json={"phone": phone, "otp": code}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        order = http.post(
            "/api/v1/payments/orders",
            headers={**auth, "Idempotency-Key": os.urandom(8).hex()},
            json={
                "purpose": "utility_bill",
                "amount_fen": 8650,
                "subject": "泰州自来水 11月",
                "payee_id": payee,
                "channel": "wechat",
                "method": "native",
            },
        ).json()
        assert order["pay"]["params"]["code_url"].startswith("weixin://")
        httpx.post(
            f"{sandbox}/_sandbox/trades/{order['out_trade_no']}/pay", json={"deliver": True}, timeout=10
        )
        deadline = time.monotonic() + 20
        while http.get(f"/api/v1/payments/orders/{order['id']}", headers=auth).json()["status"] != "paid":
            assert time.monotonic() < deadline, "the sandbox's notification never reached the app"
            time.sleep(0.1)


def test_the_demo_merchant_refunds_through_tzt_call_with_its_idempotency_key(server, data_dir, backing):
    """`tzt call -H 'Idempotency-Key: …'` is how an integrator tries a refund by hand: the same key twice is one
    refund, and a header without a colon is refused before anything is sent."""
    base, _, _ = server
    creds = json.loads((data_dir / "demo-credentials.json").read_text())
    config = json.loads((data_dir / "payment-channels.json").read_text())
    sandbox = config["wechat"]["api_base_url"].rstrip("/")
    with httpx.Client(base_url=base, timeout=10) as http:
        phone = "1380001" + str(int(time.time() * 1000))[-4:]
        http.post("/api/v1/auth/otp", json={"phone": phone})
        code = re.search(
            r"\d{6}", http.get("/api/v1/dev/outbox", params={"phone": phone}).json()["messages"][0]["text"]
        ).group(0)
        token = http.post("/api/v1/auth/login", json={"phone": phone, "otp": code}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        order = http.post(
            "/api/v1/payments/orders",
            headers={**auth, "Idempotency-Key": os.urandom(8).hex()},
            json={
                "purpose": "ticket",
                "amount_fen": 3000,
                "subject": "泰州大剧院 门票",
                "payee_id": creds["泰州示范超市"]["organisation_id"],
                "channel": "wechat",
                "method": "native",
            },
        ).json()
        httpx.post(
            f"{sandbox}/_sandbox/trades/{order['out_trade_no']}/pay", json={"deliver": True}, timeout=10
        )
        deadline = time.monotonic() + 20
        while http.get(f"/api/v1/payments/orders/{order['id']}", headers=auth).json()["status"] != "paid":
            assert time.monotonic() < deadline, "the sandbox's notification never reached the app"
            time.sleep(0.1)
    env = {**os.environ, **backing.env(), "TZT_DATA_DIR": str(data_dir)}

    def call(*headers: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app_backend.composition.cli", "call", "POST"]
            + [f"/api/v1/payments/orders/{order['id']}/refunds", "--org", "泰州示范超市", "--base", base]
            + [arg for header in headers for arg in ("-H", header)]
            + ["--data", json.dumps({"amount_fen": 1000, "reason": "退一张"})],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first, again = call("Idempotency-Key: tzt-call-refund-1"), call("Idempotency-Key: tzt-call-refund-1")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["id"] == json.loads(again.stdout)["id"]
    bad = call("Idempotency-Key tzt-call-refund-2")
    assert bad.returncode == 2 and "NAME: VALUE" in bad.stderr


def test_the_demo_riders_contract_exists_at_the_sandbox(server, data_dir):
    """The seeded agreement is real where it is used: a deduction under it is not refused."""
    import asyncio

    from app_backend.composition.seed import DEMO_CONTRACT_ID
    from payments.channels.base import TradeStatus
    from payments.channels.configured import _resolve_files
    from payments.channels.wechat import WechatChannel, WechatConfig

    config = _resolve_files(json.loads((data_dir / "payment-channels.json").read_text())["wechat"])
    channel = WechatChannel(WechatConfig(**config))
    trade = asyncio.run(
        channel.deduct(
            DEMO_CONTRACT_ID,
            "TZTDEMO" + os.urandom(6).hex().upper(),
            200,
            "泰州地铁 1号线",
            "http://127.0.0.1:9/notify",
        )
    )
    assert trade.status in (TradeStatus.WAITING, TradeStatus.PAID)


async def test_concurrent_bookings_through_two_workers_hold_exactly_the_places(server, client, services):
    """Issue 17 (venue booking): residents book one slot through `tzt serve` (two Granian workers) over several
    real connections at once; exactly the slot's capacity is held, every other booker is told it is full."""
    from tests.app_backend.bookings.helpers import organiser_slot, slot
    from tests.helpers import real_named

    base, _, _ = server
    made = await slot(client, services, capacity=10)
    people = [await real_named(client, services) for _ in range(30)]
    async with httpx.AsyncClient(
        base_url=base, timeout=30, limits=httpx.Limits(max_connections=10, max_keepalive_connections=10)
    ) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/api/v1/bookings",
                    headers={
                        "Authorization": f"Bearer {p['access_token']}",
                        "Idempotency-Key": f"rush-{n:04d}",
                    },
                    json={"slot_id": made["id"], "places": 1, "channel": "wechat", "method": "native"},
                )
                for n, p in enumerate(people)
            )
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 10 + [409] * 20, {a.status_code: a.text for a in answers}
    assert all(a.json()["type"].endswith("slot-full") for a in answers if a.status_code == 409)
    counts = await organiser_slot(client, made["organiser"], made["id"])
    assert (counts["held"], counts["booked"]) == (10, 0)


def test_ctrl_c_stops_everything(server):
    import psutil

    base, proc, _ = server
    started = psutil.Process(proc.pid).children(recursive=True)
    assert len(started) >= 4, "granian, its workers, the job worker and the payment sandboxes"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=2)
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left running after Ctrl-C: {[p.cmdline() for p in alive]}"


def test_migrate_is_idempotent(backing, data_dir):
    env = {**os.environ, **backing.env(), "TZT_DATA_DIR": str(data_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "app_backend.composition.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "up to date" in out.stdout


def test_keys_rotate_and_list_from_the_cli(backing, data_dir):
    env = {**os.environ, **backing.env(), "TZT_DATA_DIR": str(data_dir)}

    def tzt(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "app_backend.composition.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout

    tzt("keys", "rotate", "--now")  # whatever earlier tests staged, one key signs and none is staged
    before = tzt("keys", "list").splitlines()
    made = tzt("keys", "rotate").splitlines()
    kid = made[0].split()[3].rstrip(",")
    after = tzt("keys", "list").splitlines()
    # Staged, not signing: published now, signing only after the publish lead.
    assert made[0].startswith(f"staged signing key {kid}, published now, signs from ")
    # (Counted by state, not by lines: a key other tests left retiring may leave the list meanwhile.)
    assert len(kid) == 8 and not any(line.startswith(kid) for line in before)
    assert [line.split()[0] for line in after if "  staged  " in line] == [kid]
    assert sum("  signing  " in line for line in after) == 1
    assert tzt("keys", "rotate").startswith(f"already staged: signing key {kid}")  # no second key
    assert [line.split()[0] for line in tzt("keys", "list").splitlines() if "  staged  " in line] == [kid]

    # An emergency rotation signs at once (and says what it breaks); the staged key never signs. (Withdrawing
    # is tested in-process, tests/code_service/keys: here it would pull the key from under the test server.)
    emergency = tzt("keys", "rotate", "--now").splitlines()
    new_kid = emergency[0].split()[3]
    assert emergency[0] == f"new signing key {new_kid} signs now"
    assert "stays published until" in emergency[1] and "unknown-key" in emergency[-1]
    listed = tzt("keys", "list").splitlines()
    assert any(line.startswith(f"{new_kid}  signing") for line in listed)
    assert not any(line.startswith(kid) for line in listed)
    refused = subprocess.run(
        [sys.executable, "-m", "app_backend.composition.cli", "keys", "rotate", "--withdraw"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--withdraw needs --now" in refused.stderr

    # The one-login provider's ID-token keys, on the same schedule, apart from the code keys.
    tzt("keys", "rotate", "--oidc", "--now")
    staged = tzt("keys", "rotate", "--oidc").splitlines()
    oidc_kid = staged[0].split()[3].rstrip(",")
    assert staged[0].startswith(f"staged ID-token key {oidc_kid}, published now, signs from ")
    listed_oidc = tzt("keys", "list", "--oidc").splitlines()
    assert [line.split()[0] for line in listed_oidc if "  staged  " in line] == [oidc_kid]
    assert not any(line.startswith(oidc_kid) for line in tzt("keys", "list").splitlines())
    emergency_oidc = tzt("keys", "rotate", "--oidc", "--now").splitlines()
    assert "must fetch it again" in emergency_oidc[-1]


def test_scene_keys_rotate_and_list_from_the_cli(backing, data_dir):
    """Scene-key epochs follow the signing keys' schedule, and the same commands with --scene-keys, audited."""
    env = {**os.environ, **backing.env(), "TZT_DATA_DIR": str(data_dir)}

    def tzt(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "app_backend.composition.cli", "keys", *args, "--scene-keys"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout

    tzt("rotate", "--now")  # whatever earlier tests staged, one epoch is in use and none is staged
    before = tzt("list").splitlines()
    made = tzt("rotate").splitlines()
    epoch = made[0].split()[3].rstrip(",")
    after = tzt("list").splitlines()
    # Staged, not used yet: published now, in codes only after the publish lead.
    assert made[0].startswith(f"staged scene-key epoch {epoch}, published now, in codes from ")
    # (Counted by state, not by lines: an epoch other tests left retiring may leave the list meanwhile.)
    assert len(epoch) == 8 and not any(line.startswith(epoch) for line in before)
    assert [line.split()[0] for line in after if "  staged  " in line] == [epoch]
    assert sum("  in-use  " in line for line in after) == 1
    assert tzt("rotate").startswith(f"already staged: scene-key epoch {epoch}")  # no second epoch

    # The emergency switch: a new epoch is used at once, and the output says what it breaks.
    emergency = tzt("rotate", "--now").splitlines()
    new_epoch = emergency[0].split()[3]
    assert emergency[0] == f"new scene-key epoch {new_epoch} used in codes now"
    assert "stays published until" in emergency[1] and "no-scene-key" in emergency[-1]
    listed = tzt("list").splitlines()
    assert any(line.startswith(f"{new_epoch}  in-use") for line in listed)
    assert not any(line.startswith(epoch) for line in listed)

    async def audited() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(backing.database_url)
        try:
            rows = await conn.fetch(
                "SELECT action, target_id FROM audit.events WHERE target_type = 'scene_epoch' AND actor_type = 'cli'"
            )
        finally:
            await conn.close()
        return [(r["action"], r["target_id"]) for r in rows]

    events = asyncio.run(audited())
    assert ("admin.scene_key_rotate", epoch) in events
    assert ("admin.scene_key_rotate_now", new_epoch) in events
