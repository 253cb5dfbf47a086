// Local values checked as the server checks them (types, lengths, ranges, options) and turned
// into wire values; bad input is a FieldError named at its column, and nothing is written.

import { FieldError } from "./errors.js";
import { isUuid, scaleDecimal, unscaleDecimal } from "./codecs.js";

/** @typedef {import("./replica.js").TableDef} TableDef */
/** @typedef {import("./replica.js").ColumnDef} ColumnDef */

const INT = [-2147483648, 2147483647];
const BIGINT = [-(2n ** 63n), 2n ** 63n - 1n];
const DECIMAL = ["-100000000000", "100000000000"];
const MONEY = ["-922337203685477", "922337203685477"];
const FLOAT = [-100000000000, 100000000000];
const WRITABLE_SYSTEM = new Set(["ownerid", "statecode", "statuscode"]);

/** @param {unknown} v */
function describe(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "string") return `the text ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  return `${typeof v} ${String(v)}`;
}

/**
 * @param {ColumnDef} col
 * @param {unknown} value
 * @returns {unknown} the wire value
 */
export function coerce(col, value) {
  const wrong = (/** @type {string} */ expected) => new FieldError(col.name, `expected ${expected}, got ${describe(value)}`);
  /** @param {number | bigint} v @param {number | bigint} lo @param {number | bigint} hi */
  const bounded = (v, lo, hi) => {
    const low = col.min_value != null ? col.min_value : lo;
    const high = col.max_value != null ? col.max_value : hi;
    if (v < /** @type {any} */ (low) || v > /** @type {any} */ (high)) throw new FieldError(col.name, `${v} is outside ${low} .. ${high}`);
  };
  switch (col.type) {
    case "string":
    case "memo": {
      if (typeof value !== "string") throw wrong("text");
      const limit = col.max_length ?? (col.type === "string" ? 100 : 2000);
      const length = [...value].length;
      if (length > limit) throw new FieldError(col.name, `${length} characters is longer than the maximum ${limit}`);
      if (value.includes("\u0000")) throw wrong("text without NUL characters");
      if (!value.isWellFormed()) throw wrong("text of valid Unicode");
      return value;
    }
    case "integer":
    case "bigint": {
      const n = typeof value === "string" && /^-?\d+$/.test(value.trim()) ? Number(value.trim()) : value;
      if (typeof n !== "number" || !Number.isInteger(n)) throw wrong("a whole number");
      if (col.type === "integer") bounded(n, INT[0], INT[1]);
      else bounded(BigInt(n), BIGINT[0], BIGINT[1]);
      return n;
    }
    case "decimal":
    case "money": {
      if (typeof value !== "number" && typeof value !== "string") throw wrong("a decimal number");
      if (typeof value === "number" && !Number.isFinite(value)) throw wrong("a finite decimal number");
      const scale = col.precision ?? 2;
      let units;
      try {
        units = scaleDecimal(value, scale);
      } catch {
        throw wrong("a decimal number");
      }
      const [lo, hi] = col.type === "decimal" ? DECIMAL : MONEY;
      const low = scaleDecimal(col.min_value != null ? String(col.min_value) : lo, scale);
      const high = scaleDecimal(col.max_value != null ? String(col.max_value) : hi, scale);
      const text = unscaleDecimal(units, scale);
      if (units < low || units > high) {
        throw new FieldError(col.name, `${text} is outside ${col.min_value ?? lo} .. ${col.max_value ?? hi}`);
      }
      return text;
    }
    case "float": {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n)) throw wrong("a number");
      const digits = col.precision ?? 2;
      const rounded = Number(n.toFixed(digits));
      bounded(rounded, FLOAT[0], FLOAT[1]);
      return rounded;
    }
    case "boolean":
      if (typeof value !== "boolean") throw wrong("true or false");
      return value;
    case "datetime": {
      const text = value instanceof Date ? value.toISOString() : value;
      if (typeof text !== "string" || Number.isNaN(Date.parse(text)) || !/^\d{4}-\d{2}-\d{2}/.test(text)) throw wrong("an ISO 8601 date and time");
      const hasZone = /(Z|[+-]\d{2}:?\d{2})$/.test(text);
      const ms = Date.parse(hasZone || text.length <= 10 ? text : `${text}Z`);
      if (ms < Date.UTC(1753, 0, 1)) throw new FieldError(col.name, "dates before 1753-01-01 are not supported");
      if (ms > Date.UTC(9999, 11, 31, 23, 59, 59, 999)) throw new FieldError(col.name, "dates after 9999-12-31 are not supported");
      const micro = /\.\d{3}(\d{1,3})/.exec(text)?.[1] ?? "";
      const iso = new Date(ms).toISOString();
      return `${iso.slice(0, 23)}${micro.padEnd(3, "0")}+00:00`;
    }
    case "date": {
      if (typeof value !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(value)) throw wrong("a date (YYYY-MM-DD)");
      const d = new Date(`${value}T00:00:00Z`);
      if (Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== value) throw wrong("a date (YYYY-MM-DD)");
      if (Number(value.slice(0, 4)) < 1753) throw new FieldError(col.name, "dates before 1753-01-01 are not supported");
      return value;
    }
    case "choice": {
      const n = typeof value === "string" && /^-?\d+$/.test(value) ? Number(value) : value;
      if (typeof n !== "number" || !Number.isInteger(n)) throw wrong("a choice value (an integer)");
      const allowed = (col.options ?? []).map((o) => o.value);
      if (!allowed.includes(n)) throw new FieldError(col.name, `${n} is not one of the options ${JSON.stringify(allowed.sort((a, b) => a - b))}`);
      return n;
    }
    case "multichoice": {
      const items = typeof value === "string" ? value.split(",").filter((v) => v.trim()).map(Number) : value;
      if (!Array.isArray(items)) throw wrong("a list of choice values");
      const allowed = new Set((col.options ?? []).map((o) => o.value));
      /** @type {Set<number>} */
      const out = new Set();
      for (const item of items) {
        if (typeof item !== "number" || !Number.isInteger(item)) throw new FieldError(col.name, `expected a choice value (an integer), got ${describe(item)}`);
        if (!allowed.has(item)) throw new FieldError(col.name, `${item} is not one of the options ${JSON.stringify([...allowed].sort((a, b) => a - b))}`);
        out.add(item);
      }
      const sorted = [...out].sort((a, b) => a - b);
      return sorted.length ? sorted : null;
    }
    case "uniqueidentifier":
    case "file":
    case "image":
      if (!isUuid(value)) throw wrong("a GUID");
      return value.toLowerCase();
    default:
      throw new FieldError(col.name, `columns of type ${col.type} cannot be written on the device`);
  }
}

/**
 * Validate values for a table and return them as wire values (a polymorphic lookup also sets
 * its `<col>type` column).
 * @param {TableDef} table
 * @param {Record<string, unknown>} values
 * @param {Set<string>} travelling
 * @returns {Record<string, unknown>}
 */
export function coerceValues(table, values, travelling) {
  const byName = new Map(table.columns.map((c) => [c.name, c]));
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [name, value] of Object.entries(values)) {
    const col = byName.get(name);
    if (!col) {
      if (name.endsWith("type") && byName.get(name.slice(0, -4))?.type === "lookup") {
        out[name] = value;
        continue;
      }
      throw new FieldError(name, `${table.name} has no such column`);
    }
    if (col.system && !WRITABLE_SYSTEM.has(name)) throw new FieldError(name, "is set by the server");
    if (col.read_only) throw new FieldError(name, "is read-only");
    if (!travelling.has(name) && name !== table.primary_id) throw new FieldError(name, "does not travel to this device");
    if (value === null || value === undefined || value === "") {
      if (col.required && value !== undefined) throw new FieldError(name, "is required");
      out[name] = null;
      continue;
    }
    if (col.type === "lookup") {
      const targets = col.targets ?? [];
      let id = value;
      let target = targets.length === 1 ? targets[0] : null;
      if (typeof value === "object" && value !== null && "id" in value) {
        id = /** @type {any} */ (value).id;
        target = /** @type {any} */ (value).table ?? target;
      }
      if (!isUuid(id)) throw new FieldError(name, `expected a record id (a GUID), got ${describe(id)}`);
      if (!target) {
        const given = values[`${name}type`];
        if (typeof given === "string") target = given;
      }
      if (!target || !targets.includes(target)) {
        throw new FieldError(name, `name the table of the row (one of ${targets.join(", ")})`);
      }
      out[name] = id.toLowerCase();
      if (targets.length > 1) out[`${name}type`] = target;
      continue;
    }
    out[name] = coerce(col, value);
  }
  return out;
}

/**
 * The first required column a create leaves empty, or null.
 * @param {TableDef} table @param {Record<string, unknown>} wire @param {Set<string>} travelling
 */
export function requiredMissing(table, wire, travelling) {
  for (const col of table.columns) {
    if (col.required && !col.system && travelling.has(col.name) && col.name !== table.primary_id && wire[col.name] == null) return col.name;
  }
  return null;
}
