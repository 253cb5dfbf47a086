"""Keyset paging of entity collections: the ``$skiptoken`` of a next page carries the sort key
of the last row sent (its ``$orderby`` values, then its id), and the next page starts with a
range condition on that key instead of skipping the rows before it. Page 100 costs what page
1 costs, and a row inserted meanwhile neither repeats a row nor pushes one off the page.

A token is base64url JSON, ``{"s": signature, "k": [key values], "n": rows sent so far}``:
the signature names the table and the ``$orderby``, so a token only continues the listing
that issued it; ``n`` keeps ``$top`` across pages. The token only says where to start: the
caller's read filter and ``$filter`` still apply, so a forged token shows nothing the caller
may not read. A token that does not parse, belongs to another listing, or carries a value of
the wrong type is a 400 and reads nothing.

Nulls sort lowest, as the compiled query orders them (``query.compile``): first ascending,
last descending."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest
from fieldsync.query.ast import Order
from fieldsync.schema.model import BIGINT_RANGE, ColumnType, Table

T = ColumnType
MAX_TOKEN = 8192  # characters; a key holds at most a few long strings


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after ``key`` (one value per key column), with ``sent``
    rows already sent."""

    key: tuple[Any, ...]
    sent: int


def key_columns(table: Table, orders: Sequence[Order]) -> list[str]:
    """The columns of the sort key: the ``$orderby`` columns, then the primary id."""
    return [o.column for o in orders] + [table.primary_id]


def signature(table: Table, orders: Sequence[Order]) -> str:
    return ",".join([table.name] + [("-" if o.descending else "") + o.column for o in orders])


def encode(table: Table, orders: Sequence[Order], row: Mapping[str, Any], sent: int) -> str:
    key = [_dump(row[c]) for c in key_columns(table, orders)]
    data = {"s": signature(table, orders), "k": key, "n": sent}
    raw = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, table: Table, orders: Sequence[Order]) -> Cursor:
    refused = BadRequest("$skiptoken is not one this server issued for this listing")
    if len(token) > MAX_TOKEN:
        raise refused
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError, RecursionError):
        raise refused from None
    if not isinstance(data, dict) or set(data) != {"s", "k", "n"}:
        raise refused
    sent, key = data["n"], data["k"]
    if data["s"] != signature(table, orders):
        raise BadRequest("$skiptoken belongs to another listing: repeat the first request")
    if not isinstance(sent, int) or isinstance(sent, bool) or not 0 <= sent <= 10**12:
        raise refused
    names = key_columns(table, orders)
    if not isinstance(key, list) or len(key) != len(names):
        raise refused
    values = []
    for name, raw in zip(names, key, strict=True):
        col = table.columns.get(name)
        value = _load(raw, None if col is None else col.type)
        if value is _WRONG or (value is None and name == table.primary_id):
            raise refused
        values.append(value)
    return Cursor(tuple(values), sent)


def after(sql: sa.FromClause, table: Table, orders: Sequence[Order], cursor: Cursor) -> Any:
    """The condition that holds for the rows sorting after the cursor's key:
    ``k0 > v0 OR (k0 = v0 AND (k1 > v1 OR (k1 = v1 AND …)))``, the id last."""
    directions = [o.descending for o in orders] + [False]
    terms = list(zip(key_columns(table, orders), directions, cursor.key, strict=True))
    condition: Any = None
    for name, descending, value in reversed(terms):
        col = sql.c[name]
        if value is None:  # the lowest value: nothing is below it, only nulls equal it
            beyond = sa.false() if descending else col.is_not(None)
            same = col.is_(None)
        else:
            beyond = sa.or_(col < value, col.is_(None)) if descending else col > value
            same = col == value
        condition = beyond if condition is None else sa.or_(beyond, sa.and_(same, condition))
    return condition


# -- values in JSON ----------------------------------------------------------------------------

_WRONG = object()


def _dump(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, uuid.UUID):
        return ["u", value.hex]
    if isinstance(value, dt.datetime):
        return ["t", value.isoformat()]
    if isinstance(value, dt.date):
        return ["d", value.isoformat()]
    if isinstance(value, Decimal):
        return ["m", str(value)]
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, (list, tuple)):  # a multi-choice column's values
        return ["l", [int(v) for v in value]]
    raise AssertionError(f"no skiptoken form for {type(value).__name__}")  # pragma: no cover


def _load(raw: Any, kind: ColumnType | None) -> Any:
    """The value ``raw`` stands for, if it is one a column of type ``kind`` holds."""
    if raw is None:
        return None
    if kind is None or kind in (T.STRING, T.MEMO):  # None: a polymorphic lookup's type
        return raw if isinstance(raw, str) else _WRONG
    if kind in (T.INTEGER, T.BIGINT, T.CHOICE):
        ok = isinstance(raw, int) and not isinstance(raw, bool)
        return raw if ok and BIGINT_RANGE[0] <= raw <= BIGINT_RANGE[1] else _WRONG
    if kind is T.BOOLEAN:
        return raw if isinstance(raw, bool) else _WRONG
    if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], str)):
        return _WRONG
    tag, text = raw
    try:
        if kind in (T.LOOKUP, T.UNIQUEIDENTIFIER, T.FILE, T.IMAGE) and tag == "u":
            return uuid.UUID(hex=text)
        if kind is T.DATETIME and tag == "t":
            when = dt.datetime.fromisoformat(text)
            return when if when.tzinfo is not None else _WRONG
        if kind is T.DATE and tag == "d":
            return dt.date.fromisoformat(text)
        if kind in (T.DECIMAL, T.MONEY) and tag == "m":
            number = Decimal(text)
            return number if number.is_finite() else _WRONG
        if kind is T.FLOAT and tag == "f":
            real = float(text)
            return real if math.isfinite(real) else _WRONG
        if kind is T.MULTICHOICE and tag == "l" and isinstance(text, list):
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in text)
            return [int(v) for v in text] if ok and len(text) <= 1000 else _WRONG
    except (AttributeError, TypeError, ValueError, InvalidOperation, OverflowError):
        return _WRONG
    return _WRONG
