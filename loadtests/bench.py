"""`make bench`: the speed goals of the one code, measured in one run on this machine.

    python -m loadtests.bench [--http-rounds 7] [--duration 2] [--warmup 1] [--generators 1] [--connections 32]
                              [--profile DIR]
    python -m loadtests.bench --only offline        (or --only http, --only denylist, --only redis; repeatable)

1. HTTP. Starts the whole backend the way `tzt serve` does (`python -m app_backend.cli serve --no-worker`) with a
   temporary data folder (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set) and ONE Granian
   worker, creates residents through the API (OTP, dev outbox, login) and registers device keys, then runs
   `--http-rounds` short rounds, each loading one after the other: GET /api/v1/ping (the trivial baseline),
   POST /api/v1/codes/personal (residents' tokens round-robin), and POST /api/v1/verify as signed machine
   requests, each with its own nonce, all signed before the clock starts: transit with fresh server codes
   (single-use: the codes this round's issue row produced, each presented once, topped up unmeasured if transit
   may need more), health with server codes (reusable; issued each round, they live 60 s), health with fresh
   device codes; one more ping closes the last round. A row's ratio is the median over the rounds of its rate
   over the mean of the pings either side of it (its round's and the next): the machine's speed drifts over
   seconds, and CPU steal by the hypervisor or other work comes in bursts of seconds, which skew the round they
   fall in, not the median.
   The load comes from a separate generator process speaking raw HTTP/1.1 keep-alive over asyncio. No client
   library: httpx tops out near 4k requests/s per process, which would flatten every ratio towards 1; this one
   needs about 40 us of CPU per request, and one process is enough (on 2 cores a second one only adds context
   switches). CPU use of the server, Redis, PostgreSQL, the generator, CPU steal and everything else is sampled
   over every row's window.
2. Offline. code_service.verifier.OfflineVerifier.verify against the cryptographic minimum with `cryptography`
   for the same codes (device code: load the compressed device point + 2 ECDSA P-256 verifies; server code:
   1 verify), one core (CPU time of the thread), medians over many short alternating rounds.
3. Deny list. IdSet.from_sorted over ten million sorted random ids: bytes held, lookup time present and absent.
4. Redis client. CPU per hot-path batch: redis-py's client against the shared connection (loadtests/redis_client.py).

Ratios below their goals are reported, not failures: the command exits 0 unless the server cannot be started.
With `--profile DIR`, ping, issue and verify are loaded once more AFTER the measured rounds while py-spy samples the
Granian worker (`--profile-rate` samples a second); the top frames are printed and the flame graphs are written
to DIR: comparing a hot path's profile with ping's shows what it pays beyond the trivial endpoint."""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import functools
import json
import os
import pickle
import platform
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from loadtests.processes import (
    Server,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    machine_split_seconds,
    stop_server,
    wait_ready,
)

GOAL_ISSUE = 0.40
GOAL_VERIFY = 0.25
GOAL_OFFLINE = 0.90
PARTS = ("http", "offline", "denylist", "redis")  # --only
WORKERS = 1
VERIFY_PATH = "/api/v1/verify"
ISSUE_PATH = "/api/v1/codes/personal"
PING_PATH = "/api/v1/ping"
HOSPITAL = "泰州市人民医院"  # verify:medical, verify:health
METRO = "泰州地铁运营有限公司"  # verify:transit
_REASON = b'"reason":"'
_CODE = b'"code":"'


# ------------------------------------------------------------------------------------------------------------
# Load generator (runs in its own process: python -m loadtests.bench --generator SPEC RESULT)
# ------------------------------------------------------------------------------------------------------------


class _Load:
    """One generator process's share of a run: pre-built requests, a start time shared with the other
    generators, a warm-up, then a measured window. Only responses completed inside the window count."""

    def __init__(self, requests: list[bytes], spec: dict[str, Any]) -> None:
        self.requests = requests
        self.cycle: bool = spec["cycle"]
        self.keep_bodies: bool = spec.get("keep_bodies", False)
        self.tally: bool = spec.get("tally_reasons", False)
        self.next = 0
        self.ok = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.bodies: list[bytes] = []
        self.window_start = self.window_end = 0.0
        self.exhausted_at: float | None = None
        self.open = 0
        self.finished: asyncio.Future[None] | None = None

    def take(self) -> bytes | None:
        if self.next >= len(self.requests):
            if not self.cycle or not self.requests:
                if self.exhausted_at is None:
                    self.exhausted_at = time.monotonic()
                return None
            self.next = 0
        request = self.requests[self.next]
        self.next += 1
        return request

    def completed(self, status: int, body: bytes, sent_at: float) -> None:
        now = time.monotonic()
        if self.window_start <= now < self.window_end:
            if status == 200:
                self.ok += 1
                self.latencies.append(now - sent_at)
            else:
                self.errors[f"HTTP {status}"] += 1
            if self.tally:
                i = body.find(_REASON)
                if i >= 0:
                    j = body.find(b'"', i + len(_REASON))
                    self.reasons[body[i + len(_REASON) : j].decode()] += 1
        if self.keep_bodies and status == 200:
            self.bodies.append(body)

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)


class _Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request in flight; responses need a Content-Length (Granian sends one)."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.status = 0
        self.body_at = -1
        self.length = -1
        self.sent_at = 0.0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        request = self.load.take() if time.monotonic() < self.load.window_end else None
        if request is None:
            self.done = True
            self.transport.close()
            return
        self.sent_at = time.monotonic()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if self.length < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            head = buffer[:end].lower()
            i = head.find(b"\r\ncontent-length:")
            if i < 0:
                self.load.errors["response without content-length"] += 1
                self.done = True
                assert self.transport is not None
                self.transport.close()
                return
            j = head.find(b"\r\n", i + 17)
            self.length = int(head[i + 17 : j if j >= 0 else len(head)])
            self.status = int(head[9:12])
            self.body_at = end + 4
        if len(buffer) - self.body_at < self.length:
            self.buffer = buffer
            return
        body = buffer[self.body_at : self.body_at + self.length]
        self.buffer, self.length = b"", -1
        self.load.completed(self.status, body, self.sent_at)
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.load.errors["connection lost"] += 1
        self.load.closed()


def _request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _build_requests(spec: dict[str, Any]) -> list[bytes]:
    """Everything a request needs, signatures included, is made here, before the clock starts."""
    from app_backend.organisations.signing import sign_request

    host = f"{spec['host']}:{spec['port']}"
    kind = spec["kind"]
    if kind == "get":
        return [_request("GET", spec["path"], host, {})]
    if kind == "issue":
        return [
            _request("POST", ISSUE_PATH, host, {"Authorization": f"Bearer {token}"})
            for token in spec["tokens"]
        ]
    if kind == "verify-device":
        from cryptography.hazmat.primitives.serialization import load_der_private_key

        from code_service.holder import DeviceWallet

        wallets = []
        for key_der, credential in spec["wallets"]:
            wallet = DeviceWallet(load_der_private_key(key_der, None))  # type: ignore[arg-type]
            wallet.load_credential(credential)
            wallets.append(wallet)
        codes: Sequence[str] = [wallets[i % len(wallets)].code() for i in range(spec["count"])]
    else:
        codes = spec["codes"]
    count = spec["count"] if kind == "verify-device" else spec.get("count", len(codes))
    requests = []
    for i in range(count):
        body = json.dumps({"code": codes[i % len(codes)], "scene": spec["scene"]}).encode()
        headers = sign_request(spec["key_id"], spec["secret"], "POST", VERIFY_PATH, body)
        headers["Content-Type"] = "application/json"
        requests.append(_request("POST", VERIFY_PATH, host, headers, body))
    return requests


