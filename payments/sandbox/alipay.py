"""A local Alipay gateway that speaks the real protocol, for `make run` and tests.

`POST /gateway.do` takes requests exactly as alipay-sdk-python sends them (common parameters in the query string,
the rest as a form body; both places are read), checks the app id, the timestamp (Beijing time, within 15 minutes)
and the RSA2 signature with the registered app public key (refusing with 40001/40002 answers as Alipay does), and
answers `{"<method>_response": {...}, "sign": "..."}` signed over the exact bytes of the response object it sends.
Trades, refunds and agreements are kept in memory. Asynchronous notifications are signed form posts (sign_type
RSA2) to the notify_url of the trade or agreement, retried a few times in the background until the receiver answers
`success`. Bills: the bill-download-url method returns a URL on this server serving a zip of GBK CSV files with `#`
comment lines, as Alipay does.

What Alipay does on the user's side is done by test controls under `/_sandbox/` (JSON in and out):

    POST /_sandbox/open                         {"order_string": "<signed app-pay / agreement-sign string>"} or
                                                {"url": "<agreement sign page URL>"}: the user opens it in Alipay
                                                (a GET of the URL on /gateway.do does the same)
    POST /_sandbox/trades/{out_trade_no}/pay    {"deliver": true, "buyer_id": "2088…", "paid_at": "YYYY-MM-DD
                                                HH:MM:SS" (optional, Asia/Shanghai)} -> TRADE_SUCCESS
    POST /_sandbox/trades/{out_trade_no}/cancel {"deliver": true}  -> TRADE_CLOSED by the user
    POST /_sandbox/trades/{out_trade_no}/finish {"deliver": true}  -> TRADE_FINISHED (no longer refundable)
    POST /_sandbox/trades/{out_trade_no}/notification
                                                {"trade_status": "...", "deliver": false, "fields": {"k": "v"|null}}
                                                -> a signed notification of any status, state unchanged; `fields`
                                                overrides or (null) removes parameters before signing
    GET  /_sandbox/trades/{out_trade_no}        -> the sandbox's record, with its notification deliveries
    POST /_sandbox/agreements/{external_agreement_no}/sign    {"deliver": true, "alipay_user_id": "2088…"}
    POST /_sandbox/agreements/{external_agreement_no}/unsign  {"deliver": true}
    GET  /_sandbox/agreements/{external_agreement_no}
    POST /_sandbox/faults     {"method": "alipay.trade.pay", "mode": "timeout"|"error"|"refuse"|"pending"|"tamper"|
                               "unsigned", "times": 1, "delay_s": 30, "apply": true, "sub_code": …, "sub_msg": …}
    DELETE /_sandbox/faults   -> no faults left
    POST /_sandbox/bill-edits {"day": "YYYY-MM-DD", "edits": [{"op": "drop"|"amount"|"fee"|"status"|"add",
                               "out_trade_no": "...", "kind": "payment"|"refund", "out_refund_no": "...",
                               "value": ...}]}
    POST /_sandbox/payees/{identity}            {"name": "张三", "state": "normal"|"closed"}: the Alipay account a
                                                transfer goes to; another name is refused
                                                (PAYEE_USER_INFO_ERROR), a closed account too
                                                (PAYEE_ACCOUNT_STATUS_ERROR). Unregistered accounts take any name.
    GET  /_sandbox/transfers?identity=…         the transfers made (to one account), and what they paid
    GET  /_sandbox/transfers/{out_biz_no}
    POST /_sandbox/reset      -> forget everything but the keys
    GET  /_sandbox/health

Every control that produces a notification returns it as {"notification": {"body": "<form body>",
"content_type": "application/x-www-form-urlencoded"}}: the exact signed body, so a test can post it into the app
as often and as concurrently as it likes; with "deliver": true the sandbox also posts it itself.

Faults apply to the next `times` calls of one method: `timeout` processes the call (unless "apply": false) but holds
the answer for `delay_s` seconds, past any sane client timeout; `error` answers HTTP 500 without processing;
`refuse` answers a business failure (40004; for alipay.trade.pay a failed deduction, recorded as a closed trade);
`pending` (alipay.trade.pay) answers 10003 and leaves the trade waiting until /pay; `tamper` alters the response
after signing it; `unsigned` drops the signature.

Transfers (alipay.fund.trans.uni.transfer, alipay.fund.trans.common.query): the same out_biz_no asked again with the
same payee and amount is the same transfer (the first answer again, no money moves); with other parameters it is
refused (PAYMENT_INFO_INCONSISTENCY), as Alipay does. Faults apply to them like to any method.

Bill edits stay in force for that day until replaced (post an empty list to clear). Amount and fee values are fen:
`amount` sets the line's amount (positive; refunds are written negative as Alipay does), `fee` the fee Alipay keeps
(positive = charged, written as a negative 服务费), `status` replaces the 业务类型 text, `drop` removes the line, `add`
appends a line described by `value` {"kind", "amount_fen", "fee_fen", "channel_trade_no", "out_refund_no", "at",
"subject"}."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import os
import secrets
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from litestar import Litestar, Request, Response, delete, get, post
from litestar.logging.config import LoggingConfig

from payments.sandbox.keys import AlipayKeys, load_or_create_alipay_keys
from payments.sandbox.kit import (
    SHANGHAI,
    ControlError,
    Delivery,
    Fault,
    Faults,
    Notifier,
    PayeeBook,
    SandboxTransfer,
    apply_bill_edits,
    fee_fen,
    json_body,
    now,
    read_bill_edits,
    reply,
    run_control,
    yuan,
)

DEMO_APP_ID = "2021000000000001"
DEMO_SELLER_ID = "2088000000000001"
FORM = "application/x-www-form-urlencoded"
JSON_UTF8 = "application/json;charset=utf-8"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_CENT = Decimal("0.01")

WAIT, SUCCESS, FINISHED, CLOSED = "WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED"
TRADE_STATUSES = (WAIT, SUCCESS, FINISHED, CLOSED)
FAULT_MODES = ("timeout", "error", "refuse", "pending", "tamper", "unsigned")
BILL_OPS = ("drop", "amount", "fee", "status", "add")
REFUSALS = {
    "alipay.trade.pay": ("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足"),
    "alipay.trade.refund": ("ACQ.SELLER_BALANCE_NOT_ENOUGH", "卖家余额不足"),
    "alipay.trade.close": ("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
    "alipay.data.dataservice.bill.downloadurl.query": ("isp.bill_not_exist", "账单不存在"),
    "alipay.fund.trans.uni.transfer": ("PAYER_BALANCE_NOT_ENOUGH", "付款方余额不足"),
}
TRANSFER_REFUSALS = {
    "name_mismatch": ("PAYEE_USER_INFO_ERROR", "支付宝账号和姓名不匹配，请确认姓名是否正确"),
    "account_closed": ("PAYEE_ACCOUNT_STATUS_ERROR", "收款方账户状态异常"),
}
BILL_COLUMNS = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
).split(",")


# -- helpers ---------------------------------------------------------------------------------------------------------


def _fmt(when: dt.datetime | None) -> str:
    return when.astimezone(SHANGHAI).strftime(TIME_FORMAT) if when else ""


def _fen(text: Any) -> int:
    """A yuan amount string (at most two decimals) as fen; ValueError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("amount missing")
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"bad amount {text!r}") from None
    if not value.is_finite() or value != value.quantize(_CENT):
        raise ValueError(f"bad amount {text!r}")
    return int(value * 100)


