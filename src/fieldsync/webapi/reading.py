"""Reads through the records service as the caller: one row by key, collections with
``$filter $select $orderby $top $count $expand`` and server-driven paging, and FetchXML.

Paging: a page holds at most ``Prefer: odata.maxpagesize`` rows (5000 by default); when more
rows follow, ``@odata.nextLink`` repeats the request's options with an opaque ``$skiptoken``.
``$top`` caps the total across pages (the client does not)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from fieldsync.errors import BadRequest, QueryError, RecordNotFound
from fieldsync.query.ast import Condition, Node, Op, Query, all_of, is_in
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import Expand, ODataQuery, parse_query_options, resolve_column
from fieldsync.schema.model import ColumnType, Table
from fieldsync.schema.values import make_coercer
from fieldsync.types import RecordId, Row
from fieldsync.webapi import render
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import (
    Key,
    decode_skiptoken,
    encode_skiptoken,
    etag,
    etag_version,
    page_size,
    wants_annotation,
)

MORE_RECORDS = "Microsoft.Dynamics.CRM.morerecords"
PAGING_COOKIE = "Microsoft.Dynamics.CRM.fetchxmlpagingcookie"
TOTAL_COUNT = "Microsoft.Dynamics.CRM.totalrecordcount"
MAX_EXPANDED = 5000  # rows of one collection-valued expansion, for one page


def wanted(req: ODataRequest) -> Callable[[str], bool]:
    prefer = req.prefer
    return lambda name: wants_annotation(prefer, name)


def context_url(req: ODataRequest, table: Table, columns: Iterable[str] | None) -> str:
    cols = f"({','.join(columns)})" if columns else ""
    return f"{req.root}/$metadata#{table.entity_set_name}{cols}"


def query_columns(table: Table, columns: tuple[str, ...] | None, expand: Iterable[Expand]) -> Any:
    """The columns to read: the selected ones, the lookups that expansions follow, and the
    version (for the etag) and type columns of polymorphic lookups."""
    if columns is None:
        return None
    names = list(columns)
    for e in expand:
        if not e.collection and e.lookup_column not in names:
            names.append(e.lookup_column)
    for name in list(names):
        col = table.columns[name]
        if col.polymorphic:
            names.append(col.type_column)
    if "versionnumber" in table.columns and "versionnumber" not in names:
        names.append("versionnumber")
    return tuple(dict.fromkeys(names))


def run(call: Call, conn: sa.Connection, query: Query) -> list[Row]:
    return call.platform.records.query(query, caller=call.caller, conn=conn)


def key_filter(table: Table, key: Key) -> Node:
    """The filter a key stands for: the primary id, or an alternate key's column values."""
    if key.pairs is None:
        return Condition(table.primary_id, Op.EQ, record_id(table, key.value))
    conditions: list[Node] = []
    for name, value in key.pairs:
        col = resolve_column(table, name)
        if col is None or col.type in (ColumnType.MULTICHOICE, ColumnType.FILE, ColumnType.IMAGE):
            raise BadRequest(f"{table.name} has no key column {name!r}")
        if value is None:
            raise BadRequest(f"the key value of {name!r} cannot be null")
        coerced = make_coercer(table, col)(str(value) if col.type is ColumnType.STRING else value)
        if isinstance(coerced, tuple):
            coerced = coerced[0]
        conditions.append(Condition(col.name, Op.EQ, coerced))
    return all_of(conditions)


def record_id(table: Table, value: Any) -> RecordId:
    if isinstance(value, uuid.UUID):
        return value
    raise BadRequest(f"{table.name}: {str(value)[:60]!r} is not a valid id (a GUID)")


def find(
    call: Call,
    conn: sa.Connection,
    table: Table,
    key: Key,
    columns: tuple[str, ...] | None = None,
) -> Row | None:
    """The row a key names, if the caller may read it; several rows for an alternate key
    are an error."""
    rows = run(call, conn, Query(table.name, columns=columns, filter=key_filter(table, key), top=2))
    if len(rows) > 1:
        raise BadRequest(f"the key matches more than one {table.name} row; use a unique key")
    return rows[0] if rows else None


# -- expansions ------------------------------------------------------------------------------


def expand_rows(
    call: Call,
    conn: sa.Connection,
    table: Table,
    rows: list[Row],
    expands: Iterable[Expand],
    out: list[dict[str, Any]],
    want: Callable[[str], bool],
) -> None:
    """Add each expansion to the rendered rows ``out`` (parallel to ``rows``), reading the
    related rows as the caller in one query per expansion."""
    schema = call.platform.store.schema
    for e in expands:
        target = schema.table(e.target_table)
        cols = query_columns(target, e.columns, e.expand)
        if not e.collection:
            lookup = table.columns[e.lookup_column]
            ids = {
                r[e.lookup_column]
                for r in rows
                if r.get(e.lookup_column) is not None
                and (not lookup.polymorphic or r.get(lookup.type_column) == target.name)
            }
            related = run(call, conn, Query(target.name, cols, is_in(target.primary_id, ids)))
            by_id = {r[target.primary_id]: r for r in related}
            rendered = [render.render_row(target, r, annotations=want) for r in related]
            expand_rows(call, conn, target, related, e.expand, rendered, want)
            as_json = {r[target.primary_id]: j for r, j in zip(related, rendered, strict=True)}
            for row, item in zip(rows, out, strict=True):
                rid = row.get(e.lookup_column)
                item[e.navigation] = as_json.get(rid) if rid in by_id else None
        else:
            parents = [r[table.primary_id] for r in rows]
            if cols is not None and e.lookup_column not in cols:
                cols = (*cols, e.lookup_column)
            query = Query(
                target.name,
                cols,
                all_of([is_in(e.lookup_column, parents), e.filter or all_of([])]),
                orders=e.orders,
                top=MAX_EXPANDED,
            )
            related = run(call, conn, query)
            rendered = [render.render_row(target, r, annotations=want) for r in related]
            expand_rows(call, conn, target, related, e.expand, rendered, want)
            groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for r, j in zip(related, rendered, strict=True):
                group = groups[r[e.lookup_column]]
                if e.top is None or len(group) < e.top:
                    group.append(j)
            for row, item in zip(rows, out, strict=True):
                item[e.navigation] = groups.get(row[table.primary_id], [])


