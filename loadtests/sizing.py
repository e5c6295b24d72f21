"""Sizing a load test from an event's numbers (issue 5): how many simulated users, how fast they arrive, which
request rates each endpoint must hold at the peak, and the stages of the load shape.

The model, so operations can argue with it:
- Arrivals are not uniform: they rise to a peak and fall (a triangle over the window), so the peak arrival rate
  is twice the mean. A surge multiplies the peak (the Xi'an case is ten times).
- Every attendee shows their code `displays_per_person` times (code issuing), is scanned `scans_per_person`
  times (online verification, one scan per gate or checkpoint), and `payment_share` of them pay once (an order
  and its notification).
- Simulated users follow Little's law: users in the system = arrival rate x time each spends in it.
- A gate lets one person through every `gate_seconds`; when the peak needs more gates than there are, the queue
  grows and the plan says so.
- The test compresses the event's window into `test_minutes` with the same shape: ramp, plateau, surge, decay."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Event:
    attendees: int
    window_minutes: float
    gates: int
    scans_per_person: float = 1.0
    displays_per_person: float = 2.0
    payment_share: float = 0.0
    surge_factor: float = 1.0
    seconds_in_system: float = 60.0
    gate_seconds: float = 1.5
    test_minutes: float = 10.0

    def __post_init__(self) -> None:
        if self.attendees <= 0 or self.window_minutes <= 0 or self.gates <= 0:
            raise ValueError("attendees, window and gates must be positive")
        if not 0 <= self.payment_share <= 1 or self.surge_factor < 1 or self.test_minutes <= 0:
            raise ValueError("payment share in [0, 1], surge factor >= 1, test minutes > 0")


@dataclass(frozen=True)
class Stage:
    name: str
    until_seconds: int
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class Plan:
    mean_arrivals_per_s: float
    peak_arrivals_per_s: float
    users: int
    spawn_rate: float
    rps: dict[str, float]
    gate_capacity_per_s: float
    gates_needed: int
    gates_short: bool
    stages: list[Stage]
    duration_s: int


def plan(event: Event) -> Plan:
    mean = event.attendees / (event.window_minutes * 60)
    peak = 2 * mean * event.surge_factor
    users = max(1, math.ceil(peak * event.seconds_in_system))
    rps = {
        "POST /api/v1/codes/personal": peak * event.displays_per_person,
        "POST /api/v1/verify": peak * event.scans_per_person,
        "POST /api/v1/payments/orders": peak * event.payment_share,
        "POST /api/v1/payments/notify": peak * event.payment_share,
    }
    capacity = event.gates / event.gate_seconds
    needed = math.ceil(peak * event.scans_per_person * event.gate_seconds)
    total = int(event.test_minutes * 60)
    base_users = max(1, math.ceil(users / event.surge_factor))
    stages = [
        Stage("ramp", total // 4, base_users, round(peak / event.surge_factor, 2)),
        Stage("plateau", total // 2, base_users, round(peak / event.surge_factor, 2)),
        Stage("surge", total * 3 // 4, users, round(peak, 2)),
        Stage("decay", total, max(1, base_users // 4), round(peak / event.surge_factor, 2)),
    ]
    return Plan(
        mean_arrivals_per_s=mean,
        peak_arrivals_per_s=peak,
        users=users,
        spawn_rate=round(peak, 2),
        rps=rps,
        gate_capacity_per_s=capacity,
        gates_needed=needed,
        gates_short=needed > event.gates,
        stages=stages,
        duration_s=total,
    )


def render(event: Event, made: Plan) -> str:
    lines = [
        f"Event: {event.attendees:,} attendees in {event.window_minutes:g} min through {event.gates} gates "
        f"(surge x{event.surge_factor:g}, {event.scans_per_person:g} scans and {event.displays_per_person:g} "
        f"code displays per person, {event.payment_share:.0%} pay)",
        f"Arrivals: mean {made.mean_arrivals_per_s:,.1f}/s, peak {made.peak_arrivals_per_s:,.1f}/s",
        f"Locust: {made.users:,} users at the peak, spawn rate {made.spawn_rate:,.1f}/s, "
        f"{made.duration_s // 60} min test",
        "Target requests per second at the peak:",
        *[f"  {endpoint:<36} {rate:>10,.1f}" for endpoint, rate in made.rps.items()],
        f"Gates: {made.gate_capacity_per_s:,.1f} people/s capacity; the peak needs {made.gates_needed} gates"
        + ("  <- SHORT: queues will grow at the peak" if made.gates_short else ""),
        "Load shape:",
        *[
            f"  {s.name:<8} until {s.until_seconds:>5} s  users {s.users:>7,}  spawn {s.spawn_rate:>8,.1f}/s"
            for s in made.stages
        ],
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Event(attendees=1, window_minutes=1, gates=1)
    for name, kind, help_text in (
        ("attendees", int, "people expected (or the population for a city-wide check)"),
        ("window_minutes", float, "the arrival window"),
        ("gates", int, "gates or checkpoints scanning"),
        ("scans_per_person", float, "online verifications per person"),
        ("displays_per_person", float, "code displays (issues) per person"),
        ("payment_share", float, "share of people who pay once (0..1)"),
        ("surge_factor", float, "peak multiplier (10 for a Xi'an-style surge)"),
        ("test_minutes", float, "length of the compressed load test"),
    ):
        default = getattr(defaults, name)
        required = name in ("attendees", "window_minutes", "gates")
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            required=required,
            default=None if required else default,
            help=help_text,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.sizing", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = vars(parser.parse_args(argv))
    event = Event(**{k: v for k, v in args.items() if v is not None})
    print(render(event, plan(event)))
    return 0


__all__ = ["Event", "Plan", "Stage", "add_arguments", "asdict", "main", "plan", "render"]

if __name__ == "__main__":
    raise SystemExit(main())
