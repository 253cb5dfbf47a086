// The device engine: the replica, the outbox, sync over /sync/v1, status and observers. It runs
// in one place only: the dedicated worker in a browser, the process in node. The page talks to
// it through `openDevice` (index.js), which has the same async methods.

import { AccessRemovedError, AuthError, DeviceError, DeviceWipedError, FieldError, NotFoundError, OfflineError, ServerError } from "./errors.js";
import { Transport, sleep } from "./http.js";
import { Replica, q } from "./replica.js";
import { coerceValues, requiredMissing } from "./values.js";
import { hexToUuid, isUuid, newId, timeParam, toStored } from "./codecs.js";
import { Files } from "./files.js";
import { Scheduler } from "./scheduler.js";
import { Database } from "./db.js";
import { Inventory, WIPE_CODE, wipeAsked } from "./inventory.js";
import { SDK_VERSION } from "./states.js";

export const UPLOAD_BATCH = 200;
export const PAGE_SIZE = 2000;
export { SDK_VERSION, SYNC_STATES } from "./states.js";

/**
 * @typedef {{id: string, name: string, fullname: string | null}} User
 * @typedef {{id: string, uniquename: string | null, name: string}} App
 * @typedef {{server: string, user: User, app: App | null}} Session
 * @typedef {{rows: number, bytes: number}} TableProgress
 * @typedef {{state: string, online: boolean, syncing: boolean, pending: number, errors: number,
 *   lastSync: string | null, lastError: string | null, progress: Record<string, TableProgress>,
 *   signedIn: boolean}} Status
 * @typedef {{type: "status", status: Status} | {type: "changed", tables: string[]}} DeviceEvent
 * @typedef {{downloaded: number, uploaded: number, rejected: number, purged: boolean,
 *   rescoped: string[], tables: Record<string, TableProgress>, files?: {fetched: number, bytes: number},
 *   inventory: Record<string, string>}} SyncReport
 * @typedef {{connected(): boolean, wifi(): boolean | null}} Network
 * @typedef {{server?: string, storage?: "opfs" | "memory", name?: string, fetch?: typeof fetch,
 *   network?: Network, retries?: number, baseDelayMs?: number, maxWaitMs?: number,
 *   pageSize?: number, schedule?: boolean, tickMs?: number, live?: boolean}} EngineOptions
 */

/** The network as the browser tells it: online, and Wi-Fi where `navigator.connection` says. */
export const browserNetwork = {
  connected() {
    return typeof navigator === "undefined" || navigator.onLine !== false;
  },
  wifi() {
    const connection = typeof navigator === "undefined" ? null : /** @type {any} */ (navigator).connection;
    const type = connection?.type;
    if (!type || type === "unknown") return null; // the browser cannot tell: the user's setting decides
    return type === "wifi" || type === "ethernet";
  },
};

export class Engine {
  /**
   * @param {EngineOptions} [options]
   * @returns {Promise<Engine>}
   */
  static async open(options = {}) {
    const db = await Database.open({ storage: options.storage ?? "memory", name: options.name ?? "device" });
    const engine = new Engine(db, options);
    if (options.server && !engine.replica.getState("server")) {
      engine.replica.setState("server", options.server.replace(/\/+$/, ""));
    }
    if (options.schedule ?? false) engine.scheduler.start();
    return engine;
  }

  /**
   * @param {Database} db
   * @param {EngineOptions} options
   */
  constructor(db, options) {
    this.db = db;
    this.options = options;
    this.replica = new Replica(db);
    this.network = options.network ?? browserNetwork;
    this.pageSize = options.pageSize ?? PAGE_SIZE;
    /** @type {Set<(e: DeviceEvent) => void>} */
    this.listeners = new Set();
    const link = this.replica.getState("link") ?? {};
    this.connected = Boolean(link.connected);
    /** @type {string | null} */
    this.lastError = link.error ?? null;
    this.syncing = false;
    /** @type {Record<string, TableProgress>} */
    this.progress = {};
    /** @type {Promise<SyncReport> | null} */
    this.running = null;
    /** @type {Transport | null} */
    this.http = null;
    this.files = new Files(this);
    this.inventory = new Inventory(this);
    this.scheduler = new Scheduler(this, { tickMs: options.tickMs, live: options.live });
    this.closed = false;
  }

  // -- session ----------------------------------------------------------------------------------

  /** @returns {Transport} */
  transport() {
    const server = this.replica.getState("server");
    if (!server) throw new DeviceError("no server: sign in first");
    if (!this.http || this.http.server !== server) {
      this.http = new Transport(server, {
        tokens: this.replica.getState("tokens"),
        onTokens: (tokens) => this.db.tx(() => (tokens ? this.replica.setState("tokens", tokens) : this.replica.deleteState("tokens"))),
        fetch: this.options.fetch,
        retries: this.options.retries,
        baseDelayMs: this.options.baseDelayMs,
        maxWaitMs: this.options.maxWaitMs,
      });
    }
    return this.http;
  }

  /**
   * A call to the server that remembers whether it answered (for the status).
   * @template T
   * @param {(http: Transport) => Promise<T>} action
   * @returns {Promise<T>}
   */
  async online(action) {
    try {
      const out = await action(this.transport());
      this.link(true, this.lastError);
      return out;
    } catch (error) {
      if (error instanceof OfflineError) {
        this.link(false, error.message);
        this.notify();
      }
      throw error;
    }
  }

