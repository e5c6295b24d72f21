"""All SQL for the ledger."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from app_backend.kernel.db import Connection, fetch_rows


class UnbalancedEntryRow(msgspec.Struct, frozen=True):
    id: int
    ref: str
    total: int
    postings: int


class DriftedBalanceRow(msgspec.Struct, frozen=True):
    account: str
    stored: int
    computed: int


class BalanceRow(msgspec.Struct, frozen=True):
    account: str
    balance_fen: int


class ChannelDayRow(msgspec.Struct, frozen=True):
    channel: str
    day: dt.date
    ledger_fen: int
    bill_fen: int


class SkippedEntryRow(msgspec.Struct, frozen=True):
    entry_id: int
    ref: str
    payee_id: uuid.UUID
    at: dt.datetime
    settlement_id: uuid.UUID
    cutoff: dt.datetime


class SettlementProblemRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    payee_id: uuid.UUID
    day: dt.date
    seq: int
    problem: str


class PayoutProblemRow(msgspec.Struct, frozen=True):
    ref: str
    out_biz_no: str
    channel: str
    amount_fen: int
    problem: str


class MoneyBackRow(msgspec.Struct, frozen=True):
    order_id: uuid.UUID
    amount_fen: int
    status: str
    created_at: dt.datetime


BALANCE_SHARDS = 16  # migration 0016: each account's balance in up to this many rows


class LedgerRepository:
    async def add_entry(
        self, conn: Connection, ref: str, kind: str, memo: str, value_at: dt.datetime | None
    ) -> int | None:
        """None when an entry with this ref exists: the posting already happened."""
        entry_id: int | None = await conn.fetchval(
            """INSERT INTO payments.ledger_entries (ref, kind, memo, value_at)
               VALUES ($1, $2, $3, coalesce($4, now()))
               ON CONFLICT (ref) DO NOTHING RETURNING id""",
            ref,
            kind,
            memo,
            value_at,
        )
        return entry_id

    async def add_postings(self, conn: Connection, entry_id: int, postings: list[tuple[str, int]]) -> None:
        await conn.executemany(
            "INSERT INTO payments.ledger_postings (entry_id, account, amount_fen) VALUES ($1, $2, $3)",
            [(entry_id, account, amount) for account, amount in postings],
        )
        # Balances in a fixed order so concurrent entries touching the same accounts cannot deadlock, each in the
        # entry's shard: concurrent payments to one account wait on each other only one time in BALANCE_SHARDS.
        for account, amount in sorted(postings):
            await conn.execute(
                """INSERT INTO payments.ledger_balances (account, shard, balance_fen) VALUES ($1, $2, $3)
                   ON CONFLICT (account, shard) DO UPDATE SET balance_fen = payments.ledger_balances.balance_fen
                   + EXCLUDED.balance_fen, updated_at = now()""",
                account,
                entry_id % BALANCE_SHARDS,
                amount,
            )

    async def lock_account(self, conn: Connection, account: str) -> None:
        """Serialises, until the transaction ends, what reads an account's balance to decide a posting (its
        balance is in several rows, so no single row lock does)."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('ledger:' || $1::text, 0))", account
        )

    async def entry_id(self, conn: Connection, ref: str) -> int | None:
        found: int | None = await conn.fetchval("SELECT id FROM payments.ledger_entries WHERE ref = $1", ref)
        return found

    async def balance(self, conn: Connection, account: str) -> int:
        return int(
            await conn.fetchval(
                """SELECT coalesce((SELECT sum(balance_fen) FROM payments.ledger_balances WHERE account = $1), 0)
                          ::bigint""",
                account,
            )
        )

    # Sums of bigint are numeric in PostgreSQL: cast back to bigint (fen sums fit) so the rows hold ints.

    async def unbalanced_entries(self, conn: Connection) -> list[UnbalancedEntryRow]:
        return await fetch_rows(
            conn,
            UnbalancedEntryRow,
            """SELECT e.id, e.ref, coalesce(sum(p.amount_fen), 0)::bigint AS total, count(p.*) AS postings
               FROM payments.ledger_entries e LEFT JOIN payments.ledger_postings p ON p.entry_id = e.id
               GROUP BY e.id HAVING coalesce(sum(p.amount_fen), 0) <> 0 OR count(p.*) < 2""",
        )

    async def drifted_balances(self, conn: Connection) -> list[DriftedBalanceRow]:
        return await fetch_rows(
            conn,
            DriftedBalanceRow,
            """SELECT coalesce(b.account, p.account) AS account, coalesce(b.balance_fen, 0) AS stored,
                      coalesce(p.total, 0)::bigint AS computed
               FROM (SELECT account, sum(balance_fen)::bigint AS balance_fen FROM payments.ledger_balances
                     GROUP BY account) b
               FULL JOIN (SELECT account, sum(amount_fen) AS total FROM payments.ledger_postings GROUP BY account) p
                    ON p.account = b.account
               WHERE coalesce(b.balance_fen, 0) <> coalesce(p.total, 0)""",
        )

    async def wrong_side_balances(self, conn: Connection) -> list[BalanceRow]:
        """Payables and payouts due are credit-normal: a positive balance would mean we owe a payee less than
        nothing (what a payee owes us lives in its receivable, which is debit-normal)."""
        return await fetch_rows(
            conn,
            BalanceRow,
            """SELECT account, balance_fen FROM (SELECT account, sum(balance_fen)::bigint AS balance_fen
                                                 FROM payments.ledger_balances GROUP BY account) b
               WHERE ((account LIKE 'payee\\_payable:%' OR account LIKE 'payout\\_due:%') AND balance_fen > 0)
                  OR (account LIKE 'payee\\_receivable:%' AND balance_fen < 0)
               ORDER BY account""",
        )

    async def clearing_against_bills(self, conn: Connection) -> list[ChannelDayRow]:
        """Per reconciled channel day whose bill was fetched after the day ended: clearing's movement over the
        entries valued that business day, and what the bill says the channel holds."""
        return await fetch_rows(
            conn,
            ChannelDayRow,
            """SELECT r.channel, r.day, r.bill_held_fen AS bill_fen,
                      coalesce((SELECT sum(p.amount_fen)
                                FROM payments.ledger_entries e
                                JOIN payments.ledger_postings p
                                     ON p.entry_id = e.id AND p.account = 'channel_clearing:' || r.channel
                                WHERE e.value_at >= (r.day::timestamp AT TIME ZONE 'Asia/Shanghai')
                                  AND e.value_at < ((r.day + 1)::timestamp AT TIME ZONE 'Asia/Shanghai')
                                  AND e.kind IN ('payment', 'refund', 'channel_fee')), 0)::bigint AS ledger_fen
               FROM payments.reconciliation_runs r
               WHERE r.status <> 'failed' AND r.bill_held_fen IS NOT NULL
                 AND r.started_at >= ((r.day + 1)::timestamp AT TIME ZONE 'Asia/Shanghai')
               ORDER BY r.day, r.channel""",
        )

    async def skipped_by_settlement(self, conn: Connection, grace: dt.timedelta) -> list[SkippedEntryRow]:
        """Movements of a payee's payable in no settlement although a settlement made well after them had a
        cutoff past them: money a settlement run left behind."""
        return await fetch_rows(
            conn,
            SkippedEntryRow,
            """SELECT DISTINCT ON (e.id, s.payee_id) e.id AS entry_id, e.ref, s.payee_id, e.at,
                      s.id AS settlement_id, s.cutoff
               FROM payments.settlements s
               JOIN payments.ledger_postings p ON p.account = 'payee_payable:' || s.payee_id::text
               JOIN payments.ledger_entries e ON e.id = p.entry_id
               WHERE e.at < s.cutoff AND s.created_at > e.at + $1::interval
                 AND NOT EXISTS (SELECT 1 FROM payments.settlement_entries se
                                 WHERE se.entry_id = e.id AND se.payee_id = s.payee_id)
               ORDER BY e.id, s.payee_id, s.created_at""",
            grace,
        )

    async def settlements_disagreeing(self, conn: Connection) -> list[SettlementProblemRow]:
        """Settlements whose own figures disagree with their entries: the payable postings of a settlement's
        entries (its own included) cancel out; the payout is what it owed less what the payee owed us, never
        less than zero; a paid settlement has exactly its payout posted, a due one none, and what its payout kept back
        is what it recovered of the payee's debt."""
        return await fetch_rows(
            conn,
            SettlementProblemRow,
            """WITH moved AS (
                   SELECT se.settlement_id, coalesce(sum(p.amount_fen), 0)::bigint AS payable_fen
                   FROM payments.settlement_entries se
                   JOIN payments.ledger_postings p
                        ON p.entry_id = se.entry_id AND p.account = 'payee_payable:' || se.payee_id::text
                   GROUP BY se.settlement_id),
               paid AS (
                   SELECT e.ref, p.amount_fen FROM payments.ledger_entries e
                   JOIN payments.ledger_postings p ON p.entry_id = e.id AND p.account LIKE 'payout\\_due:%'
                   WHERE e.kind = 'payout'),
               kept AS (
                   SELECT e.ref, p.amount_fen FROM payments.ledger_entries e
                   JOIN payments.ledger_postings p ON p.entry_id = e.id AND p.account LIKE 'payee\\_receivable:%'
                   WHERE e.kind = 'payout' AND e.ref LIKE 'payout\\_recovery:%')
               SELECT * FROM (
               SELECT s.id, s.payee_id, s.day, s.seq, s.created_at,
                      CASE WHEN coalesce(m.payable_fen, 0) <> 0
                               THEN 'its entries leave ' || m.payable_fen || ' fen on the payable'
                           WHEN s.payout_fen <> greatest(s.net_fen, 0)
                               THEN 'pays out ' || s.payout_fen || ' fen of a net ' || s.net_fen
                           WHEN s.owed_after_fen <> greatest(-s.net_fen, 0)
                               THEN 'carries ' || s.owed_after_fen || ' fen of a net ' || s.net_fen
                           WHEN s.status = 'paid'
                                AND coalesce(pd.amount_fen, 0) <> s.payout_fen - s.recovered_at_payout_fen
                               THEN 'paid, with ' || coalesce(pd.amount_fen, 0) || ' fen posted for a payout of '
                                    || s.payout_fen || ' less ' || s.recovered_at_payout_fen || ' kept back'
                           WHEN coalesce(k.amount_fen, 0) <> -s.recovered_at_payout_fen
                               THEN 'kept back ' || s.recovered_at_payout_fen || ' fen, with '
                                    || coalesce(-k.amount_fen, 0) || ' fen of debt recovered'
                           WHEN s.status <> 'paid' AND pd.ref IS NOT NULL
                               THEN s.status || ', with a payout posted'
                      END AS problem
               FROM payments.settlements s
               LEFT JOIN moved m ON m.settlement_id = s.id
               LEFT JOIN paid pd ON pd.ref = 'payout:' || s.id::text
               LEFT JOIN kept k ON k.ref = 'payout_recovery:' || s.id::text
               WHERE s.running_account) found
               WHERE problem IS NOT NULL ORDER BY created_at""",
        )

    async def payouts_disagreeing(self, conn: Connection) -> list[PayoutProblemRow]:
        """Channel transfers where the ledger and the channel disagree: the channel says a transfer succeeded
        that no payout entry books, or a payout entry books a transfer the channel says failed or does not hold,
        or books one that is no succeeded transfer of ours. A transfer's entry is `payout:<settlement>` with the
        transfer's number as memo."""
        return await fetch_rows(
            conn,
            PayoutProblemRow,
            r"""WITH booked AS (
                   SELECT e.ref, e.memo, p.account, -p.amount_fen AS amount_fen
                   FROM payments.ledger_entries e
                   JOIN payments.ledger_postings p ON p.entry_id = e.id AND p.account LIKE 'channel\_payouts:%'
                   WHERE e.kind = 'payout')
               SELECT 'payout:' || t.settlement_id::text AS ref, t.out_biz_no, t.channel, t.amount_fen,
                      CASE WHEN t.channel_status = 'succeeded' AND b.ref IS NULL
                               THEN 'the channel says it succeeded; no payout is booked for it'
                           ELSE 'booked, and the channel says ' || t.channel_status END AS problem
               FROM payments.payouts t
               LEFT JOIN booked b ON b.ref = 'payout:' || t.settlement_id::text AND b.memo = t.out_biz_no
               WHERE (t.channel_status = 'succeeded' AND b.ref IS NULL)
                  OR (t.channel_status IN ('failed', 'missing') AND b.ref IS NOT NULL)
               UNION ALL
               SELECT b.ref, b.memo, substr(b.account, 17), b.amount_fen,
                      'booked as a channel transfer, which is no succeeded transfer of ours' AS problem
               FROM booked b
               WHERE NOT EXISTS (SELECT 1 FROM payments.payouts t
                                 WHERE b.ref = 'payout:' || t.settlement_id::text AND b.memo = t.out_biz_no
                                   AND t.status = 'succeeded')
               ORDER BY 1, 2""",
        )

    async def money_back_overdue(self, conn: Connection, grace: dt.timedelta) -> list[MoneyBackRow]:
        """Money a rider paid for debts already cleared, still not returned after `grace`."""
        return await fetch_rows(
            conn,
            MoneyBackRow,
            """SELECT o.order_id, o.amount_fen, o.status, o.created_at
               FROM payments.transit_overpayments o
               LEFT JOIN payments.refunds r ON r.id = o.refund_id
               WHERE o.created_at < now() - $1::interval
                 AND (o.status <> 'sent' OR r.status IS DISTINCT FROM 'succeeded')
               ORDER BY o.created_at""",
            grace,
        )

    async def balances(self, conn: Connection, prefix: str) -> list[BalanceRow]:
        return await fetch_rows(
            conn,
            BalanceRow,
            """SELECT account, sum(balance_fen)::bigint AS balance_fen FROM payments.ledger_balances
               WHERE account LIKE $1 GROUP BY account ORDER BY account""",
            prefix + "%",
        )
