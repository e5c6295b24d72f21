"""`--profile DIR`: after the measured rounds, ping, issue and verify loaded once more while py-spy samples the
Granian worker; the top frames by owner, and flame graphs in DIR."""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.bench.endpoints import PING_PATH
from loadtests.bench.load import run_load, split
from loadtests.bench.residents import Resident, issue_codes
from loadtests.processes import Server


def profile_seconds(args: argparse.Namespace) -> int:
    """py-spy's time per profiled endpoint: one row's measured time over all the rounds (enough samples)."""
    return max(3, int(args.duration * args.http_rounds) - 1)


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
        name = (
            "event loop (MainThread)"
            if "MainThread" in thread
            else "Authlib protocol threads (oidc-protocol)"
            if "oidc-protocol" in thread
            else "worker threads (asyncio.to_thread)"
            if "asyncio_" in thread
            else "Granian runtime (Rust) thread"
        )
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
    chosen: set[str],
    extra: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Profiles ping, then whichever of issue and the verify rows are `chosen`, then the `extra` runs (the login
    rows, whose single-use codes the caller mints)."""
    spy = _py_spy()
    if spy is None:
        return {"error": "py-spy not found"}
    out_dir = Path(args.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    gens, per_gen = args.generators, max(1, args.connections // args.generators)
    profiles: dict[str, Any] = {}
    codes = asyncio.run(issue_codes(server.base, residents)) if "health" in chosen else []
    runs: dict[str, list[dict[str, Any]]] = {
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
            for shard in split(list(wallets), gens)
        ],
    }
    wanted = (
        {"ping"} | ({"issue"} & chosen) | {f"verify-{row}" for row in ("health", "device") if row in chosen}
    )
    runs = {name: specs for name, specs in runs.items() if name in wanted}
    runs.update(extra)
    for name, specs in runs.items():
        raw = out_dir / f"{name}.txt"
        svg = out_dir / f"{name}.svg"
        seconds = profile_seconds(args)
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
