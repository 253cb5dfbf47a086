"""Writes that link rows: many-to-many associations, record shares, the cascades of a
delete (remove link) and of an owner changing business unit."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa

from fieldsync.errors import (
    BadRequest,
    LookupNotFound,
    NotFound,
    PreconditionFailed,
)
from fieldsync.records.pipeline import SECURITY_RELATIONSHIPS, SHARE_TABLE, Op, Pipeline
from fieldsync.records.plugins import Message, Stage
from fieldsync.schema.model import RelationshipKind, Table
from fieldsync.security.model import Privilege
from fieldsync.store import audit
from fieldsync.store.catalog import fs_change
from fieldsync.store.store import utcnow
from fieldsync.types import EntityRef, RecordId, Row, Version

MEMBERSHIP_RELATIONSHIP = "teammembership_association"


class Links:
    """Associations, shares and cascades: the records service's part for links, on the
    pipeline's pieces."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store

    def remove_links(self, op: Op, table: Table, rid: RecordId, now: dt.datetime) -> None:
        """Clear lookups that point at a deleted row, and drop its many-to-many links,
        each as a change of its own (so devices see the link go). The deleted row itself is
        left alone (a row may point at itself): its tombstone keeps it as it was."""
        for other, col in self.store.schema.referencing(table.name):
            if col.system:
                continue
            sql = self.store.sql_table(other.name)
            if col.required and not other.intersect:
                where_required = sa.and_(
                    sql.c[col.name] == rid,
                    sql.c[other.primary_id] != rid if other.name == table.name else sa.true(),
                )
                if op.conn.execute(sa.select(sa.literal(1)).where(where_required).limit(1)).first():
                    raise BadRequest(
                        f"{table.name} {rid} is still referenced by {other.name}.{col.name}, "
                        "which is required; delete or change those rows first"
                    )
            where = sql.c[col.name] == rid
            if col.polymorphic:
                where = sa.and_(where, sql.c[col.type_column] == table.name)
            pk = sql.c[other.primary_id]
            if other.name == table.name:
                where = sa.and_(where, pk != rid)
            # locked before their versions are taken: a row's versions rise in commit order
            ids = list(op.conn.execute(sa.select(pk).where(where).with_for_update()).scalars())
            if not ids:
                continue
            taken = self.store.allocate_versions(op.conn, len(ids))
            if other.intersect:
                images = {
                    r[other.primary_id]: dict(r)
                    for r in op.conn.execute(sa.select(sql).where(where)).mappings()
                }
                op.conn.execute(sql.delete().where(where))
                log = [
                    self.pipeline.change(
                        other, i, taken[n], "disassociate", op.caller, now, old=images[i]
                    )
                    for n, i in enumerate(ids)
                ]
            else:
                cleared: Row = {col.name: None}
                if col.polymorphic:
                    cleared[col.type_column] = None
                key = sa.bindparam("_fs_key", type_=sa.Uuid())
                op.conn.execute(
                    sql.update().where(pk == key),
                    [
                        {
                            **cleared,
                            "versionnumber": taken[n],
                            "modifiedon": now,
                            "modifiedby": op.caller.user_id,
                            "_fs_key": i,
                        }
                        for n, i in enumerate(ids)
                    ],
                )
                old = {col.name: rid}
                if col.polymorphic:
                    old[col.type_column] = table.name  # type: ignore[assignment]
                log = [
                    self.pipeline.change(
                        other, i, taken[n], "update", op.caller, now, changed=[col.name], old=old
                    )
                    for n, i in enumerate(ids)
                ]
            self.store.bulk_insert(op.conn, fs_change, log)

    # -- sharing and ownership cascades -------------------------------------------------

    def share(
        self,
        op: Op,
        table_name: str,
        record_id: RecordId | str,
        principal: EntityRef,
        mask: int,
    ) -> Version | None:
        table = self.store.schema.table(table_name)
        if not table.owned:
            raise BadRequest(
                f"{table_name} rows are not owned by users or teams; they cannot be shared"
            )
        if not isinstance(principal, EntityRef) or principal.table not in ("systemuser", "team"):
            raise BadRequest("rows are shared with a user or a team")
        if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask < 256:
            raise BadRequest("share rights must be a set of privileges")
        if mask & int(Privilege.CREATE):
            raise BadRequest("create cannot be shared: it applies to new rows only")
        rid = self.pipeline.row_id(table, record_id)
        self.pipeline.pre_images(op, table, [rid])
        if not op.caller.unrestricted:
            self.pipeline.authorize_rows(op, table, [rid], Privilege.SHARE)
            for p in Privilege:
                if mask & int(p):
                    self.pipeline.authorize_rows(op, table, [rid], p)
        who = self.store.schema.table(principal.table)
        if not self.pipeline.existing(
            op.conn, self.store.sql_table(who.name).c[who.primary_id], [principal.id]
        ):
            raise LookupNotFound(
                SHARE_TABLE, "principalid", f"{principal.table} {principal.id} does not exist"
            )
        poa_table = self.store.schema.table(SHARE_TABLE)
        poa = self.store.sql_table(SHARE_TABLE)
        existing = (
            op.conn.execute(
                sa.select(poa)
                .where(
                    poa.c.objectid == rid,
                    poa.c.objecttypecode == table_name,
                    poa.c.principalid == principal.id,
                )
                .with_for_update()
            )
            .mappings()
            .first()
        )
        now = utcnow()
        if existing is not None and existing["accessrightsmask"] == mask:
            return None
        if existing is None and mask == 0:
            return None
        (version,) = self.store.allocate_versions(op.conn, 1)
        key = poa.c.principalobjectaccessid
        if existing is None:
            share_id = uuid.uuid4()
            op.conn.execute(
                poa.insert().values(
                    principalobjectaccessid=share_id,
                    name=f"{table_name} share",
                    objectid=rid,
                    objecttypecode=table_name,
                    principalid=principal.id,
                    principaltypecode=principal.table,
                    accessrightsmask=mask,
                    createdon=now,
                    modifiedon=now,
                    createdby=op.caller.user_id,
                    modifiedby=op.caller.user_id,
                    statecode=0,
                    statuscode=1,
                    versionnumber=version,
                )
            )
            change = self.pipeline.change(poa_table, share_id, version, "create", op.caller, now)
        elif mask == 0:
            share_id = existing["principalobjectaccessid"]
            op.conn.execute(poa.delete().where(key == share_id))
            change = self.pipeline.change(
                poa_table, share_id, version, "delete", op.caller, now, old=dict(existing)
            )
        else:
            share_id = existing["principalobjectaccessid"]
            op.conn.execute(
                poa.update()
                .where(key == share_id)
                .values(
                    accessrightsmask=mask,
                    modifiedon=now,
                    modifiedby=op.caller.user_id,
                    versionnumber=version,
                )
            )
            change = self.pipeline.change(
                poa_table,
                share_id,
                version,
                "update",
                op.caller,
                now,
                changed=["accessrightsmask"],
                old={
                    "accessrightsmask": existing["accessrightsmask"],
                    "objectid": rid,
                    "principalid": principal.id,
                },
            )
        self.store.bulk_insert(op.conn, fs_change, [change])
        return version

    def move_owned_rows(self, op: Op, owner: RecordId, unit: RecordId) -> int:
        """Rows owned by a user or team that moved to another business unit follow it (as
        in Dataverse), each with a new version. Returns how many rows moved."""
        moved = 0
        now = utcnow()
        for table in self.store.schema.tables.values():
            if not table.owned:
                continue
            sql = self.store.sql_table(table.name)
            pk = sql.c[table.primary_id]
            rows = op.conn.execute(
                sa.select(pk, sql.c.owningbusinessunit, sql.c.owneridtype)
                .where(sql.c.ownerid == owner, sql.c.owningbusinessunit != unit)
                .with_for_update()
            ).all()
            if not rows:
                continue
            taken = self.store.allocate_versions(op.conn, len(rows))
            key = sa.bindparam("_fs_key", type_=sa.Uuid())
            op.conn.execute(
                sql.update().where(pk == key),
                [
                    {"owningbusinessunit": unit, "versionnumber": taken[n], "_fs_key": r[0]}
                    for n, r in enumerate(rows)
                ],
            )
            self.store.bulk_insert(
                op.conn,
                fs_change,
                [
                    self.pipeline.change(
                        table,
                        r[0],
                        taken[n],
                        "update",
                        op.caller,
                        now,
                        changed=["owningbusinessunit"],
                        old={"owningbusinessunit": r[1], "ownerid": owner, "owneridtype": r[2]},
                    )
                    for n, r in enumerate(rows)
                ],
            )
            moved += len(rows)
        return moved

    # -- many-to-many -------------------------------------------------------------------

    def authorize_association(
        self, op: Op, relationship: str, pairs: list[tuple[str, RecordId]]
    ) -> None:
        """Linking two rows links each to the other: it needs Append and Append To on both,
        each checked at its depth against the row; linking users, teams and roles
        (membership and role assignment) needs Write on both."""
        if op.caller.unrestricted:
            return
        privileges = (
            (Privilege.WRITE,)
            if relationship in SECURITY_RELATIONSHIPS
            else (Privilege.APPEND, Privilege.APPEND_TO)
        )
        for table_name, rid in pairs:
            for privilege in privileges:
                self.pipeline.authorize_rows(
                    op, self.store.schema.table(table_name), [rid], privilege
                )

    def intersect(self, relationship: str) -> tuple[Table, str, str, str, str]:
        rel = self.store.schema.relationships.get(relationship)
        if rel is None:
            raise NotFound(f"relationship {relationship!r} does not exist")
        if rel.kind is not RelationshipKind.MANY_TO_MANY:
            raise BadRequest(f"{relationship} is not a many-to-many relationship")
        table = self.store.schema.table(rel.intersect_table)
        return (
            table,
            rel.referenced_column,
            rel.referenced_table,
            rel.referencing_column,
            rel.referencing_table,
        )

    def associate(
        self, op: Op, relationship: str, first: RecordId | str, second: RecordId | str
    ) -> RecordId:
        table, col1, t1, col2, t2 = self.intersect(relationship)
        a = self.pipeline.row_id(table, first)
        b = self.pipeline.row_id(table, second)
        for value, col, target in ((a, col1, t1), (b, col2, t2)):
            sql_t = self.store.sql_table(target)
            key = sql_t.c[self.store.schema.table(target).primary_id]
            if not self.pipeline.existing(op.conn, key, [value], hold=True):
                raise LookupNotFound(table.name, col, f"{target} {value} does not exist")
        self.authorize_association(op, relationship, [(t1, a), (t2, b)])
        link: Row = {col1: a, col2: b}
        items: list[tuple[RecordId, Row, Row | None, Row | None]] = [(a, link, None, None)]
        for stage in (Stage.PRE_VALIDATION, Stage.PRE_OPERATION):
            self.pipeline.run_stage(op, table, Message.ASSOCIATE, stage, items)
        sql = self.store.sql_table(table.name)
        if op.conn.execute(
            sa.select(sa.literal(1)).where(sql.c[col1] == a, sql.c[col2] == b)
        ).first():
            raise PreconditionFailed(f"{t1} {a} and {t2} {b} are already associated")
        rid = uuid.uuid4()
        (version,) = self.store.allocate_versions(op.conn, 1)
        op.conn.execute(
            sql.insert().values({table.primary_id: rid, col1: a, col2: b, "versionnumber": version})
        )
        self.store.bulk_insert(
            op.conn,
            fs_change,
            [self.pipeline.change(table, rid, version, "associate", op.caller, utcnow())],
        )
        self.pipeline.run_stage(
            op,
            table,
            Message.ASSOCIATE,
            Stage.POST_OPERATION,
            [(rid, {col1: a, col2: b}, None, None)],
        )
        self.audit_link(op, relationship, f"{t1} {a}, {t2} {b}", added=True)
        return rid

    def disassociate(
        self, op: Op, relationship: str, first: RecordId | str, second: RecordId | str
    ) -> Version:
        table, col1, t1, col2, t2 = self.intersect(relationship)
        a = self.pipeline.row_id(table, first)
        b = self.pipeline.row_id(table, second)
        sql = self.store.sql_table(table.name)
        row = (
            op.conn.execute(
                sa.select(sql).where(sql.c[col1] == a, sql.c[col2] == b).with_for_update()
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"{t1} {a} and {t2} {b} are not associated")
        self.authorize_association(op, relationship, [(t1, a), (t2, b)])
        items: list[tuple[RecordId, Row, Row | None, Row | None]] = [
            (a, {col1: a, col2: b}, dict(row), None)
        ]
        for stage in (Stage.PRE_VALIDATION, Stage.PRE_OPERATION):
            self.pipeline.run_stage(op, table, Message.DISASSOCIATE, stage, items)
        (version,) = self.store.allocate_versions(op.conn, 1)
        rid = row[table.primary_id]
        op.conn.execute(sql.delete().where(sql.c[table.primary_id] == rid))
        self.store.bulk_insert(
            op.conn,
            fs_change,
            [
                self.pipeline.change(
                    table, rid, version, "disassociate", op.caller, utcnow(), old=dict(row)
                )
            ],
        )
        self.pipeline.run_stage(
            op,
            table,
            Message.DISASSOCIATE,
            Stage.POST_OPERATION,
            [(rid, {col1: a, col2: b}, dict(row), None)],
        )
        self.audit_link(op, relationship, f"{t1} {a}, {t2} {b}", added=False)
        return version

    def audit_link(self, op: Op, relationship: str, target: str, *, added: bool) -> None:
        """Role assignments and team membership go to the audit log (if they commit)."""
        if relationship == MEMBERSHIP_RELATIONSHIP:
            event = audit.TEAM_MEMBER_ADDED if added else audit.TEAM_MEMBER_REMOVED
        elif relationship in SECURITY_RELATIONSHIPS:
            event = audit.ROLE_ASSIGNED if added else audit.ROLE_REMOVED
        else:
            return
        self.store.audit.change(
            event, op.caller.user_id, op.caller.username, target, {"relationship": relationship}
        )
