from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

PayoutChannelName = Literal["alipay", "wechat"]
IdentityType = Literal["ALIPAY_USER_ID", "ALIPAY_LOGON_ID", "WECHAT_OPENID"]


class PayoutAccountSet(msgspec.Struct, forbid_unknown_fields=True):
    """Pay this payee by channel transfer: to an Alipay account (its 2088… user id, or its login email or phone)
    or to a WeChat user (the openid under the merchant's app id), whose holder's real name the channel checks."""

    channel: PayoutChannelName
    account_type: Annotated[
        IdentityType,
        msgspec.Meta(description="ALIPAY_USER_ID or ALIPAY_LOGON_ID for alipay, WECHAT_OPENID for wechat"),
    ]
    # Not `identity`: a body field named like a dependency (identity's services) is taken by Litestar for the
    # dependency, and its validation error becomes a 500.
    account: Annotated[
        str, msgspec.Meta(min_length=1, max_length=100, description="the user id, login or openid")
    ]
    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, description="the account holder's real name")
    ]


class PayoutAccountView(msgspec.Struct):
    """A payee's payout account as staff see it: the account and the name masked."""

    payee_id: uuid.UUID
    channel: str
    account_type: str
    account: str
    name: str
    updated_at: dt.datetime


PayoutStatus = Literal["pending", "succeeded", "failed"]


class PayoutView(msgspec.Struct):
    """One channel transfer of a settlement. `out_biz_no` is its number at the channel for life; `failure` is the
    channel's reason when it refused (the settlement then stays due and can be sent again once fixed)."""

    id: uuid.UUID
    settlement_id: uuid.UUID
    payee_id: uuid.UUID
    channel: str
    out_biz_no: str
    amount_fen: int
    account: Annotated[str, msgspec.Meta(description="where it was sent, masked")]
    status: Annotated[
        PayoutStatus, msgspec.Meta(description="pending while the channel's answer is not known")
    ]
    channel_order_id: str | None
    failure: str | None
    channel_status: Annotated[
        str | None,
        msgspec.Meta(
            description="what the channel said when last asked: succeeded, failed, pending, missing"
        ),
    ]
    created_at: dt.datetime
    finished_at: dt.datetime | None


class Payouts(msgspec.Struct):
    payouts: list[PayoutView]
