// Files and images on the device, content-addressed: the bytes of a blob are kept once per
// sha256 in the replica (`_fs_blob`, in parts), the facts of each file id in `_fs_file`, the
// uploads still to do in `_fs_file_upload`. Everything is in the one SQLite database, so a
// file and the row that references it are written in one transaction, and a full storage
// rolls both back.
//
// - attach (offline): bytes, file facts, the queued upload, the row's column and the outbox
//   change, in one transaction;
// - upload (before the outbox): chunks with their digest, resumed from the offset the server
//   reports; the server checks the whole file against its sha256;
// - fetch (after the rows): the file ids the rows hold are granted by the server (facts and a
//   ticket each); each blob not here is downloaded once per digest in ranges, each range
//   committed as it arrives (a broken download resumes from there), verified, then marked
//   complete; an image's thumbnail comes the same way;
// - sweep: file ids nothing references go, and the blobs no file uses.

import { FieldError, NotFoundError, OfflineError, ServerError } from "./errors.js";
import { isUuid, newId } from "./codecs.js";
import { q } from "./replica.js";

/** @typedef {import("./engine.js").Engine} Engine */

export const CHUNK = 4 * 1024 * 1024;
export const PART = 1024 * 1024;
const GRANT_BATCH = 500;
const FILE_TYPES = new Set(["file", "image"]);

/** @param {Uint8Array} bytes @returns {Promise<string>} */
export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", /** @type {BufferSource} */ (bytes));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** @param {Uint8Array} bytes */
async function sha256Base64(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", /** @type {BufferSource} */ (bytes)));
  let text = "";
  for (const b of digest) text += String.fromCharCode(b);
  return btoa(text);
}

export class Files {
  /** @param {Engine} engine */
  constructor(engine) {
    this.engine = engine;
    this.db = engine.db;
  }

  /** @returns {[string, string][]} (table, column) of the travelling file and image columns */
  columns() {
    const replica = this.engine.replica;
    const hs = replica.handshake;
    if (!hs) return [];
    /** @type {[string, string][]} */
    const out = [];
    for (const [name, def] of replica.defs) {
      const travelling = new Set(hs.columns[name] ?? []);
      for (const c of def.columns) if (FILE_TYPES.has(c.type) && travelling.has(c.name)) out.push([name, c.name]);
    }
    return out;
  }

  /** @returns {Set<string>} file ids (wire form) the rows hold */
  inRows() {
    /** @type {Set<string>} */
    const found = new Set();
    for (const [table, column] of this.columns()) {
      for (const r of this.db.all(`SELECT ${q(column)} AS v FROM ${q(table)} WHERE ${q(column)} IS NOT NULL`)) {
        const v = /** @type {string} */ (this.engine.replica.decodeRow(table, { [column]: r.v })[column]);
        found.add(v);
      }
    }
    return found;
  }

  /** @param {Set<string>} known @returns {Set<string>} */
  inOutbox(known) {
    /** @type {Set<string>} */
    const found = new Set();
    for (const r of this.db.all("SELECT changes FROM _fs_outbox")) {
      for (const v of Object.values(JSON.parse(r.changes))) if (typeof v === "string" && known.has(v)) found.add(v);
    }
    return found;
  }

  // -- attach and read --------------------------------------------------------------------------

