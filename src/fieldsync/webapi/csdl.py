"""``$metadata``: the service described in CSDL XML (OData 4.0), generated from the schema and
cached per schema (a schema change makes a new one).

As in Dataverse, one schema ``Microsoft.Dynamics.CRM`` (alias ``mscrm``): an abstract
``crmbaseentity``; per table an ``EntityType`` with its key, a ``Property`` per column (a
lookup is ``_<name>_value``), a ``NavigationProperty`` per lookup (single-valued, with its
``ReferentialConstraint``), per one-to-many relationship pointing at it (a collection) and
per many-to-many relationship, each with its ``Partner``; the entity container ``System``
with an ``EntitySet`` per table (and ``NavigationPropertyBinding``s), and the functions and
actions fieldsync serves. The metadata definitions themselves (``EntityDefinitions``,
``RelationshipDefinitions``) are not described here; they are served as JSON."""

from __future__ import annotations

import threading
import weakref
from xml.etree import ElementTree as ET

from fieldsync.schema.model import Column, ColumnType, RelationshipKind, Schema, Table

T = ColumnType
MEDIA_TYPE = "application/xml"
EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
EDM = "http://docs.oasis-open.org/odata/ns/edm"
NAMESPACE = "Microsoft.Dynamics.CRM"
ALIAS = "mscrm"
EDM_TYPES = {
    T.STRING: "Edm.String",
    T.MEMO: "Edm.String",
    T.INTEGER: "Edm.Int32",
    T.CHOICE: "Edm.Int32",
    T.BIGINT: "Edm.Int64",
    T.DECIMAL: "Edm.Decimal",
    T.MONEY: "Edm.Decimal",
    T.FLOAT: "Edm.Double",
    T.BOOLEAN: "Edm.Boolean",
    T.DATETIME: "Edm.DateTimeOffset",
    T.DATE: "Edm.Date",
    T.MULTICHOICE: "Edm.String",
    T.LOOKUP: "Edm.Guid",
    T.UNIQUEIDENTIFIER: "Edm.Guid",
    T.FILE: "Edm.Guid",
    T.IMAGE: "Edm.Guid",
}
# (name, bound to, parameters, return type); ``None`` bound = unbound.
Operation = tuple[str, str | None, tuple[tuple[str, str], ...], str | None]
FUNCTIONS: tuple[Operation, ...] = (
    ("WhoAmI", None, (), "mscrm.WhoAmIResponse"),
    (
        "RetrieveMetadataChanges",
        None,
        (("Query", "mscrm.EntityQueryExpression"), ("ClientVersionStamp", "Edm.String")),
        "mscrm.RetrieveMetadataChangesResponse",
    ),
)
ACTIONS: tuple[Operation, ...] = (
    ("CreateEntities", None, (("Entities", "Collection(mscrm.ComplexEntityMetadata)"),), None),
    ("BulkDelete", None, (("QuerySet", "Collection(mscrm.QueryExpression)"),), None),
    *(
        (
            name,
            "Collection(mscrm.crmbaseentity)",
            (("Targets", "Collection(mscrm.crmbaseentity)"),),
            f"mscrm.{name}Response",
        )
        for name in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")
    ),
    ("PublishMobileOfflineProfile", "mscrm.mobileofflineprofile", (), None),
)
COMPLEX = {
    "WhoAmIResponse": (
        ("BusinessUnitId", "Edm.Guid"),
        ("UserId", "Edm.Guid"),
        ("OrganizationId", "Edm.Guid"),
    ),
    "RetrieveMetadataChangesResponse": (("ServerVersionStamp", "Edm.String"),),
    "CreateMultipleResponse": (("Ids", "Collection(Edm.Guid)"),),
    "UpdateMultipleResponse": (),
    "UpsertMultipleResponse": (),
    "EntityQueryExpression": (),
    "ComplexEntityMetadata": (),
    "QueryExpression": (),
}

_cache: weakref.WeakKeyDictionary[Schema, bytes] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def document(schema: Schema) -> bytes:
    """The CSDL of ``schema``, built once per schema object (the store makes a new one for
    every schema generation)."""
    with _lock:
        cached = _cache.get(schema)
    if cached is not None:
        return cached
    built = build(schema)
    with _lock:
        _cache[schema] = built
    return built


def _sub(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, tag, dict(attrs))


