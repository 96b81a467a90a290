"""The headline usage, on a real engine: build every image, `docker compose --profile sim up
--wait --scale worker-deepseek=10`, tasks posted with redis-cli as the README prints it,
then faults an operator meets (replicas killed, Redis restarted, scaling down mid-run), the
mega-shard answering inside the network, every worker of a vendor stopped with tasks waiting
(the lag alert reaches a webhook), and `down -v` leaving nothing behind.

The tests run in file order on one stack; each phase's wall time is printed.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tests.e2e.conftest import ROOT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

README = (ROOT / "README.md").read_text()
NS = "swarm"
FIRST, KILLED, RESTART, SCALE_DOWN, LAG = 500, 500, 300, 300, 150
posted: list[str] = []


def readme_line(pattern: str) -> str:
    """The README line (a shell command) that matches, continuation lines joined."""
    text = README.replace("\\\n", " ")
    found = [line.strip() for line in text.splitlines() if re.search(pattern, line)]
    assert found, f"README no longer shows a line matching {pattern!r}"
    return re.sub(r"\s+#.*$", "", found[0])


def redis(stack: Stack) -> Redis:
    return stack.redis()


def post(stack: Stack, tmp: Path, start: int, count: int) -> list[str]:
    """`count` DeepSeek tasks through one `redis-cli` exec, with the README's bulk line."""
    ids = [f"e2e-{i:05d}" for i in range(start, start + count)]
    lines = [
        f'XADD {NS}:tasks * task_id {tid} vendor deepseek prompt "Summarise supplier '
        f'risk for region {tid[-3:]} in two sentences"'
        for tid in ids
    ]
    (tmp / "tasks.redis").write_text("\n".join(lines) + "\n")
    out = stack.shell(readme_line(r"redis-cli < tasks\.redis"), cwd=tmp)
    entry_ids = [line for line in out.split() if re.fullmatch(r"\d+-\d+", line)]
    assert len(entry_ids) == count, out[-2000:]
    posted.extend(ids)
    return ids


def findings(stack: Stack) -> tuple[Counter[str], dict[str, str]]:
    """Findings per task id, and the worker that wrote each one."""
    per_task: Counter[str] = Counter()
    worker: dict[str, str] = {}
    for _id, fields in redis(stack).xrange(f"{NS}:findings"):
        per_task[fields["task_id"]] += 1
        worker[fields["task_id"]] = fields["worker_id"]
        assert fields.get("status") == "ok", fields
    return per_task, worker


