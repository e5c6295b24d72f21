"""Ticket sales in the load tests (issue 17): the ticket rush's sale, its buyers and what is checked after the
run; and event_entry's attendees, who hold real paid tickets so that the gates' verifications take the
admitting path.

Runner side only (no Locust import). The sale is published as the organising department would (signed requests
of the credential holding `events:publish`): an event, a competition, a venue whose gates are the operator
holding `verify:event`, a session a day ahead, and its sale: the quota split over two classes, opening
`lead_s` after the fixtures are ready, the queue admitting `admit_rate` buyers a second. Buyers are real-named
residents made in bulk by the dev route (100,000 through OTP and real-name would take longer than the rush).

After the run the database is asked what a ledger clerk would ask: how many tickets each class sold (never more
than its quota), whether any paid ticket order has no ticket (a charge without a ticket) and whether two
tickets share a seat-less order twice; the tally says whether every buyer got an answer."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from app_backend.organisations.signing import sign_request
from loadtests.fixtures import Org, Resident
from loadtests.slo import Verdict

MANAGE = "/api/v1/events/manage"
CLASSES = (
    ("A区看台", "A区", "东门", 18_000),
    ("B区看台", "B区", "西门", 8_000),
)  # name, section, entrance, fen
BULK = 2000  # residents per dev-route call (its limit)


@dataclass(frozen=True)
class Sale:
    session_id: str
    classes: list[dict[str, Any]]  # id, name, quota, price_fen
    opens_at: float  # Unix seconds
    hold_minutes: int


async def _signed(client: httpx.AsyncClient, org: Org, method: str, path: str, body: Any) -> Any:
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {**sign_request(org.key_id, org.secret, method, path, raw), "Content-Type": "application/json"}
    answer = await client.request(method, path, content=raw, headers=headers)
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:300]}")
    return answer.json()


async def open_sale(
    base: str,
    organiser: Org,
    gate: Org,
    quota: int,
    *,
    lead_s: float,
    admit_rate: float,
    hold_minutes: int = 5,
    per_person: int = 4,
    starts_in: dt.timedelta = dt.timedelta(days=1),
    re_entry_minutes: int | None = None,
) -> Sale:
    """The organiser publishes the session and its sale; the sale opens `lead_s` from now (admit_rate 0: no
    queue)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        today = dt.date.today()
        event = await _signed(
            client,
            organiser,
            "POST",
            f"{MANAGE}/events",
            {
                "name": "江苏省运动会 负载测试",
                "description": "开票压力测试",
                "starts_on": today.isoformat(),
                "ends_on": (today + dt.timedelta(days=14)).isoformat(),
            },
        )
        competition = await _signed(
            client,
            organiser,
            "POST",
            f"{MANAGE}/events/{event['id']}/competitions",
            {"sport": "游泳", "name": "游泳决赛"},
        )
        venue = await _signed(
            client,
            organiser,
            "POST",
            f"{MANAGE}/venues",
            {
                "name": f"泰州市体育中心游泳馆 {uuid.uuid4().hex[:4]}",
                "address": "泰州市海陵区体育路1号",
                "district": "321202",
                "sections": [c[1] for c in CLASSES],
                "entrances": [c[2] for c in CLASSES],
                "transport_notes": "乘坐3路公交至体育中心站",
                "accessibility_notes": "东门设无障碍通道",
                "gate_verifiers": [gate.organisation_id],
            },
        )
        starts = dt.datetime.now(dt.UTC).replace(microsecond=0) + starts_in
        session = await _signed(
            client,
            organiser,
            "POST",
            f"{MANAGE}/sessions",
            {
                "competition_id": competition["id"],
                "venue_id": venue["id"],
                "title": "游泳决赛 开票压力测试",
                "starts_at": starts.isoformat(),
                "ends_at": (starts + dt.timedelta(hours=2)).isoformat(),
            },
        )
        opens = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead_s)
        shares = [math.ceil(quota * 0.6), quota - math.ceil(quota * 0.6)]
        path = f"/api/v1/tickets/sessions/{session['id']}/sale"
        await _signed(
            client,
            organiser,
            "PUT",
            path,
            {
                "classes": [
                    {"name": name, "price_fen": fen, "section": section, "quota": share, "entrances": [door]}
                    for (name, section, door, fen), share in zip(CLASSES, shares, strict=True)
                    if share > 0
                ],
                "opens_at": opens.isoformat(),
                "closes_at": min(opens + dt.timedelta(hours=6), starts + dt.timedelta(hours=2)).isoformat(),
                "per_person": per_person,
                "hold_minutes": hold_minutes,
                "admit_per_minute": round(admit_rate * 60),
                "re_entry_minutes": re_entry_minutes,
            },
        )
        sale = (await client.get(f"/api/v1/tickets/sessions/{session['id']}")).json()
    return Sale(
        session_id=session["id"],
        classes=[
            {
                "id": c["id"],
                "name": c["name"],
                "quota": c["quota"],
                "price_fen": c["price_fen"],
                "entrances": c["entrances"],
            }
            for c in sale["classes"]
        ],
        opens_at=opens.timestamp(),
        hold_minutes=hold_minutes,
    )


async def make_buyers(base: str, count: int, concurrency: int = 4) -> list[Resident]:
    """`count` real-named residents, logged in, through the dev route in calls of 2,000."""
    buyers: list[Resident] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def batch(size: int) -> None:
            async with gate:
                answer = await client.post("/api/v1/dev/residents", json={"count": size})
            if answer.status_code != 201:
                raise RuntimeError(f"dev residents: HTTP {answer.status_code} {answer.text[:300]}")
            buyers.extend(
                Resident(r["resident_id"], r["phone"], r["access_token"], r["refresh_token"])
                for r in answer.json()["residents"]
            )

        while len(buyers) < count:  # a random phone or person already held comes back short
            missing = count - len(buyers)
            await asyncio.gather(*(batch(min(BULK, missing - i)) for i in range(0, missing, BULK)))
    return buyers[:count]


