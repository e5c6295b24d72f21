"""All SQL for transit: agreements, blocks, the fare table, taps, trips, deductions (debts) and repayments."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_row, fetch_rows

AGREEMENT_COLUMNS = """id, resident_id, channel, payer_channel_id, external_agreement_no, agreement_no, status,
                       sign_params, end_reason, created_at, activated_at, ended_at"""
DEDUCTION_COLUMNS = """id, resident_id, payee_id, agreement_id, order_id, out_trade_no, channel, amount_fen, status,
                       failure, overpaid, created_at, sent_at, resolved_at, cleared_at, cleared_by"""
TRIP_COLUMNS = """id, resident_id, operator_id, kind, line_in, station_in, started_at, line_out, station_out, ended_at,
                  day, fare_fen, charged_fen, status, deduction_id"""

# Advisory locks: one trip builder and one deduction planner at a time; one debt change per rider at a time.
_JOB_LOCKS = {"build": 0x7472_0001, "deduct": 0x7472_0002}
_RIDER_LOCK_SPACE = 0x7472


def _rider_key(resident_id: uuid.UUID) -> int:
    return int.from_bytes(resident_id.bytes[:4], "big", signed=True)


class EligibilityRow(msgspec.Struct, frozen=True):
    agreement: bool
    blocked: bool
    in_debt: bool


class AgreementRow(msgspec.Struct, frozen=True):
    """AGREEMENT_COLUMNS."""

    id: uuid.UUID
    resident_id: uuid.UUID
    channel: str
    payer_channel_id: str
    external_agreement_no: str
    agreement_no: str | None
    status: str  # pending | active | ended
    sign_params: dict[str, object]
    end_reason: str
    created_at: dt.datetime
    activated_at: dt.datetime | None
    ended_at: dt.datetime | None


class FarePolicyRow(msgspec.Struct, frozen=True):
    daily_cap_fen: int
    open_tap_hours: int


class FareLineRow(msgspec.Struct, frozen=True):
    line: str
    kind: str  # flat | distance
    flat_fen: int
    base_fen: int
    base_m: int
    step_m: int
    step_fen: int
    max_fen: int


class FareStationRow(msgspec.Struct, frozen=True):
    line: str
    station: str
    position_m: int


class NewTap(msgspec.Struct, frozen=True):
    """A tap taken over from the gates, with the rider the platform derived from its verified code (None: a tap
    uploaded before taps were proven, kept as `unknown_rider` and never billed)."""

    organisation_id: uuid.UUID
    tap_id: str
    resident_id: uuid.UUID | None
    gate_id: str
    line: str
    station: str
    direction: str
    tapped_at: dt.datetime
    state: str  # open | unknown_rider


class OpenTapRow(msgspec.Struct, frozen=True):
    organisation_id: uuid.UUID
    tap_id: str
    resident_id: uuid.UUID  # an open tap always has its rider (the others are kept as unknown_rider)
    line: str
    station: str
    direction: str  # in | out | single
    tapped_at: dt.datetime


class NewTrip(msgspec.Struct, frozen=True):
    id: uuid.UUID
    resident_id: uuid.UUID
    operator_id: uuid.UUID
    kind: str
    line_in: str | None
    station_in: str | None
    started_at: dt.datetime
    line_out: str | None
    station_out: str | None
    ended_at: dt.datetime | None
    day: dt.date
    fare_fen: int
    charged_fen: int
    status: str  # unbilled | waived


class TripRow(NewTrip, frozen=True):
    """TRIP_COLUMNS: a stored trip, and the deduction that billed it."""

    deduction_id: uuid.UUID | None


class UnbilledGroupRow(msgspec.Struct, frozen=True):
    resident_id: uuid.UUID
    operator_id: uuid.UUID
    trip_ids: list[uuid.UUID]
    amount_fen: int
    first_day: dt.date
    last_day: dt.date


class DeductionRow(msgspec.Struct, frozen=True):
    """DEDUCTION_COLUMNS."""

    id: uuid.UUID
    resident_id: uuid.UUID
    payee_id: uuid.UUID
    agreement_id: uuid.UUID | None
    order_id: uuid.UUID | None
    out_trade_no: str | None
    channel: str
    amount_fen: int
    status: str  # pending | paid | failed
    failure: str
    overpaid: bool
    created_at: dt.datetime
    sent_at: dt.datetime | None
    resolved_at: dt.datetime | None
    cleared_at: dt.datetime | None
    cleared_by: str


class PendingDeductionRow(msgspec.Struct, frozen=True):
    """A deduction waiting for the channel's answer, with the agreement number it goes under."""

    id: uuid.UUID
    resident_id: uuid.UUID
    channel: str
    out_trade_no: str  # never null while pending: a deduction with no order to send fails as it is made
    amount_fen: int
    created_at: dt.datetime
    sent_at: dt.datetime | None
    agreement_no: str | None


