"""`swarm status` without a task id: who is alive, and what context the swarm holds."""

from __future__ import annotations

import json
from collections import Counter

from services.cli.shard import format_shards, shard_rows
from shared.bus.membership import live_members
from shared.runtime.redis import connect, wait_ready
from shared.runtime.settings import BusSettings, SwarmSettings


async def fleet_status(*, as_json: bool) -> int:
    swarm, bus = SwarmSettings(), BusSettings()
    url = swarm.redis_url.get_secret_value()
    redis = connect(url, bus)
    try:
        await wait_ready(redis, url, min(bus.connect_timeout_s, 10))
        members = await live_members(redis, swarm.names)
        shards = await shard_rows(redis, swarm.names)
    finally:
        await redis.aclose()
    by_role = Counter(
        (m.get("service", "?"), m.get("vendor") or m.get("shard_id") or "") for m in members
    )
    capacity = Counter[tuple[str, str]]()
    for m in members:
        key = (m.get("service", "?"), m.get("vendor") or m.get("shard_id") or "")
        capacity[key] += int(m.get("capacity", "0") or 0)
    if as_json:
        live = [
            {"service": s, "name": n, "replicas": c, "capacity": capacity[(s, n)]}
            for (s, n), c in sorted(by_role.items())
        ]
        print(json.dumps({"live": live, "shards": shards}, indent=2))
        return 0
    print(f"swarm {swarm.namespace!r} at {swarm.redis_url_redacted}")
    if not by_role:
        print("no live services (start some: swarm run SERVICE, or make demo)")
    for (service, name), count in sorted(by_role.items()):
        cap = f", capacity {capacity[(service, name)]}" if capacity[(service, name)] else ""
        print(f"  {service:<16} {name:<18} {count} live{cap}")
    print()
    print(format_shards(shards))
    return 0
