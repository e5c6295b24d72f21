"""WeChat Pay API v3 behind the provider-neutral PaymentChannel interface, through wechatpayv3's async client.

JSON both ways; every request signed WECHATPAY2-SHA256-RSA2048 with the merchant's API certificate key (the SDK
does it); every answer and notification verified against the platform certificate its Wechatpay-Serial names
(client.PlatformCore); notifications' resources decrypted with the APIv3 key (AES-256-GCM). Amounts are fen on
both sides. The channel's name is `wechat`, as v2's: a merchant is configured for one API or the other, and
orders, refunds and reconciliation do not know which.

Payouts go through 商家转账 (`/v3/fund-app/mch-transfer/transfer-bills`, the SDK's mch_transfer_bills) where
the merchant has configured a transfer scene. Withholding (papay, transit's ride-first-pay-later) stays on API
v2: a v3 merchant asked to sign, query or deduct answers a clear 422 naming the channel."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
import logging
import secrets
import time
import zlib
from collections.abc import Awaitable, Mapping
from typing import Any

import httpx
from wechatpayv3.async_ import WeChatPayType

from app_backend.kernel.clock import BUSINESS_TZ
from app_backend.kernel.errors import DomainError
from payments.channels.base import (
    Agreement,
    BillLine,
    ChannelOrder,
    ChannelRefund,
    ChannelTrade,
    ChannelTransfer,
    ChannelUnavailable,
    ForeignNotification,
    InvalidNotification,
    Notification,
    PayoutAccount,
    PayParams,
    RefundStatus,
    TradeStatus,
    TransferStatus,
)
from payments.channels.wechat.bill import parse_bill
from payments.channels.wechat.errors import BillError, InvalidResponse, WechatError
from payments.channels.wechat_v3.client import SignatureRefused, V3Client, header
from payments.channels.wechat_v3.config import WechatV3Config

log = logging.getLogger(__name__)

NAME = "wechat"
_PAY_TYPES = {
    "jsapi": WeChatPayType.JSAPI,
    "mini": WeChatPayType.MINIPROG,
    "app": WeChatPayType.APP,
    "native": WeChatPayType.NATIVE,
}
_TRADE_STATES = {
    "SUCCESS": TradeStatus.PAID,
    "REFUND": TradeStatus.PAID,  # paid, with refunds (tracked as refunds)
    "NOTPAY": TradeStatus.WAITING,
    "USERPAYING": TradeStatus.WAITING,
    "PAYERROR": TradeStatus.WAITING,  # the payer may still pay
    "CLOSED": TradeStatus.CLOSED,
    "REVOKED": TradeStatus.CLOSED,
}
_REFUND_STATES = {
    "SUCCESS": RefundStatus.SUCCEEDED,
    "PROCESSING": RefundStatus.PENDING,
    "CLOSED": RefundStatus.FAILED,
    "ABNORMAL": RefundStatus.FAILED,  # the card is gone: a manual transfer, as v2's CHANGE
}
# 商家转账 bill states: ACCEPTED (受理), PROCESSING and TRANSFERING (money locked, on its way), WAIT_USER_CONFIRM
# (the payee has to accept it in WeChat; cancelled by WeChat after 24 hours), CANCELING: all not final yet.
_TRANSFER_STATES = {
    "SUCCESS": TransferStatus.SUCCEEDED,
    "ACCEPTED": TransferStatus.PENDING,
    "PROCESSING": TransferStatus.PENDING,
    "TRANSFERING": TransferStatus.PENDING,
    "WAIT_USER_CONFIRM": TransferStatus.PENDING,
    "CANCELING": TransferStatus.PENDING,
    "FAIL": TransferStatus.FAILED,
    "CANCELLED": TransferStatus.FAILED,
}
# WeChat checks the payee's name only from 0.30 yuan, the least a 商家转账 may be (and the SDK drops the name
# below it): smaller payouts are refused here rather than sent unchecked.
MIN_TRANSFER_FEN = 30
_TRANSFER_REMARK_CHARS = 32
# Error codes WeChat Pay v3 documents as "not decided, call again with the same number".
RETRYABLE_CODES = frozenset({"SYSTEM_ERROR", "SYSTEMERROR", "FREQUENCY_LIMITED", "BANK_ERROR", "BANKERROR"})
_NOT_FOUND = frozenset({"ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS", "NOT_FOUND"})
# For transfers WeChat names a few more (商家转账's "可重试的业务错误码"): the same number, asked again, decides.
_TRANSFER_UNKNOWN = RETRYABLE_CODES | {"FREQUENCY_LIMIT", "NETWORK_ERROR", "RESOURCE_INSUFFICIENT"}
_NO_BILL = frozenset({"NO_STATEMENT_EXIST", "NO_BILL_EXIST"})
# Fields only a service provider's (partner) messages carry: we are a merchant of our own, so a message naming
# any of them is about someone else's trade, even under our mchid.
_PARTNER_FIELDS = ("sp_mchid", "sub_mchid", "sp_appid", "sub_appid")
_ACK_OK = json.dumps({"code": "SUCCESS", "message": "成功"}).encode("utf-8")
_ACK_FAIL = json.dumps({"code": "FAIL", "message": "失败"}).encode("utf-8")
WITHHOLDING_V2_ONLY = (
    "this WeChat Pay merchant is configured for API v3; withholding (papay, transit ride-first-pay-later) is "
    "available on API v2 only"
)


class WechatV3Error(WechatError):
    """WeChat Pay v3 answered 4xx and said no: `code` is its error code (ORDERPAID, NOT_ENOUGH, PARAM_ERROR, ...)
    and `status` the HTTP status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(code, message)
        self.status = status


