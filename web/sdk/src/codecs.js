// Values between the wire (JSON as the server sends and takes them), the replica (SQLite, laid
// out as the server's `sqlite` layout says) and the app (plain objects).

/** @typedef {string | number | null | Uint8Array} Stored */

/** @param {string} id @returns {string} */
export function uuidToHex(id) {
  if (id.length === 36 && id[8] === "-" && id[13] === "-" && id[18] === "-" && id[23] === "-") {
    return (id.slice(0, 8) + id.slice(9, 13) + id.slice(14, 18) + id.slice(19, 23) + id.slice(24)).toLowerCase();
  }
  return id.replace(/-/g, "").toLowerCase();
}

/** @param {string} hex @returns {string} */
export function hexToUuid(hex) {
  if (hex.length !== 32) return hex;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** @param {unknown} value @returns {value is string} */
export function isUuid(value) {
  return typeof value === "string" && UUID.test(value);
}

/** @returns {string} a random GUID */
export function newId() {
  return crypto.randomUUID();
}

/**
 * An ISO 8601 moment as SQLite stores it: "YYYY-MM-DD HH:MM:SS.ffffff" in UTC.
 * @param {string} value
 * @returns {string}
 */
export function isoToStored(value) {
  if (value.length >= 25 && value.endsWith("+00:00") && value[10] === "T") {
    const frac = value[19] === "." ? value.slice(20, -6) : "";
    return `${value.slice(0, 10)} ${value.slice(11, 19)}.${frac.padEnd(6, "0").slice(0, 6)}`;
  }
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new TypeError(`not a date and time: ${value}`);
  const micro = /\.(\d{4,6})/.exec(value);
  const base = new Date(ms).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const frac = micro ? micro[1].padEnd(6, "0") : base.slice(20, 23) + "000";
  return `${base.slice(0, 10)} ${base.slice(11, 19)}.${frac}`;
}

/** @param {string} stored @returns {string} */
export function storedToIso(stored) {
  const [date, time = "00:00:00"] = stored.split(" ");
  const [hms, frac = ""] = time.split(".");
  return frac && Number(frac) !== 0
    ? `${date}T${hms}.${frac.padEnd(6, "0")}+00:00`
    : `${date}T${hms}+00:00`;
}

/**
 * A decimal (string or number) scaled to an integer of 10^-scale units, half to even.
 * @param {string | number} value
 * @param {number} scale
 * @returns {bigint}
 */
export function scaleDecimal(value, scale) {
  const text = typeof value === "number" ? numberText(value) : String(value).trim();
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(text);
  if (!m || (m[2] === "" && !m[3])) throw new TypeError(`not a decimal number: ${value}`);
  const negative = m[1] === "-";
  const whole = m[2] || "0";
  const frac = m[3] || "";
  const kept = frac.slice(0, scale).padEnd(scale, "0");
  let units = BigInt(whole + kept);
  const rest = frac.slice(scale);
  if (rest && /[1-9]/.test(rest)) {
    const first = Number(rest[0]);
    const tail = /[1-9]/.test(rest.slice(1));
    if (first > 5 || (first === 5 && tail) || (first === 5 && !tail && units % 2n === 1n)) units += 1n;
  }
  return negative ? -units : units;
}

/** @param {number} n */
function numberText(n) {
  if (!Number.isFinite(n)) throw new TypeError(`not a finite number: ${n}`);
  const s = String(n);
  if (!/e/i.test(s)) return s;
  return n.toFixed(20).replace(/0+$/, "").replace(/\.$/, "");
}

/** @param {bigint} units @param {number} scale @returns {string} */
export function unscaleDecimal(units, scale) {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(scale + 1, "0");
  const whole = digits.slice(0, digits.length - scale);
  const frac = digits.slice(digits.length - scale);
  return `${negative ? "-" : ""}${whole}${scale ? "." + frac : ""}`;
}

const TEXT_WIDTH = 24;

/**
 * A wire value as the replica stores it.
 * @param {string | null | undefined} codec
 * @param {unknown} value
 * @returns {Stored}
 */
export function toStored(codec, value) {
  if (value === null || value === undefined) return null;
  if (!codec) {
    if (typeof value === "boolean") return value ? 1 : 0;
    if (typeof value === "object") return JSON.stringify(value);
    return /** @type {string | number} */ (value);
  }
  switch (codec) {
    case "uuid":
      return uuidToHex(String(value));
    case "datetime":
      return isoToStored(String(value));
    case "bool":
      return value ? 1 : 0;
    case "multichoice": {
      const items = Array.isArray(value) ? value : String(value).split(",").filter((v) => v.trim());
      const sorted = [...new Set(items.map(Number))].sort((a, b) => a - b);
      return sorted.length ? `,${sorted.join(",")},` : null;
    }
    default: {
      const [kind, places] = codec.split(":");
      const scale = Number(places);
      const units = scaleDecimal(/** @type {string | number} */ (value), scale);
      if (kind === "decimal") {
        const n = Number(units);
        if (!Number.isSafeInteger(n)) return units.toString();
        return n;
      }
      // decimaltext: zero-padded digits of (value + 10^12) * 10^scale
      const shifted = units + 10n ** BigInt(12 + scale);
      const text = shifted.toString();
      return text.length <= TEXT_WIDTH ? text.padStart(TEXT_WIDTH, "0") : "9".repeat(TEXT_WIDTH + 1);
    }
  }
}

/**
 * A stored value as the wire (and the app) has it.
 * @param {string | null | undefined} codec
 * @param {Stored | bigint | undefined} value
 * @returns {unknown}
 */
export function fromStored(codec, value) {
  if (value === null || value === undefined) return null;
  if (!codec) return typeof value === "bigint" ? Number(value) : value;
  switch (codec) {
    case "uuid":
      return hexToUuid(String(value));
    case "datetime":
      return storedToIso(String(value));
    case "bool":
      return Boolean(Number(value));
    case "multichoice":
      return String(value).split(",").filter((v) => v).map(Number);
    default: {
      const [kind, places] = codec.split(":");
      const scale = Number(places);
      if (kind === "decimal") return unscaleDecimal(BigInt(/** @type {any} */ (value)), scale);
      return unscaleDecimal(BigInt(String(value)) - 10n ** BigInt(12 + scale), scale);
    }
  }
}

/**
 * The start or end of a date operator's range, as Python's `fieldsync.query.bind.date_range`
 * computes it (UTC days, weeks from Sunday); stored form (a SQLite moment, or a date).
 * @param {{op: string, value: unknown, edge: string, date: boolean}} spec
 * @param {Date} now
 * @returns {string}
 */
export function timeParam(spec, now) {
  const DAY = 86400000;
  const t = now.getTime();
  const today = Math.floor(t / DAY) * DAY;
  const x = Number(spec.value);
  /** @type {[number | null, number | null]} */
  let range;
  const d = new Date(today);
  switch (spec.op) {
    case "today": range = [today, today + DAY]; break;
    case "yesterday": range = [today - DAY, today]; break;
    case "tomorrow": range = [today + DAY, today + 2 * DAY]; break;
    case "last-x-days": range = [today - x * DAY, t + 0.001]; break;
    case "next-x-days": range = [t, today + (x + 1) * DAY]; break;
    case "last-x-hours": range = [t - x * 3600000, t + 0.001]; break;
    case "next-x-hours": range = [t, t + x * 3600000]; break;
    case "olderthan-x-days":
    case "older-x-days": range = [null, t - x * DAY]; break;
    case "this-week": {
      const start = today - ((d.getUTCDay() + 7) % 7) * DAY; // weeks start on Sunday
      range = [start, start + 7 * DAY];
      break;
    }
    case "this-month": {
      const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
      range = [start, Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1)];
      break;
    }
    case "this-year": {
      range = [Date.UTC(d.getUTCFullYear(), 0, 1), Date.UTC(d.getUTCFullYear() + 1, 0, 1)];
      break;
    }
    default:
      throw new TypeError(`unknown date operator ${spec.op}`);
  }
  const edge = spec.edge === "start" ? range[0] : range[1];
  if (edge === null) throw new TypeError(`${spec.op} has no ${spec.edge}`);
  if (spec.date) return new Date(Math.floor(edge / DAY) * DAY).toISOString().slice(0, 10);
  const whole = Math.floor(edge);
  const micro = Math.round((edge - whole) * 1000); // the +1 µs of the inclusive "now"
  const iso = new Date(whole).toISOString();
  const frac = iso.slice(20, 23) + String(micro).padStart(3, "0");
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}.${frac}`;
}
