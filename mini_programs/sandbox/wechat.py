"""A local WeChat mini-program API (api.weixin.qq.com) that speaks the real protocol, for `make run` and tests.

The backend reaches it through wechatpy's `WeChatClient` with its API base pointed here, exactly as it reaches
WeChat. What it answers, as WeChat does (JSON; an `errcode` other than 0 is a refusal):

    GET  /sns/jscode2session?appid&secret&js_code&grant_type=authorization_code
                                    -> {"openid", "session_key", "unionid"?}; 40029 invalid code (unknown, expired
                                       or another app's), 40163 code been used, 40013 invalid appid, 40125 invalid
                                       appsecret, 45011 minute quota reached
    GET  /cgi-bin/token?grant_type=client_credential&appid&secret     -> {"access_token", "expires_in": 7200}
    POST /cgi-bin/stable_token {"grant_type", "appid", "secret", "force_refresh"} -> the same token until it
                                       expires (or force_refresh)
    POST /wxa/business/getuserphonenumber?access_token  {"code"}
                                    -> {"errcode": 0, "phone_info": {"phoneNumber", "purePhoneNumber",
                                       "countryCode", "watermark": {"timestamp", "appid"}}}; 40029 invalid code
    POST /cgi-bin/message/subscribe/send?access_token {"touser", "template_id", "page", "data"}
                                    -> {"errcode": 0, "msgid"}; 43101 the user refused (no grant, or a one-time
                                       grant already spent), 40003 invalid openid

Access tokens: 40001 for a token this app was never given, 42001 for an expired one.

What the user's phone does is done by test controls under `/_sandbox/` (JSON in and out):

    POST /_sandbox/codes        {"appid", "openid"?, "unionid"?, "expired"?: false, "count"?} -> {"code",
                                 "openid", "unionid"}: what wx.login gives that user (a new openid when none is
                                 given); with `count`, also "codes": that many (for the bench)
    POST /_sandbox/phone-codes  {"appid", "phone", "country_code"?: "86", "expired"?: false} -> {"code"}: what
                                 the getPhoneNumber button gives
    POST /_sandbox/grants       {"appid", "openid", "template_id", "kind": "one_time"|"long_term", "count"?: 1}:
                                 what wx.requestSubscribeMessage records when the user accepts
    POST /_sandbox/grants/revoke {"appid", "openid", "template_id"}: the user turns the template off
    GET  /_sandbox/messages?appid&openid        -> subscribe messages sent
    POST /_sandbox/access-tokens/expire {"appid"}: every token of the app expires now
    GET  /_sandbox/calls                        -> how often each path was called
    POST /_sandbox/faults  {"path": "/sns/jscode2session", "mode": "error"|"timeout"|"busy"|"rate_limit"|"refuse",
                            "times": 1, "delay_s": 30, "errcode": …, "errmsg": …}
    DELETE /_sandbox/faults
    POST /_sandbox/reset   -> forget users, codes, tokens, grants and faults (the apps and secrets stay)
    GET  /_sandbox/health

Faults apply to the next `times` calls of one path: `error` answers HTTP 500, `timeout` holds the answer for
`delay_s` seconds, `busy` answers errcode -1 (系统繁忙), `rate_limit` 45011 (45009 outside jscode2session),
`refuse` the given errcode and errmsg.

The apps it plays are written to `wechat-mini.json` in the state directory ({"base_url", "apps": [{"appid",
"secret", "secret_file"}]}, each secret also in `secret_<appid>.txt`) and kept across restarts; `--app-id` adds
an app to the demo ones."""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, delete, get, post
from litestar.logging.config import LoggingConfig

from payments.sandbox.kit import ControlError, Fault, Faults, json_body, reply, run_control
from payments.sandbox.wechat import DEMO_APPID as PAYMENT_APPID