async def _generate(spec: dict[str, Any], requests: list[bytes]) -> _Load:
    loop = asyncio.get_running_loop()
    load = _Load(requests, spec)
    connections: list[_Connection] = []
    for _ in range(spec["connections"]):
        _, protocol = await loop.create_connection(lambda: _Connection(load), spec["host"], spec["port"])
        connections.append(protocol)
    load.open = len(connections)
    load.finished = loop.create_future()
    print("ready", flush=True)
    start = float(await loop.run_in_executor(None, sys.stdin.readline))
    load.window_start = start + spec["warmup"]
    load.window_end = load.window_start + spec["duration"]
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    for connection in connections:
        connection.send()
    try:
        await asyncio.wait_for(load.finished, timeout=spec["warmup"] + spec["duration"] + 30)
    except TimeoutError:
        load.errors["unfinished at the end"] += load.open
    return load


def run_generator(spec_path: str, result_path: str) -> int:
    spec = pickle.loads(Path(spec_path).read_bytes())  # noqa: S301 (our own file, written by the parent)
    requests = _build_requests(spec)
    load = asyncio.run(_generate(spec, requests))
    end = min(load.window_end, load.exhausted_at or load.window_end)
    result = {
        "ok": load.ok,
        "seconds": max(1e-9, end - load.window_start),
        "exhausted": load.exhausted_at is not None and load.exhausted_at < load.window_end,
        "errors": dict(load.errors),
        "reasons": dict(load.reasons),
        "latencies": load.latencies,
        "prepared": len(requests),
        "codes": [_extract_code(b) for b in load.bodies],
    }
    Path(result_path).write_bytes(pickle.dumps(result))
    return 0


def _extract_code(body: bytes) -> str:
    i = body.find(_CODE) + len(_CODE)
    return body[i : body.find(b'"', i)].decode()


# ------------------------------------------------------------------------------------------------------------
# The server under test
# ------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    external = bool(os.environ.get("DATABASE_URL"))
    given = os.environ.get("TZT_DATA_DIR")
    # With an external database, its data key must match: keep the operator's data folder if one is given.
    data_dir = Path(given) if external and given else Path(tempfile.mkdtemp(prefix="tzt-bench-"))
    owned = not (external and given)
    port = free_port()
    env = {
        **os.environ,
        "TZT_DATA_DIR": str(data_dir),
        "TZT_ENV": "dev",
        "TZT_WORKERS": str(WORKERS),
        "TZT_OTP_DAILY_PER_IP": "100000",
        # The bench measures speed, not limits: a resident's and an organisation's counters are still incremented
        # on every request, but 200 residents showing codes flat out for a minute would pass the default 120
        # requests a minute, and one hospital verifying flat out passes its default 3,000 a second on a quiet
        # machine (its 429s, not counted as completed, then lowered the health row).
        "TZT_RATE_RESIDENT_PER_MINUTE": "1000000",
        "TZT_RATE_ORGANISATION_PER_SECOND": "1000000",
        "TZT_LOG_LEVEL": "WARNING",
    }
    env.pop("TZT_PORT", None)
    log = data_dir / "bench-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "app_backend.cli", "serve", "--port", str(port), "--no-worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", "127.0.0.1", port, data_dir, proc, log)
    try:
        wait_ready(server.base, proc, log, 180.0, "the server")
        server.find_processes()
        yield server
    finally:
        stop_server(proc)
        if owned:
            shutil.rmtree(data_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------
# Setup through the API: residents, device credentials, fresh codes
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Resident:
    phone: str
    token: str


def _random_phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


async def _create_residents(base: str, count: int) -> list[Resident]:
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


async def _riders(base: str, residents: Sequence[Resident]) -> None:
    """Withholding agreements through the WeChat sandbox, so that transit answers are the usual 'ok' (a refused
    single-use code costs one more Redis command to give its claim back)."""
    import httpx

    from loadtests.fixtures import Resident as Rider
    from loadtests.fixtures import sign_agreements

    riders = [Rider("", r.phone, r.token, "") for r in residents]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client, httpx.AsyncClient(timeout=30) as http:
        await sign_agreements(client, http, riders)


async def _issue_codes(base: str, residents: Sequence[Resident]) -> list[str]:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post(ISSUE_PATH, headers={"Authorization": f"Bearer {r.token}"}) for r in residents)
        )
    return [a.json()["code"] for a in answers if a.status_code == 200]


async def _device_wallets(base: str, residents: Sequence[Resident]) -> list[tuple[bytes, str]]:
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
            key_der = wallet.private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
            out.append((key_der, answer.json()["credential"]))
    return out


def _sample_answer(base: str, creds: dict[str, str], code: str, scene: str) -> tuple[int, str]:
    import httpx

    from app_backend.organisations.signing import sign_request

    body = json.dumps({"code": code, "scene": scene}).encode()
    headers = sign_request(creds["key_id"], creds["secret"], "POST", VERIFY_PATH, body)
    answer = httpx.post(
        base + VERIFY_PATH, content=body, headers={**headers, "Content-Type": "application/json"}, timeout=10
    )
    return answer.status_code, answer.text


# ------------------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------------------


@dataclass
class HttpResult:
    """One row of one round."""

    name: str
    rate: float
    ok: int
    seconds: float
    errors: dict[str, int]
    reasons: dict[str, int]
    latencies: list[float] = field(repr=False)  # seconds, of the responses counted
    cpu_seconds: dict[str, float] = field(repr=False)  # used over the window: by group, steal, other
    window: float  # wall seconds between the two CPU samples
    prepared: int
    exhausted: bool
    codes: list[str] = field(default_factory=list, repr=False)

    @property
    def cpu(self) -> dict[str, float]:
        return _cpu_shares([self])


@dataclass
class HttpRow:
    """One row over all the rounds. Its ratio is the median of the rounds' ratios, each its rate over the mean
    of the ping rates measured seconds before and after it (its round's ping and the next): a burst of steal or
    other work skews the round it falls in, not the median (a ratio of medians would pair a ping from one round
    with a row from another)."""

    name: str
    rate: float  # req/s, median over the rounds
    ratio: float  # median over the rounds of rate / the mean of the pings either side
    low: float  # lowest and highest of the rounds' ratios
    high: float
    p50_ms: float  # over the responses of all the rounds
    p99_ms: float
    errors: dict[str, int]  # summed over the rounds
    reasons: dict[str, int]
    cpu: dict[str, float]  # % of one core over the row's windows in all rounds
    exhausted: int  # rounds in which the prepared requests ran out

    @classmethod
    def combined(cls, results: Sequence[HttpResult], baselines: Sequence[float]) -> HttpRow:
        ratios = [r.rate / max(b, 1e-9) for r, b in zip(results, baselines, strict=True)]
        latencies = [t for r in results for t in r.latencies]
        errors: collections.Counter[str] = collections.Counter()
        reasons: collections.Counter[str] = collections.Counter()
        for result in results:
            errors.update(result.errors)
            reasons.update(result.reasons)
        return cls(
            name=results[0].name,
            rate=statistics.median(r.rate for r in results),
            ratio=statistics.median(ratios),
            low=min(ratios),
            high=max(ratios),
            p50_ms=_percentile(latencies, 0.5),
            p99_ms=_percentile(latencies, 0.99),
            errors=dict(errors),
            reasons=dict(reasons),
            cpu=_cpu_shares(results),
            exhausted=sum(r.exhausted for r in results),
        )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


