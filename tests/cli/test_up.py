"""`swarm up`, typed as a user types it: the local fleet as processes, against a real Redis and
the vendor simulator; `swarm status` and `swarm post` see it; SIGTERM or Ctrl-C stops every
process it started, and none is left behind."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.protocol import Names
from tests.cli.conftest import Swarm
from tests.cli.test_demo_signals import _alive, _in_namespace, _kill

SWARM = Path(sys.executable).parent / "swarm"  # the installed command
DRAIN_S = 3.0  # SWARM_DRAIN_TIMEOUT_S here; `swarm up` kills 10 s after it
_STARTED = re.compile(r"^started (\S+)\s+pid (\d+)\s+log (\S+)")


@dataclass
class Up:
    proc: asyncio.subprocess.Process
    out: list[str]  # its standard output (and error) so far, line by line
    pids: dict[str, int]  # name -> pid, from its "started" lines

    async def read_until(self, text: str, timeout: float = 90) -> None:
        assert self.proc.stdout is not None
        stream = self.proc.stdout

        async def read() -> None:
            while True:
                line = (await stream.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError(f"swarm up ended before {text!r}:\n{''.join(self.out)}")
                self.out.append(line)
                if m := _STARTED.match(line):
                    self.pids[m.group(1)] = int(m.group(2))
                if text in line:
                    return

        await asyncio.wait_for(read(), timeout)

    async def stop(self, sig: signal.Signals) -> tuple[int, str, float]:
        """Send `sig`; its exit code, all it printed, and the seconds it took to exit."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rest, _ = await asyncio.wait_for(self.proc.communicate(), DRAIN_S + 40)
        return (
            self.proc.returncode or 0,
            "".join(self.out) + rest.decode(errors="replace"),
            (time.monotonic() - t0),
        )


def _env(swarm: Swarm) -> dict[str, str]:
    env = {k: v for k, v in swarm.env().items() if not k.endswith("_API_KEY")}
    env.pop("SWARM_SIMULATOR_URL", None)
    return {
        **env,
        "SWARM_DRAIN_TIMEOUT_S": str(DRAIN_S),
        "SWARM_HEARTBEAT_INTERVAL_S": "0.3",
        "SWARM_HEARTBEAT_TTL_S": "1.5",
    }


@pytest.fixture
async def up_factory(swarm: Swarm, names: Names, tmp_path: Path) -> AsyncIterator[list[Up]]:
    """Started `swarm up`s; whatever a failing test leaves running is killed."""
    ups: list[Up] = []
    yield ups
    for up in ups:
        if up.proc.returncode is None:
            up.proc.kill()
            await up.proc.wait()
        _kill(set(up.pids.values()) | _in_namespace(names.namespace))


async def _up(ups: list[Up], swarm: Swarm, cwd: Path, *args: str) -> Up:
    proc = await asyncio.create_subprocess_exec(
        str(SWARM),
        "up",
        *args,
        cwd=cwd,  # no developer's .env; the logs go to cwd/.swarm-up
        env=_env(swarm),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # no terminal of ours: only the signal we send reaches it
    )
    up = Up(proc, [], {})
    ups.append(up)
    await up.read_until("swarm up:")
    return up


def _live(status: dict[str, object]) -> dict[str, int]:
    rows = status["live"]
    assert isinstance(rows, list)
    return {r["service"]: r["replicas"] for r in rows}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads Linux /proc")
