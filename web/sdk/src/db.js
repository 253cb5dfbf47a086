// The replica's SQLite: the official WebAssembly build. In a browser's dedicated worker the
// file lives in the Origin Private File System through the `opfs-sahpool` VFS (no cross-origin
// isolation needed); in node, and when asked for "memory", it is an in-memory database.

import sqlite3InitModule from "@sqlite.org/sqlite-wasm";
import { BusyError, QuotaError } from "./errors.js";

/** @typedef {import("./codecs.js").Stored} Stored */
/** @typedef {Record<string, Stored | undefined> | Stored[] | undefined} Params */

/** @type {Promise<any> | null} */
let loading = null;

/** @returns {Promise<any>} the sqlite3 module, loaded once */
export function loadSqlite() {
  loading ??= /** @type {Promise<any>} */ (/** @type {any} */ (sqlite3InitModule)({ print: () => {}, printErr: () => {} }));
  return loading;
}

/** @type {Map<string, Promise<any>>} */
const pools = new Map();

/**
 * The OPFS pool of this origin (one per directory and worker: it holds every access handle).
 * @param {any} sqlite3
 * @param {string} directory
 */
async function opfsPool(sqlite3, directory) {
  let found = pools.get(directory);
  if (!found) {
    found = /** @type {Promise<any>} */ (sqlite3.installOpfsSAHPoolVfs({ name: `fieldsync-${directory}`, directory: `/.fieldsync-${directory}`, initialCapacity: 6 }));
    pools.set(directory, /** @type {Promise<any>} */ (found));
    found.catch(() => pools.delete(directory));
  }
  try {
    return await found;
  } catch (error) {
    const name = /** @type {any} */ (error)?.name;
    if (name === "NoModificationAllowedError") {
      throw new BusyError("another tab holds this device's storage; close it or wait for it to hand over");
    }
    throw error;
  }
}

/**
 * Whether an SQLite failure means the storage is full (the origin's quota, or the disk).
 * @param {unknown} error
 */
function isFull(error) {
  const text = String(/** @type {any} */ (error)?.message ?? error);
  const rc = /** @type {any} */ (error)?.resultCode;
  return (
    /QuotaExceeded|SQLITE_FULL|database or disk is full|SQLITE_IOERR/.test(text) ||
    rc === 13 || (typeof rc === "number" && (rc & 0xff) === 10)
  );
}

/** @param {Params} params */
function named(params) {
  if (!params || Array.isArray(params)) return params;
  /** @type {Record<string, Stored>} */
  const out = {};
  for (const [k, v] of Object.entries(params)) {
    out[k.startsWith(":") || k.startsWith("$") || k.startsWith("@") ? k : `:${k}`] = v === undefined ? null : v;
  }
  return out;
}

export class Database {
  /**
   * @param {any} sqlite3
   * @param {any} db
   * @param {{storage: string, pool?: any, path?: string}} where
   */
  constructor(sqlite3, db, where) {
    this.sqlite3 = sqlite3;
    this.db = db;
    this.where = where;
    this.depth = 0;
    db.createFunction({
      name: "lower",
      arity: 1,
      deterministic: true,
      xFunc: (/** @type {number} */ _ctx, /** @type {unknown} */ v) => (typeof v === "string" ? v.toLowerCase() : v),
    });
    db.createFunction({
      name: "regexp",
      arity: 2,
      deterministic: true,
      xFunc: (/** @type {number} */ _ctx, /** @type {unknown} */ pattern, /** @type {unknown} */ value) => {
        if (pattern == null || value == null) return null;
        let p = String(pattern);
        if (p.startsWith("^") && p.endsWith("$")) p = p.slice(1, -1);
        return new RegExp(`^(?:${p})$`, "s").test(String(value)) ? 1 : 0;
      },
    });
  }

  /**
   * @param {{storage?: string, name?: string}} options
   * @returns {Promise<Database>}
   */
  static async open({ storage = "memory", name = "device" } = {}) {
    const sqlite3 = await loadSqlite();
    if (storage === "opfs") {
      const pool = await opfsPool(sqlite3, "sahpool");
      const path = `/${name}.sqlite3`;
      const db = new pool.OpfsSAHPoolDb(path);
      const out = new Database(sqlite3, db, { storage, pool, path });
      out.exec("PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;");
      return out;
    }
    if (storage !== "memory") throw new TypeError(`storage is "opfs" or "memory", not ${storage}`);
    const db = new sqlite3.oo1.DB(":memory:", "c");
    return new Database(sqlite3, db, { storage });
  }

  /** @param {string} sql */
  exec(sql) {
    this.guard(() => this.db.exec(sql));
  }

  /** @param {string} sql @param {Params} [params] */
  run(sql, params) {
    this.guard(() => this.db.exec({ sql, bind: named(params) }));
    return this.db.changes();
  }

  /**
   * @param {string} sql @param {Params} [params]
   * @returns {Record<string, any>[]}
   */
  all(sql, params) {
    /** @type {Record<string, any>[]} */
    const rows = [];
    this.guard(() => this.db.exec({ sql, bind: named(params), rowMode: "object", resultRows: rows }));
    return rows;
  }

  /** @param {string} sql @param {Params} [params] @returns {Record<string, any> | null} */
  get(sql, params) {
    return this.all(sql, params)[0] ?? null;
  }

