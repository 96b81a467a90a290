"""deploy/redis/users.acl in a real, private redis-server: it loads as committed (and then
nobody can log in), the renderer adds hashed passwords and the namespace, every service's
user may run what its code runs and nothing of another service's, and the whole swarm,
each service logged in as its own user, handles tasks without a single ACL denial."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.cli.redis_finder import private_redis_server
from services.collector.service import run_collector
from services.collector.settings import CollectorSettings
from services.console import data as console_data
from services.console.actions import Actions
from services.console.window import CostWindow
from services.dispatcher.service import run_dispatcher
from services.dispatcher.settings import DispatcherSettings
from services.megashard.corpus import Document
from services.megashard.load import load_context
from services.megashard.service import run_megashard
from services.megashard.settings import DEFAULT_SHARD_MODEL, ShardSettings
from services.megashard.store import ContextStore
from services.simulator.config import SimulatorConfig
from services.simulator.server import Simulator
from services.worker.service import run_worker
from services.worker.settings import WorkerSettings
from shared.bus.findings import task_view
from shared.llm.registry import build_client, price_table
from shared.llm.settings import VendorSettings
from shared.protocol import Names, Task, encode
from shared.runtime.net import free_port
from shared.runtime.redis import connect
from shared.runtime.settings import BusSettings, SwarmSettings
from tests.deploy.conftest import DEPLOY
from tests.deploy.test_compose import resolved
from tests.megashard.conftest import filler
from tests.waiting import eventually

ACL = DEPLOY / "redis" / "users.acl"
RENDER = DEPLOY / "redis" / "render-acl.sh"
NS = "acltest"
USERS = [
    "swarm-admin", "dispatcher", "worker-claude", "worker-gemini", "worker-openai",
    "worker-deepseek", "worker-codex", "worker-openai-compatible", "megashard", "collector",
    "exporter", "keda", "console",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (apt-get install redis-server)"
)


def once(port: int, **kwargs: str) -> redis.Redis:
    """A client that does not retry: redis-py retries a refused login like a lost
    connection, which would make every expected refusal take seconds."""
    return redis.Redis(port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0), **kwargs)


def password(user: str) -> str:
    return f"pw-{user}-{os.getpid()}"


def env_var(user: str) -> str:
    return "REDIS_PASSWORD_" + user.upper().replace("-", "_")


def render(tmp: Path, namespace: str = NS, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(RENDER)],
        env={
            "PATH": os.environ["PATH"],
            "SWARM_ACL_TEMPLATE": str(ACL),
            "SWARM_ACL_FILE": str(tmp / "users.acl"),
            "SWARM_NAMESPACE": namespace,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass(frozen=True)
class AclServer:
    port: int

    def url(self, user: str) -> str:
        return f"redis://{user}:{password(user)}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user), socket_timeout=5, decode_responses=True)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    tmp = tmp_path_factory.mktemp("acl")
    res = render(tmp, **{env_var(u): password(u) for u in USERS})
    assert res.returncode == 0, res.stderr
    port = free_port()
    config = (DEPLOY / "redis.conf").read_text() + f"\naclfile {tmp / 'users.acl'}\n"
    probe = f"redis://swarm-admin:{password('swarm-admin')}@127.0.0.1:{{port}}/0"
    with private_redis_server(port=port, config=config, probe_url=probe, workdir=str(tmp)):
        yield AclServer(port)


# -- the file and its renderer ------------------------------------------------------------------
def test_committed_file_loads_and_lets_nobody_in(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--aclfile", str(ACL)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = once(port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                pytest.fail("the default user answered without a password")
            except redis.AuthenticationError:
                break  # NOAUTH: the server runs, with the file, and wants a login
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server refused the ACL file"
                assert time.monotonic() < deadline
                time.sleep(0.05)
        for user in USERS:
            with pytest.raises(redis.AuthenticationError):
                once(port, username=user, password="").ping()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_renderer_hashes_passwords_and_sets_the_namespace(tmp_path: Path) -> None:
    res = render(
        tmp_path,
        namespace="team-a",
        REDIS_PASSWORD_WORKER_CLAUDE="s3cret-claude",
        SWARM_ACL_EXTRA="+client|setinfo",
    )
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "users.acl").read_text()
    assert "s3cret-claude" not in text
    lines = {line.split()[1]: line for line in text.splitlines()}
    assert set(lines) == {"default", *USERS}
    digest = hashlib.sha256(b"s3cret-claude").hexdigest()
    assert lines["worker-claude"].endswith(f" on #{digest}")
    assert " on " not in lines["collector"], "a user without a password must stay off"
    assert "~team-a:queue:claude" in lines["worker-claude"] and "~swarm:" not in text
    assert "+client|setinfo" in lines["collector"]
    assert "+client|setinfo" not in lines["default"]
    assert oct((tmp_path / "users.acl").stat().st_mode & 0o777) == "0o600"


def compose_redis(tmp: Path, **dotenv: str) -> tuple[dict[str, str], dict[str, str]]:
    """The Redis container's environment and every service's REDIS_URL, as compose.yaml
    resolves them from a .env holding `dotenv` (the console and cli profiles on)."""
    config = resolved(tmp, profile="sim,console,cli", **dotenv)
    services = config["services"]
    urls = {
        n: s["environment"]["REDIS_URL"]
        for n, s in services.items()
        if "REDIS_URL" in (s.get("environment") or {})
    }
    exporter = services["redis-exporter"]["environment"]
    urls["redis-exporter"] = (
        f"redis://{exporter['REDIS_USER']}:{exporter['REDIS_PASSWORD']}@redis:6379/0"
    )
    return services["redis"]["environment"], urls


def test_compose_redis_refuses_to_start_without_passwords(tmp_path: Path) -> None:
    """Its entrypoint, given what compose passes from an .env without passwords, exits
    before Redis starts, naming what to set and how."""
    env, _urls = compose_redis(tmp_path)
    res = render(tmp_path, **{k: v for k, v in env.items() if k != "SWARM_NAMESPACE"})
    assert res.returncode == 3, res.stderr
    assert "REDIS_PASSWORD_DISPATCHER" in res.stderr and "REDIS_PASSWORD_SWARM_ADMIN" in res.stderr
    assert "run `swarm init`" in res.stderr and "SWARM_REDIS_DEV_PASSWORDS=1" in res.stderr
    assert not (tmp_path / "users.acl").exists()


@pytest.mark.parametrize("dev", [False, True], ids=["swarm-init", "dev-passwords"])
def test_compose_redis_lets_each_service_in_as_its_own_user(tmp_path: Path, dev: bool) -> None:
    """compose.yaml's Redis settings on a real redis-server, with the passwords `swarm init`
    writes or with SWARM_REDIS_DEV_PASSWORDS=1 and none: every service's REDIS_URL logs in
    as its own user, `redis-cli` with the container's REDISCLI_AUTH is the admin, and a
    login without a password is refused."""
    if dev:
        dotenv = {"SWARM_REDIS_DEV_PASSWORDS": "1"}
    else:
        init = [sys.executable, "-m", "services.cli.main", "init", "--env-file"]
        subprocess.run([*init, str(tmp_path / ".env")], check=True, capture_output=True, timeout=60)
        dotenv = dict(
            line.split("=", 1)
            for line in (tmp_path / ".env").read_text().splitlines()
            if line.startswith(("REDIS_PASSWORD_", "GRAFANA_"))
        )
    env, urls = compose_redis(tmp_path, **dotenv)
    res = render(tmp_path, namespace=NS, **{k: v for k, v in env.items() if k != "SWARM_NAMESPACE"})
    assert res.returncode == 0, res.stderr
    assert ("WARNING: development Redis" in res.stderr) is dev
    port = free_port()
    config = (DEPLOY / "redis.conf").read_text() + f"\naclfile {tmp_path / 'users.acl'}\n"
    admin = f"redis://default:{env['REDISCLI_AUTH']}@127.0.0.1:{port}/0"
    with private_redis_server(port=port, config=config, probe_url=admin, workdir=str(tmp_path)):
        for service, url in urls.items():
            user = url.split("//")[1].split(":")[0]
            local = url.replace("@redis:6379", f"@127.0.0.1:{port}")
            with redis.Redis.from_url(local, socket_timeout=5) as client:
                assert client.ping(), service  # AUTH <user> <password> went through
                name = f"{user}-check"  # the services' users may not run ACL WHOAMI
                client.client_setname(name)
                admin_client = redis.Redis.from_url(admin, decode_responses=True)
                [seen] = [c for c in admin_client.client_list() if c["name"] == name]
                admin_client.close()
                assert seen["user"] == user, service
        cli = subprocess.run(
            ["redis-cli", "-p", str(port), "ACL", "WHOAMI"],
            env={"PATH": os.environ["PATH"], "REDISCLI_AUTH": env["REDISCLI_AUTH"]},
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        assert (cli.stdout.strip(), cli.stderr) == ("default", "")
        with pytest.raises(redis.AuthenticationError):
            once(port).ping()
    assert set(urls) >= {"dispatcher", "collector", "megashard", "console", "cli", "worker-claude"}


def test_renderer_refuses_a_namespace_that_would_break_the_patterns(tmp_path: Path) -> None:
    for bad in ("a/b", "x y", "a&b"):
        res = render(tmp_path, namespace=bad)
        assert res.returncode == 2 and "SWARM_NAMESPACE" in res.stderr


def test_each_user_logs_in_with_its_own_password_only(acl_server: AclServer) -> None:
    for user in USERS:
        assert acl_server.client(user).ping()
        with pytest.raises(redis.AuthenticationError):
            once(acl_server.port, username=user, password=password("dispatcher") + "x").ping()
    with pytest.raises(redis.AuthenticationError):
        once(acl_server.port).ping()


# -- who may do what (ACL DRYRUN: checked, not run) ---------------------------------------------
SHA = "0" * 40
ALLOWED: dict[str, list[str]] = {
    "dispatcher": [
        f"XGROUP CREATE {NS}:tasks dispatcher 0 MKSTREAM",
        f"XREADGROUP GROUP dispatcher dispatcher-h-1 COUNT 10 BLOCK 10 STREAMS {NS}:tasks >",
        f"XACK {NS}:tasks dispatcher 1-0",
        f"XAUTOCLAIM {NS}:tasks dispatcher dispatcher-h-1 60000 0-0 COUNT 10",
        f"XTRIM {NS}:tasks MINID ~ 1-0",
        f"EVALSHA {SHA} 1 {NS}:tasks dispatcher dispatcher-h-1 1-0",
        # hand-backs: read through the group; routed only if the route names the vendor
        f"XREADGROUP GROUP dispatcher dispatcher-h-1 COUNT 10 BLOCK 10 STREAMS {NS}:reroutes >",
        f"XACK {NS}:reroutes dispatcher 1-0",
        f"XTRIM {NS}:reroutes MINID ~ 1-0",
        f"GET {NS}:route:t1",
        f"SET {NS}:route:t1 deepseek PX 604800000",
        f"XADD {NS}:queue:deepseek * prompt hi",
        f"XADD {NS}:tasks:rejected * reason bad",
        f"XADD {NS}:findings * task_id t",
        f"XADD {NS}:dlq * reason bad",
        f"XTRIM {NS}:dlq MAXLEN ~ 100000",  # the records' caps, after each write
        f"XTRIM {NS}:tasks:rejected MAXLEN ~ 100000",
        # the task-id claim (HGET when it was taken), then the record
        f"HSETNX {NS}:task:t1 entry:1 1-0",
        f"PEXPIRE {NS}:task:t1 604800000",
        f"HGET {NS}:task:t1 entry:1",
        f"HSET {NS}:task:t1 state routed",
        # cancel requests: read through the group, each marks its task
        f"XREADGROUP GROUP dispatcher dispatcher-h-1 COUNT 1 STREAMS {NS}:cancel >",
        f"SET {NS}:cancelled:t1 why PX 1000",
        # cooldowns: the index script (prune, list), then a PTTL of each listed key
        f"EVALSHA {SHA} 1 {NS}:cooldowns",
        f"ZRANGEBYSCORE {NS}:cooldowns (1 +inf",
        f"ZREMRANGEBYSCORE {NS}:cooldowns -inf 1",
        f"PTTL {NS}:cooldown:claude:m",
        f"MGET {NS}:spend:1:vendor:claude {NS}:spend:1:task_type:research",
        f"HSET {NS}:member:dispatcher-h-1 service dispatcher",
        f"HGETALL {NS}:member:worker-claude-h-1",
        f"ZREMRANGEBYSCORE {NS}:members -inf 1",
        "CLIENT UNBLOCK 7",
    ],
    "worker-claude": [
        f"XREADGROUP GROUP worker-claude worker-claude-h-1 COUNT 1 STREAMS {NS}:queue:claude >",
        # urgency levels: one script reads them most urgent first; idle, one blocking read
        f"EVALSHA {SHA} 4 {NS}:queue:claude:critical {NS}:queue:claude:high {NS}:queue:claude "
        f"{NS}:queue:claude:low worker-claude worker-claude-h-1 4",
        f"XREADGROUP GROUP worker-claude worker-claude-h-1 COUNT 1 BLOCK 10 STREAMS "
        f"{NS}:queue:claude:critical {NS}:queue:claude:high {NS}:queue:claude "
        f"{NS}:queue:claude:low > > > >",
        f"XGROUP CREATE {NS}:queue:claude:high worker-claude 0 MKSTREAM",
        f"XGROUP DELCONSUMER {NS}:queue:claude worker-claude worker-claude-old-1",
        f"XADD {NS}:findings * task_id t",
        f"XADD {NS}:reroutes * prompt again",  # a task handed back, never the intake
        f"XADD {NS}:dlq * reason bad",
        f"XTRIM {NS}:dlq MAXLEN ~ 100000",
        f"XADD {NS}:shard:history:queries * query q",
        f"SET {NS}:done:claude:t1 finding_1 PX 1000",
        f"HGET {NS}:task:t1 vendor",
        f"HSET {NS}:task:t1 state running",
        # cancels: the done and cancel marks in one read; the cancel stream tailed
        f"MGET {NS}:done:claude:t1 {NS}:cancelled:t1",
        f"XREVRANGE {NS}:cancel + - COUNT 1",
        f"XREAD COUNT 100 BLOCK 10 STREAMS {NS}:cancel 0-0",
        f"EVALSHA {SHA} 1 {NS}:ratelimit:claude:claude-haiku-4-5 0 0 0 0 1 1000",
        # the cooldown script: streak, cooldown key and the cooldowns index in one selector
        f"EVALSHA {SHA} 3 {NS}:failures:claude:m {NS}:cooldown:claude:m {NS}:cooldowns "
        "5 60000 60000 x claude:m",
        f"ZADD {NS}:cooldowns 1 claude:m",
        f"PEXPIRE {NS}:cooldowns 60000",
        f"DEL {NS}:failures:claude:m",
        f"INCRBYFLOAT {NS}:spend:20000:vendor:claude 0.5",
        f"INCRBYFLOAT {NS}:spend:20000:task_type:research 0.5",
        f"EVALSHA {SHA} 1 {NS}:replies:worker-claude-h-1 3600000",
        # the fenced finding: done-marker, finding, task record and dead letter in one script
        f"EVALSHA {SHA} 4 {NS}:done:claude:t1 {NS}:findings {NS}:task:t1 {NS}:dlq f1 0",
        f"SCRIPT EXISTS {SHA}",
        f"XREAD COUNT 100 BLOCK 10 STREAMS {NS}:replies:worker-claude-h-1 0-0",
        f"SMEMBERS {NS}:shards",
        f"HGET {NS}:shard:history:head specialty",
    ],
    "megashard": [
        f"XREADGROUP GROUP megashard megashard-h-1 COUNT 1 STREAMS {NS}:shard:history:queries >",
        f"XADD {NS}:replies:worker-claude-h-1 * query_id q",
        f"SET {NS}:shard-reply:q1 x PX 1000",
        f"HGETALL {NS}:shard:history:head",
        f"GET {NS}:shard:history:v:3",
        f"MGET {NS}:blob:abc {NS}:blob:def",
        f"EVALSHA {SHA} 1 {NS}:shard:history:cache:3 1 120",
        f"HDEL {NS}:shard:history:cache:3 creating_until",
    ],
    "collector": [
        f"XREADGROUP GROUP collector collector-h-1 COUNT 1 STREAMS {NS}:findings >",
        f"HEXISTS {NS}:findings:t1 finding_1",
        f"SCRIPT EXISTS {SHA}",  # a pipeline of the store's scripts checks them first
        f"EVALSHA {SHA} 5 {NS}:findings:t1 {NS}:collected:t1 {NS}:run:r1 {NS}:runinfo:r1 "
        f"{NS}:totals a",
        f"PEXPIRE {NS}:collected:t1 604800000",  # inside the script: the retention
        f"PEXPIRE {NS}:runinfo:r1 604800000",
        f"XADD {NS}:dlq * reason bad",
        f"XTRIM {NS}:dlq MAXLEN ~ 100000",
    ],
    "exporter": [
        "INFO",
        f"SCAN 0 MATCH {NS}:queue:* COUNT 100",
        f"XINFO GROUPS {NS}:queue:claude",
        f"XINFO CONSUMERS {NS}:queue:claude worker-claude",
        f"XLEN {NS}:dlq",
    ],
    # KEDA's redis-streams scaler: lagCount reads XINFO GROUPS, pendingEntriesCount the
    # XPENDING summary, streamLength XLEN
    "keda": [
        "INFO",
        f"XINFO GROUPS {NS}:queue:claude",
        f"XPENDING {NS}:queue:claude worker-claude",
        f"XLEN {NS}:queue:claude",
    ],
    "swarm-admin": [f"XADD {NS}:tasks * prompt hi", f"XRANGE {NS}:dlq - +", "CONFIG GET maxmemory"],
    "console": [
        # what the pages read: a page of a stream, groups, the fleet, one task's records
        f"XREVRANGE {NS}:tasks + - COUNT 51",
        f"XRANGE {NS}:findings 1-0 + COUNT 5000",
        f"XLEN {NS}:queue:claude",
        f"XINFO GROUPS {NS}:queue:claude",
        f"ZRANGEBYSCORE {NS}:members (1 +inf",
        f"HGETALL {NS}:member:worker-claude-h-1",
        f"SMEMBERS {NS}:shards",
        f"HMGET {NS}:task:t1 state vendor model",
        f"HGETALL {NS}:task:t1",
        f"HGETALL {NS}:collected:t1",
        f"HVALS {NS}:findings:t1",
        f"GET {NS}:cancelled:t1",
        # cancel (swarm cancel): is it known, then the request
        f"EXISTS {NS}:task:t1 {NS}:done:claude:t1 {NS}:done:openai:t1",
        f"XADD {NS}:cancel * task_id t1 reason console",
        # replay (swarm dlq replay): the record back to its task stream, in one script
        f"EVALSHA {SHA} 4 {NS}:tasks:rejected {NS}:tasks {NS}:task:t1 {NS}:tasks 1-0 x y 0",
        f"EVALSHA {SHA} 4 {NS}:dlq {NS}:queue:claude {NS}:task:t1 {NS}:done:claude:t1 1-0 x y 1",
        f"XADD {NS}:tasks * prompt again",
        f"XADD {NS}:queue:claude * prompt again",
        f"XDEL {NS}:dlq 1-0",
        f"HDEL {NS}:task:t1 entry:1",
        f"DEL {NS}:done:claude:t1",
    ],
}
DENIED: dict[str, list[str]] = {
    "dispatcher": [
        f"XREADGROUP GROUP worker-claude x STREAMS {NS}:queue:claude >",
        f"XADD {NS}:replies:worker-claude-h-1 * a 1",
        f"HSET {NS}:totals a 1",
        f"SET {NS}:done:t1 x",
        f"DEL {NS}:tasks",
        f"SCAN 0 MATCH {NS}:cooldown:* COUNT 500",  # cooldowns are indexed: no SCAN
        f"SET {NS}:cooldown:claude:m x",
        f"ZADD {NS}:cooldowns 1 claude:m",
        f"EVALSHA {SHA} 1 {NS}:task:t1 entry:1 1-0 1000",  # claims are plain commands
        "FLUSHALL",
        "CONFIG SET maxmemory-policy allkeys-lru",
        "KEYS *",
    ],
    "worker-claude": [
        f"XADD {NS}:tasks * prompt fresh",  # new work only through the dispatcher's checks
        f"XADD {NS}:tasks:rejected * reason forged",
        f"XREADGROUP GROUP dispatcher worker-claude-h-1 STREAMS {NS}:reroutes >",
        # done-markers: its own vendor's only (another vendor's worker would ack silently)
        f"SET {NS}:done:t1 forged",
        f"SET {NS}:done:openai:t1 forged",
        f"SET {NS}:done:openai-compatible:t1 forged",
        f"EVALSHA {SHA} 4 {NS}:done:openai:t1 {NS}:findings {NS}:task:t1 {NS}:dlq f1 0",
        f"MGET {NS}:done:openai:t1 {NS}:cancelled:t1",
        f"SET {NS}:cancelled:t1 forged",  # only the dispatcher marks a task cancelled
        f"SET {NS}:route:t1 claude",  # only the dispatcher says where a task went
        f"XREADGROUP GROUP dispatcher worker-claude-h-1 STREAMS {NS}:cancel >",
        f"XREADGROUP GROUP collector worker-claude-h-1 STREAMS {NS}:findings >",
        f"XRANGE {NS}:findings - +",
        f"XREADGROUP GROUP worker-openai worker-claude-h-1 STREAMS {NS}:queue:openai >",
        f"XADD {NS}:queue:claude * prompt self-made",
        f"XADD {NS}:queue:claude:critical * prompt self-made",
        f"XREADGROUP GROUP worker-openai worker-claude-h-1 STREAMS {NS}:queue:openai:high >",
        f"SET {NS}:queue:claude x",
        f"DEL {NS}:queue:claude",
        f"EVALSHA {SHA} 1 {NS}:ratelimit:openai:gpt 0 0 0 0 1 1000",
        f"EVALSHA {SHA} 3 {NS}:failures:openai:m {NS}:cooldown:openai:m {NS}:cooldowns "
        "5 60000 60000 x openai:m",
        f"DEL {NS}:cooldowns",
        f"ZREMRANGEBYSCORE {NS}:cooldowns -inf +inf",
        f"INCRBYFLOAT {NS}:spend:20000:vendor:openai 0.5",
        f"XREAD STREAMS {NS}:replies:worker-gemini-h-1 0-0",
        f"HSET {NS}:member:worker-gemini-h-1 service worker-gemini",
        f"HINCRBY {NS}:totals claude|m|tasks 1",
        "FLUSHDB",
        "SHUTDOWN",
    ],
    "megashard": [
        f"XREAD STREAMS {NS}:replies:worker-claude-h-1 0-0",
        f"SET {NS}:blob:abc forged",
        f"HSET {NS}:shard:history:head version 9",
        f"XADD {NS}:findings * task_id t",
        f"XREADGROUP GROUP worker-claude m STREAMS {NS}:queue:claude >",
    ],
    "collector": [
        f"XREADGROUP GROUP worker-claude collector-h-1 STREAMS {NS}:queue:claude >",
        f"XADD {NS}:findings * task_id forged",
        f"XADD {NS}:tasks * prompt hi",
        f"HSET {NS}:task:t1 state done",
        f"SET {NS}:done:t1 x",
    ],
    "exporter": [
        f"XADD {NS}:dlq * a 1",
        f"XRANGE {NS}:dlq - +",
        f"GET {NS}:done:t1",
        "SLOWLOG GET 10",
        "CONFIG SET maxmemory 1",
        # XINFO STREAM shows the first and last entries' bodies, FULL every entry's
        f"XINFO STREAM {NS}:findings",
        f"XINFO STREAM {NS}:tasks FULL",
    ],
    "keda": [
        f"XINFO STREAM {NS}:queue:claude",
        f"XINFO STREAM {NS}:queue:claude FULL",
        f"XINFO GROUPS {NS}:findings",
        f"XREADGROUP GROUP worker-claude k STREAMS {NS}:queue:claude >",
        f"XADD {NS}:queue:claude * a 1",
    ],
    "console": [
        # read-only but for cancel and replay: no keyspace walks, no whole-stream info
        "KEYS *",
        f"SCAN 0 MATCH {NS}:* COUNT 1000",
        f"XINFO STREAM {NS}:tasks",
        f"XADD {NS}:findings * task_id forged",
        f"XADD {NS}:tasks:rejected * reason forged",
        f"XADD {NS}:dlq * reason forged",
        f"XREADGROUP GROUP dispatcher console-1 STREAMS {NS}:tasks >",
        f"XACK {NS}:tasks dispatcher 1-0",
        f"XTRIM {NS}:tasks MAXLEN 0",
        f"XGROUP CREATE {NS}:tasks console 0",
        f"DEL {NS}:tasks",
        f"HSET {NS}:task:t1 state done",
        f"SET {NS}:done:t1 forged",
        f"SET {NS}:cancelled:t1 forged",
        f"HINCRBY {NS}:totals claude|m|tasks 1",
        f"ZREMRANGEBYSCORE {NS}:members -inf +inf",
        f"HSET {NS}:member:console-1 service console",
        f"EVALSHA {SHA} 1 {NS}:findings",
        "GET other-swarm:done:t1",  # another namespace
        "FLUSHALL",
        "CONFIG GET maxmemory",
    ],
    "default": ["PING", f"XADD {NS}:tasks * prompt hi"],
}


def dryrun(server: AclServer, user: str, command: str) -> str:
    admin = server.client("swarm-admin")
    reply = admin.execute_command("ACL", "DRYRUN", user, *command.split())
    return str(reply)


def test_each_user_may_run_what_its_service_runs(acl_server: AclServer) -> None:
    refused = [
        f"{user}: {cmd} -> {answer}"
        for user, commands in ALLOWED.items()
        for cmd in commands
        if (answer := dryrun(acl_server, user, cmd)) != "OK"
    ]
    assert refused == []


def test_no_user_may_touch_another_services_keys(acl_server: AclServer) -> None:
    allowed = [
        f"{user}: {cmd}"
        for user, commands in DENIED.items()
        for cmd in commands
        if dryrun(acl_server, user, cmd) == "OK"
    ]
    assert allowed == []


def test_every_vendor_worker_is_fenced_to_its_own_vendor(acl_server: AclServer) -> None:
    vendors = ["claude", "gemini", "openai", "deepseek", "codex", "openai-compatible"]
    for vendor in vendors:
        user = f"worker-{vendor}"
        own = f"XREADGROUP GROUP {user} {user}-h-1 STREAMS {NS}:queue:{vendor} >"
        assert dryrun(acl_server, user, own) == "OK", user
        for other in vendors:
            if other != vendor:
                cmd = f"XREADGROUP GROUP worker-{other} {user}-h-1 STREAMS {NS}:queue:{other} >"
                assert dryrun(acl_server, user, cmd) != "OK", (user, other)


def test_a_denied_command_fails_for_real_and_is_logged(acl_server: AclServer) -> None:
    admin = acl_server.client("swarm-admin")
    admin.execute_command("ACL", "LOG", "RESET")
    worker = acl_server.client("worker-claude")
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.xadd(f"{NS}:tasks:rejected", {"reason": "forged"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.xreadgroup("collector", "worker-claude-h-1", {f"{NS}:findings": ">"})
    log = admin.acl_log()
    assert sorted((e["username"], e["reason"], e["object"]) for e in log) == [
        ("worker-claude", "key", f"{NS}:findings"),
        ("worker-claude", "key", f"{NS}:tasks:rejected"),
    ]


# -- what must stay refused: each one for real, as its user would try it ------------------------
@pytest.mark.parametrize("user", ["exporter", "keda"])
def test_the_monitoring_users_cannot_read_entries_through_xinfo_stream(
    acl_server: AclServer, user: str
) -> None:
    """`XINFO STREAM ... FULL` returns every entry (prompts, findings); an ACL cannot tell
    it from the short form, which still shows the first and last entries: both refused."""
    admin = acl_server.client("swarm-admin")
    queue = f"{NS}:queue:claude"
    admin.xadd(queue, {"prompt": "a secret prompt"})
    client = acl_server.client(user)
    for form in (["XINFO", "STREAM", queue, "FULL"], ["XINFO", "STREAM", queue]):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*form)


def test_the_monitoring_users_still_read_lag_pending_and_length(acl_server: AclServer) -> None:
    """What KEDA's scaler (lagCount, pendingEntriesCount, streamLength) and the exporter
    read, run for real on a queue with a backlog: the numbers, no entry bodies."""
    admin = acl_server.client("swarm-admin")
    queue, group = f"{NS}:queue:gemini", "worker-gemini"
    admin.xgroup_create(queue, group, id="0", mkstream=True)
    for n in range(5):
        admin.xadd(queue, {"prompt": f"task {n}"})
    admin.xreadgroup(group, "worker-gemini-h-1", {queue: ">"}, count=2)
    for user in ("keda", "exporter"):
        client = acl_server.client(user)
        [info] = client.xinfo_groups(queue)
        assert (info["name"], info["lag"], info["pending"]) == (group, 3, 2), user
        assert client.xlen(queue) == 5, user
        assert "used_memory" in client.info("memory"), user
    assert acl_server.client("keda").xpending(queue, group)["pending"] == 2
    [consumer] = acl_server.client("exporter").xinfo_consumers(queue, group)
    assert (consumer["name"], consumer["pending"]) == ("worker-gemini-h-1", 2)


def test_a_worker_cannot_post_new_work_to_the_intake(acl_server: AclServer) -> None:
    worker = acl_server.client("worker-claude")
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.xadd(f"{NS}:tasks", {"prompt": "work nobody asked for"})
    assert acl_server.client("swarm-admin").xlen(f"{NS}:tasks") == 0


@pytest.mark.parametrize(
    "key",
    [f"{NS}:done:openai:t-theirs", f"{NS}:done:t-theirs", f"{NS}:done:claudeX:t-theirs"],
)
def test_a_worker_cannot_mark_another_vendors_task_done(acl_server: AclServer, key: str) -> None:
    """A done-marker makes the worker holding the task ack it without a call or finding:
    a worker may set its own vendor's only, neither by SET nor inside a script."""
    worker = acl_server.client("worker-claude")
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.set(key, "finding_forged", px=60_000)
    script = worker.script_load("return redis.call('SET', KEYS[1], ARGV[1])")
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.evalsha(script, 1, key, "finding_forged")
    assert acl_server.client("swarm-admin").exists(key) == 0


