"""Render docs/benchmarks.md and its plots (docs/img/bench-*.png) from bench/results/*.json.

Nothing on the page is typed by hand: every number comes from a results file, each saved by
its benchmark with the machine it ran on (bench/benchlib.py). A results file this script
has no special section for gets a generic one (its headline numbers as a table, a bar
chart per group of numbers), so a new benchmark appears without code here.

    .venv-bench/bin/python bench/report.py      (needs matplotlib: make bench-env)
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.patches import Patch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
ORDER = (
    "peers",
    "llmstack",
    "bus",
    "worker",
    "dispatcher",
    "dispatcher_redis",
    "vendors",
    "megashard",
    "swarm",
    "cpu_profile",
    "liveness",
    "liveness-hogs",
    "memory",
    "chaos-load",
    "chaos-neighbour",
    "chaos-outage-shutdown",
    "chaos-outage-sigkill",
    "urgency",
    "tracing",
)
TITLES = {
    "peers": "swarmbus against its peers",
    "llmstack": "The LLM stack a user would build instead: LiteLLM, taskiq, the raw SDK",
    "bus": "Bus throughput against a per-message-ack loop",
    "worker": "One worker process against the original threads",
    "dispatcher": "Dispatcher throughput",
    "dispatcher_redis": "Dispatcher: Redis CPU per routed task beside another namespace's keys",
    "vendors": "Vendor adapters under 1,000 concurrent requests",
    "megashard": "Mega-shard: cached context against re-sending it",
    "swarm": "The whole swarm under load",
    "cpu_profile": "Where each service's CPU goes: the whole swarm under cProfile",
    "liveness": "Liveness: false deaths of live workers, loop against threaded heartbeat",
    "liveness-hogs": "Liveness under CPU hogs: the same with processes spinning on the CPU",
    "memory": "Memory soak: Redis used_memory under steady load with retention",
    "chaos-load": "Fault test: the whole fleet under 20,000 tasks",
    "chaos-neighbour": "Fault test: a noisy neighbour's keys on the same Redis",
    "chaos-outage-shutdown": "Fault test: Redis shut down for 5 s mid-run",
    "chaos-outage-sigkill": "Fault test: Redis SIGKILLed for 5 s mid-run",
    "urgency": "Urgency: waiting time per level behind a backlog, against one FIFO queue",
    "tracing": "Tracing: what trace context and OTLP export cost the dispatcher",
}
# The fault and load tests' figures (tests/chaos/results.py), what each run was.
CHAOS = {
    "chaos-load": "tests/chaos/test_load.py: 20,000 tasks posted at once through the dispatcher, "
    "two deepseek workers (128 in flight each, the simulator at 0.2 s a call) and the "
    "collector, each a process of its own with the shipped liveness defaults, on a private "
    "redis-server (AOF, fsync every second). A takeover would be a live worker taken for "
    "dead; vendor calls beyond one per task were paid twice.",
    "chaos-neighbour": "tests/chaos/test_load.py: the same fleet routes 3,000 tasks, then "
    "3,000 more after `DEBUG POPULATE` added 300,000 keys of another namespace to its Redis. "
    "SCANs are the calls Redis served (`INFO commandstats`); the code before issue 16 "
    "scanned the keyspace on every fleet refresh and took 237 s for 3,000 tasks beside such "
    "keys.",
    "chaos-outage-shutdown": "tests/chaos/test_redis_outage.py: 2,000 tasks, 500 posted at "
    "once and the rest in tens while the fleet works; at 1,500 findings (about 500 left "
    "queued) Redis is stopped with "
    "`SHUTDOWN` and started again 5 s later on the same port and data (`appendfsync "
    "always`); the default 60 s visibility timeout. Bound: every task done within 15 s of "
    "the return.",
    "chaos-outage-sigkill": "tests/chaos/test_redis_outage.py: the same with Redis "
    "SIGKILLed (a crash) instead of shut down.",
}
# How to make a results file that is missing (its section says so): `bench/<name>.py` unless here.
COMMANDS = {
    **{name: "make chaos-long" for name in CHAOS},
    "peers": "make bench-peers",
    "llmstack": "make bench-peers",
    "liveness-hogs": ".venv/bin/python bench/liveness.py --tasks 10000 --hogs 2",
}
# Issue 16's goals (bench/dispatcher_redis.py judges the first two with the same numbers).
GOAL_REDIS_US = 50.0  # Redis CPU per routed task, µs, with and without the foreign keys
GOAL_FOREIGN_PCT = 10.0  # ... and the foreign keys change it by at most this, ±%
GOAL_MEMORY_GROWTH = 0.05  # used_memory "flat": the fitted rise over the last half, at most
# Issue 19's goals: CPU per task against each part's own ceiling and the stacks users build.
GOAL_DISPATCHER_RATIO = 0.5  # of its raw loop's rate (bench/dispatcher.py says the same)
GOAL_DISPATCHER_CPU_MS = 0.4
GOAL_WORKER_CPU_MS = 2.5  # at 1,000 in flight, SDK call included
GOAL_WORKER_VS_ROUTER = 3.0  # tasks/s against a LiteLLM Router alone, same run
GOAL_COLLECTOR_CPU_MS = 0.2
GOAL_SWARM_CPU_MS = 2.5  # summed over the services, per task
GOAL_BUS_VS_RAW = 0.35  # no-op msgs/s against the raw asyncio loop
OURS, PEER, RAW, IDEAL = "#1f77b4", "#9aa5b1", "#2ca02c", "#d62728"


@dataclass
class Record:
    bench: str
    path: Path
    result: dict[str, Any]
    details: dict[str, Any] | None
    machine: dict[str, Any] | None
    run: dict[str, Any] | None
    error: str | None = None  # the file is missing or unreadable: its section says so


def load() -> list[Record]:
    records = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # e.g. caught while its benchmark rewrites it
            records.append(Record(path.stem, path, {}, None, None, None, f"unreadable: {exc}"))
            continue
        if isinstance(data, dict) and "result" in data and "machine" in data:
            records.append(
                Record(
                    str(data.get("bench") or path.stem),
                    path,
                    data["result"],
                    data.get("details"),
                    data.get("machine"),
                    data.get("run"),
                )
            )
        else:  # a bare JSON line saved by someone else: still shown, generically
            result = data if isinstance(data, dict) else {"value": data}
            records.append(Record(path.stem, path, result, None, None, None))
    found = {r.bench for r in records}
    for name in ORDER:
        if name not in found:
            records.append(Record(name, RESULTS / f"{name}.json", {}, None, None, None, "missing"))
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(records, key=lambda r: (rank.get(r.bench, len(ORDER)), r.bench))


# -- formatting ------------------------------------------------------------------------------
def num(x: Any, spec: str = ",.0f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | float):
        if isinstance(x, float) and math.isinf(x):
            return "∞"
        return format(x, spec)
    return str(x)


def auto(x: Any) -> str:
    """A number as a person would write it: thousands separated, sensible decimals."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return num(x)
    if isinstance(x, int) or float(x).is_integer():
        return f"{x:,.0f}"
    mag = abs(x)
    return f"{x:,.1f}" if mag >= 100 else f"{x:.3g}" if mag >= 0.001 else f"{x:.2e}"


def cells(row: dict[str, Any], *columns: tuple[str, str]) -> list[str]:
    """A table row: each (key, format spec) of `row` through num()."""
    return [num(row.get(key), spec) for key, spec in columns]


def table(head: list[str], rows: Iterable[list[str]], right: Iterable[int] = ()) -> list[str]:
    align = ["---:" if i in set(right) else "---" for i in range(len(head))]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return [*out, ""]


