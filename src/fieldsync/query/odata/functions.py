"""The functions of ``$filter``: ``contains``, ``startswith``, ``endswith`` and the
Dataverse query functions (``Microsoft.Dynamics.CRM.In`` …), named and shaped by the operator
table (:mod:`fieldsync.query.operators`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

from fieldsync.query.ast import (
    Condition,
    Node,
    Op,
    all_of,
    is_in,
    negate,
)
from fieldsync.query.like import literal_like
from fieldsync.query.odata.lexer import Tok, a_or_an, shorten
from fieldsync.query.odata.names import resolve_column, unknown_column
from fieldsync.query.odata.syntax import ColRef, ListValue, Lit, Param, Scope, negate_filter
from fieldsync.query.operators import (
    BETWEEN_TYPES,
    BY_ODATA_COMPARISON,
    BY_ODATA_FUNCTION,
    BY_ODATA_STRING_FUNCTION,
    DATES,
    ODATA_ALIASES,
    ODATA_UNSUPPORTED,
    TEXT,
    Values,
    spec,
)
from fieldsync.schema.model import (
    ColumnType,
)

if TYPE_CHECKING:
    from fieldsync.query.odata.filter import Parser

T = ColumnType


MAX_DAYS: Final = 100_000  # LastXDays and friends: about 270 years
MAX_HOURS: Final = MAX_DAYS * 24

_STRING_FUNCTIONS: Final = BY_ODATA_STRING_FUNCTION
_ODATA_FUNCTIONS: Final = frozenset(
    {
        "tolower", "toupper", "trim", "length", "indexof", "substring", "concat",
        "matchespattern", "year", "month", "day", "hour", "minute", "second",
        "fractionalseconds", "totalseconds", "date", "time", "now", "maxdatetime",
        "mindatetime", "totaloffsetminutes", "round", "floor", "ceiling", "cast", "isof",
        "hassubset", "hassubsequence", "geo.distance", "geo.length", "geo.intersects",
    }
)  # fmt: skip
CRM_PREFIX: Final = "microsoft.dynamics.crm."

_SHAPES: Final = {
    Values.LIST: "list",
    Values.CHOICES: "choices",
    Values.NONE: "date",
    Values.DAYS: "days",
    Values.HOURS: "hours",
    Values.DAY: "day",
}
# Dataverse query functions: lower-case name -> (shape, operator)
_CRM_FUNCTIONS: Final[dict[str, tuple[str, Op | None]]] = {
    **{
        name: ("user" if spec(op).user else _SHAPES[spec(op).values], op)
        for name, op in BY_ODATA_FUNCTION.items()
    },
    **ODATA_ALIASES,
}
_CRM_LATER: Final = ODATA_UNSUPPORTED
_SHAPE_PARAMS: Final = {
    "list": ("propertyname", "propertyvalues"),
    "range": ("propertyname", "propertyvalues"),
    "choices": ("propertyname", "propertyvalues"),
    "user": ("propertyname",),
    "date": ("propertyname",),
    "week": ("propertyname",),
    "days": ("propertyname", "propertyvalue"),
    "hours": ("propertyname", "propertyvalue"),
    "day": ("propertyname", "propertyvalue"),
}
_PARAM_SPELLING: Final = {
    "propertyname": "PropertyName",
    "propertyvalue": "PropertyValue",
    "propertyvalues": "PropertyValues",
}


def call(p: Parser, scope: Scope) -> Node:
    name = p.take()
    low = name.text.lower()
    if low in _STRING_FUNCTIONS:
        return string_function(p, scope, name, _STRING_FUNCTIONS[low])
    if low.startswith(CRM_PREFIX):
        return crm_function(p, scope, name, low[len(CRM_PREFIX) :])
    if low in _ODATA_FUNCTIONS:
        p.fail(f"the function {name.text}() is not supported", name.pos)
    if low in ("any", "all"):
        p.fail(f"{name.text}() follows a navigation property: nav/{low}(x: …)", name.pos)
    if low in _CRM_FUNCTIONS or low in _CRM_LATER:
        p.fail(
            f"write Dataverse query functions in full: Microsoft.Dynamics.CRM.{name.text}",
            name.pos,
        )
    p.fail(f"unknown function {name.text}()", name.pos)


def string_function(p: Parser, scope: Scope, name: Tok, op: Op) -> Node:
    fname = name.text.lower()
    p.expect("(", "'('")
    arg = p.operand(scope)
    if not isinstance(arg, ColRef):
        pos = arg.tok.pos if isinstance(arg, Lit) else arg.pos
        p.fail(f"{fname}() needs a column as its first argument", pos)
    p.expect(",", "','")
    tok = p.value()
    if isinstance(tok, ListValue):
        p.fail(f"{fname}() needs a string as its second argument", tok.pos)
    p.expect(")", "')'")
    col = arg.column
    if col.type not in TEXT:
        p.fail(
            f"{fname}() applies to text columns; {col.name!r} is {a_or_an(col.type.value)} column",
            arg.pos,
        )
    if tok.kind != "string":
        p.fail(f"{fname}() needs a string in single quotes, got {shorten(tok.text)}", tok.pos)
    text = p.convert(arg.table, col, tok, lenient=False)
    # the value is literal text; the operators take Dataverse patterns
    pattern = f"%{literal_like(text)}%" if op is Op.LIKE else literal_like(text)
    node = p.wrap(Condition(col.name, op, pattern), arg.hops)
    nxt = p.peek()
    if nxt.kind == "ident" and nxt.text.lower() in BY_ODATA_COMPARISON:
        p.take()
        other = p.value()
        if nxt.text.lower() not in ("eq", "ne") or not (
            isinstance(other, Tok) and other.kind == "bool"
        ):
            p.fail(f"{fname}() can only be compared with eq/ne true or false", nxt.pos)
        if (nxt.text.lower() == "eq") != other.value:
            node = negate_filter(node)
    return node


def params(p: Parser) -> dict[str, tuple[Tok, Param]]:
    p.expect("(", "'('")
    out: dict[str, tuple[Tok, Param]] = {}
    if p.peek().kind == ")":
        p.take()
        return out
    while True:
        key = p.expect("ident", "a parameter such as PropertyName=")
        p.expect("=", f"'=' after {key.text}")
        value = p.value()
        if key.text.lower() in out:
            p.fail(f"the parameter {key.text} is given twice", key.pos)
        out[key.text.lower()] = (key, value)
        if p.peek().kind != ",":
            break
        p.take()
    p.expect(")", "',' or ')'")
    return out


def crm_function(p: Parser, scope: Scope, name: Tok, fname: str) -> Node:
    found = _CRM_FUNCTIONS.get(fname)
    if found is None:
        if fname in _CRM_LATER:
            p.fail(f"{name.text} is not supported yet", name.pos)
        p.fail(f"unknown function {name.text}", name.pos)
    shape, op = found
    given = params(p)
    wanted = _SHAPE_PARAMS[shape]
    for key, (key_tok, _) in given.items():
        if key not in wanted:
            takes = ", ".join(_PARAM_SPELLING[w] for w in wanted)
            p.fail(f"{name.text} takes {takes}, not {key_tok.text}", key_tok.pos)
    for key in wanted:
        if key not in given:
            p.fail(f"{name.text} needs {_PARAM_SPELLING[key]}", name.pos)
    prop = given["propertyname"][1]
    if not (isinstance(prop, Tok) and prop.kind in ("string", "jstring")):
        pos = prop.pos
        p.fail("PropertyName must name a column as a string ('name')", pos)
    table = scope.table
    col = resolve_column(table, prop.value)
    if col is None:
        p.fail(unknown_column(table, prop.value), prop.pos)
    column = col
    t = col.type

    def needs(types: frozenset[T], what: str) -> None:
        if t not in types:
            p.fail(
                f"{name.text} applies to {what}; {column.name!r} is {a_or_an(t.value)} column",
                prop.pos,
            )

    if shape in ("list", "range", "choices"):
        values = given["propertyvalues"][1]
        if not isinstance(values, ListValue):
            p.fail("PropertyValues must be a list: ['a','b']", values.pos)
        if not values.items:
            p.fail("PropertyValues must list at least one value", values.pos)
        if shape == "list":
            needs(spec(Op.IN).types, "columns that compare with eq")
        elif shape == "range":
            needs(BETWEEN_TYPES, "number and date columns")
            if len(values.items) != 2:
                p.fail(f"{name.text} needs two PropertyValues, from and to", values.pos)
        else:
            needs(spec(Op.CONTAIN_VALUES).types, "multichoice columns")
        converted = []
        for item in values.items:
            if item.kind == "null":
                p.fail("null is not a value here; compare with eq null", item.pos)
            converted.append(p.convert(table, col, item, lenient=True))
        unique = tuple(dict.fromkeys(converted))
        if shape == "range":
            lo, hi = converted
            node = all_of([Condition(col.name, Op.GE, lo), Condition(col.name, Op.LE, hi)])
            return node if fname == "between" else negate(node)
        if shape == "choices":
            assert op is not None
            return Condition(col.name, op, tuple(sorted(unique)))
        if op is Op.IN:
            return is_in(col.name, unique)
        if len(unique) == 1:
            return Condition(col.name, Op.NE, unique[0])
        return Condition(col.name, Op.NOT_IN, unique)
    assert op is not None
    if shape == "user":
        if op is Op.EQ_USERLANGUAGE:
            needs(spec(op).types, "whole-number columns")
        else:
            targets = spec(op).targets
            fits = t is T.UNIQUEIDENTIFIER or (
                t is T.LOOKUP and bool(targets.intersection(col.targets))
            )
            if not fits:
                p.fail(
                    f"{name.text} applies to lookups to {' or '.join(sorted(targets))} "
                    f"(and id columns); {col.name!r} is not one",
                    prop.pos,
                )
        return Condition(col.name, op)
    dated = spec(op).types
    needs(dated, "date and time columns" if dated == DATES else "date-and-time columns")
    if shape == "date":
        return Condition(col.name, op)
    if shape == "week":
        return Condition(col.name, op, 7)
    raw = given["propertyvalue"][1]
    if isinstance(raw, ListValue):
        p.fail("PropertyValue takes one value", raw.pos)
    tok = p.respell(raw) if raw.kind in ("string", "jstring") else raw
    if shape in ("days", "hours"):
        limit = MAX_DAYS if shape == "days" else MAX_HOURS
        if tok.kind != "int" or not 0 <= int(tok.value) <= limit:
            p.fail(
                f"{name.text} needs a whole number of {shape} from 0 to {limit}, "
                f"got {shorten(raw.text)}",
                raw.pos,
            )
        return Condition(col.name, op, int(tok.value))
    day: dt.date
    if tok.kind == "date":
        day = tok.value
    elif tok.kind == "datetime":
        moment = tok.value
        if moment.tzinfo is not None:
            try:
                moment = moment.astimezone(dt.UTC)
            except OverflowError:
                p.fail(f"{shorten(raw.text)} is out of range", raw.pos)
        day = moment.date()
    else:
        p.fail(f"{name.text} needs a date such as '2024-01-01', got {shorten(raw.text)}", raw.pos)
    if not dt.date(1753, 1, 1) <= day <= dt.date(9999, 12, 30):
        p.fail(f"{day.isoformat()} is outside 1753-01-01 .. 9999-12-30", raw.pos)
    return Condition(col.name, op, day)