def _digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


class _Failure(Exception):
    """A gateway error answer: code 40001/40002/40004/20000 with sub_code and sub_msg."""

    MESSAGES = {
        "40001": "Missing Required Arguments",
        "40002": "Invalid Arguments",
        "40004": "Business Failed",
        "20000": "Service Currently Unavailable",
    }

    def __init__(self, code: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(f"{code} {sub_code} {sub_msg}")
        self.body = {"code": code, "msg": self.MESSAGES[code], "sub_code": sub_code, "sub_msg": sub_msg}


def _biz(sub_code: str, sub_msg: str) -> _Failure:
    return _Failure("40004", sub_code, sub_msg)


def _invalid(sub_code: str, sub_msg: str) -> _Failure:
    return _Failure("40002", sub_code, sub_msg)


# -- state -------------------------------------------------------------------------------------------------------------


@dataclass
class _Refund:
    out_request_no: str
    amount_fen: int
    fee_fen: int  # fee given back
    reason: str
    at: dt.datetime


@dataclass
class _Trade:
    out_trade_no: str
    trade_no: str
    total_fen: int
    subject: str
    product_code: str
    api: str  # the method that created it
    notify_url: str | None
    created_at: dt.datetime
    time_expire: dt.datetime | None = None
    buyer_id: str | None = None
    buyer_open_id: str | None = None
    passback_params: str | None = None
    agreement_no: str | None = None
    status: str = WAIT
    paid_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    fee_fen: int = 0
    refunds: dict[str, _Refund] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def refunded_fen(self) -> int:
        return sum(r.amount_fen for r in self.refunds.values())

    def record(self) -> dict[str, Any]:
        return {
            "out_trade_no": self.out_trade_no,
            "trade_no": self.trade_no,
            "trade_status": self.status,
            "total_amount": yuan(self.total_fen),
            "total_fen": self.total_fen,
            "subject": self.subject,
            "product_code": self.product_code,
            "api": self.api,
            "notify_url": self.notify_url,
            "buyer_id": self.buyer_id,
            "buyer_open_id": self.buyer_open_id,
            "agreement_no": self.agreement_no,
            "gmt_create": _fmt(self.created_at),
            "gmt_payment": _fmt(self.paid_at),
            "gmt_close": _fmt(self.closed_at),
            "time_expire": _fmt(self.time_expire),
            "fee_fen": self.fee_fen,
            "refunded_fen": self.refunded_fen,
            "refunds": [
                {
                    "out_request_no": r.out_request_no,
                    "amount_fen": r.amount_fen,
                    "fee_fen": r.fee_fen,
                    "gmt_refund": _fmt(r.at),
                }
                for r in self.refunds.values()
            ],
            "deliveries": _deliveries(self.deliveries),
        }


@dataclass
class _Agreement:
    external_agreement_no: str
    personal_product_code: str
    product_code: str
    sign_scene: str
    external_logon_id: str | None
    notify_url: str | None
    single_amount_fen: int | None
    status: str = "TEMP"
    agreement_no: str | None = None
    alipay_user_id: str | None = None
    sign_time: dt.datetime | None = None
    invalid_time: dt.datetime | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "external_agreement_no": self.external_agreement_no,
            "agreement_no": self.agreement_no,
            "status": self.status,
            "personal_product_code": self.personal_product_code,
            "product_code": self.product_code,
            "sign_scene": self.sign_scene,
            "alipay_user_id": self.alipay_user_id,
            "external_logon_id": self.external_logon_id,
            "notify_url": self.notify_url,
            "sign_time": _fmt(self.sign_time),
            "single_amount_fen": self.single_amount_fen,
            "deliveries": _deliveries(self.deliveries),
        }


def _deliveries(deliveries: list[Delivery]) -> list[dict[str, Any]]:
    """A record's notifications as the trade and agreement controls show them."""
    return [
        {
            "what": d.kind,
            "url": d.url,
            "attempts": d.attempts,
            "delivered": d.delivered,
            "last_error": d.last_error,
        }
        for d in deliveries
    ]


class _GbkZipInfo(zipfile.ZipInfo):
    """Alipay writes member names as GBK bytes without the UTF-8 flag; so does the sandbox."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # zipfile's own (private) hook
        return self.filename.encode("gbk"), self.flag_bits & ~0x800


class _BillLines:
    """Bill edits on the sandbox's lines before they are written (kit.BillEditor)."""

    def matches(self, line: dict[str, Any], edit: dict[str, Any]) -> bool:
        if line["out_trade_no"] != edit.get("out_trade_no"):
            return False
        if edit.get("out_refund_no"):
            return bool(line["out_refund_no"] == edit["out_refund_no"])
        return bool(line["kind"] == edit.get("kind", "payment"))

    def with_amount(self, line: dict[str, Any], fen: int) -> dict[str, Any]:
        return {**line, "amount_fen": fen}

    def with_fee(self, line: dict[str, Any], fen: int) -> dict[str, Any]:
        return {**line, "fee_fen": fen}

    def with_status(self, line: dict[str, Any], status: str) -> dict[str, Any]:
        return {**line, "type": status}

    def added(self, edit: dict[str, Any], day: dt.date) -> dict[str, Any]:
        spec = dict(edit.get("value") or {})
        at = spec.get("at")
        finished = (
            dt.datetime.strptime(at, TIME_FORMAT).replace(tzinfo=SHANGHAI)
            if at
            else dt.datetime.combine(day, dt.time(12), SHANGHAI)
        )
        kind = spec.get("kind", "refund" if spec.get("out_refund_no") else "payment")
        return {
            "kind": kind,
            "trade_no": spec.get("channel_trade_no") or day.strftime("%Y%m%d") + "2200" + _digits(16),
            "out_trade_no": edit["out_trade_no"],
            "type": "退款" if kind == "refund" else "交易",
            "subject": spec.get("subject", "sandbox"),
            "created": finished,
            "finished": finished,
            "amount_fen": int(spec.get("amount_fen", 0)),
            "fee_fen": int(spec.get("fee_fen", 0)),
            "out_refund_no": spec.get("out_refund_no") or "",
            "buyer": "",
        }


# -- the sandbox -------------------------------------------------------------------------------------------------------