def image(name: str, alt: str) -> str:
    return f"![{alt}](img/{name})"


def save(fig: Any, name: str) -> str:
    IMG.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(IMG / name, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return name


def hbars(
    name: str,
    labels: list[str],
    values: list[float],
    *,
    xlabel: str,
    title: str,
    colors: list[str] | None = None,
    log: bool = False,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
    line: tuple[float, str] | None = None,
    legend: Iterable[tuple[str, str]] | None = None,
) -> str:
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.4))
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, values, color=colors or OURS)
    ax.set_yticks(ys, labels)
    top = max([*values, line[0] if line else 0, 1e-9])
    if log:
        ax.set_xscale("log")
        ax.set_xlim(10 ** math.floor(math.log10(max(min(values), 1e-9))), top * 4)
    else:
        ax.set_xlim(0, top * 1.22)
    for y, v in zip(ys, values, strict=True):
        ax.text(v * (1.08 if log else 1) + (0 if log else top * 0.01), y, fmt(v), va="center")
    handles: list[Artist] = [Patch(color=c, label=lb) for c, lb in (legend or ())]
    if line is not None:
        handles.append(
            ax.axvline(line[0], color=IDEAL, linestyle="--", linewidth=1.2, label=line[1])
        )
    if handles:
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.6 / max(0.5 * len(labels) + 0.5, 0.5)),  # under the label
            ncol=len(handles),
            fontsize="small",
            frameon=False,
        )
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return save(fig, name)


# -- machine and provenance ------------------------------------------------------------------
MACHINE_KEYS = (("cpu", "CPU"), ("cores", "Cores"), ("ram_gib", "RAM (GiB)"), ("os", "OS"))


def machine_section(records: list[Record]) -> list[str]:
    known = [r for r in records if r.machine]
    if not known:
        return ["No results file records its machine.", ""]
    out = ["## Machines and dates", ""]
    head = ["Benchmark", "Date (UTC)", "Commit", *(label for _k, label in MACHINE_KEYS)]
    head += ["Python", "Redis", "Load avg 1/5/15 min at the end"]
    rows = []
    for r in known:
        m, run = r.machine or {}, r.run or {}
        commit = run.get("commit") or "n/a"
        if run.get("dirty_tree"):
            commit += " (uncommitted changes)"
        load = m.get("load_avg_1_5_15") or []
        rows.append(
            [
                f"[{r.bench}](#{anchor(r.bench)})",
                str(run.get("date", "n/a")).replace("T", " ").replace("+00:00", ""),
                commit,
                *(
                    num(m.get(k), ",.1f") if k == "ram_gib" else num(m.get(k))
                    for k, _ in MACHINE_KEYS
                ),
                num(m.get("python")),
                num(m.get("redis")),
                " / ".join(f"{x:.2f}" for x in load) or "n/a",
            ]
        )
    out += table(head, rows)
    out.append(
        "Python is the interpreter that ran the benchmark's driver; the peers' own "
        "interpreters and package versions are in their section. A load average above the "
        "core count means other work shared the machine while the benchmark ran."
    )
    return [*out, ""]


def anchor(bench: str) -> str:
    return f"bench-{bench}"


def missing(r: Record) -> str:
    where = f"`{r.path.relative_to(ROOT).as_posix()}`"
    command = COMMANDS.get(r.bench, f".venv/bin/python bench/{r.bench}.py")
    if r.error == "missing":
        return f"No results: {where} is missing. `{command}` makes it."
    return f"No results: {where} is {r.error}. `{command}` makes it again."


def provenance(r: Record) -> str:
    run = r.run or {}
    bits = [f"from `{r.path.relative_to(ROOT).as_posix()}`"]
    if run.get("command"):
        bits.append(f"command `{run['command']}`")
    if run.get("date"):
        bits.append(f"run {run['date']}")
    return "Source: " + ", ".join(bits) + "."


# -- peers -------------------------------------------------------------------------------
def render_peers(r: Record) -> list[str]:
    res, summary = r.result, (r.details or {}).get("summary", {})
    noop, io = summary.get("noop", {}), summary.get("io", {})
    rates = res.get("msgs_per_s", {})
    walls = res.get("io_wall_s", {})
    out = [
        f"Each system drains the same {num(res.get('n'))} pre-filled messages (published "
        "before its worker starts, through its own publish API) in one worker process of its "
        "own, a fresh subprocess per run, through the same Redis; "
        f"{num(res.get('rounds'))} rounds, interleaved, median shown. The clock runs from the "
        "first handler call until the handler has run for every message and Redis shows all "
        "of them acknowledged (polled every millisecond). The no-op run allows "
        f"{num(res.get('in_flight'))} handlers at once; the I/O run sends "
        f"{num(res.get('io_n'))} messages whose handler sleeps "
        f"{num((res.get('io_sleep_s') or 0) * 1000, 'g')} ms without blocking, "
        f"{num(res.get('io_in_flight'))} at once (ideal {num(res.get('io_ideal_s'), '.2f')} s). "
        "The raw loops are the ceiling: XREADGROUP COUNT 100, the handler, one XACK per batch, "
        "no framework; they run one handler at a time, so they have no I/O row.",
        "",
    ]
    bus = rates.get("swarmbus")
    rows = []
    for label, rate in rates.items():
        s = noop.get(label, {})
        cfg = s.get("config", {})
        ver = s.get("versions", {})
        rows.append(
            [
                f"**{label}**" if label == "swarmbus" else label,
                num(rate),
                f"{num(s.get('msgs_per_s_min'))} to {num(s.get('msgs_per_s_max'))}",
                num(bus / rate, ".2f") + "x" if bus and rate else "n/a",
                num(s.get("cpu_us_per_msg"), ".1f"),
                num(s.get("fill_s"), ".2f"),
                ", ".join(f"{k} {v}" for k, v in cfg.items()),
                ", ".join(f"{k} {v}" for k, v in ver.items()),
            ]
        )
    out += ["### Throughput: no-op messages", ""]
    out += table(
        [
            "System",
            "msgs/s",
            "range",
            "swarmbus ÷ this",
            "worker CPU µs/msg",
            "fill s",
            "Configuration",
            "Versions",
        ],
        rows,
        right=(1, 2, 3, 4, 5),
    )
    out += [
        "*worker CPU µs/msg* is the worker process's own CPU time (user + system, all its "
        "threads) over the clock's span, per message: unlike msgs/s it hardly moves when "
        "other work shares the machine. *fill s* is the untimed pre-fill through the "
        "system's publish API (shown, never compared: the APIs batch differently).",
        "",
    ]
    if rates:
        labels = list(rates)
        colors = [
            OURS if lb == "swarmbus" else RAW if lb.startswith("raw") else PEER for lb in labels
        ]
        name = hbars(
            "bench-peers-throughput.png",
            labels,
            [float(rates[lb]) for lb in labels],
            xlabel="messages per second (log scale), median",
            title=f"{num(res.get('n'))} no-op messages, one worker process",
            colors=colors,
            log=True,
            legend=[(OURS, "swarmbus"), (PEER, "peers"), (RAW, "raw redis-py loop (ceiling)")],
        )
        out += [image(name, "no-op messages per second by system"), ""]
    if walls:
        ideal = float(res.get("io_ideal_s") or 0)
        rows = []
        for label, wall in walls.items():
            s = io.get(label, {})
            rows.append(
                [
                    f"**{label}**" if label == "swarmbus" else label,
                    num(wall, ".3f"),
                    f"{num(s.get('seconds_min'), '.3f')} to {num(s.get('seconds_max'), '.3f')}",
                    num(ideal / wall, ".0%") if wall else "n/a",
                    num(s.get("in_flight")),
                ]
            )
        out += ["### I/O overlap: handlers that wait", ""]
        out += table(
            ["System", "wall s", "range", "ideal ÷ wall", "in flight"], rows, right=(1, 2, 3, 4)
        )
        labels = list(walls)
        name = hbars(
            "bench-peers-io.png",
            labels,
            [float(walls[lb]) for lb in labels],
            xlabel="wall time, seconds (lower is better), median",
            title=f"{num(res.get('io_n'))} handlers sleeping "
            f"{num((res.get('io_sleep_s') or 0) * 1000, 'g')} ms, "
            f"{num(res.get('io_in_flight'))} in flight",
            colors=[OURS if lb == "swarmbus" else PEER for lb in labels],
            fmt=lambda v: f"{v:.2f} s",
            line=(ideal, f"ideal {ideal:.2f} s"),
        )
        out += [image(name, "I/O overlap wall time by system"), ""]
    return out


