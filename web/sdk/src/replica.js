// The device's local replica: the profile's tables (laid out by the handshake's `sqlite`
// layout, the same tables as the Python device's replica), the outbox, the download cursors,
// the re-scope marks, the sync errors and the device's state, in one SQLite database.
//
// Every download page changes the rows, the cursor and the marks of its table in one
// transaction; every local write changes the row and the outbox in one transaction.

import { fromStored, hexToUuid, toStored, uuidToHex } from "./codecs.js";
import { NotFoundError } from "./errors.js";

/** @typedef {import("./db.js").Database} Database */
/** @typedef {import("./codecs.js").Stored} Stored */

const BOOKKEEPING = `
CREATE TABLE IF NOT EXISTS _fs_state (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _fs_cursor (
  tablename VARCHAR(64) PRIMARY KEY, cursor TEXT, marking INTEGER NOT NULL DEFAULT 0,
  lastsync VARCHAR(40));
CREATE TABLE IF NOT EXISTS _fs_seen (
  tablename VARCHAR(64) NOT NULL, recordid VARCHAR(36) NOT NULL,
  PRIMARY KEY (tablename, recordid));
CREATE TABLE IF NOT EXISTS _fs_outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, changeid VARCHAR(36) NOT NULL UNIQUE,
  tablename VARCHAR(64) NOT NULL, operation VARCHAR(16) NOT NULL,
  recordid VARCHAR(36) NOT NULL, changes TEXT NOT NULL, baseversion BIGINT,
  sent INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS ix__fs_outbox_recordid ON _fs_outbox (recordid);
CREATE TABLE IF NOT EXISTS _fs_error (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, changeid VARCHAR(36) NOT NULL,
  tablename VARCHAR(64) NOT NULL, operation VARCHAR(16) NOT NULL,
  recordid VARCHAR(36) NOT NULL, code VARCHAR(64) NOT NULL, message TEXT NOT NULL,
  errortype INTEGER NOT NULL, sent TEXT NOT NULL, reverted TEXT,
  occurredon VARCHAR(40) NOT NULL);
CREATE TABLE IF NOT EXISTS _fs_file (
  fileid VARCHAR(36) PRIMARY KEY, sha256 VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL,
  mimetype VARCHAR(255) NOT NULL, size BIGINT NOT NULL, thumbnail VARCHAR(64),
  thumbnailsize BIGINT);
CREATE TABLE IF NOT EXISTS _fs_file_upload (
  fileid VARCHAR(36) PRIMARY KEY, tablename VARCHAR(64) NOT NULL, columnname VARCHAR(64) NOT NULL);
CREATE TABLE IF NOT EXISTS _fs_blob (
  digest VARCHAR(64) PRIMARY KEY, size BIGINT NOT NULL, complete INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS _fs_blob_part (
  digest VARCHAR(64) NOT NULL, offset BIGINT NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (digest, offset));
`;

/** @param {string} name */
export const q = (name) => `"${name.replace(/"/g, '""')}"`;

/**
 * @typedef {{name: string, type: string, display_name?: string, required?: boolean,
 *   system?: boolean, read_only?: boolean, max_length?: number, precision?: number,
 *   min_value?: number | string, max_value?: number | string, max_size_kb?: number,
 *   options?: {value: number, label: string}[], targets?: string[]}} ColumnDef
 * @typedef {{name: string, entity_set_name: string, display_name: string, primary_id: string,
 *   primary_name: string, ownership: string, columns: ColumnDef[]}} TableDef
 */

export class Replica {
  /** @param {Database} db */
  constructor(db) {
    this.db = db;
    db.exec(BOOKKEEPING);
    /** @type {any} */
    this.handshake = null;
    /** @type {Map<string, TableDef>} */
    this.defs = new Map();
    /** @type {Map<string, Record<string, string>>} */
    this.codecs = new Map();
    this.load();
  }

  // -- state --------------------------------------------------------------------------------

  /** @param {string} key @returns {any} */
  getState(key) {
    const raw = this.db.value("SELECT value FROM _fs_state WHERE key = ?", [key]);
    return raw == null ? null : JSON.parse(String(raw));
  }

  /** @param {string} key @param {unknown} value */
  setState(key, value) {
    this.db.run(
      "INSERT INTO _fs_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      [key, JSON.stringify(value)],
    );
  }

  /** @param {string} key */
  deleteState(key) {
    this.db.run("DELETE FROM _fs_state WHERE key = ?", [key]);
  }

  // -- tables -------------------------------------------------------------------------------

  load() {
    const handshake = this.getState("handshake");
    this.handshake = handshake || null;
    this.defs = new Map();
    this.codecs = new Map();
    if (!handshake) return;
    for (const t of handshake.tables) {
      this.defs.set(t.name, t);
      this.codecs.set(t.name, handshake.sqlite?.[t.name]?.codecs ?? {});
    }
  }

