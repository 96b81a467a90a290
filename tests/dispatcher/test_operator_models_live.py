"""Any model can join without code (issue 20, item 4), end to end: a worker for an
OpenAI-compatible server whose models are in no price table announces them, and the
dispatcher routes tasks pinned to that vendor or model to it; the findings are unpriced
(cost unknown, never $0) and the totals say so, until SWARM_PRICES_FILE prices them; a
policy tier can take the model; when the worker leaves, pinned tasks are refused with the
reason. Real processes (`swarm run ...`), the SDK over HTTP to the project's simulator,
a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from redis.asyncio import Redis

from services.dispatcher.fleet import FleetView
from shared.bus import Cooldowns, Heartbeat
from shared.bus.findings import TaskView, task_view, totals_by_model
from shared.bus.spend import SpendBook
from shared.protocol import Names, Task, encode
from shared.runtime.metrics import Metrics
from tests.chaos.checks import POLICY, sim_config
from tests.cli.conftest import Swarm
from tests.swarm_procs import SwarmProcs

COMPAT = "openai-compatible"
WORKER = "worker-openai-compatible-1"
SERVES = {"OPENAI_COMPATIBLE_MODEL": "my-llama", "OPENAI_COMPATIBLE_MODELS": "my-qwen"}
PRICES = """
[models."my-llama"]
vendor = "openai-compatible"
input_per_mtok = 0.10
output_per_mtok = 0.40
context_window = 131_072
max_output_tokens = 8_192
source = "our own estimate: GPU hours per million tokens"
as_of = 2026-12-07
"""


@contextlib.asynccontextmanager
async def fleet(
    tmp_path: Path,
    redis_url: str,
    names: Names,
    redis: Redis,
    *,
    env: Mapping[str, str] | None = None,
    deepseek: bool = False,
) -> AsyncIterator[SwarmProcs]:
    """Simulator, dispatcher, collector and a worker serving my-llama and my-qwen (and a
    DeepSeek worker); `env` goes to every process (SWARM_PRICES_FILE, a policy file)."""
    common = {
        "SWARM_DISPATCHER_LIVE_GRACE_S": "1",
        "SWARM_DISPATCHER_FLEET_REFRESH_S": "0.2",
        **(env or {}),
    }
    async with SwarmProcs(redis_url, names, tmp_path / "logs", env=common) as swarm:
        await swarm.simulator(sim_config(0.05))
        await swarm.start("dispatcher", "dispatcher")
        await swarm.start("collector", "collector")
        await swarm.start(WORKER, "worker", "--vendor", COMPAT, env=SERVES)
        wanted = {"dispatcher": 1, "collector": 1, f"worker-{COMPAT}": 1}
        if deepseek:
            await swarm.start("worker-deepseek-1", "worker", "--vendor", "deepseek")
            wanted["worker-deepseek"] = 1
        await swarm.wait_live(redis, names, wanted)
        await asyncio.sleep(0.5)  # the dispatcher's view of the fleet is 0.2 s old at most
        yield swarm


async def post(redis: Redis, names: Names, *tasks: Task) -> None:
    for task in tasks:
        await redis.xadd(names.intake, encode(task))  # type: ignore[arg-type]


async def views(swarm: SwarmProcs, redis: Redis, names: Names, *ids: str) -> list[TaskView]:
    async def finished() -> list[TaskView] | None:
        found = [await task_view(redis, names, i) for i in ids]
        return None if None in found else [v for v in found if v is not None]

    done: list[TaskView] = await swarm.wait_for(finished, timeout=30, what=f"findings of {ids}")
    return done


async def swarm_cli(redis_url: str, names: Names, *args: str) -> str:
    """`swarm ARGS` as a user runs it; its output."""
    return (await Swarm(redis_url, names)(*args)).out


async def test_tasks_pinned_to_the_vendor_or_its_models_are_done_unpriced(
    tmp_path: Path, redis_url: str, names: Names, redis: Redis
) -> None:
    async with fleet(tmp_path, redis_url, names, redis) as swarm:
        member = await redis.hgetall(names.member(WORKER))  # type: ignore[misc]
        assert member[b"models"] == b"my-llama,my-qwen"
        await post(
            redis,
            names,
            Task(task_id="by-vendor", prompt="Summarise our supplier terms.", vendor=COMPAT),
            Task(task_id="by-model", prompt="Classify this ticket.", model="my-qwen"),
        )
        by_vendor, by_model = await views(swarm, redis, names, "by-vendor", "by-model")
        record = await redis.hget(names.task("by-model"), "estimated_cost_usd")  # type: ignore[misc]
        totals = {(t.vendor, t.model): t for t in await totals_by_model(redis, names)}
        status = await swarm_cli(redis_url, names, "status")
        findings = await swarm_cli(redis_url, names, "findings", "by-vendor")
        calls = (await swarm.sim_stats())["by_model"]
        spend = SpendBook(redis, names)
        spent, unpriced = (
            await spend.spent("vendor", [COMPAT]),
            await spend.unpriced("vendor", [COMPAT]),
        )

    for view, model in ((by_vendor, "my-llama"), (by_model, "my-qwen")):
        s = view.summary
        assert (s.status, s.vendor, s.model, s.worker) == ("ok", COMPAT, model, WORKER)
        assert s.cost_usd is None and s.input_tokens > 0  # unknown, never $0
        assert [f.cost_usd for f in view.findings] == [None]
    assert record == b"unpriced"
    assert calls == {"my-llama": 1, "my-qwen": 1}  # the server was asked for each by name
    assert totals[(COMPAT, "my-llama")].unpriced == 1 == totals[(COMPAT, "my-qwen")].unpriced
    assert totals[(COMPAT, "my-llama")].cost_usd == 0.0  # nothing priced was added
    assert "2 findings of unpriced models not included" in status, status
    assert (spent, unpriced) == ({COMPAT: 0.0}, {COMPAT: 2})  # counted apart, not as $0
    assert "unpriced" in findings and "$0.000000" not in findings, findings


async def test_with_swarm_prices_file_the_cost_is_computed(
    tmp_path: Path, redis_url: str, names: Names, redis: Redis
) -> None:
    prices = tmp_path / "my-prices.toml"
    prices.write_text(PRICES)
    async with fleet(
        tmp_path, redis_url, names, redis, env={"SWARM_PRICES_FILE": str(prices)}
    ) as swarm:
        await post(
            redis,
            names,
            Task(task_id="priced", prompt="Summarise our supplier terms.", model="my-llama"),
            Task(task_id="still-unpriced", prompt="Classify this ticket.", model="my-qwen"),
        )
        priced, unpriced = await views(swarm, redis, names, "priced", "still-unpriced")
        record = await redis.hget(names.task("priced"), "estimated_cost_usd")  # type: ignore[misc]
        totals = {(t.vendor, t.model): t for t in await totals_by_model(redis, names)}

    s = priced.summary
    expected = (s.input_tokens * 0.10 + s.output_tokens * 0.40) / 1_000_000
    assert s.cost_usd is not None and s.cost_usd > 0
    assert abs(s.cost_usd - expected) < 1e-12
    assert record is not None and float(record) > 0  # the dispatcher's estimate is priced too
    assert unpriced.summary.cost_usd is None  # a model the file does not name stays unpriced
    assert totals[(COMPAT, "my-llama")].unpriced == 0
    assert totals[(COMPAT, "my-qwen")].unpriced == 1


async def test_a_tier_the_operator_gave_it_takes_unpinned_simple_tasks(
    tmp_path: Path, redis_url: str, names: Names, redis: Redis
) -> None:
    # The packaged policy with my-llama declared and added to the simple tier only.
    text = POLICY.read_text().replace(
        "[tiers.simple]\nexpected_output_tokens = 500\nmodels = [\n",
        '[tiers.simple]\nexpected_output_tokens = 500\nmodels = [\n    "my-llama",\n',
    )
    assert '"my-llama"' in text
    policy = tmp_path / "policy.toml"
    policy.write_text(text + '\n[models."my-llama"]\nvendor = "openai-compatible"\n')
    env = {"SWARM_DISPATCHER_POLICY_FILE": str(policy)}
    async with fleet(tmp_path, redis_url, names, redis, env=env, deepseek=True) as swarm:
        simple = [
            Task(task_id=f"simple-{i}", prompt=f"Summarise note {i}.", complexity="simple")
            for i in range(3)
        ]
        medium = Task(task_id="medium", prompt="Summarise note 9.", complexity="medium")
        await post(redis, names, *simple, medium)
        done = await views(swarm, redis, names, *(t.task_id for t in simple), "medium")
        record = await redis.hgetall(names.task("simple-0"))  # type: ignore[misc]

    assert [(v.summary.vendor, v.summary.model) for v in done[:3]] == [(COMPAT, "my-llama")] * 3
    assert all(v.summary.cost_usd is None for v in done[:3])
    assert b"unpriced operator model" in record[b"reason"]
    # A tier it was not given keeps to the priced models.
    assert done[3].summary.vendor == "deepseek" and done[3].summary.cost_usd is not None


async def test_when_the_worker_leaves_pinned_tasks_are_refused_with_the_reason(
    tmp_path: Path, redis_url: str, names: Names, redis: Redis
) -> None:
    async with fleet(tmp_path, redis_url, names, redis, deepseek=True) as swarm:
        await post(redis, names, Task(task_id="before", prompt="Hello.", model="my-llama"))
        (before,) = await views(swarm, redis, names, "before")
        assert before.summary.vendor == COMPAT
        await swarm.kill(WORKER, signal.SIGTERM)  # leaves the membership

        async def gone() -> bool:
            return not await redis.exists(names.member(WORKER))

        await swarm.wait_for(gone, timeout=10, what="the worker to leave")
        await asyncio.sleep(1.7)  # the dispatcher's grace (1 s) and fleet refresh (0.2 s) pass
        await post(
            redis,
            names,
            Task(task_id="after-model", prompt="Hello.", model="my-llama"),
            Task(task_id="after-vendor", prompt="Hello.", vendor=COMPAT),
        )
        after_model, after_vendor = await views(swarm, redis, names, "after-model", "after-vendor")
        rejected = await redis.xrange(names.rejected)

    for view in (after_model, after_vendor):
        assert (view.summary.status, view.summary.vendor) == ("failed", "dispatcher")
    assert "no live worker announces it" in (after_model.findings[0].error or "")
    assert "no live worker of it announces one" in (after_vendor.findings[0].error or "")
    reasons = [fields[b"reason"].decode() for _, fields in rejected]
    assert len(reasons) == 2 and all("my-llama" in r or COMPAT in r for r in reasons)


async def test_a_capped_budget_says_how_many_findings_it_cannot_price(
    redis: Redis, names: Names
) -> None:
    spend = SpendBook(redis, names)
    await spend.record(COMPAT, "general", None)
    await spend.record(COMPAT, "general", None)
    await spend.record(COMPAT, "general", 0.25)
    view = FleetView(
        redis, names, Cooldowns(redis, names), 0.0, spend=spend, vendor_caps={COMPAT: 1.0}
    )
    await view.get()
    metrics = Metrics.create()
    view.export(metrics)
    labels = {"kind": "vendor", "name": COMPAT}
    assert metrics.registry.get_sample_value("swarm_budget_spent_usd", labels) == 0.25
    assert metrics.registry.get_sample_value("swarm_budget_unpriced_findings", labels) == 2
    assert await spend.unpriced("task_type", ["general"]) == {"general": 2}


async def test_the_fleet_read_afresh_sees_a_worker_that_joined_since_the_last_read(
    redis: Redis, names: Names
) -> None:
    view = FleetView(redis, names, Cooldowns(redis, names), 60.0)
    assert (await view.get()).models == {}
    await Heartbeat(
        redis, names, f"{WORKER}-late", service=f"worker-{COMPAT}", interval_s=1, ttl_s=30,
        info={"vendor": COMPAT, "model": "my-llama", "models": "my-llama,my-qwen"},
    ).beat()  # fmt: skip
    assert (await view.get()).models == {}  # cached for its refresh interval
    assert (await view.fresh()).models == {COMPAT: frozenset({"my-llama", "my-qwen"})}


async def test_a_worker_that_just_joined_gets_the_tasks_pinned_to_its_model(
    tmp_path: Path, redis_url: str, names: Names, redis: Redis
) -> None:
    # The dispatcher reads the fleet every 30 s here: without a fresh read before refusing,
    # a model announced since the last read would be refused as unknown.
    slow_refresh = {"SWARM_DISPATCHER_FLEET_REFRESH_S": "30"}
    async with SwarmProcs(redis_url, names, tmp_path / "logs", env=slow_refresh) as swarm:
        await swarm.simulator(sim_config(0.05))
        await swarm.start("dispatcher", "dispatcher")
        await swarm.start("collector", "collector")
        await swarm.start("worker-deepseek-1", "worker", "--vendor", "deepseek")
        await swarm.wait_live(redis, names, {"dispatcher": 1, "worker-deepseek": 1})
        await post(redis, names, Task(task_id="first", prompt="Hello.", vendor="deepseek"))
        await views(swarm, redis, names, "first")  # the dispatcher has read the fleet
        await swarm.start(WORKER, "worker", "--vendor", COMPAT, env=SERVES)
        await swarm.wait_live(redis, names, {f"worker-{COMPAT}": 1})
        await post(redis, names, Task(task_id="joined", prompt="Hello.", model="my-llama"))
        (joined,) = await views(swarm, redis, names, "joined")
    assert (joined.summary.status, joined.summary.vendor) == ("ok", COMPAT)
    assert joined.summary.model == "my-llama"
