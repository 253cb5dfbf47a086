// @ts-check
/** The field web app: plain DOM on the device SDK. Everything the person sees comes from the
 * replica in the engine worker, so the app works the same with the network gone; only a sync
 * talks to the server. Screens: sign-in, app choice, first sync, lists, record form, sync
 * errors, sync settings; the status bar is always there. */

import { openDevice, FieldError } from "@fieldsync/device";
import { h, fill, uid, size } from "./dom.js";
import { describe, indicator, ago } from "./indicator.js";
import * as forms from "./forms.js";

const SERVER_KEY = "fieldsync.server";
const USER_KEY = "fieldsync.username";
const PAGE = 50;

/** @type {any} */
let device = null;
/** @type {any} */
let status = { state: "NotConnected", pending: 0, errors: 0, lastSync: null, progress: {} };
/** @type {any[] | null} */
let tableDefs = null;
/** Listeners of the screen on view, removed when it changes. @type {((e: any) => void)[]} */
let screenListeners = [];
let screenToken = 0;

const main = /** @type {HTMLElement} */ (document.getElementById("main"));
const statusBar = /** @type {HTMLElement} */ (document.getElementById("status"));
const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
const title = /** @type {HTMLElement} */ (document.getElementById("app-title"));

// -- start ---------------------------------------------------------------------------------

async function boot() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("./sw.js", { scope: "./" }).catch((e) => {
      console.warn("service worker not registered", e);
    });
  }
  try {
    device = await openDevice({
      server: localStorage.getItem(SERVER_KEY) || location.origin,
      workerUrl: new URL("./engine-worker.js", location.href).href,
    });
  } catch (e) {
    fill(main, h("div", { role: "alert", class: "error" },
      `This device's storage could not be opened: ${message(e)}`));
    return;
  }
  performance.mark("fieldsync:device-open"); // read by bench/browser.py
  // the page's device, for the browser's console and the end-to-end tests
  /** @type {any} */ (window).fieldsync = { device };
  device.subscribe(onEvent);
  status = await device.status();
  showStatus();
  window.addEventListener("hashchange", () => { route(); });
  window.addEventListener("online", () => { if (session()) syncNow("online"); });
  await route();
  // like the offline template, a sync when the app opens: what is due, and the rest of a
  // first download that was cut off (its cursors are on the device)
  if (current && current.app && status.lastSync && navigator.onLine) syncOnOpen();
}

/** A whole sync once the device is idle (a sync the device's scheduler started on its own
 * may cover only the tables that are due). */
