"""Issue 5: a code display costs at most one round trip to PostgreSQL, none when cached.

What goes over the wire is counted by a TCP proxy in front of PostgreSQL that decodes what the clients send
(frontend protocol v3): a second app (same settings, same Redis) has its pools connected through it. A round trip
is a simple query ('Q') or an extended-protocol batch up to its Sync ('S'), the points where asyncpg waits for the
server. The facts the one statement returns are checked against the ports it replaces (the old multi-query path).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import msgspec
import pytest

from app_backend.composition.app import create_app
from app_backend.composition.modules import MODULES
from app_backend.composition.wiring import Services
from app_backend.enterprises.service import EnterpriseServices
from app_backend.kernel.errors import DomainError
from app_backend.kernel.settings import Settings
from code_service.auth import Holder
from code_service.codes.repository import RESIDENT_FACTS, StatusRepository, SubjectRepository
from code_service.codes.schemas import SubjectFacts
from code_service.codes.service import facts_key, subject_key
from tests.conftest import ApiClient
from tests.helpers import (
    bearer,
    enterprise_of,
    feed_health,
    feed_insurance,
    login,
    machine_credential,
    real_named,
    rider,
    set_resident_status,
    set_transit,
)

PERSONAL = "/api/v1/codes/personal"
_SSL_REQUEST, _GSS_REQUEST, _PROTOCOL_3 = 80877103, 80877104, 196608


@dataclass
class RoundTrip:
    connection: int
    kind: str  # "query" (simple protocol) | "extended" (Parse/Bind/Execute… up to Sync)
    sql: list[str] = field(default_factory=list)  # the query, or the statements prepared or executed
    prepares: int = 0
    executes: int = 0

    def is_pool_reset(self) -> bool:
        # asyncpg's default reset on release (one simple query); our pool skips it (app_backend/kernel/db.py).
        return self.kind == "query" and self.sql[0].startswith("SELECT pg_advisory_unlock_all()")


class Wire:
    """A TCP proxy to PostgreSQL recording every round trip its clients make."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self.trips: list[RoundTrip] = []
        self._names: dict[tuple[int, str], str] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self._url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port", "sslmode")]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode([*query, ("sslmode", "disable")])))

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def clear(self) -> None:
        self.trips = []

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self._url)
        params = dict(parse_qsl(parts.query))
        host = params.get("host") or parts.hostname or "localhost"
        port = int(params.get("port") or parts.port or 5432)
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await self._upstream()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        down = asyncio.create_task(downstream())
        self._tasks.add(down)
        connection, buffer, started = next(self._ids), b"", False
        batch = RoundTrip(connection, "extended")
        try:
            while data := await reader.read(65536):
                buffer += data
                while True:
                    if not started:  # untyped start-up messages: length, code
                        if len(buffer) < 8 or len(buffer) < struct.unpack("!i", buffer[:4])[0]:
                            break
                        length, code = struct.unpack("!ii", buffer[:8])
                        message, buffer = buffer[:length], buffer[length:]
                        if code in (_SSL_REQUEST, _GSS_REQUEST):
                            writer.write(b"N")  # plain text, so that the proxy can read it
                            continue
                        started = code == _PROTOCOL_3
                        up_writer.write(message)
                        continue
                    if len(buffer) < 5 or len(buffer) < 1 + struct.unpack("!i", buffer[1:5])[0]:
                        break
                    length = struct.unpack("!i", buffer[1:5])[0]
                    kind, body, message = buffer[:1], buffer[5 : 1 + length], buffer[: 1 + length]
                    buffer = buffer[1 + length :]
                    batch = self._note(connection, kind, body, batch)
                    up_writer.write(message)
                await up_writer.drain()
        finally:
            up_writer.close()
            writer.close()

    def _note(self, connection: int, kind: bytes, body: bytes, batch: RoundTrip) -> RoundTrip:
        if kind == b"Q":
            self.trips.append(RoundTrip(connection, "query", [body.rstrip(b"\0").decode()]))
        elif kind == b"P":
            name, sql = body.split(b"\0")[:2]
            self._names[(connection, name.decode())] = sql.decode()
            batch.sql.append(sql.decode())
            batch.prepares += 1
        elif kind == b"B":
            statement = body.split(b"\0")[1].decode()
            batch.sql.append(self._names.get((connection, statement), f"<statement {statement}>"))
        elif kind == b"E":
            batch.executes += 1
        elif kind in (b"S", b"H"):  # Sync, Flush: the client waits for the server
            self.trips.append(batch)
            return RoundTrip(connection, "extended")
        return batch


