"""All SQL of messages, their deliveries, subscribe-message grants and push devices."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

_GRANT = (
    "id, identity_id, resident_id, channel, app_id, template_id, grant_kind, status, remaining, updated_at"
)
_MESSAGE = "id, resident_id, kind, title, body, params, sender, sender_name, created_at, read_at, deleted_at"
_DELIVERY = """id, message_id, channel, app_id, identity_id, grant_id, device_id, template_id, status, attempts,
    error, channel_message_id, sent_at"""


class GrantRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    identity_id: uuid.UUID
    resident_id: uuid.UUID
    channel: str
    app_id: str
    template_id: str
    grant_kind: str
    status: str
    remaining: int
    updated_at: dt.datetime


class MessageRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    resident_id: uuid.UUID
    kind: str
    title: str
    body: str
    params: dict[str, str]
    sender: str
    sender_name: str
    created_at: dt.datetime
    read_at: dt.datetime | None
    deleted_at: dt.datetime | None


class CancelledRow(msgspec.Struct, frozen=True):
    """A pending delivery cancelled: the grant it had claimed and how often it had been tried."""

    grant_id: uuid.UUID | None
    attempts: int


class DeliveryRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    message_id: uuid.UUID
    channel: str
    app_id: str | None
    identity_id: uuid.UUID | None
    grant_id: uuid.UUID | None
    device_id: uuid.UUID | None
    template_id: str | None
    status: str
    attempts: int
    error: str | None
    channel_message_id: str | None
    sent_at: dt.datetime | None


class DeviceRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    resident_id: uuid.UUID
    platform: str
    token_enc: bytes
    registered_at: dt.datetime


class GrantRepository:
    async def record(
        self,
        conn: Connection,
        *,
        identity_id: uuid.UUID,
        resident_id: uuid.UUID,
        channel: str,
        app_id: str,
        template_id: str,
        grant_kind: str,
        result: str,
    ) -> GrantRow:
        """One reported result: an accepted one-time grant adds a message to those remaining (WeChat counts each
        accepted request); an accepted long-term one is on; a rejection turns a long-term grant off but leaves
        one-time grants already given (WeChat keeps them too); a ban stops the template."""
        row = await fetch_row(
            conn,
            GrantRow,
            f"""INSERT INTO notifications.subscribe_grants AS g
                    (identity_id, resident_id, channel, app_id, template_id, grant_kind, status, remaining)
                VALUES ($1, $2, $3, $4, $5, $6,
                        CASE $7 WHEN 'accept' THEN 'accepted' WHEN 'ban' THEN 'banned' ELSE 'rejected' END,
                        CASE WHEN $7 = 'accept' AND $6 = 'one_time' THEN 1 ELSE 0 END)
                ON CONFLICT (identity_id, template_id) DO UPDATE SET
                    grant_kind = EXCLUDED.grant_kind,
                    status = CASE
                        WHEN $7 = 'accept' THEN 'accepted'
                        WHEN $7 = 'ban' THEN 'banned'
                        WHEN g.grant_kind = 'one_time' AND EXCLUDED.grant_kind = 'one_time' AND g.remaining > 0
                            THEN g.status
                        ELSE 'rejected' END,
                    remaining = CASE
                        WHEN $7 = 'ban' OR EXCLUDED.grant_kind = 'long_term' THEN 0
                        WHEN $7 = 'accept' THEN LEAST(g.remaining, 99) + 1
                        ELSE g.remaining END,
                    updated_at = now()
                RETURNING {_GRANT}""",
            identity_id,
            resident_id,
            channel,
            app_id,
            template_id,
            grant_kind,
            result,
        )
        assert row is not None
        return row

    async def of_resident(self, conn: Connection, resident_id: uuid.UUID) -> list[GrantRow]:
        return await fetch_rows(
            conn,
            GrantRow,
            f"""SELECT {_GRANT} FROM notifications.subscribe_grants WHERE resident_id = $1
                ORDER BY channel, app_id, template_id""",
            resident_id,
        )

    async def usable(self, conn: Connection, identity_id: uuid.UUID, template_id: str) -> GrantRow | None:
        return await fetch_row(
            conn,
            GrantRow,
            f"""SELECT {_GRANT} FROM notifications.subscribe_grants
                WHERE identity_id = $1 AND template_id = $2 AND status = 'accepted'
                  AND (grant_kind = 'long_term' OR remaining > 0)""",
            identity_id,
            template_id,
        )

    async def spend_one(self, conn: Connection, grant_id: uuid.UUID) -> bool:
        """Compare-and-set: of concurrent senders only as many as there are grants remaining get one (the row
        lock makes the others re-read `remaining` after the winner commits)."""
        spent = await conn.fetchval(
            """UPDATE notifications.subscribe_grants SET remaining = remaining - 1, updated_at = now()
               WHERE id = $1 AND status = 'accepted' AND grant_kind = 'one_time' AND remaining > 0
               RETURNING id""",
            grant_id,
        )
        return spent is not None

    async def give_back(self, conn: Connection, grant_id: uuid.UUID) -> None:
        await conn.execute(
            """UPDATE notifications.subscribe_grants SET remaining = remaining + 1, updated_at = now()
               WHERE id = $1 AND grant_kind = 'one_time' AND status = 'accepted'""",
            grant_id,
        )

    async def revoke(self, conn: Connection, grant_id: uuid.UUID) -> None:
        """The channel says the resident holds no grant of the template: none is left to spend."""
        await conn.execute(
            """UPDATE notifications.subscribe_grants SET status = 'revoked', remaining = 0, updated_at = now()
               WHERE id = $1""",
            grant_id,
        )


class DeviceRepository:
    async def register(
        self, conn: Connection, resident_id: uuid.UUID, platform: str, token_hash: bytes, token_enc: bytes
    ) -> tuple[DeviceRow, bool]:
        """(the device, whether it is new); a token registered by another resident moves to this one (a phone
        changes hands, the provider's token follows the app install)."""
        record = await conn.fetchrow(
            """INSERT INTO notifications.push_devices (resident_id, platform, token_hash, token_enc)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (token_hash) DO UPDATE SET resident_id = EXCLUDED.resident_id,
                   platform = EXCLUDED.platform, token_enc = EXCLUDED.token_enc,
                   registered_at = CASE WHEN notifications.push_devices.resident_id = EXCLUDED.resident_id
                                        THEN notifications.push_devices.registered_at ELSE now() END
               RETURNING id, resident_id, platform, token_enc, registered_at, (xmax = 0) AS new""",
            resident_id,
            platform,
            token_hash,
            token_enc,
        )
        assert record is not None
        new = bool(record["new"])
        return DeviceRow(**{k: v for k, v in record.items() if k != "new"}), new

    async def of_resident(self, conn: Connection, resident_id: uuid.UUID) -> list[DeviceRow]:
        return await fetch_rows(
            conn,
            DeviceRow,
            """SELECT id, resident_id, platform, token_enc, registered_at FROM notifications.push_devices
               WHERE resident_id = $1 ORDER BY registered_at, id""",
            resident_id,
        )

    async def get(self, conn: Connection, device_id: uuid.UUID) -> DeviceRow | None:
        return await fetch_row(
            conn,
            DeviceRow,
            """SELECT id, resident_id, platform, token_enc, registered_at FROM notifications.push_devices
               WHERE id = $1""",
            device_id,
        )

    async def remove(self, conn: Connection, device_id: uuid.UUID, resident_id: uuid.UUID) -> bool:
        removed = await conn.fetchval(
            "DELETE FROM notifications.push_devices WHERE id = $1 AND resident_id = $2 RETURNING id",
            device_id,
            resident_id,
        )
        return removed is not None


class MessageRepository:
    async def add(
        self,
        conn: Connection,
        *,
        resident_id: uuid.UUID,
        kind: str,
        title: str,
        body: str,
        params: dict[str, str],
        sender: str,
        sender_name: str,
        sender_key: str | None,
    ) -> MessageRow | None:
        """The new message; None when the sender already sent one with this key."""
        return await fetch_row(
            conn,
            MessageRow,
            f"""INSERT INTO notifications.messages
                    (resident_id, kind, title, body, params, sender, sender_name, sender_key)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (sender, sender_key) WHERE sender_key IS NOT NULL DO NOTHING
                RETURNING {_MESSAGE}""",
            resident_id,
            kind,
            title,
            body,
            params,
            sender,
            sender_name,
            sender_key,
        )

    async def add_for_broadcast(
        self, conn: Connection, broadcast: BroadcastRow, sender: str, resident_ids: list[uuid.UUID]
    ) -> list[MessageRow]:
        """The broadcast's message to each of these residents who has none yet; the messages written now."""
        return await fetch_rows(
            conn,
            MessageRow,
            f"""INSERT INTO notifications.messages
                    (resident_id, kind, title, body, params, sender, sender_name, broadcast_id)
                SELECT r, $2, $3, $4, $5, $6, $7, $1 FROM unnest($8::uuid[]) AS r
                ON CONFLICT (broadcast_id, resident_id) WHERE broadcast_id IS NOT NULL DO NOTHING
                RETURNING {_MESSAGE}""",
            broadcast.id,
            broadcast.kind,
            broadcast.title,
            broadcast.body,
            broadcast.params,
            sender,
            broadcast.sender_name,
            resident_ids,
        )

    async def by_sender_key(self, conn: Connection, sender: str, sender_key: str) -> MessageRow | None:
        return await fetch_row(
            conn,
            MessageRow,
            f"SELECT {_MESSAGE} FROM notifications.messages WHERE sender = $1 AND sender_key = $2",
            sender,
            sender_key,
        )

    async def get(self, conn: Connection, message_id: uuid.UUID) -> MessageRow | None:
        return await fetch_row(
            conn, MessageRow, f"SELECT {_MESSAGE} FROM notifications.messages WHERE id = $1", message_id
        )

    async def inbox(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        before: dt.datetime | None,
        unread_only: bool,
        limit: int,
    ) -> list[MessageRow]:
        return await fetch_rows(
            conn,
            MessageRow,
            f"""SELECT {_MESSAGE} FROM notifications.messages
                WHERE resident_id = $1 AND deleted_at IS NULL AND ($2::timestamptz IS NULL OR created_at < $2)
                  AND (NOT $3 OR read_at IS NULL)
                ORDER BY created_at DESC, id DESC LIMIT $4""",
            resident_id,
            before,
            unread_only,
            limit,
        )

    async def unread(self, conn: Connection, resident_id: uuid.UUID) -> int:
        count: int = await conn.fetchval(
            """SELECT count(*) FROM notifications.messages
               WHERE resident_id = $1 AND read_at IS NULL AND deleted_at IS NULL""",
            resident_id,
        )
        return count

    async def mark_read(self, conn: Connection, message_id: uuid.UUID, resident_id: uuid.UUID) -> bool:
        found = await conn.fetchval(
            """UPDATE notifications.messages SET read_at = COALESCE(read_at, now())
               WHERE id = $1 AND resident_id = $2 AND deleted_at IS NULL RETURNING id""",
            message_id,
            resident_id,
        )
        return found is not None

    async def mark_all_read(self, conn: Connection, resident_id: uuid.UUID) -> int:
        done = await conn.execute(
            """UPDATE notifications.messages SET read_at = now()
               WHERE resident_id = $1 AND read_at IS NULL AND deleted_at IS NULL""",
            resident_id,
        )
        return int(done.split()[-1])

    async def delete(self, conn: Connection, message_id: uuid.UUID, resident_id: uuid.UUID) -> bool:
        """The message leaves the inbox and its content is erased; false when it is not (or no longer) there."""
        found = await conn.fetchval(
            """UPDATE notifications.messages SET deleted_at = now(), title = '', body = '', params = '{}'
               WHERE id = $1 AND resident_id = $2 AND deleted_at IS NULL RETURNING id""",
            message_id,
            resident_id,
        )
        return found is not None

    async def delete_read(self, conn: Connection, resident_id: uuid.UUID) -> list[uuid.UUID]:
        """Deletes every read message of the inbox as `delete` does; their ids."""
        rows = await conn.fetch(
            """UPDATE notifications.messages SET deleted_at = now(), title = '', body = '', params = '{}'
               WHERE resident_id = $1 AND read_at IS NOT NULL AND deleted_at IS NULL RETURNING id""",
            resident_id,
        )
        return [r["id"] for r in rows]


class DeliveryRepository:
    async def add(
        self,
        conn: Connection,
        message_id: uuid.UUID,
        channel: str,
        *,
        status: str,
        app_id: str | None = None,
        identity_id: uuid.UUID | None = None,
        grant_id: uuid.UUID | None = None,
        device_id: uuid.UUID | None = None,
        template_id: str | None = None,
        error: str | None = None,
    ) -> None:
        await conn.execute(
            """INSERT INTO notifications.deliveries
                   (message_id, channel, app_id, identity_id, grant_id, device_id, template_id, status,
                    error, next_attempt_at, sent_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                       CASE WHEN $8 = 'pending' THEN now() END, CASE WHEN $8 = 'sent' THEN now() END)""",
            message_id,
            channel,
            app_id,
            identity_id,
            grant_id,
            device_id,
            template_id,
            status,
            error,
        )

    async def add_inbox(self, conn: Connection, message_ids: list[uuid.UUID]) -> None:
        """The inbox delivery of each message, sent (as `add` writes it one at a time)."""
        await conn.execute(
            """INSERT INTO notifications.deliveries (message_id, channel, status, sent_at)
               SELECT unnest($1::uuid[]), 'inbox', 'sent', now()""",
            message_ids,
        )

    async def of_messages(self, conn: Connection, message_ids: list[uuid.UUID]) -> list[DeliveryRow]:
        return await fetch_rows(
            conn,
            DeliveryRow,
            f"""SELECT {_DELIVERY} FROM notifications.deliveries WHERE message_id = ANY($1::uuid[])
                ORDER BY created_at, channel""",
            message_ids,
        )

    async def cancel_pending(self, conn: Connection, message_ids: list[uuid.UUID]) -> list[CancelledRow]:
        """The messages' pending deliveries will not be sent. One a job run has claimed and is sending now is
        cancelled all the same: that run's outcome no longer records (its compare-and-set wants `pending`)."""
        return await fetch_rows(
            conn,
            CancelledRow,
            """UPDATE notifications.deliveries
               SET status = 'cancelled', next_attempt_at = NULL, updated_at = now(),
                   error = 'cancelled: the message was deleted before it was sent'
               WHERE message_id = ANY($1::uuid[]) AND status = 'pending'
               RETURNING grant_id, attempts""",
            message_ids,
        )

    async def claim_due(
        self, conn: Connection, at: dt.datetime, lease: dt.timedelta, limit: int
    ) -> list[DeliveryRow]:
        """Pending deliveries due by `at`, each leased (its next attempt moved past the lease) so that no other
        run sends it while this one does; the attempt is counted now."""
        return await fetch_rows(
            conn,
            DeliveryRow,
            f"""UPDATE notifications.deliveries SET attempts = attempts + 1, next_attempt_at = $1::timestamptz + $2,
                    updated_at = now()
                WHERE id IN (SELECT id FROM notifications.deliveries
                             WHERE status = 'pending' AND next_attempt_at <= $1
                             ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                RETURNING {_DELIVERY}""",
            at,
            lease,
            limit,
        )

    async def finish(
        self,
        conn: Connection,
        delivery_id: uuid.UUID,
        attempts: int,
        status: str,
        error: str | None,
        channel_message_id: str | None = None,
    ) -> bool:
        """Compare-and-set on the attempt this run claimed: false when another run has taken it since."""
        done = await conn.fetchval(
            """UPDATE notifications.deliveries SET status = $3, error = $4, channel_message_id = $5,
                   next_attempt_at = NULL, updated_at = now(),
                   sent_at = CASE WHEN $3 = 'sent' THEN now() END
               WHERE id = $1 AND attempts = $2 AND status = 'pending' RETURNING id""",
            delivery_id,
            attempts,
            status,
            error,
            channel_message_id,
        )
        return done is not None

    async def retry_at(
        self, conn: Connection, delivery_id: uuid.UUID, attempts: int, at: dt.datetime, error: str
    ) -> bool:
        done = await conn.fetchval(
            """UPDATE notifications.deliveries SET next_attempt_at = $3, error = $4, updated_at = now()
               WHERE id = $1 AND attempts = $2 AND status = 'pending' RETURNING id""",
            delivery_id,
            attempts,
            at,
            error,
        )
        return done is not None


class RegionGrantRow(msgspec.Struct, frozen=True):
    region: str
    granted_at: dt.datetime
    granted_by: str


class AudienceRepository:
    """Whom an organisation may message: the residents who used its service, the regions it may address."""

    async def record_use(
        self, conn: Connection, organisation_ids: list[uuid.UUID], resident_id: uuid.UUID, via: str
    ) -> None:
        await conn.execute(
            """INSERT INTO notifications.service_users (organisation_id, resident_id, via)
               SELECT DISTINCT o, $2::uuid, $3::text FROM unnest($1::uuid[]) AS o
               ON CONFLICT (organisation_id, resident_id, via) DO UPDATE SET last_at = now()""",
            organisation_ids,
            resident_id,
            via,
        )

    async def used(self, conn: Connection, organisation_id: uuid.UUID, resident_id: uuid.UUID) -> bool:
        found = await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM notifications.service_users
                              WHERE organisation_id = $1 AND resident_id = $2)""",
            organisation_id,
            resident_id,
        )
        return bool(found)

    async def regions(self, conn: Connection, organisation_id: uuid.UUID) -> list[RegionGrantRow]:
        return await fetch_rows(
            conn,
            RegionGrantRow,
            """SELECT region, granted_at, granted_by FROM notifications.message_regions
               WHERE organisation_id = $1 ORDER BY region""",
            organisation_id,
        )

    async def set_regions(
        self, conn: Connection, organisation_id: uuid.UUID, regions: list[str], granted_by: str
    ) -> None:
        """Exactly `regions` from now on; those kept keep when and by whom they were granted."""
        await conn.execute(
            """DELETE FROM notifications.message_regions
               WHERE organisation_id = $1 AND NOT (region = ANY($2::text[]))""",
            organisation_id,
            regions,
        )
        await conn.execute(
            """INSERT INTO notifications.message_regions (organisation_id, region, granted_by)
               SELECT $1, unnest($2::text[]), $3 ON CONFLICT (organisation_id, region) DO NOTHING""",
            organisation_id,
            regions,
            granted_by,
        )


_BROADCAST = """id, organisation_id, sender_name, broadcast_key, audience, regions, tile_id, opened_days, kind, title,
    body, params, status, stopped_reason, total, written, cursor_region, cursor_resident, created_at, started_at,
    finished_at"""


class BroadcastRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    organisation_id: uuid.UUID
    sender_name: str
    broadcast_key: str
    audience: str
    regions: list[str]
    tile_id: uuid.UUID | None
    opened_days: int | None
    kind: str
    title: str
    body: str
    params: dict[str, str]
    status: str
    stopped_reason: str | None
    total: int | None
    written: int
    cursor_region: str | None
    cursor_resident: uuid.UUID | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class BroadcastRepository:
    async def add(
        self,
        conn: Connection,
        *,
        organisation_id: uuid.UUID,
        sender_name: str,
        broadcast_key: str,
        regions: list[str],
        kind: str,
        title: str,
        body: str,
        params: dict[str, str],
        tile_id: uuid.UUID | None = None,
        opened_days: int | None = None,
    ) -> BroadcastRow | None:
        """The new broadcast, queued; None when the organisation has one with this key. Its audience is the tile's
        users when `tile_id` is given (`regions` then empty), else the regions'."""
        return await fetch_row(
            conn,
            BroadcastRow,
            f"""INSERT INTO notifications.broadcasts
                    (organisation_id, sender_name, broadcast_key, audience, regions, kind, title, body, params,
                     tile_id, opened_days)
                VALUES ($1, $2, $3, CASE WHEN $9::uuid IS NULL THEN 'regions' ELSE 'tile' END, $4, $5, $6, $7, $8,
                        $9, $10)
                ON CONFLICT (organisation_id, broadcast_key) DO NOTHING
                RETURNING {_BROADCAST}""",
            organisation_id,
            sender_name,
            broadcast_key,
            regions,
            kind,
            title,
            body,
            params,
            tile_id,
            opened_days,
        )

    async def by_key(self, conn: Connection, organisation_id: uuid.UUID, key: str) -> BroadcastRow | None:
        return await fetch_row(
            conn,
            BroadcastRow,
            f"""SELECT {_BROADCAST} FROM notifications.broadcasts
                WHERE organisation_id = $1 AND broadcast_key = $2""",
            organisation_id,
            key,
        )

    async def get(self, conn: Connection, broadcast_id: uuid.UUID) -> BroadcastRow | None:
        return await fetch_row(
            conn,
            BroadcastRow,
            f"SELECT {_BROADCAST} FROM notifications.broadcasts WHERE id = $1",
            broadcast_id,
        )

    async def open_ids(self, conn: Connection, limit: int) -> list[uuid.UUID]:
        """Broadcasts still to write, oldest first."""
        rows = await conn.fetch(
            """SELECT id FROM notifications.broadcasts WHERE status IN ('queued', 'writing')
               ORDER BY created_at, id LIMIT $1""",
            limit,
        )
        return [r["id"] for r in rows]

    async def lock_open(self, conn: Connection, broadcast_id: uuid.UUID) -> BroadcastRow | None:
        """The broadcast, locked until the transaction ends, while it is still to write: another run waits here
        and then reads where this one left it."""
        return await fetch_row(
            conn,
            BroadcastRow,
            f"""SELECT {_BROADCAST} FROM notifications.broadcasts
                WHERE id = $1 AND status IN ('queued', 'writing') FOR UPDATE""",
            broadcast_id,
        )

    async def start(self, conn: Connection, broadcast_id: uuid.UUID, total: int) -> None:
        await conn.execute(
            """UPDATE notifications.broadcasts SET status = 'writing', total = $2, started_at = now()
               WHERE id = $1 AND status = 'queued'""",
            broadcast_id,
            total,
        )

    async def advance(
        self,
        conn: Connection,
        broadcast_id: uuid.UUID,
        region: str | None,
        resident: uuid.UUID | None,
        written: int,
    ) -> None:
        await conn.execute(
            """UPDATE notifications.broadcasts
               SET cursor_region = $2, cursor_resident = $3, written = written + $4
               WHERE id = $1""",
            broadcast_id,
            region,
            resident,
            written,
        )

    async def finish(
        self, conn: Connection, broadcast_id: uuid.UUID, status: str, reason: str | None = None
    ) -> None:
        await conn.execute(
            """UPDATE notifications.broadcasts SET status = $2, stopped_reason = $3, finished_at = now()
               WHERE id = $1""",
            broadcast_id,
            status,
            reason,
        )
