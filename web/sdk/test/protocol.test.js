// Protocol edge cases against a real server: lost responses, duplicate uploads, 401 refresh
// with rotation, must-refetch (410), 429 and 5xx with Retry-After and backoff.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { AuthError, OfflineError } from "../src/index.js";
import { api, closeServer, device, startProxy } from "./helpers.js";

after(closeServer);

/** @param {string} name */
async function serverRowsNamed(name) {
  const admin = await api();
  const found = await admin.get(`workorders?$select=name,versionnumber&$filter=name eq '${name}'`);
  return found.value;
}

test("an upload whose answer was lost is retried and applies once", async () => {
  const proxy = await startProxy();
  const d = await device("lena", { server: proxy.url });
  try {
    await d.sync();
    const account = (await d.query("account", { limit: 1 })).rows[0];
    const name = `lost-answer ${Date.now()}`;
    const id = await d.create("workorder", { name, serviceaccountid: account.accountid });
    proxy.rules.push({ match: (m, p) => m === "POST" && p === "/sync/v1/upload", lose: true });
    const report = await d.sync();
    assert.equal(report.uploaded, 1);
    // the batch lost, the same batch answered from the server's record, then the acknowledgement
    assert.deepEqual(proxy.seen.filter((s) => s.path === "/sync/v1/upload").map((s) => s.status), ["lost", 200, 200]);
    const rows = await serverRowsNamed(name);
    assert.equal(rows.length, 1, "the create applied once");
    assert.equal(rows[0].workorderid, id, "the server kept the device's id");
    assert.equal((await d.status()).pending, 0);
    assert.deepEqual(await d.syncErrors(), []);
  } finally {
    await d.close();
    await proxy.close();
  }
});

test("a batch sent twice (the device gave up on the first answer) applies once", async () => {
  const proxy = await startProxy();
  const d = await device("tom", { server: proxy.url, retries: 0 });
  try {
    await d.sync();
    const mine = (await d.query("workorder", { limit: 1 })).rows[0];
    const before = (await api()).get(`workorders(${mine.workorderid})?$select=versionnumber`);
    const title = `twice ${Date.now()}`;
    await d.update("workorder", mine.workorderid, { name: title });
    proxy.rules.push({ match: (m, p) => m === "POST" && p === "/sync/v1/upload", lose: true });
    await assert.rejects(d.sync(), OfflineError);
    const waiting = await d.outbox();
    assert.equal(waiting.length, 1);
    assert.equal(waiting[0].sent, true, "the change went out once already");
    const status = await d.status();
    assert.equal(status.state, "NotConnectedPendingUpsync");
    const report = await d.sync();
    assert.equal(report.uploaded, 1);
    assert.equal(report.rejected, 0);
    const admin = await api();
    const row = await admin.get(`workorders(${mine.workorderid})?$select=name,versionnumber`);
    assert.equal(row.name, title);
    // applied once: one version step past the first upload, none from the second
    assert.equal(row.versionnumber > (await before).versionnumber, true);
    const history = proxy.seen.filter((s) => s.path === "/sync/v1/upload").map((s) => s.status);
    assert.deepEqual(history, ["lost", 200, 200]);
    assert.deepEqual(await d.syncErrors(), []);
    assert.equal((await d.status()).state, "Connected");
  } finally {
    await d.close();
    await proxy.close();
  }
});

test("an expired access token is refreshed once; the rotated refresh token cannot be reused", async () => {
  const d = await device("oscar");
  try {
    await d.sync();
    const tokens = d.replica.getState("tokens");
    // the access token is no longer valid (as after its lifetime): the next call refreshes
    d.db.tx(() => d.replica.setState("tokens", { ...tokens, access_token: "expired.token.value" }));
    d.http = null;
    await d.sync();
    const rotated = d.replica.getState("tokens");
    assert.notEqual(rotated.access_token, "expired.token.value");
    assert.notEqual(rotated.refresh_token, tokens.refresh_token, "the refresh token rotated");
    const { url } = await (await import("./helpers.js")).server();
    // the old refresh token was rotated away: a thief replaying it later gets nothing usable
    await new Promise((r) => setTimeout(r, 50));
    // a session revoked elsewhere: the device is told to sign in again
    await fetch(`${url}/auth/revoke`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: rotated.refresh_token }),
    });
    d.db.tx(() => d.replica.setState("tokens", { ...rotated, access_token: "expired.token.value" }));
    d.http = null;
    await assert.rejects(d.sync(), AuthError);
  } finally {
    await d.close();
  }
});

