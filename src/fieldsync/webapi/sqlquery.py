"""``GET {set}?sql=<SELECT …>``: Dataverse's read-only SQL over the Web API.

The SELECT is translated onto the query tree (:mod:`fieldsync.query.sql`) and read through
the records service as the caller, like ``$filter`` and FetchXML: the read filter applies to
the root table and inside every join, and pages are the collection's (``Prefer:
odata.maxpagesize``, ``@odata.nextLink`` with an opaque ``$skiptoken``; ``TOP`` caps the total).

The answer is an OData collection whose rows hold the selected columns in order (a lookup as
``_x_value``, a joined table's column as ``alias.column``, an ``AS`` alias under its own name
with ``alias@OData.Community.Display.V1.AttributeName``) and the primary id; ``COUNT`` answers
one row with the number."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, QueryError
from fieldsync.query.sql import ATTRIBUTE_NAME, Output, SqlQuery, parse_sql
from fieldsync.schema.model import ColumnType, Table
from fieldsync.types import Row
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import decode_skiptoken, encode_skiptoken, page_size
from fieldsync.webapi.reading import context_url, query_columns, render_rows, wanted


def sql_query(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    extra = sorted(k for k in req.params if k != "sql" and k.lower() != "$skiptoken")
    if extra:
        raise BadRequest(f"sql= cannot be combined with {extra[0]}: say it in the SELECT")
    parsed = parse_sql(req.params["sql"], call.platform.store.schema)
    query = parsed.query
    if query.table != table.name:
        raise QueryError(
            f"sql: the SELECT reads {query.table!r} but was sent to {table.entity_set_name!r}"
        )
    body: dict[str, Any] = {"@odata.context": context_url(req, table, None)}
    if parsed.count is not None:
        with call.reading() as conn:
            stmt = call.statement(query, conn)
            total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
            body["value"] = [{parsed.count: int(total.scalar_one())}]
        return ODataResponse(200, body)
    size = page_size(req.prefer)
    token = next((v for k, v in req.params.items() if k.lower() == "$skiptoken"), None)
    offset = decode_skiptoken(token) if token else 0
    limit = size if query.top is None else max(0, min(size, query.top - offset))
    selected = query.columns
    columns = query_columns(table, selected, ())
    if query.distinct:  # the version would make every row distinct
        columns = tuple(c for c in columns if c != "versionnumber" or c in (selected or ()))
    read = replace(query, columns=columns, top=None)
    want = wanted(req)
    with call.reading() as conn:
        stmt = call.statement(read, conn)
        rows = [dict(r) for r in conn.execute(stmt.limit(limit + 1).offset(offset)).mappings()]
        more = len(rows) > limit and (query.top is None or offset + limit < query.top)
        rows = rows[:limit]
        rendered = render_rows(call, conn, table, rows, want, selected)
    body["value"] = [_shape(table, parsed, r, out) for r, out in zip(rows, rendered, strict=True)]
    headers = {}
    if "odata.maxpagesize" in req.prefer:
        headers["Preference-Applied"] = f"odata.maxpagesize={size}"
    if more:
        params = {"sql": req.params["sql"], "$skiptoken": encode_skiptoken(offset + limit)}
        body["@odata.nextLink"] = req.link(table.entity_set_name, params)
    return ODataResponse(200, body, headers)


def _source_key(table: Table, output: Output) -> str:
    if output.entity is not None:
        return f"{output.entity}.{output.column}"
    col = table.columns[output.column]
    return f"_{col.name}_value" if col.type is ColumnType.LOOKUP else col.name


def _shape(table: Table, parsed: SqlQuery, row: Row, rendered: dict[str, Any]) -> dict[str, Any]:
    """One answer row: the etag, the outputs in the SELECT's order with their annotations,
    then the primary id (unless DISTINCT left it out)."""
    out: dict[str, Any] = {}
    if "@odata.etag" in rendered:
        out["@odata.etag"] = rendered["@odata.etag"]
    for o in parsed.outputs:
        key = _source_key(table, o)
        name = o.name if o.aliased else key
        out[name] = rendered.get(key)
        for k, v in rendered.items():
            if k.startswith(key + "@"):
                out[name + k[len(key) :]] = v
        if o.aliased:
            out[f"{name}@{ATTRIBUTE_NAME}"] = o.column if o.entity is None else key
    pk = table.primary_id
    if pk not in out and pk in row:
        out[pk] = rendered.get(pk)
    return out
