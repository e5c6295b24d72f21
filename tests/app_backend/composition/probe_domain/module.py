"""A domain made for the test of the module list: one package and one module object, nothing else touched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import Provide
from saq import CronJob

from app_backend.kernel.db import Connection
from app_backend.kernel.module import DomainModule, Platform
from tests.app_backend.composition.probe_domain.repository import PingRepository


@dataclass
class ProbeService:
    started_with: str

    async def pings(self, conn: Connection) -> int:
        return await PingRepository().record(conn)


class Pong(Controller):
    path = "/api/v1/probe"

    @get("")
    async def pong(self, probe: ProbeService, db: Connection) -> dict[str, object]:
        return {"started_with": probe.started_with, "pings": await probe.pings(db)}


async def start(platform: Platform) -> ProbeService:
    return ProbeService(started_with=platform.settings.env)


def provide_probe(state: State) -> ProbeService:
    probe: ProbeService = state.probe
    return probe


async def count_pings(ctx: dict[str, Any]) -> int:
    return 0


module = DomainModule(
    name="probe",
    start=start,
    routes=[Pong],
    dependencies={"probe": Provide(provide_probe, sync_to_thread=False)},
    signature_types=[ProbeService],
    jobs=[count_pings],
    cron=[CronJob(count_pings, cron="*/5 * * * *")],
    migrations="tests.app_backend.composition.probe_domain",
)
