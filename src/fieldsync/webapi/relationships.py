"""``RelationshipDefinitions``: one-to-many relationships (a new lookup column) and
many-to-many relationships (a new intersect table), created and deleted through the store's
runtime DDL; read as a collection (``$filter`` on any listed property, enum literals
included), by ``MetadataId`` or ``SchemaName``, through the typed casts
``…/Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata`` and
``…/Microsoft.Dynamics.CRM.ManyToManyRelationshipMetadata``, and per table
(``EntityDefinitions(…)/OneToManyRelationships``, ``/ManyToOneRelationships``,
``/ManyToManyRelationships``).

A relationship keeps the schema name it was created with, in its case; ``SchemaName eq``
compares without regard to case, as Dataverse's metadata filters do. A one-to-many
relationship made without a name is ``<referenced>_<referencing>_<lookup>``.
"""

from __future__ import annotations

import uuid
from typing import Any

from fieldsync.errors import BadRequest, NotFound, SchemaError
from fieldsync.schema.builtin import builtin_relationships
from fieldsync.schema.model import (
    Column,
    ColumnType,
    Relationship,
    RelationshipKind,
    Schema,
    Table,
    check_name,
)
from fieldsync.webapi import definitions as defs
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Segment

T = ColumnType
CRM = defs.CRM
ONE_TO_MANY = f"{CRM}OneToManyRelationshipMetadata"
MANY_TO_MANY = f"{CRM}ManyToManyRelationshipMetadata"
PER_TABLE = ("OneToManyRelationships", "ManyToOneRelationships", "ManyToManyRelationships")
CASCADE = {
    "Assign": "NoCascade",
    "Delete": "RemoveLink",
    "Merge": "NoCascade",
    "Reparent": "NoCascade",
    "Share": "NoCascade",
    "Unshare": "NoCascade",
    "RollupView": "NoCascade",
}

SHAPE = defs.Shape(
    "relationshipdefinition",
    {
        "MetadataId": T.UNIQUEIDENTIFIER,
        "SchemaName": T.STRING,
        "RelationshipType": T.STRING,
        "IsCustomRelationship": T.BOOLEAN,
        "IsManaged": T.BOOLEAN,
        "IsValidForAdvancedFind": T.BOOLEAN,
        "SecurityTypes": T.STRING,
        "ReferencedEntity": T.STRING,
        "ReferencedAttribute": T.STRING,
        "ReferencingEntity": T.STRING,
        "ReferencingAttribute": T.STRING,
        "ReferencedEntityNavigationPropertyName": T.STRING,
        "ReferencingEntityNavigationPropertyName": T.STRING,
        "IsHierarchical": T.BOOLEAN,
        "Entity1LogicalName": T.STRING,
        "Entity2LogicalName": T.STRING,
        "Entity1IntersectAttribute": T.STRING,
        "Entity2IntersectAttribute": T.STRING,
        "Entity1NavigationPropertyName": T.STRING,
        "Entity2NavigationPropertyName": T.STRING,
        "IntersectEntityName": T.STRING,
        "IsCustomizable_Value": T.BOOLEAN,
    },
    paths=("IsCustomizable/Value",),
)


def relationship_id(rel: Relationship) -> uuid.UUID:
    return uuid.uuid5(defs.NAMESPACE, f"relationship:{rel.name}")


def _builtin() -> frozenset[str]:
    return frozenset(r.name for r in builtin_relationships())


