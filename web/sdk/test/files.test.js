// Files and images: attached offline in one transaction with the row and the outbox, uploaded
// in chunks with their digest before the change that references them, fetched by the other
// devices once per digest, verified, with the image's thumbnail, resumed after a broken
// download from the bytes already committed.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, test } from "node:test";

import { FieldError } from "../src/index.js";
import { closeServer, device, png, startProxy } from "./helpers.js";

after(closeServer);

/** @param {Uint8Array} bytes */
const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");

test("an image attached offline reaches another device whole, with its thumbnail", async () => {
  const a = await device("lena");
  const proxy = await startProxy();
  const b = await device("lena", { server: proxy.url }); // the same user's second device
  try {
    await a.sync();
    const me = (await a.session())?.user.id;
    const wo = (await a.query("workorder", { limit: 500 })).rows.find((w) => w.ownerid === me);
    assert.ok(wo);
    const id = String(wo.workorderid);
    const image = png(300, 200, 7);
    await assert.rejects(a.attach("workorder", id, "sitephoto", new TextEncoder().encode("not an image"), "x.txt"), FieldError);
    assert.equal((await a.outbox()).length, 0, "a refused file leaves nothing behind");
    const fid = await a.attach("workorder", id, "sitephoto", image, "site.png");
    assert.equal((await a.get("workorder", id))?.sitephoto, fid);
    const box = await a.outbox();
    assert.deepEqual(box.map((c) => c.changes), [{ sitephoto: fid }]);
    const mine = await a.file("workorder", id, "sitephoto");
    assert.equal(sha(new Uint8Array(await /** @type {Blob} */ (mine).arrayBuffer())), sha(image), "readable offline at once");
    const up = await a.sync();
    assert.equal(up.uploaded, 1);
    assert.equal(up.rejected, 0);

    // the other device: the first download breaks off after 1000 bytes, the next resumes
    proxy.rules.push({ match: (m, p) => m === "GET" && p.startsWith(`/sync/v1/files/${fid}?`) && p.includes("size=full"), cutAfter: 1000 });
    await assert.rejects(b.sync(), /broke off/);
    assert.equal(await b.file("workorder", id, "sitephoto"), null, "nothing half-fetched is shown");
    const report = await b.sync();
    assert.ok((report.files?.fetched ?? 0) >= 1);
    const ranges = proxy.seen.filter((s) => s.path.includes(`/sync/v1/files/${fid}?`) && s.path.includes("size=full")).map((s) => s.range);
    assert.equal(ranges[0], `bytes=0-${image.byteLength - 1}`);
    assert.equal(ranges[1], `bytes=1000-${image.byteLength - 1}`, "resumed from the bytes already there");
    const theirs = await b.file("workorder", id, "sitephoto");
    assert.ok(theirs);
    assert.equal(sha(new Uint8Array(await theirs.arrayBuffer())), sha(image));
    assert.equal(theirs.type, "image/png");
    const thumb = await b.file("workorder", id, "sitephoto", { thumbnail: true });
    assert.ok(thumb && thumb.size > 0, "the thumbnail came too");

    // the column cleared: the file and its blob go from both devices at their next sync
    await a.update("workorder", id, { sitephoto: null });
    await a.sync();
    await b.sync();
    assert.equal(b.db.value("SELECT count(*) FROM _fs_file WHERE fileid = ?", [fid]), 0);
    assert.equal(b.db.value("SELECT count(*) FROM _fs_blob WHERE digest = ?", [sha(image)]), 0);
  } finally {
    await a.close();
    await b.close();
    await proxy.close();
  }
});

test("a file upload whose chunk answer was lost resumes and the file arrives once", async () => {
  const proxy = await startProxy();
  const a = await device("oscar", { server: proxy.url });
  try {
    await a.sync();
    const me = (await a.session())?.user.id;
    const wo = (await a.query("workorder", { limit: 500 })).rows.find((w) => w.ownerid === me);
    assert.ok(wo);
    const report = new Uint8Array(300_000).map((_, i) => (i * 31) & 0xff);
    const fid = await a.attach("workorder", String(wo.workorderid), "servicereport", report, "report.bin");
    proxy.rules.push({ match: (m, p) => m === "PUT" && p.startsWith("/sync/v1/files/uploads/"), lose: true });
    const up = await a.sync();
    assert.equal(up.uploaded, 1);
    assert.equal(up.rejected, 0);
    const puts = proxy.seen.filter((s) => s.method === "PUT").map((s) => s.status);
    assert.equal(puts[0], "lost");
    const admin = await (await import("./helpers.js")).api();
    const row = await admin.get(`workorders(${wo.workorderid})?$select=servicereport`);
    assert.equal(row.servicereport, fid);
  } finally {
    await a.close();
    await proxy.close();
  }
});
