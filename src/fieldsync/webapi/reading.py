"""Reads through the records service as the caller: one row by key, collections with
``$filter $select $orderby $top $count $expand`` and server-driven paging, counts
(``{set}/$count``), FetchXML, and the collections a navigation property reaches.

Paging: a page holds at most ``Prefer: odata.maxpagesize`` rows (5000 by default); when more
rows follow, ``@odata.nextLink`` repeats the request's options with an opaque ``$skiptoken``
that starts the next page after the last row's sort key (``webapi.paging``).
``$top`` caps the total across pages (the client does not)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from fieldsync.errors import BadRequest, NotFound, QueryError, RecordNotFound
from fieldsync.query.ast import Condition, Node, Op, Query, all_of, is_in
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import Expand, ODataQuery, parse_query_options, resolve_column
from fieldsync.schema.model import ColumnType, Table
from fieldsync.schema.values import make_coercer
from fieldsync.security.model import Privilege
from fieldsync.security.predicate import has_privilege
from fieldsync.types import EntityRef, RecordId, Row
from fieldsync.webapi import driver, paging, render
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import (
    API_PREFIX,
    Alias,
    Key,
    etag,
    etag_version,
    page_size,
    parse_path,
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
    return [dict(r) for r in conn.execute(call.statement(query, conn)).mappings()]


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
        if isinstance(value, Alias):
            raise BadRequest(f"the key value of {name!r}: parameter aliases are not taken here")
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


def lookup_names(call: Call, conn: sa.Connection, table: Table, rows: list[Row]) -> dict[Any, str]:
    """The primary names of the rows the lookups of ``rows`` point at, as the caller reads
    them (a row they may not read has none): one query per referenced table."""
    wanted: dict[str, set[Any]] = defaultdict(set)
    for col in table.lookups():
        for r in rows:
            rid = r.get(col.name)
            if rid is not None:
                target = r.get(col.type_column) if col.polymorphic else col.targets[0]
                if target:
                    wanted[str(target)].add(rid)
    schema = call.platform.store.schema
    out: dict[Any, str] = {}
    for name, ids in wanted.items():
        target_table = schema.table(name) if name in schema else None
        if target_table is None or target_table.primary_name not in target_table.columns:
            continue
        if not has_privilege(call.caller, target_table, Privilege.READ):
            continue
        pk, label = target_table.primary_id, target_table.primary_name
        for r in run(call, conn, Query(name, (pk, label), is_in(pk, ids))):
            if r.get(label) is not None:
                out[r[pk]] = str(r[label])
    return out


def render_rows(
    call: Call,
    conn: sa.Connection,
    table: Table,
    rows: list[Row],
    want: Callable[[str], bool],
    columns: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Rows as entities, with the primary names of their lookups when the formatted values
    are asked for."""
    names = lookup_names(call, conn, table, rows) if want(render.FORMATTED) else None
    return render.render_rows(table, rows, annotations=want, columns=columns, names=names)


