"""The machinery every write shares: coercion, plugin stages, reference checks,
authorization, change-log rows, and the per-table plan that makes batches cheap."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    Forbidden,
    LookupNotFound,
    MissingRequired,
    ReadOnlyColumn,
    RecordNotFound,
    UnknownColumn,
    ValidationError,
)
from fieldsync.query.ast import TRUE, Node, Shared
from fieldsync.query.compile import compile_filter
from fieldsync.records.plugins import Message, PluginContext, PluginRegistry, Stage
from fieldsync.schema.model import ColumnType, Ownership, Table
from fieldsync.schema.values import Coercer, jsonable, make_coercer
from fieldsync.security.model import SYSTEM_CONTEXT, Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege, privilege_filter
from fieldsync.store.catalog import fs_file
from fieldsync.store.store import Store
from fieldsync.types import RecordId, Row, Version, as_uuid

if TYPE_CHECKING:
    from fieldsync.records.service import BoundRecords

CHUNK = 500
STATUS_FOR_STATE = {0: 1, 1: 2}
SCOPE_COLUMNS = ("ownerid", "owneridtype", "owningbusinessunit")
_ABSENT = object()
T = TypeVar("T")


SYSTEM = SYSTEM_CONTEXT
SECURITY_RELATIONSHIPS = frozenset(
    {"teammembership_association", "systemuserroles_association", "teamroles_association"}
)
SHARE_TABLE = "principalobjectaccess"


def acting_as(user_id: RecordId, business_unit_id: RecordId) -> SecurityContext:
    """A trusted caller (no privilege checks) whose writes are recorded as ``user_id``'s:
    for seeding, migrations and server-side jobs."""
    return SecurityContext(user_id=user_id, business_unit_id=business_unit_id, is_system=True)


def no_shares(node: Shared, row: Mapping[str, Any]) -> bool:
    return False  # a row being created has not been shared yet


@dataclass(frozen=True, slots=True)
class WritePlan:
    """What the write path needs to know about a table, worked out once per definition."""

    coercers: dict[str, Coercer]
    lookups: dict[str, str | None]  # lookup column -> its type column (polymorphic) or None
    references: tuple[tuple[str, bool], ...]  # (column, is file/image) that must exist
    required: tuple[str, ...]

    @classmethod
    def of(cls, table: Table) -> WritePlan:
        cols = table.columns.values()
        return cls(
            coercers={c.name: make_coercer(table, c) for c in cols},
            lookups={
                c.name: (c.type_column if c.polymorphic else None)
                for c in cols
                if c.type is ColumnType.LOOKUP
            },
            references=tuple(
                (c.name, c.type is not ColumnType.LOOKUP)
                for c in cols
                if (c.type is ColumnType.LOOKUP and c.name != "ownerid")
                or c.type in (ColumnType.FILE, ColumnType.IMAGE)
            ),
            required=tuple(c.name for c in cols if c.required),
        )


@dataclass(slots=True)
class Op:
    """One operation in flight: its transaction, its caller and its plugin depth."""

    conn: sa.Connection
    caller: SecurityContext
    depth: int


class Pipeline:
    """The pieces of the write pipeline (coercion, plugin stages, authorization, the SQL
    of a change); :class:`~fieldsync.records.service.Records` puts them in order, and
    :class:`~fieldsync.records.links.Links` uses them for associations and shares.

    ``binder`` gives plugins the records service bound to their operation: the service
    sets it to itself when it assembles its parts."""

    def __init__(
        self,
        store: Store,
        plugins: PluginRegistry | None = None,
        binder: Callable[[Op], BoundRecords] | None = None,
    ) -> None:
        self.store = store
        self.plugins = plugins or PluginRegistry()
        self.binder = binder
        self._plans: dict[str, tuple[Table, WritePlan]] = {}

    def bound(self, op: Op) -> BoundRecords:
        """The records service bound to an operation, for plugins."""
        if self.binder is None:
            raise RuntimeError("the pipeline runs plugins only inside a records service")
        return self.binder(op)

    # -- transactions -------------------------------------------------------------------

    def run(
        self, conn: sa.Connection | None, caller: SecurityContext, work: Callable[[Op], T]
    ) -> T:
        """Run one operation: in the caller's transaction when given one (whoever opened it
        runs it again after a deadlock), otherwise as its own concurrent unit of work
        (:meth:`Store.transact`). A refusal goes to the audit log (a plugin's own operations
        are part of the one refused, so only the outermost is written)."""
        try:
            if conn is not None:
                return work(Op(conn, caller, 0))
            # records lock the rows they write and point at: they run beside other writers
            return self.store.transact(lambda c: work(Op(c, caller, 0)), concurrent=True)
        except Forbidden as exc:
            self.store.audit.write_refused(caller.user_id, caller.username, exc.message)
            raise

    @contextmanager
    def reading(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        if conn is not None:
            yield conn
            return
        with self.store.read() as c:
            yield c

    # -- pieces of the pipeline ---------------------------------------------------------

    def plan(self, table: Table) -> WritePlan:
        # keyed by name and checked by identity: a reloaded schema brings new Table objects
        cached = self._plans.get(table.name)
        if cached is not None and cached[0] is table:
            return cached[1]
        plan = WritePlan.of(table)
        self._plans[table.name] = (table, plan)
        return plan

    def coercers_for(self, table: Table) -> dict[str, Coercer]:
        return self.plan(table).coercers

    def coerce(self, table: Table, values: Mapping[str, Any], *, creating: bool) -> Row:
        if not isinstance(values, Mapping):
            raise BadRequest(f"{table.name}: a row must be an object of column values")
        coercers = self.coercers_for(table)
        out: Row = {}
        for name, value in values.items():
            col = table.columns.get(name)
            if col is None:
                raise UnknownColumn(table.name, str(name), "no such column")
            if col.system:
                writable = name in ("ownerid", "statecode", "statuscode") or (
                    creating
                    and (
                        name == table.primary_id
                        or (name == "owningbusinessunit" and table.ownership is Ownership.BUSINESS)
                    )
                )
                if not writable:
                    raise ReadOnlyColumn(table.name, name, "is set by the platform")
            elif col.read_only:
                raise ReadOnlyColumn(table.name, name, "is read-only")
            if value is None:
                if col.required or (
                    col.system and name != "ownerid" and col.type is not ColumnType.LOOKUP
                ):
                    raise MissingRequired(table.name, name, "is required and cannot be cleared")
                if name == "ownerid":
                    raise MissingRequired(table.name, name, "every row needs an owner")
                out[name] = None
                continue
            out[name] = coercers[name](value)
        if "statecode" in out or "statuscode" in out:
            self.check_status(table, out)
        return out

    def coerce_row(
        self, table: Table, rid: object, values: Mapping[str, Any], *, creating: bool
    ) -> Row:
        """:meth:`coerce` for one row of a batch: an error names the row (``row_id``)."""
        try:
            return self.coerce(table, values, creating=creating)
        except FieldsyncError as exc:
            exc.row_id = rid
            raise

    @staticmethod
    def check_status(table: Table, target: Row) -> None:
        state = target.get("statecode")
        status = target.get("statuscode")
        if state is not None and status is None:
            target["statuscode"] = STATUS_FOR_STATE[state]
        elif state is not None and STATUS_FOR_STATE[state] != status:
            raise ValidationError(
                table.name, "statuscode", f"status reason {status} does not belong to state {state}"
            )
        elif status is not None and state is None:
            target["statecode"] = {v: k for k, v in STATUS_FOR_STATE.items()}[status]

    def run_stage(
        self,
        op: Op,
        table: Table,
        message: Message,
        stage: Stage,
        items: list[tuple[RecordId, Row, Row | None, Row | None]],
    ) -> bool:
        """Run one stage over a batch; returns whether any plugin ran."""
        if not self.plugins.has(table.name, message, stage):
            return False
        if self.plugins.serialises(table.name, message, stage):
            self.store.serialise_table(op.conn, table.name)  # before any plugin looks around
        bound = self.bound(op)
        for rid, target, pre, post in items:
            try:
                self.plugins.run(
                    PluginContext(
                        message=message,
                        stage=stage,
                        table=table.name,
                        record_id=rid,
                        target=target,
                        caller=op.caller,
                        records=bound,
                        depth=op.depth + 1,
                        pre_image=pre,
                        post_image=post,
                    )
                )
            except FieldsyncError as exc:
                exc.row_id = rid  # the outermost operation's row, whatever a plugin wrote
                raise
        return True

    def pre_stages(
        self,
        op: Op,
        table: Table,
        message: Message,
        items: list[tuple[RecordId, Row, Row | None, Row | None]],
        *,
        creating: bool,
    ) -> None:
        for stage in (Stage.PRE_VALIDATION, Stage.PRE_OPERATION):
            if self.run_stage(op, table, message, stage, items):
                for i, (rid, target, pre, post) in enumerate(items):
                    checked = self.coerce_row(table, rid, target, creating=creating)
                    if creating and checked.get(table.primary_id, rid) != rid:
                        raise BadRequest(f"{table.name}: a plugin cannot change the row's id")
                    target.clear()
                    target.update(checked)
                    items[i] = (rid, target, pre, post)

    def to_sql(self, table: Table, target: Row) -> Row:
        """Split lookups into id and, for polymorphic ones, the target table."""
        row = dict(target)
        for name, type_column in self.plan(table).lookups.items():
            value = row.get(name, _ABSENT)
            if value is _ABSENT:
                continue
            row[name] = None if value is None else value[0]
            if type_column is not None:
                row[type_column] = None if value is None else value[1]
        return row

    def check_references(
        self,
        op: Op,
        table: Table,
        targets: Iterable[Row],
        pending: set[RecordId],
    ) -> None:
        """Every lookup, file and image value must point at an existing row."""
        wanted: dict[str, dict[RecordId, str]] = defaultdict(dict)
        references = self.plan(table).references
        for target in targets:
            for name, is_file in references:
                value = target.get(name)
                if value is None:
                    continue
                if is_file:
                    wanted["fs_file"].setdefault(value, name)
                else:
                    rid, target_table = value
                    if not (target_table == table.name and rid in pending):
                        wanted[target_table].setdefault(rid, name)
        for target_table, ids in wanted.items():
            if target_table == "fs_file":
                key = fs_file.c.fileid
            else:
                sql = self.store.sql_table(target_table)
                key = sql.c[self.store.schema.table(target_table).primary_id]
            found = self.existing(op.conn, key, ids, hold=True)
            for rid, name in ids.items():
                if rid not in found:
                    what = "file" if target_table == "fs_file" else target_table
                    raise LookupNotFound(table.name, name, f"{what} {rid} does not exist")
            if target_table == "fs_file" or op.caller.unrestricted:
                continue
            target_def = self.store.schema.table(target_table)
            node = privilege_filter(op.caller, target_def, Privilege.APPEND_TO)
            allowed = self.permitted(op.conn, target_def, ids, node)
            for rid, name in ids.items():
                if rid not in allowed:
                    readable = self.permitted(
                        op.conn,
                        target_def,
                        [rid],
                        privilege_filter(op.caller, target_def, Privilege.READ),
                    )
                    if not readable:
                        raise LookupNotFound(
                            table.name, name, f"{target_table} {rid} does not exist"
                        )
                    raise Forbidden(
                        f"{table.name}.{name}: you may not link rows to {target_table} {rid} "
                        "(no append to privilege on it)"
                    )

    def id_filters(
        self, key: sa.ColumnElement[Any], ids: Iterable[RecordId]
    ) -> Iterator[sa.ColumnElement[bool]]:
        """``key in ids`` as few conditions as the backend allows: one ``= ANY(array)`` on
        PostgreSQL (one cached statement, whatever the count), IN lists of 500 on SQLite."""
        id_list = list(ids)
        if not id_list:
            return
        if self.store.dialect == "postgresql":
            yield key == sa.any_(sa.bindparam("ids", id_list, type_=pg.ARRAY(sa.Uuid())))
            return
        for i in range(0, len(id_list), CHUNK):
            yield key.in_(id_list[i : i + CHUNK])

    def existing(
        self,
        conn: sa.Connection,
        key: sa.ColumnElement[Any],
        ids: Iterable[RecordId],
        *,
        hold: bool = False,
    ) -> set[RecordId]:
        """Which of ``ids`` exist. ``hold``: the rows found stay (``FOR KEY SHARE`` on
        PostgreSQL, until the transaction ends), so a concurrent delete waits for the write
        that points at them, or the write, waiting, finds them gone."""
        found: set[RecordId] = set()
        for where in self.id_filters(key, ids):
            stmt = sa.select(key).where(where)
            if hold:
                stmt = stmt.with_for_update(read=True, key_share=True)
            found.update(conn.execute(stmt).scalars())
        return found

    # -- authorization ------------------------------------------------------------------

    def require(self, caller: SecurityContext, table: Table, privilege: Privilege) -> Node:
        """The privilege's row filter; a caller without the privilege on the table at all is
        refused here."""
        if not has_privilege(caller, table, privilege):
            raise Forbidden(
                f"{caller.username or caller.user_id} lacks the {privilege.name.lower()} "
                f"privilege on {table.name}"
            )
        return privilege_filter(caller, table, privilege)

    def resolve(self, name: str) -> tuple[Table, sa.Table]:
        return self.store.schema.table(name), self.store.sql_table(name)

    def sql_filter(
        self, table: Table, node: Node, caller: SecurityContext | None = None
    ) -> sa.ColumnElement[bool]:
        """Compile a filter on ``table``; with a ``caller``, the related rows that link
        filters look at are limited to the ones the caller may read."""
        guard = None
        if caller is not None and not caller.unrestricted:

            def guard(t: Table) -> Node:
                return privilege_filter(caller, t, Privilege.READ)

        return compile_filter(
            node,
            self.store.sql_table(table.name),
            primary_key=table.primary_id,
            shares=self.store.sql_table(SHARE_TABLE),
            dialect=self.store.dialect,
            definition=table,
            resolve=self.resolve,
            guard=guard,
        )

    def permitted(
        self, conn: sa.Connection, table: Table, ids: Iterable[RecordId], node: Node
    ) -> set[RecordId]:
        """Which of ``ids`` pass ``node`` (checked in the database)."""
        id_list = list(ids)
        if node == TRUE:
            return set(id_list)
        sql = self.store.sql_table(table.name)
        pk = sql.c[table.primary_id]
        where = self.sql_filter(table, node)
        found: set[RecordId] = set()
        for ids_in in self.id_filters(pk, id_list):
            found.update(conn.execute(sa.select(pk).where(ids_in, where)).scalars())
        return found

    def authorize_rows(
        self,
        op: Op,
        table: Table,
        ids: Iterable[RecordId],
        privilege: Privilege,
        allowed: set[RecordId] | None = None,
    ) -> None:
        """Every row must pass the privilege. A row the caller cannot read is reported as
        missing, exactly like an id that does not exist (even when the caller holds no
        privilege on the table at all), so refusals never reveal which rows exist; a row they
        can read is refused as forbidden. ``allowed``: the rows already known to pass (read
        with their pre-images), when the caller has them."""
        id_list = list(ids)
        if allowed is None:
            node = privilege_filter(op.caller, table, privilege)
            allowed = self.permitted(op.conn, table, id_list, node)
        refused = [i for i in id_list if i not in allowed]
        if not refused:
            return
        readable = self.permitted(
            op.conn, table, refused, privilege_filter(op.caller, table, Privilege.READ)
        )
        for rid in refused:
            if rid not in readable:
                missing = RecordNotFound(table.name, rid)
                missing.row_id = rid
                raise missing
        forbidden = Forbidden(
            f"{op.caller.username or op.caller.user_id} lacks the {privilege.name.lower()} "
            f"privilege on {table.name} {refused[0]}"
        )
        forbidden.row_id = refused[0]
        raise forbidden

    def linking(self, table: Table, targets: Iterable[tuple[RecordId, Row]]) -> list[RecordId]:
        """The rows that set a lookup (other than the owner): those need Append."""
        return [
            rid
            for rid, t in targets
            if any(
                v is not None and table.columns[k].type is ColumnType.LOOKUP and k != "ownerid"
                for k, v in t.items()
            )
        ]

    def authorize_links(
        self, op: Op, table: Table, targets: Iterable[tuple[RecordId, Row]]
    ) -> None:
        """Setting a lookup on existing rows needs Append on each of them, at its depth (as
        Write is); Append To on the row it points at is checked with the references. A new
        row's Append is checked on the row as it will be stored (see the create)."""
        if op.caller.unrestricted:
            return
        linking = self.linking(table, targets)
        if linking:
            self.require(op.caller, table, Privilege.APPEND)
            self.authorize_rows(op, table, linking, Privilege.APPEND)

    def owner_units(
        self, op: Op, table: Table, owners: Iterable[tuple[RecordId, str]]
    ) -> dict[tuple[RecordId, str], RecordId]:
        """The business unit of each owner (user or team); an unknown or disabled owner is
        an error (as in Dataverse, rows cannot be given to a disabled user or team)."""
        by_table: dict[str, set[RecordId]] = defaultdict(set)
        for rid, kind in owners:
            by_table[kind].add(rid)
        units: dict[tuple[RecordId, str], RecordId] = {}
        for kind, ids in by_table.items():
            sql = self.store.sql_table(kind)
            pk = sql.c[f"{kind}id"]
            for where in self.id_filters(pk, ids):
                stmt = sa.select(pk, sql.c.businessunitid, sql.c.isdisabled).where(where)
                for rid, unit, disabled in op.conn.execute(stmt):
                    if disabled:
                        raise ValidationError(
                            table.name, "ownerid", f"{kind} {rid} is disabled and cannot own rows"
                        )
                    units[(rid, kind)] = unit
            for rid in ids:
                if (rid, kind) not in units:
                    raise LookupNotFound(table.name, "ownerid", f"{kind} {rid} does not exist")
        return units

    def row_id(self, table: Table, record_id: object) -> RecordId:
        try:
            return as_uuid(record_id if isinstance(record_id, uuid.UUID) else str(record_id))
        except ValueError:
            raise BadRequest(f"{table.name}: {record_id!r} is not a valid id (a GUID)") from None

    def select_columns(
        self, table: Table, sql: sa.Table, columns: Iterable[str] | None
    ) -> list[sa.Column[Any]]:
        if columns is None:
            return list(sql.c)
        out = [sql.c[table.primary_id]]
        for name in columns:
            col = table.column(name)
            if col is None:
                raise UnknownColumn(table.name, name, "no such column")
            if name != table.primary_id:
                out.append(sql.c[name])
            if col.polymorphic:
                out.append(sql.c[col.type_column])
        return out

    def change(
        self,
        table: Table,
        rid: RecordId,
        version: Version,
        operation: str,
        caller: SecurityContext,
        now: dt.datetime,
        changed: list[str] | None = None,
        old: Row | None = None,
    ) -> Row:
        change: Row = {
            "version": version,
            "tablename": table.name,
            "recordid": rid,
            "operation": operation,
            "userid": caller.user_id,
            "changedon": now,
        }
        # keys are left out rather than set to None, so a batch of creates inserts fewer
        # parameters; every list handed to one INSERT has the same keys
        if changed is not None:
            change["changed"] = changed
        if old is not None:
            change["old"] = {k: jsonable(v) for k, v in old.items()}
        return change

    # -- shared by create and update ---------------------------------------------------

    @staticmethod
    def refuse_share_table(table: Table) -> None:
        if table.name == SHARE_TABLE:
            raise BadRequest("record shares change through share and unshare")

    def complete_columns(self, table: Table, rows: list[Row]) -> None:
        """Give every row the same keys, so one multi-row INSERT takes them all."""
        keys: set[str] = set()
        for row in rows:
            keys.update(row)
        for row in rows:
            if len(row) != len(keys):
                for key in keys:
                    row.setdefault(key, None)

    def pre_images(
        self,
        op: Op,
        table: Table,
        ids: list[RecordId],
        columns: Iterable[str] | None = None,
        *,
        allowed: tuple[Node, set[RecordId]] | None = None,
    ) -> dict[RecordId, Row]:
        """The rows as they are, locked for the rest of the transaction; ``columns`` narrows
        them to what the caller needs (always with the id and the version). ``allowed``, a
        privilege filter and a set: the ids of the rows that pass the filter are added to
        the set, by the same query (the filter is evaluated in the database, as
        :meth:`permitted` does)."""
        sql = self.store.sql_table(table.name)
        pk = sql.c[table.primary_id]
        if columns is None:
            selected = list(sql.c)
        else:
            wanted = {table.primary_id, "versionnumber", *columns}
            selected = [c for c in sql.c if c.name in wanted]
        keys = [str(c.name) for c in selected]
        at = keys.index(table.primary_id)
        width = len(keys)
        extra: list[sa.ColumnElement[Any]] = []
        if allowed is not None and allowed[0] != TRUE:
            passes = self.sql_filter(table, allowed[0])
            extra.append(sa.case((passes, sa.true()), else_=sa.false()))
        images: dict[RecordId, Row] = {}
        for where in self.id_filters(pk, ids):
            stmt = sa.select(*selected, *extra).where(where).with_for_update()
            for row in op.conn.execute(stmt).all():
                rid = row[at]
                images[rid] = dict(zip(keys, row[:width], strict=True))
                if extra and row[width]:
                    allowed[1].add(rid)  # type: ignore[index]
        for rid in ids:
            if rid not in images:
                missing = RecordNotFound(table.name, rid)
                missing.row_id = rid
                raise missing
        if allowed is not None and not extra:
            allowed[1].update(ids)
        return images

    def image_columns(
        self,
        table: Table,
        message: Message,
        items: list[tuple[RecordId, Row, Row | None, Row | None]],
    ) -> set[str] | None:
        """What an update must read first: everything when plugins look at the images,
        otherwise the changed columns and what scope depends on (for the change log)."""
        if any(self.plugins.has(table.name, message, s) for s in Stage):
            return None
        plan = self.plan(table)
        wanted = set(SCOPE_COLUMNS)
        for _, target, _, _ in items:
            for name in target:
                wanted.add(name)
                type_column = plan.lookups.get(name)
                if type_column is not None:
                    wanted.add(type_column)
        if table.ownership is Ownership.BUSINESS:
            wanted.add("owningbusinessunit")
        return wanted
