"""Tables, columns and relationships: the metadata every other part reads.

Pure data. A :class:`Table` carries its business columns and the Dataverse system columns,
which :func:`system_columns` adds according to the table's ownership type. Definitions
serialise to JSON (``to_json`` / ``from_json``) so the store can persist them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from fieldsync.errors import SchemaError, TableNotFound


class Ownership(enum.StrEnum):
    """Who owns the rows of a table (Dataverse ``OwnershipType``)."""

    NONE = "none"
    USER = "user"  # user or team
    BUSINESS = "business"
    ORGANIZATION = "organization"

    @property
    def code(self) -> int:
        """The Dataverse enum value: None 0, UserOwned 1, BusinessOwned 4, OrganizationOwned 8."""
        return {"none": 0, "user": 1, "business": 4, "organization": 8}[self.value]


class ColumnType(enum.StrEnum):
    STRING = "string"
    MEMO = "memo"
    INTEGER = "integer"
    BIGINT = "bigint"
    DECIMAL = "decimal"
    MONEY = "money"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    DATE = "date"
    CHOICE = "choice"
    MULTICHOICE = "multichoice"
    LOOKUP = "lookup"
    UNIQUEIDENTIFIER = "uniqueidentifier"
    FILE = "file"
    IMAGE = "image"


class RelationshipKind(enum.StrEnum):
    ONE_TO_MANY = "one_to_many"
    MANY_TO_MANY = "many_to_many"


# Dataverse's own limits for each type: (min, max) and default/maximum lengths or precisions.
INT_RANGE = (-2_147_483_648, 2_147_483_647)
BIGINT_RANGE = (-9_223_372_036_854_775_808, 9_223_372_036_854_775_807)
DECIMAL_RANGE = (Decimal("-100000000000"), Decimal("100000000000"))
MONEY_RANGE = (Decimal("-922337203685477"), Decimal("922337203685477"))
FLOAT_RANGE = (-100_000_000_000.0, 100_000_000_000.0)
STRING_MAX = 4000
MEMO_MAX = 1_048_576
DEFAULT_LENGTH = {ColumnType.STRING: 100, ColumnType.MEMO: 2000}
DEFAULT_PRECISION = {ColumnType.DECIMAL: 2, ColumnType.MONEY: 2, ColumnType.FLOAT: 2}
MAX_PRECISION = {ColumnType.DECIMAL: 10, ColumnType.MONEY: 4, ColumnType.FLOAT: 5}

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,48}$")
RESERVED_PREFIX = "fs_"


def check_name(kind: str, name: str) -> str:
    """Logical names are lowercase ASCII identifiers; ``fs_`` is reserved for the platform."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SchemaError(
            f"{kind} name {name!r} is not valid: use 1-49 lowercase letters, digits and "
            "underscores, starting with a letter"
        )
    if name.startswith(RESERVED_PREFIX):
        raise SchemaError(f"{kind} name {name!r} uses the reserved prefix {RESERVED_PREFIX!r}")
    return name