def test_what_a_stolen_worker_credential_can_still_do(acl_server: AclServer) -> None:
    """Its blast radius (README, Security): its own vendor's queue (read, ack, trim, mark
    its tasks done, hand them back), findings and its vendor's spend; run for real."""
    admin = acl_server.client("swarm-admin")
    queue, group = f"{NS}:queue:deepseek", "worker-deepseek"
    admin.xgroup_create(queue, group, id="0", mkstream=True)
    admin.xadd(queue, {"task_id": "t-own", "prompt": "p"})
    worker = acl_server.client("worker-deepseek")
    [(_, [(entry_id, _fields)])] = worker.xreadgroup(group, "worker-deepseek-h-1", {queue: ">"})
    assert worker.xack(queue, group, entry_id) == 1
    worker.xtrim(queue, maxlen=0)
    assert worker.set(f"{NS}:done:deepseek:t-own", "finding_1", px=60_000)
    assert worker.xadd(f"{NS}:findings", {"task_id": "t-own"})
    assert worker.xadd(f"{NS}:reroutes", {"task_id": "t-own", "prompt": "p"})
    assert worker.incrbyfloat(f"{NS}:spend:1:vendor:deepseek", 0.5) == 0.5
    with pytest.raises(redis.exceptions.NoPermissionError):
        worker.incrbyfloat(f"{NS}:spend:1:vendor:claude", 0.5)


