"""Venue booking as the composition sees it."""

from __future__ import annotations

import os

import msgspec
from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.bookings.controllers import (
    BookingController,
    VenueBookingManageController,
    VenueSlotsController,
)
from app_backend.bookings.schemas import BookingRules
from app_backend.bookings.service import BookingService
from app_backend.bookings.tasks import expire_booking_holds, mark_booking_no_shows, refund_cancelled_bookings
from app_backend.events.service import EventsService
from app_backend.identity.service import IdentityServices
from app_backend.kernel.module import DomainModule, Platform
from app_backend.notifications.service import NotificationService
from code_service.container import CodeServices
from payments.container import PaymentServices

RULES_PREFIX = "TZT_BOOKING_"


def rules_from(environ: dict[str, str]) -> BookingRules:
    """The booking rules, each overridable as TZT_BOOKING_<NAME> (TZT_BOOKING_NO_SHOW_LIMIT=3, ...)."""
    given = {
        name: environ[RULES_PREFIX + name.upper()]
        for name in BookingRules.__struct_fields__
        if RULES_PREFIX + name.upper() in environ
    }
    return msgspec.convert(given, BookingRules, strict=False)


async def start(platform: Platform) -> BookingService:
    payments = platform.get(PaymentServices)
    bookings = BookingService(
        payments.orders,
        payments.refunds,
        platform.get(IdentityServices).directory,
        platform.get(EventsService).venue_facts,
        rules_from(dict(os.environ)),
        send=platform.get(NotificationService).send_platform,
    )
    bookings.listen()
    # The one code admits booked residents in the event scene (the occasion is the slot).
    platform.get(CodeServices).use_admissions(bookings.admissions)
    return bookings


def provide_bookings(state: State) -> BookingService:
    bookings: BookingService = state.bookings
    return bookings


module = DomainModule(
    name="bookings",
    start=start,
    requires=["identity", "payments", "notifications", "events", "codes"],
    routes=[VenueSlotsController, BookingController, VenueBookingManageController],
    dependencies={"bookings": Provide(provide_bookings, sync_to_thread=False)},
    signature_types=[BookingService],
    jobs=[expire_booking_holds, refund_cancelled_bookings, mark_booking_no_shows],
    # Unique cron jobs: one run of each at a time. Each moves bookings by compare-and-set, so even two runs at once
    # would close, refund or mark once.
    cron=[
        CronJob(expire_booking_holds, cron="* * * * *", timeout=120),
        CronJob(refund_cancelled_bookings, cron="* * * * *", timeout=300),
        CronJob(mark_booking_no_shows, cron="*/5 * * * *", timeout=300),
    ],
    migrations="app_backend.bookings",
)