  /**
   * Take a handshake's tables: create new ones, drop the ones no longer in the profile,
   * rebuild the ones whose definition changed (their cursors restart).
   * @param {any} handshake
   * @returns {string[]} the tables that were reset
   */
  adopt(handshake) {
    if (!handshake.sqlite) {
      throw new TypeError("the server's handshake has no SQLite layout: upgrade the server");
    }
    const old = this.handshake ?? { tables: [], columns: {}, sqlite: {} };
    /** @type {Map<string, any>} */
    const before = new Map(old.tables.map((/** @type {any} */ t) => [t.name, t]));
    const after = new Map(handshake.tables.map((/** @type {any} */ t) => [t.name, t]));
    /** @type {string[]} */
    const reset = [];
    this.db.tx(() => {
      for (const [name, def] of before) {
        const changed =
          after.has(name) &&
          (JSON.stringify(after.get(name)) !== JSON.stringify(def) ||
            JSON.stringify(handshake.columns[name]) !== JSON.stringify(old.columns[name]) ||
            JSON.stringify(tableLayout(handshake.sqlite[name])) !== JSON.stringify(tableLayout(old.sqlite?.[name])));
        if (!after.has(name) || changed) {
          this.db.exec(`DROP TABLE IF EXISTS ${q(name)}`);
          this.db.run("DELETE FROM _fs_cursor WHERE tablename = ?", [name]);
          this.db.run("DELETE FROM _fs_seen WHERE tablename = ?", [name]);
          reset.push(name);
        }
      }
      for (const name of after.keys()) {
        const exists = this.db.value("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", [name]);
        if (!Number(exists)) {
          for (const statement of handshake.sqlite[name].ddl) this.db.exec(statement);
        }
      }
      this.setState("handshake", handshake);
    });
    this.load();
    return reset;
  }

  /**
   * Build the indexes the handshake asks for (the layout's primary-name order, each view's
   * own order) and drop the ones no view needs any more. Run once a download is in: a
   * first download fills the tables without keeping these up to date row by row; after
   * that, each is there already and this costs a look at sqlite_master.
   * @returns {number} the indexes built
   */
  buildIndexes() {
    const handshake = this.handshake;
    if (!handshake?.sqlite) return 0;
    /** @type {Map<string, string>} index name -> its CREATE INDEX statement */
    const wanted = new Map();
    const take = (/** @type {unknown} */ statement) => {
      const name = /^CREATE INDEX IF NOT EXISTS "?(ixv_[A-Za-z0-9_]+)"? ON /.exec(String(statement))?.[1];
      if (name) wanted.set(name, String(statement));
    };
    for (const name of this.defs.keys()) for (const s of handshake.sqlite[name]?.indexes ?? []) take(s);
    for (const view of handshake.views ?? []) {
      if (view.sqlite && this.defs.has(view.table)) for (const s of view.sqlite.indexes ?? []) take(s);
    }
    /** @type {Set<string>} */
    const present = new Set(
      this.db.all("SELECT name FROM sqlite_master WHERE type = 'index' AND substr(name, 1, 4) = 'ixv_'").map((r) => String(r.name)),
    );
    let built = 0;
    this.db.tx(() => {
      for (const name of present) if (!wanted.has(name)) this.db.exec(`DROP INDEX IF EXISTS ${q(name)}`);
      for (const [name, statement] of wanted) {
        if (present.has(name)) continue;
        this.db.exec(statement);
        built += 1;
      }
    });
    return built;
  }

  /** Remove every row, cursor and mark of the profile's tables (access was removed). */
  purge() {
    this.db.tx(() => {
      for (const name of this.defs.keys()) this.db.exec(`DROP TABLE IF EXISTS ${q(name)}`);
      this.db.run("DELETE FROM _fs_cursor");
      this.db.run("DELETE FROM _fs_seen");
      this.deleteState("handshake");
    });
    this.load();
  }

  /** @param {string} name @returns {TableDef} */
  table(name) {
    const found = this.defs.get(name);
    if (!found) throw new NotFoundError(`table ${JSON.stringify(name)} is not on this device`);
    return found;
  }

  /** @param {string} table @param {string} column */
  codec(table, column) {
    return this.codecs.get(table)?.[column] ?? null;
  }

  /**
   * A stored row as the app sees it (wire values).
   * @param {string} table @param {Record<string, any>} row
   * @returns {Record<string, unknown>}
   */
  decodeRow(table, row) {
    const codecs = this.codecs.get(table) ?? {};
    /** @type {Record<string, unknown>} */
    const out = {};
    for (const [k, v] of Object.entries(row)) out[k] = fromStored(codecs[k], v);
    return out;
  }

