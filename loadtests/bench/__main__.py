"""`python -m loadtests.bench`: the command line of `make bench` (see loadtests/bench/__init__.py)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

from loadtests import bench
from loadtests.bench.denylist import denylist_benchmark
from loadtests.bench.endpoints import ROWS
from loadtests.bench.generator import run_generator
from loadtests.bench.http import http_benchmarks
from loadtests.bench.load import QUIET, HttpRow, wait_for_quiet
from loadtests.bench.offline import OfflineCase, offline_benchmarks
from loadtests.bench.report import print_report
from loadtests.processes import cpu_seconds, machine_busy_seconds

PARTS = ("http", "offline", "taps", "denylist", "redis")  # --only


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=(bench.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--http-rounds", type=int, default=7, help="HTTP rounds (every row once per round)")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per HTTP row and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each window")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections in total")
    parser.add_argument("--residents", type=int, default=200)
    parser.add_argument("--devices", type=int, default=50, help="residents that also register a device key")
    parser.add_argument("--rounds", type=int, default=25, help="offline benchmark rounds")
    parser.add_argument("--tap-rounds", type=int, default=5, help="tap upload rounds (one batch each)")
    parser.add_argument("--tap-batch", type=int, default=5000, help="taps per uploaded batch (at most 5000)")
    parser.add_argument("--deny-entries", type=int, default=10_000_000)
    parser.add_argument(
        "--rows",
        action="append",
        choices=[short for short in ROWS.values() if short != "ping"],
        help="HTTP rows to run besides ping (repeatable); default: all",
    )
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
    if "taps" in parts:
        from loadtests.bench.taps import taps_benchmark

        print("Tap uploads (starting the backend with one Granian worker) ...", flush=True)
        info["taps"] = taps_benchmark(args)
    deny: dict[str, float] = {}
    if "denylist" in parts:
        print(f"Deny list ({args.deny_entries:,} entries) ...", flush=True)
        deny = denylist_benchmark(args.deny_entries)
    if "redis" in parts:
        from loadtests.bench.redis_client import redis_client_benchmarks

        print("Redis client ...", flush=True)
        wait_for_quiet([], "the Redis client benchmark")
        info["redis_client"] = redis_client_benchmarks(os.environ.get("REDIS_URL"))
    print_report(args, http, info, offline, decode_us, deny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
