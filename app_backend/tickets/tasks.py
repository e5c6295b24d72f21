"""The tickets' jobs: holds whose time is up (their orders closed at the channel first), refunds of returned and
cancelled tickets and of unfilled holds, and the messages to the holders of a delayed or cancelled session."""

from __future__ import annotations

from typing import Any

from app_backend.tickets.service import TicketService


async def expire_ticket_holds(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(TicketService).expire_holds(platform.pool)


async def refund_tickets(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(TicketService).refund_due(platform.pool)


async def tell_ticket_holders(ctx: dict[str, Any]) -> dict[str, int]:
    platform = ctx["platform"]
    return await platform.get(TicketService).tell_holders(platform.pool)
