"""The load-test plan sized from an event's numbers (the model is in app_backend/composition/sizing.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app_backend.composition.sizing import Event, plan


def test_forty_thousand_attendees_in_45_minutes_through_60_gates():
    made = plan(Event(attendees=40_000, window_minutes=45, gates=60, payment_share=0.1))
    assert made.mean_arrivals_per_s == pytest.approx(40_000 / 2700)
    assert made.peak_arrivals_per_s == pytest.approx(2 * 40_000 / 2700), "a triangle peaks at twice the mean"
    assert made.rps["POST /api/v1/verify"] == pytest.approx(made.peak_arrivals_per_s)
    assert made.rps["POST /api/v1/codes/personal"] == pytest.approx(2 * made.peak_arrivals_per_s)
    assert made.rps["POST /api/v1/payments/orders"] == pytest.approx(0.1 * made.peak_arrivals_per_s)
    assert made.users == 1778 and not made.gates_short and made.gates_needed == 45
    assert [s.name for s in made.stages] == ["ramp", "plateau", "surge", "decay"]
    assert made.stages[-1].until_seconds == made.duration_s == 600


def test_a_ten_times_surge_multiplies_the_peak_and_shows_short_gates():
    calm = plan(Event(attendees=40_000, window_minutes=45, gates=60))
    surge = plan(Event(attendees=40_000, window_minutes=45, gates=60, surge_factor=10))
    assert surge.peak_arrivals_per_s == pytest.approx(10 * calm.peak_arrivals_per_s)
    assert surge.gates_short and surge.stages[2].users > surge.stages[1].users


@pytest.mark.parametrize(
    "bad", [{"attendees": 0}, {"gates": 0}, {"payment_share": 1.5}, {"surge_factor": 0.5}]
)
def test_impossible_events_are_refused(bad):
    with pytest.raises(ValueError):
        Event(**{"attendees": 100, "window_minutes": 10, "gates": 2, **bad})


def test_tzt_plan_prints_the_plan():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "app_backend.composition.cli",
            "plan",
            "--attendees",
            "40000",
            "--window-minutes",
            "45",
            "--gates",
            "60",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "peak 29.6/s" in out.stdout and "POST /api/v1/verify" in out.stdout and "Load shape" in out.stdout


def test_a_ticket_rush_is_sized_from_quota_buyers_and_the_admission_rate():
    """Issue 17: 100,000 buyers for 20,000 tickets opening at one moment, admitted at 50 a second."""
    made = plan(
        Event(
            attendees=1,
            expected_buyers=100_000,
            window_minutes=2,
            gates=1,
            ticket_quota=20_000,
            admit_rate=50,
            sale_opens_at="10:00",
        )
    )
    assert made.sale is not None
    assert made.sale.winners == 20_000 and made.sale.told_sold_out == 80_000
    assert made.sale.sold_out_after_s == pytest.approx(400)
    assert made.rps["POST /api/v1/tickets/sessions/{id}/queue"] == pytest.approx(2 * 100_000 / 120)
    assert made.rps["POST /api/v1/tickets/holds"] == pytest.approx(50)
    assert "POST /api/v1/verify" not in made.rps, "a sale's buyers pass no gates meanwhile"
    enough = plan(Event(attendees=500, window_minutes=2, gates=1, ticket_quota=1_000, tickets_per_buyer=2))
    assert enough.sale is not None and enough.sale.sold_out_after_s is None and enough.sale.winners == 500


def test_tzt_plan_prints_a_ticket_sale():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "app_backend.composition.cli",
            "plan",
            "--attendees",
            "100000",
            "--window-minutes",
            "2",
            "--gates",
            "1",
            "--ticket-quota",
            "20000",
            "--sale-opens-at",
            "10:00",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "20,000 tickets for 100,000 expected buyers opening at 10:00" in out.stdout
    assert "80,000 buyers told sold out" in out.stdout
