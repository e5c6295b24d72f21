"""Payouts through the channels' transfer APIs (decision 0021): a payee configured for it is paid its settlement by
Alipay transfer or WeChat Pay transfer (v2 企业付款, v3 商家转账) instead of by bank, with one number per transfer
for life.

As refunds (decision 0018): a payout is claimed and committed first (the settlement's row locked, the payout with
its out_biz_no and the account it goes to inserted as pending); the channel is asked outside any transaction, and
its answer is recorded in a second short one (success pays the settlement and posts the payout once; a refusal
leaves the settlement due with the channel's reason). When no answer comes, the payout stays pending with its
number: a repeat, or the payouts job, queries the channel for that number and, only when the channel has none,
asks again with the same number (the same transfer at both channels). A new number is made only for a settlement
whose last transfer is known to have failed."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping

import structlog

from app_backend.kernel.crypto import FieldCipher, mask
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, invalid_field, not_found
from app_backend.organisations.service import OrganisationService
from payments.channels.base import (
    ChannelRefused,
    ChannelTransfer,
    ChannelUnavailable,
    PayoutAccount,
    PayoutChannel,
    TransferStatus,
    sends_transfers,
)
from payments.payouts.repository import PayoutAccountRow, PayoutRepository, PayoutRow
from payments.payouts.schemas import PayoutAccountSet, PayoutAccountView, PayoutView
from payments.settlement.service import SettlementService

_log = structlog.get_logger("payments.payouts")

# The account and the holder's name are personal data (a financial account, PIPL): sealed under these field names,
# the same in a payee's account and in each payout sent to it.
IDENTITY_FIELD = "payout.identity"
NAME_FIELD = "payout.name"

CHANNEL_OF = {"ALIPAY_USER_ID": "alipay", "ALIPAY_LOGON_ID": "alipay", "WECHAT_OPENID": "wechat"}
_IDENTITY_RULES = {
    "ALIPAY_USER_ID": (re.compile(r"2088\d{12}"), "an Alipay user id: 2088 and 12 more digits"),
    "ALIPAY_LOGON_ID": (
        re.compile(r"1\d{10}|[^@\s]{1,64}@[^@\s]+\.[^@\s]+"),
        "an Alipay login: a mainland mobile number or an email address",
    ),
    "WECHAT_OPENID": (re.compile(r"[A-Za-z0-9_-]{6,64}"), "an openid: 6 to 64 letters, digits, - or _"),
}


def masked_identity(identity: str) -> str:
    return mask(identity, 3, 4)


class PayoutService:
    def __init__(
        self,
        channels: Mapping[str, object],
        payees: OrganisationService,
        settlement: SettlementService,
        box: FieldCipher,
        name_rule: tuple[int, int] = (1, 0),
    ) -> None:
        self._channels = channels
        self._payees = payees
        self._settlement = settlement
        self._box = box
        self._name_rule = name_rule
        self._repo = PayoutRepository()

    def channel(self, name: str) -> PayoutChannel | None:
        """The configured channel that can send transfers, by name (a channel without a transfer API is None)."""
        found = self._channels.get(name)
        return found if isinstance(found, PayoutChannel) and sends_transfers(found) else None

    # -- payout accounts -------------------------------------------------------------------------------------

    async def set_account(
        self, conn: Connection, payee_id: uuid.UUID, data: PayoutAccountSet
    ) -> PayoutAccountView:
        """From now on the payee's settlements are sent by transfer to this account. A payout already sent keeps
        the account it was sent to (its repeats must be the same transfer)."""
        if await self._payees.payee(conn, payee_id) is None:
            raise not_found("no payee with this id (an active department, merchant or transit operator)")
        if CHANNEL_OF[data.account_type] != data.channel:
            raise invalid_field("account_type", f"not an account of {data.channel}")
        if self.channel(data.channel) is None:
            raise invalid_field("channel", f"{data.channel} is not configured for transfers here", status=422)
        identity, name = data.account.strip(), " ".join(data.name.split())
        pattern, what = _IDENTITY_RULES[data.account_type]
        if not pattern.fullmatch(identity):
            raise invalid_field("account", f"must be {what}")
        if not name:
            raise invalid_field("name", "the account holder's real name is required")
        row = await self._repo.put_account(
            conn,
            payee_id,
            data.channel,
            data.account_type,
            self._box.encrypt(IDENTITY_FIELD, identity),
            self._box.encrypt(NAME_FIELD, name),
        )
        _log.info("payout account set", payee=str(payee_id), channel=data.channel)
        return self._account_view(row)

    async def account(self, conn: Connection, payee_id: uuid.UUID) -> PayoutAccountView:
        row = await self._repo.account(conn, payee_id)
        if row is None:
            raise not_found("this payee has no payout account: it is paid by bank")
        return self._account_view(row)

    async def remove_account(self, conn: Connection, payee_id: uuid.UUID) -> None:
        """Back to bank payouts. A transfer under way is finished by the job, to the account it was sent to."""
        if not await self._repo.remove_account(conn, payee_id):
            raise not_found("this payee has no payout account: it is paid by bank")

    def _account_view(self, row: PayoutAccountRow) -> PayoutAccountView:
        head, tail = self._name_rule
        return PayoutAccountView(
            payee_id=row.payee_id,
            channel=row.channel,
            account_type=row.identity_type,
            account=masked_identity(self._box.decrypt(IDENTITY_FIELD, row.identity_enc)),
            name=mask(self._box.decrypt(NAME_FIELD, row.name_enc), head, tail),
            updated_at=row.updated_at,
        )

    # -- paying ------------------------------------------------------------------------------------------------

    async def pay(self, pool: Pool, settlement_id: uuid.UUID) -> PayoutView:
        """Pays a due settlement by transfer to its payee's account: the settlement's live transfer if it has one
        (asked about by its own number), else a new one. The answer is the transfer as it stands: pending while
        the channel's answer is unknown (repeat the call, or let the payouts job settle it)."""
        async with pool.acquire() as conn, conn.transaction():
            claimed = await self._claim(conn, settlement_id)
        if claimed is None:
            raise DomainError(
                409,
                "conflict",
                "nothing to send: the payee owed us the whole payout, which was kept back; the settlement is paid",
            )
        payout, fresh = claimed
        if payout.status != TransferStatus.PENDING:
            return self._view(payout)
        # A first send asks for the transfer; a repeat first asks the channel whether it holds this number.
        outcome = await self._ask(payout, query_first=not fresh)
        async with pool.acquire() as conn, conn.transaction():
            return self._view(await self._record(conn, payout, outcome))

    async def _claim(self, conn: Connection, settlement_id: uuid.UUID) -> tuple[PayoutRow, bool] | None:
        """(the payout, whether it was made now); None when the payee owed us the whole payout, which was kept
        back (the settlement is then paid with nothing sent). The settlement's row lock makes concurrent callers
        (a retry, the job, a bank payout being recorded) wait for this claim to commit, then find it."""
        settlement = await self._repo.lock_settlement(conn, settlement_id)
        if settlement is None:
            raise not_found("settlement not found")
        latest = await self._repo.latest(conn, settlement_id)
        if latest is not None and latest.status != TransferStatus.FAILED:
            return latest, False
        if settlement.status != "due" or settlement.payout_fen <= 0:
            raise DomainError(409, "conflict", f"settlement is {settlement.status}, nothing to pay out")
        account = await self._repo.account(conn, settlement.payee_id)
        if account is None:
            raise DomainError(
                409,
                "no-payout-account",
                "this payee is paid by bank: record the bank transfer (POST …/paid with its reference), or set "
                "its payout account first",
            )
        if self.channel(account.channel) is None:
            raise DomainError(
                409, "channel-unavailable", f"{account.channel} is not configured for transfers"
            )
        # What the payout keeps back of the payee's debt is decided before the amount is sent (decision 0019).
        kept = await self._settlement.keep_back(conn, settlement_id)
        assert kept is not None  # locked above, settlements are never deleted
        amount = kept.payout_fen - kept.recovered_at_payout_fen
        if amount <= 0:
            await self._settlement.mark_paid(conn, settlement_id, "kept back against the payee's debt")
            return None
        # One number per transfer for life: P, the settlement's day and 20 random hex digits (29 characters,
        # within WeChat's 32 for partner_trade_no and Alipay's 64 for out_biz_no).
        out_biz_no = f"P{settlement.day:%Y%m%d}{secrets.token_hex(10)}"
        payout = await self._repo.insert(
            conn, settlement, amount, account, out_biz_no, f"泰州通结算 {settlement.day} #{settlement.seq}"
        )
        _log.info(
            "payout claimed",
            settlement=str(settlement_id),
            out_biz_no=out_biz_no,
            channel=account.channel,
            retry_of=latest.out_biz_no if latest else None,
        )
        return payout, True

    async def _ask(self, payout: PayoutRow, *, query_first: bool) -> ChannelTransfer | None:
        """What the channel says about this payout's number; None when that is not known. Always its own number
        and the account it was first sent to: asking again with them is the same transfer at both channels."""
        channel = self.channel(payout.channel)
        if channel is None:
            _log.warning(
                "payout channel not configured", out_biz_no=payout.out_biz_no, channel=payout.channel
            )
            return None
        if query_first:
            try:
                found = await channel.transfer_query(payout.out_biz_no)
            except (ChannelUnavailable, ChannelRefused) as exc:
                _log.warning("payout query failed", out_biz_no=payout.out_biz_no, reason=str(exc)[:200])
                return None
            if found is not None:
                return found
        account = PayoutAccount(
            payout.identity_type,
            self._box.decrypt(IDENTITY_FIELD, payout.identity_enc),
            self._box.decrypt(NAME_FIELD, payout.name_enc),
        )
        try:
            return await channel.transfer(payout.out_biz_no, payout.amount_fen, account, payout.remark)
        except ChannelUnavailable as exc:
            _log.warning("payout outcome unknown", out_biz_no=payout.out_biz_no, reason=str(exc)[:200])
            return None
        except (ChannelRefused, ValueError) as exc:
            # Refused as made (or never sendable: our configuration): nothing moved under this number.
            _log.warning("payout refused", out_biz_no=payout.out_biz_no, refusal=str(exc)[:200])
            return ChannelTransfer(
                payout.out_biz_no, TransferStatus.FAILED, payout.amount_fen, reason=str(exc)
            )

    async def _record(
        self, conn: Connection, payout: PayoutRow, outcome: ChannelTransfer | None
    ) -> PayoutRow:
        """Records a final answer (a compare-and-set from pending, so once); the payout as it stands."""
        if outcome is None or outcome.status == TransferStatus.PENDING:
            return await self._current(conn, payout.id)
        if outcome.status == TransferStatus.SUCCEEDED and outcome.amount_fen != payout.amount_fen:
            # Never booked as asked: the ledger would state a payout the channel did not make.
            _log.error(
                "the channel paid another amount", out_biz_no=payout.out_biz_no, amount_fen=outcome.amount_fen
            )
            return await self._current(conn, payout.id)
        if outcome.status == TransferStatus.FAILED:
            failed = await self._repo.finish(
                conn, payout.id, "failed", outcome.channel_order_id, (outcome.reason or "refused")[:200]
            )
            if failed is not None:
                _log.warning(
                    "payout failed", out_biz_no=payout.out_biz_no, settlement=str(payout.settlement_id)
                )
            return failed or await self._current(conn, payout.id)
        succeeded = await self._repo.finish(conn, payout.id, "succeeded", outcome.channel_order_id, None)
        if succeeded is None:
            return await self._current(conn, payout.id)
        await self._settlement.paid_by_transfer(
            conn,
            payout.settlement_id,
            payout.channel,
            payout.out_biz_no,
            outcome.channel_order_id or payout.out_biz_no,
            outcome.paid_at,
        )
        _log.info("payout succeeded", out_biz_no=payout.out_biz_no, settlement=str(payout.settlement_id))
        return succeeded

    async def _current(self, conn: Connection, payout_id: uuid.UUID) -> PayoutRow:
        row = await self._repo.get(conn, payout_id)
        assert row is not None  # payouts are never deleted
        return row

    # -- the payouts job ---------------------------------------------------------------------------------------

    async def send_due(self, pool: Pool, limit: int = 50) -> dict[str, int]:
        """Sends the transfer of every due settlement of a payee paid by transfer that has none under way (and
        again, with a new number, one whose last transfer failed before the payee's account was changed)."""
        async with pool.acquire() as conn:
            due = await self._repo.due_to_send(conn, limit)
        counts = {"sent": 0, "skipped": 0}
        for settlement_id in due:
            try:
                await self.pay(pool, settlement_id)
            except DomainError as exc:  # paid by bank, or the account removed, meanwhile
                _log.info("payout not sent", settlement=str(settlement_id), reason=exc.detail)
                counts["skipped"] += 1
                continue
            counts["sent"] += 1
        return counts

    async def settle_pending(self, pool: Pool, limit: int = 100) -> dict[str, int]:
        """Each pending payout is queried by its own number, and sent again with that number only when the
        channel has none (the call never reached it, or we stopped before making it)."""
        async with pool.acquire() as conn:
            pending = await self._repo.pending(conn, limit)
        counts = {"pending": len(pending), "settled": 0}
        for payout in pending:
            outcome = await self._ask(payout, query_first=True)
            async with pool.acquire() as conn, conn.transaction():
                row = await self._record(conn, payout, outcome)
            counts["settled"] += row.status != TransferStatus.PENDING
        return counts

    async def confirm(self, pool: Pool, limit: int = 100) -> dict[str, int]:
        """Reconciliation of payouts: every finished payout no query has confirmed yet (or that the channel last
        contradicted) is asked about again, and what the channel says is kept for the ledger check."""
        async with pool.acquire() as conn:
            finished = await self._repo.unconfirmed(conn, limit)
        counts = {"checked": 0, "disagreeing": 0}
        for payout in finished:
            said = await self._query(payout)
            if said is None:
                continue
            async with pool.acquire() as conn:
                await self._repo.record_check(conn, payout.id, said[0], said[1])
            counts["checked"] += 1
            counts["disagreeing"] += not _agrees(payout.status, said[0])
        return counts

    async def confirm_in(self, conn: Connection, limit: int = 100) -> int:
        """confirm, in the caller's transaction (tools and tests); the job uses confirm, which holds no
        transaction while a channel answers."""
        checked = 0
        for payout in await self._repo.unconfirmed(conn, limit):
            said = await self._query(payout)
            if said is not None:
                await self._repo.record_check(conn, payout.id, said[0], said[1])
                checked += 1
        return checked

    async def _query(self, payout: PayoutRow) -> tuple[str, str | None] | None:
        """(what the channel says: succeeded, failed, pending or missing; its order id), None when it did not
        answer."""
        channel = self.channel(payout.channel)
        if channel is None:
            return None
        try:
            found = await channel.transfer_query(payout.out_biz_no)
        except (ChannelUnavailable, ChannelRefused) as exc:
            _log.warning("payout query failed", out_biz_no=payout.out_biz_no, reason=str(exc)[:200])
            return None
        if found is None:
            return "missing", None
        return found.status.value, found.channel_order_id

    # -- reading -----------------------------------------------------------------------------------------------

    async def of_settlement(self, conn: Connection, settlement_id: uuid.UUID) -> list[PayoutView]:
        return [self._view(r) for r in await self._repo.of_settlement(conn, settlement_id)]

    def _view(self, row: PayoutRow) -> PayoutView:
        return PayoutView(
            id=row.id,
            settlement_id=row.settlement_id,
            payee_id=row.payee_id,
            channel=row.channel,
            out_biz_no=row.out_biz_no,
            amount_fen=row.amount_fen,
            account=masked_identity(self._box.decrypt(IDENTITY_FIELD, row.identity_enc)),
            status=row.status,  # type: ignore[arg-type]  # the table's check constraint
            channel_order_id=row.channel_order_id,
            failure=row.failure,
            channel_status=row.channel_status,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


def _agrees(status: str, channel_status: str) -> bool:
    return channel_status == status or (status == "failed" and channel_status == "missing")
