"""The double-entry ledger. Accounts (debits positive, credits negative):

channel_clearing:<channel>   asset: money held for us by Alipay / WeChat Pay
payee_payable:<payee id>     liability: what we owe a department or merchant
platform_fees                revenue
rider_receivable:<resident>  asset: fares a rider owes (transit debts)
"""

from __future__ import annotations

import msgspec

from app_backend.kernel.db import Connection
from payments.ledger.repository import LedgerRepository


class LedgerCheck(msgspec.Struct):
    ok: bool
    unbalanced_entries: list[str]
    drifted_balances: list[str]
    negative_payables: list[str]


class Ledger:
    def __init__(self) -> None:
        self._repo = LedgerRepository()

    async def post(
        self, conn: Connection, ref: str, kind: str, postings: list[tuple[str, int]], memo: str = ""
    ) -> bool:
        """Posts once per `ref` (False when it was posted before). Postings must balance."""
        postings = [(account, amount) for account, amount in postings if amount != 0]
        if sum(amount for _, amount in postings) != 0 or len(postings) < 2:
            raise ValueError(f"ledger entry {ref} does not balance: {postings}")
        merged: dict[str, int] = {}
        for account, amount in postings:
            merged[account] = merged.get(account, 0) + amount
        entry_id = await self._repo.add_entry(conn, ref, kind, memo)
        if entry_id is None:
            return False
        await self._repo.add_postings(conn, entry_id, [(a, v) for a, v in merged.items() if v != 0])
        return True

    async def balance(self, conn: Connection, account: str) -> int:
        return await self._repo.balance(conn, account)

    async def check(self, conn: Connection) -> LedgerCheck:
        unbalanced = [
            f"entry {r.id} ({r.ref}) sums to {r.total} over {r.postings} postings"
            for r in await self._repo.unbalanced_entries(conn)
        ]
        drifted = [
            f"{r.account}: stored {r.stored}, postings {r.computed}"
            for r in await self._repo.drifted_balances(conn)
        ]
        negative = [f"{r.account}: {r.balance_fen}" for r in await self._repo.negative_payables(conn)]
        return LedgerCheck(
            ok=not (unbalanced or drifted or negative),
            unbalanced_entries=unbalanced,
            drifted_balances=drifted,
            negative_payables=negative,
        )
