"""The condition operators: one table that FetchXML, OData ``$filter``, the read-only SQL,
the binder, the SQL compiler, the Python evaluator and the offline profile rules all read.

Each :class:`Spec` says, for one :class:`~fieldsync.query.ast.Op`:

- its FetchXML name (the ``Op``'s value) and its OData spelling where one exists: a
  comparison (``eq``), a string function (``contains``, ``startswith``, ``endswith``) or a
  Dataverse query function (``Microsoft.Dynamics.CRM.EqualUserId``);
- the column types it applies to (Dataverse's "condition operator values" by data type);
- what values it takes (:class:`Values`);
- for the user operators, what they bind to (:class:`Binds`) and the tables the column must
  point at; for the date operators, the range they mean (``bind.date_range`` computes it);
- whether an offline profile's custom filter may use it.

Column families (:func:`family`) say which columns hold values of one kind, so that two
columns may be compared (FetchXML ``valueof``, OData ``a eq b``, SQL ``a = b``) or joined:

- text: string and memo; number: the five number types; id: lookups and unique identifiers;
- a choice column is its own family: its values are option numbers of one option set, not
  quantities, and it compares with ``eq``, ``ne``, ``in`` and ``not-in`` only (as
  Dataverse's operator reference lists Choice for those and not for ``gt`` … ``le``);
- a date-only column and a date-and-time column are two families: one holds a calendar day,
  the other an instant in UTC, and comparing the two would depend on the database's time
  zone;
- boolean is its own family; multichoice, file and image columns compare with nothing.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from fieldsync.query.ast import Op
from fieldsync.schema.model import ColumnType

T = ColumnType

CRM: Final = "Microsoft.Dynamics.CRM."


class Values(enum.Enum):
    """What an operator takes as its value."""

    NONE = "none"  # null, the user operators, today, this-month …
    ONE = "one"  # one value of the column's type (a pattern for the like operators)
    LIST = "list"  # values of the column's type
    CHOICES = "choices"  # option values of a multichoice column
    DAYS = "days"  # a whole number of days
    HOURS = "hours"  # a whole number of hours
    DAY = "day"  # a date (YYYY-MM-DD)


class Binds(enum.Enum):
    """What a user operator is bound to from the caller (``bind.UserBinding``)."""

    USER = "the caller's user id"
    TEAMS = "the caller's teams"
    USER_OR_TEAMS = "the caller or the caller's teams"
    USER_OR_HIERARCHY = "the caller or the users below in the manager hierarchy"
    USER_OR_HIERARCHY_AND_TEAMS = "the caller, the hierarchy below and all their teams"
    BUSINESS_UNIT = "the caller's business unit"
    LANGUAGE = "the caller's language code"


TEXT: Final = frozenset({T.STRING, T.MEMO})
NUMBERS: Final = frozenset({T.INTEGER, T.BIGINT, T.DECIMAL, T.MONEY, T.FLOAT})
DATES: Final = frozenset({T.DATETIME, T.DATE})
IDS: Final = frozenset({T.LOOKUP, T.UNIQUEIDENTIFIER})
ALL_TYPES: Final = frozenset(T)
# ordered: gt, ge, lt, le, between
ORDERED: Final = TEXT | NUMBERS | DATES
# equality: eq, ne, in, not-in
EQUATABLE: Final = ORDERED | IDS | {T.BOOLEAN, T.CHOICE}
# between / not-between (FetchXML) and Between / NotBetween (OData): numbers and dates
BETWEEN_TYPES: Final = NUMBERS | DATES
# no ordering, no joins on these
UNORDERABLE: Final = frozenset({T.MULTICHOICE, T.FILE, T.IMAGE})

_FAMILIES: Final[dict[ColumnType, str]] = {
    **dict.fromkeys(TEXT, "text"),
    **dict.fromkeys(NUMBERS, "number"),
    **dict.fromkeys(IDS, "id"),
    T.CHOICE: "choice",
    T.BOOLEAN: "boolean",
    T.DATETIME: "datetime",
    T.DATE: "date",
}


def family(t: ColumnType) -> str | None:
    """The family of values a column type holds (``None``: compares with no other column)."""
    return _FAMILIES.get(t)


def same_family(a: ColumnType, b: ColumnType) -> bool:
    """Whether columns of types ``a`` and ``b`` may be compared or joined."""
    fa = family(a)
    return fa is not None and fa == family(b)


@dataclass(frozen=True, slots=True)
class Spec:
    op: Op
    types: frozenset[ColumnType]
    values: Values
    odata: str | None = None  # its OData spelling; None: OData cannot say it
    binds: Binds | None = None  # user operators
    targets: frozenset[str] = frozenset()  # user operators: tables the column points at
    negated: bool = False  # ne-userid, ne-businessid, not-like …
    relative: str | None = None  # date operators: the range they mean
    like: str | None = None  # like operators: the pattern shape (``{}%``: begins with)
    compare: Callable[[Any, Any], Any] | None = None  # the six comparisons
    offline: bool = False  # allowed in an offline profile's custom filter

    @property
    def fetchxml(self) -> str:
        return self.op.value

    @property
    def user(self) -> bool:
        return self.binds is not None

    @property
    def dated(self) -> bool:
        return self.relative is not None


def _compare(op: Op, name: str, fn: Callable[[Any, Any], Any], types: frozenset[T]) -> Spec:
    return Spec(op, types, Values.ONE, odata=name, compare=fn, offline=True)


def _like(op: Op, shape: str, odata: str | None, *, negated: bool) -> Spec:
    return Spec(op, TEXT, Values.ONE, odata=odata, like=shape, negated=negated, offline=True)


def _user(
    op: Op, odata: str, binds: Binds, targets: Iterable[str], *, negated: bool = False
) -> Spec:
    types = frozenset({T.INTEGER}) if binds is Binds.LANGUAGE else IDS
    return Spec(
        op,
        types,
        Values.NONE,
        odata=CRM + odata,
        binds=binds,
        targets=frozenset(targets),
        negated=negated,
        offline=True,
    )


def _date(op: Op, odata: str, values: Values, relative: str) -> Spec:
    types = frozenset({T.DATETIME}) if values is Values.HOURS else DATES
    return Spec(op, types, values, odata=CRM + odata, relative=relative)


SPECS: Final[tuple[Spec, ...]] = (
    _compare(Op.EQ, "eq", operator.eq, EQUATABLE),
    _compare(Op.NE, "ne", operator.ne, EQUATABLE),
    _compare(Op.GT, "gt", operator.gt, ORDERED),
    _compare(Op.GE, "ge", operator.ge, ORDERED),
    _compare(Op.LT, "lt", operator.lt, ORDERED),
    _compare(Op.LE, "le", operator.le, ORDERED),
    Spec(Op.IN, EQUATABLE, Values.LIST, odata=CRM + "In", offline=True),
    Spec(Op.NOT_IN, EQUATABLE, Values.LIST, odata=CRM + "NotIn", negated=True, offline=True),
    Spec(Op.NULL, ALL_TYPES, Values.NONE, odata="eq null", offline=True),
    Spec(Op.NOT_NULL, ALL_TYPES, Values.NONE, odata="ne null", negated=True, offline=True),
    _like(Op.LIKE, "{}", "contains", negated=False),  # contains(c,'v') is like '%v%'
    _like(Op.NOT_LIKE, "{}", None, negated=True),
    _like(Op.BEGINS_WITH, "{}%", "startswith", negated=False),
    _like(Op.NOT_BEGIN_WITH, "{}%", None, negated=True),
    _like(Op.ENDS_WITH, "%{}", "endswith", negated=False),
    _like(Op.NOT_END_WITH, "%{}", None, negated=True),
    Spec(Op.CONTAIN_VALUES, frozenset({T.MULTICHOICE}), Values.CHOICES, CRM + "ContainValues"),
    Spec(
        Op.NOT_CONTAIN_VALUES,
        frozenset({T.MULTICHOICE}),
        Values.CHOICES,
        CRM + "DoesNotContainValues",
        negated=True,
    ),
    _user(Op.EQ_USERID, "EqualUserId", Binds.USER, ["systemuser"]),
    _user(Op.NE_USERID, "NotEqualUserId", Binds.USER, ["systemuser"], negated=True),
    _user(Op.EQ_USERTEAMS, "EqualUserTeams", Binds.TEAMS, ["team"]),
    _user(
        Op.EQ_USERORUSERTEAMS, "EqualUserOrUserTeams", Binds.USER_OR_TEAMS, ["systemuser", "team"]
    ),
    _user(
        Op.EQ_USERORUSERHIERARCHY,
        "EqualUserOrUserHierarchy",
        Binds.USER_OR_HIERARCHY,
        ["systemuser"],
    ),
    _user(
        Op.EQ_USERORUSERHIERARCHYANDTEAMS,
        "EqualUserOrUserHierarchyAndTeams",
        Binds.USER_OR_HIERARCHY_AND_TEAMS,
        ["systemuser", "team"],
    ),
    _user(Op.EQ_BUSINESSID, "EqualBusinessId", Binds.BUSINESS_UNIT, ["businessunit"]),
    _user(
        Op.NE_BUSINESSID,
        "NotEqualBusinessId",
        Binds.BUSINESS_UNIT,
        ["businessunit"],
        negated=True,
    ),
    _user(Op.EQ_USERLANGUAGE, "EqualUserLanguage", Binds.LANGUAGE, []),
    _date(Op.TODAY, "Today", Values.NONE, "today, 00:00 UTC to the next 00:00"),
    _date(Op.YESTERDAY, "Yesterday", Values.NONE, "the day before today"),
    _date(Op.TOMORROW, "Tomorrow", Values.NONE, "the day after today"),
    _date(
        Op.LAST_X_DAYS, "LastXDays", Values.DAYS, "from the start of the day X days ago until now"
    ),
    _date(
        Op.NEXT_X_DAYS, "NextXDays", Values.DAYS, "from now until the end of the day X days ahead"
    ),
    _date(Op.LAST_X_HOURS, "LastXHours", Values.HOURS, "from X hours ago until now"),
    _date(Op.NEXT_X_HOURS, "NextXHours", Values.HOURS, "from now until X hours ahead"),
    _date(Op.OLDER_X_DAYS, "OlderThanXDays", Values.DAYS, "before now minus X days"),
    _date(Op.THIS_WEEK, "ThisWeek", Values.NONE, "this week, Sunday to Saturday"),
    _date(Op.THIS_MONTH, "ThisMonth", Values.NONE, "this calendar month"),
    _date(Op.THIS_YEAR, "ThisYear", Values.NONE, "this calendar year"),
    _date(Op.ON, "On", Values.DAY, "the given day"),
    _date(Op.ON_OR_BEFORE, "OnOrBefore", Values.DAY, "up to the end of the given day"),
    _date(Op.ON_OR_AFTER, "OnOrAfter", Values.DAY, "from the start of the given day"),
)

SPEC: Final[dict[Op, Spec]] = {s.op: s for s in SPECS}


def spec(op: Op) -> Spec:
    return SPEC[op]


def allows(op: Op, t: ColumnType) -> bool:
    """Whether ``op`` applies to a column of type ``t``."""
    return t in SPEC[op].types


def ops_for(t: ColumnType) -> frozenset[Op]:
    """The operators a column of type ``t`` takes."""
    return frozenset(s.op for s in SPECS if t in s.types)


USER_OPS: Final = frozenset(s.op for s in SPECS if s.user)
DATE_OPS: Final = frozenset(s.op for s in SPECS if s.dated)
COMPARISONS: Final = frozenset(s.op for s in SPECS if s.compare is not None)
LIKE_OPS: Final = frozenset(s.op for s in SPECS if s.like is not None)
OFFLINE_OPS: Final = frozenset(s.op for s in SPECS if s.offline)
BY_FETCHXML: Final[dict[str, Op]] = {s.fetchxml: s.op for s in SPECS}
BY_ODATA_COMPARISON: Final[dict[str, Op]] = {
    s.odata: s.op for s in SPECS if s.compare is not None and s.odata is not None
}
BY_ODATA_STRING_FUNCTION: Final[dict[str, Op]] = {
    s.odata: s.op for s in SPECS if s.like is not None and s.odata is not None
}
# lower-case function name after the Microsoft.Dynamics.CRM. prefix -> operator
BY_ODATA_FUNCTION: Final[dict[str, Op]] = {
    s.odata[len(CRM) :].lower(): s.op
    for s in SPECS
    if s.odata is not None and s.odata.startswith(CRM)
}

# -- names that are not an Op's own ------------------------------------------------------------

# FetchXML names for an operator with a fixed value: name -> (operator, value)
FETCHXML_ALIASES: Final[dict[str, tuple[Op, int | None]]] = {
    "neq": (Op.NE, None),
    "olderthan-x-days": (Op.OLDER_X_DAYS, None),
    "last-seven-days": (Op.LAST_X_DAYS, 7),
    "next-seven-days": (Op.NEXT_X_DAYS, 7),
}
# between / not-between: two conditions (ge and le, or lt or gt); value: negated?
FETCHXML_BETWEEN: Final = {"between": False, "not-between": True}
# OData query functions that are not one operator: lower-case name -> (shape, operator)
ODATA_ALIASES: Final[dict[str, tuple[str, Op | None]]] = {
    "between": ("range", None),
    "notbetween": ("range", None),
    "last7days": ("week", Op.LAST_X_DAYS),
    "next7days": ("week", Op.NEXT_X_DAYS),
}

# Real FetchXML operators fieldsync does not implement.
FETCHXML_UNSUPPORTED: Final = frozenset(
    {
        "above", "under", "eq-or-above", "eq-or-under", "not-under", "last-week", "next-week",
        "last-month", "next-month", "last-year", "next-year", "last-x-weeks", "next-x-weeks",
        "last-x-months", "next-x-months", "last-x-years", "next-x-years",
        "olderthan-x-minutes", "olderthan-x-hours", "olderthan-x-weeks", "olderthan-x-months",
        "olderthan-x-years", "this-fiscal-year", "this-fiscal-period", "next-fiscal-year",
        "next-fiscal-period", "last-fiscal-year", "last-fiscal-period", "last-x-fiscal-years",
        "last-x-fiscal-periods", "next-x-fiscal-years", "next-x-fiscal-periods",
        "in-fiscal-year", "in-fiscal-period", "in-fiscal-period-and-year",
        "in-or-before-fiscal-period-and-year", "in-or-after-fiscal-period-and-year", "not-on",
        "eq-customerid", "ne-customerid", "eq-userorbusinessid", "contains", "not-contains",
    }
)  # fmt: skip
# Real Dataverse query functions (lower case, without the prefix) fieldsync does not implement.
ODATA_UNSUPPORTED: Final = frozenset(
    {
        "lastweek", "lastmonth", "lastyear", "nextweek", "nextmonth", "nextyear",
        "lastxweeks", "lastxmonths", "lastxyears", "nextxweeks", "nextxmonths", "nextxyears",
        "olderthanxminutes", "olderthanxhours", "olderthanxweeks", "olderthanxmonths",
        "olderthanxyears", "thisfiscalyear", "thisfiscalperiod", "lastfiscalyear",
        "lastfiscalperiod", "nextfiscalyear", "nextfiscalperiod", "lastxfiscalyears",
        "lastxfiscalperiods", "nextxfiscalyears", "nextxfiscalperiods", "infiscalyear",
        "infiscalperiod", "infiscalperiodandyear", "inorbeforefiscalperiodandyear",
        "inorafterfiscalperiodandyear", "above", "aboveorequal", "under", "underorequal",
        "notunder", "equalrolebusinessid", "contains", "doesnotcontain",
    }
)  # fmt: skip
