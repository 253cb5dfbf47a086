// @fieldsync/device: an offline SQLite replica of a fieldsync app, synced over /sync/v1.
//
//   import { openDevice } from "@fieldsync/device";
//   const device = await openDevice({ server: location.origin });
//
// In a browser the engine runs in a dedicated worker (SQLite WebAssembly on OPFS) and the
// returned object is a proxy with the same async methods; in node (or with storage "memory"
// and no worker) the engine runs in-process on an in-memory database.

import { WorkerDevice } from "./proxy.js";

export {
  AccessRemovedError, AuthError, BusyError, DeviceError, DeviceWipedError, FieldError, NotFoundError, OfflineError,
  QuotaError, ServerError,
} from "./errors.js";
export { SYNC_STATES, SDK_VERSION } from "./states.js";

/**
 * @typedef {import("./engine.js").EngineOptions & {workerUrl?: string | URL, inProcess?: boolean}} OpenOptions
 * @typedef {Pick<import("./engine.js").Engine, "session" | "signIn" | "signOut" | "apps" | "selectApp" | "sync" | "status" |
 *   "subscribe" | "tables" | "views" | "query" | "get" | "create" | "update" | "remove" |
 *   "lookupCandidates" | "attach" | "file" | "syncErrors" | "dismissSyncError" | "settings" |
 *   "updateSettings" | "outbox" | "close">} Device
 */

/**
 * Open the device: the engine in a worker (browser) or in this process (node, tests).
 * @param {OpenOptions} [options]
 * @returns {Promise<Device>}
 */
export async function openDevice(options = {}) {
  const inBrowserPage = typeof window !== "undefined" && typeof Worker !== "undefined";
  if (inBrowserPage && !options.inProcess) {
    const { workerUrl, fetch: _fetch, network: _network, ...rest } = options;
    const url = workerUrl ?? new URL("./worker.js", import.meta.url);
    return WorkerDevice.start(url, { storage: "opfs", schedule: true, ...rest });
  }
  // loaded only here, so that a page's bundle (with code splitting) leaves SQLite to the worker
  const { Engine } = await import("./engine.js");
  return /** @type {Device} */ (await Engine.open(options));
}
