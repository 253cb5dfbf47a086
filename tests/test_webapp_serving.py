"""``/app`` serves the committed bundle of the field web app: the right types (WebAssembly
streams only as ``application/wasm``), the service worker's scope, revalidation by ETag, the
manifest's icons, the licenses; nothing outside the bundle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.server.app import create_app
from fieldsync.webapp.router import STATIC
from sync_world import AsgiBridge


@pytest.fixture
def client(platform: Platform, tmp_path: Path) -> Iterator[httpx.Client]:
    if not (STATIC / "index.html").is_file():
        pytest.fail("the field app is not built: run `make web`")
    bridge = AsgiBridge(create_app(Settings(data_dir=str(tmp_path)), platform=platform))
    try:
        with httpx.Client(transport=bridge, base_url="http://testserver") as c:
            yield c
    finally:
        bridge.close()
        bridge.loop.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_app_is_served_with_its_types_scope_and_etags(client: httpx.Client) -> None:
    moved = client.get("/app")
    assert moved.status_code == 308
    assert moved.headers["location"] == "/app/"
    page = client.get("/app/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert 'src="app.js"' in page.text
    again = client.get("/app/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    wasm = client.get("/app/sqlite3.wasm")
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    worker = client.get("/app/sw.js")
    assert worker.headers["service-worker-allowed"] == "/app/"
    assert worker.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "/* SHELL_FILES */ []" not in worker.text  # the build filled in the list
    shell = json.loads(worker.text.split("const FILES = ", 1)[1].split(";\n", 1)[0])
    for name in shell:
        assert client.get(f"/app/{name[2:]}").status_code == 200, name
    assert "./engine-worker.js" in shell
    assert "./sqlite3.wasm" in shell
    manifest = client.get("/app/manifest.webmanifest")
    assert manifest.headers["content-type"] == "application/manifest+json"
    icons = json.loads(manifest.text)["icons"]
    assert {i["sizes"] for i in icons} >= {"192x192", "512x512"}
    for icon in icons:
        got = client.get(f"/app/{icon['src']}")
        assert got.headers["content-type"] == "image/png"
        assert got.content[:8] == b"\x89PNG\r\n\x1a\n"
    licenses = client.get("/app/LICENSES.txt").text
    assert "Apache License" in licenses
    assert "SQLite" in licenses


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "path", ["/app/nothing.js", "/app/../pyproject.toml", "/app/%2e%2e/router.py", "/app/x/"]
)
def test_nothing_outside_the_bundle(client: httpx.Client, path: str) -> None:
    got = client.get(path)
    assert got.status_code == 404
    assert got.json()["error"]["code"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_python_files_of_the_package_are_not_served(client: httpx.Client) -> None:
    assert client.get("/app/router.py").status_code == 404
    assert client.get("/app/__init__.py").status_code == 404
