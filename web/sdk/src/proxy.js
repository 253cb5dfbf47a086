// The page's side of the device in a browser: the same async methods as the engine, sent to
// the dedicated worker over postMessage; events come back to `subscribe` listeners.

import { deserializeError } from "./errors.js";

const METHODS = [
  "session", "signIn", "signOut", "apps", "selectApp", "sync", "status", "tables", "views", "query",
  "get", "create", "update", "remove", "lookupCandidates", "attach", "file", "syncErrors",
  "dismissSyncError", "settings", "updateSettings", "outbox",
];

export class WorkerDevice {
  /**
   * @param {string | URL} url @param {Record<string, unknown>} options
   * @returns {Promise<any>}
   */
  static async start(url, options) {
    const worker = new Worker(url, { type: "module", name: "fieldsync-device" });
    const device = new WorkerDevice(worker);
    await device.call("open", [options]);
    return device;
  }

  /** @param {Worker} worker */
  constructor(worker) {
    this.worker = worker;
    this.next = 1;
    /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void}>} */
    this.waiting = new Map();
    /** @type {Set<(e: any) => void>} */
    this.listeners = new Set();
    worker.addEventListener("message", (event) => {
      const msg = event.data;
      if (msg.event) {
        for (const listener of [...this.listeners]) {
          try {
            listener(msg.event);
          } catch {
            // an observer's bug must not break the device
          }
        }
        return;
      }
      const waiter = this.waiting.get(msg.id);
      if (!waiter) return;
      this.waiting.delete(msg.id);
      if (msg.error) waiter.reject(deserializeError(msg.error));
      else waiter.resolve(msg.result);
    });
    worker.addEventListener("error", (event) => {
      const error = new Error(`the device worker failed: ${event.message}`);
      for (const waiter of this.waiting.values()) waiter.reject(error);
      this.waiting.clear();
    });
    for (const name of METHODS) {
      /** @type {any} */ (this)[name] = (/** @type {unknown[]} */ ...args) => this.call(name, args);
    }
  }

  /** @param {string} method @param {unknown[]} args */
  call(method, args) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, method, args });
    });
  }

  /** @param {(e: any) => void} listener */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close() {
    try {
      await this.call("close", []);
    } finally {
      this.worker.terminate();
    }
  }
}
