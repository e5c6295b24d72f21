"""A few Redis commands sent as ONE command: a server-side script that runs them in order and returns every reply.

The hot paths (code display, verification) each make one Redis round trip with three to eight commands: the
caller's checks (session or nonce, revocation, rate limit) and the path's own reads and claims. As a redis-py
pipeline that costs about 140 us of client CPU on this machine, most of it per command and per reply (packing,
reading each reply under its own timer); as one EVALSHA it costs about 65 us (`docs/performance.md`). The batch
offers the few pipeline methods those paths use, so `CallerChecks.queue` works with either; unlike a pipeline
it is also atomic, which nothing here relies on.

The batches of a process travel on one shared connection (`SharedConnection`): redis-py's client spends
130-200 us of CPU per command on the pool, its retry and observability layers and a timer per read and write,
about five times what the same command costs on one of its connections used by many requests at once
(`make bench --only redis`, `docs/performance.md`)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Protocol

import hiredis
import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, DataError, NoScriptError, ResponseError, TimeoutError


class RedisHealth(Protocol):
    """Whether Redis is answering (a circuit breaker the composition root shares between all hot paths).

    Verification asks before each round trip and reports how it went; while Redis is unavailable it answers from
    the code alone (signature, validity, signed entitlements) and flags the answer as degraded."""

    unavailable: tuple[type[BaseException], ...]

    @property
    def recovering(self) -> bool: ...

    def allow(self) -> bool: ...

    def failed(self, error: BaseException | None = None) -> None: ...

    def succeeded(self) -> None: ...


class CallerChecks(Protocol):
    """The Redis checks of a caller (a signed machine's nonce, revoked mark and rate limit; a resident's session
    and rate limit), handed to the handler so that it can fold them into its own batch of commands
    (app_backend.kernel.redis_batch): one round trip per request instead of two. `settle` raises the caller's 401 or
    429; `run` does the checks alone (one round trip, or the local fallback while Redis is unavailable)."""

    def queue(self, batch: Any) -> int:
        """Adds the checks' commands to `batch` (a RedisBatch) and returns how many; their replies come first."""
        ...

    def settle(self, results: list[Any]) -> None: ...

    def settle_locally(self) -> None: ...

    async def recheck(self) -> None:
        """After `settle`, when the breaker was recovering as the batch answered (read before any await): the
        single-use part claimed in PostgreSQL too, where an acceptance during the outage is held until it is
        handed back to Redis."""
        ...

    async def run(self) -> None: ...


_log = structlog.get_logger("redis")

