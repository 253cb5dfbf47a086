// The app's pure parts: parsing what a person typed, the fields of a form, the indicator.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BadInput, formFields, parse, same, show, current, listColumns } from "../src/forms.js";
import { INDICATORS, describe, ago } from "../src/indicator.js";

const table = {
  name: "workorder", primaryId: "workorderid", primaryName: "name",
  columns: [
    { name: "workorderid", type: "uniqueidentifier", readOnly: true },
    { name: "priority", type: "choice", displayName: "Priority", options: [{ value: 1, label: "High" }, { value: 2, label: "Normal" }] },
    { name: "name", type: "string", displayName: "Name", required: true, maxLength: 5 },
    { name: "estimatedduration", type: "integer", displayName: "Duration", min: 0, max: 100 },
    { name: "statecode", type: "choice", displayName: "Status", options: [{ value: 0, label: "Active" }] },
    { name: "versionnumber", type: "bigint", readOnly: true },
    { name: "sitephoto", type: "image", displayName: "Photo" },
    { name: "serviceaccountid", type: "lookup", displayName: "Account", targets: ["account"] },
    { name: "signedoff", type: "boolean", displayName: "Signed off" },
    { name: "tags", type: "multichoice", displayName: "Tags", options: [{ value: 1, label: "A" }, { value: 2, label: "B" }] },
    { name: "laborhours", type: "decimal", displayName: "Hours" },
    { name: "due", type: "date", displayName: "Due" },
    { name: "start", type: "datetime", displayName: "Start" },
  ],
};
const col = (name) => table.columns.find((c) => c.name === name);

test("a form: the primary name first, read-only fields last, no ids or bookkeeping", () => {
  const fields = formFields(table);
  assert.equal(fields[0].column.name, "name");
  assert.deepEqual(fields.filter((f) => !f.editable).map((f) => f.column.name), ["statecode"]);
  assert.ok(!fields.some((f) => ["workorderid", "versionnumber"].includes(f.column.name)));
  assert.equal(fields.at(-1).column.name, "statecode");
});

test("parse turns what was typed into device values", () => {
  assert.equal(parse(col("estimatedduration"), " 42 "), 42);
  assert.equal(parse(col("laborhours"), "1,5"), "1.5");
  assert.equal(parse(col("priority"), "1"), 1);
  assert.equal(parse(col("signedoff"), "false"), false);
  assert.deepEqual(parse(col("tags"), ["2", "1"]), [1, 2]);
  assert.equal(parse(col("due"), "2026-12-08"), "2026-12-08");
  assert.equal(parse(col("start"), "2026-12-08T09:30Z"), "2026-12-08T09:30:00Z");
  assert.deepEqual(parse(col("serviceaccountid"), { id: "a", table: "account" }), { id: "a", table: "account" });
  assert.equal(parse(col("estimatedduration"), ""), null);
});

test("bad input names the field", () => {
  const bad = (name, raw, text) => assert.throws(() => parse(col(name), raw),
    (e) => e instanceof BadInput && e.column === name && e.message.includes(text));
  bad("name", " ", "Name is required");
  bad("name", "toolong", "at most 5 characters");
  bad("estimatedduration", "lots", "Duration: enter a whole number");
  bad("estimatedduration", "101", "above the maximum 100");
  bad("estimatedduration", "-1", "below the minimum 0");
  bad("laborhours", "1.2.3", "Hours: enter a number");
  bad("priority", "9", "choose one of the options");
  bad("tags", ["7"], "choose among the options");
  bad("due", "tomorrow", "Due: enter a date");
  bad("start", "soon", "Start: enter a date and time");
  bad("serviceaccountid", { id: "", table: "" }, "pick a row of account");
});

test("only changed columns travel: same() compares in each type's terms", () => {
  assert.ok(same(col("laborhours"), "1.50", "1.5"));
  assert.ok(same(col("start"), "2026-12-08T09:30:15Z", "2026-12-08T09:30:00Z"));
  assert.ok(same(col("serviceaccountid"), "a", { id: "a", table: "account" }));
  assert.ok(same(col("tags"), [2, 1], [1, 2]));
  assert.ok(!same(col("priority"), 1, 2));
  assert.ok(same(col("priority"), null, undefined));
});

test("show uses labels, names and the locale", () => {
  const row = { priority: 1, serviceaccountid: "a", "serviceaccountid@name": "Contoso", signedoff: 1, tags: [1, 2] };
  assert.equal(show(col("priority"), row), "High");
  assert.equal(show(col("serviceaccountid"), row), "Contoso");
  assert.equal(show(col("signedoff"), row), "Yes");
  assert.equal(show(col("tags"), row), "A, B");
  assert.deepEqual(current(col("serviceaccountid"), row), { id: "a", table: "account", name: "Contoso" });
  assert.deepEqual(listColumns(table, ["name", "priority", "sitephoto"]), ["priority"]);
});

test("nine states, each its own glyph and label; the last sync as a person says it", () => {
  assert.equal(Object.keys(INDICATORS).length, 9);
  assert.equal(new Set(Object.values(INDICATORS).map((i) => i.label)).size, 9);
  const now = Date.parse("2026-12-07T12:00:00Z");
  assert.equal(ago(null, now), "never");
  assert.equal(ago("2026-12-07T11:59:30Z", now), "just now");
  assert.equal(ago("2026-12-07T11:00:00Z", now), "1 h ago");
  assert.equal(describe({ state: "NotConnectedPendingUpsync", pending: 2, errors: 1, lastSync: null }, { glyph: false }),
    "Offline · changes waiting · 2 pending · 1 sync error · last sync never");
});
