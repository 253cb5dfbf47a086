"""Views compiled for the device (``fieldsync.sync.views``) return what the server returns.

For demo users on SQLite and PostgreSQL: the handshake's replica layout and compiled views,
a replica built the way a device builds it (the layout's DDL, every download page applied by
the device's :class:`fieldsync.client.replica.Replica`), and each view of a corpus (the demo
app's views and views over every operator family, column type, link and order) run on that
replica with the server's parameters and times computed for one moment. The rows and their
order equal the server's own query as the user (``Records.query``) for the rows on the
device. Hypothesis draws further views from the operator and column tables."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.client.replica import Replica
from fieldsync.demo import seed_demo
from fieldsync.platform import Platform
from fieldsync.query.ast import Op
from fieldsync.query.bind import date_range
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.security.context import load_context, user_binding
from fieldsync.store.engine import _lower, _regexp
from fieldsync.sync.service import SyncService
from fieldsync.sync.views import compile_view

NOW = dt.datetime(2026, 12, 7, 14, 30, 15, 123456, tzinfo=dt.UTC)
TODAY = NOW.date()
USERS = ("lena", "nora", "priya", "carlos")


def _fetch(table: str, body: str, order: str = "", top: str = "") -> str:
    return f'<fetch{top}><entity name="{table}"><all-attributes />{order}{body}</entity></fetch>'


def _filter(*conditions: str, kind: str = "and") -> str:
    return f'<filter type="{kind}">{"".join(conditions)}</filter>'


def _cond(attribute: str, operator: str, value: str | None = None) -> str:
    if value is None:
        return f'<condition attribute="{attribute}" operator="{operator}" />'
    return f'<condition attribute="{attribute}" operator="{operator}" value="{value}" />'


def _values(attribute: str, operator: str, *values: str) -> str:
    inner = "".join(f"<value>{v}</value>" for v in values)
    return f'<condition attribute="{attribute}" operator="{operator}">{inner}</condition>'


CORPUS: list[tuple[str, str]] = [
    ("workorder", _fetch("workorder", _filter(_cond("ownerid", "eq-userid")))),
    ("workorder", _fetch("workorder", _filter(_cond("ownerid", "eq-useroruserteams")))),
    ("workorder", _fetch("workorder", _filter(_cond("owningbusinessunit", "eq-businessid")))),
    ("workorder", _fetch("workorder", _filter(_cond("ownerid", "eq-useroruserhierarchy")))),
    (
        "workorder",
        _fetch(
            "workorder",
            _filter(_cond("scheduledstart", "last-x-days", "30")),
            '<order attribute="scheduledstart" descending="true" />',
        ),
    ),
    ("workorder", _fetch("workorder", _filter(_cond("scheduledstart", "next-x-days", "14")))),
    ("workorder", _fetch("workorder", _filter(_cond("scheduledstart", "this-month")))),
    ("workorder", _fetch("workorder", _filter(_cond("scheduledstart", "older-x-days", "7")))),
    (
        "workorder",
        _fetch(
            "workorder",
            _filter(
                _cond("scheduledstart", "today"), _cond("scheduledstart", "yesterday"), kind="or"
            ),
        ),
    ),
    ("workorder", _fetch("workorder", _filter(_cond("duedate", "this-week")))),
    ("workorder", _fetch("workorder", _filter(_cond("duedate", "on-or-after", TODAY.isoformat())))),
    ("workorder", _fetch("workorder", _filter(_cond("duedate", "last-x-days", "10")))),
    (
        "workorder",
        _fetch("workorder", _filter(_cond("name", "like", "%1%")), '<order attribute="name" />'),
    ),
    ("workorder", _fetch("workorder", _filter(_cond("name", "begins-with", "wo-00")))),
    ("workorder", _fetch("workorder", _filter(_cond("name", "like", "WO-00[1-3]%")))),
    ("workorder", _fetch("workorder", _filter(_values("priority", "in", "1", "2")))),
    (
        "workorder",
        _fetch(
            "workorder", _filter(_cond("priority", "ne", "3"), _cond("systemstatus", "not-null"))
        ),
    ),
    (
        "workorder",
        _fetch("workorder", _filter(_values("incidenttypes", "contain-values", "1", "3"))),
    ),
    (
        "workorder",
        _fetch(
            "workorder",
            _filter(_cond("totalamount", "gt", "500.5")),
            '<order attribute="totalamount" />',
        ),
    ),
    (
        "workorder",
        _fetch(
            "workorder",
            _filter(_cond("laborhours", "le", "3")),
            '<order attribute="laborhours" descending="true" />',
        ),
    ),
    ("workorder", _fetch("workorder", _filter(_cond("signedoff", "eq", "1")))),
    (
        "workorder",
        _fetch(
            "workorder", _filter(_cond("latitude", "gt", "53")), '<order attribute="longitude" />'
        ),
    ),
    ("workorder", _fetch("workorder", _filter(_cond("primarycontactid", "null")))),
    (
        "workorder",
        _fetch(
            "workorder",
            "",
            '<order attribute="priority" /><order attribute="name" descending="true" />',
            ' top="25"',
        ),
    ),
    (
        "workorder",
        _fetch(
            "workorder",
            '<link-entity name="account" from="accountid" to="serviceaccountid" alias="a">'
            '<attribute name="name" /><attribute name="address1_city" />'
            + _filter(_cond("address1_city", "eq", "leeds"))
            + "</link-entity>",
            '<order attribute="name" />',
        ),
    ),
    (
        "account",
        _fetch(
            "account",
            _filter(_cond("name", "ends-with", "ltd"), _cond("creditonhold", "eq", "0")),
            '<order attribute="revenue" descending="true" />',
        ),
    ),
    (
        "account",
        _fetch(
            "account",
            _filter(
                '<link-entity name="workorder" from="serviceaccountid" to="accountid" '
                'link-type="any">' + _filter(_cond("priority", "eq", "1")) + "</link-entity>"
            ),
        ),
    ),
    (
        "contact",
        _fetch(
            "contact",
            _filter(_cond("birthdate", "not-null"), _cond("parentcustomerid", "not-null")),
            '<order attribute="birthdate" />',
        ),
    ),
]


def _time_value(spec: dict[str, Any]) -> str:
    start, end = date_range(Op(spec["op"]), spec["value"], NOW)
    moment = start if spec["edge"] == "start" else end
    assert moment is not None
    if spec["date"]:
        return moment.date().isoformat()
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class World:
    def __init__(self, platform: Platform, directory: Path) -> None:
        self.platform = platform
        self.sync = SyncService(platform.records)
        self.directory = directory
        self.replicas: dict[str, tuple[Any, Replica, Any]] = {}

    def device(self, username: str) -> tuple[Any, Replica, Any]:
        """The user's context, a replica synced the way the device syncs, and the handshake."""
        if username in self.replicas:
            return self.replicas[username]
        store = self.platform.store
        ctx = load_context(store, self.platform.org.user_id(username))
        device = f"views-{username}"
        answer = self.sync.handshake(ctx, device=device, app="fieldservice")
        replica = Replica(self.directory / username)
        replica.adopt(answer)
        cursors: dict[str, str | None] = dict.fromkeys(answer["order"])
        active = list(answer["order"])
        while active:
            page = self.sync.download(
                ctx, device=device, app="fieldservice", cursors={t: cursors[t] for t in active}
            )
            for p in page["pages"]:
                replica.apply_page(p, NOW.isoformat())
                cursors[p["table"]] = p["cursor"]
            active = [p["table"] for p in page["pages"] if p["more"]]
        self.replicas[username] = (ctx, replica, answer)
        return self.replicas[username]


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> Iterator[World]:
    seed_demo(platform, today=TODAY)
    w = World(platform, tmp_path)
    yield w
    for _, replica, _ in w.replicas.values():
        replica.close()


