"""Mini-program accounts: a WeChat or Alipay identity logs in to the one resident account it is linked to; the first
login proves a phone through the channel and finds or creates the resident by it; a resident sees, links and
unlinks identities; a mini-program payment is made by the identity linked for that app
(docs/decisions/0023-mini-program-accounts.md).

One channel identity belongs to at most one resident and a resident has at most one identity per mini-program;
whatever would join two accounts (an identity linked elsewhere, a phone that is another account's) is refused
with a 409 that says what to do, never merged. The channel's session key is kept encrypted and never answered.
Callers own the transaction; channel calls (`wechat_user`, `alipay_user`, the phones) happen before it."""

from __future__ import annotations

import uuid

import aiohttp
import httpx
import msgspec

from app_backend.audit.service import AuditTrail
from app_backend.identity.schemas import TokenPair
from app_backend.identity.service import IdentityServices, phone_field
from app_backend.kernel.actors import Actor
from app_backend.kernel.crypto import FieldCipher, mask
from app_backend.kernel.db import Connection, Pool
from app_backend.kernel.errors import DomainError, invalid_field, not_found
from mini_programs.alipay import AlipayMiniProgram
from mini_programs.config import MiniProgramApps, Template
from mini_programs.repository import IdentityRepository, IdentityRow
from mini_programs.schemas import LinkedIdentity, SendOutcome
from mini_programs.wechat import WechatMiniProgram

CHANNEL_NAMES = {"wechat": "WeChat", "alipay": "Alipay"}


class ChannelIdentity(msgspec.Struct, frozen=True):
    """Who a channel says is calling: `subject` is the WeChat openid or the Alipay open_id (user_id for older
    apps), `union` the same person across the channel's apps (WeChat unionid, Alipay user_id)."""

    channel: str
    app_id: str
    subject: str
    union: str | None = None
    session_key: str | None = None


class MessageTarget(msgspec.Struct, frozen=True):
    """A linked identity a subscribe message can be sent to: `subject` is the openid or the Alipay id (in clear:
    for the channel call only, never stored or logged by the caller)."""

    identity_id: uuid.UUID
    channel: str
    app_id: str
    subject: str


def session_origin(identity_id: uuid.UUID) -> str:
    """The tag identity keeps on the sessions a login through this identity opened: unlinking it ends them."""
    return f"mini_programs.identity:{identity_id}"


def _conflict(type: str, detail: str, field: str | None = None) -> DomainError:
    extra = {"errors": [{"field": field, "message": detail}]} if field else None
    return DomainError(409, type, f"{field}: {detail}" if field else detail, extra=extra)


