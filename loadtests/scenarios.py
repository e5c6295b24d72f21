"""The six scenarios: who arrives, what each person does per visit, the default event numbers, the objectives.

A scenario is a mix of visits (Locust user classes with weights). Every user is one "slot" of Little's law: it makes
one arrival every `seconds_in_system` seconds (constant pacing), so users / seconds_in_system is the arrival rate
and the sizing model holds. The per-person numbers of the plan (displays, scans, taps, payment share) are the
weighted mean of the visits, so the plan's target rates are exactly what the users are meant to send. Endpoints
the sizing model does not know (the logins of `login_storm`) are a visit's `calls`, added to the plan's target
rates the same way: the peak arrival rate times their weighted mean per visit."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from app_backend.composition.sizing import HOLD, HOLD_PAY, Event, Plan, Stage, plan
from loadtests.slo import Latency, Slo


@dataclass(frozen=True)
class Visit:
    user_class: str
    weight: int
    displays: float = 0.0  # code displays per visit (server codes, or device codes made offline)
    scans: float = 0.0  # online verifications per visit
    taps: float = 0.0  # gate taps per visit (uploaded later by the gates, in batches)
    pays: float = 0.0  # orders paid per visit
    # Requests per visit to endpoints beyond the sizing model's ("METHOD /path", mean count), for the plan.
    calls: tuple[tuple[str, float], ...] = ()
    first_login_share: float = 0.0  # mini-program visits by a user never seen (the phone button follows)
    refresh_share: float = 0.0  # one-login visits whose department app also refreshes its tokens


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    event: Mapping[str, Any]  # default Event fields; the per-person numbers come from the visits
    visits: tuple[Visit, ...]
    slo: Slo

    @property
    def classes(self) -> list[str]:
        return [v.user_class for v in self.visits]

    @property
    def has_riders(self) -> bool:
        return "RiderUser" in self.classes

    @property
    def has_payments(self) -> bool:
        return "PayerUser" in self.classes

    @property
    def has_mini_programs(self) -> bool:
        return bool({"WeChatLoginUser", "AlipayLoginUser"} & set(self.classes))

    @property
    def has_one_login(self) -> bool:
        return "OneLoginUser" in self.classes

    def rider_share(self) -> float:
        return sum(v.weight for v in self.visits if v.user_class == "RiderUser") / sum(
            v.weight for v in self.visits
        )

    def per_person(self) -> dict[str, float]:
        total = sum(v.weight for v in self.visits)
        mean = {
            k: sum(getattr(v, k) * v.weight for v in self.visits) / total
            for k in ("displays", "scans", "taps", "pays")
        }
        return {
            "displays_per_person": mean["displays"],
            "scans_per_person": mean["scans"],
            "taps_per_person": mean["taps"],
            "payment_share": min(1.0, mean["pays"]),
        }

    def make_event(self, overrides: Mapping[str, Any] | None = None) -> Event:
        known = {f.name for f in fields(Event)}
        values = {
            **self.event,
            **self.per_person(),
            **{k: v for k, v in (overrides or {}).items() if v is not None},
        }
        return Event(**{k: v for k, v in values.items() if k in known})

    def plan(self, event: Event) -> Plan:
        """The sizing model's plan, with the target rates of the visits' other calls at the peak."""
        made = plan(event)
        if made.sale is not None:
            return rush_plan(event, made)
        total = sum(v.weight for v in self.visits)
        extra: dict[str, float] = {}
        for visit in self.visits:
            for endpoint, count in visit.calls:
                extra[endpoint] = extra.get(endpoint, 0.0) + count * visit.weight / total
        if not extra:
            return made
        rps = {k: v for k, v in made.rps.items() if v > 0}  # the sizing model's endpoints this scenario sends
        rps.update({endpoint: made.peak_arrivals_per_s * count for endpoint, count in extra.items()})
        return dataclasses.replace(made, rps=rps)

    def gate_users(self, event: Event) -> int:
        """Gates are users of their own (fixed count): they keep taps and upload batches."""
        return event.gates if event.taps_per_person > 0 else 0


RUSH_LEAD_S = 20.0  # from the end of the fixtures to the start of the buyers' arrival window
RUSH_DRAIN_S = 90.0  # after the last ticket is held: the last payments, and the last waiting buyers told
MOST_DRIVERS = 1000  # Locust users driving the buyers (each drives its share, each buyer when it is due)


def rush_plan(event: Event, made: Plan) -> Plan:
    """A ticket rush runs in real time, not compressed: the buyers arrive over the window around the opening,
    the queue admits them at the sale's rate until the quota is held and paid, then everyone still waiting is
    told sold out. The objectives judge the rates the sale must absorb (holds, payments, notifications at the
    admission rate) over the selling stage; the joins and polls, driven by the buyers, are reported."""
    assert made.sale is not None
    drivers = min(made.sale.buyers, MOST_DRIVERS)
    opening = RUSH_LEAD_S + event.window_minutes * 30
    selling = made.sale.winners / event.admit_rate
    duration = int(opening + max(event.window_minutes * 30, selling) + RUSH_DRAIN_S)
    stages = [
        Stage("lead", int(opening), 0, float(drivers)),
        Stage("surge", int(opening + selling), 0, float(drivers)),
        Stage("drain", duration, 0, float(drivers)),
    ]
    judged = {k: v for k, v in made.rps.items() if k in (HOLD, HOLD_PAY, "POST /api/v1/payments/notify")}
    return dataclasses.replace(made, users=drivers, stages=stages, duration_s=duration, rps=judged)


TICKETS = {
    "queue": Latency(300, 1000),
    "holds": Latency(500, 1500),
    "tickets": Latency(300, 800),
    "orders": Latency(800, 2000),
    "notify": Latency(500, 1500),
}

NORMAL = {
    "codes": Latency(300, 800),
    "verify": Latency(300, 800),
    "taps": Latency(1000, 2500),
    "orders": Latency(800, 2000),
    "notify": Latency(500, 1500),
}

WECHAT_LOGIN = "POST /api/v1/mini-programs/wechat/login"
ALIPAY_LOGIN = "POST /api/v1/mini-programs/alipay/login"
AUTHORIZE = "GET /oidc/authorize"
TOKEN = "POST /oidc/token"  # noqa: S105 - an endpoint, not a secret
USERINFO = "GET /oidc/userinfo"

# Logins call the channel (code2session, oauth.token: an HTTP round trip to WeChat's or Alipay's sandbox, RSA2 on
# both sides for Alipay) and write the session; one login's token exchange signs an ES256 ID token.
LOGINS = {
    "wechat-login": Latency(500, 1500),
    "alipay-login": Latency(800, 2000),
    "authorize": Latency(300, 800),
    "token": Latency(500, 1500),
    "userinfo": Latency(300, 800),
}


def wechat_login_visit(weight: int, first_login_share: float) -> Visit:
    """A WeChat user opens the city's mini-program: a returning one logs in with its wx.login code; one never
    seen is answered 422 phone-required, taps the getPhoneNumber button and logs in again with both codes."""
    return Visit(
        "WeChatLoginUser",
        weight,
        calls=((WECHAT_LOGIN, 1 + first_login_share),),
        first_login_share=first_login_share,
    )


def alipay_login_visit(weight: int) -> Visit:
    """An Alipay user linked to a resident opens the city's Alipay mini-program: my.getAuthCode, login."""
    return Visit("AlipayLoginUser", weight, calls=((ALIPAY_LOGIN, 1.0),))


