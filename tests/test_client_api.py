"""The device SDK's public surface: ``fieldsync.client.__all__`` names exactly its public
names, and importing it loads nothing of the server (no SQLAlchemy, no store)."""

from __future__ import annotations

import subprocess
import sys
import types

import fieldsync.client

PUBLIC = {
    "AccessRemoved",
    "Device",
    "DeviceError",
    "FileReport",
    "NetworkProvider",
    "Offline",
    "Progress",
    "ServerError",
    "SignInRequired",
    "Status",
    "StorageFull",
    "SyncReport",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(fieldsync.client.__all__) == PUBLIC
    assert len(fieldsync.client.__all__) == len(PUBLIC)  # no name twice
    assert sorted(fieldsync.client.__all__) == list(fieldsync.client.__all__)
    # any other public attribute of the package is one of its modules
    extra = {n for n in vars(fieldsync.client) if not n.startswith("_")} - PUBLIC
    assert all(isinstance(getattr(fieldsync.client, n), types.ModuleType) for n in extra), extra
    for name in PUBLIC:
        assert getattr(fieldsync.client, name).__module__.startswith("fieldsync.client.")


def test_importing_the_sdk_loads_nothing_of_the_server() -> None:
    code = (
        "import sys, fieldsync.client, fieldsync.client.device, fieldsync.client.live\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'\n"
        "             or m.startswith(('fieldsync.store', 'fieldsync.records',\n"
        "                              'fieldsync.security', 'fieldsync.server',\n"
        "                              'fieldsync.query.compile')))\n"
        "print(' '.join(bad))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == ""
