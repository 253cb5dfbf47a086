"""SQL column types that behave the same on SQLite and PostgreSQL.

- date and time: timezone-aware UTC in Python; ``timestamptz`` on PostgreSQL, UTC text on SQLite.
- decimal and money: ``numeric(p, s)`` on PostgreSQL. On SQLite, a scaled ``INTEGER`` (the
  value times 10^scale), exact over Dataverse's whole range for money and for decimals with up
  to 7 decimal places. Decimals with 8 to 10 places are text there, offset and zero-padded so
  that text order is number order. Either way the value is exact, and comparisons and sorting
  work unchanged because bound values are encoded the same way.
- multi-choice: a list of ints in Python, stored as ``,1,3,`` so containment is a LIKE.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

UTC = dt.UTC
MAX_SCALED_PLACES = 7  # 10^11 (Dataverse's decimal limit) * 10^7 still fits in 64 bits
TEXT_OFFSET = Decimal(10) ** 12  # above the largest decimal, so encoded values are positive
TEXT_WIDTH = 24  # digits of (10^12 + 10^11) * 10^10


class UTCDateTime(TypeDecorator[dt.datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        moment: dt.datetime = value
        if moment.tzinfo is UTC:  # PostgreSQL's sessions run in UTC: the usual case
            return moment
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int = 23, scale: int = 2) -> None:
        super().__init__()
        self.precision = precision
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)
        self._scaled = scale <= MAX_SCALED_PLACES

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.NUMERIC(self.precision, self.scale))
        if self._scaled:
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.String(TEXT_WIDTH))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if self._scaled:
            return int(number.scaleb(self.scale).to_integral_value(rounding=ROUND_HALF_EVEN))
        shifted = (number + TEXT_OFFSET).scaleb(self.scale)
        if shifted < 0:
            return ""  # below every stored value (only ever a bound comparison value)
        text = str(int(shifted.to_integral_value(rounding=ROUND_HALF_EVEN)))
        return text.zfill(TEXT_WIDTH) if len(text) <= TEXT_WIDTH else "9" * (TEXT_WIDTH + 1)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value.quantize(self._quantum)
        if self._scaled and isinstance(value, int):
            return Decimal(value).scaleb(-self.scale).quantize(self._quantum)
        return (Decimal(int(value)).scaleb(-self.scale) - TEXT_OFFSET).quantize(self._quantum)


class MultiChoice(TypeDecorator[list[int]]):
    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: list[int] | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not value:
            return None
        return "," + ",".join(str(v) for v in sorted(set(value))) + ","

    def process_result_value(self, value: str | None, dialect: Dialect) -> list[int] | None:
        if value is None:
            return None
        return [int(v) for v in value.strip(",").split(",") if v]


JSONType = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
