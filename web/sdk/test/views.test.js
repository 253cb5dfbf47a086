// Views on the replica walk an index in their order: the handshake's indexes are built once
// a download is in, the ones no view asks for go, and an index alone never rebuilds a table.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { closeServer, device } from "./helpers.js";

after(closeServer);

/** @param {any} d */
const built = (d) => new Set(d.db.all("SELECT name FROM sqlite_master WHERE type = 'index' AND substr(name, 1, 4) = 'ixv_'").map((/** @type {any} */ r) => String(r.name)));

test("a view's first page is read through its index, with the server's rows", async () => {
  const d = await device("carlos", { tickMs: 60_000 });
  try {
    await d.sync();
    const handshake = d.replica.handshake;
    const view = handshake.views.find((/** @type {any} */ v) => v.table === "workorder" && v.sqlite);
    assert.ok(view, "the app has a work order view");
    assert.ok(view.sqlite.indexes.length > 0);
    const names = built(d);
    for (const statement of [...view.sqlite.indexes, ...handshake.sqlite.workorder.indexes]) {
      const name = /IF NOT EXISTS "?(ixv_\w+)"?/.exec(statement)?.[1];
      assert.ok(name && names.has(name), `${statement} was built`);
    }
    const params = { ...view.sqlite.params, search: null, limit: 5, offset: 0 };
    const plan = d.db.all(`EXPLAIN QUERY PLAN ${view.sqlite.sql}`, params).map((/** @type {any} */ r) => String(r.detail)).join(" ");
    assert.doesNotMatch(plan, /TEMP B-TREE/);
    assert.match(plan, /USING INDEX ixv_workorder_/);
    const all = (await d.query("workorder", { view: view.id ?? view.name, limit: 1000 })).rows.map((r) => r.workorderid);
    const page = (await d.query("workorder", { view: view.id ?? view.name, limit: 5, offset: 2 })).rows.map((r) => r.workorderid);
    assert.deepEqual(page, all.slice(2, 7));
    // an index no view asks for any more goes; one only the indexes changed rebuilds no table
    d.db.exec('CREATE INDEX "ixv_workorder_stale" ON workorder (priority)');
    const rows = Number(d.db.value("SELECT count(*) FROM workorder"));
    assert.equal(d.replica.buildIndexes(), 0);
    assert.ok(!built(d).has("ixv_workorder_stale"));
    const changed = structuredClone(handshake);
    changed.sqlite.workorder.indexes = [];
    assert.deepEqual(d.replica.adopt(changed), []);
    assert.equal(Number(d.db.value("SELECT count(*) FROM workorder")), rows);
    d.replica.buildIndexes();
    const byName = /IF NOT EXISTS "?(ixv_\w+)"?/.exec(handshake.sqlite.workorder.indexes[0])?.[1];
    const viewsWant = handshake.views.some((/** @type {any} */ v) => (v.sqlite?.indexes ?? []).some((/** @type {string} */ s) => byName && s.includes(byName)));
    assert.equal(built(d).has(String(byName)), viewsWant);
  } finally {
    await d.close();
  }
});
