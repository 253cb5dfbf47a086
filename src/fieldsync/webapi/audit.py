"""The security audit log as a read-only entity set, ``audits``, for administrators.

    GET /api/data/v9.2/audits?$filter=event eq 'signin.refused'&$top=50
    GET /api/data/v9.2/audits(42)

``$filter``, ``$select``, ``$orderby`` and ``$top`` work on ``auditid createdon event userid
username address target outcome`` (newest first unless ordered otherwise); at most
:data:`MAX_ROWS` rows are answered. Anyone else gets 403; writes get 405."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound, QueryError
from fieldsync.query.compile import compile_filter
from fieldsync.query.odata import parse_query_options
from fieldsync.schema.model import Column, ColumnType, Ownership, Table
from fieldsync.store.catalog import fs_audit
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Segment

ENTITY_SET = "audits"
MAX_ROWS = 5000
T = ColumnType

AUDIT = Table(
    name="audit",
    entity_set_name=ENTITY_SET,
    display_name="Audit",
    primary_id="auditid",
    primary_name="event",
    ownership=Ownership.NONE,
    custom=False,
    columns={
        c.name: c
        for c in (
            Column("auditid", T.BIGINT, display_name="Audit", system=True, read_only=True),
            Column("createdon", T.DATETIME, display_name="Recorded On", read_only=True),
            Column("event", T.STRING, display_name="Event", max_length=64, read_only=True),
            Column("userid", T.UNIQUEIDENTIFIER, display_name="User", read_only=True),
            Column("username", T.STRING, display_name="User Name", max_length=256),
            Column("address", T.STRING, display_name="Address", max_length=64),
            Column("target", T.STRING, display_name="Target", max_length=512),
            Column("outcome", T.STRING, display_name="Outcome", max_length=32),
        )
    },
)


def render(row: dict[str, Any]) -> dict[str, Any]:
    detail = row.get("detail")
    return {
        "auditid": row["auditid"],
        "createdon": row["createdon"].isoformat().replace("+00:00", "Z"),
        "event": row["event"],
        "userid": None if row["userid"] is None else str(row["userid"]),
        "username": row["username"],
        "address": row["address"],
        "target": row["target"],
        "outcome": row["outcome"],
        "detail": detail if detail is None or isinstance(detail, str) else json.dumps(detail),
    }


def get(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    if req.method != "GET":
        raise MethodNotAllowed("the audit log is read-only")
    if not call.caller.unrestricted:
        raise Forbidden("only administrators read the audit log")
    if len(segments) != 1:
        raise BadRequest("read audit rows as audits or audits(<auditid>)")
    store = call.platform.store
    store.audit.flush()
    head = segments[0]
    context = f"{req.root}/$metadata#{ENTITY_SET}"
    if head.key is not None:
        value = head.key.value
        if head.key.pairs is not None or not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest("an audit row's key is its number: audits(<auditid>)")
        with store.read() as conn:
            row = conn.execute(sa.select(fs_audit).where(fs_audit.c.auditid == value)).first()
        if row is None:
            raise NotFound(f"audit row {value} does not exist")
        return ODataResponse(200, {"@odata.context": f"{context}/$entity", **render(row._asdict())})
    odq = parse_query_options(req.params, AUDIT, store.schema)
    if odq.expand or odq.skiptoken:
        raise QueryError("the audit log takes $filter, $select, $orderby and $top")
    query = odq.query
    stmt = sa.select(fs_audit)
    if query.filter is not None:
        stmt = stmt.where(
            compile_filter(
                query.filter,
                fs_audit,
                primary_key="auditid",
                dialect=store.dialect,
                definition=AUDIT,
            )
        )
    for order in query.orders:
        column = fs_audit.c[order.column]
        stmt = stmt.order_by(column.desc() if order.descending else column.asc())
    stmt = stmt.order_by(fs_audit.c.auditid.desc()).limit(min(query.top or MAX_ROWS, MAX_ROWS))
    with store.read() as conn:
        rows = [render(r._asdict()) for r in conn.execute(stmt)]
    if query.columns is not None:
        keep = {"auditid", *query.columns}
        rows = [{k: v for k, v in r.items() if k in keep} for r in rows]
    return ODataResponse(200, {"@odata.context": context, "value": rows})
