// HTTP to a fieldsync server: sign-in, refresh with rotation, JSON calls with the bearer
// token, and the errors a device acts on. A 401 refreshes the token once and retries; a second
// 401 means "sign in again". 429 and 503 wait as Retry-After says (up to a bound), other 5xx
// back off with jitter; after the retries the call fails as OfflineError (try again later).

import { AccessRemovedError, AuthError, OfflineError, ServerError } from "./errors.js";

/** @typedef {{access_token: string, refresh_token: string}} Tokens */

export const RETRIES = 3;
export const MAX_WAIT_MS = 30_000;

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Seconds the server asked to wait (Retry-After: seconds or an HTTP date), or null.
 * @param {string | null} header
 * @returns {number | null}
 */
export function retryAfter(header) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(header);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

/**
 * Exponential backoff with full jitter: attempt 0 -> up to base, 1 -> up to 2 base, …
 * @param {number} attempt @param {number} base @param {number} cap @param {() => number} [random]
 */
export function backoff(attempt, base, cap, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** attempt);
  return ceiling / 2 + random() * (ceiling / 2);
}

export class Transport {
  /**
   * @param {string} server
   * @param {{tokens?: Tokens | null, onTokens?: (t: Tokens | null) => void, fetch?: typeof fetch,
   *   retries?: number, maxWaitMs?: number, baseDelayMs?: number}} [options]
   */
  constructor(server, options = {}) {
    this.server = server.replace(/\/+$/, "");
    this.tokens = options.tokens ?? null;
    this.onTokens = options.onTokens ?? (() => {});
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.retries = options.retries ?? RETRIES;
    this.maxWaitMs = options.maxWaitMs ?? MAX_WAIT_MS;
    this.baseDelayMs = options.baseDelayMs ?? 500;
    this.lastSize = 0;
    /** @type {Promise<void> | null} */
    this.refreshing = null;
    /** @type {{status: number, waitedMs: number}[]} the waits of the last call (tests, status) */
    this.waits = [];
  }

  /** @param {string} username @param {string} password */
  async signIn(username, password) {
    const data = await this.send("POST", "/auth/token", { grant_type: "password", username, password }, { auth: false });
    this.store(data);
    return this.tokens;
  }

  /** @param {any} data */
  store(data) {
    this.tokens = { access_token: String(data.access_token), refresh_token: String(data.refresh_token ?? "") };
    this.onTokens(this.tokens);
  }

  /** Refresh once (concurrent callers share the one refresh: the old token rotates away). */
  async refresh() {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        const refresh = this.tokens?.refresh_token;
        if (!refresh) throw new AuthError(401, "0x8004AD03", "sign in again");
        try {
          const data = await this.send("POST", "/auth/token", { grant_type: "refresh_token", refresh_token: refresh }, { auth: false });
          this.store(data);
        } catch (error) {
          if (error instanceof ServerError && (error.status === 401 || error.status === 400)) throw unauthorised(error);
          throw error;
        }
      })().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /**
   * A JSON call with the access token; a 401 refreshes once and retries.
   * @param {string} method @param {string} path @param {unknown} [body]
   * @returns {Promise<any>}
   */
  async call(method, path, body) {
    return this.refreshingCall(() => this.send(method, path, body));
  }

  /**
   * @template T
   * @param {() => Promise<T>} send
   * @returns {Promise<T>}
   */
  async refreshingCall(send) {
    const used = this.tokens?.access_token;
    try {
      return await send();
    } catch (error) {
      if (!(error instanceof ServerError) || error.status !== 401) throw error;
      if (/disabled/.test(error.detail)) throw unauthorised(error);
    }
    if (this.tokens?.access_token === used) await this.refresh();
    try {
      return await send();
    } catch (error) {
      if (error instanceof ServerError && error.status === 401) throw unauthorised(error);
      throw error;
    }
  }

  /**
   * One request, retried on 429/503 (Retry-After) and other 5xx and network failures (backoff).
   * @param {string} method @param {string} path @param {unknown} [body]
   * @param {{auth?: boolean, headers?: Record<string, string>, raw?: BodyInit, signal?: AbortSignal,
   *   stream?: boolean, retry?: boolean}} [options]
   * @returns {Promise<any>}
   */
  async send(method, path, body, options = {}) {
    const { auth = true, retry = true } = options;
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json", ...(options.headers ?? {}) };
    if (body !== undefined && options.raw === undefined) headers["Content-Type"] = "application/json";
    if (auth) headers.Authorization = `Bearer ${this.tokens?.access_token ?? ""}`;
    this.waits = [];
    for (let attempt = 0; ; attempt += 1) {
      /** @type {Response} */
      let response;
      try {
        response = await this.fetch(this.server + path, {
          method,
          headers,
          body: options.raw !== undefined ? options.raw : body === undefined ? undefined : JSON.stringify(body),
          signal: options.signal,
          cache: "no-store",
        });
      } catch (error) {
        if (options.signal?.aborted) throw error;
        if (retry && attempt < this.retries) {
          await this.wait(0, backoff(attempt, this.baseDelayMs, this.maxWaitMs));
          continue;
        }
        throw new OfflineError(`cannot reach ${this.server}: ${/** @type {any} */ (error)?.message ?? error}`);
      }
      if (response.status === 429 || response.status >= 500) {
        const asked = retryAfter(response.headers.get("Retry-After"));
        const text = await response.text().catch(() => "");
        if (retry && attempt < this.retries) {
          const ms = asked !== null ? Math.min(asked * 1000, this.maxWaitMs) : backoff(attempt, this.baseDelayMs, this.maxWaitMs);
          await this.wait(response.status, ms);
          continue;
        }
        const { message } = parseError(response.status, text);
        if (response.status === 429) throw new OfflineError(`the server is busy (429): ${message}`, asked);
        throw new OfflineError(`the server ${response.status === 503 ? "is unavailable" : "failed"} (${response.status}): ${message}`, asked);
      }
      if (options.stream) {
        if (response.status >= 400) {
          const { code, message } = parseError(response.status, await response.text());
          throw new ServerError(response.status, code, message);
        }
        return response;
      }
      /** @type {ArrayBuffer} */
      let buffer;
      try {
        buffer = await response.arrayBuffer();
      } catch (error) {
        // the connection broke while the answer arrived: like a lost answer
        if (retry && attempt < this.retries) {
          await this.wait(0, backoff(attempt, this.baseDelayMs, this.maxWaitMs));
          continue;
        }
        throw new OfflineError(`the answer from ${this.server} broke off: ${/** @type {any} */ (error)?.message ?? error}`);
      }
      this.lastSize = buffer.byteLength;
      const text = new TextDecoder().decode(buffer);
      if (response.status >= 400) {
        const { code, message } = parseError(response.status, text);
        throw new ServerError(response.status, code, message);
      }
      return text ? JSON.parse(text) : null;
    }
  }

  /** @param {number} status @param {number} ms */
  async wait(status, ms) {
    this.waits.push({ status, waitedMs: ms });
    await sleep(ms);
  }
}

/** @param {number} status @param {string} text */
function parseError(status, text) {
  try {
    const err = JSON.parse(text).error;
    return { code: String(err.code), message: String(err.message) };
  } catch {
    return { code: String(status), message: text.slice(0, 200) };
  }
}

/** @param {ServerError} error */
export function unauthorised(error) {
  if (/disabled/.test(error.detail)) return new AccessRemovedError(error.status, error.code, error.detail);
  return new AuthError(error.status, error.code, error.detail);
}