  /**
   * Wire values as stored values.
   * @param {string} table @param {Record<string, unknown>} values
   * @returns {Record<string, Stored>}
   */
  encodeValues(table, values) {
    const codecs = this.codecs.get(table) ?? {};
    /** @type {Record<string, Stored>} */
    const out = {};
    for (const [k, v] of Object.entries(values)) out[k] = toStored(codecs[k], v);
    return out;
  }

  /** @param {string} table @param {string} id stored (hex) form of a record id */
  storedId(table, id) {
    return this.codec(table, this.table(table).primary_id) === "uuid" ? uuidToHex(id) : id;
  }

  /**
   * Insert or update a row (stored values), by primary id.
   * @param {string} table @param {Record<string, Stored>} stored
   */
  upsertStored(table, stored) {
    const pk = this.table(table).primary_id;
    const cols = Object.keys(stored);
    const exists = this.db.value(`SELECT 1 FROM ${q(table)} WHERE ${q(pk)} = ?`, [stored[pk]]);
    if (exists) {
      const sets = cols.filter((c) => c !== pk);
      if (sets.length) {
        this.db.run(
          `UPDATE ${q(table)} SET ${sets.map((c) => `${q(c)} = ?`).join(", ")} WHERE ${q(pk)} = ?`,
          [...sets.map((c) => stored[c]), stored[pk]],
        );
      }
    } else {
      this.db.run(
        `INSERT INTO ${q(table)} (${cols.map(q).join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`,
        cols.map((c) => stored[c]),
      );
    }
  }

  // -- download -----------------------------------------------------------------------------

  /** @param {string[]} tables @returns {Record<string, string | null>} */
  cursors(tables) {
    /** @type {Record<string, string | null>} */
    const out = {};
    const rows = this.db.all("SELECT tablename, cursor FROM _fs_cursor");
    const found = new Map(rows.map((r) => [r.tablename, r.cursor]));
    for (const t of tables) out[t] = found.get(t) ?? null;
    return out;
  }

  /** @returns {Record<string, string | null>} */
  lastSyncs() {
    /** @type {Record<string, string | null>} */
    const out = {};
    for (const r of this.db.all("SELECT tablename, lastsync FROM _fs_cursor")) out[r.tablename] = r.lastsync;
    return out;
  }

  /**
   * Forget the cursors of tables (a must-refetch answer): their next page starts a re-scope.
   * @param {string[]} tables
   */
  forgetCursors(tables) {
    this.db.tx(() => {
      for (const t of tables) this.db.run("UPDATE _fs_cursor SET cursor = NULL WHERE tablename = ?", [t]);
    });
  }

  /**
   * Record ids (wire form) of a table with changes in the outbox, and their operations.
   * @param {string} table
   * @returns {Map<string, string[]>}
   */
  pending(table) {
    /** @type {Map<string, string[]>} */
    const out = new Map();
    const rows = this.db.all(
      "SELECT recordid, operation FROM _fs_outbox WHERE tablename = ? ORDER BY seq",
      [table],
    );
    for (const r of rows) {
      const list = out.get(r.recordid) ?? [];
      list.push(r.operation);
      out.set(r.recordid, list);
    }
    return out;
  }