QUIET = {"limit": 25.0, "wait": 30.0}


def other_load(pids: Sequence[int], seconds: float = 1.0) -> float:
    """CPU used by processes other than `pids` and this one over `seconds`, in % of one core."""
    ours = [*pids, os.getpid()]
    mine0, box0 = cpu_seconds(ours), machine_busy_seconds()
    time.sleep(seconds)
    return 100 * ((machine_busy_seconds() - box0) - (cpu_seconds(ours) - mine0)) / seconds


def wait_for_quiet(pids: Sequence[int], what: str) -> float:
    """Other work on this small machine (a test run, a build) distorts every number: wait for it to pass, up
    to QUIET['wait'] seconds, and say so."""
    deadline = time.monotonic() + QUIET["wait"]
    other = other_load(pids)
    if other > QUIET["limit"]:
        print(
            f"  other processes use {other:.0f}% of a core; waiting up to {QUIET['wait']:.0f} s before {what}"
        )
        while other > QUIET["limit"] and time.monotonic() < deadline:
            other = other_load(pids, 2.0)
        if other > QUIET["limit"]:
            print(f"  still {other:.0f}% of a core busy elsewhere; measuring anyway (see the 'other' column)")
    return other


def _server_pids(server: Server) -> list[int]:
    return [pid for pids in server.groups.values() for pid in pids]


def _cpu_sample(server: Server, procs: Sequence[subprocess.Popen[str]]) -> dict[str, float]:
    return {
        **server.cpu(),
        "generators": cpu_seconds([p.pid for p in procs]),
        "self": cpu_seconds([os.getpid()]),
        **machine_split_seconds(),
        "wall": time.monotonic(),
    }


def _cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two samples: per group, steal, and 'other' = the machine's busy time (steal apart)
    not used by any process we know of."""
    used = {k: after[k] - before[k] for k in after if k not in ("machine", "wall")}
    ours = sum(v for k, v in used.items() if k != "steal")
    used["other"] = max(0.0, (after["machine"] - before["machine"]) - ours)
    return used


def _cpu_shares(results: Sequence[HttpResult]) -> dict[str, float]:
    """% of one core over the windows of `results` together: their CPU seconds over their wall seconds."""
    window = sum(r.window for r in results)
    keys = {k for r in results for k in r.cpu_seconds}
    return {k: 100 * sum(r.cpu_seconds.get(k, 0.0) for r in results) / window for k in keys}


def run_load(
    server: Server,
    name: str,
    specs: list[dict[str, Any]],
    warmup: float,
    duration: float,
    work: Path,
    at_window: Callable[[], None] | None = None,
    *,
    wait: bool = True,
) -> HttpResult:
    """Starts one generator process per spec, lets them all build their requests and connect, then starts
    them together; samples CPU time of the server, Redis, PostgreSQL and the generators over the window.
    With `wait`, first waits for other work on the machine to pass (the rounds wait once, before their ping)."""
    if wait:
        wait_for_quiet(_server_pids(server), name)
    procs = []
    results = []
    for i, spec in enumerate(specs):
        spec_path, result_path = work / f"spec-{i}.pkl", work / f"result-{i}.pkl"
        spec_path.write_bytes(
            pickle.dumps(
                {**spec, "host": server.host, "port": server.port, "warmup": warmup, "duration": duration}
            )
        )
        result_path.unlink(missing_ok=True)
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "loadtests.bench", "--generator", str(spec_path), str(result_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        results.append(result_path)
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            for p in procs:
                p.kill()
            raise RuntimeError(f"load generator for {name} failed to start")
    start = time.monotonic() + 0.3
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    time.sleep(max(0.0, start + warmup - time.monotonic()))
    cpu0 = _cpu_sample(server, procs)
    if at_window is not None:
        at_window()
    time.sleep(max(0.0, start + warmup + duration - time.monotonic()))
    cpu1 = _cpu_sample(server, procs)
    for proc in procs:
        proc.wait(120)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator for {name} exited with {proc.returncode}")
    parts = [pickle.loads(p.read_bytes()) for p in results]  # noqa: S301 (written by our generators)
    errors: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    for part in parts:
        errors.update(part["errors"])
        reasons.update(part["reasons"])
        latencies += part["latencies"]
    return HttpResult(
        name=name,
        rate=sum(part["ok"] / part["seconds"] for part in parts),
        ok=sum(part["ok"] for part in parts),
        seconds=max(part["seconds"] for part in parts),
        errors=dict(errors),
        reasons=dict(reasons),
        latencies=latencies,
        cpu_seconds=_cpu_used(cpu0, cpu1),
        window=max(1e-9, cpu1["wall"] - cpu0["wall"]),
        prepared=sum(part["prepared"] for part in parts),
        exhausted=any(part["exhausted"] for part in parts),
        codes=[code for part in parts for code in part["codes"]],
    )


def _split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    return [list(items[i::parts]) for i in range(parts)]


def _planned(ping_rate: float, seconds: float, generators: int) -> int:
    """Single-use requests to sign up front per generator: enough for the baseline's rate over `seconds`."""
    return int(ping_rate * seconds * 1.3 / generators) + 500


def _profile_seconds(args: argparse.Namespace) -> int:
    """py-spy's time per profiled endpoint: one row's measured time over all the rounds (enough samples)."""
    return max(3, int(args.duration * args.http_rounds) - 1)


PING_ROW = "GET /api/v1/ping"
ISSUE_ROW = "POST /api/v1/codes/personal"
TRANSIT_ROW = "POST /api/v1/verify transit (fresh server codes)"
HEALTH_ROW = "POST /api/v1/verify health (server codes)"
DEVICE_ROW = "POST /api/v1/verify health (device codes)"
ROWS = {
    PING_ROW: "ping",
    ISSUE_ROW: "issue",
    TRANSIT_ROW: "transit",
    HEALTH_ROW: "health",
    DEVICE_ROW: "device",
}


