"""The load generator, a process of its own (`python -m loadtests.bench --generator SPEC RESULT`): raw HTTP/1.1
keep-alive over asyncio, every request built and signed before the clock starts."""

from __future__ import annotations

import asyncio
import collections
import json
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.bench.endpoints import ISSUE_PATH, MINI_LOGIN_PATH, TOKEN_PATH, VERIFY_PATH

_REASON = b'"reason":"'
_CODE = b'"code":"'


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
            if 200 <= status < 300:
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
            self.status = int(head[9:12])
            self.body_at = end + 4
            i = head.find(b"\r\ncontent-length:")
            if i < 0 and self.status in (204, 304):
                self.length = 0  # no body, by definition (RFC 9110 6.4.1)
            elif i < 0:
                self.load.errors["response without content-length"] += 1
                self.done = True
                assert self.transport is not None
                self.transport.close()
                return
            else:
                j = head.find(b"\r\n", i + 17)
                self.length = int(head[i + 17 : j if j >= 0 else len(head)])
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
    if kind == "bearer-post":
        # A resident's POST (the same body for each, when there is one): the tile rows.
        body = spec.get("body", "").encode()
        headers = {"Content-Type": "application/json"} if body else {}
        return [
            _request("POST", spec["path"], host, {"Authorization": f"Bearer {token}", **headers}, body)
            for token in spec["tokens"]
        ]
    if kind == "bearer-post-bodies":
        # Residents' POSTs, each with its own token and body: the hold row.
        return [
            _request(
                "POST",
                spec["path"],
                host,
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                body.encode(),
            )
            for token, body in spec["requests"]
        ]
    if kind == "bearer-get":
        # A resident's GET: the home row.
        return [
            _request("GET", spec["path"], host, {"Authorization": f"Bearer {token}"})
            for token in spec["tokens"]
        ]
    if kind == "mini-login":
        # One wx.login code per request (codes are single use), of WeChat users linked to residents already.
        headers = {"Content-Type": "application/json"}
        return [
            _request(
                "POST",
                MINI_LOGIN_PATH,
                host,
                headers,
                json.dumps({"app_id": spec["app_id"], "code": c}).encode(),
            )
            for c in spec["codes"]
        ]
    if kind == "token":
        import base64
        from urllib.parse import urlencode

        basic = base64.b64encode(f"{spec['client_id']}:{spec['client_secret']}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
        return [
            _request(
                "POST",
                TOKEN_PATH,
                host,
                headers,
                urlencode(
                    {
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": spec["redirect_uri"],
                        "code_verifier": verifier,
                    }
                ).encode(),
            )
            for code, verifier in spec["exchanges"]
        ]
    if kind == "verify-device":
        from cryptography.hazmat.primitives.serialization import load_der_private_key

        from code_service.holder import DeviceWallet

        wallets = []
        for key_der, credential in spec["wallets"]:
            # The key the credential was asked with (a fresh one per credential): the wallet's pending key.
            wallet = DeviceWallet(pending_key=load_der_private_key(key_der, None))  # type: ignore[arg-type]
            wallet.load_credential(credential)
            wallets.append(wallet)
        codes: Sequence[str] = [wallets[i % len(wallets)].code() for i in range(spec["count"])]
    else:
        codes = spec["codes"]
    count = spec["count"] if kind == "verify-device" else spec.get("count", len(codes))
    requests = []
    for i in range(count):
        fields = {"code": codes[i % len(codes)], "scene": spec["scene"], **spec.get("extra", {})}
        body = json.dumps(fields).encode()
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
