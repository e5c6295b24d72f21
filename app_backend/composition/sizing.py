"""Sizing a load test from an event's numbers (issue 5): how many simulated users, how fast they arrive, which
request rates each endpoint must hold at the peak, and the stages of the load shape.

The model, so operations can argue with it:
- Arrivals are not uniform: they rise to a peak and fall (a triangle over the window), so the peak arrival rate
  is twice the mean. A surge multiplies the peak (the Xi'an case is ten times).
- Every attendee shows their code `displays_per_person` times, is scanned `scans_per_person` times (online
  verification, one scan per gate or checkpoint), and `payment_share` of them pay once (an order and its
  notification). A `device_share` of the displays are device codes, signed offline by the phone: they cost the
  server nothing until scanned; the rest are server codes (code issuing).
- Gates keep their taps (`taps_per_person` per person) and upload what they hold every `tap_batch_seconds`.
- Simulated users follow Little's law: users in the system = arrival rate x time each spends in it.
- A gate lets one person through every `gate_seconds`; when the peak needs more gates than there are, the queue
  grows and the plan says so.
- A ticket sale (`ticket_quota` > 0): the event's attendees are its buyers (`expected_buyers`), arriving in
  the window around the opening (`sale_opens_at`), the same triangle. They join the sale's queue, which admits them
  in arrival order at `admit_rate` a second (what the hold and the payment absorb; measure it with `make bench`)
  and tells the others to come back: a waiting buyer polls at half its estimated wait, at least every
  `queue_poll_seconds` and at most every `QUEUE_POLL_MAX_S` (30) seconds. Admitted buyers hold and
  pay; once `ticket_quota` tickets are sold (after quota / tickets per buyer / admit rate seconds) everyone still
  waiting is told "sold out". The plan gives the rates of the joins, the polls, the holds and the payments.
- The test compresses the event's window into `test_minutes` with the same shape: ramp, plateau, surge, decay.
  Each user arrives once when started and then once every `seconds_in_system` (Locust's constant pacing), so a
  stage starts or stops its change in users over one `seconds_in_system` (never slower than the normal arrival
  rate): the arrival rate moves to the stage's rate at once, without a wave of first arrivals (and the same wave
  again one `seconds_in_system` later)."""

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
    device_share: float = 0.0
    taps_per_person: float = 0.0
    tap_batch_seconds: float = 10.0
    ticket_quota: int = 0  # tickets on sale (0: no sale)
    expected_buyers: int = 0  # 0: the attendees
    sale_opens_at: str = ""  # "HH:MM", for the plan's text
    tickets_per_buyer: float = 1.0
    admit_rate: float = 50.0  # buyers a second the sale's queue admits
    queue_poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.attendees <= 0 or self.window_minutes <= 0 or self.gates <= 0:
            raise ValueError("attendees, window and gates must be positive")
        if not 0 <= self.payment_share <= 1 or self.surge_factor < 1 or self.test_minutes <= 0:
            raise ValueError("payment share in [0, 1], surge factor >= 1, test minutes > 0")
        if not 0 <= self.device_share <= 1 or self.seconds_in_system <= 0 or self.tap_batch_seconds <= 0:
            raise ValueError("device share in [0, 1], seconds in system and tap batch seconds > 0")
        if self.ticket_quota < 0 or self.expected_buyers < 0 or self.tickets_per_buyer < 1:
            raise ValueError("ticket quota and expected buyers >= 0, tickets per buyer >= 1")
        if self.admit_rate <= 0 or self.queue_poll_seconds <= 0:
            raise ValueError("admit rate and queue poll seconds > 0")

    @property
    def buyers(self) -> int:
        return self.expected_buyers or self.attendees


@dataclass(frozen=True)
class Stage:
    name: str
    until_seconds: int
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class SalePlan:
    """A ticket sale's figures: who gets a ticket, how long the queue lasts, what the queue endpoints see."""

    buyers: int
    winners: int  # buyers who get tickets (quota / tickets per buyer, or every buyer)
    sold_out_after_s: float | None  # seconds from the opening to the last ticket held (None: never sold out)
    told_sold_out: int
    peak_joins_per_s: float
    peak_polls_per_s: float