def _time(value: Any) -> dt.datetime | None:
    """RFC 3339 with an offset (2018-06-08T10:34:56+08:00)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=BUSINESS_TZ)


def _rfc3339(moment: dt.datetime) -> str:
    if moment.tzinfo is None:  # naive: taken as UTC, as the v2 adapter does
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(BUSINESS_TZ).replace(microsecond=0).isoformat()


def _fen(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidResponse(f"{what} is not a whole number of fen: {value!r}")
    return value


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def _error(body: Any) -> tuple[str, str]:
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return "FAIL", ""
    if not isinstance(data, dict):
        return "FAIL", ""
    return str(data.get("code") or "FAIL"), str(data.get("message") or "")


def _json(body: Any, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise InvalidResponse(f"{what}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidResponse(f"{what}: the answer is not a JSON object")
    return data


def withholding_unsupported() -> DomainError:
    return DomainError(
        422,
        "channel-unsupported",
        f"channel: {WITHHOLDING_V2_ONLY}",
        extra={"errors": [{"field": "channel", "message": WITHHOLDING_V2_ONLY}]},
    )


class WechatV3Channel:
    """PaymentChannel for WeChat Pay API v3 (and HeaderSignedNotifications: its notifications are verified from
    their headers, which may need a certificate download; and PayoutChannel through 商家转账 where the merchant
    has configured a transfer scene)."""

    name = NAME
    api_version = "v3"

    def __init__(self, config: WechatV3Config) -> None:
        self.config = config
        self._client = V3Client(config)

    @property
    def certificates(self) -> Any:
        """The platform certificates held and the download count (PlatformCore)."""
        return self._client.core

    # -- plumbing --------------------------------------------------------------------------------------------

    async def _call(self, what: str, call: Awaitable[tuple[int, Any]]) -> tuple[int, Any]:
        """One SDK call, its failures sorted: no answer, 5xx, 429 or a retryable code -> ChannelUnavailable (the
        outcome is unknown: query with the same number); an answer that does not verify -> InvalidResponse (a
        ChannelUnavailable too); any other 4xx -> WechatV3Error (a refusal)."""
        try:
            status, body = await call
        except httpx.HTTPError as exc:  # timeout, refused connection, reset
            raise ChannelUnavailable(f"wechat v3 {what}: {type(exc).__name__}") from exc
        if status >= 500 or status == 429:
            raise ChannelUnavailable(f"wechat v3 {what}: HTTP {status} {_error(body)[0]}")
        if status >= 400:
            code, message = _error(body)
            if code in RETRYABLE_CODES:
                raise ChannelUnavailable(f"wechat v3 {what}: {code}")
            raise WechatV3Error(code, message, status)
        return status, body

    def _check_ours(self, data: Mapping[str, Any], what: str, *, appid: bool = True) -> None:
        """An answer about a trade names our merchant (and app): anything else is not to be believed."""
        if data.get("mchid") not in (None, self.config.mchid):
            raise InvalidResponse(f"{what}: the answer names another mchid")
        if appid and data.get("appid") not in (None, self.config.appid):
            raise InvalidResponse(f"{what}: the answer names another appid")
        if any(data.get(name) for name in _PARTNER_FIELDS):
            raise InvalidResponse(f"{what}: the answer is about a sub-merchant's trade")

    # -- orders ----------------------------------------------------------------------------------------------

    async def create(self, order: ChannelOrder) -> PayParams:
        pay_type = _PAY_TYPES.get(order.method)
        if pay_type is None:
            raise ValueError(f"wechat has no pay method {order.method!r}; use one of {sorted(_PAY_TYPES)}")
        if order.amount_fen <= 0:
            raise ValueError("amount_fen must be positive")
        jsapi = pay_type in (WeChatPayType.JSAPI, WeChatPayType.MINIPROG)
        if jsapi and not order.payer_id:
            raise ValueError(f"method {order.method!r} needs the payer's openid (payer_id)")
        _, body = await self._call(
            "pay",
            self._client.pay(
                description=_truncate_utf8(order.subject, 127),
                out_trade_no=order.out_trade_no,
                amount={"total": order.amount_fen, "currency": "CNY"},
                payer={"openid": order.payer_id} if jsapi else None,
                time_expire=_rfc3339(order.expires_at),
                scene_info={"payer_client_ip": order.client_ip or self.config.client_ip},
                notify_url=order.notify_url,
                pay_type=pay_type,
            ),
        )
        data = _json(body, "pay")
        if pay_type == WeChatPayType.NATIVE:
            code_url = data.get("code_url")
            if not isinstance(code_url, str) or not code_url:
                raise InvalidResponse("a native order came back without code_url")
            return PayParams(NAME, order.method, {"code_url": code_url})
        prepay_id = data.get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise InvalidResponse("the order came back without prepay_id")
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        if pay_type == WeChatPayType.APP:
            # The app SDK's PayReq: signed over appid, timestamp, noncestr and prepayid.
            return PayParams(
                NAME,
                order.method,
                {
                    "appid": self.config.appid,
                    "partnerid": self.config.mchid,
                    "prepayid": prepay_id,
                    "package": "Sign=WXPay",
                    "noncestr": nonce,
                    "timestamp": timestamp,
                    "sign": self._client.sign([self.config.appid, timestamp, nonce, prepay_id]),
                },
            )
        package = f"prepay_id={prepay_id}"
        # wx.requestPayment (mini programs) / WeixinJSBridge (JSAPI): signType RSA over appId, timeStamp,
        # nonceStr and package.
        return PayParams(
            NAME,
            order.method,
            {
                "appId": self.config.appid,
                "timeStamp": timestamp,
                "nonceStr": nonce,
                "package": package,
                "signType": "RSA",
                "paySign": self._client.sign([self.config.appid, timestamp, nonce, package]),
            },
        )

    async def query(self, out_trade_no: str) -> ChannelTrade | None:
        try:
            _, body = await self._call("query", self._client.query(out_trade_no=out_trade_no))
        except WechatV3Error as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise
        data = _json(body, "query")
        if data.get("out_trade_no") != out_trade_no:
            raise InvalidResponse("the answer is about another trade")
        self._check_ours(data, "query")
        status = _TRADE_STATES.get(str(data.get("trade_state", "")), TradeStatus.WAITING)
        amount = _object(data.get("amount"))
        total = amount.get("total")
        return ChannelTrade(
            out_trade_no=out_trade_no,
            status=status,
            amount_fen=_fen(total, "amount.total") if total is not None or status is TradeStatus.PAID else 0,
            channel_trade_no=str(data.get("transaction_id") or "") or None,
            paid_at=_time(data.get("success_time")) if status is TradeStatus.PAID else None,
        )

    async def close(self, out_trade_no: str) -> None:
        """Closes an unpaid order. Closing a closed or unknown order is a no-op; a paid one raises
        WechatV3Error('ORDERPAID')."""
        try:
            await self._call("close", self._client.close(out_trade_no))
        except WechatV3Error as exc:
            if exc.code not in ("ORDER_CLOSED", "ORDERCLOSED", *_NOT_FOUND):
                raise

    # -- refunds ---------------------------------------------------------------------------------------------

    def _refund(self, data: Mapping[str, Any], out_refund_no: str) -> ChannelRefund:
        if data.get("out_refund_no") != out_refund_no:
            raise InvalidResponse("the refund answer is about another refund")
        if any(data.get(name) for name in _PARTNER_FIELDS):
            raise InvalidResponse("the refund answer is about a sub-merchant's refund")
        amount = _object(data.get("amount"))
        return ChannelRefund(
            out_refund_no=out_refund_no,
            status=_REFUND_STATES.get(str(data.get("status", "")), RefundStatus.PENDING),
            amount_fen=_fen(amount.get("refund"), "amount.refund"),
            channel_refund_no=str(data.get("refund_id") or "") or None,
        )

    async def refund(
        self, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund:
        """POST /v3/refund/domestic/refunds; out_refund_no makes it idempotent. A business refusal (not enough
        balance, more than is left, ...) is FAILED; no answer or a retryable code raises ChannelUnavailable
        (query the same number)."""
        if not 0 < amount_fen <= total_fen:
            raise ValueError("a refund is between 1 fen and the order's total")
        try:
            _, body = await self._call(
                "refund",
                self._client.refund(
                    out_refund_no=out_refund_no,
                    amount={"refund": amount_fen, "total": total_fen, "currency": "CNY"},
                    out_trade_no=out_trade_no,
                    reason=_truncate_utf8(reason, 80) or None,
                    notify_url=self.config.refund_notify_url,
                ),
            )
        except WechatV3Error as exc:
            if exc.status == 401:  # our signature or certificate: a configuration fault, not a refusal
                raise
            log.warning("wechat v3 refused refund %s of %s: %s", out_refund_no, out_trade_no, exc)
            return ChannelRefund(out_refund_no, RefundStatus.FAILED, amount_fen)
        refund = self._refund(_json(body, "refund"), out_refund_no)
        if refund.amount_fen != amount_fen:
            raise InvalidResponse("the refund answer does not match the request")
        return refund

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund | None:
        try:
            _, body = await self._call("refund query", self._client.query_refund(out_refund_no))
        except WechatV3Error as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise
        data = _json(body, "refund query")
        if data.get("out_trade_no") not in (None, out_trade_no):
            raise InvalidResponse("the refund is of another trade")
        return self._refund(data, out_refund_no)

    # -- payouts (PayoutChannel): 商家转账 ---------------------------------------------------------------------

    @property
    def transfers_configured(self) -> bool:
        """Whether this merchant sends transfers: it has signed 商家转账 and configured its transfer scene."""
        return bool(self.config.transfer_scene_id)

    async def transfer(
        self, out_biz_no: str, amount_fen: int, account: PayoutAccount, remark: str
    ) -> ChannelTransfer:
        """POST /v3/fund-app/mch-transfer/transfer-bills to the openid, the holder's real name encrypted with
        the platform certificate's public key (RSA-OAEP; Wechatpay-Serial names it). `out_biz_no` is WeChat's
        out_bill_no: asked again with the same parameters it is the same bill. The bill's state: SUCCESS, or
        PENDING while accepted, on its way or waiting for the payee to confirm, or FAILED (FAIL, CANCELLED) with
        WeChat's fail_reason. A refusal is FAILED only when WeChat holds no bill under the number (otherwise the
        number was used with other parameters: ChannelUnavailable, the query says what became of it); no answer,
        a 5xx, a retryable code or an answer that does not verify raise ChannelUnavailable."""
        if amount_fen < MIN_TRANSFER_FEN:
            raise ValueError(
                f"a WeChat transfer is at least {MIN_TRANSFER_FEN} fen, where WeChat checks the name"
            )
        if account.identity_type != "WECHAT_OPENID":
            raise ValueError("a WeChat transfer goes to a WECHAT_OPENID")
        if not account.name:
            raise ValueError("a WeChat transfer names the payee's real name")
        if not remark:
            raise ValueError("a WeChat transfer has a remark (the payee sees it)")
        scene = self.config.transfer_scene_id
        if not scene:
            raise ValueError("this WeChat Pay merchant has no transfer scene configured (transfer_scene_id)")
        # The name is encrypted for the platform certificate we hold; with none (and none downloadable) the
        # request is never made, so nothing can have happened under the number.
        if await self._client.core.encryption_certificate() is None:
            raise ChannelUnavailable("wechat v3 transfer: no platform certificate to encrypt the name for")
        try:
            _, body = await self._call(
                "transfer",
                self._client.mch_transfer_bills(
                    out_bill_no=out_biz_no,
                    transfer_scene_id=scene,
                    openid=account.identity,
                    transfer_amount=amount_fen,
                    transfer_remark=remark[:_TRANSFER_REMARK_CHARS],
                    user_name=account.name,
                    user_recv_perception=self.config.transfer_user_recv_perception,
                    transfer_scene_report_infos=[dict(i) for i in self.config.transfer_scene_report_infos],
                    notify_url=self.config.transfer_notify_url,
                ),
            )
        except WechatV3Error as exc:
            if exc.code in _TRANSFER_UNKNOWN:
                raise ChannelUnavailable(f"wechat v3 transfer {out_biz_no}: {exc.code}") from exc
            if exc.status == 401:  # our signature or certificate: a configuration fault, nothing was made
                raise
            if await self.transfer_query(out_biz_no) is not None:
                raise ChannelUnavailable(
                    f"wechat v3 transfer {out_biz_no}: {exc.code}, and WeChat holds a bill under the number"
                ) from exc
            log.warning("wechat v3 refused transfer %s: %s", out_biz_no, exc.code)
            return ChannelTransfer(
                out_biz_no,
                TransferStatus.FAILED,
                amount_fen,
                reason=f"{exc.code} {exc.message}".strip()[:200],
            )
        return self._transfer(_json(body, "transfer"), out_biz_no, amount_fen)

    async def transfer_query(self, out_biz_no: str) -> ChannelTransfer | None:
        """GET /v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{out_bill_no}; None when WeChat holds no bill
        under the number (the call never reached it)."""
        try:
            _, body = await self._call(
                "transfer query", self._client.mch_transfer_bills_query(out_bill_no=out_biz_no)
            )
        except WechatV3Error as exc:
            if exc.code in _NOT_FOUND:
                return None
            if exc.code in _TRANSFER_UNKNOWN:
                raise ChannelUnavailable(f"wechat v3 transfer query {out_biz_no}: {exc.code}") from exc
            raise
        data = _json(body, "transfer query")
        # The bill names the merchant as mch_id (not mchid, as the pay API does).
        if data.get("mch_id") not in (None, self.config.mchid) or data.get("mchid") not in (
            None,
            self.config.mchid,
        ):
            raise InvalidResponse("transfer query: the answer names another merchant")
        if data.get("appid") not in (None, self.config.appid):
            raise InvalidResponse("transfer query: the answer names another appid")
        return self._transfer(data, out_biz_no, _fen(data.get("transfer_amount"), "transfer_amount"))

    @staticmethod
    def _transfer(data: Mapping[str, Any], out_biz_no: str, amount_fen: int) -> ChannelTransfer:
        if data.get("out_bill_no") != out_biz_no:
            raise InvalidResponse("the transfer answer is about another transfer")
        state = str(data.get("state", ""))
        status = _TRANSFER_STATES.get(state)
        if status is None:
            raise InvalidResponse(f"unknown transfer state {state!r}")
        reason = None
        if status is TransferStatus.FAILED:
            reason = str(data.get("fail_reason") or state)[:200]
        return ChannelTransfer(
            out_biz_no,
            status,
            amount_fen,
            channel_order_id=str(data.get("transfer_bill_no") or "") or None,
            paid_at=_time(data.get("update_time")) if status is TransferStatus.SUCCEEDED else None,
            reason=reason,
        )

    # -- bills -----------------------------------------------------------------------------------------------

    async def download_bill(self, day: dt.date) -> list[BillLine]:
        """GET /v3/bill/tradebill (ALL, gzip), then its download_url; the file's SHA1 must be the one announced.
        The bill is WeChat's trade bill CSV, the same as v2's. A day without trades has no bill: []."""
        try:
            _, body = await self._call(
                "tradebill", self._client.trade_bill(day.isoformat(), bill_type="ALL", tar_type="GZIP")
            )
        except WechatV3Error as exc:
            if exc.code in _NO_BILL:
                return []
            if exc.code == "STATEMENT_CREATING":  # not ready yet: ask again later
                raise ChannelUnavailable("wechat v3: the bill is being made") from exc
            raise
        announced = _json(body, "tradebill")
        url = announced.get("download_url")
        if not isinstance(url, str) or not url.startswith(self.config.gateway + "/"):
            raise InvalidResponse("the bill's download_url is not on the gateway")
        _, raw = await self._call("billdownload", self._client.download_bill(url))
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if str(announced.get("hash_type", "")).upper() != "SHA1" or not hmac.compare_digest(
            hashlib.sha1(raw).hexdigest(),  # noqa: S324 - the hash WeChat announces for its files
            str(announced.get("hash_value", "")).lower(),
        ):
            raise BillError("the downloaded bill's SHA1 is not the one announced")
        try:
            text = gzip.decompress(raw).decode("utf-8")
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
            raise BillError("the bill is not gzip'd UTF-8 text") from exc
        return parse_bill(text, day)

    # -- papay (withholding): v2 only --------------------------------------------------------------------------

    async def agreement_sign(self, external_agreement_no: str, payer_id: str, notify_url: str) -> Agreement:
        raise withholding_unsupported()

    async def agreement_query(self, external_agreement_no: str) -> Agreement:
        raise withholding_unsupported()

    async def deduct(
        self, agreement_no: str, out_trade_no: str, amount_fen: int, subject: str, notify_url: str
    ) -> ChannelTrade:
        raise withholding_unsupported()

    # -- notifications ---------------------------------------------------------------------------------------

    def parse_notification(self, body: bytes, content_type: str) -> Notification:
        """A v3 notification is signed in its headers: the endpoint calls read_notification."""
        raise InvalidNotification("a WeChat Pay v3 notification is verified with its Wechatpay-* headers")

    async def read_notification(self, body: bytes, headers: Mapping[str, str]) -> Notification:
        """Payment (TRANSACTION.SUCCESS) and refund (REFUND.*) notifications. Refused: a signature that does not verify
        or comes from a platform certificate neither held nor downloadable, a timestamp more than
        `notification_max_skew_s` away, a resource whose AES-GCM tag fails with our APIv3 key, another mchid or
        appid, any service-provider field, a malformed body."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidNotification("not UTF-8") from exc
        try:
            await self._client.core.verify(headers, text)
        except SignatureRefused as exc:
            raise InvalidNotification(exc.reason) from None
        stamp = header(headers, "Wechatpay-Timestamp")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > self.config.notification_max_skew_s:
            raise InvalidNotification("the signature's timestamp is too far from now")
        try:
            envelope = json.loads(text)
        except ValueError as exc:
            raise InvalidNotification("not JSON") from exc
        if not isinstance(envelope, dict) or envelope.get("resource_type") != "encrypt-resource":
            raise InvalidNotification("not an encrypted WeChat Pay notification")
        resource = envelope.get("resource")
        if not isinstance(resource, dict) or resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise InvalidNotification("the resource is not AEAD_AES_256_GCM")
        plain = self._client.core.decrypt_resource(resource)
        if plain is None:
            raise InvalidNotification("the resource does not decrypt with our APIv3 key (AES-GCM tag)")
        try:
            data = json.loads(plain)
        except ValueError as exc:
            raise InvalidNotification("the resource is not JSON") from exc
        if not isinstance(data, dict):
            raise InvalidNotification("the resource is not a JSON object")
        if data.get("mchid") != self.config.mchid:
            raise ForeignNotification("mchid")
        for name in _PARTNER_FIELDS:
            if data.get(name):
                raise ForeignNotification(name)
        event = str(envelope.get("event_type", ""))
        if event.startswith("REFUND."):
            return self._refund_notification(data, envelope)
        if event.startswith("TRANSACTION."):
            return self._payment_notification(data, envelope)
        raise InvalidNotification(f"unknown event_type {event!r}")

    def _payment_notification(self, data: dict[str, Any], envelope: dict[str, Any]) -> Notification:
        if data.get("appid") != self.config.appid:
            raise ForeignNotification("appid")
        out_trade_no = data.get("out_trade_no")
        amount = _object(data.get("amount"))
        total = amount.get("total")
        if not isinstance(out_trade_no, str) or not out_trade_no:
            raise InvalidNotification("no out_trade_no")
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise InvalidNotification("no amount.total in fen")
        status = _TRADE_STATES.get(str(data.get("trade_state", "")), TradeStatus.WAITING)
        if status is TradeStatus.PAID and not data.get("transaction_id"):
            raise InvalidNotification("a payment without transaction_id")
        return Notification(
            kind="payment",
            app_id=self.config.appid,
            out_trade_no=out_trade_no,
            status=status,
            amount_fen=total,
            channel_trade_no=str(data.get("transaction_id") or "") or None,
            paid_at=_time(data.get("success_time")) if status is TradeStatus.PAID else None,
            raw={"event_type": envelope.get("event_type"), "id": envelope.get("id"), **data},
        )

    def _refund_notification(self, data: dict[str, Any], envelope: dict[str, Any]) -> Notification:
        # A refund notification names no appid; one that does must name ours.
        if data.get("appid") not in (None, self.config.appid):
            raise ForeignNotification("appid")
        out_trade_no, out_refund_no = data.get("out_trade_no"), data.get("out_refund_no")
        amount = _object(data.get("amount"))
        refund = amount.get("refund")
        if not (isinstance(out_trade_no, str) and out_trade_no and isinstance(out_refund_no, str)):
            raise InvalidNotification("a refund notification without trade or refund number")
        if isinstance(refund, bool) or not isinstance(refund, int) or refund <= 0:
            raise InvalidNotification("no amount.refund in fen")
        return Notification(
            kind="refund",
            app_id=self.config.appid,
            out_trade_no=out_trade_no,
            status=_REFUND_STATES.get(str(data.get("refund_status", "")), RefundStatus.PENDING),
            amount_fen=refund,
            channel_trade_no=str(data.get("transaction_id") or "") or None,
            out_refund_no=out_refund_no,
            paid_at=_time(data.get("success_time")),
            raw={"event_type": envelope.get("event_type"), "id": envelope.get("id"), **data},
        )

    def acknowledge(self, accepted: bool) -> tuple[bytes, str]:
        return (_ACK_OK if accepted else _ACK_FAIL), "application/json"

    async def aclose(self) -> None:
        await self._client.core.aclose()
