"""WeChat-specific errors, beside the provider-neutral ones of payments.channels.base."""

from __future__ import annotations

from payments.channels.base import ChannelRefused, ChannelUnavailable

# err_codes that say "the channel did not decide, ask again" rather than "no".
RETRYABLE_CODES = frozenset({"SYSTEMERROR", "BIZERR_NEED_RETRY", "FREQUENCY_LIMITED", "BANKERROR"})


class WechatError(ChannelRefused):
    """WeChat answered and said no (return_code or result_code FAIL), or answered something unusable.

    `code` is WeChat's err_code (e.g. ORDERPAID, NOTENOUGH), `FAIL` for a protocol-level refusal
    (return_code FAIL: bad signature, bad parameters), or `HTTP_4xx`."""

    def __init__(self, code: str, message: str = "", data: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.data = data or {}


class InvalidResponse(ChannelUnavailable):
    """An answer whose signature, app id or merchant id is wrong, or that is not a WeChat Pay answer at all
    (a proxy's page, missing fields): it is not trusted, so the outcome of the call is unknown (query later),
    exactly as if the channel had not answered."""


class BillError(ValueError):
    """A bill that cannot be read exactly (unknown layout, amounts not in whole fen, totals that disagree)."""
