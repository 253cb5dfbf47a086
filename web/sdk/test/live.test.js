// The scheduler and the live stream: a change on the server reaches the device without a
// sync call (SSE read through fetch), a lost stream reconnects with backoff and jitter, and
// automatic sync follows the profile's intervals, the user's frequency and Wi-Fi only.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { EventParser } from "../src/scheduler.js";
import { backoff } from "../src/http.js";
import { FieldError } from "../src/index.js";
import { api, closeServer, device, eventually, startProxy } from "./helpers.js";

after(closeServer);

test("a server change reaches the device through the live stream", async () => {
  const d = await device("carlos", { tickMs: 60_000 });
  try {
    await d.sync();
    const me = (await d.session())?.user.id;
    const wo = (await d.query("workorder", { limit: 500 })).rows.find((w) => w.ownerid === me);
    assert.ok(wo);
    d.scheduler.start();
    await eventually(() => d.scheduler.connects > 0, 15000, "the live stream");
    const name = `live ${Date.now()}`;
    await (await api()).patch(`workorders(${wo.workorderid})`, { name });
    await eventually(async () => (await d.get("workorder", String(wo.workorderid)))?.name === name, 15000, "the live change");
    // a local change uploads by itself too
    await d.update("workorder", String(wo.workorderid), { priority: 4 });
    await eventually(async () => (await d.status()).pending === 0, 15000, "the automatic upload");
    const row = await (await api()).get(`workorders(${wo.workorderid})?$select=priority`);
    assert.equal(row.priority, 4);
  } finally {
    await d.close();
  }
});

test("a lost live stream reconnects with backoff and jitter", async () => {
  const proxy = await startProxy();
  const d = await device("fatima", { server: proxy.url, tickMs: 60_000 });
  d.scheduler.base = 50;
  d.scheduler.cap = 400;
  try {
    await d.sync();
    proxy.rules.push({ match: (m, p) => p.startsWith("/sync/v1/live"), status: 503, times: 3 });
    d.scheduler.start();
    await eventually(() => d.scheduler.connects > 0, 15000, "the reconnect");
    assert.equal(d.scheduler.delays.length, 3);
    d.scheduler.delays.forEach((ms, i) => {
      const ceiling = Math.min(400, 50 * 2 ** i);
      assert.ok(ms >= ceiling / 2 && ms <= ceiling, `wait ${i}: ${ms} ms within [${ceiling / 2}, ${ceiling}]`);
    });
  } finally {
    await d.close();
    await proxy.close();
  }
});

test("backoff draws between half and all of the ceiling", () => {
  assert.equal(backoff(0, 100, 1000, () => 0), 50);
  assert.equal(backoff(3, 100, 1000, () => 1), 800);
  assert.equal(backoff(10, 100, 1000, () => 1), 1000);
});

test("server-sent events are parsed across chunk boundaries", () => {
  const p = new EventParser();
  assert.deepEqual(p.push("retry: 5000\nevent: rea"), []);
  assert.deepEqual(p.push("dy\ndata: {}\n\n: keep-alive\n\nevent: changes\r\ndata: {\"tables\":"), [["ready", "{}"], ["", ""]]);
  assert.deepEqual(p.push("[\"workorder\"]}\r\n\r\n"), [["changes", "{\"tables\":[\"workorder\"]}"]]);
});

test("automatic sync follows the intervals, the user's frequency and Wi-Fi only", async () => {
  let wifi = /** @type {boolean | null} */ (true);
  const network = { connected: () => true, wifi: () => wifi };
  const d = await device("jake", { network, tickMs: 60_000 });
  try {
    const s = d.scheduler;
    assert.deepEqual(await s.dueTables(), ["workorder", "account", "contact"], "never synced: all due");
    await d.sync();
    assert.deepEqual(await s.dueTables(), []);
    const in20 = new Date(Date.now() + 20 * 60_000);
    assert.deepEqual(await s.dueTables(in20), ["workorder"], "the work orders' 15 minutes passed");
    const in61 = new Date(Date.now() + 61 * 60_000);
    assert.deepEqual(await s.dueTables(in61), ["workorder", "account", "contact"]);
    await d.updateSettings({ frequencyMinutes: 120 });
    assert.deepEqual(await s.dueTables(in61), [], "the user's frequency replaces the intervals");
    await d.updateSettings({ frequencyMinutes: 0 });
    assert.equal(await s.mayRun(), false, "0: no automatic sync");
    await d.updateSettings({ frequencyMinutes: null, wifiOnly: true });
    wifi = false;
    assert.equal(await s.mayRun(), false, "metered and Wi-Fi only");
    wifi = null; // the browser cannot tell: the user's setting decides
    assert.equal(await s.mayRun(), true);
    await d.updateSettings({ assumeWifi: false });
    assert.equal(await s.mayRun(), false);
    await assert.rejects(d.updateSettings({ frequencyMinutes: -5 }), FieldError);
    const settings = await d.settings();
    assert.deepEqual(settings.allowed, { frequency: true, wifiOnly: true });
  } finally {
    await d.close();
  }
});
