// The device's stored forms and clock parameters agree with the server's Python: the values
// below were computed by fieldsync.store.sqltypes and fieldsync.query.bind.date_range.

import assert from "node:assert/strict";
import { test } from "node:test";

import { fromStored, timeParam, toStored } from "../src/codecs.js";

const NOW = new Date(Date.UTC(2026, 11, 9, 14, 30, 15, 123)); // a Wednesday
const RANGES = [["today",null,"start",false,"2026-12-09 00:00:00.000000"],["today",null,"start",true,"2026-12-09"],["today",null,"end",false,"2026-12-10 00:00:00.000000"],["today",null,"end",true,"2026-12-10"],["yesterday",null,"start",false,"2026-12-08 00:00:00.000000"],["yesterday",null,"end",true,"2026-12-09"],["tomorrow",null,"start",false,"2026-12-10 00:00:00.000000"],["tomorrow",null,"end",false,"2026-12-11 00:00:00.000000"],["last-x-days",3,"start",false,"2026-12-06 00:00:00.000000"],["last-x-days",3,"start",true,"2026-12-06"],["last-x-days",3,"end",false,"2026-12-09 14:30:15.123001"],["last-x-days",3,"end",true,"2026-12-09"],["next-x-days",2,"start",false,"2026-12-09 14:30:15.123000"],["next-x-days",2,"end",false,"2026-12-12 00:00:00.000000"],["next-x-days",2,"end",true,"2026-12-12"],["last-x-hours",5,"start",false,"2026-12-09 09:30:15.123000"],["last-x-hours",5,"end",false,"2026-12-09 14:30:15.123001"],["next-x-hours",5,"end",false,"2026-12-09 19:30:15.123000"],["older-x-days",7,"end",false,"2026-12-02 14:30:15.123000"],["older-x-days",7,"end",true,"2026-12-02"],["this-week",null,"start",false,"2026-12-06 00:00:00.000000"],["this-week",null,"end",true,"2026-12-13"],["this-month",null,"start",false,"2026-12-01 00:00:00.000000"],["this-month",null,"end",false,"2027-01-01 00:00:00.000000"],["this-year",null,"start",true,"2026-01-01"],["this-year",null,"end",false,"2027-01-01 00:00:00.000000"]];

test("date operators' edges are the server's date_range", () => {
  for (const [op, value, edge, date, expected] of RANGES) {
    assert.equal(timeParam({ op: String(op), value, edge: String(edge), date: Boolean(date) }, NOW), expected, `${op} ${value} ${edge} ${date}`);
  }
});

test("decimals are stored as the server's ExactDecimal stores them (half to even)", () => {
  /** @type {[number, string, number | string][]} */
  const cases = [[2, "10.005", 1000], [2, "10.015", 1002], [2, "-3.5", -350], [4, "1234.56785", 12345678], [0, "2.5", 2], [0, "3.5", 4], [10, "12.3456789012", "010000000000123456789012"], [10, "-5.25", "009999999999947500000000"]];
  for (const [scale, value, stored] of cases) {
    const codec = scale > 7 ? `decimaltext:${scale}` : `decimal:${scale}`;
    assert.equal(toStored(codec, value), stored, `${value} at scale ${scale}`);
  }
  assert.equal(fromStored("decimal:2", 1002), "10.02");
  assert.equal(fromStored("decimaltext:10", "009999999999947500000000"), "-5.2500000000");
});

test("ids, times, choices and booleans round-trip through their stored forms", () => {
  assert.equal(toStored("uuid", "0F0F0F0F-0000-4000-8000-00000000ABCD"), "0f0f0f0f00004000800000000000abcd");
  assert.equal(fromStored("uuid", "0f0f0f0f000040008000000000abcd00"), "0f0f0f0f-0000-4000-8000-000000abcd00");
  assert.equal(toStored("datetime", "2026-12-09T14:30:15.5+00:00"), "2026-12-09 14:30:15.500000");
  assert.equal(toStored("datetime", "2026-12-09T15:30:15+01:00"), "2026-12-09 14:30:15.000000");
  assert.equal(fromStored("datetime", "2026-12-09 14:30:15.500000"), "2026-12-09T14:30:15.500000+00:00");
  assert.equal(fromStored("datetime", "2026-12-09 14:30:15.000000"), "2026-12-09T14:30:15+00:00");
  assert.equal(toStored("multichoice", [3, 1, 3]), ",1,3,");
  assert.equal(toStored("multichoice", []), null);
  assert.deepEqual(fromStored("multichoice", ",1,3,"), [1, 3]);
  assert.equal(toStored("bool", false), 0);
  assert.equal(fromStored("bool", 1), true);
});
