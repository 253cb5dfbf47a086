"""Dataverse's read-only SQL (``GET {set}?sql=…``) -> the query tree.

The text is parsed by a real SQL parser (sqlglot, T-SQL dialect) and translated onto
:class:`~fieldsync.query.ast.Query`, so a SQL query runs exactly as the equivalent FetchXML or
OData query does: the records service adds the caller's read filter (to the root table and
inside every join), pages it and compiles it to bound parameters. No SQL text ever reaches
the database.

The subset served, Dataverse's documented one minus aggregation with grouping:

- one ``SELECT`` of named columns (``table.column`` or ``alias.column``, ``AS`` aliases),
  ``DISTINCT`` and ``TOP n``; or one ``COUNT(*)`` / ``COUNT(column)`` alone;
- ``FROM`` one table, with an alias; ``[INNER] JOIN`` and ``LEFT [OUTER] JOIN`` of another
  table ``ON`` a lookup equal to the other table's primary id (either direction, nested);
- ``WHERE`` with ``= != <> < > <= >=`` between a column and a literal (or two columns of one
  table), ``LIKE`` / ``NOT LIKE`` (Dataverse's patterns), ``IN`` / ``NOT IN`` lists,
  ``BETWEEN``, ``IS [NOT] NULL``, ``AND`` / ``OR`` / ``NOT`` and parentheses;
- ``ORDER BY`` columns (or output aliases), ``ASC`` / ``DESC``.

Anything else is a :class:`SqlError` (a 400) naming what is not supported: ``*``, ``GROUP
BY``, ``HAVING``, ``OFFSET … FETCH``, functions, subqueries, ``UNION``, other joins, and every
statement but ``SELECT``. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

import sqlglot
import sqlglot.errors
from sqlglot import exp

from fieldsync.errors import QueryError, ValidationError
from fieldsync.limits import MAX_CONDITIONS
from fieldsync.query.ast import (
    TRUE,
    ColumnCompare,
    Condition,
    Link,
    LinkType,
    Node,
    Op,
    Order,
    Query,
    all_of,
    any_of,
    negate,
)
from fieldsync.query.odata import resolve_column
from fieldsync.query.operators import allows, same_family
from fieldsync.schema.model import Column, ColumnType, Schema, Table
from fieldsync.schema.values import make_coercer

T = ColumnType
MAX_CHARS = 65_536  # a long query comes in a $batch body; past this it is refused unread
MAX_DEPTH = 50  # nesting of parentheses, NOT and AND/OR groups (as $filter)
MAX_JOINS = 15  # as FetchXML's link entities
MAX_TOP = 5000
ATTRIBUTE_NAME = "OData.Community.Display.V1.AttributeName"

# SELECT clauses served; any other clause the parser finds is refused by name
_CLAUSES = frozenset(
    {"expressions", "from_", "from", "joins", "where", "order", "limit", "distinct"}
)
_CLAUSE_NAMES = {
    "group": "GROUP BY",
    "having": "HAVING",
    "offset": "OFFSET … FETCH",
    "with_": "WITH (common table expressions)",
    "with": "WITH (common table expressions)",
    "into": "SELECT … INTO",
    "windows": "WINDOW",
    "qualify": "QUALIFY",
    "locks": "locking hints",
    "laterals": "APPLY / LATERAL",
    "options": "OPTION hints",
}
_COMPARE: dict[type[exp.Expression], Op] = {
    exp.EQ: Op.EQ,
    exp.NEQ: Op.NE,
    exp.GT: Op.GT,
    exp.GTE: Op.GE,
    exp.LT: Op.LT,
    exp.LTE: Op.LE,
}
_SQL_OPS = {Op.EQ: "=", Op.NE: "<>", Op.GT: ">", Op.GE: ">=", Op.LT: "<", Op.LE: "<="}
_FLIPPED = {Op.EQ: Op.EQ, Op.NE: Op.NE, Op.GT: Op.LT, Op.GE: Op.LE, Op.LT: Op.GT, Op.LE: Op.GE}
_NEGATED = {
    Op.NULL: Op.NOT_NULL,
    Op.NOT_NULL: Op.NULL,
    Op.IN: Op.NOT_IN,
    Op.NOT_IN: Op.IN,
    Op.LIKE: Op.NOT_LIKE,
    Op.NOT_LIKE: Op.LIKE,
}
_INT = re.compile(r"[+-]?\d+")
_TRUE = {"true": True, "1": True, "false": False, "0": False}
_NODE_NAMES = {
    exp.Subquery: "subqueries",
    exp.Exists: "EXISTS (subqueries)",
    exp.Case: "CASE",
    exp.Coalesce: "COALESCE",
    exp.Cast: "CAST",
    exp.Star: "SELECT * (name the columns)",
    exp.Window: "window functions",
    exp.Escape: "LIKE … ESCAPE",
    exp.Placeholder: "parameters",
    exp.Parameter: "parameters",
}


class SqlError(QueryError):
    """A SQL query outside the subset served, or one that does not fit the schema."""


def _fail(message: str) -> NoReturn:
    raise SqlError(f"sql: {message}")


def _unsupported(node: exp.Expression) -> NoReturn:
    for kind, name in _NODE_NAMES.items():
        if isinstance(node, kind):
            _fail(f"{name} is not supported")
    if isinstance(node, exp.AggFunc):
        _fail(f"the aggregate {node.sql_name()} is not supported (COUNT alone is)")
    if isinstance(node, exp.Func):
        _fail(f"the function {node.sql_name()} is not supported")
    text = node.sql(dialect="tsql")
    _fail(f"{type(node).__name__} ({text[:60]!r}) is not supported")


def _only(node: exp.Expression, *allowed: str) -> None:
    """Refuse a node carrying anything the translation would otherwise silently drop."""
    for key, value in node.args.items():
        if key not in allowed and value not in (None, [], False):
            text = node.sql(dialect="tsql")[:60]
            _fail(f"{text!r}: {key.upper().rstrip('_')} is not supported here")


def _negated(item: Node) -> Node:
    if isinstance(item, Condition) and item.op in _NEGATED:
        return Condition(item.column, _NEGATED[item.op], item.value, item.entity)
    return negate(item)


@dataclass(frozen=True, slots=True)
class Output:
    """One column of the answer: ``name`` is its key (an ``AS`` alias, the column's name, or
    ``alias.column`` for a joined table's column without one)."""

    name: str
    column: str
    entity: str | None = None
    aliased: bool = False


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """The translated query: ``query`` for the records service, ``outputs`` the answer's
    columns in order; ``count`` (the output's name) when the SELECT is a single COUNT, whose
    answer is one row with the number of rows ``query`` finds."""

    query: Query
    outputs: tuple[Output, ...]
    count: str | None = None


@dataclass(eq=False)
class _Source:
    table: Table
    entity: str | None  # None: the root table
    parent: _Source | None = None
    from_column: str = ""
    to_column: str = ""
    outer: bool = False
    columns: list[str] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    children: list[_Source] = field(default_factory=list)

    def link(self) -> Link:
        assert self.entity is not None
        return Link(
            table=self.table.name,
            from_column=self.from_column,
            to_column=self.to_column,
            alias=self.entity,
            type=LinkType.OUTER if self.outer else LinkType.INNER,
            columns=tuple(dict.fromkeys(self.columns)),
            links=tuple(c.link() for c in self.children),
        )


def parse_sql(text: str, schema: Schema) -> SqlQuery:
    """Translate one SELECT; :class:`SqlError` (400) for anything outside the subset."""
    if not text.strip():
        _fail("the query is empty")
    if len(text) > MAX_CHARS:
        _fail(f"the query is longer than {MAX_CHARS} characters")
    try:
        statements = sqlglot.parse(text, read="tsql")
    except RecursionError:
        _fail("the query is nested too deeply")
    except (sqlglot.errors.SqlglotError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(f"the query cannot be parsed: {first[:200]}")
    found = [s for s in statements if s is not None]
    if len(found) != 1:
        _fail("send exactly one SELECT statement")
    [statement] = found
    if isinstance(statement, exp.SetOperation):
        _fail(f"{statement.key.upper()} is not supported")
    if not isinstance(statement, exp.Select):
        _fail(
            f"{statement.key.upper()} is not supported: the SQL endpoint is read-only "
            "(one SELECT only)"
        )
    try:
        return _Translator(schema).select(statement)
    except RecursionError:
        _fail("the query is nested too deeply")


class _Translator:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.scope: dict[str, _Source] = {}
        self.root: _Source | None = None
        self.count_filter: Node | None = None  # COUNT(column): the column is not null
        self.conditions = 0

    # -- the statement -------------------------------------------------------------------

    def select(self, node: exp.Select) -> SqlQuery:
        for key, value in node.args.items():
            if key not in _CLAUSES and value not in (None, [], False):
                _fail(f"{_CLAUSE_NAMES.get(key, key.upper())} is not supported")
        distinct = node.args.get("distinct")
        if distinct is not None:
            _only(distinct)
        frm = node.args.get("from_") or node.args.get("from")
        if not isinstance(frm, exp.From):
            _fail("name the table: SELECT … FROM <table>")
        root = self._source(frm.this, None, "FROM")
        self.root = root
        joins = node.args.get("joins") or []
        if len(joins) > MAX_JOINS:
            _fail(f"more than {MAX_JOINS} joins")
        for join in joins:
            self._join(join)
        outputs, count = self._outputs(node.expressions)
        where = node.args.get("where")
        filter_ = self._condition(where.this) if isinstance(where, exp.Where) else None
        if self.count_filter is not None:
            filter_ = all_of([filter_ or TRUE, self.count_filter])
        orders = self._orders(node.args.get("order"), outputs) if count is None else []
        top = self._top(node.args.get("limit"))
        if count is not None and top is not None:
            _fail("TOP with COUNT is not supported")
        if count is not None and distinct is not None:
            _fail("DISTINCT with COUNT is not supported")
        query = Query(
            table=root.table.name,
            columns=(
                (root.table.primary_id,)
                if count is not None
                else tuple(dict.fromkeys(root.columns))
            ),
            filter=filter_,
            links=tuple(c.link() for c in root.children),
            orders=tuple(orders),
            top=top,
            distinct=distinct is not None,
        )
        return SqlQuery(query, tuple(outputs), count)

    def _source(self, node: exp.Expression, parent: _Source | None, where: str) -> _Source:
        if isinstance(node, exp.Subquery | exp.Select):
            _fail(f"subqueries are not supported (in {where})")
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
            _unsupported(node)
        for key, value in node.args.items():
            if key not in ("this", "alias", "db") and value not in (None, [], False):
                _fail(f"{key} on a table ({node.sql(dialect='tsql')[:60]!r}) is not supported")
        db = node.args.get("db")
        if db is not None and str(db.name).lower() != "dbo":
            _fail(f"{node.sql(dialect='tsql')[:60]!r}: only the dbo schema exists")
        name = node.name.lower()
        if name not in self.schema:
            _fail(f"no table named {node.name!r}")
        table = self.schema.table(name)
        alias = node.alias.lower() if node.alias else None
        entity = None if parent is None else (alias or table.name)
        source = _Source(table, entity)
        names = [alias] if alias else [table.name]
        if parent is None and alias:
            names.append(table.name)  # account.name, as well as a.name
        for n in names:
            if n in self.scope and self.scope[n] is not source:
                _fail(f"the table name or alias {n!r} is used twice")
            self.scope[n] = source
        return source

    def _join(self, join: exp.Join) -> None:
        side = (join.side or "").upper()
        kind = (join.kind or "").upper()
        if kind in ("CROSS", "SEMI", "ANTI") or side in ("RIGHT", "FULL"):
            _fail(f"{' '.join(x for x in (side, kind) if x)} JOIN is not supported")
        if join.args.get("using"):
            _fail("JOIN … USING is not supported: write ON a.lookup = b.id")
        for key, value in join.args.items():
            if key not in ("this", "on", "side", "kind") and value not in (None, [], False):
                _fail(f"{key} in a JOIN is not supported")
        on = join.args.get("on")
        if on is None:
            _fail("a JOIN needs ON <lookup> = <primary id>")
        assert self.root is not None
        source = self._source(join.this, self.root, "JOIN")
        source.outer = side == "LEFT"
        while isinstance(on, exp.Paren):
            on = on.this
        if not (
            isinstance(on, exp.EQ)
            and isinstance(on.this, exp.Column)
            and isinstance(on.expression, exp.Column)
        ):
            _fail("JOIN … ON must be one column = column: a lookup and the primary id it points at")
        a, b = self._column(on.this), self._column(on.expression)
        if a[0] is source and b[0] is not source:
            new, old = a, b
        elif b[0] is source and a[0] is not source:
            new, old = b, a
        else:
            _fail("JOIN … ON must compare the joined table with a table joined before it")
        (nsrc, ncol), (osrc, ocol) = new, old
        if ncol.name == nsrc.table.primary_id and _points_at(ocol, nsrc.table):
            pass  # many-to-one: the earlier table's lookup -> the joined table
        elif ocol.name == osrc.table.primary_id and _points_at(ncol, osrc.table):
            pass  # one-to-many: the joined table's lookup -> the earlier table
        else:
            _fail(
                f"JOIN {source.entity} ON {on.sql(dialect='tsql')[:80]}: join on a lookup column "
                "and the primary id of the table it points at"
            )
        source.parent = osrc
        source.from_column, source.to_column = ncol.name, ocol.name
        osrc.children.append(source)

    # -- columns -------------------------------------------------------------------------

    def _column(self, node: exp.Column) -> tuple[_Source, Column]:
        if isinstance(node.this, exp.Star):
            _fail("SELECT * is not supported (name the columns)")
        if node.args.get("db") or node.args.get("catalog"):
            _fail(f"{node.sql(dialect='tsql')[:60]!r}: name columns as table.column")
        _only(node, "this", "table")
        name = node.name
        qualifier = node.table.lower() if node.table else None
        if qualifier is not None:
            source = self.scope.get(qualifier)
            if source is None:
                _fail(f"{node.table!r} is not a table or alias of the query")
            col = resolve_column(source.table, name)
            if col is None:
                _fail(f"table {source.table.name!r} has no column {name!r}")
            return source, col
        assert self.root is not None
        col = resolve_column(self.root.table, name)
        if col is not None:
            return self.root, col
        found = [
            (s, c)
            for s in dict.fromkeys(self.scope.values())
            if s is not self.root and (c := resolve_column(s.table, name)) is not None
        ]
        if len(found) == 1:
            return found[0]
        if found:
            _fail(f"the column {name!r} is ambiguous: qualify it with its table or alias")
        _fail(f"table {self.root.table.name!r} has no column {name!r}")

    def _outputs(self, items: list[exp.Expression]) -> tuple[list[Output], str | None]:
        outputs: list[Output] = []
        count: str | None = None
        for item in items:
            alias: str | None = None
            node = item
            if isinstance(node, exp.Alias):
                alias, node = node.alias, node.this
            if isinstance(node, exp.Count):
                if len(items) != 1:
                    _fail("COUNT with other columns needs GROUP BY, which is not supported")
                count = alias or "count"
                self._count(node)
                continue
            if isinstance(node, exp.Star):
                _fail("SELECT * is not supported (name the columns)")
            if not isinstance(node, exp.Column):
                _unsupported(node)
            source, col = self._column(node)
            source.columns.append(col.name)
            default = col.name if source.entity is None else f"{source.entity}.{col.name}"
            outputs.append(Output(alias or default, col.name, source.entity, alias is not None))
        names = [o.name for o in outputs]
        if len(set(names)) != len(names):
            _fail("two output columns have the same name: give one an alias (AS)")
        return outputs, count

    def _count(self, node: exp.Count) -> None:
        _only(node, "this", "big_int")
        inner = node.this
        if isinstance(inner, exp.Distinct):
            _fail("COUNT(DISTINCT …) is not supported")
        if isinstance(inner, exp.Star):
            return
        if not isinstance(inner, exp.Column):
            _unsupported(inner)
        source, col = self._column(inner)
        self.count_filter = Condition(col.name, Op.NOT_NULL, entity=source.entity)

    def _orders(self, node: exp.Order | None, outputs: list[Output]) -> list[Order]:
        if node is None:
            return []
        _only(node, "expressions")
        by_alias = {o.name.lower(): o for o in outputs if o.aliased}
        orders: list[Order] = []
        for item in node.expressions:
            if not isinstance(item, exp.Ordered):
                _unsupported(item)
            _only(item, "this", "desc", "nulls_first")
            target = item.this
            desc = bool(item.args.get("desc"))
            if isinstance(target, exp.Literal):
                _fail("ORDER BY a column position is not supported: name the column")
            if not isinstance(target, exp.Column):
                _unsupported(target)
            if not target.table and target.name.lower() in by_alias:
                out = by_alias[target.name.lower()]
                orders.append(Order(out.column, desc, out.entity))
                continue
            source, col = self._column(target)
            orders.append(Order(col.name, desc, source.entity))
        return orders

    @staticmethod
    def _top(node: exp.Expression | None) -> int | None:
        if node is None:
            return None
        if isinstance(node, exp.Fetch):
            _fail("OFFSET … FETCH is not supported (page with Prefer: odata.maxpagesize)")
        if not isinstance(node, exp.Limit):
            _unsupported(node)
        for key, value in node.args.items():
            if key != "expression" and value not in (None, [], False):
                _fail(f"TOP … {key.upper()} is not supported")
        value = node.expression
        while isinstance(value, exp.Paren):
            value = value.this
        if not (
            isinstance(value, exp.Literal) and not value.is_string and _INT.fullmatch(value.name)
        ):
            _fail("TOP takes a whole number")
        if int(value.name) > MAX_TOP:
            _fail(f"TOP is at most {MAX_TOP}")
        return int(value.name)

    # -- conditions ----------------------------------------------------------------------

    def _condition(self, node: exp.Expression, depth: int = 0) -> Node:
        if depth > MAX_DEPTH:
            _fail(f"conditions are nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, exp.Paren):
            return self._condition(node.this, depth + 1)
        if isinstance(node, exp.And):
            return all_of([self._condition(n, depth + 1) for n in _operands(node)])
        if isinstance(node, exp.Or):
            return any_of([self._condition(n, depth + 1) for n in _operands(node)])
        if isinstance(node, exp.Not):
            return _negated(self._condition(node.this, depth + 1))
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            _fail(f"more than {MAX_CONDITIONS} conditions")
        if type(node) in _COMPARE:
            _only(node, "this", "expression")
            return self._compare(node, _COMPARE[type(node)])
        if isinstance(node, exp.Like | exp.Is) and node.args.get("negate"):
            plain = node.copy()
            plain.set("negate", None)
            self.conditions -= 1  # counted again as the plain condition
            return _negated(self._condition(plain, depth))
        if isinstance(node, exp.Like):
            _only(node, "this", "expression")
            source, col = self._subject(node.this, "LIKE")
            if col.type not in (T.STRING, T.MEMO):
                _fail(f"LIKE applies to text columns; {col.name!r} is {col.type.value}")
            pattern = self._literal(node.expression)
            if not isinstance(pattern, str):
                _fail("LIKE takes a quoted pattern")
            return Condition(col.name, Op.LIKE, pattern, source.entity)
        if isinstance(node, exp.In):
            if node.args.get("query") is not None:
                _fail("subqueries are not supported (IN takes a list of values)")
            _only(node, "this", "expressions")
            source, col = self._subject(node.this, "IN")
            _usable(col, Op.IN, "IN")
            values = tuple(
                dict.fromkeys(self._typed(source, col, self._literal(v)) for v in node.expressions)
            )
            if not values:
                _fail("IN needs at least one value")
            return Condition(col.name, Op.IN, values, source.entity)
        if isinstance(node, exp.Is):
            _only(node, "this", "expression")
            source, col = self._subject(node.this, "IS NULL")
            if not isinstance(node.expression, exp.Null):
                _fail("IS takes NULL or NOT NULL")
            return Condition(col.name, Op.NULL, None, source.entity)
        if isinstance(node, exp.Between):
            _only(node, "this", "low", "high")
            source, col = self._subject(node.this, "BETWEEN")
            _usable(col, Op.GT, "BETWEEN")
            low = self._typed(source, col, self._literal(node.args["low"]))
            high = self._typed(source, col, self._literal(node.args["high"]))
            return all_of(
                [
                    Condition(col.name, Op.GE, low, source.entity),
                    Condition(col.name, Op.LE, high, source.entity),
                ]
            )
        _unsupported(node)

    def _subject(self, node: exp.Expression, what: str) -> tuple[_Source, Column]:
        if not isinstance(node, exp.Column):
            _fail(f"{what} applies to a column, not {node.sql(dialect='tsql')[:60]!r}")
        source, col = self._column(node)
        if col.type in (T.MULTICHOICE, T.FILE, T.IMAGE):
            _fail(f"{col.name!r} ({col.type.value}) cannot be used in a condition")
        return source, col

    def _compare(self, node: exp.Expression, op: Op) -> Node:
        left, right = node.this, node.expression
        if isinstance(left, exp.Column) and isinstance(right, exp.Column):
            (ls, lc), (rs, rc) = self._subject(left, op.value), self._subject(right, op.value)
            if ls is not rs:
                _fail("columns of two tables compare only in JOIN … ON")
            _usable(lc, op, _SQL_OPS[op])
            if not same_family(lc.type, rc.type):
                _fail(
                    f"cannot compare {lc.name!r} ({lc.type.value}) with {rc.name!r} "
                    f"({rc.type.value})"
                )
            return ColumnCompare(lc.name, op, rc.name, ls.entity)
        if not isinstance(left, exp.Column):
            if not isinstance(right, exp.Column):
                _fail(f"{node.sql(dialect='tsql')[:60]!r}: compare a column with a value")
            left, right, op = right, left, _FLIPPED[op]
        source, col = self._subject(left, op.value)
        _usable(col, op, _SQL_OPS[op])
        raw = self._literal(right)
        if raw is None:
            _fail("compare with NULL using IS NULL or IS NOT NULL")
        return Condition(col.name, op, self._typed(source, col, raw), source.entity)

    @staticmethod
    def _literal(node: exp.Expression) -> Any:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Null):
            return None
        if isinstance(node, exp.Boolean):
            return bool(node.this)
        if isinstance(node, exp.National):
            return str(node.this)
        negative = isinstance(node, exp.Neg)
        if negative:
            node = node.this
        if isinstance(node, exp.Literal):
            if node.is_string:
                if negative:
                    _fail("a minus sign before a text value")
                return str(node.this)
            text = ("-" if negative else "") + str(node.this)
            if _INT.fullmatch(text):
                return int(text)
            try:
                return Decimal(text)
            except InvalidOperation:
                _fail(f"{text!r} is not a number")
        if isinstance(node, exp.Column):
            _fail(f"{node.sql(dialect='tsql')[:60]!r}: a value was expected here, not a column")
        _unsupported(node)

    @staticmethod
    def _typed(source: _Source, col: Column, raw: Any) -> Any:
        """A literal as the column's type, as FetchXML converts its values."""
        table, t = source.table, col.type
        value = raw
        expected = ""
        if raw is None:
            _fail("NULL is not a value here: use IS NULL")
        if t in (T.STRING, T.MEMO):
            if not isinstance(raw, str):
                expected = "quoted text"
        elif t in (T.INTEGER, T.BIGINT, T.CHOICE):
            if isinstance(raw, str) and _INT.fullmatch(raw.strip()):
                value = int(raw)
            elif isinstance(raw, bool) or not isinstance(raw, int):
                expected = "a whole number"
        elif t in (T.DECIMAL, T.MONEY, T.FLOAT):
            if isinstance(raw, bool) or not isinstance(raw, (int, Decimal)):
                expected = "a number"
            elif t is T.FLOAT:
                value = float(raw)
        elif t is T.BOOLEAN:
            flag = _TRUE.get(str(raw).lower()) if not isinstance(raw, bool) else raw
            if flag is None:
                expected = "1, 0, true or false"
            value = flag
        elif t in (T.LOOKUP, T.UNIQUEIDENTIFIER, T.DATETIME, T.DATE):
            if not isinstance(raw, str):
                expected = "a quoted value"
            elif t is T.LOOKUP:
                value = (raw, col.targets[0])
        if expected:
            _fail(f"the value for {table.name}.{col.name} must be {expected}, not {raw!r}")
        try:
            coerced = make_coercer(table, col)(value)
        except ValidationError as exc:
            _fail(f"bad value for {exc.message}")
        return coerced[0] if t is T.LOOKUP else coerced


def _usable(col: Column, op: Op, what: str) -> None:
    """The operators each column type takes, as in FetchXML (a yes/no or a choice column
    compares for equality only)."""
    if not allows(op, col.type):
        _fail(f"{what} cannot be used on {col.name!r} (type {col.type.value})")


def _operands(node: exp.Expression) -> list[exp.Expression]:
    """The operands of a chain of one connector (``a OR b OR c``), parentheses unwrapped."""
    return [n for n in node.flatten() if isinstance(n, exp.Expression)]


def _points_at(col: Column, table: Table) -> bool:
    return col.type is T.LOOKUP and table.name in col.targets
