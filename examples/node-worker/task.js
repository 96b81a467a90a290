// Decoding a Task entry, as docs/protocol.md sections 3, 4.1 and 4.2 describe it: flat or
// `data` form, unknown fields rejected by name, values checked by type. A DecodeError lists
// one problem per offending field; its first field becomes the dead-letter record's `field`.

import { randomBytes } from "node:crypto";

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const INT_RE = /^[+-]?\d+$/;
const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$/i;

export class DecodeError extends Error {
  constructor(problems) {
    super(problems.map(({ field, problem }) => (field ? `${field}: ${problem}` : problem)).join("; "));
    this.problems = problems;
  }

  get field() {
    return this.problems.length ? this.problems[0].field : "";
  }
}

class Problem extends Error {}

function identifier(v) {
  if (typeof v !== "string") throw new Problem("must be a string");
  const s = v.trim();
  if (s.length < 1 || s.length > 200 || /\s/.test(s)) {
    throw new Problem("must be 1-200 characters without whitespace");
  }
  return s;
}

function name(v) {
  if (typeof v !== "string") throw new Problem("must be a string");
  const s = v.trim().toLowerCase();
  if (!NAME_RE.test(s)) throw new Problem("must be 1-64 lower-case letters, digits, '_', '.' or '-'");
  return s;
}

function string(v) {
  if (typeof v !== "string") throw new Problem("must be a string");
  return v;
}

function text(max) {
  return (v) => {
    const s = string(v);
    if (!s.trim()) throw new Problem("must not be empty");
    if (s.length > max) throw new Problem(`must be at most ${max} characters`);
    return s;
  };
}

function number(v) {
  let n = v;
  if (typeof v === "string" && NUMBER_RE.test(v.trim())) n = Number(v.trim());
  if (typeof n !== "number" || !Number.isFinite(n)) throw new Problem("must be a finite number");
  return n;
}

function integer(min, max = Infinity) {
  return (v) => {
    let n = v;
    if (typeof v === "string" && INT_RE.test(v.trim())) n = Number(v.trim());
    if (typeof n !== "number" || !Number.isInteger(n)) throw new Problem("must be an integer");
    if (n < min || n > max) throw new Problem(`must be between ${min} and ${max}`);
    return n;
  };
}

function positive(v) {
  const n = number(v);
  if (!(n > 0)) throw new Problem("must be greater than 0");
  return n;
}

function oneOf(...words) {
  return (v) => {
    const s = typeof v === "string" ? v.trim().toLowerCase() : v;
    if (!words.includes(s)) throw new Problem(`must be one of ${words.join(", ")}`);
    return s;
  };
}

function timestamp(v) {
  const s = string(v).trim();
  if (!ISO_RE.test(s)) throw new Problem("must be an ISO 8601 timestamp");
  // Without an offset a timestamp is UTC (section 3), not the local time Date.parse assumes.
  const withZone = /(Z|[+-]\d{2}:?\d{2})$/i.test(s) || !s.includes(":") ? s : `${s}Z`;
  const ms = Date.parse(withZone.replace(" ", "T"));
  if (Number.isNaN(ms)) throw new Problem("must be an ISO 8601 timestamp");
  return new Date(ms).toISOString();
}

function boolean(v) {
  if (typeof v === "boolean") return v;
  throw new Problem("must be true or false");
}

function version(v) {
  const n = integer(-Infinity)(v);
  if (n !== 1) throw new Problem(`unsupported version ${n}; this worker reads 1`);
  return n;
}

function optional(check) {
  return (v) => (v === null ? null : check(v));
}

const ATTEMPT_RECORD = {
  schema_version: version,
  vendor: name,
  model: string,
  error: string,
  retryable: boolean,
  at: timestamp,
};

function listOf(limit, item) {
  return (v, path, problems) => {
    if (!Array.isArray(v)) throw new Problem("must be a JSON array");
    if (v.length > limit) throw new Problem(`has ${v.length} items; at most ${limit} are allowed`);
    return v.map((x, i) => item(x, `${path}.${i}`, problems));
  };
}