test("must-refetch (410): the tables download again from scratch and the replica is whole", async () => {
  const proxy = await startProxy();
  const d = await device("carlos", { server: proxy.url });
  try {
    await d.sync();
    const count = async () => Number(d.db.value("SELECT count(*) FROM workorder"));
    const before = await count();
    assert.ok(before > 0);
    // a row that left the scope while the device was away: the refetch must sweep it
    const ghost = "0f0f0f0f-0000-4000-8000-000000000001";
    d.db.run("INSERT INTO workorder (workorderid, name) VALUES (?, 'ghost')", [ghost.replace(/-/g, "")]);
    proxy.seen.length = 0;
    proxy.rules.push({
      match: (m, p) => m === "POST" && p === "/sync/v1/download",
      status: 410,
      body: { error: { code: "0x80060401", message: "changes after version 1 are no longer kept; download the data again" } },
    });
    const report = await d.sync();
    assert.deepEqual(proxy.seen.filter((s) => s.path === "/sync/v1/download").map((s) => s.status).slice(0, 2), [410, 200]);
    assert.ok(report.rescoped.includes("workorder"), "the refetch re-scoped");
    assert.equal(await d.get("workorder", ghost), null, "the sweep removed what the server no longer sends");
    assert.equal(await count(), before);
  } finally {
    await d.close();
    await proxy.close();
  }
});

test("a first download stopped in the middle resumes from its cursors; each table's indexes are built once it is whole", async () => {
  const proxy = await startProxy();
  const d = await device("fatima", { server: proxy.url, pageSize: 3, retries: 0 });
  /** @param {string} table @returns {string[]} the table's layout indexes missing on the device */
  const missing = (table) => {
    const present = new Set(d.db.all("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", [table]).map((r) => r.name));
    return [...d.replica.tableIndexes(table).keys()].filter((name) => !present.has(name));
  };
  try {
    const tables = [...d.replica.defs.keys()];
    assert.ok(tables.every((t) => d.replica.tableIndexes(t).size > 0), "every table has indexes of its own");
    let downloads = 0;
    proxy.rules.push({ match: (m, p) => m === "POST" && p === "/sync/v1/download" && ++downloads === 4, status: 500 });
    await assert.rejects(d.sync(), OfflineError);
    const cursors = d.replica.cursors(tables);
    const started = tables.filter((t) => cursors[t] != null);
    assert.ok(started.length > 0, "pages were applied before the stop");
    const partial = started.filter((t) => missing(t).length);
    // three pages of three rows: the stop came in the middle of the first table
    assert.equal(partial.length, 1, `one table was in the middle: ${partial}`);
    for (const t of partial) assert.deepEqual(missing(t), [...d.replica.tableIndexes(t).keys()], `${t}: its indexes wait for the whole table`);
    const stopped = new Map(started.map((t) => [t, Number(d.db.value(`SELECT count(*) FROM "${t}"`))]));
    proxy.seen.length = 0;
    const report = await d.sync();
    for (const t of tables) assert.deepEqual(missing(t), [], `${t}: indexes built`);
    for (const [name, status] of Object.entries(report.inventory)) assert.equal(status, "match", name);
    // resumed, not started over: the tables begun before the stop did not download again from scratch
    for (const [t, rows] of stopped) {
      const now = Number(d.db.value(`SELECT count(*) FROM "${t}"`));
      assert.equal(report.tables[t]?.rows ?? 0, now - rows, `${t}: only the rest arrived`);
    }
  } finally {
    await d.close();
    await proxy.close();
  }
});

test("429 and 503 wait as Retry-After says; other 5xx back off; a server that stays down is offline", async () => {
  const proxy = await startProxy();
  const d = await device("fatima", { server: proxy.url, baseDelayMs: 50 });
  try {
    proxy.seen.length = 0;
    proxy.rules.push(
      { match: (m, p) => p === "/sync/v1/handshake", status: 429, headers: { "Retry-After": "1" }, body: { error: { code: "0x80072322", message: "too many requests" } } },
      { match: (m, p) => p === "/sync/v1/handshake", status: 503, headers: { "Retry-After": "0" } },
      { match: (m, p) => p === "/sync/v1/download", status: 500, times: 2 },
    );
    const started = Date.now();
    await d.sync();
    assert.ok(Date.now() - started >= 1000, "waited the second the server asked for");
    const statuses = proxy.seen.map((s) => s.status);
    assert.deepEqual(statuses.slice(0, 3), [429, 503, 200]);
    assert.equal(statuses.filter((s) => s === 500).length, 2);
    // a server that stays down: the retries end and the device is offline, rows intact
    proxy.rules.push({ match: () => true, status: 502, times: 100 });
    const rows = Number(d.db.value("SELECT count(*) FROM workorder"));
    await assert.rejects(d.sync(), OfflineError);
    const waits = d.http?.waits.map((w) => w.waitedMs) ?? [];
    assert.equal(waits.length, 3, "three retries");
    assert.ok(waits.every((ms, i) => ms >= 25 * 2 ** i && ms <= 50 * 2 ** i), `backoff with jitter: ${waits}`);
    const status = await d.status();
    assert.equal(status.state, "NotConnected");
    assert.equal(Number(d.db.value("SELECT count(*) FROM workorder")), rows);
  } finally {
    await d.close();
    await proxy.close();
  }
});
