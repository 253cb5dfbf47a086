// What the device holds, told to the server: the inventory after each full sync, and the
// receipt of a purge (access ended) or a remote wipe (docs/protocol.md, "Inventory, receipts
// and remote wipe").
//
// Inventory: per profile table with a cursor and no change in the outbox, the row count, the
// checksum of the (id, versionnumber) pairs and the table's cursor. A table's count and
// checksum are computed again only when its cursor moved since they were kept (every change
// that reaches the table moves it; a table the server re-scopes drops its kept value), so a
// sync in which nothing changed reads no rows. Receipts: after removing data the device says
// how much; one that cannot be delivered is kept and sent before the next handshake.

import { OfflineError, ServerError } from "./errors.js";
import { hexToUuid } from "./codecs.js";
import { q } from "./replica.js";
import { sha256, sha256Text } from "./sha256.js";

/** The error code of every sync call once an administrator asked to wipe the device. */
export const WIPE_CODE = "0x80040F01";
const CACHE = "inventory"; // state: per table, the cursor the count and checksum were computed at
const RECEIPT = "receipt"; // state: a receipt not delivered yet
const LINES = 20000; // rows hashed per chunk

/**
 * @typedef {{rows: number, checksum: string, cursor: string}} TableInventory
 * @typedef {{tables: {table: string, status: string, rows?: number, expected_rows?: number}[], rescope: string[]}} InventoryAnswer
 * @typedef {{device: string, app: string, kind: "purge" | "wipe", tables: Record<string, number>,
 *   outbox: number, files: number, reason: string | null}} Receipt
 */

/**
 * The row count and checksum of (id, version) pairs: the sum of the first 8 bytes (big-endian)
 * of SHA-256("<id>:<version>") over the rows, mod 2^64, as 16 lowercase hex digits. An id
 * stored as 32 hex digits counts in its hyphenated form; a missing version counts as 0.
 * @param {Iterable<[unknown, unknown]>} pairs
 * @returns {Promise<{rows: number, checksum: string}>}
 */
export async function inventoryChecksum(pairs) {
  const sum = new Checksum();
  for (const [id, version] of pairs) {
    const v = version == null ? 0 : typeof version === "number" && Number.isSafeInteger(version) ? version : BigInt(/** @type {any} */ (version));
    sum.add(sha256Text(`${hexToUuid(String(id).toLowerCase())}:${v}`));
  }
  return sum.result();
}

/**
 * `inventoryChecksum` of a stored table, with no JavaScript string per row: SQLite writes the
 * rows' "<id>:<version>" lines, a chunk at a time in primary-key order, into one blob, and
 * each line is hashed where it lies.
 * @param {import("./db.js").Database} db @param {string} table @param {string} pk
 * @returns {{rows: number, checksum: string}}
 */
export function tableChecksum(db, table, pk) {
  const sum = new Checksum();
  const id = q(pk);
  const part = (/** @type {number} */ from, /** @type {number} */ length) => `substr(${id}, ${from}, ${length})`;
  const uuid = [part(1, 8), part(9, 4), part(13, 4), part(17, 4), part(21, 12)].join(" || '-' || ");
  const line = `CASE WHEN length(${id}) = 32 THEN ${uuid} ELSE ${id} END || ':' || coalesce(CAST(versionnumber AS INTEGER), 0)`;
  /** @type {unknown} */
  let after = null;
  for (;;) {
    const chunk = db.get(
      `SELECT count(*) AS n, max(k) AS last, CAST(group_concat(line, char(10)) AS BLOB) AS lines FROM ` +
        `(SELECT ${id} AS k, ${line} AS line FROM ${q(table)}${after === null ? "" : ` WHERE ${id} > :after`} ORDER BY ${id} LIMIT ${LINES})`,
      after === null ? {} : { after: /** @type {any} */ (after) },
    );
    const n = Number(chunk?.n ?? 0);
    if (!n) break;
    const bytes = /** @type {Uint8Array} */ (chunk?.lines);
    let start = 0;
    let inId = true;
    for (let i = 0; i <= bytes.length; i++) {
      const b = i < bytes.length ? bytes[i] : 10;
      if (b === 10) {
        sum.add(sha256(bytes, start, i));
        start = i + 1;
        inId = true;
      } else if (inId) {
        if (b === 58) inId = false; // ":"
        else if (b >= 65 && b <= 90) bytes[i] = b + 32; // ids count in lower case
      }
    }
    if (n < LINES) break;
    after = chunk?.last;
  }
  return sum.result();
}

/** A sum of digests' first 8 bytes mod 2^64, in two 32-bit halves (no BigInt per row). */
class Checksum {
  constructor() {
    this.high = 0;
    this.low = 0;
    this.rows = 0;
  }

