"""Store each finding once and count it once: one atomic Lua script per finding, sent with
those of every other finding being stored at the same moment (one round trip for all).

The script files the finding under its task by finding id (HSETNX). Only a finding it had
not seen moves any number: the task's summary, the run's task list and counts, and the
totals per vendor and model. So a redelivered finding (the collector died after this write
and before its ack) or one published twice changes nothing. What the keys hold is described
in `shared.bus.findings`, which reads them back.

Every key it writes per task and per run lasts `retention_s` after its last finding (the
workers' done-markers last as long); only the totals per vendor and model are cumulative.
"""

from __future__ import annotations

import time
from enum import StrEnum

from redis.asyncio import Redis

from shared.bus.findings import UNPRICED, run_id_of, task_list_id
from shared.bus.pipeline_batch import PipelineBatch
from shared.protocol import Finding, Names


class Outcome(StrEnum):
    STORED = "stored"  # the task's first finding: the task is finished
    SUPERSEDED = "superseded"  # an ok finding of a task that had failed: now ok
    DUPLICATE = "duplicate"  # another finding of a finished task: shown, not counted
    REDELIVERED = "redelivered"  # this very finding was stored before: nothing changes


# KEYS: 1 task findings, 2 task summary, 3 run tasks, 4 run info, 5 totals
# ARGV: 1 finding_id, 2 finding JSON, 3 task_id, 4 status, 5 vendor, 6 model,
#       7 cost_usd ('' = unpriced), 8 input, 9 output, 10 cache_read, 11 cache_write tokens,
#       12 latency_ms, 13 attempts, 14 worker, 15 run_id ('' = none), 16 task_type, 17 now,
#       18 retention ms of the per-task and per-run keys (KEYS 1-4)
_LUA = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 'redelivered' end
local function keep()  -- each write moves the task's and run's expiry on (totals: none)
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[18]) end
end
local status, cost = ARGV[4], ARGV[7]
local priced = cost ~= ''
local p = ARGV[5] .. '|' .. ARGV[6] .. '|'
local prev = redis.call('HMGET', KEYS[2], 'status', 'vendor', 'model')
local ended = prev[1] == 'failed' or prev[1] == 'cancelled'  -- an ok finding supersedes
if prev[1] == 'ok' or (ended and status ~= 'ok') then
  redis.call('HINCRBY', KEYS[2], 'duplicate_findings', 1)
  redis.call('HINCRBY', KEYS[5], p .. 'duplicate_findings', 1)
  if priced then
    redis.call('HINCRBYFLOAT', KEYS[2], 'duplicate_cost_usd', cost)
    redis.call('HINCRBYFLOAT', KEYS[5], p .. 'duplicate_cost_usd', cost)
  end
  keep()
  return 'duplicate'
end
local outcome = 'stored'
if ended then
  outcome = 'superseded'
  local q = prev[2] .. '|' .. prev[3] .. '|'
  redis.call('HINCRBY', KEYS[5], q .. 'tasks', -1)
  redis.call('HINCRBY', KEYS[5], q .. prev[1], -1)
  redis.call('HINCRBY', KEYS[4], prev[1], -1)
else
  redis.call('HINCRBY', KEYS[4], 'finished', 1)
end
redis.call('HINCRBY', KEYS[4], status, 1)
redis.call('HSET', KEYS[3], ARGV[3], status)
redis.call('HSET', KEYS[2], 'status', status, 'vendor', ARGV[5], 'model', ARGV[6],
  'finding_id', ARGV[1], 'input_tokens', ARGV[8], 'output_tokens', ARGV[9],
  'cache_read_tokens', ARGV[10], 'cache_write_tokens', ARGV[11],
  'cost_usd', priced and cost or '@UNPRICED@', 'latency_ms', ARGV[12], 'attempts', ARGV[13],
  'worker', ARGV[14], 'run_id', ARGV[15], 'task_type', ARGV[16], 'updated_at', ARGV[17])
redis.call('HINCRBY', KEYS[5], p .. 'tasks', 1)
if status ~= 'ok' then redis.call('HINCRBY', KEYS[5], p .. status, 1) end
redis.call('HINCRBY', KEYS[5], p .. 'input_tokens', ARGV[8])
redis.call('HINCRBY', KEYS[5], p .. 'output_tokens', ARGV[9])
redis.call('HINCRBY', KEYS[5], p .. 'cache_read_tokens', ARGV[10])
redis.call('HINCRBY', KEYS[5], p .. 'cache_write_tokens', ARGV[11])
if priced then
  redis.call('HINCRBYFLOAT', KEYS[5], p .. 'cost_usd', cost)
else
  redis.call('HINCRBY', KEYS[5], p .. 'unpriced', 1)
end
redis.call('HINCRBYFLOAT', KEYS[5], p .. 'latency_ms', ARGV[12])
keep()
return outcome
""".replace("@UNPRICED@", UNPRICED)


class FindingStore:
    def __init__(self, redis: Redis, names: Names, *, retention_s: float) -> None:
        self._redis, self._names = redis, names
        self._retention_ms = int(retention_s * 1000)
        self._script = redis.register_script(_LUA)
        self._batch = PipelineBatch(redis)

    async def seen(self, finding: Finding) -> bool:
        """True if this finding is stored already (so it was exported already too)."""
        key = self._names.task_findings(finding.task_id)
        return bool(await self._batch.call(lambda pipe: pipe.hexists(key, finding.finding_id)))

    async def add(self, finding: Finding, *, now: float | None = None) -> Outcome:
        n = self._names
        now = time.time() if now is None else now
        run = run_id_of(finding)
        keys = [
            n.task_findings(finding.task_id),
            n.task_summary(finding.task_id),
            n.run_tasks(task_list_id(finding, now)),
            n.run_info(run),
            n.totals,
        ]
        args = [
            finding.finding_id,
            finding.model_dump_json(exclude_none=True),
            finding.task_id,
            finding.status.value,
            finding.vendor,
            finding.model,
            "" if finding.cost_usd is None else repr(finding.cost_usd),
            finding.input_tokens,
            finding.output_tokens,
            finding.cache_read_tokens,
            finding.cache_write_tokens,
            repr(finding.latency_ms),
            finding.attempt,
            finding.worker_id,
            finding.run_id or "",
            finding.task_type,
            f"{now:.3f}",
            self._retention_ms,
        ]
        raw = await self._batch.call(lambda pipe: self._script(keys=keys, args=args, client=pipe))
        return Outcome(raw.decode() if isinstance(raw, bytes) else str(raw))

    async def close(self) -> None:
        await self._batch.close()