def relationship_json(schema: Schema, rel: Relationship) -> dict[str, Any]:
    custom = rel.name not in _BUILTIN
    common = {
        "MetadataId": str(relationship_id(rel)),
        "SchemaName": rel.schema,
        "IsCustomRelationship": custom,
        "IsManaged": False,
        "IsValidForAdvancedFind": True,
        "IsCustomizable": defs.managed(custom),
        "SecurityTypes": "None",
        "IntroducedVersion": "1.0",
    }
    if rel.kind is RelationshipKind.MANY_TO_MANY:
        return {
            "@odata.type": f"#{MANY_TO_MANY}",
            **common,
            "RelationshipType": "ManyToManyRelationship",
            "Entity1LogicalName": rel.referenced_table,
            "Entity2LogicalName": rel.referencing_table,
            "Entity1IntersectAttribute": rel.referenced_column,
            "Entity2IntersectAttribute": rel.referencing_column,
            "Entity1NavigationPropertyName": rel.schema,
            "Entity2NavigationPropertyName": rel.schema,
            "IntersectEntityName": rel.intersect_table,
        }
    referencing = schema.tables.get(rel.referencing_table)
    column = referencing.columns.get(rel.referencing_column) if referencing else None
    referenced = schema.tables.get(rel.referenced_table)
    return {
        "@odata.type": f"#{ONE_TO_MANY}",
        **common,
        "RelationshipType": "OneToManyRelationship",
        "ReferencedEntity": rel.referenced_table,
        "ReferencedAttribute": referenced.primary_id if referenced else rel.referenced_column,
        "ReferencingEntity": rel.referencing_table,
        "ReferencingAttribute": rel.referencing_column,
        "ReferencedEntityNavigationPropertyName": rel.schema,
        "ReferencingEntityNavigationPropertyName": (
            column.navigation if column is not None else rel.referencing_column
        ),
        "IsHierarchical": rel.referenced_table == rel.referencing_table,
        "CascadeConfiguration": CASCADE,
    }


_BUILTIN = _builtin()


def _find(schema: Schema, segment: Segment) -> Relationship:
    key = segment.key
    if key is not None and key.pairs is not None:
        pairs = {k.lower(): v for k, v in key.pairs}
        name = pairs.get("schemaname")
        if len(pairs) != 1 or not isinstance(name, str):
            raise BadRequest("RelationshipDefinitions takes the key SchemaName='x' or a MetadataId")
        rel = schema.relationships.get(name.lower())
        if rel is None:
            raise NotFound(f"no relationship with SchemaName {name!r}", code="0x80060888")
        return rel
    wanted = defs.only_metadata_id(key, "RelationshipDefinitions")
    for rel in schema.relationships.values():
        if relationship_id(rel) == wanted:
            return rel
    raise NotFound(f"no relationship with MetadataId {wanted}", code="0x80060888")


def _cast(name: str) -> RelationshipKind:
    if name == ONE_TO_MANY:
        return RelationshipKind.ONE_TO_MANY
    if name == MANY_TO_MANY:
        return RelationshipKind.MANY_TO_MANY
    raise NotFound(
        f"no relationship type {name!r}; cast to {ONE_TO_MANY} or {MANY_TO_MANY}",
        code="0x80060888",
    )


def _collection(
    req: ODataRequest, schema: Schema, rels: list[Relationship], context: str
) -> ODataResponse:
    items = [relationship_json(schema, r) for r in rels]
    value = defs.query(req, items, SHAPE, schema)
    return ODataResponse(200, {"@odata.context": f"{req.root}/$metadata#{context}", "value": value})