  /** @param {string} method @param {string} path @param {unknown} [body] */
  call(method, path, body) {
    return this.online((http) => http.call(method, path, body));
  }

  /** @param {boolean} connected @param {string | null} error */
  link(connected, error) {
    if (connected === this.connected && error === this.lastError) return;
    this.connected = connected;
    this.lastError = error;
    if (!this.closed) this.db.tx(() => this.replica.setState("link", { connected, error }));
  }

  /** @returns {Promise<Session | null>} */
  async session() {
    const server = this.replica.getState("server");
    const user = this.replica.getState("user");
    if (!server || !user || !this.replica.getState("tokens")) return null;
    return { server, user, app: this.replica.getState("app") };
  }

  /**
   * Sign in with a password; the server and the user are remembered.
   * @param {{server?: string, username: string, password: string}} credentials
   * @returns {Promise<User>}
   */
  async signIn({ server, username, password }) {
    const previous = this.replica.getState("user");
    if (previous && String(previous.name).toLowerCase() !== String(username).toLowerCase() && this.replica.getState("device")) {
      throw new DeviceError(
        `this device is signed in as ${previous.name}: sign out first (its rows and unsent changes go), then sign in as another user`,
      );
    }
    const target = (server ?? this.replica.getState("server") ?? this.options.server ?? "").replace(/\/+$/, "");
    if (!target) throw new FieldError("server", "name the server to sign in to");
    this.db.tx(() => {
      this.replica.setState("server", target);
      if (!this.replica.getState("device")) this.replica.setState("device", newId().replace(/-/g, ""));
    });
    this.http = null;
    await this.online((http) => http.signIn(username, password));
    const answer = await this.call("GET", "/sync/v1/apps");
    const user = { id: answer.user.id, name: answer.user.name, fullname: answer.user.fullname ?? null };
    this.db.tx(() => {
      this.replica.setState("user", user);
      this.replica.setState("apps", answer.value);
    });
    this.notify();
    return user;
  }

  /**
   * The user's offline-enabled apps (from the server; the last list when offline).
   * @returns {Promise<App[]>}
   */
  async apps() {
    try {
      const answer = await this.call("GET", "/sync/v1/apps");
      this.db.tx(() => this.replica.setState("apps", answer.value));
      return answer.value;
    } catch (error) {
      if (error instanceof OfflineError) return this.replica.getState("apps") ?? [];
      throw error;
    }
  }

  /**
   * Choose the app to take offline: registers the device and adopts its profile.
   * @param {string} id the app's id or unique name
   * @returns {Promise<App>}
   */
  async selectApp(id) {
    const known = /** @type {App[]} */ (this.replica.getState("apps") ?? []);
    const found = known.find((a) => a.id === id || a.uniquename === id) ?? { id, uniquename: null, name: id };
    const current = this.replica.getState("app");
    if (current && current.id !== found.id) {
      // another app: its profile's rows go (unsent changes stay errors)
      this.purgeData(new ServerError(409, "app-changed", "another app was chosen"));
    }
    this.db.tx(() => this.replica.setState("app", found));
    const answer = await this.handshake();
    const app = { id: answer.app.app_id, uniquename: found.uniquename, name: answer.app.name };
    this.db.tx(() => this.replica.setState("app", app));
    this.notify();
    return app;
  }

  /** Sign out: revoke the session and wipe replica, outbox, files, tokens and settings. */
  async signOut() {
    this.scheduler.stop();
    const tokens = this.replica.getState("tokens");
    if (tokens?.refresh_token) {
      try {
        await this.transport().send("POST", "/auth/revoke", { token: tokens.refresh_token }, { auth: false, retry: false });
      } catch {
        // offline or refused: the local wipe goes on
      }
    }
    this.replica.purge();
    this.db.tx(() => {
      this.db.run("DELETE FROM _fs_outbox");
      this.db.run("DELETE FROM _fs_error");
      this.files.wipe();
      for (const key of ["tokens", "device", "user", "app", "apps", "settings", "acked", "link", "inventory"]) this.replica.deleteState(key);
    });
    this.http = null;
    this.connected = false;
    this.lastError = null;
    this.emit({ type: "changed", tables: [] });
    this.notify();
  }

  // -- the protocol -----------------------------------------------------------------------------

  get deviceId() {
    return String(this.replica.getState("device"));
  }

  get appKey() {
    const app = this.replica.getState("app");
    if (!app) throw new DeviceError("no app chosen: call selectApp first");
    return String(app.id);
  }

  /** @returns {any} */
  get handshakeData() {
    if (!this.replica.handshake) throw new DeviceError("this device is not set up: sign in and choose an app first");
    return this.replica.handshake;
  }

  /** Register with the server and adopt the published profile (purges on lost access). */
  async handshake() {
    await this.inventory.flush(); // a receipt the server has not had yet
    let answer;
    try {
      answer = await this.call("POST", "/sync/v1/handshake", {
        device: this.deviceId,
        app: this.appKey,
        sdk: SDK_VERSION,
        pending: this.pendingCount(),
      });
    } catch (error) {
      if (wipeAsked(error)) {
        await this.wipe();
        throw wipedError(/** @type {ServerError} */ (error));
      }
      if (error instanceof AccessRemovedError || (error instanceof ServerError && !(error instanceof AuthError) && (error.status === 403 || error.status === 404))) {
        await this.purge(error);
        throw error instanceof AccessRemovedError ? error : new AccessRemovedError(error.status, error.code, error.detail);
      }
      throw error;
    }
    const reset = this.replica.adopt(answer);
    if (reset.length) this.emit({ type: "changed", tables: reset });
    return answer;
  }

