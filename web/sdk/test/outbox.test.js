// The outbox and what comes back: folding of unsent edits, changed columns only with the base
// version, bad input refused with nothing written, rejected changes reverted in the same
// transaction that drops them (kept as sync errors with the sent and reverted values), rows
// leaving the scope on re-scope, and the purge when access is removed.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { AccessRemovedError, FieldError, NotFoundError } from "../src/index.js";
import { APP, api, closeServer, device } from "./helpers.js";

after(closeServer);

test("unsent edits of a row fold into one change with only the changed columns and the base version", async () => {
  const d = await device("lena");
  try {
    await d.sync();
    const wo = (await d.query("workorder", { limit: 1 })).rows[0];
    const version = /** @type {number} */ ((await d.get("workorder", /** @type {string} */ (wo.workorderid)))?.versionnumber);
    await d.update("workorder", String(wo.workorderid), { name: "first" });
    await d.update("workorder", String(wo.workorderid), { priority: 3 });
    await d.update("workorder", String(wo.workorderid), { name: "second" });
    const box = await d.outbox();
    assert.equal(box.length, 1);
    assert.deepEqual(box[0].changes, { name: "second", priority: 3 });
    assert.equal(box[0].baseVersion, version);
    // a create and a delete before any upload: nothing to send
    const account = (await d.query("account", { limit: 1 })).rows[0];
    const temp = await d.create("workorder", { name: "temp", serviceaccountid: account.accountid });
    await d.update("workorder", temp, { priority: 1 });
    assert.equal((await d.outbox()).length, 2);
    await d.remove("workorder", temp);
    assert.equal((await d.outbox()).length, 1);
    assert.equal(await d.get("workorder", temp), null);
    const report = await d.sync();
    assert.equal(report.uploaded, 1);
    const admin = await api();
    const row = await admin.get(`workorders(${wo.workorderid})?$select=name,priority`);
    assert.equal(row.name, "second");
    assert.equal(row.priority, 3);
  } finally {
    await d.close();
  }
});

test("bad input is named at its column and changes nothing", async () => {
  const d = await device("lena");
  try {
    await d.sync();
    const wo = (await d.query("workorder", { limit: 1 })).rows[0];
    const id = String(wo.workorderid);
    const before = await d.get("workorder", id);
    /** @type {[Record<string, unknown>, string][]} */
    const cases = [
      [{ priority: 99 }, "priority"],
      [{ name: "x".repeat(101) }, "name"],
      [{ scheduledstart: "yesterday-ish" }, "scheduledstart"],
      [{ nosuchcolumn: 1 }, "nosuchcolumn"],
      [{ createdon: "2020-01-01T00:00:00Z" }, "createdon"],
      [{ serviceaccountid: "not-a-guid" }, "serviceaccountid"],
      [{ estimatedduration: 1.5 }, "estimatedduration"],
    ];
    for (const [values, column] of cases) {
      await assert.rejects(d.update("workorder", id, values), (e) => e instanceof FieldError && e.column === column);
    }
    await assert.rejects(d.create("workorder", { priority: 2 }), (e) => e instanceof FieldError && e.column === "name");
    await assert.rejects(d.update("workorder", "0f0f0f0f-0000-4000-8000-00000000abcd", { name: "x" }), NotFoundError);
    assert.deepEqual(await d.get("workorder", id), before);
    assert.equal((await d.outbox()).length, 0);
  } finally {
    await d.close();
  }
});

test("a rejected change is reverted to the server's row and listed with the values sent and reverted to", async () => {
  const d = await device("lena");
  try {
    await d.sync();
    const me = (await d.session())?.user.id;
    const accounts = (await d.query("account", { limit: 500 })).rows;
    const other = accounts.find((a) => a.owneridtype === "systemuser" && a.ownerid !== me);
    assert.ok(other, "an account of another user is on the device (read through the work orders)");
    const id = String(other.accountid);
    /** @type {string[][]} */
    const changes = [];
    d.subscribe((e) => {
      if (e.type === "changed") changes.push(e.tables);
    });
    await d.update("account", id, { telephone1: "+44 161 496 0999" });
    assert.equal((await d.get("account", id))?.telephone1, "+44 161 496 0999", "the local write shows at once");
    const report = await d.sync();
    assert.equal(report.rejected, 1);
    assert.equal((await d.get("account", id))?.telephone1, other.telephone1, "reverted");
    const [error] = await d.syncErrors();
    assert.equal(error.table, "account");
    assert.equal(error.recordId, id);
    assert.equal(error.operation, "update");
    assert.match(error.message, /write privilege/);
    assert.deepEqual(error.sent, { telephone1: "+44 161 496 0999" });
    assert.equal(error.reverted?.telephone1, other.telephone1);
    assert.equal((await d.outbox()).length, 0);
    assert.ok(changes.some((t) => t.includes("account")), "observers heard of the revert");
    assert.equal((await d.status()).state, "ConnectedWithWarning");
    await d.dismissSyncError(error.id);
    assert.equal((await d.status()).state, "Connected");
  } finally {
    await d.close();
  }
});