# -- LLM stack ---------------------------------------------------------------------------
def render_llmstack(r: Record) -> list[str]:
    res, summary = r.result, (r.details or {}).get("summary", {})
    labels: dict[str, str] = res.get("labels", {})
    rates = res.get("tasks_per_s", {})
    cores = res.get("cores", {})
    out = [
        f"The same {num(res.get('n'))} LLM tasks at {num(res.get('in_flight'))} in flight "
        f"against the vendor simulator's DeepSeek endpoint at {num(res.get('latency_s'), 'g')} s "
        f"per call (ideal {num(res.get('ideal_tasks_per_s'))} tasks/s), after an untimed "
        "warm-up wave of as many tasks as are in flight, through each stack in a process of "
        f"its own; {num(res.get('rounds'))} rounds, interleaved, median shown. The simulator "
        f"runs in its own process on core(s) {cores.get('simulator')}, the stacks on "
        f"{cores.get('stacks')}, so every stack sees the same vendor. swarmbus is one "
        "`swarm run worker` (tasks pre-filled on its vendor stream, a finding XADDed per task); "
        "the LiteLLM `Router` has the same vendor as its one deployment, alone (no queue) and "
        "inside a taskiq worker (taskiq-redis streams, each result XADDed); the raw OpenAI SDK "
        "loop (no queue) is the baseline. Every pool is sized for the in-flight count (see "
        "Configuration).",
        "",
    ]
    bus = rates.get("swarmbus")
    rows = []
    for key, rate in rates.items():
        s = summary.get(key, {})
        cfg = s.get("config", {})
        ver = s.get("versions", {})
        label = labels.get(key, key)
        rows.append(
            [
                f"**{label}**" if key == "swarmbus" else label,
                num(rate, ",.1f"),
                f"{num(s.get('tasks_per_s_min'), ',.1f')} to "
                f"{num(s.get('tasks_per_s_max'), ',.1f')}",
                num(bus / rate, ".2f") + "x" if bus and rate else "n/a",
                num(res.get("cpu_ms_per_task", {}).get(key), ".2f"),
                num(res.get("peak_rss_mb", {}).get(key)),
                num(res.get("added_p50_ms", {}).get(key), ",.0f"),
                num(res.get("added_p99_ms", {}).get(key), ",.0f"),
                num(res.get("calls_at_once", {}).get(key)),
                num(res.get("errors", {}).get(key)),
                num(res.get("simulator_cpu_ms_per_call", {}).get(key), ".2f"),
                ", ".join(f"{k} {v}" for k, v in cfg.items()),
                ", ".join(f"{k} {v}" for k, v in ver.items()),
            ]
        )
    out += table(
        [
            "Stack",
            "tasks/s",
            "range",
            "swarmbus ÷ this",
            "CPU ms/task",
            f"peak RSS MB at {num(res.get('in_flight'))} in flight",
            "added p50 ms",
            "added p99 ms",
            "calls open at once",
            "errors (all rounds)",
            "simulator CPU ms/call",
            "Configuration",
            "Versions",
        ],
        rows,
        right=range(1, 11),
    )
    out += [
        "*CPU ms/task* is the stack process's own CPU (user + system) over the measured span, "
        "per task: for swarmbus and taskiq it includes the queue's Redis work, for the Router "
        "and the SDK loop there is no queue at all. *peak RSS* is the process's VmHWM. "
        "*added* latency is each call's time as its caller measured it (the worker's "
        "`latency_ms` for swarmbus) minus the simulator's fixed latency: the time the stack "
        "adds while its own event loop is busy with the other calls in flight. It is measured "
        "around the call, so for the queue stacks it leaves out the time a claimed task waits "
        "for its call to start: *calls open at once* (tasks/s x mean call time, Little's law) "
        "shows how many of the in-flight slots were calls at the vendor. *simulator CPU "
        "ms/call* (its process, warm-up included) shows whether the vendor's side was the "
        "limit: it is the same vendor for every stack.",
        "",
    ]
    if rates:
        keys = list(rates)
        name = hbars(
            "bench-llmstack.png",
            [labels.get(k, k) for k in keys],
            [float(rates[k] or 0) for k in keys],
            xlabel="tasks per second, median",
            title=f"{num(res.get('n'))} LLM tasks, {num(res.get('in_flight'))} in flight, "
            f"{num(res.get('latency_s'), 'g')} s vendor latency",
            colors=[OURS if k == "swarmbus" else RAW if k == "sdk" else PEER for k in keys],
            fmt=lambda v: f"{v:,.0f}",
            line=(float(res.get("ideal_tasks_per_s") or 0), "ideal"),
            legend=[(OURS, "swarmbus"), (PEER, "LiteLLM stacks"), (RAW, "raw SDK loop")],
        )
        out += [image(name, "LLM tasks per second by stack"), ""]
    return out


def goals(records: list[Record]) -> list[str]:
    out = peer_goals(records)
    by_name = {r.bench: r for r in records}
    for title, makers in GOAL_TABLES:
        rows = []
        for name, make in makers.items():
            if name in by_name:
                first, *rest = make(by_name[name])
                rows += [[f"{first[0]} ({link(by_name[name])})", *first[1:]], *rest]
        if rows:
            out += [f"### {title}", ""]
            out += table(["Goal", "Target", "Measured", "Verdict"], rows)
            out += [
                "Each is judged on the numbers its section shows; a goal whose results file "
                "is missing or unreadable, or holds no such figure, is not measured.",
                "",
            ]
    return ["## Goals", "", *out] if out else []


