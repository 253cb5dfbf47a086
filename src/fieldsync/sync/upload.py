"""The upload side of sync: a device's outbox, applied in order, at most once.

Each change carries a client change id (a UUID the device made), the table, the operation
(create, update, delete), the row id (the device makes the ids of the rows it creates), the
changed columns only, and the version the device last saw. Every change is applied through the
records service as the user (so authorization, validation and plugins apply). Runs of creates
or updates are written as batches, each in a savepoint; a refused change splits its run (see
:meth:`Uploader._apply_parts`) and is then tried alone in its own savepoint: it rolls back
alone, is written to the Sync Errors table, and the answer carries the server's row so the
device can revert. The outcome of every change is kept
under (user, device, client change id), in the same transaction, so a retried batch is answered
from that record instead of being applied twice; only the user who sent a change is ever
answered from its record.

Merge: an update writes only the columns the device changed, so a concurrent change to
another column survives; for one column the last write to reach the server wins (the
Dataverse rule). Tables listed as *server wins* reject a change to a column the server changed
since the version the device saw; a conflict resolver registered for the table
(``PluginRegistry.resolve_conflicts``) may instead decide what to write.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    NotFound,
    PluginError,
    PreconditionFailed,
    RecordNotFound,
)
from fieldsync.limits import MAX_JSON_DEPTH, json_depth_over
from fieldsync.query.ast import And, Query, is_in
from fieldsync.records.plugins import Conflict
from fieldsync.records.service import Records
from fieldsync.schema.model import ColumnType, Table
from fieldsync.security.model import SYSTEM_CONTEXT, SecurityContext
from fieldsync.store.catalog import fs_change, fs_sync_applied
from fieldsync.store.store import utcnow
from fieldsync.sync.download import wire
from fieldsync.sync.merge import Policy, ServerRow, decide, needs_history, needs_row
from fieldsync.sync.protocol import (
    ERROR_TYPE_CONFLICT,
    ERROR_TYPE_EXISTS,
    ERROR_TYPE_NOT_FOUND,
    ERROR_TYPE_OTHER,
    OPERATIONS,
    ChangeAnswer,
    ChangeApplied,
    ChangeRejected,
)
from fieldsync.sync.scope import ScopePlan
from fieldsync.types import EntityRef

log = logging.getLogger(__name__)

MAX_BATCH = 500
SERVER_WINS_KEY = "sync.server_wins"


@dataclass(frozen=True)
class ClientChange:
    change_id: uuid.UUID
    table: str
    operation: str
    record_id: uuid.UUID
    values: Mapping[str, Any]
    base_version: int | None
    problem: str | None = None  # why the change is refused before it is tried

    @classmethod
    def parse(cls, data: object, position: int) -> ClientChange:
        where = f"change {position + 1}"
        if not isinstance(data, Mapping):
            raise BadRequest(f"{where}: a change is a JSON object")
        try:
            change_id = uuid.UUID(str(data["id"]))
            record_id = uuid.UUID(str(data["record"]))
        except (KeyError, ValueError):
            raise BadRequest(f"{where}: 'id' and 'record' must be GUIDs") from None
        table, operation = data.get("table"), data.get("operation")
        if not isinstance(table, str) or not table:
            raise BadRequest(f"{where}: 'table' must name a table")
        if operation not in OPERATIONS:
            raise BadRequest(f"{where}: 'operation' must be one of {', '.join(OPERATIONS)}")
        values = data.get("values") or {}
        if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
            raise BadRequest(f"{where}: 'values' must be an object of column values")
        base = data.get("base_version")
        if base is not None and (isinstance(base, bool) or not isinstance(base, int) or base < 0):
            raise BadRequest(f"{where}: 'base_version' must be a version number or null")
        problem = None
        if json_depth_over(values, MAX_JSON_DEPTH):
            # refused on its own (a sync error), not with the batch: the rest applies, and
            # the device's outbox moves on
            problem = (
                f"{where}: 'values' nest objects and arrays more than {MAX_JSON_DEPTH} levels deep"
            )
            values = {}
        return cls(change_id, table, str(operation), record_id, dict(values), base, problem)


class Uploader:
    def __init__(
        self,
        records: Records,
        plan: ScopePlan,
        ctx: SecurityContext,
        *,
        device: str,
        server_wins: frozenset[str] = frozenset(),
    ) -> None:
        self.records = records
        self.store = records.store
        self.plan = plan
        self.ctx = ctx
        self.device = device
        self.server_wins = server_wins

    def apply(self, conn: sa.Connection, changes: list[ClientChange]) -> list[ChangeAnswer]:
        """Apply the changes in order; each outcome is recorded with it."""
        seen = self._already(conn, [c.change_id for c in changes])
        todo = [c for c in changes if c.change_id not in seen]
        outcome: dict[uuid.UUID, ChangeAnswer] = {}
        for run in self._runs(todo):
            self._apply_parts(conn, run, outcome)
        if outcome:
            now = utcnow()
            self.store.bulk_insert(
                conn,
                fs_sync_applied,
                [
                    {
                        "deviceid": self.device,
                        "changeid": c.change_id,
                        "userid": self.ctx.user_id,
                        "result": outcome[c.change_id],
                        "appliedon": now,
                    }
                    for c in todo
                ],
            )
        return [seen.get(c.change_id) or outcome[c.change_id] for c in changes]

    def _runs(self, changes: list[ClientChange]) -> list[list[ClientChange]]:
        """Consecutive creates, or updates without a conflict policy, of one table and of
        distinct rows: each run is tried as one batched write."""
        runs: list[list[ClientChange]] = []
        rows: set[uuid.UUID] = set()  # the rows of the last run
        for change in changes:
            last = runs[-1] if runs else None
            batchable = (change.problem is None and change.table in self.plan.tables) and (
                change.operation == "create"
                or (
                    change.operation == "update"
                    and self.policy(change).last_write_wins
                    and "ownerid" not in change.values
                )
            )
            if (
                last is not None
                and batchable
                and last[0].problem is None
                and last[0].table == change.table
                and last[0].operation == change.operation
                and change.record_id not in rows
            ):
                last.append(change)
            else:
                runs.append([change])
                rows.clear()
            rows.add(change.record_id)
        return runs

    def _apply_parts(
        self, conn: sa.Connection, run: list[ClientChange], outcome: dict[uuid.UUID, ChangeAnswer]
    ) -> None:
        """Apply a run in order: as one batched write when every change of it is accepted.
        When one is refused, the batch rolls back and the run is split around the change the
        error names (or in halves, when it names none): the parts before and after are tried
        again as batches, the change alone. A change applied alone gets exactly the answer
        it gets one at a time, so k refusals cost about k + 1 batches, not a write per
        change."""
        parts: list[tuple[list[ClientChange], bool]] = [(run, len(run) == 1)]
        while parts:
            part, alone = parts.pop()
            if alone:
                outcome[part[0].change_id] = self._apply_one(conn, part[0])
                continue
            done, refused = self._apply_run(conn, part)
            if done is not None:
                for change, result in zip(part, done, strict=True):
                    outcome[change.change_id] = result
                continue
            at = next((i for i, c in enumerate(part) if c.record_id == refused), None)
            if at is None:
                half = len(part) // 2
                pieces = [part[:half], part[half:]]
            else:
                pieces = [part[:at], part[at : at + 1], part[at + 1 :]]
            for piece in reversed([p for p in pieces if p]):  # the stack pops them in order
                parts.append((piece, len(piece) == 1))

    def _apply_run(
        self, conn: sa.Connection, run: list[ClientChange]
    ) -> tuple[list[ChangeAnswer] | None, object]:
        """A run as one batched write in a savepoint: the answers, or None and the row the
        refusal names (the savepoint rolled back)."""
        table = run[0].table
        if table not in self.plan.tables:
            return None, None
        t = self.plan.tables[table].table
        audit = self.store.audit.mark()
        savepoint = conn.begin_nested()
        try:
            if run[0].operation == "create":
                rows = []
                for c in run:
                    values = self._values(t, c.values, c.record_id)
                    values[t.primary_id] = c.record_id
                    rows.append(values)
                self.records.create_many(table, rows, caller=self.ctx, conn=conn)
                sql = self.store.sql_table(table)
                pk = sql.c[t.primary_id]
                versions: dict[uuid.UUID, int] = {}
                for where in self.records.pipeline.id_filters(pk, [c.record_id for c in run]):
                    stmt = sa.select(pk, sql.c.versionnumber).where(where)
                    versions.update((rid, v) for rid, v in conn.execute(stmt))
                found = [versions[c.record_id] for c in run]
            else:
                pairs = []
                for c in run:
                    values = self._values(t, c.values, c.record_id)
                    values.pop(t.primary_id, None)
                    pairs.append((c.record_id, values))
                found = self.records.update_many(table, pairs, caller=self.ctx, conn=conn)
        except FieldsyncError as exc:
            savepoint.rollback()
            self.store.audit.rolled_back(audit, refusals=False)  # each is tried again
            return None, exc.row_id if exc.row_id is not None else getattr(exc, "record_id", None)
        except sa.exc.IntegrityError:
            savepoint.rollback()
            self.store.audit.rolled_back(audit, refusals=False)
            return None, None
        savepoint.commit()
        return [_applied(c, v) for c, v in zip(run, found, strict=True)], None

    def _already(self, conn: sa.Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, ChangeAnswer]:
        if not ids:
            return {}
        found: dict[uuid.UUID, ChangeAnswer] = {}
        for where in self.records.pipeline.id_filters(fs_sync_applied.c.changeid, ids):
            rows = conn.execute(
                sa.select(fs_sync_applied.c.changeid, fs_sync_applied.c.result).where(
                    fs_sync_applied.c.userid == self.ctx.user_id,
                    fs_sync_applied.c.deviceid == self.device,
                    where,
                )
            )
            found.update((r[0], r[1]) for r in rows)
        return found

    def _apply_one(self, conn: sa.Connection, change: ClientChange) -> ChangeAnswer:
        audit = self.store.audit.mark()
        savepoint = conn.begin_nested()
        try:
            try:
                version = self._write(conn, change)
            except sa.exc.IntegrityError as exc:
                # a constraint the checks did not foresee: a poison change must not block the
                # ones behind it, so it becomes a sync error like any other refusal
                log.warning("change %s refused by the database: %s", change.change_id, exc.orig)
                raise StoreRefused(
                    f"{change.table} {change.record_id}: the database refused the change "
                    "(a duplicate or a broken reference)"
                ) from exc
        except FieldsyncError as exc:
            savepoint.rollback()
            self.store.audit.rolled_back(audit)  # the refusal stays, what it changed does not
            error_type = _error_type(exc)
            row = self._server_row(conn, change)
            self._sync_error(conn, change, exc, error_type)
            rejected: ChangeRejected = {
                "id": str(change.change_id),
                "record": str(change.record_id),
                "status": "rejected",
                "error": {"code": exc.code, "message": str(exc), "type": error_type},
                "row": row,
            }
            return rejected
        savepoint.commit()
        return _applied(change, version)

    def _write(self, conn: sa.Connection, change: ClientChange) -> int | None:
        if change.problem is not None:
            raise BadRequest(change.problem)
        if change.table not in self.plan.tables:
            raise BadRequest(f"table {change.table!r} is not in this device's offline profile")
        table = self.plan.tables[change.table].table
        values = self._values(table, change.values)
        r = self.records
        if change.operation == "create":
            values[table.primary_id] = change.record_id
            r.create(change.table, values, caller=self.ctx, conn=conn)
            return self._version(conn, table, change.record_id)
        if change.operation == "delete":
            return r.delete(change.table, change.record_id, caller=self.ctx, conn=conn)
        values.pop(table.primary_id, None)
        values = self._merge(conn, table, change, values)
        version: int | None = None
        owner = values.pop("ownerid", None)
        if owner is not None:
            version = r.assign(change.table, change.record_id, owner, caller=self.ctx, conn=conn)
        if values or version is None:
            version = r.update(change.table, change.record_id, values, caller=self.ctx, conn=conn)
        return version

    def _values(
        self, table: Table, raw: Mapping[str, Any], row_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        """Wire values as the records service takes them (a polymorphic lookup travels as
        two columns: the id and its table); an error names ``row_id``."""
        try:
            return self._wire_values(table, raw)
        except FieldsyncError as exc:
            exc.row_id = row_id
            raise

    def _wire_values(self, table: Table, raw: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in raw.items():
            col = table.column(name)
            if col is None and name.endswith("type"):
                owner = table.column(name[: -len("type")])
                if owner is not None and owner.polymorphic:
                    continue
            if col is not None and col.polymorphic and value is not None:
                target = raw.get(col.type_column)
                if not isinstance(target, str):
                    raise BadRequest(f"{table.name}.{name}: send its table in {col.type_column!r}")
                if not isinstance(value, str):
                    raise BadRequest(f"{table.name}.{name}: a reference is a GUID string")
                try:
                    value = EntityRef(target, uuid.UUID(value))
                except ValueError:
                    raise BadRequest(f"{table.name}.{name}: {value!r} is not a GUID") from None
            if col is not None and col.type is ColumnType.MULTICHOICE and isinstance(value, list):
                value = tuple(value)
            out[name] = value
        return out

    def policy(self, change: ClientChange, values: Mapping[str, Any] | None = None) -> Policy:
        """The conflict policy of the change's table (:mod:`fieldsync.sync.merge`): a
        resolver plugin registered for it, the server-wins setting, or last write wins.
        ``values`` are the device's values as the resolver sees them (default: as sent)."""
        server_wins = change.table in self.server_wins
        resolver = self.records.plugins.conflict_resolver(change.table)
        if resolver is None:
            return Policy(server_wins=server_wins)
        device = dict(change.values if values is None else values)

        def resolve(server: Mapping[str, Any], clash: list[str]) -> Mapping[str, Any]:
            return resolver(Conflict(change.table, change.record_id, dict(server), device, clash))

        return Policy(server_wins=server_wins, resolver=resolve)

    def _merge(
        self, conn: sa.Connection, table: Table, change: ClientChange, values: dict[str, Any]
    ) -> dict[str, Any]:
        """Decide what an update writes when the server changed the row since the device saw
        it (:func:`fieldsync.sync.merge.decide`): by default the device's columns (last write
        wins per column)."""
        policy = self.policy(change, values)
        if not needs_history(policy, values, change.base_version):
            return values
        rows = conn.execute(
            sa.select(fs_change.c.changed).where(
                fs_change.c.recordid == change.record_id,
                fs_change.c.version > change.base_version,
                fs_change.c.tablename == table.name,
            )
        )
        theirs: set[str] = set()
        for (changed,) in rows:
            theirs.update(changed or ())
        changed_since = frozenset(theirs)
        current = None
        if needs_row(policy, changed_since, values):
            current = self.records.retrieve(table.name, change.record_id, conn=conn)
        outcome = decide(policy, ServerRow(changed_since, current), values, change.base_version)
        if outcome.write is None:
            raise ConflictRejected(f"{table.name} {change.record_id}: {outcome.reason}")
        return dict(outcome.write)

    def _version(self, conn: sa.Connection, table: Table, rid: uuid.UUID) -> int:
        sql = self.store.sql_table(table.name)
        value: int = conn.execute(
            sa.select(sql.c.versionnumber).where(sql.c[table.primary_id] == rid)
        ).scalar_one()
        return value

    def _server_row(self, conn: sa.Connection, change: ClientChange) -> dict[str, Any] | None:
        """The row as the device should hold it now (in the columns that travel), or None
        when it is not in the device's scope (the device then drops it)."""
        tp = self.plan.tables.get(change.table)
        if tp is None:
            return None
        query = Query(
            table=change.table,
            columns=tp.columns,
            filter=And(
                (self.plan.node(change.table), is_in(tp.table.primary_id, [change.record_id]))
            ),
        )
        try:
            stmt = self.records.query_statement(query, caller=self.ctx, conn=conn)
        except FieldsyncError:
            return None
        row = conn.execute(stmt).first()
        return None if row is None else {c: wire(v) for c, v in zip(tp.columns, row, strict=True)}

    def _sync_error(
        self, conn: sa.Connection, change: ClientChange, exc: FieldsyncError, error_type: int
    ) -> None:
        action = {"create": "Create", "update": "Update", "delete": "Delete"}[change.operation]
        sent = {
            "id": str(change.change_id),
            "table": change.table,
            "operation": change.operation,
            "record": str(change.record_id),
            "values": change.values,
            "base_version": change.base_version,
        }
        self.records.create(
            "syncerror",
            {
                "name": change.table[:160],
                "errorcode": exc.code,
                "errormessage": str(exc)[:4000],
                "errordetail": type(exc).__name__,
                "errortype": error_type,
                "errortime": dt.datetime.now(dt.UTC),
                "action": action,
                "actiondata": orjson.dumps(change.values, default=str).decode(),
                "requestdata": orjson.dumps(sent, default=str).decode(),
                "regardingobjectid": change.record_id,
                "regardingobjecttypecode": change.table[:64],
                "deviceid": self.device,
                "clientchangeid": change.change_id,
                "ownerid": EntityRef("systemuser", self.ctx.user_id),
            },
            caller=SYSTEM_CONTEXT,
            conn=conn,
        )


def _applied(change: ClientChange, version: int | None) -> ChangeApplied:
    return {
        "id": str(change.change_id),
        "record": str(change.record_id),
        "status": "applied",
        "version": version,
    }


class StoreRefused(PreconditionFailed):
    """The database refused a change that passed every check (a constraint)."""


class ConflictRejected(PreconditionFailed):
    """A change to a column the server changed since, on a table where the server wins."""


def _error_type(exc: FieldsyncError) -> int:
    if isinstance(exc, ConflictRejected):
        return ERROR_TYPE_CONFLICT
    if isinstance(exc, (RecordNotFound, NotFound)):
        return ERROR_TYPE_NOT_FOUND
    if isinstance(exc, PreconditionFailed) and "exist" in str(exc):
        return ERROR_TYPE_EXISTS
    if isinstance(exc, PluginError):
        return ERROR_TYPE_OTHER
    return ERROR_TYPE_OTHER
