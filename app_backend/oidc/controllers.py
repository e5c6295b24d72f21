"""HTTP for one login: the OpenID Connect endpoints departments' apps call (discovery, JWKS, authorize, token,
userinfo, revocation, end-session), the resident's log-in and consent pages, operations' client registration,
and the resident's consents and data-access history.

The protocol endpoints speak OAuth's own formats (`{"error": …}` bodies, redirects with `error=`), not
problem+json, and are left out of the OpenAPI document: the discovery document describes them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import OAuth2Error
from litestar import Controller, Request, Response, delete, get, post, route
from litestar.datastructures import Cookie
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.identity.auth import OPS_ADMIN, RESIDENT_ACTOR, STAFF, Staff, audited, staff_only
from app_backend.identity.schemas import ResidentPrincipal
from app_backend.identity.service import phone_field
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection, pooled_connection, transaction_connection
from app_backend.kernel.errors import DomainError
from app_backend.kernel.http import client_ip, problems, request_id
from app_backend.oidc import pages
from app_backend.oidc.adapter import LitestarOAuth2Request, form_pairs, oauth2_request, protocol_response
from app_backend.oidc.provider import Exchange, Resident, run_protocol
from app_backend.oidc.schemas import (
    SENSITIVE,
    ClientRegistered,
    ClientRegistration,
    Clients,
    Consents,
    DataAccessHistory,
)
from app_backend.oidc.service import REAUTH_PARAM, AuthorizeOutcome

if TYPE_CHECKING:
    from app_backend.oidc.service import OidcService

AnyRequest = Request[Any, Any, Any]
COOKIE = "tzt_oidc"
_HTML = "text/html; charset=utf-8"
_PUBLIC_CACHE = {"Cache-Control": "public, max-age=300"}


def _actor(request: AnyRequest, kind: str = "anonymous", who: str = "") -> Actor:
    return Actor(kind, who, request_id(request), client_ip(request))


def _exchange(oidc: OidcService, db: Connection, actor: Actor) -> Exchange:
    return Exchange(
        store=oidc.store(db, actor),
        issuer=oidc.issuer,
        token_endpoint=f"{oidc.issuer}/oidc/token",
    )


def _html(body: str, status: int = 200, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(body, status_code=status, media_type=_HTML, cookies=cookies or [])


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response("", status_code=302, headers={"Location": location}, cookies=cookies or [])


def _session_cookie(oidc: OidcService, value: str, max_age: int | None = None) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        path="/oidc",
        httponly=True,
        secure=oidc.issuer.startswith("https://"),
        samesite="lax",
        max_age=oidc.settings.oidc_session_max_age if max_age is None else max_age,
    )


def _protocol_error(error: OAuth2Error, state: str | None) -> Response[Any]:
    """An error Authlib raised: back to the client when the redirect URI was validated, else a page that says
    what is wrong (never a redirect to an address the client did not register)."""
    if error.redirect_uri:
        error.state = state
        return protocol_response(*error())
    detail = f"{error.error}: {error.get_error_description() or ''}".strip()
    return _html(pages.error_page("无法登录", detail), 400)


async def _session_resident(
    request: AnyRequest, oidc: OidcService, db: Connection
) -> tuple[Resident | None, Cookie | None]:
    """The resident of this browser: the app's web-view sends its bearer token (a provider session is opened
    for it and set as a cookie), a browser its session cookie."""
    cookie: Cookie | None = None
    authorization = request.headers.get("authorization")
    session = await oidc.session(db, request.cookies.get(COOKIE))
    if authorization:
        principal: ResidentPrincipal = await oidc.identity.auth.authenticate(authorization)
        # The browser's session goes on when it is this resident's (one logout ends every department's login).
        if session is None or session.resident_id != principal.resident_id:
            # Authenticated when the app's session was opened (its login), not now: max_age and prompt=login
            # are judged by that.
            started = await oidc.identity.auth.session_started(db, principal.session_id)
            token, _ = await oidc.open_session(db, principal.resident_id, principal.session_id, started)
            cookie = _session_cookie(oidc, token)
            session = await oidc.session(db, token)
    if session is None:
        return None, cookie
    return await oidc.resident(db, session), cookie


def _fields_of(oauth: LitestarOAuth2Request) -> list[tuple[str, str]]:
    skip = {"decision", "sensitive", "csrf"}
    return [(k, v) for k, values in oauth.payload.datalist.items() if k not in skip for v in values]


def _error_uri(redirect_uri: str, error: str, description: str | None, state: str | None) -> str:
    """The client's (validated) redirect URI with an OAuth error."""
    params = [("error", error)]
    if description:
        params.append(("error_description", description))
    if state:
        params.append(("state", state))
    return str(add_params_to_uri(redirect_uri, params))


