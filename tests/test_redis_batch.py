"""The one-command batch answers as the pipeline it replaces would (docs/performance.md: half the client cost)."""

from __future__ import annotations

import uuid

from code_service.redis_batch import BatchRunner


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

    batch = BatchRunner(redis).batch()
    queue(batch)
    batched = await batch.execute()
    await redis.delete(f"{prefix}:counter", f"{prefix}:claim")
    async with redis.pipeline(transaction=False) as pipe:
        queue(pipe)
        piped = await pipe.execute()

    assert batched[:6] == piped[:6] == [b"\x00facts\xff", None, 1, 0, 1, True]
    assert (bool(batched[6]), bool(batched[7])) == (bool(piped[6]), bool(piped[7])) == (True, False)
    assert 0 < await redis.ttl(f"{prefix}:claim") <= 30
    assert await BatchRunner(redis).batch().execute() == []


async def test_the_script_is_loaded_again_after_a_flush_of_scripts(services):
    runner = BatchRunner(services.redis)
    batch = runner.batch()
    batch.exists("batch-test:none")
    assert await batch.execute() == [0]
    await services.redis.script_flush()
    again = runner.batch()
    again.exists("batch-test:none")
    assert await again.execute() == [0]
