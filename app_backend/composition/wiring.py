"""Starts the platform: the shared infrastructure once per process, then every domain's services in module order.

`Services` is the started whole as the CLI, the demo seed and the tests see it (each domain's services by name);
the server itself hands each domain's services to controllers through the module's dependencies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import ConnectionPool, Redis

from app_backend.audit.service import AuditTrail
from app_backend.enterprises.registry import LegalEntityRegistry
from app_backend.enterprises.service import EnterpriseService, EnterpriseServices
from app_backend.identity.registry import DevLivenessProvider, LivenessProvider, PopulationRegistry
from app_backend.identity.service import AuthService, IdentityServices, OtpService, ResidentService
from app_backend.identity.sms import DevOutboxSender
from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import create_pool
from app_backend.kernel.module import DomainModule, Platform
from app_backend.kernel.redis_batch import BatchRunner
from app_backend.kernel.settings import Settings
from app_backend.organisations.service import MachineAuth, OrganisationService, OrganisationServices
from code_service.container import CodeServices
from payments.container import PaymentServices


def create_redis(url: str, max_connections: int, timeout: float = 1.0) -> Redis:
    """Short timeouts everywhere: a Redis that stops answering must cost a request a second at most, after which
    the breaker keeps the hot paths away from it (app_backend/kernel/breaker.py).

    A plain pool, not a blocking one: waiting for a free connection costs every command a lock and a timer (a
    tenth of redis-py's time on the hot paths, profiled). `max_connections` is set above the requests a worker
    admits (TZT_MAX_IN_FLIGHT), and a request holds one connection at a time, so it is never reached."""
    pool = ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return Redis(connection_pool=pool)


def start_order(modules: Sequence[DomainModule]) -> list[DomainModule]:
    """The list's order, except that a module starts after the modules it `requires`."""
    by_name = {m.name: m for m in modules}
    ordered: list[DomainModule] = []

    def visit(module: DomainModule, path: tuple[str, ...]) -> None:
        if module in ordered:
            return
        if module.name in path:
            raise RuntimeError(f"modules require each other in a circle: {' -> '.join((*path, module.name))}")
        for name in module.requires:
            if name not in by_name:
                raise RuntimeError(f"module {module.name} requires {name}, which is not in the module list")
            visit(by_name[name], (*path, module.name))
        ordered.append(module)

    for module in modules:
        visit(module, ())
    return ordered


async def start_platform(settings: Settings, modules: Sequence[DomainModule]) -> Platform:
    redis = create_redis(
        settings.redis_url, max_connections=settings.max_in_flight + 64, timeout=settings.redis_timeout
    )
    platform = Platform(
        settings=settings,
        pool=await create_pool(settings.database_url),
        side_pool=await create_pool(settings.database_url, min_size=1, max_size=4),
        redis=redis,
        batches=BatchRunner(redis),
        breaker=RedisBreaker(),
        cipher=FieldCipher(settings.data_key, settings.index_key),
    )
    from app_backend.composition.migrator import append_only_tables
    from app_backend.composition.roles import check_server_role

    await check_server_role(platform.pool, settings.is_dev, append_only_tables(modules))
    for module in start_order(modules):
        platform.services[module.name] = await module.start(platform)
    return platform


async def stop_platform(platform: Platform, modules: Sequence[DomainModule]) -> None:
    for module in reversed(start_order(modules)):
        if module.name in platform.services:
            await module.close(platform.services.pop(module.name))
    await platform.batches.close()
    await platform.redis.aclose()
    await platform.pool.close()
    await platform.side_pool.close()


@dataclass
class Services:
    """The started platform, each domain's services by name (for the CLI, the demo seed and the tests)."""

    platform: Platform
    modules: Sequence[DomainModule]

    @classmethod
    async def create(cls, settings: Settings, modules: Sequence[DomainModule] | None = None) -> Services:
        if modules is None:
            from app_backend.composition.modules import MODULES

            modules = MODULES
        return cls(await start_platform(settings, modules), modules)

    def install(self, state: Any) -> None:
        """Puts the platform and every module's services in the app state, each under its module's name: the
        modules' dependencies and code_service's hot handlers read them there."""
        state.platform = self.platform
        state.settings = self.platform.settings
        state.pool = self.platform.pool
        state.services = self
        for name, started in self.platform.services.items():
            setattr(state, name, started)

    async def close(self) -> None:
        await stop_platform(self.platform, self.modules)

    # -- the shared infrastructure ----------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.platform.settings

    @property
    def pool(self) -> Any:
        return self.platform.pool

    @property
    def side_pool(self) -> Any:
        return self.platform.side_pool

    @property
    def redis(self) -> Redis:
        return self.platform.redis

    @property
    def redis_batches(self) -> BatchRunner:
        return self.platform.batches

    @property
    def redis_health(self) -> RedisBreaker:
        return self.platform.breaker

    @property
    def cipher(self) -> FieldCipher:
        return self.platform.cipher

    # -- the domains ------------------------------------------------------------------------------------------
    @property
    def audit(self) -> AuditTrail:
        return self.platform.get(AuditTrail)

    @property
    def identity(self) -> IdentityServices:
        return self.platform.get(IdentityServices)

    @property
    def otp(self) -> OtpService:
        return self.identity.otp

    @property
    def auth(self) -> AuthService:
        return self.identity.auth

    @property
    def residents(self) -> ResidentService:
        return self.identity.residents

    @property
    def population_registry(self) -> PopulationRegistry:
        return self.identity.population_registry

    @property
    def dev_outbox(self) -> DevOutboxSender:
        assert self.identity.dev_outbox is not None, "dev and test only"
        return self.identity.dev_outbox

    @property
    def dev_liveness(self) -> DevLivenessProvider:
        assert self.identity.dev_liveness is not None, "dev and test only"
        return self.identity.dev_liveness

    @property
    def liveness(self) -> LivenessProvider:
        return self.identity.liveness

    @property
    def enterprises(self) -> EnterpriseService:
        return self.platform.get(EnterpriseServices).enterprises

    @property
    def legal_entities(self) -> LegalEntityRegistry:
        return self.platform.get(EnterpriseServices).legal_entities

    @property
    def organisations(self) -> OrganisationService:
        return self.platform.get(OrganisationServices).organisations

    @property
    def machine_auth(self) -> MachineAuth:
        return self.platform.get(OrganisationServices).machine_auth

    @property
    def codes(self) -> CodeServices:
        return self.platform.get(CodeServices)

    @property
    def payments(self) -> PaymentServices:
        return self.platform.get(PaymentServices)