async def test_up_scales_a_vendor_serves_tasks_and_sigterm_stops_every_process(
    swarm: Swarm, names: Names, tmp_path: Path, up_factory: list[Up]
) -> None:
    up = await _up(up_factory, swarm, tmp_path, "--scale", "deepseek=3")

    # One line per process, with its pid and log file: the simulator (no key is set), the
    # dispatcher, the collector, three deepseek workers and one of every other vendor.
    workers = [n for n in up.pids if n.startswith("worker-")]
    assert sorted(n for n in workers if "deepseek" in n) == [
        "worker-deepseek-1",
        "worker-deepseek-2",
        "worker-deepseek-3",
    ]
    assert {"simulator", "dispatcher", "collector", "worker-claude-1", "worker-codex-1"} <= set(
        up.pids
    )
    for name in up.pids:
        assert (tmp_path / ".swarm-up" / f"{name}.log").exists()

    status = await swarm("status", "--json")
    assert status.code == 0, status.err
    live = _live(json.loads(status.out))
    assert live["worker-deepseek"] == 3
    assert live["dispatcher"] == 1 and live["collector"] == 1
    assert live["worker-claude"] == 1
    members = {m for r in json.loads(status.out)["live"] for m in r["members"]}
    for name in ("dispatcher", "collector", *workers):  # the very processes it printed
        assert any(m.endswith(f"-{up.pids[name]}") for m in members), (name, members)
    fleet_pids = set(up.pids.values())

    # Tasks posted with `swarm post` are done by the fleet.
    posted = [
        await swarm("post", f"What is {i} + {i}?", "--vendor", "deepseek", "--wait", "--json")
        for i in range(3)
    ]
    for result in posted:
        assert result.code == 0, result.out + result.err
        summary = json.loads(result.out)["result"]["summary"]
        assert summary["status"] == "ok" and summary["vendor"] == "deepseek"

    code, out, took = await up.stop(signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert f"stopped {len(up.pids)} processes" in out, out[-3000:]
    assert "stopped (SIGTERM): every service was sent SIGTERM and drained" in out
    assert took < DRAIN_S + 10 + 5  # drained, or killed 10 s after the drain
    left = _alive(fleet_pids) | _in_namespace(names.namespace)
    assert left == set(), f"still running after swarm up exited: {left}"
    after = await swarm("status", "--json")
    assert _live(json.loads(after.out)) == {}  # every member left the fleet


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads Linux /proc")
async def test_ctrl_c_stops_every_process_and_shows_them_draining(
    swarm: Swarm, names: Names, tmp_path: Path, up_factory: list[Up]
) -> None:
    up = await _up(
        up_factory, swarm, tmp_path, "--vendors", "deepseek", "--scale", "deepseek=2",
        "--show", "all",
    )  # fmt: skip
    assert set(up.pids) == {
        "simulator",
        "dispatcher",
        "collector",
        "worker-deepseek-1",
        "worker-deepseek-2",
    }
    code, out, _ = await up.stop(signal.SIGINT)
    assert code == 130, out[-3000:]
    assert "stopped 5 processes" in out and "stopped (Ctrl-C)" in out, out[-3000:]
    # The services' own lines, echoed with their process name, down to their drain.
    assert re.search(r"^worker-deepseek-2\s+info\s+service\.started", out, re.M), out[-3000:]
    assert re.search(r"^worker-deepseek-1\s+info\s+service\.stopped", out, re.M), out[-3000:]
    left = _alive(set(up.pids.values())) | _in_namespace(names.namespace)
    assert left == set(), f"still running after swarm up exited: {left}"


async def test_unreachable_redis_is_one_line_and_starts_nothing(
    swarm: Swarm, tmp_path: Path
) -> None:
    env = {**_env(swarm), "REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = await asyncio.create_subprocess_exec(
        str(SWARM), "up", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    result = await Swarm.finish(proc)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("swarm: error: Redis at redis://127.0.0.1:1/0 (REDIS_URL)")
    assert not list((tmp_path / ".swarm-up").glob("*.log"))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--scale", "deepseek=ten"], "--scale deepseek=ten: give VENDOR=N"),
        (["--vendors", "deepseek", "--scale", "claude=2"], "claude gets no workers"),
        (["--no-simulator"], "no vendor has a key"),
        (["--vendors", "mistral"], "unknown vendor 'mistral'"),
    ],
)
async def test_flags_that_cannot_work_are_one_line(
    swarm: Swarm, tmp_path: Path, args: list[str], said: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(SWARM), "up", *args, cwd=tmp_path, env=_env(swarm),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    result = await Swarm.finish(proc)
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("swarm: error: ") and said in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
