"""The ledger keeps each account's balance in shards so that concurrent payments to the same accounts (every ticket
of a rush pays the same organiser through the same channel) do not queue on one balance row; what it reports is
still the sum of the account's postings."""

from __future__ import annotations

import asyncio
import uuid


async def test_concurrent_entries_to_one_account_spread_over_shards_and_add_up(services):
    ledger = services.payments.ledger
    # Accounts of a channel of its own: a payee's payable would be found by settlements, which read the
    # payment's order from the entry (the suite shares one database).
    channel = f"test-{uuid.uuid4().hex[:8]}"
    clearing, payee = f"channel_clearing:{channel}", f"channel_fees:{channel}"

    async def post(n: int) -> None:
        async with services.pool.acquire() as conn, conn.transaction():
            await ledger.post(
                conn, f"test:{uuid.uuid4()}", "payment", [(clearing, 100 + n), (payee, -(100 + n))]
            )

    await asyncio.gather(*(post(n) for n in range(40)))
    expected = sum(100 + n for n in range(40))
    async with services.pool.acquire() as conn:
        shards = await conn.fetchval(
            "SELECT count(*) FROM payments.ledger_balances WHERE account = $1", clearing
        )
        assert shards > 1, "the postings should land in several shards"
        assert await ledger.balance(conn, clearing) == expected
        assert await ledger.balance(conn, payee) == -expected
        stored = await conn.fetchval(
            "SELECT sum(amount_fen) FROM payments.ledger_postings WHERE account = $1", clearing
        )
        assert stored == expected
    async with services.pool.acquire() as conn:
        check = await ledger.check(conn)
    assert not [d for d in check.drifted_balances if clearing in d or payee in d]
