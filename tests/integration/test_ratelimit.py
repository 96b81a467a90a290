"""The shared rate limiter against a real Redis: waits, deadlines, settling, and replicas
(two clients in this process plus one other process) that never exceed the limit together.

Timing assertions are lower bounds only: a slow machine may wait longer, never shorter.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.bus.ratelimit import RateLimiter, RateLimitTimeout
from shared.protocol import Names
from shared.runtime.redis import REDIS_UNAVAILABLE, connect
from shared.runtime.settings import BusSettings

ROOT = Path(__file__).resolve().parents[2]
V, M = "acme", "m-1:latest"


def limiter(redis: Redis, names: Names, **kw: int | None) -> RateLimiter:
    return RateLimiter(redis, names, vendor=V, model=M, **{"rpm": None, "tpm": None, **kw})


def soon(seconds: float = 0.05) -> float:
    return time.monotonic() + seconds


async def test_within_capacity_no_wait(redis: Redis, names: Names) -> None:
    lim = limiter(redis, names, rpm=1, request_burst=60, tpm=1, token_burst=1000)
    waits = [await lim.acquire(100) for _ in range(10)]
    assert waits == [0.0] * 10
    req, tok = await lim.available()  # refill is 1 a minute: what was taken shows
    assert req is not None and 50 <= req < 51
    assert tok is not None and 0 <= tok < 1


async def test_beyond_capacity_waits_for_refill(redis: Redis, names: Names) -> None:
    lim = limiter(redis, names, rpm=120, request_burst=2)  # one request per 0.5 s
    assert await lim.acquire() == 0.0
    first = lim.last_acquired_at
    assert await lim.acquire() == 0.0
    second = lim.last_acquired_at
    waited = await lim.acquire()
    third = lim.last_acquired_at
    assert first is not None and second is not None and third is not None
    # Exact on the server's clock: a full bucket of 2 at `first`, one more 0.5 s later.
    assert third - first >= 0.5
    assert waited >= 0.8 * (first + 0.5 - second)


async def test_deadline_raises_and_takes_nothing(redis: Redis, names: Names) -> None:
    lim = limiter(redis, names, rpm=1, tpm=None)
    await lim.acquire()
    with pytest.raises(RateLimitTimeout) as info:
        await lim.acquire(deadline=soon(0.5))  # the next request is ~60 s away
    assert isinstance(info.value, TimeoutError)
    msg = str(info.value)
    assert f"{V}/{M}" in msg and "rpm=1" in msg and "tpm=None" in msg
    assert info.value.wait_s > 50


async def test_tokens_limit_independently_of_requests(redis: Redis, names: Names) -> None:
    # Requests unlimited: only tokens count.
    tok_only = limiter(redis, names, tpm=6000, token_burst=100)  # 100 tokens/s
    assert [await tok_only.acquire(0) for _ in range(200)] == [0.0] * 200
    assert await tok_only.acquire(60) == 0.0
    first = tok_only.last_acquired_at
    assert await tok_only.acquire(40) == 0.0
    assert await tok_only.acquire(20) > 0
    last = tok_only.last_acquired_at
    assert first is not None and last is not None
    assert last - first >= (120 - 100) / 100  # a full bucket of 100, then 100/s

    # Requests plentiful, tokens short: a refusal takes neither (the request stays).
    other = Names(names.namespace + "-b")
    both = limiter(redis, other, rpm=60, request_burst=2, tpm=6000, token_burst=100)
    assert await both.acquire(100) == 0.0
    with pytest.raises(RateLimitTimeout):
        await both.acquire(50, deadline=soon(0.01))
    assert await both.acquire(0) == 0.0  # the second request was not consumed
    with pytest.raises(RateLimitTimeout) as info:
        await both.acquire(0, deadline=soon(0.01))  # now requests are what is short
    assert info.value.wait_s > 0.5


async def test_too_many_tokens_raise_at_once(redis: Redis, names: Names) -> None:
    lim = limiter(redis, names, tpm=1000, token_burst=200)
    with pytest.raises(ValueError, match="can never fit"):
        await lim.acquire(201)
    with pytest.raises(ValueError):
        await lim.acquire(-1)
    assert await lim.acquire(200) == 0.0


async def test_settle_moves_the_bucket_both_ways(redis: Redis, names: Names) -> None:
    lim = limiter(redis, names, tpm=1, token_burst=100)  # refill 1/min: negligible here
    await lim.acquire(50)
    await lim.settle(estimated=50, actual=80)  # took 30 more: 20 left
    _, tok = await lim.available()
    assert tok is not None and 20 <= tok < 21
    with pytest.raises(RateLimitTimeout):
        await lim.acquire(30, deadline=soon())
    await lim.settle(estimated=80, actual=10)  # gives back 70: 90 left
    _, tok = await lim.available()
    assert tok is not None and 90 <= tok < 91
    assert await lim.acquire(85) == 0.0

    await lim.settle(estimated=10_000, actual=0)  # never above capacity
    _, tok = await lim.available()
    assert tok == pytest.approx(100)
    await lim.settle(estimated=0, actual=10_000)  # never below zero
    _, tok = await lim.available()
    assert tok is not None and 0 <= tok < 1
    await lim.settle(estimated=3, actual=0)  # so giving back 3 leaves 3, not -9 997
    _, tok = await lim.available()
    assert tok is not None and 3 <= tok < 4

    fast = limiter(redis, Names(names.namespace + "-b"), tpm=600, token_burst=100)  # 10/s
    await fast.acquire(100)
    await fast.settle(estimated=0, actual=10_000)
    # Empty, not 10 000 in debt: 5 tokens are about 0.5 s away, not 1000 s.
    assert await fast.acquire(5, deadline=soon(10)) > 0


async def test_key_is_namespaced_and_expires_when_idle(redis: Redis, names: Names) -> None:
    lim = limiter(redis, names, rpm=600, request_burst=5, tpm=6000, token_burst=50)
    await lim.acquire(10)
    key = names.rate_limit(V, M)
    assert key.startswith(names.namespace + ":")
    # The slowest bucket refills in 0.5 s; the key outlives that by a second, no more.
    assert 0 < await redis.pttl(key) <= 1500


async def test_unlimited_needs_no_redis(names: Names) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        assert await limiter(dead, names).acquire(10**9) == 0.0
        with pytest.raises(REDIS_UNAVAILABLE):
            await limiter(dead, names, rpm=10).acquire()
        with pytest.raises(REDIS_UNAVAILABLE):
            await limiter(dead, names, tpm=10).settle(1, 5)
    finally:
        await dead.aclose()


# -- replicas -------------------------------------------------------------------------------
RPM, REQUEST_BURST = 1200, 5  # 20 requests/s
TPM, TOKEN_BURST = 6000, 30  # 100 tokens/s; 1-10 tokens a request, so tokens bind too
RUN_S = 3.0

Event = tuple[float, int]  # Redis-server time of the acquire, tokens taken


async def hammer(lim: RateLimiter, end: float, seed: int) -> list[Event]:
    """Acquire as fast as the limit allows until wall-clock `end`."""
    rng = random.Random(seed)
    events: list[Event] = []
    while (left := end - time.time()) > 0:
        tokens = rng.randint(1, 10)
        try:
            await lim.acquire(tokens, deadline=time.monotonic() + left)
        except RateLimitTimeout:
            break
        assert lim.last_acquired_at is not None
        events.append((lim.last_acquired_at, tokens))
    return events


def replica_main() -> None:
    """Entry point of the replica in another process; prints its events as JSON."""
    from shared.runtime.logging import configure_logging  # noqa: PLC0415

    configure_logging("warning", json=True)
    cfg = json.loads(sys.argv[1])

    async def main() -> None:
        redis = Redis.from_url(os.environ["REDIS_URL"])
        lim = RateLimiter(
            redis,
            Names(cfg["namespace"]),
            vendor=V,
            model=M,
            rpm=RPM,
            tpm=TPM,
            request_burst=REQUEST_BURST,
            token_burst=TOKEN_BURST,
        )
        await redis.ping()
        print("READY", flush=True)
        end = float(sys.stdin.readline())
        events = await hammer(lim, end, seed=3)
        print("EVENTS " + json.dumps(events), flush=True)
        await redis.aclose()

    asyncio.run(main())


def tightest(events: Sequence[Event], burst: int, per_s: float, weight: bool) -> float:
    """Over every interval [t_i, t_j]: taken <= burst + rate * (t_j - t_i). Returns the
    smallest slack seen (how close the replicas came to the bound, in units)."""
    ordered = sorted(events)
    slack = float(burst)
    for i, (t_i, _) in enumerate(ordered):
        taken = 0
        for t_j, tokens in ordered[i:]:
            taken += tokens if weight else 1
            allowed = burst + per_s * (t_j - t_i)
            assert taken <= allowed + 1e-3, (
                f"{taken} taken in {t_j - t_i:.6f}s, bound {allowed:.3f} (burst {burst})"
            )
            slack = min(slack, allowed - taken)
    return slack


async def test_replicas_never_exceed_the_shared_limit(
    redis: Redis, names: Names, redis_url: str, bus_settings: BusSettings
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from tests.integration.test_ratelimit import replica_main; replica_main()",
        json.dumps({"namespace": names.namespace}),
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    second = connect(redis_url, bus_settings)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"READY", line
        end = time.time() + RUN_S
        proc.stdin.write(f"{end}\n".encode())
        await proc.stdin.drain()

        lims = [
            RateLimiter(
                client,
                names,
                vendor=V,
                model=M,
                rpm=RPM,
                tpm=TPM,
                request_burst=REQUEST_BURST,
                token_burst=TOKEN_BURST,
            )
            for client in (redis, second)
        ]
        local = await asyncio.gather(*(hammer(lim, end, seed) for seed, lim in enumerate(lims)))
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        remote: list[Event] = [
            (float(t), int(n))
            for line in out.decode().splitlines()
            if line.startswith("EVENTS ")
            for t, n in json.loads(line.removeprefix("EVENTS "))
        ]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await second.aclose()

    per_replica = [len(e) for e in (*local, remote)]
    assert all(n > 0 for n in per_replica), per_replica  # the other process took part
    events = [e for batch in (*local, remote) for e in batch]
    assert len(events) > REQUEST_BURST  # the buckets refilled, so the bound was tested
    req_slack = tightest(events, REQUEST_BURST, RPM / 60, weight=False)
    tok_slack = tightest(events, TOKEN_BURST, TPM / 60, weight=True)
    span = max(t for t, _ in events) - min(t for t, _ in events)
    print(
        f"{len(events)} acquires {per_replica} over {span:.2f}s, "
        f"{sum(n for _, n in events)} tokens; tightest slack: "
        f"{req_slack:.3f} requests, {tok_slack:.3f} tokens"
    )
