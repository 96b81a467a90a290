"""Cancel and replay: the `swarm` command's own, run as the console's Redis user.

`swarm cancel` and `swarm dlq replay` hold the rules (what counts as finished, which claim
and done-marker a replay releases, in one atomic script); the console runs them as child
processes rather than keep a second copy (services do not import each other, and these
live in the CLI). The child gets the console's REDIS_URL and namespace and never the
console's token. Each answers with its own words: those are what the page shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

from shared.runtime.settings import SwarmSettings

_NOT_PASSED = ("SWARM_CONSOLE_TOKEN", "SWARM_CONSOLE_TOKEN_FILE")


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    message: str


class Actions:
    def __init__(self, swarm: SwarmSettings, *, timeout_s: float) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_PASSED}
        env["REDIS_URL"] = swarm.redis_url.get_secret_value()
        env["SWARM_NAMESPACE"] = swarm.namespace
        env["LOG_JSON"] = "false"
        self._env = env
        self._timeout_s = timeout_s

    async def _swarm(self, *argv: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            *argv,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self._timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return 124, "", f"no answer within {self._timeout_s:g}s"
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def cancel(self, task_id: str) -> Outcome:
        """`swarm cancel TASK_ID --wait 0`: the request is posted (the page then shows the
        cancelled finding when it lands), or refused for a finished or unknown task."""
        code, out, err = await self._swarm(
            "cancel", task_id, "--wait", "0", "--reason", "cancelled from the console"
        )
        return Outcome(code == 0, _lines(out, err))

    async def replay(self, which: str, record_id: str) -> Outcome:
        """`swarm dlq replay --stream WHICH RECORD_ID`: back to its source stream."""
        code, out, err = await self._swarm("dlq", "replay", "--stream", which, "--json", record_id)
        try:
            result = json.loads(out)
        except ValueError:
            return Outcome(False, _lines(out, err) or f"swarm dlq replay exited with {code}")
        done = [
            f"replayed {r['id']} to {r['stream']} as {r['new_id']}"
            + (f" (task {r['task_id']})" if r.get("task_id") else "")
            for r in result.get("replayed", [])
        ]
        problems = [f"not replayed: {p}" for p in result.get("problems", [])]
        return Outcome(code == 0 and bool(done), "; ".join(done + problems))


def _lines(out: str, err: str) -> str:
    return " ".join(line.strip() for line in (out + "\n" + err).splitlines() if line.strip())
