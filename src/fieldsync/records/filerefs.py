"""Which files a write may put in file and image columns.

A file or image column holds a file id, and whoever may read the row may read the file
(:meth:`fieldsync.files.service.Files.for_column`, the sync grants). So a row may reference
only a file its writer may already read:

(a) one they uploaded themselves that no row references yet (``fs_file.createdby`` is the
    writer and ``fs_file.attachedon`` is null), or
(b) one that a row they can read already holds in a column of the same type (file or image).

Setting a column to null, or to the value it already holds, is always allowed. Anything else
is refused exactly like an id that does not exist (``LookupNotFound``, "file … does not
exist"), so a refusal never tells whether a file exists. Trusted callers (SYSTEM, ``acting_as``)
skip (a) and (b); every write still needs the file to exist.

The write that first references a file marks it attached, in its own transaction: a rejected
or rolled-back write leaves the upload free for its uploader to attach. The checks are batched:
one query on ``fs_file`` for every file a write names, and, only for files copied from other
rows, one query per readable table and column of that type (file and image columns are
indexed).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import LookupNotFound, ValidationError
from fieldsync.query.ast import TRUE
from fieldsync.records.pipeline import Op, Pipeline
from fieldsync.schema.model import ColumnType, Table
from fieldsync.security.model import Privilege
from fieldsync.security.predicate import has_privilege, privilege_filter
from fieldsync.store.catalog import fs_file
from fieldsync.store.store import utcnow
from fieldsync.types import Row


def refused(table: Table, column: str, file_id: uuid.UUID) -> LookupNotFound:
    """The one answer for a file that does not exist and for one the writer may not use."""
    return LookupNotFound(table.name, column, f"file {file_id} does not exist")


def check_file_references(
    pipeline: Pipeline, op: Op, table: Table, items: Iterable[tuple[Row, Row | None]]
) -> None:
    """Check the file and image values of a batch of writes (``(target, pre-image)`` pairs;
    no pre-image for a create) and mark the files they attach for the first time."""
    columns = [
        (name, table.columns[name].type)
        for name, is_file in pipeline.plan(table).references
        if is_file
    ]
    if not columns:
        return
    wanted: dict[ColumnType, dict[uuid.UUID, str]] = defaultdict(dict)
    for target, pre in items:
        for name, kind in columns:
            value = target.get(name)
            if value is None or (pre is not None and pre.get(name) == value):
                continue
            wanted[kind].setdefault(value, name)
    if not wanted:
        return
    every = {fid for ids in wanted.values() for fid in ids}
    facts: dict[uuid.UUID, Any] = {}
    key = fs_file.c.fileid
    for where in pipeline.id_filters(key, every):
        stmt = sa.select(
            key, fs_file.c.createdby, fs_file.c.attachedon, fs_file.c.thumbnail, fs_file.c.isimage
        )
        facts.update((row.fileid, row) for row in op.conn.execute(stmt.where(where)))
    caller = op.caller
    fresh = {fid for fid, row in facts.items() if row.attachedon is None}
    if not caller.is_system:
        for kind, ids in wanted.items():
            copied: list[uuid.UUID] = []
            for fid, name in ids.items():
                row = facts.get(fid)
                if row is None:
                    raise refused(table, name, fid)
                if row.attachedon is None and row.createdby == caller.user_id:
                    if kind is ColumnType.IMAGE and not (row.isimage or row.thumbnail):
                        raise ValidationError(table.name, name, f"file {fid} is not an image")
                else:
                    copied.append(fid)
            if copied:
                held = _held_by_readable_rows(pipeline, op, kind, copied)
                for fid in copied:
                    if fid not in held:
                        raise refused(table, ids[fid], fid)
    if fresh:
        now = utcnow()
        for where in pipeline.id_filters(key, fresh):
            op.conn.execute(
                fs_file.update().where(where, fs_file.c.attachedon.is_(None)).values(attachedon=now)
            )


def _held_by_readable_rows(
    pipeline: Pipeline, op: Op, kind: ColumnType, ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of ``ids`` a row the caller may read holds in a column of type ``kind``."""
    found: set[uuid.UUID] = set()
    left = set(ids)
    store = pipeline.store
    for t in store.schema.tables.values():
        names = [c.name for c in t.columns.values() if c.type is kind]
        if not names or not has_privilege(op.caller, t, Privilege.READ):
            continue
        node = privilege_filter(op.caller, t, Privilege.READ)
        readable = None if node == TRUE else pipeline.sql_filter(t, node)
        sql = store.sql_table(t.name)
        for name in names:
            col = sql.c[name]
            for where in pipeline.id_filters(col, sorted(left, key=str)):
                stmt = sa.select(col).where(where)
                if readable is not None:
                    stmt = stmt.where(readable)
                found.update(op.conn.execute(stmt.distinct()).scalars())
            left -= found
            if not left:
                return found
    return found
