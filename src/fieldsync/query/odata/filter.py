"""``$filter``: a recursive-descent parser over the tokens of :mod:`.lexer` into the query
AST; the functions are in :mod:`.functions`."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, Final, NoReturn

from fieldsync.errors import FieldsyncError, QueryError
from fieldsync.limits import MAX_CONDITIONS, MAX_FILTER_LENGTH
from fieldsync.query.ast import (
    FALSE,
    TRUE,
    ColumnCompare,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Op,
    all_of,
    any_of,
)
from fieldsync.query.odata import functions
from fieldsync.query.odata.lexer import (
    DATE,
    DATETIME,
    GUID,
    LITERALS,
    NUMBER,
    Tok,
    a_or_an,
    fail_at,
    literal,
    shorten,
    show,
    tokenize,
)
from fieldsync.query.odata.names import (
    Navigation,
    resolve_column,
    resolve_navigation,
    unknown_column,
)
from fieldsync.query.odata.syntax import (
    ColRef,
    Cond,
    Hop,
    ListValue,
    Lit,
    Operand,
    Param,
    Scope,
    negate_filter,
)
from fieldsync.query.operators import (
    BY_ODATA_COMPARISON,
    BY_ODATA_STRING_FUNCTION,
    TEXT,
    allows,
    family,
    same_family,
)
from fieldsync.schema.model import (
    BIGINT_RANGE,
    DECIMAL_RANGE,
    FLOAT_RANGE,
    INT_RANGE,
    MONEY_RANGE,
    Column,
    ColumnType,
    Schema,
    Table,
)
from fieldsync.schema.values import make_coercer

T = ColumnType


MAX_DEPTH: Final = 50  # nested parentheses and any/all in one $filter

COMPARE: Final = BY_ODATA_COMPARISON
_FLIP: Final = {Op.EQ: Op.EQ, Op.NE: Op.NE, Op.GT: Op.LT, Op.GE: Op.LE, Op.LT: Op.GT, Op.LE: Op.GE}
_REFUSED_OPERATORS: Final = {
    "in": "the 'in' operator is not supported; use Microsoft.Dynamics.CRM.In(PropertyName='c',"
    "PropertyValues=['a','b'])",
    "has": "the 'has' operator is not supported",
    **dict.fromkeys(
        ("add", "sub", "mul", "div", "divby", "mod"), "arithmetic is not supported in $filter"
    ),
}
_KEYWORDS: Final = frozenset({"and", "or", "not", *COMPARE, *_REFUSED_OPERATORS})
_STRING_FUNCTIONS: Final = BY_ODATA_STRING_FUNCTION


def parse_filter(
    text: str,
    table: Table,
    schema: Schema,
    *,
    aliases: Mapping[str, str] | None = None,
    where: str = "$filter",
) -> Node:
    """One ``$filter`` on ``table`` as a filter node. ``aliases`` are the request's
    parameter aliases (``{"@p1": "'x'"}``); ``where`` names the text in error messages."""
    if len(text) > MAX_FILTER_LENGTH:
        raise QueryError(f"{where} is longer than {MAX_FILTER_LENGTH} characters")
    return Parser(text, schema, where, aliases or {}).parse(table)


def check_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (None if it can)."""
    if "\x00" in value:
        return "text cannot contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "text must be valid Unicode (no lone surrogates)"
    return None