def _reauthentication(oidc: OidcService, oauth: LitestarOAuth2Request) -> str:
    """The log-in page, coming back to this authorization request with a ticket saying when it asked: once the
    resident has logged in since, the request is answered (not sent to log in again, and again)."""
    fields = [(k, v) for k, v in _fields_of(oauth) if k != REAUTH_PARAM]
    again = [*fields, (REAUTH_PARAM, oidc.reauthentication_ticket(fields))]
    return "/oidc/login?" + urlencode({"next": "/oidc/authorize?" + urlencode(again)})


async def _authorize(request: AnyRequest, oidc: OidcService, db: Connection) -> Response[Any]:
    oauth = await oauth2_request(request, oidc.issuer)
    state = oauth.payload.state
    resident, cookie = await _session_resident(request, oidc, db)
    actor = _actor(request, "resident", str(resident.resident_id)) if resident else _actor(request)
    ex = _exchange(oidc, db, actor)
    try:
        grant = await run_protocol(ex, lambda p: p.get_consent_grant(oauth, end_user=resident))
    except OAuth2Error as error:
        return _protocol_error(error, state)
    cookies = [cookie] if cookie else []
    data = oauth.payload.data
    prompt = (data.get("prompt") or "").split()
    if resident is None:
        if request.method == "POST":
            return _html(pages.error_page("登录已过期", "请回到部门应用重新登录。"), 400)
        if "login" in prompt or "max_age" in data:  # this log-in is the one it asks for: not a second one
            return _redirect(_reauthentication(oidc, oauth))
        query = request.scope.get("query_string", b"").decode("latin-1")
        return _redirect("/oidc/login?" + urlencode({"next": f"/oidc/authorize?{query}"}))
    try:
        again = oidc.authentication_required(_fields_of(oauth), resident.auth_time)
    except ValueError as bad:
        return _redirect(_error_uri(grant.redirect_uri, "invalid_request", str(bad), state), cookies)
    if again:
        if "none" in prompt:  # OIDC Core 3.1.2.6: the client asked that nothing be shown
            return _redirect(_error_uri(grant.redirect_uri, "login_required", None, state), cookies)
        return _redirect(_reauthentication(oidc, oauth), cookies)
    outcome = await oidc.assess(
        db, grant.client.client_id, oauth.scope or "", data.get("acr_values"), resident
    )
    if outcome.level_needed is not None:
        # Documented in docs/api.md: the department sends the resident to real-name (L2) or face (L3) in the app.
        step = "实名认证" if outcome.level_needed == 2 else "人脸认证"
        return _redirect(
            add_params_to_uri(
                grant.redirect_uri,
                [
                    ("error", "unmet_authentication_requirements"),
                    (
                        "error_description",
                        f"L{outcome.level_needed} required: complete {step} in Taizhou Tong",
                    ),
                    *([("state", state)] if state else []),
                ],
            ),
            cookies,
        )
    if request.method == "POST":
        return await _decide(request, oidc, db, ex, oauth, grant, resident, outcome, cookies)
    if not outcome.missing and "consent" not in prompt:
        return await _issue(ex, oauth, grant, resident, frozenset(outcome.requested), cookies)
    if "none" in prompt:
        return _redirect(_error_uri(grant.redirect_uri, "consent_required", None, state), cookies)
    already = await oidc.consented(db, resident.resident_id, outcome.client.client_id)
    page = pages.consent_page(
        outcome.client.organisation_name,
        outcome.client.name,
        outcome.client.purpose,
        outcome.requested,
        already,
        f"（当前 L{resident.level}）",
        [*_fields_of(oauth), ("csrf", oidc.csrf_token(resident.browser_session_id))],
    )
    return _html(page, cookies=cookies)


