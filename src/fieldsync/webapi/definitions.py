"""Collections of definitions (tables, columns, keys, relationships, SDK messages) queried the
way rows are: ``$filter`` parsed by the OData parser over a *shape* (a table-like description
of the properties), evaluated in memory, then ``$select``.

Metadata filters use two things row filters do not: enum literals
(``OwnershipType eq Microsoft.Dynamics.CRM.OwnershipTypes'UserOwned'``) and properties of
complex values (``CanCreateAttributes/Value eq true``). :func:`flatten` rewrites both into
what the row parser reads (a string literal; a column ``cancreateattributes_value``), outside
string literals only, and refuses an enum member that does not exist."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from fieldsync.errors import BadRequest, Forbidden
from fieldsync.query.evaluate import matches
from fieldsync.query.odata import parse_filter
from fieldsync.schema.model import Column, ColumnType, Ownership, Schema, Table
from fieldsync.types import as_uuid
from fieldsync.webapi.message import Call, ODataRequest
from fieldsync.webapi.protocol import Key

T = ColumnType
CRM = "Microsoft.Dynamics.CRM."

ENUMS: dict[str, tuple[str, ...]] = {
    "OwnershipTypes": (
        "None",
        "UserOwned",
        "TeamOwned",
        "BusinessOwned",
        "OrganizationOwned",
        "BusinessParented",
        "Filtered",
    ),
    "RelationshipType": ("OneToManyRelationship", "ManyToManyRelationship", "Default"),
    "AttributeTypeCode": (
        "Boolean",
        "Customer",
        "DateTime",
        "Decimal",
        "Double",
        "Integer",
        "Lookup",
        "Memo",
        "Money",
        "Owner",
        "PartyList",
        "Picklist",
        "State",
        "Status",
        "String",
        "Uniqueidentifier",
        "CalendarRules",
        "Virtual",
        "BigInt",
        "ManagedProperty",
        "EntityName",
    ),
    "EntityKeyIndexStatus": ("Pending", "InProgress", "Active", "Failed"),
    "SecurityTypes": ("None", "Append", "ParentChild", "Pointer", "Inheritance"),
}
_TOKEN = re.compile(
    r"(?P<enum>Microsoft\.Dynamics\.CRM\.(?P<type>\w+)'(?P<member>[^']*)')"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<path>\b(?P<head>[A-Za-z_]\w*)/(?P<tail>[A-Za-z_]\w*)\b)"
)


def flatten(text: str, paths: Iterable[str] = ()) -> str:
    """``text`` with enum literals as strings and ``a/b`` property paths as ``a_b`` columns
    (only the paths in ``paths``, lowercase ``a_b``)."""
    known = {p.lower() for p in paths}

    def one(m: re.Match[str]) -> str:
        if m.group("enum"):
            kind, member = m.group("type"), m.group("member")
            members = ENUMS.get(kind)
            if members is None:
                raise BadRequest(f"unknown enum type {CRM}{kind} in $filter")
            if member not in members:
                raise BadRequest(
                    f"{member!r} is not a member of {CRM}{kind}; the members are "
                    f"{', '.join(members)}"
                )
            return f"'{member}'"
        if m.group("path"):
            flat = f"{m.group('head')}_{m.group('tail')}".lower()
            if flat in known:
                return flat
        return m.group(0)

    return _TOKEN.sub(one, text)


class Shape:
    """The filterable properties of one kind of definition and their types. ``paths`` are
    properties read through ``/`` (``CanCreateAttributes/Value``), each declared among the
    properties with ``_`` for ``/`` (``CanCreateAttributes_Value``)."""

    def __init__(
        self, name: str, properties: Mapping[str, ColumnType], paths: Iterable[str] = ()
    ) -> None:
        columns = {
            p.lower(): Column(p.lower(), t, max_length=4000 if t is T.STRING else None)
            for p, t in properties.items()
        }
        self.name = name
        self.paths = [p.replace("/", "_").lower() for p in paths]
        assert all(p in columns for p in self.paths), "a path needs its flattened property"
        self.table = Table(
            name, name, name, "metadataid", "", Ownership.NONE, columns=columns, custom=False
        )

    def row(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """``item`` as a row the filter evaluates: lowercase names, ids as UUIDs, the
        ``Value`` of complex properties flattened."""
        row: dict[str, Any] = {}
        for key, value in item.items():
            low = key.lower()
            if isinstance(value, dict) and "Value" in value:
                row[f"{low}_value"] = value["Value"]
            col = self.table.columns.get(low)
            if col is not None and col.type is T.UNIQUEIDENTIFIER and isinstance(value, str):
                value = _uuid_or_text(value)
            row[low] = value
        return row


def _uuid_or_text(value: str) -> uuid.UUID | str:
    try:
        return as_uuid(value)
    except ValueError:
        return value


def select(req: ODataRequest, item: dict[str, Any], always: Iterable[str] = ()) -> dict[str, Any]:
    """``$select`` on one definition: the named properties, plus ``MetadataId``, the type
    annotation, expanded properties and ``always``."""
    raw = req.params.get("$select")
    if not raw:
        return item
    wanted = {s.strip().lower() for s in raw.split(",") if s.strip()}
    expanded = {e.split("(")[0].strip().lower() for e in req.params.get("$expand", "").split(",")}
    keep = {"metadataid", "@odata.type"} | wanted | expanded | {a.lower() for a in always}
    return {k: v for k, v in item.items() if k.lower() in keep or k.split("@")[0].lower() in keep}


def query(
    req: ODataRequest,
    items: Iterable[dict[str, Any]],
    shape: Shape,
    schema: Schema,
    *,
    always: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """``$filter`` then ``$select`` over ``items``; a bad filter is a 400 naming why."""
    text = req.params.get("$filter")
    node = None
    if text:
        aliases = {k: v for k, v in req.params.items() if k.startswith("@")}
        node = parse_filter(flatten(text, shape.paths), shape.table, schema, aliases=aliases)
    out = []
    for item in items:
        if node is not None and not matches(node, shape.row(item)):
            continue
        out.append(select(req, item, always))
    return out


# -- identities and labels shared by every kind of definition ---------------------------------

NAMESPACE = uuid.UUID("6f1c2a8e-2b0e-4d6c-9a51-3c7f0e9b5d21")


def table_id(table: Table) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"table:{table.name}")


def column_id(table: Table, col: Column) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"column:{table.name}.{col.name}")


def label(text: str) -> dict[str, Any]:
    localized = {"Label": text, "LanguageCode": 1033}
    return {"LocalizedLabels": [localized] if text else [], "UserLocalizedLabel": localized}


def label_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for item in value.get("LocalizedLabels") or []:
            if isinstance(item, dict) and isinstance(item.get("Label"), str):
                return str(item["Label"])
    return ""


def managed(value: bool) -> dict[str, Any]:
    """A ``BooleanManagedProperty``: a flag with whether a solution may change it."""
    return {"Value": value, "CanBeChanged": False, "ManagedPropertyLogicalName": ""}


def customizer(call: Call) -> None:
    """Metadata writes need the System Administrator role (as table and column creation)."""
    if not call.caller.unrestricted:
        raise Forbidden(
            f"{call.caller.username or call.caller.user_id} may not change tables, columns, "
            "keys or relationships: that needs the System Administrator role"
        )


def only_metadata_id(key: Key | None, what: str) -> uuid.UUID:
    if key is None or key.pairs is not None or not isinstance(key.value, uuid.UUID):
        raise BadRequest(f"name the {what} by its MetadataId: ({what}(<guid>))")
    return key.value
