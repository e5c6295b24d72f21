"""All SQL of ticket sales: sales and classes, holds, tickets, the per-person counts and the sessions' changes.
Every change of what is left is one conditional UPDATE of the class row (its CHECK is the last word)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_SALE = """session_id, organiser_id, venue_id, title, opens_at, closes_at, per_person, hold_seconds,
    return_cutoff_minutes, re_entry_minutes, admit_per_minute, starts_at, ends_at, session_status"""
_CLASS = "id, session_id, name, price_fen, section, entrances, quota, sold, held, position"
_HOLD = """id, session_id, class_id, buyer_id, quantity, amount_fen, status, expires_at, order_id, pay, refund_id,
    created_at"""
_TICKET = """t.id, t.hold_id, t.session_id, t.class_id, t.buyer_id, t.attendee_resident_id, t.attendee_name_enc,
    t.attendee_id_enc, t.price_fen, t.seat, t.status, t.admitted_at, t.last_admitted_at, t.admissions,
    t.refund_id, t.created_at, c.name AS class_name, c.section, c.entrances"""


class SaleRow(msgspec.Struct, frozen=True):
    session_id: uuid.UUID
    organiser_id: uuid.UUID
    venue_id: uuid.UUID
    title: str
    opens_at: dt.datetime
    closes_at: dt.datetime
    per_person: int
    hold_seconds: int
    return_cutoff_minutes: int
    re_entry_minutes: int | None
    admit_per_minute: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    session_status: str


class ClassRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    session_id: uuid.UUID
    name: str
    price_fen: int
    section: str
    entrances: list[str]
    quota: int
    sold: int
    held: int
    position: int


class HoldRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    session_id: uuid.UUID
    class_id: uuid.UUID
    buyer_id: uuid.UUID
    quantity: int
    amount_fen: int
    status: str
    expires_at: dt.datetime
    order_id: uuid.UUID | None
    pay: dict[str, object] | None
    refund_id: uuid.UUID | None
    created_at: dt.datetime


class TicketRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    hold_id: uuid.UUID
    session_id: uuid.UUID
    class_id: uuid.UUID
    buyer_id: uuid.UUID
    attendee_resident_id: uuid.UUID | None
    attendee_name_enc: bytes | None
    attendee_id_enc: bytes | None
    price_fen: int
    seat: str | None
    status: str
    admitted_at: dt.datetime | None
    last_admitted_at: dt.datetime | None
    admissions: int
    refund_id: uuid.UUID | None
    created_at: dt.datetime
    class_name: str
    section: str
    entrances: list[str]


class NewTicket(msgspec.Struct, frozen=True):
    attendee_resident_id: uuid.UUID | None
    attendee_name_enc: bytes | None
    attendee_id_enc: bytes | None
    person_key: bytes


class RefundDue(msgspec.Struct, frozen=True):
    """A ticket (or an unfilled hold) whose money goes back: its order, the amount and the order's payee."""

    id: uuid.UUID
    order_id: uuid.UUID
    amount_fen: int
    payee_id: uuid.UUID
    buyer_id: uuid.UUID
    session_id: uuid.UUID
    title: str


class ChangeRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    session_id: uuid.UUID
    kind: str
    starts_at: dt.datetime
    title: str


class HeldRow(msgspec.Struct, frozen=True):
    """A hold just made: the hold, its class, and its tickets' ids with their attendees' keys."""

    id: uuid.UUID
    expires_at: dt.datetime
    amount_fen: int
    class_name: str
    section: str
    price_fen: int
    ticket_ids: list[uuid.UUID]
    ticket_keys: list[bytes]


class PersonLimit(Exception):
    """An attendee of the hold has as many tickets for the session as the sale allows."""