class RepaymentRow(msgspec.Struct, frozen=True):
    order_id: uuid.UUID
    resident_id: uuid.UUID
    payee_id: uuid.UUID
    amount_fen: int
    deduction_ids: list[uuid.UUID]
    applied_at: dt.datetime | None
    overpaid_fen: int


class OpenRepaymentRow(msgspec.Struct, frozen=True):
    """A repayment whose order can still be paid (waiting, not expired)."""

    order_id: uuid.UUID
    amount_fen: int
    deduction_ids: list[uuid.UUID]


class OverpaymentRow(msgspec.Struct, frozen=True):
    """Money paid for debts already cleared, owed back to the rider (payments.transit_overpayments)."""

    id: uuid.UUID
    order_id: uuid.UUID
    resident_id: uuid.UUID
    payee_id: uuid.UUID
    amount_fen: int
    status: str  # pending | sent | failed
    refund_id: uuid.UUID | None
    attempts: int
    last_error: str
    created_at: dt.datetime


class OverpaymentStateRow(OverpaymentRow, frozen=True):
    """An overpayment with its order's number and, once sent, its refund's state."""

    out_trade_no: str
    refund_status: str | None


OVERPAYMENT_COLUMNS = """id, order_id, resident_id, payee_id, amount_fen, status, refund_id, attempts, last_error,
                         created_at"""