  /** @param {string} sql @param {Params} [params] @returns {any} */
  value(sql, params) {
    /** @type {any[]} */
    const rows = [];
    this.guard(() => this.db.exec({ sql, bind: named(params), rowMode: 0, resultRows: rows }));
    return rows.length ? rows[0] : null;
  }

  /**
   * Many rows through one prepared statement, bound and stepped through SQLite's C functions
   * directly: a download page is thousands of rows of dozens of values, and the object API's
   * conversions per value (a C string allocated and freed for each text) cost more than
   * SQLite's own work. Each row's text and bytes are written into one scratch buffer that
   * SQLite reads in place (SQLITE_STATIC): a row is bound in full, stepped and reset before
   * the next one is written over it.
   * @param {string} sql @param {Stored[][]} rows
   */
  many(sql, rows) {
    if (!rows.length) return;
    this.guard(() => {
      const wasm = this.sqlite3.wasm;
      const c = wasm.exports;
      const stmt = this.db.prepare(sql);
      const encoder = new TextEncoder();
      let capacity = 0;
      let buffer = 0;
      try {
        const p = stmt.pointer;
        const check = (/** @type {number} */ rc) => {
          if (rc) this.db.checkRc(rc);
        };
        for (const row of rows) {
          let need = 0;
          for (const v of row) {
            if (typeof v === "string") need += v.length * 3;
            else if (v instanceof Uint8Array) need += v.byteLength;
          }
          if (need > capacity) {
            c.sqlite3_clear_bindings(p); // nothing may point into the old buffer
            if (buffer) wasm.dealloc(buffer);
            buffer = 0; // freed: a failed alloc must not free it twice
            capacity = Math.max(need, 2 * capacity, 4096);
            buffer = wasm.alloc(capacity);
          }
          const heap = wasm.heap8u(); // a step may have grown the memory (and detached the last view)
          let at = buffer;
          for (let i = 0; i < row.length; i++) {
            const v = row[i];
            const n = i + 1;
            if (v === null || v === undefined) check(c.sqlite3_bind_null(p, n));
            else if (typeof v === "string") {
              // ASCII (ids, codes, most names) is copied byte for byte: a call to the encoder
              // costs more than a short string's copy
              const length = v.length;
              let k = 0;
              if (length <= 256) {
                for (; k < length; k++) {
                  const ch = v.charCodeAt(k);
                  if (ch > 0x7f) break;
                  heap[at + k] = ch;
                }
              }
              const written = k === length ? length : encoder.encodeInto(v, heap.subarray(at, buffer + capacity)).written;
              check(c.sqlite3_bind_text(p, n, at, written, 0));
              at += written;
            } else if (typeof v === "number") {
              if ((v | 0) === v) check(c.sqlite3_bind_int(p, n, v));
              else if (Number.isSafeInteger(v)) check(c.sqlite3_bind_int64(p, n, BigInt(v)));
              else check(c.sqlite3_bind_double(p, n, v));
            } else if (typeof v === "bigint") {
              if (BigInt.asIntN(64, v) !== v) throw new RangeError(`${v} does not fit a 64-bit integer`);
              check(c.sqlite3_bind_int64(p, n, v));
            } else if (typeof v === "boolean") check(c.sqlite3_bind_int(p, n, v ? 1 : 0));
            else if (v instanceof Uint8Array) {
              if (v.byteLength) {
                heap.set(v, at);
                check(c.sqlite3_bind_blob(p, n, at, v.byteLength, 0));
                at += v.byteLength;
              } else check(c.sqlite3_bind_zeroblob(p, n, 0)); // a pointer to no bytes binds NULL
            } else throw new TypeError(`cannot store a ${typeof v} in SQLite`);
          }
          const rc = c.sqlite3_step(p);
          c.sqlite3_reset(p);
          if (rc !== 101 && rc !== 100) check(rc); // SQLITE_DONE (or a row from RETURNING)
        }
        c.sqlite3_clear_bindings(p);
      } finally {
        stmt.finalize(); // before the buffer it may still point into is freed
        if (buffer) wasm.dealloc(buffer);
      }
    });
  }

  /**
   * Run `work` in one write transaction: all of it or nothing (a full storage rolls it back
   * and throws QuotaError). Nested calls join the outer transaction.
   * @template T
   * @param {() => T} work
   * @returns {T}
   */
  tx(work) {
    if (this.depth > 0) {
      this.depth += 1;
      try {
        return work();
      } finally {
        this.depth -= 1;
      }
    }
    this.guard(() => this.db.exec("BEGIN IMMEDIATE"));
    this.depth = 1;
    try {
      const out = work();
      this.guard(() => this.db.exec("COMMIT"));
      return out;
    } catch (error) {
      try {
        if (this.db.isOpen()) this.db.exec("ROLLBACK");
      } catch {
        // the transaction was already rolled back by SQLite
      }
      throw error;
    } finally {
      this.depth = 0;
    }
  }

  /**
   * @template T
   * @param {() => T} work
   * @returns {T}
   */
  guard(work) {
    try {
      return work();
    } catch (error) {
      if (isFull(error)) {
        throw new QuotaError(
          "the browser's storage for this site is full; nothing was written: free some space " +
            "(or remove other sites' data) and try again",
        );
      }
      throw error;
    }
  }

  /** Remove the database file (sign-out); the database is closed. */
  destroy() {
    this.close();
    if (this.where.storage === "opfs" && this.where.pool) {
      this.where.pool.unlink(this.where.path);
    }
  }

  close() {
    if (this.db.isOpen()) this.db.close();
  }
}
