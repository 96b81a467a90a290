"""The last hour's cost per vendor and model, read from the findings stream: only findings
inside the window count, each once, new ones are added as they come, old ones drop out,
and a window that fell behind (nobody watched for longer than the window) starts again at
its edge instead of reading the past."""

from __future__ import annotations

from redis.asyncio import Redis

from services.console.window import CostWindow
from shared.protocol import Names

HOUR_MS = 3_600_000
NOW = 1_800_000_000_000  # a fixed "now", in unix ms


async def _finding(redis: Redis, names: Names, at_ms: int, model: str, cost: str = "") -> None:
    fields = {"task_id": f"t{at_ms}", "vendor": "deepseek", "model": model,
              "input_tokens": "10", "output_tokens": "5", "status": "ok"}  # fmt: skip
    if cost:
        fields["cost_usd"] = cost
    await redis.xadd(names.findings, fields, id=f"{at_ms}-0")  # type: ignore[arg-type]


def _usage(window: CostWindow) -> dict[str, tuple[int, int, float, int]]:
    return {
        r.model: (r.usage.findings, r.usage.input_tokens, round(r.usage.cost_usd, 6),
                  r.usage.unpriced)
        for r in window.rows()
    }  # fmt: skip


async def test_the_window_counts_each_finding_of_the_last_hour_once(
    redis: Redis, names: Names
) -> None:
    await _finding(redis, names, NOW - HOUR_MS - 60_000, "flash", "9.0")  # too old
    await _finding(redis, names, NOW - 30 * 60_000, "flash", "0.25")
    await _finding(redis, names, NOW - 10 * 60_000, "pro", "1.5")
    await _finding(redis, names, NOW - 5 * 60_000, "my-llama")  # unpriced: not $0
    window = CostWindow(names.findings, window_s=3600, batch=2)
    await window.refresh(redis, now_ms=NOW)
    assert not window.caught_up  # two of three read: a batch at a time
    await window.refresh(redis, now_ms=NOW)
    assert window.caught_up
    assert _usage(window) == {
        "pro": (1, 10, 1.5, 0),
        "flash": (1, 10, 0.25, 0),
        "my-llama": (1, 10, 0.0, 1),
    }
    await window.refresh(redis, now_ms=NOW)  # nothing new: nothing counted twice
    await _finding(redis, names, NOW + 1000, "flash", "0.25")
    await window.refresh(redis, now_ms=NOW + 2000)
    assert _usage(window)["flash"] == (2, 20, 0.5, 0)

    # 40 minutes on, the finding of NOW - 30 min has left the window.
    await window.refresh(redis, now_ms=NOW + 40 * 60_000)
    assert _usage(window)["flash"] == (1, 10, 0.25, 0)

    # Two hours unwatched: everything read before is out; reading resumes at the edge.
    await _finding(redis, names, NOW + 2 * HOUR_MS, "pro", "2.0")
    await window.refresh(redis, now_ms=NOW + 2 * HOUR_MS + 1000)
    assert _usage(window) == {"pro": (1, 10, 2.0, 0)}