async def buy_tickets(
    base: str, sandboxes: dict[str, str], sale: Sale, residents: list[Resident]
) -> dict[str, str]:
    """Each resident holds one ticket for themself and pays it in a channel's sandbox, the notification relayed,
    as the phone and the channel would. Returns each resident's entrance (the one of their ticket's class)."""
    entrances: dict[str, str] = {}
    gate = asyncio.Semaphore(16)
    channels = sorted(sandboxes)
    seats = [c for c in sale.classes for _ in range(c["quota"])]  # each class as many times as it has tickets

    def bearer(resident: Resident) -> dict[str, str]:
        return {"Authorization": f"Bearer {resident.access_token}"}

    def ok(answer: httpx.Response, what: str) -> Any:
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"{what}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer.json() if "json" in answer.headers.get("content-type", "") else answer.text

    async def one(n: int, resident: Resident, client: httpx.AsyncClient, sandbox: httpx.AsyncClient) -> None:
        chosen = seats[n % len(seats)]
        channel = channels[n % len(channels)]
        async with gate:
            held = ok(
                await client.post(
                    "/api/v1/tickets/holds",
                    json={"session_id": sale.session_id, "class_id": chosen["id"], "attendees": [{}]},
                    headers=bearer(resident),
                ),
                "hold",
            )
            paying = ok(
                await client.post(
                    f"/api/v1/tickets/holds/{held['id']}/pay",
                    json={"channel": channel, "method": "native"},
                    headers={**bearer(resident), "Idempotency-Key": f"entry-{held['id']}"},
                ),
                "pay",
            )
            order = ok(
                await client.get(f"/api/v1/payments/orders/{paying['order_id']}", headers=bearer(resident)),
                "order",
            )
            paid = ok(
                await sandbox.post(
                    f"{sandboxes[channel]}/_sandbox/trades/{order['out_trade_no']}/pay",
                    json={"deliver": False},
                ),
                "sandbox pay",
            )
            note = paid["notification"]
            ok(
                await client.post(
                    f"/api/v1/payments/notify/{channel}",
                    content=note["body"].encode(),
                    headers={"Content-Type": note["content_type"]},
                ),
                "notify",
            )
        entrances[resident.id] = (chosen.get("entrances") or [CLASSES[0][2]])[0]

    async with (
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        httpx.AsyncClient(timeout=60) as sandbox,
    ):
        await asyncio.gather(*(one(n, r, client, sandbox) for n, r in enumerate(residents)))
    return entrances


async def sale_figures(database_url: str, session_id: str) -> dict[str, Any]:
    """What the database says of the sale (a read-only transaction): per class sold, held and quota; paid ticket
    orders of the session with no ticket; tickets whose order is paid twice over."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(readonly=True):
            classes = await conn.fetch(
                """SELECT c.name, c.quota,
                          count(t.*) FILTER (WHERE t.status = 'valid') AS sold,
                          count(t.*) FILTER (WHERE t.status = 'held') AS held
                   FROM tickets.classes c LEFT JOIN tickets.tickets t ON t.class_id = c.id
                   WHERE c.session_id = $1 GROUP BY c.id ORDER BY c.name""",
                uuid.UUID(session_id),
            )
            charged_without = await conn.fetchval(
                """SELECT count(*) FROM tickets.holds h JOIN payments.orders o ON o.id = h.order_id
                   WHERE h.session_id = $1 AND o.status IN ('paid', 'finished')
                     AND NOT EXISTS (SELECT 1 FROM tickets.tickets t
                                     WHERE t.hold_id = h.id AND t.status IN ('valid', 'returned'))
                     AND NOT EXISTS (SELECT 1 FROM payments.refunds r WHERE r.order_id = o.id)""",
                uuid.UUID(session_id),
            )
    finally:
        await conn.close()
    return {
        "classes": [dict(r) for r in classes],
        "paid_orders_without_ticket_or_refund": int(charged_without),
    }


def check_sale(figures: dict[str, Any], counters: dict[str, int], buyers: int) -> tuple[list[Verdict], str]:
    verdicts = []
    for row in figures["classes"]:
        sold = int(row["sold"])
        verdicts.append(
            Verdict("sold within quota", row["name"], float(sold), float(row["quota"]), sold <= row["quota"])
        )
    sold = sum(int(r["sold"]) for r in figures["classes"])
    quota = sum(int(r["quota"]) for r in figures["classes"])
    bought = counters.get("buyers: a ticket", 0)
    verdicts.append(
        Verdict(
            "tickets sold = buyers told they have one",
            "tickets",
            float(sold),
            float(bought),
            sold == bought,
            "every ticket sold once: to the one buyer it was confirmed to",
        )
    )
    without = figures["paid_orders_without_ticket_or_refund"]
    verdicts.append(
        Verdict(
            "charged without a ticket",
            "payments",
            float(without),
            0.0,
            without == 0,
            "paid, no ticket, no refund",
        )
    )
    answered = bought + counters.get("buyers: sold out", 0)
    verdicts.append(
        Verdict(
            "buyers without an answer",
            "buyers",
            float(buyers - answered),
            0.0,
            answered == buyers,
            "each buyer ends with a ticket or sold out",
        )
    )
    note = (
        f"{sold:,} of {quota:,} tickets sold; {bought:,} buyers with a ticket, "
        f"{counters.get('buyers: sold out', 0):,} told sold out, {buyers - answered:,} without an answer"
    )
    return verdicts, note