class TransitRepository:
    # -- locks -------------------------------------------------------------------------------------------------

    async def try_job_lock(self, conn: Connection, job: str) -> bool:
        return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _JOB_LOCKS[job]))

    async def lock_rider(self, conn: Connection, resident_id: uuid.UUID) -> None:
        """Serialises changes of one rider's debts until the transaction ends (debt added vs. debt cleared)."""
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _RIDER_LOCK_SPACE, _rider_key(resident_id))

    # -- eligibility and blocks ----------------------------------------------------------------------------------

    # Mirrored, with RideEligibility's order of reasons, by code_ports.resident_facts (the code display's one
    # statement, code_service/migrations/0003_resident_facts.sql, docs/decisions/0002): change both;
    # tests/code_service/codes/test_display_round_trips.py compares them.
    async def eligibility(self, conn: Connection, resident_id: uuid.UUID) -> EligibilityRow:
        row = await fetch_row(
            conn,
            EligibilityRow,
            """SELECT EXISTS (SELECT 1 FROM payments.transit_agreements
                              WHERE resident_id = $1 AND status = 'active') AS agreement,
                      EXISTS (SELECT 1 FROM payments.transit_blocks WHERE resident_id = $1) AS blocked,
                      EXISTS (SELECT 1 FROM payments.transit_deductions
                              WHERE resident_id = $1 AND status = 'failed' AND cleared_at IS NULL) AS in_debt""",
            resident_id,
        )
        assert row is not None  # a SELECT of three EXISTS is one row
        return row

    async def block(self, conn: Connection, resident_id: uuid.UUID, reason: str) -> bool:
        done = await conn.fetchval(
            """INSERT INTO payments.transit_blocks (resident_id, reason) VALUES ($1, $2)
               ON CONFLICT (resident_id) DO NOTHING RETURNING true""",
            resident_id,
            reason,
        )
        return bool(done)

    async def unblock(self, conn: Connection, resident_id: uuid.UUID) -> bool:
        result: str = await conn.execute(
            "DELETE FROM payments.transit_blocks WHERE resident_id = $1", resident_id
        )
        return result.endswith(" 1")

    # -- agreements ------------------------------------------------------------------------------------------

    async def insert_agreement(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        channel: str,
        payer_channel_id: str,
        external_agreement_no: str,
        sign_params: dict[str, object],
    ) -> AgreementRow:
        row = await fetch_row(
            conn,
            AgreementRow,
            f"""INSERT INTO payments.transit_agreements (resident_id, channel, payer_channel_id,
                                                         external_agreement_no, sign_params)
                VALUES ($1, $2, $3, $4, $5) RETURNING {AGREEMENT_COLUMNS}""",
            resident_id,
            channel,
            payer_channel_id,
            external_agreement_no,
            sign_params,
        )
        assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
        return row

    async def set_sign_params(
        self, conn: Connection, agreement_id: uuid.UUID, sign_params: dict[str, object]
    ) -> AgreementRow | None:
        return await fetch_row(
            conn,
            AgreementRow,
            f"""UPDATE payments.transit_agreements SET sign_params = $2, updated_at = now() WHERE id = $1
                RETURNING {AGREEMENT_COLUMNS}""",
            agreement_id,
            sign_params,
        )

    async def insert_active_agreement(
        self,
        conn: Connection,
        resident_id: uuid.UUID,
        channel: str,
        external_agreement_no: str,
        agreement_no: str,
    ) -> AgreementRow:
        row = await fetch_row(
            conn,
            AgreementRow,
            f"""INSERT INTO payments.transit_agreements (resident_id, channel, external_agreement_no, agreement_no,
                                                         status, activated_at)
                VALUES ($1, $2, $3, $4, 'active', now()) RETURNING {AGREEMENT_COLUMNS}""",
            resident_id,
            channel,
            external_agreement_no,
            agreement_no,
        )
        assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
        return row

    async def agreement(self, conn: Connection, agreement_id: uuid.UUID) -> AgreementRow | None:
        return await fetch_row(
            conn,
            AgreementRow,
            f"SELECT {AGREEMENT_COLUMNS} FROM payments.transit_agreements WHERE id = $1",
            agreement_id,
        )

    async def agreement_by_external(
        self, conn: Connection, external_agreement_no: str
    ) -> AgreementRow | None:
        return await fetch_row(
            conn,
            AgreementRow,
            f"SELECT {AGREEMENT_COLUMNS} FROM payments.transit_agreements WHERE external_agreement_no = $1",
            external_agreement_no,
        )

    async def agreements_of(self, conn: Connection, resident_id: uuid.UUID) -> list[AgreementRow]:
        return await fetch_rows(
            conn,
            AgreementRow,
            f"""SELECT {AGREEMENT_COLUMNS} FROM payments.transit_agreements WHERE resident_id = $1
                ORDER BY created_at DESC LIMIT 50""",
            resident_id,
        )

    async def active_agreement(self, conn: Connection, resident_id: uuid.UUID) -> AgreementRow | None:
        """The one deductions go under: the most recently activated."""
        return await fetch_row(
            conn,
            AgreementRow,
            f"""SELECT {AGREEMENT_COLUMNS} FROM payments.transit_agreements
                WHERE resident_id = $1 AND status = 'active' ORDER BY activated_at DESC LIMIT 1""",
            resident_id,
        )

    async def active_agreements(self, conn: Connection, resident_id: uuid.UUID) -> int:
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM payments.transit_agreements WHERE resident_id = $1 AND status = 'active'""",
                resident_id,
            )
        )

    async def has_active_on(self, conn: Connection, resident_id: uuid.UUID, channel: str) -> bool:
        return bool(
            await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM payments.transit_agreements
                                  WHERE resident_id = $1 AND channel = $2 AND status = 'active')""",
                resident_id,
                channel,
            )
        )

    async def activate_agreement(
        self, conn: Connection, agreement_id: uuid.UUID, agreement_no: str
    ) -> AgreementRow | None:
        """Compare-and-set: only a pending agreement becomes active."""
        return await fetch_row(
            conn,
            AgreementRow,
            f"""UPDATE payments.transit_agreements
                SET status = 'active', agreement_no = $2, activated_at = now(), updated_at = now()
                WHERE id = $1 AND status = 'pending' RETURNING {AGREEMENT_COLUMNS}""",
            agreement_id,
            agreement_no,
        )

    async def end_agreement(
        self, conn: Connection, agreement_id: uuid.UUID, reason: str
    ) -> AgreementRow | None:
        return await fetch_row(
            conn,
            AgreementRow,
            f"""UPDATE payments.transit_agreements
                SET status = 'ended', end_reason = $2, ended_at = now(), updated_at = now()
                WHERE id = $1 AND status IN ('pending', 'active') RETURNING {AGREEMENT_COLUMNS}""",
            agreement_id,
            reason,
        )

    async def pending_agreements(
        self, conn: Connection, since: dt.datetime, limit: int
    ) -> list[AgreementRow]:
        return await fetch_rows(
            conn,
            AgreementRow,
            f"""SELECT {AGREEMENT_COLUMNS} FROM payments.transit_agreements
                WHERE status = 'pending' AND created_at >= $1 ORDER BY created_at LIMIT $2""",
            since,
            limit,
        )

    async def stale_pending_agreements(
        self, conn: Connection, before: dt.datetime, limit: int
    ) -> list[AgreementRow]:
        return await fetch_rows(
            conn,
            AgreementRow,
            f"""SELECT {AGREEMENT_COLUMNS} FROM payments.transit_agreements
                WHERE status = 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2""",
            before,
            limit,
        )

    # -- the fare table --------------------------------------------------------------------------------------

    async def fare_policy(self, conn: Connection) -> FarePolicyRow:
        row = await fetch_row(
            conn,
            FarePolicyRow,
            "SELECT daily_cap_fen, open_tap_hours FROM payments.transit_fare_policy WHERE id",
        )
        assert row is not None  # the migration seeds the policy's one row
        return row

    async def fare_lines(self, conn: Connection) -> list[FareLineRow]:
        return await fetch_rows(
            conn,
            FareLineRow,
            """SELECT line, kind, flat_fen, base_fen, base_m, step_m, step_fen, max_fen
               FROM payments.transit_fare_lines""",
        )

    async def fare_stations(self, conn: Connection) -> list[FareStationRow]:
        return await fetch_rows(
            conn, FareStationRow, "SELECT line, station, position_m FROM payments.transit_fare_stations"
        )

    # -- taps ------------------------------------------------------------------------------------------------

    async def insert_taps(self, conn: Connection, taps: list[NewTap]) -> int:
        if not taps:
            return 0
        inserted = await conn.fetch(
            """INSERT INTO payments.transit_taps (organisation_id, tap_id, resident_id, gate_id, line, station,
                                                  direction, tapped_at, state)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                                    $7::text[], $8::timestamptz[], $9::text[])
               ON CONFLICT (organisation_id, tap_id) DO NOTHING RETURNING tap_id""",
            *[list(column) for column in zip(*(msgspec.structs.astuple(t) for t in taps), strict=True)],
        )
        return len(inserted)

    async def open_taps(self, conn: Connection, limit: int) -> list[OpenTapRow]:
        return await fetch_rows(
            conn,
            OpenTapRow,
            """SELECT organisation_id, tap_id, resident_id, line, station, direction, tapped_at
               FROM payments.transit_taps WHERE state = 'open'
               ORDER BY resident_id, organisation_id, tapped_at, tap_id LIMIT $1""",
            limit,
        )

    async def use_taps(self, conn: Connection, uses: list[tuple[uuid.UUID, str, uuid.UUID]]) -> None:
        """(organisation_id, tap_id, trip_id) of taps now part of a trip."""
        if not uses:
            return
        await conn.execute(
            """UPDATE payments.transit_taps t SET state = 'used', trip_id = u.trip_id
               FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS u(organisation_id, tap_id, trip_id)
               WHERE t.organisation_id = u.organisation_id AND t.tap_id = u.tap_id AND t.state = 'open'""",
            [u[0] for u in uses],
            [u[1] for u in uses],
            [u[2] for u in uses],
        )

    # -- trips -----------------------------------------------------------------------------------------------

    async def charged_on(self, conn: Connection, resident_id: uuid.UUID, day: dt.date) -> int:
        return int(
            await conn.fetchval(
                """SELECT coalesce(sum(charged_fen), 0) FROM payments.transit_trips
                   WHERE resident_id = $1 AND day = $2""",
                resident_id,
                day,
            )
        )

    async def insert_trips(self, conn: Connection, trips: list[NewTrip]) -> None:
        if not trips:
            return
        await conn.executemany(
            """INSERT INTO payments.transit_trips (id, resident_id, operator_id, kind, line_in, station_in,
                                                   started_at, line_out, station_out, ended_at, day, fare_fen,
                                                   charged_fen, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
            [msgspec.structs.astuple(trip) for trip in trips],
        )

    async def unbilled_groups(self, conn: Connection, limit: int) -> list[UnbilledGroupRow]:
        """A rider's unbilled trips per operator: one deduction each."""
        return await fetch_rows(
            conn,
            UnbilledGroupRow,
            """SELECT resident_id, operator_id, array_agg(id ORDER BY started_at) AS trip_ids,
                      sum(charged_fen) AS amount_fen, min(day) AS first_day, max(day) AS last_day
               FROM payments.transit_trips WHERE status = 'unbilled'
               GROUP BY resident_id, operator_id ORDER BY min(started_at) LIMIT $1""",
            limit,
        )

    async def bill_trips(self, conn: Connection, trip_ids: list[uuid.UUID], deduction_id: uuid.UUID) -> int:
        result: str = await conn.execute(
            """UPDATE payments.transit_trips SET status = 'billing', deduction_id = $2
               WHERE id = ANY($1::uuid[]) AND status = 'unbilled'""",
            trip_ids,
            deduction_id,
        )
        return int(result.split()[-1])

    async def move_trips(
        self, conn: Connection, deduction_id: uuid.UUID, from_status: str, to_status: str
    ) -> int:
        result: str = await conn.execute(
            """UPDATE payments.transit_trips SET status = $3 WHERE deduction_id = $1 AND status = $2""",
            deduction_id,
            from_status,
            to_status,
        )
        return int(result.split()[-1])

    async def trips_of(self, conn: Connection, resident_id: uuid.UUID, limit: int) -> list[TripRow]:
        return await fetch_rows(
            conn,
            TripRow,
            f"""SELECT {TRIP_COLUMNS} FROM payments.transit_trips WHERE resident_id = $1
                ORDER BY started_at DESC LIMIT $2""",
            resident_id,
            limit,
        )

    async def trips_of_deductions(self, conn: Connection, deduction_ids: list[uuid.UUID]) -> list[TripRow]:
        return await fetch_rows(
            conn,
            TripRow,
            f"""SELECT {TRIP_COLUMNS} FROM payments.transit_trips WHERE deduction_id = ANY($1::uuid[])
                ORDER BY started_at""",
            deduction_ids,
        )

    async def outstanding_trips(self, conn: Connection, resident_id: uuid.UUID) -> int:
        """Trips not yet settled by a deduction (nor a debt yet)."""
        return int(
            await conn.fetchval(
                """SELECT count(*) FROM payments.transit_trips
                   WHERE resident_id = $1 AND status IN ('unbilled', 'billing')""",
                resident_id,
            )
        )

    # -- deductions and debts --------------------------------------------------------------------------------

    async def insert_deduction(
        self,
        conn: Connection,
        *,
        resident_id: uuid.UUID,
        payee_id: uuid.UUID,
        agreement_id: uuid.UUID | None,
        order_id: uuid.UUID | None,
        out_trade_no: str | None,
        channel: str,
        amount_fen: int,
    ) -> DeductionRow:
        row = await fetch_row(
            conn,
            DeductionRow,
            f"""INSERT INTO payments.transit_deductions (resident_id, payee_id, agreement_id, order_id,
                                                         out_trade_no, channel, amount_fen)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {DEDUCTION_COLUMNS}""",
            resident_id,
            payee_id,
            agreement_id,
            order_id,
            out_trade_no,
            channel,
            amount_fen,
        )
        assert row is not None  # an INSERT without ON CONFLICT returns its row or raises
        return row

    async def deduction(self, conn: Connection, deduction_id: uuid.UUID) -> DeductionRow | None:
        return await fetch_row(
            conn,
            DeductionRow,
            f"SELECT {DEDUCTION_COLUMNS} FROM payments.transit_deductions WHERE id = $1",
            deduction_id,
        )

    async def deduction_by_order(self, conn: Connection, order_id: uuid.UUID) -> DeductionRow | None:
        return await fetch_row(
            conn,
            DeductionRow,
            f"SELECT {DEDUCTION_COLUMNS} FROM payments.transit_deductions WHERE order_id = $1",
            order_id,
        )

    async def deduction_by_out_trade_no(self, conn: Connection, out_trade_no: str) -> DeductionRow | None:
        return await fetch_row(
            conn,
            DeductionRow,
            f"SELECT {DEDUCTION_COLUMNS} FROM payments.transit_deductions WHERE out_trade_no = $1",
            out_trade_no,
        )

    async def pending_deductions(self, conn: Connection, limit: int) -> list[PendingDeductionRow]:
        return await fetch_rows(
            conn,
            PendingDeductionRow,
            """SELECT d.id, d.resident_id, d.channel, d.out_trade_no, d.amount_fen, d.created_at, d.sent_at,
                      a.agreement_no
               FROM payments.transit_deductions d
               LEFT JOIN payments.transit_agreements a ON a.id = d.agreement_id
               WHERE d.status = 'pending' ORDER BY d.created_at LIMIT $1""",
            limit,
        )

    async def claim_send(
        self, conn: Connection, deduction_id: uuid.UUID, last_sent_before: dt.datetime | None
    ) -> bool:
        """Compare-and-set on sent_at: whoever sets it asks the channel. A deduction never handed to a channel
        may be claimed by anyone (`last_sent_before` None); one already handed over only once that send is
        older than `last_sent_before`, so that a request still in flight is never doubled."""
        claimed = await conn.fetchval(
            """UPDATE payments.transit_deductions SET sent_at = now()
               WHERE id = $1 AND status = 'pending' AND (sent_at IS NULL OR sent_at < $2)
               RETURNING true""",
            deduction_id,
            last_sent_before,
        )
        return bool(claimed)

    async def deduction_paid(self, conn: Connection, deduction_id: uuid.UUID) -> bool:
        result: str = await conn.execute(
            """UPDATE payments.transit_deductions SET status = 'paid', resolved_at = now()
               WHERE id = $1 AND status = 'pending'""",
            deduction_id,
        )
        return result.endswith(" 1")

    async def deduction_failed(
        self, conn: Connection, deduction_id: uuid.UUID, failure: str
    ) -> DeductionRow | None:
        """Compare-and-set: only a pending deduction becomes a debt."""
        return await fetch_row(
            conn,
            DeductionRow,
            f"""UPDATE payments.transit_deductions SET status = 'failed', failure = $2, resolved_at = now()
                WHERE id = $1 AND status = 'pending' RETURNING {DEDUCTION_COLUMNS}""",
            deduction_id,
            failure,
        )

    async def clear_debts(
        self, conn: Connection, deduction_ids: list[uuid.UUID], cleared_by: str
    ) -> list[DeductionRow]:
        return await fetch_rows(
            conn,
            DeductionRow,
            f"""UPDATE payments.transit_deductions SET cleared_at = now(), cleared_by = $2
                WHERE id = ANY($1::uuid[]) AND status = 'failed' AND cleared_at IS NULL
                RETURNING {DEDUCTION_COLUMNS}""",
            deduction_ids,
            cleared_by,
        )

    async def mark_overpaid(self, conn: Connection, deduction_id: uuid.UUID) -> None:
        await conn.execute(
            "UPDATE payments.transit_deductions SET overpaid = true WHERE id = $1", deduction_id
        )

    async def debts_of(self, conn: Connection, resident_id: uuid.UUID) -> list[DeductionRow]:
        return await fetch_rows(
            conn,
            DeductionRow,
            f"""SELECT {DEDUCTION_COLUMNS} FROM payments.transit_deductions
                WHERE resident_id = $1 AND status = 'failed' AND cleared_at IS NULL ORDER BY created_at""",
            resident_id,
        )

    async def in_debt(self, conn: Connection, resident_id: uuid.UUID) -> bool:
        return bool(
            await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM payments.transit_deductions
                                  WHERE resident_id = $1 AND status = 'failed' AND cleared_at IS NULL)""",
                resident_id,
            )
        )

    # -- repayments ------------------------------------------------------------------------------------------

    async def insert_repayment(
        self,
        conn: Connection,
        order_id: uuid.UUID,
        resident_id: uuid.UUID,
        payee_id: uuid.UUID,
        amount_fen: int,
        deduction_ids: list[uuid.UUID],
    ) -> None:
        await conn.execute(
            """INSERT INTO payments.transit_repayments (order_id, resident_id, payee_id, amount_fen, deduction_ids)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING""",
            order_id,
            resident_id,
            payee_id,
            amount_fen,
            deduction_ids,
        )

    async def repayment_by_order(self, conn: Connection, order_id: uuid.UUID) -> RepaymentRow | None:
        return await fetch_row(
            conn,
            RepaymentRow,
            """SELECT order_id, resident_id, payee_id, amount_fen, deduction_ids, applied_at, overpaid_fen
               FROM payments.transit_repayments WHERE order_id = $1""",
            order_id,
        )

    async def apply_repayment(self, conn: Connection, order_id: uuid.UUID) -> bool:
        """Compare-and-set: a repayment clears its debts once."""
        result: str = await conn.execute(
            """UPDATE payments.transit_repayments SET applied_at = now()
               WHERE order_id = $1 AND applied_at IS NULL""",
            order_id,
        )
        return result.endswith(" 1")

    async def repayment_overpaid(self, conn: Connection, order_id: uuid.UUID, overpaid_fen: int) -> None:
        await conn.execute(
            "UPDATE payments.transit_repayments SET overpaid_fen = $2 WHERE order_id = $1",
            order_id,
            overpaid_fen,
        )

    async def open_repayment(
        self, conn: Connection, resident_id: uuid.UUID, debt_ids: list[uuid.UUID], now: dt.datetime
    ) -> OpenRepaymentRow | None:
        """The rider's oldest repayment still payable that covers one of `debt_ids` (the debts owed now)."""
        return await fetch_row(
            conn,
            OpenRepaymentRow,
            """SELECT r.order_id, r.amount_fen, r.deduction_ids
               FROM payments.transit_repayments r JOIN payments.orders o ON o.id = r.order_id
               WHERE r.resident_id = $1 AND r.applied_at IS NULL AND r.deduction_ids && $2::uuid[]
                     AND o.status = 'waiting' AND o.expires_at > $3
               ORDER BY r.created_at LIMIT 1""",
            resident_id,
            debt_ids,
            now,
        )

    # -- money for debts already repaid ----------------------------------------------------------------------

    async def insert_overpayment(
        self,
        conn: Connection,
        order_id: uuid.UUID,
        resident_id: uuid.UUID,
        payee_id: uuid.UUID,
        amount_fen: int,
    ) -> bool:
        """Once per paid order (False when it was recorded before)."""
        made = await conn.fetchval(
            """INSERT INTO payments.transit_overpayments (order_id, resident_id, payee_id, amount_fen)
               VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING RETURNING true""",
            order_id,
            resident_id,
            payee_id,
            amount_fen,
        )
        return bool(made)

    async def due_overpayments(self, conn: Connection, limit: int) -> list[OverpaymentRow]:
        return await fetch_rows(
            conn,
            OverpaymentRow,
            f"""SELECT {OVERPAYMENT_COLUMNS} FROM payments.transit_overpayments WHERE status = 'pending'
                ORDER BY created_at LIMIT $1""",
            limit,
        )

    async def pending_overpayment(self, conn: Connection, overpayment_id: uuid.UUID) -> OverpaymentRow | None:
        """The row while it is still to be sent. No lock: two job runs that both read it send the same refund (its
        idempotency key is the overpayment's id), so it is sent once without holding a row across a channel call."""
        return await fetch_row(
            conn,
            OverpaymentRow,
            f"""SELECT {OVERPAYMENT_COLUMNS} FROM payments.transit_overpayments
                WHERE id = $1 AND status = 'pending'""",
            overpayment_id,
        )

    async def overpayment_sent(
        self, conn: Connection, overpayment_id: uuid.UUID, refund_id: uuid.UUID
    ) -> None:
        await conn.execute(
            """UPDATE payments.transit_overpayments SET status = 'sent', refund_id = $2, attempts = attempts + 1,
                      last_error = '', updated_at = now() WHERE id = $1""",
            overpayment_id,
            refund_id,
        )

    async def overpayment_attempted(
        self, conn: Connection, overpayment_id: uuid.UUID, error: str, *, failed: bool
    ) -> None:
        await conn.execute(
            """UPDATE payments.transit_overpayments SET attempts = attempts + 1, last_error = $2,
                      status = CASE WHEN $3 THEN 'failed' ELSE status END, updated_at = now()
               WHERE id = $1 AND status = 'pending'""",
            overpayment_id,
            error[:500],
            failed,
        )

    async def overpayments_of(self, conn: Connection, resident_id: uuid.UUID) -> list[OverpaymentStateRow]:
        return await fetch_rows(
            conn,
            OverpaymentStateRow,
            """SELECT p.id, p.order_id, p.resident_id, p.payee_id, p.amount_fen, p.status, p.refund_id, p.attempts,
                      p.last_error, p.created_at, o.out_trade_no, f.status AS refund_status
               FROM payments.transit_overpayments p JOIN payments.orders o ON o.id = p.order_id
                    LEFT JOIN payments.refunds f ON f.id = p.refund_id
               WHERE p.resident_id = $1 ORDER BY p.created_at DESC LIMIT 50""",
            resident_id,
        )
