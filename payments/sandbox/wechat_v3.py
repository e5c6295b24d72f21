"""A local WeChat Pay API v3 for development and tests: signed JSON both ways, at the paths wechatpayv3 calls.

It verifies every request's `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,serial_no=…,signature=…` with the
merchant's public key, signs every answer with its platform key (Wechatpay-Serial/-Timestamp/-Nonce/-Signature),
serves /v3/certificates with its platform certificates encrypted with the APIv3 key (AES-256-GCM), can rotate
its platform certificate, keeps trades and refunds in memory, sends signed notifications whose resource is
AES-256-GCM encrypted (JSON POSTs to notify_url, retried in the background until acknowledged), and serves daily
trade bills in WeChat's backtick CSV (gzip, announced with their SHA1). Everything here is signed and encrypted
with `cryptography` directly, independently of the adapter's verification (wechatpayv3), so a mistake on one side
does not cancel out on the other.

Keys: the merchant's API key pair (`apiclient_key.pem`, PKCS#8, what the merchant keeps; the sandbox holds the
public half as WeChat would from the merchant's certificate), its serial and the APIv3 key (`apiv3_key.txt`) are
made on first start in the state dir and kept; the platform certificates are made at start and live in memory.
`wechat_v3.json` in the state dir says who the sandbox plays and where the files are.

Test controls live under /_sandbox/ (JSON in and out), as the v2 sandbox's:

    POST /_sandbox/trades/{out_trade_no}/pay           {"deliver": true, "delay": 0, "copies": 1,
                                                        "time_end": "yyyyMMddHHmmss"} -> paid; returns the signed
                                                        notification {"notification": {body, content_type,
                                                        headers}}
    POST /_sandbox/trades/{out_trade_no}/cancel        the user gives up: an unpaid order closes
    POST /_sandbox/trades/{out_trade_no}/notification  {"trade_state": "SUCCESS"|"NOTPAY"|..., "deliver": false,
                                                        "fields": {...resource overrides, e.g. mchid, appid,
                                                        sub_mchid, time_end}, "envelope": {...},
                                                        "forge": "signature"|"ciphertext"|"apiv3_key"|"serial"}
                                                        -> a signed notification, no state change
    GET  /_sandbox/trades/{out_trade_no}               the trade, its refunds
    POST /_sandbox/request-payment                     {"params": <wx.requestPayment or app PayReq params>}:
                                                        checks paySign (RSA, the merchant's key), then pays
    POST /_sandbox/faults                              {"path": "pay"|"query"|"close"|"refund"|"refund-query"|
                                                        "tradebill"|"billdownload"|"certificates" (or a v3 path
                                                        such as "v3/refund/domestic/refunds"), "mode": "timeout"|
                                                        "error"|"refuse"|"tamper", "times": 1, "err_code": ... (its
                                                        HTTP status is WeChat's for the code), "seconds": 5,
                                                        "process": true}; DELETE
                                                        clears them
    POST /_sandbox/bill-edits                          as the v2 sandbox's (appended to the day's)
    POST /_sandbox/refunds/{out_refund_no}/status      {"refund_status": "SUCCESS"|"PROCESSING"|"ABNORMAL"|
                                                        "CLOSED", "deliver": true}
    GET  /_sandbox/platform-certificates               {"current", "listed": [...], "downloads"}
    POST /_sandbox/platform-certificates/rotate        {"retire_old": false}: a new platform certificate signs
                                                        from now on (the old one stays listed unless retired)
    GET  /_sandbox/notifications?out_trade_no=...      what was sent where, attempts, delivered
    POST /_sandbox/payees/{openid}                     {"name": "张三", "state": "normal"|"closed", "confirm":
                                                        false}: the user a transfer goes to; another name fails
                                                        the bill (NAME_NOT_CORRECT), a closed account too
                                                        (PAYEE_ACCOUNT_ABNORMAL); with "confirm" its transfers
                                                        wait for the user (WAIT_USER_CONFIRM)
    GET  /_sandbox/transfers?identity=...              the transfers made (to one openid), and what they paid
    GET  /_sandbox/transfers/{out_bill_no}
    POST /_sandbox/transfers/{out_bill_no}/state       {"state": "SUCCESS"|"FAIL"|"CANCELLED", "reason": ...}:
                                                        what becomes of a bill not final yet (the user confirmed,
                                                        WeChat gave up, 24 hours passed unconfirmed)
    GET  /_sandbox/health

Transfers (商家转账: POST /v3/fund-app/mch-transfer/transfer-bills, GET …/transfer-bills/out-bill-no/{no}) check
the request's signature like every call, and the payee's real name (`user_name`), which must come encrypted with
the public key of the platform certificate the `Wechatpay-Serial` header names (RSA-OAEP, SHA-1): the sandbox
decrypts it with that certificate's private key and compares it with the registered payee's. A new bill is
answered ACCEPTED and is SUCCESS at once (a query says so), WAIT_USER_CONFIRM for a payee who confirms, or FAIL with
its fail_reason. The same out_bill_no with the same parameters is the same bill; with others, 400
INVALID_REQUEST. Faults apply to them as `transfer` and `transfer-query` (or their paths).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import hashlib
import itertools
import json
import logging
import re
import secrets
import string
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from litestar import Litestar, Request, Response, delete, get, post, route

from payments.sandbox.keys import _write_private
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
from payments.sandbox.wechat import BILL_COLUMNS, DEMO_APPID, bill_text

log = logging.getLogger(__name__)

DEMO_MCHID = "1900009191"  # the sample merchant of WeChat Pay v3's documentation
PRIVATE_KEY_FILE = "apiclient_key.pem"
APIV3_KEY_FILE = "apiv3_key.txt"
MERCHANT_FILE = "merchant.json"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
OPERATIONS = (
    "pay",
    "query",
    "close",
    "refund",
    "refund-query",
    "tradebill",
    "billdownload",
    "certificates",
    "transfer",
    "transfer-query",
)
_ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("POST", "pay", re.compile(r"/v3/pay/transactions/(?P<kind>jsapi|app|native|h5)")),
    ("GET", "query", re.compile(r"/v3/pay/transactions/out-trade-no/(?P<no>[^/?]+)")),
    ("GET", "query", re.compile(r"/v3/pay/transactions/id/(?P<transaction_id>[^/?]+)")),
    ("POST", "close", re.compile(r"/v3/pay/transactions/out-trade-no/(?P<no>[^/?]+)/close")),
    ("POST", "refund", re.compile(r"/v3/refund/domestic/refunds")),
    ("GET", "refund-query", re.compile(r"/v3/refund/domestic/refunds/(?P<no>[^/?]+)")),
    ("GET", "tradebill", re.compile(r"/v3/bill/tradebill")),
    ("GET", "billdownload", re.compile(r"/v3/billdownload/file")),
    ("GET", "certificates", re.compile(r"/v3/certificates")),
    ("POST", "transfer", re.compile(r"/v3/fund-app/mch-transfer/transfer-bills")),
    (
        "GET",
        "transfer-query",
        re.compile(r"/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/(?P<no>[^/?]+)"),
    ),
)
# The HTTP status WeChat Pay v3 answers each error code with.
STATUS_OF = {
    "PARAM_ERROR": 400,
    "INVALID_REQUEST": 400,
    "ORDER_CLOSED": 400,
    "NO_STATEMENT_EXIST": 400,
    "STATEMENT_CREATING": 400,
    "SIGN_ERROR": 401,
    "NOAUTH": 403,
    "NO_AUTH": 403,
    "ORDERPAID": 403,
    "NOT_ENOUGH": 403,
    "TRADE_ERROR": 403,
    "USER_ACCOUNT_ABNORMAL": 403,
    "ORDER_NOT_EXIST": 404,
    "NOT_FOUND": 404,
    "RESOURCE_NOT_EXISTS": 404,
    "FREQUENCY_LIMITED": 429,
    "FREQUENCY_LIMIT": 429,
    "SYSTEM_ERROR": 500,
    "BANK_ERROR": 500,
}
REFUSE_DEFAULTS = {"refund": "NOT_ENOUGH", "pay": "NOAUTH", "close": "ORDERPAID", "transfer": "NOT_ENOUGH"}
# What a registered payee's account makes of a transfer bill (kit.PayeeBook's refusals), as WeChat's fail_reason.
TRANSFER_FAIL_REASONS = {"name_mismatch": "NAME_NOT_CORRECT", "account_closed": "PAYEE_ACCOUNT_ABNORMAL"}
TRANSFER_PENDING = ("ACCEPTED", "PROCESSING", "TRANSFERING", "WAIT_USER_CONFIRM", "CANCELING")
# The transfer scene the sandbox's merchant is granted (佣金报酬) and the report fields that scene asks for.
DEMO_TRANSFER_SCENE_ID = "1002"
SCENE_REPORT_TYPES = {DEMO_TRANSFER_SCENE_ID: ("岗位类型", "报酬说明")}
DEMO_TRANSFER_REPORT_INFOS = (
    {"info_type": "岗位类型", "info_content": "城市服务商户"},
    {"info_type": "报酬说明", "info_content": "泰州通结算款"},
)
MIN_TRANSFER_FEN = 30
NAME_REQUIRED_FROM_FEN = 200_000
TRADE_STATE_DESC = {
    "NOTPAY": "未支付",
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "CLOSED": "已关闭",
    "PAYERROR": "支付失败",
}
_NONCE_ALPHABET = string.ascii_letters + string.digits


def _nonce(n: int = 32) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(n))


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).replace(microsecond=0).isoformat()


def _stamp_time(stamp: str) -> dt.datetime:
    """yyyyMMddHHmmss (Beijing time), the v2 sandbox's control format, or RFC 3339."""
    try:
        if len(stamp) == 14 and stamp.isdigit():
            return dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=SHANGHAI)
        return dt.datetime.fromisoformat(stamp).astimezone(SHANGHAI)
    except ValueError:
        raise ControlError(400, "time_end is yyyyMMddHHmmss or RFC 3339") from None


