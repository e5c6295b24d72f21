"""Alipay-specific failures beyond the two of the channel interface."""

from __future__ import annotations

from payments.channels.base import ChannelRefused, ChannelUnavailable


class AlipayInvalidResponse(ChannelUnavailable):
    """The gateway's answer is unsigned, badly signed or malformed: it is not trusted, so the outcome is unknown
    (query later), exactly as if the gateway had not answered."""


class AlipayRefused(ChannelRefused):
    """The gateway answered, signed, with a definite refusal that has no provider-neutral result (a call that cannot
    succeed as made: bad parameters, missing permission, a trade in the wrong state)."""

    def __init__(self, method: str, code: str, msg: str, sub_code: str = "", sub_msg: str = "") -> None:
        super().__init__(f"{method}: {code} {msg} {sub_code} {sub_msg}".strip())
        self.method = method
        self.code = code
        self.msg = msg
        self.sub_code = sub_code
        self.sub_msg = sub_msg