  /**
   * Put bytes into a row's file or image column, offline.
   * @param {string} table @param {string} id @param {string} column
   * @param {Blob | Uint8Array | ArrayBuffer} data @param {string} [filename]
   * @returns {Promise<string>} the file id
   */
  async attach(table, id, column, data, filename) {
    const engine = this.engine;
    const def = engine.replica.table(table);
    const col = def.columns.find((c) => c.name === column);
    if (!col || !FILE_TYPES.has(col.type)) throw new FieldError(column, `${table}.${column} is not a file or image column`);
    if (!engine.travelling(table).has(column)) throw new FieldError(column, "the offline profile does not take this column offline");
    if (!isUuid(id)) throw new FieldError(def.primary_id, "is not a record id (a GUID)");
    const bytes =
      data instanceof Uint8Array ? data : data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(await data.arrayBuffer());
    const limit = (col.max_size_kb ?? 0) * 1024;
    if (limit && bytes.byteLength > limit) throw new FieldError(column, `takes files of at most ${limit / 1024} KB`);
    const name = filename ?? (typeof Blob !== "undefined" && data instanceof Blob && "name" in data ? String(data.name) : "file");
    const given = typeof Blob !== "undefined" && data instanceof Blob ? data.type : "";
    const mimetype = given || guessType(name);
    if (col.type === "image" && !mimetype.startsWith("image/")) throw new FieldError(column, "takes images only");
    const digest = await sha256Hex(bytes);
    const fid = newId();
    const key = engine.replica.storedId(table, id);
    engine.db.tx(() => {
      const row = this.db.get(`SELECT versionnumber FROM ${q(table)} WHERE ${q(def.primary_id)} = ?`, [key]);
      if (!row) throw new NotFoundError(`no ${table} row ${id} on this device`);
      this.storeBlob(digest, bytes);
      this.db.run(
        "INSERT INTO _fs_file (fileid, sha256, name, mimetype, size) VALUES (?, ?, ?, ?, ?)",
        [fid, digest, name, mimetype, bytes.byteLength],
      );
      this.db.run("INSERT INTO _fs_file_upload (fileid, tablename, columnname) VALUES (?, ?, ?)", [fid, table, column]);
      const stored = engine.replica.encodeValues(table, { [column]: fid });
      this.db.run(`UPDATE ${q(table)} SET ${q(column)} = ? WHERE ${q(def.primary_id)} = ?`, [stored[column], key]);
      engine.enqueue(table, "update", id.toLowerCase(), { [column]: fid }, row.versionnumber == null ? null : Number(row.versionnumber));
    });
    return fid;
  }

  /** @param {string} digest @param {Uint8Array} bytes */
  storeBlob(digest, bytes) {
    const done = this.db.value("SELECT complete FROM _fs_blob WHERE digest = ?", [digest]);
    if (Number(done) === 1) return;
    this.db.run("DELETE FROM _fs_blob_part WHERE digest = ?", [digest]);
    this.db.run(
      "INSERT INTO _fs_blob (digest, size, complete) VALUES (?, ?, 1) ON CONFLICT (digest) DO UPDATE SET size = excluded.size, complete = 1",
      [digest, bytes.byteLength],
    );
    for (let at = 0; at < bytes.byteLength || at === 0; at += PART) {
      this.db.run("INSERT INTO _fs_blob_part (digest, offset, data) VALUES (?, ?, ?)", [digest, at, bytes.subarray(at, at + PART)]);
      if (!bytes.byteLength) break;
    }
  }

  /** @param {string} digest @returns {boolean} */
  have(digest) {
    return Number(this.db.value("SELECT complete FROM _fs_blob WHERE digest = ?", [digest])) === 1;
  }

  /**
   * Bytes [start, start + length) of a blob's parts.
   * @param {string} digest @param {number} start @param {number} length
   */
  readRange(digest, start, length) {
    const parts = this.db.all(
      "SELECT offset, data FROM _fs_blob_part WHERE digest = ? AND offset + length(data) > ? AND offset < ? ORDER BY offset",
      [digest, start, start + length],
    );
    const out = new Uint8Array(length);
    let filled = 0;
    for (const p of parts) {
      const data = /** @type {Uint8Array} */ (p.data);
      const offset = Number(p.offset);
      const from = Math.max(0, start - offset);
      const to = Math.min(data.byteLength, start + length - offset);
      out.set(data.subarray(from, to), offset + from - start);
      filled += to - from;
    }
    return out.subarray(0, filled);
  }

  /** @param {string} digest @returns {Uint8Array} */
  readAll(digest) {
    const size = Number(this.db.value("SELECT coalesce(sum(length(data)), 0) FROM _fs_blob_part WHERE digest = ?", [digest]));
    return this.readRange(digest, 0, size);
  }