# -- the swarm, each service as its own user ----------------------------------------------------
def fast_bus() -> BusSettings:
    return BusSettings(
        block_ms=200,
        visibility_timeout_s=1.5,  # leases refreshed every 0.5 s while a call runs
        reclaim_interval_s=0.2,
        heartbeat_interval_s=0.2,
        heartbeat_ttl_s=1.0,
        drain_timeout_s=5,
        trim_interval_s=0.5,
        retention_s=0,
        connect_timeout_s=5,
    )


def swarm_as(server: AclServer, user: str) -> SwarmSettings:
    return SwarmSettings(
        REDIS_URL=server.url(user),
        SWARM_NAMESPACE=NS,
        METRICS_PORT=0,
        CONSUMER_NAME=f"{user}-acl-1",
    )


async def test_the_swarm_runs_as_its_own_users_without_one_denial(
    acl_server: AclServer, tmp_path: Path
) -> None:
    names = Names(NS)
    admin = connect(acl_server.url("swarm-admin"), BusSettings())
    await admin.execute_command("ACL", "LOG", "RESET")
    sim = Simulator(SimulatorConfig(seed=11).with_overrides(latency_s=0.7))
    await sim.start()
    vendors = VendorSettings(SWARM_SIMULATOR_URL=sim.base_url, SWARM_LLM_TIMEOUT_S=20)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[int]] = []
    try:
        # The operator loads a shard's context (the operator's user, not the shard's).
        model = DEFAULT_SHARD_MODEL["gemini"]
        llm = build_client("gemini", vendors, model)
        await load_context(
            ContextStore(admin, names),
            llm,
            price_table(vendors),
            shard="history",
            documents=[Document("ops.md", filler(4000))],
            model=model,
            specialty="history",
        )
        await llm.aclose()
        # A dead worker's delivery, for the live one to take over (XPENDING, XCLAIM,
        # XGROUP DELCONSUMER): read under a consumer name with no heartbeat.
        queue = names.vendor_tasks("claude")
        await admin.xgroup_create(queue, Names.worker_group("claude"), id="0", mkstream=True)
        await admin.xadd(queue, encode(Task(task_id="task_acl_dead", prompt="Left behind.")))
        await admin.xreadgroup(
            Names.worker_group("claude"), "worker-claude-dead-1", {queue: ">"}, count=1
        )
        await admin.xadd(queue, {"complexty": "simple"})  # the worker dead-letters it
        await admin.xadd(names.findings, {"status": "maybe"})  # the collector dead-letters it
        await admin.xadd(names.intake, {"prompt": "x", "complexty": "simple"})  # rejected

        bus = fast_bus()
        tasks = [
            asyncio.create_task(
                run_dispatcher(
                    stop,
                    swarm_as(acl_server, "dispatcher"),
                    bus,
                    DispatcherSettings(
                        fleet_refresh_s=0.2,
                        vendor_caps_usd={"claude": 1000},
                        task_type_caps_usd={"research": 1000},
                    ),
                    vendors,
                )
            ),
            asyncio.create_task(
                run_worker(
                    stop,
                    swarm_as(acl_server, "worker-claude"),
                    bus,
                    WorkerSettings(
                        vendor="claude",
                        rpm=60_000,
                        tpm=100_000_000,
                        max_attempts=2,
                        backoff_base_s=0.05,
                        backoff_max_s=0.1,
                        cooldown_threshold=2,
                        cooldown_period_s=1,
                        context_timeout_s=15,
                    ),
                    vendors,
                )
            ),
            asyncio.create_task(
                run_megashard(
                    stop,
                    swarm_as(acl_server, "megashard"),
                    bus,
                    ShardSettings(id="history"),
                    vendors,
                )
            ),
            asyncio.create_task(
                run_collector(
                    stop,
                    swarm_as(acl_server, "collector"),
                    bus,
                    CollectorSettings(export_path=str(tmp_path / "findings.jsonl")),
                )
            ),
        ]
        posted = [
            Task(task_id="task_acl_1", prompt="Research supplier terms.", vendor="claude",
                 task_type="research", run_id="acl-run"),
            Task(task_id="task_acl_2", prompt="Which supplier contract terms did the audit change?",
                 vendor="claude", parent_shard="history", run_id="acl-run"),
            Task(task_id="task_acl_3", prompt="Urgent: check the invoice.", vendor="claude",
                 urgency="critical"),
        ]  # fmt: skip
        for task in posted:
            await admin.xadd(names.intake, encode(task))

        async def collected(task_id: str, status: str = "ok") -> bool:
            view = await task_view(admin, names, task_id)
            return view is not None and view.summary.status == status

        for task_id in ("task_acl_1", "task_acl_2", "task_acl_3", "task_acl_dead"):
            await eventually(
                lambda t=task_id: collected(t), timeout=30, what=f"{task_id} collected"
            )
        view = await task_view(admin, names, "task_acl_2")
        assert view is not None and view.findings[0].sources, "the shard's answer was used"

        # A task whose every call fails: retries, a cooldown, a reroute the dispatcher
        # cannot place, and a failed finding.
        await admin.xadd(
            names.intake,
            encode(Task(task_id="task_acl_fail", prompt="[[sim:500]] Fail.")),
        )
        await eventually(
            lambda: collected("task_acl_fail", "failed"), timeout=30, what="the failed finding"
        )

        async def settled() -> bool:
            consumers = await admin.xinfo_consumers(queue, Names.worker_group("claude"))
            gone = all(c["name"] != b"worker-claude-dead-1" for c in consumers)
            return gone and await admin.xlen(names.dead_letter) >= 2

        await eventually(settled, timeout=15, what="the dead consumer removed, dead letters")
        assert await admin.xlen(names.rejected) >= 2  # the malformed task, the unplaceable one
        await asyncio.sleep(1.2)  # a few more rounds of trimming, reclaiming and leases
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await sim.stop()
        log = await admin.acl_log()
        await admin.aclose()
    assert results == [0, 0, 0, 0]
    denials = [(e["username"], e["context"], e["reason"], e["object"]) for e in log]
    assert denials == []


