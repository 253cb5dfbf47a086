"""FetchXML → the query AST (:mod:`fieldsync.query.ast`), checked against the schema.

``parse_fetchxml(text, schema)`` reads one ``<fetch>`` document and returns a
:class:`~fieldsync.query.ast.Query`, or raises :class:`FetchXmlError` (a
:class:`~fieldsync.errors.QueryError`) whose message starts with the line and column of the
offending element: ``line 4, column 7: <condition> ...``.

The XML is read with ``defusedxml``'s expat SAX driver: no DTD (``<!DOCTYPE>`` is refused, so
no entity can be declared, expanded or fetched), no external references, at most 1 MiB of
text, 64 levels of nesting and 20,000 elements. The tree is then walked twice: once to give
every ``<link-entity>`` its table and alias (so a ``condition`` may name an alias declared
further down), and once to build the AST.

What is read, following Dataverse:

- ``<fetch>``: ``top`` (1..5000, not with paging or ``returntotalrecordcount``), ``count``
  (page size, 1..5000), ``page``,
  ``paging-cookie``, ``distinct``, ``returntotalrecordcount``; ``mapping``, ``version``,
  ``output-format``, ``no-lock``, ``latematerialize``, ``useraworderby`` and ``options`` are
  accepted and change nothing; ``aggregate="true"`` is refused.
- ``<entity>`` / ``<link-entity>``: ``attribute``, ``all-attributes``, ``order``, ``filter``,
  nested ``link-entity``. The root entity without ``attribute`` elements returns every column
  (``columns=None``); a link without them returns none (``columns=()``).
- ``<link-entity>``: ``inner`` / ``outer`` joins become ``Link``s of the query; inside a
  ``<filter>``, ``any`` / ``not any`` / ``all`` / ``not all`` become ``LinkFilter``s; ``exists``
  and ``in`` become a ``LinkFilter`` of type ``any`` AND-ed into the parent's filter. At most
  15 link-entities; an alias defaults to the table name (``name1``, ``name2``... when taken).
- ``<condition>``: every operator of :class:`~fieldsync.query.ast.Op` under its FetchXML name,
  plus ``neq`` (= ``ne``), ``olderthan-x-days`` (= ``older-x-days``), ``last-seven-days`` /
  ``next-seven-days`` (= ``last-x-days`` / ``next-x-days`` 7) and ``between`` /
  ``not-between`` (two conditions); ``valueof`` compares two columns of one table;
  ``entityname`` names a joined alias. Values are converted to the column's type. Which
  column types take which operator, and which columns compare or join, is the operator
  table's (:mod:`fieldsync.query.operators`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn
from xml.sax import SAXException, SAXParseException
from xml.sax.handler import ContentHandler, feature_external_ges, feature_external_pes
from xml.sax.xmlreader import AttributesImpl

from defusedxml.common import (  # type: ignore[import-untyped]
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.expatreader import DefusedExpatParser  # type: ignore[import-untyped]

from fieldsync.errors import QueryError, ValidationError
from fieldsync.limits import MAX_CONDITIONS
from fieldsync.query.ast import (
    ColumnCompare,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Op,
    Order,
    Query,
    all_of,
    any_of,
)
from fieldsync.query.operators import (
    BETWEEN_TYPES,
    BY_FETCHXML,
    COMPARISONS,
    FETCHXML_ALIASES,
    FETCHXML_BETWEEN,
    FETCHXML_UNSUPPORTED,
    UNORDERABLE,
    Values,
    allows,
    same_family,
    spec,
)
from fieldsync.schema.model import Column, ColumnType, Schema, Table
from fieldsync.schema.values import make_coercer

__all__ = ["MAX_BYTES", "MAX_CONDITIONS", "FetchXmlError", "parse_fetchxml"]

T = ColumnType

MAX_BYTES = 1 << 20  # 1 MiB of UTF-8
MAX_DEPTH = 64
MAX_ELEMENTS = 20_000
MAX_LINKS = 15  # Dataverse: "Number of link entities in query exceeded maximum limit."
MAX_ROWS = 5000  # top and count
MAX_PAGE = 2_147_483_647
MAX_X_DAYS = 100_000
MAX_X_HOURS = MAX_X_DAYS * 24


class FetchXmlError(QueryError):
    """A FetchXML problem at one place of the document (1-based line and column)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line = line
        self.column = column


