"""`swarm demo`: tasks go through the bus and come back as findings.

It posts tasks the three ways users do (flat fields as `redis-cli XADD` writes them, a
`data` JSON field, and a malformed one), runs a reference echo worker on the bus (real
consumer group, heartbeat, batched atomic acks), and reads the findings and the rejection
back from Redis. No LLM is called: the echo worker answers with the prompt, at $0.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shared.bus import DeadLetter, Delivery, Handler, Outgoing, serve, service_context
from shared.protocol import DecodeError, Finding, Task, decode, encode, encode_data
from shared.runtime.settings import BusSettings, SwarmSettings

DEMO_GROUP = "demo-echo"


def echo(worker_id: str, findings_stream: str, rejected_stream: str) -> Handler:
    async def handle(delivery: Delivery) -> list[Outgoing]:
        try:
            task = decode(Task, delivery.fields)
        except DecodeError as exc:
            raise DeadLetter(str(exc), field=exc.field, stream=rejected_stream) from exc
        started = time.perf_counter()
        finding = Finding(
            task_id=task.task_id,
            worker_id=worker_id,
            vendor="demo",
            model="echo",
            summary=f"echo: {task.prompt}",
            cost_usd=0.0,
            task_type=task.task_type,
            latency_ms=(time.perf_counter() - started) * 1000,
            attempt=task.attempt,
        )
        return [Outgoing(findings_stream, encode(finding))]

    return handle


async def run_demo(redis_url: str, namespace: str) -> int:
    swarm = SwarmSettings(REDIS_URL=redis_url, SWARM_NAMESPACE=namespace, METRICS_PORT=0)
    settings = BusSettings(visibility_timeout_s=30)
    async with service_context("demo", swarm, settings) as ctx:
        names, bus = ctx.names, ctx.bus
        flat = {
            "prompt": "Research supplier terms",
            "complexity": "simple",
            "task_id": f"demo-flat-{int(time.time())}",
        }
        data = encode_data(
            Task(
                task_id=f"demo-json-{int(time.time())}",
                prompt="Summarise 2020-2022 payment terms",
                complexity="medium",
            )
        )
        bad = {"prompt": "", "complexty": "simple"}
        print(f"posting 3 tasks to {names.intake}:")
        print(
            f"  redis-cli XADD {names.intake} '*' "
            + " ".join(f'{k} "{v}"' for k, v in flat.items())
        )
        print(f"  redis-cli XADD {names.intake} '*' data '{data['data'][:60]}...'")
        print(f"  redis-cli XADD {names.intake} '*' prompt \"\" complexty simple   (malformed)")
        ids = [await bus.publish(names.intake, f) for f in (flat, data, bad)]

        sub = bus.subscribe(names.intake, DEMO_GROUP, ctx.member_id)
        await sub.start()
        stop = asyncio.Event()
        handler = echo(ctx.member_id, names.findings, names.rejected)
        served = asyncio.create_task(serve(sub, handler, stop=stop, drain_timeout_s=5))
        findings, rejections = await _await_results(
            bus.redis,
            names.findings,
            rejected_stream=names.rejected,
            task_ids={flat["task_id"], _task_id(data)},
            bad_id=ids[2],
        )
        stop.set()
        await served

    print(f"\nfindings in {names.findings}:")
    for f in findings:
        print(
            f"  {f.task_id}: {f.summary!r} (vendor={f.vendor}, model={f.model}, "
            f"status={f.status.value}, cost=${f.cost_usd:.2f})"
        )
    print(f"\nrejected in {names.rejected}:")
    for r in rejections:
        print(f"  entry {r['source_id']}: {r['reason']}")
    print(f"\nlook for yourself: redis-cli XRANGE {names.findings} - +")
    ok = len(findings) == 2 and len(rejections) == 1
    print("demo ok" if ok else "demo FAILED: not every task came back")
    return 0 if ok else 1


def _task_id(fields: dict[str, str]) -> str:
    return decode(Task, fields).task_id


async def _await_results(
    redis: Any,
    findings_stream: str,
    *,
    rejected_stream: str,
    task_ids: set[str],
    bad_id: str,
    timeout_s: float = 15.0,
) -> tuple[list[Finding], list[dict[str, str]]]:
    deadline = time.monotonic() + timeout_s
    while True:
        raw = await redis.xrange(findings_stream, "-", "+")
        findings = [f for f in (decode(Finding, e[1]) for e in raw) if f.task_id in task_ids]
        rejected = [
            {k.decode(): v.decode(errors="replace") for k, v in e[1].items()}
            for e in await redis.xrange(rejected_stream, "-", "+")
        ]
        rejected = [r for r in rejected if r.get("source_id") == bad_id]
        if (len({f.task_id for f in findings}) == len(task_ids) and rejected) or (
            time.monotonic() > deadline
        ):
            return findings, rejected
        await asyncio.sleep(0.05)
