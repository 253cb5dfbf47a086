// @ts-check
/** What a record form shows and how what a person typed becomes a value for the device:
 * pure functions, no DOM, so the rules are the same for every screen. Bad input raises a
 * `BadInput` naming the field; nothing is written then. */

export const NUMBER_TYPES = ["integer", "bigint", "decimal", "money", "float"];
export const FILE_TYPES = ["file", "image"];
/** System columns a person may see on a form (read-only); other system columns stay hidden. */
export const SHOWN_SYSTEM = ["statecode", "statuscode", "ownerid", "modifiedon"];
const HIDDEN = new Set([
  "createdon", "createdby", "modifiedby", "versionnumber", "owningbusinessunit",
  "owningteam", "owninguser", "overriddencreatedon", "importsequencenumber",
  "timezoneruleversionnumber", "utcconversiontimezonecode", "owneridtype",
]);

export class BadInput extends Error {
  /** @param {string} column @param {string} message */
  constructor(column, message) {
    super(message);
    this.column = column;
  }
}

/**
 * @typedef {{ name: string, type: string, displayName?: string, required?: boolean,
 *   readOnly?: boolean, maxLength?: number, min?: number, max?: number, precision?: number,
 *   options?: { value: any, label: string }[], targets?: string[], system?: boolean }} Column
 * @typedef {{ name: string, entitySet?: string, displayName?: string, primaryId: string,
 *   primaryName: string, columns: Column[] }} Table
 */

/** @param {Column} col */
export function label(col) {
  return col.displayName || col.name;
}

/**
 * The fields of a form: one per travelling column, the primary name first, read-only ones last;
 * not the primary id, nor bookkeeping columns.
 * @param {Table} table
 * @returns {{ column: Column, editable: boolean }[]}
 */
export function formFields(table) {
  const out = [];
  for (const column of table.columns) {
    if (column.name === table.primaryId || HIDDEN.has(column.name)) continue;
    if (column.name.endsWith("@name") || column.name.endsWith("@label")) continue;
    if (column.system && !SHOWN_SYSTEM.includes(column.name)) continue;
    const editable = !(column.readOnly || column.system || SHOWN_SYSTEM.includes(column.name));
    out.push({ column, editable });
  }
  const rank = (/** @type {{ column: Column, editable: boolean }} */ f) =>
    (f.column.name === table.primaryName ? 0 : 2) + (f.editable ? 0 : 1);
  return out.map((f, i) => ({ f, i }))
    .sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i)
    .map(({ f }) => f);
}

/**
 * The columns a list shows under each row's title.
 * @param {Table} table
 * @param {string[]} [viewColumns]
 */
export function listColumns(table, viewColumns) {
  const known = new Set(table.columns.map((c) => c.name));
  const wanted = (viewColumns && viewColumns.length ? viewColumns
    : formFields(table).filter((f) => f.editable).map((f) => f.column.name))
    .filter((n) => n !== table.primaryId && n !== table.primaryName && known.has(n));
  return wanted.filter((n) => {
    const col = table.columns.find((c) => c.name === n);
    return col && !FILE_TYPES.includes(col.type);
  }).slice(0, 3);
}

/**
 * Parse what the form holds for one field.
 * @param {Column} col
 * @param {any} raw a string from an input or select, an array for a multi-select, a lookup
 *   `{ id, table }` or null
 */
export function parse(col, raw) {
  const name = label(col);
  const empty = raw === null || raw === undefined || (typeof raw === "string" && raw.trim() === "")
    || (Array.isArray(raw) && raw.length === 0);
  if (empty) {
    if (col.required) throw new BadInput(col.name, `${name} is required`);
    return null;
  }
  const text = typeof raw === "string" ? raw.trim() : raw;
  switch (col.type) {
    case "string":
    case "memo": {
      const max = col.maxLength;
      if (max && raw.length > max) {
        throw new BadInput(col.name, `${name}: at most ${max} characters (this has ${raw.length})`);
      }
      return raw;
    }
    case "integer":
    case "bigint": {
      if (!/^[-+]?\d+$/.test(text)) {
        throw new BadInput(col.name, `${name}: enter a whole number, not “${text}”`);
      }
      const n = Number(text);
      range(col, n, text);
      return col.type === "bigint" ? text.replace(/^\+/, "") : n;
    }
    case "decimal":
    case "money":
    case "float": {
      const normal = text.replace(",", ".");
      if (!/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(normal)) {
        throw new BadInput(col.name, `${name}: enter a number, not “${text}”`);
      }
      const n = Number(normal);
      if (!Number.isFinite(n)) throw new BadInput(col.name, `${name}: enter a number, not “${text}”`);
      range(col, n, text);
      return col.type === "float" ? n : normal.replace(/^\+/, "");
    }
    case "boolean":
      if (text === "true" || text === true) return true;
      if (text === "false" || text === false) return false;
      throw new BadInput(col.name, `${name}: choose yes or no`);
    case "choice": {
      const option = (col.options || []).find((o) => String(o.value) === String(text));
      if (!option) throw new BadInput(col.name, `${name}: choose one of the options`);
      return option.value;
    }
    case "multichoice": {
      const values = (col.options || []).map((o) => o.value);
      const chosen = [...new Set(/** @type {any[]} */ (raw).map((v) => values.find((x) => String(x) === String(v))))];
      if (chosen.some((v) => v === undefined)) {
        throw new BadInput(col.name, `${name}: choose among the options`);
      }
      return chosen.sort((a, b) => a - b);
    }
    case "date": {
      if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || Number.isNaN(Date.parse(`${text}T00:00:00Z`))) {
        throw new BadInput(col.name, `${name}: enter a date`);
      }
      return text;
    }
    case "datetime": {
      // <input type=datetime-local> holds the user's local time; the device stores UTC
      const moment = new Date(text);
      if (Number.isNaN(moment.getTime())) throw new BadInput(col.name, `${name}: enter a date and time`);
      return moment.toISOString().replace(/\.\d{3}Z$/, "Z");
    }
    case "uniqueidentifier":
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text)) {
        throw new BadInput(col.name, `${name}: enter a GUID, not “${text}”`);
      }
      return text.toLowerCase();
    case "lookup": {
      const targets = col.targets || [];
      if (!raw.id || (raw.table && targets.length && !targets.includes(raw.table))) {
        throw new BadInput(col.name, `${name}: pick a row of ${targets.join(", ")}`);
      }
      return { id: raw.id, table: raw.table || targets[0] };
    }
    default:
      throw new BadInput(col.name, `${name} cannot be edited here`);
  }
}