# KEYS[i] is the key of the i-th command; ARGV holds, per command, its name and then its own arguments.
BATCH_SCRIPT = """
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
  elseif op == 'hincrby' then
    out[i] = redis.call('HINCRBY', key, ARGV[a + 1], ARGV[a + 2])
    a = a + 3
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


class SharedConnection:
    """One redis-py connection that every request of the process uses at once: the commands queued in one turn
    of the event loop go out in one write (they pipeline on the socket), one reader hands the replies back in
    order, so many requests share one write and one read. hiredis packs the commands and parses the replies;
    redis-py makes the connection.

    No timer per command: a watchdog looks at the oldest command waiting and, once it has waited `timeout`
    seconds, fails every command waiting with redis-py's TimeoutError and drops the connection (a Redis that
    stopped answering answers none of them). The next command connects again."""

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        self._timeout: float = kwargs.get("socket_timeout") or 1.0
        kwargs["socket_timeout"] = None  # the watchdog times every command instead
        self._connection_class = pool.connection_class
        self._connection_kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._connection: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []
        self._closing: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._reader is None or self._loop is not loop:
            await self._open(loop)
        connection = self._connection
        assert connection is not None
        try:
            # First: an argument that cannot be encoded must not leave a waiter. hiredis packs in C; redis-py's
            # own packing runs its encoder per argument in Python, a third of a batch's client CPU.
            packed = hiredis.pack_command(args)
        except TypeError as exc:
            raise DataError(str(exc)) from None
        answer = loop.create_future()
        # Queued with no await between: replies come back in the order of `_waiting`, which is the order of
        # `_outgoing`. What the requests of one turn of the event loop queue goes out in one write at its end.
        self._waiting.append((answer, loop.time() + self._timeout))
        outgoing = self._outgoing
        if not outgoing:
            loop.call_soon(self._write, connection, outgoing)
        outgoing.append(packed)
        return await answer  # a cancelled caller cancels `answer`; the reader then skips its reply

    def _write(self, connection: AbstractConnection, outgoing: list[bytes]) -> None:
        if self._outgoing is outgoing:
            self._outgoing = []
        writer = connection._writer
        if connection is self._connection and writer is not None:
            # redis-py's own stream writer (send_packed_command adds a drain, a timer and a write per command); a
            # failed write shows as a lost connection to the reader, which fails the commands waiting.
            writer.writelines(outgoing)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            # First use, or a new event loop (a test's): what belonged to the old loop cannot be used here.
            self._loop, self._lock = loop, asyncio.Lock()
            self._connection, self._reader, self._waiting, self._outgoing = None, None, deque(), []
        assert self._lock is not None
        async with self._lock:
            if self._reader is not None:
                return
            connection = self._connection_class(**self._connection_kwargs)
            try:
                async with asyncio.timeout(self._timeout):
                    await connection.connect()
            except BaseException as exc:
                await connection.disconnect(nowait=True)
                if isinstance(exc, asyncio.TimeoutError):
                    raise TimeoutError("Redis did not answer the connection in time") from exc
                raise
            self._connection = connection
            self._reader = loop.create_task(self._read_replies(connection))
            self._watchdog = loop.call_later(self._watch_interval, self._watch)

    @property
    def _watch_interval(self) -> float:
        return min(0.1, self._timeout / 4)

    async def _read_replies(self, connection: AbstractConnection) -> None:
        waiting = self._waiting
        while True:
            failed = False
            try:
                # No timeout of its own (the connection has none): the watchdog times the commands waiting.
                reply = await connection.read_response(disconnect_on_error=False)
            except ResponseError as exc:  # an error reply to one command; the connection is fine
                reply, failed = exc, True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._drop(ConnectionError(f"Redis connection lost: {exc}"))
                return
            if not waiting:
                self._drop(ConnectionError("Redis sent a reply nobody asked for"))
                return
            answer = waiting.popleft()[0]
            if answer.done():
                continue  # its caller gave up (cancelled)
            if failed:
                answer.set_exception(reply)
            else:
                answer.set_result(reply)

    def _watch(self) -> None:
        assert self._loop is not None
        if self._waiting and self._waiting[0][1] < self._loop.time():
            self._drop(TimeoutError(f"Redis did not answer within {self._timeout} s"))
            return
        self._watchdog = self._loop.call_later(self._watch_interval, self._watch)

    def _drop(self, error: Exception, *, closing: bool = False) -> None:
        """Fails every command waiting and lets the connection go; the next command connects again."""
        if not closing and self._connection is not None:
            _log.warning("shared redis connection dropped", error=str(error), waiting=len(self._waiting))
        connection, self._connection = self._connection, None
        reader, self._reader = self._reader, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        waiting, self._waiting = self._waiting, deque()
        self._outgoing = []
        for answer, _ in waiting:
            if not answer.done():
                answer.set_exception(type(error)(*error.args))
        if connection is not None and self._loop is not None:
            disconnecting = self._loop.create_task(connection.disconnect(nowait=True))
            self._closing.add(disconnecting)
            disconnecting.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._loop is asyncio.get_running_loop():
            self._drop(ConnectionError("closed"), closing=True)
            if self._closing:
                await asyncio.gather(*self._closing, return_exceptions=True)


class RedisBatch:
    """Queue commands with the pipeline's method names, then `execute` them in one round trip. Replies come back
    as a pipeline's would, except that SET answers 1 or 0 (True or None from a pipeline)."""

    __slots__ = ("_args", "_keys", "_runner")

    def __init__(self, runner: BatchRunner) -> None:
        self._runner = runner
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

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self._keys.append(key)
        self._args += ("hincrby", field, amount)

    def expire(self, key: str, seconds: int) -> None:
        self._keys.append(key)
        self._args += ("expire", seconds)

    def set(self, key: str, value: Any, *, ex: int, nx: bool = False) -> None:
        self._keys.append(key)
        self._args += ("setnx" if nx else "set", value, ex)

    async def execute(self) -> list[Any]:
        if not self._keys:
            return []
        return await self._runner.run(self._keys, self._args)


class BatchRunner:
    """Makes batches for one Redis client and runs them on its shared connection (the script is sent by its SHA,
    and loaded again when Redis does not know it: after a restart or a SCRIPT FLUSH)."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(BATCH_SCRIPT)
        self._connection = SharedConnection(redis)

    def batch(self) -> RedisBatch:
        return RedisBatch(self)

    async def run(self, keys: list[str], args: list[Any]) -> list[Any]:
        script = self._script
        try:
            replies: list[Any] = await self._connection.execute(
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except NoScriptError:
            await self._connection.execute("SCRIPT", "LOAD", script.script)
            replies = await self._connection.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        return replies

    async def close(self) -> None:
        await self._connection.close()


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
