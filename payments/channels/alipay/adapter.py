"""The Alipay channel: alipay-sdk-python builds and signs every request (its request and model classes, its
RSA2 signer), httpx.AsyncClient sends it, and every answer's signature is checked over the exact bytes of the
`<method>_response` object before anything in it is believed.

Why not `DefaultAlipayClient.execute`: it is synchronous (http.client), it mangles gateway URLs that carry a port
(str + int in WebUtils.get_http_connection) and it raises on non-200 answers with a TypeError. `sdk_execute` gives the
fully signed parameter string without any I/O; we send it the way `execute` would (common parameters in the query
string, the rest as a form body). Signing parses the PEM with pyasn1 on every call (tens of milliseconds of pure
Python), so it runs in a worker thread to keep the event loop free."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import types
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import alipay.aop.api.DefaultAlipayClient as _sdk_client_module
import httpx
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.constant.ParamConstants import COMMON_PARAM_KEYS
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AccessParams import AccessParams
from alipay.aop.api.domain.AgreementParams import AgreementParams
from alipay.aop.api.domain.AlipayDataDataserviceBillDownloadurlQueryModel import (
    AlipayDataDataserviceBillDownloadurlQueryModel,
)
from alipay.aop.api.domain.AlipayFundTransCommonQueryModel import AlipayFundTransCommonQueryModel
from alipay.aop.api.domain.AlipayFundTransUniTransferModel import AlipayFundTransUniTransferModel
from alipay.aop.api.domain.AlipayTradeAppPayModel import AlipayTradeAppPayModel
from alipay.aop.api.domain.AlipayTradeCloseModel import AlipayTradeCloseModel
from alipay.aop.api.domain.AlipayTradeCreateModel import AlipayTradeCreateModel
from alipay.aop.api.domain.AlipayTradeFastpayRefundQueryModel import AlipayTradeFastpayRefundQueryModel
from alipay.aop.api.domain.AlipayTradePayModel import AlipayTradePayModel
from alipay.aop.api.domain.AlipayTradePrecreateModel import AlipayTradePrecreateModel
from alipay.aop.api.domain.AlipayTradeQueryModel import AlipayTradeQueryModel
from alipay.aop.api.domain.AlipayTradeRefundModel import AlipayTradeRefundModel
from alipay.aop.api.domain.AlipayUserAgreementPageSignModel import AlipayUserAgreementPageSignModel
from alipay.aop.api.domain.AlipayUserAgreementQueryModel import AlipayUserAgreementQueryModel
from alipay.aop.api.domain.Participant import Participant
from alipay.aop.api.domain.PeriodRuleParams import PeriodRuleParams
from alipay.aop.api.request.AlipayDataDataserviceBillDownloadurlQueryRequest import (
    AlipayDataDataserviceBillDownloadurlQueryRequest,
)
from alipay.aop.api.request.AlipayFundTransCommonQueryRequest import AlipayFundTransCommonQueryRequest
from alipay.aop.api.request.AlipayFundTransUniTransferRequest import AlipayFundTransUniTransferRequest
from alipay.aop.api.request.AlipayTradeAppPayRequest import AlipayTradeAppPayRequest
from alipay.aop.api.request.AlipayTradeCloseRequest import AlipayTradeCloseRequest
from alipay.aop.api.request.AlipayTradeCreateRequest import AlipayTradeCreateRequest
from alipay.aop.api.request.AlipayTradeFastpayRefundQueryRequest import AlipayTradeFastpayRefundQueryRequest
from alipay.aop.api.request.AlipayTradePayRequest import AlipayTradePayRequest
from alipay.aop.api.request.AlipayTradePrecreateRequest import AlipayTradePrecreateRequest
from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest
from alipay.aop.api.request.AlipayUserAgreementPageSignRequest import AlipayUserAgreementPageSignRequest
from alipay.aop.api.request.AlipayUserAgreementQueryRequest import AlipayUserAgreementQueryRequest

from app_backend.kernel.clock import BUSINESS_TZ
from payments.channels.alipay.amounts import fen_to_yuan, yuan_to_fen
from payments.channels.alipay.bill import BillFormatError, parse_bill_zip
from payments.channels.alipay.config import AlipayConfig
from payments.channels.alipay.errors import AlipayInvalidResponse, AlipayRefused
from payments.channels.alipay.signing import (
    SignatureError,
    load_public_key,
    notification_sign_content,
    verified_response,
    verify_rsa2,
)
from payments.channels.base import (
    Agreement,
    AgreementStatus,
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


class _BeijingClock(dt.datetime):
    """`datetime.now()` in Beijing time, whatever the host's zone."""

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> _BeijingClock:
        if tz is not None:
            return super().now(tz)
        return super().now(BUSINESS_TZ).replace(tzinfo=None)


