"""WeChat Pay API v2 behind the provider-neutral PaymentChannel interface, through wechatpy's WeChatPay.

wechatpy is synchronous (requests): every call runs in a worker thread (asyncio.to_thread) so the event loop
never blocks. Amounts are fen on both sides (WeChat's total_fee is already fen); bills are yuan and are
converted exactly. No call ever uses wechatpy's `sandbox=True` (a retired environment): a local sandbox is
simply another `api_base_url`."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.exceptions import WeChatPayException

from app_backend.kernel.clock import BUSINESS_TZ
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
from payments.channels.wechat import signing
from payments.channels.wechat.bill import parse_bill
from payments.channels.wechat.client import SignedWeChatPay
from payments.channels.wechat.config import SIGN_TYPES, WechatConfig
from payments.channels.wechat.errors import RETRYABLE_CODES, InvalidResponse, WechatError

log = logging.getLogger(__name__)
T = TypeVar("T")

NAME = "wechat"
PAPAY_MINI_PROGRAM_APPID = "wxbd687630cd02ce1d"  # WeChat's own signing mini program (navigateToMiniProgram)
_TRADE_TYPES = {"jsapi": "JSAPI", "mini": "JSAPI", "app": "APP", "native": "NATIVE"}
# trade_state of orderquery / paporderquery.
_TRADE_STATES = {
    "SUCCESS": TradeStatus.PAID,
    "REFUND": TradeStatus.PAID,  # paid, with refunds (tracked as refunds, not as a trade status)
    "NOTPAY": TradeStatus.WAITING,
    "USERPAYING": TradeStatus.WAITING,
    "ACCEPT": TradeStatus.WAITING,  # papay: deduction accepted, not done
    "CLOSED": TradeStatus.CLOSED,
    "REVOKED": TradeStatus.CLOSED,
    "PAY_FAIL": TradeStatus.FAILED,  # papay: deduction failed
}
_REFUND_STATES = {
    "SUCCESS": RefundStatus.SUCCEEDED,
    "PROCESSING": RefundStatus.PENDING,
    "REFUNDCLOSE": RefundStatus.FAILED,
    "CHANGE": RefundStatus.FAILED,  # refund abnormal (card gone): needs a manual transfer
}
# Refund errors WeChat documents as "the outcome is unknown: retry with the same out_refund_no".
_REFUND_RETRY = frozenset({"SYSTEMERROR", "BIZERR_NEED_RETRY", "FREQUENCY_LIMITED"})
_NOT_FOUND = frozenset({"ORDERNOTEXIST", "REFUNDNOTEXIST", "CONTRACT_NOT_EXIST", "CONTRACTNOTEXIST"})
# 企业付款 answers WeChat documents as "not decided: query, or repeat with the same partner_trade_no and the same
# parameters" (FATAL_ERROR: the number exists with other parameters; the query says what became of it).
_TRANSFER_UNKNOWN = frozenset(
    {"SYSTEMERROR", "SEND_FAILED", "FREQ_LIMIT", "FREQUENCY_LIMITED", "FATAL_ERROR"}
)
_TRANSFER_STATES = {
    "SUCCESS": TransferStatus.SUCCEEDED,
    "PROCESSING": TransferStatus.PENDING,
    "FAILED": TransferStatus.FAILED,
}
_ACK = "<xml><return_code><![CDATA[{code}]]></return_code><return_msg><![CDATA[{msg}]]></return_msg></xml>"


def _fen(value: str | None, what: str) -> int:
    if value is None or not (value.isascii() and value.isdigit()):
        raise InvalidResponse(f"{what} is not a whole number of fen: {value!r}")
    return int(value)


def _time(value: str | None) -> dt.datetime | None:
    """yyyyMMddHHmmss (or yyyy-MM-dd HH:mm:ss) in Beijing time."""
    if not value:
        return None
    for fmt in ("%Y%m%d%H%M%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=BUSINESS_TZ)
        except ValueError:
            continue
    return None


def _unpad(padded: bytes) -> bytes:
    """PKCS#7, to the AES block (what WeChat sends) or to 32 bytes (what wechatpy's own encrypt pads to)."""
    n = padded[-1] if padded else 0
    if not 1 <= n <= 32 or len(padded) < n or padded[-n:] != bytes([n]) * n:
        raise ValueError("bad padding")
    return padded[:-n]


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


