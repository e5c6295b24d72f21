"""A few Redis commands sent as ONE command: a server-side script that runs them in order and returns every reply.

The hot paths (code display, verification) each make one Redis round trip with three to eight commands: the
caller's checks (session or nonce, revocation, rate limit) and the path's own reads and claims. As a redis-py
pipeline that costs about 140 us of client CPU on this machine, most of it per command and per reply (packing,
reading each reply under its own timer); as one EVALSHA it costs about 65 us (`docs/performance.md`). The batch
offers the few pipeline methods those paths use, so `CallerChecks.queue` works with either; unlike a pipeline
it is also atomic, which nothing here relies on."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

if TYPE_CHECKING:
    from code_service.ports import CallerChecks, RedisHealth

# KEYS[i] is the key of the i-th command; ARGV holds, per command, its name and then its own arguments.
_RUN = """
local out = {}
local a = 1
for i, key in ipairs(KEYS) do
  local op = ARGV[a]
  if op == 'get' then
    out[i] = redis.call('GET', key)
    a = a + 1
  elseif op == 'exists' then
    out[i] = redis.call('EXISTS', key)
    a = a + 1
  elseif op == 'incr' then
    out[i] = redis.call('INCR', key)
    a = a + 1
  elseif op == 'expire' then
    out[i] = redis.call('EXPIRE', key, ARGV[a + 1])
    a = a + 2
  elseif op == 'setnx' then
    out[i] = redis.call('SET', key, ARGV[a + 1], 'NX', 'EX', ARGV[a + 2]) and 1 or 0
    a = a + 3
  elseif op == 'set' then
    out[i] = redis.call('SET', key, ARGV[a + 1], 'EX', ARGV[a + 2]) and 1 or 0
    a = a + 3
  else
    return redis.error_reply('unknown batch command ' .. tostring(op))
  end
end
return out
"""


class RedisBatch:
    """Queue commands with the pipeline's method names, then `execute` them in one round trip. Replies come back
    as a pipeline's would, except that SET answers 1 or 0 (True or None from a pipeline)."""

    __slots__ = ("_args", "_keys", "_script")

    def __init__(self, script: Any) -> None:
        self._script = script
        self._keys: list[str] = []
        self._args: list[Any] = []

    def get(self, key: str) -> None:
        self._keys.append(key)
        self._args.append("get")

    def exists(self, key: str) -> None:
        self._keys.append(key)
        self._args.append("exists")

    def incr(self, key: str) -> None:
        self._keys.append(key)
        self._args.append("incr")

    def expire(self, key: str, seconds: int) -> None:
        self._keys.append(key)
        self._args += ("expire", seconds)

    def set(self, key: str, value: Any, *, ex: int, nx: bool = False) -> None:
        self._keys.append(key)
        self._args += ("setnx" if nx else "set", value, ex)

    async def execute(self) -> list[Any]:
        if not self._keys:
            return []
        replies: list[Any] = await self._script(keys=self._keys, args=self._args)
        return replies


class BatchRunner:
    """Makes batches for one Redis client (the script is registered once and sent by its SHA afterwards)."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_RUN)

    def batch(self) -> RedisBatch:
        return RedisBatch(self._script)


async def run_checks(checks: CallerChecks, batches: BatchRunner, health: RedisHealth) -> None:
    """A caller's checks on their own: one round trip, or the local fallback while Redis is unavailable."""
    if health.allow():
        try:
            batch = batches.batch()
            checks.queue(batch)
            results = await batch.execute()
        except health.unavailable as exc:
            health.failed(exc)
        else:
            health.succeeded()
            checks.settle(results)
            return
    checks.settle_locally()


class LocalClaims:
    """What stands in for a Redis `SET NX EX` while Redis is unavailable: single use within this process, for
    `ttl` seconds, in bounded memory (expired claims are dropped first, then the oldest)."""

    def __init__(self, ttl: float, limit: int = 200_000) -> None:
        self._ttl = ttl
        self._limit = limit
        self._until: dict[Any, float] = {}

    def claim(self, key: Any) -> bool:
        now = time.monotonic()
        if self._until.get(key, 0.0) > now:
            return False
        if len(self._until) >= self._limit:
            self._until = {k: t for k, t in self._until.items() if t > now}
            while len(self._until) >= self._limit:
                self._until.pop(next(iter(self._until)))
        self._until[key] = now + self._ttl
        return True