def peer_goals(records: list[Record]) -> list[str]:
    peers = next((r for r in records if r.bench == "peers" and not r.error), None)
    if peers is None:
        return []
    res = peers.result
    rates, walls = res.get("msgs_per_s", {}), res.get("io_wall_s", {})
    cpu: dict[str, float] = res.get("cpu_us_per_msg", {})

    def per_cpu(other: str | None, spec: str = ".2f", unit: str = "x") -> str:
        """The same ratio on the worker's CPU per message instead of wall-clock msgs/s."""
        mine, theirs = cpu.get("swarmbus"), cpu.get(other or "")
        if not mine or not theirs:
            return "n/a"
        return f"{theirs / mine:{spec}}{unit} ({theirs:.1f} ÷ {mine:.1f} µs)"

    rows = []
    vs_peer, goal_peer = res.get("ratio_vs_best_peer"), res.get("goal_vs_best_peer")
    if vs_peer is not None and goal_peer is not None:
        best = res.get("best_peer")
        rows.append(
            [
                f"no-op msgs/s against the best peer ({best}: {num(rates.get(best))})",
                f"≥ {num(goal_peer, 'g')}x",
                f"{num(vs_peer, '.2f')}x ({num(rates.get('swarmbus'))})",
                per_cpu(best),
                "met" if vs_peer >= goal_peer else "**missed**",
            ]
        )
    vs_raw, goal_raw = res.get("ratio_vs_raw"), res.get("goal_vs_raw")
    if vs_raw is not None and goal_raw is not None:
        raw = res.get("raw_ceiling")
        rows.append(
            [
                f"no-op msgs/s against the raw loop ({raw}: {num(rates.get(raw))})",
                f"≥ {num(goal_raw, '.0%')}",
                f"{num(vs_raw, '.1%')}",
                per_cpu(raw, ".1%", ""),
                "met" if vs_raw >= goal_raw else "**missed**",
            ]
        )
    if "swarmbus" in walls and res.get("io_ideal_s"):
        wall, ideal = walls["swarmbus"], res["io_ideal_s"]
        others = {k: v for k, v in walls.items() if k != "swarmbus"}
        best = min(others, key=others.__getitem__) if others else None
        rows.append(
            [
                f"I/O overlap wall time (ideal {num(ideal, '.2f')} s"
                + (f"; best peer {best}: {num(others[best], '.3f')} s)" if best else ")"),
                "close to ideal",
                f"{num(wall, '.3f')} s ({num(ideal / wall, '.0%')} of ideal)",
                "",
                "—",
            ]
        )
    if not rows:
        return []
    head = ["Goal", "Target", "Measured", "Same ratio on worker CPU per message", "Verdict"]
    return [
        "### Throughput against the peers",
        "",
        *table(head, rows),
        "The goals are judged on the measured msgs/s (median of the rounds). The CPU column "
        "is the same comparison on the worker's own CPU time per message, which holds still "
        "when other work shares the machine.",
        "",
    ]


# -- the project's other benchmarks ----------------------------------------------------------
def render_bus(r: Record) -> list[str]:
    res = r.result
    rows = [
        ["swarmbus (publish, serve, batched ack)", num(res.get("bus_msgs_per_s"))],
        ["raw redis-py, XACK per message (faster client)", num(res.get("raw_msgs_per_s"))],
        ["ratio", num(res.get("ratio"), ".2f")],
    ]
    out = [
        "N no-op messages published and then consumed in one process, the publish inside the "
        "clock, beside a raw loop that acks each message alone.",
        "",
        *table(["Loop", "msgs/s"], rows, right=(1,)),
    ]
    if res.get("bus_msgs_per_s") and res.get("raw_msgs_per_s"):
        name = hbars(
            "bench-bus.png",
            ["swarmbus", "raw, XACK each"],
            [float(res["bus_msgs_per_s"]), float(res["raw_msgs_per_s"])],
            xlabel="messages per second",
            title="publish + consume + ack, one process",
            colors=[OURS, RAW],
        )
        out += [image(name, "bus against the per-message-ack loop"), ""]
    return out


def render_worker(r: Record) -> list[str]:
    res = r.result
    levels: dict[str, dict[str, Any]] = res.get("levels", {})
    rows = [
        [
            num(int(lv)),
            num(v.get("tasks_per_s"), ",.1f"),
            num(v.get("ideal_tasks_per_s")),
            num(v.get("fraction_of_ideal"), ".0%"),
            num(v.get("threads_tasks_per_s"), ",.1f"),
            num(v.get("ratio"), ".1f") + "x",
            num(v.get("worker_cpu_ms_per_task"), ".2f"),
            num(v.get("threads_cpu_ms_per_task"), ".2f"),
        ]
        for lv, v in levels.items()
    ]
    out = [
        f"One worker process against the vendor simulator at {num(res.get('latency_s'), 'g')} s "
        f"latency, against {num(res.get('threads'))} threads with blocking clients (the original "
        f"design). Problems reported by the run: {num(res.get('problems'))}.",
        "",
        *table(
            [
                "In flight",
                "swarmbus tasks/s",
                "ideal",
                "of ideal",
                "threads tasks/s",
                "ratio",
                "worker CPU ms/task",
                "threads CPU ms/task",
            ],
            rows,
            right=range(8),
        ),
    ]
    if levels:
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = list(range(len(levels)))
        w = 0.27
        groups = (
            ("swarmbus", "tasks_per_s", OURS),
            ("40 threads", "threads_tasks_per_s", PEER),
            ("ideal", "ideal_tasks_per_s", IDEAL),
        )
        for k, (label, key, color) in enumerate(groups):
            vals = [float(v.get(key) or 0) for v in levels.values()]
            ax.bar([x + (k - 1) * w for x in xs], vals, w, label=label, color=color, alpha=0.85)
        ax.set_xticks(xs, [f"{int(lv):,} in flight" for lv in levels])
        ax.set_ylabel("tasks per second")
        ax.set_title(f"worker at {num(res.get('latency_s'), 'g')} s vendor latency")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        out += [image(save(fig, "bench-worker.png"), "worker tasks per second by level"), ""]
    return out


def render_dispatcher(r: Record) -> list[str]:
    res = r.result
    rows = [
        [
            "dispatcher (validate, route, record, forward)",
            num(res.get("routed_per_s")),
            num(res.get("cpu_ms_per_task"), ".3f"),
        ],
        [
            "raw redis-py: read 100, XADD + XACK each",
            num(res.get("raw_redis_per_s")),
            num(res.get("raw_cpu_ms_per_task"), ".3f"),
        ],
        ["ratio", num(res.get("ratio"), ".2f"), ""],
        ["router alone, per decision", "", num((res.get("route_us_per_task") or 0) / 1e3, ".3f")],
    ]
    rounds = f", median of {res['rounds']} interleaved rounds" if res.get("rounds") else ""
    out = [
        f"{num(res.get('tasks'))} tasks pre-filled in the intake, routed by one dispatcher "
        f"process, beside a raw loop{rounds}. CPU is the process's CPU time over the drain "
        "per task.",
        "",
        *table(["Measure", "tasks/s", "CPU ms per task"], rows, right=(1, 2)),
        *goal_sentences(dispatcher_goals(r), issue=19),
    ]
    if res.get("routed_per_s") and res.get("raw_redis_per_s"):
        name = hbars(
            "bench-dispatcher.png",
            ["dispatcher", "raw loop"],
            [float(res["routed_per_s"]), float(res["raw_redis_per_s"])],
            xlabel="tasks per second",
            title="intake to vendor queues, one process",
            colors=[OURS, RAW],
        )
        out += [image(name, "dispatcher against the raw loop"), ""]
    return out


def render_vendors(r: Record) -> list[str]:
    res = r.result
    rps: dict[str, float] = res.get("rps", {})
    cpu: dict[str, float] = res.get("cpu_ms_per_req", {})
    ideal = res.get("ideal_rps")
    rows = [
        [k, num(v, ",.0f"), num(v / ideal, ".0%") if ideal else "n/a", num(cpu.get(k), ".2f")]
        for k, v in rps.items()
    ]
    out = [
        f"One process holding {num(res.get('concurrency'))} concurrent requests against the "
        f"simulator; ideal {num(ideal)} req/s. Failures: {num(res.get('failures'))}.",
        "",
        *table(["Client", "req/s", "of ideal", "client CPU ms/req"], rows, right=(1, 2, 3)),
    ]
    if rps:
        labels = list(rps)
        name = hbars(
            "bench-vendors.png",
            labels,
            [float(rps[k]) for k in labels],
            xlabel="requests per second",
            title=f"{num(res.get('concurrency'))} concurrent requests, one process",
            colors=[RAW if k.startswith("raw") else OURS for k in labels],
            line=(float(ideal), f"ideal {num(ideal)}") if ideal else None,
        )
        out += [image(name, "requests per second by client"), ""]
    return out