def _round_line(number: int, rounds: int, results: Sequence[HttpResult], topped: int) -> str:
    """One compact line per round: every row's rate and ratio to this round's ping, the round's steal and other
    (mean over its windows / the busiest window)."""
    ping = results[0].rate
    cells = [f"ping {ping:,.0f}"]
    for result in results[1:]:
        cell = f"{ROWS[result.name]} {result.rate:,.0f} {_pct(result.rate / max(ping, 1e-9))}"
        if result.name == TRANSIT_ROW and topped:
            cell += f" (+{topped:,} codes)"
        if result.errors:
            cell += f" ({sum(result.errors.values())} errors)"
        if result.exhausted:
            cell += " (ran out)"
        cells.append(cell)
    shares = _cpu_shares(results)
    steal = max(r.cpu.get("steal", 0.0) for r in results)
    other = max(r.cpu.get("other", 0.0) for r in results)
    return (
        f"  round {number}/{rounds}: " + " | ".join(cells) + f" req/s | steal {shares.get('steal', 0):.0f}%"
        f" (max {steal:.0f}%), other {shares.get('other', 0):.0f}% (max {other:.0f}%)"
    )


def http_benchmarks(args: argparse.Namespace) -> tuple[list[HttpRow], dict[str, Any]]:
    gens, per_gen = args.generators, max(1, args.connections // args.generators)
    common = {"connections": per_gen}
    ping_specs = [{**common, "kind": "get", "path": PING_PATH, "cycle": True}] * gens
    info: dict[str, Any] = {}
    with running_server() as server, tempfile.TemporaryDirectory(prefix="tzt-bench-load-") as tmp:
        work = Path(tmp)
        info["worker_pid"] = server.worker
        info["backing"] = "embedded" if "postgres" in server.groups else "external (DATABASE_URL/REDIS_URL)"
        creds = json.loads((server.data_dir / "demo-credentials.json").read_text())
        hospital = {k: creds[HOSPITAL][k] for k in ("key_id", "secret")}
        metro = {k: creds[METRO][k] for k in ("key_id", "secret")}
        t0 = time.monotonic()
        residents = asyncio.run(_create_residents(server.base, args.residents))
        asyncio.run(_riders(server.base, residents))
        wallets = asyncio.run(_device_wallets(server.base, residents[: args.devices]))
        print(
            f"  setup: {len(residents)} residents logged in with withholding agreements, {len(wallets)} device "
            "credentials "
            f"({time.monotonic() - t0:.1f} s)",
            flush=True,
        )
        tokens = [r.token for r in residents]

        def load(name: str, specs: list[dict[str, Any]]) -> HttpResult:
            # No quiet wait between the rows of a round: the round waits once, so its rows stay close together.
            return run_load(server, name, specs, args.warmup, args.duration, work, wait=False)

        def issue_specs() -> list[dict[str, Any]]:
            return [
                {**common, "kind": "issue", "tokens": shard, "cycle": True, "keep_bodies": True}
                for shard in _split(tokens, gens)
            ]

        def top_up(codes: list[str], wanted: int, rate: float) -> int:
            """Adds fresh codes, issued by the same residents the same way as in the issue row, until `codes`
            has `wanted`; returns how many it added."""
            before = len(codes)
            for _ in range(3):
                if len(codes) >= wanted:
                    break
                seconds = max(0.5, 1.2 * (wanted - len(codes)) / max(rate, 100.0))
                codes += run_load(server, "top-up", issue_specs(), 0.0, seconds, work, wait=False).codes
            return len(codes) - before

        transit_rates: list[float] = []
        topped: list[int] = []  # codes added to each round's transit row beyond its issue row's

        def one_round(number: int) -> list[HttpResult]:
            # Reusable server codes for health, issued afresh every round: a server code lives 60 s, and the
            # rounds together last longer (an expired code would be refused early, skipping the work measured).
            codes = asyncio.run(_issue_codes(server.base, residents))
            if number == 1:
                status, text = _sample_answer(server.base, hospital, codes[0], "health")
                print(f"  sample health answer: {status} {text}", flush=True)
            wait_for_quiet(_server_pids(server), f"round {number}")
            ping = load(PING_ROW, ping_specs)
            # Single-use requests are signed up front: enough for this round's baseline rate over a row.
            planned = _planned(ping.rate, args.warmup + args.duration, gens)
            issue = load(ISSUE_ROW, issue_specs())
            fresh = issue.codes
            if number == 1:
                status, text = _sample_answer(server.base, metro, fresh.pop(), "transit")
                print(f"  sample transit answer: {status} {text}", flush=True)
            # Transit shows every code once, warm-up included, and may run as fast as issue or faster (or a burst
            # may have slowed this round's issue row): top up, outside any window, so that it never runs dry.
            expected = max(transit_rates, default=issue.rate) * (args.warmup + args.duration) * 1.3 + 200
            topped.append(top_up(fresh, int(expected), issue.rate))
            transit = load(
                TRANSIT_ROW,
                [
                    {**common, "kind": "verify", "scene": "transit", **metro, "codes": shard, "cycle": False}
                    for shard in _split(fresh, gens)
                ],
            )
            health = load(
                HEALTH_ROW,
                [
                    {
                        **common,
                        "kind": "verify",
                        "scene": "health",
                        **hospital,
                        "codes": codes,
                        "count": planned,
                        "cycle": False,
                        "tally_reasons": True,
                    }
                ]
                * gens,
            )
            device = load(
                DEVICE_ROW,
                [
                    {
                        **common,
                        "kind": "verify-device",
                        "scene": "health",
                        **hospital,
                        "wallets": shard,
                        "count": planned,
                        "cycle": False,
                        "tally_reasons": True,
                    }
                    for shard in _split(wallets, gens)
                ],
            )
            transit_rates.append(transit.rate)
            return [ping, issue, transit, health, device]

        rounds: list[list[HttpResult]] = []
        for number in range(1, args.http_rounds + 1):
            rounds.append(one_round(number))
            print(_round_line(number, args.http_rounds, rounds[-1], topped[-1]), flush=True)
        # One more ping closes the last round: every round's rows are measured against the mean of the pings on
        # either side of them (its own and the next round's), so a drift of the machine's speed over the seconds
        # of a round (seen here: ping 4,800 to 7,100 req/s in consecutive windows) cancels to first order.
        closing = load(PING_ROW, ping_specs)
        info["rounds"] = rounds
        pings = [results[0] for results in rounds]
        after = [*pings[1:], closing]
        baselines = [(before.rate + later.rate) / 2 for before, later in zip(pings, after, strict=True)]
        rows = [HttpRow.combined([results[i] for results in rounds], baselines) for i in range(len(ROWS))]
        if args.profile:
            ping_rate = statistics.median(p.rate for p in pings)
            planned = _planned(ping_rate, 1.0 + _profile_seconds(args) + 1.0, gens)
            info["profile"] = profile_server(server, args, residents, hospital, planned, work, wallets)
    return rows, info


# ------------------------------------------------------------------------------------------------------------
# Profiling (optional, after the measured runs)
# ------------------------------------------------------------------------------------------------------------


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


_OUTER = re.compile(
    r"\((granian/(server|cli|__main__)|click/|multiprocessing/|<frozen runpy>)|run_forever|run_until_complete"
)


_OWNERS = [
    (re.compile(r"\((prometheus_client/|litestar/plugins/prometheus/)"), "metrics middleware (prometheus)"),
    (re.compile(r"\(redis/"), "redis-py client"),
    (re.compile(r"\(anyio/"), "anyio task groups (Litestar resolving dependencies)"),
    (re.compile(r"\(litestar/"), "Litestar (routing, middleware, DI, parsing, responses)"),
    (re.compile(r"\(jwt/"), "PyJWT (access token)"),
    (re.compile(r"\(granian/"), "Granian (Python side)"),
    (re.compile(r"\((msgspec|structlog|asyncpg)/"), "msgspec / structlog / asyncpg"),
    (re.compile(r"^(sign_raw|verify_raw|load_point|raw_signature) "), "ECDSA P-256 (cryptography)"),
    (re.compile(r"^b45(en|de)code"), "base45"),
    (re.compile(r"request_id_middleware"), "request-id middleware (app)"),
    (re.compile(r"\((app_backend|code_service)/"), "application code (other)"),
]


def _owner(frames: list[str]) -> str:
    """Who a sample's time belongs to: the innermost frame that is not the standard library (so uuid4 under the
    request-id middleware counts for the middleware); only-stdlib stacks are the event loop and its sockets."""
    for frame in reversed(frames):
        for pattern, owner in _OWNERS:
            if pattern.search(frame):
                return owner
    return "asyncio event loop, sockets (stdlib)"


def _top_frames(raw: Path, limit: int = 14) -> dict[str, Any]:
    """From py-spy's collapsed stacks (recorded with --threads): how the samples split between the event-loop
    thread and Granian's runtime thread, and, for the event-loop thread, the frames with the most self and
    inclusive samples (as % of that thread's samples), leaving out the outer frames every sample has."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    owners: collections.Counter[str] = collections.Counter()
    main = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        name = "event loop (MainThread)" if "MainThread" in thread else "Granian runtime (Rust) thread"
        threads[name] += count
        if "MainThread" not in thread:
            continue
        frames = [re.sub(r" \(.*?/(site-packages|lib/python3\.\d+|main)/", " (", f.strip()) for f in frames]
        frames = [f for f in frames if not _OUTER.search(f)]
        if not frames:
            continue
        main += count
        owners[_owner(frames)] += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = sum(threads.values())
    if not main:
        return {"threads": {}, "owners": [], "self": [], "inclusive": []}
    return {
        "threads": {name: 100 * n / total for name, n in threads.most_common()},
        "owners": [(name, 100 * n / main) for name, n in owners.most_common()],
        "self": [(f, 100 * n / main) for f, n in own.most_common(limit)],
        "inclusive": [(f, 100 * n / main) for f, n in inclusive.most_common(limit * 2)],
    }


def _start_spies(
    spy: str, pid: int, seconds: int, rate: int, raw: Path, svg: Path, into: list[subprocess.Popen[bytes]]
) -> None:
    for fmt, path in (("raw", raw), ("flamegraph", svg)):
        into.append(
            subprocess.Popen(  # noqa: S603
                [
                    *(spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)),
                    *("--threads", "--format", fmt, "-o", str(path)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )


def profile_server(
    server: Server,
    args: argparse.Namespace,
    residents: Sequence[Resident],
    hospital: dict[str, str],
    planned: int,
    work: Path,
    wallets: Sequence[Any],
) -> dict[str, Any]:
    spy = _py_spy()
    if spy is None:
        return {"error": "py-spy not found"}
    out_dir = Path(args.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    gens, per_gen = args.generators, max(1, args.connections // args.generators)
    profiles: dict[str, Any] = {}
    codes = asyncio.run(_issue_codes(server.base, residents))
    runs = {
        "ping": [{"connections": per_gen, "kind": "get", "path": PING_PATH, "cycle": True}] * gens,
        "issue": [
            {"connections": per_gen, "kind": "issue", "tokens": [r.token for r in residents], "cycle": True}
        ]
        * gens,
        "verify-health": [
            {
                "connections": per_gen,
                "kind": "verify",
                "scene": "health",
                **hospital,
                "codes": codes,
                "count": planned,
                "cycle": False,
            }
        ]
        * gens,
        "verify-device": [
            {
                "connections": per_gen,
                "kind": "verify-device",
                "scene": "health",
                **hospital,
                "wallets": shard,
                "count": planned,
                "cycle": False,
            }
            for shard in _split(list(wallets), gens)
        ],
    }
    for name, specs in runs.items():
        raw = out_dir / f"{name}.txt"
        svg = out_dir / f"{name}.svg"
        seconds = _profile_seconds(args)
        spies: list[subprocess.Popen[bytes]] = []
        start_spies = functools.partial(
            _start_spies, spy, server.worker, seconds, args.profile_rate, raw, svg, spies
        )
        run_load(server, f"profile {name}", specs, 1.0, float(seconds + 1), work, start_spies)
        for spy_proc in spies:
            spy_proc.wait(60)
        if raw.exists():
            profiles[name] = {**_top_frames(raw), "svg": str(svg)}
    return profiles


# ------------------------------------------------------------------------------------------------------------
# Offline verifier against raw `cryptography`
# ------------------------------------------------------------------------------------------------------------


@dataclass
class OfflineCase:
    name: str
    verifier: float  # calls/s, median over the rounds
    raw: float
    raw_label: str
    ratio: float  # median over the rounds of verifier/raw, the two measured one after the other in each round
    overhead_us: float  # median over the rounds of the verifier's time per code minus raw's
    bare: float = 0.0
    bare_label: str = ""
    bare_ratio: float = 0.0

    @classmethod
    def paired(
        cls, name: str, rates: dict[str, list[float]], verifier: str, raw: str, raw_label: str, bare: str = ""
    ) -> OfflineCase:
        def ratio(other: str) -> float:
            return statistics.median(v / r for v, r in zip(rates[verifier], rates[other], strict=True))

        return cls(
            name,
            statistics.median(rates[verifier]),
            statistics.median(rates[raw]),
            raw_label,
            ratio(raw),
            statistics.median(1e6 / v - 1e6 / r for v, r in zip(rates[verifier], rates[raw], strict=True)),
            statistics.median(rates[bare]) if bare else 0.0,
            "2 verifies only" if bare else "",
            ratio(bare) if bare else 0.0,
        )


def _rate(fn: Callable[[], int]) -> float:
    """Calls per second of this thread's CPU time; fn returns how many calls it made. CPU time, not wall time:
    on this 2-core machine other work preempts the loop now and then, and the time it spends descheduled would
    count against whichever function happened to be running."""
    started = time.thread_time()
    calls = fn()
    return calls / (time.thread_time() - started)


def _alternating(fns: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """Calls per second of every function in every round. Rounds are short (tens of milliseconds per function)
    and interleave the functions, so a clock or load change on the machine affects neighbours alike."""
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            rates[name].append(_rate(fn))
    return rates


def offline_benchmarks(rounds: int) -> tuple[list[OfflineCase], dict[str, float]]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from code_service.holder import DeviceWallet
    from code_service.verifier import DenyList, OfflineVerifier, ReplayCache
    from code_service.verifier.format import (
        TYPE_PERSONAL,
        DeviceCode,
        Flags,
        Health,
        ServerCode,
        compressed_point,
        decode,
        decode_fields,
        encode_credential,
        encode_server_code,
        kid_for,
    )

    ecdsa = ec.ECDSA(hashes.SHA256())
    curve = ec.SECP256R1()

    def der(raw: bytes) -> bytes:
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    platform_key = ec.generate_private_key(curve)
    public = platform_key.public_key()
    kid = kid_for(public)
    numbers = public.public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "EC",
                "crv": "P-256",
                "alg": "ES256",
                "kid": kid.hex(),
                "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big")),
            }
        ]
    }
    gate = OfflineVerifier(jwks, DenyList())
    platform_public = gate.keys[kid]  # the gate's own key object, as loaded from the JWKS
    flags = Flags(Health.GREEN, may_ride=True, insured=True)
    now = int(time.time())

    wallets = []
    for _ in range(64):
        wallet = DeviceWallet.create()
        credential = encode_credential(
            platform_key,
            kid,
            secrets.token_bytes(8),
            secrets.token_bytes(8),
            now - 60,
            now - 60 + 24 * 3600,
            flags,
            compressed_point(wallet.private_key.public_key()),
        )
        wallet.load_credential(base64.b64encode(credential).decode())
        wallets.append(wallet)
    n_device, n_server = 300, 600  # per round: about 40 ms per device-code row, 30 ms per server-code row
    device_same = [wallets[0].code()] * n_device
    device_fresh = [wallets[i % len(wallets)].code() for i in range(n_device)]
    server_same = [
        encode_server_code(
            platform_key, kid, TYPE_PERSONAL, secrets.token_bytes(8), secrets.token_bytes(8), now, 60, flags
        )
    ] * n_server
    server_fresh = [
        encode_server_code(
            platform_key, kid, TYPE_PERSONAL, secrets.token_bytes(8), secrets.token_bytes(8), now, 60, flags
        )
        for _ in range(n_server)
    ]
    for text in (device_same[0], device_fresh[0], server_same[0], server_fresh[0]):
        verdict = gate.verify(text, "transit", consume=False)
        assert verdict.allowed, verdict

    def device_items(texts: list[str]) -> list[tuple[bytes, bytes, bytes, bytes, bytes, Any]]:
        items = []
        for text in texts:
            code = decode(text)
            assert isinstance(code, DeviceCode)
            items.append(
                (
                    code.credential,
                    der(code.credential_signature),
                    code.device_key,
                    code.signed,
                    der(code.device_signature),
                    ec.EllipticCurvePublicKey.from_encoded_point(curve, code.device_key),
                )
            )
        return items

    def server_items(texts: list[str]) -> list[tuple[bytes, bytes]]:
        items = []
        for text in texts:
            code = decode(text)
            assert isinstance(code, ServerCode)
            items.append((code.signed, der(code.signature)))
        return items

    def verifier_loop(texts: list[str], consume: bool) -> Callable[[], int]:
        def run() -> int:
            if consume:
                gate.replay = ReplayCache()  # each round meets the codes for the first time
            verify = gate.verify
            for text in texts:
                verify(text, "transit", consume=consume)
            return len(texts)

        return run

    def raw_device(items: list[tuple[bytes, bytes, bytes, bytes, bytes, Any]]) -> Callable[[], int]:
        def run() -> int:
            key = platform_public
            load = ec.EllipticCurvePublicKey.from_encoded_point
            for credential, credential_sig, point, signed, device_sig, _ in items:
                key.verify(credential_sig, credential, ecdsa)
                load(curve, point).verify(device_sig, signed, ecdsa)
            return len(items)

        return run

    def bare_device(items: list[tuple[bytes, bytes, bytes, bytes, bytes, Any]]) -> Callable[[], int]:
        def run() -> int:
            key = platform_public
            for credential, credential_sig, _, signed, device_sig, device_key in items:
                key.verify(credential_sig, credential, ecdsa)
                device_key.verify(device_sig, signed, ecdsa)
            return len(items)

        return run

    def raw_server(items: list[tuple[bytes, bytes]]) -> Callable[[], int]:
        def run() -> int:
            key = platform_public
            for signed, signature in items:
                key.verify(signature, signed, ecdsa)
            return len(items)

        return run

    def decode_only(texts: list[str], parse: Callable[[str], Any]) -> Callable[[], int]:
        def run() -> int:
            for text in texts:
                parse(text)
            return len(texts)

        return run

    d_same, d_fresh = device_items(device_same), device_items(device_fresh)
    s_same, s_fresh = server_items(server_same), server_items(server_fresh)
    rates = _alternating(
        {
            "v_device_same": verifier_loop(device_same, False),
            "raw_device_same": raw_device(d_same),
            "bare_device_same": bare_device(d_same),
            "v_device_fresh": verifier_loop(device_fresh, True),
            "raw_device_fresh": raw_device(d_fresh),
            "bare_device_fresh": bare_device(d_fresh),
            "v_server_same": verifier_loop(server_same, False),
            "raw_server_same": raw_server(s_same),
            "v_server_fresh": verifier_loop(server_fresh, True),
            "raw_server_fresh": raw_server(s_fresh),
            "fields_device": decode_only(device_fresh, decode_fields),
            "fields_server": decode_only(server_fresh, decode_fields),
            "decode_device": decode_only(device_fresh, decode),
            "decode_server": decode_only(server_fresh, decode),
        },
        rounds,
    )
    device_raw, server_raw = "load point + 2 verifies", "1 verify"
    cases = [
        OfflineCase.paired(
            "device code, same code, consume=False",
            rates,
            "v_device_same",
            "raw_device_same",
            device_raw,
            "bare_device_same",
        ),
        OfflineCase.paired(
            "device code, fresh code each call, consume=True",
            rates,
            "v_device_fresh",
            "raw_device_fresh",
            device_raw,
            "bare_device_fresh",
        ),
        OfflineCase.paired(
            "server code, same code, consume=False", rates, "v_server_same", "raw_server_same", server_raw
        ),
        OfflineCase.paired(
            "server code, fresh code each call, consume=True",
            rates,
            "v_server_fresh",
            "raw_server_fresh",
            server_raw,
        ),
    ]
    decode_us = {
        "device": 1e6 / statistics.median(rates["fields_device"]),
        "server": 1e6 / statistics.median(rates["fields_server"]),
        "device_objects": 1e6 / statistics.median(rates["decode_device"]),
        "server_objects": 1e6 / statistics.median(rates["decode_server"]),
    }
    return cases, decode_us


# ------------------------------------------------------------------------------------------------------------
# Deny list
# ------------------------------------------------------------------------------------------------------------


def denylist_benchmark(entries: int, lookups: int = 200_000) -> dict[str, float]:
    from code_service.verifier.denylist import DenyList, IdSet, pack_ids

    # Sorted random 64-bit ids without sorting ten million Python ints: a running sum of random gaps.
    gaps = array("I")
    gaps.frombytes(os.urandom(4 * entries))
    scale = (2**64 - 1) // (entries * 2**32)
    started = time.perf_counter()
    ids = array("Q", accumulate((g + 1) * scale for g in gaps))
    generated = time.perf_counter() - started
    del gaps
    started = time.perf_counter()
    made = IdSet.from_sorted(ids)
    from_sorted = time.perf_counter() - started
    rng = random.Random(7)  # noqa: S311 (benchmark sampling, not security)
    present = [ids[rng.randrange(entries)] for _ in range(lookups)]
    absent: list[int] = []
    while len(absent) < lookups:
        value = rng.getrandbits(64)
        if value not in made:
            absent.append(value)

    def per_lookup(values: Sequence[Any], probe: Callable[[Any], bool]) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for value in values:
                probe(value)
            best = min(best, (time.perf_counter() - started) / len(values))
        return best * 1e6

    hits = sum(1 for v in present[:1000] if v in made)
    assert hits == 1000
    contains = made.__contains__
    deny = DenyList()
    deny.sets["credential"] = made
    present_bytes = [v.to_bytes(8, "big") for v in present]
    absent_bytes = [v.to_bytes(8, "big") for v in absent]

    def denies(ident: bytes) -> bool:
        return deny.denies("credential", ident)

    result = {
        "entries": float(len(made)),
        "memory_bytes": float(made.memory_bytes()),
        "getsizeof": float(sys.getsizeof(ids)),
        "generate_s": generated,
        "from_sorted_s": from_sorted,
        "present_us": per_lookup(present, contains),
        "absent_us": per_lookup(absent, contains),
        "denies_present_us": per_lookup(present_bytes, denies),
        "denies_absent_us": per_lookup(absent_bytes, denies),
    }
    # What a gate does on a full sync: base64 of big-endian ids in, a verified-sorted IdSet out.
    big_endian = array("Q", ids)
    if sys.byteorder == "little":
        big_endian.byteswap()
    document = {
        "full": True,
        "version": 1,
        "issued_at": int(time.time()),
        "credential": {"add": base64.b64encode(big_endian.tobytes()).decode(), "remove": ""},
        "account": {"add": pack_ids([]), "remove": ""},
        "debtor": {"add": pack_ids([]), "remove": ""},
    }
    del big_endian
    started = time.perf_counter()
    DenyList().apply(document)
    result["snapshot_apply_s"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _verdict(ratio: float, goal: float) -> str:
    return "meets goal" if ratio >= goal else "BELOW goal"


def _goal(name: str) -> float | None:
    return GOAL_ISSUE if name == ISSUE_ROW else GOAL_VERIFY if "verify" in name else None


def _spread(row: HttpRow) -> str:
    return f"{100 * row.low:.0f}-{100 * row.high:.0f}%"


def _busy_rounds(rounds: Sequence[Sequence[HttpResult]], key: str) -> tuple[int, float]:
    """In how many rounds some row's window had more than QUIET['limit'] % of a core of `key`, and the most."""
    worst = [max(r.cpu.get(key, 0.0) for r in results) for results in rounds]
    return sum(1 for w in worst if w > QUIET["limit"]), max(worst, default=0.0)


def print_http(args: argparse.Namespace, http: list[HttpRow], info: dict[str, Any]) -> None:
    rounds: list[list[HttpResult]] = info["rounds"]
    print(
        f"HTTP, one server: Granian with ONE worker (TZT_WORKERS={WORKERS}), PostgreSQL + Redis {info['backing']};"
        f" {args.generators} load generator process{'es' if args.generators > 1 else ''} x"
        f" {max(1, args.connections // args.generators)} keep-alive connections;\n{len(rounds)} rounds of all the"
        f" rows one after the other, {args.warmup:g} s warm-up + {args.duration:g} s measured per row; counted:"
        " HTTP 200 responses completed in the window.\nvs ping = median over the rounds of the row's rate / the mean"
        " of the ping rows either side of it (rounds = the lowest and highest round); req/s = median over the"
        " rounds;\np50/p99"
        f" over the responses of all rounds; errors summed. Median ping {http[0].rate:,.0f} req/s."
    )
    print(
        f"This machine has {os.cpu_count()} cores: the generators, Redis and PostgreSQL share them with the"
        " server worker,\nthe same way for every row, so the ratios compare like with like (absolute rates"
        " would be higher with the client elsewhere).\nCPU columns, % of one core over the row's windows in all"
        " rounds: server = both Granian processes (the worker's event-loop thread and its Rust I/O thread),\ngens ="
        " load generators, steal = time the hypervisor gave this VM's cores to other guests (/proc/stat), other ="
        " every other process on the machine\n(both should be near 0: they lower the rates of the rows they"
        " fall in)."
    )
    print()
    header = (
        f"{'endpoint':<50}{'req/s':>9}{'vs ping':>9}{'rounds':>10}{'goal':>6}  {'p50 ms':>7}{'p99 ms':>8}"
        f"{'errors':>8}{'server':>8}{'redis':>7}{'pg':>6}{'gens':>6}{'steal':>6}{'other':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in http:
        goal = _goal(row.name)
        cpu = row.cpu
        is_ping = row.name == PING_ROW
        print(
            f"{row.name:<50}{row.rate:>9,.0f}{'' if is_ping else _pct(row.ratio):>9}"
            f"{'' if is_ping else _spread(row):>10}{(_pct(goal) if goal else ''):>6}"
            f"  {row.p50_ms:>7.1f}{row.p99_ms:>8.1f}{sum(row.errors.values()):>8}"
            f"{cpu.get('server', 0):>7.0f}%{cpu.get('redis', 0):>6.0f}%{cpu.get('postgres', 0):>5.0f}%"
            f"{cpu.get('generators', 0):>5.0f}%{cpu.get('steal', 0):>5.0f}%{cpu.get('other', 0):>5.0f}%"
            + (
                f"  (codes ran out in {row.exhausted} round{'s' if row.exhausted > 1 else ''}: rate over the part"
                " of the window that had them)"
                if row.exhausted
                else ""
            )
        )
    notes = []
    stolen, most = _busy_rounds(rounds, "steal")
    if stolen:
        notes.append(
            f"  WARNING: steal above {QUIET['limit']:.0f}% of a core in {stolen} of {len(rounds)} rounds (up to"
            f" {most:.0f}%): the hypervisor took this VM's cores away; the rows it hit ran slow. The median ratios"
            " hold while fewer than half the rounds are hit; the range shows them."
        )
    busy, most = _busy_rounds(rounds, "other")
    if busy:
        notes.append(
            f"  WARNING: other processes used more than {QUIET['limit']:.0f}% of a core in {busy} of {len(rounds)}"
            f" rounds (up to {most:.0f}%); the rows they hit ran slow and the ratios are less reliable. Rerun on a"
            " quiet machine."
        )
    for row in http:
        if row.errors:
            notes.append(f"  errors in '{row.name}': {row.errors}")
        if row.reasons:
            notes.append(f"  verdicts in '{row.name}': {row.reasons}")
    print("\n".join(notes))
    print(
        "  (bench residents have withholding agreements (transit answers 'ok') but no health data: health answers"
        " 'health-unknown';\n   the work per request - signature, one Redis pipeline, facts, scan record - is the"
        " same as for 'ok')"
    )
    print()


def print_report(
    args: argparse.Namespace,
    http: list[HttpRow],
    info: dict[str, Any],
    offline: list[OfflineCase],
    decode_us: dict[str, float],
    deny: dict[str, float],
) -> None:
    print()
    print("=" * 118)
    if http:
        print_http(args, http, info)
    if offline:
        print(
            "Offline verifier (code_service.verifier.OfflineVerifier.verify, scene transit, one core, CPU time of"
            f" the thread;\n{args.rounds} short alternating rounds: rates are medians over the rounds, a ratio is the"
            " median of each round's verifier/raw, measured one after the other;\nraw = the same codes verified"
            " with `cryptography` directly: signatures already in DER, platform key already loaded; other processes"
            f" used {info.get('offline_other', 0):.0f}% of a core meanwhile)"
        )
        header = (
            f"{'case':<50}{'verifier/s':>11}{'raw/s':>9}  {'raw is':<26}{'ratio':>6}{'goal':>6}"
            f"{'overhead':>10}"
        )
        print(header)
        print("-" * len(header))
        for case in offline:
            print(
                f"{case.name:<50}{case.verifier:>11,.0f}{case.raw:>9,.0f}  {case.raw_label:<26}"
                f"{_pct(case.ratio):>6}{_pct(GOAL_OFFLINE):>6}{case.overhead_us:>7.1f} us"
            )
            if case.bare:
                print(f"{'':<50}{'':>11}{case.bare:>9,.0f}  {case.bare_label:<26}{_pct(case.bare_ratio):>6}")
        if info.get("offline_other", 0) > QUIET["limit"]:
            print(
                f"  WARNING: other processes used {info['offline_other']:.0f}% of a core meanwhile; rerun on a quiet"
                " machine."
            )
        print(
            "  overhead = the verifier's time per code minus raw's (median over the rounds). Decode alone (base45 +"
            f" parse, pure Python):\n  device code {decode_us['device']:.1f} us, server code"
            f" {decode_us['server']:.1f} us (decode_fields, what the verifier uses); with the DeviceCode / ServerCode"
            f" objects of decode(): {decode_us['device_objects']:.1f} / {decode_us['server_objects']:.1f} us"
        )
        print()
    if deny:
        print(
            f"Deny list (IdSet.from_sorted over {deny['entries']:,.0f} sorted random 64-bit ids):"
            f" {deny['memory_bytes']:,.0f} bytes by IdSet.memory_bytes()"
            f" ({deny['memory_bytes'] / deny['entries']:.1f} B/entry; sys.getsizeof {deny['getsizeof']:,.0f}),"
            f"\n  lookup present {deny['present_us']:.2f} us, absent {deny['absent_us']:.2f} us"
            f" (DenyList.denies on 8-byte ids: {deny['denies_present_us']:.2f} / {deny['denies_absent_us']:.2f} us);"
            f" from_sorted check {deny['from_sorted_s']:.2f} s, full-snapshot apply {deny['snapshot_apply_s']:.2f} s"
        )
        print()
    redis_client = info.get("redis_client")
    if redis_client:
        print(
            "Redis client: CPU per hot-path batch (one EVALSHA, 3 commands), 32 concurrent tasks, median of 7 rounds"
        )
        slowest = max(redis_client.values())
        for name, us in redis_client.items():
            print(f"  {name:<40} {us:7.1f} us  ({_pct(us / slowest)} of the slowest)")
        print()
    print("Summary")
    for row in http[1:]:
        goal = _goal(row.name)
        assert goal is not None
        label = "issue" if row.name == ISSUE_ROW else row.name.replace("POST /api/v1/verify ", "verify ")
        print(
            f"  {label:<42}/ trivial {_pct(row.ratio):>5} (rounds {_spread(row)})  (goal {_pct(goal)})"
            f"  {_verdict(row.ratio, goal)}"
        )
    for case in offline:
        ratio = case.ratio
        print(
            f"  offline {case.name:<48} {_pct(ratio):>5} of raw (goal 90%)  {_verdict(ratio, GOAL_OFFLINE)}"
        )
    if deny:
        print(
            f"  deny list {deny['entries'] / 1e6:g}M entries: {deny['memory_bytes'] / 1e6:.0f} MB,"
            f" lookup {deny['present_us']:.1f} / {deny['absent_us']:.1f} us (present / absent)"
        )
    profile = info.get("profile")
    if profile:
        print()
        if "error" in profile:
            print(f"Profile: {profile['error']}")
        for name, data in profile.items():
            if not isinstance(data, dict) or "self" not in data:
                continue
            print(f"Profile of the Granian worker under '{name}' load (py-spy; flame graph {data['svg']})")
            print("  samples by thread: " + ", ".join(f"{k} {v:.0f}%" for k, v in data["threads"].items()))
            print("  event-loop thread by owner (innermost non-stdlib frame; % of that thread's samples):")
            for owner, share in data["owners"]:
                print(f"    {share:5.1f}%  {owner}")
            print("  event-loop thread, most self samples:")
            for frame, share in data["self"]:
                print(f"    {share:5.1f}%  {frame}")
            print("  event-loop thread, most inclusive samples:")
            for frame, share in data["inclusive"]:
                print(f"    {share:5.1f}%  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-rounds", type=int, default=7, help="HTTP rounds (every row once per round)")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per HTTP row and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each window")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections in total")
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--devices", type=int, default=50, help="residents that also register a device key")
    parser.add_argument("--rounds", type=int, default=25, help="offline benchmark rounds")
    parser.add_argument("--deny-entries", type=int, default=10_000_000)
    parser.add_argument("--skip-http", action="store_true", help="same as --only offline --only denylist")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); default: all of " + ", ".join(PARTS),
    )
    parser.add_argument(
        "--quiet-limit",
        type=float,
        default=25.0,
        help="%% of a core other processes may use before a row starts",
    )
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="longest wait for other load to pass")
    parser.add_argument(
        "--profile", metavar="DIR", help="after the measured runs, profile ping, issue and verify"
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--generator", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.http_rounds < 1:
        parser.error("--http-rounds must be at least 1")
    if args.generator:
        return run_generator(*args.generator)
    QUIET.update(limit=args.quiet_limit, wait=args.quiet_wait)

    import cryptography

    print(
        f"make bench: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" cryptography {cryptography.__version__}",
        flush=True,
    )
    parts = set(args.only or (p for p in PARTS if not (args.skip_http and p == "http")))
    http: list[HttpRow] = []
    info: dict[str, Any] = {}
    if "http" in parts:
        print("HTTP (starting the backend with one Granian worker) ...", flush=True)
        http, info = http_benchmarks(args)
    offline: list[OfflineCase] = []
    decode_us: dict[str, float] = {}
    if "offline" in parts:
        print("Offline verifier ...", flush=True)
        wait_for_quiet([], "the offline benchmarks")
        box0, self0, wall0 = machine_busy_seconds(), cpu_seconds([os.getpid()]), time.monotonic()
        offline, decode_us = offline_benchmarks(args.rounds)
        info["offline_other"] = (
            100
            * ((machine_busy_seconds() - box0) - (cpu_seconds([os.getpid()]) - self0))
            / (time.monotonic() - wall0)
        )
    deny: dict[str, float] = {}
    if "denylist" in parts:
        print(f"Deny list ({args.deny_entries:,} entries) ...", flush=True)
        deny = denylist_benchmark(args.deny_entries)
    if "redis" in parts:
        from loadtests.redis_client import redis_client_benchmarks

        print("Redis client ...", flush=True)
        wait_for_quiet([], "the Redis client benchmark")
        info["redis_client"] = redis_client_benchmarks(os.environ.get("REDIS_URL"))
    print_report(args, http, info, offline, decode_us, deny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
