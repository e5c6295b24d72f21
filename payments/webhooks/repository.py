"""All SQL for payee webhooks and their event outbox."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_rows


class DueEventRow(msgspec.Struct, frozen=True):
    """An event to deliver, with where to and the payee's sealed signing secret."""

    id: uuid.UUID
    payee_id: uuid.UUID
    event: str
    body: dict[str, object]
    attempts: int
    url: str
    secret_enc: bytes


class EventRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    event: str
    status: str  # pending | delivered | failed
    attempts: int
    last_error: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class WebhookRepository:
    async def upsert(self, conn: Connection, payee_id: uuid.UUID, url: str, secret_enc: bytes) -> None:
        await conn.execute(
            """INSERT INTO payments.payee_webhooks (payee_id, url, secret_enc) VALUES ($1, $2, $3)
               ON CONFLICT (payee_id) DO UPDATE SET url = EXCLUDED.url, secret_enc = EXCLUDED.secret_enc,
                   updated_at = now()""",
            payee_id,
            url,
            secret_enc,
        )

    async def enqueue(
        self, conn: Connection, payee_id: uuid.UUID, event: str, body: dict[str, object]
    ) -> None:
        await conn.execute(
            """INSERT INTO payments.payee_events (payee_id, event, body)
               SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM payments.payee_webhooks WHERE payee_id = $1)""",
            payee_id,
            event,
            body,
        )

    async def claim_due(self, conn: Connection, limit: int) -> list[DueEventRow]:
        """Locks due events so two workers never deliver the same one at the same time."""
        return await fetch_rows(
            conn,
            DueEventRow,
            """SELECT e.id, e.payee_id, e.event, e.body, e.attempts, w.url, w.secret_enc
               FROM payments.payee_events e JOIN payments.payee_webhooks w ON w.payee_id = e.payee_id
               WHERE e.status = 'pending' AND e.next_attempt_at <= now()
               ORDER BY e.next_attempt_at LIMIT $1 FOR UPDATE OF e SKIP LOCKED""",
            limit,
        )

    async def delivered(self, conn: Connection, event_id: uuid.UUID) -> None:
        await conn.execute(
            """UPDATE payments.payee_events SET status = 'delivered', attempts = attempts + 1, delivered_at = now()
               WHERE id = $1""",
            event_id,
        )

    async def failed_attempt(
        self, conn: Connection, event_id: uuid.UUID, error: str, retry_in: int | None
    ) -> None:
        await conn.execute(
            """UPDATE payments.payee_events SET attempts = attempts + 1, last_error = $2,
                   status = CASE WHEN $3::integer IS NULL THEN 'failed' ELSE 'pending' END,
                   next_attempt_at = now() + make_interval(secs => coalesce($3::integer, 0))
               WHERE id = $1""",
            event_id,
            error[:500],
            retry_in,
        )

    async def events_for(self, conn: Connection, payee_id: uuid.UUID, limit: int) -> list[EventRow]:
        return await fetch_rows(
            conn,
            EventRow,
            """SELECT id, event, status, attempts, last_error, created_at, delivered_at FROM payments.payee_events
               WHERE payee_id = $1 ORDER BY created_at DESC LIMIT $2""",
            payee_id,
            limit,
        )