class WechatChannel:
    """PaymentChannel for WeChat Pay API v2 (XML, MD5 or HMAC-SHA256 signatures with the merchant API key)."""

    name = NAME

    def __init__(self, config: WechatConfig) -> None:
        self.config = config
        self._client = SignedWeChatPay(
            appid=config.appid,
            api_key=config.api_key,
            mch_id=config.mch_id,
            sign_type=config.sign_type,
            base_url=config.base_url,
            mch_cert=config.mch_cert,
            mch_key=config.mch_key,
            timeout=config.timeout,
        )

    # -- plumbing --------------------------------------------------------------------------------------------

    @staticmethod
    def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs one wechatpy call (in a worker thread) and sorts its failures: no answer / 5xx / a retryable
        err_code -> ChannelUnavailable; a refusal -> WechatError."""
        try:
            return fn(*args, **kwargs)
        except requests.RequestException as exc:  # timeout, refused connection, reset
            raise ChannelUnavailable(f"wechat: {type(exc).__name__}: {exc}") from exc
        except WeChatPayException as exc:  # raise_for_status: an HTTP error status
            status = getattr(exc.response, "status_code", None)
            if status is None or status >= 500:
                raise ChannelUnavailable(f"wechat: HTTP {status}") from exc
            raise WechatError(f"HTTP_{status}", str(exc)) from exc
        except WechatError as exc:
            if exc.code in RETRYABLE_CODES:
                raise ChannelUnavailable(f"wechat: {exc}") from exc
            raise

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(self._call, fn, *args, **kwargs)

    @staticmethod
    def _dict(result: Any) -> dict[str, str]:
        if not isinstance(result, dict):
            raise InvalidResponse(f"expected XML, got {str(result)[:80]!r}")
        return result

    # -- orders ----------------------------------------------------------------------------------------------

    async def create(self, order: ChannelOrder) -> PayParams:
        trade_type = _TRADE_TYPES.get(order.method)
        if trade_type is None:
            raise ValueError(f"wechat has no pay method {order.method!r}; use one of {sorted(_TRADE_TYPES)}")
        if order.amount_fen <= 0:
            raise ValueError("amount_fen must be positive")
        if trade_type == "JSAPI" and not order.payer_id:
            raise ValueError(f"method {order.method!r} needs the payer's openid (payer_id)")
        now = dt.datetime.now(BUSINESS_TZ)
        expires = order.expires_at
        if expires.tzinfo is None:  # naive: taken as UTC
            expires = expires.replace(tzinfo=dt.UTC)
        expires = expires.astimezone(BUSINESS_TZ)
        result = self._dict(
            await self._run(
                self._client.order.create,
                trade_type=trade_type,
                body=_truncate_utf8(order.subject, 128),
                total_fee=order.amount_fen,
                notify_url=order.notify_url,
                client_ip=order.client_ip or self.config.client_ip,
                user_id=order.payer_id if trade_type == "JSAPI" else None,
                out_trade_no=order.out_trade_no,
                time_start=now,
                time_expire=expires,
                product_id=order.out_trade_no if trade_type == "NATIVE" else None,
            )
        )
        if trade_type == "NATIVE":
            code_url = result.get("code_url")
            if not code_url:
                raise InvalidResponse("a NATIVE order came back without code_url")
            return PayParams(NAME, order.method, {"code_url": code_url})
        prepay_id = result.get("prepay_id")
        if not prepay_id:
            raise InvalidResponse("unifiedorder came back without prepay_id")
        if trade_type == "APP":
            return PayParams(NAME, order.method, dict(self._client.order.get_appapi_params(prepay_id)))
        return PayParams(NAME, order.method, self._jsapi_params(prepay_id))

    def _jsapi_params(self, prepay_id: str) -> dict[str, Any]:
        """The arguments of wx.requestPayment (mini programs) / WeixinJSBridge (JSAPI). wechatpy signs them
        with MD5 only; WeChat wants the sign type the order was placed with, so HMAC merchants re-sign."""
        params: dict[str, Any] = dict(self._client.jsapi.get_jsapi_params(prepay_id))
        if self.config.sign_type != "MD5":
            params.pop("paySign", None)
            params["signType"] = self.config.sign_type
            params["paySign"] = signing.sign(params, self.config.api_key, self.config.sign_type)
        return params

    def _trade(self, data: dict[str, str]) -> ChannelTrade:
        state = data.get("trade_state", "")
        if state == "PAYERROR":
            status = TradeStatus.FAILED if data.get("trade_type") == "PAP" else TradeStatus.WAITING
        else:
            status = _TRADE_STATES.get(state, TradeStatus.WAITING)
        # WeChat leaves total_fee out of the answer for some unpaid states; a paid trade always has it.
        total_fee = data.get("total_fee")
        amount = _fen(total_fee, "total_fee") if total_fee or status is TradeStatus.PAID else 0
        return ChannelTrade(
            out_trade_no=data.get("out_trade_no", ""),
            status=status,
            amount_fen=amount,
            channel_trade_no=data.get("transaction_id") or None,
            paid_at=_time(data.get("time_end")) if status is TradeStatus.PAID else None,
        )

    async def query(self, out_trade_no: str) -> ChannelTrade | None:
        """orderquery; a trade it does not know is looked up as a papay deduction (paporderquery)."""
        for fn in (self._client.order.query, self._client.withhold.query_order):
            try:
                data = self._dict(await self._run(fn, out_trade_no=out_trade_no))
            except WechatError as exc:
                if exc.code in _NOT_FOUND:
                    continue
                raise
            if data.get("out_trade_no") != out_trade_no:
                raise InvalidResponse("the answer is about another trade")
            for name, ours in (("appid", self.config.appid), ("mch_id", self.config.mch_id)):
                if data.get(name) not in (None, "", ours):
                    raise InvalidResponse(f"the answer names another {name}")
            if data.get("sub_mch_id"):
                raise InvalidResponse("the answer is about a sub-merchant's trade")
            return self._trade(data)
        return None

    async def close(self, out_trade_no: str) -> None:
        """Closes an unpaid order. Closing a closed or unknown order is a no-op; a paid one raises
        WechatError('ORDERPAID')."""
        try:
            await self._run(self._client.order.close, out_trade_no)
        except WechatError as exc:
            if exc.code not in ("ORDERCLOSED", "ORDERNOTEXIST"):
                raise

    # -- refunds ---------------------------------------------------------------------------------------------

    async def refund(
        self, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> ChannelRefund:
        """Asks for a refund; out_refund_no makes it idempotent (the same number never refunds twice).
        PENDING means accepted: the result comes by query_refund or notification. A refusal (not enough
        balance, amount over what is left, ...) is FAILED; no answer raises ChannelUnavailable."""
        if not 0 < amount_fen <= total_fen:
            raise ValueError("a refund is between 1 fen and the order's total")
        if self.config.is_production_gateway and not self.config.mch_cert:
            raise ValueError("the real gateway wants the merchant API certificate for refunds (mch_cert/key)")
        try:
            data = self._dict(
                await self._run(
                    self._client.refund.apply,
                    total_fee=total_fen,
                    refund_fee=amount_fen,
                    out_refund_no=out_refund_no,
                    out_trade_no=out_trade_no,
                    refund_desc=_truncate_utf8(reason, 80) or None,
                    notify_url=self.config.refund_notify_url,
                )
            )
        except WechatError as exc:
            if not exc.data.get("result_code"):  # return_code FAIL: a protocol problem, not a refusal
                raise
            if exc.code in _REFUND_RETRY:
                # WeChat's "not known yet, call again with the same out_refund_no": not a refusal
                raise ChannelUnavailable(f"wechat refund {out_refund_no}: {exc.code}") from exc
            log.warning("wechat refused refund %s of %s: %s", out_refund_no, out_trade_no, exc)
            return ChannelRefund(out_refund_no, RefundStatus.FAILED, amount_fen)
        if (
            data.get("out_refund_no") != out_refund_no
            or _fen(data.get("refund_fee"), "refund_fee") != amount_fen
        ):
            raise InvalidResponse("the refund answer does not match the request")
        return ChannelRefund(out_refund_no, RefundStatus.PENDING, amount_fen, data.get("refund_id") or None)

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> ChannelRefund | None:
        try:
            data = self._dict(
                await self._run(
                    self._client.refund.query, out_refund_no=out_refund_no, out_trade_no=out_trade_no
                )
            )
        except WechatError as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise
        count = int(data.get("refund_count") or 0)
        for n in range(count):
            if data.get(f"out_refund_no_{n}") == out_refund_no:
                return ChannelRefund(
                    out_refund_no=out_refund_no,
                    status=_REFUND_STATES.get(data.get(f"refund_status_{n}", ""), RefundStatus.PENDING),
                    amount_fen=_fen(data.get(f"refund_fee_{n}"), f"refund_fee_{n}"),
                    channel_refund_no=data.get(f"refund_id_{n}") or None,
                )
        return None

    # -- payouts (PayoutChannel): 企业付款到零钱 -----------------------------------------------------------------

    async def transfer(
        self, out_biz_no: str, amount_fen: int, account: PayoutAccount, remark: str
    ) -> ChannelTransfer:
        """mmpaymkttransfers/promotion/transfers to the openid, with FORCE_CHECK of the holder's real name.
        `out_biz_no` is WeChat's partner_trade_no: repeated with the same parameters it is the same transfer. A
        refusal (name mismatch, account restricted, our balance short) is FAILED with WeChat's reason; a system
        error or no answer raises ChannelUnavailable (query it)."""
        if amount_fen <= 0:
            raise ValueError("amount_fen must be positive")
        if account.identity_type != "WECHAT_OPENID":
            raise ValueError("a WeChat transfer goes to a WECHAT_OPENID")
        if self.config.is_production_gateway and not self.config.mch_cert:
            raise ValueError(
                "the real gateway wants the merchant API certificate for transfers (mch_cert/key)"
            )
        try:
            data = self._dict(
                await self._run(
                    self._client.transfer.transfer,
                    user_id=account.identity,
                    amount=amount_fen,
                    desc=_truncate_utf8(remark, 100),
                    client_ip=self.config.client_ip,
                    check_name="FORCE_CHECK",
                    real_name=account.name,
                    out_trade_no=out_biz_no,
                )
            )
        except WechatError as exc:
            if exc.code in _TRANSFER_UNKNOWN:
                raise ChannelUnavailable(f"wechat transfer {out_biz_no}: {exc.code}") from exc
            log.warning("wechat refused transfer %s: %s", out_biz_no, exc.code)
            return ChannelTransfer(
                out_biz_no,
                TransferStatus.FAILED,
                amount_fen,
                reason=f"{exc.code} {exc.message}".strip()[:200],
            )
        if data.get("partner_trade_no") != out_biz_no:
            raise InvalidResponse("the transfer answer is about another transfer")
        return ChannelTransfer(
            out_biz_no,
            TransferStatus.SUCCEEDED,
            amount_fen,
            channel_order_id=data.get("payment_no") or None,
            paid_at=_time(data.get("payment_time")),
        )

    async def transfer_query(self, out_biz_no: str) -> ChannelTransfer | None:
        """mmpaymkttransfers/gettransferinfo; None when WeChat has no transfer with this partner_trade_no."""
        try:
            data = self._dict(await self._run(self._client.transfer.query, out_biz_no))
        except WechatError as exc:
            if exc.code in ("NOT_FOUND", *_NOT_FOUND):
                return None
            if exc.code in _TRANSFER_UNKNOWN:
                raise ChannelUnavailable(f"wechat transfer query {out_biz_no}: {exc.code}") from exc
            raise
        if data.get("partner_trade_no") != out_biz_no:
            raise InvalidResponse("the transfer query answer is about another transfer")
        state = data.get("status", "")
        status = _TRANSFER_STATES.get(state)
        if status is None:
            raise InvalidResponse(f"unknown transfer status {state!r}")
        return ChannelTransfer(
            out_biz_no,
            status,
            _fen(data.get("payment_amount"), "payment_amount"),
            channel_order_id=data.get("detail_id") or None,
            paid_at=_time(data.get("payment_time")) if status is TransferStatus.SUCCEEDED else None,
            reason=(data.get("reason") or None) if status is TransferStatus.FAILED else None,
        )

    # -- bills -----------------------------------------------------------------------------------------------

    async def download_bill(self, day: dt.date) -> list[BillLine]:
        """The day's ALL bill (payments and refunds), in fen. A day without trades has no bill: []."""
        try:
            text = await self._run(self._client.tools.download_bill, day, bill_type="ALL")
        except WechatError as exc:
            if exc.code == "20002" or "No Bill Exist" in exc.message:
                return []
            raise
        if not isinstance(text, str):
            raise InvalidResponse("downloadbill answered XML without a bill")
        return parse_bill(text, day)

    # -- papay (withholding) ---------------------------------------------------------------------------------

    def _plan_id(self) -> str:
        if not self.config.papay_plan_id:
            raise ValueError("papay needs WechatConfig.papay_plan_id (the withholding template)")
        return self.config.papay_plan_id

    async def agreement_sign(self, external_agreement_no: str, payer_id: str, notify_url: str) -> Agreement:
        """What the client opens to sign a papay contract: `url` (H5 / JSAPI: the entrustweb page) and
        `mini_program` (wx.navigateToMiniProgram to WeChat's signing mini program with `extraData`). The
        contract becomes ACTIVE when the user confirms; the notification or agreement_query tells."""
        signed = self._client.withhold.apply_signing(
            plan_id=self._plan_id(),
            contract_code=external_agreement_no,
            contract_display_account=self.config.papay_display_account,
            notify_url=notify_url,
            request_serial=time.time_ns() // 1000,
            openid=payer_id or None,
            clientip=self.config.client_ip,
        )
        data = {k: str(v) for k, v in signed["data"].items()}
        return Agreement(
            external_agreement_no=external_agreement_no,
            status=AgreementStatus.PENDING,
            sign_params={
                "url": f"{signed['base_url']}?{urlencode(data)}",
                "mini_program": {
                    "appId": PAPAY_MINI_PROGRAM_APPID,
                    "path": "pages/index/index",
                    "extraData": data,
                },
            },
        )

    async def agreement_query(self, external_agreement_no: str) -> Agreement:
        try:
            data = self._dict(
                await self._run(
                    self._client.withhold.query_signing,
                    plan_id=self._plan_id(),
                    contract_code=external_agreement_no,
                )
            )
        except WechatError as exc:
            if exc.code in _NOT_FOUND:
                return Agreement(external_agreement_no, AgreementStatus.PENDING)
            raise
        state = data.get("contract_state")
        status = AgreementStatus.ACTIVE if state == "0" else AgreementStatus.ENDED
        return Agreement(external_agreement_no, status, data.get("contract_id") or None)

    async def deduct(
        self, agreement_no: str, out_trade_no: str, amount_fen: int, subject: str, notify_url: str
    ) -> ChannelTrade:
        """pappayapply. Accepted is not paid: WAITING, query until PAID or FAILED (failures are not
        notified). A refused deduction is FAILED; no answer raises ChannelUnavailable (query it)."""
        if amount_fen <= 0:
            raise ValueError("amount_fen must be positive")
        # Built here rather than through withhold.apply_deduct, which looks its own IP up by DNS on every call.
        data = {
            "appid": self.config.appid,
            "mch_id": self.config.mch_id,
            "body": _truncate_utf8(subject, 128),
            "out_trade_no": out_trade_no,
            "total_fee": amount_fen,
            "fee_type": "CNY",
            "trade_type": "PAP",
            "contract_id": agreement_no,
            "notify_url": notify_url,
            "spbill_create_ip": self.config.client_ip,
        }
        try:
            await self._run(self._client.post, "pay/pappayapply", data=data)
        except WechatError as exc:
            if not exc.data.get("result_code"):
                raise
            if exc.code == "ORDERPAID":  # this out_trade_no was deducted already: say how it stands
                trade = await self.query(out_trade_no)
                if trade is not None:
                    return trade
            log.warning("wechat refused deduction %s: %s", out_trade_no, exc)
            return ChannelTrade(out_trade_no, TradeStatus.FAILED, amount_fen)
        return ChannelTrade(out_trade_no, TradeStatus.WAITING, amount_fen)

    # -- notifications ---------------------------------------------------------------------------------------

    def parse_notification(self, body: bytes, content_type: str) -> Notification:
        """Payment and papay deduction results (signed with the merchant's sign type), papay contract changes
        (signed), refund results (req_info encrypted with AES-256-ECB, key md5(api_key)). Refused: anything
        unsigned or badly signed, signed with another sign type, for another app or merchant, or malformed."""
        try:
            data = signing.parse_xml(body)
        except signing.XmlError as exc:
            raise InvalidNotification(f"not a WeChat Pay notification: {exc}") from exc
        if data.get("return_code") != "SUCCESS":
            raise InvalidNotification(
                f"return_code {data.get('return_code')!r}: {data.get('return_msg', '')}"
            )
        if data.get("mch_id") != self.config.mch_id:
            raise ForeignNotification("mch_id")
        if data.get("sub_mch_id"):
            # Only a service provider's notifications name a sub-merchant, and we are a merchant of our own: a
            # sub_mch_id means a trade of someone else's, even under our mch_id.
            raise ForeignNotification("sub_mch_id")
        if "req_info" in data:
            return self._refund_notification(data)
        contract = "contract_code" in data and "change_type" in data
        declared = data.get("sign_type")
        if contract:
            # Papay contracts are signed up through wechatpy's MD5-only entrustweb request, so their
            # notifications may come MD5-signed even to an HMAC-SHA256 merchant (still keyed with the API key).
            allowed = (declared,) if declared else (self.config.sign_type, "MD5")
        else:
            allowed = (declared or self.config.sign_type,)
            if allowed[0] != self.config.sign_type:
                raise InvalidNotification(
                    f"signed with {allowed[0]}, this merchant uses {self.config.sign_type}"
                )
        if not any(
            t in SIGN_TYPES and signing.verify(data, self.config.api_key, t) for t in dict.fromkeys(allowed)
        ):
            raise InvalidNotification("bad signature")
        if contract:
            return self._contract_notification(data)
        if data.get("appid") != self.config.appid:
            raise ForeignNotification("appid")
        return self._payment_notification(data)

    def _payment_notification(self, data: dict[str, str]) -> Notification:
        out_trade_no, total_fee = data.get("out_trade_no"), data.get("total_fee")
        if not out_trade_no or not total_fee or not (total_fee.isascii() and total_fee.isdigit()):
            raise InvalidNotification("no out_trade_no or total_fee")
        papay = data.get("trade_type") == "PAP"
        if data.get("result_code") == "SUCCESS":
            if not data.get("transaction_id"):
                raise InvalidNotification("a payment without transaction_id")
            status = TradeStatus.PAID
        else:
            status = TradeStatus.FAILED if papay else TradeStatus.WAITING
        return Notification(
            kind="deduction" if papay else "payment",
            app_id=data["appid"],
            out_trade_no=out_trade_no,
            status=status,
            amount_fen=int(total_fee),
            channel_trade_no=data.get("transaction_id") or None,
            agreement_no=data.get("contract_id") or None,
            paid_at=_time(data.get("time_end")) if status is TradeStatus.PAID else None,
            raw=dict(data),
        )

    def _contract_notification(self, data: dict[str, str]) -> Notification:
        """Papay contract signed (ADD) or ended (DELETE). out_trade_no carries our contract_code (the
        external agreement number), agreement_no WeChat's contract_id."""
        if data.get("appid") not in (None, "", self.config.appid):
            raise ForeignNotification("appid")
        if self.config.papay_plan_id and data.get("plan_id") != self.config.papay_plan_id:
            raise InvalidNotification("the contract is for another plan")
        change = data.get("change_type")
        if change not in ("ADD", "DELETE") or not data.get("contract_code"):
            raise InvalidNotification(f"unknown contract change {change!r}")
        return Notification(
            kind="agreement",
            app_id=data.get("appid") or self.config.appid,
            out_trade_no=data["contract_code"],
            status=AgreementStatus.ACTIVE if change == "ADD" else AgreementStatus.ENDED,
            amount_fen=0,
            agreement_no=data.get("contract_id") or None,
            raw=dict(data),
        )

    def _refund_notification(self, data: dict[str, str]) -> Notification:
        if data.get("appid") != self.config.appid:
            raise ForeignNotification("appid")
        key = hashlib.md5(self.config.api_key.encode("utf-8")).hexdigest().encode("ascii")  # noqa: S324
        try:
            cipher = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # noqa: S305 - WeChat's protocol
            padded = cipher.update(base64.b64decode(data["req_info"], validate=True)) + cipher.finalize()
            info = signing.parse_xml(_unpad(padded), root="root")
        except (ValueError, signing.XmlError) as exc:
            raise InvalidNotification("req_info does not decrypt with this merchant's key") from exc
        out_trade_no, out_refund_no, refund_fee = (
            info.get("out_trade_no"),
            info.get("out_refund_no"),
            info.get("refund_fee"),
        )
        if (
            not out_trade_no
            or not out_refund_no
            or not refund_fee
            or not (refund_fee.isascii() and refund_fee.isdigit())
        ):
            raise InvalidNotification("a refund notification without trade, refund number or amount")
        return Notification(
            kind="refund",
            app_id=data["appid"],
            out_trade_no=out_trade_no,
            status=_REFUND_STATES.get(info.get("refund_status", ""), RefundStatus.PENDING),
            amount_fen=int(refund_fee),
            channel_trade_no=info.get("transaction_id") or None,
            out_refund_no=out_refund_no,
            paid_at=_time(info.get("success_time")),
            raw={**data, **info},
        )

    def acknowledge(self, accepted: bool) -> tuple[bytes, str]:
        code, msg = ("SUCCESS", "OK") if accepted else ("FAIL", "FAIL")
        return _ACK.format(code=code, msg=msg).encode("utf-8"), "application/xml"
