// When the device syncs by itself: the profile's intervals (or the user's frequency where the
// app allows it), Wi-Fi only where the browser can tell (`navigator.connection`) and the user
// chose it, pending changes as soon as the network allows, and the server's live stream (SSE
// read through fetch) that names the tables that changed. A lost stream reconnects with
// exponential backoff and full jitter, so a fleet that lost its server does not return in step.

import { AccessRemovedError, AuthError, OfflineError, ServerError } from "./errors.js";
import { backoff, sleep } from "./http.js";

/** @typedef {import("./engine.js").Engine} Engine */

/**
 * Server-sent events from a stream of text chunks, as [event, data]; a comment (keep-alive)
 * comes as ["", ""].
 */
export class EventParser {
  constructor() {
    this.buffer = "";
    this.name = "";
    /** @type {string[]} */
    this.data = [];
  }

  /** @param {string} chunk @returns {[string, string][]} */
  push(chunk) {
    this.buffer += chunk;
    /** @type {[string, string][]} */
    const out = [];
    let at;
    while ((at = this.buffer.search(/\r\n|\n|\r/)) >= 0) {
      const line = this.buffer.slice(0, at);
      const width = this.buffer.startsWith("\r\n", at) ? 2 : 1;
      this.buffer = this.buffer.slice(at + width);
      if (!line) {
        if (this.name || this.data.length) out.push([this.name || "message", this.data.join("\n")]);
        this.name = "";
        this.data = [];
      } else if (line.startsWith(":")) {
        out.push(["", ""]);
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") this.name = value;
        else if (field === "data") this.data.push(value);
      }
    }
    return out;
  }
}

export class Scheduler {
  /**
   * @param {Engine} engine
   * @param {{tickMs?: number, live?: boolean, base?: number, cap?: number}} [options]
   */
  constructor(engine, options = {}) {
    this.engine = engine;
    this.tickMs = options.tickMs ?? 30_000;
    this.useLive = options.live ?? true;
    this.base = options.base ?? 500;
    this.cap = options.cap ?? 60_000;
    this.running = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {AbortController | null} */
    this.stream = null;
    /** @type {number[]} the backoff waits of the live stream, in ms */
    this.delays = [];
    this.connects = 0;
    this.onOnline = () => this.kick("online");
  }

  start() {
    if (this.running) return;
    this.running = true;
    if (typeof addEventListener === "function") addEventListener("online", this.onOnline);
    this.schedule(0);
    if (this.useLive) void this.liveLoop();
  }

  stop() {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.stream?.abort();
    this.stream = null;
    if (typeof removeEventListener === "function") removeEventListener("online", this.onOnline);
  }

  /** Settings changed: the live stream follows the `live` setting. */
  reconsider() {
    if (!this.running) return;
    this.stream?.abort();
    this.schedule(0);
  }

  /** A local write: upload soon if automatic sync may run. */
  localChange() {
    if (this.running) this.schedule(2000);
  }

  /** @param {string} _reason */
  kick(_reason) {
    if (this.running) this.schedule(0);
  }