test("a work order reassigned away leaves the device at the next sync", async () => {
  const d = await device("jake");
  const admin = await api();
  try {
    await d.sync();
    const me = (await d.session())?.user.id;
    const mine = (await d.query("workorder", { limit: 500 })).rows.find((w) => w.ownerid === me);
    assert.ok(mine);
    const lena = (await admin.get("systemusers?$select=systemuserid&$filter=domainname eq 'lena'")).value[0].systemuserid;
    await admin.patch(`workorders(${mine.workorderid})`, { "ownerid@odata.bind": `/systemusers(${lena})` });
    await d.sync();
    assert.equal(await d.get("workorder", String(mine.workorderid)), null);
    await admin.patch(`workorders(${mine.workorderid})`, { "ownerid@odata.bind": `/systemusers(${me})` });
    await d.sync();
    assert.notEqual(await d.get("workorder", String(mine.workorderid)), null, "and comes back when reassigned back");
  } finally {
    await d.close();
  }
});

test("access removed: unsent changes become sync errors and the app's data is purged", async () => {
  const d = await device("tom");
  const admin = await api();
  const app = (await admin.get(`appmodules?$select=appmoduleid&$filter=uniquename eq '${APP}'`)).value[0].appmoduleid;
  try {
    await d.sync();
    const wo = (await d.query("workorder", { limit: 1 })).rows[0];
    await d.update("workorder", String(wo.workorderid), { name: "never sent" });
    await admin.patch(`appmodules(${app})`, { canbeusedoffline: false });
    await assert.rejects(d.sync(), AccessRemovedError);
    await assert.rejects(d.tables(), /not set up/);
    assert.equal(d.db.value("SELECT count(*) FROM sqlite_master WHERE name = 'workorder'"), 0, "the table is gone");
    assert.equal((await d.outbox()).length, 0);
    const [error] = await d.syncErrors();
    assert.deepEqual(error.sent, { name: "never sent" });
    assert.match(error.message, /^not uploaded: /);
  } finally {
    await admin.patch(`appmodules(${app})`, { canbeusedoffline: true });
    await d.close();
  }
});

test("sign-out wipes rows, outbox, errors and tokens; another user may then sign in", async () => {
  const d = await device("oscar");
  try {
    await d.sync();
    const wo = (await d.query("workorder", { limit: 1 })).rows[0];
    await d.update("workorder", String(wo.workorderid), { name: "left behind" });
    await assert.rejects(d.signIn({ username: "lena", password: "fieldsync-demo" }), /sign out first/);
    await d.signOut();
    assert.equal(await d.session(), null);
    assert.equal((await d.outbox()).length, 0);
    assert.equal(d.db.value("SELECT count(*) FROM _fs_state WHERE key IN ('tokens', 'user', 'app')"), 0);
    await d.signIn({ username: "lena", password: "fieldsync-demo" });
    await d.selectApp(APP);
    await d.sync();
    assert.ok((await d.query("workorder", { limit: 1 })).rows.length);
  } finally {
    await d.close();
  }
});

test("storage full: the write fails with QuotaError and nothing is half-written", async () => {
  const { QuotaError } = await import("../src/index.js");
  const d = await device("lena");
  try {
    await d.sync();
    const me = (await d.session())?.user.id;
    const wo = (await d.query("workorder", { limit: 500 })).rows.find((w) => w.ownerid === me);
    assert.ok(wo);
    const id = String(wo.workorderid);
    const before = await d.get("workorder", id);
    // the database may not grow any more (as a browser's quota for the origin)
    const pages = Number(d.db.value("PRAGMA page_count"));
    d.db.exec(`PRAGMA max_page_count = ${pages + 2}`);
    const big = new Uint8Array(2_000_000).map((_, i) => i & 0xff);
    await assert.rejects(d.attach("workorder", id, "servicereport", big, "big.bin"), QuotaError);
    assert.deepEqual(await d.get("workorder", id), before, "the row is as it was");
    assert.equal((await d.outbox()).length, 0, "no change waits");
    assert.equal(d.db.value("SELECT count(*) FROM _fs_file"), 0, "no file facts");
    assert.equal(d.db.value("SELECT count(*) FROM _fs_blob_part"), 0, "no bytes");
    d.db.exec("PRAGMA max_page_count = 1073741823");
    await d.update("workorder", id, { name: "after the quota" });
    assert.equal((await d.outbox()).length, 1, "writes work again once there is room");
  } finally {
    await d.close();
  }
});