def _serial(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "X")


class Problem(Exception):
    """An error answer: `{"code", "message"}` with the code's HTTP status."""

    def __init__(self, code: str, message: str = "", status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or code
        self.status = status or STATUS_OF.get(code, 400)


@dataclass
class PlatformCertificate:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def serial(self) -> str:
        return _serial(self.certificate)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def new_platform_certificate(mchid: str, *, days: int = 5 * 365) -> PlatformCertificate:
    """A self-signed platform certificate, as WeChat's are in shape (RSA 2048, a random serial)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenpay.com (sandbox)"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Tenpay.com Root CA sandbox for {mchid}"),
        ]
    )
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return PlatformCertificate(key, certificate)


@dataclass(frozen=True)
class Merchant:
    appid: str
    mchid: str
    cert_serial_no: str
    private_key_pem: str
    apiv3_key: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        key = serialization.load_pem_private_key(self.private_key_pem.encode("ascii"), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.public_key()


def load_or_create_merchant(state_dir: Path, appid: str, mchid: str) -> Merchant:
    """The merchant's API key (PKCS#8), its certificate serial and the APIv3 key, made on first start and kept
    (0600) so that a restarted sandbox plays the same merchant."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file, apiv3_file, merchant_file = (
        state_dir / PRIVATE_KEY_FILE,
        state_dir / APIV3_KEY_FILE,
        state_dir / MERCHANT_FILE,
    )
    if key_file.is_file() and apiv3_file.is_file() and merchant_file.is_file():
        kept = json.loads(merchant_file.read_text())
        return Merchant(
            appid, mchid, kept["cert_serial_no"], key_file.read_text("ascii"), apiv3_file.read_text().strip()
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    merchant = Merchant(appid, mchid, secrets.token_hex(20).upper(), pem, _nonce(32))
    _write_private(key_file, pem)
    _write_private(apiv3_file, merchant.apiv3_key)
    merchant_file.write_text(json.dumps({"cert_serial_no": merchant.cert_serial_no}))
    return merchant


@dataclass
class Trade:
    out_trade_no: str
    trade_type: str  # JSAPI | APP | NATIVE | MWEB
    total: int
    description: str
    notify_url: str
    appid: str
    openid: str = ""
    prepay_id: str = ""
    code_url: str = ""
    attach: str = ""
    state: str = "NOTPAY"
    transaction_id: str = ""
    time_expire: str = ""
    success_time: str = ""  # RFC 3339
    fee_fen: int = 0


@dataclass
class Refund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund: int
    total: int
    status: str
    notify_url: str
    create_time: str
    success_time: str = ""
    fee_fen: int = 0  # the fee given back (negative)


@dataclass
class Answer:
    status: int
    data: dict[str, Any] | None = None  # JSON, signed
    raw: bytes | None = None  # a file, not signed
    headers: dict[str, str] = field(default_factory=dict)


class WechatV3Sandbox:
    """The state and the behaviour; `create_wechat_v3_sandbox` wraps it in an ASGI app."""

    def __init__(
        self,
        merchant: Merchant,
        *,
        fee_rate: Decimal = Decimal("0.006"),
        notify_delays: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
        clock_skew_s: float = 300.0,
    ) -> None:
        self.merchant = merchant
        self.merchant_public = merchant.public_key
        self.fee_rate = fee_rate
        self.clock_skew_s = clock_skew_s
        self.platform = [new_platform_certificate(merchant.mchid)]  # listed; the last one signs
        self.trades: dict[str, Trade] = {}
        self.by_prepay: dict[str, str] = {}
        self.refunds: dict[str, Refund] = {}
        self.faults = Faults()
        self.bill_edits: dict[dt.date, list[dict[str, Any]]] = {}
        self.bill_files: dict[str, bytes] = {}
        self.payees = PayeeBook()
        self.confirming: set[str] = set()  # openids whose transfers wait for the user (WAIT_USER_CONFIRM)
        self.certificate_downloads = 0
        self.notifier = Notifier(
            content_type="application/json",
            acknowledged=lambda body: True,  # v3: HTTP 200/204 is the acknowledgement, whatever the body
            retry_delays=notify_delays,
            timeout_s=5.0,
        )
        self._ids = itertools.count(1)

    # -- plumbing --------------------------------------------------------------------------------------------

    @property
    def signer(self) -> PlatformCertificate:
        return self.platform[-1]

    def _id(self, prefix: str, width: int) -> str:
        n = str(next(self._ids))
        stem = prefix + now().strftime("%Y%m%d")
        return stem + n.rjust(width - len(stem), "0")

    @staticmethod
    def sign_with(key: rsa.RSAPrivateKey, timestamp: str, nonce: str, body: str) -> str:
        message = f"{timestamp}\n{nonce}\n{body}\n".encode()
        return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")

    def signed_headers(self, body: str, signer: PlatformCertificate | None = None) -> dict[str, str]:
        signer = signer or self.signer
        timestamp, nonce = str(int(time.time())), _nonce()
        return {
            "Wechatpay-Serial": signer.serial,
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": self.sign_with(signer.key, timestamp, nonce, body),
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
            "Request-ID": _nonce(24),
        }

    def encrypt(self, plain: str, associated_data: str, key: str | None = None) -> dict[str, str]:
        nonce = _nonce(12)
        sealed = AESGCM((key or self.merchant.apiv3_key).encode("utf-8")).encrypt(
            nonce.encode("ascii"), plain.encode("utf-8"), associated_data.encode("utf-8")
        )
        return {
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(sealed).decode("ascii"),
            "associated_data": associated_data,
            "nonce": nonce,
        }

    def check_authorization(self, method: str, target: str, authorization: str, body: str) -> None:
        """The merchant's request signature: `method\\ntarget\\ntimestamp\\nnonce\\nbody\\n`, SHA256withRSA."""
        scheme, _, params = authorization.partition(" ")
        if scheme != SIGNATURE_TYPE:
            raise Problem("SIGN_ERROR", "Authorization 认证类型错误")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if fields.get("mchid") != self.merchant.mchid:
            raise Problem("SIGN_ERROR", "mchid 与 Authorization 不匹配")
        if fields.get("serial_no", "").upper() != self.merchant.cert_serial_no:
            raise Problem("SIGN_ERROR", "商户证书序列号有误")
        stamp = fields.get("timestamp", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > self.clock_skew_s:
            raise Problem("SIGN_ERROR", "请求时间戳超出范围")
        message = f"{method}\n{target}\n{stamp}\n{fields.get('nonce_str', '')}\n{body}\n".encode()
        try:
            self.merchant_public.verify(
                base64.b64decode(fields.get("signature", ""), validate=True),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            raise Problem("SIGN_ERROR", "签名错误") from None

    # -- the API ---------------------------------------------------------------------------------------------

    @staticmethod
    def operation(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for verb, name, pattern in _ROUTES:
            matched = pattern.fullmatch(path)
            if matched and verb == method:
                return name, matched.groupdict()
        return None

    async def handle_api(
        self, method: str, target: str, authorization: str, body: bytes, base: str, serial: str = ""
    ) -> Answer:
        path, _, query_string = target.partition("?")
        query = dict(item.split("=", 1) for item in query_string.split("&") if "=" in item)
        found = self.operation(method, path)
        if found is None:
            return Answer(404, {"code": "NOT_FOUND", "message": "没有这个接口"})
        name, params = found
        text = body.decode("utf-8", errors="replace")
        try:
            self.check_authorization(method, target, authorization, text)
        except Problem as exc:
            return Answer(exc.status, {"code": exc.code, "message": exc.message})
        fault = self.faults.take(name)
        if fault is not None and fault.fails:
            return Answer(500, {"code": "SYSTEM_ERROR", "message": "系统错误"})
        if fault is not None and fault.drops:
            await fault.hold()
            return Answer(504, {"code": "SYSTEM_ERROR", "message": "too late"})
        try:
            if fault is not None and fault.mode == "refuse":
                code = fault.code or REFUSE_DEFAULTS.get(name, "INVALID_REQUEST")
                raise Problem(code, fault.message or f"sandbox fault: {code}")
            data = json.loads(text) if text.strip() else {}
            if not isinstance(data, dict):
                raise Problem("PARAM_ERROR", "请求体不是JSON对象")
            answer = self.dispatch(name, params, query, data, base, serial)
        except ValueError:
            answer = Answer(400, {"code": "PARAM_ERROR", "message": "请求体不是JSON"})
        except Problem as exc:
            answer = Answer(exc.status, {"code": exc.code, "message": exc.message})
        if fault is not None and fault.mode == "tamper" and answer.data is not None:
            answer.headers["x-sandbox-tamper"] = "1"
        if fault is not None:
            await fault.hold()
        return answer

    def render(self, answer: Answer) -> Response[bytes]:
        """The answer's bytes and headers: JSON signed by the current platform key (a `tamper` fault changes the
        body after signing), a file unsigned."""
        if answer.raw is not None:
            return Response(answer.raw, status_code=answer.status, media_type="application/octet-stream")
        tamper = answer.headers.pop("x-sandbox-tamper", None)
        text = (
            "" if answer.data is None else json.dumps(answer.data, ensure_ascii=False, separators=(",", ":"))
        )
        headers = self.signed_headers(text)
        if tamper:
            text = _tampered(text)
        return Response(
            text.encode("utf-8"),
            status_code=answer.status,
            media_type="application/json" if answer.data is not None else None,
            headers=headers,
        )

    def dispatch(
        self,
        name: str,
        params: dict[str, str],
        query: dict[str, str],
        data: dict[str, Any],
        base: str,
        serial: str = "",
    ) -> Answer:
        if name == "pay":
            return Answer(200, self.api_pay(params["kind"], data))
        if name == "query":
            if query.get("mchid") != self.merchant.mchid:
                raise Problem("PARAM_ERROR", "mchid 参数错误")
            trade = self._trade_by(params.get("no"), params.get("transaction_id"))
            return Answer(200, self.trade_resource(trade))
        if name == "close":
            if data.get("mchid") != self.merchant.mchid:
                raise Problem("PARAM_ERROR", "mchid 参数错误")
            self.api_close(params["no"])
            return Answer(204)
        if name == "refund":
            return Answer(200, self.api_refund(data))
        if name == "refund-query":
            refund = self.refunds.get(params["no"])
            if refund is None:
                raise Problem("RESOURCE_NOT_EXISTS", "退款单不存在")
            return Answer(200, self.refund_resource(refund))
        if name == "tradebill":
            return Answer(200, self.api_tradebill(query, base))
        if name == "transfer":
            return Answer(200, self.api_transfer(data, serial))
        if name == "transfer-query":
            bill = self.payees.transfers.get(params["no"])
            if bill is None:
                raise Problem("NOT_FOUND", "记录不存在")
            return Answer(200, self.transfer_resource(bill))
        if name == "billdownload":
            file = self.bill_files.get(query.get("token", ""))
            if file is None:
                raise Problem("RESOURCE_NOT_EXISTS", "账单不存在或已过期")
            return Answer(200, raw=file)
        self.certificate_downloads += 1
        return Answer(200, self.api_certificates())

    def _trade_by(self, out_trade_no: str | None, transaction_id: str | None) -> Trade:
        trade = self.trades.get(out_trade_no or "")
        if trade is None and transaction_id:
            trade = next((t for t in self.trades.values() if t.transaction_id == transaction_id), None)
        if trade is None:
            raise Problem("ORDER_NOT_EXIST", "订单不存在")
        return trade

    def api_pay(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        for name in ("appid", "mchid", "description", "out_trade_no", "notify_url", "amount"):
            if not data.get(name):
                raise Problem("PARAM_ERROR", f"缺少参数 {name}")
        if data["mchid"] != self.merchant.mchid:
            raise Problem("PARAM_ERROR", "mchid 与请求不匹配")
        if data["appid"] != self.merchant.appid:
            raise Problem("PARAM_ERROR", "appid和mch_id不匹配")
        if any(data.get(k) for k in ("sp_mchid", "sub_mchid")):
            raise Problem("PARAM_ERROR", "直连商户不能传子商户参数")
        amount = data["amount"] if isinstance(data["amount"], dict) else {}
        total = amount.get("total")
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise Problem("PARAM_ERROR", "amount.total 参数错误")
        trade_type = {"jsapi": "JSAPI", "app": "APP", "native": "NATIVE", "h5": "MWEB"}[kind]
        given = data.get("payer")
        payer: dict[str, Any] = given if isinstance(given, dict) else {}
        if trade_type == "JSAPI" and not payer.get("openid"):
            raise Problem("PARAM_ERROR", "JSAPI支付必须传openid")
        existing = self.trades.get(data["out_trade_no"])
        if existing is not None:
            if existing.state in ("SUCCESS", "REFUND"):
                raise Problem("ORDERPAID", "该订单已支付")
            if existing.state == "CLOSED":
                raise Problem("ORDER_CLOSED", "订单已关闭")
            if (existing.total, existing.trade_type, existing.description) != (
                total,
                trade_type,
                data["description"],
            ):
                raise Problem("INVALID_REQUEST", "201 商户订单号重复")
            trade = existing
        else:
            trade = Trade(
                out_trade_no=data["out_trade_no"],
                trade_type=trade_type,
                total=total,
                description=str(data["description"]),
                notify_url=str(data["notify_url"]),
                appid=data["appid"],
                openid=str(payer.get("openid", "")),
                prepay_id="wx" + now().strftime("%d%H%M%S") + secrets.token_hex(12),
                attach=str(data.get("attach", "")),
                time_expire=str(data.get("time_expire", "")),
            )
            if trade_type == "NATIVE":
                trade.code_url = f"weixin://wxpay/bizpayurl?pr={secrets.token_urlsafe(9)}"
            self.trades[trade.out_trade_no] = trade
            self.by_prepay[trade.prepay_id] = trade.out_trade_no
        if trade_type == "NATIVE":
            return {"code_url": trade.code_url}
        return {"prepay_id": trade.prepay_id}

    def trade_resource(self, trade: Trade) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "appid": trade.appid,
            "mchid": self.merchant.mchid,
            "out_trade_no": trade.out_trade_no,
            "trade_type": trade.trade_type,
            "trade_state": trade.state,
            "trade_state_desc": TRADE_STATE_DESC.get(trade.state, trade.state),
            "attach": trade.attach,
            "payer": {"openid": trade.openid},
            "amount": {"total": trade.total, "currency": "CNY"},
        }
        if trade.transaction_id:
            resource.update(transaction_id=trade.transaction_id, bank_type="OTHERS")
            resource["amount"].update(payer_total=trade.total, payer_currency="CNY")
        if trade.success_time:
            resource["success_time"] = trade.success_time
        return resource

    def api_close(self, out_trade_no: str) -> None:
        trade = self.trades.get(out_trade_no)
        if trade is None:
            raise Problem("ORDER_NOT_EXIST", "订单不存在")
        if trade.state in ("SUCCESS", "REFUND"):
            raise Problem("ORDERPAID", "订单已支付")
        trade.state = "CLOSED"

    def refund_resource(self, refund: Refund, status: str | None = None) -> dict[str, Any]:
        trade = self.trades[refund.out_trade_no]
        resource: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": trade.transaction_id,
            "out_trade_no": trade.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": refund.create_time,
            "status": status or refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "payer_total": refund.total,
                "payer_refund": refund.refund,
                "settlement_refund": refund.refund,
                "settlement_total": refund.total,
                "discount_refund": 0,
                "currency": "CNY",
            },
        }
        if refund.success_time and (status or refund.status) == "SUCCESS":
            resource["success_time"] = refund.success_time
        return resource

    def api_refund(self, data: dict[str, Any]) -> dict[str, Any]:
        if not data.get("out_refund_no") or not isinstance(data.get("amount"), dict):
            raise Problem("PARAM_ERROR", "缺少参数 out_refund_no 或 amount")
        amount = data["amount"]
        refund_fen, total = amount.get("refund"), amount.get("total")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (refund_fen, total)):
            raise Problem("PARAM_ERROR", "amount 参数错误")
        trade = self._trade_by(data.get("out_trade_no"), data.get("transaction_id"))
        if trade.state not in ("SUCCESS", "REFUND"):
            raise Problem("TRADE_ERROR", "订单状态错误")
        if total != trade.total:
            raise Problem("PARAM_ERROR", "订单金额与原订单不一致")
        existing = self.refunds.get(data["out_refund_no"])
        if existing is not None:
            if existing.out_trade_no != trade.out_trade_no or existing.refund != refund_fen:
                raise Problem("PARAM_ERROR", "同一个out_refund_no退款金额要一致")
            return self.refund_resource(existing)
        refunded = sum(
            r.refund
            for r in self.refunds.values()
            if r.out_trade_no == trade.out_trade_no and r.status in ("SUCCESS", "PROCESSING", "ABNORMAL")
        )
        if refunded + refund_fen > trade.total:
            raise Problem("INVALID_REQUEST", "申请退款金额超过订单可退金额")
        at = _rfc3339(now())
        refund = Refund(
            out_refund_no=data["out_refund_no"],
            out_trade_no=trade.out_trade_no,
            refund_id=self._id("5030", 29),
            refund=refund_fen,
            total=trade.total,
            status="SUCCESS",
            notify_url=str(data.get("notify_url") or ""),
            create_time=at,
            success_time=at,
            fee_fen=-fee_fen(refund_fen, self.fee_rate),
        )
        self.refunds[refund.out_refund_no] = refund
        trade.state = "REFUND"
        if refund.notify_url:
            self.deliver(refund.notify_url, "refund", refund.out_refund_no, self.refund_notification(refund))
        # The refund is accepted now and done in a moment, as WeChat answers: PROCESSING; a query says SUCCESS.
        return self.refund_resource(refund, status="PROCESSING")

    def api_tradebill(self, query: dict[str, str], base: str) -> dict[str, Any]:
        try:
            day = dt.date.fromisoformat(query.get("bill_date", ""))
        except ValueError:
            raise Problem("PARAM_ERROR", "bill_date 参数错误") from None
        text = self.bill(day, query.get("bill_type") or "ALL")
        if text is None:
            raise Problem("NO_STATEMENT_EXIST", "账单不存在")
        raw = text.encode("utf-8")
        if query.get("tar_type") == "GZIP":
            raw = gzip.compress(raw)
        token = secrets.token_urlsafe(16)
        self.bill_files[token] = raw
        return {
            "hash_type": "SHA1",
            "hash_value": hashlib.sha1(raw).hexdigest(),  # noqa: S324 - what WeChat announces
            "download_url": f"{base}/v3/billdownload/file?token={token}",
        }

    # -- transfers (商家转账) ------------------------------------------------------------------------------------

    def decrypt_name(self, ciphertext: str, serial: str) -> str:
        """user_name, RSA-OAEP (SHA-1) encrypted for the listed platform certificate `Wechatpay-Serial` names."""
        platform = next((p for p in self.platform if p.serial == serial.upper()), None)
        if platform is None:
            raise Problem("PARAM_ERROR", "Wechatpay-Serial 不是有效的平台证书序列号")
        try:
            plain = platform.key.decrypt(
                base64.b64decode(ciphertext, validate=True),
                padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303
            )
            return plain.decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise Problem("PARAM_ERROR", "user_name 解密失败，请使用平台证书公钥加密") from None

    def api_transfer(self, data: dict[str, Any], serial: str) -> dict[str, Any]:
        for name in (
            "appid",
            "out_bill_no",
            "transfer_scene_id",
            "openid",
            "transfer_amount",
            "transfer_remark",
        ):
            if not data.get(name):
                raise Problem("PARAM_ERROR", f"缺少参数 {name}")
        if data["appid"] != self.merchant.appid:
            raise Problem("PARAM_ERROR", "appid和mch_id不匹配")
        out_bill_no, openid, remark = str(data["out_bill_no"]), str(data["openid"]), data["transfer_remark"]
        if not re.fullmatch(r"[0-9A-Za-z]{5,32}", out_bill_no):
            raise Problem("PARAM_ERROR", "out_bill_no 只能由数字、大小写字母组成，5到32位")
        amount = data["transfer_amount"]
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise Problem("PARAM_ERROR", "transfer_amount 参数错误")
        if not isinstance(remark, str) or len(remark) > 32:
            raise Problem("PARAM_ERROR", "transfer_remark 最多32个字符")
        scene = str(data["transfer_scene_id"])
        if scene not in SCENE_REPORT_TYPES:
            raise Problem("NO_AUTH", "商户未开通该转账场景")
        infos = data.get("transfer_scene_report_infos") or []
        if not isinstance(infos, list) or not all(
            isinstance(i, dict) and i.get("info_type") and i.get("info_content") for i in infos
        ):
            raise Problem("PARAM_ERROR", "transfer_scene_report_infos 参数错误")
        missing = set(SCENE_REPORT_TYPES[scene]) - {i["info_type"] for i in infos}
        if missing:
            raise Problem("PARAM_ERROR", f"转账场景报备信息缺少 {','.join(sorted(missing))}")
        sealed = data.get("user_name")
        name = self.decrypt_name(str(sealed), serial) if sealed else ""
        existing = self.payees.transfers.get(out_bill_no)
        if existing is not None:  # the same bill asked again: no money moves
            if not existing.same_request(openid, name, amount) or existing.remark != remark:
                raise Problem("INVALID_REQUEST", "商户单号已存在，且请求参数与原单不一致")
            return self.transfer_answer(existing)
        if amount < MIN_TRANSFER_FEN:
            raise Problem("PARAM_ERROR", "转账金额不能低于0.3元")
        if amount >= NAME_REQUIRED_FROM_FEN and not name:
            raise Problem("PARAM_ERROR", "转账金额不低于2000元时 user_name 必填")
        # Without a name WeChat checks none (it may be left out below 2,000 yuan); a closed account still fails.
        refusal = self.payees.refusal(openid, name)
        if refusal == "name_mismatch" and not name:
            refusal = None
        state = "FAIL" if refusal else "WAIT_USER_CONFIRM" if openid in self.confirming else "SUCCESS"
        bill = SandboxTransfer(
            out_biz_no=out_bill_no,
            order_id=self._id("1330000071100", 40),
            identity=openid,
            identity_type="WECHAT_OPENID",
            name=name,
            amount_fen=amount,
            remark=remark,
            status=state,
            at=now(),
            reason=TRANSFER_FAIL_REASONS[refusal] if refusal else "",
        )
        self.payees.transfers[out_bill_no] = bill
        # WeChat accepts a bill first and pays it a moment later: the answer says ACCEPTED, a query SUCCESS.
        return self.transfer_answer(bill, "ACCEPTED" if state == "SUCCESS" else None)

    def transfer_answer(self, bill: SandboxTransfer, state: str | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "out_bill_no": bill.out_biz_no,
            "transfer_bill_no": bill.order_id,
            "create_time": _rfc3339(bill.at),
            "state": state or bill.status,
        }
        if bill.status == "FAIL":
            answer["fail_reason"] = bill.reason
        if (state or bill.status) == "WAIT_USER_CONFIRM":
            # What the payee's WeChat needs to confirm (wx.requestMerchantTransfer's package).
            answer["package_info"] = "ABBQO" + _steady_id("", bill.order_id, 55)
        return answer

    def transfer_resource(self, bill: SandboxTransfer) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "mch_id": self.merchant.mchid,
            "out_bill_no": bill.out_biz_no,
            "transfer_bill_no": bill.order_id,
            "appid": self.merchant.appid,
            "state": bill.status,
            "transfer_amount": bill.amount_fen,
            "transfer_remark": bill.remark,
            "openid": bill.identity,
            "create_time": _rfc3339(bill.at),
            "update_time": _rfc3339(bill.at),
        }
        if bill.reason:
            resource["fail_reason"] = bill.reason
        return resource

    def settle_transfer(self, out_bill_no: str, state: str, reason: str | None) -> dict[str, Any]:
        """The control: what becomes of a bill not final yet."""
        bill = self.payees.get(out_bill_no)
        if state not in ("SUCCESS", "FAIL", "CANCELLED"):
            raise ControlError(400, "state is SUCCESS|FAIL|CANCELLED")
        if bill.status not in TRANSFER_PENDING:
            raise ControlError(409, f"the transfer is {bill.status}")
        bill.status = state
        bill.reason = (
            "" if state == "SUCCESS" else (reason or ("OVERDUE_CLOSE" if state == "CANCELLED" else "FAIL"))
        )
        return bill.record()

    def api_certificates(self) -> dict[str, Any]:
        return {
            "data": [
                {
                    "serial_no": platform.serial,
                    "effective_time": _rfc3339(platform.certificate.not_valid_before_utc),
                    "expire_time": _rfc3339(platform.certificate.not_valid_after_utc),
                    "encrypt_certificate": self.encrypt(platform.pem, "certificate"),
                }
                for platform in self.platform
            ]
        }

    # -- notifications ---------------------------------------------------------------------------------------

    def envelope(
        self,
        event_type: str,
        original_type: str,
        resource: dict[str, Any],
        *,
        overrides: dict[str, Any] | None = None,
        forge: str | None = None,
    ) -> dict[str, Any]:
        """A signed notification {body, content_type, headers}: the resource AES-256-GCM encrypted with the
        APIv3 key, the body signed by the current platform key; `forge` makes it wrong in one way."""
        plain = json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
        sealed = self.encrypt(plain, original_type, key=_nonce(32) if forge == "apiv3_key" else None)
        if forge == "ciphertext":
            raw = bytearray(base64.b64decode(sealed["ciphertext"]))
            raw[len(raw) // 2] ^= 0x01
            sealed["ciphertext"] = base64.b64encode(bytes(raw)).decode("ascii")
        summary = "支付成功" if event_type == "TRANSACTION.SUCCESS" else "退款状态变更"
        envelope = {
            "id": secrets.token_hex(18),
            "create_time": _rfc3339(now()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {**sealed, "original_type": original_type},
            **(overrides or {}),
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
        stranger = new_platform_certificate(self.merchant.mchid) if forge == "serial" else None
        headers = self.signed_headers(body, stranger)
        if forge == "signature":
            signature = bytearray(base64.b64decode(headers["Wechatpay-Signature"]))
            signature[0] ^= 0x01
            headers["Wechatpay-Signature"] = base64.b64encode(bytes(signature)).decode("ascii")
        return {"body": body, "content_type": "application/json", "headers": headers}

    def payment_notification(
        self,
        trade: Trade,
        trade_state: str = "SUCCESS",
        fields: dict[str, Any] | None = None,
        envelope: dict[str, Any] | None = None,
        forge: str | None = None,
    ) -> dict[str, Any]:
        resource = self.trade_resource(trade)
        resource["trade_state"] = trade_state
        resource["trade_state_desc"] = TRADE_STATE_DESC.get(trade_state, trade_state)
        if trade_state == "SUCCESS":
            resource.setdefault("transaction_id", trade.transaction_id or self._id("4200", 28))
            resource.setdefault("success_time", trade.success_time or _rfc3339(now()))
            resource.setdefault("bank_type", "OTHERS")
        overrides = dict(fields or {})
        if "time_end" in overrides:  # the v2 sandbox's name for it, in its format
            overrides["success_time"] = _rfc3339(_stamp_time(str(overrides.pop("time_end"))))
        resource.update(overrides)
        event = "TRANSACTION.SUCCESS" if trade_state == "SUCCESS" else f"TRANSACTION.{trade_state}"
        return self.envelope(event, "transaction", resource, overrides=envelope, forge=forge)

    def refund_notification(self, refund: Refund) -> dict[str, Any]:
        resource = self.refund_resource(refund)
        plain = {
            "mchid": self.merchant.mchid,
            "out_trade_no": resource["out_trade_no"],
            "transaction_id": resource["transaction_id"],
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "user_received_account": resource["user_received_account"],
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "payer_total": refund.total,
                "payer_refund": refund.refund,
            },
        }
        if refund.status == "SUCCESS":
            plain["success_time"] = refund.success_time
        return self.envelope(f"REFUND.{refund.status}", "refund", plain)

    def deliver(
        self, url: str, kind: str, key: str, note: dict[str, Any], *, delay: float = 0.0, copies: int = 1
    ) -> None:
        self.notifier.deliver(
            url, note["body"], kind=kind, key=key, delay=delay, copies=copies, headers=note["headers"]
        )

    # -- state changes the controls make ---------------------------------------------------------------------

    def pay(
        self, trade: Trade, *, deliver: bool, time_end: str | None = None, delay: float = 0.0, copies: int = 1
    ) -> dict[str, Any]:
        if trade.state == "NOTPAY":
            if trade.time_expire and dt.datetime.fromisoformat(trade.time_expire) < now():
                raise ControlError(409, "the order has expired")
            trade.state = "SUCCESS"
            trade.transaction_id = self._id("4200", 28)
            trade.success_time = _rfc3339(_stamp_time(time_end) if time_end else now())
            trade.fee_fen = fee_fen(trade.total, self.fee_rate)
        elif trade.state not in ("SUCCESS", "REFUND"):
            raise ControlError(409, f"the trade is {trade.state}")
        note = self.payment_notification(trade)
        if deliver:
            self.deliver(trade.notify_url, "payment", trade.out_trade_no, note, delay=delay, copies=copies)
        return note

    def rotate(self, *, retire_old: bool) -> dict[str, Any]:
        previous = self.signer.serial
        fresh = new_platform_certificate(self.merchant.mchid)
        self.platform = [fresh] if retire_old else [*self.platform, fresh]
        return {"current": fresh.serial, "previous": previous, "listed": [p.serial for p in self.platform]}

    def request_payment(self, params: dict[str, Any]) -> dict[str, Any]:
        """What the WeChat client does with wx.requestPayment / the app SDK's PayReq: check the RSA signature
        with the merchant's public key, then pay the prepaid order."""
        params = {k: str(v) for k, v in params.items()}
        if "paySign" in params:
            if params.get("signType") != "RSA":
                raise ControlError(400, "signType 必须为 RSA")
            prepay_id = params.get("package", "").removeprefix("prepay_id=")
            signed = [params.get(k, "") for k in ("appId", "timeStamp", "nonceStr", "package")]
            signature, appid = params["paySign"], params.get("appId", "")
        elif "prepayid" in params:
            prepay_id = params["prepayid"]
            signed = [params.get(k, "") for k in ("appid", "timestamp", "noncestr", "prepayid")]
            signature, appid = params.get("sign", ""), params.get("appid", "")
        else:
            raise ControlError(400, "neither wx.requestPayment nor app PayReq parameters")
        try:
            self.merchant_public.verify(
                base64.b64decode(signature, validate=True),
                ("\n".join(signed) + "\n").encode("utf-8"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            raise ControlError(400, "支付验证签名失败") from None
        if appid != self.merchant.appid:
            raise ControlError(400, "appid错误")
        out_trade_no = self.by_prepay.get(prepay_id)
        if out_trade_no is None:
            raise ControlError(404, "prepay_id不存在")
        return self.pay(self.trades[out_trade_no], deliver=True)

    # -- bills -----------------------------------------------------------------------------------------------

    def _bill_line(self, trade: Trade, at: str) -> dict[str, str]:
        line = dict.fromkeys(BILL_COLUMNS, "")
        line.update(
            {
                "交易时间": at,
                "公众账号ID": trade.appid,
                "商户号": self.merchant.mchid,
                "特约商户号": "0",
                "微信订单号": trade.transaction_id,
                "商户订单号": trade.out_trade_no,
                "用户标识": trade.openid,
                "交易类型": trade.trade_type,
                "交易状态": "SUCCESS",
                "付款银行": "OTHERS",
                "货币种类": "CNY",
                "应结订单金额": yuan(trade.total),
                "代金券金额": "0.00",
                "微信退款单号": "0",
                "商户退款单号": "0",
                "退款金额": "0.00",
                "充值券退款金额": "0.00",
                "商品名称": trade.description,
                "商户数据包": trade.attach,
                "手续费": yuan(trade.fee_fen, 5),
                "费率": f"{(self.fee_rate * 100).quantize(Decimal('0.01'))}%",
                "订单金额": yuan(trade.total),
                "申请退款金额": "0.00",
            }
        )
        return line

    def _refund_line(
        self, trade: Trade, refund_id: str, out_refund_no: str, fen: int, status: str
    ) -> dict[str, str]:
        return {
            "交易状态": "REFUND",
            "应结订单金额": "0.00",
            "订单金额": "0.00",
            "微信退款单号": refund_id,
            "商户退款单号": out_refund_no,
            "退款金额": yuan(fen),
            "申请退款金额": yuan(fen),
            "退款类型": "ORIGINAL",
            "退款状态": status,
        }

    def _bill_lines(self, day: dt.date) -> list[dict[str, str]]:
        lines = []
        for trade in self.trades.values():
            if trade.success_time and _day_of(trade.success_time) == day:
                lines.append(self._bill_line(trade, _bill_time(trade.success_time)))
        for refund in self.refunds.values():
            if refund.success_time and _day_of(refund.success_time) == day:
                trade = self.trades[refund.out_trade_no]
                line = self._bill_line(trade, _bill_time(refund.success_time))
                status = "SUCCESS" if refund.status == "SUCCESS" else refund.status
                line.update(
                    self._refund_line(trade, refund.refund_id, refund.out_refund_no, refund.refund, status)
                )
                line["手续费"] = yuan(refund.fee_fen, 5)
                lines.append(line)
        return lines

    def added_bill_line(self, edit: dict[str, Any], day: dt.date) -> dict[str, str]:
        out_trade_no, value = edit["out_trade_no"], edit.get("value")
        spec: dict[str, Any] = value if isinstance(value, dict) else {"amount_fen": value}
        amount, fee = int(spec.get("amount_fen", 0)), int(spec.get("fee_fen", 0))
        ghost = Trade(
            out_trade_no=out_trade_no,
            trade_type="JSAPI",
            total=amount,
            description="sandbox",
            notify_url="",
            appid=self.merchant.appid,
            openid="o-sandbox-ghost",
            transaction_id=spec.get("transaction_id") or _steady_id("4200", out_trade_no, 28),
            fee_fen=fee,
        )
        line = self._bill_line(ghost, spec.get("at") or f"{day.isoformat()} 12:00:00")
        if spec.get("out_refund_no"):
            refund_id = _steady_id("5030", spec["out_refund_no"], 29)
            line.update(
                self._refund_line(
                    ghost, refund_id, spec["out_refund_no"], amount, spec.get("status", "SUCCESS")
                )
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

    def describe(self, trade: Trade) -> dict[str, Any]:
        refunds = [asdict(r) for r in self.refunds.values() if r.out_trade_no == trade.out_trade_no]
        return {**asdict(trade), "refunds": refunds}


class _BillLines:
    """Bill edits on the trade bill's lines (kit.BillEditor): a refund line is one whose 交易状态 is REFUND."""

    def __init__(self, box: WechatV3Sandbox) -> None:
        self.box = box

    def matches(self, line: dict[str, str], edit: dict[str, Any]) -> bool:
        refund_no = edit.get("out_refund_no")
        return line["商户订单号"] == edit["out_trade_no"] and (
            line["商户退款单号"] == refund_no if refund_no else line["交易状态"] != "REFUND"
        )

    def with_amount(self, line: dict[str, str], fen: int) -> dict[str, str]:
        refund = line["交易状态"] == "REFUND"
        keys = ("退款金额", "申请退款金额") if refund else ("应结订单金额", "订单金额")
        return {**line, **dict.fromkeys(keys, yuan(fen))}

    def with_fee(self, line: dict[str, str], fen: int) -> dict[str, str]:
        return {**line, "手续费": yuan(fen, 5)}

    def with_status(self, line: dict[str, str], status: str) -> dict[str, str]:
        return {**line, ("退款状态" if line["交易状态"] == "REFUND" else "交易状态"): status}

    def added(self, edit: dict[str, Any], day: dt.date) -> dict[str, str]:
        return self.box.added_bill_line(edit, day)


def _day_of(rfc3339: str) -> dt.date:
    return dt.datetime.fromisoformat(rfc3339).astimezone(SHANGHAI).date()


def _bill_time(rfc3339: str) -> str:
    return dt.datetime.fromisoformat(rfc3339).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _steady_id(prefix: str, key: str, width: int) -> str:
    digits = str(int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16))
    return (prefix + digits)[:width]


def _tampered(text: str) -> str:
    """The answer changed after it was signed: an amount plus one, or an id with a letter more."""
    data = json.loads(text) if text else {}
    if isinstance(data.get("amount"), dict):
        for key in ("total", "refund"):
            if isinstance(data["amount"].get(key), int):
                data["amount"][key] += 1
                return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for key in ("prepay_id", "code_url", "trade_state", "download_url", "transfer_bill_no"):
        if isinstance(data.get(key), str):
            data[key] += "x"
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text + " "


def create_wechat_v3_sandbox(
    merchant: Merchant,
    *,
    fee_rate: Decimal = Decimal("0.006"),
    notify_delays: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
) -> Litestar:
    """The sandbox as an ASGI app; its state is `app.state.wechat_v3` (a WechatV3Sandbox)."""
    box = WechatV3Sandbox(merchant, fee_rate=fee_rate, notify_delays=notify_delays)

    @route("/v3/{rest:path}", http_method=["GET", "POST"], status_code=200)
    async def api(request: Request[Any, Any, Any]) -> Response[bytes]:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        base = f"{request.url.scheme}://{request.url.netloc}"
        answer = await box.handle_api(
            request.method,
            target,
            request.headers.get("authorization", ""),
            await request.body(),
            base,
            request.headers.get("wechatpay-serial", ""),
        )
        return box.render(answer)

    @get("/_sandbox/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "api_version": "v3", "appid": merchant.appid, "mchid": merchant.mchid}

    @get("/_sandbox/trades/{out_trade_no:str}")
    async def show_trade(out_trade_no: str) -> Response[Any]:
        return await run_control(lambda: _async(box.describe(box.trade(out_trade_no))))

    @post("/_sandbox/trades/{out_trade_no:str}/pay", status_code=200)
    async def pay(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            note = box.pay(
                box.trade(out_trade_no),
                deliver=bool(opts.get("deliver", True)),
                time_end=opts.get("time_end"),
                delay=float(opts.get("delay", 0)),
                copies=int(opts.get("copies", 1)),
            )
            return {"notification": note, "trade": box.describe(box.trade(out_trade_no))}

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
            elif trade.state != "CLOSED":
                raise ControlError(409, f"the trade is {trade.state}")
            return {"trade": box.describe(trade)}

        return await run_control(run)

    @post("/_sandbox/trades/{out_trade_no:str}/notification", status_code=200)
    async def notification(out_trade_no: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            forge = opts.get("forge")
            if forge not in (None, "signature", "ciphertext", "apiv3_key", "serial"):
                raise ControlError(400, "forge is signature|ciphertext|apiv3_key|serial")
            trade = box.trade(out_trade_no)
            note = box.payment_notification(
                trade,
                str(opts.get("trade_state", "SUCCESS")),
                opts.get("fields") or {},
                opts.get("envelope") or {},
                forge,
            )
            if opts.get("deliver", False):
                box.deliver(trade.notify_url, "payment", trade.out_trade_no, note)
            return {"notification": note}

        return await run_control(run)

    @post("/_sandbox/request-payment", status_code=200)
    async def request_payment(request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            params = (await json_body(request)).get("params")
            if not isinstance(params, dict):
                raise ControlError(400, "params must be an object")
            return {"notification": box.request_payment(params)}

        return await run_control(run)

    @post("/_sandbox/faults", status_code=200)
    async def add_fault(request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            given = str(opts.get("path", "")).strip("/")
            name = given if given in OPERATIONS else None
            if name is None:
                for method in ("POST", "GET"):
                    found = box.operation(method, "/" + given)
                    if found is not None:
                        name = found[0]
                        break
            mode = opts.get("mode")
            if name is None or mode not in ("timeout", "error", "refuse", "tamper"):
                raise ControlError(
                    400, f"path one of {OPERATIONS} (or a v3 path), mode timeout|error|refuse|tamper"
                )
            box.faults.add(
                name,
                Fault(
                    mode=str(mode),
                    times=int(opts.get("times", 1)),
                    delay_s=float(opts.get("seconds", 5.0)),
                    apply=bool(opts.get("process", True)),
                    code=opts.get("err_code"),
                ),
            )
            return {"ok": True, "operation": name}

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
            if status not in ("SUCCESS", "PROCESSING", "ABNORMAL", "CLOSED"):
                raise ControlError(400, "refund_status SUCCESS|PROCESSING|ABNORMAL|CLOSED")
            refund.status = status
            note = box.refund_notification(refund)
            if opts.get("deliver", True) and refund.notify_url:
                box.deliver(refund.notify_url, "refund", refund.out_refund_no, note)
            return {"notification": note, "refund": asdict(refund)}

        return await run_control(run)

    @get("/_sandbox/platform-certificates")
    async def platform_certificates() -> Response[Any]:
        return reply(
            {
                "current": box.signer.serial,
                "listed": [p.serial for p in box.platform],
                "downloads": box.certificate_downloads,
            }
        )

    @post("/_sandbox/platform-certificates/rotate", status_code=200)
    async def rotate(request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            return box.rotate(retire_old=bool(opts.get("retire_old", False)))

        return await run_control(run)

    @get("/_sandbox/notifications")
    async def notifications(out_trade_no: str | None = None) -> Response[Any]:
        found = [asdict(d) for d in box.notifier.deliveries if out_trade_no is None or d.key == out_trade_no]
        return reply({"notifications": found})

    @post("/_sandbox/payees/{openid:str}", status_code=200)
    async def set_payee(openid: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            data = await json_body(request)
            account = box.payees.set_account(openid, data)
            if data.get("confirm"):
                box.confirming.add(openid)
            else:
                box.confirming.discard(openid)
            return {**account, "confirm": openid in box.confirming}

        return await run_control(run)

    @get("/_sandbox/transfers")
    async def transfers(identity: str | None = None) -> Response[Any]:
        return reply(box.payees.listed(identity))

    @get("/_sandbox/transfers/{out_bill_no:str}")
    async def transfer_record(out_bill_no: str) -> Response[Any]:
        return await run_control(lambda: _async(box.payees.get(out_bill_no).record()))

    @post("/_sandbox/transfers/{out_bill_no:str}/state", status_code=200)
    async def transfer_state(out_bill_no: str, request: Request[Any, Any, Any]) -> Response[Any]:
        async def run() -> dict[str, Any]:
            opts = await json_body(request)
            reason = opts.get("reason")
            return box.settle_transfer(
                out_bill_no, str(opts.get("state", "")), str(reason) if reason else None
            )

        return await run_control(run)

    app = Litestar(
        route_handlers=[
            api,
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
            platform_certificates,
            rotate,
            notifications,
            set_payee,
            transfers,
            transfer_record,
            transfer_state,
        ],
        on_shutdown=[box.notifier.aclose],
        openapi_config=None,
    )
    app.state.wechat_v3 = box
    return app


async def _async(value: Any) -> Any:
    return value


# -- running it (python -m payments.sandbox wechat_v3 --port P --state-dir DIR) ------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--appid", default=DEMO_APPID, help="the app id (default %(default)s)")
    parser.add_argument("--mchid", default=DEMO_MCHID, help="the merchant id (default %(default)s)")


def build_app(args: argparse.Namespace) -> Litestar:
    """The sandbox for the parsed command line; writes the merchant it plays (appid, mchid, cert_serial_no, the
    key files, base_url) to STATE_DIR/wechat_v3.json for whoever configures the adapter."""
    state_dir = Path(args.state_dir)
    merchant = load_or_create_merchant(state_dir, args.appid, args.mchid)
    base_url = f"http://{args.host}:{args.port}"
    (state_dir / "wechat_v3.json").write_text(
        json.dumps(
            {
                "appid": merchant.appid,
                "mchid": merchant.mchid,
                "cert_serial_no": merchant.cert_serial_no,
                "private_key_file": str((state_dir / PRIVATE_KEY_FILE).resolve()),
                "apiv3_key_file": str((state_dir / APIV3_KEY_FILE).resolve()),
                "base_url": base_url,
                "transfer_scene_id": DEMO_TRANSFER_SCENE_ID,
                "transfer_scene_report_infos": list(DEMO_TRANSFER_REPORT_INFOS),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    log.info("WeChat Pay v3 sandbox on %s (merchant %s)", base_url, merchant.mchid)
    return create_wechat_v3_sandbox(merchant)