# $1 session, $2 class, $3 buyer, $4 how many, $5 whether the queue let the buyer in, $6..$9 the attendees'
# resident ids, encrypted names, encrypted ID numbers and keys. The sale and class are read without a lock; the
# hold, the attendees' counts (in key order, their CHECK refusing past the limit) and the tickets are written; the
# hot class row is updated last (its subqueries run first), its CHECK refusing past the quota, so the row is
# locked for the end of the statement only. Everyone locks people before classes: no two holds (nor a release or
# a return, which give people back first) wait on each other in a circle. The statement's own transaction commits
# without waiting for the WAL's flush (set_config(..., true): this transaction only), so the class row is free
# again at once; a hold lost to a crash in that instant loses no money (paying it commits synchronously, which
# flushes the WAL before it) and the buyer holds again (decision 0028).
_HOLD_STATEMENT = """
WITH c AS (
    SELECT c.id, c.name, c.section, c.price_fen, s.per_person, s.hold_seconds
    FROM tickets.classes c JOIN tickets.sales s ON s.session_id = c.session_id
    WHERE c.id = $2 AND c.session_id = $1
          AND s.session_status NOT IN ('cancelled', 'finished')
          AND now() >= s.opens_at AND now() < s.closes_at
          AND (s.admit_per_minute = 0 OR $5::boolean) AND $4 <= s.per_person
          AND c.sold + c.held + $4 <= c.quota
), h AS (
    INSERT INTO tickets.holds (session_id, class_id, buyer_id, quantity, amount_fen, expires_at)
    SELECT $1, c.id, $3, $4, c.price_fen * $4, now() + make_interval(secs => c.hold_seconds) FROM c
    RETURNING id, expires_at, amount_fen
), p AS (
    INSERT INTO tickets.person_counts AS p (session_id, person_key, tickets, max_tickets)
    SELECT $1, k, 1, c.per_person FROM c, unnest($9::bytea[]) AS k ORDER BY k
    ON CONFLICT (session_id, person_key) DO UPDATE
        SET tickets = p.tickets + 1, max_tickets = excluded.max_tickets
    RETURNING 1
), t AS (
    INSERT INTO tickets.tickets (hold_id, session_id, class_id, buyer_id, attendee_resident_id, attendee_name_enc,
                                 attendee_id_enc, person_key, price_fen)
    SELECT h.id, $1, c.id, $3, a.resident, a.name_enc, a.id_enc, a.person_key, c.price_fen
    FROM h, c, unnest($6::uuid[], $7::bytea[], $8::bytea[], $9::bytea[]) AS a(resident, name_enc, id_enc, person_key)
    RETURNING id, person_key
), taken AS (
    UPDATE tickets.classes SET held = held + $4
    WHERE id = $2 AND (SELECT count(*) FROM p) = $4 AND (SELECT count(*) FROM t) = $4
    RETURNING id, set_config('synchronous_commit', 'off', true) AS fast_commit
)
SELECT h.id, h.expires_at, h.amount_fen, c.name AS class_name, c.section, c.price_fen,
       (SELECT array_agg(t.id) FROM t) AS ticket_ids, (SELECT array_agg(t.person_key) FROM t) AS ticket_keys
FROM h, c, taken
"""


class SaleRepository:
    async def get(self, conn: Connection, session_id: uuid.UUID, *, lock: bool = False) -> SaleRow | None:
        suffix = " FOR UPDATE" if lock else ""
        return await fetch_row(
            conn, SaleRow, f"SELECT {_SALE} FROM tickets.sales WHERE session_id = $1{suffix}", session_id
        )

    async def upsert(self, conn: Connection, sale: SaleRow) -> None:
        await conn.execute(
            f"""INSERT INTO tickets.sales ({_SALE})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                ON CONFLICT (session_id) DO UPDATE SET
                    title = excluded.title, opens_at = excluded.opens_at, closes_at = excluded.closes_at,
                    per_person = excluded.per_person, hold_seconds = excluded.hold_seconds,
                    return_cutoff_minutes = excluded.return_cutoff_minutes,
                    re_entry_minutes = excluded.re_entry_minutes, admit_per_minute = excluded.admit_per_minute,
                    starts_at = excluded.starts_at, ends_at = excluded.ends_at,
                    session_status = excluded.session_status, updated_at = now()""",
            *msgspec.structs.astuple(sale),
        )

    async def sync_session(
        self,
        conn: Connection,
        session_id: uuid.UUID,
        title: str,
        starts_at: dt.datetime,
        ends_at: dt.datetime,
        status: str,
    ) -> bool:
        result: str = await conn.execute(
            """UPDATE tickets.sales SET title = $2, starts_at = $3, ends_at = $4, session_status = $5,
                   updated_at = now()
               WHERE session_id = $1""",
            session_id,
            title,
            starts_at,
            ends_at,
            status,
        )
        return result.endswith(" 1")

    async def classes(self, conn: Connection, session_id: uuid.UUID, *, lock: bool = False) -> list[ClassRow]:
        suffix = " FOR UPDATE" if lock else ""
        return await fetch_rows(
            conn,
            ClassRow,
            f"SELECT {_CLASS} FROM tickets.classes WHERE session_id = $1 ORDER BY position{suffix}",
            session_id,
        )

    async def class_of(self, conn: Connection, session_id: uuid.UUID, class_id: uuid.UUID) -> ClassRow | None:
        return await fetch_row(
            conn,
            ClassRow,
            f"SELECT {_CLASS} FROM tickets.classes WHERE id = $1 AND session_id = $2",
            class_id,
            session_id,
        )

    async def put_class(
        self,
        conn: Connection,
        session_id: uuid.UUID,
        name: str,
        price_fen: int,
        section: str,
        entrances: Sequence[str],
        quota: int,
        position: int,
    ) -> None:
        await conn.execute(
            """INSERT INTO tickets.classes (session_id, name, price_fen, section, entrances, quota, position)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (session_id, name) DO UPDATE SET price_fen = excluded.price_fen,
                   section = excluded.section, entrances = excluded.entrances, quota = excluded.quota,
                   position = excluded.position""",
            session_id,
            name,
            price_fen,
            section,
            list(entrances),
            quota,
            position,
        )

    async def has_tickets(self, conn: Connection, class_id: uuid.UUID) -> bool:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tickets.tickets WHERE class_id = $1)", class_id)
        )

    async def delete_class(self, conn: Connection, class_id: uuid.UUID) -> None:
        await conn.execute("DELETE FROM tickets.classes WHERE id = $1", class_id)


