from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fieldsync.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_upgrade_twice_is_safe(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    code, out = run("upgrade", "--database", url)
    assert code == 0
    assert "applied:" in out
    code, out = run("upgrade", "--database", url)
    assert code == 0
    assert "up to date" in out


def test_upgrade_uses_the_data_dir(tmp_path: Path) -> None:
    code, _ = run("upgrade", "--data-dir", str(tmp_path / "data"))
    assert code == 0
    assert (tmp_path / "data" / "fieldsync.db").exists()


def test_tables_lists_builtin_tables(tmp_path: Path) -> None:
    code, out = run("tables", "--database", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 0
    assert "account" in out
    assert "workorders" in out


def test_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["upgrade", "--database", "mysql://nope"])
    assert result.exit_code == 2
    assert "unsupported database" in result.output


def test_in_memory_sqlite_is_refused() -> None:
    result = CliRunner().invoke(main, ["upgrade", "--database", "sqlite://"])
    assert result.exit_code == 2
    assert "SQLite file" in result.output