async function syncOnOpen() {
  for (let i = 0; i < 150; i++) {
    if (!(await device.status()).syncing) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await syncNow("open", { quiet: true });
}

/** @param {any} event */
function onEvent(event) {
  if (event.type === "status") {
    status = event.status;
    showStatus();
  }
  for (const listener of screenListeners) listener(event);
}

/** @type {any} */
let current = null;
function session() {
  return current;
}

/** Decide the screen from the session and the address. */
async function route() {
  screenListeners = [];
  const token = ++screenToken;
  current = await device.session();
  if (token !== screenToken) return;
  if (!current) return signInScreen();
  if (!current.app) return appsScreen();
  title.textContent = current.app.name || "fieldsync";
  nav.hidden = false;
  status = await device.status();
  showStatus();
  if (accessRemoved && !(await tables()).length) return listsScreen();
  if (!status.lastSync && !sessionStorage.getItem("fieldsync.skipFirstSync")) {
    return firstSyncScreen();
  }
  const [screen, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  markNav(screen || "lists");
  if (screen === "record") return recordScreen(args[0], args[1]);
  if (screen === "new") return recordScreen(args[0], null);
  if (screen === "errors") return errorsScreen();
  if (screen === "settings") return settingsScreen();
  return listsScreen(args[0], args[1]);
}

/** @param {string} screen */
function markNav(screen) {
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.screen === screen) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Show a screen: its heading takes the focus, so a screen reader announces it.
 * @param {string} heading @param {...any} content */
function screen(heading, ...content) {
  const h1 = h("h1", { tabindex: "-1", id: "screen-title" }, heading);
  fill(main, h1, ...content);
  h1.focus({ preventScroll: true });
  document.title = `${heading} · fieldsync`;
}

/** @param {any} e */
function message(e) {
  return (e && e.message) || String(e);
}

async function tables() {
  if (!tableDefs || !tableDefs.length) tableDefs = await device.tables().catch(() => []);
  return /** @type {any[]} */ (tableDefs);
}

/** @param {string} name */
async function table(name) {
  return (await tables()).find((t) => t.name === name);
}

// -- the status bar ------------------------------------------------------------------------

function showStatus() {
  const mark = indicator(status.state);
  statusBar.dataset.state = status.state;
  statusBar.dataset.tone = mark.tone;
  const syncing = status.syncing || status.state === "ConnectedRefresh";
  fill(statusBar,
    h("span", { class: "glyph", "aria-hidden": "true" }, mark.glyph),
    h("span", { class: "state", id: "status-text" }, describe(status, { glyph: false })),
    h("button", {
      type: "button", id: "sync-now", class: "small", disabled: syncing || !session(),
      onclick: () => syncNow("user"),
    }, syncing ? "Syncing…" : "Sync now"));
  const errors = nav.querySelector('[data-screen="errors"]');
  if (errors) errors.textContent = status.errors ? `Sync errors (${status.errors})` : "Sync errors";
}

/** Why the app's data left this device, when the server took the app away. */
let accessRemoved = "";

/** @param {string} reason @param {{ quiet?: boolean }} [options] */
async function syncNow(reason, { quiet = false } = {}) {
  try {
    await device.sync({ reason });
  } catch (e) {
    if (e && /** @type {any} */ (e).name === "AccessRemovedError") {
      // the device purged the app's data: every screen of it is gone
      accessRemoved = message(e);
      tableDefs = null;
      await route();
      return;
    }
    if (e && /** @type {any} */ (e).name === "DeviceWipedError") {
      // an administrator wiped the device: its data is gone; the first sync starts over
      tableDefs = null;
      flash("An administrator removed this app's data from this device.");
      await route();
      return;
    }
    // the status bar shows the failed state; say why once
    if (!quiet) flash(`Sync failed: ${message(e)}`);
  }
}

/** @param {string} text */
function flash(text) {
  const live = /** @type {HTMLElement} */ (document.getElementById("flash"));
  live.textContent = text;
  clearTimeout(Number(live.dataset.timer || 0));
  live.dataset.timer = String(setTimeout(() => { live.textContent = ""; }, 8000));
}

// -- sign-in and app choice ----------------------------------------------------------------

function signInScreen() {
  nav.hidden = true;
  title.textContent = "fieldsync";
  const error = h("p", { role: "alert", class: "error", id: "sign-in-error" });
  const server = h("input", {
    id: "server", name: "server", type: "url", required: true, autocomplete: "url",
    value: localStorage.getItem(SERVER_KEY) || location.origin,
  });
  const username = h("input", {
    id: "username", name: "username", required: true, autocomplete: "username",
    autocapitalize: "none", value: localStorage.getItem(USER_KEY) || "",
  });
  const password = h("input", {
    id: "password", name: "password", type: "password", required: true,
    autocomplete: "current-password",
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { "aria-describedby": "sign-in-error", novalidate: true,
    onsubmit: async (/** @type {Event} */ ev) => {
      ev.preventDefault();
      error.textContent = "";
      const values = {
        server: /** @type {HTMLInputElement} */ (server).value.trim().replace(/\/+$/, ""),
        username: /** @type {HTMLInputElement} */ (username).value.trim(),
        password: /** @type {HTMLInputElement} */ (password).value,
      };
      if (!values.server || !values.username || !values.password) {
        error.textContent = "Enter the server, your user name and your password.";
        return;
      }
      submit.setAttribute("disabled", "");
      submit.textContent = "Signing in…";
      try {
        await device.signIn(values);
        localStorage.setItem(SERVER_KEY, values.server);
        localStorage.setItem(USER_KEY, values.username);
        tableDefs = null;
        await route();
      } catch (e) {
        error.textContent = message(e);
        submit.removeAttribute("disabled");
        submit.textContent = "Sign in";
        /** @type {HTMLInputElement} */ (password).select();
      }
    } },
    field("Server", server),
    field("User name", username),
    field("Password", password),
    error,
    submit);
  screen("Sign in", h("p", { class: "hint" },
    "Your data stays on this device, so you can keep working without a network."), form);
  if (!/** @type {HTMLInputElement} */ (username).value) username.focus();
  else password.focus();
}

/** @param {string} text @param {HTMLElement} control @param {HTMLElement | null} [extra] */
function field(text, control, extra = null) {
  const id = control.id || uid("f");
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, text), control, extra);
}

async function appsScreen() {
  nav.hidden = true;
  const apps = await device.apps();
  if (apps.length === 1) {
    await device.selectApp(apps[0].id);
    tableDefs = null;
    return route();
  }
  if (!apps.length) {
    screen("No offline app",
      h("p", null, "None of your apps can be used offline. Ask your administrator to give you " +
        "an app with an offline profile."),
      h("button", { type: "button", onclick: signOut }, "Sign out"));
    return;
  }
  screen("Choose an app",
    h("ul", { class: "choices", "aria-labelledby": "screen-title" },
      apps.map((/** @type {any} */ app) => h("li", null, h("button", {
        type: "button", class: "choice",
        onclick: async () => { await device.selectApp(app.id); tableDefs = null; route(); },
      }, app.name, h("small", null, app.uniquename))))),
    h("button", { type: "button", onclick: signOut }, "Sign out"));
}

// -- the first sync --------------------------------------------------------------------------

async function firstSyncScreen() {
  const rows = new Map();
  const list = h("ul", { class: "progress-list", "aria-label": "Tables" });
  const note = h("p", { id: "first-sync-message", role: "status" },
    "Downloading your data for the first time…");
  const actions = h("div", { class: "actions" });
  screen("First sync", note, list, actions);

  /** @param {string} name @param {{ rows: number, bytes: number }} p @param {boolean} done */
  const show = (name, p, done) => {
    let row = rows.get(name);
    if (!row) {
      const meter = h("progress", { "aria-label": name });
      const counts = h("span", { class: "counts" }, "waiting");
      row = { li: h("li", { "data-table": name }, h("span", { class: "name" }, name), meter, counts), meter, counts };
      rows.set(name, row);
      list.append(row.li);
    }
    if (done) { row.meter.max = 1; row.meter.value = 1; }
    row.counts.textContent = `${p.rows} rows, ${size(p.bytes)}${done ? " ✓" : ""}`;
  };
  const names = new Map();
  for (const t of await tables().catch(() => [])) names.set(t.name, t.displayName || t.name);
  for (const [, display] of names) show(display, { rows: 0, bytes: 0 }, false);
  screenListeners.push((event) => {
    if (event.type !== "status" || !event.status.progress) return;
    for (const [name, p] of Object.entries(event.status.progress)) {
      show(names.get(name) || name, /** @type {any} */ (p), false);
    }
  });

  const run = async () => {
    fill(actions);
    note.textContent = "Downloading your data for the first time…";
    try {
      const report = await device.sync({ reason: "first" });
      tableDefs = null;
      for (const t of await tables()) names.set(t.name, t.displayName || t.name);
      let total = 0; let bytes = 0;
      for (const [name, p] of Object.entries(report.tables || {})) {
        const q = /** @type {any} */ (p);
        total += q.rows; bytes += q.bytes;
        show(names.get(name) || name, q, true);
      }
      note.textContent = `Ready. ${total} rows (${size(bytes)}) are on this device.`;
      const go = h("button", { type: "button", class: "primary", onclick: () => {
        location.hash = "#/lists"; route();
      } }, "Start working");
      fill(actions, go);
      go.focus();
    } catch (e) {
      if (e && /** @type {any} */ (e).name === "AccessRemovedError") {
        accessRemoved = message(e);
        tableDefs = null;
        route();
        return;
      }
      note.textContent = `The first sync needs the server: ${message(e)}`;
      fill(actions,
        h("button", { type: "button", class: "primary", onclick: run }, "Try again"),
        h("button", { type: "button", onclick: () => {
          sessionStorage.setItem("fieldsync.skipFirstSync", "1"); route();
        } }, "Work offline"));
    }
  };
  run();
}

// -- lists -----------------------------------------------------------------------------------

/** @param {string} [wantTable] @param {string} [wantView] */
async function listsScreen(wantTable, wantView) {
  const defs = await tables();
  /** @type {{ key: string, table: any, view: any, name: string }[]} */
  const lists = [];
  for (const t of defs) {
    const views = await device.views(t.name).catch(() => []);
    for (const v of views) lists.push({ key: `${t.name}/${v.id}`, table: t, view: v, name: v.name });
    if (!views.length) {
      lists.push({ key: `${t.name}/`, table: t, view: null, name: t.displayName || t.name });
    }
  }
  if (!lists.length) {
    if (accessRemoved) {
      screen("No access", h("p", { role: "alert", id: "access-removed" },
        "You may no longer take this app offline, so its data was removed from this device. ",
        `The server said: ${accessRemoved}`),
      h("button", { type: "button", onclick: signOut }, "Sign out"));
    } else {
      screen("Lists", h("p", null, "Nothing is on this device yet. Sync to download your data."));
    }
    return;
  }
  const chosen = lists.find((l) => l.key === `${wantTable}/${wantView || ""}`)
    || lists.find((l) => l.table.name === wantTable)
    || lists.find((l) => l.view && l.view.isDefault) || lists[0];

  const picker = h("select", { id: "list-picker",
    onchange: () => {
      const l = lists.find((x) => x.key === /** @type {HTMLSelectElement} */ (picker).value);
      if (l) location.hash = `#/lists/${encodeURIComponent(l.table.name)}/${encodeURIComponent(l.view ? l.view.id : "")}`;
    } },
  lists.map((l) => h("option", { value: l.key, selected: l === chosen }, l.name)));
  const search = h("input", { id: "search", type: "search", autocomplete: "off",
    placeholder: "Search", value: sessionStorage.getItem(`search:${chosen.key}`) || "" });
  const results = h("ul", { class: "rows", id: "rows", "aria-label": chosen.name });
  const count = h("p", { class: "hint", role: "status", id: "row-count" });
  const more = h("button", { type: "button", hidden: true }, "Show more");
  const t = chosen.table;
  const cols = forms.listColumns(t, chosen.view ? chosen.view.columns : undefined);
  const colDefs = cols.map((n) => t.columns.find((/** @type {any} */ c) => c.name === n));
  let shown = 0;
  let generation = 0;

  const load = async (/** @type {boolean} */ append) => {
    const mine = ++generation;
    const text = /** @type {HTMLInputElement} */ (search).value.trim();
    sessionStorage.setItem(`search:${chosen.key}`, text);
    const offset = append ? shown : 0;
    let rows;
    try {
      ({ rows } = await device.query(t.name, {
        view: chosen.view ? chosen.view.id : undefined, search: text || undefined,
        limit: PAGE + 1, offset,
      }));
    } catch (e) {
      if (e && /** @type {any} */ (e).name === "NotFoundError") { // the table left the device
        tableDefs = null;
        route();
        return;
      }
      throw e;
    }
    if (mine !== generation) return;
    const page = rows.slice(0, PAGE);
    const items = page.map((/** @type {any} */ row) => {
      const name = row[t.primaryName] || "(no name)";
      const details = colDefs.map((c) => forms.show(c, row)).filter(Boolean).join(" · ");
      return h("li", null, h("a", {
        href: `#/record/${encodeURIComponent(t.name)}/${encodeURIComponent(row[t.primaryId])}`,
        "data-id": row[t.primaryId],
      }, h("span", { class: "title" }, String(name)), details ? h("span", { class: "details" }, details) : null));
    });
    if (append) results.append(...items);
    else fill(results, items);
    if (!performance.getEntriesByName("fieldsync:first-list").length) {
      performance.mark("fieldsync:first-list"); // read by bench/browser.py
    }
    shown = offset + page.length;
    more.hidden = rows.length <= PAGE;
    count.textContent = shown ? `${shown}${rows.length > PAGE ? "+" : ""} ${shown === 1 ? "row" : "rows"}`
      : text ? `Nothing matches “${text}”.` : "No rows.";
  };
  let timer = 0;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = Number(setTimeout(() => load(false), 150));
  });
  more.addEventListener("click", () => load(true));
  screenListeners.push((event) => {
    if (event.type === "changed" && (!event.tables || event.tables.includes(t.name))) load(false);
  });

  screen(chosen.name,
    h("div", { class: "toolbar" },
      field("List", picker),
      field("Search", search)),
    h("div", { class: "actions" },
      t.readOnly ? null : h("a", { class: "button primary", href: `#/new/${encodeURIComponent(t.name)}` },
        `New ${t.displayName || t.name}`)),
    count, results, more);
  await load(false);
}

