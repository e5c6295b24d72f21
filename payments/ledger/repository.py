"""All SQL for the ledger."""

from __future__ import annotations

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


class LedgerRepository:
    async def add_entry(self, conn: Connection, ref: str, kind: str, memo: str) -> int | None:
        """None when an entry with this ref exists: the posting already happened."""
        entry_id: int | None = await conn.fetchval(
            """INSERT INTO payments.ledger_entries (ref, kind, memo) VALUES ($1, $2, $3)
               ON CONFLICT (ref) DO NOTHING RETURNING id""",
            ref,
            kind,
            memo,
        )
        return entry_id

    async def add_postings(self, conn: Connection, entry_id: int, postings: list[tuple[str, int]]) -> None:
        await conn.executemany(
            "INSERT INTO payments.ledger_postings (entry_id, account, amount_fen) VALUES ($1, $2, $3)",
            [(entry_id, account, amount) for account, amount in postings],
        )
        # Balances in a fixed order so concurrent entries touching the same accounts cannot deadlock.
        for account, amount in sorted(postings):
            await conn.execute(
                """INSERT INTO payments.ledger_balances (account, balance_fen) VALUES ($1, $2)
                   ON CONFLICT (account) DO UPDATE SET balance_fen = payments.ledger_balances.balance_fen
                   + EXCLUDED.balance_fen, updated_at = now()""",
                account,
                amount,
            )

    async def balance(self, conn: Connection, account: str) -> int:
        return int(
            await conn.fetchval(
                "SELECT coalesce((SELECT balance_fen FROM payments.ledger_balances WHERE account = $1), 0)",
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
               FROM payments.ledger_balances b
               FULL JOIN (SELECT account, sum(amount_fen) AS total FROM payments.ledger_postings GROUP BY account) p
                    ON p.account = b.account
               WHERE coalesce(b.balance_fen, 0) <> coalesce(p.total, 0)""",
        )

    async def negative_payables(self, conn: Connection) -> list[BalanceRow]:
        """Payable accounts are credit-normal: a positive balance means we owe less than nothing."""
        return await fetch_rows(
            conn,
            BalanceRow,
            """SELECT account, balance_fen FROM payments.ledger_balances
               WHERE account LIKE 'payee_payable:%' AND balance_fen > 0""",
        )

    async def balances(self, conn: Connection, prefix: str) -> list[BalanceRow]:
        return await fetch_rows(
            conn,
            BalanceRow,
            "SELECT account, balance_fen FROM payments.ledger_balances WHERE account LIKE $1 ORDER BY account",
            prefix + "%",
        )
