"""``RelationshipDefinitions``: one-to-many relationships (a new lookup column) and
many-to-many relationships (a new intersect table), created through the store's runtime DDL,
and read back by schema name or metadata id.

One-to-many relationships are named as Dataverse and the SDK name them,
``<referenced>_<referencing>_<lookup>``; schema names compare without regard to case (fieldsync's
logical names are lowercase). Deleting a relationship is not served yet (a clear 501).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fieldsync.errors import BadRequest, NotFound
from fieldsync.schema.model import Column, ColumnType, Relationship, RelationshipKind, check_name
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.metadata import NAMESPACE, _customizer, label_text
from fieldsync.webapi.protocol import Segment

CRM = "Microsoft.Dynamics.CRM."
_SCHEMA_NAME = re.compile(r"^\s*SchemaName\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def relationship_id(rel: Relationship) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"relationship:{rel.name}")


def relationship_json(call: Call, rel: Relationship) -> dict[str, Any]:
    if rel.kind is RelationshipKind.MANY_TO_MANY:
        return {
            "@odata.type": f"#{CRM}ManyToManyRelationshipMetadata",
            "MetadataId": str(relationship_id(rel)),
            "SchemaName": rel.name,
            "RelationshipType": "ManyToManyRelationship",
            "Entity1LogicalName": rel.referenced_table,
            "Entity2LogicalName": rel.referencing_table,
            "IntersectEntityName": rel.intersect_table,
        }
    referenced = call.platform.store.schema.table(rel.referenced_table)
    return {
        "@odata.type": f"#{CRM}OneToManyRelationshipMetadata",
        "MetadataId": str(relationship_id(rel)),
        "SchemaName": rel.name,
        "RelationshipType": "OneToManyRelationship",
        "ReferencedEntity": rel.referenced_table,
        "ReferencedAttribute": referenced.primary_id,
        "ReferencingEntity": rel.referencing_table,
        "ReferencingAttribute": rel.referencing_column,
        "ReferencingEntityNavigationPropertyName": rel.referencing_column,
    }


def _find(call: Call, segments: list[Segment]) -> Relationship:
    key = segments[0].key
    if key is None or key.pairs is not None:
        raise BadRequest("name the relationship by its MetadataId: RelationshipDefinitions(<id>)")
    for rel in call.platform.store.schema.relationships.values():
        if relationship_id(rel) == key.value:
            return rel
    raise NotFound(f"no relationship with MetadataId {key.value}", code="0x80060888")


def get(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    if segments[0].key is not None:
        return ODataResponse(200, relationship_json(call, _find(call, segments)))
    rels = list(call.platform.store.schema.relationships.values())
    wanted = req.params.get("$filter")
    if wanted is not None:
        match = _SCHEMA_NAME.match(wanted)
        if match is None:
            raise BadRequest("RelationshipDefinitions filters only by SchemaName eq '<name>'")
        name = match.group(1).replace("''", "'").lower()
        rels = [r for r in rels if r.name.lower() == name]
    return ODataResponse(200, {"value": [relationship_json(call, r) for r in rels]})


def create(call: Call, req: ODataRequest) -> ODataResponse:
    _customizer(call)
    body = req.json_object()
    kind = str(body.get("@odata.type", ""))
    store = call.platform.store
    if "OneToManyRelationshipMetadata" in kind:
        referencing = _name(body, "ReferencingEntity")
        referenced = _name(body, "ReferencedEntity")
        lookup = body.get("Lookup")
        if not isinstance(lookup, dict):
            raise BadRequest("a one-to-many relationship needs its Lookup attribute")
        column = check_name("column", _name(lookup, "SchemaName"))
        store.schema.table(referenced)
        store.add_column(
            referencing,
            Column(
                column,
                ColumnType.LOOKUP,
                display_name=label_text(lookup.get("DisplayName")) or referenced,
                description=label_text(lookup.get("Description")),
                targets=(referenced,),
            ),
        )
        name = f"{referenced}_{referencing}_{column}"
    elif "ManyToManyRelationshipMetadata" in kind:
        name = _name(body, "SchemaName")
        intersect = body.get("IntersectEntityName")
        store.create_many_to_many(
            name,
            _name(body, "Entity1LogicalName"),
            _name(body, "Entity2LogicalName"),
            intersect=intersect.lower() if isinstance(intersect, str) and intersect else None,
        )
    else:
        raise BadRequest(
            "@odata.type must be Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata or "
            "ManyToManyRelationshipMetadata"
        )
    rel = store.schema.relationships[name]
    link = req.link(f"RelationshipDefinitions({relationship_id(rel)})")
    return ODataResponse(204, None, {"OData-EntityId": link})


def _name(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must name a table or column")
    return value.lower()
