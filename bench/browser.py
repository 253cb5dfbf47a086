"""The browser device next to the Python device, in the same run, on this machine.

    python bench/browser.py                      # 10k and 100k work orders
    python bench/browser.py --sizes 2000         # quicker

A real ``fieldsync serve`` (a child process, SQLite) serves a scratch database with a
technician who owns N work orders. For each N:

- the Python device (``fieldsync.client.Device``) signs in and syncs: rows/s, the baseline;
- headless chromium (Debian's, driven by Playwright) opens ``/app``, signs in through the
  device SDK of the page and runs the first sync into its OPFS replica: rows/s, and the ratio
  to the Python device (goal: at least 0.5). The browser runs on a profile on disk, as a
  phone's browser does (``--incognito``: an off-the-record profile instead, whose OPFS lives
  in the browser process's memory, every write a round trip to it). Each device's first
  sync runs ``--syncs`` times, alternating, each from scratch: the figures are medians;
- the network is cut and the page reloaded: the time from navigation to the first list drawn,
  opened from the service worker (goal < 1 s); median of repeats;
- the JS heap of the page and of the engine worker with N rows on the device;
- a view over the N rows (the app's view, first page of 50, and a search), on the replica
  through the worker, median of repeats (goal < 100 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-password-1"
PROFILE = """\
name: Bench field
tables:
  workorder: {filter: other, owned_by: [me]}
apps:
  - {uniquename: benchfield, name: Bench field, can_be_used_offline: true, mode: offline-first}
"""
VIEW = (
    '<fetch><entity name="workorder"><attribute name="name"/><attribute name="priority"/>'
    '<attribute name="estimatedduration"/><order attribute="name"/>'
    '<filter><condition attribute="statecode" operator="eq" value="0"/></filter>'
    "</entity></fetch>"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed(url: str, rows: int) -> None:
    """A technician who owns ``rows`` work orders; a published profile and an app with a view."""
    from fieldsync.offline.access import find_app
    from fieldsync.offline.apps import APP_VIEWS, create_view
    from fieldsync.platform import build
    from fieldsync.security.roles import BASIC_USER
    from fieldsync.store.store import Store
    from fieldsync.types import EntityRef

    p = build(Store.open(url))
    try:
        org = p.org
        mine = dict.fromkeys(("create", "read", "write", "delete", "append", "appendto"), "user")
        role = org.role("Bench technician", privileges={"workorder": mine})
        tech = org.user("tech", password=PASSWORD, roles=[org.role_id(BASIC_USER), role])
        account = p.records.create("account", {"name": "Contoso"})
        for first in range(0, rows, 10000):
            p.records.create_many(
                "workorder",
                [
                    {
                        "name": f"Work order {i:07d}",
                        "priority": 1 + i % 3,
                        "estimatedduration": 30 + i % 240,
                        "instructions": "Check the pump, the valves and the seals. " * 3,
                        "serviceaccountid": account,
                        "ownerid": EntityRef("systemuser", tech),
                    }
                    for i in range(first, min(rows, first + 10000))
                ],
            )
        p.offline.import_yaml(PROFILE)
        p.offline.publish("Bench field")
        with p.store.read() as conn:
            app = find_app(conn, p.store, "benchfield")["appmoduleid"]
        view = create_view(p.records, "Open work orders", "workorder", VIEW)
        p.records.associate(APP_VIEWS, app, view)
    finally:
        p.close()


class Server:
    """``fieldsync serve`` in a child process on a loopback port."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", url]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = {**os.environ, "FIELDSYNC_DATA_DIR": str(data_dir)}
        self.log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def python_device(server: str, directory: Path) -> float:
    """Seconds of the Python device's first sync."""
    from fieldsync.client import Device

    device = Device.login(
        directory, server=server, username="tech", password=PASSWORD, app="benchfield"
    )
    started = time.perf_counter()
    device.sync()
    seconds = time.perf_counter() - started
    device.close()
    return seconds


