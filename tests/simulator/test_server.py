"""The server as a whole: control endpoints, keep-alive, concurrency, shutdown, `run`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import anthropic
import httpx2
import openai
import pytest

from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from shared.runtime.net import free_port
from tests.simulator.conftest import LONG, USER
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
OPENAI_BODY = {"model": "gpt-4o-mini", "messages": USER}
AUTH = {"authorization": "Bearer k"}


async def test_health(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.get(f"{sim.base_url}/_sim/health")
        probes = [await http.get(f"{sim.base_url}{path}") for path in ("/livez", "/readyz")]
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    # The probe paths of every swarm image (shared/runtime/health.py) answer here too.
    assert [(p.status_code, p.text) for p in probes] == [(200, "ok\n"), (200, "ok\n")]


async def test_stats_count_by_vendor_model_and_status(
    sim: Simulator, claude: anthropic.AsyncAnthropic, oai: openai.AsyncOpenAI
) -> None:
    await claude.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=USER)
    await oai.chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[[sim:429]]"}]
        )
    async with httpx2.AsyncClient() as http:
        stats = (await http.get(f"{sim.base_url}/_sim/stats")).json()
    assert stats["total"] == 3
    assert stats["in_flight"] == 0
    assert stats["by_vendor"] == {"anthropic": 1, "openai": 2}
    assert stats["by_model"] == {"claude-haiku-4-5": 1, "gpt-4o-mini": 2}
    assert stats["by_status"] == {"200": 2, "429": 1}
    assert stats["by_vendor_status"] == {"anthropic": {"200": 1}, "openai": {"200": 1, "429": 1}}
    assert stats["faults"] == {"429": 1}


async def test_reset_clears_stats_and_caches(
    sim: Simulator, claude: anthropic.AsyncAnthropic
) -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]

    async def cache_write() -> int | None:
        msg = await claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=8,
            system=system,
            messages=USER,
        )
        return msg.usage.cache_creation_input_tokens

    assert await cache_write() == 2250
    assert await cache_write() == 0  # read from the cache
    async with httpx2.AsyncClient() as http:
        resp = await http.post(f"{sim.base_url}/_sim/reset")
        assert resp.status_code == 200
        assert (await http.get(f"{sim.base_url}/_sim/stats")).json()["total"] == 0
    assert await cache_write() == 2250  # written again: the cache was emptied


async def test_unknown_paths_are_404(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        assert (await http.get(f"{sim.base_url}/nope")).status_code == 404
        assert (
            await http.post(f"{sim.base_url}/openai/v1/embeddings", headers=AUTH, json={})
        ).status_code == 404
        assert (await http.get(f"{sim.base_url}/_sim/other")).status_code == 404


async def test_keep_alive_serves_many_requests_on_one_connection(sim: Simulator) -> None:
    async with httpx2.AsyncClient() as http:
        for _ in range(20):
            resp = await http.post(
                f"{sim.base_url}/openai/v1/chat/completions", headers=AUTH, json=OPENAI_BODY
            )
            assert resp.status_code == 200
        stream = {**OPENAI_BODY, "stream": True}
        for _ in range(5):  # chunked SSE bodies keep the connection too
            resp = await http.post(
                f"{sim.base_url}/openai/v1/chat/completions", headers=AUTH, json=stream
            )
            assert resp.text.endswith("data: [DONE]\n\n")
    connections = sim.stats()["connections"]
    assert isinstance(connections, dict) and connections["accepted"] == 1


async def test_a_malformed_request_gets_400_and_the_server_lives_on(sim: Simulator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 400")
    async with httpx2.AsyncClient() as http:
        assert (await http.get(f"{sim.base_url}/_sim/health")).status_code == 200


async def test_a_thousand_concurrent_slow_requests_all_complete() -> None:
    config = SimulatorConfig().with_overrides(latency_s=0.5)
    n, clients = 1000, 10
    # Several pools: one httpx2 pool of 1000 connections spends seconds managing itself.
    limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
    async with Simulator(config) as sim:
        pools = [httpx2.AsyncClient(limits=limits, timeout=60) for _ in range(clients)]
        try:

            async def one(i: int) -> int:
                resp = await pools[i % clients].post(
                    f"{sim.base_url}/openai/v1/chat/completions",
                    headers=AUTH,
                    json={
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"q{i}"}],
                    },
                )
                return resp.status_code

            statuses = await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            for pool in pools:
                await pool.aclose()
        assert statuses == [200] * n
        assert sim.stats()["by_status"] == {"200": n}


async def test_stop_cuts_off_a_hanging_request_promptly() -> None:
    sim = Simulator()
    await sim.start()
    async with httpx2.AsyncClient(timeout=30) as http:
        pending = asyncio.ensure_future(
            http.post(
                f"{sim.base_url}/openai/v1/chat/completions",
                headers=AUTH,
                json={
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "[[sim:timeout]]"}],
                },
            )
        )

        async def hanging() -> bool:
            return sim.stats()["in_flight"] == 1

        await eventually(hanging, what="the request to reach the simulator")
        started = time.monotonic()
        await sim.stop(grace_s=0.2)
        assert time.monotonic() - started < 3
        with pytest.raises(httpx2.RemoteProtocolError):
            await pending


async def test_run_serves_until_sigterm_and_exits_0() -> None:
    port = free_port()
    code = (
        "from services.simulator.main import run; import argparse; "
        "raise SystemExit(run(argparse.Namespace("
        f"port={port}, latency=None, error_rate=None, config=None)))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "info", "LOG_JSON": "true"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx2.AsyncClient(timeout=2) as http:

            async def healthy() -> bool:
                assert proc.returncode is None, "the simulator exited early"
                try:
                    return (await http.get(f"{base}/_sim/health")).status_code == 200
                except httpx2.TransportError:
                    return False

            await eventually(healthy, timeout=30, interval=0.1, what="the simulator to start")
        client = openai.AsyncOpenAI(api_key="k", base_url=f"{base}/openai/v1", max_retries=0)
        try:
            completion = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        finally:
            await client.close()
        assert (completion.choices[0].message.content or "").startswith("[sim gpt-4o-mini]")
        proc.send_signal(signal.SIGTERM)
        out_bytes, err_bytes = await asyncio.wait_for(proc.communicate(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    out, err = out_bytes.decode(), err_bytes.decode()
    assert proc.returncode == 0, err
    assert f"simulator on {base} anthropic={base}/anthropic openai={base}/openai/v1" in out
    assert f"deepseek={base}/deepseek/v1 compat={base}/compat/v1 gemini={base}/gemini" in out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    stopped = [e for e in events if e["event"] == "simulator.stopped"]
    assert stopped and stopped[0]["requests"] == 1  # health checks are not vendor requests