class _Navigation:
    """Every navigation property of every table, with partners, worked out once."""

    def __init__(self, schema: Schema) -> None:
        # table -> [(name, target table, collection, partner, constraint column)]
        self.by_table: dict[str, list[tuple[str, str, bool, str, Column | None]]] = {
            t: [] for t in schema.tables
        }
        taken: dict[str, set[str]] = {
            t.name: {_property_name(c) for c in t.columns.values()} for t in schema.tables.values()
        }

        def add(
            table: str, name: str, target: str, many: bool, partner: str, col: Column | None
        ) -> bool:
            if name in taken[table]:
                return False
            taken[table].add(name)
            self.by_table[table].append((name, target, many, partner, col))
            return True

        named = {
            (r.referencing_table, r.referencing_column, r.referenced_table): r.schema
            for r in schema.relationships.values()
            if r.kind is RelationshipKind.ONE_TO_MANY
        }
        for table in schema.tables.values():
            for col in table.lookups():
                for target in col.targets:
                    if target not in schema.tables:
                        continue
                    single = col.navigation if not col.polymorphic else f"{col.name}_{target}"
                    collection = named.get(
                        (table.name, col.name, target), f"{table.name}_{col.name}"
                    )
                    if collection in taken[target] and target != table.name:
                        collection = f"{collection}_{table.name}"
                    if add(table.name, single, target, False, collection, col):
                        add(target, collection, table.name, True, single, None)
        for rel in schema.relationships.values():
            if rel.kind is not RelationshipKind.MANY_TO_MANY:
                continue
            a, b = rel.referenced_table, rel.referencing_table
            if a not in schema.tables or b not in schema.tables:
                continue
            add(a, rel.schema, b, True, rel.schema, None)
            if a != b:
                add(b, rel.schema, a, True, rel.schema, None)


def _property_name(col: Column) -> str:
    return f"_{col.name}_value" if col.type is T.LOOKUP else col.name


def _entity_type(parent: ET.Element, schema: Schema, table: Table, navs: _Navigation) -> None:
    et = _sub(parent, "EntityType", Name=table.name, BaseType="mscrm.crmbaseentity")
    key = _sub(et, "Key")
    _sub(key, "PropertyRef", Name=table.primary_id)
    for col in table.columns.values():
        attrs = {"Name": _property_name(col), "Type": EDM_TYPES[col.type]}
        if col.name == table.primary_id:
            attrs["Nullable"] = "false"
        if col.type in (T.STRING, T.MEMO) and col.max_length is not None:
            attrs["MaxLength"] = str(col.max_length)
        if col.type in (T.DECIMAL, T.MONEY):
            attrs["Scale"] = str(col.precision or 0)
        _sub(et, "Property", **attrs)
    for name, target, many, partner, lookup in navs.by_table[table.name]:
        type_name = f"mscrm.{target}"
        nav = _sub(
            et,
            "NavigationProperty",
            Name=name,
            Type=f"Collection({type_name})" if many else type_name,
            Partner=partner,
        )
        if lookup is not None and not lookup.polymorphic:
            _sub(
                nav,
                "ReferentialConstraint",
                Property=_property_name(lookup),
                ReferencedProperty=schema.table(target).primary_id,
            )


def _operation(parent: ET.Element, tag: str, spec: Operation) -> None:
    name, bound, params, returns = spec
    op = _sub(parent, tag, Name=str(name), IsBound="true" if bound else "false")
    if bound:
        _sub(
            op,
            "Parameter",
            Name="entityset" if "Collection" in str(bound) else "entity",
            Type=str(bound),
            Nullable="false",
        )
    for pname, ptype in params:
        _sub(op, "Parameter", Name=pname, Type=ptype)
    if returns:
        _sub(op, "ReturnType", Type=str(returns), Nullable="false")


def build(schema: Schema) -> bytes:
    ET.register_namespace("edmx", EDMX)
    root = ET.Element(f"{{{EDMX}}}Edmx", {"Version": "4.0"})
    services = ET.SubElement(root, f"{{{EDMX}}}DataServices")
    sch = ET.SubElement(services, "Schema", {"xmlns": EDM, "Namespace": NAMESPACE, "Alias": ALIAS})
    _sub(sch, "EntityType", Name="crmbaseentity", Abstract="true")
    navs = _Navigation(schema)
    tables = sorted(schema.tables.values(), key=lambda t: t.name)
    for table in tables:
        _entity_type(sch, schema, table, navs)
    for name, props in COMPLEX.items():
        ct = _sub(sch, "ComplexType", Name=name)
        if not props:
            ct.set("OpenType", "true")
        for pname, ptype in props:
            _sub(ct, "Property", Name=pname, Type=ptype)
    for spec in FUNCTIONS:
        _operation(sch, "Function", spec)
    for spec in ACTIONS:
        if spec[1] == "mscrm.mobileofflineprofile" and "mobileofflineprofile" not in schema:
            continue
        _operation(sch, "Action", spec)
    container = _sub(sch, "EntityContainer", Name="System")
    for table in tables:
        es = _sub(
            container,
            "EntitySet",
            Name=table.entity_set_name,
            EntityType=f"{NAMESPACE}.{table.name}",
        )
        for name, target, _, _, _ in navs.by_table[table.name]:
            _sub(
                es,
                "NavigationPropertyBinding",
                Path=name,
                Target=schema.table(target).entity_set_name,
            )
    for name, bound, _, _ in FUNCTIONS:
        if bound is None:
            _sub(
                container,
                "FunctionImport",
                Name=name,
                Function=f"{NAMESPACE}.{name}",
                IncludeInServiceDocument="false",
            )
    for name, bound, _, _ in ACTIONS:
        if bound is None:
            _sub(container, "ActionImport", Name=name, Action=f"{NAMESPACE}.{name}")
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body
