"""swarmbus against its peers, one hop through the same Redis: publish, consume, ack.

Every system drains the same N pre-filled messages in one worker process of its own (a
fresh subprocess per run, rounds interleaved so drift hits all alike); the clock runs from
its first handler call until Redis shows all N acknowledged (see _common.py). Two modes:

* noop: N no-op messages, at most --in-flight handlers at once; msgs/s;
* io: --io-n messages whose handler sleeps 50 ms without blocking (asyncio.sleep, or
  time.sleep in Celery's threads/gevent pools), --io-in-flight at once; wall time against
  the ideal io_n / io_in_flight x 50 ms.

swarmbus runs in the project's venv; the peers in .venv-bench (taskiq, FastStream, Celery, the
raw redis-py loop) and .venv-bench-arq (arq pins redis-py < 6). Prints a table, then one JSON
line; saves bench/results/peers.json.

    .venv-bench/bin/python bench/peers/run.py [--n 20000] [--rounds 3] [--only swarmbus,arq]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import SLEEP_S

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from benchlib import emit  # noqa: E402

GOAL_VS_BEST_PEER = 2.0
GOAL_VS_RAW = 0.5


@dataclass(frozen=True)
class Case:
    label: str
    system: str
    venv: str  # which --*-python runs it
    script: str
    variant: str = ""
    io: bool = True

    @property
    def is_peer(self) -> bool:
        return self.system not in ("swarmbus", "raw")


CASES = (
    Case("swarmbus", "swarmbus", "project", "peer_swarmbus.py"),
    Case("taskiq", "taskiq", "bench", "peer_taskiq.py"),
    Case("arq", "arq", "arq", "peer_arq.py"),
    Case("faststream", "faststream", "bench", "peer_faststream.py"),
    Case("celery (solo)", "celery", "bench", "peer_celery.py", "solo", io=False),
    Case("celery (threads)", "celery", "bench", "peer_celery.py", "threads"),
    Case("celery (gevent)", "celery", "bench", "peer_celery.py", "gevent"),
    Case("raw redis-py (sync)", "raw", "bench", "peer_raw.py", "sync", io=False),
    Case("raw redis-py (asyncio)", "raw", "bench", "peer_raw.py", "async", io=False),
)


def run_one(case: Case, python: str, mode: str, n: int, in_flight: int, url: str) -> dict[str, Any]:
    cmd = [python, str(HERE / case.script), "--mode", mode, "--n", str(n)]
    cmd += ["--in-flight", str(in_flight), "--redis-url", url]
    if case.variant:
        cmd += ["--variant", case.variant]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RuntimeError(f"{case.label} ({mode}) failed, exit {proc.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["label"] = case.label
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["msgs_per_s"] for r in runs]
    secs = [r["seconds"] for r in runs]
    cpu = [r["cpu_us_per_msg"] for r in runs]
    return {
        "msgs_per_s": round(statistics.median(rates), 1),
        "msgs_per_s_min": round(min(rates), 1),
        "msgs_per_s_max": round(max(rates), 1),
        "seconds": round(statistics.median(secs), 4),
        "seconds_min": round(min(secs), 4),
        "seconds_max": round(max(secs), 4),
        "cpu_us_per_msg": round(statistics.median(cpu), 2),
        "fill_s": round(statistics.median(r["fill_s"] for r in runs), 3),
        "rounds": len(runs),
        "in_flight": runs[0]["in_flight"],
        "config": runs[0]["config"],
        "versions": runs[0]["versions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--io-n", type=int, default=2_000)
    parser.add_argument("--io-in-flight", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated labels or systems")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--project-python", default=str(ROOT / ".venv/bin/python"))
    parser.add_argument("--bench-python", default=str(ROOT / ".venv-bench/bin/python"))
    parser.add_argument("--arq-python", default=str(ROOT / ".venv-bench-arq/bin/python"))
    args = parser.parse_args()
    pythons = {"project": args.project_python, "bench": args.bench_python, "arq": args.arq_python}
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    cases = [c for c in CASES if not only or c.label in only or c.system in only]
    plan = [(c, "noop", args.n, args.in_flight) for c in cases]
    plan += [(c, "io", args.io_n, args.io_in_flight) for c in cases if c.io]

    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):  # interleaved: a slow minute hits every system alike
        for case, mode, n, in_flight in plan:
            r = run_one(case, pythons[case.venv], mode, n, in_flight, args.redis_url)
            r["round"] = rnd + 1
            runs.append(r)
            print(
                f"  round {rnd + 1} {case.label:<24}{mode:<5}{r['msgs_per_s']:>12,.0f} msgs/s"
                f"{r['seconds']:>9.3f} s{r['cpu_us_per_msg']:>9.1f} CPU µs/msg",
                file=sys.stderr,
                flush=True,
            )

    summary: dict[str, dict[str, Any]] = {"noop": {}, "io": {}}
    for case, mode, _n, _f in plan:
        mine = [r for r in runs if r["label"] == case.label and r["mode"] == mode]
        summary[mode][case.label] = summarise(mine)
    noop, io = summary["noop"], summary["io"]
    ideal_s = args.io_n / args.io_in_flight * SLEEP_S
    peer_labels = [c.label for c in cases if c.is_peer and c.label in noop]
    raw_labels = [c.label for c in cases if c.system == "raw" and c.label in noop]
    best_peer = max(peer_labels, key=lambda lb: noop[lb]["msgs_per_s"], default=None)
    raw_best = max(raw_labels, key=lambda lb: noop[lb]["msgs_per_s"], default=None)
    bus = noop.get("swarmbus", {}).get("msgs_per_s")
    vs_peer = bus / noop[best_peer]["msgs_per_s"] if bus and best_peer else None
    vs_raw = bus / noop[raw_best]["msgs_per_s"] if bus and raw_best else None

    print(
        f"peers benchmark: {args.n:,} no-op messages ({args.in_flight} in flight at most) and "
        f"{args.io_n:,} x {SLEEP_S * 1000:g} ms sleeps ({args.io_in_flight} in flight), "
        f"pre-filled, one worker process each, {args.rounds} rounds, median"
    )
    print(
        f"{'system':<26}{'msgs/s':>10}{'min':>10}{'max':>10}{'CPU µs/msg':>12}"
        f"{'I/O wall s':>12}{'ideal ' + format(ideal_s, '.2f'):>12}"
    )
    for case in cases:
        t, i = noop.get(case.label), io.get(case.label)
        if not t:
            continue
        wall = f"{i['seconds']:.3f}" if i else "-"
        share = f"{ideal_s / i['seconds']:.0%}" if i else "-"
        print(
            f"{case.label:<26}{t['msgs_per_s']:>10,.0f}{t['msgs_per_s_min']:>10,.0f}"
            f"{t['msgs_per_s_max']:>10,.0f}{t['cpu_us_per_msg']:>12.1f}{wall:>12}{share:>12}"
        )
    if vs_peer is not None:
        verdict = "met" if vs_peer >= GOAL_VS_BEST_PEER else "MISSED"
        print(
            f"swarmbus / best peer ({best_peer}): {vs_peer:.2f}x "
            f"(goal >= {GOAL_VS_BEST_PEER:g}x: {verdict})"
        )
    if vs_raw is not None:
        verdict = "met" if vs_raw >= GOAL_VS_RAW else "MISSED"
        print(
            f"swarmbus / raw loop ({raw_best}): {vs_raw:.1%} (goal >= {GOAL_VS_RAW:.0%}: {verdict})"
        )

    def rnd(x: float | None, k: int) -> float | None:
        return None if x is None else round(x, k)

    emit(
        {
            "bench": "peers",
            "n": args.n,
            "in_flight": args.in_flight,
            "io_n": args.io_n,
            "io_in_flight": args.io_in_flight,
            "io_sleep_s": SLEEP_S,
            "rounds": args.rounds,
            "msgs_per_s": {lb: s["msgs_per_s"] for lb, s in noop.items()},
            "cpu_us_per_msg": {lb: s["cpu_us_per_msg"] for lb, s in noop.items()},
            "io_wall_s": {lb: s["seconds"] for lb, s in io.items()},
            "io_ideal_s": ideal_s,
            "best_peer": best_peer,
            "raw_ceiling": raw_best,
            "ratio_vs_best_peer": rnd(vs_peer, 2),
            "goal_vs_best_peer": GOAL_VS_BEST_PEER,
            "ratio_vs_raw": rnd(vs_raw, 3),
            "goal_vs_raw": GOAL_VS_RAW,
        },
        details={"summary": summary, "runs": runs},
        redis_url=args.redis_url,
    )


if __name__ == "__main__":
    main()
