"""The one interface every payment channel implements, with provider-neutral results.

Adapters live one folder per channel API (alipay/, wechat/ for WeChat Pay v2, wechat_v3/ for v3); a merchant's
configuration picks one adapter per channel name. Amounts are integer fen everywhere; adapters convert to the
channel's units."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class TradeStatus(StrEnum):
    WAITING = "waiting"  # created, not paid yet
    PAID = "paid"  # money received (Alipay TRADE_SUCCESS, WeChat SUCCESS)
    CLOSED = "closed"  # closed unpaid, or fully refunded and closed by the channel
    FINISHED = "finished"  # paid and no longer refundable (Alipay TRADE_FINISHED)
    FAILED = "failed"  # a withholding deduction the channel refused


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TransferStatus(StrEnum):
    PENDING = "pending"  # accepted, not done yet (Alipay DEALING, WeChat PROCESSING): query again
    SUCCEEDED = "succeeded"  # the money reached the payee's account
    FAILED = "failed"  # refused or given up: no money moved, and this number will never move any


class AgreementStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True)
class ChannelOrder:
    out_trade_no: str
    amount_fen: int
    subject: str
    method: str  # app | mini | jsapi | native
    notify_url: str
    expires_at: dt.datetime
    client_ip: str = "127.0.0.1"
    payer_id: str | None = None  # Alipay buyer open id / WeChat openid (mini programs, JSAPI)


@dataclass(frozen=True)
class PayParams:
    """What the client needs to pay: an Alipay order string, a mini-program trade number, the arguments of
    wx.requestPayment, or a QR code URL (native)."""

    channel: str
    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class ChannelTrade:
    out_trade_no: str
    status: TradeStatus
    amount_fen: int
    channel_trade_no: str | None = None
    paid_at: dt.datetime | None = None


@dataclass(frozen=True)
class ChannelRefund:
    out_refund_no: str
    status: RefundStatus
    amount_fen: int
    channel_refund_no: str | None = None


@dataclass(frozen=True)
class Notification:
    """A verified asynchronous notification. `kind` is payment, refund, agreement or deduction."""

    kind: str
    app_id: str
    out_trade_no: str
    status: TradeStatus | RefundStatus | AgreementStatus
    amount_fen: int
    channel_trade_no: str | None = None
    out_refund_no: str | None = None
    agreement_no: str | None = None
    paid_at: dt.datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BillLine:
    """One line of a channel's daily bill, in fen."""

    day: dt.date
    kind: str  # payment | refund
    out_trade_no: str
    channel_trade_no: str
    amount_fen: int
    fee_fen: int
    status: str
    out_refund_no: str | None = None
    at: dt.datetime | None = None


@dataclass(frozen=True)
class Agreement:
    external_agreement_no: str
    status: AgreementStatus
    agreement_no: str | None = None  # the channel's id, once signed
    sign_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PayoutAccount:
    """Where a channel transfer goes: an Alipay account (identity_type ALIPAY_USER_ID, the 2088… user id, or
    ALIPAY_LOGON_ID, the login email or phone) or a WeChat user (WECHAT_OPENID, the openid under our app id), and
    the account holder's real name, which both channels check against the account."""

    identity_type: str
    identity: str
    name: str

    def __repr__(self) -> str:  # personal data: never in a log line or a traceback
        return f"PayoutAccount(identity_type={self.identity_type!r}, identity=…, name=…)"


@dataclass(frozen=True)
class ChannelTransfer:
    """A channel's answer about one transfer, by our number for it (Alipay out_biz_no, WeChat
    partner_trade_no). `reason` says why a FAILED transfer failed, in the channel's words."""

    out_biz_no: str
    status: TransferStatus
    amount_fen: int
    channel_order_id: str | None = None
    paid_at: dt.datetime | None = None
    reason: str | None = None


class InvalidNotification(Exception):
    """The notification's signature, sign type or app id is wrong; it is refused and not acknowledged."""


