"""``EntityDefinitions(…)/Keys``: alternate keys as definitions. Creating one builds its unique
index at once (``EntityKeyIndexStatus`` is ``Active`` as soon as the call returns; rows that
already share values make the call fail with a 400 instead of a ``Failed`` index); deleting
one drops the index. Upserts and ``{set}(col='v')`` addressing use the keys."""

from __future__ import annotations

import uuid
from typing import Any

from fieldsync.errors import BadRequest, NotFound
from fieldsync.schema.model import AlternateKey, ColumnType, Schema, Table, check_name
from fieldsync.webapi import definitions as defs
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Segment

T = ColumnType
KEY_TYPE = f"{defs.CRM}EntityKeyMetadata"
SHAPE = defs.Shape(
    "entitykeydefinition",
    {
        "MetadataId": T.UNIQUEIDENTIFIER,
        "LogicalName": T.STRING,
        "SchemaName": T.STRING,
        "EntityLogicalName": T.STRING,
        "EntityKeyIndexStatus": T.STRING,
        "IsManaged": T.BOOLEAN,
    },
)


def key_id(table: Table, key: AlternateKey) -> uuid.UUID:
    return uuid.uuid5(defs.NAMESPACE, f"key:{table.name}.{key.name}")


def key_json(table: Table, key: AlternateKey) -> dict[str, Any]:
    return {
        "@odata.type": f"#{KEY_TYPE}",
        "MetadataId": str(key_id(table, key)),
        "LogicalName": key.name,
        "SchemaName": key.schema,
        "EntityLogicalName": table.name,
        "KeyAttributes": list(key.columns),
        "DisplayName": defs.label(key.display_name or key.schema),
        "EntityKeyIndexStatus": "Active",
        "IsManaged": False,
        "IsCustomizable": defs.managed(True),
        "IsSynchronous": True,
        "IntroducedVersion": "1.0",
    }


def _find(table: Table, segment: Segment) -> AlternateKey:
    key = segment.key
    if key is not None and key.pairs is not None:
        pairs = {k.lower(): v for k, v in key.pairs}
        name = pairs.get("logicalname")
        if len(pairs) != 1 or not isinstance(name, str):
            raise BadRequest("Keys takes the key LogicalName='x' or a MetadataId")
        found = next((k for k in table.keys if k.name == name.lower()), None)
    else:
        wanted = defs.only_metadata_id(key, "Keys")
        found = next((k for k in table.keys if key_id(table, k) == wanted), None)
    if found is None:
        raise NotFound(f"{table.name} has no such key", code="0x80060888")
    return found


def get(req: ODataRequest, schema: Schema, table: Table, segment: Segment) -> ODataResponse:
    context = f"{req.root}/$metadata#EntityDefinitions({table.name})/Keys"
    if segment.key is not None:
        body = defs.select(req, key_json(table, _find(table, segment)))
        return ODataResponse(200, {"@odata.context": f"{context}/$entity", **body})
    items = [key_json(table, k) for k in table.keys]
    return ODataResponse(
        200, {"@odata.context": context, "value": defs.query(req, items, SHAPE, schema)}
    )


def create(call: Call, req: ODataRequest, table: Table) -> ODataResponse:
    defs.customizer(call)
    body = req.json_object()
    schema_name = body.get("SchemaName")
    if not isinstance(schema_name, str) or not schema_name:
        raise BadRequest("a key needs a SchemaName")
    columns = body.get("KeyAttributes")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest("KeyAttributes must be a list of column logical names")
    name = check_name("key", schema_name.lower())
    key = AlternateKey(
        name=name,
        columns=tuple(c.lower() for c in columns),
        schema_name=schema_name if schema_name != name else "",
        display_name=defs.label_text(body.get("DisplayName")),
    )
    store = call.platform.store
    store.create_key(table.name, key)
    table = store.schema.table(table.name)
    # the table by name: clients take the first GUID in parentheses as the key's id
    link = req.link(f"EntityDefinitions(LogicalName='{table.name}')/Keys({key_id(table, key)})")
    return ODataResponse(204, None, {"OData-EntityId": link})


def delete(call: Call, table: Table, segment: Segment) -> ODataResponse:
    defs.customizer(call)
    key = _find(table, segment)
    call.platform.store.delete_key(table.name, key.name)
    return ODataResponse(204)
