"""Venue booking's jobs: holds that ran out (their orders closed at the channel first), refunds due (cancelled
slots, late payments, cancels whose refund went unanswered), and no-shows after each slot ends."""

from __future__ import annotations

from typing import Any

from app_backend.bookings.service import BookingService


async def expire_booking_holds(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(BookingService).expire_holds(platform.pool)


async def refund_cancelled_bookings(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(BookingService).refund_due(platform.pool)


async def mark_booking_no_shows(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(BookingService).mark_no_shows(platform.pool)
