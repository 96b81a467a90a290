"""The worker end to end: real Redis, real SDKs, the simulator as every vendor."""

from __future__ import annotations

import math

import pytest
from redis.asyncio import Redis

from services.simulator.config import FaultRates, Overrides, Profile, SimulatorConfig
from services.simulator.server import Simulator
from shared.llm.prices import PriceTable, price_usage
from shared.llm.types import Usage
from shared.protocol import (
    KNOWN_VENDORS,
    Finding,
    Names,
    Status,
    Task,
    decode,
    decode_rejection,
    encode,
)
from shared.protocol.tracecontext import trace_of
from tests.simulator.wire import sent_mean_logprob
from tests.waiting import eventually
from tests.worker.conftest import StartWorker, findings, post, sim_calls, wait_findings

PRICES = PriceTable.load()


@pytest.mark.parametrize("vendor", KNOWN_VENDORS)
async def test_a_task_in_a_finding_out_with_tokens_and_cost(
    vendor: str, redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    await start_worker(vendor)
    await redis.hset(names.task("e2e"), mapping={"state": "routed", "vendor": vendor})
    task = await post(
        redis,
        names,
        vendor,
        task_id="e2e",
        prompt="Research supplier payment terms 2021",
        task_type="research",
        run_id="r1",
    )
    [finding] = await wait_findings(redis, names, 1)
    assert finding.task_id == task.task_id
    assert finding.status is Status.OK
    assert finding.vendor == vendor
    assert finding.summary
    assert finding.input_tokens > 0 and finding.output_tokens > 0
    assert finding.tokens_used == finding.input_tokens + finding.output_tokens
    assert finding.attempt == 1
    assert finding.run_id == "r1" and finding.task_type == "research"
    usage = Usage(
        input_tokens=finding.input_tokens,
        output_tokens=finding.output_tokens,
        cache_read_tokens=finding.cache_read_tokens,
        cache_write_tokens=finding.cache_write_tokens,
    )
    if vendor == "openai-compatible":
        assert finding.cost_usd is None  # unpriced local model, never $0
    else:
        assert finding.cost_usd == pytest.approx(price_usage(PRICES, finding.model, usage))
        assert finding.cost_usd > 0
    if vendor == "codex":
        assert finding.code  # the code specialist returns code
    assert await redis.get(names.task_done(vendor, task.task_id)) == finding.finding_id.encode()
    record = await redis.hgetall(names.task("e2e"))  # the dispatcher's record, brought up to date
    assert record[b"state"] == b"done" and record[b"finding_id"] == finding.finding_id.encode()
    assert record[b"worker"].startswith(b"worker-") and record[b"vendor"] == vendor.encode()


async def test_a_redelivered_task_is_not_paid_for_twice(
    redis: Redis, names: Names, start_worker: StartWorker, simulator: Simulator
) -> None:
    await start_worker("deepseek")
    task = await post(redis, names, "deepseek", task_id="dup-1", prompt="Once only")
    await wait_findings(redis, names, 1)
    calls = sim_calls(simulator)
    await redis.xadd(names.vendor_tasks("deepseek"), {"task_id": task.task_id, "prompt": "x"})

    async def acked() -> bool:
        info = await redis.xinfo_groups(names.vendor_tasks("deepseek"))
        return info[0]["lag"] == 0 and info[0]["pending"] == 0

    await eventually(acked, what="the duplicate to be acked")
    assert sim_calls(simulator) == calls  # no second vendor call
    assert len(await redis.xrange(names.findings)) == 1


async def test_429_storm_and_5xx_still_complete_with_true_attempt_counts(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    stormy = Simulator(
        SimulatorConfig(
            seed=11,
            defaults=Profile(
                faults=FaultRates(rate_429=0.3, rate_500=0.1, rate_503=0.05), retry_after_s=0.05
            ),
        )
    )
    await stormy.start()
    max_attempts = 8
    try:
        await start_worker("claude", sim=stormy, max_attempts=max_attempts)
        posted = {
            (await post(redis, names, "claude", prompt=f"storm task {i}")).task_id
            for i in range(40)
        }

        async def all_accounted() -> tuple[list[Finding], list[Task]] | None:
            done = await findings(redis, names)
            moved = [decode(Task, f) for _id, f in await redis.xrange(names.reroutes)]
            return (done, moved) if len(done) + len(moved) == 40 else None

        outcome = await eventually(all_accounted, timeout=60, what="every task to end")
        stats = stormy.stats()
    finally:
        await stormy.stop()
    done, moved = outcome
    # Each task ended exactly once: a finding, or (retries spent) back to the dispatcher.
    assert {f.task_id for f in done} | {t.task_id for t in moved} == posted
    assert {f.status for f in done} == {Status.OK}
    assert len(done) >= 35
    for task in moved:
        assert task.excluded_vendors == ("claude",) and task.history[0].retryable
    # Every call the vendor saw is counted in exactly one task's attempts.
    assert sum(f.attempt for f in done) + max_attempts * len(moved) == stats["total"]
    assert max(f.attempt for f in done) > 1


async def test_timeouts_exhaust_retries_then_fall_back_to_another_vendor(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    await start_worker("gemini", max_attempts=2, llm_timeout_s=1)
    # The adapters' call timeout is the simulator hang here: the marker never answers.
    await post(
        redis,
        names,
        "gemini",
        task_id="slow-1",
        prompt="Think long [[sim:timeout]]",
        max_output_tokens=8,
    )
    handed_back = await _wait_reroutes(redis, names)
    moved = decode(Task, handed_back[0])
    assert moved.task_id == "slow-1"
    assert moved.attempt == 2
    assert moved.excluded_vendors == ("gemini",)
    [record] = moved.history
    assert record.vendor == "gemini" and record.retryable


async def test_context_too_long_falls_back_at_once(
    redis: Redis, names: Names, start_worker: StartWorker, simulator: Simulator
) -> None:
    await start_worker("deepseek")
    await post(
        redis,
        names,
        "deepseek",
        task_id="big-1",
        prompt="Too big [[sim:context]]",
        excluded_vendors=("openai",),
    )
    handed_back = await _wait_reroutes(redis, names)
    moved = decode(Task, handed_back[0])
    assert moved.excluded_vendors == ("openai", "deepseek")
    assert "context" in moved.history[0].error.lower()
    assert sim_calls(simulator) == 1  # a fatal error is never retried


async def test_no_vendor_left_ends_as_a_failed_finding_and_a_dead_letter(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    await start_worker("claude")
    await post(
        redis,
        names,
        "claude",
        task_id="pinned-1",
        vendor="claude",
        prompt="Only Claude may do this [[sim:context]]",
    )
    [finding] = await wait_findings(redis, names, 1)
    assert finding.status is Status.FAILED
    assert "claude" in (finding.error or "") and "pins" in (finding.error or "")
    [(_id, record)] = await redis.xrange(names.dead_letter)
    parked = decode_rejection(record)
    assert parked.source_stream == names.vendor_tasks("claude")
    assert parked.original["task_id"] == "pinned-1"
    assert await redis.xlen(names.reroutes) == 0  # not rerouted


async def test_a_task_the_dispatcher_did_not_route_here_is_not_handed_back(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    """The dispatcher takes a task back only from the vendor it routed it to: a task posted
    straight to the vendor's stream (no record), or with a record naming another vendor (a
    replay to this stream), ends here as a failed finding instead of a reroute."""
    await start_worker("deepseek")
    await post(redis, names, "deepseek", record=False, task_id="straight", prompt="[[sim:context]]")
    await redis.hset(names.task("elsewhere"), mapping={"state": "routed", "vendor": "claude"})
    await post(
        redis, names, "deepseek", record=False, task_id="elsewhere", prompt="[[sim:context]]"
    )
    done = {f.task_id: f for f in await wait_findings(redis, names, 2)}
    for task_id in ("straight", "elsewhere"):
        assert done[task_id].status is Status.FAILED
        assert "did not route the task to deepseek" in (done[task_id].error or "")
    assert await redis.xlen(names.reroutes) == 0
    assert await redis.hget(names.task("elsewhere"), "vendor") == b"claude"


async def _wait_reroutes(redis: Redis, names: Names) -> list[dict[bytes, bytes]]:
    async def rerouted() -> list[dict[bytes, bytes]]:
        return [f for _id, f in await redis.xrange(names.reroutes)]

    return await eventually(rerouted, timeout=30, what="the task handed back")


async def test_hundreds_of_calls_in_flight_in_one_process(
    redis: Redis, names: Names, start_worker: StartWorker, simulator: Simulator
) -> None:
    # More deliveries in flight than redis-py's default pool has connections (100).
    await start_worker("deepseek", max_in_flight=300)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(300):
            pipe.xadd(
                names.vendor_tasks("deepseek"),
                encode(Task(task_id=f"many-{i}", prompt=f"q {i} [[sim:latency=1]]")),
            )
        await pipe.execute()

    async def peak_in_flight() -> bool:
        return int(simulator.stats()["in_flight"]) >= 150

    await eventually(peak_in_flight, timeout=30, what="150+ vendor calls at once")
    done = await wait_findings(redis, names, 300, timeout=90)
    assert len({f.task_id for f in done}) == 300
    assert {f.status for f in done} == {Status.OK}
    assert await redis.xlen(names.dead_letter) == 0


async def test_workers_record_what_they_spend_for_the_dispatchers_budgets(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    from shared.bus.spend import SpendBook  # noqa: PLC0415

    await start_worker("claude")
    for i in range(3):
        await post(redis, names, "claude", prompt=f"cost me {i}", task_type="research")
    done = await wait_findings(redis, names, 3)
    book = SpendBook(redis, names)
    total = sum(f.cost_usd or 0 for f in done)

    async def recorded() -> bool:
        return (await book.spent("vendor", ["claude"]))["claude"] == pytest.approx(total)

    await eventually(recorded, what="spend recorded")
    assert (await book.spent("task_type", ["research"]))["research"] == pytest.approx(total)


@pytest.mark.parametrize("vendor", KNOWN_VENDORS)
async def test_a_findings_confidence_is_exp_mean_logprob_the_vendor_sent(
    vendor: str, redis: Redis, names: Names, start_worker: StartWorker, simulator: Simulator
) -> None:
    await start_worker(vendor)
    prompt = "Research supplier payment terms 2021"
    await post(redis, names, vendor, task_id="conf-1", prompt=prompt, max_output_tokens=64)
    [finding] = await wait_findings(redis, names, 1)
    assert finding.status is Status.OK
    sent = await sent_mean_logprob(simulator.base_url, vendor, finding.model, prompt, 64)
    if vendor in ("claude", "codex"):
        assert sent is None and finding.confidence is None  # no logprobs: no confidence
    else:
        assert sent is not None
        assert finding.confidence == pytest.approx(math.exp(sent), rel=1e-9)


async def test_a_model_refusing_logprobs_still_finishes_its_task_without_confidence(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    refusing = Simulator(SimulatorConfig(vendors={"deepseek": Overrides(logprobs=False)}))
    await refusing.start()
    try:
        await start_worker("deepseek", sim=refusing)
        # One after the other: calls already on the wire when the first refusal comes back
        # were asked too (each is refused once and asked again).
        for i in range(2):
            await post(redis, names, "deepseek", task_id=f"nolp-{i}", prompt=f"Terms {i}?")
            found = await wait_findings(redis, names, i + 1)
        statuses = refusing.stats()["by_status"]
    finally:
        await refusing.stop()
    assert all(f.status is Status.OK and f.summary for f in found)
    assert all(f.confidence is None and f.attempt == 1 for f in found)
    assert statuses == {"400": 1, "200": 2}  # refused once, never asked again


async def test_headers_reach_every_finding_and_the_rerouted_task(
    redis: Redis, names: Names, start_worker: StartWorker
) -> None:
    """A task's `headers` (docs/protocol.md section 10) are copied to its finding, ok or
    failed, and kept on the task it hands back to fall back; its trace goes
    on with the worker's span as the parent."""
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"traceparent": trace, "x-team": "search"}
    await start_worker("deepseek")
    await post(redis, names, "deepseek", task_id="h-ok", prompt="Hello", headers=headers)
    pinned = "Only DeepSeek [[sim:context]]"
    await post(
        redis,
        names,
        "deepseek",
        task_id="h-failed",
        vendor="deepseek",
        prompt=pinned,
        headers=headers,
    )
    await post(
        redis,
        names,
        "deepseek",
        task_id="h-moved",
        prompt="Big [[sim:context]]",
        headers=headers,
    )
    done = {f.task_id: f for f in await wait_findings(redis, names, 2)}
    assert done["h-ok"].status is Status.OK
    assert done["h-failed"].status is Status.FAILED
    [moved] = [decode(Task, f) for f in await _wait_reroutes(redis, names)]
    assert moved.task_id == "h-moved"
    spans = set()
    for carried in (done["h-ok"].headers, done["h-failed"].headers, moved.headers):
        assert carried["x-team"] == "search" and set(carried) == set(headers)
        now = trace_of(carried)
        assert now is not None and now.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        spans.add(now.span_id)
    assert "00f067aa0ba902b7" not in spans and len(spans) == 3  # one worker span per task
