// A swarmbus vendor worker in Node.js, written from docs/protocol.md (section numbers below
// are that page's). It joins `worker-<vendor>`, reads the vendor's four urgency streams most
// urgent first, answers each task with a finding, and leaves cleanly on SIGTERM.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import Redis from "ioredis";
import { DecodeError, decodeTask, isSet, lowestVersion } from "./task.js";

const env = process.env;
const num = (key, dflt) => (env[key] === undefined || env[key] === "" ? dflt : Number(env[key]));

const NS = env.SWARM_NAMESPACE || "swarm";
const VENDOR = (env.SWARM_WORKER_VENDOR || "deepseek").toLowerCase();
const VENDOR_MODEL = env[`SWARM_${VENDOR.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_MODEL`];
const MODEL = env.SWARM_WORKER_MODEL || VENDOR_MODEL || (VENDOR === "deepseek" ? "deepseek-flash" : "");
const CONSUMER = env.CONSUMER_NAME || `node-worker-${VENDOR}-${hostname()}-${process.pid}`;
const CAPACITY = Math.max(1, num("SWARM_MAX_IN_FLIGHT", 8));
const BEAT_MS = num("SWARM_HEARTBEAT_INTERVAL_S", 1) * 1000;
const TTL_MS = Math.round(num("SWARM_HEARTBEAT_TTL_S", 3) * 1000);
const BLOCK_MS = num("SWARM_BLOCK_MS", 2000);
const VISIBILITY_MS = num("SWARM_VISIBILITY_TIMEOUT_S", 60) * 1000;
const RECLAIM_MS = num("SWARM_RECLAIM_INTERVAL_S", 1) * 1000;
const MAX_DELIVERIES = num("SWARM_MAX_DELIVERIES", 5);
const DLQ_MAXLEN = num("SWARM_DLQ_MAXLEN", 100000);
const AGING_MS = num("SWARM_URGENCY_AGING_S", 10) * 1000;
const TRIM_MS = num("SWARM_TRIM_INTERVAL_S", 30) * 1000;
const RETENTION_MS = num("SWARM_RETENTION_S", 3600) * 1000;
const MAX_STREAM_LEN = num("SWARM_MAX_STREAM_LEN", 1000000);
const DRAIN_MS = num("SWARM_DRAIN_TIMEOUT_S", 20) * 1000;
const DONE_TTL_MS = Math.round(num("SWARM_WORKER_DONE_TTL_S", 7 * 86400) * 1000);
const BUDGET_PERIOD_S = num("SWARM_WORKER_BUDGET_PERIOD_S", 86400);
const MAX_OUTPUT_TOKENS = num("SWARM_WORKER_MAX_OUTPUT_TOKENS", 1024);
const SIMULATOR = (env.SWARM_SIMULATOR_URL || "").replace(/\/+$/, "");
const SIM_PREFIX = { deepseek: "/deepseek/v1", openai: "/openai/v1", "openai-compatible": "/compat/v1" };

if (!MODEL) throw new Error(`set SWARM_WORKER_MODEL: no default model for vendor ${VENDOR}`);
if (SIMULATOR && !SIM_PREFIX[VENDOR]) throw new Error(`the simulator speaks chat completions for ${Object.keys(SIM_PREFIX)}`);

const GROUP = `worker-${VENDOR}`;
const base = `${NS}:queue:${VENDOR}`;
// Section 6.1: most urgent first; `normal` keeps the plain stream name.
const LEVELS = [`${base}:critical`, `${base}:high`, base, `${base}:low`];
const K = {
  member: `${NS}:member:${CONSUMER}`,
  members: `${NS}:members`,
  findings: `${NS}:findings`,
  dlq: `${NS}:dlq`,
  cancels: `${NS}:cancel`,
  done: (t) => `${NS}:done:${VENDOR}:${t}`,
  cancelled: (t) => `${NS}:cancelled:${t}`,
  task: (t) => `${NS}:task:${t}`,
  spend: (period, kind, nm) => `${NS}:spend:${period}:${kind}:${nm}`,
};

const log = (event, fields = {}) =>
  process.stdout.write(`${JSON.stringify({ event, consumer: CONSUMER, ts: new Date().toISOString(), ...fields })}\n`);

