"""Where swarmbus's consumer spends its CPU in the no-op benchmark: py-spy (from the bench
venv) samples peer_swarmbus.py (the project's venv), and this prints the consume phase's
share per cost centre and the top functions by self time (the fill and imports left out).

    .venv-bench/bin/python bench/peers/profile.py [--n 200000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# First match wins: (cost centre, frames that must appear in order in the stack).
CENTRES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("handler task: structlog bind/clear_contextvars", ("_handle ", "_contextvars")),
    ("handler task: log.debug through the lazy logger proxy", ("_handle ", "BoundLoggerLazyProxy")),
    ("handler task: Acker.submit (future per entry + shield)", ("_handle ", "Acker.submit")),
    ("handler task: _settle (prometheus labels/inc/observe)", ("_handle ", "Subscription._settle")),
    ("handler task: ack, the rest (AckOp, _finish)", ("_handle ", "Delivery.ack")),
    ("handler task: the no-op handler", ("_handle ", "handler")),
    ("handler task: _handle itself", ("_handle ",)),
    ("serve loop: create_task per delivery", ("serve ", "create_task")),
    ("serve loop: Subscription.__anext__ (Delivery, gauge)", ("serve ", "__anext__")),
    ("serve loop: the rest", ("serve ",)),
    ("acker: XACK per batch (+ an empty effects pipeline)", ("Acker.run",)),
    ("reader: XREADGROUP and reply parsing", ("Subscription._read_loop",)),
    ("upkeep tasks (reclaim, lease, trim)", ("Subscription._every",)),
    ("benchmark: end-of-run polling", ("wait_acked_async",)),
    ("event loop: epoll wait", ("select",)),
    ("event loop: running callbacks and task steps", ("run_forever",)),
)
SKIP = ("publish_many", "_find_and_load")  # the untimed fill, imports


def frame_names(stack: str) -> list[str]:
    return [re.sub(r" \(.*\)$", " ", f) for f in stack.split(";")]


def centre(frames: list[str]) -> str:
    for name, pattern in CENTRES:
        i = 0
        for f in frames:
            if i < len(pattern) and pattern[i] in f:
                i += 1
        if i == len(pattern):
            return name
    return "other: " + frames[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000, help="samples per second")
    parser.add_argument("--project-python", default=str(ROOT / ".venv/bin/python"))
    parser.add_argument("--py-spy", default=str(Path(sys.executable).parent / "py-spy"))
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        cmd = [args.py_spy, "record", "--function", "--format", "raw", "--rate", str(args.rate)]
        cmd += ["-o", out.name, "--", args.project_python, str(HERE / "peer_swarmbus.py")]
        cmd += ["--n", str(args.n)]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        lines = Path(out.name).read_text().splitlines()
    centres: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        frames = frame_names(stack)
        if any(s in f for f in frames for s in SKIP):
            continue
        centres[centre(frames)] += int(count)
        selfs[frames[-1].strip()] += int(count)
    total = sum(centres.values())
    print(f"swarmbus consumer, {args.n:,} no-op messages: {total:,} samples in the consume phase")
    for name, count in centres.most_common():
        print(f"{count / total:>7.1%}  {name}")
    print("top functions by self time:")
    for name, count in selfs.most_common(20):
        print(f"{count / total:>7.1%}  {name}")


if __name__ == "__main__":
    main()
