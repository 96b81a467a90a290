// Decoding a Task entry, as docs/protocol.md sections 3, 4.1, 4.2 and 10 describe it: flat or
// `data` form, unknown fields rejected by name (dropped in a message of a newer minor), values
// checked by type. A DecodeError lists one problem per offending field; its first field
// becomes the dead-letter record's `field`.

import { randomBytes } from "node:crypto";

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const INT_RE = /^[+-]?\d+$/;
const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const VERSION_RE = /^(\d{1,4})(?:\.(\d{1,4}))?$/;
// A header name (section 4.2): 1-128 characters, first a letter or digit.
const HEADER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$/i;

// The version this reader knows (section 10): Task as of 1.1, which added `headers` (Task
// has no field of 1.2). Any minor of this major is read; a newer one's unknown fields dropped.
export const SCHEMA_MAJOR = 1;
export const SCHEMA_MINOR = 1;
const KNOWS = `${SCHEMA_MAJOR}.0 to ${SCHEMA_MAJOR}.${SCHEMA_MINOR}`;

/**
 * Section 10: a writer writes the lowest version that has every field it sets; `minorFields`
 * maps each field added after MAJOR.0 to the minor that added it (`{ headers: 1 }`). Empty
 * fields count as unset (and are left out). Returns `"1"` or e.g. `"1.1"`.
 */
export function lowestVersion(message, minorFields) {
  const minor = Math.max(0, ...Object.entries(minorFields).filter(([f]) => isSet(message[f])).map(([, m]) => m));
  return minor ? `${SCHEMA_MAJOR}.${minor}` : String(SCHEMA_MAJOR);
}

export function isSet(v) {
  if (v === undefined || v === null) return false;
  return typeof v === "object" ? Object.keys(v).length > 0 : true;
}

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

// `1`, `"1"`, `"1.1"` (MAJOR and MINOR of 1-4 digits; JSON: an integer or a string) ->
// [major, minor]; null if it is not a version.
function parseVersion(v) {
  if (typeof v === "number") return Number.isInteger(v) && v >= 0 && v <= 9999 ? [v, 0] : null;
  const m = typeof v === "string" ? VERSION_RE.exec(v.trim()) : null;
  return m ? [Number(m[1]), Number(m[2] || 0)] : null;
}

function version(v) {
  const parsed = parseVersion(v);
  if (!parsed) {
    throw new Problem(`must be MAJOR or MAJOR.MINOR, e.g. 1 or "${SCHEMA_MAJOR}.${SCHEMA_MINOR}" (a string in JSON)`);
  }
  const [major, minor] = parsed;
  if (major !== SCHEMA_MAJOR) {
    throw new Problem(
      `unsupported version ${major}.${minor}: major ${major} is not read here; this swarm reads ${SCHEMA_MAJOR}.x (it knows ${KNOWS})`,
    );
  }
  return `${major}.${minor}`;
}

function newerMinor(v) {
  const parsed = parseVersion(v);
  return parsed !== null && parsed[0] === SCHEMA_MAJOR && parsed[1] > SCHEMA_MINOR;
}

// Section 4.2 `headers`: a JSON object of at most 32 strings, each value at most 4096 characters.
function headers(v, path, problems) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Problem("must be a JSON object of string to string");
  const entries = Object.entries(v);
  if (entries.length > 32) throw new Problem(`has ${entries.length} headers; at most 32 are allowed`);
  for (const [k] of entries) {
    if (!HEADER_NAME_RE.test(k)) {
      throw new Problem(
        `header name ${JSON.stringify(k.slice(0, 64))} must be 1-128 letters, digits, '_', '.' or '-', first a letter or digit`,
      );
    }
  }
  for (const [k, value] of entries) {
    if (typeof value !== "string") problems.push({ field: `${path}.${k}`, problem: "must be a string" });
    else if (value.length > 4096 && [...value].length > 4096) {
      problems.push({ field: `${path}.${k}`, problem: "must be at most 4096 characters" });
    }
  }
  return Object.fromEntries(entries);
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
  return (v, path, problems, newer) => {
    if (!Array.isArray(v)) throw new Problem("must be a JSON array");
    if (v.length > limit) throw new Problem(`has ${v.length} items; at most ${limit} are allowed`);
    return v.map((x, i) => item(x, `${path}.${i}`, problems, newer));
  };
}

function attemptRecord(v, path, problems, newer) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    problems.push({ field: path, problem: "must be a JSON object" });
    return v;
  }
  return validate("AttemptRecord", ATTEMPT_RECORD, ["vendor", "error"], v, problems, `${path}.`, newer);
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
  headers,
  timestamp,
};
const JSON_FIELDS = new Set(["excluded_vendors", "history", "headers"]);

// Section 10: a field the message does not have is rejected by name, unless the message (or
// the one it is nested in, `newer`) is of a newer minor than this reader's: then it is dropped.
function validate(model, spec, required, values, problems, prefix = "", newer = false) {
  const dropUnknown = newer || newerMinor(values.schema_version);
  const out = {};
  for (const [key, value] of Object.entries(values)) {
    const check = Object.hasOwn(spec, key) ? spec[key] : null;
    if (!check) {
      if (!dropUnknown) problems.push({ field: prefix + key, problem: `is not a field of ${model}` });
      continue;
    }
    try {
      out[key] = check(value, prefix + key, problems, dropUnknown);
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
    headers: {},
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