# The SDK stamps every request with the host's local time (`datetime.datetime.now()` in DefaultAlipayClient), but
# Alipay reads `timestamp` as Beijing time: on a UTC container that is eight hours off. Give that module a clock in
# Beijing time (only that module's name `datetime` is rebound; nothing else in the process changes).
_sdk_client_module.datetime = types.SimpleNamespace(datetime=_BeijingClock)
MAX_AMOUNT_FEN = 100_000_000_00  # Alipay's ceiling: 100,000,000.00 yuan
DEDUCTION_PASSBACK = "tzt-deduction"  # echoed by Alipay in the deduction's notification

TRADE_STATUS = {
    "WAIT_BUYER_PAY": TradeStatus.WAITING,
    "TRADE_SUCCESS": TradeStatus.PAID,
    "TRADE_FINISHED": TradeStatus.FINISHED,
    "TRADE_CLOSED": TradeStatus.CLOSED,
}
AGREEMENT_STATUS = {
    "TEMP": AgreementStatus.PENDING,
    "NORMAL": AgreementStatus.ACTIVE,
    "STOP": AgreementStatus.ENDED,
}
# alipay.fund.trans.* status: DEALING (to a bank card, in progress), WAIT_PAY (not sent yet), REFUND (a bank
# sent it back: no money reached the payee).
TRANSFER_STATUS = {
    "SUCCESS": TransferStatus.SUCCEEDED,
    "DEALING": TransferStatus.PENDING,
    "WAIT_PAY": TransferStatus.PENDING,
    "FAIL": TransferStatus.FAILED,
    "CLOSED": TransferStatus.FAILED,
    "REFUND": TransferStatus.FAILED,
}
TRANSFER_PRODUCT = "TRANS_ACCOUNT_NO_PWD"  # 单笔无密转账到支付宝账户
TRANSFER_SCENE = "DIRECT_TRANSFER"
_USER_ID = re.compile(r"^2088\d{12}$")  # an Alipay user id, as opposed to an open id
_NOT_EXIST = ("ACQ.TRADE_NOT_EXIST", "TRADE_NOT_EXIST")
_CHARSETS = {"utf-8", "utf8", "gbk", "gb2312", "gb18030"}


def _is_system_error(sub_code: str) -> bool:
    """Sub-codes Alipay documents as 'unknown outcome, retry': system errors and timeouts on its side."""
    return sub_code.endswith("SYSTEM_ERROR") or sub_code in ("isp.unknow-error", "isp.unknown-error")


