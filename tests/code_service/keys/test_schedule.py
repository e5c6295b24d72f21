"""The key schedule as a pure policy: which key signs and which are published at any instant, when the next is
staged. No database: the instants are given."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from code_service.keys.service import (
    PUBLISH_LEAD,
    RETIRE_AFTER,
    VERIFIER_REFRESH,
    KeySchedule,
)
from code_service.verifier.format import MAX_CREDENTIAL_LIFETIME

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@dataclass
class Key:
    kid: str
    created_at: dt.datetime
    signs_from: dt.datetime
    signs_until: dt.datetime | None = None
    retire_at: dt.datetime | None = None


def _stage(schedule: KeySchedule, keys: list[Key], kid: str, at: dt.datetime) -> Key:
    """What KeyService.stage does to the rows, on plain objects."""
    current = schedule.signer(keys, at)
    assert current is not None
    times = schedule.staging(at)
    new = Key(kid, times.created_at, times.signs_from)
    current.signs_until, current.retire_at = schedule.handing_over(new.signs_from)
    keys.append(new)
    return new


def test_the_figures_cover_a_daily_refresh_and_the_longest_credential():
    assert PUBLISH_LEAD > VERIFIER_REFRESH  # with a margin: a gate's daily refresh always falls in the lead
    assert RETIRE_AFTER > dt.timedelta(seconds=MAX_CREDENTIAL_LIFETIME)


def test_a_staged_key_is_published_a_lead_before_it_signs_and_the_old_one_retires_after_its_credentials():
    schedule = KeySchedule()
    first = Key("k1", T0, T0)
    keys = [first]
    staged_at = T0 + 30 * DAY
    second = _stage(schedule, keys, "k2", staged_at)
    switch = staged_at + PUBLISH_LEAD

    # Published at once, signing only after the lead; the old key signs until the switch.
    assert [k.kid for k in schedule.published_set(keys, staged_at)] == ["k2", "k1"]
    assert schedule.signer(keys, staged_at) is first
    assert schedule.signer(keys, switch - dt.timedelta(seconds=1)) is first
    assert schedule.signer(keys, switch) is second
    assert schedule.state(second, staged_at) == "staged" and schedule.state(first, switch) == "retiring"

    # At the switch, a verifier that refreshes daily holds a set fetched after switch - VERIFIER_REFRESH, which is
    # after the staging: every set fetched from the staging on holds the new key.
    assert switch - VERIFIER_REFRESH > staged_at
    for fetched in (staged_at, switch - VERIFIER_REFRESH, switch - dt.timedelta(seconds=1)):
        assert second in schedule.published_set(keys, fetched)

    # Whatever the old key signed last (a 24 h credential at the switch) expires before the key leaves.
    last_expiry = switch + dt.timedelta(seconds=MAX_CREDENTIAL_LIFETIME)
    assert first in schedule.published_set(keys, last_expiry)
    assert first.retire_at is not None and first.retire_at > last_expiry
    assert schedule.published_set(keys, first.retire_at) == [second]
    assert schedule.state(first, first.retire_at) == "retired"


def test_rotation_falls_due_so_the_successor_takes_over_after_the_period():
    schedule = KeySchedule()
    every = 30 * DAY
    keys = [Key("k1", T0, T0)]
    due_at = T0 + every - PUBLISH_LEAD
    assert not schedule.due(keys, due_at - dt.timedelta(seconds=1), every)
    assert schedule.due(keys, due_at, every)
    second = _stage(schedule, keys, "k2", due_at)
    assert second.signs_from == T0 + every
    # Staged: not due again, however late, until the successor signs and has signed for the period.
    assert not schedule.due(keys, due_at + HOUR, every)
    assert not schedule.due(keys, second.signs_from + every - PUBLISH_LEAD - HOUR, every)
    assert schedule.due(keys, second.signs_from + every - PUBLISH_LEAD, every)
    assert not schedule.due([], T0, every)  # no key at all: the first is made signing, not staged


def test_the_view_changes_only_at_the_instants_the_schedule_names():
    schedule = KeySchedule()
    keys = [Key("k1", T0, T0)]
    assert schedule.next_change(keys, T0) is None
    second = _stage(schedule, keys, "k2", T0 + DAY)
    assert schedule.next_change(keys, T0 + DAY) == second.signs_from
    assert schedule.next_change(keys, second.signs_from) == keys[0].retire_at


def test_an_emergency_successor_signs_at_once_and_a_withdrawn_key_leaves_at_once():
    schedule = KeySchedule()
    first = Key("k1", T0, T0)
    keys = [first]
    at = T0 + 3 * DAY
    times = schedule.first(at)
    emergency = Key("k9", times.created_at, times.signs_from)
    keys.append(emergency)
    first.signs_until, first.retire_at = schedule.withdrawing(at)
    assert schedule.signer(keys, at) is emergency
    assert schedule.published_set(keys, at) == [emergency]