class MiniProgramService:
    def __init__(
        self,
        pool: Pool,
        apps: MiniProgramApps,
        wechat: dict[str, WechatMiniProgram],
        alipay: dict[str, AlipayMiniProgram],
        identity: IdentityServices,
        audit: AuditTrail,
        cipher: FieldCipher,
        http: httpx.AsyncClient,
        wechat_http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.pool = pool
        self._http = http
        self._wechat_http = wechat_http
        self.apps = apps
        self._wechat = wechat
        self._alipay = alipay
        self._identity = identity
        self._audit = audit
        self._cipher = cipher
        self._names = apps.names()
        self._repo = IdentityRepository()

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._wechat_http is not None:
            await self._wechat_http.close()

    # -- the channels (no transaction open) ------------------------------------------------------------------

    def _wechat_app(self, app_id: str) -> WechatMiniProgram:
        found = self._wechat.get(app_id)
        if found is None:
            raise invalid_field("app_id", "not a WeChat mini-program of the platform")
        return found

    def _alipay_app(self, app_id: str) -> AlipayMiniProgram:
        found = self._alipay.get(app_id)
        if found is None:
            raise invalid_field("app_id", "not an Alipay mini-program of the platform")
        return found

    async def wechat_user(self, app_id: str, code: str) -> ChannelIdentity:
        session = await self._wechat_app(app_id).code_to_session(code)
        return ChannelIdentity("wechat", app_id, session.openid, session.unionid, session.session_key)

    async def wechat_phone(self, app_id: str, phone_code: str) -> str:
        country, number = await self._wechat_app(app_id).phone_number(phone_code)
        if country not in ("86", "+86"):
            raise DomainError(
                422,
                "phone-not-mainland",
                "phone_code: an account needs a mainland (+86) mobile number",
                extra={"errors": [{"field": "phone_code", "message": "not a +86 number"}]},
            )
        return phone_field(number, "phone_code")

    async def alipay_user(self, app_id: str, code: str) -> ChannelIdentity:
        grant = await self._alipay_app(app_id).oauth_token(code)
        subject = grant.open_id or grant.user_id
        assert subject is not None  # the connector refuses an answer with neither
        return ChannelIdentity("alipay", app_id, subject, grant.user_id, grant.access_token)

    def alipay_phone(self, app_id: str, phone_response: str) -> str:
        return phone_field(self._alipay_app(app_id).phone_number(phone_response), "phone_response")

    # -- accounts --------------------------------------------------------------------------------------------

    def _subject_hash(self, who: ChannelIdentity) -> bytes:
        return self._cipher.lookup_hash("mini.subject", f"{who.channel}\x00{who.app_id}\x00{who.subject}")

    def _union_hash(self, who: ChannelIdentity) -> bytes | None:
        if not who.union:
            return None
        return self._cipher.lookup_hash("mini.union", f"{who.channel}\x00{who.union}")

    def _session_key(self, who: ChannelIdentity) -> bytes | None:
        return self._cipher.encrypt("mini.session_key", who.session_key) if who.session_key else None

    @staticmethod
    def _same_account(
        phone_holder: uuid.UUID | None, resident_id: uuid.UUID, who: ChannelIdentity, phone_at: str
    ) -> None:
        if phone_holder is not None and phone_holder != resident_id:
            name = CHANNEL_NAMES[who.channel]
            raise _conflict(
                "phone-conflict",
                f"this phone number holds another account than the one this {name} user is linked to; nothing "
                f"was merged. Log in with this {name} user without the phone, or log in with the phone (SMS code) "
                "and unlink the identity from the other account first",
                phone_at,
            )

    async def login(
        self, conn: Connection, who: ChannelIdentity, phone: str | None, actor: Actor, phone_at: str
    ) -> TokenPair:
        """The app's tokens for the resident this identity is linked to; an identity seen for the first time is
        linked to the resident of the channel's same person (unionid, user_id) or else of the phone, created
        when no account has it. `phone_at` names the request field the phone came in."""
        holder = await self._identity.directory.resident_by_phone(conn, phone) if phone else None
        union = self._union_hash(who)
        # Found and marked logged in at once; a refusal below rolls the mark back with the caller's transaction.
        row = await self._repo.log_in(conn, self._subject_hash(who), self._session_key(who), union)
        if row is not None:
            self._same_account(holder, row.resident_id, who, phone_at)
            return await self._open_session(conn, row, actor, created=False)
        resident_id = await self._repo.resident_of_union(conn, who.channel, union) if union else None
        created = False
        if resident_id is not None:
            self._same_account(holder, resident_id, who, phone_at)
        elif phone is None:
            message = "this user is not linked to an account yet: send the phone number from the mini-program"
            raise DomainError(
                422,
                "phone-required",
                f"{phone_at}: {message} (and a fresh login code)",
                extra={"errors": [{"field": phone_at, "message": message}]},
            )
        else:
            resident_id, created = await self._identity.auth.resident_for_phone(conn, phone)
        row = await self._link(conn, resident_id, who, actor, logged_in=True)
        return await self._open_session(conn, row, actor, created=created)

    async def _open_session(
        self, conn: Connection, row: IdentityRow, actor: Actor, *, created: bool
    ) -> TokenPair:
        return await self._identity.auth.open_session(
            conn,
            row.resident_id,
            actor,
            method=f"{row.channel}-mini-program",
            created=created,
            detail={"app_id": row.app_id, "identity": str(row.id)},
            origin=session_origin(row.id),
        )

    async def _link(
        self, conn: Connection, resident_id: uuid.UUID, who: ChannelIdentity, actor: Actor, *, logged_in: bool
    ) -> IdentityRow:
        subject_hash = self._subject_hash(who)
        row = await self._repo.link(
            conn,
            resident_id=resident_id,
            channel=who.channel,
            app_id=who.app_id,
            subject_hash=subject_hash,
            subject_enc=self._cipher.encrypt("mini.subject", who.subject),
            union_hash=self._union_hash(who),
            session_key_enc=self._session_key(who),
            logged_in=logged_in,
        )
        name = CHANNEL_NAMES[who.channel]
        if row is None:
            existing = await self._repo.by_subject(conn, subject_hash)
            if existing is not None and existing.resident_id == resident_id:
                return existing  # the same link, made by a concurrent request of the same user
            if existing is not None:
                raise _conflict(
                    "identity-linked-elsewhere",
                    f"this {name} user is linked to another account; log in with it there and unlink it first",
                )
            raise _conflict(
                "app-already-linked",
                f"this account already has another {name} user in this mini-program; unlink that one first",
            )
        await self._audit.record(
            conn,
            Actor("resident", str(resident_id), actor.request_id, actor.ip),
            "mini_programs.link",
            target_type="mini_program_identity",
            target_id=str(row.id),
            detail={"channel": who.channel, "app_id": who.app_id},
        )
        return row

    async def link(
        self, conn: Connection, resident_id: uuid.UUID, who: ChannelIdentity, actor: Actor
    ) -> tuple[LinkedIdentity, bool]:
        """(the identity, whether it was linked now) for a resident adding a channel identity from any client."""
        row = await self._repo.by_subject(conn, self._subject_hash(who))
        if row is not None and row.resident_id == resident_id:
            await self._repo.logged_in(conn, row.id, self._session_key(who), self._union_hash(who))
            return self._view(row, who.subject), False
        union = self._union_hash(who)
        other = await self._repo.resident_of_union(conn, who.channel, union) if union else None
        if row is not None or other not in (None, resident_id):
            name = CHANNEL_NAMES[who.channel]
            raise _conflict(
                "identity-linked-elsewhere",
                f"this {name} user is linked to another account; log in with it there and unlink it first",
            )
        row = await self._link(conn, resident_id, who, actor, logged_in=False)
        return self._view(row, who.subject), True

    def _view(self, row: IdentityRow, subject: str | None = None) -> LinkedIdentity:
        subject = subject or self._cipher.decrypt("mini.subject", row.subject_enc)
        return LinkedIdentity(
            id=row.id,
            channel="wechat" if row.channel == "wechat" else "alipay",
            app_id=row.app_id,
            app_name=self._names.get((row.channel, row.app_id), row.app_id),
            subject=mask(subject, 4, 4),
            linked_at=row.linked_at,
            last_login_at=row.last_login_at,
        )

    async def linked(self, conn: Connection, resident_id: uuid.UUID) -> list[LinkedIdentity]:
        return [self._view(row) for row in await self._repo.of_resident(conn, resident_id)]

    async def unlink(
        self, conn: Connection, resident_id: uuid.UUID, identity_id: uuid.UUID, actor: Actor
    ) -> int:
        """Unlinks the identity and logs out what logged in through it: the sessions its logins opened end (the
        caller's own too, when it is one of them). How many ended."""
        row = await self._repo.unlink(conn, identity_id, resident_id)
        if row is None:
            raise not_found("identity_id: no such identity linked to this account")
        ended = await self._identity.auth.end_sessions_of(
            conn, resident_id, session_origin(row.id), "mini-program identity unlinked"
        )
        await self._audit.record(
            conn,
            actor,
            "mini_programs.unlink",
            target_type="mini_program_identity",
            target_id=str(row.id),
            detail={"channel": row.channel, "app_id": row.app_id, "sessions_ended": ended},
        )
        return ended

    async def payer_id(
        self, conn: Connection, resident_id: uuid.UUID, channel: str, app_id: str
    ) -> str | None:
        """The resident's id at the channel in this app (the openid, the Alipay open_id or user_id) for a
        mini-program payment; None when no identity of that app is linked."""
        row = await self._repo.in_app(conn, resident_id, channel, app_id)
        return None if row is None else self._cipher.decrypt("mini.subject", row.subject_enc)

    # -- subscribe messages (for notifications) --------------------------------------------------------------

    def template(self, channel: str, app_id: str, kind: str) -> Template | None:
        """The app's subscribe-message template for a kind of message (mini_programs/config.py)."""
        apps = self.apps.wechat if channel == "wechat" else self.apps.alipay
        app = apps.get(app_id)
        return None if app is None else app.templates.get(kind)

    def templates(self, channel: str, app_id: str) -> dict[str, Template]:
        """kind -> template of an app (empty for an app that is not configured)."""
        apps = self.apps.wechat if channel == "wechat" else self.apps.alipay
        app = apps.get(app_id)
        return {} if app is None else dict(app.templates)

    def app_name(self, channel: str, app_id: str) -> str:
        return self._names.get((channel, app_id), app_id)

    async def identity_in_app(
        self, conn: Connection, resident_id: uuid.UUID, channel: str, app_id: str
    ) -> uuid.UUID | None:
        """The id of the resident's identity linked in this app (None when none is)."""
        row = await self._repo.in_app(conn, resident_id, channel, app_id)
        return None if row is None else row.id

    async def message_targets(self, conn: Connection, resident_id: uuid.UUID) -> list[MessageTarget]:
        """The resident's linked identities in configured apps: WeChat first, then Alipay, each channel's apps
        in the configuration's order (the order a message tries them)."""
        order = {key: n for n, key in enumerate(self._names)}
        rows = [r for r in await self._repo.of_resident(conn, resident_id) if (r.channel, r.app_id) in order]
        rows.sort(key=lambda r: order[(r.channel, r.app_id)])
        return [
            MessageTarget(r.id, r.channel, r.app_id, self._cipher.decrypt("mini.subject", r.subject_enc))
            for r in rows
        ]

    async def message_target(self, conn: Connection, identity_id: uuid.UUID) -> MessageTarget | None:
        """The identity a message was meant for, unless it has been unlinked since."""
        row = await self._repo.by_id(conn, identity_id)
        if row is None:
            return None
        return MessageTarget(
            row.id, row.channel, row.app_id, self._cipher.decrypt("mini.subject", row.subject_enc)
        )

    async def send_subscribe(
        self, target: MessageTarget, template: Template, values: dict[str, str]
    ) -> SendOutcome:
        """One subscribe message through the channel's API (no transaction may be open): the outcome, never a
        raise; an app no longer configured is refused."""
        if target.channel == "wechat" and target.app_id in self._wechat:
            return await self._wechat[target.app_id].send_subscribe(
                target.subject, template.template_id, values, template.page
            )
        if target.channel == "alipay" and target.app_id in self._alipay:
            return await self._alipay[target.app_id].send_template(
                target.subject, template.template_id, values, template.page
            )
        return SendOutcome("refused", code="app-not-configured")