  /**
   * Access is gone: the data goes (purgeData), and a receipt says how much (once: a device
   * that holds nothing sends none; kept and sent before the next handshake when undelivered).
   * @param {ServerError} error
   */
  async purge(error) {
    const held = this.replica.handshake != null;
    const counts = this.inventory.counts();
    const outbox = this.pendingCount();
    const files = this.blobCount();
    this.purgeData(error);
    if (held) await this.inventory.receipt("purge", counts, { outbox, files, reason: error.detail });
  }

  /**
   * An administrator asked to wipe this device: every row, the outbox (pending changes are not
   * sent), the sync errors and the files go; the wipe receipt says how much. The sign-in stays.
   */
  async wipe() {
    const counts = this.inventory.counts();
    const outbox = this.pendingCount();
    const files = this.blobCount();
    const tables = [...this.replica.defs.keys()];
    this.db.tx(() => {
      this.db.run("DELETE FROM _fs_outbox");
      this.db.run("DELETE FROM _fs_error");
      this.files.wipe();
      this.replica.deleteState("acked");
      this.replica.deleteState("inventory");
      this.replica.purge();
    });
    this.emit({ type: "changed", tables });
    this.notify();
    await this.inventory.receipt("wipe", counts, { outbox, files, reason: "asked by an administrator" });
  }

  blobCount() {
    return Number(this.db.value("SELECT count(*) FROM _fs_blob"));
  }

  /**
   * Pending changes become sync errors, the profile's data goes.
   * @param {ServerError} error
   */
  purgeData(error) {
    const now = new Date().toISOString();
    const tables = [...this.replica.defs.keys()];
    this.db.tx(() => {
      for (const e of this.db.all("SELECT * FROM _fs_outbox ORDER BY seq")) {
        this.db.run(
          "INSERT INTO _fs_error (changeid, tablename, operation, recordid, code, message, errortype, sent, reverted, occurredon) VALUES (?, ?, ?, ?, ?, ?, 3, ?, NULL, ?)",
          [e.changeid, e.tablename, e.operation, e.recordid, error.code, `not uploaded: ${error.detail}`, e.changes, now],
        );
      }
      this.db.run("DELETE FROM _fs_outbox");
      this.files.wipe();
      this.replica.deleteState("acked");
      this.replica.deleteState("inventory");
      this.replica.purge();
    });
    this.emit({ type: "changed", tables });
    this.notify();
  }