const redisUrl = env.REDIS_URL || env.SWARM_REDIS_URL || "redis://localhost:6379/0";
const options = { maxRetriesPerRequest: null, enableAutoPipelining: false };
const cmd = new Redis(redisUrl, options); // everything that does not block
const reader = new Redis(redisUrl, options); // blocking reads only
const beater = new Redis(redisUrl, options); // heartbeats: never queued behind our work
const tailer = new Redis(redisUrl, options); // swarm:cancel, read without a group

// Section 8 step 7: refresh our claim only on entries we still own.
cmd.defineCommand("refreshLeases", {
  numberOfKeys: 1,
  lua: `local lost = {} for i = 3, #ARGV do local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) if p[1] and p[1][2] == ARGV[2] then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID') else table.insert(lost, ARGV[i]) end end return lost`,
});
// Section 6.1 "read": the levels in the order given, each with the room the ones before left.
cmd.defineCommand("priorityRead", {
  numberOfKeys: 4,
  lua: `local n = tonumber(ARGV[3]) local out = {}
for _, key in ipairs(KEYS) do
  if n <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', key, '>')
  local entries = {}
  if r then entries = r[1][2] end
  out[#out + 1] = entries
  n = n - #entries
end
return out`,
});
// Section 2, swarm:done:<vendor>:<task_id>: the finding's XADD and the task record only while the
// done-marker is absent, the marker set last. 0: a peer already published this task.
cmd.defineCommand("publishFenced", {
  numberOfKeys: 3,
  lua: `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
redis.call('HSET', KEYS[3], 'state', ARGV[3], 'updated_at', ARGV[4], 'finding_id', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`,
});

const startedAt = (Date.now() / 1000).toFixed(3);
const queues = LEVELS.map(() => []); // read, not yet handed out: {level, id, pairs, deliveries}
const inFlight = new Map(); // "level id" -> entry being handled
const acking = new Set();
const handling = new Set(); // promises of handlers
const reachedAt = LEVELS.map(() => Date.now());
const calls = new Map(); // task id -> AbortController of its vendor call in flight
const cancelRequests = new Map(); // task id -> reason, the most recent 10,000
let stopping = false;
let wake = null; // resolves the read loop's wait for room

const key = (e) => `${e.level} ${e.id}`;
const queued = () => queues.reduce((n, q) => n + q.length, 0);
const free = () => CAPACITY - inFlight.size - queued();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pairsOf = (flat) => {
  const out = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
};

// -- membership (section 7, section 8 step 2) ----------------------------------------------
async function beat() {
  const now = Date.now();
  await beater
    .multi()
    .hset(K.member, {
      member_id: CONSUMER,
      service: GROUP,
      vendor: VENDOR,
      model: MODEL,
      models: MODEL,
      capacity: String(CAPACITY),
      in_flight: String(inFlight.size),
      language: "node",
      host: hostname(),
      pid: String(process.pid),
      started_at: startedAt,
      seen_at: (now / 1000).toFixed(3),
    })
    .pexpire(K.member, TTL_MS)
    .zadd(K.members, now + TTL_MS, CONSUMER)
    .exec();
}

// -- outcomes ----------------------------------------------------------------------------
async function ack(e) {
  await cmd.xack(LEVELS[e.level], GROUP, e.id);
}

// Section 5: the record, then XTRIM, then (only once both landed) the XACK.
async function deadLetter(e, reason, field = "") {
  const record = [
    "schema_version", "1", "reason", reason, "field", field,
    "source_stream", LEVELS[e.level], "source_id", e.id, "deliveries", String(e.deliveries),
    "consumer", CONSUMER, "group", GROUP, "timestamp", new Date().toISOString(),
  ];
  for (const [n, v] of e.pairs) record.push(Buffer.concat([Buffer.from("orig:"), n]), v);
  acking.add(key(e));
  try {
    const res = await cmd.multi().xadd(K.dlq, "*", ...record).xtrim(K.dlq, "MAXLEN", "~", DLQ_MAXLEN).exec();
    for (const [err] of res) if (err) throw err;
    await ack(e);
  } finally {
    acking.delete(key(e));
  }
  log("task.dead_lettered", { stream: LEVELS[e.level], id: e.id, reason });
}

// Section 4.3: fields Finding gained after 1.0, and the minor that added each (section 10).
const FINDING_MINOR_FIELDS = { headers: 1 };

