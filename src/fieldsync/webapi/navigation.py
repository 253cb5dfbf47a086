"""What lies below one row: its navigation properties, their links, and its single
properties, read and changed as the caller through the records service.

    GET    {set}(<id>)/<lookup>                      the row it points at ($select, $expand)
    GET    {set}(<id>)/<lookup>/$ref                 {"@odata.id": "<url>"}
    PUT    {set}(<id>)/<lookup>/$ref                 {"@odata.id": "<url>"}: sets the lookup
    DELETE {set}(<id>)/<lookup>/$ref                 clears it
    GET    {set}(<id>)/<collection>                  the related rows ($select $filter
                                                     $orderby $top $count $expand, paging)
    GET    {set}(<id>)/<collection>/$ref             their {"@odata.id"} references
    GET    {set}(<id>)/<collection>/$count           how many, as plain text ($filter applies)
    POST   {set}(<id>)/<one-to-many>/$ref            {"@odata.id": "<child url>"}: points the
                                                     child's lookup at this row
    DELETE {set}(<id>)/<one-to-many>(<child>)/$ref   clears the child's lookup (or ?$id=<url>)
    GET    {set}(<id>)/<column>                      {"value": …} (204 when null)
    GET    {set}(<id>)/<column>/$value               the raw value as text
    PUT    {set}(<id>)/<column>                      {"value": …}
    PUT    {set}(<id>)/<column>/$value               the raw value as text
    DELETE {set}(<id>)/<column>[/$value]             sets it to null

Collections are one-to-many relationships and many-to-many ones (whose ``$ref`` POST and
DELETE link and unlink, see :mod:`fieldsync.webapi.links`). A row the caller may not read
answers 404, and only related rows they may read appear. A lookup is changed through
``$ref`` (or ``@odata.bind``), not as a property, as in Dataverse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, MethodNotAllowed, NotFound, QueryError, RecordNotFound
from fieldsync.query.ast import Condition, Node, Op, is_in
from fieldsync.query.odata import resolve_column, resolve_navigation
from fieldsync.schema.model import Column, ColumnType, Table
from fieldsync.types import EntityRef, RecordId
from fieldsync.webapi import links, reading, render
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Key, Segment
from fieldsync.webapi.reading import resolve_reference


@dataclass(frozen=True, slots=True)
class Nav:
    """A navigation property of a row's table. Single-valued: ``column`` is the row's lookup
    and ``targets`` the tables it may point at. Collection-valued: ``column`` is the lookup of
    ``targets[0]`` that points back (one-to-many), or ``relationship`` names a many-to-many
    relationship."""

    name: str
    column: Column
    targets: tuple[str, ...]
    collection: bool
    relationship: str | None = None


def _navigation(call: Call, table: Table, name: str) -> Nav | None:
    col = table.columns.get(name.lower())
    if col is not None and col.type is ColumnType.LOOKUP:  # a polymorphic one too
        return Nav(col.name, col, col.targets, False)
    try:
        nav = resolve_navigation(table, call.platform.store.schema, name, many_to_many=True)
    except QueryError:
        return None
    return Nav(nav.name, nav.column, (nav.target.name,), nav.collection, nav.relationship)


def handle(
    call: Call, req: ODataRequest, table: Table, key: Key, segments: list[Segment]
) -> ODataResponse:
    """``segments`` are those after ``{set}(<key>)``."""
    first, rest = segments[0], [s.name for s in segments[1:]]
    if any(s.key is not None for s in segments[1:]) or len(rest) > 1:
        raise BadRequest(f"{req.path[:80]!r} is not a resource path fieldsync serves")
    tail = rest[0] if rest else None
    nav = _navigation(call, table, first.name)
    if nav is not None:
        if tail == "$ref":
            return _ref(call, req, table, key, first, nav)
        if first.key is not None:
            raise BadRequest(f"{first.name}(<id>) is only addressed with /$ref, to unlink it")
        if tail not in (None, "$count"):
            raise BadRequest(f"{tail!r} cannot follow the navigation property {first.name!r}")
        if req.method != "GET":
            hint = f"; change it with {first.name}/$ref" if not nav.collection else ""
            raise MethodNotAllowed(f"{req.method} is not allowed on {first.name!r}{hint}")
        if not nav.collection:
            if tail == "$count":
                raise BadRequest(f"{first.name!r} is single-valued: it has no $count")
            return _related_row(call, req, table, key, nav, refs=False)
        return _related_rows(call, req, table, key, nav, count=tail == "$count")
    col = resolve_column(table, first.name)
    if col is None or first.key is not None:
        raise NotFound(
            f"Resource not found for the segment '{first.name}': {table.name} has no such "
            "column or navigation property",
            code="0x80060888",
        )
    if tail not in (None, "$value"):
        raise BadRequest(f"{tail!r} cannot follow the property {first.name!r}")
    return _property(call, req, table, key, col, first.name, raw=tail == "$value")


# -- navigation ------------------------------------------------------------------------------


def _related_row(
    call: Call, req: ODataRequest, table: Table, key: Key, nav: Nav, *, refs: bool
) -> ODataResponse:
    columns: tuple[str, ...] = (table.primary_id, nav.column.name)
    if nav.column.polymorphic:
        columns += (nav.column.type_column,)
    with call.reading() as conn:
        row = reading.find(call, conn, table, key, columns)
    if row is None:
        raise RecordNotFound(table.name, key.value if key.pairs is None else dict(key.pairs))
    rid = row.get(nav.column.name)
    target = row.get(nav.column.type_column) if nav.column.polymorphic else nav.column.targets[0]
    if rid is None or target not in nav.targets:
        return ODataResponse(204)
    other = call.platform.store.schema.table(str(target))
    if refs:
        link = req.link(f"{other.entity_set_name}({rid})")
        return ODataResponse(
            200, {"@odata.context": f"{req.root}/$metadata#$ref", "@odata.id": link}
        )
    return reading.get_entity(call, req, other, Key(value=rid))


def _within(
    call: Call, table: Table, parent: RecordId, nav: Nav
) -> Callable[[sa.Connection], Node]:
    target = call.platform.store.schema.table(nav.targets[0])

    def within(conn: sa.Connection) -> Node:
        if nav.relationship is not None:
            ids = reading.linked_ids(call, conn, nav.relationship, table, [parent])
            return is_in(target.primary_id, ids.get(parent, []))
        return Condition(nav.column.name, Op.EQ, parent)

    return within


def _related_rows(
    call: Call,
    req: ODataRequest,
    table: Table,
    key: Key,
    nav: Nav,
    *,
    count: bool,
    refs: bool = False,
) -> ODataResponse:
    parent = links.row_id(call, table, key)
    target = call.platform.store.schema.table(nav.targets[0])
    within = _within(call, table, parent, nav)
    if count:
        return reading.count(call, req, target, within=within)
    path = f"{table.entity_set_name}({parent})/{nav.name}" + ("/$ref" if refs else "")
    return reading.list_entities(call, req, target, within=within, path=path, refs=refs)


def _ref(
    call: Call, req: ODataRequest, table: Table, key: Key, segment: Segment, nav: Nav
) -> ODataResponse:
    if req.method == "GET":
        if segment.key is not None:
            raise BadRequest("GET …/$ref reads the references of the navigation property")
        if nav.collection:
            return _related_rows(call, req, table, key, nav, count=False, refs=True)
        return _related_row(call, req, table, key, nav, refs=True)
    if nav.relationship is not None:  # many-to-many: link and unlink
        return links.ref(call, req, table, [Segment(table.entity_set_name, key), segment])
    if not nav.collection:
        return _lookup_ref(call, req, table, key, segment, nav)
    return _child_ref(call, req, table, key, segment, nav)


def _reference(call: Call, req: ODataRequest) -> EntityRef:
    body = req.json_object()
    if set(body) != {"@odata.id"}:
        raise BadRequest('the body of a $ref is {"@odata.id": "<url of the other row>"}')
    return resolve_reference(call, body["@odata.id"])


def _lookup_ref(
    call: Call, req: ODataRequest, table: Table, key: Key, segment: Segment, nav: Nav
) -> ODataResponse:
    if segment.key is not None:
        raise BadRequest(f"{segment.name} is single-valued: address it as {segment.name}/$ref")
    if req.method == "PUT":
        ref = _reference(call, req)
        if ref.table not in nav.targets:
            raise BadRequest(
                f"{nav.name} points at {' or '.join(nav.targets)} rows, not at {ref.table}"
            )
        value: EntityRef | None = ref
    elif req.method == "DELETE":
        value = None
    else:
        raise MethodNotAllowed(f"{req.method} on a single-valued $ref: use PUT or DELETE")
    rid = links.row_id(call, table, key)

    def work(conn: sa.Connection) -> None:
        if value is None and nav.column.polymorphic:
            row = reading.find(call, conn, table, key, (table.primary_id, nav.column.type_column))
            if row is not None and row.get(nav.column.type_column) not in nav.targets:
                return  # points at another table: nothing of this one
        call.platform.records.update(
            table.name, rid, {nav.column.name: value}, caller=call.caller, conn=conn
        )

    call.write(work)
    return ODataResponse(204)


def _child_ref(
    call: Call, req: ODataRequest, table: Table, key: Key, segment: Segment, nav: Nav
) -> ODataResponse:
    schema = call.platform.store.schema
    child_table = schema.table(nav.targets[0])
    back = nav.column
    parent = links.row_id(call, table, key)
    records = call.platform.records
    if req.method == "POST":
        if segment.key is not None:
            raise BadRequest("POST …/$ref adds a row: name it in @odata.id")
        ref = _reference(call, req)
        if ref.table != child_table.name:
            raise BadRequest(f"{nav.name} holds {child_table.name} rows, not {ref.table} rows")
        call.write(
            lambda conn: records.update(
                child_table.name,
                ref.id,
                {back.name: EntityRef(table.name, parent)},
                caller=call.caller,
                conn=conn,
            )
        )
        return ODataResponse(204)
    if req.method != "DELETE":
        raise MethodNotAllowed(f"{req.method} on a collection's $ref: use POST or DELETE")
    if segment.key is not None:
        if segment.key.pairs is not None or segment.key.value is None:
            raise BadRequest(f"{segment.name}(<id>)/$ref: name the row by its id")
        child = reading.record_id(child_table, segment.key.value)
    elif "$id" in req.params:
        ref = resolve_reference(call, req.params["$id"])
        if ref.table != child_table.name:
            raise BadRequest(f"{nav.name} holds {child_table.name} rows, not {ref.table} rows")
        child = ref.id
    else:
        raise BadRequest("DELETE …/$ref names the row: …/<nav>(<id>)/$ref or ?$id=<url>")

    def unlink(conn: sa.Connection) -> None:
        row = reading.find(
            call, conn, child_table, Key(value=child), (child_table.primary_id, back.name)
        )
        if row is None or row.get(back.name) != parent:
            raise NotFound(f"{child_table.name} {child} is not in {nav.name} of this row")
        records.update(child_table.name, child, {back.name: None}, caller=call.caller, conn=conn)

    call.write(unlink)
    return ODataResponse(204)


# -- single properties -----------------------------------------------------------------------


def _property(
    call: Call, req: ODataRequest, table: Table, key: Key, col: Column, name: str, *, raw: bool
) -> ODataResponse:
    if col.type in (ColumnType.FILE, ColumnType.IMAGE):
        raise BadRequest(f"{col.name} is a file column: GET, PATCH or DELETE {col.name} itself")
    if req.method == "GET":
        with call.reading() as conn:
            row = reading.find(call, conn, table, key, (table.primary_id, col.name))
        if row is None:
            raise RecordNotFound(table.name, key.value if key.pairs is None else dict(key.pairs))
        value = render.value(col, row.get(col.name))
        if value is None:
            return ODataResponse(204)
        if raw:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            return ODataResponse(200, text, media_type="text/plain; charset=utf-8")
        rid = row[table.primary_id]
        shown = f"_{col.name}_value" if col.type is ColumnType.LOOKUP else col.name
        context = f"{req.root}/$metadata#{table.entity_set_name}({rid})/{shown}"
        return ODataResponse(200, {"@odata.context": context, "value": value})
    if col.type is ColumnType.LOOKUP:
        raise BadRequest(
            f"{col.name} is a lookup: set it with PUT {col.name}/$ref or {col.name}@odata.bind, "
            f"clear it with DELETE {col.name}/$ref"
        )
    new: Any
    if req.method == "PUT" and raw:
        new = _raw_value(col, req.body)
    elif req.method == "PUT":
        body = req.json_object()
        if set(body) != {"value"}:
            raise BadRequest('the body of a property PUT is {"value": <the new value>}')
        new = body["value"]
    elif req.method == "DELETE":
        new = None
    else:
        raise MethodNotAllowed(f"{req.method} is not allowed on a property; use GET, PUT, DELETE")
    rid = links.row_id(call, table, key)
    call.write(
        lambda conn: call.platform.records.update(
            table.name, rid, {col.name: new}, caller=call.caller, conn=conn
        )
    )
    return ODataResponse(204)


def _raw_value(col: Column, body: bytes) -> Any:
    """The body of ``PUT …/<column>/$value``: the text itself for text columns, otherwise the
    literal it spells (``12``, ``true``, ``2024-01-01``)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body of PUT …/$value must be UTF-8 text") from None
    if col.type in (ColumnType.STRING, ColumnType.MEMO):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # dates and the like: the column's coercion decides
