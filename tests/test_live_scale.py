"""Scale-out: two ``fieldsync serve`` processes on one PostgreSQL database. A change uploaded
through one reaches a live device on the other within a second (LISTEN/NOTIFY between the
processes), and a session signed in on one is valid on the other."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from conftest import PG_URL, need_postgres
from fieldsync.client import Device
from fieldsync.client.live import LiveSync
from fieldsync.platform import build
from fieldsync.security.roles import BASIC_USER
from fieldsync.store.store import Store

pytestmark = pytest.mark.postgres

PASSWORD = "scale-out-password-1"
PROFILE = """\
name: Mine
tables:
  account: {filter: other, owned_by: [me]}
apps:
  - {uniquename: mine, name: Mine, can_be_used_offline: true, mode: offline-first}
"""


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh schema with a technician and a published profile of their own accounts."""
    need_postgres()
    name = f"fs_live_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options={quote(f'-csearch_path={name}')}"
    try:
        p = build(Store.open(url))
        try:
            org = p.org
            role = org.role(
                "Technician",
                privileges={"account": {"read": "user", "create": "user", "write": "user"}},
            )
            org.user("tech", password=PASSWORD, roles=[org.role_id(BASIC_USER), role])
            p.offline.import_yaml(PROFILE)
            p.offline.publish("Mine")
        finally:
            p.close()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


class Server:
    """``fieldsync serve`` in a child process on a loopback port."""

    def __init__(self, url: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", url]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = {**os.environ, "FIELDSYNC_LIVE_KEEPALIVE_SECONDS": "1"}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def servers(database: str) -> Iterator[tuple[Server, Server]]:
    first = Server(database)
    try:
        second = Server(database)
    except RuntimeError:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_a_change_through_one_process_reaches_a_device_on_the_other(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    one, two = servers
    writer = Device.login(
        tmp_path / "a", server=one.url, username="tech", password=PASSWORD, app="mine"
    )
    reader = Device.login(
        tmp_path / "b", server=two.url, username="tech", password=PASSWORD, app="mine"
    )
    # a session made on one process is good on the other, access and refresh tokens alike
    tokens = writer.http().tokens
    whoami = httpx.get(
        f"{two.url}/auth/whoami", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert whoami.status_code == 200
    assert whoami.json()["username"] == "tech"
    refreshed = httpx.post(
        f"{two.url}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refreshed.status_code == 200
    writer.http().tokens = {
        "access_token": refreshed.json()["access_token"],
        "refresh_token": refreshed.json()["refresh_token"],
    }

    live = LiveSync(reader, read_timeout=10.0)
    stop = threading.Event()
    thread = threading.Thread(target=live.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while live.connects == 0:
            assert time.monotonic() < deadline, "the reader did not connect"
            time.sleep(0.02)
        laps = []
        for n in range(3):
            account = writer.create("account", {"name": f"Through one {n}"})
            writer.sync([])  # upload only, through process one
            committed = time.monotonic()
            while reader.get("account", account) is None:
                assert time.monotonic() - committed < 5, "the change never reached the reader"
                time.sleep(0.01)
            laps.append(time.monotonic() - committed)
        assert max(laps) < 1.0, laps
    finally:
        stop.set()
        thread.join(15)
        writer.close()
        reader.close()
