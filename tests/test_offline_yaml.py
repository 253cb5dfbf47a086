"""Profiles as code: export, import, validate and publish, in Python and from the shell."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from fieldsync.cli import main
from fieldsync.errors import ProfileInvalid
from fieldsync.offline.yaml_io import parse_profile
from fieldsync.platform import Platform
from fieldsync.store.catalog import fs_change

PROFILE = """\
name: Technicians
description: What technicians carry.
tables:
  workorder:
    filter: other
    owned_by: [me, my_teams]
    files: [servicereport]
    images: [sitephoto]
    sync_interval: 15
  account:
    filter: related
    relationships: [account_workorder_serviceaccountid]
    columns: [name, telephone1]
    sync_interval: 60
  contact:
    filter: custom
    custom_filter: |
      <fetch>
        <entity name="contact">
          <filter><condition attribute="statecode" operator="eq" value="0" /></filter>
        </entity>
      </fetch>
apps:
  - uniquename: technicians
    name: Technicians
    can_be_used_offline: true
    mode: classic
    profile_mode: restricted
    allow_sync_frequency: true
    allow_wifi_only: true
"""


def log_size(platform: Platform) -> int:
    with platform.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(fs_change)).scalar_one())


def test_export_import_round_trip(platform: Platform) -> None:
    pid = platform.offline.import_yaml(PROFILE)
    exported = platform.offline.export_yaml(pid)
    assert exported.startswith(f"id: {pid}\nname: Technicians\n")
    before = log_size(platform)
    assert platform.offline.import_yaml(exported) == pid
    assert log_size(platform) == before  # identical: nothing to write
    assert platform.offline.export_yaml(pid) == exported
    app = platform.records.retrieve_multiple("appmodule", where={"uniquename": "technicians"})[0]
    assert (app["offlinemode"], app["offlineprofilemode"], app["mobileofflineprofileid"]) == (
        1,
        1,
        pid,
    )
    # an edited file changes just what changed; a table left out is removed
    edited = exported.replace("sync_interval: 60", "sync_interval: 30")
    edited = edited.split("  contact:")[0] + "  workorder:" + edited.split("  workorder:")[1]
    assert platform.offline.import_yaml(edited) == pid
    draft_tables = [i.table for i in parse_profile(platform.offline.export_yaml(pid)).draft.items]
    assert draft_tables == ["account", "workorder"]
    assert "sync_interval: 30" in platform.offline.export_yaml(pid)
    published = platform.offline.publish(pid)
    assert published.item("workorder").file_columns == ("servicereport",)  # type: ignore[union-attr]


def test_a_copy_imports_into_another_database(platform: Platform, tmp_path: Path) -> None:
    from fieldsync.platform import open_platform

    pid = platform.offline.import_yaml(PROFILE)
    exported = platform.offline.export_yaml(pid)
    other = open_platform(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert other.offline.import_yaml(exported) == pid
        assert other.offline.export_yaml(pid) == exported
    finally:
        other.close()


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("    sync_interval: 60\n", "    sync_interval: sixty\n"), 14, "whole number"),
        (("  workorder:\n    filter: other", "  - workorder"), 5, "invalid YAML"),
        (("    sync_interval: 15\n", "    sync_interval: 3\n"), 9, "5 to 1440 minutes"),
        (("    filter: other\n", "    filter: mine\n"), 5, "filter must be one of"),
        (("    columns: [name, telephone1]", "    columns: [name, nope]"), 13, "unknown column"),
        (("    images: [sitephoto]", "    images: [servicereport]"), 8, "not an image column"),
        (("    files: [servicereport]", "    files: [sitephoto]"), 7, "not a file column"),
        (('value="0"', 'value="0" x'), 20, "line 3, column 72: not well-formed XML"),
        (('operator="eq"', 'operator="today"'), 20, "'today' cannot be used"),
        (('attribute="statecode"', 'attribute="nope"'), 20, "no column 'nope'"),
        (("    owned_by: [me, my_teams]\n", ""), 4, "needs at least one of me"),
        (("    relationships:", "    owned_by: [me]\n    relationships:"), 12, "combines"),
        (("description:", "colour:"), 2, "unknown key 'colour'"),
        (("    mode: classic", "    mode: fast"), 27, "mode must be one of"),
        (("name: Technicians\n", "name: [x\n"), 2, "invalid YAML"),
    ],
)
def test_invalid_files_name_the_line_and_change_nothing(
    platform: Platform, change: tuple[str, str], line: int, message: str
) -> None:
    text = PROFILE.replace(*change, 1)
    assert text != PROFILE
    before = log_size(platform)
    with pytest.raises(ProfileInvalid) as err:
        platform.offline.import_yaml(text)
    assert err.value.line == line, err.value.message
    assert message in err.value.message
    assert log_size(platform) == before


def test_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()

    def run(*args: str, code: int = 0, stdin: str | None = None) -> str:
        result = runner.invoke(main, [*args, "--database", url], input=stdin)
        assert result.exit_code == code, result.output
        return result.output

    source = tmp_path / "profile.yaml"
    source.write_text(PROFILE, encoding="utf-8")
    assert "valid" in run("profile", "validate", str(source))
    broken = tmp_path / "broken.yaml"
    broken.write_text(PROFILE.replace("sync_interval: 15", "sync_interval: 2"), encoding="utf-8")
    assert "error: line 9: profile 'Technicians', table 'workorder'" in run(
        "profile", "validate", str(broken), code=2
    )
    assert "error: line 9" in run("profile", "import", str(broken), code=2)
    assert "unpublished" not in run("profile", "list")
    pid = run("profile", "import", "-", stdin=PROFILE).strip()
    assert "Technicians" in run("profile", "list")
    assert "unpublished" in run("profile", "list")
    out = tmp_path / "out.yaml"
    run("profile", "export", "Technicians", "--output", str(out))
    assert out.read_text(encoding="utf-8") == run("profile", "export", pid)
    assert run("profile", "import", str(out)).strip() == pid
    assert "version 1" in run("profile", "publish", "Technicians")
    assert "version 2" in run("profile", "publish", pid)
    assert "no offline profile named 'Nope'" in run("profile", "publish", "Nope", code=2)
    run("user", "create", "lena")
    run("team", "create", "North")
    assert "added 2" in run(
        "profile", "add-member", "Technicians", "--user", "lena", "--team", "North"
    )
    assert "removed 1" in run("profile", "remove-member", "Technicians", "--team", "North")
    from fieldsync.offline.apps import create_app
    from fieldsync.platform import open_platform

    p = open_platform(url)
    try:
        create_app(p.records, "Field", "field", tables=["workorder", "account"])
    finally:
        p.close()
    generated = run("profile", "generate", "field").strip()
    assert "filter: other" in run("profile", "export", generated)


def test_the_readme_profile_example_is_valid(platform: Platform) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Offline profiles and apps", 1)[1].split("```yaml\n", 1)[1]
    text = block.split("```", 1)[0]
    parsed = platform.offline.validate_yaml(text)
    assert parsed is None
    pid = platform.offline.import_yaml(text)
    assert platform.offline.publish(pid).version == 1