async def _decide(
    request: AnyRequest,
    oidc: OidcService,
    db: Connection,
    ex: Exchange,
    oauth: LitestarOAuth2Request,
    grant: Any,
    resident: Resident,
    outcome: AuthorizeOutcome,
    cookies: list[Cookie],
) -> Response[Any]:
    form = oauth.payload.datalist
    if form.get("csrf", [""])[0] != oidc.csrf_token(resident.browser_session_id):
        return _html(pages.error_page("请求无效", "csrf: 授权页面已失效，请重新发起登录。"), 400)
    if form.get("decision", [""])[0] != "allow":
        return await _issue(ex, oauth, grant, None, frozenset(), cookies)
    ticked = set(form.get("sensitive", []))
    newly = [c for c in outcome.missing if c not in SENSITIVE or c in ticked]
    await oidc.consent(
        db, resident, outcome.client, newly, _actor(request, "resident", str(resident.resident_id))
    )
    consented = await oidc.consented(db, resident.resident_id, outcome.client.client_id)
    return await _issue(ex, oauth, grant, resident, consented & set(outcome.requested), cookies)


async def _issue(
    ex: Exchange,
    oauth: LitestarOAuth2Request,
    grant: Any,
    resident: Resident | None,
    consented: frozenset[str],
    cookies: list[Cookie],
) -> Response[Any]:
    user = None
    if resident is not None:
        user = Resident(
            resident_id=resident.resident_id,
            level=resident.level,
            browser_session_id=resident.browser_session_id,
            auth_time=resident.auth_time,
            consented=consented,
        )
    status, body, headers = await run_protocol(
        ex, lambda p: p.create_authorization_response(oauth, grant_user=user, grant=grant)
    )
    response = protocol_response(status, body, headers)
    for cookie in cookies:
        response.set_cookie(cookie)
    return response


def _next_path(raw: str | None) -> str:
    """Where the log-in page returns to: only the authorization endpoint (no open redirect)."""
    return raw if raw and raw.startswith("/oidc/authorize?") and len(raw) <= 4096 else "/oidc/authorize"


class DiscoveryController(Controller):
    path = "/"
    include_in_schema = False

    @get("/.well-known/openid-configuration", summary="OpenID Provider metadata")
    async def configuration(self, oidc: OidcService) -> Response[dict[str, Any]]:
        return Response(oidc.discovery(), headers=_PUBLIC_CACHE)

    @get("/oidc/jwks", summary="The ID-token keys (published before they sign)")
    async def jwks(self, oidc: OidcService) -> Response[dict[str, Any]]:
        return Response(await oidc.keys.jwks(), headers=_PUBLIC_CACHE)


