"""How a platform domain tells a resident something (a fare debt, a change of the code's status) without importing
the notification service, which imports the domains it learns residents from (payments' orders, mini_programs):
the domain keeps a `SendMessage` port, nothing until the notifications module hands it
`NotificationService.send_platform` when it starts (app_backend/notifications/module.py), as mini_programs hands
payments' orders the payer of a mini-program payment. The message then goes through the one notification service
like any other: the inbox always, one more channel by the resident's grants (docs/decisions/0024)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec

from app_backend.kernel.db import Connection


class PlatformMessage(msgspec.Struct, frozen=True):
    """A message from a platform domain. `kind`, `title`, `body` and `params` are what notifications'
    MessageDraft takes (its kinds and limits); `sender` is the domain ("payments", "codes"), within which `key`
    names the one thing the message is about (a debt's id, a change): the same key again sends nothing more."""

    kind: str
    title: str
    body: str
    sender: str
    sender_name: str
    key: str
    params: dict[str, str] = {}


# (the sender's transaction, the resident, the message) -> whether a message was written now (False: one with the
# same key was, or the message could not be); the message is rolled back with the transaction.
SendMessage = Callable[[Connection, uuid.UUID, PlatformMessage], Awaitable[bool]]