// -- a record --------------------------------------------------------------------------------

/** @param {string} tableName @param {string | null} id */
async function recordScreen(tableName, id) {
  const t = await table(tableName);
  if (!t) { location.hash = "#/lists"; return; }
  const row = id ? await device.get(t.name, id) : {};
  const kind = t.displayName || t.name;
  if (id && !row) {
    screen(`${kind} not on this device`,
      h("p", null, "This row is no longer on this device: it was deleted, or it left your data at the last sync."),
      h("a", { href: `#/lists/${encodeURIComponent(t.name)}` }, "Back to the list"));
    return;
  }
  const fields = forms.formFields(t);
  /** @type {Map<string, { col: any, editable: boolean, read: () => any, wrap: HTMLElement, error: HTMLElement, control: HTMLElement }>} */
  const controls = new Map();
  /** @type {Map<string, { blob: Blob, name: string }>} files chosen, attached on save */
  const files = new Map();
  const summary = h("div", { role: "alert", class: "error", id: "form-error" });

  const body = [];
  for (const { column: col, editable } of fields) {
    const entry = fieldControl(t, col, editable, row, files, id);
    controls.set(col.name, entry);
    body.push(entry.wrap);
  }
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const form = h("form", { novalidate: true, id: "record-form", "aria-describedby": "form-error",
    onsubmit: async (/** @type {Event} */ ev) => {
      ev.preventDefault();
      summary.textContent = "";
      /** @type {Record<string, any>} */
      const values = {};
      /** @type {[string, string][]} */
      const bad = [];
      for (const [name, c] of controls) {
        c.error.textContent = "";
        c.control.removeAttribute("aria-invalid");
        if (!c.editable || forms.FILE_TYPES.includes(c.col.type)) continue;
        try {
          const value = forms.parse(c.col, c.read());
          if (!id ? value !== null : !forms.same(c.col, forms.current(c.col, row), value)) {
            values[name] = value;
          }
        } catch (e) {
          bad.push([name, message(e)]);
        }
      }
      if (bad.length) return showBad(bad);
      save.setAttribute("disabled", "");
      try {
        let rid = id;
        if (!rid) rid = await device.create(t.name, values);
        else if (Object.keys(values).length) await device.update(t.name, rid, values);
        for (const [column, f] of files) await device.attach(t.name, rid, column, f.blob, f.name);
        flash(id ? `Saved ${row[t.primaryName] || kind}.` : `Created ${values[t.primaryName] || kind}.`);
        location.hash = `#/record/${encodeURIComponent(t.name)}/${encodeURIComponent(String(rid))}`;
        if (id) route();
      } catch (e) {
        save.removeAttribute("disabled");
        const err = /** @type {any} */ (e);
        if ((e instanceof FieldError || (err && err.column)) && controls.has(err.column)) {
          const c = /** @type {any} */ (controls.get(err.column));
          return showBad([[err.column, err.reason ? `${forms.label(c.col)} ${err.reason}` : message(e)]]);
        }
        summary.textContent = `Nothing was saved: ${message(e)}`;
      }
    } },
  body, summary,
  h("div", { class: "actions" },
    save,
    id ? h("button", { type: "button", class: "danger", onclick: () => confirmDelete(t, id, row) }, "Delete") : null,
    h("a", { class: "button", href: `#/lists/${encodeURIComponent(t.name)}` }, "Cancel")));

  /** @param {[string, string][]} bad */
  function showBad(bad) {
    for (const [name, text] of bad) {
      const c = controls.get(name);
      if (!c) continue;
      c.error.textContent = text;
      c.control.setAttribute("aria-invalid", "true");
    }
    summary.textContent = `Nothing was saved. ${bad.map(([, text]) => text).join(". ")}.`.replace("..", ".");
    const first = controls.get(bad[0][0]);
    if (first) first.control.focus();
  }

  screen(id ? `${kind}: ${row[t.primaryName] || "(no name)"}` : `New ${kind}`, form);
  const first = [...controls.values()].find((c) => c.editable);
  if (first && !id) first.control.focus();
}

