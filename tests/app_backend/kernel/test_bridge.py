"""Synchronous code on the event loop (app_backend/kernel/bridge.py): what it waits for comes back as a value or as
the exception the coroutine raised, a cancelled request cancels it where it waits, and it sees its caller's
context but keeps its own."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from app_backend.kernel.bridge import run_synchronously, wait_for

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def _double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


async def _refuse() -> None:
    await asyncio.sleep(0)
    raise LookupError("not found")


async def test_waits_return_values_and_raise_the_coroutines_exceptions_where_they_waited() -> None:
    def step() -> tuple[int, str]:
        total = wait_for(_double(2)) + wait_for(_double(3))
        try:
            wait_for(_refuse())
        except LookupError as exc:
            return total, str(exc)
        return total, "no exception"

    assert await run_synchronously(step) == (10, "not found")


async def test_an_exception_the_synchronous_code_does_not_catch_reaches_the_caller() -> None:
    with pytest.raises(LookupError):
        await run_synchronously(lambda: wait_for(_refuse()))


async def test_concurrent_steps_each_get_their_own_answers() -> None:
    def step(n: int) -> list[int]:
        return [wait_for(_double(n)) for _ in range(3)]

    results = await asyncio.gather(*(run_synchronously(lambda n=n: step(n)) for n in range(20)))
    assert results == [[2 * n] * 3 for n in range(20)]


async def test_a_timeout_cancels_the_step_where_it_waits() -> None:
    reached: list[str] = []

    def step() -> None:
        wait_for(asyncio.sleep(30))
        reached.append("after the wait")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await run_synchronously(step)
    assert reached == []


async def test_the_step_sees_the_callers_context_and_keeps_what_it_sets() -> None:
    WHO.set("caller")

    def step() -> str:
        seen = WHO.get()
        WHO.set("step")
        return seen

    assert await run_synchronously(step) == "caller"
    assert WHO.get() == "caller"


def test_wait_for_outside_a_step_is_refused() -> None:
    work = _double(1)
    with pytest.raises(RuntimeError):
        wait_for(work)
    work.close()