  /**
   * The bytes of a row's file (or an image's thumbnail) as a Blob; null while they have not
   * arrived or when the column is empty.
   * @param {string} table @param {string} id @param {string} column @param {boolean} thumbnail
   * @returns {Promise<Blob | null>}
   */
  async read(table, id, column, thumbnail) {
    const row = await this.engine.get(table, id);
    if (!row) throw new NotFoundError(`no ${table} row ${id} on this device`);
    const fid = row[column];
    if (fid == null) return null;
    const f = this.db.get("SELECT * FROM _fs_file WHERE fileid = ?", [String(fid)]);
    if (!f) return null;
    const digest = thumbnail ? f.thumbnail : f.sha256;
    if (!digest || !this.have(digest)) return null;
    const bytes = this.readAll(digest);
    return new Blob([/** @type {BlobPart} */ (bytes)], { type: thumbnail ? "image/jpeg" : f.mimetype });
  }

  /** Facts of a row's file: id, name, type, size, whether the bytes (and thumbnail) are here. */
  /** @param {string} table @param {string} id @param {string} column */
  async info(table, id, column) {
    const row = await this.engine.get(table, id);
    if (!row) throw new NotFoundError(`no ${table} row ${id} on this device`);
    const fid = row[column];
    if (fid == null) return null;
    const f = this.db.get("SELECT * FROM _fs_file WHERE fileid = ?", [String(fid)]);
    if (!f) return { id: String(fid), available: false };
    return {
      id: f.fileid, name: f.name, mimetype: f.mimetype, size: Number(f.size), sha256: f.sha256,
      available: this.have(f.sha256), thumbnail: Boolean(f.thumbnail && this.have(f.thumbnail)),
    };
  }

  // -- upload -----------------------------------------------------------------------------------

  /** Send every queued file (before the outbox); returns how many finished. */
  async uploadPending() {
    const queued = this.db.all(
      "SELECT u.fileid, u.tablename, u.columnname, f.sha256, f.name, f.mimetype, f.size FROM _fs_file_upload u JOIN _fs_file f ON f.fileid = u.fileid ORDER BY u.fileid",
    );
    let done = 0;
    for (const job of queued) {
      let answer;
      try {
        answer = await this.uploadOne(job);
      } catch (error) {
        if (error instanceof ServerError && !(error.status === 401 || error.status === 403) && error.status !== 410) {
          // refused for good (too large, not an image, …): the change that references it is
          // rejected by the server and becomes a sync error
          this.db.tx(() => this.db.run("DELETE FROM _fs_file_upload WHERE fileid = ?", [job.fileid]));
          continue;
        }
        throw error;
      }
      const thumb = answer.file?.thumbnail ?? {};
      this.db.tx(() => {
        this.db.run("UPDATE _fs_file SET thumbnail = ?, thumbnailsize = ? WHERE fileid = ?", [thumb.sha256 ?? null, thumb.size ?? null, job.fileid]);
        this.db.run("DELETE FROM _fs_file_upload WHERE fileid = ?", [job.fileid]);
      });
      done += 1;
    }
    return done;
  }

  /** @param {Record<string, any>} job */
  async uploadOne(job) {
    const http = this.engine.transport();
    let state = await http.call("POST", "/sync/v1/files/uploads", {
      file: job.fileid, table: job.tablename, column: job.columnname, name: job.name,
      mimetype: job.mimetype, size: Number(job.size), sha256: job.sha256,
    });
    const size = Number(job.size);
    while (!state.complete) {
      const at = Number(state.received);
      const piece = this.readRange(job.sha256, at, Math.min(Number(state.chunk_size), size - at));
      const headers = {
        "Content-Type": "application/octet-stream",
        "Content-Range": `bytes ${at}-${at + piece.byteLength - 1}/${size}`,
        "Content-Digest": `sha-256=:${await sha256Base64(piece)}:`,
      };
      const upload = state.upload;
      try {
        state = await http.refreshingCall(() => http.send("PUT", `/sync/v1/files/uploads/${upload}`, undefined, { raw: /** @type {BodyInit} */ (/** @type {unknown} */ (piece)), headers }));
      } catch (error) {
        if (!(error instanceof ServerError) || error.status !== 416) throw error;
        state = await http.call("GET", `/sync/v1/files/uploads/${upload}`);
      }
    }
    return state;
  }

