"""What the runner checks around and after the load: the Redis outage drill, taps the gates had acknowledged
actually stored, and fares following from taps.

- Redis outage: the embedded redis-server is frozen (SIGSTOP) a third into the run and thawed (SIGCONT) after the
  given seconds; it is always thawed, whatever happens. Verification must keep answering meanwhile.
- Taps: every tap id of a batch the gates uploaded with a 2xx answer must be in `codes.taps`. No endpoint lists
  a gate operator's taps, so the harness reads them with one read-only SQL query (DATABASE_URL of the backend).
- Fares: the job worker builds trips from taps every five minutes; the harness asks the worker's queue (SAQ, on
  the backend's Redis) to run `build_transit_trips` now, then reads the riders' trips through the API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from loadtests.backend import Backend
from loadtests.fixtures import Resident, pick_org
from loadtests.report import outcomes_started_between
from loadtests.slo import Verdict


@dataclass
class Outage:
    """SIGSTOP / SIGCONT of the embedded redis-server, driven by the runner's loop."""

    pids: list[int]
    at_s: float
    seconds: float
    stopped_at: float | None = None
    resumed_at: float | None = None
    errors: list[str] = field(default_factory=list)

    def _signal(self, sig: signal.Signals) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                self.errors.append(f"redis-server {pid} is gone")

    def poll(self, started_at: float) -> None:
        now = time.time()
        if self.stopped_at is None and now >= started_at + self.at_s:
            self._signal(signal.SIGSTOP)
            self.stopped_at = now
            print(f"  redis-server {self.pids} stopped (SIGSTOP) for {self.seconds:g} s", flush=True)
        elif (
            self.stopped_at is not None and self.resumed_at is None and now >= self.stopped_at + self.seconds
        ):
            self.resume()

    def resume(self) -> None:
        if self.stopped_at is not None and self.resumed_at is None:
            self._signal(signal.SIGCONT)
            self.resumed_at = time.time()
            print(f"  redis-server {self.pids} resumed (SIGCONT)", flush=True)


async def stored_taps(database_url: str, organisation_id: str, tap_ids: Sequence[str]) -> set[str]:
    """Which of the tap ids `codes.taps` holds for the operator (a read-only transaction)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(readonly=True):
            rows = await conn.fetch(
                "SELECT tap_id FROM codes.taps WHERE organisation_id = $1 AND tap_id = ANY($2::text[])",
                uuid.UUID(organisation_id),
                list(tap_ids),
            )
    finally:
        await conn.close()
    return {r["tap_id"] for r in rows}


async def build_trips_now(redis_url: str, within_s: float = 120.0) -> str:
    """Runs the worker's `build_transit_trips` job now (as its cron would) and waits for it."""
    from saq import Queue

    from app_backend.composition.worker import QUEUE_NAME

    queue = Queue.from_url(redis_url, name=QUEUE_NAME)
    try:
        job = await queue.enqueue("build_transit_trips", key=f"loadtest-{uuid.uuid4().hex}", timeout=600)
        if job is None:
            return "not enqueued"
        await job.refresh(until_complete=within_s)
        return f"{job.status}: {job.result}"
    except TimeoutError:
        return f"not finished within {within_s:g} s"
    finally:
        with contextlib.suppress(Exception):
            await queue.disconnect()


async def trips_of(client: Any, riders: Sequence[Resident]) -> dict[str, int]:
    """Trips and fares of the riders, through the API (GET /api/v1/payments/transit/trips)."""
    totals = {"riders with trips": 0, "trips": 0, "fares fen": 0, "charged fen": 0, "errors": 0}
    gate = asyncio.Semaphore(16)

    async def one(rider: Resident) -> None:
        async with gate:
            answer = await client.get(
                "/api/v1/payments/transit/trips", headers={"Authorization": f"Bearer {rider.access_token}"}
            )
        if answer.status_code != 200:
            totals["errors"] += 1
            return
        trips = answer.json()
        totals["riders with trips"] += 1 if trips else 0
        totals["trips"] += len(trips)
        totals["fares fen"] += sum(int(trip["fare_fen"]) for trip in trips)
        totals["charged fen"] += sum(int(trip["charged_fen"]) for trip in trips)

    await asyncio.gather(*(one(r) for r in riders))
    return totals


def check_taps(backend: Backend, tap_ids: list[str], drill: bool) -> tuple[Verdict | None, str]:
    """Every tap the platform took (accepted or duplicate in a 2xx answer) is stored (judged when the database is
    reachable). Refused taps are counted in the tally by reason (`taps refused: <reason>`)."""
    if not tap_ids:
        return None, "no taps acknowledged"
    if not backend.database_url:
        return None, "acknowledged taps not checked: no DATABASE_URL for the target"
    transit = pick_org(backend.credentials, ["verify:transit", "gates:taps"])
    wanted = set(tap_ids)
    found = asyncio.run(stored_taps(backend.database_url, transit.organisation_id, sorted(wanted)))
    missing = len(wanted - found)
    note = f"{len(found):,} of {len(wanted):,} acknowledged taps in codes.taps" + (
        " (outage drill)" if drill else ""
    )
    return Verdict("taps missing", "POST /api/v1/gates/taps", float(missing), 0.0, missing == 0, note), note


def check_fares(
    backend: Backend, residents: list[Resident], taps: int
) -> tuple[Verdict | None, dict[str, Any]]:
    """After the worker's trip job ran, the riders' trips and fares, through the API."""
    result: dict[str, Any] = {}
    if backend.redis_url:
        result["build_transit_trips"] = asyncio.run(build_trips_now(backend.redis_url))

    async def read() -> dict[str, int]:
        async with httpx.AsyncClient(base_url=backend.base, timeout=30) as client:
            return await trips_of(client, [r for r in residents if r.rider])

    result.update(asyncio.run(read()))
    if not taps:
        return None, result
    note = f"{result['trips']:,} trips, {result['fares fen'] / 100:,.2f} yuan in fares from {taps:,} acknowledged taps"
    trips = float(result["trips"])
    return Verdict("fares follow", "build_transit_trips", trips, 1.0, trips > 0, note, at_least=True), result


def check_outage(tally: dict[str, Any], outage: dict[str, Any]) -> Verdict:
    """Verification kept answering while Redis was stopped: 99 % of the verifications sent meanwhile got a 2xx."""
    start, end = outage.get("stopped_at"), outage.get("resumed_at")
    if start is None or end is None:
        return Verdict("outage answer share", "POST /api/v1/verify", None, 0.99, False, "no outage happened")
    counts = outcomes_started_between(tally["requests"], "POST /api/v1/verify", start, end)
    total = sum(counts.values())
    share = counts["ok"] / total if total else 0.0
    degraded = sum(v for k, v in tally["counters"].items() if k.startswith("degraded"))
    note = (
        f"{total:,} verifications sent while Redis was stopped: {counts['ok']:,} answered, {counts['shed']:,} shed,"
        f" {counts['failure']:,} failed; {degraded:,} degraded answers in the run"
    )
    passed = total > 0 and share >= 0.99
    return Verdict("outage answer share", "POST /api/v1/verify", share, 0.99, passed, note, True, True)