def wait_all_done(stack: Stack, timeout: float = 240) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        per_task, _ = findings(stack)
        missing = [t for t in posted if per_task[t] == 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"{len(missing)} tasks have no finding, e.g. {missing[:5]}"
    return per_task


def assert_exactly_once(per_task: Counter[str]) -> None:
    twice = {t: n for t, n in per_task.items() if t in posted and n != 1}
    assert not twice, f"tasks with more than one finding: {list(twice.items())[:10]}"


def rfc3339(text: str) -> datetime:
    """Alertmanager's times (nanoseconds, Z) as an aware datetime."""
    found = re.fullmatch(r"([\d-]+T[\d:]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert found, text
    zone = "+00:00" if found.group(3) == "Z" else found.group(3)
    return datetime.fromisoformat(f"{found.group(1)}.{(found.group(2) or '0')[:6]:0<6}{zone}")


def test_images_build(stack: Stack) -> None:
    out = stack.compose("build", *stack.services, timeout=1200)
    # The legacy builder says what it sends: the root .dockerignore keeps .venv, .git and
    # .env out (hundreds of MB without it). BuildKit prints no such line.
    for size, unit in re.findall(
        r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", out.stdout + out.stderr
    ):
        assert unit in ("B", "kB") or (unit == "MB" and float(size) < 5), size + unit
    stack.phases.done("build every image")


def test_fleet_comes_up_healthy(stack: Stack) -> None:
    line = readme_line(r"docker compose --profile sim up -d --wait --scale worker-deepseek=10")
    stack.shell(f"{line} {' '.join(stack.services)}", timeout=300)
    ps = stack.compose("ps", "--format", "json").stdout
    rows = [json.loads(r) for r in ps.splitlines() if r.strip()]
    unhealthy = [r["Name"] for r in rows if r.get("Health") not in ("", "healthy")]
    assert not unhealthy, unhealthy
    assert len(stack.container_ids("worker-deepseek")) == 10
    stack.phases.done("up --wait, 10 worker-deepseek replicas healthy")


def test_readme_single_task_line(stack: Stack, tmp_path: Path) -> None:
    before = redis(stack).xlen(f"{NS}:findings")
    out = stack.shell(readme_line(r"docker compose exec redis redis-cli XADD"), cwd=tmp_path)
    assert re.fullmatch(r"\d+-\d+", out.strip()), out
    deadline = time.monotonic() + 60
    while redis(stack).xlen(f"{NS}:findings") == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert redis(stack).xlen(f"{NS}:findings") == before + 1
    stack.phases.done("README's single redis-cli XADD answered")


def test_500_tasks_one_finding_each_spread_over_10_replicas(stack: Stack, tmp_path: Path) -> None:
    post(stack, tmp_path, 0, FIRST)
    per_task = wait_all_done(stack)
    assert_exactly_once(per_task)
    _, worker = findings(stack)
    consumers = redis(stack).xinfo_consumers(f"{NS}:queue:deepseek", "worker-deepseek")
    names = {c["name"] for c in consumers}
    assert len(names) == 10, names  # no replica was judged dead and removed
    did_work = {worker[t] for t in posted}
    assert did_work == names, f"consumers without work: {names - did_work}"
    stack.phases.done(f"{FIRST} tasks by redis-cli, one finding each, all 10 replicas worked")


def test_prometheus_finds_every_replica(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/targets?state=active"
    deadline = time.monotonic() + 120
    while True:
        with urllib.request.urlopen(url, timeout=5) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        up = [
            t
            for t in targets
            if t["labels"].get("service") == "worker-deepseek" and t["health"] == "up"
        ]
        if len(up) == 10 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert len(up) == 10, [(t["labels"], t["health"], t.get("lastError")) for t in targets]
    stack.phases.done("Prometheus lists 10 worker-deepseek targets up")


def test_killed_replicas_lose_nothing(stack: Stack, tmp_path: Path) -> None:
    post(stack, tmp_path, FIRST, KILLED)
    victims = stack.container_ids("worker-deepseek")[:3]
    stack.run(["docker", "kill", *victims])
    assert_exactly_once(wait_all_done(stack))
    stack.phases.done(f"3 replicas killed with {KILLED} tasks in flight: all done, once each")


def test_redis_restart_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    post(stack, tmp_path, FIRST + KILLED, RESTART)
    stack.compose("restart", "redis")
    assert_exactly_once(wait_all_done(stack, timeout=300))
    # Every service reconnected by itself: none was restarted by the engine.
    for service in ("dispatcher", "collector", "megashard"):
        for cid in stack.container_ids(service):
            state = stack.run(
                ["docker", "inspect", "-f", "{{.RestartCount}} {{.State.Status}}", cid]
            ).stdout.split()
            assert state == ["0", "running"], (service, state)
    stack.phases.done("Redis restarted mid-run: nothing lost, services reconnected")


def test_scaling_down_drains_without_loss(stack: Stack, tmp_path: Path) -> None:
    post(stack, tmp_path, FIRST + KILLED + RESTART, SCALE_DOWN)
    stack.shell(readme_line(r"up -d --no-deps --scale worker-deepseek=2 worker-deepseek"))
    assert_exactly_once(wait_all_done(stack))
    assert len(stack.container_ids("worker-deepseek")) == 2
    stack.phases.done("scaled 10 -> 2 mid-run: drained, nothing lost")


def test_megashard_answers_inside_the_network(stack: Stack, tmp_path: Path) -> None:
    docs = tmp_path / "ops-history"
    docs.mkdir()
    (docs / "2021-outage.md").write_text(
        "# 2021 outage\nThe March 2021 outage of the billing cluster was caused by an expired "
        "TLS certificate on the payment gateway; billing was down for 4 hours.\n"
    )
    for path in (tmp_path, docs, docs / "2021-outage.md"):  # the image's user reads them
        path.chmod(0o755 if path.is_dir() else 0o644)
    stack.shell(readme_line(r"swarm shard load history /context"), cwd=tmp_path)
    out = stack.compose(
        "run",
        "--rm",
        "cli",
        "swarm",
        "shard",
        "ask",
        "history",
        "What caused the March 2021 billing outage?",
        "--json",
        timeout=180,
    ).stdout
    reply = json.loads(out)
    assert reply["status"] == "ok", reply
    assert "2021-outage.md" in " ".join(reply.get("sources", [])), reply
    stack.phases.done("mega-shard loaded a document and answered from inside the network")


def test_console_profile_serves_the_swarm(stack: Stack) -> None:
    """README's `docker compose --profile console up -d`, as printed: the console's image
    is built, it comes up on the host's loopback and shows this stack's fleet and tasks."""
    # Named, as the fleet's line is run with its services: grafana's image cannot be had
    # here, and a bare `up` would try to pull it.
    stack.shell(f"{readme_line(r'^docker compose --profile console up -d')} console", timeout=900)
    base = f"http://127.0.0.1:{stack.console_port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=3) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, stack.compose("logs", "console").stdout[-3000:]
        time.sleep(1)
    with urllib.request.urlopen(f"{base}/", timeout=10) as reply:
        overview = reply.read().decode()
    with urllib.request.urlopen(f"{base}/task/{posted[0]}", timeout=10) as reply:
        task_page = reply.read().decode()
    with urllib.request.urlopen(f"{base}/static/console.js", timeout=10) as reply:
        script = reply.read().decode()
    assert "worker-deepseek" in overview and f"{NS}:queue:deepseek" in overview
    assert posted[0] in task_page and "deepseek" in task_page
    assert "EventSource" in script  # the live updates ship in the image
    stack.phases.done("console profile up, its pages show the fleet and a task")


def test_lag_alert_reaches_the_webhook_when_every_deepseek_worker_stops(
    stack: Stack, tmp_path: Path
) -> None:
    """Every worker-deepseek stopped, tasks routed to deepseek pile up in its queue (the
    dispatcher still counts a vendor seen live within SWARM_DISPATCHER_LIVE_GRACE_S): the
    lag alert goes Prometheus -> Alertmanager -> the webhook of .env's ALERT_WEBHOOK_URL,
    a receiver this test runs on the host. The e2e's Prometheus has `for: 30s` and 1 min
    windows: an alert that began firing before the workers stopped does not count, so the
    test starts once Prometheus holds no such alert and its window holds no ack of the
    runs above (acks still in it would offset the new backlog)."""
    assert stack.receiver is not None
    queue = f"{NS}:queue:deepseek"
    quiet = wait_until_quiet(stack, queue, timeout=180)
    stopped_at = datetime.now(UTC)
    stack.compose("stop", "worker-deepseek", timeout=120)
    assert stack.container_ids("worker-deepseek") == []
    start = time.monotonic()
    post(stack, tmp_path, FIRST + KILLED + RESTART + SCALE_DOWN, LAG)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (group,) = [g for g in redis(stack).xinfo_groups(queue) if g["name"] == "worker-deepseek"]
        if group["lag"] >= LAG:
            break
        time.sleep(0.5)
    assert group["lag"] >= LAG, group  # the tasks wait in deepseek's queue
    try:
        alert = stack.receiver.wait_for(
            lambda a: (
                a["labels"].get("alertname") == "SwarmStreamLagGrowing"
                and a["labels"].get("vendor") == "deepseek"
                and a["status"] == "firing"
                and rfc3339(a["startsAt"]) > stopped_at
            ),
            timeout=180,
        )
    except AssertionError as exc:  # what Prometheus saw, to tell a rule from a route
        growth = prometheus(
            stack, "query", query=f'swarm:stream_backlog_growth:increase15m{{stream="{queue}"}}'
        )
        alerts = prometheus(stack, "alerts")
        raise AssertionError(
            f"{exc}\nstopped at {stopped_at.isoformat()}; Prometheus growth {growth}; "
            f"alerts {alerts}"
        ) from None
    print(f"[e2e] alerts at the webhook: {stack.receiver.summary(start)}", flush=True)
    assert alert["labels"]["stream"] == queue, alert
    assert "backlog growing" in alert["annotations"]["summary"], alert
    stack.phases.done(
        f"every worker-deepseek stopped, {LAG} tasks waiting: lag alert at the webhook "
        f"{time.monotonic() - start:.0f} s later (after {quiet:.0f} s for the last to clear)"
    )


def prometheus(stack: Stack, path: str, **params: str) -> Any:
    """Prometheus' HTTP API, `data` of its answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/{path}{query}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


def wait_until_quiet(stack: Stack, queue: str, *, timeout: float) -> float:
    """Seconds until Prometheus has no pending or firing lag alert for `queue` and no
    delivery of it in the rules' window (1 min in the e2e)."""
    start = time.monotonic()
    recent = f'sum(increase(swarm_deliveries_total{{stream="{queue}"}}[1m])) > 0'
    while True:
        alerts = prometheus(stack, "alerts")["alerts"]
        active = [
            a["state"] for a in alerts
            if a["labels"].get("alertname") == "SwarmStreamLagGrowing"
            and a["labels"].get("stream") == queue
        ]  # fmt: skip
        busy = prometheus(stack, "query", query=recent)["result"]
        if not active and not busy:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"not quiet: alert {active}, deliveries {busy}"
        time.sleep(2)


def test_dispatcher_logs_no_spurious_lease_loss(stack: Stack) -> None:
    logs = stack.compose("logs", "--no-color", "dispatcher").stdout
    lost = [line for line in logs.splitlines() if "lease.lost" in line]
    assert not lost, lost[:5]


def test_down_leaves_nothing(stack: Stack) -> None:
    # As the README prints it: a bare `down` would leave the console (profile console) up.
    stack.shell(readme_line(r"^docker compose --profile '\*' down -v"), timeout=180)
    for kind in ("container", "network", "volume"):
        assert stack.labelled(kind) == [], kind
    stack.phases.done("down -v: no container, network or volume left")
