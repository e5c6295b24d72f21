"""The fair queue in front of a sale and the cheap sold-out gate in front of PostgreSQL, both in Redis.

The queue gives every resident who joins a session's queue a slot, in arrival order: the first to join before the
opening gets the opening, each later one the slot before it plus 60 / rate seconds, and one who joins after the
slots have caught up with the clock gets the present moment (nobody waits, admitted at once). A resident whose slot
has come is admitted: the answer carries a pass, a MAC over (session, resident, expiry) under the platform's index
key, which the hold endpoint checks while the queue is on. The slots are computed, not pushed by a job, so
admission needs no worker and survives every server worker restarting.

The gate is a short-lived "sold out" mark per ticket class, set when PostgreSQL refused a hold for want of
tickets and dropped when tickets come back (a hold released, a ticket returned). It only ever answers "sold
out" sooner: PostgreSQL stays the truth, so a lost or stale mark can cost at most its lifetime of refusals, never a
ticket sold twice (docs/decisions/0028-ticket-sales.md)."""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import uuid

import msgspec
import redis.exceptions
import structlog
from redis.asyncio import Redis

from app_backend.kernel.breaker import REDIS_UNAVAILABLE, RedisBreaker
from app_backend.kernel.crypto import FieldCipher
from app_backend.kernel.redis_batch import BatchRunner, CallerChecks

_log = structlog.get_logger("tickets")
_UNAVAILABLE: tuple[type[BaseException], ...] = (*REDIS_UNAVAILABLE, redis.exceptions.RedisError)
SOLD_OUT_SECONDS = 3
PASS_SECONDS = 600
QUEUE_KEEP_SECONDS = 3 * 24 * 3600
MICRO = 1_000_000

# KEYS: the queue (member -> slot, µs since the epoch), the last slot given. ARGV: member, now, opening, step (µs),
# the keys' lifetime (s). Answers (slot, how many wait with a slot after now and not after this one).
_JOIN = """
local slot = redis.call('ZSCORE', KEYS[1], ARGV[1])
local now = tonumber(ARGV[2])
if not slot then
  if ARGV[6] == '0' then return {'', 0} end
  local last = redis.call('GET', KEYS[2])
  local opens = tonumber(ARGV[3])
  if last then
    slot = math.max(now, opens, tonumber(last) + tonumber(ARGV[4]))
  else
    slot = math.max(now, opens)
  end
  redis.call('SET', KEYS[2], string.format('%.0f', slot), 'EX', ARGV[5])
  redis.call('ZADD', KEYS[1], slot, ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
else
  slot = tonumber(slot)
end
local waiting = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[2], string.format('%.0f', slot))
return {string.format('%.0f', slot), waiting}
"""


class Place(msgspec.Struct, frozen=True):
    slot: dt.datetime
    position: int  # 0: admitted


class _PassBody(msgspec.Struct, frozen=True, array_like=True):
    session: str
    resident: str
    expires: int


def _micros(at: dt.datetime) -> int:
    return int(at.timestamp() * MICRO)


class Queue:
    def __init__(
        self, redis: Redis, cipher: FieldCipher, batches: BatchRunner, breaker: RedisBreaker
    ) -> None:
        self._redis = redis
        self._cipher = cipher
        self._batches = batches
        self._breaker = breaker
        self._join = redis.register_script(_JOIN)

    async def place(
        self,
        session_id: uuid.UUID,
        resident_id: uuid.UUID,
        opens_at: dt.datetime,
        per_minute: int,
        now: dt.datetime,
        *,
        join: bool,
    ) -> Place | None:
        """The resident's place (joining when `join`), None when they have not joined."""
        tag = f"tickets:queue:{{{session_id}}}"
        step = 60 * MICRO // max(per_minute, 1)
        slot, waiting = await self._join(
            keys=[tag, tag + ":last"],
            args=[
                str(resident_id),
                _micros(now),
                _micros(opens_at),
                step,
                QUEUE_KEEP_SECONDS,
                "1" if join else "0",
            ],
        )
        if not slot:
            return None
        at = dt.datetime.fromtimestamp(int(slot) / MICRO, dt.UTC)
        return Place(slot=at, position=0 if at <= now else int(waiting))

    # -- the pass ------------------------------------------------------------------------------------------------

    def _mac(self, body: bytes) -> bytes:
        return self._cipher.lookup_hash("tickets.queue_pass", body.decode())[:16]

    def issue_pass(
        self, session_id: uuid.UUID, resident_id: uuid.UUID, now: dt.datetime
    ) -> tuple[str, dt.datetime]:
        expires = int(now.timestamp()) + PASS_SECONDS
        body = msgspec.json.encode(_PassBody(str(session_id), str(resident_id), expires))
        token = f"{expires}.{base64.urlsafe_b64encode(self._mac(body)).decode().rstrip('=')}"
        return token, dt.datetime.fromtimestamp(expires, dt.UTC)

    def pass_ok(
        self, token: str | None, session_id: uuid.UUID, resident_id: uuid.UUID, now: dt.datetime
    ) -> bool:
        if not token or "." not in token:
            return False
        raw_expires, mac = token.split(".", 1)
        if not raw_expires.isascii() or not raw_expires.isdigit() or len(raw_expires) > 12:
            return False
        expires = int(raw_expires)
        if expires <= now.timestamp():
            return False
        body = msgspec.json.encode(_PassBody(str(session_id), str(resident_id), expires))
        wanted = base64.urlsafe_b64encode(self._mac(body)).decode().rstrip("=")
        return hmac.compare_digest(wanted.encode(), mac.encode("utf-8", "replace"))

    # -- the sold-out gate ---------------------------------------------------------------------------------------

    async def sold_out(self, class_id: uuid.UUID) -> bool:
        """Whether a hold on the class may be refused without asking PostgreSQL. Redis unreachable: no (ask)."""
        batch = (
            self._batches.batch()
        )  # the shared connection: a fraction of redis-py's client CPU per command
        batch.exists(f"tickets:sold-out:{class_id}")
        try:
            (found,) = await batch.execute()
        except _UNAVAILABLE:
            return False
        return bool(found)

    async def checked_and_sold_out(self, checks: CallerChecks, class_id: uuid.UUID) -> bool:
        """The caller's Redis checks (session, rate) and the gate in one round trip (the hold is a hot path: decision
        0001). Redis unavailable: the caller's checks decide locally (a resident's: 503)."""
        if self._breaker.allow():
            batch = self._batches.batch()
            count = checks.queue(batch)
            batch.exists(f"tickets:sold-out:{class_id}")
            try:
                results = await batch.execute()
            except self._breaker.unavailable as exc:
                self._breaker.failed(exc)
            else:
                self._breaker.succeeded()
                checks.settle(results[:count])
                return bool(results[count])
        checks.settle_locally()
        return False

    async def mark_sold_out(self, class_id: uuid.UUID) -> None:
        try:
            await self._redis.set(f"tickets:sold-out:{class_id}", b"1", ex=SOLD_OUT_SECONDS)
        except redis.exceptions.RedisError:
            _log.warning("sold-out mark not set", class_id=str(class_id))

    async def tickets_back(self, class_id: uuid.UUID) -> None:
        try:
            await self._redis.delete(f"tickets:sold-out:{class_id}")
        except redis.exceptions.RedisError:
            _log.warning("sold-out mark not dropped (it expires by itself)", class_id=str(class_id))