class AlipaySandbox:
    """State and protocol of the local gateway; `.app` is the ASGI application."""

    def __init__(
        self,
        keys: AlipayKeys,
        app_id: str = DEMO_APP_ID,
        *,
        seller_id: str = DEMO_SELLER_ID,
        fee_per_mille: int = 6,
        retry_delays: tuple[float, ...] = (0.0, 0.5, 2.0, 5.0, 10.0),
        notify_timeout_s: float = 5.0,
    ) -> None:
        self.app_id = app_id
        self.seller_id = seller_id
        self.fee_per_mille = fee_per_mille
        self.retry_delays = retry_delays
        self.notify_timeout_s = notify_timeout_s
        self.keys = keys
        app_public = serialization.load_pem_public_key(keys.app_public_key.encode("ascii"))
        alipay_private = serialization.load_pem_private_key(
            keys.alipay_private_key.encode("ascii"), password=None
        )
        if not isinstance(app_public, rsa.RSAPublicKey) or not isinstance(alipay_private, rsa.RSAPrivateKey):
            raise ValueError("the sandbox needs RSA keys")
        self._app_public = app_public
        self._alipay_private = alipay_private
        self.notifier = Notifier(
            content_type=f"{FORM};charset=utf-8",
            acknowledged=lambda answer: answer.strip() == b"success",
            retry_delays=retry_delays,
            timeout_s=notify_timeout_s,
        )
        self.faults = Faults()
        self.payees = PayeeBook()
        self.reset()
        self.app = self._build_app()

    def reset(self) -> None:
        self.trades: dict[str, _Trade] = {}
        self.agreements: dict[str, _Agreement] = {}
        self.faults.clear()
        self.bill_edits: dict[dt.date, list[dict[str, Any]]] = {}
        self.bills: dict[str, tuple[str, bytes]] = {}
        self.notifier.deliveries.clear()
        self.payees.clear()

    # -- signatures ------------------------------------------------------------------------------------------

    def sign(self, content: str) -> str:
        signature = self._alipay_private.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    @staticmethod
    def sign_content(params: dict[str, str], exclude: tuple[str, ...]) -> str:
        """Sorted `k=v` joined by `&`, skipping `exclude` and empty values (Alipay's server-side rule)."""
        return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in exclude and v != "")

    def _check_request(self, params: dict[str, str]) -> None:
        """The common parameters and the app's RSA2 signature; raises _Failure as the gateway would answer."""
        for name in ("app_id", "method", "charset", "sign_type", "timestamp", "version"):
            if not params.get(name):
                raise _Failure("40001", f"isv.missing-{name.replace('_', '-')}", f"缺少{name}参数")
        if not params.get("sign"):
            raise _Failure("40001", "isv.missing-signature", "缺少签名参数")
        if params["app_id"] != self.app_id:
            raise _invalid("isv.invalid-app-id", "无效的AppID参数")
        if params["charset"].lower() not in ("utf-8", "utf8"):
            raise _invalid("isv.invalid-charset", "字符集错误 (the sandbox speaks utf-8)")
        if params["sign_type"] != "RSA2":
            raise _invalid("isv.invalid-signature-type", "无效的签名类型 (this app is registered for RSA2)")
        try:
            stamp = dt.datetime.strptime(params["timestamp"], TIME_FORMAT).replace(tzinfo=SHANGHAI)
        except ValueError:
            raise _invalid("isv.invalid-timestamp", "非法的时间戳参数") from None
        if abs(stamp - now()) > dt.timedelta(minutes=15):
            raise _invalid("isv.invalid-timestamp", "时间戳与服务器时间(北京时间)相差超过15分钟")
        try:
            signature = base64.b64decode(params["sign"], validate=True)
            self._app_public.verify(
                signature,
                self.sign_content(params, ("sign",)).encode("utf-8"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            raise _invalid(
                "isv.invalid-signature", "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配"
            ) from None

    def _response(self, method: str, body: dict[str, Any], *, fault: Fault | None = None) -> Response[bytes]:
        key = method.replace(".", "_") + "_response" if method else "error_response"
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        signature = self.sign(content)
        if fault is not None and fault.mode == "tamper":
            content = content[:-1] + ',"tampered":"yes"}'
        if fault is not None and fault.mode == "unsigned":
            text = '{"' + key + '":' + content + "}"
        else:
            text = '{"' + key + '":' + content + ',"sign":"' + signature + '"}'
        return Response(content=text.encode("utf-8"), media_type=JSON_UTF8, status_code=200)

    # -- notifications ---------------------------------------------------------------------------------------

    def _notification(self, params: dict[str, str], overrides: dict[str, str | None] | None = None) -> str:
        full = {
            "notify_time": _fmt(now()),
            "notify_id": uuid.uuid4().hex,
            "app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            **params,
        }
        for key, value in (overrides or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = str(value)
        full = {k: v for k, v in full.items() if v != ""}
        full["sign_type"] = "RSA2"
        full["sign"] = self.sign(self.sign_content(full, ("sign", "sign_type")))
        return urlencode(full)

    def _trade_notification(
        self,
        trade: _Trade,
        status: str,
        extra: dict[str, str] | None = None,
        overrides: dict[str, str | None] | None = None,
    ) -> str:
        params = {
            "notify_type": "trade_status_sync",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "seller_id": self.seller_id,
            "auth_app_id": self.app_id,
            "buyer_id": trade.buyer_id or "",
            "buyer_open_id": trade.buyer_open_id or "",
            "trade_status": status,
            "total_amount": yuan(trade.total_fen),
            "subject": trade.subject,
            "gmt_create": _fmt(trade.created_at),
            "gmt_payment": _fmt(trade.paid_at),
            "gmt_close": _fmt(trade.closed_at),
            "passback_params": trade.passback_params or "",
        }
        if status in (SUCCESS, FINISHED) and trade.paid_at:
            paid = yuan(trade.total_fen)
            params.update({"receipt_amount": paid, "buyer_pay_amount": paid, "invoice_amount": paid})
        params.update(extra or {})
        return self._notification(params, overrides)

    def _deliver(self, url: str | None, body: str, log: list[Delivery], what: str, key: str) -> None:
        log.extend(self.notifier.deliver(url, body, kind=what, key=key))

    # -- trades ----------------------------------------------------------------------------------------------

    def _expire(self, trade: _Trade) -> None:
        if trade.status == WAIT and trade.time_expire is not None and now() > trade.time_expire:
            trade.status = CLOSED
            trade.closed_at = trade.time_expire

    def _find(self, biz: dict[str, Any]) -> _Trade:
        trade: _Trade | None = None
        if biz.get("out_trade_no"):
            trade = self.trades.get(str(biz["out_trade_no"]))
        elif biz.get("trade_no"):
            trade = next((t for t in self.trades.values() if t.trade_no == biz["trade_no"]), None)
        else:
            raise _invalid("isv.missing-parameter", "out_trade_no 与 trade_no 不能同时为空")
        if trade is None:
            raise _biz("ACQ.TRADE_NOT_EXIST", "交易不存在")
        self._expire(trade)
        return trade

    def _fee(self, fen: int) -> int:
        return fee_fen(fen, Decimal(self.fee_per_mille) / 1000)

    def _open_trade(self, biz: dict[str, Any], params: dict[str, str], api: str, product_code: str) -> _Trade:
        out_trade_no = str(biz.get("out_trade_no") or "")
        if not out_trade_no or len(out_trade_no) > 64:
            raise _invalid("isv.invalid-parameter", "out_trade_no 无效")
        try:
            total_fen = _fen(biz.get("total_amount"))
        except ValueError:
            raise _invalid("isv.invalid-parameter", "total_amount 无效") from None
        if not 1 <= total_fen <= 100_000_000_00:
            raise _biz("ACQ.TOTAL_FEE_EXCEED", "订单金额超过限额")
        subject = str(biz.get("subject") or "")
        if not subject:
            raise _invalid("isv.missing-parameter", "subject 不能为空")
        existing = self.trades.get(out_trade_no)
        if existing is not None:
            self._expire(existing)
            if existing.status in (SUCCESS, FINISHED):
                raise _biz("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
            if existing.status == CLOSED:
                raise _biz("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
            if existing.total_fen != total_fen or existing.api != api:
                raise _biz("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
            return existing
        time_expire = None
        if biz.get("time_expire"):
            try:
                time_expire = dt.datetime.strptime(str(biz["time_expire"]), TIME_FORMAT).replace(
                    tzinfo=SHANGHAI
                )
            except ValueError:
                raise _invalid("isv.invalid-parameter", "time_expire 格式错误") from None
            if time_expire <= now():
                raise _biz("ACQ.TRADE_HAS_CLOSE", "交易已经关闭 (time_expire is past)")
        trade = _Trade(
            out_trade_no=out_trade_no,
            trade_no=now().strftime("%Y%m%d") + "2200" + _digits(16),
            total_fen=total_fen,
            subject=subject,
            product_code=product_code,
            api=api,
            notify_url=params.get("notify_url") or None,
            created_at=now(),
            time_expire=time_expire,
            buyer_id=str(biz["buyer_id"]) if biz.get("buyer_id") else None,
            buyer_open_id=str(biz["buyer_open_id"]) if biz.get("buyer_open_id") else None,
            passback_params=str(biz["passback_params"]) if biz.get("passback_params") else None,
        )
        self.trades[out_trade_no] = trade
        return trade

    def _mark_paid(self, trade: _Trade, buyer_id: str | None = None) -> None:
        trade.status = SUCCESS
        trade.paid_at = now()
        trade.fee_fen = self._fee(trade.total_fen)
        if buyer_id:
            trade.buyer_id = buyer_id
        elif not trade.buyer_id:
            trade.buyer_id = "2088" + _digits(12)

    def _m_trade_create(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        product_code = str(biz.get("product_code") or "JSAPI_PAY")
        if product_code != "JSAPI_PAY":
            raise _invalid("isv.invalid-parameter", "product_code 应为 JSAPI_PAY")
        if not biz.get("buyer_id") and not biz.get("buyer_open_id"):
            raise _biz("ACQ.INVALID_PARAMETER", "buyer_id 与 buyer_open_id 不能同时为空")
        trade = self._open_trade(biz, params, "alipay.trade.create", product_code)
        return {
            "code": "10000",
            "msg": "Success",
            "out_trade_no": trade.out_trade_no,
            "trade_no": trade.trade_no,
        }

    def _m_trade_precreate(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        trade = self._open_trade(biz, params, "alipay.trade.precreate", "FACE_TO_FACE_PAYMENT")
        base = params.get("_base_url", "")
        return {
            "code": "10000",
            "msg": "Success",
            "out_trade_no": trade.out_trade_no,
            "qr_code": f"{base}/qr/{trade.trade_no}",
        }

    def _m_trade_query(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        trade = self._find(biz)
        body: dict[str, Any] = {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": trade.status,
            "total_amount": yuan(trade.total_fen),
        }
        if trade.buyer_id:
            body["buyer_user_id"] = trade.buyer_id
        if trade.buyer_open_id:
            body["buyer_open_id"] = trade.buyer_open_id
        if trade.paid_at:
            body["send_pay_date"] = _fmt(trade.paid_at)
            body["buyer_pay_amount"] = body["receipt_amount"] = yuan(trade.total_fen)
        return body

    def _m_trade_close(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        trade = self._find(biz)
        if trade.status in (SUCCESS, FINISHED):
            raise _biz("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if trade.status == WAIT:
            trade.status = CLOSED
            trade.closed_at = now()
        return {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
        }

    def _m_trade_refund(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        trade = self._find(biz)
        out_request_no = str(biz.get("out_request_no") or trade.out_trade_no)
        try:
            amount = _fen(biz.get("refund_amount"))
        except ValueError:
            raise _invalid("isv.invalid-parameter", "refund_amount 无效") from None
        if amount <= 0:
            raise _invalid("isv.invalid-parameter", "refund_amount 必须大于0")
        previous = trade.refunds.get(out_request_no)
        answer = {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_user_id": trade.buyer_id or "",
        }
        if previous is not None:  # the same refund asked again: no money moves
            if previous.amount_fen != amount:
                raise _biz(
                    "ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改 (out_request_no used with another amount)"
                )
            return {
                **answer,
                "fund_change": "N",
                "refund_fee": yuan(trade.refunded_fen),
                "send_back_fee": yuan(previous.amount_fen),
                "gmt_refund_pay": _fmt(previous.at),
            }
        if trade.status == WAIT or trade.status == CLOSED:
            raise _biz("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if trade.status == FINISHED:
            raise _biz("ACQ.TRADE_HAS_FINISHED", "交易已完结")
        if trade.refunded_fen + amount > trade.total_fen:
            raise _biz("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        refund = _Refund(
            out_request_no, amount, self._fee(amount), str(biz.get("refund_reason") or ""), now()
        )
        trade.refunds[out_request_no] = refund
        extra = {
            "out_biz_no": out_request_no,
            "refund_fee": yuan(trade.refunded_fen),
            "gmt_refund": _fmt(refund.at),
        }
        if trade.refunded_fen == trade.total_fen:
            trade.status = CLOSED
            trade.closed_at = refund.at
        self._deliver(
            trade.notify_url,
            self._trade_notification(trade, trade.status, extra),
            trade.deliveries,
            f"refund {out_request_no}",
            trade.out_trade_no,
        )
        return {
            **answer,
            "fund_change": "Y",
            "refund_fee": yuan(trade.refunded_fen),
            "send_back_fee": yuan(amount),
            "gmt_refund_pay": _fmt(refund.at),
        }

    def _m_refund_query(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        trade = self._find(biz)
        out_request_no = str(biz.get("out_request_no") or "")
        if not out_request_no:
            raise _invalid("isv.missing-parameter", "out_request_no 不能为空")
        answer: dict[str, Any] = {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
        }
        refund = trade.refunds.get(out_request_no)
        if refund is None:
            return answer  # Alipay's "no such refund": success without refund fields
        return {
            **answer,
            "out_request_no": out_request_no,
            "refund_status": "REFUND_SUCCESS",
            "refund_amount": yuan(refund.amount_fen),
            "total_amount": yuan(trade.total_fen),
            "gmt_refund_pay": _fmt(refund.at),
        }

    def _m_trade_pay(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        product_code = str(biz.get("product_code") or "")
        if product_code not in ("CYCLE_PAY_AUTH", "GENERAL_WITHHOLDING"):
            raise _invalid("isv.invalid-parameter", "the sandbox's alipay.trade.pay does withholding only")
        agreement_no = str((biz.get("agreement_params") or {}).get("agreement_no") or "")
        agreement = next((a for a in self.agreements.values() if a.agreement_no == agreement_no), None)
        if not agreement_no or agreement is None:
            raise _biz("ACQ.AGREEMENT_NOT_EXIST", "用户协议不存在")
        if agreement.status != "NORMAL":
            raise _biz("ACQ.AGREEMENT_STATUS_NOT_NORMAL", "用户协议状态非NORMAL")
        biz = {**biz, "buyer_id": agreement.alipay_user_id}
        retried = str(biz.get("out_trade_no") or "") in self.trades
        trade = self._open_trade(biz, params, "alipay.trade.pay", product_code)
        if retried:  # still waiting (an earlier call answered 10003): same answer
            return {
                "code": "10003",
                "msg": "order success pay inprocess",
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "total_amount": yuan(trade.total_fen),
            }
        trade.agreement_no = agreement_no
        if agreement.single_amount_fen is not None and trade.total_fen > agreement.single_amount_fen:
            trade.status, trade.closed_at = CLOSED, now()
            raise _biz("ACQ.EXCEED_SINGLE_LIMIT", "超过协议单笔限额")
        if fault is not None and fault.mode == "refuse":
            trade.status, trade.closed_at = CLOSED, now()
            raise _biz(*self._refusal("alipay.trade.pay", fault))
        if fault is not None and fault.mode == "pending":
            return {
                "code": "10003",
                "msg": "order success pay inprocess",
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "total_amount": yuan(trade.total_fen),
            }
        self._mark_paid(trade, agreement.alipay_user_id)
        self._deliver(
            trade.notify_url,
            self._trade_notification(trade, SUCCESS),
            trade.deliveries,
            SUCCESS,
            trade.out_trade_no,
        )
        return {
            "code": "10000",
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_user_id": trade.buyer_id,
            "total_amount": yuan(trade.total_fen),
            "receipt_amount": yuan(trade.total_fen),
            "gmt_payment": _fmt(trade.paid_at),
        }

    # -- agreements ------------------------------------------------------------------------------------------

    def _register_agreement(self, biz: dict[str, Any], params: dict[str, str]) -> _Agreement:
        external = str(biz.get("external_agreement_no") or "")
        personal = str(biz.get("personal_product_code") or "")
        if not external or not personal:
            raise _invalid("isv.missing-parameter", "external_agreement_no 与 personal_product_code 不能为空")
        existing = self.agreements.get(external)
        if existing is not None:
            if existing.status == "NORMAL":
                raise _biz("USER_AGREEMENT_ALREADY_EXIST", "协议已存在")
            if existing.status == "TEMP":
                return existing
        single = None
        period = biz.get("period_rule_params") or {}
        if period.get("single_amount"):
            try:
                single = _fen(str(period["single_amount"]))
            except ValueError:
                raise _invalid("isv.invalid-parameter", "single_amount 无效") from None
        agreement = _Agreement(
            external_agreement_no=external,
            personal_product_code=personal,
            product_code=str(biz.get("product_code") or ""),
            sign_scene=str(biz.get("sign_scene") or "DEFAULT|DEFAULT"),
            external_logon_id=str(biz.get("external_logon_id") or "") or None,
            notify_url=params.get("notify_url") or None,
            single_amount_fen=single,
        )
        self.agreements[external] = agreement
        return agreement

    def _agreement_notification(self, agreement: _Agreement, notify_type: str) -> str:
        return self._notification(
            {
                "notify_type": notify_type,
                "external_agreement_no": agreement.external_agreement_no,
                "agreement_no": agreement.agreement_no or "",
                "personal_product_code": agreement.personal_product_code,
                "sign_scene": agreement.sign_scene,
                "status": agreement.status,
                "alipay_user_id": agreement.alipay_user_id or "",
                "external_logon_id": agreement.external_logon_id or "",
                "sign_time": _fmt(agreement.sign_time),
                "invalid_time": _fmt(agreement.invalid_time),
            }
        )

    def _m_agreement_query(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        if not biz.get("personal_product_code"):
            raise _invalid("isv.missing-parameter", "personal_product_code 不能为空")
        agreement: _Agreement | None = None
        if biz.get("agreement_no"):
            agreement = next(
                (a for a in self.agreements.values() if a.agreement_no == biz["agreement_no"]), None
            )
        elif biz.get("external_agreement_no"):
            agreement = self.agreements.get(str(biz["external_agreement_no"]))
        if (
            agreement is None
            or agreement.status == "TEMP"
            or agreement.personal_product_code != biz["personal_product_code"]
        ):
            raise _biz("USER_AGREEMENT_NOT_EXIST", "用户协议不存在")
        return {
            "code": "10000",
            "msg": "Success",
            "agreement_no": agreement.agreement_no,
            "external_agreement_no": agreement.external_agreement_no,
            "personal_product_code": agreement.personal_product_code,
            "sign_scene": agreement.sign_scene,
            "status": agreement.status,
            "principal_id": agreement.alipay_user_id,
            "sign_time": _fmt(agreement.sign_time),
            "valid_time": _fmt(agreement.sign_time),
            "invalid_time": _fmt(agreement.invalid_time) or "2115-02-01 00:00:00",
            "external_logon_id": agreement.external_logon_id or "",
        }

    # -- bills -----------------------------------------------------------------------------------------------

    def _m_bill_url(self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None) -> dict[str, Any]:
        if biz.get("bill_type") not in ("trade", "signcustomer"):
            raise _invalid("isv.invalid-parameter", "bill_type 应为 trade 或 signcustomer")
        try:
            day = dt.date.fromisoformat(str(biz.get("bill_date")))
        except ValueError:
            raise _invalid("isv.invalid-parameter", "bill_date 格式应为 yyyy-MM-dd (days only)") from None
        if day > now().date():
            raise _biz("isp.bill_not_exist", "账单不存在")
        token = secrets.token_hex(12)
        stamp = day.strftime("%Y%m%d")
        self.bills[token] = (f"{self.seller_id}0156_{stamp}.csv.zip", self.bill_zip(day))
        base = params.get("_base_url", "")
        url = (
            f"{base}/downloadBillFile.resource?bizType=trade&fileType=csv.zip&bizDates={stamp}&fileId={token}"
        )
        return {"code": "10000", "msg": "Success", "bill_download_url": url}

    def bill_lines(self, day: dt.date) -> list[dict[str, Any]]:
        """The day's lines before they are written: payments by payment time, refunds by refund time."""
        lines: list[dict[str, Any]] = []
        for trade in self.trades.values():
            if trade.paid_at and trade.paid_at.date() == day:
                lines.append(
                    {
                        "kind": "payment",
                        "trade_no": trade.trade_no,
                        "out_trade_no": trade.out_trade_no,
                        "type": "交易",
                        "subject": trade.subject,
                        "created": trade.created_at,
                        "finished": trade.paid_at,
                        "amount_fen": trade.total_fen,
                        "fee_fen": trade.fee_fen,
                        "out_refund_no": "",
                        "buyer": trade.buyer_id or "",
                    }
                )
            for refund in trade.refunds.values():
                if refund.at.date() == day:
                    lines.append(
                        {
                            "kind": "refund",
                            "trade_no": trade.trade_no,
                            "out_trade_no": trade.out_trade_no,
                            "type": "退款",
                            "subject": trade.subject,
                            "created": trade.created_at,
                            "finished": refund.at,
                            "amount_fen": refund.amount_fen,
                            "fee_fen": -refund.fee_fen,
                            "out_refund_no": refund.out_request_no,
                            "buyer": trade.buyer_id or "",
                        }
                    )
        lines.sort(key=lambda line: (line["finished"], line["out_trade_no"], line["kind"]))
        return apply_bill_edits(lines, self.bill_edits.get(day, []), day, _BillLines())

    def bill_zip(self, day: dt.date) -> bytes:
        lines = self.bill_lines(day)
        account = f"{self.seller_id}0156"
        start = f"{day.year}年{day.month:02d}月{day.day:02d}日 00:00:00"
        nxt = day + dt.timedelta(days=1)
        end = f"{nxt.year}年{nxt.month:02d}月{nxt.day:02d}日 00:00:00"
        at = now()
        exported = f"#导出时间：[{at.year}年{at.month:02d}月{at.day:02d}日 {at:%H:%M:%S}]"
        detail = io.StringIO()
        detail.write("#支付宝业务明细查询\r\n")
        detail.write(f"#账号：[{account}]\r\n")
        detail.write(f"#起始日期：[{start}]   终止日期：[{end}]\r\n")
        detail.write(
            "#-----------------------------------------业务明细列表----------------------------------------\r\n"
        )
        writer = csv.writer(detail, lineterminator="\r\n")
        writer.writerow(BILL_COLUMNS)
        payments = refunds = 0
        for line in lines:
            refund = line["kind"] == "refund"
            payments += not refund
            refunds += refund
            amount = -line["amount_fen"] if refund else line["amount_fen"]
            fields = [
                line["trade_no"],
                line["out_trade_no"],
                line["type"],
                line["subject"],
                _fmt(line["created"]),
                _fmt(line["finished"]),
                "",
                "",
                "",
                "",
                line["buyer"],
                yuan(amount),
                yuan(amount),
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "",
                "0.00",
                "0.00",
                line["out_refund_no"],
                yuan(-line["fee_fen"]),
                "0.00",
                "",
            ]
            writer.writerow([f"{value}\t" for value in fields] + [""])
        detail.write(
            "#-----------------------------------------业务明细列表结束------------------------------------\r\n"
        )
        detail.write(f"#交易合计：{payments}笔，退款合计：{refunds}笔\r\n")
        detail.write(exported + "\r\n")
        total_in = sum(line["amount_fen"] for line in lines if line["kind"] != "refund")
        total_out = sum(line["amount_fen"] for line in lines if line["kind"] == "refund")
        fees = sum(line["fee_fen"] for line in lines)
        summary = (
            "#支付宝业务汇总查询\r\n"
            f"#账号：[{account}]\r\n"
            f"#起始日期：[{start}]   终止日期：[{end}]\r\n"
            "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,服务费（元）\r\n"
            f"合计,,{payments},{refunds},{yuan(total_in - total_out)},{yuan(total_in - total_out)},"
            f"{yuan(-fees)}\r\n"
            "#-----------------------------------------业务汇总列表结束------------------------------------\r\n"
            f"{exported}\r\n"
        )
        stamp = day.strftime("%Y%m%d")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in (
                (f"{account}_{stamp}_业务明细.csv", detail.getvalue()),
                (f"{account}_{stamp}_业务明细(汇总).csv", summary),
            ):
                info = _GbkZipInfo(name, date_time=at.timetuple()[:6])
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, text.encode("gbk"))
        return buffer.getvalue()

    # -- transfers -------------------------------------------------------------------------------------------

    @staticmethod
    def _transfer_answer(transfer: SandboxTransfer) -> dict[str, Any]:
        return {
            "code": "10000",
            "msg": "Success",
            "out_biz_no": transfer.out_biz_no,
            "order_id": transfer.order_id,
            "pay_fund_order_id": transfer.order_id,
            "status": "SUCCESS",
            "trans_date": _fmt(transfer.at),
        }

    def _m_fund_transfer(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        out_biz_no = str(biz.get("out_biz_no") or "")
        if not out_biz_no or len(out_biz_no) > 64:
            raise _invalid("isv.invalid-parameter", "out_biz_no 无效")
        if biz.get("product_code") != "TRANS_ACCOUNT_NO_PWD" or biz.get("biz_scene") != "DIRECT_TRANSFER":
            raise _invalid("isv.invalid-parameter", "product_code/biz_scene 无效")
        try:
            amount = _fen(biz.get("trans_amount"))
        except ValueError:
            raise _invalid("isv.invalid-parameter", "trans_amount 无效") from None
        if amount < 10:
            raise _biz("EXCEED_LIMIT_SM_MIN_AMOUNT", "单笔最低转账金额0.1元")
        payee = biz.get("payee_info")
        if not isinstance(payee, dict):
            raise _Failure("40001", "isv.missing-parameter", "缺少 payee_info")
        identity, identity_type = str(payee.get("identity") or ""), str(payee.get("identity_type") or "")
        name = str(payee.get("name") or "")
        if identity_type not in ("ALIPAY_USER_ID", "ALIPAY_LOGON_ID") or not identity:
            raise _invalid("isv.invalid-parameter", "payee_info.identity_type 无效")
        if identity_type == "ALIPAY_USER_ID" and not (identity.startswith("2088") and len(identity) == 16):
            raise _biz("PAYEE_NOT_EXIST", "收款账号不存在")
        if identity_type == "ALIPAY_LOGON_ID" and not name:
            raise _Failure("40001", "isv.missing-parameter", "ALIPAY_LOGON_ID 必须提供 name")
        existing = self.payees.transfers.get(out_biz_no)
        if existing is not None:  # the same transfer asked again: no money moves
            if not existing.same_request(identity, name, amount):
                raise _biz("PAYMENT_INFO_INCONSISTENCY", "两次请求商户单号一样，但是参数不一致")
            return self._transfer_answer(existing)
        refusal = self.payees.refusal(identity, name)
        if refusal is not None:
            raise _biz(*TRANSFER_REFUSALS[refusal])
        transfer = SandboxTransfer(
            out_biz_no=out_biz_no,
            order_id=now().strftime("%Y%m%d") + "11" + _digits(18),
            identity=identity,
            identity_type=identity_type,
            name=name,
            amount_fen=amount,
            remark=str(biz.get("remark") or biz.get("order_title") or ""),
            status="SUCCESS",
            at=now(),
        )
        self.payees.transfers[out_biz_no] = transfer
        return self._transfer_answer(transfer)

    def _m_fund_query(
        self, biz: dict[str, Any], params: dict[str, str], fault: Fault | None
    ) -> dict[str, Any]:
        out_biz_no = str(biz.get("out_biz_no") or "")
        found = self.payees.transfers.get(out_biz_no) if out_biz_no else None
        if found is None and biz.get("order_id"):
            found = next((t for t in self.payees.transfers.values() if t.order_id == biz["order_id"]), None)
        if found is None:
            if not out_biz_no and not biz.get("order_id"):
                raise _invalid("isv.missing-parameter", "out_biz_no 与 order_id 不能同时为空")
            raise _biz("ORDER_NOT_EXIST", "转账订单不存在")
        return {
            "code": "10000",
            "msg": "Success",
            "order_id": found.order_id,
            "pay_fund_order_id": found.order_id,
            "out_biz_no": found.out_biz_no,
            "trans_amount": yuan(found.amount_fen),
            "status": found.status,
            "pay_date": _fmt(found.at) if found.status == "SUCCESS" else "",
            "fail_reason": found.reason,
        }

    # -- dispatch --------------------------------------------------------------------------------------------

    def _methods(
        self,
    ) -> dict[str, Callable[[dict[str, Any], dict[str, str], Fault | None], dict[str, Any]]]:
        return {
            "alipay.trade.create": self._m_trade_create,
            "alipay.trade.precreate": self._m_trade_precreate,
            "alipay.trade.query": self._m_trade_query,
            "alipay.trade.close": self._m_trade_close,
            "alipay.trade.refund": self._m_trade_refund,
            "alipay.trade.fastpay.refund.query": self._m_refund_query,
            "alipay.trade.pay": self._m_trade_pay,
            "alipay.user.agreement.query": self._m_agreement_query,
            "alipay.data.dataservice.bill.downloadurl.query": self._m_bill_url,
            "alipay.fund.trans.uni.transfer": self._m_fund_transfer,
            "alipay.fund.trans.common.query": self._m_fund_query,
        }

    def _refusal(self, method: str, fault: Fault) -> tuple[str, str]:
        default = REFUSALS.get(method, ("ACQ.ACCESS_FORBIDDEN", "无权限使用接口"))
        return fault.code or default[0], fault.message or default[1]

    @staticmethod
    def _parse_params(query: bytes, body: bytes) -> dict[str, str]:
        params: dict[str, str] = {}
        for source in (query, body):
            # latin-1 keeps every percent-decoded byte as one character; the bytes are then read as UTF-8
            for raw_key, raw_value in parse_qsl(
                source.decode("latin-1"), keep_blank_values=True, encoding="latin-1"
            ):
                key = raw_key.encode("latin-1").decode("utf-8")
                value = raw_value.encode("latin-1").decode("utf-8")
                if key in params and params[key] != value:
                    raise _invalid("isv.invalid-parameter", f"参数 {key} 重复")
                params[key] = value
        return params

    async def gateway(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            params = self._parse_params(request.scope.get("query_string", b""), await request.body())
        except (UnicodeDecodeError, _Failure):
            return self._response("", _invalid("isv.invalid-parameter", "参数编码错误").body)
        method = params.get("method", "")
        handler = self._methods().get(method)
        if handler is None:
            return self._response("", _invalid("isv.invalid-method", f"不存在的方法名 {method!r}").body)
        try:
            self._check_request(params)
        except _Failure as failure:
            return self._response(method, failure.body)
        fault = self.faults.take(method)
        if fault is not None and fault.fails:
            return Response(
                content=b"<html><body>500 Internal Server Error</body></html>",
                status_code=500,
                media_type="text/html",
            )
        if fault is not None and fault.drops:
            await fault.hold()
            return self._response(method, _Failure("20000", "isp.unknow-error", "系统繁忙").body)
        try:
            biz = json.loads(params.get("biz_content") or "{}")
            if not isinstance(biz, dict):
                raise ValueError("biz_content")
        except ValueError:
            return self._response(method, _invalid("isv.invalid-parameter", "biz_content 不是JSON对象").body)
        params["_base_url"] = str(request.base_url).rstrip("/")
        try:
            if fault is not None and fault.mode == "refuse" and method != "alipay.trade.pay":
                raise _biz(*self._refusal(method, fault))
            body = handler(biz, params, fault)
        except _Failure as failure:
            body = failure.body
        if fault is not None:
            await fault.hold()
        return self._response(method, body, fault=fault)

    def open_signed(self, params: dict[str, str]) -> dict[str, Any]:
        """What the Alipay app (or a browser on the sign page) does with a signed app-pay or agreement-sign request."""
        self._check_request(params)
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            raise _invalid("isv.invalid-parameter", "biz_content 不是JSON对象") from None
        if params["method"] == "alipay.trade.app.pay":
            return {
                "trade": self._open_trade(biz, params, "alipay.trade.app.pay", "QUICK_MSECURITY_PAY").record()
            }
        if params["method"] == "alipay.user.agreement.page.sign":
            return {"agreement": self._register_agreement(biz, params).record()}
        raise _invalid("isv.invalid-method", f"{params['method']} is not opened by a user")

    # -- controls --------------------------------------------------------------------------------------------

    def _trade_for_control(self, out_trade_no: str) -> _Trade:
        trade = self.trades.get(out_trade_no)
        if trade is None:
            raise ControlError(404, f"no trade {out_trade_no}")
        self._expire(trade)
        return trade

    @staticmethod
    def _notice(body: str) -> dict[str, Any]:
        return {"body": body, "content_type": FORM}

    def control_pay(self, out_trade_no: str, data: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade_for_control(out_trade_no)
        if trade.status != WAIT:
            raise ControlError(409, f"trade is {trade.status}")
        paid_at = None
        if data.get("paid_at"):
            try:
                paid_at = dt.datetime.strptime(str(data["paid_at"]), TIME_FORMAT).replace(tzinfo=SHANGHAI)
            except ValueError:
                raise ControlError(400, "paid_at must be YYYY-MM-DD HH:MM:SS (Asia/Shanghai)") from None
        self._mark_paid(trade, data.get("buyer_id"))
        if paid_at is not None:  # e.g. just before midnight: items that cross into the next day's bill
            trade.paid_at = paid_at
        body = self._trade_notification(trade, SUCCESS)
        if data.get("deliver", True):
            self._deliver(trade.notify_url, body, trade.deliveries, SUCCESS, trade.out_trade_no)
        return {"trade": trade.record(), "notification": self._notice(body)}

    def control_status(self, out_trade_no: str, data: dict[str, Any], target: str) -> dict[str, Any]:
        trade = self._trade_for_control(out_trade_no)
        if target == CLOSED and trade.status != WAIT:
            raise ControlError(409, f"trade is {trade.status}")
        if target == FINISHED and trade.status != SUCCESS:
            raise ControlError(409, f"trade is {trade.status}")
        trade.status = target
        if target == CLOSED:
            trade.closed_at = now()
        body = self._trade_notification(trade, target)
        if data.get("deliver", True):
            self._deliver(trade.notify_url, body, trade.deliveries, target, trade.out_trade_no)
        return {"trade": trade.record(), "notification": self._notice(body)}

    def control_notification(self, out_trade_no: str, data: dict[str, Any]) -> dict[str, Any]:
        trade = self._trade_for_control(out_trade_no)
        status = data.get("trade_status", trade.status)
        if status not in TRADE_STATUSES:
            raise ControlError(400, f"trade_status must be one of {TRADE_STATUSES}")
        fields = data.get("fields") or {}
        if not isinstance(fields, dict):
            raise ControlError(400, "fields must be an object")
        body = self._trade_notification(trade, status, overrides=fields)
        if data.get("deliver", False):
            self._deliver(trade.notify_url, body, trade.deliveries, f"{status} (control)", trade.out_trade_no)
        return {"trade": trade.record(), "notification": self._notice(body)}

    def control_sign(self, external: str, data: dict[str, Any], sign: bool) -> dict[str, Any]:
        agreement = self.agreements.get(external)
        if agreement is None:
            raise ControlError(404, f"no agreement {external} (open its sign URL or sign_params first)")
        if sign:
            if agreement.status != "TEMP":
                raise ControlError(409, f"agreement is {agreement.status}")
            agreement.status = "NORMAL"
            agreement.agreement_no = now().strftime("%Y%m%d") + _digits(12)
            agreement.alipay_user_id = data.get("alipay_user_id") or "2088" + _digits(12)
            agreement.sign_time = now()
            notify_type = "dut_user_sign"
        else:
            if agreement.status != "NORMAL":
                raise ControlError(409, f"agreement is {agreement.status}")
            agreement.status = "STOP"
            agreement.invalid_time = now()
            notify_type = "dut_user_unsign"
        body = self._agreement_notification(agreement, notify_type)
        if data.get("deliver", True):
            self._deliver(
                agreement.notify_url, body, agreement.deliveries, notify_type, agreement.external_agreement_no
            )
        return {"agreement": agreement.record(), "notification": self._notice(body)}

    def control_fault(self, data: dict[str, Any]) -> dict[str, Any]:
        method, mode = data.get("method"), data.get("mode")
        if method not in self._methods():
            raise ControlError(400, f"method must be one of {sorted(self._methods())}")
        if mode not in FAULT_MODES:
            raise ControlError(400, f"mode must be one of {FAULT_MODES}")
        if mode == "pending" and method != "alipay.trade.pay":
            raise ControlError(400, "pending is for alipay.trade.pay")
        times = data.get("times", 1)
        delay = data.get("delay_s", 30)
        if not isinstance(times, int) or times < 1 or not isinstance(delay, int | float) or delay < 0:
            raise ControlError(400, "times must be a positive integer and delay_s a non-negative number")
        self.faults.set(
            method,
            Fault(
                mode,
                times,
                float(delay),
                apply=bool(data.get("apply", True)),
                code=data.get("sub_code"),
                message=data.get("sub_msg"),
            ),
        )
        return {"method": method, "mode": mode, "times": times}

    def control_bill_edits(self, data: dict[str, Any]) -> dict[str, Any]:
        day, edits = read_bill_edits(data)
        for index, edit in enumerate(edits):
            if edit["op"] == "status" and not isinstance(edit.get("value"), str):
                raise ControlError(400, f"edits[{index}].value must be the 业务类型 text")
            if edit["op"] == "add" and not isinstance(edit.get("value"), dict):
                raise ControlError(400, f"edits[{index}].value must describe the line")
        self.bill_edits[day] = edits
        return {"day": day.isoformat(), "edits": len(edits)}

    # -- the ASGI app ------------------------------------------------------------------------------------------------

    def _build_app(self) -> Litestar:
        sandbox = self

        async def run(action: Callable[[], Awaitable[Any]]) -> Response[bytes]:
            async def answered() -> Any:
                try:
                    return await action()
                except _Failure as failure:
                    raise ControlError(400, failure.body) from None

            return await run_control(answered)

        @post("/gateway.do", status_code=200)
        async def gateway(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await sandbox.gateway(request)

        @get("/gateway.do")
        async def gateway_page(request: Request[Any, Any, Any]) -> Response[bytes]:
            try:
                params = sandbox._parse_params(request.scope.get("query_string", b""), b"")
                opened = sandbox.open_signed(params)
            except _Failure as failure:
                page = f"<html><body><h1>支付宝 sandbox</h1><p>{failure.body['sub_msg']}</p></body></html>"
                return Response(content=page.encode("utf-8"), status_code=400, media_type="text/html")
            what = opened.get("agreement") or opened.get("trade") or {}
            page = (
                "<html><body><h1>支付宝 sandbox</h1><pre>"
                + json.dumps(what, ensure_ascii=False, indent=1).replace("<", "&lt;")
                + "</pre></body></html>"
            )
            return Response(
                content=page.encode("utf-8"), status_code=200, media_type="text/html;charset=utf-8"
            )

        @get("/downloadBillFile.resource")
        async def download_bill(fileId: str) -> Response[bytes]:  # Alipay's parameter name
            found = sandbox.bills.get(fileId)
            if found is None:
                return Response(content=b"not found", status_code=404, media_type="text/plain")
            name, data = found
            return Response(
                content=data,
                media_type="application/zip",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )

        @get("/qr/{trade_no:str}")
        async def qr(trade_no: str) -> Response[bytes]:
            return reply(
                {"trade_no": trade_no, "hint": "scan me with the sandbox: POST /_sandbox/trades/…/pay"}
            )

        @post("/_sandbox/open", status_code=200)
        async def open_(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                data = await json_body(request)
                if isinstance(data.get("order_string"), str):
                    raw = data["order_string"].encode("utf-8")
                elif isinstance(data.get("url"), str):
                    raw = urlsplit(data["url"]).query.encode("utf-8")
                else:
                    raise ControlError(400, "give order_string or url")
                return sandbox.open_signed(sandbox._parse_params(raw, b""))

            return await run(action)

        @post("/_sandbox/trades/{out_trade_no:str}/pay", status_code=200)
        async def pay(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_pay(out_trade_no, await json_body(request))

            return await run(action)

        @post("/_sandbox/trades/{out_trade_no:str}/cancel", status_code=200)
        async def cancel(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_status(out_trade_no, await json_body(request), CLOSED)

            return await run(action)

        @post("/_sandbox/trades/{out_trade_no:str}/finish", status_code=200)
        async def finish(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_status(out_trade_no, await json_body(request), FINISHED)

            return await run(action)

        @post("/_sandbox/trades/{out_trade_no:str}/notification", status_code=200)
        async def notification(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_notification(out_trade_no, await json_body(request))

            return await run(action)

        @get("/_sandbox/trades/{out_trade_no:str}")
        async def trade_record(out_trade_no: str) -> Response[bytes]:
            async def action() -> Any:
                return sandbox._trade_for_control(out_trade_no).record()

            return await run(action)

        @post("/_sandbox/agreements/{external:str}/sign", status_code=200)
        async def sign_agreement(external: str, request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_sign(external, await json_body(request), True)

            return await run(action)

        @post("/_sandbox/agreements/{external:str}/unsign", status_code=200)
        async def unsign_agreement(external: str, request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_sign(external, await json_body(request), False)

            return await run(action)

        @get("/_sandbox/agreements/{external:str}")
        async def agreement_record(external: str) -> Response[bytes]:
            async def action() -> Any:
                found = sandbox.agreements.get(external)
                if found is None:
                    raise ControlError(404, f"no agreement {external}")
                return found.record()

            return await run(action)

        @post("/_sandbox/faults", status_code=200)
        async def add_fault(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_fault(await json_body(request))

            return await run(action)

        @delete("/_sandbox/faults", status_code=200)
        async def clear_faults() -> Response[bytes]:
            sandbox.faults.clear()
            return reply({"faults": 0})

        @post("/_sandbox/bill-edits", status_code=200)
        async def bill_edits(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_bill_edits(await json_body(request))

            return await run(action)

        @post("/_sandbox/payees/{identity:str}", status_code=200)
        async def set_payee(identity: str, request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.payees.set_account(identity, await json_body(request))

            return await run(action)

        @get("/_sandbox/transfers")
        async def transfers(identity: str | None = None) -> Response[bytes]:
            return reply(sandbox.payees.listed(identity))

        @get("/_sandbox/transfers/{out_biz_no:str}")
        async def transfer_record(out_biz_no: str) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.payees.get(out_biz_no).record()

            return await run(action)

        @post("/_sandbox/reset", status_code=200)
        async def reset() -> Response[bytes]:
            sandbox.reset()
            return reply({"reset": True})

        @get("/_sandbox/health")
        async def health() -> Response[bytes]:
            return reply(
                {"ok": True, "channel": "alipay", "app_id": sandbox.app_id, "seller_id": sandbox.seller_id}
            )

        return Litestar(
            route_handlers=[
                gateway,
                gateway_page,
                download_bill,
                qr,
                open_,
                pay,
                cancel,
                finish,
                notification,
                trade_record,
                sign_agreement,
                unsign_agreement,
                agreement_record,
                add_fault,
                clear_faults,
                bill_edits,
                set_payee,
                transfers,
                transfer_record,
                reset,
                health,
            ],
            on_shutdown=[sandbox.notifier.aclose],
            openapi_config=None,
            logging_config=LoggingConfig(log_exceptions="always"),
            debug=False,
        )


def create_alipay_sandbox(
    keys: AlipayKeys | str | os.PathLike[str], app_id: str = DEMO_APP_ID, **options: Any
) -> Litestar:
    """The sandbox's ASGI app. `keys` is an AlipayKeys or a directory (keys generated there on first use; see
    payments.sandbox.keys). The AlipaySandbox behind it is `app.state.sandbox`, for in-process use."""
    if not isinstance(keys, AlipayKeys):
        keys = load_or_create_alipay_keys(Path(keys))
    sandbox = AlipaySandbox(keys, app_id, **options)
    sandbox.app.state.sandbox = sandbox
    return sandbox.app
