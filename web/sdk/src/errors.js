// The errors the device SDK throws. Each has a stable `name` so that errors crossing the
// worker boundary (structured clone keeps only name and message) are rebuilt as the same class.

/** Base of every error the SDK throws. */
export class DeviceError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "DeviceError";
  }
}

/** The server could not be reached (no network, server down, connection cut, 5xx). */
export class OfflineError extends DeviceError {
  /** @param {string} message @param {number | null} [retryAfter] seconds the server asked to wait */
  constructor(message, retryAfter = null) {
    super(message);
    this.name = "OfflineError";
    this.retryAfter = retryAfter;
  }
}

/** The server answered with an error `{"error": {"code", "message"}}`. */
export class ServerError extends DeviceError {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(`${message} (${status} ${code})`);
    this.name = "ServerError";
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

/** The tokens are no longer valid: sign in again. */
export class AuthError extends ServerError {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(status, code, message);
    this.name = "AuthError";
  }
}

/** The user may no longer take this app offline: the device purged the app's data. */
export class AccessRemovedError extends ServerError {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(status, code, message);
    this.name = "AccessRemovedError";
  }
}

/** An administrator asked to wipe this device: its rows, outbox, sync errors and files are gone. */
export class DeviceWipedError extends ServerError {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(status, code, message);
    this.name = "DeviceWipedError";
  }
}

/** A value the device refuses before anything is written (named at its column). */
export class FieldError extends DeviceError {
  /** @param {string | null} column @param {string} message */
  constructor(column, message) {
    super(column ? `${column}: ${message}` : message);
    this.name = "FieldError";
    this.column = column;
    this.reason = message;
  }
}

/** The browser's storage quota is used up: the write was rolled back whole. */
export class QuotaError extends DeviceError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "QuotaError";
  }
}

/** No such row, table or view on the device. */
export class NotFoundError extends DeviceError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "NotFoundError";
  }
}

/** Another tab holds the device's storage (one writer across tabs). */
export class BusyError extends DeviceError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "BusyError";
  }
}

const CLASSES = {
  DeviceError, OfflineError, ServerError, AuthError, AccessRemovedError, DeviceWipedError, FieldError, QuotaError,
  NotFoundError, BusyError,
};

/**
 * An error as plain data, for postMessage.
 * @param {unknown} error
 * @returns {Record<string, unknown>}
 */
export function serializeError(error) {
  if (error instanceof Error) {
    /** @type {Record<string, unknown>} */
    const out = { name: error.name, message: error.message };
    for (const key of ["status", "code", "detail", "column", "reason", "retryAfter"]) {
      if (key in error) out[key] = /** @type {any} */ (error)[key];
    }
    return out;
  }
  return { name: "DeviceError", message: String(error) };
}

/**
 * The error rebuilt from serializeError's data.
 * @param {Record<string, any>} data
 * @returns {Error}
 */
export function deserializeError(data) {
  const name = String(data.name);
  /** @type {Error} */
  let error;
  if (name === "FieldError") error = new FieldError(data.column ?? null, data.reason ?? data.message);
  else if (name === "ServerError" || name === "AuthError" || name === "AccessRemovedError" || name === "DeviceWipedError") {
    const Kind = CLASSES[name];
    error = new Kind(data.status, data.code, data.detail ?? data.message);
  } else if (name === "OfflineError") error = new OfflineError(data.message, data.retryAfter ?? null);
  else if (name in CLASSES) error = new (/** @type {any} */ (CLASSES)[name])(data.message);
  else {
    error = new DeviceError(data.message);
  }
  return error;
}