@pytest.fixture(scope="module")
async def wired(settings: Settings) -> AsyncIterator[tuple[Wire, ApiClient, Services]]:
    """A second app whose PostgreSQL traffic all goes through the counting proxy."""
    wire = Wire(settings.database_url)
    proxied = msgspec.structs.replace(settings, database_url=await wire.start())
    app = create_app(proxied)
    services = await Services.create(proxied)
    services.install(app.state)
    try:
        transport = httpx.ASGITransport(app=app, client=("testclient", 50001))
        async with ApiClient(transport=transport, base_url="http://testserver.local") as api:
            api.app = app
            yield wire, api, services
    finally:
        await services.close()
        await services.side_pool.close()
        await wire.stop()


def _statements(trips: list[RoundTrip]) -> list[RoundTrip]:
    return [t for t in trips if not t.is_pool_reset()]


async def _display(wire: Wire, api: ApiClient, services: Services, person: dict[str, Any]) -> list[RoundTrip]:
    # The signing-key and scene-key caches (30 s) are made fresh first: their refresh is not the display's
    # (docs/performance.md).
    await services.codes.keys.signer()
    await services.codes.scene_keys.current()
    wire.clear()
    shown = await api.post(PERSONAL, headers=bearer(person))
    assert shown.status_code == 200, shown.text
    return list(wire.trips)


async def test_a_cold_display_is_one_statement_and_a_warm_one_none(
    wired: tuple[Wire, ApiClient, Services], client: ApiClient, services: Services
) -> None:
    wire, api, proxied = wired
    # The first display on a pooled connection also prepares the statement (asyncpg's statement cache is per
    # connection, so this happens once per connection for its lifetime).
    first = _statements(await _display(wire, api, proxied, await rider(client, services)))
    assert sum(t.prepares for t in first) <= 1 and sum(t.executes for t in first) == 1, first

    person = await rider(client, services)
    resident = uuid.UUID(person["resident_id"])
    assert await proxied.redis.get(subject_key(resident)) is None

    # Cold, first display ever: the subject is created and every fact read by one statement, no BEGIN/COMMIT.
    trips = await _display(wire, api, proxied, person)
    statements = _statements(trips)
    assert len(statements) == 1, trips
    (only,) = statements
    assert only.kind == "extended" and only.executes == 1 and only.prepares == 0, only
    assert "INSERT INTO codes.subjects" in only.sql[0] and RESIDENT_FACTS in only.sql[0]
    # Nothing else crosses the wire: the pool skips asyncpg's reset query on release (app_backend/kernel/db.py).
    resets = [t for t in trips if t.is_pool_reset()]
    assert trips == [only], trips

    # Warm: nothing at all reaches PostgreSQL.
    assert await _display(wire, api, proxied, person) == []

    # Cold again once the facts expired (subject known): still one statement.
    await proxied.redis.delete(facts_key(bytes(await proxied.redis.get(subject_key(resident)))))
    again = _statements(await _display(wire, api, proxied, person))
    assert len(again) == 1 and again[0].executes == 1 and again[0].prepares == 0, again

    print(  # shown with -s: the counts quoted in docs/performance.md
        f"\ncold display: {len(statements)} statement + {len(resets)} pool reset = {len(trips)} round trips; "
        f"first on a connection: {len(first)} round trips + reset; warm: 0"
    )


