"""``EntityDefinitions``: tables and their columns described the Dataverse way, and the
runtime DDL behind ``CreateEntities``, ``POST EntityDefinitions``, ``POST …/Attributes``,
``PUT …/Attributes(<id>)``, ``DELETE EntityDefinitions(<id>)`` and
``DELETE …/Attributes(<id>)``; the table's keys and relationships are read (and keys
written) through ``keys`` and ``relationships``.

Logical names are lowercase; schema names keep the case they were created with
(``new_Product``, ``new_Score``). ``MetadataId``s are stable: a UUID derived from the table
(and column) name. ``$filter`` on definitions takes the same OData syntax as on rows, over
the listed properties, with enum literals and ``Property/Value`` paths
(:mod:`fieldsync.webapi.definitions`)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from fieldsync.errors import BadRequest, NotFound
from fieldsync.schema.model import (
    Column,
    ColumnType,
    Option,
    Ownership,
    Schema,
    Table,
    define_table,
)
from fieldsync.webapi import definitions as defs
from fieldsync.webapi import keys, relationships
from fieldsync.webapi.definitions import column_id, label, label_text, table_id
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Key, Segment

T = ColumnType
CRM = defs.CRM
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


def entity_json(table: Table) -> dict[str, Any]:
    """An ``EntityMetadata``: what the table is, and the flags clients read before they use
    a feature (fieldsync has no activities, notes, queues, connections, auditing or mail
    merge, so those flags are false)."""
    custom = table.custom
    return {
        "@odata.type": f"#{CRM}EntityMetadata",
        "MetadataId": str(table_id(table)),
        "LogicalName": table.name,
        "SchemaName": table.schema,
        "EntitySetName": table.entity_set_name,
        "LogicalCollectionName": table.entity_set_name,
        "CollectionSchemaName": table.entity_set_name,
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name or None,
        "PrimaryImageAttribute": next(
            (c.name for c in table.columns.values() if c.type is T.IMAGE), None
        ),
        "DisplayName": label(table.display_name),
        "DisplayCollectionName": label(table.display_name),
        "Description": label(table.description),
        "OwnershipType": OWNERSHIP[table.ownership],
        "TableType": "Standard",
        "IsCustomEntity": custom,
        "IsManaged": False,
        "IsIntersect": table.intersect,
        "IsPrivate": False,
        "IsLogicalEntity": False,
        "IsAvailableOffline": table.offline,
        "IsOfflineInMobileClient": defs.managed(table.offline),
        "IsActivity": False,
        "IsActivityParty": False,
        "HasActivities": False,
        "HasNotes": False,
        "HasFeedback": False,
        "HasEmailAddresses": any(c.startswith("emailaddress") for c in table.columns),
        "IsStateModelAware": "statecode" in table.columns,
        "IsValidForAdvancedFind": not table.intersect,
        "IsBusinessProcessEnabled": False,
        "IsValidForQueue": defs.managed(False),
        "IsConnectionsEnabled": defs.managed(False),
        "IsAuditEnabled": defs.managed(False),
        "IsDuplicateDetectionEnabled": defs.managed(False),
        "IsMailMergeEnabled": defs.managed(False),
        "IsQuickCreateEnabled": False,
        "ChangeTrackingEnabled": True,
        "IsCustomizable": defs.managed(custom),
        "IsRenameable": defs.managed(custom),
        "CanCreateAttributes": defs.managed(custom and not table.intersect),
        "CanCreateForms": defs.managed(False),
        "CanCreateViews": defs.managed(False),
        "CanCreateCharts": defs.managed(False),
        "AutoCreateAccessTeams": False,
        "IntroducedVersion": "1.0",
    }


def attribute_type(col: Column) -> tuple[str, str]:
    """(``AttributeType``, the metadata type name) of a column."""
    if col.name == "statecode":
        return "State", "StateAttributeMetadata"
    if col.name == "statuscode":
        return "Status", "StatusAttributeMetadata"
    kind, odata_type = ATTRIBUTE_TYPES[col.type]
    if col.type is T.LOOKUP and col.polymorphic:
        kind = "Owner" if col.name == "ownerid" else "Customer"
    return kind, odata_type


def attribute_json(table: Table, col: Column) -> dict[str, Any]:
    kind, odata_type = attribute_type(col)
    required = "SystemRequired" if col.name == table.primary_id else None
    out: dict[str, Any] = {
        "@odata.type": f"#{CRM}{odata_type}",
        "MetadataId": str(column_id(table, col)),
        "LogicalName": col.name,
        "SchemaName": col.schema,
        "EntityLogicalName": table.name,
        "AttributeType": kind,
        "AttributeTypeName": {"Value": f"{kind}Type"},
        "AttributeOf": None,
        "DisplayName": label(col.label()),
        "Description": label(col.description),
        "RequiredLevel": {
            "Value": required or ("ApplicationRequired" if col.required else "None"),
            "CanBeChanged": not col.system,
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        },
        "IsPrimaryId": col.name == table.primary_id,
        "IsPrimaryName": col.name == table.primary_name,
        "IsCustomAttribute": not col.system and table.custom,
        "IsManaged": False,
        "IsLogical": False,
        "IsSecured": False,
        "IsFilterable": col.type not in (T.FILE, T.IMAGE, T.MEMO),
        "IsSearchable": col.type not in (T.FILE, T.IMAGE),
        "IsSortableEnabled": defs.managed(col.type not in (T.FILE, T.IMAGE, T.MULTICHOICE)),
        "IsValidForAdvancedFind": defs.managed(col.type not in (T.FILE, T.IMAGE)),
        "IsAuditEnabled": defs.managed(False),
        "IsCustomizable": defs.managed(not col.system),
        "IsRenameable": defs.managed(not col.system),
        "IsValidForCreate": not col.read_only,
        "IsValidForUpdate": not col.read_only and col.name != table.primary_id,
        "IsValidForRead": True,
        "SourceType": 0,
        "IntroducedVersion": "1.0",
    }
    if col.max_length is not None:
        out["MaxLength"] = col.max_length
        out["DatabaseLength"] = col.max_length * 2
    if col.type is T.STRING:
        out["FormatName"] = {"Value": "Text"}
        out["Format"] = "Text"
    elif col.type is T.MEMO:
        out["Format"] = "TextArea"
    elif col.type in (T.INTEGER, T.BIGINT):
        out["Format"] = "None"
    if col.precision is not None:
        out["Precision"] = col.precision
    for key, value in (("MinValue", col.min_value), ("MaxValue", col.max_value)):
        if value is not None:
            out[key] = float(value) if isinstance(value, Decimal) else value
    if col.type is T.LOOKUP:
        out["Targets"] = list(col.targets)
    if col.type is T.DATETIME or col.type is T.DATE:
        out["Format"] = "DateOnly" if col.type is T.DATE else "DateAndTime"
        out["DateTimeBehavior"] = {"Value": "DateOnly" if col.type is T.DATE else "UserLocal"}
    if col.type is T.FILE or col.type is T.IMAGE:
        out["MaxSizeInKB"] = col.max_size_kb or 32768
    if col.type is T.BOOLEAN:
        out["DefaultValue"] = False
        out["OptionSet"] = {
            "@odata.type": f"#{CRM}BooleanOptionSetMetadata",
            "IsGlobal": False,
            "OptionSetType": "Boolean",
            "TrueOption": {"Value": 1, "Label": label("Yes")},
            "FalseOption": {"Value": 0, "Label": label("No")},
        }
    if col.options:
        out["OptionSet"] = {
            "@odata.type": f"#{CRM}OptionSetMetadata",
            "IsGlobal": False,
            "OptionSetType": "Picklist",
            "Options": [{"Value": o.value, "Label": label(o.label)} for o in col.options],
        }
    return out


# -- filtering definitions -------------------------------------------------------------------

ENTITY_SHAPE = defs.Shape(
    "entitydefinition",
    {
        "MetadataId": T.UNIQUEIDENTIFIER,
        "LogicalName": T.STRING,
        "SchemaName": T.STRING,
        "EntitySetName": T.STRING,
        "LogicalCollectionName": T.STRING,
        "CollectionSchemaName": T.STRING,
        "PrimaryIdAttribute": T.STRING,
        "PrimaryNameAttribute": T.STRING,
        "OwnershipType": T.STRING,
        "TableType": T.STRING,
        "IsCustomEntity": T.BOOLEAN,
        "IsManaged": T.BOOLEAN,
        "IsIntersect": T.BOOLEAN,
        "IsPrivate": T.BOOLEAN,
        "IsLogicalEntity": T.BOOLEAN,
        "IsAvailableOffline": T.BOOLEAN,
        "IsActivity": T.BOOLEAN,
        "IsActivityParty": T.BOOLEAN,
        "HasActivities": T.BOOLEAN,
        "HasNotes": T.BOOLEAN,
        "IsStateModelAware": T.BOOLEAN,
        "IsValidForAdvancedFind": T.BOOLEAN,
        "ChangeTrackingEnabled": T.BOOLEAN,
        "CanCreateAttributes_Value": T.BOOLEAN,
        "IsCustomizable_Value": T.BOOLEAN,
        "IsOfflineInMobileClient_Value": T.BOOLEAN,
        "IsAuditEnabled_Value": T.BOOLEAN,
    },
    paths=(
        "CanCreateAttributes/Value",
        "IsCustomizable/Value",
        "IsOfflineInMobileClient/Value",
        "IsAuditEnabled/Value",
    ),
)
ATTRIBUTE_SHAPE = defs.Shape(
    "attributedefinition",
    {
        "MetadataId": T.UNIQUEIDENTIFIER,
        "LogicalName": T.STRING,
        "SchemaName": T.STRING,
        "EntityLogicalName": T.STRING,
        "AttributeType": T.STRING,
        "AttributeTypeName_Value": T.STRING,
        "AttributeOf": T.STRING,
        "IsPrimaryId": T.BOOLEAN,
        "IsPrimaryName": T.BOOLEAN,
        "IsCustomAttribute": T.BOOLEAN,
        "IsManaged": T.BOOLEAN,
        "IsLogical": T.BOOLEAN,
        "IsSecured": T.BOOLEAN,
        "IsFilterable": T.BOOLEAN,
        "IsSearchable": T.BOOLEAN,
        "IsValidForCreate": T.BOOLEAN,
        "IsValidForUpdate": T.BOOLEAN,
        "IsValidForRead": T.BOOLEAN,
        "MaxLength": T.INTEGER,
        "RequiredLevel_Value": T.STRING,
        "IsCustomizable_Value": T.BOOLEAN,
    },
    paths=("AttributeTypeName/Value", "RequiredLevel/Value", "IsCustomizable/Value"),
)
ENTITY_NAVIGATION = ("Attributes", "Keys", *relationships.PER_TABLE)


def _expand(req: ODataRequest, schema: Schema, table: Table, body: dict[str, Any]) -> None:
    """``$expand=Attributes,Keys,OneToManyRelationships…`` on an entity definition (the
    expanded definitions come whole; options inside parentheses are not applied)."""
    raw = req.params.get("$expand", "")
    for item in (e.split("(")[0].strip() for e in raw.split(",") if e.strip()):
        if item == "Attributes":
            body["Attributes"] = [attribute_json(table, c) for c in table.columns.values()]
        elif item == "Keys":
            body["Keys"] = [keys.key_json(table, k) for k in table.keys]
        elif item in relationships.PER_TABLE:
            rels = relationships.for_table(schema, table, item)
            body[item] = [relationships.relationship_json(schema, r) for r in rels]
        else:
            raise BadRequest(
                f"EntityDefinitions cannot expand {item!r}; it expands "
                f"{', '.join(ENTITY_NAVIGATION)}"
            )


# -- reads -----------------------------------------------------------------------------------


def table_for(schema: Schema, key: Key | None) -> Table:
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


# Dataverse's castable attribute types; the ones fieldsync has no column of answer empty lists
CAST_TYPES = frozenset(
    {t for _, t in ATTRIBUTE_TYPES.values()}
    | {
        "StateAttributeMetadata",
        "StatusAttributeMetadata",
        "EntityNameAttributeMetadata",
        "ManagedPropertyAttributeMetadata",
    }
)


def _cast(name: str) -> str:
    """The metadata type a ``Microsoft.Dynamics.CRM.<Type>AttributeMetadata`` segment names."""
    kind = name.removeprefix(CRM)
    if not name.startswith(CRM) or kind not in CAST_TYPES:
        raise NotFound(
            f"no attribute type {name!r}; the types are "
            f"{', '.join(CRM + t for t in sorted(CAST_TYPES))}",
            code="0x80060888",
        )
    return kind


def get(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    schema = call.platform.store.schema
    root = f"{req.root}/$metadata#EntityDefinitions"
    if len(segments) == 1 and segments[0].key is None:
        items = [entity_json(t) for t in schema.tables.values()]
        value = defs.query(req, items, ENTITY_SHAPE, schema)
        if "$expand" in req.params:
            for item in value:
                _expand(req, schema, schema.table(item["LogicalName"]), item)
        return ODataResponse(200, {"@odata.context": root, "value": value})
    table = table_for(schema, segments[0].key)
    if len(segments) == 1:
        body = defs.select(req, entity_json(table))
        _expand(req, schema, table, body)
        return ODataResponse(200, {"@odata.context": f"{root}/$entity", **body})
    nav, rest = segments[1], segments[2:]
    if nav.name == "Keys" and not rest:
        return keys.get(req, schema, table, nav)
    if nav.name in relationships.PER_TABLE and nav.key is None and not rest:
        return relationships.of_table(req, schema, table, nav.name)
    if nav.name != "Attributes":
        raise NotFound(
            f"EntityDefinitions has no {nav.name!r}; it has {', '.join(ENTITY_NAVIGATION)}",
            code="0x80060888",
        )
    if len(rest) > 1:
        raise NotFound("no such attribute resource", code="0x80060888")
    cast = _cast(rest[0].name) if rest else None
    if nav.key is not None:
        col = _column(table, nav.key)
        if cast is not None and attribute_type(col)[1] != cast:
            raise NotFound(f"{table.name}.{col.name} is not a {CRM}{cast}", code="0x80060888")
        body = defs.select(req, attribute_json(table, col))
        return ODataResponse(200, {"@odata.context": f"{root}/Attributes/$entity", **body})
    columns = list(table.columns.values())
    if cast is not None:
        columns = [c for c in columns if attribute_type(c)[1] == cast]
    items = [attribute_json(table, c) for c in columns]
    if "$expand" in req.params:
        items = [{**i, "OptionSet": i.get("OptionSet")} for i in items]
    return ODataResponse(
        200,
        {
            "@odata.context": f"{root}/Attributes",
            "value": defs.query(req, items, ATTRIBUTE_SHAPE, schema),
        },
    )


# -- DDL -------------------------------------------------------------------------------------


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
    name = schema_name.lower()
    kw["schema_name"] = schema_name if schema_name != name else ""
    column = Column(name, ctype, **kw).normalised()
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
        schema_name=schema_name,
        display_name=label_text(payload.get("DisplayName")),
        entity_set_name=str(payload.get("EntitySetName") or ""),
        primary_name=primary or "name",
        ownership=ownership,
        description=label_text(payload.get("Description")),
        columns=columns,
    )


def create_entities(call: Call, req: ODataRequest) -> ODataResponse:
    defs.customizer(call)
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
    defs.customizer(call)
    table = call.platform.store.create_table(table_from_payload(req.json_object()))
    link = req.link(f"EntityDefinitions({table_id(table)})")
    return ODataResponse(204, None, {"OData-EntityId": link})


def delete(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    defs.customizer(call)
    store = call.platform.store
    table = table_for(store.schema, segments[0].key)
    if len(segments) == 1:
        store.delete_table(table.name)
        return ODataResponse(204)
    if len(segments) == 2 and segments[1].name == "Attributes":
        col = _column(table, segments[1].key)
        store.drop_column(table.name, col.name)
        return ODataResponse(204)
    if len(segments) == 2 and segments[1].name == "Keys" and segments[1].key is not None:
        return keys.delete(call, table, segments[1])
    raise NotFound("no such metadata resource", code="0x80060888")


def post(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    """``POST EntityDefinitions``, ``…(<table>)/Attributes`` or ``…(<table>)/Keys``."""
    if len(segments) == 1 and segments[0].key is None:
        return create_entity(call, req)
    if len(segments) == 2 and segments[1].key is None:
        if segments[1].name == "Attributes":
            return add_attribute(call, req, segments)
        if segments[1].name == "Keys":
            defs.customizer(call)
            table = table_for(call.platform.store.schema, segments[0].key)
            return keys.create(call, req, table)
    raise NotFound("POST creates EntityDefinitions, Attributes or Keys", code="0x80060888")


def update_attribute(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    """``PUT EntityDefinitions(…)/Attributes(…)`` with the whole typed definition (what
    ``update_column`` sends): labels, description, required level, length, range, options
    and file size change; the type, precision and targets cannot. ``MSCRM.MergeLabels``
    changes nothing here: fieldsync keeps one label per definition."""
    defs.customizer(call)
    if len(segments) != 2 or segments[1].name != "Attributes" or segments[1].key is None:
        raise NotFound("PUT updates one attribute: EntityDefinitions(…)/Attributes(…)")
    store = call.platform.store
    table = table_for(store.schema, segments[0].key)
    old = _column(table, segments[1].key)
    payload = req.json_object()
    given = payload.get("SchemaName", old.schema)
    if not isinstance(given, str) or given.lower() != old.name:
        raise BadRequest(f"SchemaName {given!r} is not the column's; a column is not renamed")
    kind = str(payload.get("@odata.type", "")).lstrip("#").removeprefix(CRM)
    if kind and kind.removeprefix("Complex") != attribute_type(old)[1]:
        raise BadRequest(
            f"{table.name}.{old.name} is a {CRM}{attribute_type(old)[1]}; its type cannot change"
        )
    level = (payload.get("RequiredLevel") or {}).get("Value")
    display = label_text(payload.get("DisplayName")) or old.display_name
    description = label_text(payload.get("Description"))
    required = old.required if level is None else level != "None"
    if old.system or old.type is T.LOOKUP or old.type is T.UNIQUEIDENTIFIER:
        new = old
    else:
        new, _ = column_from_payload({**payload, "SchemaName": old.schema})
    new = replace(new, display_name=display, description=description, required=required)
    if old.type is T.DATE and new.type is T.DATETIME:
        new = replace(new, type=T.DATE)
    store.update_column(table.name, new)
    return ODataResponse(204)


def add_attribute(call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
    defs.customizer(call)
    store = call.platform.store
    table = table_for(store.schema, segments[0].key)
    column, _ = column_from_payload(req.json_object())
    store.add_column(table.name, column)
    table = store.schema.table(table.name)
    link = req.link(f"EntityDefinitions({table_id(table)})/Attributes({column_id(table, column)})")
    return ODataResponse(204, None, {"OData-EntityId": link})
