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


async def test_two_refunds_at_once_carry_the_payees_debt_once(services):
    """A payee owed 120 fen has 100 and 50 taken back by two refunds at once: 30 becomes its debt, once. With one
    balance row its lock made the second refund read the first's posting; with shards the ledger locks the
    payable for the carry instead (without that, each refund saw only its own posting and neither carried)."""
    ledger = services.payments.ledger
    payee = uuid.uuid4()
    payable, receivable = f"payee_payable:{payee}", f"payee_receivable:{payee}"
    clearing = f"channel_clearing:test-{uuid.uuid4().hex[:8]}"

    async def entry(conn, amount: int) -> None:
        await ledger.post(conn, f"test:{uuid.uuid4()}", "refund", [(payable, amount), (clearing, -amount)])

    async with services.pool.acquire() as conn, conn.transaction():
        await entry(conn, -120)
    first, second = await services.pool.acquire(), await services.pool.acquire()
    try:
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        await second_tx.start()
        await entry(first, 100)
        assert await ledger.carry_payee_debt(first, payee, f"a-{uuid.uuid4()}") == 0
        await entry(second, 50)
        carrying = asyncio.ensure_future(ledger.carry_payee_debt(second, payee, f"b-{uuid.uuid4()}"))
        await asyncio.sleep(0.3)
        assert not carrying.done(), "the second carry waits for the first refund's commit"
        await first_tx.commit()
        assert await carrying == 30
        await second_tx.commit()
    finally:
        await services.pool.release(first)
        await services.pool.release(second)
    async with services.pool.acquire() as conn:
        assert await ledger.balance(conn, payable) == 0
        assert await ledger.balance(conn, receivable) == 30
