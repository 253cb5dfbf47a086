"""``EntityDefinitions``: tables and their columns described the Dataverse way, and the
runtime DDL behind ``CreateEntities``, ``POST EntityDefinitions``, ``POST …/Attributes``,
``DELETE EntityDefinitions(<id>)`` and ``DELETE …/Attributes(<id>)``.

fieldsync has logical names only, so ``SchemaName`` is the logical name. ``MetadataId``s are
stable: a UUID derived from the table (and column) name. ``$filter`` on definitions takes
the same OData syntax as on rows, over the listed properties."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from fieldsync.errors import BadRequest, Forbidden, NotFound, SchemaError
from fieldsync.query.evaluate import matches
from fieldsync.query.odata import parse_filter
from fieldsync.schema.model import (
    Column,
    ColumnType,
    Option,
    Ownership,
    Schema,
    Table,
    define_table,
)
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Key, Segment

T = ColumnType
NAMESPACE = uuid.UUID("6f1c2a8e-2b0e-4d6c-9a51-3c7f0e9b5d21")
CRM = "Microsoft.Dynamics.CRM."
OWNERSHIP = {
    Ownership.NONE: "None",
    Ownership.USER: "UserOwned",
    Ownership.BUSINESS: "BusinessOwned",
    Ownership.ORGANIZATION: "OrganizationOwned",
}
ATTRIBUTE_TYPES = {
    T.STRING: ("String", "StringAttributeMetadata"),
    T.MEMO: ("Memo", "MemoAttributeMetadata"),
    T.INTEGER: ("Integer", "IntegerAttributeMetadata"),
    T.BIGINT: ("BigInt", "BigIntAttributeMetadata"),
    T.DECIMAL: ("Decimal", "DecimalAttributeMetadata"),
    T.MONEY: ("Money", "MoneyAttributeMetadata"),
    T.FLOAT: ("Double", "DoubleAttributeMetadata"),
    T.BOOLEAN: ("Boolean", "BooleanAttributeMetadata"),
    T.DATETIME: ("DateTime", "DateTimeAttributeMetadata"),
    T.DATE: ("DateTime", "DateTimeAttributeMetadata"),
    T.CHOICE: ("Picklist", "PicklistAttributeMetadata"),
    T.MULTICHOICE: ("Virtual", "MultiSelectPicklistAttributeMetadata"),
    T.LOOKUP: ("Lookup", "LookupAttributeMetadata"),
    T.UNIQUEIDENTIFIER: ("Uniqueidentifier", "UniqueIdentifierAttributeMetadata"),
    T.FILE: ("Virtual", "FileAttributeMetadata"),
    T.IMAGE: ("Virtual", "ImageAttributeMetadata"),
}
FROM_TYPE = {
    "StringAttributeMetadata": T.STRING,
    "MemoAttributeMetadata": T.MEMO,
    "IntegerAttributeMetadata": T.INTEGER,
    "BigIntAttributeMetadata": T.BIGINT,
    "DecimalAttributeMetadata": T.DECIMAL,
    "MoneyAttributeMetadata": T.MONEY,
    "DoubleAttributeMetadata": T.FLOAT,
    "BooleanAttributeMetadata": T.BOOLEAN,
    "DateTimeAttributeMetadata": T.DATETIME,
    "PicklistAttributeMetadata": T.CHOICE,
    "MultiSelectPicklistAttributeMetadata": T.MULTICHOICE,
    "FileAttributeMetadata": T.FILE,
    "ImageAttributeMetadata": T.IMAGE,
}


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


def entity_json(table: Table) -> dict[str, Any]:
    return {
        "@odata.type": f"#{CRM}EntityMetadata",
        "MetadataId": str(table_id(table)),
        "LogicalName": table.name,
        "SchemaName": table.name,
        "EntitySetName": table.entity_set_name,
        "LogicalCollectionName": table.entity_set_name,
        "CollectionSchemaName": table.entity_set_name,
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name or None,
        "DisplayName": label(table.display_name),
        "DisplayCollectionName": label(table.display_name),
        "Description": label(table.description),
        "OwnershipType": OWNERSHIP[table.ownership],
        "IsCustomEntity": table.custom,
        "IsIntersect": table.intersect,
        "IsPrivate": False,
        "IsAvailableOffline": table.offline,
        "IsActivity": False,
    }


def attribute_json(table: Table, col: Column) -> dict[str, Any]:
    kind, odata_type = ATTRIBUTE_TYPES[col.type]
    if col.name == "statecode":
        kind, odata_type = "State", "StateAttributeMetadata"
    elif col.name == "statuscode":
        kind, odata_type = "Status", "StatusAttributeMetadata"
    elif col.name == "ownerid":
        kind = "Owner"
    required = "SystemRequired" if col.name == table.primary_id else None
    out: dict[str, Any] = {
        "@odata.type": f"#{CRM}{odata_type}",
        "MetadataId": str(column_id(table, col)),
        "LogicalName": col.name,
        "SchemaName": col.name,
        "EntityLogicalName": table.name,
        "AttributeType": kind,
        "AttributeTypeName": {"Value": f"{kind}Type"},
        "DisplayName": label(col.label()),
        "Description": label(col.description),
        "RequiredLevel": {"Value": required or ("ApplicationRequired" if col.required else "None")},
        "IsPrimaryId": col.name == table.primary_id,
        "IsPrimaryName": col.name == table.primary_name,
        "IsCustomAttribute": not col.system and table.custom,
        "IsValidForCreate": not col.read_only,
        "IsValidForUpdate": not col.read_only and col.name != table.primary_id,
        "IsValidForRead": True,
    }
    if col.max_length is not None:
        out["MaxLength"] = col.max_length
    if col.precision is not None:
        out["Precision"] = col.precision
    for key, value in (("MinValue", col.min_value), ("MaxValue", col.max_value)):
        if value is not None:
            out[key] = float(value) if isinstance(value, Decimal) else value
    if col.type is T.LOOKUP:
        out["Targets"] = list(col.targets)
    if col.type is T.DATETIME or col.type is T.DATE:
        out["Format"] = "DateOnly" if col.type is T.DATE else "DateAndTime"
    if col.options:
        out["OptionSet"] = {
            "IsGlobal": False,
            "Options": [{"Value": o.value, "Label": label(o.label)} for o in col.options],
        }
    return out


# -- filtering definitions -------------------------------------------------------------------


def _shape(name: str, properties: dict[str, ColumnType]) -> Table:
    """A table-like description of definitions' properties, so that ``$filter`` parses
    with the same parser as rows."""
    columns = {
        p.lower(): Column(p.lower(), t, max_length=4000 if t is T.STRING else None)
        for p, t in properties.items()
    }
    return Table(name, name, name, "metadataid", "logicalname", Ownership.NONE, columns=columns)


ENTITY_SHAPE = _shape(
    "entitydefinition",
    {
        "MetadataId": T.UNIQUEIDENTIFIER,
        "LogicalName": T.STRING,
        "SchemaName": T.STRING,
        "EntitySetName": T.STRING,
        "LogicalCollectionName": T.STRING,
        "PrimaryIdAttribute": T.STRING,
        "PrimaryNameAttribute": T.STRING,
        "OwnershipType": T.STRING,
        "IsCustomEntity": T.BOOLEAN,
        "IsIntersect": T.BOOLEAN,
        "IsPrivate": T.BOOLEAN,
        "IsAvailableOffline": T.BOOLEAN,
        "IsActivity": T.BOOLEAN,
    },
)
ATTRIBUTE_SHAPE = _shape(
    "attributedefinition",
    {
        "MetadataId": T.UNIQUEIDENTIFIER,
        "LogicalName": T.STRING,
        "SchemaName": T.STRING,
        "EntityLogicalName": T.STRING,
        "AttributeType": T.STRING,
        "IsPrimaryId": T.BOOLEAN,
        "IsPrimaryName": T.BOOLEAN,
        "IsCustomAttribute": T.BOOLEAN,
        "IsValidForCreate": T.BOOLEAN,
        "IsValidForUpdate": T.BOOLEAN,
        "IsValidForRead": T.BOOLEAN,
    },
)


def _select_filter(
    req: ODataRequest, items: Iterable[dict[str, Any]], shape: Table, schema: Schema
) -> list[dict[str, Any]]:
    params = req.params
    node = None
    if params.get("$filter"):
        node = parse_filter(params["$filter"], shape, schema)
    out = []
    for item in items:
        if node is not None:
            row = {k.lower(): v for k, v in item.items()}
            if "metadataid" in row:
                row["metadataid"] = uuid.UUID(row["metadataid"])
            if not matches(node, row):
                continue
        out.append(_select(req, item))
    return out


def _select(req: ODataRequest, item: dict[str, Any]) -> dict[str, Any]:
    raw = req.params.get("$select")
    if not raw:
        return item
    wanted = {s.strip().lower() for s in raw.split(",") if s.strip()}
    expanded = {e.split("(")[0].strip().lower() for e in req.params.get("$expand", "").split(",")}
    keep = {"metadataid", "@odata.type"} | wanted | expanded
    return {k: v for k, v in item.items() if k.lower() in keep or k.split("@")[0].lower() in keep}


# -- reads -----------------------------------------------------------------------------------


def _table(schema: Schema, key: Key | None) -> Table:
    if key is None:
        raise BadRequest("name the table: EntityDefinitions(LogicalName='x') or (<MetadataId>)")
    if key.pairs is not None:
        pairs = {k.lower(): v for k, v in key.pairs}
        name = pairs.get("logicalname")
        if len(pairs) != 1 or not isinstance(name, str):
            raise BadRequest("EntityDefinitions takes the key LogicalName='x' or a MetadataId")
        if name.lower() in schema:
            return schema.table(name.lower())
        raise NotFound(f"no table with LogicalName {name!r}", code="0x80060888")
    for table in schema.tables.values():
        if table_id(table) == key.value:
            return table
    raise NotFound(f"no table with MetadataId {key.value}", code="0x80060888")


def _column(table: Table, key: Key | None) -> Column:
    if key is None:
        raise BadRequest("name the column: Attributes(LogicalName='x') or (<MetadataId>)")
    if key.pairs is not None:
        pairs = {k.lower(): v for k, v in key.pairs}
        name = pairs.get("logicalname")
        if len(pairs) != 1 or not isinstance(name, str):
            raise BadRequest("Attributes takes the key LogicalName='x' or a MetadataId")
        col = table.columns.get(name.lower())
    else:
        col = next((c for c in table.columns.values() if column_id(table, c) == key.value), None)
    if col is None:
        raise NotFound(f"{table.name} has no such column", code="0x80060888")
    return col


CASTS: dict[str, Callable[[Column], bool]] = {
    f"{CRM}PicklistAttributeMetadata": lambda c: c.type is T.CHOICE and not c.system,
    f"{CRM}MultiSelectPicklistAttributeMetadata": lambda c: c.type is T.MULTICHOICE,
    f"{CRM}LookupAttributeMetadata": lambda c: c.type is T.LOOKUP,
    f"{CRM}StringAttributeMetadata": lambda c: c.type is T.STRING,
    f"{CRM}FileAttributeMetadata": lambda c: c.type is T.FILE,
    f"{CRM}BooleanAttributeMetadata": lambda c: c.type is T.BOOLEAN,
}


def get(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    schema = call.platform.store.schema
    root = f"{req.root}/$metadata#EntityDefinitions"
    if len(segments) == 1 and segments[0].key is None:
        items = [entity_json(t) for t in schema.tables.values()]
        return ODataResponse(
            200,
            {
                "@odata.context": root,
                "value": _select_filter(req, items, ENTITY_SHAPE, schema),
            },
        )
    table = _table(schema, segments[0].key)
    if len(segments) == 1:
        body = _select(req, entity_json(table))
        expand = req.params.get("$expand", "")
        if expand.split("(")[0].strip().lower() == "attributes":
            body["Attributes"] = [attribute_json(table, c) for c in table.columns.values()]
        return ODataResponse(200, {"@odata.context": f"{root}/$entity", **body})
    if segments[1].name != "Attributes":
        raise NotFound(f"EntityDefinitions has no {segments[1].name!r}", code="0x80060888")
    columns = list(table.columns.values())
    rest = segments[2:]
    if segments[1].key is not None:
        col = _column(table, segments[1].key)
        if rest:
            cast = CASTS.get(rest[0].name)
            if cast is None or not cast(col):
                raise NotFound(f"{table.name}.{col.name} is not a {rest[0].name}")
        body = _select(req, attribute_json(table, col))
        return ODataResponse(200, {"@odata.context": f"{root}/Attributes/$entity", **body})
    if rest:
        cast = CASTS.get(rest[0].name)
        if cast is None or len(rest) > 1:
            raise NotFound(f"no attribute type {rest[0].name!r}", code="0x80060888")
        columns = [c for c in columns if cast(c)]
    items = [attribute_json(table, c) for c in columns]
    if "$expand" in req.params:
        items = [{**i, "OptionSet": i.get("OptionSet")} for i in items]
    return ODataResponse(
        200,
        {
            "@odata.context": f"{root}/Attributes",
            "value": _select_filter(req, items, ATTRIBUTE_SHAPE, schema),
        },
    )


# -- DDL -------------------------------------------------------------------------------------


def _customizer(call: Call) -> None:
    if not call.caller.unrestricted:
        raise Forbidden(
            f"{call.caller.username or call.caller.user_id} may not change tables or columns: "
            "that needs the System Administrator role"
        )


def column_from_payload(payload: Any) -> tuple[Column, bool]:
    """A column from attribute metadata; returns it and whether it is the primary name."""
    if not isinstance(payload, dict):
        raise BadRequest("an attribute must be a JSON object")
    kind = str(payload.get("@odata.type", "")).lstrip("#").removeprefix(CRM)
    kind = kind.removeprefix("Complex")
    schema_name = payload.get("SchemaName")
    if not isinstance(schema_name, str) or not schema_name:
        raise BadRequest("an attribute needs a SchemaName")
    ctype = FROM_TYPE.get(kind)
    if ctype is None:
        known = ", ".join(sorted(FROM_TYPE))
        raise BadRequest(
            f"attribute {schema_name!r}: cannot create a {kind or 'untyped'} column here; "
            f"the types are {known} (lookups come from relationships)"
        )
    if ctype is T.DATETIME and payload.get("Format") == "DateOnly":
        ctype = T.DATE
    level = (payload.get("RequiredLevel") or {}).get("Value", "None")
    kw: dict[str, Any] = {
        "display_name": label_text(payload.get("DisplayName")),
        "description": label_text(payload.get("Description")),
        "required": level in ("ApplicationRequired", "SystemRequired"),
    }
    try:
        if ctype in (T.STRING, T.MEMO) and payload.get("MaxLength") is not None:
            kw["max_length"] = int(payload["MaxLength"])
        if ctype in (T.DECIMAL, T.MONEY, T.FLOAT) and payload.get("Precision") is not None:
            kw["precision"] = int(payload["Precision"])
        for key, field in (("MinValue", "min_value"), ("MaxValue", "max_value")):
            raw = payload.get(key)
            if raw is None or ctype not in (T.INTEGER, T.BIGINT, T.DECIMAL, T.MONEY, T.FLOAT):
                continue
            if ctype in (T.INTEGER, T.BIGINT):
                kw[field] = int(raw)
            elif ctype is T.FLOAT:
                kw[field] = float(raw)
            else:
                kw[field] = Decimal(str(raw))
        if ctype is T.FILE and payload.get("MaxSizeInKB") is not None:
            kw["max_size_kb"] = int(payload["MaxSizeInKB"])
        if ctype in (T.CHOICE, T.MULTICHOICE):
            options = (payload.get("OptionSet") or {}).get("Options") or []
            kw["options"] = tuple(
                Option(int(o["Value"]), label_text(o.get("Label")) or str(o["Value"]))
                for o in options
            )
    except (TypeError, ValueError, KeyError, ArithmeticError):
        raise BadRequest(
            f"attribute {schema_name!r}: a size, range or option is malformed"
        ) from None
    column = Column(schema_name.lower(), ctype, **kw).normalised()
    return column, bool(payload.get("IsPrimaryName"))


def table_from_payload(payload: Any) -> Table:
    if not isinstance(payload, dict):
        raise BadRequest("an entity definition must be a JSON object")
    schema_name = payload.get("SchemaName")
    if not isinstance(schema_name, str) or not schema_name:
        raise BadRequest("an entity definition needs a SchemaName")
    owner = payload.get("OwnershipType", "UserOwned")
    ownership = {v: k for k, v in OWNERSHIP.items()}.get(str(owner))
    if ownership is None or ownership is Ownership.NONE:
        raise BadRequest("OwnershipType must be UserOwned, BusinessOwned or OrganizationOwned")
    attributes = payload.get("Attributes") or []
    if not isinstance(attributes, list):
        raise BadRequest("Attributes must be a list")
    columns: list[Column] = []
    primary = None
    for attr in attributes:
        column, is_primary = column_from_payload(attr)
        columns.append(column)
        if is_primary:
            primary = column.name
    return define_table(
        schema_name.lower(),
        display_name=label_text(payload.get("DisplayName")),
        entity_set_name=str(payload.get("EntitySetName") or ""),
        primary_name=primary or "name",
        ownership=ownership,
        description=label_text(payload.get("Description")),
        columns=columns,
    )


def create_entities(call: Call, req: ODataRequest) -> ODataResponse:
    _customizer(call)
    body = req.json_object()
    entities = body.get("Entities")
    if not isinstance(entities, list) or not entities:
        raise BadRequest("CreateEntities needs Entities: a non-empty list")
    tables = [table_from_payload(e) for e in entities]
    ids = []
    for table in tables:
        created = call.platform.store.create_table(table)
        ids.append(str(table_id(created)))
    return ODataResponse(200, {"EntityIds": ids, "MetadataIds": ids})


def create_entity(call: Call, req: ODataRequest) -> ODataResponse:
    _customizer(call)
    table = call.platform.store.create_table(table_from_payload(req.json_object()))
    link = req.link(f"EntityDefinitions({table_id(table)})")
    return ODataResponse(204, None, {"OData-EntityId": link})


def delete(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    _customizer(call)
    store = call.platform.store
    table = _table(store.schema, segments[0].key)
    if len(segments) == 1:
        store.delete_table(table.name)
        return ODataResponse(204)
    if len(segments) == 2 and segments[1].name == "Attributes":
        col = _column(table, segments[1].key)
        store.drop_column(table.name, col.name)
        return ODataResponse(204)
    raise NotFound("no such metadata resource", code="0x80060888")


def add_attribute(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    _customizer(call)
    store = call.platform.store
    table = _table(store.schema, segments[0].key)
    column, _ = column_from_payload(req.json_object())
    try:
        store.add_column(table.name, column)
    except SchemaError:
        raise
    table = store.schema.table(table.name)
    link = req.link(f"EntityDefinitions({table_id(table)})/Attributes({column_id(table, column)})")
    return ODataResponse(204, None, {"OData-EntityId": link})
