"""The composition root's object graph: one of each service, built once per process from settings."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import ConnectionPool, Redis

from app_backend.audit.service import AuditTrail
from app_backend.composition.dependencies import provide_display_holder, provide_verifier
from app_backend.directory import IdentityDirectory, OrganisationPayees
from app_backend.enterprises.registry import DevLegalEntityRegistry, LegalEntityRegistry
from app_backend.enterprises.service import EnterpriseService
from app_backend.identity.registry import DevLivenessProvider, DevPopulationRegistry, PopulationRegistry
from app_backend.identity.service import AuthService, OtpService, ResidentService
from app_backend.identity.sms import DevOutboxSender
from app_backend.identity.tokens import AccessTokens, RefreshTokens
from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.db import create_pool
from app_backend.kernel.redis_batch import BatchRunner
from app_backend.kernel.settings import Settings
from app_backend.organisations.service import MachineAuth, OrganisationService
from app_backend.transit_ports import GateDebtors, GateTaps
from code_service.container import CodeServices
from payments.channels.base import PaymentChannel
from payments.container import PaymentServices
from payments.ports import PaymentSettings, TransitPorts
from payments.transit.service import RideEligibility


def payment_channels(settings: Settings) -> dict[str, PaymentChannel]:
    """The configured channels: the local sandboxes in dev (started by `tzt serve`), the real gateways in
    production. A channel without configuration is simply absent (orders for it get a 400)."""
    from app_backend.composition.payment_channels import build_channels

    return build_channels(settings)


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


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    # Short autonomous statements (failure audits, credential lookups) run here, never on the request pool, so a
    # request that holds a connection never waits for a second one from the same pool.
    side_pool: asyncpg.Pool
    redis: Redis
    # The hot paths' Redis commands (checks, facts, claims): one shared connection per process.
    redis_batches: BatchRunner
    redis_health: RedisBreaker
    cipher: FieldCipher
    audit: AuditTrail
    otp: OtpService
    auth: AuthService
    residents: ResidentService
    population_registry: PopulationRegistry
    legal_entities: LegalEntityRegistry
    enterprises: EnterpriseService
    organisations: OrganisationService
    machine_auth: MachineAuth
    dev_outbox: DevOutboxSender
    dev_liveness: DevLivenessProvider
    codes: CodeServices
    payments: PaymentServices

    @property
    def liveness(self) -> DevLivenessProvider:
        return self.dev_liveness

    @classmethod
    async def create(cls, settings: Settings) -> Services:
        if not settings.is_dev and (settings.sms_backend == "dev" or settings.registry_backend == "dev"):
            raise RuntimeError(
                "production needs real SMS and registry connectors (TZT_SMS_BACKEND, "
                "TZT_REGISTRY_BACKEND); the dev ones are for dev and test only"
            )
        pool = await create_pool(settings.database_url)
        side_pool = await create_pool(settings.database_url, min_size=1, max_size=4)
        redis = create_redis(
            settings.redis_url, max_connections=settings.max_in_flight + 64, timeout=settings.redis_timeout
        )
        breaker = RedisBreaker()
        batches = BatchRunner(redis)
        cipher = FieldCipher(settings.data_key, settings.index_key)
        audit = AuditTrail(side_pool)
        outbox = DevOutboxSender(redis)
        liveness = DevLivenessProvider(redis, settings.liveness_secret)
        population = DevPopulationRegistry(cipher)
        otp = OtpService(redis, settings, outbox, cipher)
        access = AccessTokens(
            {settings.jwt_kid: settings.jwt_secret}, settings.jwt_kid, settings.access_token_ttl
        )
        auth = AuthService(
            redis,
            settings,
            cipher,
            access,
            RefreshTokens(settings.token_pepper),
            audit,
            otp,
            breaker,
            batches,
        )
        legal = DevLegalEntityRegistry(cipher)
        codes = CodeServices.create(
            pool,
            redis,
            cipher,
            IdentityDirectory(cipher, settings),
            RideEligibility(),
            breaker,
            rider_secret=hmac.new(settings.token_pepper, b"rider-token", hashlib.sha256).digest(),
            batches=batches,
        )
        gate_taps = GateTaps()
        return cls(
            settings=settings,
            pool=pool,
            side_pool=side_pool,
            redis=redis,
            redis_batches=batches,
            redis_health=breaker,
            cipher=cipher,
            audit=audit,
            otp=otp,
            auth=auth,
            residents=ResidentService(redis, settings, cipher, audit, population, liveness),
            population_registry=population,
            legal_entities=legal,
            enterprises=EnterpriseService(settings, cipher, audit, legal),
            organisations=OrganisationService(cipher, audit),
            machine_auth=MachineAuth(
                redis,
                cipher,
                settings.signature_window,
                breaker,
                settings.rate_organisation_per_second,
                batches,
            ),
            dev_outbox=outbox,
            dev_liveness=liveness,
            codes=codes,
            payments=PaymentServices.create(
                pool,
                payment_channels(settings),
                OrganisationPayees(),
                PaymentSettings(
                    notify_base_url=settings.public_base_url, allow_local_webhooks=settings.is_dev
                ),
                cipher,
                TransitPorts(
                    taps=gate_taps,
                    riders=gate_taps,
                    debtors=GateDebtors(codes.deny),
                    eligibility_changed=codes.facts.invalidate_resident,
                ),
            ),
        )

    def install(self, state: Any) -> None:
        """Puts the services in the app state: all of them for the dependencies, and code_service's, with how
        to resolve their callers, for its hot handlers (code_service.ports: codes_from, display_holder_of,
        signed_verifier_of)."""
        state.services = self
        state.settings = self.settings
        state.pool = self.pool
        state.codes = self.codes
        state.display_holder_of = functools.partial(provide_display_holder, services=self)
        state.signed_verifier_of = functools.partial(provide_verifier, services=self)

    async def close(self) -> None:
        await self.codes.close()
        await self.redis_batches.close()
        await self.redis.aclose()
        await self.pool.close()
        await self.side_pool.close()
