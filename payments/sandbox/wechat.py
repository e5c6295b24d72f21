"""A local WeChat Pay API v2 for development and tests: signed XML both ways, at the paths wechatpy calls.

It checks every request's signature (MD5 or HMAC-SHA256, per the request's sign_type) and merchant/app ids,
answers signed XML with the request's sign type, keeps trades, refunds and papay contracts in memory, sends
signed notifications (XML POSTs to notify_url, retried in the background until acknowledged), and serves
daily bills in WeChat's backtick CSV. Signatures here are made with wechatpy's own helpers, independently of
the adapter's verification code, so that a mistake on one side does not cancel out on the other.

Test controls live under /_sandbox/ (JSON in and out):

    POST /_sandbox/trades/{out_trade_no}/pay           {"deliver": true, "delay": 0, "copies": 1,
                                                        "time_end": "yyyyMMddHHmmss"} -> paid; returns the
                                                        signed notification {"notification": {body, content_type}}
    POST /_sandbox/trades/{out_trade_no}/cancel        the user gives up: an unpaid order closes, an accepted
                                                        papay deduction fails (PAY_FAIL, not notified)
    POST /_sandbox/trades/{out_trade_no}/fail          an accepted papay deduction fails (PAY_FAIL)
    POST /_sandbox/trades/{out_trade_no}/notification  {"result_code": "SUCCESS"|"FAIL", "deliver": false,
                                                        "fields": {...overrides, signed}, "sign_type": ...}
                                                        -> a signed notification, no state change
    GET  /_sandbox/trades/{out_trade_no}               the trade, its refunds
    POST /_sandbox/request-payment                     {"params": <wx.requestPayment or app pay params>}:
                                                        checks paySign like the WeChat client, then pays
    POST /_sandbox/faults                              {"path": "pay/orderquery", "mode": "timeout"|"error"|
                                                        "refuse"|"tamper", "times": 1, "err_code": ...,
                                                        "seconds": 5, "process": true}; DELETE clears them
    POST /_sandbox/bill-edits                          {"day": "YYYY-MM-DD", "edits": [{"op": "drop"|"amount"|
                                                        "fee"|"status"|"add", "out_trade_no": ..., "out_refund_no":
                                                        (refund line), "value": ...}]} (appended to the day's)
    POST /_sandbox/refunds/{out_refund_no}/status      {"refund_status": "CHANGE", "deliver": true}
    GET  /_sandbox/contracts/{contract_code}
    POST /_sandbox/contracts/{contract_code}          {"contract_id"}: a contract signed before the sandbox started
    POST /_sandbox/contracts/{contract_code}/terminate {"deliver": true}
    POST /_sandbox/contracts/{contract_code}/deductions {"outcome": "success"|"fail"|"accept", "delay": 0.2}
    GET  /_sandbox/notifications?out_trade_no=...      what was sent where, attempts, delivered
    POST /_sandbox/payees/{openid}                     {"name": "张三", "state": "normal"|"closed"}: the user a
                                                        transfer goes to; another name is refused (NAME_MISMATCH),
                                                        a closed account too (V2_ACCOUNT_SIMPLE_BAN)
    GET  /_sandbox/transfers?identity=...              the transfers made (to one openid), and what they paid
    GET  /_sandbox/transfers/{partner_trade_no}
    GET  /_sandbox/health

Transfers (企业付款到零钱: mmpaymkttransfers/promotion/transfers and mmpaymkttransfers/gettransferinfo) speak that
API's own dialect: mch_appid/mchid in the transfer request, MD5 signatures only, and answers that are not signed
(the real gateway answers them only to the merchant certificate, which a local sandbox over http does not ask
for). The same partner_trade_no with the same parameters is the same transfer; with others, FATAL_ERROR. Faults
apply to their paths like to any other.

Bill edit values: amount/fee in fen (int), status a WeChat state (SUCCESS, REVOKED; refund lines SUCCESS,
PROCESSING, FAIL, CHANGE), add {"amount_fen", "fee_fen", "transaction_id", "at": "YYYY-MM-DD HH:MM:SS",
"status", "out_refund_no" (a refund line)} or just the amount in fen.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from litestar import Litestar, Request, Response, delete, get, post
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac, dict_to_xml

from payments.sandbox.kit import (
    SHANGHAI,
    ControlError,
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

log = logging.getLogger(__name__)

# The sample merchant of WeChat Pay's own documentation: public, for local use only.
DEMO_APPID = "wxd930ea5d5a258f4f"
DEMO_MCH_ID = "10000100"
DEMO_API_KEY = "192006250b4c09247ec02edce69f6a2d"
DEMO_PLAN_ID = "12535"

SIGN_TYPES = ("MD5", "HMAC-SHA256")
API_PATHS = (
    "pay/unifiedorder",
    "pay/orderquery",
    "pay/closeorder",
    "secapi/pay/refund",
    "pay/refundquery",
    "pay/downloadbill",
    "pay/pappayapply",
    "pay/paporderquery",
    "papay/querycontract",
    "papay/deletecontract",
    "mmpaymkttransfers/promotion/transfers",
    "mmpaymkttransfers/gettransferinfo",
)
TRANSFER_PATHS = ("mmpaymkttransfers/promotion/transfers", "mmpaymkttransfers/gettransferinfo")
TRANSFER_REFUSALS = {
    "name_mismatch": ("NAME_MISMATCH", "姓名校验出错"),
    "account_closed": ("V2_ACCOUNT_SIMPLE_BAN", "无法给未实名用户付款"),
}
BILL_COLUMNS = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
).split(",")
SUMMARY_COLUMNS = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
REFUSE_DEFAULTS = {
    "pay/pappayapply": "NOTENOUGH",
    "secapi/pay/refund": "NOTENOUGH",
    "mmpaymkttransfers/promotion/transfers": "NOTENOUGH",
}
TRADE_STATE_DESC = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "CLOSED": "已关闭",
    "ACCEPT": "已接收，等待扣款",
    "PAY_FAIL": "扣款失败",
}


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")


def _sign(params: dict[str, str], api_key: str, sign_type: str) -> str:
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    if sign_type == "HMAC-SHA256":
        return str(calculate_signature_hmac(unsigned, api_key))
    return str(calculate_signature(unsigned, api_key))


def bill_text(lines: list[dict[str, str]], bill_type: str = "ALL") -> str | None:
    """A day's bill lines as WeChat's backtick CSV with its summary (both API versions serve the same format);
    None when the bill has no line."""
    if bill_type == "SUCCESS":
        lines = [line for line in lines if line["交易状态"] != "REFUND"]
    elif bill_type == "REFUND":
        lines = [line for line in lines if line["交易状态"] == "REFUND"]
    if not lines:
        return None
    lines.sort(key=lambda line: line["交易时间"])

    def total(column: str) -> int:
        return sum(int(Decimal(line[column]) * 100) for line in lines)

    out = [",".join(BILL_COLUMNS)]
    out += [",".join("`" + line[column] for column in BILL_COLUMNS) for line in lines]
    out.append(SUMMARY_COLUMNS)
    summary = [
        str(len(lines)),
        yuan(total("应结订单金额")),
        yuan(total("退款金额")),
        "0.00",
        yuan(total("手续费"), 5),
        yuan(total("订单金额")),
        yuan(total("申请退款金额")),
    ]
    out.append(",".join("`" + value for value in summary))
    return "\r\n".join(out) + "\r\n"


@dataclass
class Trade:
    out_trade_no: str
    trade_type: str  # JSAPI | APP | NATIVE | PAP
    total_fee: int
    body: str
    notify_url: str
    sign_type: str
    appid: str
    openid: str = ""
    prepay_id: str = ""
    code_url: str = ""
    contract_id: str = ""
    attach: str = ""
    state: str = "NOTPAY"
    transaction_id: str = ""
    time_start: str = ""
    time_expire: str = ""
    time_end: str = ""
    fee_fen: int = 0


@dataclass
class Refund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund_fee: int
    total_fee: int
    status: str
    notify_url: str
    created_at: str
    success_time: str = ""
    fee_fen: int = 0  # the fee given back (negative)


@dataclass
class Contract:
    contract_code: str
    contract_id: str
    plan_id: str
    openid: str
    appid: str
    notify_url: str
    display_account: str
    request_serial: str
    sign_type: str
    state: str = "0"  # 0 signed, 1 terminated
    signed_time: str = ""
    terminated_time: str = ""
    deduction_outcome: str = "success"  # success | fail | accept (wait for a control)
    deduction_delay: float = 0.2


class Refused(Exception):
    """result_code FAIL: a signed business refusal."""

    def __init__(self, err_code: str, message: str = "") -> None:
        super().__init__(err_code)
        self.err_code = err_code
        self.message = message or err_code


class Malformed(Exception):
    """return_code FAIL: an unsigned protocol-level refusal."""


class WechatSandbox:
    """The state and the behaviour; `create_wechat_sandbox` wraps it in an ASGI app."""

    def __init__(
        self,
        appid: str,
        mch_id: str,
        api_key: str,
        *,
        plan_id: str = DEMO_PLAN_ID,
        extra_appids: tuple[str, ...] = (),
        fee_rate: Decimal = Decimal("0.006"),
        notify_delays: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
    ) -> None:
        self.appid, self.mch_id, self.api_key, self.plan_id = appid, mch_id, api_key, plan_id
        self.appids = {appid, *extra_appids}
        self.fee_rate = fee_rate
        self.notify_delays = notify_delays
        self.trades: dict[str, Trade] = {}
        self.by_prepay: dict[str, str] = {}
        self.refunds: dict[str, Refund] = {}
        self.contracts: dict[str, Contract] = {}  # by contract_code
        self.faults = Faults()
        self.payees = PayeeBook()
        self.bill_edits: dict[dt.date, list[dict[str, Any]]] = {}
        self.notifier = Notifier(
            content_type="text/xml", acknowledged=_acknowledged, retry_delays=notify_delays, timeout_s=5.0
        )
        self._ids = itertools.count(1)

    # -- plumbing --------------------------------------------------------------------------------------------

    def _id(self, prefix: str, width: int) -> str:
        n = str(next(self._ids))
        stem = prefix + now().strftime("%Y%m%d")
        return stem + n.rjust(width - len(stem), "0")

    def _fee(self, fen: int) -> int:
        return fee_fen(fen, self.fee_rate)

    def signed_xml(self, fields: dict[str, str], sign_type: str) -> str:
        fields = {k: str(v) for k, v in fields.items() if v is not None and str(v) != ""}
        return str(dict_to_xml(fields, _sign(fields, self.api_key, sign_type)))

    @staticmethod
    def _unsigned_fail(message: str) -> str:
        return str(dict_to_xml({"return_code": "FAIL", "return_msg": message}))

    # -- the API ---------------------------------------------------------------------------------------------

    async def handle_api(self, path: str, body: bytes) -> Response[Any]:
        try:
            parsed = xmltodict.parse(body, disable_entities=True)
            data = {k: "" if v is None else str(v) for k, v in parsed["xml"].items()}
        except (ExpatError, ValueError, KeyError, TypeError, AttributeError):
            return _xml(self._unsigned_fail("XML格式错误"))
        fault = self.faults.take(path)
        if fault is not None and fault.fails:
            return Response(content=b"internal error", status_code=500, media_type="text/plain")
        if fault is not None and fault.drops:
            await fault.hold()
            return Response(content=b"too late", status_code=504, media_type="text/plain")
        if path in TRANSFER_PATHS:
            return await self._handle_transfer(path, data, fault)
        sign_type = data.get("sign_type") or "MD5"
        if sign_type not in SIGN_TYPES:
            return _xml(self._unsigned_fail("签名类型错误"))
        if not data.get("sign") or data["sign"] != _sign(data, self.api_key, sign_type):
            return _xml(self._unsigned_fail("签名错误"))
        if data.get("mch_id") != self.mch_id:
            return _xml(self._unsigned_fail("商户号mch_id错误"))
        if data.get("appid") and data["appid"] not in self.appids:
            return _xml(self._unsigned_fail("appid和mch_id不匹配"))
        answer: dict[str, str] = {
            "return_code": "SUCCESS",
            "return_msg": "OK",
            "appid": data.get("appid", ""),
            "mch_id": self.mch_id,
            "nonce_str": secrets.token_hex(16),
        }
        try:
            if fault is not None and fault.mode == "refuse":
                code = fault.code or REFUSE_DEFAULTS.get(path, "INVALID_REQUEST")
                raise Refused(code, f"sandbox fault: {code}")
            handler: Callable[[dict[str, str]], dict[str, str] | str] = getattr(
                self, "api_" + path.split("/")[-1]
            )
            result = handler(data)
            if isinstance(result, str):  # a bill
                return Response(content=result.encode("utf-8"), media_type="text/plain; charset=utf-8")
            answer.update(result, result_code="SUCCESS")
        except Malformed as exc:
            return _xml(self._unsigned_fail(str(exc)))
        except Refused as exc:
            answer.update(result_code="FAIL", err_code=exc.err_code, err_code_des=exc.message)
        xml = self.signed_xml(answer, sign_type)
        if fault is not None and fault.mode == "tamper":
            fields = {k: str(v) for k, v in answer.items() if v not in (None, "")}
            sign = _sign(fields, self.api_key, sign_type)
            target = next(
                k for k in ("total_fee", "refund_fee", "prepay_id", "code_url", "nonce_str") if k in fields
            )
            value = fields[target]
            fields[target] = str(int(value) + 1) if value.isdigit() else value + "x"
            xml = str(dict_to_xml(fields, sign))
        if fault is not None:
            await fault.hold()
        return _xml(xml)

    async def _handle_transfer(self, path: str, data: dict[str, str], fault: Fault | None) -> Response[Any]:
        """企业付款: MD5 only, mch_appid/mchid on the transfer itself, unsigned answers."""
        if data.get("sign_type") not in (None, "", "MD5"):
            return _xml(self._unsigned_fail("企业付款只支持MD5签名"))
        if not data.get("sign") or data["sign"] != _sign(data, self.api_key, "MD5"):
            return _xml(self._unsigned_fail("签名错误"))
        transfer_call = path == "mmpaymkttransfers/promotion/transfers"
        mch_id = data.get("mchid") if transfer_call else data.get("mch_id")
        appid = data.get("mch_appid") if transfer_call else data.get("appid")
        if mch_id != self.mch_id:
            return _xml(self._unsigned_fail("商户号错误"))
        if appid not in self.appids:
            return _xml(self._unsigned_fail("appid和商户号不匹配"))
        answer: dict[str, str] = {
            "return_code": "SUCCESS",
            "return_msg": "",
            "nonce_str": secrets.token_hex(16),
        }
        if transfer_call:
            answer.update(mch_appid=appid or "", mchid=self.mch_id)
        else:
            answer.update(appid=appid or "", mch_id=self.mch_id)
        try:
            if fault is not None and fault.mode == "refuse":
                code = fault.code or REFUSE_DEFAULTS.get(path, "SYSTEMERROR")
                raise Refused(code, f"sandbox fault: {code}")
            answer.update(self._transfer(data) if transfer_call else self._transfer_info(data))
            answer["result_code"] = "SUCCESS"
        except Malformed as exc:
            return _xml(self._unsigned_fail(str(exc)))
        except Refused as exc:
            answer.update(result_code="FAIL", err_code=exc.err_code, err_code_des=exc.message)
        if fault is not None and fault.mode == "tamper" and "partner_trade_no" in answer:
            answer["partner_trade_no"] += (
                "x"  # nothing signs these answers: the adapter must match the number
            )
        if fault is not None:
            await fault.hold()
        fields = {k: str(v) for k, v in answer.items() if v is not None and str(v) != ""}
        return _xml(str(dict_to_xml(fields)))

    @staticmethod
    def _transfer_fields(transfer: SandboxTransfer) -> dict[str, str]:
        return {
            "partner_trade_no": transfer.out_biz_no,
            "payment_no": transfer.order_id,
            "payment_time": transfer.at.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def _transfer(self, data: dict[str, str]) -> dict[str, str]:
        self._need(data, "partner_trade_no", "openid", "amount", "desc", "check_name")
        amount = self._fen(data, "amount")
        if data["check_name"] not in ("NO_CHECK", "FORCE_CHECK"):
            raise Refused("PARAM_ERROR", "check_name 参数错误")
        name = data.get("re_user_name", "")
        if data["check_name"] == "FORCE_CHECK" and not name:
            raise Refused("PARAM_ERROR", "强校验姓名时 re_user_name 必填")
        out_biz_no, openid = data["partner_trade_no"], data["openid"]
        existing = self.payees.transfers.get(out_biz_no)
        if existing is not None:  # the same transfer asked again: no money moves
            if not existing.same_request(openid, name, amount):
                raise Refused("FATAL_ERROR", "已存在该单，并且订单信息不一致")
            return self._transfer_fields(existing)
        if amount < 30:
            raise Refused("AMOUNT_LIMIT", "付款金额不能小于最低限额")
        refusal = self.payees.refusal(openid, name if data["check_name"] == "FORCE_CHECK" else "")
        if refusal == "name_mismatch" and data["check_name"] == "NO_CHECK":
            refusal = None
        if refusal is not None:
            raise Refused(*TRANSFER_REFUSALS[refusal])
        transfer = SandboxTransfer(
            out_biz_no=out_biz_no,
            order_id=self._id("1000018301", 32),
            identity=openid,
            identity_type="WECHAT_OPENID",
            name=name,
            amount_fen=amount,
            remark=data["desc"],
            status="SUCCESS",
            at=now(),
        )
        self.payees.transfers[out_biz_no] = transfer
        return self._transfer_fields(transfer)

    def _transfer_info(self, data: dict[str, str]) -> dict[str, str]:
        self._need(data, "partner_trade_no")
        found = self.payees.transfers.get(data["partner_trade_no"])
        if found is None:
            raise Refused("NOT_FOUND", "指定单号数据不存在")
        return {
            "partner_trade_no": found.out_biz_no,
            "detail_id": found.order_id,
            "status": "SUCCESS" if found.status == "SUCCESS" else "FAILED",
            "reason": found.reason,
            "openid": found.identity,
            "transfer_name": found.name,
            "payment_amount": str(found.amount_fen),
            "transfer_time": found.at.strftime("%Y-%m-%d %H:%M:%S"),
            "payment_time": found.at.strftime("%Y-%m-%d %H:%M:%S"),
            "desc": found.remark,
        }

    @staticmethod
    def _need(data: dict[str, str], *names: str) -> None:
        missing = [n for n in names if not data.get(n)]
        if missing:
            raise Malformed(f"缺少参数 {','.join(missing)}")

    @staticmethod
    def _fen(data: dict[str, str], name: str) -> int:
        value = data.get(name, "")
        if not value.isdigit() or int(value) <= 0:
            raise Malformed(f"{name}参数格式错误")
        return int(value)

    def _find_trade(self, data: dict[str, str]) -> Trade:
        trade = self.trades.get(data.get("out_trade_no", ""))
        if trade is None and data.get("transaction_id"):
            trade = next(
                (t for t in self.trades.values() if t.transaction_id == data["transaction_id"]), None
            )
        if trade is None:
            raise Refused("ORDERNOTEXIST", "订单不存在")
        return trade

    def api_unifiedorder(self, data: dict[str, str]) -> dict[str, str]:
        self._need(
            data,
            "appid",
            "nonce_str",
            "body",
            "out_trade_no",
            "total_fee",
            "spbill_create_ip",
            "notify_url",
            "trade_type",
        )
        total_fee = self._fen(data, "total_fee")
        trade_type = data["trade_type"]
        if trade_type not in ("JSAPI", "APP", "NATIVE", "MWEB"):
            raise Malformed("trade_type参数格式错误")
        if trade_type == "JSAPI" and not data.get("openid"):
            raise Refused("PARAM_ERROR", "JSAPI支付必须传openid")
        if trade_type == "NATIVE" and not data.get("product_id"):
            raise Refused("PARAM_ERROR", "NATIVE支付必须传product_id")
        existing = self.trades.get(data["out_trade_no"])
        if existing is not None:
            if existing.state in ("SUCCESS", "REFUND"):
                raise Refused("ORDERPAID", "该订单已支付")
            if existing.state == "CLOSED":
                raise Refused("ORDERCLOSED", "订单已关闭")
            same = (existing.total_fee, existing.trade_type, existing.body) == (
                total_fee,
                trade_type,
                data["body"],
            )
            if not same:
                raise Refused("INVALID_REQUEST", "201 商户订单号重复")
            trade = existing
        else:
            prepay_id = "wx" + now().strftime("%d%H%M%S") + secrets.token_hex(12)
            trade = Trade(
                out_trade_no=data["out_trade_no"],
                trade_type=trade_type,
                total_fee=total_fee,
                body=data["body"],
                notify_url=data["notify_url"],
                sign_type=data.get("sign_type") or "MD5",
                appid=data["appid"],
                openid=data.get("openid", ""),
                prepay_id=prepay_id,
                code_url=f"weixin://wxpay/bizpayurl?pr={secrets.token_urlsafe(9)}"
                if trade_type == "NATIVE"
                else "",
                attach=data.get("attach", ""),
                time_start=data.get("time_start") or _stamp(now()),
                time_expire=data.get("time_expire", ""),
            )
            self.trades[trade.out_trade_no] = trade
            self.by_prepay[prepay_id] = trade.out_trade_no
        return {"trade_type": trade.trade_type, "prepay_id": trade.prepay_id, "code_url": trade.code_url}

    def _trade_fields(self, trade: Trade) -> dict[str, str]:
        fields = {
            "out_trade_no": trade.out_trade_no,
            "trade_state": trade.state,
            "trade_state_desc": TRADE_STATE_DESC.get(trade.state, trade.state),
            "trade_type": trade.trade_type,
            "total_fee": str(trade.total_fee),
            "fee_type": "CNY",
            "attach": trade.attach,
            "openid": trade.openid,
        }
        if trade.trade_type == "PAP":
            fields["contract_id"] = trade.contract_id
        if trade.transaction_id:
            fields.update(transaction_id=trade.transaction_id, is_subscribe="N", bank_type="OTHERS")
        if trade.time_end:
            fields.update(time_end=trade.time_end, cash_fee=str(trade.total_fee))
        return fields

    def api_orderquery(self, data: dict[str, str]) -> dict[str, str]:
        if not (data.get("out_trade_no") or data.get("transaction_id")):
            raise Malformed("缺少参数 out_trade_no")
        return self._trade_fields(self._find_trade(data))

    def api_paporderquery(self, data: dict[str, str]) -> dict[str, str]:
        trade = self._find_trade(data)
        if trade.trade_type != "PAP":
            raise Refused("ORDERNOTEXIST", "订单不存在")
        return self._trade_fields(trade)

    def api_closeorder(self, data: dict[str, str]) -> dict[str, str]:
        self._need(data, "out_trade_no")
        trade = self._find_trade(data)
        if trade.state in ("SUCCESS", "REFUND"):
            raise Refused("ORDERPAID", "订单已支付，不能发起关单")
        if trade.state == "CLOSED":
            raise Refused("ORDERCLOSED", "订单已关闭，无法重复关闭")
        trade.state = "CLOSED"
        return {}

    def _refund_fields(self, refunds: list[Refund], trade: Trade) -> dict[str, str]:
        fields = {
            "out_trade_no": trade.out_trade_no,
            "transaction_id": trade.transaction_id,
            "total_fee": str(trade.total_fee),
            "cash_fee": str(trade.total_fee),
            "refund_count": str(len(refunds)),
        }
        for n, refund in enumerate(refunds):
            fields.update(
                {
                    f"out_refund_no_{n}": refund.out_refund_no,
                    f"refund_id_{n}": refund.refund_id,
                    f"refund_fee_{n}": str(refund.refund_fee),
                    f"refund_status_{n}": refund.status,
                    f"refund_channel_{n}": "ORIGINAL",
                    f"refund_recv_accout_{n}": "支付用户的零钱",
                    f"refund_success_time_{n}": _dash(refund.success_time),
                }
            )
        return fields

    def api_refund(self, data: dict[str, str]) -> dict[str, str]:
        self._need(data, "out_refund_no", "total_fee", "refund_fee")
        total_fee, refund_fee = self._fen(data, "total_fee"), self._fen(data, "refund_fee")
        trade = self._find_trade(data)
        if trade.state not in ("SUCCESS", "REFUND"):
            raise Refused("TRADE_STATE_ERROR", "订单状态错误")
        if total_fee != trade.total_fee:
            raise Refused("PARAM_ERROR", "订单金额与原订单不一致")
        existing = self.refunds.get(data["out_refund_no"])
        if existing is not None:
            if existing.out_trade_no != trade.out_trade_no or existing.refund_fee != refund_fee:
                raise Refused("PARAM_ERROR", "同一个out_refund_no退款金额要一致")
            refund = existing
        else:
            refunded = sum(
                r.refund_fee
                for r in self.refunds.values()
                if r.out_trade_no == trade.out_trade_no and r.status in ("SUCCESS", "PROCESSING", "CHANGE")
            )
            if refunded + refund_fee > trade.total_fee:
                raise Refused("INVALID_REQUEST", "累计退款金额大于支付金额")
            at = _stamp(now())
            refund = Refund(
                out_refund_no=data["out_refund_no"],
                out_trade_no=trade.out_trade_no,
                refund_id=self._id("5000", 29),
                refund_fee=refund_fee,
                total_fee=trade.total_fee,
                status="SUCCESS",
                notify_url=data.get("notify_url", ""),
                created_at=at,
                success_time=at,
                fee_fen=-self._fee(refund_fee),
            )
            self.refunds[refund.out_refund_no] = refund
            trade.state = "REFUND"
            if refund.notify_url:
                self._deliver(
                    refund.notify_url, "refund", refund.out_refund_no, self.refund_notification(refund)
                )
        return {
            "out_trade_no": trade.out_trade_no,
            "transaction_id": trade.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_fee": str(refund.refund_fee),
            "total_fee": str(trade.total_fee),
            "cash_fee": str(trade.total_fee),
            "settlement_refund_fee": str(refund.refund_fee),
        }

    def api_refundquery(self, data: dict[str, str]) -> dict[str, str]:
        if data.get("out_refund_no") or data.get("refund_id"):
            refund = self.refunds.get(data.get("out_refund_no", "")) or next(
                (r for r in self.refunds.values() if r.refund_id == data.get("refund_id")), None
            )
            if refund is None:
                raise Refused("REFUNDNOTEXIST", "退款订单查询失败")
            return self._refund_fields([refund], self.trades[refund.out_trade_no])
        trade = self._find_trade(data)
        refunds = [r for r in self.refunds.values() if r.out_trade_no == trade.out_trade_no]
        if not refunds:
            raise Refused("REFUNDNOTEXIST", "退款订单查询失败")
        return self._refund_fields(refunds, trade)

    def api_downloadbill(self, data: dict[str, str]) -> dict[str, str] | str:
        self._need(data, "bill_date")
        try:
            day = dt.datetime.strptime(data["bill_date"], "%Y%m%d").date()
        except ValueError as exc:
            raise Malformed("bill_date参数格式错误") from exc
        bill = self.bill(day, data.get("bill_type") or "ALL")
        if bill is None:
            raise Malformed("No Bill Exist")
        return bill

    def api_pappayapply(self, data: dict[str, str]) -> dict[str, str]:
        self._need(data, "appid", "body", "out_trade_no", "total_fee", "contract_id", "notify_url")
        if data.get("trade_type") != "PAP":
            raise Malformed("trade_type参数格式错误")
        total_fee = self._fen(data, "total_fee")
        contract = next((c for c in self.contracts.values() if c.contract_id == data["contract_id"]), None)
        if contract is None or contract.state != "0":
            raise Refused("CONTRACT_NOT_EXIST", "签约协议不存在或已解约")
        existing = self.trades.get(data["out_trade_no"])
        if existing is not None:
            if (existing.contract_id, existing.total_fee) != (contract.contract_id, total_fee):
                raise Refused("INVALID_REQUEST", "商户订单号重复")
            if existing.state == "SUCCESS":
                raise Refused("ORDERPAID", "订单已支付")
            return {}
        trade = Trade(
            out_trade_no=data["out_trade_no"],
            trade_type="PAP",
            total_fee=total_fee,
            body=data["body"],
            notify_url=data["notify_url"],
            sign_type=data.get("sign_type") or "MD5",
            appid=data["appid"],
            openid=contract.openid,
            contract_id=contract.contract_id,
            attach=data.get("attach", ""),
            state="ACCEPT",
            time_start=_stamp(now()),
        )
        self.trades[trade.out_trade_no] = trade
        if contract.deduction_outcome != "accept":
            self.notifier.spawn(
                self._settle_deduction(
                    trade.out_trade_no, contract.deduction_outcome, contract.deduction_delay
                )
            )
        return {}

    async def _settle_deduction(self, out_trade_no: str, outcome: str, delay: float) -> None:
        await asyncio.sleep(delay)
        trade = self.trades[out_trade_no]
        if trade.state != "ACCEPT":
            return
        if outcome == "success":
            self.pay(trade, deliver=True)
        else:
            trade.state = "PAY_FAIL"  # failures are not notified: the merchant queries

    def _contract_fields(self, contract: Contract) -> dict[str, str]:
        return {
            "contract_id": contract.contract_id,
            "plan_id": contract.plan_id,
            "contract_code": contract.contract_code,
            "openid": contract.openid,
            "request_serial": contract.request_serial,
            "contract_display_account": contract.display_account,
            "contract_state": contract.state,
            "contract_signed_time": _dash(contract.signed_time),
            "contract_expired_time": "2099-12-31 23:59:59",
            "contract_terminated_time": _dash(contract.terminated_time),
        }

    def _find_contract(self, data: dict[str, str]) -> Contract:
        contract = None
        if data.get("contract_id"):
            contract = next(
                (c for c in self.contracts.values() if c.contract_id == data["contract_id"]), None
            )
        elif data.get("plan_id") and data.get("contract_code"):
            found = self.contracts.get(data["contract_code"])
            contract = found if found is not None and found.plan_id == data["plan_id"] else None
        elif data.get("plan_id") and data.get("openid"):
            contract = next(
                (
                    c
                    for c in self.contracts.values()
                    if (c.plan_id, c.openid) == (data["plan_id"], data["openid"])
                ),
                None,
            )
        else:
            raise Malformed("缺少参数 contract_id 或 plan_id+contract_code")
        if contract is None:
            raise Refused("CONTRACT_NOT_EXIST", "签约协议不存在")
        return contract

    def api_querycontract(self, data: dict[str, str]) -> dict[str, str]:
        return self._contract_fields(self._find_contract(data))

    def api_deletecontract(self, data: dict[str, str]) -> dict[str, str]:
        contract = self._find_contract(data)
        if contract.state == "0":
            self.terminate(contract, deliver=True)
        return {
            "contract_id": contract.contract_id,
            "plan_id": contract.plan_id,
            "contract_code": contract.contract_code,
        }

    # -- the user's side: papay signing page -----------------------------------------------------------------

    def entrust(self, params: dict[str, str]) -> dict[str, Any]:
        """The user opens the entrustweb page and confirms: the contract is signed and notified."""
        sign_type = params.get("sign_type") or "MD5"
        if sign_type not in SIGN_TYPES or params.get("sign") != _sign(params, self.api_key, sign_type):
            raise ControlError(400, "签名错误")
        if params.get("mch_id") != self.mch_id or params.get("appid") not in self.appids:
            raise ControlError(400, "appid或mch_id错误")
        if params.get("plan_id") != self.plan_id:
            raise ControlError(400, "模板id错误")
        for name in (
            "contract_code",
            "request_serial",
            "contract_display_account",
            "notify_url",
            "timestamp",
        ):
            if not params.get(name):
                raise ControlError(400, f"缺少参数 {name}")
        existing = self.contracts.get(params["contract_code"])
        if existing is not None and existing.state == "0":
            return {
                "contract_id": existing.contract_id,
                "contract_code": existing.contract_code,
                "already": True,
            }
        contract = Contract(
            contract_code=params["contract_code"],
            contract_id=self._id("2", 29),
            plan_id=params["plan_id"],
            openid=params.get("openid") or "o" + secrets.token_urlsafe(20),
            appid=params["appid"],
            notify_url=params["notify_url"],
            display_account=params["contract_display_account"],
            request_serial=params["request_serial"],
            sign_type=sign_type,
            signed_time=_stamp(now()),
        )
        self.contracts[contract.contract_code] = contract
        body = self.contract_notification(contract, "ADD")
        self._deliver(contract.notify_url, "contract", contract.contract_code, body)
        return {
            "contract_id": contract.contract_id,
            "contract_code": contract.contract_code,
            "notification": _notification(body),
        }

    def terminate(self, contract: Contract, *, deliver: bool) -> str:
        contract.state = "1"
        contract.terminated_time = _stamp(now())
        body = self.contract_notification(contract, "DELETE")
        if deliver:
            self._deliver(contract.notify_url, "contract", contract.contract_code, body)
        return body

    # -- notifications ---------------------------------------------------------------------------------------

    def payment_notification(
        self,
        trade: Trade,
        result_code: str = "SUCCESS",
        fields: dict[str, Any] | None = None,
        sign_type: str | None = None,
    ) -> str:
        sign_type = sign_type or trade.sign_type
        body: dict[str, str] = {
            "return_code": "SUCCESS",
            "appid": trade.appid,
            "mch_id": self.mch_id,
            "nonce_str": secrets.token_hex(16),
            "result_code": result_code,
            "openid": trade.openid,
            "is_subscribe": "N",
            "trade_type": trade.trade_type,
            "bank_type": "OTHERS",
            "total_fee": str(trade.total_fee),
            "cash_fee": str(trade.total_fee),
            "fee_type": "CNY",
            "out_trade_no": trade.out_trade_no,
            "attach": trade.attach,
        }
        if trade.trade_type == "PAP":
            body["contract_id"] = trade.contract_id
        if result_code == "SUCCESS":
            body.update(
                transaction_id=trade.transaction_id or self._id("4200", 28),
                time_end=trade.time_end or _stamp(now()),
            )
        else:
            body.update(err_code="PAYERROR", err_code_des="支付失败")
        if sign_type != "MD5":
            body["sign_type"] = sign_type
        body.update({k: str(v) for k, v in (fields or {}).items()})
        return self.signed_xml(body, sign_type)

    def contract_notification(self, contract: Contract, change_type: str) -> str:
        body = {
            "return_code": "SUCCESS",
            "return_msg": "OK",
            "result_code": "SUCCESS",
            "mch_id": self.mch_id,
            "contract_code": contract.contract_code,
            "openid": contract.openid,
            "plan_id": contract.plan_id,
            "change_type": change_type,
            "operate_time": _dash(contract.signed_time if change_type == "ADD" else contract.terminated_time),
            "contract_id": contract.contract_id,
            "contract_expired_time": "2099-12-31 23:59:59",
            "request_serial": contract.request_serial,
            "sign_type": contract.sign_type,
        }
        if change_type == "DELETE":
            body["contract_termination_mode"] = "3"
        return self.signed_xml(body, contract.sign_type)

    def refund_notification(self, refund: Refund) -> str:
        trade = self.trades[refund.out_trade_no]
        info = {
            "transaction_id": trade.transaction_id,
            "out_trade_no": trade.out_trade_no,
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "total_fee": str(trade.total_fee),
            "settlement_total_fee": str(trade.total_fee),
            "refund_fee": str(refund.refund_fee),
            "settlement_refund_fee": str(refund.refund_fee),
            "refund_status": refund.status,
            "success_time": _dash(refund.success_time),
            "refund_recv_accout": "支付用户的零钱",
            "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS",
            "refund_request_source": "API",
        }
        plain = "<root>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in info.items() if v) + "</root>"
        # AES-256-ECB with PKCS#7 to the AES block, keyed with md5(api_key) in lower-case hex, as WeChat does.
        key = hashlib.md5(self.api_key.encode("utf-8")).hexdigest().encode("ascii")  # noqa: S324
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plain.encode("utf-8")) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - WeChat's protocol
        req_info = base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")
        return str(
            dict_to_xml(
                {
                    "return_code": "SUCCESS",
                    "appid": trade.appid,
                    "mch_id": self.mch_id,
                    "nonce_str": secrets.token_hex(16),
                    "req_info": req_info,
                }
            )
        )

    def _deliver(
        self, url: str, kind: str, key: str, body: str, *, delay: float = 0.0, copies: int = 1
    ) -> None:
        self.notifier.deliver(url, body, kind=kind, key=key, delay=delay, copies=copies)

    # -- state changes the controls make ---------------------------------------------------------------------

    def pay(
        self, trade: Trade, *, deliver: bool, time_end: str | None = None, delay: float = 0.0, copies: int = 1
    ) -> str:
        if trade.state in ("NOTPAY", "ACCEPT"):
            if trade.time_expire and trade.trade_type != "PAP" and _stamp(now()) > trade.time_expire:
                raise ControlError(409, "the order has expired")
            trade.state = "SUCCESS"
            trade.transaction_id = self._id("4200", 28)
            trade.time_end = time_end or _stamp(now())
            trade.fee_fen = self._fee(trade.total_fee)
        elif trade.state not in ("SUCCESS", "REFUND"):
            raise ControlError(409, f"the trade is {trade.state}")
        body = self.payment_notification(trade)
        if deliver:
            self._deliver(trade.notify_url, "payment", trade.out_trade_no, body, delay=delay, copies=copies)
        return body

    # -- bills -----------------------------------------------------------------------------------------------

    def _bill_lines(self, day: dt.date) -> list[dict[str, str]]:
        stamp = day.strftime("%Y%m%d")
        rate = self._rate()
        lines: list[dict[str, str]] = []
        for trade in self.trades.values():
            if not trade.time_end.startswith(stamp):
                continue
            lines.append(self._bill_line(trade, rate, at=_dash(trade.time_end)))
        for refund in self.refunds.values():
            if not refund.success_time.startswith(stamp):
                continue
            trade = self.trades[refund.out_trade_no]
            line = self._bill_line(trade, rate, at=_dash(refund.success_time))
            line.update(
                {
                    "交易状态": "REFUND",
                    "应结订单金额": "0.00",
                    "订单金额": "0.00",
                    "微信退款单号": refund.refund_id,
                    "商户退款单号": refund.out_refund_no,
                    "退款金额": yuan(refund.refund_fee),
                    "申请退款金额": yuan(refund.refund_fee),
                    "退款类型": "ORIGINAL",
                    "退款状态": "SUCCESS" if refund.status == "SUCCESS" else refund.status,
                    "手续费": yuan(refund.fee_fen, 5),
                }
            )
            lines.append(line)
        return lines

    def _bill_line(self, trade: Trade, rate: str, *, at: str) -> dict[str, str]:
        line = dict.fromkeys(BILL_COLUMNS, "")
        line.update(
            {
                "交易时间": at,
                "公众账号ID": trade.appid,
                "商户号": self.mch_id,
                "特约商户号": "0",
                "微信订单号": trade.transaction_id,
                "商户订单号": trade.out_trade_no,
                "用户标识": trade.openid,
                "交易类型": trade.trade_type,
                "交易状态": "SUCCESS",
                "付款银行": "OTHERS",
                "货币种类": "CNY",
                "应结订单金额": yuan(trade.total_fee),
                "代金券金额": "0.00",
                "微信退款单号": "0",
                "商户退款单号": "0",
                "退款金额": "0.00",
                "充值券退款金额": "0.00",
                "商品名称": trade.body,
                "商户数据包": trade.attach,
                "手续费": yuan(trade.fee_fen, 5),
                "费率": rate,
                "订单金额": yuan(trade.total_fee),
                "申请退款金额": "0.00",
            }
        )
        return line

    def _rate(self) -> str:
        return f"{(self.fee_rate * 100).quantize(Decimal('0.01'))}%"

    def added_bill_line(self, edit: dict[str, Any], day: dt.date) -> dict[str, str]:
        """The line of an `add` bill edit: a payment, or a refund line when it names an out_refund_no."""
        out_trade_no, value = edit["out_trade_no"], edit.get("value")
        spec: dict[str, Any] = value if isinstance(value, dict) else {"amount_fen": value}
        amount, fee = int(spec.get("amount_fen", 0)), int(spec.get("fee_fen", 0))
        ghost = Trade(
            out_trade_no=out_trade_no,
            trade_type="JSAPI",
            total_fee=amount,
            body="sandbox",
            notify_url="",
            sign_type="MD5",
            appid=self.appid,
            openid="o-sandbox-ghost",
            transaction_id=spec.get("transaction_id") or _steady_id("4200", out_trade_no, 28),
            fee_fen=fee,
        )
        line = self._bill_line(ghost, self._rate(), at=spec.get("at") or f"{day.isoformat()} 12:00:00")
        if spec.get("out_refund_no"):
            line.update(
                {
                    "交易状态": "REFUND",
                    "应结订单金额": "0.00",
                    "订单金额": "0.00",
                    "微信退款单号": _steady_id("5000", spec["out_refund_no"], 29),
                    "商户退款单号": spec["out_refund_no"],
                    "退款金额": yuan(amount),
                    "申请退款金额": yuan(amount),
                    "退款类型": "ORIGINAL",
                    "退款状态": spec.get("status", "SUCCESS"),
                }
            )
        elif spec.get("status"):
            line["交易状态"] = spec["status"]
        return line

    def bill(self, day: dt.date, bill_type: str = "ALL") -> str | None:
        lines = apply_bill_edits(self._bill_lines(day), self.bill_edits.get(day, []), day, _BillLines(self))
        return bill_text(lines, bill_type)

    # -- controls --------------------------------------------------------------------------------------------

    def trade(self, out_trade_no: str) -> Trade:
        trade = self.trades.get(out_trade_no)
        if trade is None:
            raise ControlError(404, f"no trade {out_trade_no}")
        return trade

    def contract(self, contract_code: str) -> Contract:
        contract = self.contracts.get(contract_code)
        if contract is None:
            raise ControlError(404, f"no contract {contract_code}")
        return contract

    def describe(self, trade: Trade) -> dict[str, Any]:
        refunds = [asdict(r) for r in self.refunds.values() if r.out_trade_no == trade.out_trade_no]
        return {**asdict(trade), "refunds": refunds}

    def request_payment(self, params: dict[str, Any]) -> str:
        """What the WeChat client does with wx.requestPayment / the app SDK's PayReq: check the signature
        over the parameters, then pay the prepaid order."""
        params = {k: str(v) for k, v in params.items()}
        if "paySign" in params:  # JSAPI / mini program
            sign_type, given = params.get("signType", "MD5"), params["paySign"]
            signed = {
                k: v
                for k, v in params.items()
                if k in ("appId", "timeStamp", "nonceStr", "package", "signType")
            }
            prepay_id = params.get("package", "").removeprefix("prepay_id=")
            appid = params.get("appId", "")
        elif "prepayid" in params:  # app pay
            sign_type, given = "MD5", params.get("sign", "")
            signed = {k: v for k, v in params.items() if k != "sign"}
            prepay_id, appid = params["prepayid"], params.get("appid", "")
        else:
            raise ControlError(400, "neither wx.requestPayment nor app pay parameters")
        if sign_type not in SIGN_TYPES or given != _sign(signed, self.api_key, sign_type):
            raise ControlError(400, "支付验证签名失败")
        if appid not in self.appids:
            raise ControlError(400, "appid错误")
        out_trade_no = self.by_prepay.get(prepay_id)
        if out_trade_no is None:
            raise ControlError(404, "prepay_id不存在")
        return self.pay(self.trades[out_trade_no], deliver=True)


class _BillLines:
    """Bill edits on WeChat's bill lines (kit.BillEditor): a refund line is one whose 交易状态 is REFUND."""

    def __init__(self, box: WechatSandbox) -> None:
        self.box = box

    def matches(self, line: dict[str, str], edit: dict[str, Any]) -> bool:
        refund_no = edit.get("out_refund_no")
        return line["商户订单号"] == edit["out_trade_no"] and (
            line["商户退款单号"] == refund_no if refund_no else line["交易状态"] != "REFUND"
        )

    def with_amount(self, line: dict[str, str], fen: int) -> dict[str, str]:
        keys = ("退款金额", "申请退款金额") if _is_refund(line) else ("应结订单金额", "订单金额")
        return {**line, **dict.fromkeys(keys, yuan(fen))}

    def with_fee(self, line: dict[str, str], fen: int) -> dict[str, str]:
        return {**line, "手续费": yuan(fen, 5)}

    def with_status(self, line: dict[str, str], status: str) -> dict[str, str]:
        return {**line, ("退款状态" if _is_refund(line) else "交易状态"): status}

    def added(self, edit: dict[str, Any], day: dt.date) -> dict[str, str]:
        return self.box.added_bill_line(edit, day)