/**
 * One field of a record form: the control for its type, its label and its error.
 * @param {any} t @param {any} col @param {boolean} editable @param {Record<string, any>} row
 * @param {Map<string, { blob: Blob, name: string }>} files @param {string | null} id
 */
function fieldControl(t, col, editable, row, files, id) {
  const cid = `f-${col.name}`;
  const errorId = `e-${col.name}`;
  const error = h("p", { class: "field-error", id: errorId });
  const value = forms.current(col, row);
  /** @type {HTMLElement} */
  let control;
  /** @type {() => any} */
  let read;
  let extra = null;
  const common = { id: cid, name: col.name, disabled: !editable, "aria-describedby": errorId,
    "aria-required": col.required ? "true" : undefined };
  switch (col.type) {
    case "choice":
      control = h("select", common, h("option", { value: "" }, col.required ? "Choose…" : "(none)"),
        (col.options || []).map((/** @type {any} */ o) =>
          h("option", { value: String(o.value), selected: value !== null && String(o.value) === String(value) }, o.label)));
      read = () => /** @type {HTMLSelectElement} */ (control).value;
      break;
    case "boolean":
      control = h("select", common, h("option", { value: "" }, col.required ? "Choose…" : "(none)"),
        h("option", { value: "true", selected: value === true }, "Yes"),
        h("option", { value: "false", selected: value === false }, "No"));
      read = () => /** @type {HTMLSelectElement} */ (control).value;
      break;
    case "multichoice":
      control = h("select", { ...common, multiple: true, size: Math.min(5, (col.options || []).length) },
        (col.options || []).map((/** @type {any} */ o) => h("option", {
          value: String(o.value), selected: (value || []).map(String).includes(String(o.value)) }, o.label)));
      read = () => [.../** @type {HTMLSelectElement} */ (control).selectedOptions].map((o) => o.value);
      break;
    case "memo":
      control = h("textarea", { ...common, rows: 4, maxlength: undefined }, value === null ? "" : String(value));
      read = () => /** @type {HTMLTextAreaElement} */ (control).value;
      break;
    case "date":
      control = h("input", { ...common, type: "date", value: value ? String(value).slice(0, 10) : "" });
      read = () => /** @type {HTMLInputElement} */ (control).value;
      break;
    case "datetime":
      control = h("input", { ...common, type: "datetime-local", value: forms.localDateTime(value) });
      read = () => /** @type {HTMLInputElement} */ (control).value;
      break;
    case "lookup": {
      const picked = lookupControl(t, col, common, value);
      control = picked.input;
      read = picked.read;
      extra = picked.extra;
      break;
    }
    case "image":
    case "file": {
      const picked = fileControl(t, col, common, row, files, id);
      control = picked.input;
      read = () => null;
      extra = picked.extra;
      break;
    }
    default: {
      const numeric = forms.NUMBER_TYPES.includes(col.type);
      control = h("input", { ...common, type: "text",
        inputmode: numeric ? (["integer", "bigint"].includes(col.type) ? "numeric" : "decimal") : undefined,
        value: value === null ? "" : String(value) });
      read = () => /** @type {HTMLInputElement} */ (control).value;
    }
  }
  const text = forms.label(col) + (col.required ? " *" : "");
  const wrap = h("div", { class: `field type-${col.type}`, "data-column": col.name },
    h("label", { for: cid }, text), control, extra, error);
  return { col, editable, read, wrap, error, control };
}

