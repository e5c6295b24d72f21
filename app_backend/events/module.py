"""The events zone's schedule as the composition sees it."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from app_backend.audit.service import AuditTrail
from app_backend.events.controllers import ScheduleController, ScheduleManageController
from app_backend.events.service import EventsService
from app_backend.kernel.module import DomainModule, Platform
from app_backend.organisations.service import OrganisationServices


async def start(platform: Platform) -> EventsService:
    return EventsService(
        platform.get(AuditTrail),
        platform.get(OrganisationServices).organisations,
        platform.redis,
        platform.batches,
        platform.breaker,
    )


def provide_events(state: State) -> EventsService:
    events: EventsService = state.events
    return events


module = DomainModule(
    name="events",
    start=start,
    requires=["audit", "organisations"],
    routes=[ScheduleController, ScheduleManageController],
    dependencies={"events": Provide(provide_events, sync_to_thread=False)},
    signature_types=[EventsService],
    migrations="app_backend.events",
)