class OidcController(Controller):
    path = "/oidc"
    include_in_schema = False

    @route(
        "/authorize",
        http_method=["GET", "POST"],
        status_code=200,
        summary="Authorization endpoint (and the consent form)",
    )
    async def authorize(self, request: AnyRequest, oidc: OidcService, db: Connection) -> Response[Any]:
        return await _authorize(request, oidc, db)

    @get("/login", summary="Log in by SMS code (H5)")
    async def login_page(
        self, next_path: str | None = Parameter(query="next", default=None)
    ) -> Response[str]:
        return _html(pages.login_page(_next_path(next_path)))

    @post("/login/otp", summary="Send the log-in code")
    async def send_code(self, request: AnyRequest, oidc: OidcService) -> Response[str]:
        form = dict(await form_pairs(request))
        next_path, raw_phone = _next_path(form.get("next")), form.get("phone", "")
        try:
            phone = phone_field(raw_phone)
            await oidc.identity.otp.send(phone, client_ip(request))
        except DomainError as refused:
            return _html(pages.login_page(next_path, raw_phone[:20], error=refused.detail), refused.status)
        return _html(pages.login_page(next_path, phone, sent=True))

    @post("/login", summary="Log in with the code; back to the authorization request")
    async def login(self, request: AnyRequest, oidc: OidcService, db: Connection) -> Response[str]:
        form = dict(await form_pairs(request))
        next_path, raw_phone, otp = _next_path(form.get("next")), form.get("phone", ""), form.get("otp", "")
        try:
            phone = phone_field(raw_phone)
            if not (len(otp) == 6 and otp.isascii() and otp.isdigit()):
                raise DomainError(400, "validation", "otp: must be 6 digits")
            pair = await oidc.identity.auth.login(db, phone, otp, _actor(request))
        except DomainError as refused:
            return _html(pages.login_page(next_path, raw_phone[:20], True, refused.detail), refused.status)
        principal, _ = oidc.identity.auth.check_token(f"Bearer {pair.access_token}")
        token, _ = await oidc.open_session(db, principal.resident_id, principal.session_id)
        return Response(
            "", status_code=303, headers={"Location": next_path}, cookies=[_session_cookie(oidc, token)]
        )

    @post("/token", summary="Token endpoint")
    async def token(self, request: AnyRequest, oidc: OidcService) -> Response[Any]:
        # The connection is taken here, not as the `db` dependency: with two dependencies Litestar resolves them
        # in an anyio task group, a tenth of an exchange's event-loop time. Whatever it writes is committed before
        # the answer is sent, error answers included (a reused code's revocation must stand).
        oauth = await oauth2_request(request, oidc.issuer)
        actor = _actor(request, "oidc_client", oauth.payload.client_id or "")
        wait = oidc.settings.db_acquire_timeout
        if oauth.payload.grant_type == "authorization_code":
            # No transaction: the code is spent by one statement and the grant with its tokens made by another,
            # each atomic; a failure between them leaves a spent code that bought nothing, which is what a
            # retry with that code would get anyway. BEGIN and COMMIT were two of an exchange's five round trips.
            async with pooled_connection(oidc.pool, wait) as db:
                answer = await run_protocol(
                    _exchange(oidc, db, actor), lambda p: p.create_token_response(oauth)
                )
        else:
            # A refresh spends a token whose loss would end the grant on the client's retry (a reused refresh
            # token revokes its family): the spend and the new tokens commit together or not at all.
            async with transaction_connection(oidc.pool, wait) as db:
                answer = await run_protocol(
                    _exchange(oidc, db, actor), lambda p: p.create_token_response(oauth)
                )
        return protocol_response(*answer)

    @route("/userinfo", http_method=["GET", "POST"], status_code=200, summary="UserInfo endpoint")
    async def userinfo(self, request: AnyRequest, oidc: OidcService, db: Connection) -> dict[str, Any]:
        authorization = request.headers.get("authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        return await oidc.userinfo(db, token)

    @post("/revoke", summary="Token revocation (RFC 7009)")
    async def revoke(self, request: AnyRequest, oidc: OidcService, db: Connection) -> Response[Any]:
        oauth = await oauth2_request(request, oidc.issuer)
        ex = _exchange(oidc, db, _actor(request, "oidc_client", oauth.payload.client_id or ""))
        answer = await run_protocol(ex, lambda p: p.create_endpoint_response("revocation", oauth))
        return protocol_response(*answer)

    @route(
        "/logout",
        http_method=["GET", "POST"],
        status_code=200,
        summary="RP-initiated logout (end-session endpoint)",
    )
    async def logout(self, request: AnyRequest, oidc: OidcService, db: Connection) -> Response[Any]:
        oauth = await oauth2_request(request, oidc.issuer)
        ex = _exchange(oidc, db, _actor(request))
        try:
            ending = await run_protocol(ex, lambda p: p.validate_endpoint_request("end_session", oauth))
        except OAuth2Error as error:
            return _html(pages.error_page("无法退出", f"{error.error}: {error.get_error_description()}"), 400)
        sessions: set[uuid.UUID] = set()
        browser = await oidc.session(db, request.cookies.get(COOKIE))
        if browser is not None:
            sessions.add(browser.id)
        sid = (ending.id_token_claims or {}).get("sid")
        if isinstance(sid, str):
            try:
                sessions.add(uuid.UUID(sid))
            except ValueError:
                pass
        for session_id in sessions:
            await oidc.end_session(db, session_id, _actor(request))
        gone = [_session_cookie(oidc, "", max_age=0)]
        if ending.redirect_uri:
            return _redirect(ending.redirect_uri, gone)
        return _html(pages.logged_out_page(), cookies=gone)


class OidcClientAdminController(Controller):
    """Operations register departments' apps as clients (every change audited)."""

    path = "/api/v1/admin/oidc/clients"
    tags = ["admin"]
    guards = [staff_only(OPS_ADMIN)]
    dependencies = STAFF

    @post(
        "",
        status_code=HTTP_201_CREATED,
        summary="Register a department's app for one login (a client secret is shown once)",
        opt=problems(404, 409),
    )
    async def register(
        self, data: ClientRegistration, oidc: OidcService, db: Connection, staff: Staff
    ) -> ClientRegistered:
        return await oidc.register_client(db, data, staff.actor)

    @get("", summary="Registered one-login clients", opt=audited("admin.oidc_client_list"))
    async def list_clients(
        self,
        oidc: OidcService,
        db: Connection,
        staff: Staff,
        organisation_id: uuid.UUID | None = Parameter(query="organisation_id", default=None),
    ) -> Clients:
        return Clients(clients=await oidc.clients(db, organisation_id))

    @delete(
        "/{client_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Revoke a client: its tokens stop working at once",
        opt=problems(404),
    )
    async def revoke(
        self,
        oidc: OidcService,
        db: Connection,
        staff: Staff,
        client_id: str = Parameter(max_length=64),
    ) -> None:
        await oidc.revoke_client(db, client_id, staff.actor)


class ConsentController(Controller):
    path = "/api/v1/me/consents"
    tags = ["residents"]
    dependencies = RESIDENT_ACTOR

    @get("", summary="The departments I let log me in, and what I consented to release to each")
    async def consents(self, oidc: OidcService, db: Connection, resident: ResidentPrincipal) -> Consents:
        return Consents(consents=await oidc.consents_of(db, resident.resident_id))

    @delete(
        "/{client_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Withdraw my consent to a department's app (its tokens stop working)",
        opt=problems(404),
    )
    async def withdraw(
        self,
        oidc: OidcService,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
        client_id: str = Parameter(max_length=64),
    ) -> None:
        await oidc.revoke_consent(db, resident.resident_id, client_id, actor)


class DataAccessController(Controller):
    path = "/api/v1/me/data-access"
    tags = ["residents"]

    @get("", summary="Which department received which of my data, when and why (beside /api/v1/me/scans)")
    async def history(
        self,
        oidc: OidcService,
        db: Connection,
        resident: ResidentPrincipal,
        limit: int = Parameter(query="limit", default=100, ge=1, le=500),
    ) -> DataAccessHistory:
        return DataAccessHistory(releases=await oidc.data_access(db, resident.resident_id, limit))
