"""A local Alipay open-platform gateway for mini-program logins, speaking the real protocol, for `make run` and tests.

`POST /gateway.do` takes requests exactly as alipay-sdk-python signs them (common parameters in the query string,
the rest as a form body), checks the app id, the timestamp (Beijing time, within 15 minutes) and the RSA2
signature with the app public key, and answers `{"<method>_response" | "error_response": {...}, "sign": "..."}`
signed over the exact bytes of the object it sends. Methods:

    alipay.system.oauth.token   grant_type=authorization_code&code=… -> user_id and/or open_id, access_token,
                                refresh_token; a code that is unknown, expired, another app's or used is
                                error_response 40002 isv.code-invalid. grant_type=refresh_token&refresh_token=…
                                -> a new token pair, unless the user revoked the grant (isv.refresh-token-invalid)
    alipay.user.info.share      auth_token=… -> user_id / open_id, nick_name, avatar; a revoked or unknown token is
                                20001 aop.invalid-auth-token
    alipay.open.app.mini.templatemessage.send
                                biz_content {to_user_id | to_open_id, user_template_id, page, data} -> 10000 when
                                the user subscribed to the template (a one-time grant is spent), 40004
                                USER_NOT_SUBSCRIBED otherwise

What the user's phone does is done by test controls under `/_sandbox/` (JSON in and out):

    POST /_sandbox/codes            {"app_id", "user_id"?, "id_kind"?: "open_id"|"user_id"|"both", "expired"?}
                                    -> {"code", "user_id", "open_id"}: what my.getAuthCode gives that user (a new
                                    user when none is given). Apps created since 2023 see only the open_id.
    POST /_sandbox/phone-responses  {"app_id", "phone", "tamper"?: false} -> {"response": "<the JSON text
                                    my.getPhoneNumber gives>"}: AES-128-CBC encrypted with the app's AES key and
                                    signed (RSA2 over the quoted ciphertext); `tamper` breaks the signature
    POST /_sandbox/users/{user_id}/revoke   the user revokes every grant (tokens stop working)
    POST /_sandbox/grants           {"app_id", "user_id"|"open_id", "template_id", "kind": "one_time"|"long_term"}
    GET  /_sandbox/messages?app_id
    POST /_sandbox/faults  {"method", "mode": "error"|"timeout"|"busy"|"rate_limit"|"refuse", "times": 1,
                            "delay_s": 30, "sub_code": …, "sub_msg": …}
    DELETE /_sandbox/faults
    POST /_sandbox/reset, GET /_sandbox/health

Faults: `error` answers HTTP 500, `timeout` holds the answer `delay_s` seconds, `busy` answers 20000
isp.unknow-error, `rate_limit` 20000 isp.flow-limit (调用频率超限), `refuse` 40004 with the given sub_code.

Keys: one app key pair and one Alipay key pair for every app the sandbox plays (payments.sandbox.keys, in the
state directory), and an AES key per app (`aes_key_<app id>.txt`). `alipay-mini.json` in the state directory
lists the apps and the gateway URL."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from litestar import Litestar, Request, Response, delete, get, post
from litestar.logging.config import LoggingConfig

from payments.sandbox.alipay import DEMO_APP_ID as PAYMENT_APP_ID
from payments.sandbox.keys import AlipayKeys, load_or_create_alipay_keys
from payments.sandbox.kit import SHANGHAI, ControlError, Fault, Faults, json_body, now, reply, run_control

# The city's mini-program (the app the payment sandbox pays for) and a department's.
DEMO_APP_IDS = (PAYMENT_APP_ID, "2021000000000102")
CODE_TTL_S = 300
TOKEN_TTL_S = 1_296_000
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
FAULT_MODES = ("error", "timeout", "busy", "rate_limit", "refuse")
METHODS = (
    "alipay.system.oauth.token",
    "alipay.user.info.share",
    "alipay.open.app.mini.templatemessage.send",
)
_MESSAGES = {
    "10000": "Success",
    "20000": "Service Currently Unavailable",
    "20001": "Insufficient Token Permissions",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
}


class _Failure(Exception):
    def __init__(self, code: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(sub_msg)
        self.body = {"code": code, "msg": _MESSAGES[code], "sub_code": sub_code, "sub_msg": sub_msg}


def _digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


def aes_cbc_encrypt(key_b64: str, text: str) -> str:
    """What Alipay does to a mini-program's sensitive answer: AES-CBC, a zero IV, PKCS#7, base64."""
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(text.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(base64.b64decode(key_b64)), modes.CBC(b"\0" * 16)).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