  /**
   * Sync now: handshake, files up, outbox up, every table (or `tables`) down, files down.
   * One sync at a time: a second call joins the running one.
   * @param {{reason?: string, tables?: string[], files?: boolean}} [options]
   * @returns {Promise<SyncReport>}
   */
  sync(options = {}) {
    if (this.running) return this.running;
    this.running = this.runSync(options).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** @param {{reason?: string, tables?: string[], files?: boolean}} options */
  async runSync(options) {
    /** @type {SyncReport} */
    const report = { downloaded: 0, uploaded: 0, rejected: 0, purged: false, rescoped: [], tables: {}, inventory: {} };
    this.syncing = true;
    this.progress = {};
    this.notify();
    try {
      let answer;
      try {
        answer = await this.handshake();
      } catch (error) {
        if (error instanceof AccessRemovedError) report.purged = true;
        throw error;
      }
      try {
        await this.online(() => this.files.uploadPending());
        await this.upload(report);
        const wanted = options.tables ?? [...answer.order];
        await this.download(wanted, report);
        this.replica.buildIndexes();
        await this.check(wanted, report);
        if (options.files ?? true) report.files = await this.online(() => this.files.fetch());
      } catch (error) {
        if (!wipeAsked(error)) throw error;
        await this.wipe(); // asked while this sync ran
        throw wipedError(/** @type {ServerError} */ (error));
      }
      this.files.sweep();
      this.link(true, null);
      return report;
    } catch (error) {
      if (!(error instanceof OfflineError)) this.link(this.connected, String(/** @type {any} */ (error)?.message ?? error));
      throw error;
    } finally {
      this.syncing = false;
      this.notify();
    }
  }

  /** @param {SyncReport} report */
  async upload(report) {
    for (;;) {
      const { rows, acked } = this.db.tx(() => {
        const rows = this.db.all(`SELECT * FROM _fs_outbox ORDER BY seq LIMIT ${UPLOAD_BATCH}`);
        const acked = /** @type {string[]} */ (this.replica.getState("acked") ?? []);
        if (rows.length) {
          this.db.run(`UPDATE _fs_outbox SET sent = 1 WHERE seq IN (${rows.map(() => "?").join(", ")})`, rows.map((r) => r.seq));
        }
        return { rows, acked };
      });
      if (!rows.length && !acked.length) return;
      const changes = rows.map((r) => ({
        id: r.changeid,
        table: r.tablename,
        operation: r.operation,
        record: r.recordid,
        values: JSON.parse(r.changes),
        base_version: r.baseversion == null ? null : Number(r.baseversion),
      }));
      const answer = await this.call("POST", "/sync/v1/upload", {
        device: this.deviceId,
        app: this.appKey,
        changes,
        acknowledged: acked,
      });
      this.settle(rows, answer.results, report);
    }
  }

  /**
   * Apply the server's answers: drop applied changes, revert rejected ones in the same
   * transaction that drops them, and keep them as sync errors with the sent and reverted values.
   * @param {Record<string, any>[]} rows @param {any[]} results @param {SyncReport} report
   */
  settle(rows, results, report) {
    const byId = new Map(results.map((r) => [r.id, r]));
    const now = new Date().toISOString();
    /** @type {Set<string>} */
    const touched = new Set();
    this.db.tx(() => {
      this.replica.setState("acked", rows.filter((e) => byId.has(e.changeid)).map((e) => e.changeid));
      for (const entry of rows) {
        const result = byId.get(entry.changeid);
        if (!result) continue;
        this.db.run("DELETE FROM _fs_outbox WHERE seq = ?", [entry.seq]);
        const table = entry.tablename;
        if (!this.replica.defs.has(table)) continue;
        const pk = this.replica.table(table).primary_id;
        const key = this.replica.storedId(table, entry.recordid);
        if (result.status === "applied") {
          report.uploaded += 1;
          if (result.version != null) {
            this.db.run(`UPDATE ${q(table)} SET versionnumber = ? WHERE ${q(pk)} = ?`, [result.version, key]);
          }
          continue;
        }
        report.rejected += 1;
        touched.add(table);
        const serverRow = result.row ?? null;
        if (serverRow === null) {
          this.db.run(`DELETE FROM ${q(table)} WHERE ${q(pk)} = ?`, [key]);
          this.db.run("DELETE FROM _fs_outbox WHERE tablename = ? AND recordid = ? AND operation != 'create'", [table, entry.recordid]);
        } else {
          this.replica.upsertStored(table, this.replica.encodeValues(table, serverRow));
          const later = this.replica.pending(table);
          if (later.has(entry.recordid)) this.replica.overlay(table, later, new Set([entry.recordid]));
        }
        const error = result.error ?? {};
        this.db.run(
          "INSERT INTO _fs_error (changeid, tablename, operation, recordid, code, message, errortype, sent, reverted, occurredon) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          [entry.changeid, table, entry.operation, entry.recordid, String(error.code ?? ""), String(error.message ?? ""), Number(error.type ?? 3), entry.changes, serverRow === null ? null : JSON.stringify(serverRow), now],
        );
      }
    });
    if (touched.size) this.emit({ type: "changed", tables: [...touched] });
  }

  /**
   * Download pages until every table is current. The next request goes out while the current
   * pages are written; each page is committed with its cursor, so a stop anywhere resumes from
   * the last page. A must-refetch answer (410) restarts the tables it names from scratch.
   * @param {string[]} tables @param {SyncReport} report
   */
  async download(tables, report) {
    const cursors = this.replica.cursors(tables);
    /** @type {Record<string, TableProgress>} */
    const counts = Object.fromEntries(tables.map((t) => [t, { rows: 0, bytes: 0 }]));
    this.progress = counts;
    let refetched = false;
    /** @param {string[]} active @param {Record<string, string | null>} positions */
    const fetchPage = async (active, positions) => {
      const body = {
        device: this.deviceId,
        app: this.appKey,
        cursors: Object.fromEntries(active.map((t) => [t, positions[t] ?? null])),
        limit: this.pageSize,
      };
      const answer = await this.online((http) => http.call("POST", "/sync/v1/download", body));
      return { answer, size: this.transport().lastSize };
    };
    /** @param {string[]} active @param {Record<string, string | null>} positions */
    const fetchOrRefetch = async (active, positions) => {
      try {
        return await fetchPage(active, positions);
      } catch (error) {
        if (error instanceof ServerError && error.status === 410 && !refetched) {
          refetched = true; // the log no longer reaches the cursors: download them again
          this.replica.forgetCursors(active);
          for (const t of active) {
            positions[t] = null;
            cursors[t] = null;
          }
          return await fetchPage(active, positions);
        }
        throw error;
      }
    };
    let active = [...tables];
    let current = await fetchOrRefetch(active, cursors);
    /** @type {Set<string>} */
    const changed = new Set();
    for (;;) {
      const { answer, size } = current;
      const following = { ...cursors };
      /** @type {string[]} */
      const still = [];
      for (const page of answer.pages) {
        following[page.table] = page.cursor;
        if (page.more) still.push(page.table);
      }
      const returned = new Set(answer.pages.map((/** @type {any} */ p) => p.table));
      still.push(...active.filter((t) => !returned.has(t)));
      active = (answer.more || still.length) && answer.pages.length ? still : [];
      /** @type {Promise<{answer: any, size: number}> | null} */
      const next = active.length ? fetchOrRefetch([...active], following) : null;
      next?.catch(() => {}); // awaited below; a failure while writing must not go unhandled
      const shares = byteShares(answer.pages, size);
      const now = new Date().toISOString();
      answer.pages.forEach((/** @type {any} */ page, /** @type {number} */ i) => {
        const name = page.table;
        const written = this.replica.applyPage(page, now);
        cursors[name] = page.cursor;
        counts[name] = counts[name] ?? { rows: 0, bytes: 0 };
        counts[name].rows += page.upserts.length;
        counts[name].bytes += shares[i];
        report.downloaded += page.upserts.length;
        if (written) changed.add(name);
        if (page.rescope && !report.rescoped.includes(name)) report.rescoped.push(name);
      });
      if (answer.pages.length) {
        this.emit({ type: "changed", tables: answer.pages.map((/** @type {any} */ p) => p.table) });
        this.notify();
      }
      if (!next) break;
      current = await next;
    }
    report.tables = counts;
  }

  /**
   * Report the inventory of the tables just downloaded; download again at once the tables the
   * server re-scopes (their counts went wrong). A server that cannot take the report does not
   * fail the sync (the rows are in), except to ask for a wipe.
   * @param {string[]} tables @param {SyncReport} report
   */
  async check(tables, report) {
    let answer;
    try {
      answer = await this.inventory.report(tables);
    } catch (error) {
      if (wipeAsked(error) || !(error instanceof ServerError)) throw error;
      return;
    }
    if (!answer) return;
    report.inventory = Object.fromEntries(answer.tables.map((v) => [v.table, v.status]));
    const rescope = answer.rescope.filter((t) => this.replica.defs.has(t));
    if (!rescope.length) return;
    const before = report.tables;
    await this.download(rescope, report);
    for (const [name, seen] of Object.entries(before)) {
      const now = report.tables[name];
      report.tables[name] = now ? { rows: now.rows + seen.rows, bytes: now.bytes + seen.bytes } : seen;
    }
  }

  // -- reading ----------------------------------------------------------------------------------

  /** The travelling tables, with the columns that travel. */
  async tables() {
    const hs = this.handshakeData;
    return hs.order.map((/** @type {string} */ name) => {
      const t = this.replica.table(name);
      const travelling = new Set(hs.columns[name]);
      return {
        name: t.name,
        entitySet: t.entity_set_name,
        displayName: t.display_name,
        primaryId: t.primary_id,
        primaryName: t.primary_name,
        columns: t.columns
          .filter((c) => travelling.has(c.name))
          .map((c) => ({
            name: c.name,
            type: c.type,
            displayName: c.display_name ?? c.name,
            required: Boolean(c.required),
            readOnly: Boolean(c.read_only || (c.system && !["ownerid", "statecode", "statuscode"].includes(c.name)) || c.name === t.primary_id),
            maxLength: c.max_length ?? null,
            min: c.min_value ?? null,
            max: c.max_value ?? null,
            precision: c.precision ?? null,
            options: c.options ?? [],
            targets: (c.targets ?? []).filter((x) => this.replica.defs.has(x)),
            maxSizeKb: c.max_size_kb ?? null,
          })),
      };
    });
  }

  /** @param {string} table */
  async views(table) {
    this.replica.table(table);
    return this.handshakeData.views
      .filter((/** @type {any} */ v) => v.table === table)
      .map((/** @type {any} */ v) => ({
        id: v.id ?? v.name,
        name: v.name,
        isDefault: Boolean(v.default),
        columns: v.sqlite ? v.sqlite.columns : [],
        error: v.error ?? null,
      }));
  }

  /**
   * Rows of a view (or of the table) computed on the replica, with the server's order.
   * @param {string} table
   * @param {{view?: string | null, search?: string | null, limit?: number, offset?: number, now?: Date}} [options]
   * @returns {Promise<{rows: Record<string, unknown>[]}>}
   */
  async query(table, options = {}) {
    const def = this.replica.table(table);
    const limit = Math.max(0, Math.floor(options.limit ?? 100));
    const offset = Math.max(0, Math.floor(options.offset ?? 0));
    const search = options.search ? `%${options.search.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%` : null;
    let rows;
    if (options.view) {
      const view = this.handshakeData.views.find((/** @type {any} */ v) => v.table === table && (v.id === options.view || v.name === options.view));
      if (!view) throw new NotFoundError(`the app has no view ${JSON.stringify(options.view)} of ${table}`);
      if (!view.sqlite) throw new DeviceError(`view ${view.name} cannot run on the device: ${view.error}`);
      const compiled = view.sqlite;
      const now = options.now ?? new Date();
      /** @type {Record<string, any>} */
      const params = { ...compiled.params };
      for (const [name, spec] of Object.entries(compiled.times)) params[name] = timeParam(/** @type {any} */ (spec), now);
      let take = limit;
      if (compiled.top != null) take = Math.max(0, Math.min(limit, compiled.top - offset));
      params.search = search;
      params.limit = take;
      params.offset = offset;
      rows = take ? this.db.all(compiled.sql, params) : [];
    } else {
      const text = def.columns.filter((c) => c.type === "string" && this.replica.defs.has(table)).map((c) => c.name);
      const where = search && text.length ? `WHERE ${text.map((c) => `lower(${q(c)}) LIKE :search ESCAPE '\\'`).join(" OR ")}` : "";
      rows = this.db.all(
        `SELECT * FROM ${q(table)} ${where} ORDER BY ${def.primary_name ? `${q(def.primary_name)} ASC NULLS FIRST, ` : ""}${q(def.primary_id)} LIMIT :limit OFFSET :offset`,
        { ...(where ? { search } : {}), limit, offset },
      );
    }
    return { rows: rows.map((r) => this.present(table, r)) };
  }

  /**
   * @param {string} table @param {string} id
   * @returns {Promise<Record<string, unknown> | null>}
   */
  async get(table, id) {
    const def = this.replica.table(table);
    if (!isUuid(id)) throw new FieldError(def.primary_id, `${JSON.stringify(id)} is not a record id (a GUID)`);
    const row = this.db.get(`SELECT * FROM ${q(table)} WHERE ${q(def.primary_id)} = ?`, [this.replica.storedId(table, id)]);
    return row ? this.present(table, row) : null;
  }

  /**
   * A stored row as the app sees it: wire values, `<col>@name` for lookups to rows on the
   * device, `<col>@label` for choices.
   * @param {string} table @param {Record<string, any>} stored
   */
  present(table, stored) {
    const def = this.replica.table(table);
    const row = this.replica.decodeRow(table, stored);
    const byName = new Map(def.columns.map((c) => [c.name, c]));
    for (const [name, value] of Object.entries(row)) {
      const col = byName.get(name);
      if (!col || value == null) continue;
      if (col.type === "lookup") {
        const targets = col.targets ?? [];
        const target = targets.length > 1 ? String(row[`${name}type`] ?? "") : targets[0];
        if (target && this.replica.defs.has(target)) {
          const t = this.replica.table(target);
          if (t.primary_name) {
            const found = this.db.value(`SELECT ${q(t.primary_name)} FROM ${q(target)} WHERE ${q(t.primary_id)} = ?`, [this.replica.storedId(target, String(value))]);
            if (found != null) row[`${name}@name`] = found;
          }
        }
      } else if (col.type === "choice") {
        const option = (col.options ?? []).find((o) => o.value === value);
        if (option) row[`${name}@label`] = option.label;
      } else if (col.type === "multichoice" && Array.isArray(value)) {
        row[`${name}@label`] = value
          .map((v) => (col.options ?? []).find((o) => o.value === v)?.label ?? String(v))
          .join("; ");
      }
    }
    return row;
  }

  /**
   * Rows a lookup column may point at, from the replica, filtered by their primary name.
   * @param {string} table @param {string} column @param {string} [text] @param {number} [limit]
   */
  async lookupCandidates(table, column, text = "", limit = 50) {
    const def = this.replica.table(table);
    const col = def.columns.find((c) => c.name === column);
    if (!col || col.type !== "lookup") throw new FieldError(column, "is not a lookup column");
    const pattern = `%${text.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    /** @type {{id: string, table: string, name: string}[]} */
    const out = [];
    for (const target of col.targets ?? []) {
      if (!this.replica.defs.has(target)) continue;
      const t = this.replica.table(target);
      const nameCol = t.primary_name || t.primary_id;
      const rows = this.db.all(
        `SELECT ${q(t.primary_id)} AS id, ${q(nameCol)} AS name FROM ${q(target)} WHERE lower(${q(nameCol)}) LIKE ? ESCAPE '\\' ORDER BY ${q(nameCol)} LIMIT ?`,
        [pattern, limit],
      );
      for (const r of rows) out.push({ id: hexToUuid(String(r.id)), table: target, name: String(r.name ?? "") });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name)).slice(0, limit);
  }

  // -- writing ----------------------------------------------------------------------------------

  /**
   * Create a row offline; the id is made here and kept by the server.
   * @param {string} table @param {Record<string, unknown>} values
   * @returns {Promise<string>} the new row's id
   */
  async create(table, values) {
    const def = this.replica.table(table);
    const given = { ...values };
    let id = newId();
    if (def.primary_id in given) {
      const chosen = given[def.primary_id];
      delete given[def.primary_id];
      if (!isUuid(chosen)) throw new FieldError(def.primary_id, "is not a record id (a GUID)");
      id = chosen.toLowerCase();
    }
    const wire = coerceValues(def, given, this.travelling(table));
    const missing = requiredMissing(def, wire, this.travelling(table));
    if (missing) throw new FieldError(missing, "is required");
    wire[def.primary_id] = id;
    const user = this.handshakeData.user;
    const now = new Date().toISOString().replace("Z", "000+00:00");
    /** @type {Record<string, unknown>} */
    const local = { ...wire };
    const has = new Set(def.columns.map((c) => c.name));
    if (def.ownership === "user" && !("ownerid" in local)) {
      local.ownerid = user.id;
      local.owneridtype = "systemuser";
    }
    if (has.has("owningbusinessunit") && local.owningbusinessunit == null) local.owningbusinessunit = user.business_unit;
    if (has.has("statecode") && local.statecode == null) local.statecode = 0;
    if (has.has("statuscode") && local.statuscode == null) local.statuscode = 1;
    for (const c of ["createdon", "modifiedon"]) if (has.has(c)) local[c] = now;
    for (const c of ["createdby", "modifiedby"]) if (has.has(c)) local[c] = user.id;
    this.db.tx(() => {
      this.replica.upsertStored(table, this.replica.encodeValues(table, local));
      this.enqueue(table, "create", id, wire, null);
    });
    this.changed([table]);
    return id;
  }

  /**
   * Change columns of a row offline (only the changed columns travel).
   * @param {string} table @param {string} id @param {Record<string, unknown>} values
   */
  async update(table, id, values) {
    const def = this.replica.table(table);
    if (!isUuid(id)) throw new FieldError(def.primary_id, "is not a record id (a GUID)");
    const wire = coerceValues(def, values, this.travelling(table));
    delete wire[def.primary_id];
    if (!Object.keys(wire).length) return;
    const key = this.replica.storedId(table, id);
    this.db.tx(() => {
      const row = this.db.get(`SELECT versionnumber FROM ${q(table)} WHERE ${q(def.primary_id)} = ?`, [key]);
      if (!row) throw new NotFoundError(`no ${table} row ${id} on this device`);
      /** @type {Record<string, unknown>} */
      const local = { ...wire };
      if (def.columns.some((c) => c.name === "modifiedon")) local.modifiedon = new Date().toISOString().replace("Z", "000+00:00");
      const stored = this.replica.encodeValues(table, local);
      const cols = Object.keys(stored);
      this.db.run(`UPDATE ${q(table)} SET ${cols.map((c) => `${q(c)} = ?`).join(", ")} WHERE ${q(def.primary_id)} = ?`, [...cols.map((c) => stored[c]), key]);
      this.enqueue(table, "update", id.toLowerCase(), wire, row.versionnumber == null ? null : Number(row.versionnumber));
    });
    this.changed([table]);
  }

  /** @param {string} table @param {string} id */
  async remove(table, id) {
    const def = this.replica.table(table);
    if (!isUuid(id)) throw new FieldError(def.primary_id, "is not a record id (a GUID)");
    const key = this.replica.storedId(table, id);
    this.db.tx(() => {
      const row = this.db.get(`SELECT versionnumber FROM ${q(table)} WHERE ${q(def.primary_id)} = ?`, [key]);
      if (!row) throw new NotFoundError(`no ${table} row ${id} on this device`);
      this.db.run(`DELETE FROM ${q(table)} WHERE ${q(def.primary_id)} = ?`, [key]);
      this.enqueue(table, "delete", id.toLowerCase(), {}, row.versionnumber == null ? null : Number(row.versionnumber));
    });
    this.changed([table]);
  }

  /** @param {string} table @returns {Set<string>} */
  travelling(table) {
    return new Set(this.handshakeData.columns[table] ?? []);
  }

  /**
   * Add a change to the outbox, folding it into an earlier unsent change of the same row
   * when that keeps parents before children.
   * @param {string} table @param {string} operation @param {string} id
   * @param {Record<string, unknown>} values @param {number | null} base
   */
  enqueue(table, operation, id, values, base) {
    const unsent = this.db.get(
      "SELECT seq, operation, changes FROM _fs_outbox WHERE tablename = ? AND recordid = ? AND sent = 0 ORDER BY seq DESC LIMIT 1",
      [table, id],
    );
    const sentBefore = Number(this.db.value("SELECT count(*) FROM _fs_outbox WHERE tablename = ? AND recordid = ? AND sent = 1", [table, id]));
    if (unsent) {
      if (operation === "delete") {
        this.db.run("DELETE FROM _fs_outbox WHERE tablename = ? AND recordid = ? AND sent = 0", [table, id]);
        if (unsent.operation === "create" && !sentBefore) return; // never reached the server
      } else if (this.canFold(Number(unsent.seq), values)) {
        const merged = { ...JSON.parse(unsent.changes), ...values };
        this.db.run("UPDATE _fs_outbox SET changes = ? WHERE seq = ?", [JSON.stringify(merged), unsent.seq]);
        return;
      }
    }
    this.db.run(
      "INSERT INTO _fs_outbox (changeid, tablename, operation, recordid, changes, baseversion, sent) VALUES (?, ?, ?, ?, ?, ?, 0)",
      [newId(), table, operation, id, JSON.stringify(values), base],
    );
  }

  /**
   * Folding into change `seq` is safe unless a value points at a row created later.
   * @param {number} seq @param {Record<string, unknown>} values
   */
  canFold(seq, values) {
    const refs = Object.values(values).filter((v) => isUuid(v));
    if (!refs.length) return true;
    const later = this.db.value(
      `SELECT count(*) FROM _fs_outbox WHERE operation = 'create' AND recordid IN (${refs.map(() => "?").join(", ")}) AND seq > ?`,
      [...refs.map((r) => String(r).toLowerCase()), seq],
    );
    return Number(later) === 0;
  }

  // -- errors, settings, status -------------------------------------------------------------------

  /** The changes the server rejected, newest first, with the values sent and reverted to. */
  async syncErrors() {
    return this.db.all("SELECT * FROM _fs_error ORDER BY seq DESC").map((r) => ({
      id: Number(r.seq),
      changeId: r.changeid,
      table: r.tablename,
      recordId: r.recordid,
      operation: r.operation,
      code: r.code,
      message: r.message,
      type: Number(r.errortype),
      sent: JSON.parse(r.sent),
      reverted: r.reverted == null ? null : JSON.parse(r.reverted),
      at: r.occurredon,
    }));
  }

  /** @param {number} id */
  async dismissSyncError(id) {
    this.db.tx(() => this.db.run("DELETE FROM _fs_error WHERE seq = ?", [id]));
    this.notify();
  }

  /** The outbox, oldest first (what waits to upload). */
  async outbox() {
    return this.db.all("SELECT * FROM _fs_outbox ORDER BY seq").map((r) => ({
      changeId: r.changeid,
      table: r.tablename,
      operation: r.operation,
      recordId: r.recordid,
      changes: JSON.parse(r.changes),
      baseVersion: r.baseversion == null ? null : Number(r.baseversion),
      sent: Boolean(r.sent),
    }));
  }

  /** The user's sync settings and what the app allows. */
  async settings() {
    const found = this.replica.getState("settings") ?? {};
    const app = this.replica.handshake?.app ?? {};
    return {
      frequencyMinutes: found.frequencyMinutes ?? null,
      wifiOnly: Boolean(found.wifiOnly),
      live: found.live ?? true,
      assumeWifi: found.assumeWifi ?? true,
      allowed: { frequency: Boolean(app.allow_sync_frequency), wifiOnly: Boolean(app.allow_wifi_only) },
      wifiDetectable: this.network.wifi() !== null,
    };
  }

  /**
   * Change the sync settings the app allows; `assumeWifi` says what an unknown network is
   * where the browser cannot tell Wi-Fi (Firefox, Safari, desktop Chrome).
   * @param {{frequencyMinutes?: number | null, wifiOnly?: boolean, live?: boolean, assumeWifi?: boolean}} patch
   */
  async updateSettings(patch) {
    const app = this.replica.handshake?.app ?? {};
    const current = this.replica.getState("settings") ?? {};
    if ("frequencyMinutes" in patch) {
      if (!app.allow_sync_frequency) throw new FieldError("frequencyMinutes", "this app does not let users adjust the sync frequency");
      const f = patch.frequencyMinutes;
      if (f !== null && (typeof f !== "number" || !Number.isInteger(f) || f < 0 || f > 10080)) {
        throw new FieldError("frequencyMinutes", "the sync frequency is a whole number of minutes (0: no automatic sync)");
      }
      current.frequencyMinutes = f;
    }
    if ("wifiOnly" in patch) {
      if (!app.allow_wifi_only) throw new FieldError("wifiOnly", "this app does not let users sync on Wi-Fi only");
      current.wifiOnly = Boolean(patch.wifiOnly);
    }
    if ("live" in patch) current.live = Boolean(patch.live);
    if ("assumeWifi" in patch) current.assumeWifi = Boolean(patch.assumeWifi);
    this.db.tx(() => this.replica.setState("settings", current));
    this.scheduler.reconsider();
    return this.settings();
  }

  pendingCount() {
    return Number(this.db.value("SELECT count(*) FROM _fs_outbox"));
  }

  /** @returns {Promise<Status>} */
  async status() {
    return this.statusNow();
  }

  /** @returns {Status} */
  statusNow() {
    const pending = this.pendingCount();
    const errors = Number(this.db.value("SELECT count(*) FROM _fs_error"));
    const connected = this.connected && this.network.connected();
    const failed = this.lastError !== null;
    let state;
    if (connected) {
      if (this.syncing) state = "ConnectedRefresh";
      else if (failed) state = "ConnectedError";
      else if (pending) state = "ConnectedPendingUpsync";
      else if (errors) state = "ConnectedWithWarning";
      else state = "Connected";
    } else if (failed && errors) state = "NotConnectedSyncError";
    else if (pending) state = "NotConnectedPendingUpsync";
    else if (errors) state = "NotConnectedWithWarning";
    else state = "NotConnected";
    const syncs = Object.values(this.replica.lastSyncs()).filter((v) => v != null).sort();
    return {
      state,
      online: connected,
      syncing: this.syncing,
      pending,
      errors,
      lastSync: syncs.length ? /** @type {string} */ (syncs[syncs.length - 1]) : null,
      lastError: this.lastError,
      progress: this.progress,
      signedIn: Boolean(this.replica.getState("tokens")),
    };
  }

  /**
   * @param {(e: DeviceEvent) => void} listener
   * @returns {() => void} unsubscribe
   */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** @param {DeviceEvent} event */
  emit(event) {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        // an observer's bug must not break a write
      }
    }
  }

  notify() {
    if (this.closed || !this.listeners.size) return;
    this.emit({ type: "status", status: this.statusNow() });
  }

  /** @param {string[]} tables */
  changed(tables) {
    this.emit({ type: "changed", tables });
    this.notify();
    this.scheduler.localChange();
  }

  /** Files: attach a blob to a file or image column, offline (uploads with the next sync). */
  /** @param {string} table @param {string} id @param {string} column @param {Blob | Uint8Array} blob @param {string} [filename] */
  async attach(table, id, column, blob, filename) {
    const fid = await this.files.attach(table, id, column, blob, filename);
    this.changed([table]);
    return fid;
  }

  /** @param {string} table @param {string} id @param {string} column @param {{thumbnail?: boolean}} [options] */
  async file(table, id, column, options = {}) {
    return this.files.read(table, id, column, Boolean(options.thumbnail));
  }

  async close() {
    this.scheduler.stop();
    this.closed = true;
    await this.running?.catch(() => {});
    this.db.close();
  }

  /** Wait until no sync runs (tests). */
  async idle() {
    while (this.running) {
      await this.running.catch(() => {});
      await sleep(0);
    }
  }
}

/**
 * The wipe code's error, as the device throws it once it wiped itself.
 * @param {ServerError} error
 */
function wipedError(error) {
  return new DeviceWipedError(error.status, WIPE_CODE, error.detail);
}

/**
 * Split one response's size between the pages it carried, by the values each page holds.
 * @param {any[]} pages @param {number} size
 */
function byteShares(pages, size) {
  const weights = pages.map((p) => p.upserts.reduce((/** @type {number} */ n, /** @type {unknown[]} */ r) => n + r.length, 0) + p.removes.length + 1);
  const total = weights.reduce((a, b) => a + b, 0) || 1;
  return weights.map((w) => Math.floor((size * w) / total));
}

export { toStored };