def one_login_visit(weight: int, refresh_share: float) -> Visit:
    """A resident opens a department's app from Taizhou Tong: the web-view asks the authorization endpoint with
    the resident's session, the department's server exchanges the code (PKCE) and reads userinfo; a share of the
    apps also refresh their tokens."""
    return Visit(
        "OneLoginUser",
        weight,
        calls=((AUTHORIZE, 1.0), (TOKEN, 1 + refresh_share), (USERINFO, 1.0)),
        refresh_share=refresh_share,
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "morning_rush",
            "Metro line 1 at 7-9 am: riders show device or server codes at the entry and exit gates, gates verify "
            "online (transit) and upload tap batches; the job worker turns taps into trips and fares",
            {
                "attendees": 24_000,
                "window_minutes": 60,
                "gates": 40,
                "device_share": 0.5,
                "seconds_in_system": 60,
            },
            (Visit("RiderUser", 1, displays=2, scans=2, taps=2),),
            Slo(NORMAL),
        ),
        Scenario(
            "event_entry",
            "A stadium event: attendees who bought their tickets open their code on the way and show it at the "
            "venue gate of their ticket's entrance, which verifies it online in the event scene (admitted, "
            "section and seat; again after the session's one-minute re-entry rule when a resident comes round)",
            {
                "attendees": 20_000,
                "window_minutes": 30,
                "gates": 40,
                "device_share": 0.3,
                "seconds_in_system": 60,
            },
            (Visit("AttendeeUser", 1, displays=2, scans=1),),
            Slo(NORMAL),
        ),
        Scenario(
            "health_surge",
            "The Xi'an case: code displays and checkpoint verifications at ten times the normal peak",
            {
                "attendees": 12_000,
                "window_minutes": 30,
                "gates": 200,
                "surge_factor": 10,
                "device_share": 0.3,
                "seconds_in_system": 20,
            },
            (Visit("CheckpointUser", 1, displays=1, scans=1),),
            Slo(
                {"codes": Latency(500, 1500), "verify": Latency(300, 1000)},
                max_failure_ratio=0.01,
                min_throughput_share=0.8,
            ),
        ),
        Scenario(
            "payment_burst",
            "Ticket sales open: orders created with an Idempotency-Key (some retried), paid by the buyer in the "
            "Alipay / WeChat sandbox, the channel's signed notification relayed to our notify endpoint, the "
            "order checked paid",
            {
                "attendees": 3_000,
                "window_minutes": 10,
                "gates": 1,
                "surge_factor": 2,
                "seconds_in_system": 60,
            },
            (Visit("PayerUser", 1, pays=1),),
            Slo(NORMAL),
        ),
        Scenario(
            "city_day",
            "A city day: metro riders, checkpoint and venue entries, and payments together",
            {
                "attendees": 60_000,
                "window_minutes": 120,
                "gates": 40,
                "device_share": 0.4,
                "seconds_in_system": 60,
            },
            (
                Visit("RiderUser", 4, displays=2, scans=2, taps=2),
                Visit("CheckpointUser", 4, displays=2, scans=1),
                Visit("PayerUser", 2, pays=1),
            ),
            Slo(NORMAL),
        ),
        Scenario(
            "ticket_rush",
            "The games' ticket sale opens: 100,000 buyers for 20,000 tickets arrive around the opening, join the "
            "sale's queue (those before the opening wait), are admitted in arrival order at the sale's rate, "
            "hold a ticket with their pass, pay it in the WeChat or Alipay sandbox (the notification relayed), "
            "and check they hold it; the rest are told sold out",
            {
                "attendees": 100_000,
                "window_minutes": 2,
                "gates": 1,
                "ticket_quota": 20_000,
                "admit_rate": 50,
                "sale_opens_at": "10:00",
            },
            (Visit("TicketBuyerUser", 1),),
            Slo(TICKETS),
        ),
        Scenario(
            "login_storm",
            "A big event's morning: residents open the city's WeChat and Alipay mini-programs (returning users "
            "log in with a fresh platform code, first-timers with the phone button too) and department apps "
            "(one login: authorize with the app's session, code exchange with PKCE, userinfo, some refreshes)",
            {
                "attendees": 36_000,
                "window_minutes": 60,
                "gates": 1,
                "seconds_in_system": 60,
            },
            (
                wechat_login_visit(5, first_login_share=0.1),
                alipay_login_visit(2),
                one_login_visit(3, refresh_share=0.3),
            ),
            Slo(LOGINS),
        ),
    )
}


def resident_pool_size(made: Plan, riders: float = 0, minimum: int = 200, maximum: int = 2000) -> int:
    """Residents shared by the users: enough that none comes near the per-resident rate limit (120 requests a
    minute), at most one authenticated request every two seconds each at the peak; and a rider for every rider
    user at the peak, since nobody rides two trains at once."""
    rps = made.rps
    per_second = (
        rps.get("POST /api/v1/codes/personal", 0.0)
        + 3 * rps.get("POST /api/v1/payments/orders", 0.0)
        + rps.get(AUTHORIZE, 0.0)  # the app session's bearer token (the other login calls use none)
    )
    return max(minimum, min(maximum, math.ceil(max(2 * per_second, 1.1 * riders))))