class HoldRepository:
    async def hold(
        self,
        conn: Connection,
        session_id: uuid.UUID,
        class_id: uuid.UUID,
        buyer_id: uuid.UUID,
        queue_passed: bool,
        tickets: Sequence[NewTicket],
    ) -> HeldRow | None:
        """The whole hold in one statement, atomic by itself (_HOLD_STATEMENT): when the sale is open (the queue
        passed, no more attendees than the limit) and enough seemed left, the hold, the attendees' counts (their
        CHECK refuses past the limit: raises PersonLimit) and the tickets are written, then the class row takes the
        tickets (its CHECK refuses past the quota). None: nothing was taken (the caller finds out why)."""
        try:
            return await fetch_row(
                conn,
                HeldRow,
                _HOLD_STATEMENT,
                session_id,
                class_id,
                buyer_id,
                len(tickets),
                queue_passed,
                [t.attendee_resident_id for t in tickets],
                [t.attendee_name_enc for t in tickets],
                [t.attendee_id_enc for t in tickets],
                [t.person_key for t in tickets],
            )
        except asyncpg.CheckViolationError as exc:
            if exc.constraint_name == "person_limit":
                raise PersonLimit from None
            if exc.constraint_name == "class_quota":
                return None  # taken meanwhile: the caller finds it sold out
            raise

    async def counts(
        self, conn: Connection, session_id: uuid.UUID, keys: Sequence[bytes]
    ) -> dict[bytes, int]:
        rows = await conn.fetch(
            """SELECT person_key, tickets FROM tickets.person_counts
               WHERE session_id = $1 AND person_key = ANY($2::bytea[])""",
            session_id,
            list(keys),
        )
        return {bytes(r["person_key"]): r["tickets"] for r in rows}

    async def get(self, conn: Connection, hold_id: uuid.UUID, *, lock: bool = False) -> HoldRow | None:
        suffix = " FOR UPDATE" if lock else ""
        return await fetch_row(
            conn, HoldRow, f"SELECT {_HOLD} FROM tickets.holds WHERE id = $1{suffix}", hold_id
        )

    async def by_order(self, conn: Connection, order_id: uuid.UUID) -> HoldRow | None:
        return await fetch_row(
            conn, HoldRow, f"SELECT {_HOLD} FROM tickets.holds WHERE order_id = $1 FOR UPDATE", order_id
        )

    async def set_order(self, conn: Connection, hold_id: uuid.UUID, order_id: uuid.UUID) -> None:
        await conn.execute(
            "UPDATE tickets.holds SET order_id = $2, updated_at = now() WHERE id = $1", hold_id, order_id
        )

    async def set_pay(self, conn: Connection, hold_id: uuid.UUID, pay: dict[str, object]) -> None:
        await conn.execute(
            "UPDATE tickets.holds SET pay = $2, updated_at = now() WHERE id = $1", hold_id, pay
        )

    async def confirm(self, conn: Connection, hold: HoldRow) -> bool:
        """held -> paid: its tickets become valid and move from held to sold."""
        moved = await conn.fetchval(
            """UPDATE tickets.holds SET status = 'paid', updated_at = now()
               WHERE id = $1 AND status = 'held' RETURNING id""",
            hold.id,
        )
        if moved is None:
            return False
        await conn.execute(
            "UPDATE tickets.classes SET held = held - $2, sold = sold + $2 WHERE id = $1",
            hold.class_id,
            hold.quantity,
        )
        await conn.execute(
            "UPDATE tickets.tickets SET status = 'valid', updated_at = now() WHERE hold_id = $1 AND status = 'held'",
            hold.id,
        )
        return True

    async def release(self, conn: Connection, hold: HoldRow) -> bool:
        """held -> released: its tickets go back on sale and stop counting against their attendees."""
        moved = await conn.fetchval(
            """UPDATE tickets.holds SET status = 'released', updated_at = now()
               WHERE id = $1 AND status = 'held' RETURNING id""",
            hold.id,
        )
        if moved is None:
            return False
        keys = await conn.fetch(
            """UPDATE tickets.tickets SET status = 'released', updated_at = now()
               WHERE hold_id = $1 AND status = 'held' RETURNING person_key""",
            hold.id,
        )
        # People before the class row, in the order holds lock them.
        await self.give_back_people(conn, hold.session_id, [bytes(k["person_key"]) for k in keys])
        await conn.execute(
            "UPDATE tickets.classes SET held = held - $2 WHERE id = $1", hold.class_id, hold.quantity
        )
        return True

    async def give_back_people(self, conn: Connection, session_id: uuid.UUID, keys: Sequence[bytes]) -> None:
        if keys:
            await conn.execute(
                """UPDATE tickets.person_counts p SET tickets = p.tickets - g.n
                   FROM (SELECT k, count(*)::int AS n FROM unnest($2::bytea[]) AS k GROUP BY k) g
                   WHERE p.session_id = $1 AND p.person_key = g.k""",
                session_id,
                list(keys),
            )

    async def refill(self, conn: Connection, hold: HoldRow) -> bool:
        """A released hold paid after all: its tickets sold again when that many are still left and the session is
        not cancelled (then paid), else the hold is unfilled (its order is refunded whole)."""
        taken = await conn.fetchval(
            """UPDATE tickets.classes c SET sold = sold + $2
               FROM tickets.sales s
               WHERE c.id = $1 AND s.session_id = c.session_id AND s.session_status <> 'cancelled'
                     AND c.sold + c.held + $2 <= c.quota
               RETURNING c.id""",
            hold.class_id,
            hold.quantity,
        )
        status = "paid" if taken is not None else "unfilled"
        await conn.execute(
            "UPDATE tickets.holds SET status = $2, updated_at = now() WHERE id = $1 AND status = 'released'",
            hold.id,
            status,
        )
        if taken is None:
            return False
        keys = await conn.fetch(
            """UPDATE tickets.tickets SET status = 'valid', updated_at = now()
               WHERE hold_id = $1 AND status = 'released' RETURNING person_key""",
            hold.id,
        )
        await conn.executemany(
            """INSERT INTO tickets.person_counts AS p (session_id, person_key, tickets, max_tickets)
               VALUES ($1, $2, 1, 1)
               ON CONFLICT (session_id, person_key) DO UPDATE
                   SET tickets = p.tickets + 1, max_tickets = greatest(p.max_tickets, p.tickets + 1)""",
            [(hold.session_id, bytes(k["person_key"])) for k in keys],
        )
        return True

    async def expired(self, conn: Connection, now: dt.datetime, limit: int) -> list[HoldRow]:
        return await fetch_rows(
            conn,
            HoldRow,
            f"""SELECT {_HOLD} FROM tickets.holds WHERE status = 'held' AND expires_at <= $1
                ORDER BY expires_at LIMIT $2""",
            now,
            limit,
        )

    async def unfilled(self, conn: Connection, limit: int) -> list[RefundDue]:
        return await fetch_rows(
            conn,
            RefundDue,
            """SELECT h.id, h.order_id, h.amount_fen, s.organiser_id AS payee_id, h.buyer_id, h.session_id, s.title
               FROM tickets.holds h JOIN tickets.sales s ON s.session_id = h.session_id
               WHERE h.status = 'unfilled' AND h.refund_id IS NULL AND h.order_id IS NOT NULL
               ORDER BY h.created_at LIMIT $1""",
            limit,
        )

    async def set_refund(self, conn: Connection, hold_id: uuid.UUID, refund_id: uuid.UUID) -> None:
        await conn.execute(
            "UPDATE tickets.holds SET refund_id = $2, updated_at = now() WHERE id = $1", hold_id, refund_id
        )

    async def expire_session(self, conn: Connection, session_id: uuid.UUID) -> None:
        """A cancelled session's open holds end now: the expiry job closes their orders and releases them."""
        await conn.execute(
            """UPDATE tickets.holds SET expires_at = least(expires_at, now()), updated_at = now()
               WHERE session_id = $1 AND status = 'held'""",
            session_id,
        )


