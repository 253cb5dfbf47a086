"""Type checking and coercion of column values: one function per column type.

Each coercer takes what a caller sent (Python values, or the JSON forms the Web API receives:
ISO strings for dates, strings for decimals and ids) and returns the value to store, or raises
a :class:`~fieldsync.errors.ValidationError` subclass that names the table and the column.
Coercing an already coerced value returns it unchanged.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from fieldsync.errors import (
    InvalidChoice,
    StringTooLong,
    ValueOutOfRange,
    WrongType,
)
from fieldsync.schema.model import (
    BIGINT_RANGE,
    DECIMAL_RANGE,
    FLOAT_RANGE,
    INT_RANGE,
    MONEY_RANGE,
    Column,
    ColumnType,
    Table,
)
from fieldsync.types import EntityRef, as_uuid

T = ColumnType
Coercer = Callable[[Any], Any]


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def make_coercer(table: Table, col: Column) -> Coercer:
    """The coercer for one column (lookups return ``(id, target table)``)."""
    tname, cname = table.name, col.name

    def wrong(value: object, expected: str) -> WrongType:
        return WrongType(tname, cname, f"expected {expected}, got {_describe(value)}")

    def bounded(value: Any, lo: Any, hi: Any) -> Any:
        lo = col.min_value if col.min_value is not None else lo
        hi = col.max_value if col.max_value is not None else hi
        if value < lo or value > hi:
            raise ValueOutOfRange(tname, cname, f"{value} is outside {lo} .. {hi}")
        return value

    t = col.type
    if t in (T.STRING, T.MEMO):
        limit = col.max_length or 0

        def text(value: Any) -> str:
            if not isinstance(value, str):
                raise wrong(value, "a string")
            if len(value) > limit:
                raise StringTooLong(
                    tname, cname, f"{len(value)} characters is longer than the maximum {limit}"
                )
            if "\x00" in value:
                raise wrong(value, "a string without NUL characters")
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise wrong(value, "a string of valid Unicode (no lone surrogates)") from None
            return value

        return text

    if t in (T.INTEGER, T.BIGINT):
        lo, hi = INT_RANGE if t is T.INTEGER else BIGINT_RANGE

        def integer(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong(value, "an integer")
            return int(bounded(value, lo, hi))

        return integer

    if t in (T.DECIMAL, T.MONEY):
        quantum = Decimal(1).scaleb(-(col.precision or 0))
        lo_d, hi_d = DECIMAL_RANGE if t is T.DECIMAL else MONEY_RANGE

        def decimal(value: Any) -> Decimal:
            if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
                raise wrong(value, "a decimal number")
            try:
                number = Decimal(str(value)) if not isinstance(value, Decimal) else value
            except InvalidOperation:
                raise wrong(value, "a decimal number") from None
            if not number.is_finite():
                raise wrong(value, "a finite decimal number")
            bounded(number, lo_d, hi_d)
            number = number.quantize(quantum, rounding=ROUND_HALF_EVEN)
            return bounded(number, lo_d, hi_d)  # type: ignore[no-any-return]

        return decimal

    if t is T.FLOAT:
        digits = col.precision or 0
        lo_f, hi_f = FLOAT_RANGE

        def floating(value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise wrong(value, "a number")
            number = float(value)
            if not math.isfinite(number):
                raise wrong(value, "a finite number")
            return float(bounded(round(number, digits), lo_f, hi_f))

        return floating

    if t is T.BOOLEAN:

        def boolean(value: Any) -> bool:
            if not isinstance(value, bool):
                raise wrong(value, "true or false")
            return value

        return boolean

    if t is T.DATETIME:

        def datetime(value: Any) -> dt.datetime:
            if isinstance(value, str):
                try:
                    value = dt.datetime.fromisoformat(value)
                except ValueError:
                    raise wrong(value, "an ISO 8601 date and time") from None
            if not isinstance(value, dt.datetime):
                raise wrong(value, "a date and time")
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            if not dt.datetime(1753, 1, 1, tzinfo=dt.UTC) <= value:
                raise ValueOutOfRange(tname, cname, "dates before 1753-01-01 are not supported")
            try:
                moment: dt.datetime = value.astimezone(dt.UTC)
            except OverflowError:
                raise ValueOutOfRange(
                    tname, cname, "dates after 9999-12-31 are not supported"
                ) from None
            return moment

        return datetime

    if t is T.DATE:

        def date(value: Any) -> dt.date:
            if isinstance(value, str):
                try:
                    value = dt.date.fromisoformat(value)
                except ValueError:
                    raise wrong(value, "an ISO 8601 date (YYYY-MM-DD)") from None
            if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
                raise wrong(value, "a date")
            if value.year < 1753:
                raise ValueOutOfRange(tname, cname, "dates before 1753-01-01 are not supported")
            return value

        return date

    if t is T.CHOICE:
        allowed = col.option_values()

        def choice(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong(value, "a choice value (an integer)")
            if value not in allowed:
                raise InvalidChoice(
                    tname, cname, f"{value} is not one of the options {sorted(allowed)}"
                )
            return value

        return choice

    if t is T.MULTICHOICE:
        allowed_multi = col.option_values()

        def multichoice(value: Any) -> list[int] | None:
            items: Iterable[Any]
            if isinstance(value, str):
                try:
                    items = [int(v) for v in value.split(",") if v.strip()]
                except ValueError:
                    raise wrong(value, "a list of choice values") from None
            elif isinstance(value, (list, tuple, set, frozenset)):
                items = value
            else:
                raise wrong(value, "a list of choice values")
            out = set()
            for item in items:
                if isinstance(item, bool) or not isinstance(item, int):
                    raise wrong(item, "a choice value (an integer)")
                if item not in allowed_multi:
                    raise InvalidChoice(
                        tname, cname, f"{item} is not one of the options {sorted(allowed_multi)}"
                    )
                out.add(item)
            return sorted(out) or None

        return multichoice

    if t is T.LOOKUP:
        targets = col.targets

        def lookup(value: Any) -> tuple[uuid.UUID, str]:
            if isinstance(value, EntityRef):
                if value.table not in targets:
                    raise WrongType(
                        tname,
                        cname,
                        f"cannot point at a {value.table!r} row; it takes {', '.join(targets)}",
                    )
                return _uuid(value.id, wrong), value.table
            if isinstance(value, tuple) and len(value) == 2 and value[1] in targets:
                return _uuid(value[0], wrong), value[1]
            if len(targets) > 1:
                raise wrong(value, f"a reference naming its table (one of {', '.join(targets)})")
            return _uuid(value, wrong), targets[0]

        return lookup

    if t in (T.UNIQUEIDENTIFIER, T.FILE, T.IMAGE):

        def identifier(value: Any) -> uuid.UUID:
            return _uuid(value, wrong)

        return identifier

    raise AssertionError(f"no coercer for {t}")  # pragma: no cover


def _uuid(value: Any, wrong: Callable[[object, str], WrongType]) -> uuid.UUID:
    try:
        return as_uuid(value)
    except ValueError:
        raise wrong(value, "a GUID") from None


def jsonable(value: Any) -> Any:
    """A stored value as JSON: ids and dates as strings, decimals as strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, EntityRef):
        return {"table": value.table, "id": str(value.id)}
    raise TypeError(f"not JSON-able: {type(value).__name__}")  # pragma: no cover