def render_megashard(r: Record) -> list[str]:
    res = r.result
    cases: list[dict[str, Any]] = res.get("cases", [])
    rows = [
        cells(
            c,
            ("case", ""),
            ("tokens", ",.0f"),
            ("naive_p50_s", ".3f"),
            ("cached_p50_s", ".3f"),
            ("naive_usd_per_query", ".5f"),
            ("cached_usd_per_query_steady", ".5f"),
            ("steady_ratio", ".1%"),
            ("total_ratio", ".1%"),
        )
        for c in cases
    ]
    out = [
        f"{num(res.get('queries'))} questions per case to a shard service (cached context) "
        "beside the same questions sent with the whole context each time. Highest steady "
        f"ratio: {num(res.get('max_steady_ratio'), '.1%')}.",
        "",
        *table(
            [
                "Case",
                "tokens",
                "naive p50 s",
                "cached p50 s",
                "naive $/query",
                "cached $/query",
                "steady ratio",
                "total ratio",
            ],
            rows,
            right=range(1, 8),
        ),
    ]
    if cases:
        fig, ax = plt.subplots(figsize=(8, 0.75 * len(cases) + 1.6))
        ys = list(range(len(cases)))[::-1]
        h = 0.38
        steady = [float(c.get("steady_ratio") or 0) * 100 for c in cases]
        total = [float(c.get("total_ratio") or 0) * 100 for c in cases]
        ax.barh([y + h / 2 for y in ys], steady, h, label="a query after the first", color=OURS)
        ax.barh([y - h / 2 for y in ys], total, h, label="all queries", color=PEER)
        ax.set_yticks(ys, [f"{c.get('case')}\n{num(c.get('tokens'))} tokens" for c in cases])
        ax.set_xlim(0, max([*steady, *total, 1]) * 1.45)
        ax.set_xlabel("cost with the cache, % of re-sending the context")
        ax.legend(loc="lower right")
        ax.grid(axis="x", alpha=0.3)
        out += [image(save(fig, "bench-megashard.png"), "cached cost as a share of naive"), ""]
    return out


# -- issue 16: Redis CPU of the dispatcher, liveness, memory ---------------------------------
def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "met" if ok else "**missed**"


def link(r: Record) -> str:
    return f"[{r.bench}](#{anchor(r.bench)})"


def not_measured(r: Record) -> str:
    return f"no results (`{r.path.relative_to(ROOT).as_posix()}` {r.error})"


def goal_sentences(rows: list[list[str]], issue: int = 16) -> list[str]:
    """A section's goals (the rows it adds to the Goals table), one bullet each."""
    items = [f"- {g}: {target}; measured {measured}: {v}." for g, target, measured, v in rows]
    return [f"Goals of issue {issue}, as the [Goals](#goals) table judges them:", "", *items, ""]


def _judged(r: Record, goal: str, target: str, ok: bool | None, shown: str) -> list[str]:
    """One goal row: `shown` and its verdict, or not measured when the figure is missing."""
    if r.error or ok is None:
        return [goal, target, not_measured(r) if r.error else "n/a", verdict(None)]
    return [goal, target, shown, verdict(ok)]


def _at_most(r: Record, goal: str, limit: float, value: float | None, shown: str) -> list[str]:
    """A CPU goal: `value` ms per task at most `limit`."""
    return _judged(r, goal, f"≤ {limit:g} ms", None if value is None else value <= limit, shown)


def dispatcher_goals(r: Record) -> list[list[str]]:
    res = r.result
    ratio, cpu, raw = res.get("ratio"), res.get("cpu_ms_per_task"), res.get("raw_redis_per_s")
    shown = f"{num(cpu, '.3f')} ms (raw loop: {num(res.get('raw_cpu_ms_per_task'), '.3f')} ms)"
    return [
        _judged(
            r,
            "dispatcher tasks/s against its raw loop (read, XADD, XACK)",
            f"≥ {GOAL_DISPATCHER_RATIO:g}x",
            None if ratio is None else ratio >= GOAL_DISPATCHER_RATIO,
            f"{num(ratio, '.2f')}x ({num(res.get('routed_per_s'))} against {num(raw)})",
        ),
        _at_most(r, "dispatcher CPU per routed task", GOAL_DISPATCHER_CPU_MS, cpu, shown),
    ]


def llmstack_goals(r: Record) -> list[list[str]]:
    res = r.result
    rates, cpu = res.get("tasks_per_s") or {}, res.get("cpu_ms_per_task") or {}
    ours, router = rates.get("swarmbus"), rates.get("router")
    errors = (res.get("errors") or {}).get("swarmbus", 0)
    vs = None if ours is None or not router else ours / router
    goal = f"worker CPU per task at {num(res.get('in_flight'))} in flight, SDK call included"
    mine = cpu.get("swarmbus")
    return [
        _at_most(r, goal, GOAL_WORKER_CPU_MS, mine, f"{num(mine, '.2f')} ms"),
        _judged(
            r,
            "worker tasks/s against a LiteLLM Router alone, no client errors",
            f"≥ {GOAL_WORKER_VS_ROUTER:g}x, 0 errors",
            None if vs is None else vs >= GOAL_WORKER_VS_ROUTER and not errors,
            f"{num(vs, '.2f')}x ({num(ours)} against {num(router)}), {num(errors)} errors",
        ),
    ]


def swarm_goals(r: Record) -> list[list[str]]:
    cpu = r.result.get("cpu_ms_per_task") or {}
    total = sum(cpu.values()) if cpu else None
    parts = ", ".join(f"{k} {num(v, '.2f')}" for k, v in cpu.items())
    mine = cpu.get("collector")
    summed = "whole swarm CPU per task, summed over the services"
    return [
        _at_most(
            r, "collector CPU per finding", GOAL_COLLECTOR_CPU_MS, mine, f"{num(mine, '.2f')} ms"
        ),
        _at_most(r, summed, GOAL_SWARM_CPU_MS, total, f"{num(total, '.2f')} ms ({parts})"),
    ]


def bus_goals(r: Record) -> list[list[str]]:
    rates = r.result.get("msgs_per_s") or {}
    ours, raw = rates.get("swarmbus"), rates.get("raw redis-py (asyncio)")
    ratio = None if ours is None or not raw else ours / raw
    return [
        _judged(
            r,
            "bus no-op msgs/s against the raw asyncio loop, ack after the handler",
            f"≥ {GOAL_BUS_VS_RAW:.0%}",
            None if ratio is None else ratio >= GOAL_BUS_VS_RAW,
            f"{num(ratio, '.1%')} ({num(ours)} against {num(raw)})",
        )
    ]