  /** @param {number} ms */
  schedule(ms) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), ms);
  }

  async tick() {
    this.timer = null;
    if (!this.running) return;
    try {
      const due = await this.dueTables();
      const pending = this.engine.pendingCount() > 0 && (await this.mayRun());
      if (due.length || pending) await this.engine.sync({ reason: "scheduled", tables: due });
    } catch (error) {
      if (error instanceof AuthError || error instanceof AccessRemovedError) {
        this.stop();
        return;
      }
      // offline or refused: the next tick tries again
    }
    if (this.running) this.schedule(this.tickMs);
  }

  /** Whether automatic sync may run now (a network, Wi-Fi when asked, a frequency above 0). */
  async mayRun() {
    const engine = this.engine;
    const hs = engine.replica.handshake;
    if (!hs || !engine.replica.getState("tokens") || !engine.network.connected()) return false;
    const settings = await engine.settings();
    const app = hs.app ?? {};
    if (app.allow_wifi_only && settings.wifiOnly && engine.network.wifi() === false) return false;
    if (app.allow_wifi_only && settings.wifiOnly && engine.network.wifi() === null && !settings.assumeWifi) return false;
    return !(app.allow_sync_frequency && settings.frequencyMinutes === 0);
  }

  /**
   * Tables whose interval has passed: the profile's, or the user's frequency where allowed.
   * @param {Date} [now]
   * @returns {Promise<string[]>}
   */
  async dueTables(now = new Date()) {
    const engine = this.engine;
    const hs = engine.replica.handshake;
    if (!hs || !(await this.mayRun())) return [];
    const settings = await engine.settings();
    const frequency = hs.app?.allow_sync_frequency ? settings.frequencyMinutes : null;
    const last = engine.replica.lastSyncs();
    /** @type {Set<string>} */
    const due = new Set();
    for (const item of hs.profile.items) {
      const minutes = frequency || item.sync_interval_minutes || 15;
      const when = last[item.table];
      if (!when || now.getTime() - Date.parse(when) >= minutes * 60_000) due.add(item.table);
    }
    return hs.order.filter((/** @type {string} */ t) => due.has(t));
  }

  /** Hold the live stream while running and the `live` setting is on. */
  async liveLoop() {
    let attempt = 0;
    while (this.running) {
      const settings = await this.engine.settings().catch(() => null);
      if (!settings?.live || !this.engine.replica.handshake || !this.engine.network.connected()) {
        await sleep(Math.min(this.tickMs, 5000));
        continue;
      }
      try {
        await this.session();
        attempt = 0;
        continue; // the server ended the stream: reconnect at once
      } catch (error) {
        if (error instanceof AuthError || error instanceof AccessRemovedError) {
          this.stop();
          return;
        }
        if (!this.running) return;
        if (error instanceof ServerError && ![401, 408, 429, 503].includes(error.status) && error.status < 500) {
          // refused for good (the app, the profile): fall back to the intervals
          await sleep(this.cap);
          continue;
        }
      }
      const delay = backoff(attempt, this.base, this.cap);
      attempt += 1;
      this.delays.push(delay);
      await sleep(delay);
    }
  }

  /** One stream: sync all on `ready`, the named tables on `changes`, end on `bye`. */
  async session() {
    const engine = this.engine;
    const controller = new AbortController();
    this.stream = controller;
    const path = `/sync/v1/live?app=${encodeURIComponent(engine.appKey)}&device=${encodeURIComponent(engine.deviceId)}`;
    const response = await engine.transport().refreshingCall(() =>
      engine.transport().send("GET", path, undefined, {
        stream: true,
        retry: false,
        signal: controller.signal,
        headers: { Accept: "text/event-stream" },
      }),
    );
    const reader = /** @type {ReadableStream<Uint8Array>} */ (response.body).getReader();
    const decoder = new TextDecoder();
    const parser = new EventParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !this.running) return;
        for (const [name, data] of parser.push(decoder.decode(value, { stream: true }))) {
          if (name === "ready") {
            this.connects += 1;
            await this.safeSync(undefined);
          } else if (name === "changes") {
            await this.safeSync(JSON.parse(data).tables);
          } else if (name === "bye") {
            return;
          }
          if (name === "" || name === "ready" || name === "changes") {
            const due = await this.dueTables();
            if (due.length || (engine.pendingCount() && (await this.mayRun()))) await this.safeSync(due);
          }
        }
      }
    } finally {
      controller.abort();
      reader.releaseLock();
    }
  }

  /** @param {string[] | undefined} tables */
  async safeSync(tables) {
    try {
      await this.engine.sync({ reason: "live", tables });
    } catch (error) {
      if (error instanceof AuthError || error instanceof AccessRemovedError) throw error;
      if (error instanceof OfflineError) throw error;
      // a refused sync is in the status; the stream goes on
    }
  }
}