def _on_device(
    replica: Replica, compiled: Any, search: str | None = None, indexed: bool = False
) -> list[str]:
    conn = sqlite3.connect(replica.path)
    conn.create_function("lower", 1, _lower, deterministic=True)
    conn.create_function("regexp", 2, _regexp, deterministic=True)
    try:
        if indexed:  # as the browser device does once its download is in
            for statement in compiled.get("indexes", []):
                conn.execute(statement)
            conn.commit()
        params = dict(compiled["params"])
        params.update({k: _time_value(v) for k, v in compiled["times"].items()})
        params.update(
            search=search, limit=-1 if compiled["top"] is None else compiled["top"], offset=0
        )
        cursor = conn.execute(compiled["sql"], params)
        return [uuid.UUID(row[0]).hex for row in cursor.fetchall()]
    finally:
        conn.close()


def _on_server(world: World, ctx: Any, table: str, fetchxml: str, held: set[str]) -> list[str]:
    query = parse_fetchxml(fetchxml, world.platform.store.schema)
    rows = world.platform.records.query(query, caller=ctx, now=NOW)
    pk = world.platform.store.schema.table(table).primary_id
    return [row[pk].hex for row in rows if row[pk].hex in held]


def _held(replica: Replica, table: str, pk: str) -> set[str]:
    with replica.read() as conn:
        return {uuid.UUID(str(r[0])).hex for r in conn.execute(f'SELECT "{pk}" FROM "{table}"')}