def _is_refund(line: dict[str, str]) -> bool:
    return line["交易状态"] == "REFUND"


def _steady_id(prefix: str, key: str, width: int) -> str:
    """The same made-up channel number for the same key, every time the bill is served."""
    digits = str(int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16))
    return (prefix + digits)[:width]


def _acknowledged(body: bytes) -> bool:
    try:
        return bool(xmltodict.parse(body, disable_entities=True)["xml"]["return_code"] == "SUCCESS")
    except (ExpatError, ValueError, KeyError, TypeError):
        return False


def _dash(stamp: str) -> str:
    """yyyyMMddHHmmss -> yyyy-MM-dd HH:mm:ss."""
    if len(stamp) != 14:
        return ""
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[8:10]}:{stamp[10:12]}:{stamp[12:]}"


def _xml(text: str) -> Response[Any]:
    return Response(content=text.encode("utf-8"), media_type="text/xml; charset=utf-8")


def _notification(body: str) -> dict[str, str]:
    return {"body": body, "content_type": "application/xml"}


def create_wechat_sandbox(
    appid: str = DEMO_APPID,
    mch_id: str = DEMO_MCH_ID,
    api_key: str = DEMO_API_KEY,
    *,
    plan_id: str = DEMO_PLAN_ID,
    extra_appids: tuple[str, ...] = (),
    fee_rate: Decimal = Decimal("0.006"),
    notify_delays: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
) -> Litestar:
    """The sandbox as an ASGI app; its state is `app.state.wechat` (a WechatSandbox)."""
    box = WechatSandbox(
        appid,
        mch_id,
        api_key,
        plan_id=plan_id,
        extra_appids=extra_appids,
        fee_rate=fee_rate,
        notify_delays=notify_delays,
    )

    @post(["/" + path for path in API_PATHS], status_code=200)
    async def api(request: Request[Any, Any, Any]) -> Response[Any]:
        return await box.handle_api(request.url.path.strip("/"), await request.body())

    @get("/papay/entrustweb")
    async def entrustweb(request: Request[Any, Any, Any]) -> Response[Any]:
        return await run_control(lambda: _async(box.entrust(dict(request.query_params.items()))))

    @get("/_sandbox/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "appid": box.appid, "mch_id": box.mch_id, "plan_id": box.plan_id}

    @get("/_sandbox/trades/{out_trade_no:str}")
    async def show_trade(out_trade_no: str) -> Response[Any]:
        return await run_control(lambda: _async(box.describe(box.trade(out_trade_no))))

    @post("/_sandbox/trades/{out_trade_no:str}/pay", status_code=200)
    async def pay(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            body = box.pay(
                box.trade(out_trade_no),
                deliver=bool(opts.get("deliver", True)),
                time_end=opts.get("time_end"),
                delay=float(opts.get("delay", 0)),
                copies=int(opts.get("copies", 1)),
            )
            return {"notification": _notification(body), "trade": box.describe(box.trade(out_trade_no))}

        return await run_control(run)

    @post(
        ["/_sandbox/trades/{out_trade_no:str}/cancel", "/_sandbox/trades/{out_trade_no:str}/fail"],
        status_code=200,
    )
    async def cancel(out_trade_no: str) -> Response[Any]:
        async def run() -> dict[str, Any]:
            trade = box.trade(out_trade_no)
            if trade.state == "NOTPAY":
                trade.state = "CLOSED"
            elif trade.state == "ACCEPT":
                trade.state = "PAY_FAIL"
            elif trade.state not in ("CLOSED", "PAY_FAIL"):
                raise ControlError(409, f"the trade is {trade.state}")
            return {"trade": box.describe(trade)}

        return await run_control(run)

    @post("/_sandbox/trades/{out_trade_no:str}/notification", status_code=200)
    async def notification(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            trade = box.trade(out_trade_no)
            body = box.payment_notification(
                trade,
                str(opts.get("result_code", "SUCCESS")),
                opts.get("fields") or {},
                opts.get("sign_type"),
            )
            if opts.get("deliver", False):
                box._deliver(trade.notify_url, "payment", trade.out_trade_no, body)
            return {"notification": _notification(body)}

        return await run_control(run)

    @post("/_sandbox/request-payment", status_code=200)
    async def request_payment(request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            params = (await json_body(request)).get("params")
            if not isinstance(params, dict):
                raise ControlError(400, "params must be an object")
            return {"notification": _notification(box.request_payment(params))}

        return await run_control(run)

    @post("/_sandbox/faults", status_code=200)
    async def add_fault(request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            path = str(opts.get("path", "")).strip("/")
            mode = opts.get("mode")
            if path not in API_PATHS or mode not in ("timeout", "error", "refuse", "tamper"):
                raise ControlError(400, f"path one of {API_PATHS}, mode timeout|error|refuse|tamper")
            fault = Fault(
                mode=str(mode),
                times=int(opts.get("times", 1)),
                delay_s=float(opts.get("seconds", 5.0)),
                apply=bool(opts.get("process", True)),
                code=opts.get("err_code"),
            )
            box.faults.add(path, fault)
            return {"ok": True}

        return await run_control(run)

    @delete("/_sandbox/faults", status_code=200)
    async def clear_faults() -> Response[Any]:
        box.faults.clear()
        return reply({"ok": True})

    @post("/_sandbox/bill-edits", status_code=200)
    async def bill_edits(request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            day, edits = read_bill_edits(await json_body(request))
            box.bill_edits.setdefault(day, []).extend(edits)
            return {"ok": True, "edits": len(box.bill_edits[day])}

        return await run_control(run)

    @post("/_sandbox/refunds/{out_refund_no:str}/status", status_code=200)
    async def refund_status(out_refund_no: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            refund = box.refunds.get(out_refund_no)
            if refund is None:
                raise ControlError(404, f"no refund {out_refund_no}")
            status = str(opts.get("refund_status", "SUCCESS"))
            if status not in ("SUCCESS", "PROCESSING", "CHANGE", "REFUNDCLOSE"):
                raise ControlError(400, "refund_status SUCCESS|PROCESSING|CHANGE|REFUNDCLOSE")
            refund.status = status
            body = box.refund_notification(refund)
            if opts.get("deliver", True) and refund.notify_url:
                box._deliver(refund.notify_url, "refund", refund.out_refund_no, body)
            return {"notification": _notification(body), "refund": asdict(refund)}

        return await run_control(run)

    @get("/_sandbox/contracts/{contract_code:str}")
    async def show_contract(contract_code: str) -> Response[Any]:
        return await run_control(lambda: _async(asdict(box.contract(contract_code))))

    @post("/_sandbox/contracts/{contract_code:str}", status_code=200)
    async def register_contract(contract_code: str, request: Request[Any, Any, Any]) -> Response[Any]:
        """A contract the user signed before this sandbox started (its memory does not survive a restart):
        {"contract_id", "openid"?, "notify_url"?}. No notification is sent."""

        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            if not opts.get("contract_id"):
                raise ControlError(400, "contract_id is required")
            box.contracts[contract_code] = Contract(
                contract_code=contract_code,
                contract_id=str(opts["contract_id"]),
                plan_id=box.plan_id,
                openid=str(opts.get("openid") or "o-demo-rider"),
                appid=next(iter(box.appids)),
                notify_url=str(opts.get("notify_url", "")),
                display_account="泰州通",
                request_serial="0",
                sign_type="HMAC-SHA256",
                signed_time=_stamp(now()),
            )
            return {"contract_code": contract_code, "contract_id": opts["contract_id"]}

        return await run_control(run)

    @post("/_sandbox/contracts/{contract_code:str}/terminate", status_code=200)
    async def terminate(contract_code: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            contract = box.contract(contract_code)
            if contract.state != "0":
                raise ControlError(409, "the contract has ended")
            body = box.terminate(contract, deliver=bool(opts.get("deliver", True)))
            return {"notification": _notification(body)}

        return await run_control(run)

    @post("/_sandbox/contracts/{contract_code:str}/deductions", status_code=200)
    async def deductions(contract_code: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            contract = box.contract(contract_code)
            outcome = opts.get("outcome", "success")
            if outcome not in ("success", "fail", "accept"):
                raise ControlError(400, "outcome success|fail|accept")
            contract.deduction_outcome = str(outcome)
            contract.deduction_delay = float(opts.get("delay", contract.deduction_delay))
            return {"ok": True}

        return await run_control(run)

    @post("/_sandbox/payees/{openid:str}", status_code=200)
    async def set_payee(openid: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            return box.payees.set_account(openid, await json_body(request))

        return await run_control(run)

    @get("/_sandbox/transfers")
    async def transfers(identity: str | None = None) -> Response[Any]:
        return reply(box.payees.listed(identity))

    @get("/_sandbox/transfers/{partner_trade_no:str}")
    async def transfer_record(partner_trade_no: str) -> Response[Any]:
        return await run_control(lambda: _async(box.payees.get(partner_trade_no).record()))

    @get("/_sandbox/notifications")
    async def notifications(out_trade_no: str | None = None) -> Response[Any]:
        found = [asdict(d) for d in box.notifier.deliveries if out_trade_no is None or d.key == out_trade_no]
        return reply({"notifications": found})

    app = Litestar(
        route_handlers=[
            api,
            entrustweb,
            health,
            show_trade,
            pay,
            cancel,
            notification,
            request_payment,
            add_fault,
            clear_faults,
            bill_edits,
            refund_status,
            show_contract,
            register_contract,
            terminate,
            deductions,
            notifications,
            set_payee,
            transfers,
            transfer_record,
        ],
        on_shutdown=[box.notifier.aclose],
        openapi_config=None,
    )
    app.state.wechat = box
    return app


async def _async(value: Any) -> Any:
    return value


# -- running it (python -m payments.sandbox wechat --port P --state-dir DIR) ------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--appid", default=DEMO_APPID, help="the app id the sandbox accepts (default %(default)s)"
    )
    parser.add_argument("--mch-id", default=DEMO_MCH_ID, help="the merchant id (default %(default)s)")
    parser.add_argument(
        "--api-key", default=DEMO_API_KEY, help="the merchant's API v2 key (default: the demo key)"
    )
    parser.add_argument("--plan-id", default=DEMO_PLAN_ID, help="the papay plan (default %(default)s)")


def build_app(args: argparse.Namespace) -> Litestar:
    """The sandbox for the parsed command line; writes the merchant it plays (appid, mch_id, api_key, plan_id,
    base_url) to STATE_DIR/wechat.json for whoever configures the adapter."""
    merchant = {"appid": args.appid, "mch_id": args.mch_id, "api_key": args.api_key, "plan_id": args.plan_id}
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    base_url = f"http://{args.host}:{args.port}/"
    (state_dir / "wechat.json").write_text(
        json.dumps({**merchant, "base_url": base_url}, indent=2), encoding="utf-8"
    )
    log.info("WeChat Pay v2 sandbox on %s (merchant %s)", base_url, args.mch_id)
    return create_wechat_sandbox(args.appid, args.mch_id, args.api_key, plan_id=args.plan_id)