class Parser:
    def __init__(self, text: str, schema: Schema, where: str, aliases: Mapping[str, str]):
        self.where = where
        self.schema = schema
        self.aliases = aliases
        self.tokens = tokenize(text, where)
        self.i = 0
        self.depth = 0
        self.conditions = 0
        self.coercers: dict[tuple[str, str], Callable[[Any], Any]] = {}

    # -- helpers

    def fail(self, message: str, pos: int) -> NoReturn:
        fail_at(message, pos, self.where)

    def peek(self, ahead: int = 0) -> Tok:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Tok:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def describe(self, tok: Tok) -> str:
        return f"the end of {self.where}" if tok.kind == "eof" else show(tok.text)

    def expect(self, kind: str, what: str) -> Tok:
        tok = self.peek()
        if tok.kind != kind:
            self.fail(f"expected {what}, got {self.describe(tok)}", tok.pos)
        return self.take()

    @staticmethod
    def is_word(tok: Tok, *words: str) -> bool:
        return tok.kind == "ident" and tok.text.lower() in words

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"the filter is nested more than {MAX_DEPTH} levels deep", pos)

    def condition(self, pos: int) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            self.fail(f"{self.where} has more than {MAX_CONDITIONS} conditions", pos)

    # -- grammar

    def parse(self, table: Table) -> Node:
        if self.peek().kind == "eof":
            self.fail(f"{self.where} is empty", 0)
        node = self.disjunction(Scope(table))
        tok = self.peek()
        if tok.kind != "eof":
            self.fail(f"expected 'and', 'or' or the end, got {self.describe(tok)}", tok.pos)
        return node

    def disjunction(self, scope: Scope) -> Node:
        items = [self.conjunction(scope)]
        while self.is_word(self.peek(), "or"):
            self.take()
            items.append(self.conjunction(scope))
        return any_of(items)

    def conjunction(self, scope: Scope) -> Node:
        items = [self.unary(scope)]
        while self.is_word(self.peek(), "and"):
            self.take()
            items.append(self.unary(scope))
        return all_of(items)

    def unary(self, scope: Scope) -> Node:
        nots = 0
        while self.is_word(self.peek(), "not"):
            self.take()
            nots += 1
        node = self.primary(scope)
        for _ in range(nots):
            node = negate_filter(node)
        return node

    def primary(self, scope: Scope) -> Node:
        tok = self.peek()
        if tok.kind == "(":
            self.take()
            self.enter(tok.pos)
            node = self.disjunction(scope)
            self.expect(")", "')'")
            self.depth -= 1
            return node
        self.condition(tok.pos)
        if tok.kind == "ident" and self.peek(1).kind == "(":
            return functions.call(self, scope)
        left = self.operand(scope)
        nxt = self.peek()
        if nxt.kind == "ident" and nxt.text.lower() in COMPARE:
            self.take()
            right = self.operand(scope)
            return self.compare(left, nxt, right)
        if nxt.kind == "ident" and nxt.text.lower() in _REFUSED_OPERATORS:
            self.fail(_REFUSED_OPERATORS[nxt.text.lower()], nxt.pos)
        if isinstance(left, Cond):
            return left.node
        if isinstance(left, ColRef) and left.column.type is T.BOOLEAN:
            return self.wrap(Condition(left.column.name, Op.EQ, True), left.hops)
        if isinstance(left, Lit) and left.tok.kind == "bool":
            return TRUE if left.tok.value else FALSE
        after = left.name if isinstance(left, ColRef) else left.tok.text
        self.fail(
            f"expected a comparison operator (eq, ne, gt, ge, lt, le) after {show(after)}, "
            f"got {self.describe(nxt)}",
            nxt.pos,
        )

    def operand(self, scope: Scope) -> Operand:
        tok = self.peek()
        if tok.kind == "ident" and tok.text.lower() not in ("true", "false", "null"):
            if tok.text.lower() in _KEYWORDS:
                self.fail(f"expected a column or a value, got {show(tok.text)}", tok.pos)
            if self.peek(1).kind == "(":
                self.fail(f"{tok.text}() cannot be used as a value", tok.pos)
            return self.path(scope)
        if tok.kind in ("ident", "alias") or tok.kind in LITERALS:
            value = self.value()
            if isinstance(value, ListValue):
                self.fail("a list is not a value here", value.pos)
            return Lit(value)
        self.fail(f"expected a column or a value, got {self.describe(tok)}", tok.pos)

    def value(self) -> Param:
        """A literal, a bracketed list of literals, or a parameter alias for one."""
        tok = self.peek()
        if tok.kind == "alias":
            return self.alias(self.take())
        if tok.kind == "[":
            self.take()
            items: list[Tok] = []
            if self.peek().kind != "]":
                while True:
                    item = self.value()
                    if isinstance(item, ListValue):
                        self.fail("lists cannot be nested", item.pos)
                    items.append(item)
                    if self.peek().kind != ",":
                        break
                    self.take()
            self.expect("]", "',' or ']'")
            return ListValue(tuple(items), tok.pos)
        if tok.kind in LITERALS:
            return self.take()
        if self.is_word(tok, "true", "false"):
            self.take()
            return Tok("bool", tok.text, tok.pos, tok.text.lower() == "true")
        if self.is_word(tok, "null"):
            self.take()
            return Tok("null", tok.text, tok.pos)
        self.fail(f"expected a value, got {self.describe(tok)}", tok.pos)

    def alias(self, tok: Tok) -> Param:
        text = self.aliases.get(tok.text)
        if text is None:
            self.fail(f"the parameter alias {tok.text} is not defined", tok.pos)
        sub = Parser(text, self.schema, f"parameter alias {tok.text}", {})
        if sub.peek().kind == "eof":
            self.fail(f"the parameter alias {tok.text} is empty", tok.pos)
        value = sub.value()
        sub.expect("eof", "the end")
        # errors about the value point at where the alias is used
        if isinstance(value, ListValue):
            return ListValue(tuple(replace(t, pos=tok.pos) for t in value.items), tok.pos)
        return replace(value, pos=tok.pos)

    def path(self, scope: Scope) -> ColRef | Cond:
        segments = [self.expect("ident", "a column")]
        while self.peek().kind == "/":
            self.take()
            segment = self.expect("ident", "a column or navigation property after '/'")
            segments.append(segment)
            if self.is_word(segment, "any", "all") and self.peek().kind == "(":
                break
        index = 0
        first = segments[0]
        if scope.var is not None:
            if first.text != scope.var:
                self.fail(
                    f"inside any/all, write columns as {scope.var}/column "
                    "(columns of the outer table are not supported there)",
                    first.pos,
                )
            index = 1
        elif first.text == "$it":
            index = 1
        if index >= len(segments):
            self.fail(f"expected a column after {first.text!r}", first.pos)
        table = scope.table
        hops: list[Hop] = []
        while True:
            seg = segments[index]
            last = index == len(segments) - 1
            if last and self.is_word(seg, "any", "all") and self.peek().kind == "(" and index:
                self.fail(f"{seg.text}() needs a collection-valued navigation property", seg.pos)
            if last:
                col = resolve_column(table, seg.text)
                if col is None:
                    self.fail(unknown_column(table, seg.text), seg.pos)
                if hops and col.name == table.primary_id:
                    # nav/<its id> is the lookup itself
                    col = hops.pop().lookup
                    table = hops[-1].target if hops else scope.table
                return ColRef(col, table, tuple(hops), seg.pos, seg.text)
            try:
                nav = resolve_navigation(table, self.schema, seg.text)
            except QueryError as e:
                self.fail(e.message, seg.pos)
            nxt = segments[index + 1]
            lambda_next = index + 1 == len(segments) - 1 and self.is_word(nxt, "any", "all")
            if nav.collection:
                if not (lambda_next and self.peek().kind == "("):
                    self.fail(
                        f"{nav.name!r} is collection-valued: filter it with "
                        f"{nav.name}/any(x: x/column eq …) or all(…)",
                        seg.pos,
                    )
                node = self.lambda_(table, nav, nxt)
                return Cond(self.wrap(node, hops), seg.pos)
            hops.append(Hop(nav.column, nav.target))
            table = nav.target
            index += 1

    def lambda_(self, table: Table, nav: Navigation, word: Tok) -> Node:
        kind = LinkType.ANY if word.text.lower() == "any" else LinkType.ALL
        open_ = self.expect("(", "'('")
        inner: Node | None = None
        if self.peek().kind == ")":
            if kind is LinkType.ALL:
                self.fail("all() needs a condition: all(x: x/column eq …)", self.peek().pos)
        else:
            var = self.expect("ident", "a range variable (any(x: x/column eq …))")
            self.expect(":", "':' after the range variable")
            self.enter(open_.pos)
            inner = self.disjunction(Scope(nav.target, var.text))
            self.depth -= 1
        self.expect(")", "')'")
        link = Link(
            table=nav.target.name,
            from_column=nav.column.name,
            to_column=table.primary_id,
            type=kind,
            filter=inner,
        )
        return LinkFilter(link)

    def wrap(self, node: Node, hops: Iterable[Hop], *, null_missing: bool = False) -> Node:
        """``node`` (on the last hop's table) as a filter on the first table. With
        ``null_missing`` a row without a related row matches too (``nav/x eq null``)."""
        for hop in reversed(tuple(hops)):
            link = Link(
                table=hop.target.name,
                from_column=hop.target.primary_id,
                to_column=hop.lookup.name,
                type=LinkType.ANY,
                filter=node,
            )
            node = LinkFilter(link)
            if null_missing:
                node = any_of([Condition(hop.lookup.name, Op.NULL), node])
        return node

    # -- comparisons

    def compare(self, left: Operand, op_tok: Tok, right: Operand) -> Node:
        op = COMPARE[op_tok.text.lower()]
        if isinstance(left, Lit) and isinstance(right, ColRef):
            left, right, op = right, left, _FLIP[op]
        for side in (left, right):
            if isinstance(side, Cond):
                self.fail("any()/all() is a condition and cannot be compared", side.pos)
        if isinstance(left, ColRef) and isinstance(right, ColRef):
            return self.column_compare(left, op, right)
        if not isinstance(left, ColRef):
            self.fail("a comparison needs a column on one side", op_tok.pos)
        assert isinstance(right, Lit)
        col, tok = left.column, right.tok
        if tok.kind == "null":
            if op not in (Op.EQ, Op.NE):
                self.fail(f"only eq and ne compare with null, not {op_tok.text}", op_tok.pos)
            null_op = Op.NULL if op is Op.EQ else Op.NOT_NULL
            return self.wrap(Condition(col.name, null_op), left.hops, null_missing=op is Op.EQ)
        self.check_op(left, op, op_tok)
        value = self.convert(left.table, col, tok, lenient=False)
        return self.wrap(Condition(col.name, op, value), left.hops)

    def check_op(self, ref: ColRef, op: Op, op_tok: Tok) -> None:
        col = ref.column
        t = col.type
        if t in (T.FILE, T.IMAGE):
            self.fail(f"the {t.value} column {col.name!r} only compares with null", ref.pos)
        if t is T.MULTICHOICE:
            self.fail(
                f"the multichoice column {col.name!r} compares with null or with "
                "Microsoft.Dynamics.CRM.ContainValues / DoesNotContainValues",
                ref.pos,
            )
        if not allows(op, t):
            hint = "; lookups compare with eq, ne and In" if t is T.LOOKUP else ""
            self.fail(
                f"{op_tok.text} does not apply to the {t.value} column {col.name!r}{hint}",
                op_tok.pos,
            )

    def column_compare(self, left: ColRef, op: Op, right: ColRef) -> Node:
        if left.hops or right.hops:
            hopped = left if left.hops else right
            self.fail(
                "comparing columns through navigation properties is not supported", hopped.pos
            )
        a, b = left.column, right.column
        for ref in (left, right):
            if family(ref.column.type) is None:
                self.fail(
                    f"the {ref.column.type.value} column {ref.column.name!r} cannot be "
                    "compared with another column",
                    ref.pos,
                )
        if not same_family(a.type, b.type):
            self.fail(
                f"cannot compare the {a.type.value} column {a.name!r} with the {b.type.value} "
                f"column {b.name!r}",
                right.pos,
            )
        if not allows(op, a.type) or not allows(op, b.type):
            self.fail(f"{op.value} does not apply to {a.type.value} columns", left.pos)
        return ColumnCompare(a.name, op, b.name)

    # -- values

    def coerce(self, table: Table, col: Column, value: Any, pos: int) -> Any:
        key = (table.name, col.name)
        coercer = self.coercers.get(key)
        if coercer is None:
            coercer = make_coercer(table, replace(col, min_value=None, max_value=None))
            self.coercers[key] = coercer
        try:
            return coercer(value)
        except FieldsyncError as e:
            self.fail(e.message, pos)

    def convert(self, table: Table, col: Column, tok: Tok, *, lenient: bool) -> Any:
        """The literal ``tok`` as a value of ``col``. ``lenient`` (query-function values)
        takes a string spelling any literal, as Dataverse's functions take strings."""
        t = col.type
        kind = tok.kind
        if lenient and kind in ("string", "jstring") and t not in TEXT:
            tok = self.respell(tok)
            kind = tok.kind

        def wrong(expected: str) -> NoReturn:
            hint = ""
            if kind == "string" and t not in TEXT and not lenient:
                hint = " (numbers, GUIDs, dates and true/false are written without quotes)"
            if kind == "jstring" and t in TEXT:
                hint = " (strings take single quotes)"
            self.fail(
                f"{table.name}.{col.name} is {a_or_an(t.value)} column: expected {expected}, "
                f"got {shorten(tok.text)}{hint}",
                tok.pos,
            )

        if t in TEXT:
            if kind != "string" and not (lenient and kind == "jstring"):
                wrong("a string in single quotes")
            problem = check_text(tok.value)
            if problem is not None:
                self.fail(problem, tok.pos)
            return tok.value
        if t in (T.INTEGER, T.BIGINT, T.CHOICE, T.MULTICHOICE):
            if kind != "int":
                wrong("a whole number" if t in (T.INTEGER, T.BIGINT) else "a choice value")
            lo, hi = BIGINT_RANGE if t is T.BIGINT else INT_RANGE
            number = int(tok.value)
            if not lo <= number <= hi:
                self.fail(f"{number} is outside {lo} .. {hi}", tok.pos)
            return number
        if t in (T.DECIMAL, T.MONEY):
            if kind not in ("int", "num"):
                wrong("a number")
            lo_d, hi_d = DECIMAL_RANGE if t is T.DECIMAL else MONEY_RANGE
            dec = Decimal(tok.value)
            if not lo_d <= dec <= hi_d:
                self.fail(f"{tok.value} is outside {lo_d} .. {hi_d}", tok.pos)
            return dec
        if t is T.FLOAT:
            if kind not in ("int", "num"):
                wrong("a number")
            number_f = float(tok.value)
            lo_f, hi_f = FLOAT_RANGE
            if not math.isfinite(number_f) or not lo_f <= number_f <= hi_f:
                self.fail(f"{tok.value} is outside {lo_f:.0f} .. {hi_f:.0f}", tok.pos)
            return number_f
        if t is T.BOOLEAN:
            if kind != "bool":
                wrong("true or false")
            return tok.value
        if t is T.DATETIME:
            if kind == "date":
                d = tok.value
                return self.coerce(table, col, dt.datetime(d.year, d.month, d.day), tok.pos)
            if kind != "datetime":
                wrong("a date and time such as 2024-01-01T00:00:00Z")
            return self.coerce(table, col, tok.value, tok.pos)
        if t is T.DATE:
            if kind != "date":
                wrong("a date such as 2024-01-01")
            return self.coerce(table, col, tok.value, tok.pos)
        if t in (T.LOOKUP, T.UNIQUEIDENTIFIER):
            if kind != "guid":
                wrong("a GUID")
            return tok.value
        wrong("null")  # file and image columns

    def respell(self, tok: Tok) -> Tok:
        """A string such as ``"12"`` as the literal it spells, or ``tok`` unchanged."""
        body = str(tok.value).strip()
        if body.lower() in ("true", "false"):
            return Tok("bool", tok.text, tok.pos, body.lower() == "true")
        if body.startswith("{") and body.endswith("}"):
            body = body[1:-1]  # {GUID}
        for kind, pattern in (
            ("guid", GUID),
            ("datetime", DATETIME),
            ("date", DATE),
            ("number", NUMBER),
        ):
            if pattern.fullmatch(body):
                return literal(kind, tok.text, body, tok.pos, self.where)
        return tok
