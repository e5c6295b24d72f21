"""A local Alibaba Cloud that speaks the protocol of the services the `aliyun` connectors use, for tests and dev:

    python -m app_backend.identity.aliyun_sandbox aliyun --port 9201 --state-dir .data/sandbox/aliyun

`POST /` takes RPC-style API calls exactly as the official SDKs send them (action and version in `x-acs-action` /
`x-acs-version`, parameters in the query string and a form body) and checks them as the vendor does before
anything else: the `Authorization` header's ACS3-HMAC-SHA256 signature over the canonical request (method, path,
sorted query, the signed headers, the body's SHA-256), recomputed here from the wire with the access key pair in
`state_dir/aliyun.json`; the body's hash; the date (within 15 minutes) and the nonce (single use). Refusals are the
vendor's JSON errors (`IncompleteSignature`, `SignatureDoesNotMatch`, `InvalidAccessKeyId.NotFound`,
`SignatureNonceUsed`, `InvalidTimeStamp.Expired`, `InvalidAction.NotFound`), HTTP 4xx.

Actions (answers as the vendor's JSON):
- SendSms (2017-05-25): the sign name and template must be registered here (`aliyun.json`: `sign_name`,
  `templates` with their parameters); `Code` OK, or isv.* refusals with HTTP 200 as the vendor does.
- Id2MetaVerify, Mobile3MetaSimpleVerify (2019-03-07): against the people table; `ResultObject.BizCode` 1 agree,
  2 disagree, 3 no record.
- InitFaceVerify: opens a verification of CertName/CertNo (SceneId, OuterOrderNo, ProductCode and MetaInfo
  required) and answers its `CertifyId`. DescribeFaceVerify: `Passed` T/F with a `SubCode` (200 passed, 201 the
  name does not match the ID number, 202 no such person, 204 the face did not match, 210 not scanned yet: the
  sandbox's own); an unknown or expired CertifyId answers `Code` 401.

The people table (name, ID number, phones, face outcome) is loaded from `state_dir/people.json` at start (the
demo seed writes it, app_backend/composition/sandboxes.py) and extended by the controls below (JSON in and out):

    POST /_sandbox/people                        {"people": [{"name", "id_number", "phones": [...], "face": "pass"}]}
    GET  /_sandbox/messages?phone=138…           the texts sent to a phone (template, parameters)
    POST /_sandbox/verifications/{id}/scan       {"outcome": "pass"|"fail"} (default: the person's face outcome):
                                                 what the face SDK on the phone does
    POST /_sandbox/verifications/{id}/expire     the verification lapses
    GET  /_sandbox/verifications/{id}            its record, with how often DescribeFaceVerify asked for it
    GET  /_sandbox/calls                         the count of each action answered
    POST /_sandbox/faults   {"action": "SendSms", "mode": "error"|"timeout"|"refuse", "times": 1, "delay_s": 30}
    DELETE /_sandbox/faults
    POST /_sandbox/reset    forget everything but the keys and the people file
    GET  /_sandbox/health

`error` answers HTTP 500 (InternalError) without processing; `timeout` holds the answer `delay_s` seconds;
`refuse` answers a business refusal (SendSms isv.BUSINESS_LIMIT_CONTROL, the others Code 500)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import json
import secrets
import signal
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from litestar import Litestar, Request, Response, delete, get, post

ALGORITHM = "ACS3-HMAC-SHA256"
SMS_VERSION, CLOUDAUTH_VERSION = "2017-05-25", "2019-03-07"
ACTIONS = {
    "SendSms": SMS_VERSION,
    "Id2MetaVerify": CLOUDAUTH_VERSION,
    "Mobile3MetaSimpleVerify": CLOUDAUTH_VERSION,
    "InitFaceVerify": CLOUDAUTH_VERSION,
    "DescribeFaceVerify": CLOUDAUTH_VERSION,
}
DEMO_SIGN_NAME = "泰州通"
# The demo account's approved templates by message kind (app_backend/identity/sms.py), and their parameters.
DEMO_TEMPLATE_OF = {
    "otp": "SMS_300000001",
    "identity-taken": "SMS_300000002",
    "identity-claimed": "SMS_300000003",
}
DEMO_TEMPLATES = {
    DEMO_TEMPLATE_OF["otp"]: ["code"],
    DEMO_TEMPLATE_OF["identity-taken"]: [],
    DEMO_TEMPLATE_OF["identity-claimed"]: [],
}
DEMO_SCENE_ID = 1000000001
_SKEW = dt.timedelta(minutes=15)
_REQUIRED_SIGNED = ("host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce")


@dataclass
class Person:
    name: str
    id_number: str
    phones: list[str] = field(default_factory=list)
    face: str = "pass"


@dataclass
class Verification:
    certify_id: str
    scene_id: str
    cert_name: str
    cert_no: str
    outcome: str | None = None
    expired: bool = False
    described: int = 0


@dataclass
class Fault:
    mode: str
    times: int
    delay_s: float


@dataclass
class Vendor:
    """What the sandbox holds: its keys and registrations, the people, and what happened."""

    access_key_id: str
    access_key_secret: str
    sign_name: str
    templates: dict[str, list[str]]
    scene_id: int
    people: dict[str, Person] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    verifications: dict[str, Verification] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    faults: dict[str, list[Fault]] = field(default_factory=dict)

    def enrol(self, raw: dict[str, Any]) -> None:
        person = Person(
            name=str(raw["name"]),
            id_number=str(raw["id_number"]).upper(),
            phones=[str(p) for p in raw.get("phones", [])],
            face=str(raw.get("face", "pass")),
        )
        self.people[person.id_number] = person

    def take_fault(self, action: str) -> Fault | None:
        queue = self.faults.get(action) or []
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault


class VendorError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def load_or_create_vendor(state_dir: Path) -> Vendor:
    """The access key pair and registrations in `state_dir/aliyun.json` (made on first start), the people of
    `state_dir/people.json` when there is one."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "aliyun.json"
    if not path.exists():
        path.write_text(
            json.dumps(
                {
                    "access_key_id": "LTAI" + secrets.token_hex(10),
                    "access_key_secret": secrets.token_urlsafe(24),
                    "sign_name": DEMO_SIGN_NAME,
                    "templates": DEMO_TEMPLATES,
                    "scene_id": DEMO_SCENE_ID,
                },
                ensure_ascii=False,
                indent=1,
            )
        )
        path.chmod(0o600)
    stored = json.loads(path.read_text())
    vendor = Vendor(
        access_key_id=stored["access_key_id"],
        access_key_secret=stored["access_key_secret"],
        sign_name=stored["sign_name"],
        templates=stored["templates"],
        scene_id=int(stored["scene_id"]),
    )
    people = state_dir / "people.json"
    if people.exists():
        for raw in json.loads(people.read_text()):
            vendor.enrol(raw)
    return vendor


