"""The README documents every command and every setting (the docs are part of the product)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from fieldsync.cli import main
from fieldsync.config import describe

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def command_paths(group: click.Group, prefix: str = "fieldsync") -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from command_paths(command, path)
        else:
            yield path


def test_every_command_is_in_the_readme() -> None:
    missing = [p for p in command_paths(main) if f"`{p}" not in README]
    assert missing == []


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name, _, _ in describe() if f"`{name}`" not in README]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]


def test_the_readme_query_example_runs(tmp_path: Path) -> None:
    from fieldsync.demo import seed_demo
    from fieldsync.platform import open_platform
    from fieldsync.security.context import load_context

    platform = open_platform(f"sqlite:///{tmp_path / 'docs.db'}")
    try:
        seed_demo(platform)
        context = load_context(platform.store, platform.org.user_id("lena"))
        block = README.split("## Queries", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
        names: dict[str, object] = {"platform": platform, "context": context}
        exec(block, names)
        assert names["rows"]
    finally:
        platform.close()
