"""A page of a collection read straight from the database driver's cursor.

SQLAlchemy turns every value of every row into its Python type before the caller sees it (a
SQLite id text into a ``uuid.UUID``, a date text into a ``datetime``), and rendering then turns
many of them back into text. A page of a collection takes the driver's values as they are and
converts each column once per distinct value, with SQLAlchemy's own converter for that column
(so a value renders exactly as it would through SQLAlchemy), except SQLite's id text, which is
already the id's hexadecimal digits and only needs its hyphens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Page:
    """``rows`` hold the driver's values. ``convert[i]`` turns column ``i``'s into the value
    SQLAlchemy would give (``None``: the driver's value is that value); ``text[i]``, where
    given, turns it straight into the JSON text an id renders as."""

    keys: tuple[str, ...]
    rows: Sequence[Sequence[Any]]
    convert: tuple[Convert | None, ...]
    text: tuple[Convert | None, ...]

    def typed(self, index: int) -> dict[str, Any]:
        """Row ``index`` as SQLAlchemy would give it, by column name."""
        return {
            k: v if c is None or v is None else c(v)
            for k, v, c in zip(self.keys, self.rows[index], self.convert, strict=True)
        }


def fetch(conn: sa.Connection, stmt: sa.Select[Any]) -> Page:
    """Run ``stmt`` and take its rows from the driver."""
    columns = list(stmt.selected_columns)
    result = conn.execute(stmt)
    try:
        keys = tuple(result.keys())
        cursor = result.cursor
        assert cursor is not None
        assert len(columns) == len(keys)
        description = cursor.description
        rows = cursor.fetchall()
    finally:
        result.close()
    dialect = conn.dialect
    convert: list[Convert | None] = []
    text: list[Convert | None] = []
    for i, col in enumerate(columns):
        process = col.type.dialect_impl(dialect).result_processor(dialect, description[i][1])
        convert.append(process)
        if process is not None and isinstance(col.type, sa.Uuid) and col.type.as_uuid:
            text.append(_id_text(process))  # stored as text: its hex digits
        else:
            text.append(None)
    return Page(keys, rows, tuple(convert), tuple(text))


def _id_text(process: Convert) -> Convert:
    def text(raw: Any) -> Any:
        # SQLAlchemy stores an id it cannot store natively as its 32 lowercase hex digits
        if type(raw) is str and len(raw) == 32:
            return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
        return str(process(raw))

    return text
