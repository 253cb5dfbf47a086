"""Kill a device process with SIGKILL in the middle of a sync, then resume: the replica must
converge and every local change must be applied exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fieldsync.client import Device
from fieldsync.platform import Platform
from fieldsync.types import EntityRef
from sync_world import World, replica, serving

CHILD = Path(__file__).with_name("device_child.py")


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True, env=env
    )


def kill_after(proc: subprocess.Popen[str], marker: str, count: int, *, delay: float = 0.0) -> int:
    """SIGKILL the child ``delay`` seconds after it printed ``count`` lines starting with
    ``marker``."""
    seen = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(marker):
            seen += 1
            if seen >= count:
                break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    return seen


def test_a_killed_initial_sync_resumes_and_converges(platform: Platform, tmp_path: Path) -> None:
    world = World(platform, tmp_path)
    tech1 = EntityRef("systemuser", world.users["tech1"])
    account = platform.records.create("account", {"name": "Big customer", "ownerid": tech1})
    platform.records.create_many(
        "workorder",
        [{"name": f"job {i}", "serviceaccountid": account, "ownerid": tech1} for i in range(600)],
    )
    directory = tmp_path / "device"
    with serving(world) as url:
        proc = spawn(url, str(directory), "login")
        assert kill_after(proc, "page workorder", 4) == 4
        device = Device(directory)
        partial = len(device.query("workorder"))
        assert 0 < partial < 600  # killed mid-stream, with the pages written so far kept
        device.sync()
        assert replica(device) == world.scope("tech1")
        device.close()


def test_a_killed_upload_applies_each_change_once(platform: Platform, tmp_path: Path) -> None:
    world = World(platform, tmp_path)
    tech1 = EntityRef("systemuser", world.users["tech1"])
    account = platform.records.create("account", {"name": "Customer", "ownerid": tech1})
    directory = tmp_path / "device"
    with serving(world) as url:
        first = spawn(url, str(directory), "login")
        assert first.wait(60) == 0
        assert first.stdout is not None
        first.stdout.close()
        # killed right after the local writes (before or during the upload), a little later
        # (during the upload or while its answer travels), and during the download
        for marker, delay in (("edited", 0.0), ("edited", 0.15), ("page", 0.0)):
            proc = spawn(url, str(directory), "edit", str(account), "150")
            kill_after(proc, marker, 1, delay=delay)
        device = Device(directory)
        device.sync()
        rows = platform.records.retrieve_multiple("workorder", where={"serviceaccountid": account})
        names = sorted(r["name"] for r in rows)
        # every run made 150 new rows with new ids: none lost, none applied twice
        assert len(names) == len({r["workorderid"] for r in rows})
        local = device.query("workorder")
        assert {r["workorderid"] for r in local} == {str(r["workorderid"]) for r in rows}
        assert device.pending_changes() == 0
        assert replica(device) == world.scope("tech1")
        device.close()


def test_a_full_disk_stops_sync_cleanly_and_it_resumes(platform: Platform, tmp_path: Path) -> None:

    from fieldsync.client import StorageFull

    world = World(platform, tmp_path)
    tech1 = EntityRef("systemuser", world.users["tech1"])
    account = platform.records.create("account", {"name": "Customer", "ownerid": tech1})
    platform.records.create_many(
        "workorder",
        [
            {
                "name": f"job {i}",
                "serviceaccountid": account,
                "ownerid": tech1,
                "instructions": "x" * 2000,
            }
            for i in range(300)
        ],
    )
    device = world.device("tech1")

    cap: dict[str, int | None] = {"pages": None}

    def limit(dbapi: Any) -> None:
        if cap["pages"] is not None:
            dbapi.execute(f"PRAGMA max_page_count={cap['pages']}")

    device.replica.db.on_connect.append(limit)
    with device.replica.read() as conn:
        used = conn.execute("PRAGMA page_count").fetchone()[0]
    cap["pages"] = used + 60  # room for a little, not for 300 long work orders
    device.replica.db.dispose()  # new connections get the cap
    with pytest.raises(StorageFull, match="storage is full"):
        device.sync()
    assert len(device.query("workorder")) < 300
    made = 0
    refused = None
    for _ in range(2000):  # local writes fill what is left, then are refused
        try:
            device.create(
                "workorder",
                {"name": "offline", "serviceaccountid": str(account), "instructions": "y" * 1900},
            )
        except StorageFull as exc:
            refused = exc
            break
        made += 1
    assert refused is not None
    assert device.pending_changes() == made  # the refused write left nothing behind
    cap["pages"] = None
    device.replica.db.dispose()
    device.sync()
    assert replica(device) == world.scope("tech1")