  /**
   * The table's own indexes (the layout's `CREATE INDEX` statements: lookups and the version),
   * by name, each with a statement that builds it if it is missing. Unique indexes are left
   * out: they check rows as they arrive.
   * @param {string} table
   * @returns {Map<string, string>}
   */
  tableIndexes(table) {
    /** @type {Map<string, string>} */
    const out = new Map();
    for (const statement of this.handshake?.sqlite?.[table]?.ddl ?? []) {
      const found = /^CREATE INDEX (?:IF NOT EXISTS )?("(?:[^"]|"")+"|[A-Za-z0-9_]+) ON (.*)$/s.exec(String(statement).trim());
      if (!found) continue;
      const name = found[1].startsWith('"') ? found[1].slice(1, -1).replace(/""/g, '"') : found[1];
      out.set(name, `CREATE INDEX IF NOT EXISTS ${q(name)} ON ${found[2]}`);
    }
    return out;
  }

  /**
   * Apply one download page of one table, with its cursor, in one transaction.
   *
   * A re-scope into an empty table is a whole table arriving: its indexes are dropped by the
   * first page and built once by the page that completes it (one sort each, instead of an
   * index entry written per row and page), as the Python device does. A stop in between
   * resumes from the cursor and the completing page still builds them.
   * @param {any} page
   * @param {string} now
   * @returns {number} rows written or removed
   */
  applyPage(page, now) {
    const name = String(page.table);
    const def = this.table(name);
    const pk = def.primary_id;
    const columns = /** @type {string[]} */ (page.columns);
    const index = columns.indexOf(pk);
    const codecs = this.codecs.get(name) ?? {};
    const coding = columns.map((c) => codecs[c] ?? null);
    // the page is this call's own (parsed from the answer): its rows become stored values in place
    const rows = /** @type {Stored[][]} */ (page.upserts);
    for (const row of rows) {
      for (let i = 0; i < row.length; i++) {
        const v = row[i];
        if (v !== null) row[i] = toStored(coding[i], v);
      }
    }
    const pkCodec = codecs[pk] ?? null;
    const removes = /** @type {string[]} */ (page.removes).map((r) => /** @type {Stored} */ (toStored(pkCodec, r)));
    this.db.tx(() => {
      let marking = Boolean(this.db.value("SELECT marking FROM _fs_cursor WHERE tablename = ?", [name]));
      if (page.rescope) {
        this.db.run("DELETE FROM _fs_seen WHERE tablename = ?", [name]);
        // an empty table has nothing to sweep: no need to mark what arrives
        marking = this.db.value(`SELECT 1 FROM ${q(name)} LIMIT 1`) != null;
        if (!marking) for (const index of this.tableIndexes(name).keys()) this.db.exec(`DROP INDEX IF EXISTS ${q(index)}`);
      }
      const pending = this.pending(name);
      if (rows.length) {
        this.db.many(
          `INSERT OR REPLACE INTO ${q(name)} (${columns.map(q).join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`,
          rows,
        );
        if (marking) {
          this.db.many(
            "INSERT OR IGNORE INTO _fs_seen (tablename, recordid) VALUES (?, ?)",
            rows.map((r) => [name, r[index]]),
          );
        }
      }
      if (removes.length) {
        const keep = new Set(
          [...pending].filter(([, ops]) => ops.includes("create")).map(([id]) => toStored(pkCodec, id)),
        );
        this.db.many(
          `DELETE FROM ${q(name)} WHERE ${q(pk)} = ?`,
          removes.filter((r) => !keep.has(r)).map((r) => [r]),
        );
      }
      if (page.complete) for (const statement of this.tableIndexes(name).values()) this.db.exec(statement);
      if (page.complete && marking) {
        // the sweep: what the re-scope did not send is no longer in scope (local creates stay)
        const keep = [...pending.keys()].map((id) => toStored(pkCodec, id));
        this.db.run(
          `DELETE FROM ${q(name)} WHERE ${q(pk)} NOT IN (SELECT recordid FROM _fs_seen WHERE tablename = ?)` +
            (keep.length ? ` AND ${q(pk)} NOT IN (${keep.map(() => "?").join(", ")})` : ""),
          [name, ...keep],
        );
        this.db.run("DELETE FROM _fs_seen WHERE tablename = ?", [name]);
        marking = false;
      }
      if (pending.size) {
        const arrived = new Set(rows.map((r) => (pkCodec === "uuid" ? hexToUuid(String(r[index])) : String(r[index]))));
        this.overlay(name, pending, arrived);
      }
      this.db.run(
        "INSERT INTO _fs_cursor (tablename, cursor, marking, lastsync) VALUES (?, ?, ?, ?) " +
          "ON CONFLICT (tablename) DO UPDATE SET cursor = excluded.cursor, marking = excluded.marking, lastsync = excluded.lastsync",
        [name, page.cursor, marking ? 1 : 0, now],
      );
    });
    return rows.length + removes.length;
  }

  /**
   * Local changes not yet uploaded stay visible over what the server sent.
   * @param {string} table @param {Map<string, string[]>} pending @param {Set<string>} ids
   */
  overlay(table, pending, ids) {
    const touched = [...pending.keys()].filter((i) => ids.has(i));
    if (!touched.length) return;
    const pk = this.table(table).primary_id;
    const entries = this.db.all(
      `SELECT recordid, operation, changes FROM _fs_outbox WHERE tablename = ? AND recordid IN (${touched.map(() => "?").join(", ")}) ORDER BY seq`,
      [table, ...touched],
    );
    for (const e of entries) {
      const key = this.storedId(table, e.recordid);
      if (e.operation === "delete") {
        this.db.run(`DELETE FROM ${q(table)} WHERE ${q(pk)} = ?`, [key]);
        continue;
      }
      const values = this.encodeValues(table, JSON.parse(e.changes));
      delete values[pk];
      const cols = Object.keys(values);
      if (cols.length) {
        this.db.run(
          `UPDATE ${q(table)} SET ${cols.map((c) => `${q(c)} = ?`).join(", ")} WHERE ${q(pk)} = ?`,
          [...cols.map((c) => values[c]), key],
        );
      }
    }
  }
}

/**
 * What of a table's layout decides its rows' shape (a change rebuilds the table); its
 * `indexes` do not, they are built and dropped in place.
 * @param {any} layout
 */
function tableLayout(layout) {
  if (!layout) return layout;
  const { indexes: _indexes, ...shape } = layout;
  return shape;
}
