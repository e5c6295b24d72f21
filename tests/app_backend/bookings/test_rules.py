"""The city sets the booking rules in the environment (TZT_BOOKING_*); absent ones keep their defaults."""

from __future__ import annotations

import msgspec
import pytest

from app_backend.bookings.module import rules_from
from app_backend.bookings.schemas import BookingRules


def test_rules_come_from_the_environment() -> None:
    rules = rules_from(
        {"TZT_BOOKING_NO_SHOW_LIMIT": "5", "TZT_BOOKING_RESTRICTION_DAYS": "7", "PATH": "/bin"}
    )
    assert (rules.no_show_limit, rules.restriction_days) == (5, 7)
    assert rules.hold_seconds == BookingRules().hold_seconds
    assert rules_from({}) == BookingRules()


@pytest.mark.parametrize("value", ["three", "0", "-2"])
def test_a_rule_that_is_not_a_positive_number_stops_the_start(value: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="no_show_limit"):
        rules_from({"TZT_BOOKING_NO_SHOW_LIMIT": value})
