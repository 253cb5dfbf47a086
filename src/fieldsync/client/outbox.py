"""Local writes and the outbox: a create, update or delete changes the replica row and adds
(or folds into) an outbox entry in one transaction; the sync errors the server answered are
kept beside them.

An outbox entry carries the changed columns only, as wire values, and the version of the row
the device last saw (``base_version``); changes to one row that have not been sent yet fold
into one entry when that keeps parents before children.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from fieldsync.client.replica import Connection, Replica, encode, insert
from fieldsync.client.session import Session
from fieldsync.errors import (
    BadRequest,
    MissingRequired,
    ReadOnlyColumn,
    RecordNotFound,
    UnknownColumn,
)
from fieldsync.schema.model import ColumnType, Table
from fieldsync.schema.values import make_coercer


class Outbox:
    def __init__(self, replica: Replica, session: Session, notify: Callable[[], None]) -> None:
        self.replica = replica
        self.session = session
        self.notify = notify

    # -- writes -----------------------------------------------------------------------------

    def coerce(self, table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate local values as the server would (types, lengths, options) and return
        them as wire values."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            col = table.column(name)
            if col is None:
                if name.endswith("type") and table.column(name[:-4]) is not None:
                    out[name] = value
                    continue
                raise UnknownColumn(table.name, name, "no such column")
            if col.system and name not in ("ownerid", "statecode", "statuscode"):
                raise ReadOnlyColumn(table.name, name, "is set by the server")
            if value is None:
                out[name] = None
                continue
            coerced = make_coercer(table, col)(value)
            if col.type is ColumnType.LOOKUP:
                rid, target = coerced
                out[name] = str(rid)
                if col.polymorphic:
                    out[col.type_column] = target
            else:
                out[name] = encode(coerced)
        return out

    def create(self, table: str, values: Mapping[str, Any]) -> uuid.UUID:
        """Create a row offline; the id is made here and kept by the server."""
        t, sql = self.replica.table(table)
        given = dict(values)
        rid = record_id(given.pop(t.primary_id)) if t.primary_id in given else uuid.uuid4()
        wire = self.coerce(t, given)
        for col in t.columns.values():
            if col.required and not col.system and wire.get(col.name) is None:
                raise MissingRequired(table, col.name, "is required")
        wire[t.primary_id] = str(rid)
        user = self.session.user()
        now = dt.datetime.now(dt.UTC)
        local = dict(wire)
        if t.owned and "ownerid" not in local:
            local["ownerid"], local["owneridtype"] = user["id"], "systemuser"
        if t.has_business_unit and "owningbusinessunit" in sql:
            local.setdefault("owningbusinessunit", user["business_unit"])
        for name, default in (("statecode", 0), ("statuscode", 1)):
            if name in sql:
                local.setdefault(name, default)
        for name in ("createdon", "modifiedon"):
            if name in sql:
                local[name] = now.isoformat()
        for name in ("createdby", "modifiedby"):
            if name in sql:
                local[name] = user["id"]
        with self.replica.write() as conn:
            insert(conn, table, self.replica.stored(table, local))
            self._enqueue(conn, table, "create", rid, wire, None)
        self.notify()
        return rid

    def update(self, table: str, rid: uuid.UUID | str, values: Mapping[str, Any]) -> None:
        t, sql = self.replica.table(table)
        rid = record_id(rid)
        wire = self.coerce(t, values)
        wire.pop(t.primary_id, None)
        if not wire:
            return
        with self.replica.write() as conn:
            row = self.replica.version(conn, table, rid)
            if row is None:
                raise RecordNotFound(table, rid)
            local = dict(wire)
            if "modifiedon" in sql:
                local["modifiedon"] = dt.datetime.now(dt.UTC)
            self.replica.update_row(conn, table, rid, self.replica.stored(table, local))
            self._enqueue(conn, table, "update", rid, wire, row[0])
        self.notify()

    def delete(self, table: str, rid: uuid.UUID | str) -> None:
        self.replica.table(table)
        rid = record_id(rid)
        with self.replica.write() as conn:
            row = self.replica.version(conn, table, rid)
            if row is None:
                raise RecordNotFound(table, rid)
            self.replica.delete_rows(conn, table, [rid])
            self._enqueue(conn, table, "delete", rid, {}, row[0])
        self.notify()

    def _enqueue(
        self,
        conn: Connection,
        table: str,
        operation: str,
        rid: uuid.UUID,
        values: dict[str, Any],
        base: int | None,
    ) -> None:
        """Add a change to the outbox, folding it into an earlier change of the same row that
        has not been sent yet when that keeps parents before children."""
        unsent = conn.execute(
            "SELECT seq, operation, changes FROM _fs_outbox "
            "WHERE tablename = ? AND recordid = ? AND sent = 0 ORDER BY seq DESC LIMIT 1",
            (table, str(rid)),
        ).fetchone()
        sent_before = conn.execute(
            "SELECT count(*) FROM _fs_outbox WHERE tablename = ? AND recordid = ? AND sent = 1",
            (table, str(rid)),
        ).fetchone()[0]
        if unsent is not None:
            seq, op, changes = unsent
            if operation == "delete":
                conn.execute(
                    "DELETE FROM _fs_outbox WHERE tablename = ? AND recordid = ? AND sent = 0",
                    (table, str(rid)),
                )
                if op == "create" and not sent_before:
                    return  # never reached the server: nothing to delete there
            elif self._can_fold(conn, seq, values):
                merged = {**orjson.loads(changes), **values}
                conn.execute(
                    "UPDATE _fs_outbox SET changes = ? WHERE seq = ?",
                    (orjson.dumps(merged).decode(), seq),
                )
                return
        insert(
            conn,
            "_fs_outbox",
            {
                "changeid": str(uuid.uuid4()),
                "tablename": table,
                "operation": operation,
                "recordid": str(rid),
                "changes": orjson.dumps(values).decode(),
                "baseversion": base,
                "sent": 0,
            },
        )

    def _can_fold(self, conn: Connection, seq: int, values: Mapping[str, Any]) -> bool:
        """Folding into change ``seq`` is safe unless a value points at a row created later."""
        refs = [v for v in values.values() if isinstance(v, str) and len(v) == 36]
        if not refs:
            return True
        later = conn.execute(
            "SELECT count(*) FROM _fs_outbox WHERE operation = 'create' "
            f"AND recordid IN ({', '.join('?' for _ in refs)}) AND seq > ?",
            [*refs, seq],
        ).fetchone()[0]
        return int(later) == 0

    # -- reading the outbox and the sync errors ---------------------------------------------

    def pending_changes(self) -> int:
        with self.replica.read() as conn:
            return int(conn.execute("SELECT count(*) FROM _fs_outbox").fetchone()[0])

    def entries(self) -> list[dict[str, Any]]:
        with self.replica.read() as conn:
            rows = conn.execute("SELECT * FROM _fs_outbox ORDER BY seq").fetchall()
        return [
            {**dict(r), "changes": orjson.loads(r["changes"]), "sent": bool(r["sent"])}
            for r in rows
        ]

    def error_count(self) -> int:
        with self.replica.read() as conn:
            return int(conn.execute("SELECT count(*) FROM _fs_error").fetchone()[0])

    def errors(self) -> list[dict[str, Any]]:
        """The changes the server rejected, newest first, with the values they were reverted to."""
        with self.replica.read() as conn:
            rows = conn.execute("SELECT * FROM _fs_error ORDER BY seq DESC").fetchall()
        return [
            {
                **dict(r),
                "sent": orjson.loads(r["sent"]),
                "reverted": None if r["reverted"] is None else orjson.loads(r["reverted"]),
            }
            for r in rows
        ]

    def clear_errors(self) -> None:
        with self.replica.write() as conn:
            conn.execute("DELETE FROM _fs_error")
        self.notify()


def record_id(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadRequest(f"{value!r} is not a record id (a GUID)") from None