/**
 * A lookup picked from the replica: type to filter, arrow keys or a tap to choose.
 * @param {any} t @param {any} col @param {Record<string, any>} common @param {any} value
 */
function lookupControl(t, col, common, value) {
  /** @type {{ id: string, table: string, name?: string } | null} */
  let chosen = value;
  const listId = `${common.id}-options`;
  const input = /** @type {HTMLInputElement} */ (h("input", { ...common, type: "text", role: "combobox",
    autocomplete: "off", "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": listId,
    placeholder: "Type to search", value: value ? value.name || `(${value.id.slice(0, 8)})` : "" }));
  const list = h("ul", { role: "listbox", id: listId, class: "options", hidden: true,
    "aria-label": `${forms.label(col)} options` });
  /** @type {any[]} */
  let options = [];
  let active = -1;
  const close = () => { list.hidden = true; input.setAttribute("aria-expanded", "false"); active = -1; };
  const pick = (/** @type {any} */ o) => {
    chosen = o ? { id: o.id, table: o.table, name: o.name } : null;
    input.value = o ? o.name : "";
    close();
  };
  const mark = () => {
    [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === active)));
    const li = list.children[active];
    if (li) { input.setAttribute("aria-activedescendant", li.id); li.scrollIntoView({ block: "nearest" }); }
    else input.removeAttribute("aria-activedescendant");
  };
  let generation = 0;
  const search = async () => {
    const mine = ++generation;
    const found = await device.lookupCandidates(t.name, col.name, input.value.trim());
    if (mine !== generation) return;
    options = found.slice(0, 50);
    fill(list, options.map((o, i) => h("li", { role: "option", id: `${listId}-${i}`, "aria-selected": "false",
      onmousedown: (/** @type {Event} */ ev) => { ev.preventDefault(); pick(o); } }, o.name || o.id)));
    if (!col.required) {
      list.prepend(h("li", { role: "option", id: `${listId}-none`, class: "none",
        onmousedown: (/** @type {Event} */ ev) => { ev.preventDefault(); pick(null); } }, "(none)"));
      options.unshift(null);
    }
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    active = options.length > (col.required ? 0 : 1) && input.value ? (col.required ? 0 : 1) : -1;
    mark();
  };
  input.addEventListener("input", () => { chosen = null; search(); });
  input.addEventListener("focus", () => { if (!input.disabled) search(); });
  input.addEventListener("blur", () => {
    close();
    if (chosen) input.value = chosen.name || chosen.id;
  });
  input.addEventListener("keydown", (ev) => {
    if (list.hidden) return;
    if (ev.key === "ArrowDown") { active = Math.min(options.length - 1, active + 1); mark(); ev.preventDefault(); }
    else if (ev.key === "ArrowUp") { active = Math.max(0, active - 1); mark(); ev.preventDefault(); }
    else if (ev.key === "Enter" && active >= 0) { pick(options[active]); ev.preventDefault(); }
    else if (ev.key === "Escape") { close(); ev.preventDefault(); }
  });
  const read = () => {
    if (chosen) return chosen;
    if (input.value.trim()) return { id: "", table: "" }; // typed but not picked: refused by parse
    return null;
  };
  return { input, read, extra: list };
}