def _check(world: World, username: str, table: str, fetchxml: str) -> int:
    ctx, replica, _ = world.device(username)
    store = world.platform.store
    with store.read() as conn:
        user = user_binding(store, conn, ctx)
    compiled = compile_view(fetchxml, store.schema, list(replica.sql), user)
    pk = store.schema.table(table).primary_id
    held = {uuid.UUID(h).hex for h in _held(replica, table, pk)}
    device_rows = _on_device(replica, compiled)
    assert _on_device(replica, compiled, indexed=True) == device_rows, fetchxml
    server_rows = _on_server(world, ctx, table, fetchxml, held)
    if compiled["top"] is not None:
        # the server caps before the device's rows are picked out; compare the device's cap
        # with the server's rows uncapped
        uncapped = fetchxml.replace(f' top="{compiled["top"]}"', "")
        server_rows = _on_server(world, ctx, table, uncapped, held)[: compiled["top"]]
    assert device_rows == server_rows, (username, fetchxml)
    return len(device_rows)


def test_compiled_views_return_the_servers_rows_in_its_order(world: World) -> None:
    found = 0
    for username in USERS:
        _, _, answer = world.device(username)
        for view in answer["views"]:
            assert "sqlite" in view, view.get("error")
            found += _check(world, username, view["table"], view["fetchxml"])
        for table, fetchxml in CORPUS:
            found += _check(world, username, table, fetchxml)
    assert found > 0, "the corpus selected no rows at all"


def test_search_limit_and_offset_page_the_view(world: World) -> None:
    _ctx, replica, answer = world.device("lena")
    view = next(v for v in answer["views"] if v["table"] == "workorder")
    whole = _on_device(replica, view["sqlite"])
    assert len(whole) > 10
    conn = sqlite3.connect(replica.path)
    conn.create_function("lower", 1, _lower, deterministic=True)
    try:
        compiled = view["sqlite"]
        pages = []
        for offset in range(0, len(whole), 7):
            params = {**compiled["params"], "search": None, "limit": 7, "offset": offset}
            pages += [uuid.UUID(r[0]).hex for r in conn.execute(compiled["sql"], params)]
        assert pages == whole
        params = {**compiled["params"], "search": "%wo-000%", "limit": -1, "offset": 0}
        names = [r[1] for r in conn.execute(compiled["sql"], params)]
        assert names
        assert all("wo-000" in n.lower() for n in names)
    finally:
        conn.close()


def test_a_views_index_walks_it_in_order_and_stops_after_the_page(world: World) -> None:
    _ctx, replica, answer = world.device("lena")
    view = next(v for v in answer["views"] if v["table"] == "workorder")
    compiled = view["sqlite"]
    layout = answer["sqlite"]["workorder"]
    assert compiled["indexes"]
    assert layout["indexes"]
    whole = _on_device(replica, compiled)
    conn = sqlite3.connect(replica.path)
    conn.create_function("lower", 1, _lower, deterministic=True)
    try:
        for statement in compiled["indexes"] + layout["indexes"]:
            conn.execute(statement)
            conn.execute(statement)  # IF NOT EXISTS: building twice is harmless
        conn.commit()
        for search in (None, "%wo-000%"):
            params = {**compiled["params"], "search": search, "limit": 5, "offset": 0}
            plan = " ".join(
                r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {compiled['sql']}", params)
            )
            assert "TEMP B-TREE" not in plan, plan
            assert "USING INDEX ixv_workorder_" in plan, plan
        params = {**compiled["params"], "search": None, "limit": 5, "offset": 0}
        assert [uuid.UUID(r[0]).hex for r in conn.execute(compiled["sql"], params)] == whole[:5]
    finally:
        conn.close()


