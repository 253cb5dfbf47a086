"""Keeps bench/records.py runnable: a tiny SQLite-only run must print and return figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "records.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fieldsync_bench_records", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_bench_runs_and_reports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bench = load_bench()
    out_json = tmp_path / "bench.json"
    report = bench.main(
        ["--rows", "200", "--batch", "100", "--repeat", "1", "--no-pg", "--json", str(out_json)]
    )

    results = {(r["backend"], r["operation"]): r for r in report["results"]}
    assert set(results) == {("sqlite", "create"), ("sqlite", "update")}
    for r in results.values():
        assert r["rows"] == 200
        assert r["service_rows_per_s"] > 0
        assert r["baseline_rows_per_s"] > 0
        assert r["ratio"] > 0
    assert report["skipped"] == {"postgresql": "--no-pg"}
    assert report["versions"]["sqlite"]
    assert out_json.read_text().strip().startswith("{")

    printed = capsys.readouterr().out
    assert "service rows/s" in printed
    assert "sqlite      create" in printed
    assert "sqlite      update" in printed


SECURITY_BENCH = BENCH.with_name("security.py")


def load_security_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fieldsync_bench_security", SECURITY_BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_security_bench_runs_and_reports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Keeps bench/security.py runnable: every case returns the rows the data says (the
    bench checks that itself) and the table prints."""
    bench = load_security_bench()
    out_json = tmp_path / "security.json"
    report = bench.main(
        ["--rows", "2000", "--repeat", "1", "--no-pg", "--json", str(out_json), "--explain"]
    )

    results = report["results"]
    assert {r["backend"] for r in results} == {"sqlite"}
    assert {r["store"] for r in results} == {"all", "mix"}
    for r in results:
        assert r["seconds"] > 0
        assert r["ratio"] > 0
        assert len(r["times"]) == 1
    by_case = {(r["store"], r["case"]): r for r in results}
    for case in ("unfiltered (baseline)", "user depth, owns all", "BU depth, unit holds all"):
        assert by_case[("all", case)]["rows"] == 2000
    gated = [r for r in results if r["target"] is not None]
    assert len(gated) == 4
    assert all(r["verdict"] in ("PASS", "MISS") for r in gated)
    shares = [r for r in gated if "shares" in r["case"]]
    assert len(shares) == 2
    assert all("principalobjectaccess" in r["sql_where"] for r in shares)
    assert all(r["sql_where"] == "" for r in results if r["kind"] != "case")
    contexts = report["contexts"]["sqlite"]
    assert {c["user"] for c in contexts} >= {"owner", "local", "sharer"}
    assert all(c["load_context_ms"] > 0 for c in contexts)
    assert report["skipped"] == {"postgresql": "--no-pg"}
    assert out_json.read_text().strip().startswith("{")

    printed = capsys.readouterr().out
    assert "vs unfiltered" in printed
    assert "load_context ms" in printed
    assert "within 2x of unfiltered:" in printed
    assert "SCAN account" in printed  # --explain printed plans


def test_query_bench_runs_and_meets_its_target() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_query", Path(__file__).parent.parent / "bench" / "query.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--repeat", "1"])
    assert report["figures_ms"]["bind + compile to statement"] > 0