async def test_the_console_reads_and_acts_as_its_own_user_without_one_denial(
    acl_server: AclServer,
) -> None:
    """Every read of the console's pages, a cancel and a replay (the `swarm` command's own,
    which the console runs) as the `console` user: all allowed, and the replay's script
    does all its work (XADD, XDEL, claim released) under that user."""
    names = Names(NS)
    admin = connect(acl_server.url("swarm-admin"), BusSettings())
    await admin.execute_command("ACL", "LOG", "RESET")
    await admin.xadd(names.intake, encode(Task(task_id="task_console_1", prompt="Queued.")))
    await admin.hset(names.task("task_console_1"), mapping={"state": "routed", "vendor": "claude"})
    await admin.xadd(names.findings, {"task_id": "t", "vendor": "claude", "model": "m"})
    rejected = await admin.xadd(
        names.rejected,
        {"reason": "complexty: is not a field of Task", "field": "complexty",
         "source_stream": names.intake, "source_id": "1-0", "orig:prompt": "Replay me."},
    )  # fmt: skip
    swarm = swarm_as(acl_server, "console")
    console = connect(swarm.redis_url.get_secret_value(), BusSettings())
    try:
        live = await console_data.members(console, names)
        streams = await console_data.stream_rows(
            console, await console_data.stream_names(console, names, live)
        )
        assert names.intake in [s.stream for s in streams]
        page = await console_data.task_page(console, names, before=None, size=10)
        assert page.rows[0].task_id == "task_console_1"  # the newest
        detail = await console_data.task_detail(console, names, "task_console_1")
        assert detail.record["state"] == "routed"
        total, records = await console_data.record_page(
            console, names.rejected, before=None, size=10
        )
        assert total >= 1 and records.rows[0].id == rejected.decode()
        window = CostWindow(names.findings, window_s=3600)
        await window.refresh(console)
        assert sum(r.usage.findings for r in window.rows()) >= 1
        actions = Actions(swarm, timeout_s=60)
        cancelled = await actions.cancel("task_console_1")
        replayed = await actions.replay("rejected", rejected.decode())
        log = await admin.acl_log()
        assert await admin.xrange(names.rejected, rejected, rejected) == []
        [(_, request)] = await admin.xrevrange(names.cancels, count=1)
    finally:
        await console.aclose()
        await admin.aclose()
    assert cancelled.ok, cancelled.message
    assert "cancel of task task_console_1 posted" in cancelled.message
    assert replayed.ok and f"replayed {rejected.decode()} to {NS}:tasks" in replayed.message
    assert request[b"task_id"] == b"task_console_1"
    assert [(e["username"], e["object"]) for e in log] == []