async def _old_facts(services: Services, conn: Any, subject: bytes, resident_id: uuid.UUID) -> SubjectFacts:
    """FactsService._resident as it was before issue 5: the ports' answers, one query at a time."""
    directory = services.identity.directory
    active = await directory.resident_active(conn, resident_id)
    person_key = await directory.person_key_of(conn, resident_id)
    health, insured = (
        await StatusRepository().statuses(conn, person_key) if person_key else ("unknown", False)
    )
    may_ride, reason = await services.payments.transit.eligibility.may_ride(conn, resident_id)
    return SubjectFacts(
        subject=subject.hex(),
        kind="resident",
        ref=str(resident_id),
        active=active,
        masked_name=await directory.masked_name(conn, resident_id) or "",
        health=health,
        insured=insured,
        may_ride=may_ride and active,
        ride_reason=reason if active else "account-blocked",
        # identity's real-name level (the row it keeps; 0 for no resident), which scenes' minimum levels read
        level=await conn.fetchval("SELECT level FROM identity.residents WHERE id = $1", resident_id) or 0,
    )


async def _same_facts(services: Services, resident_id: uuid.UUID) -> SubjectFacts:
    """The one-statement reads (by resident, as the display does; by subject, as verify does) equal the old one."""
    async with services.pool.acquire() as conn:
        subject, by_resident = await services.codes.facts.load_resident(conn, resident_id)
        by_subject = await services.codes.facts.load(conn, subject)
        old = await _old_facts(services, conn, subject, resident_id)
    assert by_resident == old, (by_resident, old)
    assert by_subject == old, (by_subject, old)
    return old


async def test_the_one_statement_gives_the_facts_the_ports_gave(
    client: ApiClient, services: Services
) -> None:
    department = await machine_credential(
        client, services, ["feeds:health", "feeds:insurance"], kind="department"
    )
    seen: set[tuple[Any, ...]] = set()

    # Every transit state (agreement, debt, block and their precedence) with a real-named resident who has a
    # health colour and insurance.
    person = await real_named(client, services, name="欧阳修竹")
    resident = uuid.UUID(person["resident_id"])
    await feed_health(client, department, person["id_number"], "yellow")
    await feed_insurance(client, department, person["id_number"], True)
    for agreement, debt, blocked in itertools.product((True, False), repeat=3):
        await set_transit(services, resident, has_agreement=agreement, in_debt=debt, blocked=blocked)
        facts = await _same_facts(services, resident)
        seen.add((facts.may_ride, facts.ride_reason))
        assert facts.health == "yellow" and facts.insured and facts.masked_name.startswith("欧")
    assert {r for _, r in seen} == {"", "no-agreement", "in-debt", "blocked"}

    # Statuses: red and uninsured (a fed "false"), then green.
    await feed_health(client, department, person["id_number"], "red")
    await feed_insurance(client, department, person["id_number"], False)
    assert (await _same_facts(services, resident)).health == "red"
    await feed_health(client, department, person["id_number"], "green")
    assert (await _same_facts(services, resident)).health == "green"

    # Real-named with no status fed at all; a rider with an agreement and nothing else.
    plain = await rider(client, services)
    facts = await _same_facts(services, uuid.UUID(plain["resident_id"]))
    assert (facts.health, facts.insured, facts.may_ride) == ("unknown", False, True)

    # Not real-named: no name, no person key.
    anonymous = await login(client)
    facts = await _same_facts(services, uuid.UUID(anonymous["resident_id"]))
    assert (facts.masked_name, facts.health, facts.active) == ("", "unknown", True)

    # A blocked account (with an agreement): inactive, refused a ride as "account-blocked".
    blocked_person = await rider(client, services)
    await set_resident_status(client, services, blocked_person["resident_id"], "blocked")
    facts = await _same_facts(services, uuid.UUID(blocked_person["resident_id"]))
    assert (facts.active, facts.may_ride, facts.ride_reason) == (False, False, "account-blocked")
    with pytest.raises(DomainError):
        await services.codes.issuing.personal_code(Holder(uuid.UUID(blocked_person["resident_id"])))

    # No such resident: inactive, like the ports answered.
    facts = await _same_facts(services, uuid.uuid4())
    assert not facts.active and facts.masked_name == ""

    # An enterprise subject still loads as before (its facts from the Directory).
    _rep, enterprise = await enterprise_of(client, services)
    enterprise_id = uuid.UUID(enterprise["id"])
    async with services.pool.acquire() as conn:
        subject = await SubjectRepository().get_or_create(conn, "enterprise", enterprise_id)
        loaded = await services.codes.facts.load(conn, subject)
        known = await services.platform.get(EnterpriseServices).directory.enterprise(conn, enterprise_id)
    assert known is not None and loaded == SubjectFacts(
        subject=subject.hex(),
        kind="enterprise",
        ref=str(enterprise_id),
        name=known.name,
        uscc=known.uscc,
        standing=known.standing,
    )


