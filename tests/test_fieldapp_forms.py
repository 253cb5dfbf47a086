"""The field app's pure parts: lists, forms (parse, changed, show), the status indicator, and
the command's refusal of a directory that is not a device."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fieldsync.cli import main
from fieldsync.client import Status
from fieldsync.client.device import SYNC_STATES
from fieldsync.errors import BadRequest
from fieldsync.fieldapp import forms
from fieldsync.fieldapp.indicator import INDICATORS, ago, describe
from fieldsync.schema.builtin import builtin_tables

TABLES = {t.name: t for t in builtin_tables()}
ORDER = ["workorder", "account", "contact"]
ACC = "6f1c2a5e-3b7d-4e8f-9a0b-1c2d3e4f5a6b"


def handshake(views: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "tables": [TABLES[n].to_json() for n in ORDER],
        "order": ORDER,
        "columns": {n: list(TABLES[n].columns) for n in ORDER},
        "views": views or [],
    }


def fields() -> dict[str, forms.Field]:
    wo = TABLES["workorder"]
    return {f.name: f for f in forms.form_fields(wo, list(wo.columns))}


def test_lists_are_the_apps_views_or_one_per_profile_table() -> None:
    assert [(s.name, s.table) for s in forms.lists(handshake())] == [
        ("Work Order", "workorder"),
        ("Account", "account"),
        ("Contact", "contact"),
    ]
    views = [
        {"name": "Mine", "table": "workorder", "fetchxml": "<fetch/>"},
        {"name": "Not in the profile", "table": "systemuser", "fetchxml": "<fetch/>"},
    ]
    assert forms.lists(handshake(views)) == [forms.ListSpec("Mine", "workorder", "<fetch/>")]


def test_a_form_shows_editable_columns_and_a_few_system_ones_read_only() -> None:
    f = fields()
    assert next(iter(f)) == "name"  # the primary name first
    assert f["priority"].editable
    assert f["serviceaccountid"].editable
    assert not f["ownerid"].editable
    assert not f["modifiedon"].editable
    assert "workorderid" not in f
    assert "versionnumber" not in f
    assert "sitephoto" not in f
    assert "servicereport" not in f


@pytest.mark.parametrize(
    ("column", "raw", "value"),
    [
        ("name", " Pump ", " Pump "),
        ("estimatedduration", " 90 ", 90),
        ("laborhours", "1.50", "1.50"),
        ("latitude", "47.5", 47.5),
        ("duedate", "2026-05-01", "2026-05-01"),
        ("scheduledstart", "2026-05-01 09:30", "2026-05-01T09:30:00"),
        ("priority", 4, 4),
        ("incidenttypes", [3, 1, 3], [1, 3]),
        ("signedoff", False, False),
        ("serviceaccountid", (ACC, "account"), ACC),
        ("primarycontactid", None, None),
        ("estimatedduration", "", None),
    ],
)
def test_parse_turns_form_values_into_sdk_values(column: str, raw: Any, value: Any) -> None:
    assert forms.parse(fields()[column], raw) == value


@pytest.mark.parametrize(
    ("column", "raw", "message"),
    [
        ("name", "  ", "Work Order Number is required"),
        ("serviceaccountid", None, "Service Account is required"),
        ("estimatedduration", "ninety", "Estimated Duration (min): enter a whole number"),
        ("laborhours", "1,5", "Labor Hours: enter a number"),
        ("scheduledstart", "tomorrow", "Scheduled Start: enter a date and time"),
        ("duedate", "01/05/2026", "Due Date: enter a date as YYYY-MM-DD"),
        ("externalreference", "abc", "External Reference: enter a GUID"),
        ("priority", 7, "Priority: choose one of the options"),
        ("serviceaccountid", (ACC, "contact"), "Service Account: pick a row of account"),
    ],
)
def test_bad_input_gets_a_message_naming_the_field(column: str, raw: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        forms.parse(fields()[column], raw)


def test_only_changed_columns_travel() -> None:
    f = list(fields().values())
    row = {
        "name": "Pump",
        "priority": 2,
        "laborhours": "1.50",
        "scheduledstart": "2026-05-01T09:30:42.5+00:00",
        "serviceaccountid": ACC,
        "incidenttypes": [3, 1],
    }
    same = {
        "name": "Pump",
        "priority": 2,
        "laborhours": "1.5",
        "scheduledstart": "2026-05-01T09:30:00",  # the form shows minutes
        "serviceaccountid": ACC,
        "incidenttypes": [1, 3],
        "estimatedduration": None,
    }
    assert forms.changed(f, row, same) == {}
    assert forms.changed(f, row, {**same, "priority": 4, "laborhours": None}) == {
        "priority": 4,
        "laborhours": None,
    }
    assert forms.changed(f, {}, same) == {k: v for k, v in same.items() if v is not None}


def test_show_renders_labels_names_and_times() -> None:
    wo = TABLES["workorder"]
    names = {("account", ACC): "Contoso"}

    def name(table: str, rid: str) -> str | None:
        return names.get((table, rid))

    assert forms.show(wo.column("priority"), 4, name) == "Urgent"
    assert forms.show(wo.column("incidenttypes"), [1, 2], name) == "Inspection, Repair"
    assert forms.show(wo.column("signedoff"), True, name) == "Yes"
    assert forms.show(wo.column("serviceaccountid"), ACC, name) == "Contoso"
    other = str(uuid.uuid4())
    assert forms.show(wo.column("serviceaccountid"), other, name) == f"(account {other[:8]})"
    moment = "2026-05-01T11:30:42+02:00"
    assert forms.show(wo.column("scheduledstart"), moment, name) == "2026-05-01 09:30"
    assert forms.show(wo.column("name"), None, name) == ""


def status(state: str, **kw: Any) -> Status:
    values: dict[str, Any] = {
        "connected": state.startswith("Connected"),
        "metered": False,
        "sync_state": state,
        "syncing": False,
        "pending_changes": 0,
        "sync_errors": 0,
        "last_sync": {},
        "last_error": None,
        "profile_version": 1,
    }
    values.update(kw)
    return Status(**values)


def test_each_of_the_nine_states_has_its_own_indicator() -> None:
    assert set(INDICATORS) == set(SYNC_STATES)
    assert len({(i.glyph, i.label) for i in INDICATORS.values()}) == 9
    for state in SYNC_STATES:
        online = INDICATORS[state].label.startswith("Online")
        assert online == state.startswith("Connected")


def test_describe_says_what_waits_and_when_the_device_last_synced() -> None:
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    line = describe(
        status(
            "NotConnectedPendingUpsync",
            pending_changes=3,
            sync_errors=1,
            last_sync={"workorder": "2026-05-01T11:55:00+00:00", "account": None},
        ),
        now,
    )
    assert "Offline · changes waiting" in line
    assert "3 pending" in line
    assert "1 sync error(s)" in line
    assert "last sync never" in line  # one table has never synced
    assert ago({"workorder": "2026-05-01T11:55:00+00:00"}, now) == "5 min ago"
    assert ago({"workorder": "2026-04-29T11:55:00+00:00"}, now) == "2 d ago"
    assert "pending" not in describe(status("Connected"), now)


def test_the_command_refuses_a_directory_that_is_not_a_device(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["app", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a device directory: run 'device login'" in result.output


def test_the_field_app_stands_on_the_device_sdk_only() -> None:
    """Like any app on the SDK, it imports neither the server, the store nor records."""
    import ast

    import fieldsync.fieldapp

    folder = Path(fieldsync.fieldapp.__file__).parent
    imported: set[str] = set()
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
    ours = {m for m in imported if m.startswith("fieldsync")}
    assert "fieldsync.client" in ours
    forbidden = ("fieldsync.server", "fieldsync.store", "fieldsync.records", "fieldsync.sync")
    assert [m for m in ours if m.startswith(forbidden)] == []