def dispatcher_redis_goals(r: Record) -> list[list[str]]:
    res = r.result
    keys = num(res.get("foreign_keys", 300_000))
    targets = (
        f"≤ {GOAL_REDIS_US:g} µs, with and without {keys} foreign keys",
        f"within ±{GOAL_FOREIGN_PCT:g}%",
    )
    goals_ = (
        "dispatcher Redis CPU per routed task",
        f"dispatcher Redis CPU per routed task: change with {keys} keys of another namespace",
    )
    clean, noisy = res.get("redis_us_per_task"), res.get("redis_us_per_task_foreign")
    effect = res.get("foreign_effect_pct")
    if r.error or clean is None or noisy is None or effect is None:
        return [
            [g, t, not_measured(r) if r.error else "n/a", verdict(None)]
            for g, t in zip(goals_, targets, strict=True)
        ]
    old = res.get("baseline_redis_us_per_task"), res.get("baseline_redis_us_per_task_foreign")
    was = f" (the old code: {num(old[0])} → {num(old[1])} µs)" if None not in old else ""
    return [
        [
            goals_[0],
            targets[0],
            f"{num(clean, ',.1f')} µs, and {num(noisy, ',.1f')} µs with them",
            verdict(max(clean, noisy) <= GOAL_REDIS_US),
        ],
        [goals_[1], targets[1], f"{effect:+.1f}%{was}", verdict(abs(effect) <= GOAL_FOREIGN_PCT)],
    ]


def render_dispatcher_redis(r: Record) -> list[str]:
    res = r.result
    runs: list[dict[str, Any]] = (r.details or {}).get("runs") or []
    out = [
        f"{num(res.get('tasks'))} flat-field tasks pre-filled on a fresh namespace's intake, "
        "routed by one dispatcher in-process (default settings: 256 deliveries at once, fleet "
        "refreshed every 1 s) until its intake group has nothing pending, on a private "
        "redis-server whose `INFO cpu` counts only this benchmark's work; then the same "
        f"after {num(res.get('foreign_keys'))} small keys of another namespace are added to "
        "that Redis. *now* is the code of the run's commit (fleet view refreshed single-flight, "
        "cooldowns read from their index, task-id claims batched as plain commands); "
        + (
            "*baseline* is the code issue 16 measured, kept callable in the benchmark (every "
            "handler that finds the view stale refreshes it, each refresh SCANs the whole "
            "keyspace for cooldown keys, and each task's claim is a script in its own round "
            f"trip), given {num(res.get('baseline_tasks'))} tasks because "
            "it is slow with the foreign keys: per-task figures compare. "
            if "baseline_tasks" in res
            else "this run had no baseline (`--no-baseline`). "
        )
        + "Redis CPU is the `used_cpu_sys + used_cpu_user` delta over the drain; SCANs and "
        "EVALSHAs are the calls Redis served (`INFO commandstats`).",
        "",
    ]
    if runs:
        rows = [
            cells(
                x,
                ("mode", ""),
                ("foreign_keys", ",.0f"),
                ("tasks", ",.0f"),
                ("seconds", ",.2f"),
                ("routed_per_s", ",.1f"),
                ("redis_cpu_s", ",.3f"),
                ("redis_cpu_us_per_task", ",.1f"),
                ("scans", ",.0f"),
                ("evalshas", ",.0f"),
            )
            for x in sorted(runs, key=lambda x: (x.get("foreign_keys", 0), x.get("mode") != "now"))
        ]
        head = ["Code", "foreign keys", "tasks", "seconds", "tasks/s", "Redis CPU s"]
        head += ["Redis CPU µs/task", "SCANs", "EVALSHAs"]
        out += table(head, rows, right=range(1, 9))
        if len(runs) > len({(x.get("mode"), x.get("foreign_keys")) for x in runs}):
            out += ["The goals judge the median of the runs of each code and keyspace.", ""]
    else:
        out += ["The results file holds no per-run figures; its medians:", ""]
        out += table(
            ["Measure", "value"],
            [[f"`{k}`", auto(v)] for k, v in res.items() if k != "bench"],
            right=(1,),
        )
    out += goal_sentences(dispatcher_redis_goals(r))
    bars = [
        (f"now, {num(res.get('foreign_keys'))} foreign keys", "redis_us_per_task_foreign", OURS),
        ("now, no foreign keys", "redis_us_per_task", OURS),
        (
            f"baseline, {num(res.get('foreign_keys'))} foreign keys",
            "baseline_redis_us_per_task_foreign",
            PEER,
        ),
        ("baseline, no foreign keys", "baseline_redis_us_per_task", PEER),
    ]
    shown = [(label, float(res[key]), color) for label, key, color in bars if res.get(key)]
    if shown:
        name = hbars(
            "bench-dispatcher_redis.png",
            [label for label, _v, _c in shown],
            [v for _l, v, _c in shown],
            xlabel="Redis CPU per routed task, µs (log scale)",
            title="dispatcher: Redis CPU per routed task",
            colors=[c for _l, _v, c in shown],
            log=True,
            fmt=lambda v: f"{v:,.1f} µs" if v < 100 else f"{v:,.0f} µs",
            line=(GOAL_REDIS_US, f"goal ≤ {GOAL_REDIS_US:g} µs"),
            legend=[(OURS, "now"), (PEER, "baseline (issue 16)")],
        )
        out += [image(name, "Redis CPU per routed task, now and baseline"), ""]
    return out


LIVENESS_ROWS = (
    ("false_deaths", "false deaths (a live worker's entries taken over: `consumer.dead`)"),
    ("entries_reclaimed", "entries reclaimed from live workers"),
    ("duplicate_vendor_calls", "vendor calls beyond one per task (paid twice)"),
    ("member_lapses", "member lapses (a live worker missing from the fleet)"),
    ("min_ttl_left_ms", "least member TTL left, ms (the heartbeat's margin)"),
    ("heartbeats_withheld", "heartbeats withheld"),
    ("drain_s", "seconds to finish every task"),
)


def liveness_goals(r: Record) -> list[list[str]]:
    res = r.result
    goal = "false deaths of live workers, threaded heartbeat"
    deaths = res.get("after_false_deaths")
    if r.error or deaths is None:
        return [[goal, "0", not_measured(r) if r.error else "n/a", verdict(None)]]
    measured = (
        f"{num(deaths)} in {num(res.get('tasks'))} tasks, {num(res.get('workers'))} workers, "
        f"{num(res.get('hogs'))} CPU hogs on {num(res.get('cpus'))} CPUs "
        f"(loop heartbeat: {num(res.get('before_false_deaths'))})"
    )
    return [[goal, "0", measured, verdict(deaths == 0)]]


def render_liveness(r: Record) -> list[str]:
    res, det = r.result, r.details or {}
    latency = det.get("latency_s")
    out = [
        f"The whole swarm (dispatcher, collector, {num(res.get('workers'))} workers, the vendor "
        f"simulated at {num(latency * 1000 if latency is not None else None, 'g')} ms a call), "
        "each service its own process with the shipped bus defaults, on a private "
        f"redis-server; {num(res.get('tasks'))} tasks posted at once, "
        f"{num(res.get('hogs'))} extra processes spinning on the CPU, "
        f"{num(res.get('cpus'))} CPUs. No process is stopped, so every takeover of a worker's "
        "entries by a peer is a false death, and every vendor call beyond one per task is "
        "paid twice. A probe reads each worker's member key every 0.1 s: a lapse is a moment "
        "a live worker was absent from the fleet; the least TTL left is the heartbeat's "
        f"margin. *before* is `{short(det.get('before'))}` (the beats on the event loop), "
        f"*after* `{short(det.get('after'))}` (the commit that moved them to a thread), each "
        "run from a clean export of its commit in the same run.",
        "",
    ]
    rows = [
        [label, auto(res.get(f"before_{key}")), auto(res.get(f"after_{key}"))]
        for key, label in LIVENESS_ROWS
    ]
    out += table(["Measure", "before (loop)", "after (thread)"], rows, right=(1, 2))
    if res.get("before_false_deaths") == 0 and res.get("after_false_deaths") == 0:
        out += [
            "Neither variant had a false death in this run: what the thread changed is the "
            f"margin, {num(res.get('before_member_lapses'))} lapses and a least TTL left of "
            f"{num(res.get('before_min_ttl_left_ms'))} ms before against "
            f"{num(res.get('after_member_lapses'))} and "
            f"{num(res.get('after_min_ttl_left_ms'))} ms after.",
            "",
        ]
    return out + goal_sentences(liveness_goals(r))


