// The device's inventory, receipts and remote wipe: the checksum equals the Python device's
// (the protocol's test vectors), a synced device matches, a tampered replica is reported as a
// mismatch and healed in the same sync, the purge receipt reaches the server after access ends
// (kept and sent before the next handshake when it could not be delivered), and a device an
// administrator marked wipes itself and acknowledges with the wipe receipt.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { AccessRemovedError, DeviceWipedError } from "../src/index.js";
import { Database } from "../src/db.js";
import { inventoryChecksum, tableChecksum } from "../src/inventory.js";
import { APP, api, closeServer, device, server, startProxy } from "./helpers.js";

after(closeServer);

/** The server's administration API (`/admin`) as the demo administrator. */
async function adminApi() {
  const { url } = await server();
  const { token } = await api();
  /** @param {string} method @param {string} path */
  return async (method, path) => {
    const res = await fetch(`${url}/admin/${path}`, { method, headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} /admin/${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  };
}

test("the checksum is the protocol's: the Python device's test vectors", async () => {
  const one = ["00000000-0000-4000-8000-000000000001", 7];
  const two = ["00000000-0000-4000-8000-000000000002", 12];
  assert.deepEqual(await inventoryChecksum([]), { rows: 0, checksum: "0000000000000000" });
  assert.deepEqual(await inventoryChecksum([/** @type {[string, number]} */ (one)]), { rows: 1, checksum: "45e031f23d2bdc01" });
  const both = { rows: 2, checksum: "01dae0ba746d08fa" };
  assert.deepEqual(await inventoryChecksum(/** @type {[string, number][]} */ ([one, two])), both);
  // any order, the stored form (32 hex digits, upper case too) and a numeric string: the same
  assert.deepEqual(await inventoryChecksum([["00000000000040008000000000000002", "12"], ["00000000000040008000000000000001".toUpperCase(), 7]]), both);
  // 1000 rows (a third without a version), as the Python device computes them
  /** @type {[string, number | null][]} */
  const many = [];
  for (let i = 0n; i < 1000n; i += 1n) {
    const id = ((i * 0x9e3779b97f4a7c15n) % (1n << 128n)).toString(16).padStart(32, "0");
    many.push([id, i % 3n ? Number(i * i) : null]);
  }
  assert.deepEqual(await inventoryChecksum(many), { rows: 1000, checksum: "420d8f4d104a6897" });
});

test("a stored table's checksum, read in chunks as SQLite writes it, is the protocol's", async () => {
  const db = await Database.open({ storage: "memory" });
  try {
    db.exec("CREATE TABLE t (tid CHAR(32) PRIMARY KEY, versionnumber BIGINT)");
    /** @type {[string, number | null][]} */
    const rows = [];
    for (let i = 0n; i < 45_001n; i += 1n) {
      // more than two chunks; ids in both cases; a third without a version; big versions
      const hex = ((i * 0x9e3779b97f4a7c15n) % (1n << 128n)).toString(16).padStart(32, "0");
      rows.push([i % 7n ? hex : hex.toUpperCase(), i % 3n ? Number((i * i * 1_000_003n) % (1n << 53n)) : null]);
    }
    db.tx(() => db.many("INSERT INTO t (tid, versionnumber) VALUES (?, ?)", rows));
    assert.deepEqual(tableChecksum(db, "t", "tid"), await inventoryChecksum(rows));
    db.exec("DELETE FROM t");
    assert.deepEqual(tableChecksum(db, "t", "tid"), { rows: 0, checksum: "0000000000000000" });
    db.tx(() => db.many("INSERT INTO t (tid, versionnumber) VALUES (?, ?)", [["00000000000040008000000000000001", 7], ["00000000-0000-4000-8000-000000000002", 12]]));
    assert.deepEqual(tableChecksum(db, "t", "tid"), { rows: 2, checksum: "01dae0ba746d08fa" });
  } finally {
    db.close();
  }
});

test("a synced device matches; a tampered table is a mismatch, healed in the same sync", async () => {
  const d = await device("lena");
  try {
    const first = await d.sync();
    const tables = Object.keys(first.inventory);
    assert.ok(tables.includes("contact") && tables.includes("workorder"), JSON.stringify(first.inventory));
    for (const [name, status] of Object.entries(first.inventory)) assert.equal(status, "match", name);
    const kept = d.replica.getState("inventory");
    assert.deepEqual(Object.keys(kept).sort(), [...tables].sort(), "the counts are kept with their cursors");
    const contact = (await d.query("contact", { limit: 1 })).rows[0];
    const id = String(contact.contactid);
    const stored = d.replica.storedId("contact", id);
    d.db.run('DELETE FROM "contact" WHERE contactid = ?', [stored]);
    // the cursor did not move: the kept count is reported, no row is read
    const again = await d.sync();
    assert.equal(again.inventory.contact, "match");
    assert.equal(await d.get("contact", id), null);
    d.inventory.forget(["contact"]); // what a device that lost rows computes
    const healed = await d.sync();
    assert.equal(healed.inventory.contact, "mismatch");
    assert.deepEqual(healed.rescoped, ["contact"]);
    assert.notEqual(await d.get("contact", id), null, "the re-scope in the same sync brought the row back");
    const settled = await d.sync();
    for (const [name, status] of Object.entries(settled.inventory)) assert.equal(status, "match", name);
    const admin = await adminApi();
    const listed = await admin("GET", `devices/${d.deviceId}`);
    assert.equal(listed.inventory, "match");
    const contactSeen = listed.tables.find((/** @type {any} */ t) => t.table === "contact");
    assert.equal(contactSeen.mismatches, 1, "the server recorded the mismatch");
    assert.equal(contactSeen.rescoped, 1);
    for (const t of listed.tables) {
      const mine = d.replica.getState("inventory")[t.table];
      assert.deepEqual([mine.rows, mine.checksum], [t.expected_rows, t.expected_checksum], t.table);
    }
    // a table with a change in the outbox is not reported
    const wo = (await d.query("workorder", { limit: 1 })).rows[0];
    await d.update("workorder", String(wo.workorderid), { name: "not the server's yet" });
    const held = await d.inventory.held(tables);
    assert.ok(!("workorder" in held));
    assert.ok("contact" in held);
  } finally {
    await d.close();
  }
});

test("access removed: the purge receipt is kept while undelivered and sent before the next handshake", async () => {
  const proxy = await startProxy();
  const d = await device("tom", { server: proxy.url, retries: 1 });
  const rest = await api();
  const admin = await adminApi();
  const app = (await rest.get(`appmodules?$select=appmoduleid&$filter=uniquename eq '${APP}'`)).value[0].appmoduleid;
  let restored = false;
  try {
    await d.sync();
    const counts = d.inventory.counts();
    const wo = (await d.query("workorder", { limit: 1 })).rows[0];
    await d.update("workorder", String(wo.workorderid), { name: "never sent" });
    await rest.patch(`appmodules(${app})`, { canbeusedoffline: false });
    proxy.rules.push({ match: (m, p) => p.startsWith("/sync/v1/receipt"), status: 503, times: 10 });
    await assert.rejects(d.sync(), AccessRemovedError);
    assert.equal(d.replica.handshake, null);
    assert.ok(proxy.seen.some((s) => s.path.startsWith("/sync/v1/receipt") && s.status === 503));
    assert.equal(d.replica.getState("receipt").kind, "purge", "kept for the next sync");
    assert.deepEqual((await admin("GET", `devices/${d.deviceId}`)).receipts, []);
    proxy.rules.length = 0;
    await rest.patch(`appmodules(${app})`, { canbeusedoffline: true });
    restored = true;
    await d.sync(); // the receipt goes first; the user may sync again and does, from nothing
    const order = proxy.seen.map((s) => s.path).filter((p) => p.startsWith("/sync/v1/receipt") || p.startsWith("/sync/v1/handshake"));
    assert.deepEqual(order.slice(-2), ["/sync/v1/receipt", "/sync/v1/handshake"]);
    assert.equal(d.replica.getState("receipt"), null);
    const listed = await admin("GET", `devices/${d.deviceId}`);
    assert.equal(listed.receipts.length, 1);
    assert.equal(listed.receipts[0].kind, "purge");
    assert.equal(listed.receipts[0].counts.outbox, 1);
    assert.deepEqual(listed.receipts[0].counts.tables, counts);
  } finally {
    if (!restored) await rest.patch(`appmodules(${app})`, { canbeusedoffline: true });
    await d.close();
    await proxy.close();
  }
});

test("an administrator's wipe: rows, outbox, sync errors and files go, and the wipe receipt closes it", async () => {
  const d = await device("oscar");
  const rest = await api();
  const admin = await adminApi();
  try {
    await d.sync();
    const counts = d.inventory.counts();
    const wo = (await d.query("workorder", { limit: 1 })).rows[0];
    await d.attach("workorder", String(wo.workorderid), "servicereport", new Uint8Array([1, 2, 3]), "report.bin");
    assert.ok(Number(d.db.value("SELECT count(*) FROM _fs_blob")) > 0);
    await d.update("workorder", String(wo.workorderid), { name: "never sent" });
    d.db.run(
      "INSERT INTO _fs_error (changeid, tablename, operation, recordid, code, message, errortype, sent, reverted, occurredon) VALUES ('x', 'workorder', 'update', 'y', '0', 'old', 3, '{}', NULL, '2026-01-01')",
    );
    const marked = await admin("POST", `devices/${d.deviceId}/wipe`);
    assert.equal(marked.wipe_pending ?? true, true);
    const error = await d.sync().then(
      () => assert.fail("the sync went through"),
      (/** @type {any} */ e) => e,
    );
    assert.ok(error instanceof DeviceWipedError, String(error));
    assert.equal(error.code, "0x80040F01");
    assert.equal(d.replica.handshake, null);
    assert.equal((await d.outbox()).length, 0);
    assert.equal((await d.syncErrors()).length, 0);
    assert.equal(d.db.value("SELECT count(*) FROM _fs_file"), 0);
    assert.equal(d.db.value("SELECT count(*) FROM _fs_blob"), 0);
    assert.equal(d.db.value("SELECT count(*) FROM sqlite_master WHERE name = 'workorder'"), 0);
    const row = await rest.get(`workorders(${wo.workorderid})?$select=name`);
    assert.notEqual(row.name, "never sent", "the pending change was not uploaded");
    const listed = await admin("GET", `devices/${d.deviceId}`);
    assert.equal(listed.wipe_pending, false);
    assert.equal(listed.receipts[0].kind, "wipe");
    assert.equal(listed.receipts[0].counts.outbox, 1);
    assert.ok(listed.receipts[0].counts.files >= 1, JSON.stringify(listed.receipts[0]));
    assert.deepEqual(listed.receipts[0].counts.tables, counts);
    // the device keeps its sign-in: the user still has access and syncs again from nothing
    const again = await d.sync();
    assert.ok(again.downloaded > 0);
    assert.ok((await d.query("workorder", { limit: 1 })).rows.length);
  } finally {
    await d.close();
  }
});
