"""Synchronous SDK code on the event loop, waiting for coroutines without a thread: `run_synchronously(fn)` runs
`fn` in a greenlet on the loop's own thread, and `wait_for(coro)` inside it hands the coroutine to the task that
started it, which awaits it and switches back with the result (or throws its exception in). This is how
SQLAlchemy's asyncio extension runs its synchronous core on asyncpg.

Why not a worker thread: a synchronous library whose every step waits for the network or the database (Authlib's
hooks on our asyncpg storage, wechatpy's HTTP calls) spent most of a request in hops between its thread and the
loop (a future, the loop's self-pipe, a wake-up, the GIL handed over and back: about 100-200 µs each on this
machine, several per request), not in its own work. A greenlet switch costs about a microsecond and keeps the
request on one thread. What runs between two waits blocks the loop, as any coroutine's code does: only code that
does no I/O of its own may run here (every wait goes through `wait_for`)."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import greenlet

T = TypeVar("T")


class _Bridged(greenlet.greenlet):
    """A greenlet whose parent is the task that awaits on its behalf."""

    def __init__(self, fn: Callable[[], Any], parent: greenlet.greenlet) -> None:
        super().__init__(fn, parent)


async def run_synchronously(fn: Callable[[], T]) -> T:
    """`fn()` on this thread; each `wait_for` inside it is awaited by the calling task. The greenlet starts in a
    copy of the caller's context, so context variables set by the caller are seen and those it sets stay its."""
    child = _Bridged(fn, greenlet.getcurrent())
    child.gr_context = contextvars.copy_context()
    result: Any = child.switch()
    while not child.dead:
        try:
            value = await cast(Awaitable[Any], result)
        except BaseException:  # cancellation included: the synchronous code sees it where it waited
            result = child.throw(*sys.exc_info())
        else:
            result = child.switch(value)
    return cast(T, result)


def wait_for(work: Awaitable[T]) -> T:
    """Called from code running under `run_synchronously`: awaits `work` on the loop and returns its result."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Bridged):
        raise RuntimeError("wait_for is only for code started by run_synchronously")
    return cast(T, current.parent.switch(work))
