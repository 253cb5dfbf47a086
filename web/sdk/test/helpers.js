// The SDK's tests run against a real `fieldsync serve` on loopback with the demo organisation.
// `tests/test_web_sdk.py` starts one (SQLite or PostgreSQL) and passes FIELDSYNC_SDK_SERVER;
// without it, each test file starts its own on SQLite in a temporary directory (needs the
// `fieldsync` command, or FIELDSYNC_BIN naming it).
//
// `startProxy` puts a fault-injecting HTTP proxy between a device and the server: it can lose
// a response after the server answered (the server committed, the device sees a broken
// connection) or answer in the server's place (429, 503, 500, 410) for the requests it matches.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import zlib from "node:zlib";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { openDevice } from "../src/index.js";

export const PASSWORD = "fieldsync-demo";
export const APP = "fieldservice";

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = /** @type {net.AddressInfo} */ (srv.address()).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/** @param {string} cmd @param {string[]} args */
function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve(undefined) : reject(new Error(`${cmd} ${args.join(" ")} failed: ${err}`))));
  });
}

/** @type {Promise<{url: string, close: () => Promise<void>}> | null} */
let started = null;

/** The server under test: the harness's, or one of our own (SQLite, demo data). */
export function server() {
  started ??= (async () => {
    if (process.env.FIELDSYNC_SDK_SERVER) return { url: process.env.FIELDSYNC_SDK_SERVER.replace(/\/+$/, ""), close: async () => {} };
    const bin = process.env.FIELDSYNC_BIN ?? "fieldsync";
    const dir = mkdtempSync(join(tmpdir(), "sdk-test-"));
    await run(bin, ["demo", "--data-dir", dir]);
    const port = await freePort();
    const child = spawn(bin, ["serve", "--data-dir", dir, "--host", "127.0.0.1", "--port", String(port), "--log-level", "warning"], { stdio: "ignore" });
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 300; i += 1) {
      try {
        const r = await fetch(`${url}/health`);
        if (r.ok) break;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return {
      url,
      close: async () => {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
        rmSync(dir, { recursive: true, force: true });
      },
    };
  })();
  return started;
}

export async function closeServer() {
  if (started) await (await started).close();
  started = null;
}

/**
 * A signed-in device with the demo app selected (not yet synced).
 * @param {string} username
 * @param {Record<string, unknown>} [options] engine options (server overrides the URL)
 */
export async function device(username, options = {}) {
  const { url } = await server();
  const d = /** @type {import("../src/engine.js").Engine} */ (
    await openDevice({ server: url, baseDelayMs: 20, maxWaitMs: 2000, ...options })
  );
  await d.signIn({ username, password: PASSWORD });
  await d.selectApp(APP);
  return d;
}

/** The Web API as a user (administrators change the server's side of a test). */
export async function api(username = "admin") {
  const { url } = await server();
  const r = await fetch(`${url}/auth/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "password", username, password: PASSWORD }),
  });
  const token = (await r.json()).access_token;
  /** @param {string} method @param {string} path @param {unknown} [body] */
  const call = async (method, path, body) => {
    const res = await fetch(`${url}/api/data/v9.2/${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", Accept: "application/json", Prefer: "return=representation" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    token,
    /** @param {string} path */ get: (path) => call("GET", path),
    /** @param {string} path @param {unknown} body */ patch: (path, body) => call("PATCH", path, body),
    /** @param {string} path @param {unknown} body */ post: (path, body) => call("POST", path, body),
    /** @param {string} path */ del: (path) => call("DELETE", path),
  };
}

/**
 * @typedef {{match: (method: string, path: string) => boolean, times?: number,
 *   lose?: boolean, cutAfter?: number, status?: number, headers?: Record<string, string>,
 *   body?: unknown}} Rule
 */

/**
 * A fault-injecting proxy in front of the server; `rules` apply in order, each `times` times.
 * @returns {Promise<{url: string, rules: Rule[], seen: {method: string, path: string, status: number | string, range?: string | null}[], close: () => Promise<void>}>}
 */
export async function startProxy() {
  const upstream = new URL((await server()).url);
  /** @type {Rule[]} */
  const rules = [];
  /** @type {{method: string, path: string, status: number | string, range?: string | null}[]} */
  const seen = [];
  const proxy = http.createServer((req, res) => {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const rule = rules.find((r) => (r.times ?? 1) > 0 && r.match(method, path));
    if (rule) rule.times = (rule.times ?? 1) - 1;
    if (rule && rule.status) {
      req.resume();
      seen.push({ method, path, status: rule.status });
      const body = JSON.stringify(rule.body ?? { error: { code: "0x80040216", message: `injected ${rule.status}` } });
      res.writeHead(rule.status, { "Content-Type": "application/json", ...(rule.headers ?? {}) });
      res.end(body);
      return;
    }
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, method, path, headers: req.headers },
      (answer) => {
        if (rule?.lose) {
          // the server answered (and committed); the device never hears it
          answer.resume();
          answer.on("end", () => {
            seen.push({ method, path, status: "lost" });
            req.socket.destroy();
          });
          return;
        }
        seen.push({ method, path, status: answer.statusCode ?? 0, range: req.headers.range ?? null });
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (rule?.cutAfter !== undefined) {
          // the connection breaks after part of the body
          let left = rule.cutAfter;
          answer.on("data", (/** @type {Buffer} */ chunk) => {
            if (left <= 0) return;
            res.write(chunk.subarray(0, left));
            left -= chunk.length;
            if (left <= 0) setTimeout(() => req.socket.destroy(), 50);
          });
          return;
        }
        answer.pipe(res);
      },
    );
    forward.on("error", () => req.socket.destroy());
    res.on("close", () => forward.destroy()); // the device went: so does the upstream stream
    req.pipe(forward);
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", () => resolve(undefined)));
  const port = /** @type {net.AddressInfo} */ (proxy.address()).port;
  return {
    url: `http://127.0.0.1:${port}`,
    rules,
    seen,
    close: () =>
      new Promise((resolve) => {
        proxy.closeAllConnections();
        proxy.close(() => resolve(undefined));
      }),
  };
}

/**
 * Wait until `check` holds (polling), or fail after `ms`.
 * @param {() => Promise<boolean> | boolean} check @param {number} [ms] @param {string} [what]
 */
export async function eventually(check, ms = 15000, what = "the condition") {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A small valid PNG (RGB, one colour per row), so that the server can make a thumbnail.
 * @param {number} width @param {number} height @param {number} seed
 */
export function png(width, height, seed = 1) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  /** @param {Buffer} buf */
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  /** @param {string} type @param {Buffer} data */
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8;
  header[9] = 2;
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const at = y * (width * 3 + 1) + 1 + x * 3;
      raw[at] = (x * seed) & 0xff;
      raw[at + 1] = (y * 7 + seed) & 0xff;
      raw[at + 2] = (x ^ y ^ seed) & 0xff;
    }
  }
  return new Uint8Array(
    Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk("IHDR", header),
      chunk("IDAT", zlib.deflateSync(raw, { level: 0 })),
      chunk("IEND", Buffer.alloc(0)),
    ]),
  );
}