# -- TLS: rediss:// URLs ------------------------------------------------------------------------
def _certificates(folder: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1; returns the CA file."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl (to make a test certificate) is not installed here")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=swarm-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext")  # fmt: skip
    return folder / "ca.crt"


def _tls_server(folder: Path, port: int, ca: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(folder / "server.crt"),
         "--tls-key-file", str(folder / "server.key"),
         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--aclfile", str(folder / "users.acl"), "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def test_services_connect_over_tls_with_their_acl_user(tmp_path: Path) -> None:
    ca = _certificates(tmp_path)
    assert render(tmp_path, **{env_var("worker-claude"): password("worker-claude")}).returncode == 0
    port = free_port()
    proc = _tls_server(tmp_path, port, ca)
    user, secret = "worker-claude", password("worker-claude")
    url = f"rediss://{user}:{secret}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    settings = BusSettings(connect_timeout_s=10)
    try:
        client = connect(url, settings)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert await client.ping()
                    break
                except redis.ConnectionError:
                    assert proc.poll() is None, "redis-server did not start with TLS"
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert await client.xadd(f"{NS}:findings", {"task_id": "t"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.xadd(f"{NS}:tasks:rejected", {"reason": "forged"})
        finally:
            await client.aclose()
        plain = connect(f"redis://{user}:{secret}@127.0.0.1:{port}/0", BusSettings())
        untrusted = connect(f"rediss://{user}:{secret}@127.0.0.1:{port}/0", BusSettings())
        for refused in (plain, untrusted):
            try:
                with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
                    await asyncio.wait_for(refused.ping(), 20)
            finally:
                await refused.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