@dataclass
class _User:
    user_id: str
    open_ids: dict[str, str] = field(default_factory=dict)  # app id -> open id
    revoked: bool = False


@dataclass
class _Code:
    app_id: str
    user_id: str
    id_kind: str
    issued: float
    used: bool = False


@dataclass
class _Token:
    app_id: str
    user_id: str
    id_kind: str
    expires: float
    refresh: str


@dataclass
class _State:
    users: dict[str, _User] = field(default_factory=dict)
    codes: dict[str, _Code] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    grants: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)  # -> [kind, count]
    messages: list[dict[str, Any]] = field(default_factory=list)


class AlipayMiniSandbox:
    def __init__(self, keys: AlipayKeys, aes_keys: dict[str, str]) -> None:
        self.aes_keys = aes_keys  # app id -> AES key (base64): the apps this sandbox plays
        app_public = serialization.load_pem_public_key(keys.app_public_key.encode("ascii"))
        alipay_private = serialization.load_pem_private_key(
            keys.alipay_private_key.encode("ascii"), password=None
        )
        if not isinstance(app_public, rsa.RSAPublicKey) or not isinstance(alipay_private, rsa.RSAPrivateKey):
            raise ValueError("the sandbox needs RSA keys")
        self._app_public = app_public
        self._alipay_private = alipay_private
        self.faults = Faults()
        self.state = _State()
        self.app = self._build_app()

    def reset(self) -> None:
        self.state = _State()
        self.faults.clear()

    def sign(self, content: str) -> str:
        signature = self._alipay_private.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    # -- the gateway ------------------------------------------------------------------------------------------

    @staticmethod
    def _params(query: bytes, body: bytes) -> dict[str, str]:
        params: dict[str, str] = {}
        for source in (query, body):
            for key, value in parse_qsl(source.decode("utf-8"), keep_blank_values=True):
                if key in params and params[key] != value:
                    raise _Failure("40002", "isv.invalid-parameter", f"参数 {key} 重复")
                params[key] = value
        return params

    def _check(self, params: dict[str, str]) -> None:
        for name in ("app_id", "method", "charset", "sign_type", "timestamp", "version", "sign"):
            if not params.get(name):
                raise _Failure("40001", f"isv.missing-{name.replace('_', '-')}", f"缺少{name}参数")
        if params["app_id"] not in self.aes_keys:
            raise _Failure("40002", "isv.invalid-app-id", "无效的AppID参数")
        if params["sign_type"] != "RSA2":
            raise _Failure("40002", "isv.invalid-signature-type", "无效的签名类型")
        try:
            stamp = dt.datetime.strptime(params["timestamp"], TIME_FORMAT).replace(tzinfo=SHANGHAI)
        except ValueError:
            raise _Failure("40002", "isv.invalid-timestamp", "非法的时间戳参数") from None
        if abs(stamp - now()) > dt.timedelta(minutes=15):
            raise _Failure("40002", "isv.invalid-timestamp", "时间戳与服务器时间(北京时间)相差超过15分钟")
        content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v != "")
        try:
            self._app_public.verify(
                base64.b64decode(params["sign"], validate=True),
                content.encode("utf-8"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            raise _Failure("40002", "isv.invalid-signature", "验签出错") from None

    def _response(self, key: str, body: dict[str, Any]) -> Response[bytes]:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        text = '{"' + key + '":' + content + ',"sign":"' + self.sign(content) + '"}'
        return Response(content=text.encode("utf-8"), media_type="application/json;charset=utf-8")

    def _ids(self, user: _User, app_id: str, id_kind: str) -> dict[str, str]:
        ids = {}
        if id_kind in ("user_id", "both"):
            ids["user_id"] = user.user_id
        if id_kind in ("open_id", "both"):
            ids["open_id"] = user.open_ids[app_id]
        return ids

    def _grant(self, app_id: str, user_id: str, id_kind: str) -> dict[str, Any]:
        token = _Token(app_id, user_id, id_kind, time.time() + TOKEN_TTL_S, "rt" + secrets.token_hex(16))
        access = "authusrB" + secrets.token_hex(16)
        self.state.tokens[access] = token
        return {
            **self._ids(self.state.users[user_id], app_id, id_kind),
            "access_token": access,
            "expires_in": TOKEN_TTL_S,
            "refresh_token": token.refresh,
            "re_expires_in": TOKEN_TTL_S,
            "auth_start": now().strftime(TIME_FORMAT),
        }

    def oauth_token(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        app_id = params["app_id"]
        if params.get("grant_type") == "authorization_code":
            code = self.state.codes.get(params.get("code", ""))
            if code is None or code.app_id != app_id or time.time() - code.issued > CODE_TTL_S:
                raise _Failure("40002", "isv.code-invalid", "授权码code无效")
            if code.used:
                raise _Failure("40002", "isv.code-invalid", "授权码code无效 (已使用)")
            code.used = True
            self.state.users[code.user_id].revoked = False  # a fresh consent
            return self._grant(app_id, code.user_id, code.id_kind)
        if params.get("grant_type") == "refresh_token":
            found = next(
                (t for t in self.state.tokens.values() if t.refresh == params.get("refresh_token")), None
            )
            if found is None or found.app_id != app_id or self.state.users[found.user_id].revoked:
                raise _Failure("40002", "isv.refresh-token-invalid", "刷新令牌refresh_token无效")
            return self._grant(app_id, found.user_id, found.id_kind)
        raise _Failure("40002", "isv.grant-type-invalid", "不支持的grant_type")

    def _token(self, params: dict[str, str]) -> _Token:
        token = self.state.tokens.get(params.get("auth_token", ""))
        if (
            token is None
            or token.app_id != params["app_id"]
            or token.expires < time.time()
            or self.state.users[token.user_id].revoked
        ):
            raise _Failure("20001", "aop.invalid-auth-token", "无效的访问令牌")
        return token

    def user_info(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        token = self._token(params)
        user = self.state.users[token.user_id]
        return {
            "code": "10000",
            "msg": "Success",
            **self._ids(user, token.app_id, token.id_kind),
            "nick_name": "支付宝用户",
            "avatar": "",
        }

    def _user_of(self, app_id: str, user_id: str | None, open_id: str | None) -> _User | None:
        if user_id:
            return self.state.users.get(user_id)
        return next((u for u in self.state.users.values() if u.open_ids.get(app_id) == open_id), None)

    def template_send(self, params: dict[str, str], biz: dict[str, Any]) -> dict[str, Any]:
        app_id = params["app_id"]
        user = self._user_of(app_id, biz.get("to_user_id"), biz.get("to_open_id"))
        template = str(biz.get("user_template_id", ""))
        if user is None:
            raise _Failure("40004", "USER_NOT_EXIST", "用户不存在")
        grant = self.state.grants.get((app_id, user.user_id, template))
        if grant is None or user.revoked or (grant[0] == "one_time" and grant[1] <= 0):
            raise _Failure("40004", "USER_NOT_SUBSCRIBED", "用户未订阅该模板")
        if grant[0] == "one_time":
            grant[1] -= 1
        self.state.messages.append(
            {"app_id": app_id, "user_id": user.user_id, "template_id": template, "data": biz.get("data")}
        )
        return {"code": "10000", "msg": "Success"}

    def _methods(self) -> dict[str, Callable[[dict[str, str], dict[str, Any]], dict[str, Any]]]:
        return {
            "alipay.system.oauth.token": self.oauth_token,
            "alipay.user.info.share": self.user_info,
            "alipay.open.app.mini.templatemessage.send": self.template_send,
        }

    async def gateway(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            params = self._params(request.scope.get("query_string", b""), await request.body())
            method = params.get("method", "")
            handler = self._methods().get(method)
            if handler is None:
                raise _Failure("40002", "isv.invalid-method", f"不存在的方法名 {method!r}")
            self._check(params)
        except (UnicodeDecodeError, _Failure) as exc:
            failure = (
                exc if isinstance(exc, _Failure) else _Failure("40002", "isv.invalid-parameter", "编码错误")
            )
            return self._response("error_response", failure.body)
        key = method.replace(".", "_") + "_response"
        fault = self.faults.take(method)
        if fault is not None:
            await fault.hold()
            if fault.mode == "error":
                return Response(
                    b"<html>500 Internal Server Error</html>", status_code=500, media_type="text/html"
                )
            if fault.mode == "busy":
                return self._response(key, _Failure("20000", "isp.unknow-error", "系统繁忙").body)
            if fault.mode == "rate_limit":
                return self._response(key, _Failure("20000", "isp.flow-limit", "调用频率超限").body)
            if fault.mode == "refuse":
                refused = _Failure("40004", fault.code or "isv.refused", fault.message or "拒绝").body
                return self._response(key, refused)
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            return self._response(key, _Failure("40002", "isv.invalid-parameter", "biz_content 无效").body)
        try:
            return self._response(key, handler(params, biz))
        except _Failure as failure:
            # oauth.token answers its refusals as error_response, the others under their own name
            name = "error_response" if method == "alipay.system.oauth.token" else key
            return self._response(name, failure.body)

    # -- controls --------------------------------------------------------------------------------------------

    def _known_app(self, data: dict[str, Any]) -> str:
        app_id = str(data.get("app_id", ""))
        if app_id not in self.aes_keys:
            raise ControlError(400, f"app_id must be one of {sorted(self.aes_keys)}")
        return app_id

    def control_code(self, data: dict[str, Any]) -> dict[str, Any]:
        app_id = self._known_app(data)
        id_kind = str(data.get("id_kind", "open_id"))
        if id_kind not in ("open_id", "user_id", "both"):
            raise ControlError(400, "id_kind must be open_id, user_id or both")
        user_id = str(data.get("user_id") or "2088" + _digits(12))
        user = self.state.users.setdefault(user_id, _User(user_id))
        user.open_ids.setdefault(app_id, "0" + secrets.token_urlsafe(33)[:43])
        code = secrets.token_hex(16)
        issued = time.time() - (CODE_TTL_S + 1 if data.get("expired") else 0)
        self.state.codes[code] = _Code(app_id, user_id, id_kind, issued)
        return {"code": code, "user_id": user_id, "open_id": user.open_ids[app_id]}

    def control_phone(self, data: dict[str, Any]) -> dict[str, Any]:
        app_id = self._known_app(data)
        phone = str(data.get("phone", ""))
        if not phone.isdigit():
            raise ControlError(400, "phone must be digits")
        plain = json.dumps({"code": "10000", "msg": "Success", "mobile": phone}, separators=(",", ":"))
        encrypted = aes_cbc_encrypt(self.aes_keys[app_id], plain)
        signature = self.sign(f'"{encrypted}"')
        if data.get("tamper"):
            signature = self.sign(f'"{encrypted}x"')
        answer = {
            "response": encrypted,
            "sign": signature,
            "sign_type": "RSA2",
            "encrypt_type": "AES",
            "charset": "UTF-8",
        }
        return {"response": json.dumps(answer)}

    def control_grant(self, data: dict[str, Any]) -> dict[str, Any]:
        app_id = self._known_app(data)
        user = self._user_of(app_id, data.get("user_id"), data.get("open_id"))
        if user is None or not data.get("template_id"):
            raise ControlError(400, "a known user_id or open_id, and template_id")
        kind = data.get("kind", "one_time")
        if kind not in ("one_time", "long_term"):
            raise ControlError(400, "kind must be one_time or long_term")
        key = (app_id, user.user_id, str(data["template_id"]))
        grant = self.state.grants.get(key)
        if grant is not None and grant[0] == kind == "one_time":
            grant[1] += 1
        else:
            self.state.grants[key] = [kind, 1]
        return {"kind": kind, "count": self.state.grants[key][1]}

    def control_fault(self, data: dict[str, Any]) -> dict[str, Any]:
        method, mode = data.get("method"), data.get("mode")
        if method not in METHODS:
            raise ControlError(400, f"method must be one of {METHODS}")
        if mode not in FAULT_MODES:
            raise ControlError(400, f"mode must be one of {FAULT_MODES}")
        times, delay = data.get("times", 1), data.get("delay_s", 30)
        if not isinstance(times, int) or times < 1 or not isinstance(delay, int | float) or delay < 0:
            raise ControlError(400, "times must be a positive integer and delay_s a non-negative number")
        self.faults.set(
            str(method),
            Fault(str(mode), times, float(delay), code=data.get("sub_code"), message=data.get("sub_msg")),
        )
        return {"method": method, "mode": mode, "times": times}

    def _build_app(self) -> Litestar:
        sandbox = self

        @post("/gateway.do", status_code=200)
        async def gateway(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await sandbox.gateway(request)

        @post("/_sandbox/codes", status_code=200)
        async def codes(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_code(await json_body(request))

            return await run_control(action)

        @post("/_sandbox/phone-responses", status_code=200)
        async def phone(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_phone(await json_body(request))

            return await run_control(action)

        @post("/_sandbox/users/{user_id:str}/revoke", status_code=200)
        async def revoke(user_id: str) -> Response[bytes]:
            async def action() -> Any:
                user = sandbox.state.users.get(user_id)
                if user is None:
                    raise ControlError(404, f"no user {user_id}")
                user.revoked = True
                return {"revoked": True}

            return await run_control(action)

        @post("/_sandbox/grants", status_code=200)
        async def grants(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_grant(await json_body(request))

            return await run_control(action)

        @get("/_sandbox/messages")
        async def messages(request: Request[Any, Any, Any]) -> Response[bytes]:
            app_id = request.query_params.get("app_id")
            return reply({"messages": [m for m in sandbox.state.messages if app_id in (None, m["app_id"])]})

        @post("/_sandbox/faults", status_code=200)
        async def add_fault(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_fault(await json_body(request))

            return await run_control(action)

        @delete("/_sandbox/faults", status_code=200)
        async def clear_faults() -> Response[bytes]:
            sandbox.faults.clear()
            return reply({"faults": 0})

        @post("/_sandbox/reset", status_code=200)
        async def reset() -> Response[bytes]:
            sandbox.reset()
            return reply({"reset": True})

        @get("/_sandbox/health")
        async def health() -> Response[bytes]:
            return reply({"ok": True, "channel": "alipay-mini", "apps": sorted(sandbox.aes_keys)})

        return Litestar(
            route_handlers=[
                gateway,
                codes,
                phone,
                revoke,
                grants,
                messages,
                add_fault,
                clear_faults,
                reset,
                health,
            ],
            openapi_config=None,
            logging_config=LoggingConfig(log_exceptions="always"),
            debug=False,
        )


STATE_FILE = "alipay-mini.json"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app-id", action="append", default=[], help="an app id the sandbox plays besides the demo ones"
    )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def build_app(args: argparse.Namespace) -> Litestar:
    """The sandbox for `python -m mini_programs.sandbox alipay`: keys and AES keys kept in the state directory."""
    state_dir = Path(args.state_dir)
    keys = load_or_create_alipay_keys(state_dir)
    aes_keys: dict[str, str] = {}
    for app_id in (*DEMO_APP_IDS, *args.app_id):
        path = state_dir / f"aes_key_{app_id}.txt"
        if not path.exists():
            _write_private(path, base64.b64encode(os.urandom(16)).decode("ascii"))
        aes_keys[app_id] = path.read_text().strip()
    gateway = f"http://{args.host}:{args.port}/gateway.do"
    apps = [{"app_id": a, "aes_key_file": str(state_dir / f"aes_key_{a}.txt")} for a in aes_keys]
    _write_private(state_dir / STATE_FILE, json.dumps({"gateway_url": gateway, "apps": apps}))
    sandbox = AlipayMiniSandbox(keys, aes_keys)
    sandbox.app.state.sandbox = sandbox
    return sandbox.app
