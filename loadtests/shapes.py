"""Locust load shapes that follow a sizing plan's stages (ramp, plateau, surge, decay).

Each stage holds its user count until its end; Locust starts or stops users at the stage's spawn rate to get
there. A plan's spawn rate is the arrival rate, and each user arrives at once when started, so the request rate
follows the plan from the first second while the user count builds up over one `seconds_in_system` (a faster
spawn would send a wave of first arrivals, and the same wave again one `seconds_in_system` later). Users of a
fixed count (gates) come on top of the plan's users; Locust starts them first.

Pure arithmetic, no Locust import (importing Locust monkey-patches the process with gevent): the locustfile's
LoadTestShape calls `target_at`."""

from __future__ import annotations

from collections.abc import Sequence

from app_backend.composition.sizing import Stage

MIN_SPAWN_RATE = 0.1


def stage_at(stages: Sequence[Stage], seconds: float) -> Stage | None:
    """The stage running `seconds` into the test; None once the last one has ended."""
    return next((stage for stage in stages if seconds < stage.until_seconds), None)


def target_at(stages: Sequence[Stage], seconds: float, fixed_users: int = 0) -> tuple[int, float] | None:
    """(users, spawn rate) for Locust at `seconds`; None stops the test."""
    stage = stage_at(stages, seconds)
    if stage is None:
        return None
    return stage.users + fixed_users, max(MIN_SPAWN_RATE, stage.spawn_rate)


def peak_window(stages: Sequence[Stage]) -> tuple[float, float]:
    """(start, end) seconds of the stage the throughput objective is judged on: the surge (the plateau of a
    plan with no surge is the same load), else the stage with the most users."""
    starts = [0, *(s.until_seconds for s in stages[:-1])]
    for start, stage in zip(starts, stages, strict=True):
        if stage.name == "surge":
            return float(start), float(stage.until_seconds)
    start, stage = max(zip(starts, stages, strict=True), key=lambda pair: pair[1].users)
    return float(start), float(stage.until_seconds)