/** @param {Column} col @param {number} n @param {string} text */
function range(col, n, text) {
  const name = label(col);
  if (col.min !== undefined && col.min !== null && n < Number(col.min)) {
    throw new BadInput(col.name, `${name}: ${text} is below the minimum ${col.min}`);
  }
  if (col.max !== undefined && col.max !== null && n > Number(col.max)) {
    throw new BadInput(col.name, `${name}: ${text} is above the maximum ${col.max}`);
  }
}

/**
 * The value of a row in the form's terms: what an input or select holds.
 * @param {Column} col
 * @param {Record<string, any>} row
 */
export function current(col, row) {
  const value = row[col.name];
  if (value === null || value === undefined) return null;
  if (col.type === "lookup") {
    const table = row[`${col.name}@table`] || row[`${col.name}type`] || (col.targets || [])[0];
    return { id: String(typeof value === "object" ? value.id : value), table, name: row[`${col.name}@name`] };
  }
  if (col.type === "multichoice") {
    return (Array.isArray(value) ? value : String(value).split(",").filter(Boolean).map(Number));
  }
  if (col.type === "boolean") return value === true || value === 1 || value === "1" || value === "true";
  return value;
}

/**
 * Whether two values in the device's terms are the same (only changed columns travel, so a
 * concurrent change to another column survives the merge).
 * @param {Column} col @param {any} a @param {any} b
 */
export function same(col, a, b) {
  if (a === null || a === undefined || b === null || b === undefined) {
    return (a === null || a === undefined) && (b === null || b === undefined);
  }
  switch (col.type) {
    case "decimal": case "money": case "float": case "integer": case "bigint":
      return Number(a) === Number(b);
    case "datetime": {
      const x = Date.parse(String(a)); const y = Date.parse(String(b));
      return Math.floor(x / 60000) === Math.floor(y / 60000);
    }
    case "lookup":
      return String(typeof a === "object" ? a.id : a) === String(typeof b === "object" ? b.id : b);
    case "multichoice":
      return JSON.stringify([...a].map(Number).sort()) === JSON.stringify([...b].map(Number).sort());
    case "boolean":
      return Boolean(a) === Boolean(b);
    default:
      return String(a) === String(b);
  }
}

/**
 * A value for the list and the form's read-only fields, in the user's locale.
 * @param {Column | undefined} col @param {Record<string, any>} row
 */
export function show(col, row) {
  if (!col) return "";
  const value = row[col.name];
  if (value === null || value === undefined || value === "") return "";
  switch (col.type) {
    case "choice":
      return row[`${col.name}@label`] || optionLabel(col, value);
    case "multichoice":
      return row[`${col.name}@label`] || current(col, row).map((/** @type {any} */ v) => optionLabel(col, v)).join(", ");
    case "boolean":
      return current(col, row) ? "Yes" : "No";
    case "lookup":
      return row[`${col.name}@name`] || `(${String(value).slice(0, 8)})`;
    case "datetime": {
      const d = new Date(String(value));
      return Number.isNaN(d.getTime()) ? String(value)
        : new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }).format(d);
    }
    case "date": {
      const d = new Date(`${String(value).slice(0, 10)}T00:00:00`);
      return Number.isNaN(d.getTime()) ? String(value)
        : new Intl.DateTimeFormat(undefined, { dateStyle: "medium" }).format(d);
    }
    default:
      return String(value);
  }
}

/** @param {Column} col @param {any} value */
function optionLabel(col, value) {
  const option = (col.options || []).find((o) => String(o.value) === String(value));
  return option ? option.label : String(value);
}

/** An ISO time as the value of an `<input type=datetime-local>` (the user's local time).
 * @param {any} value */
export function localDateTime(value) {
  if (!value) return "";
  const d = new Date(String(value));
  if (Number.isNaN(d.getTime())) return "";
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