  /** @param {Uint32Array} digest */
  add(digest) {
    this.rows += 1;
    this.low += digest[1];
    this.high += digest[0];
    if (this.low >= 2 ** 32) {
      this.low -= 2 ** 32;
      this.high += 1;
    }
    if (this.high >= 2 ** 32) this.high -= 2 ** 32;
  }

  /** @returns {{rows: number, checksum: string}} */
  result() {
    const total = (BigInt(this.high) << 32n) | BigInt(this.low);
    return { rows: this.rows, checksum: total.toString(16).padStart(16, "0") };
  }
}

/** @param {unknown} error */
export function wipeAsked(error) {
  return error instanceof ServerError && error.code.toUpperCase() === WIPE_CODE.toUpperCase();
}

export class Inventory {
  /** @param {import("./engine.js").Engine} engine */
  constructor(engine) {
    this.engine = engine;
    this.db = engine.db;
    this.replica = engine.replica;
  }

  /**
   * The inventory of `tables` that have a cursor and no change in the outbox.
   * @param {string[]} tables
   * @returns {Promise<Record<string, TableInventory>>}
   */
  async held(tables) {
    const wanted = tables.filter((t) => this.replica.defs.has(t));
    const cursors = this.replica.cursors(wanted);
    /** @type {Record<string, {cursor: string, rows: number, checksum: string}>} */
    const cache = this.replica.getState(CACHE) ?? {};
    const pending = () => new Set(this.db.all("SELECT DISTINCT tablename FROM _fs_outbox").map((r) => String(r.tablename)));
    const before = pending();
    /** @type {Record<string, TableInventory>} */
    const out = {};
    let changed = false;
    for (const name of wanted) {
      const cursor = cursors[name];
      if (cursor == null || before.has(name)) continue;
      let kept = cache[name];
      if (!kept || kept.cursor !== cursor) {
        const { rows, checksum } = tableChecksum(this.db, name, this.replica.table(name).primary_id);
        kept = cache[name] = { cursor, rows, checksum };
        changed = true;
      }
      out[name] = { rows: kept.rows, checksum: kept.checksum, cursor };
    }
    // a local change made while the digests were computed: that table's rows are not the server's
    const after = pending();
    for (const name of Object.keys(out)) if (after.has(name)) delete out[name];
    const still = this.replica.cursors(Object.keys(out));
    for (const name of Object.keys(out)) if (still[name] !== out[name].cursor) delete out[name];
    if (changed) this.db.tx(() => this.replica.setState(CACHE, cache));
    return out;
  }

  /**
   * Send the inventory of `tables`; null when there is nothing to report.
   * @param {string[]} tables
   * @returns {Promise<InventoryAnswer | null>}
   */
  async report(tables) {
    const held = await this.held(tables);
    if (!Object.keys(held).length) return null;
    /** @type {InventoryAnswer} */
    const answer = await this.engine.call("POST", "/sync/v1/inventory", {
      device: this.engine.deviceId,
      app: this.engine.appKey,
      tables: held,
    });
    if (answer.rescope?.length) this.forget(answer.rescope);
    return answer;
  }

  /**
   * Drop the kept counts of `tables` (all when omitted): computed afresh next time.
   * @param {string[]} [tables]
   */
  forget(tables) {
    this.db.tx(() => {
      if (!tables) {
        this.replica.deleteState(CACHE);
        return;
      }
      const cache = this.replica.getState(CACHE) ?? {};
      for (const name of tables) delete cache[name];
      this.replica.setState(CACHE, cache);
    });
  }

  /** Rows held per profile table (what a receipt reports as removed). */
  counts() {
    /** @type {Record<string, number>} */
    const out = {};
    for (const name of this.replica.defs.keys()) out[name] = Number(this.db.value(`SELECT count(*) FROM ${q(name)}`));
    return out;
  }

  /**
   * Tell the server what was removed; kept for the next sync when it cannot be sent.
   * @param {"purge" | "wipe"} kind @param {Record<string, number>} tables
   * @param {{outbox: number, files: number, reason: string | null}} removed
   * @returns {Promise<boolean>} whether it was delivered
   */
  async receipt(kind, tables, { outbox, files, reason }) {
    /** @type {Receipt} */
    const request = { device: this.engine.deviceId, app: this.engine.appKey, kind, tables, outbox, files, reason };
    this.db.tx(() => this.replica.setState(RECEIPT, request));
    return this.flush();
  }

  /** Send a receipt kept from before; true when none is left. */
  async flush() {
    const request = this.replica.getState(RECEIPT);
    if (!request) return true;
    try {
      await this.engine.call("POST", "/sync/v1/receipt", request);
    } catch (error) {
      if (error instanceof OfflineError) return false;
      if (!(error instanceof ServerError)) throw error;
      if (error.status >= 500 || error.status === 401) return false; // try again next time
      // refused for good (an old server, a wipe already closed): nothing to resend
    }
    this.db.tx(() => this.replica.deleteState(RECEIPT));
    return true;
  }
}