def test_view_indexes_follow_the_filter_and_the_order(world: World) -> None:
    ctx, replica, _ = world.device("lena")
    store = world.platform.store
    with store.read() as conn:
        user = user_binding(store, conn, ctx)
    tables = list(replica.sql)
    desc = compile_view(
        _fetch(
            "workorder",
            _filter(_cond("statecode", "eq", "0")),
            order='<order attribute="scheduledstart" descending="true"/>',
        ),
        store.schema,
        tables,
        user,
    )
    (statement,) = desc["indexes"]
    assert statement.endswith("ON workorder (statecode, scheduledstart DESC, workorderid)")
    same = compile_view(
        _fetch(
            "workorder",
            _filter(_cond("statecode", "eq", "0")),
            order='<order attribute="scheduledstart" descending="true"/>',
            top=' top="10"',
        ),
        store.schema,
        tables,
        user,
    )
    assert same["indexes"] == desc["indexes"]  # one index per shape, whichever view asks
    by_link = compile_view(
        _fetch(
            "workorder",
            '<link-entity name="account" from="accountid" to="serviceaccountid" alias="a">'
            '<order attribute="name"/></link-entity>',
        ),
        store.schema,
        tables,
        user,
    )
    assert by_link["indexes"] == []


def test_a_view_reading_a_table_off_the_device_says_why(world: World) -> None:
    from fieldsync.sync.views import compile_views

    ctx, replica, _ = world.device("lena")
    store = world.platform.store
    with store.read() as conn:
        user = user_binding(store, conn, ctx)
    views = [
        {
            "name": "x",
            "table": "workorder",
            "fetchxml": _fetch(
                "workorder", '<link-entity name="systemuser" from="systemuserid" to="ownerid" />'
            ),
        },
    ]
    out = compile_views(views, store.schema, list(replica.sql), user)
    assert "sqlite" not in out[0]
    assert "systemuser" in out[0]["error"]


OPERATORS: dict[str, list[tuple[str, str | None]]] = {
    "name": [("like", "%{}%"), ("begins-with", "{}"), ("not-like", "%{}%"), ("eq", "WO-00{}")],
    "priority": [("eq", "{}"), ("ne", "{}")],
    "ticketnumber": [("gt", "10{}0"), ("le", "10{}00")],
    "scheduledstart": [
        ("last-x-days", "{}"),
        ("next-x-days", "{}"),
        ("last-x-hours", "{}"),
        ("older-x-days", "{}"),
        ("this-year", None),
        ("tomorrow", None),
    ],
    "duedate": [("next-x-days", "{}"), ("on-or-before", "date"), ("this-month", None)],
    "totalamount": [("gt", "{}.25"), ("lt", "{}00")],
    "estimatedduration": [("ge", "{}0"), ("lt", "{}5"), ("null", None)],
    "signedoff": [("eq", "{}")],
}


@st.composite
def views(draw: st.DrawFn) -> str:
    conditions = []
    for _ in range(draw(st.integers(1, 3))):
        column = draw(st.sampled_from(sorted(OPERATORS)))
        op, shape = draw(st.sampled_from(OPERATORS[column]))
        n = draw(st.integers(1, 4 if column in ("priority", "signedoff") else 9))
        if column == "signedoff":
            n = n % 2
        value = (
            None
            if shape is None
            else (
                (TODAY + dt.timedelta(days=n * 3 - 9)).isoformat()
                if shape == "date"
                else shape.format(n)
            )
        )
        conditions.append(_cond(column, op, value))
    kind = draw(st.sampled_from(["and", "or"]))
    order = draw(st.sampled_from(["name", "scheduledstart", "totalamount", "duedate", "priority"]))
    descending = draw(st.booleans())
    return _fetch(
        "workorder",
        _filter(*conditions, kind=kind),
        f'<order attribute="{order}" descending="{str(descending).lower()}" />',
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fetchxml=views(), username=st.sampled_from(["lena", "nora"]))
def test_generated_views_agree(world: World, fetchxml: str, username: str) -> None:
    _check(world, username, "workorder", fetchxml)
