"""The README's "Your own model" walkthrough, run as printed: a worker for an
OpenAI-compatible model in no price table (the simulator plays the server), a task pinned
to it by redis-cli and one by `swarm post`, their cost unpriced in `swarm findings` and
`swarm status`; then a prices file in SWARM_PRICES_FILE and the cost computed. The
commands run in bash against the real fleet (CLI processes, namespace `swarm`) on a
private redis-server; a line ending in `&` runs in the background as in a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus.findings import task_view
from tests.cli.typed_fleet import TypedFleet, typed_fleet

README = Path(__file__).resolve().parents[2] / "README.md"
STREAM_ID = re.compile(r"\d+-\d+")
SERVICE = "worker-openai-compatible"

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")


def walkthrough(title: str) -> str:
    """The sh block under `<!-- walkthrough: title -->` in the README."""
    text = README.read_text()
    start = text.index(f"<!-- walkthrough: {title} -->\n```sh\n")
    return text[start:].split("```sh\n", 1)[1].split("```", 1)[0]


def split_background(block: str) -> tuple[str, str, str]:
    """(what comes before the `... &` line, that line without `&`, what comes after)."""
    before, line, after = re.split(r"^(.+) &$", block, maxsplit=1, flags=re.MULTILINE)
    return before, line, after


async def run(fleet: TypedFleet, cwd: Path, script: str) -> str:
    """`script` in bash -euo pipefail, in `cwd` (files the walkthrough writes land there)."""
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", fleet.prelude + script,
        env=fleet.env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"{script}\n{out.decode()}"
    return out.decode()


@contextlib.asynccontextmanager
async def background(fleet: TypedFleet, cwd: Path, script: str, log: Path) -> AsyncIterator[None]:
    """`script` running as a terminal's `... &` does, until Ctrl-C (SIGTERM here)."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", fleet.prelude + script,
            env=fleet.env, cwd=cwd, stdout=out, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)


async def wait_for_worker(fleet: TypedFleet) -> None:
    await fleet.swarm.wait_live(fleet.redis, fleet.names, {SERVICE: 1})
    await asyncio.sleep(1.2)  # the dispatcher's view of the fleet is at most 1 s old


async def test_the_readme_walkthrough_runs_an_unpriced_model_then_prices_it(
    tmp_path: Path,
) -> None:
    setup, worker, steps = split_background(walkthrough("operator model"))
    xadd, *follow = [line for line in steps.splitlines() if line.strip()]
    assert xadd.startswith("ID=$(redis-cli XADD swarm:tasks") and "model my-llama" in xadd
    priced_setup, priced_worker, priced_steps = split_background(
        walkthrough("operator model prices")
    )
    logs = tmp_path / "logs"
    async with typed_fleet(logs) as fleet:
        assert fleet.swarm.sim_url is not None
        fleet.env.update(SWARM_SIMULATOR_URL=fleet.swarm.sim_url, METRICS_PORT="0")
        first = logs / "worker-openai-compatible-1.log"
        async with background(fleet, tmp_path, setup + worker, first):
            await wait_for_worker(fleet)
            entry_id = (await run(fleet, tmp_path, setup + xadd + '\necho "$ID"')).split()[-1]
            assert STREAM_ID.fullmatch(entry_id), entry_id

            async def finished() -> bool:
                return bool(await fleet.redis.exists(fleet.names.task_summary(entry_id)))

            await fleet.swarm.wait_for(finished, timeout=30, what="the pinned task's finding")
            unpriced = await run(fleet, tmp_path, f"{setup}ID={entry_id}\n" + "\n".join(follow))
            view = await task_view(fleet.redis, fleet.names, entry_id)

        # Stopped (`kill %1`); started again with the prices file.
        second = logs / "worker-openai-compatible-2.log"
        async with background(fleet, tmp_path, setup + priced_setup + priced_worker, second):
            await wait_for_worker(fleet)
            priced = await run(fleet, tmp_path, setup + priced_setup + priced_steps)
        prices_file = tmp_path / "my-prices.toml"

    # Unpriced: by redis-cli (pinned to the model) and by swarm post (pinned to the vendor).
    assert view is not None and view.summary.vendor == "openai-compatible"
    assert (view.summary.model, view.summary.cost_usd) == ("my-llama", None)
    findings = [
        ln
        for ln in unpriced.splitlines()
        if re.match(r"\s+\d{4}-\d\d-\d\d .*\sok\s+openai-compat", ln)
    ]
    assert len(findings) == 1 and "unpriced" in findings[0], unpriced  # swarm findings "$ID"
    assert re.search(r"cost\s+unpriced", unpriced), unpriced  # swarm post --wait
    assert re.search(r"openai-compatible/my-llama\s+2\s.*\sunpriced$", unpriced, re.M), unpriced
    assert "serves my-llama" in unpriced  # swarm status: the worker and what it serves
    assert "2 findings of unpriced models not included" in unpriced, unpriced
    assert "$0.000000 " not in unpriced.replace("cost so far: $0.000000", "")
    # Priced: the cost is the usage at the file's rates.
    assert prices_file.exists()
    tokens_in, tokens_out = map(int, re.findall(r"tokens\s+(\d+) in, (\d+) out", priced)[0])
    cost = float(re.findall(r"cost\s+\$([\d.]+)", priced)[0])
    expected = (tokens_in * 0.10 + tokens_out * 0.40) / 1_000_000
    assert cost > 0 and abs(cost - expected) <= 1e-6, priced  # printed to 6 decimals
    assert "unpriced" not in priced.split("result")[1], priced