SIGN_IN = """async ([server, password]) => {
    const device = window.fieldsync.device;
    await device.signIn({ server, username: "tech", password });
    const apps = await device.apps();
    await device.selectApp(apps[0].id);
}"""
SYNC = """async () => {
    const started = performance.now();
    const report = await window.fieldsync.device.sync({ reason: "bench" });
    return { ms: performance.now() - started, report };
}"""
MARKS = (
    "Object.fromEntries(performance.getEntriesByType('mark')"
    ".filter((e) => e.name.startsWith('fieldsync:')).map((e) => [e.name, e.startTime]))"
)
VIEW_TIMES = """async ([repeat]) => {
    const device = window.fieldsync.device;
    const views = await device.views("workorder");
    const view = views.length ? views[0].id : undefined;
    const time = async (options) => {
        const times = [];
        let rows = 0;
        for (let i = 0; i < repeat; i++) {
            const t = performance.now();
            const got = await device.query("workorder", options);
            times.push(performance.now() - t);
            rows = got.rows.length;
        }
        times.sort((a, b) => a - b);
        return { ms: times[Math.floor(times.length / 2)], rows };
    };
    return {
        view: await time({ view, limit: 50 }),
        search: await time({ view, search: "0099", limit: 50 }),
        count: (await device.query("workorder", { limit: 10000000 })).rows.length,
    };
}"""


def heap(context: Any, page: Any) -> dict[str, float]:
    """Used JS heap (MB) of the page and of the engine worker, through the DevTools protocol
    (a worker has no ``performance.memory``: its target is asked over the page's session)."""
    out: dict[str, float] = {}
    session = context.new_cdp_session(page)
    session.send("HeapProfiler.collectGarbage")
    out["page_heap_mb"] = session.send("Runtime.getHeapUsage")["usedSize"] / 2**20
    cdp = session
    answers: dict[int, Any] = {}
    cdp.on(
        "Target.receivedMessageFromTarget",
        lambda e: answers.update({json.loads(e["message"]).get("id"): json.loads(e["message"])}),
    )
    workers = [t for t in cdp.send("Target.getTargets")["targetInfos"] if t["type"] == "worker"]
    total = 0.0
    for n, target in enumerate(workers):
        attached = cdp.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": False}
        )
        sid = attached["sessionId"]
        for k, method in enumerate(("HeapProfiler.collectGarbage", "Runtime.getHeapUsage")):
            ask = 1000 * (n + 1) + k
            message = json.dumps({"id": ask, "method": method})
            cdp.send("Target.sendMessageToTarget", {"sessionId": sid, "message": message})
            for _ in range(500):
                if ask in answers:
                    break
                page.wait_for_timeout(10)
        total += answers.get(1000 * (n + 1) + 1, {}).get("result", {}).get("usedSize", 0)
    out["worker_heap_mb"] = total / 2**20 if total else float("nan")
    return out


def launch(pw: Any, profile: Path | None) -> tuple[Any, Any]:
    """Headless chromium: (browser, context) on a profile directory, or off the record (None)."""
    options: dict[str, Any] = {
        "executable_path": CHROMIUM,
        "args": ["--enable-precise-memory-info"],
    }
    viewport = {"width": 390, "height": 844}
    if profile is None:
        browser = pw.chromium.launch(**options)
        return browser, browser.new_context(viewport=viewport)
    return None, pw.chromium.launch_persistent_context(profile, viewport=viewport, **options)


def browser_sync(pw: Any, server: str, profile: Path | None) -> float:
    """Seconds of a first sync in a fresh browser (the app opened, signed in, synced)."""
    browser, context = launch(pw, profile)
    try:
        page = context.new_page()
        page.goto(f"{server}/app")
        page.wait_for_function("() => window.fieldsync && window.fieldsync.device")
        page.evaluate(SIGN_IN, [server, PASSWORD])
        return float(page.evaluate(SYNC)["ms"]) / 1000
    finally:
        context.close()
        if browser is not None:
            browser.close()


