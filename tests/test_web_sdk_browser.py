"""The JavaScript device SDK in a real browser: Debian's chromium, driven by Playwright, opens
the SDK's example app (bundled by ``web/sdk/example/build.mjs``) served by the same server as
``/sync/v1``. It exercises the browser storage path: SQLite WebAssembly in a dedicated worker
on the Origin Private File System (``opfs-sahpool``), Web Locks for one writer across tabs,
the replica surviving a reload, a local write while the network is cut, and its upload when
the network returns."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldsync.config import Settings
from fieldsync.demo import seed_demo
from fieldsync.platform import Platform, build
from fieldsync.server.app import create_app
from fieldsync.store.store import Store

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
EXAMPLE = WEB / "sdk" / "example"


def _need(what: str, found: bool) -> None:
    if not found:
        if os.environ.get("FIELDSYNC_REQUIRE_BROWSER"):
            pytest.fail(f"{what} is missing (FIELDSYNC_REQUIRE_BROWSER=1)")
        pytest.skip(f"{what} is missing")


@pytest.fixture
def example() -> Path:
    _need(CHROMIUM, os.path.exists(CHROMIUM))
    node, npm = shutil.which("node"), shutil.which("npm")
    _need("node and npm", node is not None and npm is not None)
    assert node is not None
    assert npm is not None
    if not (WEB / "node_modules" / "esbuild").exists():
        done = subprocess.run([npm, "ci", "--prefix", str(WEB)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    done = subprocess.run([node, str(EXAMPLE / "build.mjs")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return EXAMPLE


@pytest.fixture
def served(tmp_path: Path, example: Path) -> Iterator[str]:
    import uvicorn
    from starlette.staticfiles import StaticFiles

    platform: Platform = build(Store.open(f"sqlite:///{tmp_path / 'sdk.db'}"))
    seed_demo(platform)
    app = create_app(Settings(), platform=platform)
    app.mount("/sdk-example", StaticFiles(directory=example, html=True), name="sdk-example")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        platform.close()


def test_the_sdk_keeps_its_replica_in_opfs_and_writes_offline(served: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: messages.append(f"error: {e}"))
        page.goto(f"{served}/sdk-example/")
        expect(page.get_by_role("status")).not_to_have_text("Opening…", timeout=30_000)
        assert "error" not in page.get_by_role("status").inner_text().lower(), messages
        page.get_by_label("User name").fill("lena")
        page.get_by_label("Password").fill("fieldsync-demo")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#rows li").first).to_be_visible(timeout=60_000)
        shown = page.locator("#rows li").count()
        assert shown > 0
        storage = page.evaluate(
            """async () => {
                const root = await navigator.storage.getDirectory();
                const names = [];
                for await (const [name] of root.entries()) names.push(name);
                return names;
            }"""
        )
        assert any(name.startswith(".fieldsync") for name in storage), storage

        # a second tab: the device has one writer (Web Locks)
        other = context.new_page()
        other.goto(f"{served}/sdk-example/")
        expect(other.get_by_role("status")).to_contain_text("another tab", timeout=30_000)
        other.close()

        # reload: the replica is read back from OPFS, no sign-in
        page.reload()
        expect(page.locator("#rows li")).to_have_count(shown, timeout=30_000)
        state = page.evaluate("async () => (await window.device.session()).user.name")
        assert state == "lena"

        # the network cut: a local write lands in the replica and the outbox
        context.set_offline(True)
        table = page.evaluate("async () => (await window.device.tables())[0]")
        row_id = page.evaluate(
            """async (t) => (await window.device.query(t.name, {limit: 1})).rows[0][t.primaryId]""",
            table,
        )
        page.evaluate(
            """async ([t, id]) =>
                window.device.update(t.name, id, {[t.primaryName]: 'Renamed offline'})""",
            [table, row_id],
        )
        failed = page.evaluate(
            """async () => {
                try { await window.device.sync(); return null } catch (e) { return e.name }
            }"""
        )
        assert failed == "OfflineError"
        status = page.evaluate("async () => window.device.status()")
        assert status["pending"] == 1
        assert status["state"] == "NotConnectedPendingUpsync"

        # the network returns: the change uploads once
        context.set_offline(False)
        report = page.evaluate("async () => window.device.sync({reason: 'test'})")
        assert report["uploaded"] == 1
        status = page.evaluate("async () => window.device.status()")
        assert status["pending"] == 0
        assert status["state"] == "Connected"
        page.screenshot(path=str(tmp_path / "sdk-example.png"))

        # sign-out wipes the OPFS database
        page.evaluate("async () => window.device.signOut()")
        assert page.evaluate("async () => window.device.session()") is None
        browser.close()