  // -- fetch ------------------------------------------------------------------------------------

  /** Download the blobs the rows reference that are not here yet (resuming partial ones). */
  async fetch() {
    const report = { fetched: 0, bytes: 0, failed: 0 };
    const wanted = this.inRows();
    const known = new Map(this.db.all("SELECT * FROM _fs_file").map((r) => [r.fileid, r]));
    const queued = new Set(this.db.all("SELECT fileid FROM _fs_file_upload").map((r) => r.fileid));
    /** @param {any} row */
    const missing = (row) => !this.have(row.sha256) || (row.thumbnail != null && !this.have(row.thumbnail));
    const ask = [...wanted].filter((f) => !queued.has(f) && (!known.has(f) || missing(known.get(f)))).sort();
    /** @type {Map<string, string>} */
    const tickets = new Map();
    for (let i = 0; i < ask.length; i += GRANT_BATCH) {
      for (const [k, v] of await this.grant(ask.slice(i, i + GRANT_BATCH))) tickets.set(k, v);
    }
    const rows = new Map(this.db.all("SELECT * FROM _fs_file").map((r) => [r.fileid, r]));
    /** @type {Map<string, [string, string, number]>} */
    const jobs = new Map();
    for (const fid of tickets.keys()) {
      const row = rows.get(fid);
      if (!row) continue;
      if (!this.have(row.sha256) && !jobs.has(row.sha256)) jobs.set(row.sha256, [fid, "full", Number(row.size)]);
      if (row.thumbnail && !this.have(row.thumbnail) && !jobs.has(row.thumbnail)) jobs.set(row.thumbnail, [fid, "thumbnail", Number(row.thumbnailsize ?? 0)]);
    }
    for (const [digest, [fid, kind, size]] of jobs) {
      const got = await this.download(fid, tickets, kind, digest, size);
      if (got === null) report.failed += 1;
      else {
        report.fetched += 1;
        report.bytes += got;
      }
    }
    return report;
  }

  /** @param {string[]} ids @returns {Promise<Map<string, string>>} */
  async grant(ids) {
    const engine = this.engine;
    const answer = await engine.transport().call("POST", "/sync/v1/files/grants", { device: engine.deviceId, app: engine.appKey, files: ids });
    /** @type {Map<string, string>} */
    const tickets = new Map();
    this.db.tx(() => {
      for (const f of answer.files) {
        const thumb = f.thumbnail ?? {};
        this.db.run(
          "INSERT INTO _fs_file (fileid, sha256, name, mimetype, size, thumbnail, thumbnailsize) VALUES (?, ?, ?, ?, ?, ?, ?) " +
            "ON CONFLICT (fileid) DO UPDATE SET sha256 = excluded.sha256, name = excluded.name, mimetype = excluded.mimetype, size = excluded.size, thumbnail = excluded.thumbnail, thumbnailsize = excluded.thumbnailsize",
          [f.id, f.sha256, f.name, f.mimetype, f.size, thumb.sha256 ?? null, thumb.size ?? null],
        );
        tickets.set(f.id, f.ticket);
      }
    });
    return tickets;
  }