class TicketRepository:
    async def of_hold(self, conn: Connection, hold_id: uuid.UUID) -> list[TicketRow]:
        return await fetch_rows(
            conn,
            TicketRow,
            f"""SELECT {_TICKET} FROM tickets.tickets t JOIN tickets.classes c ON c.id = t.class_id
                WHERE t.hold_id = $1 ORDER BY t.created_at, t.id""",
            hold_id,
        )

    async def of_buyer(self, conn: Connection, buyer_id: uuid.UUID, limit: int) -> list[TicketRow]:
        return await fetch_rows(
            conn,
            TicketRow,
            f"""SELECT {_TICKET} FROM tickets.tickets t JOIN tickets.classes c ON c.id = t.class_id
                WHERE t.buyer_id = $1 AND t.status <> 'released'
                ORDER BY t.created_at DESC, t.id LIMIT $2""",
            buyer_id,
            limit,
        )

    async def get(self, conn: Connection, ticket_id: uuid.UUID) -> TicketRow | None:
        return await fetch_row(
            conn,
            TicketRow,
            f"""SELECT {_TICKET} FROM tickets.tickets t JOIN tickets.classes c ON c.id = t.class_id
                WHERE t.id = $1""",
            ticket_id,
        )

    async def give_back(
        self, conn: Connection, ticket_id: uuid.UUID, buyer_id: uuid.UUID
    ) -> TicketRow | None:
        """valid -> returned, unless admitted: the seat goes back on sale and stops counting for its attendee."""
        row = await conn.fetchrow(
            """UPDATE tickets.tickets SET status = 'returned', returned_at = now(), updated_at = now()
               WHERE id = $1 AND buyer_id = $2 AND status = 'valid' AND admitted_at IS NULL
               RETURNING class_id, session_id, person_key""",
            ticket_id,
            buyer_id,
        )
        if row is None:
            return None
        # The person before the class row, in the order holds lock them.
        await HoldRepository().give_back_people(conn, row["session_id"], [bytes(row["person_key"])])
        await conn.execute("UPDATE tickets.classes SET sold = sold - 1 WHERE id = $1", row["class_id"])
        return await self.get(conn, ticket_id)

    async def cancel_session(self, conn: Connection, session_id: uuid.UUID) -> int:
        result: str = await conn.execute(
            """UPDATE tickets.tickets SET status = 'cancelled', updated_at = now()
               WHERE session_id = $1 AND status = 'valid'""",
            session_id,
        )
        return int(result.split()[-1])

    async def to_refund(
        self, conn: Connection, limit: int, ticket_id: uuid.UUID | None = None
    ) -> list[RefundDue]:
        return await fetch_rows(
            conn,
            RefundDue,
            """SELECT t.id, h.order_id, t.price_fen AS amount_fen, s.organiser_id AS payee_id, t.buyer_id,
                      t.session_id, s.title
               FROM tickets.tickets t JOIN tickets.holds h ON h.id = t.hold_id
                    JOIN tickets.sales s ON s.session_id = t.session_id
               WHERE t.status IN ('returned', 'cancelled') AND t.refund_id IS NULL AND h.order_id IS NOT NULL
                     AND ($2::uuid IS NULL OR t.id = $2)
               ORDER BY t.updated_at LIMIT $1""",
            limit,
            ticket_id,
        )

    async def set_refund(self, conn: Connection, ticket_id: uuid.UUID, refund_id: uuid.UUID) -> None:
        await conn.execute(
            "UPDATE tickets.tickets SET refund_id = $2, updated_at = now() WHERE id = $1",
            ticket_id,
            refund_id,
        )

    async def holders(
        self, conn: Connection, session_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> list[uuid.UUID]:
        """The buyers of the session's tickets (valid, or cancelled with it), in id order after `after`."""
        rows = await conn.fetch(
            """SELECT DISTINCT buyer_id FROM tickets.tickets
               WHERE session_id = $1 AND status IN ('valid', 'cancelled') AND ($2::uuid IS NULL OR buyer_id > $2)
               ORDER BY buyer_id LIMIT $3""",
            session_id,
            after,
            limit,
        )
        return [r["buyer_id"] for r in rows]

    # -- admissions ----------------------------------------------------------------------------------------

    async def lock_attendee(self, conn: Connection, session_id: uuid.UUID, resident_id: uuid.UUID) -> None:
        """Serialises, until the transaction ends, the admissions of one person to one session."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text || $2::uuid::text, 0))",
            session_id,
            resident_id,
        )

    async def for_attendee(
        self, conn: Connection, session_id: uuid.UUID, resident_id: uuid.UUID
    ) -> list[TicketRow]:
        """The resident's tickets for the session (as attendee), valid ones first, those never admitted first."""
        return await fetch_rows(
            conn,
            TicketRow,
            f"""SELECT {_TICKET} FROM tickets.tickets t JOIN tickets.classes c ON c.id = t.class_id
                WHERE t.session_id = $1 AND t.attendee_resident_id = $2
                      AND t.status IN ('valid', 'returned', 'cancelled')
                ORDER BY t.status = 'valid' DESC, t.admitted_at IS NULL DESC, t.last_admitted_at, t.id""",
            session_id,
            resident_id,
        )

    async def admit(
        self,
        conn: Connection,
        ticket_id: uuid.UUID,
        entrance: str,
        at: dt.datetime,
        re_entry_minutes: int | None,
    ) -> bool:
        """Compare-and-set: a valid ticket never admitted, or (with re-entry) last admitted long enough ago."""
        admitted = await conn.fetchval(
            """UPDATE tickets.tickets SET admitted_at = coalesce(admitted_at, $3), last_admitted_at = $3,
                   last_entrance = $2, admissions = admissions + 1, updated_at = now()
               WHERE id = $1 AND status = 'valid'
                     AND (admitted_at IS NULL
                          OR ($4::int IS NOT NULL
                              AND last_admitted_at <= $3::timestamptz - make_interval(mins => $4::int)))
               RETURNING id""",
            ticket_id,
            entrance,
            at,
            re_entry_minutes,
        )
        return admitted is not None

    async def valid_of_session(self, conn: Connection, session_id: uuid.UUID) -> list[TicketRow]:
        return await fetch_rows(
            conn,
            TicketRow,
            f"""SELECT {_TICKET} FROM tickets.tickets t JOIN tickets.classes c ON c.id = t.class_id
                WHERE t.session_id = $1 AND t.status = 'valid' ORDER BY t.id""",
            session_id,
        )


class ChangeRepository:
    async def insert(
        self, conn: Connection, session_id: uuid.UUID, kind: str, starts_at: dt.datetime
    ) -> None:
        await conn.execute(
            "INSERT INTO tickets.session_changes (session_id, kind, starts_at) VALUES ($1, $2, $3)",
            session_id,
            kind,
            starts_at,
        )

    async def pending(self, conn: Connection, limit: int) -> list[ChangeRow]:
        return await fetch_rows(
            conn,
            ChangeRow,
            """SELECT c.id, c.session_id, c.kind, c.starts_at, s.title
               FROM tickets.session_changes c JOIN tickets.sales s ON s.session_id = c.session_id
               WHERE c.done_at IS NULL ORDER BY c.created_at LIMIT $1""",
            limit,
        )

    async def done(self, conn: Connection, change_id: uuid.UUID) -> None:
        await conn.execute("UPDATE tickets.session_changes SET done_at = now() WHERE id = $1", change_id)