class ForeignNotification(InvalidNotification):
    """Correctly signed, but a field that identifies us (app id, seller id, merchant id, sub-merchant) names
    someone else: refused like any invalid notification, and counted by that field."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is not ours")
        self.field = field


class ChannelUnavailable(Exception):
    """The channel did not answer (timeout, connection refused, 5xx): the outcome is unknown, query later."""


class ChannelRefused(Exception):
    """The channel answered, and definitely said no to a call as it was made (bad parameters, a permission it
    lacks, a trade in the wrong state): nothing happened there, so nothing is pending."""


class PaymentChannel(Protocol):
    name: str

    async def create(self, order: ChannelOrder) -> PayParams: ...

    async def query(self, out_trade_no: str) -> ChannelTrade | None:
        """None when the channel has no such trade."""
        ...

    async def close(self, out_trade_no: str) -> None: ...

    async def refund(
        self, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund: ...

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund | None: ...

    def parse_notification(self, body: bytes, content_type: str) -> Notification:
        """Verifies and parses; raises InvalidNotification."""
        ...

    def acknowledge(self, accepted: bool) -> tuple[bytes, str]:
        """The body and media type the channel expects in answer (Alipay: 'success'; WeChat: XML)."""
        ...

    async def download_bill(self, day: dt.date) -> list[BillLine]: ...

    async def agreement_sign(
        self, external_agreement_no: str, payer_id: str, notify_url: str
    ) -> Agreement: ...

    async def agreement_query(self, external_agreement_no: str) -> Agreement: ...

    async def deduct(
        self, agreement_no: str, out_trade_no: str, amount_fen: int, subject: str, notify_url: str
    ) -> ChannelTrade:
        """A withholding deduction. WAITING means accepted, not paid: query until PAID or FAILED."""
        ...


@runtime_checkable
class HeaderSignedNotifications(Protocol):
    """A channel whose notifications are signed in their HTTP headers (WeChat Pay v3: Wechatpay-Signature and
    its serial, timestamp and nonce) and whose verification may have to fetch the signer's certificate first, so
    it is asynchronous. The notification endpoint uses this instead of `parse_notification` where a channel has
    it."""

    async def read_notification(self, body: bytes, headers: Mapping[str, str]) -> Notification:
        """Verifies and parses; raises InvalidNotification."""


@runtime_checkable
class PayoutChannel(Protocol):
    """Money out of our balance at the channel to a payee's account (Alipay alipay.fund.trans.uni.transfer,
    WeChat Pay v2 企业付款到零钱, WeChat Pay v3 商家转账). Separate from PaymentChannel: a merchant may take
    payments through a channel whose transfer product it has not signed (an adapter that can send transfers but
    whose merchant has not configured them says so with `transfers_configured = False`; see `sends_transfers`).
    `out_biz_no` is the transfer's idempotency key at every channel (Alipay out_biz_no, WeChat v2
    partner_trade_no, v3 out_bill_no): the same number asked again is the same transfer, never a second one."""

    name: str

    async def transfer(
        self, out_biz_no: str, amount_fen: int, account: PayoutAccount, remark: str
    ) -> ChannelTransfer:
        """SUCCEEDED, PENDING (accepted, query later), or FAILED with the channel's reason for a definite
        refusal (wrong name, account closed, our balance short). An unknown outcome (no answer, a system error,
        an untrusted answer) raises ChannelUnavailable: query with the same number, never send a new one."""
        ...

    async def transfer_query(self, out_biz_no: str) -> ChannelTransfer | None:
        """None when the channel has no transfer with this number (the call never reached it)."""
        ...


def sends_transfers(channel: object) -> bool:
    """Whether a configured channel can pay payees by transfer: a PayoutChannel whose merchant has not said
    otherwise (`transfers_configured`)."""
    return isinstance(channel, PayoutChannel) and bool(getattr(channel, "transfers_configured", True))
