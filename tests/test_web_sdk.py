"""The JavaScript device SDK (``web/sdk``) against a real ``fieldsync serve`` on loopback, on
SQLite and on PostgreSQL: the demo organisation is seeded, the server started in a child
process, and ``node --test`` runs the SDK's protocol edge cases against it (lost responses,
duplicate uploads, 401 refresh, 410, 429 and 5xx backoff, revert on rejection, purge, files,
the live stream).

Node is needed: without it the test skips with the reason, unless
``FIELDSYNC_REQUIRE_BROWSER=1`` (as for the other browser tests), which makes it fail.
``npm ci --prefix web`` runs first when ``web/node_modules`` is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from conftest import PG_URL, need_postgres

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is missing: the JavaScript SDK's tests need Node 20 and npm"
        if os.environ.get("FIELDSYNC_REQUIRE_BROWSER"):
            pytest.fail(f"{reason} (FIELDSYNC_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def node() -> str:
    found = _tool("node")
    if not (WEB / "node_modules" / "@sqlite.org" / "sqlite-wasm").exists():
        npm = _tool("npm")
        done = subprocess.run(
            [npm, "ci", "--prefix", str(WEB), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return found


def _fieldsync(*args: str) -> list[str]:
    return [sys.executable, "-c", "from fieldsync.cli import main; main()", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sdk.db'}"
        return
    need_postgres()
    schema = f"fs_sdk_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def served(database: str, tmp_path: Path) -> Iterator[str]:
    env = {**os.environ, "FIELDSYNC_DATA_DIR": str(tmp_path / "data")}
    seeded = subprocess.run(
        _fieldsync("demo", "--database", database), env=env, capture_output=True, text=True
    )
    assert seeded.returncode == 0, seeded.stderr
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    child = subprocess.Popen(
        _fieldsync("serve", "--database", database, "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield url
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        log.close()


def test_the_sdk_speaks_the_sync_protocol(node: str, served: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [node, "--test", "--test-concurrency=1", "--test-reporter=tap", "sdk/test/"],
        cwd=WEB,
        env={**os.environ, "FIELDSYNC_SDK_SERVER": served},
        capture_output=True,
        text=True,
        timeout=900,
    )
    (tmp_path / "node-test.tap").write_text(done.stdout + done.stderr)
    summary = [line for line in done.stdout.splitlines() if line.startswith("# ")]
    assert done.returncode == 0, f"node --test failed:\n{done.stdout[-20000:]}\n{done.stderr}"
    assert "# fail 0" in summary, summary
    passed = next(int(line.split()[-1]) for line in summary if line.startswith("# pass"))
    assert passed >= 15, summary