def linked_ids(
    call: Call, conn: sa.Connection, relationship: str, table: Table, ids: Iterable[RecordId]
) -> dict[RecordId, list[RecordId]]:
    """For rows of ``table``, the ids of the rows a many-to-many relationship links them to.
    Only ids: the linked rows are then read as the caller, so nothing unreadable shows."""
    rel = call.platform.store.schema.relationships[relationship]
    mine, theirs = rel.referenced_column, rel.referencing_column
    if rel.referenced_table != table.name:
        mine, theirs = theirs, mine
    sql = call.platform.store.sql_table(rel.intersect_table)
    out: dict[RecordId, list[RecordId]] = defaultdict(list)
    wanted = list(dict.fromkeys(ids))
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        stmt = sa.select(sql.c[mine], sql.c[theirs]).where(sql.c[mine].in_(chunk))
        for parent, other in conn.execute(stmt):
            out[parent].append(other)
    return out


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
            rendered = render_rows(call, conn, target, related, want, e.columns)
            expand_rows(call, conn, target, related, e.expand, rendered, want)
            as_json = {r[target.primary_id]: j for r, j in zip(related, rendered, strict=True)}
            for row, item in zip(rows, out, strict=True):
                rid = row.get(e.lookup_column)
                item[e.navigation] = as_json.get(rid) if rid in by_id else None
        else:
            parents = [r[table.primary_id] for r in rows]
            links: dict[RecordId, list[RecordId]] = {}
            if e.relationship is not None:  # many-to-many: through the intersect table
                links = linked_ids(call, conn, e.relationship, table, parents)
                within = is_in(target.primary_id, {o for ids in links.values() for o in ids})
            else:
                within = is_in(e.lookup_column, parents)
            if cols is not None and e.lookup_column not in cols:
                cols = (*cols, e.lookup_column)
            query = Query(
                target.name,
                cols,
                all_of([within, e.filter or all_of([])]),
                orders=e.orders,
                top=MAX_EXPANDED,
            )
            related = run(call, conn, query)
            rendered = render_rows(call, conn, target, related, want, e.columns)
            expand_rows(call, conn, target, related, e.expand, rendered, want)
            groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            if e.relationship is not None:
                place = {r[target.primary_id]: i for i, r in enumerate(related)}
                for parent, others in links.items():  # in the expansion's order
                    ranked = sorted(place[o] for o in set(others) if o in place)
                    groups[parent] = [rendered[i] for i in ranked[: e.top]]
            else:
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
        [body] = render_rows(call, conn, table, [row], want, selected)
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
    [body] = render_rows(call, conn, table, [row], want, selected)
    expand_rows(call, conn, table, [row], odq.expand, [body], want)
    return {"@odata.context": context_url(req, table, selected) + "/$entity", **body}


# -- collections -----------------------------------------------------------------------------


def list_entities(
    call: Call,
    req: ODataRequest,
    table: Table,
    *,
    within: Callable[[sa.Connection], Node] | None = None,
    path: str | None = None,
    refs: bool = False,
) -> ODataResponse:
    """A collection: the entity set, or (``within``, read in the same transaction) the rows a
    navigation property reaches, at ``path``. ``refs`` answers ``@odata.id`` references."""
    if "fetchXml" in req.params and within is None:
        return fetch_xml(call, req, table)
    odq: ODataQuery = parse_query_options(req.params, table, call.platform.store.schema)
    query = odq.query
    size = page_size(req.prefer)
    cursor = paging.decode(odq.skiptoken, table, query.orders) if odq.skiptoken else None
    sent = 0 if cursor is None else cursor.sent
    limit = size if query.top is None else max(0, min(size, query.top - sent))
    want = wanted(req)
    selected = (table.primary_id,) if refs else query.columns
    expand = () if refs else odq.expand
    columns = query_columns(table, selected, expand)
    if columns is not None:  # the sort key comes along, to start the next page after it
        columns = tuple(dict.fromkeys(columns + tuple(paging.key_columns(table, query.orders))))
    read = replace(query, columns=columns, top=None, count=False)
    context = (
        f"{req.root}/$metadata#Collection($ref)" if refs else context_url(req, table, selected)
    )
    body: dict[str, Any] = {"@odata.context": context}
    with call.reading() as conn:
        if within is not None:
            read = replace(read, filter=all_of([read.filter or all_of([]), within(conn)]))
        stmt = call.statement(read, conn)
        if query.count:
            total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
            count = int(total.scalar_one())
            body["@odata.count"] = min(count, query.top) if query.top is not None else count
        if cursor is not None:
            sql = call.platform.store.sql_table(table.name)
            stmt = stmt.where(paging.after(sql, table, query.orders, cursor))
        stmt = stmt.limit(limit + 1)
        last: Row | None = None
        if refs or expand or want(render.FORMATTED):
            result = conn.execute(stmt)
            keys = tuple(result.keys())
            rows = [dict(zip(keys, r, strict=True)) for r in result]
            more = len(rows) > limit and (query.top is None or sent + limit < query.top)
            rows = rows[:limit]
            last = rows[-1] if rows else None
            if refs:
                value = [
                    {"@odata.id": req.link(f"{table.entity_set_name}({r[table.primary_id]})")}
                    for r in rows
                ]
            else:
                value = render_rows(call, conn, table, rows, want, selected)
                expand_rows(call, conn, table, rows, expand, value, want)
        else:  # the common page: rendered from the driver's values (webapi.driver)
            page = driver.fetch(conn, stmt)
            more = len(page.rows) > limit and (query.top is None or sent + limit < query.top)
            values = page.rows[:limit]
            value = render.render_values(
                table,
                page.keys,
                values,
                page.convert,
                page.text,
                annotations=want,
                columns=selected,
            )
            last = page.typed(len(values) - 1) if values else None
    body["value"] = value
    headers = {}
    if "odata.maxpagesize" in req.prefer:
        headers["Preference-Applied"] = f"odata.maxpagesize={size}"
    if more and last is not None:
        params = {k: v for k, v in req.params.items() if k.lower() != "$skiptoken"}
        params["$skiptoken"] = paging.encode(table, query.orders, last, sent + len(value))
        body["@odata.nextLink"] = req.link(path or table.entity_set_name, params)
    return ODataResponse(200, body, headers)


