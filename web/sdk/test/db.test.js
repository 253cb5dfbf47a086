// The replica's SQLite layer on its own (in memory): many rows through the C binding path,
// and the synchronous SHA-256 the inventory uses.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";

import { Database } from "../src/db.js";
import { sha256, sha256Text } from "../src/sha256.js";

test("many rows keep every value's type and bytes", async () => {
  const db = await Database.open({ storage: "memory" });
  try {
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, a, b TEXT, c INTEGER, d BLOB)");
    const big = "é€𝄞 ".repeat(20000); // grows the scratch buffer past its first size
    const rows = [
      [1, null, "", 0, new Uint8Array([])],
      [2, 2 ** 31, "plain", -(2 ** 31), new Uint8Array([0, 1, 255])],
      [3, Number.MAX_SAFE_INTEGER, big, 1, null],
      [4, 0.1, "ünïcödé and \u0000 inside", 2n ** 62n, undefined],
      [5, -1.5e300, "short again", true, randomBytes(70000)],
      [6, 9007199254740993n, "x".repeat(10), false, null],
    ];
    db.tx(() => db.many("INSERT INTO t (id, a, b, c, d) VALUES (?, ?, ?, ?, ?)", /** @type {any} */ (rows)));
    const got = db.all("SELECT id, quote(a) AS a, typeof(a) AS ta, hex(b) AS b, c, typeof(c) AS tc, typeof(d) AS td, hex(d) AS d FROM t ORDER BY id");
    assert.equal(got.length, rows.length);
    const expect = [
      ["NULL", "null", "", 0, new Uint8Array([])],
      ["2147483648", "integer", "plain", -(2 ** 31), new Uint8Array([0, 1, 255])],
      ["9007199254740991", "integer", big, 1, null],
      ["0.1", "real", "ünïcödé and \u0000 inside", 2n ** 62n, null],
      ["-1.5e+300", "real", "short again", 1, new Uint8Array(/** @type {Uint8Array} */ (rows[4][4]))],
      ["9007199254740993", "integer", "xxxxxxxxxx", 0, null],
    ];
    got.forEach((row, i) => {
      const [a, ta, b, c, d] = expect[i];
      assert.equal(row.ta, ta, `row ${i + 1}: type of a`);
      assert.equal(row.a, a, `row ${i + 1}: a`);
      assert.equal(row.b, Buffer.from(/** @type {string} */ (b), "utf8").toString("hex").toUpperCase(), `row ${i + 1}: b`);
      assert.equal(BigInt(row.c), BigInt(c), `row ${i + 1}: c`);
      assert.equal(row.tc, "integer");
      assert.equal(row.td, d == null ? "null" : "blob", `row ${i + 1}: type of d`);
      assert.equal(row.d, d == null ? "" : Buffer.from(/** @type {Uint8Array} */ (d)).toString("hex").toUpperCase(), `row ${i + 1}: d`);
    });
  } finally {
    db.close();
  }
});

test("a failing row stops the batch and the transaction leaves nothing", async () => {
  const db = await Database.open({ storage: "memory" });
  try {
    db.exec("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL)");
    assert.throws(
      () => db.tx(() => db.many("INSERT INTO t (id, n) VALUES (?, ?)", [["a", 1], ["b", null], ["c", 3]])),
      /NOT NULL/,
    );
    assert.equal(db.value("SELECT count(*) FROM t"), 0);
    assert.throws(() => db.many("INSERT INTO t (id, n) VALUES (?, ?)", /** @type {any} */ ([["d", {}]])), TypeError);
    assert.throws(() => db.many("INSERT INTO t (id, n) VALUES (?, ?)", [["e", 2n ** 64n]]), RangeError);
    // the statement and its buffer were released: the next batch goes through
    db.tx(() => db.many("INSERT INTO t (id, n) VALUES (?, ?)", [["f", 1], ["g", 2]]));
    assert.equal(db.value("SELECT count(*) FROM t"), 2);
  } finally {
    db.close();
  }
});

test("SHA-256 is the standard's, for every length across block edges and for any text", () => {
  for (let n = 0; n < 300; n += 1) {
    const bytes = randomBytes(n);
    const ours = Buffer.from(sha256(bytes).slice().buffer).swap32().toString("hex");
    assert.equal(ours, createHash("sha256").update(bytes).digest("hex"), `length ${n}`);
  }
  for (const text of ["", "abc", "0a1b2c3d-0000-4000-8000-000000000001:42", "ünï€𝄞".repeat(40)]) {
    const ours = Buffer.from(sha256Text(text).slice().buffer).swap32().toString("hex");
    assert.equal(ours, createHash("sha256").update(text, "utf8").digest("hex"), text);
  }
});