QUEUE_POLL_MAX_S = 30.0
# The ticket sale's endpoints in a plan (their paths name a session; the plan names the route).
QUEUE_JOIN = "POST /api/v1/tickets/sessions/{id}/queue"
QUEUE_POLL = "GET /api/v1/tickets/sessions/{id}/queue"
HOLD = "POST /api/v1/tickets/holds"
HOLD_PAY = "POST /api/v1/tickets/holds/{id}/pay"


def sale_plan(event: Event, peak_arrivals: float) -> SalePlan:
    buyers = event.buyers
    winners = min(buyers, math.ceil(event.ticket_quota / event.tickets_per_buyer))
    sold_out = winners < buyers
    # At the opening every buyer who arrived waits; the one at position i expects i / admit_rate seconds and
    # polls every clamp(half that, queue_poll_seconds, QUEUE_POLL_MAX_S): the near ones often, the far ones
    # every half minute. Summed over the positions (the middle part as an integral of 2 * rate / i).
    waiting = max(0, buyers - min(winners, event.admit_rate * event.window_minutes * 30))
    rate, least = event.admit_rate, min(event.queue_poll_seconds, QUEUE_POLL_MAX_S)
    near = min(waiting, 2 * rate * least)
    far_from = min(waiting, 2 * rate * QUEUE_POLL_MAX_S)
    polls = near / least + (2 * rate * math.log(far_from / near) if far_from > near > 0 else 0.0)
    polls += max(0.0, waiting - far_from) / QUEUE_POLL_MAX_S
    return SalePlan(
        buyers=buyers,
        winners=winners,
        sold_out_after_s=winners / event.admit_rate if sold_out else None,
        told_sold_out=buyers - winners,
        peak_joins_per_s=peak_arrivals,
        peak_polls_per_s=polls,
    )


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
    sale: SalePlan | None = None