/**
 * An image or file column: choose a file (an image from the camera or the gallery), see the
 * thumbnail, open what is attached.
 * @param {any} t @param {any} col @param {Record<string, any>} common @param {Record<string, any>} row
 * @param {Map<string, { blob: Blob, name: string }>} files @param {string | null} id
 */
function fileControl(t, col, common, row, files, id) {
  const image = col.type === "image";
  const input = /** @type {HTMLInputElement} */ (h("input", { ...common, type: "file",
    accept: image ? "image/*" : undefined, capture: image ? "environment" : undefined }));
  const preview = h("div", { class: "attachment", "aria-live": "polite" });
  const has = row[col.name] !== null && row[col.name] !== undefined && row[col.name] !== "";
  const showBlob = (/** @type {Blob} */ blob, /** @type {string} */ name) => {
    const url = URL.createObjectURL(blob);
    fill(preview, image ? h("img", { src: url, alt: `${forms.label(col)}: ${name}`, class: "thumb" }) : null,
      h("a", { href: url, target: "_blank", rel: "noopener", download: image ? undefined : name }, `Open ${name}`));
  };
  input.addEventListener("change", () => {
    const f = input.files && input.files[0];
    if (!f) return;
    files.set(col.name, { blob: f, name: f.name });
    showBlob(f, `${f.name} (to save)`);
  });
  if (id && has) {
    const name = row[`${col.name}@name`] || row[`${col.name}_name`] || (image ? "photo" : "file");
    const open = h("button", { type: "button", class: "small", onclick: async () => {
      try {
        const blob = await device.file(t.name, id, col.name, { thumbnail: false });
        if (blob) showBlob(blob, name);
        else fill(preview, "Not downloaded yet: it comes with the next sync.");
      } catch (e) {
        fill(preview, `Could not open it: ${message(e)}`);
      }
    } }, `Open ${name}`);
    fill(preview, open);
    if (image) {
      device.file(t.name, id, col.name, { thumbnail: true }).then((/** @type {Blob | null} */ blob) => {
        if (blob) fill(preview, h("img", { src: URL.createObjectURL(blob), alt: `${forms.label(col)} thumbnail`, class: "thumb" }), open);
      }).catch(() => {});
    }
  } else {
    fill(preview, h("span", { class: "hint" }, image ? "No photo." : "No file."));
  }
  return { input, extra: preview };
}

