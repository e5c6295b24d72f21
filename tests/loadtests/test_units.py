"""The load-test kit's arithmetic: load shapes from a plan's stages, shed versus failure, the objectives."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_backend.composition.sizing import Event, Stage, plan
from loadtests.fixtures import mini_programs_of, one_login_client
from loadtests.report import peak_throughputs, read_rows
from loadtests.scenarios import SCENARIOS, resident_pool_size
from loadtests.shapes import MIN_SPAWN_RATE, peak_window, stage_at, target_at
from loadtests.slo import EndpointRow, Latency, Slo, Throughput, classify, evaluate, group_of, matches

STAGES = [Stage("ramp", 45, 100, 5.0), Stage("plateau", 90, 100, 5.0), Stage("surge", 135, 1000, 50.0)]
STAGES.append(Stage("decay", 180, 25, 5.0))


# --- shapes -------------------------------------------------------------------------------------------------


def test_each_stage_holds_until_its_end_and_the_shape_stops_after_the_last():
    assert [stage_at(STAGES, t).name for t in (0, 44.9, 45, 89.9, 90, 134.9, 135, 179.9)] == [
        "ramp",
        "ramp",
        "plateau",
        "plateau",
        "surge",
        "surge",
        "decay",
        "decay",
    ]
    assert stage_at(STAGES, 180) is None and target_at(STAGES, 180) is None


def test_fixed_users_come_on_top_and_users_start_at_the_arrival_rate():
    assert target_at(STAGES, 100) == (1000, 50.0)
    assert target_at(STAGES, 100, fixed_users=40) == (1040, 50.0)
    assert target_at([Stage("ramp", 10, 1, 0.0)], 0) == (1, MIN_SPAWN_RATE)


def test_the_throughput_objective_is_judged_over_the_surge():
    assert peak_window(STAGES) == (90.0, 135.0)
    no_surge = [Stage("ramp", 10, 5, 1.0), Stage("hold", 30, 50, 1.0), Stage("end", 40, 5, 1.0)]
    assert peak_window(no_surge) == (10.0, 30.0), "else the stage with the most users"


def test_a_plans_stages_split_the_compressed_test_in_quarters():
    made = plan(Event(attendees=40_000, window_minutes=45, gates=60, test_minutes=3))
    assert [(s.name, s.until_seconds) for s in made.stages] == [
        ("ramp", 45),
        ("plateau", 90),
        ("surge", 135),
        ("decay", 180),
    ]
    # Users arrive once at start and then every seconds_in_system: spawning at the arrival rate is the rate.
    assert made.stages[0].spawn_rate == pytest.approx(made.users / 60, rel=0.01)
    surge = plan(Event(attendees=12_000, window_minutes=30, gates=200, surge_factor=10, test_minutes=3))
    assert surge.stages[2].users == pytest.approx(10 * surge.stages[1].users, abs=10)


def test_device_codes_cost_no_issue_and_gates_upload_what_they_hold():
    made = plan(Event(attendees=3600, window_minutes=60, gates=10, device_share=0.5, taps_per_person=2))
    assert made.rps["POST /api/v1/codes/personal"] == pytest.approx(2 * 2 * 0.5)
    # 2 arrivals/s x 2 taps spread over 10 gates: 4 taps per gate in 10 s, so almost every gate uploads.
    assert made.rps["POST /api/v1/gates/taps"] == pytest.approx(1 - 2.718281828**-4, rel=1e-6)
    assert "POST /api/v1/gates/taps" not in plan(Event(attendees=3600, window_minutes=60, gates=10)).rps


# --- scenarios ----------------------------------------------------------------------------------------------


def test_a_scenarios_plan_is_what_its_users_send():
    city = SCENARIOS["city_day"].make_event({"attendees": 1000, "gates": None})
    # 4 riders (2 displays, 2 scans, 2 taps), 4 checkpoint visits (2 displays, 1 scan), 2 payers in every 10.
    assert (city.displays_per_person, city.scans_per_person) == pytest.approx((1.6, 1.2))
    assert (city.taps_per_person, city.payment_share) == pytest.approx((0.8, 0.2))
    assert city.attendees == 1000 and city.gates == SCENARIOS["city_day"].event["gates"]
    assert SCENARIOS["city_day"].rider_share() == pytest.approx(0.4)
    made = plan(SCENARIOS["event_entry"].make_event({"attendees": 40_000, "window_minutes": 45, "gates": 60}))
    assert made.users == 1778 and made.rps["POST /api/v1/verify"] == pytest.approx(29.6, abs=0.05)


def test_the_resident_pool_keeps_everyone_under_the_rate_limit_and_gives_every_rider_a_person():
    made = plan(SCENARIOS["health_surge"].make_event())
    assert resident_pool_size(made) >= 2 * made.rps["POST /api/v1/codes/personal"]
    assert resident_pool_size(made, riders=900) >= 990
    assert resident_pool_size(plan(Event(attendees=10, window_minutes=60, gates=1))) == 200


def test_the_login_storms_plan_is_what_its_visits_send():
    storm = SCENARIOS["login_storm"]
    event = storm.make_event({"attendees": 36_000, "window_minutes": 60})
    made = storm.plan(event)
    # 20 arrivals/s at the peak: 5 WeChat visits (a tenth of them first logins: one more login, the 422 that asks
    # for the phone), 2 Alipay visits and 3 department-app visits (three in ten also refresh) in every 10.
    assert made.peak_arrivals_per_s == pytest.approx(20.0) and made.users == 1200
    assert made.rps == pytest.approx(
        {
            "POST /api/v1/mini-programs/wechat/login": 20 * 0.5 * 1.1,
            "POST /api/v1/mini-programs/alipay/login": 20 * 0.2,
            "GET /oidc/authorize": 20 * 0.3,
            "POST /oidc/token": 20 * 0.3 * 1.3,
            "GET /oidc/userinfo": 20 * 0.3,
        }
    ), "only the logins: no code displays, verifications or payments"
    assert storm.has_mini_programs and storm.has_one_login and not storm.has_riders and not storm.has_payments
    assert storm.gate_users(event) == 0
    # The other scenarios' plans are the sizing model's own.
    entry = SCENARIOS["event_entry"].make_event()
    assert SCENARIOS["event_entry"].plan(entry) == plan(entry)


def test_every_login_endpoint_has_its_own_objectives():
    storm = SCENARIOS["login_storm"]
    made = storm.plan(storm.make_event())
    assert {group_of(endpoint) for endpoint in made.rps} == set(storm.slo.latency)
    assert group_of("POST /api/v1/mini-programs/wechat/login [first, phone-required]") == "wechat-login"
    assert group_of("POST /oidc/token [refresh]") == "token" and group_of("GET /oidc/userinfo") == "userinfo"
    assert matches("POST /oidc/token [refresh]", "POST /oidc/token")
    assert group_of("POST /_sandbox/codes [wechat]") == "sandbox", "the phone's codes are not our endpoints"
    # The app session's bearer token is checked at authorize: the pool keeps residents under its rate limit.
    assert resident_pool_size(made, minimum=1) >= 2 * made.rps["GET /oidc/authorize"]


def test_the_login_fixtures_come_from_the_mini_program_config_and_the_demo_credentials():
    config = {
        "wechat": [
            {"app_id": "wx1", "api_base_url": "http://127.0.0.1:9001/", "secret_file": "s"},
            {"app_id": "wx2", "api_base_url": "http://127.0.0.1:9001/", "secret_file": "s"},
        ],
        "alipay": [{"app_id": "2021", "gateway_url": "http://127.0.0.1:9002/gateway.do"}],
    }
    apps = mini_programs_of(config)
    assert (apps["wechat"].app_id, apps["wechat"].sandbox) == ("wx1", "http://127.0.0.1:9001")
    assert (apps["alipay"].app_id, apps["alipay"].sandbox) == ("2021", "http://127.0.0.1:9002")
    assert mini_programs_of({}) == {}
    client = {"client_id": "c", "client_secret": "s", "redirect_uri": "http://localhost:8765/callback"}
    assert one_login_client({"one_login": {**client, "organisation": "x"}}) == client
    with pytest.raises(RuntimeError, match="one_login"):
        one_login_client({"泰州地铁运营有限公司": {"key_id": "k"}})


# --- shed or failure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "error", "outcome"),
    [
        (200, None, None, "ok"),
        (201, None, None, "ok"),
        (429, "1", None, "shed"),
        (503, "2", None, "shed"),
        (429, None, None, "failure"),
        (503, None, None, "failure"),
        (503, "", None, "failure"),
        (500, None, None, "failure"),
        (502, "5", None, "failure"),
        (404, None, None, "failure"),
        (401, None, None, "failure"),
        (0, None, TimeoutError("timed out"), "failure"),
        (0, None, ConnectionRefusedError(), "failure"),
    ],
)
def test_only_a_429_or_503_with_retry_after_is_shed(status, retry_after, error, outcome):
    assert classify(status, retry_after, error) == outcome


def test_request_names_fall_into_endpoint_groups_and_plan_endpoints():
    assert (
        group_of("POST /api/v1/verify [transit]")
        == group_of("POST /api/v1/verify [health] [shed]")
        == "verify"
    )
    assert group_of("GET /api/v1/payments/orders/{id}") == "orders"
    assert group_of("POST /_sandbox/trades/{no}/pay [wechat]") == "sandbox"
    assert matches("POST /api/v1/verify [health]", "POST /api/v1/verify")
    assert matches("POST /api/v1/payments/notify/wechat", "POST /api/v1/payments/notify")
    assert not matches("POST /api/v1/payments/orders [retry, same key]", "POST /api/v1/payments/orders")
    assert not matches("GET /api/v1/payments/orders/{id}", "POST /api/v1/payments/orders")


# --- objectives ---------------------------------------------------------------------------------------------

SLO = Slo({"verify": Latency(300, 800)}, max_failure_ratio=0.01, min_throughput_share=0.9)


def _row(**overrides: object) -> EndpointRow:
    values = {
        "name": "POST /api/v1/verify [health]",
        "requests": 1000,
        "p50_ms": 20,
        "p95_ms": 120,
        "p99_ms": 400,
    }
    return EndpointRow(**{**values, **overrides})  # type: ignore[arg-type]


def _judged(evaluation: object) -> dict[tuple[str, str], object]:
    return {(v.check, v.subject): v.passed for v in evaluation.verdicts}  # type: ignore[attr-defined]


def test_a_run_within_every_objective_passes():
    result = evaluate([_row()], [Throughput("POST /api/v1/verify", 30, 29, 45)], SLO)
    assert result.passed
    assert _judged(result) == {
        ("p95 ms", "POST /api/v1/verify [health]"): True,
        ("p99 ms", "POST /api/v1/verify [health]"): True,
        ("failure ratio", "verify"): True,
        ("throughput share", "POST /api/v1/verify"): True,
    }


@pytest.mark.parametrize(
    ("row", "throughput", "failed"),
    [
        ({"p95_ms": 301}, 30, ("p95 ms", "POST /api/v1/verify [health]")),
        ({"p99_ms": 900}, 30, ("p99 ms", "POST /api/v1/verify [health]")),
        ({"failures": 11}, 30, ("failure ratio", "verify")),
        ({}, 26.9, ("throughput share", "POST /api/v1/verify")),
    ],
)
def test_a_missed_objective_fails_the_run(row, throughput, failed):
    result = evaluate([_row(**row)], [Throughput("POST /api/v1/verify", 30, throughput, 45)], SLO)
    assert not result.passed
    assert [k for k, passed in _judged(result).items() if passed is False] == [failed]


def test_shed_answers_are_not_failures_and_not_throughput():
    shedding = _row(requests=1000, shed=400, failures=0)
    result = evaluate([shedding], [Throughput("POST /api/v1/verify", 30, 18, 45)], SLO)
    assert _judged(result)[("failure ratio", "verify")] is True
    assert _judged(result)[("throughput share", "POST /api/v1/verify")] is False


def test_too_few_requests_are_reported_not_judged():
    result = evaluate(
        [_row(requests=50, p99_ms=5000)], [Throughput("POST /api/v1/gates/taps", 0.5, 0.1, 20)], SLO
    )
    assert _judged(result)[("p99 ms", "POST /api/v1/verify [health]")] is None
    assert _judged(result)[("throughput share", "POST /api/v1/gates/taps")] is None
    assert result.passed
    assert SLO.scaled(3).latency["verify"] == Latency(900, 2400)


def test_locust_rows_fold_shed_answers_into_their_endpoint(tmp_path: Path):
    stats = tmp_path / "locust_stats.csv"
    header = "Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%"
    stats.write_text(
        "\n".join(
            [
                header,
                "POST,/api/v1/verify [health],900,3,30.0,20,110,300",
                "POST,/api/v1/verify [health] [shed],100,0,3.3,2,4,6",
                "POST,/api/v1/codes/personal [shed],5,0,0.2,1,1,1",
                ",Aggregated,1005,3,33.5,20,100,300",
            ]
        )
    )
    rows = {r.name: r for r in read_rows(stats)}
    verify = rows["POST /api/v1/verify [health]"]
    assert (verify.requests, verify.shed, verify.failures, verify.p95_ms) == (1000, 100, 3, 110.0)
    assert verify.answered == 897 and verify.rps == pytest.approx(33.3)
    codes = rows["POST /api/v1/codes/personal"]
    assert (codes.requests, codes.shed, codes.p95_ms) == (5, 5, None)


def test_throughput_counts_ok_answers_completed_in_the_window():
    requests = {
        ("POST /api/v1/verify [health]", 99, 100, "ok"): 50,
        ("POST /api/v1/verify [transit]", 100, 101, "ok"): 40,
        ("POST /api/v1/verify [health]", 100, 101, "shed"): 30,
        ("POST /api/v1/verify [health]", 104, 110, "ok"): 99,  # after the window
    }
    (found,) = peak_throughputs(requests, {"POST /api/v1/verify": 20.0}, 100.0, 110.0)
    assert found.achieved_rps == pytest.approx(9.0) and found.window_s == 10.0


def test_the_bench_generator_reads_a_204_without_content_length_as_an_answer():
    """The impressions row answers 204 No Content, which carries no Content-Length: an answer, not an error."""
    import time

    from loadtests.bench.generator import _Connection, _Load

    class Transport:
        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.sent.append(data)

        def close(self) -> None:
            self.closed = True

    load = _Load([b"POST /x HTTP/1.1\r\n\r\n"], {"cycle": True})
    load.window_start, load.window_end = time.monotonic() - 1, time.monotonic() + 60
    connection = _Connection(load)
    transport = Transport()
    connection.transport = transport  # type: ignore[assignment]
    connection.data_received(b"HTTP/1.1 204 No Content\r\nserver: granian\r\n\r\n")
    connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert load.ok == 2 and not load.errors and len(transport.sent) == 2 and not transport.closed


def test_the_ticket_rush_runs_in_real_time_and_judges_what_the_sale_must_absorb():
    scenario = SCENARIOS["ticket_rush"]
    event = scenario.make_event({})
    made = scenario.plan(event)
    assert made.sale is not None and made.sale.buyers == 100_000 and event.ticket_quota == 20_000
    assert [s.name for s in made.stages] == ["lead", "surge", "drain"]
    # The buyers arrive over two minutes around the opening; the sale sells 20,000 at 50 a second.
    assert made.stages[0].until_seconds == 20 + 60
    assert made.stages[1].until_seconds - made.stages[0].until_seconds == 400
    assert made.users == 1000 and all(s.users == 0 for s in made.stages), "the drivers are fixed users"
    assert set(made.rps) == {
        "POST /api/v1/tickets/holds",
        "POST /api/v1/tickets/holds/{id}/pay",
        "POST /api/v1/payments/notify",
    }
    assert made.rps["POST /api/v1/tickets/holds"] == 50
    # A hold's payment is not counted as a hold.
    assert not matches("POST /api/v1/tickets/holds/{id}/pay", "POST /api/v1/tickets/holds")
    assert matches("POST /api/v1/tickets/holds", "POST /api/v1/tickets/holds")


def test_the_hold_row_never_asks_one_resident_for_more_than_the_per_person_limit():
    """Each bench resident holds for themself; their requests cycle through the round's sessions so the sale's
    limit (20 per person and session) refuses none, and the generator sends each with its own token and body."""
    import collections
    import json

    from loadtests.bench.generator import _build_requests
    from loadtests.bench.residents import PER_PERSON, hold_requests

    sales = [{"session_id": f"s{n}", "class_id": f"c{n}"} for n in range(4)]
    tokens = [f"t{n}" for n in range(10)]
    requests = hold_requests(sales, tokens, 10_000)
    assert len(requests) == PER_PERSON * 4 * 10
    per = collections.Counter((token, json.loads(body)["session_id"]) for token, body in requests)
    assert max(per.values()) == PER_PERSON and json.loads(requests[0][1])["attendees"] == [{}]
    built = _build_requests(
        {"host": "127.0.0.1", "port": 1, "kind": "bearer-post-bodies", "path": "/h", "requests": requests[:2]}
    )
    assert built[1].startswith(b"POST /h HTTP/1.1") and b"Bearer t1" in built[1] and built[1].endswith(b"}")
