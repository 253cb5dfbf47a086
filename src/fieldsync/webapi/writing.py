"""Writes through the records service as the caller: create, update, upsert and delete of
one row (with ``If-Match`` / ``If-None-Match``), the bulk actions ``CreateMultiple``,
``UpdateMultiple``, ``UpsertMultiple`` and ``BulkDelete``, and request bodies with
``@odata.bind``. Every request runs in one transaction: a failing row changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, PreconditionFailed, RecordNotFound
from fieldsync.query.ast import Condition, Node, Op, Query, all_of, any_of, is_in
from fieldsync.schema.model import ColumnType, Schema, Table
from fieldsync.schema.values import make_coercer
from fieldsync.types import RecordId, as_uuid
from fieldsync.webapi import links
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import API_PREFIX, Key, etag, etag_version, parse_path
from fieldsync.webapi.reading import find, representation, resolve_reference, run

MAX_TARGETS = 5000


# -- request bodies --------------------------------------------------------------------------


def bind_column(table: Table, name: str) -> str:
    col = table.columns.get(name.lower())
    if col is not None and col.type is ColumnType.LOOKUP:
        return col.name
    for lookup in table.lookups():
        prefix = lookup.name + "_"
        if name.lower().startswith(prefix) and name.lower()[len(prefix) :] in lookup.targets:
            return lookup.name
    raise BadRequest(f"{table.name} has no lookup (navigation property) {name!r} to bind")


def to_values(call: Call, table: Table, body: Any) -> dict[str, Any]:
    """A JSON entity as column values for the records service."""
    if not isinstance(body, dict):
        raise BadRequest(f"a {table.name} row must be a JSON object")
    links.refuse_associations(call, table, body)
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key.startswith("@odata."):
            continue
        if "@" in key:
            name, _, annotation = key.partition("@")
            if annotation != "odata.bind":
                raise BadRequest(f"{key!r}: the only annotation a body may carry is @odata.bind")
            column = bind_column(table, name)
            out[column] = None if value is None else resolve_reference(call, value)
            continue
        out[key] = value
    return out


# -- responses -------------------------------------------------------------------------------


def written(
    call: Call,
    conn: sa.Connection,
    req: ODataRequest,
    table: Table,
    rid: RecordId,
    *,
    created: bool,
) -> ODataResponse:
    headers = {"OData-EntityId": req.link(f"{table.entity_set_name}({rid})")}
    if req.prefer.get("return") == "representation":
        body = representation(call, conn, req, table, rid)
        headers["Preference-Applied"] = "return=representation"
        if "@odata.etag" in body:
            headers["ETag"] = body["@odata.etag"]
        return ODataResponse(201 if created else 200, body, headers)
    return ODataResponse(204, None, headers)


def _check_etag(header: str, table: Table, row: dict[str, Any]) -> None:
    if header.strip() == "*":
        return
    expected = etag_version(header)
    if expected is None:
        raise BadRequest(f'If-Match must be * or an entity tag W/"<version>", got {header[:40]!r}')
    if expected != row.get("versionnumber"):
        raise PreconditionFailed(
            f"the {table.name} row has changed: its version is "
            f"{etag(row.get('versionnumber') or 0)}, not {header.strip()}",
            code="0x80060882",
        )


# -- one row ---------------------------------------------------------------------------------


def create(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    """One row; many-to-many ``@odata.bind`` arrays link it in the same transaction."""
    body, associations = links.split_associations(call, table, req.json())
    values = to_values(call, table, body)
    targets = []
    for name, url in associations:
        rel, other = links.navigation_of(call, table, name)
        targets.append((rel, links.other_row(call, url, other)))
    records = call.platform.records

    def work(conn: sa.Connection) -> ODataResponse:
        rid = records.create(table.name, values, caller=call.caller, conn=conn)
        for rel, other_id in targets:
            first, second = links.pair(rel, table, rid, other_id)
            records.associate(rel.name, first, second, caller=call.caller, conn=conn)
        return written(call, conn, req, table, rid, created=True)

    return call.write(work)


def _key_values(table: Table, key: Key) -> dict[str, Any]:
    if key.pairs is None:
        return {table.primary_id: key.value}
    return {name.lower(): value for name, value in key.pairs}


def upsert_row(
    call: Call,
    conn: sa.Connection,
    table: Table,
    key: Key,
    values: dict[str, Any],
    req_headers: Any,
) -> tuple[RecordId, bool]:
    """Update the row a key names or create it; ``If-Match`` makes it update only (404 when
    missing, 412 on another version), ``If-None-Match: *`` create only (412 when present).
    Returns the id and whether it was created."""
    records = call.platform.records
    if_match = req_headers.get("if-match")
    if_none = req_headers.get("if-none-match")
    row = find(call, conn, table, key, (table.primary_id, "versionnumber"))
    if row is not None:
        if if_none is not None and if_none.strip() == "*":
            raise PreconditionFailed(f"a {table.name} row with this key already exists")
        if if_match is not None:
            _check_etag(if_match, table, row)
        rid = row[table.primary_id]
        records.update(table.name, rid, values, caller=call.caller, conn=conn)
        return rid, False
    if if_match is not None:
        raise RecordNotFound(table.name, key.value if key.pairs is None else dict(key.pairs))
    # a row there but unreadable (by its id or an alternate key naming the id) is refused by
    # the create as missing, never as "already exists"
    new = {**values, **_key_values(table, key)}
    rid = records.create(table.name, new, caller=call.caller, conn=conn)
    return rid, True


def patch(call: Call, req: ODataRequest, table: Table, key: Key) -> ODataResponse:
    values = to_values(call, table, req.json())

    def work(conn: sa.Connection) -> ODataResponse:
        rid, created = upsert_row(call, conn, table, key, dict(values), req.headers)
        return written(call, conn, req, table, rid, created=created)

    return call.write(work)


def delete(call: Call, req: ODataRequest, table: Table, key: Key) -> ODataResponse:
    def work(conn: sa.Connection) -> None:
        row = find(call, conn, table, key, (table.primary_id, "versionnumber"))
        if row is None:
            raise RecordNotFound(table.name, key.value if key.pairs is None else dict(key.pairs))
        if_match = req.header("if-match")
        if if_match is not None:
            _check_etag(if_match, table, row)
        call.platform.records.delete(
            table.name, row[table.primary_id], caller=call.caller, conn=conn
        )

    call.write(work)
    return ODataResponse(204)


# -- bulk actions ----------------------------------------------------------------------------


def _targets(req: ODataRequest) -> list[Any]:
    body = req.json_object()
    targets = body.get("Targets")
    if not isinstance(targets, list) or not targets:
        raise BadRequest("the body needs Targets: a non-empty list of rows")
    if len(targets) > MAX_TARGETS:
        raise BadRequest(f"at most {MAX_TARGETS} Targets in one request")
    return targets


def _check_type(table: Table, target: Any) -> None:
    if isinstance(target, dict):
        kind = target.get("@odata.type")
        if kind is not None and str(kind).lstrip("#") != f"Microsoft.Dynamics.CRM.{table.name}":
            raise BadRequest(f"a target of type {kind!r} was sent to {table.entity_set_name}")


def create_multiple(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    rows = []
    for target in _targets(req):
        _check_type(table, target)
        rows.append(to_values(call, table, target))
    ids = call.write(
        lambda conn: call.platform.records.create_many(
            table.name, rows, caller=call.caller, conn=conn
        )
    )
    body = {
        "@odata.context": f"{req.root}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
        "Ids": [str(i) for i in ids],
    }
    return ODataResponse(200, body)


def update_multiple(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    changes: list[tuple[RecordId | str, dict[str, Any]]] = []
    for target in _targets(req):
        _check_type(table, target)
        values = to_values(call, table, target)
        rid = values.pop(table.primary_id, None)
        if rid is None:
            raise BadRequest(f"every UpdateMultiple target needs its {table.primary_id}")
        changes.append((rid, values))
    call.write(
        lambda conn: call.platform.records.update_many(
            table.name, changes, caller=call.caller, conn=conn
        )
    )
    return ODataResponse(204)


def upsert_multiple(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    results = call.write(lambda conn: _upsert_targets(call, conn, req, table))
    body = {
        "@odata.context": f"{req.root}/$metadata#Microsoft.Dynamics.CRM.UpsertMultipleResponse",
        "Ids": [r["RecordId"] for r in results],
        "Results": results,
    }
    return ODataResponse(200, body)


def _upsert_targets(
    call: Call, conn: sa.Connection, req: ODataRequest, table: Table
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for target in _targets(req):
        _check_type(table, target)
        values = to_values(call, table, target)
        ref = target.get("@odata.id")
        if ref is not None:
            if not isinstance(ref, str):
                raise BadRequest("@odata.id must be a string such as accounts(name='x')")
            path = ref.split(API_PREFIX, 1)[1] if API_PREFIX in ref else ref
            segments = parse_path(path)
            if len(segments) != 1 or segments[0].key is None:
                raise BadRequest(f"@odata.id {ref[:80]!r} does not name one row")
            if segments[0].name != table.entity_set_name:
                raise BadRequest(f"@odata.id {ref[:80]!r} names another entity set")
            key = segments[0].key
        elif values.get(table.primary_id) is not None:
            try:
                key = Key(value=as_uuid(str(values.pop(table.primary_id))))
            except ValueError:
                raise BadRequest(f"{table.primary_id} must be a GUID") from None
        else:
            raise BadRequest(
                f"every UpsertMultiple target needs @odata.id or its {table.primary_id}"
            )
        rid, created = upsert_row(call, conn, table, key, values, {})
        results.append({"RecordId": str(rid), "RecordCreated": created})
    return results


_OPERATORS = {"equal": Op.EQ, "notequal": Op.NE, "in": Op.IN, "null": Op.NULL}


def _criteria(schema: Schema, table: Table, criteria: Any) -> Node:
    if criteria is None:
        raise BadRequest("BulkDelete needs Criteria: deleting every row is not allowed")
    if not isinstance(criteria, dict):
        raise BadRequest("Criteria must be a FilterExpression object")
    nodes: list[Node] = []
    for cond in criteria.get("Conditions") or []:
        if not isinstance(cond, dict):
            raise BadRequest("each condition must be a ConditionExpression object")
        name = str(cond.get("AttributeName", "")).lower()
        col = table.columns.get(name)
        if col is None:
            raise BadRequest(f"{table.name} has no column {name!r}")
        op = _OPERATORS.get(str(cond.get("Operator", "")).lower())
        if op is None:
            raise BadRequest(f"BulkDelete takes the operators {', '.join(_OPERATORS)}")
        raw = cond.get("Values") or []
        if not isinstance(raw, list):
            raise BadRequest("Values must be a list")
        coerce = make_coercer(table, col)
        values = []
        for v in raw:
            item = v.get("Value") if isinstance(v, dict) else v
            c = coerce(item)
            values.append(c[0] if isinstance(c, tuple) else c)
        if op is Op.NULL:
            nodes.append(Condition(name, Op.NULL))
        elif op is Op.IN:
            nodes.append(is_in(name, values))
        elif len(values) != 1:
            raise BadRequest(f"the operator {cond.get('Operator')} takes one value")
        else:
            nodes.append(Condition(name, op, values[0]))
    for nested in criteria.get("Filters") or []:
        nodes.append(_criteria(schema, table, nested))
    if not nodes:
        raise BadRequest("BulkDelete needs at least one condition")
    kind = str(criteria.get("FilterOperator", "And")).lower()
    if kind not in ("and", "or"):
        raise BadRequest("FilterOperator must be And or Or")
    return any_of(nodes) if kind == "or" else all_of(nodes)


def bulk_delete(call: Call, req: ODataRequest) -> ODataResponse:
    """Runs at once, in one transaction, deleting the rows of each query the caller can
    read (and must be allowed to delete); the job id is for the client's record only."""
    body = req.json_object()
    queries = body.get("QuerySet")
    if not isinstance(queries, list) or not queries:
        raise BadRequest("BulkDelete needs a QuerySet: a list of QueryExpression objects")
    schema = call.platform.store.schema
    records = call.platform.records

    def work(conn: sa.Connection) -> None:
        for q in queries:
            if not isinstance(q, dict):
                raise BadRequest("each QuerySet item must be a QueryExpression object")
            table = schema.table(str(q.get("EntityName", "")).lower())
            node = _criteria(schema, table, q.get("Criteria"))
            rows = run(call, conn, Query(table.name, (table.primary_id,), node))
            for row in rows:
                records.delete(table.name, row[table.primary_id], caller=call.caller, conn=conn)

    call.write(work)
    return ODataResponse(200, {"JobId": str(uuid.uuid4())})