def short(ref: Any) -> str:
    """A commit as `git log --oneline` shows it, keeping a trailing ^ or ~n."""
    text = str(ref) if ref else "n/a"
    full = re.fullmatch(r"([0-9a-f]{40})(.*)", text)
    return full[1][:7] + full[2] if full else text


def last_half(phase: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """The samples bench/memory.py takes its own last-half figures from."""
    return [x for x in phase.get("samples") or [] if x["t"] >= seconds / 2]


def backlog_grew(phase: dict[str, Any], seconds: float) -> str | None:
    """ "a → b" when the backlog grew over the last half: the swarm fell behind its intake."""
    half = last_half(phase, seconds)
    if not half or half[-1]["backlog"] <= half[0]["backlog"]:
        return None
    return f"{num(half[0]['backlog'])} → {num(half[-1]['backlog'])}"


def memory_fit(phase: dict[str, Any], seconds: float) -> tuple[float, float, float, float] | None:
    """The least-squares line through used_memory over the last half of a phase (the
    samples bench/memory.py takes its own last-half figures from): its start and end time,
    its MB at both."""
    half = last_half(phase, seconds)
    if len(half) < 2:
        return None
    ts, used = [float(x["t"]) for x in half], [float(x["used"]) / 1e6 for x in half]
    slope, icpt = statistics.linear_regression(ts, used)
    return ts[0], ts[-1], icpt + slope * ts[0], icpt + slope * ts[-1]


def growth(fit: tuple[float, float, float, float] | None) -> float | None:
    return None if fit is None or fit[2] <= 0 else fit[3] / fit[2] - 1


def memory_goals(r: Record) -> list[list[str]]:
    res, phases = r.result, r.details or {}
    goal = "Redis used_memory flat once retention is reached"
    target = f"the last half's fitted line rises ≤ {GOAL_MEMORY_GROWTH:.0%}"
    seconds, retention = res.get("seconds"), res.get("retention_s")
    bounded, baseline = phases.get("bounded"), phases.get("baseline")
    if r.error or not seconds or retention is None or not bounded:
        return [[goal, target, not_measured(r) if r.error else "n/a", verdict(None)]]
    if seconds / 2 < retention:
        measured = (
            f"not judged: the last half starts at {seconds / 2:g} s, "
            f"before the {retention:g} s retention"
        )
        return [[goal, target, measured, verdict(None)]]
    rise = growth(memory_fit(bounded, seconds))
    was = growth(memory_fit(baseline, seconds)) if baseline else None
    measured = f"{num(rise, '+.1%')} with {retention:g} s retention"
    if was is not None:
        measured += f" (default retention: {was:+.1%})"
    if grew := backlog_grew(bounded, seconds):
        measured += f"; the swarm fell behind (backlog {grew} over the half)"
    return [[goal, target, measured, verdict(None if rise is None else rise <= GOAL_MEMORY_GROWTH)]]


def render_memory(r: Record) -> list[str]:
    res, phases = r.result, r.details or {}
    seconds = float(res.get("seconds") or 0)
    labels = [k for k in ("baseline", "bounded") if isinstance(phases.get(k), dict)]
    out = [
        "The whole swarm (intake → dispatcher → one worker → collector, each its own process, "
        "the vendor simulated) on a private redis-server, tasks posted open-loop at "
        f"{num(res.get('rate'), 'g')} a second for {num(res.get('seconds'), 'g')} s per phase, "
        "a run id per 10 s; `INFO memory used_memory` sampled every 5 s with the backlog (tasks "
        "in the intake and the worker's queue not yet through: a backlog holds memory no "
        "retention frees). Two phases, each on a fresh Redis: *baseline*, the default "
        "retention (handled stream entries 1 h, per-task keys 7 days); *bounded*, "
        f"{num(res.get('retention_s'), 'g')} s for handled stream entries, findings, "
        "done-markers and task records.",
        "",
    ]
    if not labels:
        return [*out, "The results file holds no per-phase figures.", ""]

    def half_backlog(phase: dict[str, Any]) -> str:
        half = last_half(phase, seconds)
        return f"{num(half[0]['backlog'])} → {num(half[-1]['backlog'])}" if half else "n/a"

    def rise(phase: dict[str, Any]) -> str:
        fit = memory_fit(phase, seconds)
        if fit is None:
            return "n/a"
        return f"{num(growth(fit), '+.1%')} ({fit[2]:.2f} → {fit[3]:.2f} MB)"

    measures: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("tasks posted", lambda p: num(p.get("posted"))),
        ("findings collected by the end", lambda p: num(p.get("findings_collected"))),
        ("intake not yet routed at the end", lambda p: num(p.get("intake_not_yet_routed"))),
        ("backlog over the last half", half_backlog),
        ("most backlog", lambda p: num(p.get("max_backlog"))),
        ("used_memory before posting, MB", lambda p: num(p.get("base_mb"), ".2f")),
        ("used_memory at its peak, MB", lambda p: num(p.get("peak_mb"), ".2f")),
        ("used_memory at the end, MB", lambda p: num(p.get("end_mb"), ".2f")),
        (
            "last half, first to last sample: MB per minute",
            lambda p: num(p.get("last_half_mb_per_min"), "+.3f"),
        ),
        (
            "last half, first to last sample: bytes per task posted",
            lambda p: num(p.get("last_half_bytes_per_task"), "+,.0f"),
        ),
        ("last half, fitted line: rise", rise),
    ]
    out += table(
        ["Measure", *labels],
        [[m, *(f(phases[k]) for k in labels)] for m, f in measures],
        right=range(1, len(labels) + 1),
    )
    out += [
        f"*Flat*, the rule this page judges by: the least-squares line through the used_memory "
        f"samples of the last half of the phase (from {seconds / 2:g} s; the bounded "
        f"retention is {num(res.get('retention_s'), 'g')} s) rises by at most "
        f"{GOAL_MEMORY_GROWTH:.0%} of its value at the half's start; a fall counts as flat. "
        "A line rather than the first and last samples, which jump by megabytes as trims and "
        "expiries land.",
        "",
        *goal_sentences(memory_goals(r)),
    ]
    for k in labels:
        if grew := backlog_grew(phases[k], seconds):
            out += [
                f"In the {k} phase the backlog grew over the last half "
                f"({grew}) and {num(phases[k].get('findings_collected'))} "
                f"of {num(phases[k].get('posted'))} findings were collected by the end: the "
                f"swarm did not keep up with {num(res.get('rate'), 'g')} tasks a second on "
                "this machine (its load average is in [Machines and dates]"
                "(#machines-and-dates)), so the curve is that of a swarm behind its intake.",
                "",
            ]
    out += [image(memory_plot(res, phases, labels), "Redis used_memory over the soak"), ""]
    return out


