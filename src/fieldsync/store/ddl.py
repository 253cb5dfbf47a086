"""SQL tables built from table definitions, and the DDL that creates and alters them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateColumn

from fieldsync.schema.model import AlternateKey, Column, ColumnType, Table
from fieldsync.store.sqltypes import ExactDecimal, MultiChoice, UTCDateTime

T = ColumnType


def sql_type(col: Column) -> sa.types.TypeEngine[Any]:
    t = col.type
    if t is T.STRING:
        return sa.String(col.max_length)
    if t is T.MEMO:
        return sa.Text()
    if t is T.INTEGER or t is T.CHOICE:
        return sa.Integer()
    if t is T.BIGINT:
        return sa.BigInteger()
    if t is T.DECIMAL or t is T.MONEY:
        return ExactDecimal(precision=23 if t is T.DECIMAL else 19, scale=col.precision or 0)
    if t is T.FLOAT:
        return sa.Double()
    if t is T.BOOLEAN:
        return sa.Boolean(create_constraint=False)
    if t is T.DATETIME:
        return UTCDateTime()
    if t is T.DATE:
        return sa.Date()
    if t is T.MULTICHOICE:
        return MultiChoice()
    if t in (T.LOOKUP, T.UNIQUEIDENTIFIER, T.FILE, T.IMAGE):
        return sa.Uuid()
    raise AssertionError(f"no SQL type for {t}")  # pragma: no cover


def sql_columns(table: Table, col: Column) -> list[sa.Column[Any]]:
    """The SQL columns one logical column needs (a polymorphic lookup needs two)."""
    primary = col.name == table.primary_id
    cols: list[sa.Column[Any]] = [
        sa.Column(col.name, sql_type(col), primary_key=primary, nullable=not primary)
    ]
    if col.polymorphic:
        cols.append(sa.Column(col.type_column, sa.String(64), nullable=True))
    return cols


INDEXED = (T.LOOKUP, T.UNIQUEIDENTIFIER, T.FILE, T.IMAGE)


def index_names(table: Table, col: Column) -> str | None:
    """Columns that get an index: the version (delta reads), every lookup (scope joins) and
    every file and image column (which rows hold a file: write checks, grants, collection)."""
    if col.name == table.primary_id:
        return None
    if col.name == "versionnumber" or col.type in INDEXED:
        return f"ix_{table.name}_{col.name}"[:63]
    return None


def key_index_name(table: Table, key: AlternateKey) -> str:
    """The unique index behind an alternate key."""
    return f"ak_{table.name}_{key.name}"[:63]


def create_key_index(conn: sa.Connection, table: Table, key: AlternateKey) -> None:
    helper = sa.Table(
        table.name,
        sa.MetaData(),
        *(c for name in key.columns for c in sql_columns(table, table.columns[name])[:1]),
    )
    sa.Index(key_index_name(table, key), *(helper.c[n] for n in key.columns), unique=True).create(
        conn
    )


def build_sql_table(table: Table, metadata: sa.MetaData) -> sa.Table:
    columns: list[Any] = []
    for col in table.columns.values():
        columns.extend(sql_columns(table, col))
        name = index_names(table, col)
        if name:
            columns.append(sa.Index(name, col.name))
    if table.intersect:
        lookups = [c.name for c in table.lookups()]
        columns.append(sa.UniqueConstraint(*lookups, name=f"uq_{table.name}"[:63]))
    return sa.Table(table.name, metadata, *columns)


def add_column_ddl(conn: sa.Connection, table: Table, col: Column) -> None:
    """ALTER TABLE … ADD COLUMN for each SQL column of ``col``, and its index."""
    quoted = conn.dialect.identifier_preparer.quote(table.name)
    for sql_col in sql_columns(table, col):
        sa.Table(table.name, sa.MetaData(), sql_col)  # binds the column to a table for compiling
        spec = CreateColumn(sql_col).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN {spec}")
    add_index_ddl(conn, table, col)


def add_index_ddl(conn: sa.Connection, table: Table, col: Column) -> None:
    """CREATE INDEX for a column that gets one (see :func:`index_names`), unless it exists."""
    name = index_names(table, col)
    if name:
        helper = sa.Table(table.name, sa.MetaData(), *sql_columns(table, col))
        sa.Index(name, helper.c[col.name]).create(conn, checkfirst=True)