def get(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    schema = call.platform.store.schema
    head, rest = segments[0], segments[1:]
    if len(rest) > 1:
        raise NotFound("no such relationship resource", code="0x80060888")
    if head.key is not None:
        rel = _find(schema, head)
        if rest and _cast(rest[0].name) is not rel.kind:
            raise NotFound(f"{rel.schema} is not a {rest[0].name}", code="0x80060888")
        body = defs.select(req, relationship_json(schema, rel))
        context = f"{req.root}/$metadata#RelationshipDefinitions/$entity"
        return ODataResponse(200, {"@odata.context": context, **body})
    rels = list(schema.relationships.values())
    context = "RelationshipDefinitions"
    if rest:
        kind = _cast(rest[0].name)
        rels = [r for r in rels if r.kind is kind]
        context += f"/{rest[0].name}"
    return _collection(req, schema, rels, context)


def of_table(req: ODataRequest, schema: Schema, table: Table, which: str) -> ODataResponse:
    """``EntityDefinitions(…)/OneToManyRelationships`` (the table is the one side),
    ``/ManyToOneRelationships`` (its lookups) and ``/ManyToManyRelationships``."""
    return _collection(req, schema, for_table(schema, table, which), f"EntityDefinitions/{which}")


def for_table(schema: Schema, table: Table, which: str) -> list[Relationship]:
    rels = schema.relationships.values()
    if which == "OneToManyRelationships":
        return [
            r
            for r in rels
            if r.kind is RelationshipKind.ONE_TO_MANY and r.referenced_table == table.name
        ]
    if which == "ManyToOneRelationships":
        return [
            r
            for r in rels
            if r.kind is RelationshipKind.ONE_TO_MANY and r.referencing_table == table.name
        ]
    return [
        r
        for r in rels
        if r.kind is RelationshipKind.MANY_TO_MANY
        and table.name in (r.referenced_table, r.referencing_table)
    ]


def create(call: Call, req: ODataRequest) -> ODataResponse:
    defs.customizer(call)
    body = req.json_object()
    kind = str(body.get("@odata.type", "")).lstrip("#")
    store = call.platform.store
    if kind.removeprefix(CRM) == "OneToManyRelationshipMetadata":
        referencing = _name(body, "ReferencingEntity")
        referenced = _name(body, "ReferencedEntity")
        lookup = body.get("Lookup")
        if not isinstance(lookup, dict):
            raise BadRequest("a one-to-many relationship needs its Lookup attribute")
        schema_name = _given(lookup, "SchemaName")
        column = check_name("column", schema_name.lower())
        target = store.schema.table(referenced)
        attribute = body.get("ReferencedAttribute")
        if attribute not in (None, "") and str(attribute).lower() != target.primary_id:
            raise BadRequest(
                f"ReferencedAttribute must be {target.primary_id}, the primary key of {referenced}"
            )
        name = body.get("SchemaName")
        if name is not None and not isinstance(name, str):
            raise BadRequest("SchemaName must be a string")
        level = (lookup.get("RequiredLevel") or {}).get("Value", "None")
        store.add_column(
            referencing,
            Column(
                column,
                T.LOOKUP,
                display_name=defs.label_text(lookup.get("DisplayName")) or referenced,
                description=defs.label_text(lookup.get("Description")),
                required=level in ("ApplicationRequired", "SystemRequired"),
                targets=(referenced,),
                schema_name=schema_name if schema_name != column else "",
            ),
            relationship=name or "",
        )
        rel_name = (name or f"{referenced}_{referencing}_{column}").lower()
    elif kind.removeprefix(CRM) == "ManyToManyRelationshipMetadata":
        rel_name = _given(body, "SchemaName")
        intersect = body.get("IntersectEntityName")
        store.create_many_to_many(
            rel_name,
            _name(body, "Entity1LogicalName"),
            _name(body, "Entity2LogicalName"),
            intersect=intersect.lower() if isinstance(intersect, str) and intersect else None,
        )
        rel_name = rel_name.lower()
    else:
        raise BadRequest(f"@odata.type must be {ONE_TO_MANY} or {MANY_TO_MANY}")
    rel = store.schema.relationships[rel_name]
    link = req.link(f"RelationshipDefinitions({relationship_id(rel)})")
    return ODataResponse(204, None, {"OData-EntityId": link})


def delete(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    """``DELETE RelationshipDefinitions(<id>)``: a one-to-many relationship takes its lookup
    column (and the values in it) with it; a many-to-many one its intersect table."""
    defs.customizer(call)
    if len(segments) != 1:
        raise NotFound("no such relationship resource", code="0x80060888")
    store = call.platform.store
    rel = _find(store.schema, segments[0])
    if rel.name in _BUILTIN:
        raise SchemaError(f"{rel.schema} is a system relationship and cannot be deleted")
    store.delete_relationship(rel.name)
    return ODataResponse(204)


def _given(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must be a name")
    return value


def _name(body: dict[str, Any], key: str) -> str:
    return _given(body, key).lower()