  /**
   * One blob in ranges, each committed as it arrives; verified at the end.
   * @param {string} fid @param {Map<string, string>} tickets @param {string} kind
   * @param {string} digest @param {number} size
   * @returns {Promise<number | null>} bytes fetched, or null when it did not verify or is gone
   */
  async download(fid, tickets, kind, digest, size) {
    const http = this.engine.transport();
    this.db.tx(() =>
      this.db.run("INSERT INTO _fs_blob (digest, size, complete) VALUES (?, ?, 0) ON CONFLICT (digest) DO NOTHING", [digest, size]),
    );
    let have = Number(this.db.value("SELECT coalesce(sum(length(data)), 0) FROM _fs_blob_part WHERE digest = ?", [digest]));
    if (have > size) {
      this.db.tx(() => this.db.run("DELETE FROM _fs_blob_part WHERE digest = ?", [digest]));
      have = 0;
    }
    let fetched = 0;
    let renewed = false;
    while (have < size) {
      const end = Math.min(size, have + CHUNK) - 1;
      /** @type {Response} */
      let response;
      try {
        response = await http.refreshingCall(() =>
          http.send("GET", `/sync/v1/files/${fid}?ticket=${encodeURIComponent(String(tickets.get(fid)))}&size=${kind}`, undefined, {
            stream: true,
            headers: { Range: `bytes=${have}-${end}`, Accept: "*/*" },
          }),
        );
      } catch (error) {
        if (error instanceof ServerError && error.status === 403 && !renewed) {
          const again = await this.grant([fid]); // the ticket expired: ask again
          if (!again.has(fid)) return null; // no row the user can read holds it any more
          tickets.set(fid, /** @type {string} */ (again.get(fid)));
          renewed = true;
          continue;
        }
        throw error;
      }
      const reader = /** @type {ReadableStream<Uint8Array>} */ (response.body).getReader();
      try {
        for (;;) {
          /** @type {ReadableStreamReadResult<Uint8Array>} */
          let step;
          try {
            step = await reader.read();
          } catch (error) {
            // the connection broke: what arrived is committed, the next sync resumes there
            throw new OfflineError(`the download of file ${fid} broke off: ${/** @type {any} */ (error)?.message ?? error}`);
          }
          const { value, done } = step;
          if (done) break;
          const at = have;
          this.db.tx(() => this.db.run("INSERT OR REPLACE INTO _fs_blob_part (digest, offset, data) VALUES (?, ?, ?)", [digest, at, value]));
          have += value.byteLength;
          fetched += value.byteLength;
        }
      } finally {
        reader.releaseLock();
      }
    }
    const bytes = this.readAll(digest);
    if ((await sha256Hex(bytes)) !== digest) {
      this.db.tx(() => this.db.run("DELETE FROM _fs_blob_part WHERE digest = ?", [digest]));
      return null; // fetched again next time
    }
    this.db.tx(() => this.db.run("UPDATE _fs_blob SET complete = 1, size = ? WHERE digest = ?", [size, digest]));
    return fetched;
  }

  // -- sweep ------------------------------------------------------------------------------------

  /** Forget file ids nothing references and drop the blobs no file uses. */
  sweep() {
    return this.db.tx(() => {
      const known = new Set(this.db.all("SELECT fileid FROM _fs_file").map((r) => String(r.fileid)));
      const keep = new Set([...this.inRows(), ...this.inOutbox(known)]);
      const gone = [...known].filter((f) => !keep.has(f));
      for (const f of gone) {
        this.db.run("DELETE FROM _fs_file WHERE fileid = ?", [f]);
        this.db.run("DELETE FROM _fs_file_upload WHERE fileid = ?", [f]);
      }
      const removed = this.db.run(
        "DELETE FROM _fs_blob WHERE digest NOT IN (SELECT sha256 FROM _fs_file UNION SELECT thumbnail FROM _fs_file WHERE thumbnail IS NOT NULL)",
      );
      this.db.run("DELETE FROM _fs_blob_part WHERE digest NOT IN (SELECT digest FROM _fs_blob)");
      return removed;
    });
  }

  /** Remove every file and blob (sign-out, purge). */
  wipe() {
    this.db.tx(() => {
      for (const t of ["_fs_file", "_fs_file_upload", "_fs_blob", "_fs_blob_part"]) this.db.run(`DELETE FROM ${t}`);
    });
  }
}

/** @param {string} name */
function guessType(name) {
  const ext = name.toLowerCase().split(".").pop() ?? "";
  /** @type {Record<string, string>} */
  const types = {
    jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", gif: "image/gif", webp: "image/webp",
    heic: "image/heic", pdf: "application/pdf", txt: "text/plain", csv: "text/csv", json: "application/json",
  };
  return types[ext] ?? "application/octet-stream";
}
