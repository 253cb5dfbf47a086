"""``RetrieveMetadataChanges(Query=@p1[,ClientVersionStamp=@p2])``: entity definitions chosen
by an ``EntityQueryExpression`` (``Criteria`` conditions on entity properties,
``Properties.PropertyNames``), each with the attributes its ``AttributeQuery`` chooses and
projects; the answer carries a ``ServerVersionStamp``.

The stamp is the schema generation. A client that sends back the current stamp gets no
entities (nothing changed); one that sends an older stamp gets Dataverse's "expired version
stamp" error (``0x80044352``), after which clients retrieve everything again: fieldsync keeps
no history of deleted definitions to answer with ``DeletedMetadata``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from fieldsync.errors import BadRequest
from fieldsync.schema.model import Schema, Table
from fieldsync.webapi import definitions as defs
from fieldsync.webapi import keys, metadata, relationships
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Alias, Segment

PARAMETERS = ("Query", "ClientVersionStamp", "DeletedMetadataFilters")
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: _norm(a) == _norm(b),
    "NotEquals": lambda a, b: _norm(a) != _norm(b),
    "In": lambda a, b: _norm(a) in [_norm(v) for v in _many(b)],
    "NotIn": lambda a, b: _norm(a) not in [_norm(v) for v in _many(b)],
    "GreaterThan": lambda a, b: a is not None and a > b,
    "LessThan": lambda a, b: a is not None and a < b,
}


class ExpiredVersionStamp(BadRequest):
    code: ClassVar[str] = "0x80044352"


def _norm(value: Any) -> Any:
    if isinstance(value, dict) and "Value" in value:
        value = value["Value"]
    return value.lower() if isinstance(value, str) else value


def _many(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest("In and NotIn take a list of values")
    return value


def _parameter(req: ODataRequest, segment: Segment, name: str) -> Any:
    pairs = dict(segment.key.pairs or ()) if segment.key is not None else {}
    unknown = set(pairs) - set(PARAMETERS)
    if unknown:
        raise BadRequest(
            f"RetrieveMetadataChanges takes {', '.join(PARAMETERS)}, not {', '.join(unknown)}"
        )
    value = pairs.get(name)
    if isinstance(value, Alias):
        raw = req.params.get(value.name)
        if raw is None:
            raise BadRequest(f"the parameter alias {value.name} is not given")
        try:
            return json.loads(raw)
        except ValueError:
            if raw.startswith("'") and raw.endswith("'"):
                return raw[1:-1].replace("''", "'")
            raise BadRequest(f"{value.name} is not valid JSON") from None
    return value


def _criteria(expression: Any, where: str) -> Callable[[dict[str, Any]], bool]:
    """A ``MetadataFilterExpression`` as a test on one definition."""
    if expression is None:
        return lambda item: True
    if not isinstance(expression, dict):
        raise BadRequest(f"{where}.Criteria must be an object")
    operator = expression.get("FilterOperator", "And")
    if operator not in ("And", "Or"):
        raise BadRequest(f"{where}.Criteria.FilterOperator must be And or Or")
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for cond in expression.get("Conditions") or []:
        if not isinstance(cond, dict) or not isinstance(cond.get("PropertyName"), str):
            raise BadRequest(f"{where}: each condition needs a PropertyName")
        op = OPERATORS.get(str(cond.get("ConditionOperator", "Equals")))
        if op is None:
            raise BadRequest(f"{where}: ConditionOperator must be one of {', '.join(OPERATORS)}")
        value = cond.get("Value")
        if isinstance(value, dict) and "Value" in value:
            value = value["Value"]
        tests.append(_condition(cond["PropertyName"], op, value))
    for nested in expression.get("Filters") or []:
        tests.append(_criteria(nested, where))
    if operator == "And":
        return lambda item: all(t(item) for t in tests)
    return lambda item: any(t(item) for t in tests)


def _condition(
    name: str, op: Callable[[Any, Any], bool], value: Any
) -> Callable[[dict[str, Any]], bool]:
    return lambda item: op(item.get(name), value)


def _project(item: dict[str, Any], properties: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(properties, dict) or properties.get("AllProperties"):
        return item
    names = properties.get("PropertyNames")
    if not isinstance(names, list):
        return item
    keep = {"@odata.type", "MetadataId", *extra, *(n for n in names if isinstance(n, str))}
    return {k: v for k, v in item.items() if k in keep}


def _entity(schema: Schema, table: Table, query: dict[str, Any]) -> dict[str, Any]:
    names = (query.get("Properties") or {}).get("PropertyNames") or []
    all_properties = (query.get("Properties") or {}).get("AllProperties") or not names
    body = _project(metadata.entity_json(table), query.get("Properties"))
    if all_properties or "Attributes" in names or query.get("AttributeQuery"):
        attr_query = query.get("AttributeQuery") or {}
        chosen = _criteria(attr_query.get("Criteria"), "AttributeQuery")
        body["Attributes"] = [
            _project(a, attr_query.get("Properties"))
            for a in (metadata.attribute_json(table, c) for c in table.columns.values())
            if chosen(a)
        ]
    if all_properties or "Keys" in names:
        body["Keys"] = [keys.key_json(table, k) for k in table.keys]
    for which in relationships.PER_TABLE:
        if all_properties or which in names:
            body[which] = [
                relationships.relationship_json(schema, r)
                for r in relationships.for_table(schema, table, which)
            ]
    return body


def retrieve(call: Call, req: ODataRequest, segment: Segment) -> ODataResponse:
    store = call.platform.store
    schema = store.schema
    query = _parameter(req, segment, "Query") or {}
    if not isinstance(query, dict):
        raise BadRequest("Query must be an EntityQueryExpression (a JSON object)")
    stamp = f"{store.schema_generation}!fieldsync"
    client = _parameter(req, segment, "ClientVersionStamp")
    root = f"{req.root}/$metadata#{defs.CRM}RetrieveMetadataChangesResponse"
    if client is not None and client != stamp:
        raise ExpiredVersionStamp(
            f"the version stamp {str(client)[:40]!r} has expired: retrieve the metadata "
            "again without a ClientVersionStamp"
        )
    entities: list[dict[str, Any]] = []
    if client is None:
        chosen = _criteria(query.get("Criteria"), "Query")
        for table in schema.tables.values():
            if chosen(metadata.entity_json(table)):
                entities.append(_entity(schema, table, query))
    return ODataResponse(
        200,
        {
            "@odata.context": root,
            "EntityMetadata": entities,
            "ServerVersionStamp": stamp,
            "DeletedMetadata": {"Count": 0, "Keys": [], "Values": []},
        },
    )
