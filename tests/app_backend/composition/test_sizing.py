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
