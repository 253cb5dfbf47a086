"""One Web API request and its response, independent of the HTTP server, so that a
``$batch`` part runs through exactly the same code as a plain request; and the call context:
who is calling, on which platform, in which transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

import sqlalchemy as sa

from fieldsync.errors import BadRequest
from fieldsync.http.responses import json_bytes
from fieldsync.limits import parse_json
from fieldsync.platform import Platform
from fieldsync.query.ast import Query
from fieldsync.query.bind import UserBinding
from fieldsync.security.model import SecurityContext
from fieldsync.webapi.protocol import parse_prefer

T = TypeVar("T")


@dataclass
class ODataRequest:
    """``path`` is below the service root (``accounts(…)``); ``root`` is the absolute service
    root (``https://host/api/data/v9.2``) that links are built on."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lowercase names
    body: bytes
    root: str
    params: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        try:
            parsed = parse_qs(self.query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            raise BadRequest("the query string cannot be decoded") from None
        self.params = {}
        for key, values in parsed.items():
            if len(values) > 1 and key.startswith("$"):
                raise BadRequest(f"the query option {key} is given twice")
            self.params[key] = values[0]

    @property
    def prefer(self) -> dict[str, str]:
        return parse_prefer(self.headers.get("prefer", ""))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON, no deeper than :data:`fieldsync.limits.MAX_JSON_DEPTH` (its
        size was held to its limit as it arrived: :mod:`fieldsync.http.bodies`)."""
        if not self.body.strip():
            raise BadRequest("the request needs a JSON body")
        return parse_json(self.body)

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    def link(self, path: str, params: Mapping[str, str] | None = None) -> str:
        url = f"{self.root}/{path}"
        if params:
            url += "?" + urlencode(params, quote_via=quote, safe="$,'()=")
        return url


@dataclass
class ODataResponse:
    """``body`` is JSON unless ``media_type`` is given: then it is the text or bytes to send
    as they are (``$count``, ``$value``)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str | None = None

    def payload(self) -> bytes | None:
        """The body as it goes on the wire, by the one JSON renderer of every answer."""
        if self.body is None:
            return None
        if self.media_type is not None:
            return self.body if isinstance(self.body, bytes) else str(self.body).encode()
        return json_bytes(self.body)

    @property
    def content_type(self) -> str:
        return self.media_type or "application/json; odata.metadata=minimal"


@dataclass
class Call:
    """The caller and the transaction a request runs in (a change set shares one);
    ``reader``: a read transaction the request already holds (a GET's, the one that
    authenticated it), where its reads run."""

    platform: Platform
    caller: SecurityContext
    conn: sa.Connection | None = None
    content_ids: dict[str, str] = field(default_factory=dict)  # $batch: Content-ID -> URL
    reader: sa.Connection | None = None

    def write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in the request's transaction: the change set's, which the change set
        runs again after a deadlock, or a concurrent unit of work of its own
        (``Store.transact``): what the Web API writes goes through the records service, which
        locks the rows it writes and points at."""
        if self.conn is not None:
            return work(self.conn)
        return self.platform.store.transact(work, concurrent=True)

    def binding(self, conn: sa.Connection) -> UserBinding:
        """What the query language's user operators bind to: the caller's, kept beside
        the cached security context (read once per change to what it is made of)."""
        return self.platform.contexts.binding(self.caller, conn)

    def statement(self, query: Query, conn: sa.Connection) -> sa.Select[Any]:
        """The SELECT of a query as the caller (``Records.query_statement``)."""
        binding = None if query.filter is None else self.binding(conn)
        return self.platform.records.query_statement(
            query, caller=self.caller, conn=conn, binding=binding
        )

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        held = self.conn if self.conn is not None else self.reader
        if held is not None:
            yield held
            return
        with self.platform.store.read() as conn:
            yield conn
