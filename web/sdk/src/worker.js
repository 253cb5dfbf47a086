// The device's dedicated worker: the whole engine (HTTP, replica on OPFS, outbox, files, live
// stream, scheduler) runs here, one per tab; the tab that holds the Web Lock is the one writer,
// a second tab waits for the lock (and its pages get BusyError until it is theirs).

import { Engine } from "./engine.js";
import { BusyError, serializeError } from "./errors.js";

/** @type {Engine | null} */
let engine = null;
/** @type {Promise<Engine> | null} */
let opening = null;
/** @type {(() => void) | null} */
let releaseLock = null;

const scope = /** @type {any} */ (globalThis);

/**
 * Take the device's lock (one writer across tabs) and open the engine.
 * @param {Record<string, any>} options
 */
async function open(options) {
  const name = `fieldsync-device-${options.name ?? "device"}`;
  const locks = scope.navigator?.locks;
  if (locks) {
    await new Promise((resolve, reject) => {
      locks
        .request(name, { mode: "exclusive", ifAvailable: true }, (/** @type {unknown} */ lock) => {
          if (!lock) {
            reject(new BusyError("this device is open in another tab; close it there to use it here"));
            return undefined;
          }
          resolve(undefined);
          return new Promise((release) => {
            releaseLock = () => release(undefined);
          });
        })
        .catch(reject);
    });
  }
  const opened = await Engine.open(options);
  opened.subscribe((event) => scope.postMessage({ event }));
  return opened;
}

scope.addEventListener("message", async (/** @type {MessageEvent} */ message) => {
  const { id, method, args } = message.data;
  try {
    let result;
    if (method === "open") {
      opening ??= open(args[0]);
      engine = await opening;
      result = true;
    } else {
      if (!engine) throw new BusyError("the device is not open");
      if (method === "close") {
        await engine.close();
        engine = null;
        opening = null;
        releaseLock?.();
        result = true;
      } else {
        const fn = /** @type {any} */ (engine)[method];
        if (typeof fn !== "function" || method.startsWith("_")) throw new TypeError(`no method ${method}`);
        result = await fn.apply(engine, args);
      }
    }
    scope.postMessage({ id, result });
  } catch (error) {
    scope.postMessage({ id, error: serializeError(error) });
  }
});