CODE_TTL_S = 300
TOKEN_TTL_S = 7200
# The city's mini-program (the app the payment sandbox's merchant pays for) and a department's.
DEMO_APP_IDS = (PAYMENT_APPID, "wx5d0c3e8b9a417f26")
FAULT_MODES = ("error", "timeout", "busy", "rate_limit", "refuse")
PATHS = (
    "/sns/jscode2session",
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/wxa/business/getuserphonenumber",
    "/cgi-bin/message/subscribe/send",
)


def _id(prefix: str = "o") -> str:
    """An openid or unionid: 28 characters, as WeChat's."""
    return prefix + secrets.token_urlsafe(21)[:27]


@dataclass
class _Code:
    appid: str
    openid: str
    issued: float
    used: bool = False


@dataclass
class _PhoneCode:
    appid: str
    phone: str
    country_code: str
    issued: float
    used: bool = False


@dataclass
class _Grant:
    kind: str
    count: int


@dataclass
class _State:
    users: dict[tuple[str, str], str | None] = field(default_factory=dict)  # (appid, openid) -> unionid
    codes: dict[str, _Code] = field(default_factory=dict)
    phone_codes: dict[str, _PhoneCode] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (appid, expires at)
    stable: dict[str, str] = field(default_factory=dict)  # appid -> its current stable token
    grants: dict[tuple[str, str, str], _Grant] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)