function attemptRecord(v, path, problems) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    problems.push({ field: path, problem: "must be a JSON object" });
    return v;
  }
  return validate("AttemptRecord", ATTEMPT_RECORD, ["vendor", "error"], v, problems, `${path}.`);
}

function nameItem(v, path, problems) {
  try {
    return name(v);
  } catch (e) {
    problems.push({ field: path, problem: e.message });
    return v;
  }
}

// Field -> check. `null` is accepted (JSON only) where the default is none.
const TASK = {
  schema_version: version,
  task_id: identifier,
  task_type: name,
  prompt: text(4_000_000),
  context: string,
  parent_shard: optional(identifier),
  urgency: oneOf("low", "normal", "high", "critical"),
  complexity: optional(oneOf("simple", "medium", "complex", "ultra_context", "strategic")),
  vendor: optional(name),
  model: optional(identifier),
  route_model: optional(identifier),
  intake_id: optional(identifier),
  budget_usd: optional(positive),
  max_output_tokens: optional(integer(1, 1_000_000)),
  run_id: optional(identifier),
  attempt: integer(1),
  excluded_vendors: listOf(32, nameItem),
  history: listOf(64, attemptRecord),
  timestamp,
};
const JSON_FIELDS = new Set(["excluded_vendors", "history"]);

function validate(model, spec, required, values, problems, prefix = "") {
  const out = {};
  for (const [key, value] of Object.entries(values)) {
    const check = spec[key];
    if (!check) {
      problems.push({ field: prefix + key, problem: `is not a field of ${model}` });
      continue;
    }
    try {
      out[key] = check(value, prefix + key, problems);
    } catch (e) {
      if (!(e instanceof Problem)) throw e;
      problems.push({ field: prefix + key, problem: e.message });
    }
  }
  for (const key of required) {
    if (!(key in values)) problems.push({ field: prefix + key, problem: "is required" });
  }
  return out;
}

function finish(values) {
  const problems = [];
  const task = validate("Task", TASK, ["prompt"], values, problems);
  if (problems.length) throw new DecodeError(problems);
  return {
    task_id: `task_${randomBytes(8).toString("hex")}`,
    task_type: "general",
    context: "",
    urgency: "normal",
    attempt: 1,
    excluded_vendors: [],
    history: [],
    ...Object.fromEntries(Object.entries(task).filter(([, v]) => v !== null)),
  };
}

/**
 * Decode a stream entry's fields ([[Buffer name, Buffer value], ...], in order) into a task.
 * A task without `task_id` gets a generated one (section 4.2; the dispatcher always sets it
 * on a routed task). Throws DecodeError.
 */
export function decodeTask(pairs) {
  const fields = {};
  const problems = [];
  for (const [rawName, rawValue] of pairs) {
    let key;
    try {
      key = UTF8.decode(rawName);
    } catch {
      problems.push({ field: rawName.toString("utf8"), problem: "name is not UTF-8" });
      continue;
    }
    try {
      fields[key] = UTF8.decode(rawValue);
    } catch {
      problems.push({ field: key, problem: "is not valid UTF-8" });
    }
  }
  if (problems.length) throw new DecodeError(problems);
  const names = Object.keys(fields);
  if (!names.length) throw new DecodeError([{ field: "", problem: "entry has no fields" }]);
  if ("data" in fields) {
    const extra = names.filter((n) => n !== "data").sort();
    if (extra.length) {
      throw new DecodeError([{ field: extra[0], problem: "cannot be combined with a `data` field" }]);
    }
    let obj;
    try {
      obj = JSON.parse(fields.data);
    } catch (e) {
      throw new DecodeError([{ field: "data", problem: `is not valid JSON (${e.message})` }]);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new DecodeError([{ field: "data", problem: "must be a JSON object" }]);
    }
    return finish(obj);
  }
  const values = {};
  for (const [key, value] of Object.entries(fields)) {
    if (!JSON_FIELDS.has(key)) {
      values[key] = value;
      continue;
    }
    try {
      values[key] = JSON.parse(value);
    } catch (e) {
      problems.push({ field: key, problem: `must be a JSON value here (${e.message})` });
    }
  }
  if (problems.length) throw new DecodeError(problems);
  return finish(values);
}