def parse_fetchxml(text: str, schema: Schema) -> Query:
    """Parse a FetchXML query and check it against ``schema``."""
    root = _read(text)
    return _Reader(schema).fetch(root)


# --------------------------------------------------------------------------------------------
# XML → a small element tree with positions


@dataclass(eq=False)
class _Element:
    tag: str
    attrs: dict[str, str]
    line: int
    column: int
    children: list[_Element] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    text_at: tuple[int, int] | None = None

    def fail(self, message: str) -> NoReturn:
        raise FetchXmlError(message, self.line, self.column)

    def content(self) -> str:
        return "".join(self.text)

    def no_text(self) -> None:
        if self.text_at is not None:
            line, column = self.text_at
            raise FetchXmlError(f"<{self.tag}> cannot contain text", line, column)

    def no_children(self) -> None:
        if self.children:
            child = self.children[0]
            child.fail(f"<{child.tag}> is not allowed inside <{self.tag}>")
        self.no_text()

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse any XML attribute not in ``allowed``."""
        known = set(allowed)
        for name in self.attrs:
            if name not in known:
                self.fail(f"<{self.tag}> has no attribute {_q(name)}")


class _TreeBuilder(ContentHandler):
    def __init__(self, position: Callable[[], tuple[int, int]]) -> None:
        super().__init__()
        self._position = position
        self._stack: list[_Element] = []
        self._count = 0
        self.root: _Element | None = None

    def startElement(self, name: str, attrs: AttributesImpl) -> None:
        line, column = self._position()
        if len(self._stack) >= MAX_DEPTH:
            raise FetchXmlError(
                f"elements are nested more than {MAX_DEPTH} levels deep", line, column
            )
        self._count += 1
        if self._count > MAX_ELEMENTS:
            raise FetchXmlError(f"the query has more than {MAX_ELEMENTS} elements", line, column)
        element = _Element(name, dict(attrs.items()), line, column)
        if self._stack:
            self._stack[-1].children.append(element)
        else:
            self.root = element
        self._stack.append(element)

    def endElement(self, name: str) -> None:
        self._stack.pop()

    def characters(self, content: str) -> None:
        if not self._stack:
            return
        element = self._stack[-1]
        if element.text_at is None and content.strip():
            line, column = self._position()
            skipped = content[: len(content) - len(content.lstrip())]
            if "\n" in skipped:
                line += skipped.count("\n")
                column = len(skipped) - skipped.rindex("\n")
            else:
                column += len(skipped)
            element.text_at = (line, column)
        element.text.append(content)


def _read(text: str) -> _Element:
    if not isinstance(text, str):
        raise QueryError(f"FetchXML must be text, not {type(text).__name__}")
    if len(text) > MAX_BYTES:
        raise QueryError(f"FetchXML is larger than {MAX_BYTES} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise QueryError(
            f"FetchXML is not valid Unicode (a lone surrogate at character {exc.start})"
        ) from None
    if size > MAX_BYTES:
        raise QueryError(f"FetchXML is larger than {MAX_BYTES} bytes")
    if not text.strip():
        raise QueryError("FetchXML is empty")
    # Leading blank lines would make expat refuse an XML declaration; skip them but keep the
    # positions of the text as sent.
    body = text.lstrip(" \t\r\n")
    skipped = text[: len(text) - len(body)].replace("\r\n", "\n").replace("\r", "\n")
    down = skipped.count("\n")
    right = len(skipped) - (skipped.rfind("\n") + 1)

    def shift(line: int, column: int) -> tuple[int, int]:
        """An expat position (1-based line, 0-based column) in the text as sent, 1-based."""
        return line + down, column + 1 + (right if line == 1 else 0)

    parser = DefusedExpatParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    parser.setFeature(feature_external_ges, False)
    parser.setFeature(feature_external_pes, False)

    def position() -> tuple[int, int]:
        return shift(int(parser.getLineNumber()), int(parser.getColumnNumber()))

    builder = _TreeBuilder(position)
    parser.setContentHandler(builder)
    try:
        parser.feed(body)
        parser.close()
    except SAXParseException as exc:
        raise FetchXmlError(
            f"not well-formed XML: {exc.getMessage()}",
            *shift(exc.getLineNumber() or 1, exc.getColumnNumber() or 0),
        ) from None
    except DTDForbidden:
        raise FetchXmlError("a DTD (<!DOCTYPE ...>) is not allowed", *position()) from None
    except EntitiesForbidden:
        raise FetchXmlError("entity declarations are not allowed", *position()) from None
    except ExternalReferenceForbidden:
        raise FetchXmlError("external references are not allowed", *position()) from None
    except SAXException as exc:
        raise QueryError(f"FetchXML could not be read: {exc.getMessage()}") from None
    if builder.root is None:  # pragma: no cover - expat reports "no element found" first
        raise QueryError("FetchXML has no element")
    return builder.root


# --------------------------------------------------------------------------------------------
# Value and attribute helpers


def _q(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


_INT = re.compile(r"[+-]?[0-9]{1,20}")
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][+-]?[0-9]{1,4})?"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_TRUE = {"true": True, "1": True, "false": False, "0": False}


def _bool(el: _Element, name: str) -> bool:
    raw = el.attrs[name]
    value = _TRUE.get(raw.strip().lower())
    if value is None:
        el.fail(f"{name} must be true or false, not {_q(raw)}")
    return value


def _int(el: _Element, name: str, lo: int, hi: int) -> int:
    raw = el.attrs[name]
    text = raw.strip()
    if not _INT.fullmatch(text) or not lo <= int(text) <= hi:
        el.fail(f"{name} must be a whole number from {lo} to {hi}, not {_q(raw)}")
    return int(text)


def _required(el: _Element, name: str) -> str:
    value = el.attrs.get(name)
    if value is None or not value.strip():
        el.fail(f"<{el.tag}> is missing its {_q(name)} attribute")
    return value.strip()


def _column(el: _Element, table: Table, name: str) -> Column:
    column = table.column(name)
    if column is None:
        el.fail(f"table {_q(table.name)} has no column {_q(name)}")
    return column


AGGREGATION = "aggregation (aggregate, groupby, alias orders) is not supported"

# --------------------------------------------------------------------------------------------
# Operators (their names, types, values and targets are in ``fieldsync.query.operators``)


def _points_at(table: Table, column: Column) -> frozenset[str] | None:
    """The tables an id column refers to, or None when nothing says."""
    if column.type is T.LOOKUP:
        return frozenset(column.targets)
    if column.type is T.UNIQUEIDENTIFIER and column.name == table.primary_id:
        return frozenset({table.name})
    return None


# --------------------------------------------------------------------------------------------
# The tree → the AST


@dataclass(eq=False)
class _LinkInfo:
    table: Table
    alias: str
    type: LinkType
    exists: bool  # link-type exists / in: a semi-join at the entity level
    scope: dict[str, Table]  # the joined aliases its own conditions may name


@dataclass
class _Body:
    columns: list[str] = field(default_factory=list)
    all_columns: bool = False
    filters: list[Node] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)


_FETCH_ATTRS = frozenset(
    {
        "top",
        "count",
        "page",
        "paging-cookie",
        "distinct",
        "returntotalrecordcount",
        "aggregate",
        "aggregatelimit",
        "mapping",
        "no-lock",
        "version",
        "output-format",
        "latematerialize",
        "useraworderby",
        "options",
        "datasource",
    }
)
_OUTPUT_FORMATS = frozenset({"xml-ado", "xml-auto", "xml-elements", "xml-raw", "xml-platform"})
_LINK_ATTRS = frozenset({"name", "from", "to", "alias", "link-type", "intersect", "visible"})
_LINK_TYPES = {
    "inner": LinkType.INNER,
    "outer": LinkType.OUTER,
    "any": LinkType.ANY,
    "not any": LinkType.NOT_ANY,
    "all": LinkType.ALL,
    "not all": LinkType.NOT_ALL,
    "exists": LinkType.ANY,
    "in": LinkType.ANY,
}
_JOINS = frozenset({LinkType.INNER, LinkType.OUTER})
_FILTER_ATTRS = frozenset(
    {
        "type",
        "hint",
        "isquickfindfields",
        "overridequickfindrecordlimitenabled",
        "overridequickfindrecordlimitdisabled",
    }
)
_CONDITION_ATTRS = frozenset(
    {
        "attribute",
        "operator",
        "value",
        "entityname",
        "valueof",
        "uiname",
        "uitype",
        "uihidden",
    }
)
_AGGREGATE_ATTRS = frozenset(
    {
        "aggregate",
        "groupby",
        "dategrouping",
        "usertimezone",
        "rowaggregate",
        "distinct",
    }
)


class _Reader:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.links: dict[int, _LinkInfo] = {}
        self.explicit: set[str] = set()
        self.used: set[str] = set()
        self.root = ""
        self.count = 0
        self.conditions = 0

    # -- <fetch> -----------------------------------------------------------------------------

    def fetch(self, el: _Element) -> Query:
        if el.tag != "fetch":
            el.fail(f"the root element must be <fetch>, not <{el.tag}>")
        for name in el.attrs:
            if name not in _FETCH_ATTRS:
                el.fail(f"<fetch> has no attribute {_q(name)}")
        a = el.attrs
        if "aggregate" in a and _bool(el, "aggregate"):
            el.fail(AGGREGATION)
        if "aggregatelimit" in a:
            el.fail(AGGREGATION)
        if "datasource" in a:
            el.fail("datasource (long-term retention) is not supported")
        if "mapping" in a and a["mapping"] != "logical":
            el.fail(f"mapping must be 'logical', not {_q(a['mapping'])}")
        if "output-format" in a and a["output-format"] not in _OUTPUT_FORMATS:
            el.fail(f"output-format {_q(a['output-format'])} is not a FetchXML output format")
        for flag in ("no-lock", "latematerialize", "useraworderby"):
            if flag in a:
                _bool(el, flag)
        top = _int(el, "top", 1, MAX_ROWS) if "top" in a else None
        page_size = _int(el, "count", 1, MAX_ROWS) if "count" in a else None
        page = _int(el, "page", 1, MAX_PAGE) if "page" in a else None
        cookie = a.get("paging-cookie")
        if top is not None and (page_size is not None or page is not None or cookie is not None):
            el.fail("top cannot be used with paging (count, page, paging-cookie)")
        distinct = _bool(el, "distinct") if "distinct" in a else False
        count = _bool(el, "returntotalrecordcount") if "returntotalrecordcount" in a else False
        if top is not None and count:
            el.fail("top cannot be used with returntotalrecordcount")

        el.no_text()
        entities = [c for c in el.children if c.tag == "entity"]
        for child in el.children:
            if child.tag != "entity":
                child.fail(f"<{child.tag}> is not allowed inside <fetch>")
        if not entities:
            el.fail("<fetch> needs one <entity>")
        if len(entities) > 1:
            entities[1].fail("<fetch> takes exactly one <entity>")
        entity = entities[0]
        entity.only(("name",))
        name = _required(entity, "name")
        table = self._table(entity, name)

        self._collect_aliases(entity)
        self.root = table.name
        scope: dict[str, Table] = {}
        self._declare_links(entity, scope, in_filter=False)

        body = self._body(entity, table, scope, None, semi=False)
        return Query(
            table=table.name,
            columns=None if body.all_columns or not body.columns else _unique(body.columns),
            filter=all_of(body.filters) if body.filters else None,
            links=tuple(body.links),
            orders=tuple(body.orders),
            top=top,
            page=page,
            page_size=page_size,
            paging_cookie=cookie,
            distinct=distinct,
            count=count,
        )

    def _table(self, el: _Element, name: str) -> Table:
        table = self.schema.tables.get(name)
        if table is None:
            el.fail(f"table {_q(name)} does not exist")
        return table

    # -- first pass: tables and aliases of the link-entities ----------------------------------

    def _collect_aliases(self, el: _Element) -> None:
        for child in el.children:
            if child.tag == "link-entity":
                alias = child.attrs.get("alias")
                if alias is not None:
                    self.explicit.add(alias)
            if child.tag in ("link-entity", "filter"):
                self._collect_aliases(child)

    def _declare_links(self, el: _Element, scope: dict[str, Table], *, in_filter: bool) -> None:
        """Give every link-entity below ``el`` its table, alias, type and scope."""
        for child in el.children:
            if child.tag == "filter":
                self._declare_links(child, scope, in_filter=True)
            elif child.tag == "link-entity":
                info = self._declare(child, scope, in_filter=in_filter)
                self._declare_links(child, info.scope, in_filter=False)

    def _declare(self, el: _Element, scope: dict[str, Table], *, in_filter: bool) -> _LinkInfo:
        self.count += 1
        if self.count > MAX_LINKS:
            el.fail(f"a query can have at most {MAX_LINKS} <link-entity> elements")
        table = self._table(el, _required(el, "name"))
        raw = el.attrs.get("link-type")
        if raw is None:
            link_type = LinkType.INNER
        elif raw == "matchfirstrowusingcrossapply":
            el.fail("link-type 'matchfirstrowusingcrossapply' is not supported")
        elif raw in _LINK_TYPES:
            link_type = _LINK_TYPES[raw]
        else:
            allowed = ", ".join(_LINK_TYPES)
            el.fail(f"link-type {_q(raw)} is not one of {allowed}")
        exists = raw in ("exists", "in")
        if in_filter and link_type in _JOINS:
            el.fail(
                "a <link-entity> inside a <filter> needs link-type any, not any, all or not all"
            )
        if not in_filter and not exists and link_type not in _JOINS:
            el.fail(f"link-type {_q(str(raw))} is only allowed on a <link-entity> in a <filter>")
        alias = el.attrs.get("alias")
        if alias is not None:
            if not _ALIAS.fullmatch(alias):
                el.fail(
                    f"alias {_q(alias)} is not valid: use letters, digits and underscores, "
                    "starting with a letter or underscore (at most 100)"
                )
            if alias in self.used:
                el.fail(f"alias {_q(alias)} is used by another <link-entity>")
        else:
            alias = table.name
            n = 0
            while alias in self.used or alias in self.explicit or alias == self.root:
                n += 1
                alias = f"{table.name}{n}"
        self.used.add(alias)
        if link_type in _JOINS and not exists:
            scope[alias] = table
            own = scope
        else:
            own = {}
        info = _LinkInfo(table, alias, link_type, exists, own)
        self.links[id(el)] = info
        return info

    # -- second pass: bodies ----------------------------------------------------------------

    def _body(
        self,
        el: _Element,
        table: Table,
        scope: dict[str, Table],
        alias: str | None,
        *,
        semi: bool,
    ) -> _Body:
        """The children of an <entity> or <link-entity>. ``semi``: inside a semi-join, where
        no column can be returned or ordered."""
        body = _Body()
        el.no_text()
        for child in el.children:
            tag = child.tag
            if tag in ("attribute", "all-attributes", "order") and semi:
                child.fail(
                    f"<{tag}> is not allowed in a <link-entity> of link-type any, not any, all, "
                    "not all, exists or in (or below one): such a link returns no columns"
                )
            if tag == "attribute":
                body.columns.append(self._attribute(child, table))
            elif tag == "all-attributes":
                child.only(())
                child.no_children()
                body.all_columns = True
            elif tag == "order":
                body.orders.append(self._order(child, table, scope, alias))
            elif tag == "filter":
                node = self._filter(child, table, scope, alias)
                if node is not None:
                    body.filters.append(node)
            elif tag == "link-entity":
                info = self.links[id(child)]
                link = self._link(child, table, info, semi=semi)
                if info.exists:
                    body.filters.append(LinkFilter(link))
                else:
                    body.links.append(link)
            else:
                child.fail(f"<{tag}> is not allowed inside <{el.tag}>")
        return body

    def _attribute(self, el: _Element, table: Table) -> str:
        for name in el.attrs:
            if name in _AGGREGATE_ATTRS:
                el.fail(AGGREGATION)
        el.only(("name", "alias"))
        el.no_children()
        alias = el.attrs.get("alias")
        if alias is not None and not _ALIAS.fullmatch(alias):
            el.fail(f"alias {_q(alias)} is not valid")
        return _column(el, table, _required(el, "name")).name

    def _order(
        self, el: _Element, table: Table, scope: dict[str, Table], alias: str | None
    ) -> Order:
        el.only(("attribute", "alias", "descending", "entityname"))
        el.no_children()
        if "attribute" not in el.attrs and "alias" in el.attrs:
            el.fail(f"ordering by an alias: {AGGREGATION}")
        if "alias" in el.attrs:
            el.fail("<order> takes attribute or alias, not both")
        entity, target = self._entity(el, table, scope, alias)
        column = _column(el, target, _required(el, "attribute"))
        if column.type in UNORDERABLE:
            el.fail(f"cannot order by {target.name}.{column.name} (type {column.type.value})")
        descending = _bool(el, "descending") if "descending" in el.attrs else False
        return Order(column.name, descending, entity)

    def _entity(
        self, el: _Element, table: Table, scope: dict[str, Table], alias: str | None
    ) -> tuple[str | None, Table]:
        """Resolve an ``entityname`` attribute: (alias or None, its table)."""
        name = el.attrs.get("entityname")
        if name is None or name == alias:
            return None, table
        target = scope.get(name)
        if target is None:
            known = ", ".join(sorted(scope)) or "none"
            el.fail(
                f"entityname {_q(name)} is not the alias of an inner or outer <link-entity> "
                f"of this query (known: {known})"
            )
        return name, target

    def _link(self, el: _Element, parent: Table, info: _LinkInfo, *, semi: bool) -> Link:
        el.only(_LINK_ATTRS)
        for flag in ("intersect", "visible"):
            if flag in el.attrs:
                _bool(el, flag)
        table = info.table
        if "from" not in el.attrs:
            el.fail(f"<link-entity> is missing its 'from' attribute (the {table.name} column)")
        if "to" not in el.attrs:
            el.fail(f"<link-entity> is missing its 'to' attribute (the {parent.name} column)")
        from_col = _column(el, table, el.attrs["from"].strip())
        to_col = _column(el, parent, el.attrs["to"].strip())
        self._check_join(el, table, from_col, parent, to_col)
        inner_semi = semi or info.type not in _JOINS or info.exists
        body = self._body(el, table, info.scope, info.alias, semi=inner_semi)
        columns: tuple[str, ...] | None
        if inner_semi:
            columns = ()
        elif body.all_columns:
            columns = None
        else:
            columns = _unique(body.columns)
        return Link(
            table=table.name,
            from_column=from_col.name,
            to_column=to_col.name,
            alias=info.alias,
            type=info.type,
            columns=columns,
            filter=all_of(body.filters) if body.filters else None,
            links=tuple(body.links),
            orders=tuple(body.orders),
        )

    @staticmethod
    def _check_join(
        el: _Element, table: Table, from_col: Column, parent: Table, to_col: Column
    ) -> None:
        left = f"{table.name}.{from_col.name}"
        right = f"{parent.name}.{to_col.name}"
        for col, where in ((from_col, left), (to_col, right)):
            if col.type in (T.MULTICHOICE, T.FILE, T.IMAGE, T.MEMO):
                el.fail(f"cannot join on {where} (type {col.type.value})")
        if not same_family(from_col.type, to_col.type):
            el.fail(
                f"cannot join {left} ({from_col.type.value}) to {right} ({to_col.type.value}): "
                "they hold different kinds of values"
            )
        sides = ((table, from_col, parent, to_col), (parent, to_col, table, from_col))
        for lookup_table, lookup, other_table, other in sides:
            if (
                lookup.type is T.LOOKUP
                and other.type is T.UNIQUEIDENTIFIER
                and other.name == other_table.primary_id
                and other_table.name not in lookup.targets
            ):
                el.fail(
                    f"cannot join {lookup_table.name}.{lookup.name} (which points at "
                    f"{', '.join(lookup.targets)}) to {other_table.name}.{other.name}"
                )

    # -- filters and conditions ---------------------------------------------------------------

    def _filter(
        self, el: _Element, table: Table, scope: dict[str, Table], alias: str | None
    ) -> Node | None:
        el.only(_FILTER_ATTRS)
        kind = el.attrs.get("type", "and")
        if kind not in ("and", "or"):
            el.fail(f"filter type must be 'and' or 'or', not {_q(kind)}")
        if "hint" in el.attrs and el.attrs["hint"] != "union":
            el.fail(f"filter hint {_q(el.attrs['hint'])} is not known (only 'union')")
        for flag in (
            "isquickfindfields",
            "overridequickfindrecordlimitenabled",
            "overridequickfindrecordlimitdisabled",
        ):
            if flag in el.attrs:
                _bool(el, flag)
        el.no_text()
        items: list[Node] = []
        for child in el.children:
            if child.tag == "condition":
                items.append(self._condition(child, table, scope, alias))
            elif child.tag == "filter":
                node = self._filter(child, table, scope, alias)
                if node is not None:
                    items.append(node)
            elif child.tag == "link-entity":
                info = self.links[id(child)]
                items.append(LinkFilter(self._link(child, table, info, semi=True)))
            else:
                child.fail(f"<{child.tag}> is not allowed inside <filter>")
        if not items:
            return None
        return all_of(items) if kind == "and" else any_of(items)

    def _condition(
        self, el: _Element, table: Table, scope: dict[str, Table], alias: str | None
    ) -> Node:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            el.fail(f"the query has more than {MAX_CONDITIONS} conditions")
        for name in el.attrs:
            if name in ("aggregate", "rowaggregate", "alias"):
                el.fail(f"a condition on an aggregate: {AGGREGATION}")
        el.only(_CONDITION_ATTRS)
        op_name = _required(el, "operator")
        entity, target = self._entity(el, table, scope, alias)
        column = _column(el, target, _required(el, "attribute"))
        where = f"{target.name}.{column.name}"

        fixed: int | None = None
        between: bool | None = None
        if op_name in FETCHXML_ALIASES:
            op, fixed = FETCHXML_ALIASES[op_name]
        elif op_name in FETCHXML_BETWEEN:
            between = FETCHXML_BETWEEN[op_name]
            op = Op.GE
        elif op_name in BY_FETCHXML:
            op = BY_FETCHXML[op_name]
        elif op_name in FETCHXML_UNSUPPORTED:
            el.fail(f"operator {_q(op_name)} is not supported")
        else:
            el.fail(f"{_q(op_name)} is not a FetchXML condition operator")

        usable = column.type in BETWEEN_TYPES if between is not None else allows(op, column.type)
        if not usable:
            el.fail(f"operator {_q(op_name)} cannot be used on {where} (type {column.type.value})")
        need = spec(op).targets
        if need:
            points = _points_at(target, column)
            if points is not None and not points & need:
                el.fail(
                    f"operator {_q(op_name)} needs a column that points at "
                    f"{' or '.join(sorted(need))}; {where} points at {', '.join(sorted(points))}"
                )

        values = self._values(el)
        if "valueof" in el.attrs:
            if values is not None:
                el.fail("a condition takes valueof or a value, not both")
            return self._compare(el, op, op_name, target, column, entity)

        kind = spec(op).values
        if fixed is not None or (between is None and kind is Values.NONE):
            if values is not None:
                el.fail(f"operator {_q(op_name)} takes no value")
            return Condition(column.name, op, fixed, entity)
        if values is None:
            el.fail(f"operator {_q(op_name)} needs a value")
        listed, items = values

        if between is not None:
            if not listed or len(items) != 2:
                el.fail(f"operator {_q(op_name)} needs two <value> elements")
            lo = self._typed(el, target, column, items[0])
            hi = self._typed(el, target, column, items[1])
            if between:  # not-between
                return any_of(
                    [
                        Condition(column.name, Op.LT, lo, entity),
                        Condition(column.name, Op.GT, hi, entity),
                    ]
                )
            return all_of(
                [
                    Condition(column.name, Op.GE, lo, entity),
                    Condition(column.name, Op.LE, hi, entity),
                ]
            )

        if kind is Values.CHOICES:
            return Condition(column.name, op, self._choices(el, target, column, items), entity)
        if kind is Values.LIST:
            if not listed:
                el.fail(f"operator {_q(op_name)} takes its values as <value> elements")
            typed = [self._typed(el, target, column, item) for item in items]
            return Condition(column.name, op, tuple(dict.fromkeys(typed)), entity)

        if len(items) != 1:
            el.fail(f"operator {_q(op_name)} takes one value, not {len(items)}")
        raw = items[0]
        value: Any
        if spec(op).like is not None:
            value = raw
        elif kind in (Values.DAYS, Values.HOURS):
            limit = MAX_X_HOURS if kind is Values.HOURS else MAX_X_DAYS
            text = raw.strip()
            if not _INT.fullmatch(text) or not 1 <= int(text) <= limit:
                el.fail(
                    f"operator {_q(op_name)} needs a whole number from 1 to {limit}, not {_q(raw)}"
                )
            value = int(text)
        elif kind is Values.DAY:
            text = raw.strip()
            try:
                if not _DATE.fullmatch(text):
                    raise ValueError
                value = dt.date.fromisoformat(text)
            except ValueError:
                el.fail(f"operator {_q(op_name)} needs a date (YYYY-MM-DD), not {_q(raw)}")
        else:
            value = self._typed(el, target, column, raw)
        return Condition(column.name, op, value, entity)

    def _values(self, el: _Element) -> tuple[bool, list[str]] | None:
        """(given as <value> elements?, the texts), or None when there is no value."""
        el.no_text()
        items: list[str] = []
        for child in el.children:
            if child.tag != "value":
                child.fail(f"<{child.tag}> is not allowed inside <condition>")
            child.only(("uiname", "uitype"))
            if child.children:
                grand = child.children[0]
                grand.fail(f"<{grand.tag}> is not allowed inside <value>")
            items.append(child.content())
        if "value" in el.attrs:
            if items:
                el.fail("a condition takes a value attribute or <value> elements, not both")
            return False, [el.attrs["value"]]
        return (True, items) if items else None

    def _compare(
        self,
        el: _Element,
        op: Op,
        op_name: str,
        table: Table,
        column: Column,
        entity: str | None,
    ) -> ColumnCompare:
        other_name = el.attrs["valueof"].strip()
        if op not in COMPARISONS or op_name in FETCHXML_BETWEEN:
            el.fail(f"valueof works with eq, ne, gt, ge, lt and le, not {_q(op_name)}")
        if "." in other_name:
            el.fail(
                f"valueof {_q(other_name)}: comparing with a column of another table is "
                "not supported"
            )
        other = _column(el, table, other_name)
        if not allows(op, other.type) or not same_family(column.type, other.type):
            el.fail(
                f"cannot compare {table.name}.{column.name} ({column.type.value}) with "
                f"{table.name}.{other.name} ({other.type.value}) using {_q(op_name)}"
            )
        return ColumnCompare(column.name, op, other.name, entity)

    @staticmethod
    def _typed(el: _Element, table: Table, column: Column, raw: str) -> Any:
        """One condition value, converted from text to the column's type."""
        t = column.type
        value: Any = raw if t in (T.STRING, T.MEMO) else raw.strip()
        expected = ""
        if t in (T.INTEGER, T.BIGINT, T.CHOICE):
            if not _INT.fullmatch(value):
                expected = "a whole number"
            else:
                value = int(value)
        elif t in (T.DECIMAL, T.MONEY, T.FLOAT):
            if not _NUMBER.fullmatch(value):
                expected = "a number"
            elif t is T.FLOAT:
                value = float(value)
        elif t is T.BOOLEAN:
            flag = _TRUE.get(value.lower())
            if flag is None:
                expected = "true, false, 1 or 0"
            value = flag
        elif t is T.LOOKUP:
            value = (value, column.targets[0])
        if expected:
            el.fail(f"the value for {table.name}.{column.name} must be {expected}, not {_q(raw)}")
        try:
            coerced = make_coercer(table, column)(value)
        except ValidationError as exc:
            el.fail(f"bad value for {exc.message}")
        return coerced[0] if t is T.LOOKUP else coerced

    @staticmethod
    def _choices(el: _Element, table: Table, column: Column, items: list[str]) -> tuple[int, ...]:
        numbers: list[int] = []
        for raw in items:
            for part in raw.split(","):
                text = part.strip()
                if not _INT.fullmatch(text):
                    el.fail(
                        f"the values for {table.name}.{column.name} must be whole numbers, "
                        f"not {_q(raw)}"
                    )
                numbers.append(int(text))
        try:
            chosen = make_coercer(table, column)(numbers)
        except ValidationError as exc:
            el.fail(f"bad value for {exc.message}")
        return tuple(chosen or ())


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