@dataclass(frozen=True, slots=True)
class Option:
    value: int
    label: str


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table.

    >>> Column("name", ColumnType.STRING, max_length=160, required=True)  # doctest: +ELLIPSIS
    Column(name='name', type=<ColumnType.STRING: 'string'>, ...)
    """

    name: str
    type: ColumnType
    display_name: str = ""
    description: str = ""
    required: bool = False
    max_length: int | None = None
    min_value: int | float | Decimal | None = None
    max_value: int | float | Decimal | None = None
    precision: int | None = None
    options: tuple[Option, ...] = ()
    targets: tuple[str, ...] = ()
    system: bool = False
    read_only: bool = False
    max_size_kb: int | None = None
    schema_name: str = ""  # the name as created, in its case (``new_Score``); "" = ``name``

    @property
    def polymorphic(self) -> bool:
        """A lookup to more than one table (customer, owner) also stores the target's table."""
        return self.type is ColumnType.LOOKUP and len(self.targets) > 1

    @property
    def type_column(self) -> str:
        """The companion column that holds a polymorphic lookup's target table."""
        return f"{self.name}type"

    def option_values(self) -> frozenset[int]:
        return frozenset(o.value for o in self.options)

    def label(self) -> str:
        return self.display_name or self.name

    @property
    def schema(self) -> str:
        """The schema name: the name in the case it was created with."""
        return self.schema_name or self.name

    @property
    def navigation(self) -> str:
        """A lookup's navigation property: its schema name, case-sensitive as in Dataverse
        (built-in lookups have lowercase ones, ``primarycontactid``)."""
        return self.schema

    def normalised(self) -> Column:
        """Fill defaults and check the definition; raise :class:`SchemaError` if it is wrong."""
        t = self.type
        if not isinstance(t, ColumnType):
            raise SchemaError(f"column {self.name!r}: unknown type {t!r}")
        if self.schema_name and self.schema_name.lower() != self.name:
            raise SchemaError(
                f"column {self.name!r}: the schema name {self.schema_name!r} must be the "
                "logical name in another case"
            )
        col = self
        if t in (ColumnType.STRING, ColumnType.MEMO):
            limit = STRING_MAX if t is ColumnType.STRING else MEMO_MAX
            length = self.max_length if self.max_length is not None else DEFAULT_LENGTH[t]
            if not 1 <= length <= limit:
                raise SchemaError(f"column {self.name!r}: max_length must be 1..{limit}")
            col = replace(col, max_length=length)
        elif self.max_length is not None:
            raise SchemaError(f"column {self.name!r}: max_length applies to string and memo only")
        if t in MAX_PRECISION:
            precision = self.precision if self.precision is not None else DEFAULT_PRECISION[t]
            if not 0 <= precision <= MAX_PRECISION[t]:
                raise SchemaError(
                    f"column {self.name!r}: precision must be 0..{MAX_PRECISION[t]} for {t.value}"
                )
            col = replace(col, precision=precision)
        elif self.precision is not None:
            raise SchemaError(f"column {self.name!r}: precision applies to decimal, money, float")
        if t in (ColumnType.CHOICE, ColumnType.MULTICHOICE):
            if not self.options:
                raise SchemaError(f"column {self.name!r}: a {t.value} column needs options")
            values = [o.value for o in self.options]
            if len(set(values)) != len(values):
                raise SchemaError(f"column {self.name!r}: option values must be unique")
        elif self.options:
            raise SchemaError(f"column {self.name!r}: options apply to choice columns only")
        if t is ColumnType.LOOKUP:
            if not self.targets:
                raise SchemaError(f"column {self.name!r}: a lookup needs a target table")
        elif self.targets:
            raise SchemaError(f"column {self.name!r}: targets apply to lookups only")
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise SchemaError(f"column {self.name!r}: min_value is above max_value")
        return col

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.value}
        for key in ("display_name", "description"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.schema_name and self.schema_name != self.name:
            out["schema_name"] = self.schema_name
        for key in ("required", "system", "read_only"):
            if getattr(self, key):
                out[key] = True
        for key in ("max_length", "precision", "max_size_kb"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("min_value", "max_value"):
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value) if isinstance(value, Decimal) else value
        if self.options:
            out["options"] = [{"value": o.value, "label": o.label} for o in self.options]
        if self.targets:
            out["targets"] = list(self.targets)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Column:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SchemaError(f"column definition has unknown keys: {sorted(unknown)}")
        if "name" not in data or "type" not in data:
            raise SchemaError("a column definition needs a name and a type")
        try:
            ctype = ColumnType(data["type"])
        except ValueError:
            allowed = ", ".join(t.value for t in ColumnType)
            raise SchemaError(
                f"unknown column type {data['type']!r}; use one of {allowed}"
            ) from None
        kwargs: dict[str, Any] = dict(data)
        kwargs["type"] = ctype
        if ctype in (ColumnType.DECIMAL, ColumnType.MONEY):
            for key in ("min_value", "max_value"):
                if kwargs.get(key) is not None:
                    kwargs[key] = Decimal(str(kwargs[key]))
        if "options" in kwargs:
            try:
                kwargs["options"] = tuple(
                    Option(int(o["value"]), str(o["label"])) for o in kwargs["options"]
                )
            except (KeyError, TypeError, ValueError):
                raise SchemaError(
                    f"column {data['name']!r}: options must be a list of {{value, label}}"
                ) from None
        if "targets" in kwargs:
            kwargs["targets"] = tuple(kwargs["targets"])
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Relationship:
    """A one-to-many relationship (made by a lookup) or a many-to-many one (an intersect table).

    One-to-many: ``referenced_table`` (the "one" side) is pointed at by ``referencing_column``
    of ``referencing_table``. Many-to-many: rows of ``referenced_table`` and
    ``referencing_table`` are linked through ``intersect_table``, whose columns are
    ``referenced_column`` and ``referencing_column``.
    """

    name: str
    kind: RelationshipKind
    referenced_table: str
    referencing_table: str
    referencing_column: str
    referenced_column: str = ""
    intersect_table: str = ""
    schema_name: str = ""  # as created, in its case; "" = ``name``

    @property
    def schema(self) -> str:
        return self.schema_name or self.name

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind.value,
            "referenced_table": self.referenced_table,
            "referencing_table": self.referencing_table,
            "referencing_column": self.referencing_column,
        }
        if self.referenced_column:
            out["referenced_column"] = self.referenced_column
        if self.intersect_table:
            out["intersect_table"] = self.intersect_table
        if self.schema_name and self.schema_name != self.name:
            out["schema_name"] = self.schema_name
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Relationship:
        return cls(**{**data, "kind": RelationshipKind(data["kind"])})


