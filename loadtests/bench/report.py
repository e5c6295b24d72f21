"""What `make bench` prints: the HTTP table, the offline table, the deny list, the Redis client, the summary of
ratios against their goals, and the profiles."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from loadtests.bench.endpoints import GOAL_OFFLINE, ISSUE_ROW, PING_ROW, goal
from loadtests.bench.load import QUIET, HttpResult, HttpRow
from loadtests.bench.offline import OfflineCase
from loadtests.bench.server import WORKERS


def pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _verdict(ratio: float, goal: float) -> str:
    return "meets goal" if ratio >= goal else "BELOW goal"


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
        wanted = goal(row.name)
        cpu = row.cpu
        is_ping = row.name == PING_ROW
        print(
            f"{row.name:<50}{row.rate:>9,.0f}{'' if is_ping else pct(row.ratio):>9}"
            f"{'' if is_ping else _spread(row):>10}{(pct(wanted) if wanted else ''):>6}"
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
        "  (bench residents are real-named (L2) with withholding agreements (transit answers 'ok') but no health data:"
        " health answers"
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
                f"{pct(case.ratio):>6}{pct(GOAL_OFFLINE):>6}{case.overhead_us:>7.1f} us"
            )
            if case.bare:
                print(f"{'':<50}{'':>11}{case.bare:>9,.0f}  {case.bare_label:<26}{pct(case.bare_ratio):>6}")
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
    taps = info.get("taps")
    if taps:
        print(
            f"Tap uploads (POST /api/v1/gates/taps, {taps.batch:,} taps a batch, half server and half device codes,"
            f" each proven;\n{taps.rounds} rounds, medians; raw = the same codes' signature checks with"
            " `cryptography` in this process, thread CPU)"
        )
        print(
            f"  {taps.taps_per_s:,.0f} taps/s (wall, one request at a time); Granian worker {taps.worker_us:.0f} us"
            f" of CPU per tap, PostgreSQL {taps.postgres_us:.0f} us; raw {taps.raw_us:.0f} us per tap:"
            f" raw / worker {pct(taps.ratio)}"
        )
        print("  outcomes: " + ", ".join(f"{what} {n:,}" for what, n in sorted(taps.outcomes.items())))
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
            print(f"  {name:<40} {us:7.1f} us  ({pct(us / slowest)} of the slowest)")
        print()
    print("Summary")
    for row in http[1:]:
        wanted = goal(row.name)
        label = "issue" if row.name == ISSUE_ROW else row.name.replace("POST /api/v1/verify ", "verify ")
        verdict = "(no goal)" if wanted is None else f"(goal {pct(wanted)})  {_verdict(row.ratio, wanted)}"
        print(f"  {label:<42}/ trivial {pct(row.ratio):>5} (rounds {_spread(row)})  {verdict}")
    for case in offline:
        ratio = case.ratio
        print(f"  offline {case.name:<48} {pct(ratio):>5} of raw (goal 90%)  {_verdict(ratio, GOAL_OFFLINE)}")
    if taps:
        print(
            f"  tap uploads: {taps.taps_per_s:,.0f} taps/s, raw signature checks / worker CPU {pct(taps.ratio):>5}"
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