/** @param {any} t @param {string} id @param {Record<string, any>} row */
function confirmDelete(t, id, row) {
  const name = row[t.primaryName] || "this row";
  const dialog = /** @type {HTMLDialogElement} */ (h("dialog", { "aria-labelledby": "confirm-title" },
    h("h2", { id: "confirm-title" }, `Delete ${name}?`),
    h("p", null, "It is deleted on this device now and on the server at the next sync."),
    h("form", { method: "dialog", class: "actions" },
      h("button", { value: "delete", class: "danger" }, "Delete"),
      h("button", { value: "keep", autofocus: true }, "Keep"))));
  dialog.addEventListener("close", async () => {
    dialog.remove();
    if (dialog.returnValue !== "delete") return;
    try {
      await device.remove(t.name, id);
      flash(`Deleted ${name}.`);
      location.hash = `#/lists/${encodeURIComponent(t.name)}`;
    } catch (e) {
      flash(`Not deleted: ${message(e)}`);
    }
  });
  document.body.append(dialog);
  dialog.showModal();
}

// -- sync errors and settings ---------------------------------------------------------------

async function errorsScreen() {
  const errors = await device.syncErrors();
  const defs = await tables();
  const items = errors.map((/** @type {any} */ e) => {
    const t = defs.find((x) => x.name === e.table);
    // the columns the change carried (a revert restores the whole row; only these matter)
    const cols = new Set(Object.keys(e.sent || {}).filter((n) => !t || n !== t.primaryId));
    const colDef = (/** @type {string} */ n) => t && t.columns.find((/** @type {any} */ c) => c.name === n);
    const showValue = (/** @type {any} */ v, /** @type {string} */ n) =>
      v === null || v === undefined ? "(empty)" : forms.show(colDef(n), { [n]: v }) || String(v);
    return h("li", { class: "sync-error", "data-id": e.id },
      h("h2", null, `${(t && t.displayName) || e.table}: ${e.operation}`),
      h("p", { class: "error" }, e.message, e.code ? h("small", null, ` (${e.code})`) : null),
      cols.size ? h("table", null,
        h("caption", null, "Values sent and reverted to"),
        h("thead", null, h("tr", null, h("th", { scope: "col" }, "Column"),
          h("th", { scope: "col" }, "Sent"), h("th", { scope: "col" }, "Reverted to"))),
        h("tbody", null, [...cols].map((n) => h("tr", null,
          h("th", { scope: "row" }, colDef(n) ? forms.label(colDef(n)) : n),
          h("td", null, showValue((e.sent || {})[n], n)),
          h("td", null, showValue((e.reverted || {})[n], n)))))) : null,
      h("p", { class: "hint" }, e.at ? `At ${new Date(e.at).toLocaleString()}` : ""),
      h("div", { class: "actions" },
        e.operation !== "delete" && t ? h("a", { class: "button", href: `#/record/${encodeURIComponent(e.table)}/${encodeURIComponent(e.recordId)}` }, "Open the row") : null,
        h("button", { type: "button", onclick: async () => { await device.dismissSyncError(e.id); route(); } }, "Dismiss")));
  });
  screen("Sync errors", errors.length
    ? h("ul", { class: "sync-errors" }, items)
    : h("p", null, "No sync errors: every change you made reached the server."));
}