function finding(task, fields) {
  const f = {
    finding_id: `finding_${randomBytes(8).toString("hex")}`,
    task_id: task.task_id,
    worker_id: CONSUMER,
    vendor: VENDOR,
    model: fields.model || task.model || task.route_model || MODEL,
    status: "ok",
    attempt: task.attempt,
    task_type: task.task_type,
    ...(task.run_id ? { run_id: task.run_id } : {}),
    ...(task.intake_id ? { intake_id: task.intake_id } : {}),
    ...(isSet(task.headers) ? { headers: task.headers } : {}), // copied unchanged; empty: left out
    timestamp: new Date().toISOString(),
    ...fields,
  };
  // Section 10: the lowest version with every field it sets, `1` or `1.1` (with headers).
  return { schema_version: lowestVersion(f, FINDING_MINOR_FIELDS), ...f };
}

// Section 2 (the done-marker fence), section 8 step 8: finding first, XACK after.
async function publish(e, f, state) {
  // Section 3, flat form: a map (`headers`) is JSON text in its field.
  const flat = Object.entries(f).flatMap(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]);
  const keys = [K.done(f.task_id), K.findings, K.task(f.task_id)];
  const args = [f.finding_id, DONE_TTL_MS, state, (Date.now() / 1000).toFixed(3), ...flat];
  acking.add(key(e));
  let written;
  try {
    written = await cmd.publishFenced(...keys, ...args);
    await ack(e);
  } finally {
    acking.delete(key(e));
  }
  if (!written) {
    log("effects.fenced_off", { task_id: f.task_id, note: "a peer published this task first" });
    return;
  }
  if (f.cost_usd === undefined && f.status === "ok") await countUnpriced(f);
  log("task.done", { task_id: f.task_id, status: f.status, tokens_in: f.input_tokens, tokens_out: f.output_tokens });
}

// Section 7 "Unpriced models": this worker knows no prices, so it counts its findings apart.
async function countUnpriced(f) {
  const period = Math.floor(Date.now() / 1000 / BUDGET_PERIOD_S);
  const ttl = Math.round(BUDGET_PERIOD_S * 2 + 60);
  const m = cmd.multi();
  for (const [kind, nm] of [["vendor", f.vendor], ["task_type", f.task_type]]) {
    const k = K.spend(period, `unpriced:${kind}`, nm);
    m.incrbyfloat(k, 1).expire(k, ttl);
  }
  await m.exec();
}

// -- the vendor call -------------------------------------------------------------------------
class Transient extends Error {}
class Cancelled extends Error {}