def memory_plot(res: dict[str, Any], phases: dict[str, Any], labels: list[str]) -> str:
    seconds = float(res.get("seconds") or 0)
    fig, (top, low) = plt.subplots(
        2, 1, figsize=(8, 5.2), sharex=True, gridspec_kw={"height_ratios": (3, 1)}
    )
    colors = {"baseline": PEER, "bounded": OURS}
    for k in labels:
        samples = phases[k].get("samples") or []
        ts = [float(x["t"]) for x in samples]
        top.plot(ts, [x["used"] / 1e6 for x in samples], marker=".", color=colors[k], label=k)
        low.plot(ts, [x["backlog"] for x in samples], color=colors[k], label=k)
        fit = memory_fit(phases[k], seconds)
        if fit is not None:
            top.plot(fit[:2], fit[2:], color=colors[k], linestyle="--", linewidth=1)
    if res.get("retention_s") is not None:
        for ax in (top, low):
            ax.axvline(float(res["retention_s"]), color=IDEAL, linestyle=":", linewidth=1.2)
        top.text(
            float(res["retention_s"]),
            0,
            f" retention {res['retention_s']:g} s (bounded)",
            color=IDEAL,
            fontsize="small",
            va="bottom",
            transform=top.get_xaxis_transform(),
        )
    for ax in (top, low):
        ax.axvspan(seconds / 2, seconds, color="#f0f0f0", zorder=0)
        ax.grid(alpha=0.3)
    top.set_ylim(bottom=0)
    top.set_ylabel("used_memory, MB")
    top.set_title(
        f"{num(res.get('rate'), 'g')} tasks/s for {num(res.get('seconds'), 'g')} s; "
        "shaded: the last half, judged by its fitted line (dashed)"
    )
    top.legend(loc="upper left")
    low.set_ylabel("backlog, tasks")
    low.set_xlabel("seconds since posting began")
    return save(fig, "bench-memory.png")


# -- anything else ---------------------------------------------------------------------------
def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(prefix, value)]  # a table of its own
    return [(prefix, value)]


def render_chaos(r: Record) -> list[str]:
    """A fault test's rows, after what the test did (render_generic's tables)."""
    return [CHAOS[r.bench], "", *render_generic(r)[2:]]


def render_generic(r: Record) -> list[str]:
    scalars, tables = [], []
    for key, value in flatten({k: v for k, v in r.result.items() if k != "bench"}):
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((key, value))
        elif isinstance(value, list):
            scalars.append((key, ", ".join(auto(v) for v in value)))
        else:
            scalars.append((key, auto(value)))
    out = ["Headline numbers as the benchmark printed them (its JSON line).", ""]
    if scalars:
        out += table(["Key", "Value"], [[f"`{k}`", v] for k, v in scalars], right=(1,))
    for key, rows in tables:
        cols = list(dict.fromkeys(c for row in rows for c in row))
        numeric = [
            i
            for i, c in enumerate(cols)
            if all(isinstance(row.get(c), int | float) for row in rows if c in row)
        ]
        out += [f"`{key}`:", ""]
        out += table(
            cols,
            [
                [
                    auto(row.get(c))
                    if not isinstance(row.get(c), dict | list)
                    else json.dumps(row.get(c))
                    for c in cols
                ]
                for row in rows
            ],
            right=numeric,
        )
    for n, (key, group) in enumerate(numeric_groups(r.result)[:4]):
        name = hbars(
            f"bench-{r.bench}-{n + 1}.png",
            list(group),
            list(group.values()),
            xlabel=key,
            title=f"{r.bench}: {key}",
            fmt=auto,
        )
        out += [image(name, f"{r.bench} {key}"), ""]
    return out


def numeric_groups(value: Any, prefix: str = "") -> list[tuple[str, dict[str, float]]]:
    """Dicts of two or more plain numbers (e.g. {"1 worker": 80, "2 workers": 150})."""
    found: list[tuple[str, dict[str, float]]] = []
    if isinstance(value, dict):
        nums = {
            str(k): float(v)
            for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if len(nums) >= 2 and len(nums) == len(value) and prefix:
            found.append((prefix, nums))
        for k, v in value.items():
            if isinstance(v, dict):
                found += numeric_groups(v, f"{prefix}.{k}" if prefix else str(k))
    return found


def render_cpu_profile(r: Record) -> list[str]:
    services = (r.details or {}).get("services") or {}
    res = r.result
    out = [
        f"{num(res.get('tasks'))} tasks through the dispatcher, one DeepSeek worker and the "
        f"collector (the simulator at {num(res.get('latency_s'), 'g')} s a call), each its own "
        "process under cProfile for the run only. cProfile slows every Python call, so these "
        "are shares of each service's profiled time (time waiting in the event loop's epoll "
        "left out) and microseconds per task under the profiler: where to look next, not "
        "how fast it is (the sections above measure that).",
        "",
    ]
    for name, svc in services.items():
        rows = [
            [pkg, num(v["share"], ".1%"), num(v["us_per_task"])]
            for pkg, v in svc["packages"].items()
        ]
        top = [
            [f"`{row['function']}`", num(row["share"], ".1%"), num(row["us_per_task"])]
            for row in svc["top"]
        ]
        out += [
            f"**{name}**: {num(svc['profiled_us_per_task'])} µs per task under the profiler.",
            "",
            *table(["package", "share", "µs per task"], rows, right=(1, 2)),
            *table(["heaviest functions (own time)", "share", "µs per task"], top, right=(1, 2)),
        ]
    return out


RENDERERS: dict[str, Callable[[Record], list[str]]] = {
    "cpu_profile": render_cpu_profile,
    "peers": render_peers,
    "llmstack": render_llmstack,
    "bus": render_bus,
    "worker": render_worker,
    "dispatcher": render_dispatcher,
    "vendors": render_vendors,
    "megashard": render_megashard,
    "dispatcher_redis": render_dispatcher_redis,
    "liveness": render_liveness,
    "liveness-hogs": render_liveness,
    "memory": render_memory,
    **{name: render_chaos for name in CHAOS},
}
GoalRows = Callable[[Record], list[list[str]]]
GOAL_TABLES: list[tuple[str, dict[str, GoalRows]]] = [
    (
        "Issue 16: Redis CPU, liveness, memory",
        {
            "dispatcher_redis": dispatcher_redis_goals,
            "liveness": liveness_goals,
            "liveness-hogs": liveness_goals,
            "memory": memory_goals,
        },
    ),
    (
        "Issue 19: CPU per task against each part's ceiling",
        {
            "dispatcher": dispatcher_goals,
            "llmstack": llmstack_goals,
            "swarm": swarm_goals,
            "peers": bus_goals,
        },
    ),
]


def main() -> None:
    records = load()
    for stale in IMG.glob("bench-*.png"):
        stale.unlink()
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/report.py from bench/results/*.json: do not edit by hand. -->",
        "",
        "Every number and plot here is generated by `bench/report.py` from the results files "
        "in `bench/results/`, each saved by its benchmark with the machine it ran on. "
        "`make bench` runs every benchmark and then regenerates this page; "
        "`make bench-report` regenerates it from the saved results alone.",
        "",
    ]
    if all(r.error for r in records):
        out += ["No results yet: run `make bench`.", ""]
    out += goals(records)
    out += machine_section(records)
    for r in records:
        out += [
            f'<a id="{anchor(r.bench)}"></a>',
            "",
            f"## {TITLES.get(r.bench, r.bench)} (`{r.bench}`)",
            "",
        ]
        if r.error:
            out += [missing(r), ""]
            continue
        out += RENDERERS.get(r.bench, render_generic)(r)
        out += [provenance(r), ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {DOC.relative_to(ROOT)} and {len(list(IMG.glob('bench-*.png')))} plots")


if __name__ == "__main__":
    main()