def count(
    call: Call,
    req: ODataRequest,
    table: Table,
    *,
    within: Callable[[sa.Connection], Node] | None = None,
) -> ODataResponse:
    """``{set}/$count`` and ``{set}(<id>)/<collection>/$count``: the number of rows the caller
    may read that pass ``$filter``, as plain text."""
    odq = parse_query_options(req.params, table, call.platform.store.schema)
    query = Query(table.name, (table.primary_id,), odq.query.filter)
    with call.reading() as conn:
        if within is not None:
            query = replace(query, filter=all_of([query.filter or all_of([]), within(conn)]))
        stmt = call.statement(query, conn)
        total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
        number = int(total.scalar_one())
    return ODataResponse(200, str(number), media_type="text/plain; charset=utf-8")


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
    body: dict[str, Any] = {"@odata.context": context_url(req, table, None)}
    with call.reading() as conn:
        plain = replace(query, page=None, page_size=None, paging_cookie=None, count=False)
        stmt = call.statement(plain, conn)
        if size is not None:
            stmt = stmt.limit(size + 1).offset((page - 1) * size)
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
        more = size is not None and len(rows) > size
        if size is not None:
            rows = rows[:size]
        body["value"] = render_rows(call, conn, table, rows, want)
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


def resolve_reference(call: Call, text: Any) -> EntityRef:
    """``/contacts(<guid>)``, ``contacts(<guid>)``, an absolute URL, an alternate key, or a
    ``$<n>`` Content-ID of the same change set."""
    if not isinstance(text, str):
        raise BadRequest(f"an @odata.bind value must be a URL string, got {str(text)[:60]!r}")
    ref = text.strip()
    if ref.startswith("$") and ref[1:].isdigit():
        if ref[1:] not in call.content_ids:
            raise BadRequest(f"{ref} names no earlier request of this change set")
        ref = call.content_ids[ref[1:]]
    if API_PREFIX in ref:
        ref = ref.split(API_PREFIX, 1)[1]
    segments = parse_path(ref)
    if len(segments) != 1 or segments[0].key is None:
        raise BadRequest(f"{text[:80]!r} is not a reference to one row (entityset(<id>))")
    schema = call.platform.store.schema
    try:
        table = schema.by_entity_set(segments[0].name)
    except NotFound:
        raise BadRequest(f"{text[:80]!r}: no entity set {segments[0].name!r}") from None
    key = segments[0].key
    assert key is not None
    if key.pairs is None:
        if not isinstance(key.value, uuid.UUID):
            raise BadRequest(f"{text[:80]!r}: the key is not a GUID")
        return EntityRef(table.name, key.value)
    with call.reading() as conn:
        row = find(call, conn, table, key, (table.primary_id,))
    if row is None:
        raise BadRequest(f"{text[:80]!r}: no such {table.name} row")
    return EntityRef(table.name, row[table.primary_id])