def browser_device(
    pw: Any, server: str, rows: int, repeat: int, profile: Path | None
) -> dict[str, Any]:
    """The browser's figures; ``profile``: the browser's profile directory (None: incognito)."""
    browser, context = launch(pw, profile)
    page = context.new_page()
    try:
        page.goto(f"{server}/app")
        page.wait_for_function("() => window.fieldsync && window.fieldsync.device")
        page.evaluate(SIGN_IN, [server, PASSWORD])
        synced = page.evaluate(SYNC)
        got = page.evaluate(VIEW_TIMES, [repeat])
        assert got["count"] == rows, f"the browser has {got['count']} of {rows} rows"
        memory = heap(context, page)
        # offline: the service worker opens the app, the first list is drawn from OPFS
        page.goto(f"{server}/app#/lists")
        page.wait_for_selector("#rows li")
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        if not page.evaluate("Boolean(navigator.serviceWorker.controller)"):
            page.reload()
            page.wait_for_selector("#rows li")
        context.set_offline(True)
        opens: list[float] = []
        device_opens: list[float] = []
        reloads: list[float] = []
        for _ in range(repeat):
            # the app opened afresh (a new tab, the last one closed), with no network
            page.close()
            page = context.new_page()
            page.goto(f"{server}/app#/lists")
            page.wait_for_selector("#rows li", timeout=30_000)
            marks = page.evaluate(MARKS)
            opens.append(float(marks["fieldsync:first-list"]))
            device_opens.append(float(marks.get("fieldsync:device-open", "nan")))
            # and reloaded in place: the old tab's worker lets go of OPFS first
            page.reload()
            page.wait_for_selector("#rows li", timeout=30_000)
            reloads.append(float(page.evaluate(MARKS)["fieldsync:first-list"]))
        context.set_offline(False)
        return {
            "sync_s": synced["ms"] / 1000,
            "open_offline_ms": statistics.median(opens),
            "device_open_ms": statistics.median(device_opens),
            "reload_offline_ms": statistics.median(reloads),
            "view_ms": got["view"]["ms"],
            "view_rows": got["view"]["rows"],
            "search_ms": got["search"]["ms"],
            **memory,
        }
    finally:
        context.close()
        if browser is not None:
            browser.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="work orders, comma-separated")
    parser.add_argument(
        "--repeat", type=int, default=5, help="opening offline and the views: runs each"
    )
    parser.add_argument(
        "--syncs",
        type=int,
        default=3,
        help="first syncs of each device (alternating, each from scratch): medians",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--incognito",
        action="store_true",
        help="run the browser off the record (OPFS in the browser process's memory)",
    )
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        sys.exit(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    results = []
    with (
        tempfile.TemporaryDirectory(prefix="fieldsync-bench-browser-") as tmp,
        sync_playwright() as pw,
    ):
        for rows in (int(s) for s in args.sizes.split(",")):
            url = f"sqlite:///{tmp}/bench-{rows}.db"
            seed(url, rows)
            server = Server(url, Path(tmp) / f"data-{rows}")
            py_times: list[float] = []
            web_times: list[float] = []
            syncs = max(1, args.syncs)
            try:
                for k in range(syncs):
                    py_times.append(python_device(server.url, Path(tmp) / f"device-{rows}-{k}"))
                    profile = None if args.incognito else Path(tmp) / f"browser-{rows}-{k}"
                    if k < syncs - 1:
                        web_times.append(browser_sync(pw, server.url, profile))
                    else:
                        web = browser_device(pw, server.url, rows, args.repeat, profile)
                        web_times.append(web["sync_s"])
            finally:
                server.stop()
            py = statistics.median(py_times)
            web["sync_s"] = statistics.median(web_times)
            result = {
                "rows": rows,
                "python_rows_per_s": rows / py,
                "browser_rows_per_s": rows / web["sync_s"],
                "ratio": py / web["sync_s"],
                "pair_ratios": [a / b for a, b in zip(py_times, web_times, strict=True)],
                "python_s": py_times,
                "browser_s": web_times,
                **web,
            }
            results.append(result)
            print(
                f"{rows:>7} work orders: initial sync  python {result['python_rows_per_s']:>8.0f}"
                f" rows/s   browser (OPFS{', incognito' if args.incognito else ''})"
                f" {result['browser_rows_per_s']:>8.0f} rows/s"
                f"   ratio {result['ratio']:.2f} (goal >= 0.5; medians of {syncs},"
                f" each pair {', '.join(f'{r:.2f}' for r in result['pair_ratios'])})"
            )
            print(
                f"{'':>21}open offline to first list {web['open_offline_ms']:>6.0f} ms (goal < 1 s)"
                f" (device open {web['device_open_ms']:.0f} ms;"
                f" reloaded in place {web['reload_offline_ms']:.0f} ms)"
                f"   view (first 50) {web['view_ms']:.1f} ms, search {web['search_ms']:.1f} ms"
                f" (goal < 100)"
            )
            print(
                f"{'':>21}JS heap: page {web['page_heap_mb']:.1f} MB,"
                f" engine worker {web['worker_heap_mb']:.1f} MB"
            )
    report = {"results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
