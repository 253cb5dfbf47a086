// A minimal app on @fieldsync/device: sign in, take the first offline app, sync, list the first
// table's rows from its first view, rename a row offline. Built with `node example/build.mjs`.

import { openDevice } from "../src/index.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const status = $("status");

/** @type {Awaited<ReturnType<typeof openDevice>>} */
let device;
try {
  device = await openDevice({ server: location.origin, workerUrl: new URL("./worker.js", import.meta.url) });
} catch (error) {
  // BusyError: another tab holds the device (one writer across tabs)
  status.textContent = String(/** @type {Error} */ (error).message);
  throw error;
}
Object.assign(window, { device }); // for the console (and the browser test)

device.subscribe((event) => {
  if (event.type === "status") status.textContent = `${event.status.state}: ${event.status.pending} waiting, ${event.status.errors} errors`;
  if (event.type === "changed") void render();
});

let renders = 0;

async function render() {
  // renders overlap (a sync sends several "changed" events): only the latest one draws
  const mine = ++renders;
  const session = await device.session();
  /** @type {HTMLButtonElement} */ ($("sync")).disabled = !session?.app;
  /** @type {HTMLButtonElement} */ ($("sign-out")).disabled = !session;
  const list = $("rows");
  if (!session?.app) {
    if (mine === renders) list.replaceChildren();
    return;
  }
  let tables;
  try {
    tables = await device.tables();
  } catch {
    if (mine === renders) list.replaceChildren();
    return; // not synced yet
  }
  const table = tables[0];
  const [view] = await device.views(table.name);
  const { rows } = await device.query(table.name, { view: view?.id, limit: 50 });
  if (mine !== renders) return;
  $("list-title").textContent = `${view?.name ?? table.displayName} (${rows.length})`;
  list.replaceChildren();
  for (const row of rows) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.textContent = "Rename";
    button.addEventListener("click", async () => {
      const name = prompt("New name", String(row[table.primaryName] ?? ""));
      if (name) await device.update(table.name, String(row[table.primaryId]), { [table.primaryName]: name });
    });
    item.append(`${row[table.primaryName]} `, button);
    list.append(item);
  }
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(/** @type {HTMLFormElement} */ (event.target));
  try {
    await device.signIn({ server: location.origin, username: String(form.get("username")), password: String(form.get("password")) });
    const [app] = await device.apps();
    if (!app) throw new Error("no app is offline for you");
    await device.selectApp(app.id);
    await device.sync({ reason: "first" });
    await render();
  } catch (error) {
    status.textContent = String(/** @type {Error} */ (error).message);
  }
});
$("sync").addEventListener("click", () => void device.sync({ reason: "user" }).catch((e) => (status.textContent = e.message)));
$("sign-out").addEventListener("click", async () => {
  await device.signOut();
  await render();
});

status.textContent = `${(await device.status()).state}`;
await render();