async function settingsScreen() {
  const settings = await device.settings();
  const allowed = settings.allowed || {};
  const note = h("p", { role: "status", id: "settings-saved" });
  const parts = [];
  const every = (/** @type {number | null} */ m) => m === null || m === undefined ? "The app's intervals for each table"
    : m === 0 ? "Only when I press Sync now"
      : m < 60 ? `Every ${m} minutes` : m === 60 ? "Every hour" : m < 1440 ? `Every ${m / 60} hours` : "Once a day";
  if (allowed.frequency) {
    const choices = [null, 5, 15, 30, 60, 240, 1440, 0];
    if (!choices.includes(settings.frequencyMinutes)) choices.splice(1, 0, settings.frequencyMinutes);
    const select = h("select", { id: "frequency", onchange: async () => {
      const raw = /** @type {HTMLSelectElement} */ (select).value;
      try {
        await device.updateSettings({ frequencyMinutes: raw === "" ? null : Number(raw) });
        note.textContent = "Saved.";
      } catch (e) {
        note.textContent = `Not saved: ${message(e)}`;
      }
    } }, choices.map((m) => h("option", { value: m === null ? "" : String(m),
      selected: m === (settings.frequencyMinutes ?? null) }, every(m))));
    parts.push(field("Sync frequency", select));
  } else {
    parts.push(h("p", null, `Sync frequency: ${every(settings.frequencyMinutes).toLowerCase()} (set by the app).`));
  }
  if (allowed.wifiOnly) {
    const box = h("input", { id: "wifi-only", type: "checkbox", checked: Boolean(settings.wifiOnly),
      onchange: async () => {
        try {
          await device.updateSettings({ wifiOnly: /** @type {HTMLInputElement} */ (box).checked });
          note.textContent = "Saved.";
        } catch (e) {
          note.textContent = `Not saved: ${message(e)}`;
        }
      } });
    parts.push(h("div", { class: "field check" }, box, h("label", { for: "wifi-only" }, "Sync on Wi-Fi only"),
      settings.wifiDetectable === false ? h("p", { class: "hint" }, "This browser cannot tell Wi-Fi from mobile data: with this on, the device does not sync on its own; Sync now still does.") : null));
  }
  const s = session();
  screen("Sync settings", ...parts, note,
    h("h2", null, "This device"),
    h("p", null, `Signed in as ${s.user.fullname || s.user.name} on ${s.server}. `,
      `Last sync ${ago(status.lastSync)}.`),
    h("button", { type: "button", class: "danger", id: "sign-out", onclick: signOut }, "Sign out"),
    h("p", { class: "hint" }, "Signing out removes your data, your pending changes and your files from this device."));
}

async function signOut() {
  if (status.pending && !window.confirm(`${status.pending} change(s) have not reached the server and will be lost. Sign out?`)) {
    return;
  }
  await device.signOut();
  // the app shell stays cached (it holds no data); everything else goes
  if ("caches" in window) {
    for (const key of await caches.keys()) if (!key.startsWith("fieldsync-shell-")) await caches.delete(key);
  }
  sessionStorage.clear();
  tableDefs = null;
  location.hash = "";
  await route();
}

boot();
