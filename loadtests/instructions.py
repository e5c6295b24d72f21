"""Instructions per request of the hot paths: a yardstick that does not move with the machine's load.

    python -m loadtests.instructions [--requests 200] [ROW ...]
        rows: ping issue health transit device credential taps

`make bench` times the hot paths against the trivial endpoint, and on a shared VM its rows move by several points
from one run to the next (docs/performance.md). To decide between two versions of a hot path, this counts the
machine instructions one request costs instead: the ASGI app is called directly in this process (no Granian, no
sockets), with real PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are set), under valgrind's
callgrind with instrumentation switched on only around each row. The same code gives the same counts within a
percent or two, whatever else the machine does.

Not a measure of time: OpenSSL runs about three times more instructions per nanosecond than the interpreter, so
the counts over-weight the cryptography (its share is printed apart), and Granian's own cost (which the bench
includes: a POST body's hand-over alone is about a fifth of a verification) is not here at all. Needs valgrind,
gcc and valgrind's headers (`callgrind.h`), which this machine kind has."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROWS = ("ping", "issue", "health", "transit", "device", "credential", "taps")
# A tap upload of the taps row: this many taps, each proven by a real code (half server codes, half device codes).
TAPS_PER_UPLOAD = 10
_UNDER_VALGRIND = "TZT_INSTRUCTIONS_OUT"
# Switches callgrind's instrumentation on around a row and dumps the row's counts under its name.
_HELPER = """
#include <valgrind/callgrind.h>
void tzt_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void tzt_stop(const char *row) { CALLGRIND_DUMP_STATS_AT(row); CALLGRIND_STOP_INSTRUMENTATION; }
"""
CREDENTIAL_PATH = "/api/v1/codes/device-credentials"
TAPS_PATH = "/api/v1/gates/taps"
_CRYPTO_OBJECTS = re.compile(r"_rust\.abi3\.so|libcrypto|_openssl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("rows", nargs="*", metavar="ROW", help=f"any of {', '.join(ROWS)} (default: all)")
    parser.add_argument("--requests", type=int, default=200, help="requests counted per row")
    args = parser.parse_args(argv)
    rows = args.rows or list(ROWS)
    unknown = [row for row in rows if row not in ROWS]
    if unknown or args.requests < 10:
        parser.error(
            f"rows are {', '.join(ROWS)}; --requests at least 10" + (f" (not {unknown})" if unknown else "")
        )
    if _UNDER_VALGRIND in os.environ:
        asyncio.run(_count(rows, args.requests, Path(os.environ[_UNDER_VALGRIND])))
        return 0
    return _run_under_valgrind(rows, args.requests)


# -- outside valgrind: start it, then read what it wrote -------------------------------------------------------


def _run_under_valgrind(rows: list[str], requests: int) -> int:
    missing = [tool for tool in ("valgrind", "callgrind_annotate", "gcc") if shutil.which(tool) is None]
    if missing:
        print(f"needs {', '.join(missing)} on the PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tzt-instructions-") as tmp:
        work = Path(tmp)
        helper = work / "tzt_callgrind.so"
        source = work / "tzt_callgrind.c"
        source.write_text(_HELPER)
        built = subprocess.run(  # noqa: S603
            ["gcc", "-O2", "-shared", "-fPIC", "-o", str(helper), str(source)],  # noqa: S607
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            print(f"could not build the callgrind helper (is valgrind's callgrind.h there?):\n{built.stderr}")
            return 2
        print(f"Counting {requests} requests per row under callgrind (about a minute) ...", flush=True)
        ran = subprocess.run(  # noqa: S603
            [  # noqa: S607 (valgrind from the PATH, checked above)
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={work}/counts.%p",
                sys.executable,
                "-m",
                "loadtests.instructions",
                f"--requests={requests}",
                *rows,
            ],
            env={**os.environ, _UNDER_VALGRIND: str(work), "TZT_LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
        )
        if ran.returncode != 0:
            print(ran.stdout[-3000:], ran.stderr[-3000:], sep="\n")
            return 1
        counts = {name: (total, crypto) for name, total, crypto in _read_dumps(work)}
        answers = {
            row: json.loads((work / f"answers-{row}.json").read_text())
            for row in rows
            if (work / f"answers-{row}.json").exists()
        }
    _print_table(rows, counts, requests, answers)
    return 0


def _read_dumps(work: Path) -> list[tuple[str, int, int]]:
    """(row, instructions, of which in OpenSSL) of every dump callgrind wrote."""
    found = []
    for dump in sorted(work.glob("counts.*.*")):
        text = dump.read_text(errors="replace")
        row = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.M)
        total = re.search(r"^summary: (\d+)", text, re.M)
        if row is None or total is None:
            continue
        annotated = subprocess.run(  # noqa: S603
            ["callgrind_annotate", "--threshold=100", str(dump)],  # noqa: S607
            capture_output=True,
            text=True,
        ).stdout
        crypto = sum(
            int(line.split()[0].replace(",", ""))
            for line in annotated.splitlines()
            if _CRYPTO_OBJECTS.search(line) and line.strip()[:1].isdigit()
        )
        found.append((row.group(1), int(total.group(1)), crypto))
    return found


def _print_table(
    rows: list[str], counts: dict[str, tuple[int, int]], requests: int, answers: dict[str, dict[str, int]]
) -> None:
    print(f"\n{'row':<10}{'instructions/request':>22}{'of which OpenSSL':>18}{'ping / row':>12}  answers")
    ping = counts.get("ping", (0, 0))[0]
    for row in rows:
        if row not in counts:
            print(f"{row:<10}{'(no count)':>22}")
            continue
        total, crypto = counts[row]
        share = f"{ping / total:.1%}" if ping and row != "ping" else ""
        said = ", ".join(f"{what} {n}" for what, n in sorted(answers.get(row, {}).items()))
        print(f"{row:<10}{total // requests:>22,}{crypto // requests:>18,}{share:>12}  {said}")
    print(
        f"(a taps request uploads {TAPS_PER_UPLOAD} taps, each with a real code: half server, half device codes)"
    )
    print(
        "(in process, no Granian: a yardstick for comparing versions of the code, not a time; docs/performance.md)"
    )


# -- under valgrind: the app, its data, and the rows -----------------------------------------------------------


async def _count(rows: list[str], requests: int, work: Path) -> None:
    from app_backend.composition.embedded import EmbeddedServices

    embedded = EmbeddedServices(work / "data")
    embedded.start(
        want_postgres=not os.environ.get("DATABASE_URL"),
        want_redis=not os.environ.get("REDIS_URL"),
        persistent_redis=False,
    )
    try:
        await _count_with(
            rows,
            requests,
            work,
            os.environ.get("DATABASE_URL") or embedded.admin_url,  # a superuser: it makes its own database
            os.environ.get("REDIS_URL") or embedded.redis_url,
        )
    finally:
        embedded.stop()


async def _count_with(rows: list[str], requests: int, work: Path, admin_dsn: str, redis_url: str) -> None:
    import asyncpg
    import httpx

    from app_backend.composition.app import create_app
    from app_backend.composition.migrator import apply_migrations
    from app_backend.composition.wiring import Services
    from app_backend.kernel.settings import load_settings

    name = f"tzt_instructions_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        database_url = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
        await apply_migrations(database_url)
        settings = load_settings(
            {
                "TZT_ENV": "test",
                "TZT_DATA_DIR": str(work / "data"),
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "TZT_LOG_LEVEL": "WARNING",
                # Generous limits and timeouts: under valgrind a request takes fifty times as long.
                "TZT_RATE_RESIDENT_PER_MINUTE": "1000000",
                "TZT_RATE_ORGANISATION_PER_SECOND": "1000000",
                "TZT_REDIS_TIMEOUT": "60",
                "TZT_DB_ACQUIRE_TIMEOUT": "60",
            }
        )
        app = create_app(settings)
        services = await Services.create(settings)
        services.install(app.state)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://instructions.local") as client:
                make = await _requests(client, services, requests + 20)
            helper = ctypes.CDLL(str(work / "tzt_callgrind.so"))
            for row in rows:
                await _measure(app, row, make[row](), helper, work)
        finally:
            await services.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


Scope = tuple[dict[str, Any], bytes]


async def _requests(client: Any, services: Any, count: int) -> dict[str, Callable[[], list[Scope]]]:
    """Real-named residents (L2: the level transit and health require) with agreements, a few device credentials
    and the demo verifiers; then, per row, `count` requests ready to be sent (the first 20 warm up, uncounted)."""
    from app_backend.composition.seed import seed_demo
    from app_backend.organisations.signing import sign_request
    from code_service.holder import DeviceWallet
    from loadtests.bench.endpoints import HOSPITAL, ISSUE_PATH, METRO, PING_PATH, VERIFY_PATH
    from loadtests.fixtures import create_residents, real_name_residents

    residents = await create_residents(client, 12)
    await real_name_residents(client, residents)
    async with services.pool.acquire() as conn:
        for resident in residents:
            await services.payments.transit.grant_agreement(conn, uuid.UUID(resident.id))
            await services.codes.facts.invalidate_resident(conn, uuid.UUID(resident.id))
    credentials = await seed_demo(services, {})
    wallets = []
    for resident in residents[:6]:
        wallet = DeviceWallet.create()
        made = await client.post(
            CREDENTIAL_PATH,
            json={"public_key": wallet.public_key_b64},
            headers={"Authorization": f"Bearer {resident.access_token}"},
        )
        wallet.load_credential(made.json()["credential"])
        wallets.append(wallet)
    tokens = [r.access_token for r in residents]

    def issue(i: int) -> Scope:
        return _scope("POST", ISSUE_PATH, {"authorization": f"Bearer {tokens[i % len(tokens)]}"}, b"")

    def credential(i: int) -> Scope:
        # A fresh device key each time: a key bound to a credential before is refused.
        body = json.dumps({"public_key": DeviceWallet.create().public_key_b64}).encode()
        headers = {"authorization": f"Bearer {tokens[i % len(tokens)]}", "content-type": "application/json"}
        return _scope("POST", CREDENTIAL_PATH, headers, body)

    async def codes(n: int) -> list[tuple[str, str]]:
        """(code, when it was shown) of `n` fresh server codes."""
        made = []
        for i in range(n):
            answer = await client.post(
                ISSUE_PATH, headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            )
            made.append((answer.json()["code"], _now()))
        return made

    def verify(org: str, code: str, scene: str) -> Scope:
        body = json.dumps({"code": code, "scene": scene}).encode()
        headers = sign_request(
            credentials[org]["key_id"], credentials[org]["secret"], "POST", VERIFY_PATH, body
        )
        return _scope("POST", VERIFY_PATH, {**headers, "content-type": "application/json"}, body)

    def taps(n: int, shown: list[tuple[str, str]]) -> Scope:
        # Each tap at the time its code was shown, as the gate recorded it (the upload comes later, as an
        # offline gate's does): a server code lives a minute, and under callgrind the rows run long after.
        batch = [_tap(f"instr-{n}-{i}", code, at) for i, (code, at) in enumerate(shown)]
        body = json.dumps({"taps": batch}).encode()
        headers = sign_request(
            credentials[METRO]["key_id"], credentials[METRO]["secret"], "POST", TAPS_PATH, body
        )
        return _scope("POST", TAPS_PATH, {**headers, "content-type": "application/json"}, body)

    reusable = [code for code, _ in await codes(50)]
    fresh = [code for code, _ in await codes(count)]
    half = TAPS_PER_UPLOAD // 2
    tapped = await codes(count * half)
    device_taps = [
        (wallets[i % len(wallets)].code(), _now()) for i in range(count * (TAPS_PER_UPLOAD - half))
    ]
    return {
        "ping": lambda: [_scope("GET", PING_PATH, {}, b"") for _ in range(count)],
        "issue": lambda: [issue(i) for i in range(count)],
        "health": lambda: [verify(HOSPITAL, reusable[i % 50], "health") for i in range(count)],
        "transit": lambda: [verify(METRO, code, "transit") for code in fresh],
        "device": lambda: [
            verify(HOSPITAL, wallets[i % len(wallets)].code(), "health") for i in range(count)
        ],
        "credential": lambda: [credential(i) for i in range(count)],
        "taps": lambda: [
            taps(
                n,
                tapped[n * half : (n + 1) * half]
                + device_taps[n * (TAPS_PER_UPLOAD - half) : (n + 1) * (TAPS_PER_UPLOAD - half)],
            )
            for n in range(count)
        ],
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _tap(tap_id: str, code: str, at: str) -> dict[str, str]:
    """A tap as a gate uploads it: the scanned code is its proof."""
    return {
        "tap_id": tap_id,
        "gate_id": "instr-gate",
        "line": "1",
        "station": "泰州站",
        "direction": "in",
        "tapped_at": at,
        "code": code,
    }


def _scope(method: str, path: str, headers: dict[str, str], body: bytes) -> Scope:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw += [(b"host", b"instructions.local"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("instructions.local", 80),
    }
    return scope, body


async def _measure(app: Any, row: str, requests: list[Scope], helper: ctypes.CDLL, work: Path) -> None:
    statuses: dict[int, int] = {}
    bodies: list[bytes] = []
    call = _caller(app, statuses, bodies)
    for request in requests[:20]:  # warm-up: caches, prepared statements, the Redis script
        await call(request)
    await asyncio.sleep(0.5)  # let the scan recorder's first flush pass
    statuses.clear()
    bodies.clear()
    helper.tzt_start()
    for first in range(20, len(requests), 10):  # ten at a time, as a loaded worker would interleave them
        await asyncio.gather(*(call(request) for request in requests[first : first + 10]))
    helper.tzt_stop(row.encode())
    if len(statuses) != 1 or not 200 <= min(statuses) < 300:
        raise RuntimeError(f"row {row}: answers {statuses}")
    (work / f"answers-{row}.json").write_text(json.dumps(_answers(bodies)))


def _answers(bodies: list[bytes]) -> dict[str, int]:
    """What the row's answers said (a verification's reason, a tap's outcome), to show the path measured."""
    seen: dict[str, int] = {}
    for body in bodies:
        try:
            answer = json.loads(body)
        except ValueError:
            continue
        said = (
            [answer["reason"]]
            if "reason" in answer
            else [t["status"] + (f" {t['reason']}" if "reason" in t else "") for t in answer["taps"]]
            if "taps" in answer
            else []
        )
        for one in said:
            seen[one] = seen.get(one, 0) + 1
    return seen


def _caller(app: Any, statuses: dict[int, int], bodies: list[bytes]) -> Callable[[Scope], Awaitable[None]]:
    async def call(request: Scope) -> None:
        scope, body = request
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                await asyncio.sleep(3600)  # the app never asks twice for a complete body
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1
            elif message["type"] == "http.response.body" and message.get("body"):
                bodies.append(message["body"])

        await app({**scope, "state": {}}, receive, send)

    return call


if __name__ == "__main__":
    sys.exit(main())
