"""Reads on the device: one row, or the rows of a FetchXML query, an app view or an OData
``$filter``; from the replica (offline-first apps), or from the server's Web API when the app
is *classic* and the server answers."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from fieldsync.client.localdb import quote
from fieldsync.client.localquery import compile_local
from fieldsync.client.outbox import record_id
from fieldsync.client.replica import Replica, encode
from fieldsync.client.session import Session
from fieldsync.client.transport import Offline
from fieldsync.errors import BadRequest
from fieldsync.query.ast import Query
from fieldsync.query.bind import UserBinding, bind
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import parse_filter


class Reader:
    def __init__(self, replica: Replica, session: Session, connected: Callable[[], bool]) -> None:
        self.replica = replica
        self.session = session
        self.connected = connected  # whether the network is there (the device's provider)

    def get(self, table: str, rid: uuid.UUID | str) -> dict[str, Any] | None:
        t, _ = self.replica.table(table)
        with self.replica.read() as conn:
            row = conn.execute(
                f"SELECT * FROM {quote(table)} WHERE {quote(t.primary_id)} = ?",
                (record_id(rid).hex,),
            ).fetchone()
        if row is None:
            return None
        return {k: encode(v) for k, v in self.replica.loaded(table, row).items()}

    @property
    def classic(self) -> bool:
        """The app is in classic offline mode: reads go to the server when it answers."""
        data = self.replica.handshake or {}
        return int((data.get("app") or {}).get("mode", 0)) == 1

    def query(
        self,
        table: str | None = None,
        *,
        fetchxml: str | None = None,
        view: str | None = None,
        filter: str | None = None,
        top: int | None = None,
    ) -> list[dict[str, Any]]:
        schema = self.replica.schema
        if view is not None:
            views = {v["name"]: v for v in self.session.handshake.get("views", [])}
            if view not in views:
                raise BadRequest(f"the app has no view named {view!r}")
            fetchxml = views[view]["fetchxml"]
        if self.classic and self.connected():
            name = parse_fetchxml(fetchxml, schema).table if fetchxml is not None else table
            if name is not None:
                with contextlib.suppress(Offline):
                    return self._online(name, fetchxml, filter, top)
        if fetchxml is not None:
            q = parse_fetchxml(fetchxml, schema)
        elif table is not None:
            t, _ = self.replica.table(table)
            q = Query(table=table, filter=None if not filter else parse_filter(filter, t, schema))
        else:
            raise BadRequest("name a table, a view or a FetchXML query")
        if top is not None:
            q = replace(q, top=top)
        t, _ = self.replica.table(q.table)
        user = self.session.user()
        binding = UserBinding(
            user_id=uuid.UUID(user["id"]),
            business_unit_id=uuid.UUID(user["business_unit"]),
            teams=frozenset(uuid.UUID(x) for x in user["teams"]),
            language=int(user.get("language", 1033)),
        )
        if q.filter is not None:
            q = replace(
                q,
                filter=bind(
                    q.filter,
                    t,
                    user=binding,
                    now=dt.datetime.now(dt.UTC),
                    tables=schema.table,
                    aliases={link.alias or link.table: link.table for link in q.links},
                ),
            )
        compiled = compile_local(q, lambda name: self.replica.table(name)[0])
        with self.replica.read() as conn:
            found = compiled.rows(conn.execute(compiled.sql, compiled.params))
        return [{k: encode(v) for k, v in r.items()} for r in found]

    def _online(
        self, table: str, fetchxml: str | None, filter: str | None, top: int | None
    ) -> list[dict[str, Any]]:
        """The query through the server's Web API, rows shaped as the replica's."""
        t, _ = self.replica.table(table)
        params: dict[str, str] = {}
        if fetchxml is not None:
            params["fetchXml"] = fetchxml
        else:
            if filter:
                params["$filter"] = filter
            if top is not None:
                params["$top"] = str(top)
        path = f"/api/data/v9.2/{t.entity_set_name}"
        if params:
            path += "?" + urlencode(params)
        answer = self.session.call("GET", path)
        columns = self.session.handshake["columns"][table]
        rows = []
        for raw in answer.get("value", []):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if "@" in key:
                    continue
                if key.startswith("_") and key.endswith("_value"):
                    key = key[1:-6]
                row[key] = value
            rows.append({c: row.get(c) for c in columns})
        return rows
