"""WeChat's mini-program APIs through wechatpy: `WeChatClient(appid, secret).wxa.code_to_session` for the
`wx.login` code, `POST wxa/business/getuserphonenumber` for the getPhoneNumber button's code, and
`wxa.send_subscribe_message`.

wechatpy is synchronous (requests). Each call runs in a greenlet on the event loop's thread
(app_backend/kernel/bridge.py) with a requests-compatible session (`LoopHttp`) that sends wechatpy's requests
through an aiohttp client session and hands wechatpy a `requests.Response`, so wechatpy builds the
requests, fetches and retries the token and parses the answers exactly as it does over requests, without a worker
thread or a blocking socket per login. Its API base is pointed at the app's `api_base_url` the way wechatpy
supports: `API_BASE_URL` on the client (cgi-bin) and on its `wxa` API object (sns, wxa). The access token comes
from `cgi-bin/stable_token` (one token for every process, where `cgi-bin/token` would void the others' tokens) and
is kept in Redis with its expiry through wechatpy's session storage, so the processes of every node share one;
wechatpy fetches it again when WeChat says it expired (40001, 42001).

What goes wrong at WeChat is a 503 for the resident (with Retry-After), never a 500; a code WeChat refuses is a
401 naming the field. Only the app id and WeChat's errcode are logged, never an openid or a phone."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import msgspec
import requests
import structlog
import yarl
from redis.asyncio import Redis
from redis.exceptions import RedisError
from requests.structures import CaseInsensitiveDict
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

from app_backend.kernel.bridge import run_synchronously, wait_for
from app_backend.kernel.errors import DomainError
from mini_programs.config import WechatApp
from mini_programs.refusals import code_refused, unavailable
from mini_programs.schemas import SendOutcome

_log = structlog.get_logger("mini_programs.wechat")
T = TypeVar("T")
# Kept for less than WeChat's 7200 s, so a token is never used in its last minutes.
_TOKEN_MARGIN_S = 300
_LOCAL_S = 60.0
_CODE_REFUSALS = {
    40029: ("mini-code-invalid", "invalid or expired; call wx.login again"),
    40163: ("mini-code-used", "already used; call wx.login again"),
}
_RATE_LIMITED = frozenset({45009, 45011})
# What subscribe/send refuses for good: 43101 the user holds no grant (never given, spent or turned off), 40003 not
# the app's user, 40037 no such template, 47003 the data does not fit the template, 41030 no such page. Anything
# else (busy, rate limits, tokens, an HTTP fault) may pass and is tried again.
_NO_GRANT = 43101
_SEND_REFUSALS = frozenset({_NO_GRANT, 40003, 40037, 47003, 41030})


class WechatSession(msgspec.Struct, frozen=True):
    openid: str
    session_key: str
    unionid: str | None = None


class LoopRedisStorage(SessionStorage):
    """wechatpy's session storage (where it keeps access tokens) on the platform's asyncio Redis: wechatpy runs
    under `run_synchronously` and each get and set is awaited by the request's task."""

    def __init__(self, redis: Redis, prefix: str, timeout_s: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout_s = timeout_s
        # wechatpy reads the token before every call: what Redis said is kept here for a minute, so a login
        # costs no Redis round trip (a token another process fetched since is as good: WeChat keeps the old
        # one working for minutes, and a refused one is fetched again).
        self._recent: dict[str, tuple[float, Any]] = {}

    def _run(self, coro: Any) -> Any:
        return wait_for(asyncio.wait_for(coro, self._timeout_s))

    def get(self, key: str, default: Any = None) -> Any:
        recent = self._recent.get(key)
        if recent is not None and recent[0] > time.monotonic():
            return recent[1]
        raw = self._run(self._redis.get(f"{self._prefix}:{key}"))
        if raw is None:
            return default
        value = json.loads(raw)
        self._recent[key] = (time.monotonic() + _LOCAL_S, value)
        return value

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        if value is not None:
            self._run(self._redis.set(f"{self._prefix}:{key}", json.dumps(value), ex=ttl))
            self._recent[key] = (time.monotonic() + min(_LOCAL_S, ttl or _LOCAL_S), value)

    def delete(self, key: str) -> None:
        self._recent.pop(key, None)
        self._run(self._redis.delete(f"{self._prefix}:{key}"))


class _Prepared(requests.PreparedRequest):
    """The request as sent, for wechatpy's errors (`response.request`); built directly, since requests'
    `prepare()` (URL parsing and re-quoting, cookie and hook machinery) was a tenth of a login's event-loop time."""

    method: str
    url: str
    body: bytes | None
    sent_headers: dict[str, str]


def _prepared(
    method: str, url: str, params: Mapping[str, Any] | None, data: bytes | str | None, payload: Any
) -> _Prepared:
    prepared = _Prepared()
    query = urlencode([(k, v) for k, v in params.items() if v is not None], doseq=True) if params else ""
    prepared.method = method
    prepared.url = f"{url}{'&' if '?' in url else '?'}{query}" if query else url
    headers: dict[str, str] = {}
    if payload is not None:
        prepared.body = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    else:
        prepared.body = data.encode() if isinstance(data, str) else data
    prepared.sent_headers = headers
    prepared.headers = CaseInsensitiveDict(headers)
    return prepared


class LoopHttp(requests.Session):
    """What wechatpy asks of its `requests.Session` (`request`, and `get`/`post` through it), sent through an
    aiohttp client session that the request's task awaits (`wait_for`). The answer is a `requests.Response` with
    the status, headers, body and request, so wechatpy's `raise_for_status`, JSON decoding, errcode handling and
    token retry run unchanged; a failure to reach WeChat is raised as requests raises it (ConnectionError,
    Timeout), which is what wechatpy and `WechatMiniProgram._call` expect.

    aiohttp, not the platform's httpx client: under the bench's 32 concurrent logins httpx's connection pool spent
    more than half of the event loop's time checking every pooled connection's socket on every request
    (httpcore's `has_expired`), and a login cost 25 pings; aiohttp's pool does not."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        super().__init__()
        self._async = http

    def request(  # type: ignore[override]  # the subset of requests' signature wechatpy uses
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: bytes | str | None = None,
        json: Any = None,
        timeout: float | None = None,
        **_: Any,
    ) -> requests.Response:
        prepared = _prepared(method.upper(), url, params, data, json)
        try:
            status, reason, answer_headers, answer = wait_for(
                self._send(prepared.method, prepared.url, prepared.body, prepared.sent_headers, timeout)
            )
        except TimeoutError as exc:
            raise requests.Timeout(str(exc), request=prepared) from exc
        except aiohttp.ClientError as exc:
            raise requests.ConnectionError(str(exc), request=prepared) from exc
        response = requests.Response()
        response.status_code = status
        response.reason = reason
        response.headers = CaseInsensitiveDict(answer_headers)
        response._content = answer
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.url = prepared.url
        response.request = prepared
        return response

    async def _send(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str], limit_s: float | None
    ) -> tuple[int, str, dict[str, str], bytes]:
        async with self._async.request(
            method,
            yarl.URL(url, encoded=True),  # requests encoded the query already
            data=content,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=limit_s),
        ) as answer:
            return answer.status, answer.reason or "", dict(answer.headers), await answer.read()


class _Client(WeChatClient):
    """wechatpy's client with every endpoint at the app's API base."""

    def __init__(self, app: WechatApp, session: SessionStorage, http: aiohttp.ClientSession) -> None:
        super().__init__(app.app_id, app.secret, session=session, timeout=app.timeout_s)
        self._http = LoopHttp(http)
        self._base = app.base_url
        self.API_BASE_URL = app.base_url + "cgi-bin/"
        self.wxa.API_BASE_URL = app.base_url

    def fetch_access_token(self) -> dict[str, Any]:
        """The stable access token (wechatpy's own fetch asks a fixed host, with no timeout)."""
        answer = self._http.post(
            self._base + "cgi-bin/stable_token",
            json={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
            timeout=self.timeout,
        )
        if answer.status_code != 200:
            raise WeChatClientException(None, None, client=self, request=answer.request, response=answer)
        result: dict[str, Any] = answer.json()
        if result.get("errcode", 0) != 0 or "access_token" not in result:
            raise WeChatClientException(
                result.get("errcode"),
                result.get("errmsg"),
                client=self,
                request=answer.request,
                response=answer,
            )
        expires_in = int(result.get("expires_in", 7200))
        self.session.set(self.access_token_key, result["access_token"], max(60, expires_in - _TOKEN_MARGIN_S))
        self.expires_at = int(time.time()) + expires_in - _TOKEN_MARGIN_S
        return result


class WechatMiniProgram:
    """One configured WeChat mini-program."""

    def __init__(self, app: WechatApp, redis: Redis, http: aiohttp.ClientSession) -> None:
        self.app = app
        storage = LoopRedisStorage(redis, "mini:wechat", app.timeout_s)
        self._client = _Client(app, storage, http)

    async def _call(
        self, what: str, call: Callable[[], T], on_refusal: Callable[[int], DomainError | None]
    ) -> T:
        # A call may fetch a token first and retry once after a refused token: three calls at most.
        try:
            async with asyncio.timeout(self.app.timeout_s * 3 + 1):
                return await run_synchronously(call)
        except WeChatClientException as exc:
            code = exc.errcode
            _log.warning("wechat refused", app_id=self.app.app_id, call=what, errcode=code)
            if code is not None:
                refusal = on_refusal(int(code))
                if refusal is not None:
                    raise refusal from None
            raise unavailable("WeChat", rate_limited=code in _RATE_LIMITED) from None
        except (requests.RequestException, RedisError, TimeoutError, ValueError) as exc:
            _log.warning("wechat unreachable", app_id=self.app.app_id, call=what, error=type(exc).__name__)
            raise unavailable("WeChat") from None

    async def code_to_session(self, code: str) -> WechatSession:
        """The user behind a `wx.login` code (code2session); the code is spent."""

        def refusal(errcode: int) -> DomainError | None:
            if errcode in _CODE_REFUSALS:
                kind, message = _CODE_REFUSALS[errcode]
                return code_refused(kind, "code", message)
            if errcode == 40226:
                return DomainError(
                    403, "mini-user-blocked", "WeChat has blocked this user (a high-risk account)"
                )
            return None

        result = await self._call("jscode2session", lambda: self._client.wxa.code_to_session(code), refusal)
        try:
            return msgspec.convert(result, WechatSession)
        except msgspec.ValidationError:
            _log.warning("wechat answer unknown", app_id=self.app.app_id, call="jscode2session")
            raise unavailable("WeChat") from None

    async def phone_number(self, phone_code: str) -> tuple[str, str]:
        """(country code, the number without it) behind a getPhoneNumber button's code; the code is spent."""

        def refusal(errcode: int) -> DomainError | None:
            if errcode == 40029:
                return code_refused("phone-code-invalid", "phone_code", "invalid, expired or already used")
            return None

        result = await self._call(
            "getuserphonenumber",
            lambda: self._client.post(
                "wxa/business/getuserphonenumber", data={"code": phone_code}, api_base_url=self.app.base_url
            ),
            refusal,
        )
        info = result.get("phone_info") if isinstance(result, dict) else None
        if not isinstance(info, dict) or not info.get("purePhoneNumber"):
            _log.warning("wechat answer unknown", app_id=self.app.app_id, call="getuserphonenumber")
            raise unavailable("WeChat")
        return str(info.get("countryCode", "86")), str(info["purePhoneNumber"])

    async def send_subscribe(
        self, openid: str, template_id: str, values: dict[str, str], page: str | None
    ) -> SendOutcome:
        """One subscribe message (`wxa.send_subscribe_message`); WeChat spends a one-time grant only when it
        sends. Never raises: what WeChat answered is the outcome."""
        data = {keyword: {"value": value} for keyword, value in values.items()}
        try:
            async with asyncio.timeout(self.app.timeout_s * 3 + 1):
                # On the loop like every call of this client: its session waits through the bridge.
                result = await run_synchronously(
                    lambda: self._client.wxa.send_subscribe_message(openid, template_id, data, page)
                )
        except WeChatClientException as exc:
            code = int(exc.errcode) if exc.errcode is not None else None
            _log.warning("wechat refused", app_id=self.app.app_id, call="subscribe/send", errcode=code)
            if code in _SEND_REFUSALS:
                return SendOutcome("refused", code=str(code), grant_gone=code == _NO_GRANT)
            return SendOutcome("fault", code=str(code) if code is not None else "http")
        except (requests.RequestException, RedisError, TimeoutError, ValueError) as exc:
            _log.warning(
                "wechat unreachable", app_id=self.app.app_id, call="subscribe/send", error=type(exc).__name__
            )
            return SendOutcome("fault", code=type(exc).__name__)
        msgid = result.get("msgid") if isinstance(result, dict) else None
        return SendOutcome("sent", message_id=None if msgid is None else str(msgid))
