from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

WechatAppId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, description="the mini-program's WeChat app id (wx…)")
]
AlipayAppId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, description="the mini-program's Alipay app id")
]
LoginCode = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class WechatLogin(msgspec.Struct, forbid_unknown_fields=True):
    """What a WeChat mini-program sends to log in: the code of `wx.login`, and on the first login (or when asked
    with problem `phone-required`) the code of the getPhoneNumber button."""

    app_id: WechatAppId
    code: Annotated[LoginCode, msgspec.Meta(description="from wx.login; one use, five minutes")]
    phone_code: Annotated[LoginCode, msgspec.Meta(description="from the getPhoneNumber button")] | None = None


class AlipayLogin(msgspec.Struct, forbid_unknown_fields=True):
    """What an Alipay mini-program sends to log in: the code of `my.getAuthCode`, and on the first login the
    text `my.getPhoneNumber` returned (its `response` as given, encrypted and signed by Alipay)."""

    app_id: AlipayAppId
    code: Annotated[LoginCode, msgspec.Meta(description="from my.getAuthCode; one use")]
    phone_response: (
        Annotated[
            str, msgspec.Meta(min_length=1, max_length=4096, description="what my.getPhoneNumber returned")
        ]
        | None
    ) = None


class WechatLink(msgspec.Struct, forbid_unknown_fields=True):
    app_id: WechatAppId
    code: Annotated[LoginCode, msgspec.Meta(description="a fresh wx.login code of the account to link")]


class AlipayLink(msgspec.Struct, forbid_unknown_fields=True):
    app_id: AlipayAppId
    code: Annotated[LoginCode, msgspec.Meta(description="a fresh my.getAuthCode code of the account to link")]


class LinkedIdentity(msgspec.Struct):
    """A channel identity linked to the resident: the subject (openid, Alipay open_id or user_id) masked."""

    id: uuid.UUID
    channel: Literal["wechat", "alipay"]
    app_id: str
    app_name: str
    subject: str
    linked_at: dt.datetime
    last_login_at: dt.datetime | None


class LinkedIdentities(msgspec.Struct):
    identities: list[LinkedIdentity]


class SendOutcome(msgspec.Struct, frozen=True):
    """What a channel answered to one subscribe message: `sent` (with the channel's message id), `refused` for
    good (`grant_gone` when the user holds no grant for the template: never granted, spent, or turned off), or
    `fault` (the channel could not be asked or was busy: try again later). `code` is the channel's own code."""

    status: Literal["sent", "refused", "fault"]
    code: str | None = None
    message_id: str | None = None
    grant_gone: bool = False