# -- one row ---------------------------------------------------------------------------------


def get_entity(call: Call, req: ODataRequest, table: Table, key: Key) -> ODataResponse:
    odq = parse_query_options(req.params, table, call.platform.store.schema)
    selected = odq.query.columns
    want = wanted(req)
    with call.reading() as conn:
        row = find(call, conn, table, key, query_columns(table, selected, odq.expand))
        if row is None:
            raise RecordNotFound(table.name, key.value if key.pairs is None else dict(key.pairs))
        version = row.get("versionnumber")
        match = req.header("if-none-match")
        if match is not None and isinstance(version, int) and etag_version(match) == version:
            return ODataResponse(304, None, {"ETag": etag(version)})
        body = render.render_row(table, row, annotations=want, columns=selected)
        expand_rows(call, conn, table, [row], odq.expand, [body], want)
    out = {"@odata.context": context_url(req, table, selected) + "/$entity", **body}
    headers = {"ETag": etag(version)} if isinstance(version, int) else {}
    return ODataResponse(200, out, headers)


def representation(
    call: Call, conn: sa.Connection, req: ODataRequest, table: Table, rid: RecordId
) -> dict[str, Any]:
    """A written row as ``Prefer: return=representation`` returns it (``$select`` and
    ``$expand`` of the request apply)."""
    odq = parse_query_options(req.params, table, call.platform.store.schema)
    selected = odq.query.columns
    key = Key(value=rid)
    row = find(call, conn, table, key, query_columns(table, selected, odq.expand))
    if row is None:
        raise RecordNotFound(table.name, rid)
    want = wanted(req)
    body = render.render_row(table, row, annotations=want, columns=selected)
    expand_rows(call, conn, table, [row], odq.expand, [body], want)
    return {"@odata.context": context_url(req, table, selected) + "/$entity", **body}


# -- collections -----------------------------------------------------------------------------


def list_entities(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    if "fetchXml" in req.params:
        return fetch_xml(call, req, table)
    odq: ODataQuery = parse_query_options(req.params, table, call.platform.store.schema)
    query = odq.query
    size = page_size(req.prefer)
    offset = decode_skiptoken(odq.skiptoken) if odq.skiptoken else 0
    limit = size if query.top is None else max(0, min(size, query.top - offset))
    want = wanted(req)
    selected = query.columns
    read = replace(query, columns=query_columns(table, selected, odq.expand), top=None, count=False)
    body: dict[str, Any] = {"@odata.context": context_url(req, table, selected)}
    records = call.platform.records
    with call.reading() as conn:
        stmt = records.query_statement(read, caller=call.caller, conn=conn)
        if query.count:
            total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
            count = int(total.scalar_one())
            body["@odata.count"] = min(count, query.top) if query.top is not None else count
        rows = [dict(r) for r in conn.execute(stmt.limit(limit + 1).offset(offset)).mappings()]
        more = len(rows) > limit and (query.top is None or offset + limit < query.top)
        rows = rows[:limit]
        value = [render.render_row(table, r, annotations=want, columns=selected) for r in rows]
        expand_rows(call, conn, table, rows, odq.expand, value, want)
    body["value"] = value
    headers = {}
    if "odata.maxpagesize" in req.prefer:
        headers["Preference-Applied"] = f"odata.maxpagesize={size}"
    if more:
        params = {k: v for k, v in req.params.items() if k.lower() != "$skiptoken"}
        params["$skiptoken"] = encode_skiptoken(offset + limit)
        body["@odata.nextLink"] = req.link(table.entity_set_name, params)
    return ODataResponse(200, body, headers)


def fetch_xml(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    schema = call.platform.store.schema
    query = parse_fetchxml(req.params["fetchXml"], schema)
    if query.table != table.name:
        raise QueryError(
            f"the FetchXML queries {query.table!r} but was sent to {table.entity_set_name!r}"
        )
    size = query.page_size or (None if query.top is not None else 5000)
    page = query.page or 1
    want = wanted(req)
    records = call.platform.records
    body: dict[str, Any] = {"@odata.context": context_url(req, table, None)}
    with call.reading() as conn:
        plain = replace(query, page=None, page_size=None, paging_cookie=None, count=False)
        stmt = records.query_statement(plain, caller=call.caller, conn=conn)
        if size is not None:
            stmt = stmt.limit(size + 1).offset((page - 1) * size)
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    more = size is not None and len(rows) > size
    if size is not None:
        rows = rows[:size]
    body["value"] = [render.render_row(table, r, annotations=want) for r in rows]
    body[f"@{MORE_RECORDS}"] = more
    if more:
        last = rows[-1].get(table.primary_id) if rows else None
        first = rows[0].get(table.primary_id) if rows else None
        inner = (
            f'<cookie page="{page}"><{table.primary_id} last="{{{last}}}" '
            f'first="{{{first}}}" /></cookie>'
        )
        encoded = quote(quote(inner, safe=""), safe="")
        body[f"@{PAGING_COOKIE}"] = (
            f'<cookie pagenumber="{page + 1}" pagingcookie="{encoded}" istracking="False" />'
        )
    return ODataResponse(200, body)