@dataclass(frozen=True, slots=True)
class AlternateKey:
    """An alternate key: columns whose values together name one row (a unique index).

    ``name`` is the logical (lowercase) name, ``schema_name`` the name as created."""

    name: str
    columns: tuple[str, ...]
    schema_name: str = ""
    display_name: str = ""

    @property
    def schema(self) -> str:
        return self.schema_name or self.name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "columns": list(self.columns)}
        if self.schema_name and self.schema_name != self.name:
            out["schema_name"] = self.schema_name
        if self.display_name:
            out["display_name"] = self.display_name
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlternateKey:
        return cls(
            name=data["name"],
            columns=tuple(data["columns"]),
            schema_name=data.get("schema_name", ""),
            display_name=data.get("display_name", ""),
        )


KEY_COLUMN_TYPES = frozenset(
    {
        ColumnType.STRING,
        ColumnType.INTEGER,
        ColumnType.BIGINT,
        ColumnType.DECIMAL,
        ColumnType.DATETIME,
        ColumnType.DATE,
        ColumnType.LOOKUP,
        ColumnType.CHOICE,
        ColumnType.UNIQUEIDENTIFIER,
    }
)


@dataclass(slots=True)
class Table:
    """A business table: identity, ownership, offline flag and columns (system ones included)."""

    name: str
    entity_set_name: str
    display_name: str
    primary_id: str
    primary_name: str
    ownership: Ownership
    offline: bool = False
    custom: bool = True
    description: str = ""
    intersect: bool = False
    columns: dict[str, Column] = field(default_factory=dict)
    schema_name: str = ""  # as created, in its case (``new_Product``); "" = ``name``
    keys: tuple[AlternateKey, ...] = ()

    @property
    def schema(self) -> str:
        return self.schema_name or self.name

    def key_named(self, columns: Iterable[str]) -> AlternateKey | None:
        """The alternate key made of exactly these columns, if one is defined."""
        wanted = frozenset(columns)
        return next((k for k in self.keys if frozenset(k.columns) == wanted), None)

    def column(self, name: str) -> Column | None:
        return self.columns.get(name)

    def lookups(self) -> Iterator[Column]:
        return (c for c in self.columns.values() if c.type is ColumnType.LOOKUP)

    @property
    def owned(self) -> bool:
        """Rows carry an ``ownerid`` (a user or a team)."""
        return self.ownership is Ownership.USER

    @property
    def has_business_unit(self) -> bool:
        return self.ownership in (Ownership.USER, Ownership.BUSINESS)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entity_set_name": self.entity_set_name,
            "display_name": self.display_name,
            "primary_id": self.primary_id,
            "primary_name": self.primary_name,
            "ownership": self.ownership.value,
            "offline": self.offline,
            "custom": self.custom,
            "description": self.description,
            "intersect": self.intersect,
            "columns": [c.to_json() for c in self.columns.values()],
            **(
                {"schema_name": self.schema_name} if self.schema_name not in ("", self.name) else {}
            ),
            **({"keys": [k.to_json() for k in self.keys]} if self.keys else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Table:
        columns = [Column.from_json(c) for c in data["columns"]]
        return cls(
            name=data["name"],
            entity_set_name=data["entity_set_name"],
            display_name=data["display_name"],
            primary_id=data["primary_id"],
            primary_name=data["primary_name"],
            ownership=Ownership(data["ownership"]),
            offline=bool(data.get("offline", False)),
            custom=bool(data.get("custom", True)),
            description=data.get("description", ""),
            intersect=bool(data.get("intersect", False)),
            columns={c.name: c for c in columns},
            schema_name=data.get("schema_name", ""),
            keys=tuple(AlternateKey.from_json(k) for k in data.get("keys", ())),
        )


STATE_OPTIONS = (Option(0, "Active"), Option(1, "Inactive"))
STATUS_OPTIONS = (Option(1, "Active"), Option(2, "Inactive"))
OWNER_TARGETS = ("systemuser", "team")


def system_columns(name: str, ownership: Ownership, primary_id: str) -> list[Column]:
    """The Dataverse system columns every table gets, according to its ownership type."""

    def sys(col: str, ctype: ColumnType, **kw: Any) -> Column:
        return Column(col, ctype, system=True, read_only=kw.pop("read_only", True), **kw)

    cols = [
        sys(primary_id, ColumnType.UNIQUEIDENTIFIER, display_name="Id", read_only=False),
        sys("createdon", ColumnType.DATETIME, display_name="Created On"),
        sys("modifiedon", ColumnType.DATETIME, display_name="Modified On"),
        sys("createdby", ColumnType.LOOKUP, display_name="Created By", targets=("systemuser",)),
        sys("modifiedby", ColumnType.LOOKUP, display_name="Modified By", targets=("systemuser",)),
    ]
    if ownership is Ownership.USER:
        cols.append(sys("ownerid", ColumnType.LOOKUP, display_name="Owner", targets=OWNER_TARGETS))
    if ownership in (Ownership.USER, Ownership.BUSINESS):
        cols.append(
            sys(
                "owningbusinessunit",
                ColumnType.LOOKUP,
                display_name="Owning Business Unit",
                targets=("businessunit",),
            )
        )
    cols += [
        sys(
            "statecode",
            ColumnType.CHOICE,
            display_name="Status",
            options=STATE_OPTIONS,
            read_only=False,
        ),
        sys(
            "statuscode",
            ColumnType.CHOICE,
            display_name="Status Reason",
            options=STATUS_OPTIONS,
            read_only=False,
        ),
        sys("versionnumber", ColumnType.BIGINT, display_name="Version Number"),
    ]
    return cols


def define_table(
    name: str,
    *,
    display_name: str = "",
    entity_set_name: str = "",
    primary_id: str = "",
    primary_name: str = "name",
    ownership: Ownership | str = Ownership.USER,
    offline: bool = False,
    custom: bool = True,
    description: str = "",
    columns: Iterable[Column] = (),
    schema_name: str = "",
) -> Table:
    """Build a checked table definition with its system columns.

    The primary name column is created as a 100-character string when ``columns`` lacks it.

    >>> t = define_table("new_site", display_name="Site")
    >>> t.entity_set_name, t.primary_id, t.primary_name, "ownerid" in t.columns
    ('new_sites', 'new_siteid', 'name', True)
    """
    check_name("table", name)
    if schema_name and schema_name.lower() != name:
        raise SchemaError(f"table {name!r}: the schema name {schema_name!r} must be the name")
    try:
        ownership = Ownership(ownership)
    except ValueError:
        allowed = ", ".join(o.value for o in Ownership)
        raise SchemaError(
            f"table {name!r}: unknown ownership {ownership!r}; use {allowed}"
        ) from None
    entity_set_name = entity_set_name or plural(name)
    check_name("entity set", entity_set_name)
    primary_id = check_name("primary id column", primary_id or f"{name}id")
    business = [c.normalised() for c in columns]
    names = [c.name for c in business]
    if len(set(names)) != len(names):
        raise SchemaError(f"table {name!r}: column names must be unique")
    if primary_name not in names:
        business.insert(
            0, Column(primary_name, ColumnType.STRING, display_name="Name").normalised()
        )
    system = system_columns(name, ownership, primary_id)
    if schema_name and f"{schema_name}Id".lower() == primary_id:
        system[0] = replace(system[0], schema_name=f"{schema_name}Id")  # new_ProductId
    for col in business:
        check_name("column", col.name)
        clash = [s.name for s in system if s.name == col.name]
        if clash:
            raise SchemaError(f"table {name!r}: {col.name!r} is a system column")
    pname = next(c for c in business if c.name == primary_name)
    if pname.type is not ColumnType.STRING:
        raise SchemaError(f"table {name!r}: the primary name column must be a string column")
    columns_by_name: dict[str, Column] = {}
    for col in [system[0], *business, *system[1:]]:
        columns_by_name[col.name] = col
        if col.polymorphic and col.type_column in names:
            raise SchemaError(f"table {name!r}: {col.type_column!r} is reserved for {col.name!r}")
    return Table(
        name=name,
        entity_set_name=entity_set_name,
        display_name=display_name or name,
        primary_id=primary_id,
        primary_name=primary_name,
        ownership=ownership,
        offline=offline,
        custom=custom,
        description=description,
        columns=columns_by_name,
        schema_name=schema_name if schema_name != name else "",
    )


def define_intersect(name: str, first: tuple[str, str], second: tuple[str, str]) -> Table:
    """The intersect table of a many-to-many relationship: (column, target table) twice."""
    check_name("table", name)
    cols = {
        f"{name}id": Column(f"{name}id", ColumnType.UNIQUEIDENTIFIER, system=True),
        first[0]: Column(first[0], ColumnType.LOOKUP, targets=(first[1],), required=True),
        second[0]: Column(second[0], ColumnType.LOOKUP, targets=(second[1],), required=True),
        "versionnumber": Column("versionnumber", ColumnType.BIGINT, system=True, read_only=True),
    }
    return Table(
        name=name,
        entity_set_name=plural(name),
        display_name=name,
        primary_id=f"{name}id",
        primary_name="",
        ownership=Ownership.NONE,
        intersect=True,
        columns=cols,
    )


def plural(name: str) -> str:
    """English plural of a logical name, as Dataverse makes entity set names."""
    if name.endswith(("s", "x", "z", "ch", "sh")):
        return name + "es"
    if name.endswith("y") and len(name) > 1 and name[-2] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


class Schema:
    """Every table and relationship, looked up by logical name or entity set name."""

    def __init__(self, tables: Iterable[Table] = (), relationships: Iterable[Relationship] = ()):
        self.tables: dict[str, Table] = {t.name: t for t in tables}
        self.relationships: dict[str, Relationship] = {r.name: r for r in relationships}

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise TableNotFound(name) from None

    def by_entity_set(self, entity_set: str) -> Table:
        for table in self.tables.values():
            if table.entity_set_name == entity_set:
                return table
        raise TableNotFound(entity_set)

    def __contains__(self, name: object) -> bool:
        return name in self.tables

    def relationships_of(self, table: str) -> list[Relationship]:
        return [
            r
            for r in self.relationships.values()
            if table in (r.referenced_table, r.referencing_table)
        ]

    def referencing(self, table: str) -> list[tuple[Table, Column]]:
        """Every (table, lookup column) that can point at ``table``."""
        return [(t, c) for t in self.tables.values() for c in t.lookups() if table in c.targets]
