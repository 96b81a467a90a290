"""What every benchmark does last: print its one JSON line of headline numbers, and save
it with the machine it ran on to bench/results/<bench>.json (committed, so that
bench/report.py can regenerate docs/benchmarks.md without re-running anything).

In a benchmark:    from benchlib import emit; emit({"bench": "bus", ...})
Around one that only prints its JSON line last (the line is saved, nothing else changes):

    python bench/benchlib.py -- .venv/bin/python bench/swarm.py [args]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ROOT = BENCH.parent


def emit(
    result: dict[str, Any],
    *,
    details: dict[str, Any] | None = None,
    redis_url: str | None = None,
    echo: bool = True,
) -> Path:
    """Print `result` as one JSON line (unless `echo` is off) and save it; the file's path.

    `details` (per-run numbers, configurations) is saved beside it but not printed.
    """
    if echo:
        print(json.dumps(result), flush=True)
    name = str(result.get("bench") or Path(sys.argv[0]).stem)
    record = {
        "bench": name,
        "result": result,
        "details": details,
        "machine": machine(redis_url),
        "run": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([_shown(sys.argv[0]), *sys.argv[1:]]),
            **git_state(),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as fh:
        after_name = fh.read().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def rss_peak_mb(pid: int) -> float | None:
    """A process's peak resident set (VmHWM in /proc/<pid>/status), MiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def machine(redis_url: str | None = None) -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python, Redis version, and how busy the machine was."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": f"{_os_name()} (Linux {platform.release()})"
        if platform.system() == "Linux"
        else platform.platform(),
        "python": platform.python_version(),
        "redis": _redis_version(redis_url),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def _shown(path: str) -> str:
    """A script's path from the repository root when it is inside it."""
    full = Path(path).resolve()
    return full.relative_to(ROOT).as_posix() if full.is_relative_to(ROOT) else path


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit or None, "dirty_tree": dirty}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _redis_version(url: str | None) -> str | None:
    try:
        from redis import Redis  # noqa: PLC0415 (benchlib itself needs nothing installed)

        client = Redis.from_url(
            url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            socket_connect_timeout=2,
            socket_timeout=2,
        )
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception:
        return None


def _wrap(cmd: list[str]) -> int:
    """Run `cmd`, pass its output through, save its last line if it is a bench's JSON."""
    last = ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last = line.strip()
    if proc.returncode != 0:
        return proc.returncode
    try:
        result = json.loads(last)
    except ValueError:
        result = None
    if not isinstance(result, dict) or "bench" not in result:
        print("benchlib: the last line is no JSON object with a 'bench' key", file=sys.stderr)
        return 1
    sys.argv = cmd[1:] if len(cmd) > 1 else cmd  # the command recorded is the bench's own
    path = emit(result, echo=False)
    print(f"benchlib: saved {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit(__doc__)
    raise SystemExit(_wrap(args))