def _shanghai(when: dt.datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return when.astimezone(BUSINESS_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=BUSINESS_TZ)
    except ValueError:
        return None


def _amount(data: dict[str, Any], key: str, method: str) -> int:
    try:
        return yuan_to_fen(str(data[key]))
    except (KeyError, ValueError):
        raise AlipayInvalidResponse(f"{method}: bad or missing {key} in a signed answer") from None


def _check_amount(amount_fen: int) -> None:
    if (
        isinstance(amount_fen, bool)
        or not isinstance(amount_fen, int)
        or not 0 < amount_fen <= MAX_AMOUNT_FEN
    ):
        raise ValueError(f"amount must be 1..{MAX_AMOUNT_FEN} fen")


class AlipayChannel:
    """PaymentChannel for Alipay. `http` lets the composition root share one httpx.AsyncClient; otherwise the channel
    owns one (close it with `aclose`)."""

    name = "alipay"

    def __init__(self, config: AlipayConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        sdk_config = AlipayClientConfig()
        sdk_config.server_url = config.gateway_url
        sdk_config.app_id = config.app_id
        sdk_config.app_private_key = config.app_private_key
        sdk_config.alipay_public_key = config.alipay_public_key
        sdk_config.sign_type = "RSA2"
        sdk_config.charset = config.charset
        sdk_config.timeout = config.timeout_s
        self._sdk = DefaultAlipayClient(sdk_config)
        self._alipay_key = load_public_key(config.alipay_public_key)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- transport -----------------------------------------------------------------------------------------------

    async def _signed(self, request: Any) -> str:
        """The SDK's signed parameter string (url-encoded) for a request object."""
        return str(await asyncio.to_thread(self._sdk.sdk_execute, request))

    async def _page_url(self, request: Any) -> str:
        return str(await asyncio.to_thread(self._sdk.page_execute, request, "GET"))

    async def _call(self, request: Any) -> dict[str, Any]:
        """Send a request, verify the answer, return the `<method>_response` object. Raises ChannelUnavailable when
        the outcome is unknown (no answer, 5xx, an untrusted answer, an Alipay system error)."""
        method = request.get_params()["method"]
        pairs = parse_qsl(await self._signed(request), keep_blank_values=True, encoding=self.config.charset)
        query = [(k, v) for k, v in pairs if k in COMMON_PARAM_KEYS]
        form = [(k, v) for k, v in pairs if k not in COMMON_PARAM_KEYS]
        url = self.config.gateway_url
        url += ("&" if "?" in url else "?") + urlencode(query, encoding=self.config.charset)
        timeout = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout):  # a whole-call bound: httpx's are per read/write
                answer = await self._http.post(
                    url,
                    content=urlencode(form, encoding=self.config.charset).encode("ascii"),
                    headers={
                        "Content-Type": f"application/x-www-form-urlencoded;charset={self.config.charset}"
                    },
                    timeout=timeout,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChannelUnavailable(f"alipay {method}: no answer within {timeout}s") from exc
        except httpx.HTTPError as exc:
            raise ChannelUnavailable(f"alipay {method}: {type(exc).__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise ChannelUnavailable(f"alipay {method}: HTTP {answer.status_code}")
        data = verified_response(answer.content, method, self._alipay_key, self.config.charset)
        code = str(data.get("code", ""))
        sub_code = str(data.get("sub_code", ""))
        if code == "20000" or (code == "40004" and _is_system_error(sub_code)):
            raise ChannelUnavailable(f"alipay {method}: {code} {sub_code} {data.get('sub_msg', '')}".strip())
        return data

    @staticmethod
    def _refused(method: str, data: dict[str, Any]) -> AlipayRefused:
        return AlipayRefused(
            method,
            str(data.get("code", "")),
            str(data.get("msg", "")),
            str(data.get("sub_code", "")),
            str(data.get("sub_msg", "")),
        )

    # -- orders ----------------------------------------------------------------------------------------------------

    async def create(self, order: ChannelOrder) -> PayParams:
        _check_amount(order.amount_fen)
        expire = _shanghai(order.expires_at)
        if order.method == "app":
            app_model = AlipayTradeAppPayModel()
            app_model.out_trade_no = order.out_trade_no
            app_model.total_amount = fen_to_yuan(order.amount_fen)
            app_model.subject = order.subject
            app_model.product_code = "QUICK_MSECURITY_PAY"
            app_model.time_expire = expire
            if self.config.seller_id:
                app_model.seller_id = self.config.seller_id
            app_request = AlipayTradeAppPayRequest(biz_model=app_model)
            app_request.notify_url = order.notify_url
            # The app hands this string to the Alipay SDK on the phone; no call to the gateway from here.
            return PayParams(self.name, "app", {"order_string": await self._signed(app_request)})
        if order.method in ("mini", "jsapi"):
            if not order.payer_id:
                raise ValueError("a mini-program payment needs the payer's Alipay user id or open id")
            create_model = AlipayTradeCreateModel()
            create_model.out_trade_no = order.out_trade_no
            create_model.total_amount = fen_to_yuan(order.amount_fen)
            create_model.subject = order.subject
            create_model.product_code = "JSAPI_PAY"
            create_model.time_expire = expire
            if _USER_ID.match(order.payer_id):
                create_model.buyer_id = order.payer_id
            else:
                create_model.buyer_open_id = order.payer_id
                create_model.op_app_id = self.config.mini_app_id or self.config.app_id
            if self.config.seller_id:
                create_model.seller_id = self.config.seller_id
            create_request = AlipayTradeCreateRequest(biz_model=create_model)
            create_request.notify_url = order.notify_url
            data = await self._call(create_request)
            if data.get("code") != "10000":
                raise self._refused("alipay.trade.create", data)
            if data.get("out_trade_no") != order.out_trade_no or not data.get("trade_no"):
                raise AlipayInvalidResponse("alipay.trade.create: the answer is for another trade")
            return PayParams(self.name, order.method, {"trade_no": str(data["trade_no"])})
        if order.method == "native":
            qr_model = AlipayTradePrecreateModel()
            qr_model.out_trade_no = order.out_trade_no
            qr_model.total_amount = fen_to_yuan(order.amount_fen)
            qr_model.subject = order.subject
            qr_model.product_code = "FACE_TO_FACE_PAYMENT"
            qr_model.time_expire = expire
            if self.config.seller_id:
                qr_model.seller_id = self.config.seller_id
            qr_request = AlipayTradePrecreateRequest(biz_model=qr_model)
            qr_request.notify_url = order.notify_url
            data = await self._call(qr_request)
            if data.get("code") != "10000":
                raise self._refused("alipay.trade.precreate", data)
            if data.get("out_trade_no") != order.out_trade_no or not data.get("qr_code"):
                raise AlipayInvalidResponse("alipay.trade.precreate: the answer is for another trade")
            return PayParams(self.name, "native", {"qr_code": str(data["qr_code"])})
        raise ValueError(f"alipay has no payment method {order.method!r} (app, mini, jsapi, native)")

    async def query(self, out_trade_no: str) -> ChannelTrade | None:
        model = AlipayTradeQueryModel()
        model.out_trade_no = out_trade_no
        data = await self._call(AlipayTradeQueryRequest(biz_model=model))
        if data.get("code") != "10000":
            if data.get("sub_code") in _NOT_EXIST:
                return None
            raise self._refused("alipay.trade.query", data)
        return self._trade(data, out_trade_no, "alipay.trade.query")

    def _check_seller(self, data: dict[str, Any], method: str) -> None:
        """An answer that names a seller must name ours (query answers name one only sometimes)."""
        if self.config.seller_id and data.get("seller_id") not in (None, "", self.config.seller_id):
            raise AlipayInvalidResponse(f"{method}: the answer is for another seller")

    def _trade(self, data: dict[str, Any], out_trade_no: str, method: str) -> ChannelTrade:
        if data.get("out_trade_no") != out_trade_no:
            raise AlipayInvalidResponse(f"{method}: the answer is for another trade")
        self._check_seller(data, method)
        status = TRADE_STATUS.get(str(data.get("trade_status")))
        if status is None:
            raise AlipayInvalidResponse(f"{method}: unknown trade_status {data.get('trade_status')!r}")
        return ChannelTrade(
            out_trade_no=out_trade_no,
            status=status,
            amount_fen=_amount(data, "total_amount", method),
            channel_trade_no=data.get("trade_no"),
            paid_at=_parse_time(data.get("send_pay_date"))
            if status in (TradeStatus.PAID, TradeStatus.FINISHED)
            else None,
        )

    async def close(self, out_trade_no: str) -> None:
        """Closes an unpaid trade. A trade Alipay never saw (an app order string nobody opened) counts as closed:
        note that such an order string stays payable until its time_expire, so close after expiry or expect a late
        payment. Closing a paid trade raises AlipayRefused (ACQ.TRADE_STATUS_ERROR)."""
        model = AlipayTradeCloseModel()
        model.out_trade_no = out_trade_no
        data = await self._call(AlipayTradeCloseRequest(biz_model=model))
        if data.get("code") == "10000" or data.get("sub_code") in _NOT_EXIST:
            return
        raise self._refused("alipay.trade.close", data)

    # -- refunds ---------------------------------------------------------------------------------------------------

    async def refund(
        self, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund:
        """`out_refund_no` is Alipay's out_request_no: repeating a refund with it never refunds twice. Alipay refunds
        synchronously: code 10000 means done. A definite refusal (amount over what is left, trade not refundable)
        is FAILED; a system error or no answer raises ChannelUnavailable (repeat with the same out_refund_no).
        `total_fen` is not needed by Alipay."""
        _check_amount(amount_fen)
        model = AlipayTradeRefundModel()
        model.out_trade_no = out_trade_no
        model.out_request_no = out_refund_no
        model.refund_amount = fen_to_yuan(amount_fen)
        model.refund_reason = reason[:256]
        data = await self._call(AlipayTradeRefundRequest(biz_model=model))
        if data.get("code") != "10000":
            if data.get("sub_code") == "ACQ.CONTEXT_INCONSISTENT":
                # this out_request_no was used for a different amount: the first refund stands, ours is a bug
                raise self._refused("alipay.trade.refund", data)
            return ChannelRefund(out_refund_no, RefundStatus.FAILED, amount_fen)
        if data.get("out_trade_no") != out_trade_no:
            raise AlipayInvalidResponse("alipay.trade.refund: the answer is for another trade")
        refunded = (
            _amount(data, "send_back_fee", "alipay.trade.refund") if "send_back_fee" in data else amount_fen
        )
        return ChannelRefund(out_refund_no, RefundStatus.SUCCEEDED, refunded, data.get("trade_no"))

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund | None:
        model = AlipayTradeFastpayRefundQueryModel()
        model.out_trade_no = out_trade_no
        model.out_request_no = out_refund_no
        data = await self._call(AlipayTradeFastpayRefundQueryRequest(biz_model=model))
        if data.get("code") != "10000":
            if data.get("sub_code") in _NOT_EXIST:
                return None
            raise self._refused("alipay.trade.fastpay.refund.query", data)
        if not data.get("refund_amount"):  # Alipay's way of saying "no such refund"
            return None
        if data.get("out_request_no", out_refund_no) != out_refund_no:
            raise AlipayInvalidResponse("alipay.trade.fastpay.refund.query: the answer is for another refund")
        refund_status = data.get("refund_status")
        status = (
            RefundStatus.SUCCEEDED if refund_status in (None, "", "REFUND_SUCCESS") else RefundStatus.PENDING
        )
        return ChannelRefund(
            out_refund_no,
            status,
            _amount(data, "refund_amount", "alipay.trade.fastpay.refund.query"),
            data.get("trade_no"),
        )

    # -- payouts (PayoutChannel) -----------------------------------------------------------------------------------

    async def transfer(
        self, out_biz_no: str, amount_fen: int, account: PayoutAccount, remark: str
    ) -> ChannelTransfer:
        """alipay.fund.trans.uni.transfer to an Alipay account, with the holder's real name (Alipay checks it).
        Repeating it with the same out_biz_no and the same parameters is the same transfer (Alipay answers the one
        it holds). A business refusal is FAILED with Alipay's reason; a system error or no answer raises
        ChannelUnavailable; the number used before with other parameters raises it too (what happened to the
        first is for the query to say, never for a guess)."""
        _check_amount(amount_fen)
        if account.identity_type not in ("ALIPAY_USER_ID", "ALIPAY_LOGON_ID"):
            raise ValueError("an Alipay transfer goes to an ALIPAY_USER_ID or an ALIPAY_LOGON_ID")
        payee = Participant()
        payee.identity = account.identity
        payee.identity_type = account.identity_type
        payee.name = account.name
        model = AlipayFundTransUniTransferModel()
        model.out_biz_no = out_biz_no
        model.trans_amount = fen_to_yuan(amount_fen)
        model.product_code = TRANSFER_PRODUCT
        model.biz_scene = TRANSFER_SCENE
        model.order_title = remark[:128]
        model.remark = remark[:200]
        model.payee_info = payee
        method = "alipay.fund.trans.uni.transfer"
        data = await self._call(AlipayFundTransUniTransferRequest(biz_model=model))
        if data.get("code") != "10000":
            if data.get("sub_code") == "PAYMENT_INFO_INCONSISTENCY":
                raise AlipayInvalidResponse(f"{method}: {out_biz_no} was used with other parameters")
            return ChannelTransfer(
                out_biz_no,
                TransferStatus.FAILED,
                amount_fen,
                reason=f"{data.get('sub_code', '')} {data.get('sub_msg', '')}".strip()[:200],
            )
        if data.get("out_biz_no") != out_biz_no:
            raise AlipayInvalidResponse(f"{method}: the answer is for another transfer")
        status = TRANSFER_STATUS.get(str(data.get("status") or "SUCCESS"))
        if status is None:
            raise AlipayInvalidResponse(f"{method}: unknown status {data.get('status')!r}")
        return ChannelTransfer(
            out_biz_no,
            status,
            amount_fen,
            channel_order_id=data.get("order_id") or None,
            paid_at=_parse_time(data.get("trans_date")) if status is TransferStatus.SUCCEEDED else None,
        )

    async def transfer_query(self, out_biz_no: str) -> ChannelTransfer | None:
        """alipay.fund.trans.common.query by out_biz_no; None when Alipay has no such transfer."""
        model = AlipayFundTransCommonQueryModel()
        model.out_biz_no = out_biz_no
        model.product_code = TRANSFER_PRODUCT
        model.biz_scene = TRANSFER_SCENE
        method = "alipay.fund.trans.common.query"
        data = await self._call(AlipayFundTransCommonQueryRequest(biz_model=model))
        if data.get("code") != "10000":
            if data.get("sub_code") in ("ORDER_NOT_EXIST", "ORDER_NOT_EXISTS"):
                return None
            raise self._refused(method, data)
        if data.get("out_biz_no", out_biz_no) != out_biz_no:
            raise AlipayInvalidResponse(f"{method}: the answer is for another transfer")
        status = TRANSFER_STATUS.get(str(data.get("status")))
        if status is None:
            raise AlipayInvalidResponse(f"{method}: unknown status {data.get('status')!r}")
        reason = " ".join(str(data.get(k) or "") for k in ("error_code", "fail_reason")).strip()
        return ChannelTransfer(
            out_biz_no,
            status,
            _amount(data, "trans_amount", method),
            channel_order_id=data.get("order_id") or None,
            paid_at=_parse_time(data.get("pay_date")) if status is TransferStatus.SUCCEEDED else None,
            reason=(reason[:200] or None) if status is TransferStatus.FAILED else None,
        )

    # -- notifications ---------------------------------------------------------------------------------------------

    def parse_notification(self, body: bytes, content_type: str) -> Notification:
        if "application/x-www-form-urlencoded" not in content_type.lower():
            raise InvalidNotification("an Alipay notification is a form post")
        try:
            # latin-1 keeps each percent-decoded byte as one character, so the bytes can be read in `charset` after
            pairs = parse_qsl(
                body.decode("latin-1"), keep_blank_values=True, strict_parsing=True, encoding="latin-1"
            )
        except ValueError:
            raise InvalidNotification("the body is not a form") from None
        raw: dict[str, str] = {}
        for key, value in pairs:
            if key in raw:
                raise InvalidNotification(f"parameter {key!r} appears twice")
            raw[key] = value
        charset = raw.get("charset", "utf-8").lower()
        if charset not in _CHARSETS:
            raise InvalidNotification(f"unknown charset {charset!r}")
        try:
            params = {
                k.encode("latin-1").decode("ascii"): v.encode("latin-1").decode(charset)
                for k, v in raw.items()
            }
        except UnicodeError:
            raise InvalidNotification(f"the body is not {charset}") from None
        if params.get("sign_type") != "RSA2":
            raise InvalidNotification(f"sign_type must be RSA2, not {params.get('sign_type')!r}")
        sign = params.get("sign")
        if not sign:
            raise InvalidNotification("the notification is not signed")
        try:
            verify_rsa2(self._alipay_key, notification_sign_content(params).encode(charset), sign)
        except SignatureError as exc:
            raise InvalidNotification(f"bad signature: {exc}") from None
        if params.get("app_id") != self.config.app_id:
            raise ForeignNotification("app_id")
        notify_type = params.get("notify_type", "trade_status_sync")
        if notify_type in ("dut_user_sign", "dut_user_unsign"):
            return self._agreement_notification(params)
        return self._trade_notification(params)

    def _trade_notification(self, params: dict[str, str]) -> Notification:
        # Our app id alone does not make a trade ours: an app may be authorised to act for other sellers, whose
        # money is not ours to credit. Alipay always names the seller in a trade notification.
        if self.config.seller_id and params.get("seller_id") != self.config.seller_id:
            raise ForeignNotification("seller_id")
        out_trade_no = params.get("out_trade_no")
        if not out_trade_no:
            raise InvalidNotification("no out_trade_no")
        trade_status = TRADE_STATUS.get(params.get("trade_status", ""))
        if trade_status is None:
            raise InvalidNotification(f"unknown trade_status {params.get('trade_status')!r}")
        try:
            amount_fen = yuan_to_fen(params.get("total_amount", ""))
        except ValueError:
            raise InvalidNotification("bad total_amount") from None
        common: dict[str, Any] = {
            "app_id": params["app_id"],
            "out_trade_no": out_trade_no,
            "amount_fen": amount_fen,
            "channel_trade_no": params.get("trade_no") or None,
            "paid_at": _parse_time(params.get("gmt_payment")),
            "raw": params,
        }
        if params.get("out_biz_no") and params.get("refund_fee"):
            # a refund reported on the trade: amount_fen stays the trade's total, raw["refund_fee"] is the total
            # refunded so far; query_refund(out_trade_no, out_refund_no) gives this refund's own amount.
            return Notification(
                kind="refund", status=RefundStatus.SUCCEEDED, out_refund_no=params["out_biz_no"], **common
            )
        kind = "deduction" if params.get("passback_params") == DEDUCTION_PASSBACK else "payment"
        return Notification(kind=kind, status=trade_status, **common)

    def _agreement_notification(self, params: dict[str, str]) -> Notification:
        external = params.get("external_agreement_no")
        if not external:
            raise InvalidNotification("no external_agreement_no")
        if params["notify_type"] == "dut_user_unsign":
            status = AgreementStatus.ENDED
        else:
            found = AGREEMENT_STATUS.get(params.get("status", ""))
            if found is None:
                raise InvalidNotification(f"unknown agreement status {params.get('status')!r}")
            status = found
        return Notification(
            kind="agreement",
            app_id=params["app_id"],
            out_trade_no=external,
            status=status,
            amount_fen=0,
            agreement_no=params.get("agreement_no") or None,
            raw=params,
        )

    def acknowledge(self, accepted: bool) -> tuple[bytes, str]:
        return (b"success", "text/plain") if accepted else (b"failure", "text/plain")

    # -- bills -----------------------------------------------------------------------------------------------------

    async def download_bill(self, day: dt.date) -> list[BillLine]:
        model = AlipayDataDataserviceBillDownloadurlQueryModel()
        model.bill_type = self.config.bill_type
        model.bill_date = day.isoformat()
        data = await self._call(AlipayDataDataserviceBillDownloadurlQueryRequest(biz_model=model))
        if data.get("code") != "10000":
            raise self._refused("alipay.data.dataservice.bill.downloadurl.query", data)
        url = data.get("bill_download_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise AlipayInvalidResponse("bill download: no usable bill_download_url")
        try:
            async with asyncio.timeout(self.config.timeout_s * 4):
                answer = await self._http.get(url, follow_redirects=True, timeout=self.config.timeout_s)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChannelUnavailable("alipay bill download timed out") from exc
        except httpx.HTTPError as exc:
            raise ChannelUnavailable(f"alipay bill download: {type(exc).__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise ChannelUnavailable(f"alipay bill download: HTTP {answer.status_code}")
        try:
            return parse_bill_zip(answer.content, day)
        except BillFormatError as exc:
            raise ChannelUnavailable(f"alipay bill download: {exc}") from exc

    # -- withholding -----------------------------------------------------------------------------------------------

    async def agreement_sign(self, external_agreement_no: str, payer_id: str, notify_url: str) -> Agreement:
        """Signing happens on the user's side: sign_params carry `sign_url` (a gateway page URL for a browser or
        web view), `sign_params` (the signed parameter string) and `alipays_url` (the deep link that opens the
        signing page in the Alipay app). The agreement is PENDING until the dut_user_sign notification or
        agreement_query says otherwise. `payer_id` is shown to the user as the merchant-side account."""
        cfg = self.config
        model = AlipayUserAgreementPageSignModel()
        model.external_agreement_no = external_agreement_no
        model.personal_product_code = cfg.withholding_personal_product_code
        model.product_code = cfg.withholding_product_code
        model.sign_scene = cfg.withholding_sign_scene
        model.external_logon_id = payer_id
        access = AccessParams()
        access.channel = cfg.sign_access_channel
        model.access_params = access
        period = PeriodRuleParams()
        period.period_type = cfg.withholding_period_type
        period.period = cfg.withholding_period
        period.execute_time = dt.datetime.now(BUSINESS_TZ).date().isoformat()
        period.single_amount = fen_to_yuan(cfg.withholding_single_amount_fen)
        model.period_rule_params = period
        request = AlipayUserAgreementPageSignRequest(biz_model=model)
        request.notify_url = notify_url
        sign_url = await self._page_url(request)
        sign_params = await self._signed(request)
        deep_link = (
            "alipays://platformapi/startapp?appId=60000157&appClearTop=false&startMultApp=YES&sign_params="
            + quote(sign_params, safe="")
        )
        return Agreement(
            external_agreement_no,
            AgreementStatus.PENDING,
            None,
            {"sign_url": sign_url, "sign_params": sign_params, "alipays_url": deep_link},
        )

    async def agreement_query(self, external_agreement_no: str) -> Agreement:
        model = AlipayUserAgreementQueryModel()
        model.external_agreement_no = external_agreement_no
        model.personal_product_code = self.config.withholding_personal_product_code
        model.sign_scene = self.config.withholding_sign_scene
        data = await self._call(AlipayUserAgreementQueryRequest(biz_model=model))
        if data.get("code") != "10000":
            if (
                "AGREEMENT_NOT_EXIST" in str(data.get("sub_code"))
                or data.get("sub_code") == "USER_AGENT_NOT_EXIST"
            ):
                return Agreement(external_agreement_no, AgreementStatus.PENDING)  # not signed (yet)
            raise self._refused("alipay.user.agreement.query", data)
        if data.get("external_agreement_no", external_agreement_no) != external_agreement_no:
            raise AlipayInvalidResponse("alipay.user.agreement.query: the answer is for another agreement")
        status = AGREEMENT_STATUS.get(str(data.get("status")))
        if status is None:
            raise AlipayInvalidResponse(f"agreement query: unknown status {data.get('status')!r}")
        return Agreement(external_agreement_no, status, data.get("agreement_no") or None)

    async def deduct(
        self, agreement_no: str, out_trade_no: str, amount_fen: int, subject: str, notify_url: str
    ) -> ChannelTrade:
        """alipay.trade.pay under the agreement. 10000 is PAID; 10003 (accepted, being processed) is WAITING; a
        definite refusal (balance, agreement gone, risk) is FAILED. Repeating a deduction with the same
        out_trade_no after a timeout is safe: Alipay answers TRADE_HAS_SUCCESS / TRADE_HAS_CLOSE, which are turned
        into the trade's actual state. Parameter or permission errors (40001/40002/40006) raise AlipayRefused: they
        are ours, not the rider's, and must not become a debt."""
        _check_amount(amount_fen)
        model = AlipayTradePayModel()
        model.out_trade_no = out_trade_no
        model.total_amount = fen_to_yuan(amount_fen)
        model.subject = subject
        model.product_code = self.config.withholding_product_code
        agreement = AgreementParams()
        agreement.agreement_no = agreement_no
        model.agreement_params = agreement
        model.passback_params = DEDUCTION_PASSBACK
        if self.config.seller_id:
            model.seller_id = self.config.seller_id
        request = AlipayTradePayRequest(biz_model=model)
        request.notify_url = notify_url
        data = await self._call(request)
        code = data.get("code")
        if code in ("10000", "10003"):
            if data.get("out_trade_no") != out_trade_no:
                raise AlipayInvalidResponse("alipay.trade.pay: the answer is for another trade")
            self._check_seller(data, "alipay.trade.pay")
            paid = code == "10000"
            return ChannelTrade(
                out_trade_no=out_trade_no,
                status=TradeStatus.PAID if paid else TradeStatus.WAITING,
                amount_fen=_amount(data, "total_amount", "alipay.trade.pay") if paid else amount_fen,
                channel_trade_no=data.get("trade_no") or None,
                paid_at=_parse_time(data.get("gmt_payment")) if paid else None,
            )
        if code == "40004":
            if data.get("sub_code") in ("ACQ.TRADE_HAS_SUCCESS", "ACQ.TRADE_HAS_CLOSE"):
                existing = await self.query(out_trade_no)
                if existing is None:
                    raise ChannelUnavailable("alipay.trade.pay: the trade it reports is not found")
                if existing.status == TradeStatus.CLOSED:
                    return ChannelTrade(
                        out_trade_no, TradeStatus.FAILED, amount_fen, existing.channel_trade_no
                    )
                return existing
            return ChannelTrade(out_trade_no, TradeStatus.FAILED, amount_fen, data.get("trade_no") or None)
        raise self._refused("alipay.trade.pay", data)