class _Refusal(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg


class WechatMiniSandbox:
    def __init__(self, apps: dict[str, str], base_url: str = "") -> None:
        self.apps = apps  # appid -> secret
        self.base_url = base_url
        self.faults = Faults()
        self.state = _State()
        self.app = self._build_app()

    def reset(self) -> None:
        self.state = _State()
        self.faults.clear()

    # -- the protocol ----------------------------------------------------------------------------------------

    def _app(self, appid: str, secret: str) -> None:
        if appid not in self.apps:
            raise _Refusal(40013, "invalid appid")
        if not secrets.compare_digest(self.apps[appid], secret):
            raise _Refusal(40125, "invalid appsecret")

    def _token_app(self, token: str) -> str:
        found = self.state.tokens.get(token)
        if found is None:
            raise _Refusal(40001, "invalid credential, access_token is invalid or not latest")
        appid, expires = found
        if time.time() >= expires:
            raise _Refusal(42001, "access_token expired")
        return appid

    def code2session(self, params: dict[str, str]) -> dict[str, Any]:
        self._app(params.get("appid", ""), params.get("secret", ""))
        if params.get("grant_type") != "authorization_code":
            raise _Refusal(40002, "invalid grant_type")
        code = self.state.codes.get(params.get("js_code", ""))
        if code is None or code.appid != params["appid"] or time.time() - code.issued > CODE_TTL_S:
            raise _Refusal(40029, "invalid code")
        if code.used:
            raise _Refusal(40163, "code been used")
        code.used = True
        answer: dict[str, Any] = {
            "openid": code.openid,
            # WeChat gives a fresh session key at each login; the old one stops working.
            "session_key": base64.b64encode(os.urandom(16)).decode("ascii"),
        }
        unionid = self.state.users.get((code.appid, code.openid))
        if unionid:
            answer["unionid"] = unionid
        return answer

    def _new_token(self, appid: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(48)
        self.state.tokens[token] = (appid, time.time() + TOKEN_TTL_S)
        return {"access_token": token, "expires_in": TOKEN_TTL_S}

    def token(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("grant_type") != "client_credential":
            raise _Refusal(40002, "invalid grant_type")
        self._app(params.get("appid", ""), params.get("secret", ""))
        return self._new_token(params["appid"])

    def stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("grant_type") != "client_credential":
            raise _Refusal(40002, "invalid grant_type")
        appid = str(body.get("appid", ""))
        self._app(appid, str(body.get("secret", "")))
        current = self.state.stable.get(appid)
        if current is not None and not body.get("force_refresh"):
            found = self.state.tokens.get(current)
            if found is not None and found[1] - time.time() > 0:
                return {"access_token": current, "expires_in": int(found[1] - time.time())}
        answer = self._new_token(appid)
        self.state.stable[appid] = answer["access_token"]
        return answer

    def phone_number(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        appid = self._token_app(token)
        code = self.state.phone_codes.get(str(body.get("code", "")))
        if code is None or code.appid != appid or code.used or time.time() - code.issued > CODE_TTL_S:
            raise _Refusal(40029, "invalid code")
        code.used = True
        return {
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": code.phone
                if code.country_code == "86"
                else f"+{code.country_code}{code.phone}",
                "purePhoneNumber": code.phone,
                "countryCode": code.country_code,
                "watermark": {"timestamp": int(time.time()), "appid": appid},
            },
        }

    def subscribe_send(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        appid = self._token_app(token)
        openid, template = str(body.get("touser", "")), str(body.get("template_id", ""))
        if (appid, openid) not in self.state.users:
            raise _Refusal(40003, "invalid openid")
        if not template:
            raise _Refusal(40037, "invalid template_id")
        grant = self.state.grants.get((appid, openid, template))
        if grant is None or (grant.kind == "one_time" and grant.count <= 0):
            raise _Refusal(43101, "user refuse to accept the msg")
        if grant.kind == "one_time":
            grant.count -= 1
        msgid = len(self.state.messages) + 1
        self.state.messages.append(
            {
                "msgid": msgid,
                "appid": appid,
                "openid": openid,
                "template_id": template,
                "page": body.get("page"),
                "data": body.get("data"),
                "at": int(time.time()),
            }
        )
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    # -- controls --------------------------------------------------------------------------------------------

    def _known_app(self, data: dict[str, Any]) -> str:
        appid = str(data.get("appid", ""))
        if appid not in self.apps:
            raise ControlError(400, f"appid must be one of {sorted(self.apps)}")
        return appid

    def control_code(self, data: dict[str, Any]) -> dict[str, Any]:
        appid = self._known_app(data)
        openid = str(data.get("openid") or _id())
        unionid = data.get("unionid")
        key = (appid, openid)
        if key not in self.state.users or unionid:
            self.state.users[key] = str(unionid) if unionid else self.state.users.get(key)
        issued = time.time() - (CODE_TTL_S + 1 if data.get("expired") else 0)
        count = data.get("count", 1)
        if not isinstance(count, int) or not 1 <= count <= 100_000:
            raise ControlError(400, "count must be 1..100000")
        codes = [secrets.token_urlsafe(24) for _ in range(count)]
        for code in codes:
            self.state.codes[code] = _Code(appid, openid, issued)
        answer = {"code": codes[0], "openid": openid, "unionid": self.state.users[key]}
        return {**answer, "codes": codes} if "count" in data else answer

    def control_phone_code(self, data: dict[str, Any]) -> dict[str, Any]:
        appid = self._known_app(data)
        phone = str(data.get("phone", ""))
        if not phone.isdigit():
            raise ControlError(400, "phone must be digits")
        code = secrets.token_urlsafe(24)
        issued = time.time() - (CODE_TTL_S + 1 if data.get("expired") else 0)
        self.state.phone_codes[code] = _PhoneCode(appid, phone, str(data.get("country_code", "86")), issued)
        return {"code": code}

    def control_grant(self, data: dict[str, Any], revoke: bool) -> dict[str, Any]:
        appid = self._known_app(data)
        key = (appid, str(data.get("openid", "")), str(data.get("template_id", "")))
        if not key[1] or not key[2]:
            raise ControlError(400, "openid and template_id are required")
        if revoke:
            self.state.grants.pop(key, None)
            return {"revoked": True}
        kind = data.get("kind", "one_time")
        count = data.get("count", 1)
        if kind not in ("one_time", "long_term") or not isinstance(count, int) or count < 1:
            raise ControlError(400, "kind must be one_time or long_term, count a positive integer")
        grant = self.state.grants.get(key)
        if grant is not None and grant.kind == kind == "one_time":
            grant.count += count  # each accepted request allows one more message
        else:
            self.state.grants[key] = _Grant(kind, count)
        self.state.users.setdefault((appid, key[1]), None)
        return {"kind": kind, "count": self.state.grants[key].count}

    def control_fault(self, data: dict[str, Any]) -> dict[str, Any]:
        path, mode = data.get("path"), data.get("mode")
        if path not in PATHS:
            raise ControlError(400, f"path must be one of {PATHS}")
        if mode not in FAULT_MODES:
            raise ControlError(400, f"mode must be one of {FAULT_MODES}")
        times, delay = data.get("times", 1), data.get("delay_s", 30)
        if not isinstance(times, int) or times < 1 or not isinstance(delay, int | float) or delay < 0:
            raise ControlError(400, "times must be a positive integer and delay_s a non-negative number")
        errcode = data.get("errcode")
        self.faults.set(
            str(path),
            Fault(
                str(mode),
                times,
                float(delay),
                code=str(errcode) if errcode is not None else None,
                message=data.get("errmsg"),
            ),
        )
        return {"path": path, "mode": mode, "times": times}

    # -- the ASGI app ----------------------------------------------------------------------------------------

    async def _answer(self, path: str, action: Any) -> Response[bytes]:
        self.state.calls[path] += 1
        fault = self.faults.take(path)
        if fault is not None:
            await fault.hold()
            if fault.mode == "error":
                return Response(b"<html>502 Bad Gateway</html>", status_code=502, media_type="text/html")
            if fault.mode == "busy":
                return reply({"errcode": -1, "errmsg": "system error"})
            if fault.mode == "rate_limit":
                code = 45011 if path == "/sns/jscode2session" else 45009
                return reply(
                    {"errcode": code, "errmsg": "api minute-quota reach limit  mustslower  retry next minute"}
                )
            if fault.mode == "refuse":
                return reply({"errcode": int(fault.code or 40001), "errmsg": fault.message or "refused"})
        try:
            return reply(action())
        except _Refusal as refusal:
            return reply({"errcode": refusal.errcode, "errmsg": refusal.errmsg})

    def _build_app(self) -> Litestar:
        sandbox = self

        def query(request: Request[Any, Any, Any]) -> dict[str, str]:
            return {k: v for k, v in request.query_params.items()}

        async def body_of(request: Request[Any, Any, Any]) -> dict[str, Any]:
            try:
                data = json.loads(await request.body() or b"{}")
            except ValueError:
                raise _Refusal(47001, "data format error") from None
            if not isinstance(data, dict):
                raise _Refusal(47001, "data format error")
            return data

        @get("/sns/jscode2session")
        async def jscode2session(request: Request[Any, Any, Any]) -> Response[bytes]:
            params = query(request)
            return await sandbox._answer("/sns/jscode2session", lambda: sandbox.code2session(params))

        @get("/cgi-bin/token")
        async def token(request: Request[Any, Any, Any]) -> Response[bytes]:
            params = query(request)
            return await sandbox._answer("/cgi-bin/token", lambda: sandbox.token(params))

        @post("/cgi-bin/stable_token", status_code=200)
        async def stable_token(request: Request[Any, Any, Any]) -> Response[bytes]:
            try:
                body = await body_of(request)
            except _Refusal as refusal:
                return reply({"errcode": refusal.errcode, "errmsg": refusal.errmsg})
            return await sandbox._answer("/cgi-bin/stable_token", lambda: sandbox.stable_token(body))

        @post("/wxa/business/getuserphonenumber", status_code=200)
        async def phone(request: Request[Any, Any, Any]) -> Response[bytes]:
            try:
                body = await body_of(request)
            except _Refusal as refusal:
                return reply({"errcode": refusal.errcode, "errmsg": refusal.errmsg})
            token = request.query_params.get("access_token", "")
            return await sandbox._answer(
                "/wxa/business/getuserphonenumber", lambda: sandbox.phone_number(token, body)
            )

        @post("/cgi-bin/message/subscribe/send", status_code=200)
        async def subscribe_send(request: Request[Any, Any, Any]) -> Response[bytes]:
            try:
                body = await body_of(request)
            except _Refusal as refusal:
                return reply({"errcode": refusal.errcode, "errmsg": refusal.errmsg})
            token = request.query_params.get("access_token", "")
            return await sandbox._answer(
                "/cgi-bin/message/subscribe/send", lambda: sandbox.subscribe_send(token, body)
            )

        @post("/_sandbox/codes", status_code=200)
        async def codes(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_code(await json_body(request))

            return await run_control(action)

        @post("/_sandbox/phone-codes", status_code=200)
        async def phone_codes(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_phone_code(await json_body(request))

            return await run_control(action)

        @post("/_sandbox/grants", status_code=200)
        async def grants(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_grant(await json_body(request), revoke=False)

            return await run_control(action)

        @post("/_sandbox/grants/revoke", status_code=200)
        async def revoke_grant(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                return sandbox.control_grant(await json_body(request), revoke=True)

            return await run_control(action)

        @get("/_sandbox/messages")
        async def messages(request: Request[Any, Any, Any]) -> Response[bytes]:
            appid, openid = request.query_params.get("appid"), request.query_params.get("openid")
            sent = [
                m
                for m in sandbox.state.messages
                if (appid is None or m["appid"] == appid) and (openid is None or m["openid"] == openid)
            ]
            return reply({"messages": sent})

        @post("/_sandbox/access-tokens/expire", status_code=200)
        async def expire_tokens(request: Request[Any, Any, Any]) -> Response[bytes]:
            async def action() -> Any:
                appid = sandbox._known_app(await json_body(request))
                expired = 0
                for token, (owner, _) in list(sandbox.state.tokens.items()):
                    if owner == appid:
                        sandbox.state.tokens[token] = (owner, time.time() - 1)
                        expired += 1
                return {"expired": expired}

            return await run_control(action)

        @get("/_sandbox/calls")
        async def calls() -> Response[bytes]:
            return reply(dict(sandbox.state.calls))

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
            return reply({"ok": True, "channel": "wechat-mini", "apps": sorted(sandbox.apps)})

        return Litestar(
            route_handlers=[
                jscode2session,
                token,
                stable_token,
                phone,
                subscribe_send,
                codes,
                phone_codes,
                grants,
                revoke_grant,
                messages,
                expire_tokens,
                calls,
                add_fault,
                clear_faults,
                reset,
                health,
            ],
            openapi_config=None,
            logging_config=LoggingConfig(log_exceptions="always"),
            debug=False,
        )


STATE_FILE = "wechat-mini.json"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app-id",
        action="append",
        default=[],
        help="a mini-program app id the sandbox plays besides the demo ones (repeatable)",
    )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def build_app(args: argparse.Namespace) -> Litestar:
    """The sandbox for `python -m mini_programs.sandbox wechat`: its apps and secrets are kept in the state
    directory (secrets generated once), with the base URL the backend points wechatpy at."""
    state_dir = Path(args.state_dir)
    path = state_dir / STATE_FILE
    known: dict[str, str] = {}
    if path.exists():
        known = {a["appid"]: a["secret"] for a in json.loads(path.read_text())["apps"]}
    for appid in (*DEMO_APP_IDS, *args.app_id):
        known.setdefault(appid, secrets.token_hex(16))
    base_url = f"http://{args.host}:{args.port}/"
    apps = []
    for appid, secret in known.items():
        secret_file = state_dir / f"secret_{appid}.txt"
        _write_private(secret_file, secret)
        apps.append({"appid": appid, "secret": secret, "secret_file": str(secret_file)})
    _write_private(path, json.dumps({"base_url": base_url, "apps": apps}))
    sandbox = WechatMiniSandbox(known, base_url)
    sandbox.app.state.sandbox = sandbox
    return sandbox.app