async def test_concurrent_first_displays_share_one_subject(services: Services) -> None:
    resident = uuid.uuid4()

    async def first_use() -> bytes:
        async with services.pool.acquire() as conn:
            subject, _facts = await services.codes.facts.load_resident(conn, resident)
            return subject

    subjects = await asyncio.gather(*(first_use() for _ in range(8)))
    async with services.pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT subject FROM codes.subjects WHERE kind = 'resident' AND ref = $1", resident
        )
    assert len(stored) == 1 and set(subjects) == {bytes(stored[0]["subject"])}


async def test_a_first_display_racing_another_gets_the_winners_subject(services: Services) -> None:
    """The statement's snapshot cannot see a subject committed while it waits on the conflict: DO UPDATE still
    returns it (DO NOTHING would return none)."""
    resident = uuid.uuid4()
    async with services.pool.acquire() as a, services.pool.acquire() as b, services.pool.acquire() as watch:
        tx = a.transaction()
        await tx.start()
        winner = await SubjectRepository().get_or_create(a, "resident", resident)
        racing = asyncio.create_task(services.codes.facts.load_resident(b, resident))
        for _ in range(200):  # until b's statement waits on a's uncommitted row
            waiting = await watch.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", b.get_server_pid()
            )
            if waiting == "Lock":
                break
            await asyncio.sleep(0.01)
        assert waiting == "Lock" and not racing.done()
        await tx.commit()
        subject, facts = await racing
    assert subject == winner and facts.subject == winner.hex()


async def test_the_port_function_is_created_after_the_tables_it_reads(services: Services) -> None:
    order = [module.name for module in MODULES]
    assert order.index("codes") > max(order.index("identity"), order.index("payments"))
    async with services.pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT * FROM {RESIDENT_FACTS}($1)", uuid.uuid4())
        # PostgreSQL knows what it reads: dropping a column it uses is refused.
        reads = await conn.fetch(
            """SELECT DISTINCT c.relnamespace::regnamespace::text || '.' || c.relname AS tbl
               FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid
               WHERE d.objid = $1::regprocedure AND d.classid = 'pg_proc'::regclass""",
            f"{RESIDENT_FACTS}(uuid)",
        )
    assert list(row.keys()) == ["active", "name_enc", "person_key", "may_ride", "ride_reason", "level"]
    assert dict(row) == {
        "active": False,
        "name_enc": None,
        "person_key": None,
        "may_ride": False,
        "ride_reason": "no-agreement",
        "level": 0,
    }
    assert {r["tbl"] for r in reads} >= {
        "identity.residents",
        "payments.transit_agreements",
        "payments.transit_blocks",
        "payments.transit_deductions",
    }
