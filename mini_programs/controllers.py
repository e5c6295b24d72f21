"""HTTP for mini-programs: logging in with a WeChat or Alipay code, and a resident's linked channel identities.

A login handler is its own transaction boundary: the channel is asked (the code exchanged, the phone read) before
any connection is taken, and the account work runs in one short transaction afterwards."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app_backend.identity.auth import ANONYMOUS_ACTOR, RESIDENT_ACTOR, provide_anonymous_actor
from app_backend.identity.schemas import ResidentPrincipal, TokenPair
from app_backend.kernel.actors import Actor
from app_backend.kernel.db import Connection
from app_backend.kernel.http import problems
from mini_programs.schemas import (
    AlipayLink,
    AlipayLogin,
    LinkedIdentities,
    LinkedIdentity,
    WechatLink,
    WechatLogin,
)

if TYPE_CHECKING:
    from mini_programs.service import MiniProgramService


class MiniProgramLoginController(Controller):
    path = "/api/v1/mini-programs"
    tags = ["mini-programs"]
    dependencies = ANONYMOUS_ACTOR

    @post(
        "/wechat/login",
        status_code=HTTP_200_OK,
        summary="Log in from a WeChat mini-program (wx.login code; the phone button's code the first time)",
        description=(
            "Answers the app's tokens. A WeChat user not linked yet needs `phone_code` (problem "
            "`phone-required`, 422): the account of that phone is found or created and the user linked to it. "
            "409 when the phone holds another account than the one the user is linked to (`phone-conflict`) or "
            "the account has another user of this mini-program (`app-already-linked`); nothing is merged."
        ),
        opt=problems(401, 403, 409, 422),
    )
    async def wechat_login(
        self, data: WechatLogin, mini: MiniProgramService, request: Request[Any, Any, Any]
    ) -> TokenPair:
        # The actor made here, not as a second dependency: with two, Litestar resolves them in an anyio task
        # group, about a quarter of a login's event-loop time under load.
        actor = provide_anonymous_actor(request)
        who = await mini.wechat_user(data.app_id, data.code)
        phone = await mini.wechat_phone(data.app_id, data.phone_code) if data.phone_code else None
        async with mini.pool.acquire() as conn, conn.transaction():
            return await mini.login(conn, who, phone, actor, "phone_code")

    @post(
        "/alipay/login",
        status_code=HTTP_200_OK,
        summary="Log in from an Alipay mini-program (my.getAuthCode code; my.getPhoneNumber's answer the first time)",
        description="As the WeChat login, with `phone_response` for the phone.",
        opt=problems(401, 403, 409, 422),
    )
    async def alipay_login(self, data: AlipayLogin, mini: MiniProgramService, actor: Actor) -> TokenPair:
        phone = mini.alipay_phone(data.app_id, data.phone_response) if data.phone_response else None
        who = await mini.alipay_user(data.app_id, data.code)
        async with mini.pool.acquire() as conn, conn.transaction():
            return await mini.login(conn, who, phone, actor, "phone_response")


class MiniProgramIdentityController(Controller):
    path = "/api/v1/me/mini-program-identities"
    tags = ["mini-programs"]
    dependencies = RESIDENT_ACTOR

    @get("", summary="The WeChat and Alipay mini-program identities linked to my account")
    async def linked(
        self, mini: MiniProgramService, db: Connection, resident: ResidentPrincipal
    ) -> LinkedIdentities:
        return LinkedIdentities(identities=await mini.linked(db, resident.resident_id))

    @post(
        "/wechat",
        summary="Link a WeChat mini-program user to my account (a fresh wx.login code); 200 when linked already",
        opt=problems(401, 403, 409),
    )
    async def link_wechat(
        self, data: WechatLink, mini: MiniProgramService, resident: ResidentPrincipal, actor: Actor
    ) -> Response[LinkedIdentity]:
        who = await mini.wechat_user(data.app_id, data.code)
        async with mini.pool.acquire() as conn, conn.transaction():
            view, new = await mini.link(conn, resident.resident_id, who, actor)
        return Response(view, status_code=HTTP_201_CREATED if new else HTTP_200_OK)

    @post(
        "/alipay",
        summary="Link an Alipay mini-program user to my account (a fresh my.getAuthCode code); 200 when linked already",
        opt=problems(401, 403, 409),
    )
    async def link_alipay(
        self, data: AlipayLink, mini: MiniProgramService, resident: ResidentPrincipal, actor: Actor
    ) -> Response[LinkedIdentity]:
        who = await mini.alipay_user(data.app_id, data.code)
        async with mini.pool.acquire() as conn, conn.transaction():
            view, new = await mini.link(conn, resident.resident_id, who, actor)
        return Response(view, status_code=HTTP_201_CREATED if new else HTTP_200_OK)

    @delete(
        "/{identity_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Unlink a mini-program identity from my account; the sessions opened through it end",
        description=(
            "Also logs that mini-program out: every session opened by a login through this identity ends, as a "
            "logout ends one (its refresh token is refused, its access tokens answer 401). That includes the "
            "session making this call when it was opened through this identity: after the 204 its tokens no "
            "longer work. Sessions opened otherwise (SMS log-in in the app, another identity) go on."
        ),
        opt=problems(404),
    )
    async def unlink(
        self,
        identity_id: uuid.UUID,
        mini: MiniProgramService,
        db: Connection,
        resident: ResidentPrincipal,
        actor: Actor,
    ) -> None:
        await mini.unlink(db, resident.resident_id, identity_id, actor)