# -- the signature, as the vendor checks it --------------------------------------------------------------------------


def _encode(value: str) -> str:
    return quote(value, safe="~")


def _authorization(header: str) -> tuple[str, list[str], str]:
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        raise VendorError(400, "IncompleteSignature", f"the signature algorithm must be {ALGORITHM}")
    parts = dict(item.strip().split("=", 1) for item in rest.split(",") if "=" in item)
    if not {"Credential", "SignedHeaders", "Signature"} <= parts.keys():
        raise VendorError(
            400, "IncompleteSignature", "The request signature does not conform to Aliyun standards."
        )
    return parts["Credential"], parts["SignedHeaders"].split(";"), parts["Signature"]


def check_signature(
    vendor: Vendor, method: str, path: str, raw_query: str, headers: Any, body: bytes
) -> None:
    """Raises a VendorError unless the request is signed with the sandbox's key pair, as the vendor checks it."""
    header = headers.get("authorization")
    if not header:
        raise VendorError(400, "MissingAuthorization", "Authorization is mandatory for this action.")
    credential, signed, signature = _authorization(header)
    if credential != vendor.access_key_id:
        raise VendorError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    if signed != sorted(signed) or not set(_REQUIRED_SIGNED) <= set(signed):
        raise VendorError(
            400, "IncompleteSignature", "SignedHeaders must be sorted and name the x-acs-* headers."
        )
    payload_hash = headers.get("x-acs-content-sha256", "")
    if not hmac.compare_digest(payload_hash, hashlib.sha256(body).hexdigest()):
        raise VendorError(400, "SignatureDoesNotMatch", "The x-acs-content-sha256 does not match the body.")
    query = sorted(parse_qsl(raw_query, keep_blank_values=True))
    canonical = "\n".join(
        [
            method,
            path or "/",
            "&".join(f"{_encode(k)}={_encode(v)}" for k, v in query),
            "".join(f"{name}:{(headers.get(name) or '').strip()}\n" for name in signed),
            ";".join(signed),
            payload_hash,
        ]
    )
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    expected = hmac.new(
        vendor.access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise VendorError(400, "SignatureDoesNotMatch", "Specified signature does not match our calculation.")
    try:
        sent_at = dt.datetime.strptime(headers.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC
        )
    except ValueError:
        raise VendorError(
            400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
        ) from None
    if abs(dt.datetime.now(dt.UTC) - sent_at) > _SKEW:
        raise VendorError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
    nonce = headers.get("x-acs-signature-nonce", "")
    if nonce in vendor.nonces:
        raise VendorError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
    vendor.nonces.add(nonce)


# -- the actions -----------------------------------------------------------------------------------------------------


def _request_id() -> str:
    return secrets.token_hex(16).upper()


def _required(params: dict[str, str], *names: str) -> None:
    missing = [n for n in names if not params.get(n)]
    if missing:
        raise VendorError(
            400, "MissingParameter", f"The input parameter {missing[0]} that is mandatory is not supplied."
        )


def _cloudauth(
    result: dict[str, Any] | None = None, code: str = "200", message: str = "success"
) -> dict[str, Any]:
    answer: dict[str, Any] = {"RequestId": _request_id(), "Code": code, "Message": message}
    if result is not None:
        answer["ResultObject"] = result
    return answer


def send_sms(vendor: Vendor, params: dict[str, str]) -> dict[str, Any]:
    _required(params, "PhoneNumbers", "SignName", "TemplateCode")
    refusal = None
    phone = params["PhoneNumbers"]
    template = vendor.templates.get(params["TemplateCode"])
    try:
        values = json.loads(params.get("TemplateParam") or "{}")
    except ValueError:
        values = None
    if not (phone.isdigit() and len(phone) == 11 and phone.startswith("1")):
        refusal = ("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
    elif params["SignName"] != vendor.sign_name:
        refusal = ("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
    elif template is None:
        refusal = ("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
    elif not isinstance(values, dict) or set(template) - set(values):
        refusal = ("isv.TEMPLATE_MISSING_PARAMETERS", "模板变量缺少对应参数值")
    if refusal:
        return {"RequestId": _request_id(), "Code": refusal[0], "Message": refusal[1]}
    biz_id = f"{secrets.randbelow(10**15):015d}^0"
    vendor.messages.append(
        {
            "phone": phone,
            "sign_name": params["SignName"],
            "template_code": params["TemplateCode"],
            "template_param": values,
            "out_id": params.get("OutId"),
            "biz_id": biz_id,
        }
    )
    return {"RequestId": _request_id(), "Code": "OK", "Message": "OK", "BizId": biz_id}


def _normal(params: dict[str, str]) -> None:
    if params.get("ParamType", "normal") != "normal":
        raise VendorError(400, "InvalidParameter", "the sandbox takes ParamType normal only")


def id2_meta_verify(vendor: Vendor, params: dict[str, str]) -> dict[str, Any]:
    _required(params, "ParamType", "UserName", "IdentifyNum")
    _normal(params)
    person = vendor.people.get(params["IdentifyNum"].upper())
    biz_code = "3" if person is None else "1" if person.name == params["UserName"] else "2"
    return _cloudauth({"BizCode": biz_code})


def mobile3_meta_simple_verify(vendor: Vendor, params: dict[str, str]) -> dict[str, Any]:
    _required(params, "ParamType", "UserName", "IdentifyNum", "Mobile")
    _normal(params)
    person = vendor.people.get(params["IdentifyNum"].upper())
    phone_known = any(params["Mobile"] in p.phones for p in vendor.people.values())
    if person is None or not phone_known:
        biz_code = "3"
    elif person.name == params["UserName"] and params["Mobile"] in person.phones:
        biz_code = "1"
    else:
        biz_code = "2"
    return _cloudauth({"BizCode": biz_code, "IspName": "CMCC"})


def init_face_verify(vendor: Vendor, params: dict[str, str]) -> dict[str, Any]:
    _required(params, "SceneId", "OuterOrderNo", "ProductCode", "MetaInfo", "CertName", "CertNo")
    if params["SceneId"] != str(vendor.scene_id):
        return _cloudauth(code="404", message="认证场景配置不存在")
    certify_id = secrets.token_hex(16)
    vendor.verifications[certify_id] = Verification(
        certify_id, params["SceneId"], params["CertName"], params["CertNo"].upper()
    )
    return _cloudauth({"CertifyId": certify_id})


def describe_face_verify(vendor: Vendor, params: dict[str, str]) -> dict[str, Any]:
    _required(params, "SceneId", "CertifyId")
    verification = vendor.verifications.get(params["CertifyId"])
    if verification is None or verification.expired or verification.scene_id != params["SceneId"]:
        return _cloudauth(code="401", message="CertifyId不存在或已过期")
    verification.described += 1
    person = vendor.people.get(verification.cert_no)
    if verification.outcome is None:
        sub_code = "210"
    elif person is None:
        sub_code = "202"
    elif person.name != verification.cert_name:
        sub_code = "201"
    else:
        sub_code = "200" if verification.outcome == "pass" else "204"
    return _cloudauth({"Passed": "T" if sub_code == "200" else "F", "SubCode": sub_code})


HANDLERS = {
    "SendSms": send_sms,
    "Id2MetaVerify": id2_meta_verify,
    "Mobile3MetaSimpleVerify": mobile3_meta_simple_verify,
    "InitFaceVerify": init_face_verify,
    "DescribeFaceVerify": describe_face_verify,
}


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(
        content=json.dumps(data, ensure_ascii=False).encode(),
        status_code=status,
        media_type="application/json;charset=utf-8",
    )


def create_aliyun_sandbox(state_dir: Path) -> Litestar:
    vendor = load_or_create_vendor(state_dir)

    @post("/", status_code=200)
    async def api(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = await request.body()
        try:
            check_signature(
                vendor, request.method, request.url.path, request.url.query or "", request.headers, body
            )
            action = request.headers.get("x-acs-action", "")
            if ACTIONS.get(action) != request.headers.get("x-acs-version"):
                raise VendorError(
                    404, "InvalidAction.NotFound", "Specified api is not found, please check it."
                )
            params = dict(parse_qsl(request.url.query or "", keep_blank_values=True))
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
            fault = vendor.take_fault(action)
            if fault is not None and fault.mode == "error":
                raise VendorError(
                    500, "InternalError", "The request processing has failed due to some unknown error."
                )
            if fault is not None and fault.mode == "timeout":
                await asyncio.sleep(fault.delay_s)
            vendor.calls[action] += 1
            if fault is not None and fault.mode == "refuse":
                if action == "SendSms":
                    return _json(
                        {
                            "RequestId": _request_id(),
                            "Code": "isv.BUSINESS_LIMIT_CONTROL",
                            "Message": "业务限流",
                        }
                    )
                return _json(_cloudauth(code="500", message="系统错误"))
            return _json(HANDLERS[action](vendor, params))
        except VendorError as exc:
            return _json(
                {
                    "RequestId": _request_id(),
                    "HostId": request.headers.get("host", ""),
                    "Code": exc.code,
                    "Message": exc.message,
                },
                exc.status,
            )

    @get("/_sandbox/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @post("/_sandbox/people", status_code=200)
    async def people(data: dict[str, Any]) -> dict[str, int]:
        for raw in data.get("people", []):
            vendor.enrol(raw)
        return {"people": len(vendor.people)}

    @get("/_sandbox/messages")
    async def messages(phone: str) -> dict[str, Any]:
        return {"messages": [m for m in vendor.messages if m["phone"] == phone]}

    def _verification(certify_id: str) -> Verification:
        found = vendor.verifications.get(certify_id)
        if found is None:
            from litestar.exceptions import NotFoundException

            raise NotFoundException("no such verification")
        return found

    @post("/_sandbox/verifications/{certify_id:str}/scan", status_code=200)
    async def scan(certify_id: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        verification = _verification(certify_id)
        person = vendor.people.get(verification.cert_no)
        verification.outcome = (data or {}).get("outcome") or (person.face if person else "fail")
        return asdict(verification)

    @post("/_sandbox/verifications/{certify_id:str}/expire", status_code=200)
    async def expire(certify_id: str) -> dict[str, Any]:
        verification = _verification(certify_id)
        verification.expired = True
        return asdict(verification)

    @get("/_sandbox/verifications/{certify_id:str}")
    async def verification(certify_id: str) -> dict[str, Any]:
        return asdict(_verification(certify_id))

    @get("/_sandbox/calls")
    async def calls() -> dict[str, int]:
        return dict(vendor.calls)

    @post("/_sandbox/faults", status_code=200)
    async def add_fault(data: dict[str, Any]) -> dict[str, str]:
        fault = Fault(str(data.get("mode")), int(data.get("times", 1)), float(data.get("delay_s", 30)))
        vendor.faults.setdefault(str(data.get("action")), []).append(fault)
        return {"ok": "fault waiting"}

    @delete("/_sandbox/faults", status_code=200)
    async def clear_faults() -> dict[str, str]:
        vendor.faults.clear()
        return {"ok": "no faults"}

    @post("/_sandbox/reset", status_code=200)
    async def reset() -> dict[str, str]:
        fresh = load_or_create_vendor(state_dir)
        vendor.people, vendor.messages, vendor.verifications = fresh.people, [], {}
        vendor.calls.clear()
        vendor.faults.clear()
        return {"ok": "reset"}

    return Litestar(
        route_handlers=[
            api,
            health,
            people,
            messages,
            scan,
            expire,
            verification,
            calls,
            add_fault,
            clear_faults,
            reset,
        ],
        openapi_config=None,
    )


async def _serve(app: Any, host: str, port: int) -> None:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    server = Server(
        app, address=host, port=port, interface=Interfaces.ASGI, log_access=False, websockets=False
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app_backend.identity.aliyun_sandbox", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("channel", nargs="?", default="aliyun", choices=["aliyun"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", required=True, help="where the sandbox keeps its keys and people")
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    asyncio.run(_serve(create_aliyun_sandbox(state_dir), args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
