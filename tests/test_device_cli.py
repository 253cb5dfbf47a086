"""``fieldsync device …`` against a server on a loopback port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from fieldsync.cli import main
from fieldsync.platform import Platform
from sync_world import PASSWORD, World, serving
from test_sync import seed


def run(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, ["device", *args])
    assert result.exit_code == code, result.output
    return result


def as_json(*args: str) -> Any:
    return orjson.loads(run(*args, "--json").stdout)


def test_device_commands_end_to_end(platform: Platform, tmp_path: Path) -> None:
    world = World(platform, tmp_path)
    ids = seed(world)
    where = str(tmp_path / "tech1")
    d = ["--dir", where]
    with serving(world) as url:
        login = as_json(
            "login",
            "--server",
            url,
            "--user",
            "tech1",
            "--password",
            PASSWORD,
            "--app",
            "fieldservice",
            *d,
        )
        assert login["tables"] == ["workorder", "account", "contact"]
        first = as_json("sync", *d)
        assert first["downloaded"]["workorder"] == 1
        [wo] = as_json("query", "--table", "workorder", *d)
        assert wo["workorderid"] == str(ids["wo1"])
        filtered = as_json("query", "--table", "workorder", "--filter", "name eq 'Nope'", *d)
        assert filtered == []
        fetch = (
            '<fetch><entity name="account"><attribute name="name"/>'
            '<filter><condition attribute="name" operator="like" value="Con%"/></filter>'
            "</entity></fetch>"
        )
        assert [r["name"] for r in as_json("query", "--fetchxml", fetch, *d)] == ["Contoso"]
        created = as_json(
            "create",
            "--table",
            "workorder",
            "--values",
            orjson.dumps({"name": "From the CLI", "serviceaccountid": str(ids["acc1"])}).decode(),
            *d,
        )
        run(
            "update",
            "--table",
            "workorder",
            "--id",
            str(ids["wo1"]),
            "--values",
            '{"priority": 2}',
            *d,
        )
        status = as_json("status", *d)
        assert status["pending_changes"] == 2
        assert status["sync_state"] == "ConnectedPendingUpsync"
        done = as_json("sync", *d)
        assert done["uploaded"] == 2
        row = platform.records.retrieve("workorder", created["id"])
        assert row["name"] == "From the CLI"
        run("delete", "--table", "workorder", "--id", created["id"], *d)
        as_json("sync", *d)
        assert as_json("errors", *d) == []
    # the server is gone: reads and writes go on, sync says why it failed
    assert len(as_json("query", "--table", "workorder", *d)) == 1
    run(
        "update", "--table", "workorder", "--id", str(ids["wo1"]), "--values", '{"priority": 3}', *d
    )
    failed = run("sync", *d, code=2)
    assert "cannot reach" in failed.stderr
    assert as_json("status", *d)["sync_state"] == "NotConnectedPendingUpsync"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--table", "workorder", "--values", "{nope"], "not JSON"),
        (["create", "--table", "workorder", "--values", "[1]"], "JSON object"),
        (["create", "--table", "nosuch", "--values", "{}"], "nosuch"),
        (["update", "--table", "workorder", "--id", "42", "--values", "{}"], "not a record id"),
        (["create", "--table", "workorder", "--values", '{"priority": 99}'], "priority"),
        (["create", "--table", "workorder", "--values", '{"bogus": 1}'], "bogus"),
    ],
)
def test_bad_input_is_refused_clearly(
    platform: Platform, tmp_path: Path, args: list[str], message: str
) -> None:
    world = World(platform, tmp_path)
    seed(world)
    device = world.device("tech1")
    device.sync()
    device.close()
    result = run(*args, "--dir", str(tmp_path / "tech1"), code=2)
    assert message in result.output
    again = world.device("tech1")
    assert again.pending_changes() == 0


def test_a_directory_that_is_not_a_device(tmp_path: Path) -> None:
    result = run("status", "--dir", str(tmp_path / "empty"), code=2)
    assert "device login" in result.output


def test_every_json_output_with_data_in_it(platform: Platform, tmp_path: Path) -> None:
    """Each ``device … --json`` command prints one JSON document, also when it has rows,
    errors and pending changes to show (a sync error used to crash ``errors --json``)."""
    world = World(platform, tmp_path)
    ids = seed(world)
    d = ["--dir", str(tmp_path / "tech1")]
    with serving(world) as url:
        login = as_json(
            "login",
            "--server",
            url,
            "--user",
            "tech1",
            "--password",
            PASSWORD,
            "--app",
            "fieldservice",
            *d,
        )
        assert login["user"] == "tech1"
        assert login["profile_version"] == 1
        first = as_json("sync", *d)
        assert first["downloaded"] == {"workorder": 1, "account": 1, "contact": 1}
        assert set(first["status"]["last_sync"]) == {"workorder", "account", "contact"}
        # tech1 reads tech2's account but may not change it: the server rejects the change
        rename = orjson.dumps({"name": "Mine"}).decode()
        changed = as_json(
            "update", "--table", "account", "--id", str(ids["acc1"]), "--values", rename, *d
        )
        assert changed == {"id": str(ids["acc1"]), "updated": True}
        created = as_json(
            "create",
            "--table",
            "workorder",
            "--values",
            orjson.dumps({"name": "New", "serviceaccountid": str(ids["acc1"])}).decode(),
            *d,
        )
        pending = as_json("status", *d)
        assert pending["pending_changes"] == 2
        synced = as_json("sync", *d)
        assert synced["uploaded"] == 1
        assert synced["rejected"] == 1
        [error] = as_json("errors", *d)
        assert error["tablename"] == "account"
        assert error["recordid"] == str(ids["acc1"])
        assert error["sent"] == {"name": "Mine"}
        assert error["reverted"]["name"] == "Contoso"
        status = as_json("status", *d)
        assert status["sync_errors"] == 1
        assert status["sync_state"] == "ConnectedWithWarning"
        rows = as_json("query", "--table", "workorder", *d)
        assert {r["workorderid"] for r in rows} == {str(ids["wo1"]), created["id"]}
        [account] = as_json("query", "--table", "account", "--top", "1", *d)
        assert account["name"] == "Contoso"
        deleted = as_json("delete", "--table", "workorder", "--id", created["id"], *d)
        assert deleted == {"id": created["id"], "deleted": True}