def plan(event: Event) -> Plan:
    mean = event.buyers / (event.window_minutes * 60)  # the attendees, or a sale's buyers
    peak = 2 * mean * event.surge_factor
    users = max(1, math.ceil(peak * event.seconds_in_system))
    rps = {
        "POST /api/v1/codes/personal": peak * event.displays_per_person * (1 - event.device_share),
        "POST /api/v1/verify": peak * event.scans_per_person,
        "POST /api/v1/payments/orders": peak * event.payment_share,
        "POST /api/v1/payments/notify": peak * event.payment_share,
    }
    if event.taps_per_person > 0:
        # Every gate uploads once per interval when it holds taps: with Poisson arrivals spread over the gates,
        # a gate holds at least one with probability 1 - exp(-taps in an interval per gate).
        per_gate = peak * event.taps_per_person * event.tap_batch_seconds / event.gates
        rps["POST /api/v1/gates/taps"] = event.gates / event.tap_batch_seconds * (1 - math.exp(-per_gate))
    sale = None
    if event.ticket_quota > 0:
        sale = sale_plan(event, peak)
        buying = min(peak, event.admit_rate)  # the queue holds the rest back
        rps = (  # a sale's plan is about the sale: its buyers show no codes and pass no gates meanwhile
            {
                QUEUE_JOIN: sale.peak_joins_per_s,
                QUEUE_POLL: sale.peak_polls_per_s,
                HOLD: buying,
                HOLD_PAY: buying,
                "POST /api/v1/payments/notify": buying,
            }
        )
    capacity = event.gates / event.gate_seconds
    needed = math.ceil(peak * event.scans_per_person * event.gate_seconds)
    total = int(event.test_minutes * 60)
    base_users = max(1, math.ceil(users / event.surge_factor))
    last_users = max(1, base_users // 4)
    # Each user arrives once when started, then once per seconds_in_system: starting (or stopping) a stage's
    # change in users over one seconds_in_system moves the arrival rate straight to the stage's rate.
    per_s = 1 / event.seconds_in_system
    base_rate = round(base_users * per_s, 2)
    stages = [
        Stage("ramp", total // 4, base_users, base_rate),
        Stage("plateau", total // 2, base_users, base_rate),
        Stage("surge", total * 3 // 4, users, round(max(base_users, users - base_users) * per_s, 2)),
        Stage("decay", total, last_users, round(max(base_users, users - last_users) * per_s, 2)),
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
        sale=sale,
    )


def render(event: Event, made: Plan) -> str:
    if made.sale:
        return "\n".join(
            [
                *_sale_lines(event, made.sale),
                "Target requests per second at the peak:",
                *[f"  {endpoint:<44} {rate:>10,.1f}" for endpoint, rate in made.rps.items()],
            ]
        )
    lines = [
        f"Event: {event.attendees:,} attendees in {event.window_minutes:g} min through {event.gates} gates "
        f"(surge x{event.surge_factor:g}, {event.scans_per_person:g} scans and {event.displays_per_person:g} "
        f"code displays per person, {event.device_share:.0%} of them device codes, {event.payment_share:.0%} pay)",
        f"Arrivals: mean {made.mean_arrivals_per_s:,.1f}/s, peak {made.peak_arrivals_per_s:,.1f}/s",
        f"Locust: {made.users:,} users at the peak, spawn rate {made.spawn_rate:,.1f}/s, "
        f"{made.duration_s // 60} min {made.duration_s % 60} s test, each user one arrival every "
        f"{event.seconds_in_system:g} s",
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


def _sale_lines(event: Event, sale: SalePlan) -> list[str]:
    opening = f" opening at {event.sale_opens_at}" if event.sale_opens_at else ""
    outcome = (
        f"sold out {sale.sold_out_after_s:,.0f} s after the opening; {sale.told_sold_out:,} buyers told sold out"
        if sale.sold_out_after_s is not None
        else "not sold out: every buyer gets tickets"
    )
    return [
        f"Ticket sale: {event.ticket_quota:,} tickets for {sale.buyers:,} expected buyers{opening} "
        f"({event.tickets_per_buyer:g} per buyer), arriving over {event.window_minutes:g} min",
        f"  queue: joins peak {sale.peak_joins_per_s:,.1f}/s, admitted {event.admit_rate:g}/s in arrival order, "
        f"waiting buyers poll at half their wait, every {event.queue_poll_seconds:g} to {QUEUE_POLL_MAX_S:g} s "
        f"(up to {sale.peak_polls_per_s:,.0f}/s)",
        f"  {sale.winners:,} buyers get tickets; {outcome}",
    ]


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
        ("seconds_in_system", float, "seconds each person spends from arrival to leaving (Little's law)"),
        ("device_share", float, "share of code displays that are offline device codes (0..1)"),
        ("taps_per_person", float, "gate taps per person, uploaded in batches"),
        ("tap_batch_seconds", float, "seconds between a gate's tap uploads"),
        ("ticket_quota", int, "tickets on sale (a ticket rush; 0: none)"),
        ("expected_buyers", int, "buyers expected at the sale's opening (default: the attendees)"),
        ("sale_opens_at", str, "when the sale opens, HH:MM (for the plan's text)"),
        ("tickets_per_buyer", float, "tickets each buyer takes"),
        ("admit_rate", float, "buyers a second the sale's queue admits (what holds and payments absorb)"),
        ("queue_poll_seconds", float, "seconds between a waiting buyer's queue polls"),
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
    parser = argparse.ArgumentParser(
        prog="python -m app_backend.composition.sizing", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = vars(parser.parse_args(argv))
    event = Event(**{k: v for k, v in args.items() if v is not None})
    print(render(event, plan(event)))
    return 0


__all__ = ["Event", "Plan", "SalePlan", "Stage", "add_arguments", "asdict", "main", "plan", "render"]

if __name__ == "__main__":
    raise SystemExit(main())
