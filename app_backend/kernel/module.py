"""How a domain plugs into the platform: one `DomainModule` per domain, listed once by the composition
(app_backend/composition/modules.py). The app factory, the job worker and the migrator loop over that list, so
adding a domain is one package and one line.

A module's `start` receives the `Platform` (settings, pools, Redis, the field cipher, and the services of the
domains started before it) and returns the domain's services object, which controllers receive through the
module's dependencies and jobs through `Platform.get`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from redis.asyncio import Redis

from app_backend.kernel.breaker import RedisBreaker
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.redis_batch import BatchRunner
from app_backend.kernel.settings import Settings

T = TypeVar("T")


@dataclass
class Platform:
    """What every domain shares, built once per process by the composition."""

    settings: Settings
    pool: asyncpg.Pool
    # Short autonomous statements (failure audits, credential lookups) run here, never on the request pool, so a
    # request that holds a connection never waits for a second one from the same pool.
    side_pool: asyncpg.Pool
    redis: Redis
    # The hot paths' Redis commands (checks, facts, claims): one shared connection per process.
    batches: BatchRunner
    breaker: RedisBreaker
    cipher: FieldCipher
    services: dict[str, object] = field(default_factory=dict)

    def get(self, kind: type[T]) -> T:
        """The started services object of the given type (a domain's public services)."""
        for started in self.services.values():
            if isinstance(started, kind):
                return started
        raise LookupError(f"{kind.__name__} is not started: list its module before the modules that use it")


Start = Callable[[Platform], Awaitable[Any]]
Close = Callable[[Any], Awaitable[None]]


async def _nothing_to_close(services: Any) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class DomainModule:
    """A domain as the composition sees it."""

    name: str
    start: Start
    close: Close = _nothing_to_close
    # Modules whose services `start` uses (Platform.get): started first whatever the list order, which is the
    # order of migrations (a module's SQL may read the tables of the modules listed before it).
    requires: Sequence[str] = ()
    # Controllers and route handlers; `dev_routes` are mounted only in dev and test.
    routes: Sequence[Any] = ()
    dev_routes: Sequence[Any] = ()
    # Litestar dependencies the domain offers to every controller (its services, its principals).
    dependencies: Mapping[str, Any] = field(default_factory=dict)
    # Names the OpenAPI generator must resolve in handler signatures (types imported under TYPE_CHECKING).
    signature_types: Sequence[type] = ()
    # SAQ job functions, and the cron jobs among them (saq.CronJob).
    jobs: Sequence[Callable[..., Awaitable[Any]]] = ()
    cron: Sequence[Any] = ()
    # The package whose `migrations/` folder holds this domain's SQL migrations, applied in module order.
    migrations: str | None = None
    # Tables the server may only read and append to (an audit trail, a ledger): schema-qualified names. The
    # application database role gets SELECT and INSERT on them and nothing else (app_backend/composition/roles.py).
    append_only: Sequence[str] = ()
    # Migrations that ran under another package name before the domain had its own: {our name: (package, name)}.
    migrated_as: Mapping[str, tuple[str, str]] = field(default_factory=dict)