async function answer(task, call) {
  const model = task.model || task.route_model || MODEL;
  if (!SIMULATOR) {
    const words = task.prompt.trim().split(/\s+/).slice(0, 8).join(" ");
    return { model, summary: `[node] ${words}` };
  }
  const content = task.context ? `${task.context}\n\n${task.prompt}` : task.prompt;
  let res;
  try {
    res = await fetch(`${SIMULATOR}${SIM_PREFIX[VENDOR]}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sim-key-not-secret" },
      body: JSON.stringify({
        model,
        messages: [{ role: "user", content }],
        max_tokens: task.max_output_tokens || MAX_OUTPUT_TOKENS,
      }),
      signal: call.signal,
    });
  } catch (err) {
    if (call.signal.reason instanceof Cancelled) throw call.signal.reason;
    throw new Transient(`vendor unreachable: ${err.message}`);
  }
  const body = await res.json().catch(() => ({}));
  const why = `HTTP ${res.status}: ${body?.error?.message || res.statusText}`;
  if (res.status === 429 || res.status >= 500) throw new Transient(why);
  if (!res.ok) return { model, status: "failed", error: why };
  const u = body.usage || {};
  const cached = Math.max(u.prompt_tokens_details?.cached_tokens || 0, u.prompt_cache_hit_tokens || 0);
  // Section 4.3: input_tokens are the prompt tokens billed at the input rate, cache apart.
  const input = Math.max((u.prompt_tokens || 0) - cached, 0);
  const output = u.completion_tokens || 0;
  return {
    model: body.model || model,
    summary: body.choices?.[0]?.message?.content ?? "",
    input_tokens: input,
    output_tokens: output,
    cache_read_tokens: cached,
    tokens_used: input + output,
  };
}

// -- one delivery --------------------------------------------------------------------------
async function handle(e) {
  if (e.deliveries > MAX_DELIVERIES) {
    // Section 6 "dead-letter": on the 6th delivery, not handled.
    return deadLetter(e, `delivered ${e.deliveries} times without being acknowledged (max_deliveries=${MAX_DELIVERIES})`);
  }
  let task;
  try {
    task = decodeTask(e.pairs);
  } catch (err) {
    if (!(err instanceof DecodeError)) throw err;
    return deadLetter(e, `not a valid task: ${err.message}`, err.field);
  }
  const [done, cancel] = await cmd.mget(K.done(task.task_id), K.cancelled(task.task_id));
  if (done !== null) {
    log("task.duplicate", { task_id: task.task_id, note: "finding already published; acked without a call" });
    return ack(e);
  }
  if (cancel !== null) {
    const f = finding(task, { status: "cancelled", error: `cancelled before any vendor call: ${cancel}`, cost_usd: 0 });
    return publish(e, f, "cancelled");
  }
  if (await cmd.exists(K.task(task.task_id))) {
    await cmd.hset(K.task(task.task_id), { state: "running", worker: CONSUMER, updated_at: (Date.now() / 1000).toFixed(3) });
  }
  const started = Date.now();
  for (let attempt = 1; ; attempt += 1) {
    const call = new AbortController();
    const timer = setTimeout(() => call.abort(new Error("timed out after 120 s")), 120_000);
    calls.set(task.task_id, call);
    if (cancelRequests.has(task.task_id)) call.abort(new Cancelled(cancelRequests.get(task.task_id)));
    try {
      const out = await answer(task, call);
      const f = finding(task, { ...out, latency_ms: Date.now() - started });
      return await publish(e, f, f.status === "failed" ? "failed" : "done");
    } catch (err) {
      if (err instanceof Cancelled) {
        // Section 4.5, in flight: the request closed; the vendor may bill what it read.
        const error = `cancelled during its vendor call (closed): ${err.message}`;
        return publish(e, finding(task, { status: "cancelled", error, latency_ms: Date.now() - started }), "cancelled");
      }
      if (!(err instanceof Transient) || attempt >= 3 || stopping) {
        // Failed for now: no ack. It is delivered again after the visibility timeout.
        log("task.left_pending", { task_id: task.task_id, error: err.message });
        return undefined;
      }
      await sleep(250 * 2 ** attempt);
    } finally {
      clearTimeout(timer);
      calls.delete(task.task_id);
    }
  }
}

// Section 4.5: every worker tails swarm:cancel (XREAD from its newest entry, no group) and
// closes its call in flight for the task; a queued task is covered by the dispatcher's mark.
async function tailCancels() {
  const newest = await tailer.xrevrange(K.cancels, "+", "-", "COUNT", 1);
  let last = newest.length ? newest[0][0] : "0-0";
  while (!stopping) {
    let res;
    try {
      res = await tailer.xread("COUNT", 100, "BLOCK", 1000, "STREAMS", K.cancels, last);
    } catch (err) {
      if (stopping) return;
      log("cancel_tail.failed", { error: err.message });
      await sleep(1000);
      continue;
    }
    for (const [, entries] of res || []) {
      for (const [id, flat] of entries) {
        last = id;
        const f = Object.fromEntries(pairsOf(flat));
        let req = f;
        try {
          if ("data" in f) req = JSON.parse(f.data);
        } catch {
          continue; // the dispatcher dead-letters it with the reason
        }
        const taskId = typeof req.task_id === "string" ? req.task_id.trim() : "";
        if (!taskId) continue;
        const reason = (typeof req.reason === "string" ? req.reason.trim() : "") || "cancelled by its poster";
        cancelRequests.set(taskId, reason);
        if (cancelRequests.size > 10000) cancelRequests.delete(cancelRequests.keys().next().value);
        const call = calls.get(taskId);
        if (call) {
          log("task.cancel_in_flight", { task_id: taskId });
          call.abort(new Cancelled(reason));
        }
      }
    }
  }
}

function pump() {
  while (!stopping && inFlight.size < CAPACITY) {
    const q = queues.find((x) => x.length); // section 6.1 "hand out": most urgent first
    if (!q) break;
    const e = q.shift();
    inFlight.set(key(e), e);
    const p = handle(e)
      .catch((err) => log("task.error", { id: e.id, error: String(err?.stack || err) }))
      .finally(() => {
        inFlight.delete(key(e));
        handling.delete(p);
        pump();
        if (wake) wake();
      });
    handling.add(p);
  }
}

// Entry ids compared as numbers: [ms, seq] as BigInts.
const parseId = (id) => String(id).split("-").map(BigInt);
const cmpId = ([am, as], [bm, bs]) => (am === bm ? (as < bs ? -1 : as > bs ? 1 : 0) : am < bm ? -1 : 1);

async function deliveryCounts(level, ids) {
  if (!ids.length) return {};
  const sorted = [...ids].sort((a, b) => cmpId(parseId(a), parseId(b)));
  const rows = await cmd.xpending(LEVELS[level], GROUP, sorted[0], sorted.at(-1), ids.length + 1000, CONSUMER);
  return Object.fromEntries(rows.map((r) => [r[0], Number(r[3])]));
}

async function enqueue(level, entries, counted) {
  const live = entries.filter(([, flat]) => flat && flat.length);
  const ids = live.map(([id]) => id.toString());
  const counts = counted ? await deliveryCounts(level, ids) : {};
  live.forEach(([, flat], i) => {
    const id = ids[i];
    if (inFlight.has(`${level} ${id}`) || queues[level].some((x) => x.id === id)) return;
    queues[level].push({ level, id, pairs: pairsOf(flat), deliveries: counted ? counts[id] || 1 : 1 });
  });
  pump();
}

// -- reading (section 8 steps 3-5, section 6.1) ---------------------------------------------
async function replay(level) {
  let from = "0";
  for (;;) {
    const res = await cmd.xreadgroupBuffer("GROUP", GROUP, CONSUMER, "COUNT", 100, "STREAMS", LEVELS[level], from);
    const entries = res ? res[0][1] : [];
    if (!entries.length) return;
    const gone = entries.filter(([, f]) => !f || !f.length).map(([id]) => id.toString());
    if (gone.length) await cmd.xack(LEVELS[level], GROUP, ...gone); // deleted or trimmed
    await enqueue(level, entries, true);
    from = entries.at(-1)[0].toString();
  }
}

async function readNew() {
  const n = free();
  const now = Date.now();
  const order = [0, 1, 2, 3];
  const starved = order.slice(1).filter((i) => now - reachedAt[i] > AGING_MS);
  if (starved.length) {
    const first = starved.reduce((a, b) => (reachedAt[a] <= reachedAt[b] ? a : b));
    order.splice(order.indexOf(first), 1);
    order.unshift(first);
  }
  const read = await cmd.priorityReadBuffer(...order.map((i) => LEVELS[i]), GROUP, CONSUMER, n);
  let got = 0;
  for (let j = 0; j < read.length; j += 1) {
    reachedAt[order[j]] = now;
    got += read[j].length;
    await enqueue(order[j], read[j], false);
  }
  if (got || stopping) return;
  const res = await reader.xreadgroupBuffer(
    "GROUP", GROUP, CONSUMER, "COUNT", 1, "BLOCK", BLOCK_MS,
    "STREAMS", ...LEVELS, ">", ">", ">", ">",
  );
  for (const [stream, entries] of res || []) await enqueue(LEVELS.indexOf(stream.toString()), entries, false);
}

async function readLoop() {
  for (let level = 0; level < LEVELS.length; level += 1) await replay(level);
  while (!stopping) {
    if (free() <= 0) {
      await new Promise((r) => {
        wake = r;
      });
      wake = null;
      continue;
    }
    try {
      await readNew();
    } catch (err) {
      if (stopping) return;
      if (String(err.message).includes("NOGROUP")) await createGroups();
      else log("read.failed", { error: err.message });
      await sleep(500);
    }
  }
}

async function createGroups() {
  for (const stream of LEVELS) {
    try {
      await cmd.xgroup("CREATE", stream, GROUP, "0", "MKSTREAM");
    } catch (err) {
      if (!String(err.message).startsWith("BUSYGROUP")) throw err;
    }
  }
}

// -- upkeep: leases (section 8 step 7), reclaims (section 6) -------------------------------
async function refreshLeases() {
  for (let level = 0; level < LEVELS.length; level += 1) {
    const ids = [...inFlight.values(), ...queues[level]]
      .filter((e) => e.level === level && !acking.has(key(e)))
      .map((e) => e.id);
    if (!ids.length) continue;
    const lost = await cmd.refreshLeases(LEVELS[level], GROUP, CONSUMER, ...ids);
    if (lost.length) log("lease.lost", { stream: LEVELS[level], entries: lost });
  }
}

const cursors = LEVELS.map(() => "0-0");
async function reclaim() {
  for (let level = 0; level < LEVELS.length && !stopping; level += 1) {
    const stream = LEVELS[level];
    // Dead consumers: idle past the heartbeat TTL and no member key.
    const consumers = await cmd.xinfo("CONSUMERS", stream, GROUP);
    for (const c of consumers) {
      const info = Object.fromEntries(pairsOf(c));
      if (info.name === CONSUMER || Number(info.idle) <= TTL_MS || free() <= 0) continue;
      if (await cmd.exists(`${NS}:member:${info.name}`)) continue;
      if (Number(info.pending) === 0) continue;
      const rows = await cmd.xpending(stream, GROUP, "-", "+", free(), info.name);
      if (!rows.length) continue;
      const claimed = await cmd.xclaimBuffer(stream, GROUP, CONSUMER, TTL_MS, ...rows.map((r) => r[0]));
      log("consumer.dead", { stream, consumer: info.name, reclaimed: claimed.length });
      await enqueue(level, claimed, true);
    }
    if (free() <= 0) continue;
    const [cursor, claimed] = await cmd.xautoclaimBuffer(stream, GROUP, CONSUMER, VISIBILITY_MS, cursors[level], "COUNT", free());
    cursors[level] = cursor.toString();
    await enqueue(level, claimed, true);
  }
}

// Section 6 "trim": only entries every group has delivered and acked, kept an hour.
async function trim() {
  for (const stream of LEVELS) {
    const groups = await cmd.xinfo("GROUPS", stream);
    let safe = null;
    for (const g of groups) {
      const info = Object.fromEntries(pairsOf(g));
      let bound = parseId(info["last-delivered-id"]);
      const oldest = Number(info.pending) ? (await cmd.xpending(stream, info.name))[1] : null;
      if (oldest) {
        if (cmpId(parseId(oldest), bound) < 0) bound = parseId(oldest);
      } else {
        bound = [bound[0], bound[1] + 1n];
      }
      if (safe === null || cmpId(bound, safe) < 0) safe = bound;
    }
    if (safe === null) continue;
    if ((await cmd.xlen(stream)) <= MAX_STREAM_LEN) {
      const keep = [BigInt(Date.now() - RETENTION_MS), 0n];
      if (cmpId(keep, safe) < 0) safe = keep;
    }
    if (cmpId(safe, [0n, 0n]) <= 0) continue;
    await cmd.xtrim(stream, "MINID", "~", `${safe[0]}-${safe[1]}`);
  }
}

function every(ms, job, { whileStopping = false } = {}) {
  let running = false;
  return setInterval(() => {
    if (running || (stopping && !whileStopping)) return;
    running = true;
    job()
      .catch((err) => log("upkeep.failed", { job: job.name, error: err.message }))
      .finally(() => {
        running = false;
      });
  }, ms);
}

// -- life ------------------------------------------------------------------------------------
async function leave(timers) {
  // Section 8 step 9: stop reading, finish or abandon in-flight work, then leave.
  stopping = true;
  if (wake) wake();
  reader.disconnect();
  tailer.disconnect();
  const drained = Promise.allSettled([...handling]);
  await Promise.race([drained, sleep(DRAIN_MS)]);
  timers.forEach(clearInterval);
  await cmd.multi().del(K.member).zrem(K.members, CONSUMER).exec();
  log("worker.left", { abandoned: inFlight.size });
  cmd.disconnect();
  beater.disconnect();
}

async function main() {
  await beat(); // before reading, so no peer takes us for dead
  const timers = [
    every(BEAT_MS, beat, { whileStopping: true }), // beats go on while in-flight work drains
    every(VISIBILITY_MS / 3, refreshLeases),
    every(RECLAIM_MS, reclaim),
    every(TRIM_MS, trim),
  ];
  await createGroups();
  log("worker.started", { vendor: VENDOR, model: MODEL, group: GROUP, capacity: CAPACITY, simulator: Boolean(SIMULATOR) });
  let left = null;
  const stop = (signal) => {
    log("worker.stopping", { signal });
    left = left || leave(timers).then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  tailCancels().catch((err) => log("cancel_tail.failed", { error: err.message }));
  await readLoop();
}

main().catch((err) => {
  log("worker.failed", { error: String(err?.stack || err) });
  process.exit(1);
});
