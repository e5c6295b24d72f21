"""The one-command batch answers as the pipeline it replaces would (docs/performance.md: half the client cost)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.exceptions import DataError, ResponseError

from app_backend.composition.embedded import EmbeddedServices
from app_backend.composition.wiring import create_redis
from app_backend.kernel.redis_batch import BatchRunner


async def test_a_batch_answers_like_a_pipeline(services):
    redis = services.redis
    prefix = f"batch-test:{uuid.uuid4().hex}"
    await redis.set(f"{prefix}:present", b"\x00facts\xff")

    def queue(target):
        target.get(f"{prefix}:present")
        target.get(f"{prefix}:absent")
        target.exists(f"{prefix}:present")
        target.exists(f"{prefix}:absent")
        target.incr(f"{prefix}:counter")
        target.expire(f"{prefix}:counter", 30)
        target.set(f"{prefix}:claim", 1, nx=True, ex=30)
        target.set(f"{prefix}:claim", 1, nx=True, ex=30)
        target.hincrby(f"{prefix}:{{day}}", "tile", 2)
        target.hincrby(f"{prefix}:{{day}}", "tile", 3)

    runner = BatchRunner(redis)
    batch = runner.batch()
    queue(batch)
    batched = await batch.execute()
    await redis.delete(f"{prefix}:counter", f"{prefix}:claim", f"{prefix}:{{day}}")
    async with redis.pipeline(transaction=False) as pipe:
        queue(pipe)
        piped = await pipe.execute()

    assert batched[:6] == piped[:6] == [b"\x00facts\xff", None, 1, 0, 1, True]
    assert (bool(batched[6]), bool(batched[7])) == (bool(piped[6]), bool(piped[7])) == (True, False)
    assert batched[8:] == piped[8:] == [2, 5]
    assert 0 < await redis.ttl(f"{prefix}:claim") <= 30
    assert await runner.batch().execute() == []
    await runner.close()


async def test_the_script_is_loaded_again_after_a_flush_of_scripts(services):
    runner = BatchRunner(services.redis)
    batch = runner.batch()
    batch.exists("batch-test:none")
    assert await batch.execute() == [0]
    await services.redis.script_flush()
    again = runner.batch()
    again.exists("batch-test:none")
    assert await again.execute() == [0]
    await runner.close()


# The shared connection: many requests' batches on one redis-py connection at once, replies handed back in order.


async def test_concurrent_batches_each_get_their_own_replies(services):
    runner = BatchRunner(services.redis)
    prefix = f"batch-test:{uuid.uuid4().hex}"

    async def one(i: int) -> list[object]:
        batch = runner.batch()
        batch.set(f"{prefix}:{i}", i, ex=30)
        batch.get(f"{prefix}:{i}")
        batch.incr(f"{prefix}:n:{i}")
        return await batch.execute()

    async def refused(i: int) -> None:
        with pytest.raises(ResponseError, match="unknown batch command"):
            await runner.run([f"{prefix}:{i}"], ["no-such-command"])

    async def unsendable(i: int) -> None:
        with pytest.raises(DataError):  # redis-py cannot encode the argument: nothing is sent
            await runner.run([f"{prefix}:{i}"], ["get", object()])

    work = [one(i) if i % 7 else refused(i) if i % 2 else unsendable(i) for i in range(400)]
    answers = await asyncio.gather(*work)
    for i, answer in enumerate(answers):
        if i % 7:
            assert answer == [1, str(i).encode(), 1], (i, answer)
    await runner.close()


async def test_a_caller_that_gives_up_does_not_shift_anyone_elses_replies(services):
    runner = BatchRunner(services.redis)
    prefix = f"batch-test:{uuid.uuid4().hex}"
    await services.redis.mset({f"{prefix}:{i}": i for i in range(300)})

    async def read(i: int) -> object:
        batch = runner.batch()
        batch.get(f"{prefix}:{i}")
        return (await batch.execute())[0]

    tasks = [asyncio.create_task(read(i)) for i in range(300)]
    await asyncio.sleep(0)  # every command written, none answered yet
    for task in tasks[::3]:
        task.cancel()
    for i, task in enumerate(tasks):
        if i % 3:
            assert await task == str(i).encode()
    assert await read(7) == b"7"
    await runner.close()


@pytest.fixture
def lone_redis(tmp_path: Path) -> Iterator[tuple[int, list[EmbeddedServices]]]:
    """A Redis server of this test's own, on a port it keeps across a restart."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    servers = [_redis_server(tmp_path, port)]
    yield port, servers
    for server in servers:
        process = server._redis
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
        server.stop()


def _redis_server(folder: Path, port: int) -> EmbeddedServices:
    server = EmbeddedServices(folder, redis_port=port)
    server.start(want_postgres=False, want_redis=True, persistent_redis=False)
    return server


async def _connected(
    port: int, server: EmbeddedServices, redis_timeout: float
) -> tuple[subprocess.Popen[bytes], redis.asyncio.Redis, BatchRunner]:
    """The server's process, a client with that timeout, and a runner whose shared connection is open."""
    assert server._redis is not None
    client = create_redis(f"redis://127.0.0.1:{port}/0", max_connections=8, timeout=redis_timeout)
    runner = BatchRunner(client)
    assert await _exists(runner) == [0]
    return server._redis, client, runner


async def _exists(runner: BatchRunner) -> list[object]:
    batch = runner.batch()
    batch.exists("batch-test:none")
    return await asyncio.wait_for(batch.execute(), timeout=10)


async def test_a_hung_redis_fails_every_waiting_command_after_the_timeout_then_serves_again(
    lone_redis, tmp_path
):
    port, servers = lone_redis
    process, client, runner = await _connected(port, servers[0], redis_timeout=0.3)

    os.kill(process.pid, signal.SIGSTOP)  # hung, not gone: the commands are written, no reply comes
    started = time.monotonic()
    outcomes = await asyncio.gather(*(_exists(runner) for _ in range(20)), return_exceptions=True)
    waited = time.monotonic() - started
    assert all(isinstance(outcome, redis.TimeoutError) for outcome in outcomes), outcomes
    assert waited < 5, waited  # the watchdog's timeout (0.3 s), not wait_for's 10 s

    os.kill(process.pid, signal.SIGCONT)
    assert await _exists(runner) == [0]  # a new connection; the old one's late replies are gone with it
    await runner.close()
    await client.aclose()


async def test_a_restarted_redis_is_connected_again_and_taught_the_script_again(lone_redis, tmp_path):
    port, servers = lone_redis
    process, client, runner = await _connected(port, servers[0], redis_timeout=0.5)

    process.kill()
    process.wait()
    with pytest.raises(redis.ConnectionError):
        await _exists(runner)
    servers.append(_redis_server(tmp_path / "again", port))  # knows no scripts
    assert await _exists(runner) == [0]
    await runner.close()
    await client.aclose()
