"""Records: create, retrieve, update, delete, assign, associate, through one service.

Every write runs the same pipeline, in one transaction:

    (lock the version counter: Store.transact) -> coerce and check types -> pre-validation
    plugins -> pre-operation plugins -> authorize -> required columns -> system columns ->
    lookups exist (and may be linked to) -> files exist and the caller may read them
    (:mod:`fieldsync.records.filerefs`) -> take versions -> write rows and change log ->
    post-operation plugins -> commit

Batches (``create_many``, ``update_many``) run the pipeline over all their rows at once: one
version range, one bulk insert (COPY on PostgreSQL), one query per lookup target. An update's
write privilege is evaluated on the rows as they are locked, in the query that reads their
pre-images, and enforced after the plugins. Any error rolls the whole batch back;
one tied to a row of the batch names it in ``row_id``. Reads (``retrieve``,
``retrieve_multiple``, ``query``) carry the caller's read filter in their SQL.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import (
    BadRequest,
    Forbidden,
    MissingRequired,
    PreconditionFailed,
    RecordNotFound,
    UnknownColumn,
)
from fieldsync.query.ast import TRUE, Link, Node, Query
from fieldsync.query.bind import UserBinding, bind
from fieldsync.query.compile import compile_query
from fieldsync.query.evaluate import matches
from fieldsync.records.filerefs import check_file_references
from fieldsync.records.links import Links
from fieldsync.records.pipeline import (
    SCOPE_COLUMNS,
    SYSTEM,
    Op,
    Pipeline,
    acting_as,
    no_shares,
)
from fieldsync.records.plugins import Message, PluginRegistry, Stage
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID
from fieldsync.schema.model import ColumnType, Ownership, Schema, Table
from fieldsync.security.context import user_binding
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege, privilege_filter
from fieldsync.store import audit, bulk
from fieldsync.store.catalog import fs_change
from fieldsync.store.store import Store, utcnow
from fieldsync.types import EntityRef, RecordId, Row, Version


class Records:
    """The one way to write business rows.

    >>> records = Records(store)                                   # doctest: +SKIP
    >>> acc = records.create("account", {"name": "Contoso"})       # doctest: +SKIP
    >>> records.update("account", acc, {"telephone1": "555-0100"}) # doctest: +SKIP

    Assembled from named parts: ``pipeline`` (coercion, plugin stages, authorization, the
    SQL of a change) and ``links`` (associations, shares, cascades) on it; this class puts
    them in order for each operation.
    """

    def __init__(self, store: Store, plugins: PluginRegistry | None = None) -> None:
        self.pipeline = Pipeline(store, plugins, binder=self._bound)
        self.links = Links(self.pipeline)
        self.store = store
        self.plugins = self.pipeline.plugins

    def _bound(self, op: Op) -> BoundRecords:
        return BoundRecords(self, op.conn, op.caller, op.depth + 1)

    # -- public API ---------------------------------------------------------------------

    def create(
        self,
        table: str,
        values: Mapping[str, Any],
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> RecordId:
        return self.create_many(table, [values], caller=caller, conn=conn)[0]

    def create_many(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> list[RecordId]:
        return self.pipeline.run(conn, caller, lambda op: self._create(op, table, rows))

    def update(
        self,
        table: str,
        record_id: RecordId | str,
        values: Mapping[str, Any],
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> Version:
        return self.update_many(table, [(record_id, values)], caller=caller, conn=conn)[0]

    def update_many(
        self,
        table: str,
        changes: Sequence[tuple[RecordId | str, Mapping[str, Any]]],
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> list[Version]:
        return self.pipeline.run(
            conn, caller, lambda op: self._update(op, table, changes, Message.UPDATE)
        )

    def assign(
        self,
        table: str,
        record_id: RecordId | str,
        owner: EntityRef,
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> Version:
        t = self.store.schema.table(table)
        if not t.owned:
            raise BadRequest(
                f"{table} rows are not owned by users or teams; they cannot be assigned"
            )
        if not isinstance(owner, EntityRef):
            raise BadRequest("assign needs an owner reference (a user or a team)")
        return self.pipeline.run(
            conn,
            caller,
            lambda op: self._update(op, table, [(record_id, {"ownerid": owner})], Message.ASSIGN)[
                0
            ],
        )

    def delete(
        self,
        table: str,
        record_id: RecordId | str,
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> Version:
        return self.pipeline.run(conn, caller, lambda op: self._delete(op, table, record_id))

    def associate(
        self,
        relationship: str,
        first: RecordId | str,
        second: RecordId | str,
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> RecordId:
        """Link two rows through a many-to-many relationship; returns the intersect row id."""
        return self.pipeline.run(
            conn, caller, lambda op: self.links.associate(op, relationship, first, second)
        )

    def disassociate(
        self,
        relationship: str,
        first: RecordId | str,
        second: RecordId | str,
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> Version:
        return self.pipeline.run(
            conn, caller, lambda op: self.links.disassociate(op, relationship, first, second)
        )

    def share(
        self,
        table: str,
        record_id: RecordId | str,
        principal: EntityRef,
        rights: Iterable[Privilege] | int,
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> Version | None:
        """Grant ``principal`` (a user or a team) ``rights`` on one row, replacing what it had;
        empty rights remove the share. The caller needs Share on the row and must hold every
        right they grant. Returns the share's new version (``None`` if nothing changed)."""
        mask = rights if isinstance(rights, int) else sum({int(p) for p in rights})
        return self.pipeline.run(
            conn, caller, lambda op: self.links.share(op, table, record_id, principal, mask)
        )

    def unshare(
        self,
        table: str,
        record_id: RecordId | str,
        principal: EntityRef,
        *,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> Version | None:
        return self.share(table, record_id, principal, 0, caller=caller, conn=conn)

    def retrieve(
        self,
        table: str,
        record_id: RecordId | str,
        *,
        columns: Iterable[str] | None = None,
        expand: Mapping[str, Iterable[str] | None] | None = None,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> Row:
        """One row the caller may read (a row they may not read is reported as missing).

        ``expand`` maps lookup columns to the columns wanted from the row they point at; the
        related row appears under ``"<lookup>@expand"``, or ``None`` when it is missing or the
        caller may not read it."""
        t = self.store.schema.table(table)
        rid = self.pipeline.row_id(t, record_id)
        read = self.pipeline.require(caller, t, Privilege.READ)
        sql = self.store.sql_table(table)
        stmt = sa.select(*self.pipeline.select_columns(t, sql, columns)).where(
            sql.c[t.primary_id] == rid
        )
        if read != TRUE:
            stmt = stmt.where(self.pipeline.sql_filter(t, read))
        with self.pipeline.reading(conn) as c:
            row = c.execute(stmt).mappings().first()
            if row is None:
                raise RecordNotFound(table, rid)
            out = dict(row)
            for name, wanted in (expand or {}).items():
                out[f"{name}@expand"] = self._expand(c, caller, t, out, name, wanted)
        return out

    def _expand(
        self,
        conn: sa.Connection,
        caller: SecurityContext,
        table: Table,
        row: Row,
        name: str,
        wanted: Iterable[str] | None,
    ) -> Row | None:
        col = table.column(name)
        if col is None or col.type is not ColumnType.LOOKUP:
            raise UnknownColumn(table.name, name, "is not a lookup column to expand")
        if name not in row:
            raise BadRequest(f"{table.name}: select {name!r} to expand it")
        value = row[name]
        if value is None:
            return None
        target_name = row.get(col.type_column) if col.polymorphic else col.targets[0]
        target = self.store.schema.table(str(target_name))
        if not has_privilege(caller, target, Privilege.READ):
            return None
        sql = self.store.sql_table(target.name)
        stmt = sa.select(*self.pipeline.select_columns(target, sql, wanted)).where(
            sql.c[target.primary_id] == value
        )
        read = privilege_filter(caller, target, Privilege.READ)
        if read != TRUE:
            stmt = stmt.where(self.pipeline.sql_filter(target, read))
        related = conn.execute(stmt).mappings().first()
        return None if related is None else dict(related)

    def retrieve_multiple(
        self,
        table: str,
        *,
        columns: Iterable[str] | None = None,
        where: Mapping[str, Any] | None = None,
        filter: Node | None = None,
        order_by: str | None = None,
        limit: int | None = None,
        caller: SecurityContext = SYSTEM,
        conn: sa.Connection | None = None,
    ) -> list[Row]:
        """The rows the caller may read that match column equalities (``where``) and a query
        node (``filter``), in ``order_by`` (default: primary id) order."""
        t = self.store.schema.table(table)
        with self.pipeline.reading(conn) as c:
            return [
                dict(r)
                for r in c.execute(
                    self.select(
                        t,
                        columns=columns,
                        where=where,
                        filter=filter,
                        order_by=order_by,
                        limit=limit,
                        caller=caller,
                    )
                ).mappings()
            ]

    def query(
        self,
        query: Query,
        *,
        caller: SecurityContext = SYSTEM,
        now: dt.datetime | None = None,
        conn: sa.Connection | None = None,
    ) -> list[Row]:
        """Run a whole query (from FetchXML, OData or code) as the caller: user and date
        operators are bound to the caller and ``now``, and every table it touches (the root,
        joined tables, link filters) is limited to the rows the caller may read. Columns of
        joined tables come back as ``"alias.column"``."""
        with self.pipeline.reading(conn) as c:
            stmt = self.query_statement(query, caller=caller, now=now, conn=c)
            return [dict(r) for r in c.execute(stmt).mappings()]

    def query_statement(
        self,
        query: Query,
        *,
        caller: SecurityContext = SYSTEM,
        now: dt.datetime | None = None,
        conn: sa.Connection,
        binding: UserBinding | None = None,
    ) -> sa.Select[Any]:
        """The SELECT of a query as ``caller``. ``binding``: the caller's
        :func:`~fieldsync.security.context.user_binding`, when the caller runs many queries
        in one transaction (it costs a query of the manager hierarchy per level)."""
        schema = self.store.schema
        table = schema.table(query.table)
        self.pipeline.require(caller, table, Privilege.READ)
        aliases = _link_aliases(query.links)
        for name in set(aliases.values()):
            self.pipeline.require(caller, schema.table(name), Privilege.READ)
        if query.filter is not None:
            user = binding if binding is not None else user_binding(self.store, conn, caller)
            bound = bind(
                query.filter,
                table,
                user=user,
                now=now or utcnow(),
                tables=schema.table,
                aliases=aliases,
            )
            query = replace(query, filter=bound)
        guard = None
        if not caller.unrestricted:

            def guard(t: Table) -> Node:
                return privilege_filter(caller, t, Privilege.READ)

        return compile_query(
            query,
            resolve=self.pipeline.resolve,
            dialect=self.store.dialect,
            shares=self.store.sql_table("principalobjectaccess"),
            guard=guard,
        )

    def select(
        self,
        table: Table,
        *,
        columns: Iterable[str] | None = None,
        where: Mapping[str, Any] | None = None,
        filter: Node | None = None,
        order_by: str | None = None,
        limit: int | None = None,
        caller: SecurityContext = SYSTEM,
    ) -> sa.Select[Any]:
        """The SELECT behind :meth:`retrieve_multiple`, with the caller's read filter in it."""
        read = self.pipeline.require(caller, table, Privilege.READ)
        sql = self.store.sql_table(table.name)
        stmt = sa.select(*self.pipeline.select_columns(table, sql, columns))
        for name, value in (where or {}).items():
            if name not in sql.c:
                raise UnknownColumn(table.name, name, "no such column")
            col = table.column(name)
            if value is not None and col is not None and col.type is not ColumnType.MULTICHOICE:
                value = self.pipeline.coercers_for(table)[name](value)
                if isinstance(value, tuple):
                    value = value[0]
            stmt = stmt.where(sql.c[name].is_(None) if value is None else sql.c[name] == value)
        for node in (filter, read):
            if node is not None and node != TRUE:
                stmt = stmt.where(self.pipeline.sql_filter(table, node, caller))
        order = order_by or table.primary_id
        if order not in sql.c:
            raise UnknownColumn(table.name, order, "no such column to order by")
        stmt = stmt.order_by(sql.c[order], sql.c[table.primary_id])
        if limit is not None:
            stmt = stmt.limit(limit)
        return stmt

    # -- create -------------------------------------------------------------------------

    def _create(
        self, op: Op, table_name: str, inputs: Sequence[Mapping[str, Any]]
    ) -> list[RecordId]:
        table = self.store.schema.table(table_name)
        if table.intersect:
            raise BadRequest(f"{table_name} is an intersect table: use associate")
        self.pipeline.refuse_share_table(table)
        create_filter = self.pipeline.require(op.caller, table, Privilege.CREATE)
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise BadRequest("create_many takes a list of rows")
        if not inputs:
            return []
        pk = table.primary_id
        items: list[tuple[RecordId, Row, Row | None, Row | None]] = []
        seen: set[RecordId] = set()
        given: list[RecordId] = []
        for values in inputs:
            given_id = values.get(pk) if isinstance(values, Mapping) else None
            target = self.pipeline.coerce_row(table, given_id, values, creating=True)
            rid = target.get(pk)
            if rid is None:
                rid = target[pk] = uuid.uuid4()
            else:
                given.append(rid)
            if rid in seen:
                raise PreconditionFailed(f"{table_name} {rid} appears twice in one batch")
            seen.add(rid)
            items.append((rid, target, None, None))
        self.pipeline.pre_stages(op, table, Message.CREATE, items, creating=True)

        required = self.pipeline.plan(table).required
        for rid, target, _, _ in items:
            for name in required:
                if target.get(name) is None:
                    missing = MissingRequired(table_name, name, "is required")
                    missing.row_id = rid
                    raise missing
        linking = (
            set()
            if op.caller.unrestricted
            else set(self.pipeline.linking(table, ((rid, t) for rid, t, _, _ in items)))
        )
        append_filter = (
            self.pipeline.require(op.caller, table, Privilege.APPEND) if linking else TRUE
        )
        self.pipeline.check_references(op, table, (t for _, t, _, _ in items), seen)
        check_file_references(self.pipeline, op, table, [(t, None) for _, t, _, _ in items])
        self._refuse_existing(op, table, given)

        caller, now = op.caller, utcnow()
        units: dict[tuple[RecordId, str], RecordId] = {}
        if table.owned:
            owners = {t["ownerid"] for _, t, _, _ in items if t.get("ownerid") is not None}
            units = self.pipeline.owner_units(op, table, owners)
        rows: list[Row] = []
        for _, target, _, _ in items:
            row = self.pipeline.to_sql(table, target)
            row.update(
                createdon=now, modifiedon=now, createdby=caller.user_id, modifiedby=caller.user_id
            )
            row.setdefault("statecode", 0)
            row.setdefault("statuscode", 1)
            if table.owned:
                owner = target.get("ownerid") or (caller.user_id, "systemuser")
                row["ownerid"], row["owneridtype"] = owner
                row["owningbusinessunit"] = units.get(owner, caller.business_unit_id)
            elif table.ownership is Ownership.BUSINESS and row.get("owningbusinessunit") is None:
                row["owningbusinessunit"] = row.get("businessunitid") or caller.business_unit_id
            if create_filter != TRUE and not matches(create_filter, row, shared=no_shares):
                refused = Forbidden(
                    f"{caller.username or caller.user_id} may not create {table_name} rows "
                    "with this owner or business unit (create privilege depth)"
                )
                refused.row_id = row[pk]
                raise refused
            if (
                append_filter != TRUE
                and row[pk] in linking
                and not matches(append_filter, row, shared=no_shares)
            ):
                refused = Forbidden(
                    f"{caller.username or caller.user_id} may not set lookups on {table_name} "
                    "rows with this owner or business unit (append privilege depth)"
                )
                refused.row_id = row[pk]
                raise refused
            rows.append(row)
        self.pipeline.complete_columns(table, rows)

        versions = self.store.allocate_versions(op.conn, len(rows))
        for row, version in zip(rows, versions, strict=True):
            row["versionnumber"] = version
        with _alternate_keys(table):
            self.store.bulk_insert(op.conn, self.store.sql_table(table_name), rows)
        self.store.bulk_insert(
            op.conn,
            fs_change,
            [
                self.pipeline.change(table, row[pk], row["versionnumber"], "create", caller, now)
                for row in rows
            ],
        )
        if self.plugins.has(table_name, Message.CREATE, Stage.POST_OPERATION):
            self.pipeline.run_stage(
                op,
                table,
                Message.CREATE,
                Stage.POST_OPERATION,
                [
                    (row[pk], target, None, row)
                    for row, (_, target, _, _) in zip(rows, items, strict=True)
                ],
            )
        return [row[pk] for row in rows]

    def _refuse_existing(self, op: Op, table: Table, given: list[RecordId]) -> None:
        """A create may not reuse an id. One the caller can read is refused as existing
        (412); one they cannot read is refused exactly as a missing row is everywhere else
        (404, as updating or deleting it answers), so a create never tells that a row the
        caller may not see exists. (A create with an id no row has succeeds: that one
        cannot be told apart, and ids are random GUIDs.)"""
        existing = self.pipeline.existing(
            op.conn, self.store.sql_table(table.name).c[table.primary_id], given
        )
        if not existing:
            return
        if not op.caller.unrestricted:
            readable = self.pipeline.permitted(
                op.conn, table, existing, privilege_filter(op.caller, table, Privilege.READ)
            )
            hidden = sorted(existing - readable)
            if hidden:
                raise RecordNotFound(table.name, hidden[0])
        taken = sorted(existing)[0]
        exists = PreconditionFailed(f"{table.name} {taken} already exists", code="0x80040237")
        exists.row_id = taken
        raise exists

    # -- update and assign --------------------------------------------------------------

    def _update(
        self,
        op: Op,
        table_name: str,
        changes: Sequence[tuple[RecordId | str, Mapping[str, Any]]],
        message: Message,
    ) -> list[Version]:
        table = self.store.schema.table(table_name)
        if table.intersect:
            raise BadRequest(f"{table_name} is an intersect table: use associate or disassociate")
        self.pipeline.refuse_share_table(table)
        if isinstance(changes, (str, bytes)) or not isinstance(changes, Sequence):
            raise BadRequest("update_many takes a list of (id, values) pairs")
        if not changes:
            return []
        pk = table.primary_id
        items: list[tuple[RecordId, Row, Row | None, Row | None]] = []
        seen: set[RecordId] = set()
        for change in changes:
            if not isinstance(change, tuple) or len(change) != 2:
                raise BadRequest("update_many takes a list of (id, values) pairs")
            rid = self.pipeline.row_id(table, change[0])
            if rid in seen:
                raise BadRequest(f"{table_name} {rid} appears twice in one batch")
            seen.add(rid)
            target = self.pipeline.coerce_row(table, rid, change[1], creating=False)
            items.append((rid, target, None, None))
        privilege = Privilege.ASSIGN if message is Message.ASSIGN else Privilege.WRITE
        # the privilege is evaluated on the rows as they are locked, by the same query
        allowed: tuple[Node, set[RecordId]] | None = None
        if not op.caller.unrestricted:
            allowed = (privilege_filter(op.caller, table, privilege), set())
        images = self.pipeline.pre_images(
            op,
            table,
            [rid for rid, *_ in items],
            self.pipeline.image_columns(table, message, items),
            allowed=allowed,
        )
        items = [(rid, target, images[rid], None) for rid, target, _, _ in items]
        self.pipeline.pre_stages(op, table, message, items, creating=False)
        if allowed is not None:
            ids = [rid for rid, *_ in items]
            self.pipeline.authorize_rows(op, table, ids, privilege, allowed[1])
            assigning = [rid for rid, t, _, _ in items if "ownerid" in t]
            if assigning and message is not Message.ASSIGN:
                self.pipeline.authorize_rows(op, table, assigning, Privilege.ASSIGN)
            self.pipeline.authorize_links(op, table, ((rid, t) for rid, t, _, _ in items))
        self.pipeline.check_references(op, table, (t for _, t, _, _ in items), set())
        check_file_references(self.pipeline, op, table, [(t, pre) for _, t, pre, _ in items])

        caller, now = op.caller, utcnow()
        units: dict[tuple[RecordId, str], RecordId] = {}
        if table.owned:
            owners = {t["ownerid"] for _, t, _, _ in items if t.get("ownerid") is not None}
            units = self.pipeline.owner_units(op, table, owners)
        writes: list[tuple[RecordId, Row, Row, Row]] = []
        versions: dict[RecordId, Version] = {}
        for rid, target, pre, _ in items:
            assert pre is not None
            if not target:
                versions[rid] = pre["versionnumber"]
                continue
            row = self.pipeline.to_sql(table, target)
            if "ownerid" in target:
                row["owningbusinessunit"] = units[target["ownerid"]]
            elif table.ownership is Ownership.BUSINESS and row.get("businessunitid") is not None:
                row["owningbusinessunit"] = row["businessunitid"]
            row.update(modifiedon=now, modifiedby=caller.user_id)
            writes.append((rid, target, pre, row))
        if writes:
            taken = self.store.allocate_versions(op.conn, len(writes))
            sql = self.store.sql_table(table_name)
            groups: dict[tuple[str, ...], list[Row]] = defaultdict(list)
            log: list[Row] = []
            operation = "assign" if message is Message.ASSIGN else "update"
            for version, (rid, target, pre, row) in zip(taken, writes, strict=True):
                row["versionnumber"] = version
                versions[rid] = version
                groups[tuple(sorted(row))].append({**row, bulk.KEY: rid})
                old = {
                    c: pre[c] for c in row if c not in ("modifiedon", "modifiedby", "versionnumber")
                }
                for c in SCOPE_COLUMNS:
                    if c in pre:
                        old[c] = pre[c]
                log.append(
                    self.pipeline.change(
                        table, rid, version, operation, caller, now, changed=sorted(target), old=old
                    )
                )
            with _alternate_keys(table):
                for params in groups.values():
                    bulk.update_many(op.conn, sql, pk, params)
            self.store.bulk_insert(op.conn, fs_change, log)
            if self.plugins.has(table_name, message, Stage.POST_OPERATION):
                post: list[tuple[RecordId, Row, Row | None, Row | None]] = [
                    (rid, target, pre, {**pre, **row}) for rid, target, pre, row in writes
                ]
                self.pipeline.run_stage(op, table, message, Stage.POST_OPERATION, post)
            if table_name == "systemuser":
                for rid, target, pre, _ in writes:
                    if "businessunitid" in target and target["businessunitid"] != pre.get(
                        "businessunitid"
                    ):
                        self.store.audit.change(
                            audit.BUSINESS_UNIT_CHANGED,
                            caller.user_id,
                            caller.username,
                            f"systemuser {rid}",
                            {
                                "from": str(pre.get("businessunitid")),
                                "to": str(target["businessunitid"]),
                            },
                        )
        return [versions[rid] for rid, *_ in items]

    # -- delete -------------------------------------------------------------------------

    def _delete(self, op: Op, table_name: str, record_id: RecordId | str) -> Version:
        table = self.store.schema.table(table_name)
        if table.intersect:
            raise BadRequest(f"{table_name} is an intersect table: use disassociate")
        self.pipeline.refuse_share_table(table)
        rid = self.pipeline.row_id(table, record_id)
        pre = self.pipeline.pre_images(op, table, [rid])[rid]
        if not op.caller.unrestricted:
            self.pipeline.authorize_rows(op, table, [rid], Privilege.DELETE)
        items: list[tuple[RecordId, Row, Row | None, Row | None]] = [(rid, {}, pre, None)]
        for stage in (Stage.PRE_VALIDATION, Stage.PRE_OPERATION):
            self.pipeline.run_stage(op, table, Message.DELETE, stage, items)
        self._refuse_if_in_use(op, table, rid)
        now = utcnow()
        self.links.remove_links(op, table, rid, now)
        (version,) = self.store.allocate_versions(op.conn, 1)
        sql = self.store.sql_table(table_name)
        op.conn.execute(sql.delete().where(sql.c[table.primary_id] == rid))
        self.store.bulk_insert(
            op.conn,
            fs_change,
            [self.pipeline.change(table, rid, version, "delete", op.caller, now, old=pre)],
        )
        self.pipeline.run_stage(
            op, table, Message.DELETE, Stage.POST_OPERATION, [(rid, {}, pre, None)]
        )
        return version

    def _refuse_if_in_use(self, op: Op, table: Table, rid: RecordId) -> None:
        """Users, business units and teams that still hold rows cannot be deleted."""
        if table.name == "systemuser":
            raise BadRequest("users cannot be deleted; disable the user instead")
        if table.name == "businessunit":
            if rid == ROOT_BUSINESS_UNIT_ID:
                raise BadRequest("the root business unit cannot be deleted")
            for other in self.store.schema.tables.values():
                sql = self.store.sql_table(other.name)
                for name in ("businessunitid", "parentbusinessunitid", "owningbusinessunit"):
                    if (
                        name in sql.c
                        and op.conn.execute(
                            sa.select(sa.literal(1)).where(sql.c[name] == rid).limit(1)
                        ).first()
                    ):
                        raise BadRequest(
                            f"business unit {rid} still has {other.name} rows; move them first"
                        )
        if table.name == "team":
            for other in self.store.schema.tables.values():
                if other.owned:
                    sql = self.store.sql_table(other.name)
                    if op.conn.execute(
                        sa.select(sa.literal(1)).where(sql.c.ownerid == rid).limit(1)
                    ).first():
                        raise BadRequest(
                            f"team {rid} still owns {other.name} rows; assign them first"
                        )


def _link_aliases(links: Iterable[Link]) -> dict[str, str]:
    """Alias -> table name for every link of a query, nested ones included."""
    out: dict[str, str] = {}
    for link in links:
        out[link.alias or link.table] = link.table
        out.update(_link_aliases(link.links))
    return out


class BoundRecords:
    """The records service inside one running operation: what plugins call to read and
    write in the same transaction."""

    def __init__(
        self, records: Records, conn: sa.Connection, caller: SecurityContext, depth: int
    ) -> None:
        self._records = records
        self._conn = conn
        self._caller = caller
        self._depth = depth
        self.conn = conn

    def _op(self) -> Op:
        return Op(self._conn, self._caller, self._depth)

    def trusted(self) -> BoundRecords:
        """The same operation with no privilege checks, still recorded as the caller's: for
        the cascades a parent owes its children (deleting a profile deletes its items)."""
        caller = acting_as(self._caller.user_id, self._caller.business_unit_id)
        return BoundRecords(self._records, self._conn, caller, self._depth)

    def create(self, table: str, values: Mapping[str, Any]) -> RecordId:
        return self._records._create(self._op(), table, [values])[0]

    def update(self, table: str, record_id: RecordId | str, values: Mapping[str, Any]) -> Version:
        return self._records._update(self._op(), table, [(record_id, values)], Message.UPDATE)[0]

    def delete(self, table: str, record_id: RecordId | str) -> Version:
        return self._records._delete(self._op(), table, record_id)

    def retrieve(
        self, table: str, record_id: RecordId | str, columns: Iterable[str] | None = None
    ) -> Row:
        return self._records.retrieve(
            table, record_id, columns=columns, caller=self._caller, conn=self._conn
        )

    def retrieve_multiple(
        self,
        table: str,
        *,
        where: Mapping[str, Any] | None = None,
        columns: Iterable[str] | None = None,
    ) -> list[Row]:
        return self._records.retrieve_multiple(
            table, where=where, columns=columns, caller=self._caller, conn=self._conn
        )

    def associate(
        self, relationship: str, first: RecordId | str, second: RecordId | str
    ) -> RecordId:
        return self._records.links.associate(self._op(), relationship, first, second)

    def disassociate(
        self, relationship: str, first: RecordId | str, second: RecordId | str
    ) -> Version:
        return self._records.links.disassociate(self._op(), relationship, first, second)

    def move_owned_rows(self, owner: RecordId, unit: RecordId) -> int:
        return self._records.links.move_owned_rows(self._op(), owner, unit)

    @property
    def schema(self) -> Schema:
        return self._records.store.schema

    def store_table(self, name: str) -> sa.Table:
        """The SQL table behind a table, for rules that read in the same transaction."""
        return self._records.store.sql_table(name)


__all__ = ["SYSTEM", "BoundRecords", "Records", "acting_as"]


@contextmanager
def _alternate_keys(table: Table) -> Iterator[None]:
    """A write that breaks an alternate key's unique index is a 412 naming the keys (the
    index, not a check before the write, is what holds under concurrent writers)."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        if not table.keys:
            raise
        keys = "; ".join(f"{k.schema} ({', '.join(k.columns)})" for k in table.keys)
        raise PreconditionFailed(
            f"a {table.name} row with the same alternate key values already exists: {keys}"
        ) from exc
