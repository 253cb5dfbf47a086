"""``sdkmessages`` and ``sdkmessagefilters``, read-only: the messages fieldsync serves and, per
table, which ones it takes. Clients ask before they use the bulk messages:

    GET sdkmessagefilters?$select=sdkmessagefilterid
        &$filter=sdkmessageid/name eq @message and primaryobjecttypecode eq @table
        &@message='CreateMultiple'&@table='account'

A non-empty answer means the table supports the message. The rows are derived from the
schema (ids are stable UUIDs from the names), so they follow tables as they come and go."""

from __future__ import annotations

import uuid
from typing import Any

from fieldsync.errors import NotFound
from fieldsync.schema.model import ColumnType, Schema
from fieldsync.webapi import definitions as defs
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Key

T = ColumnType
SETS = ("sdkmessages", "sdkmessagefilters")
PER_TABLE = (
    "Create",
    "Retrieve",
    "RetrieveMultiple",
    "Update",
    "Delete",
    "Upsert",
    "CreateMultiple",
    "UpdateMultiple",
    "UpsertMultiple",
)
GLOBAL = (
    "WhoAmI",
    "BulkDelete",
    "CreateEntities",
    "RetrieveMetadataChanges",
    "Associate",
    "Disassociate",
)
BOUND = {"PublishMobileOfflineProfile": "mobileofflineprofile"}

MESSAGE_SHAPE = defs.Shape(
    "sdkmessage",
    {
        "sdkmessageid": T.UNIQUEIDENTIFIER,
        "name": T.STRING,
        "isprivate": T.BOOLEAN,
        "isactive": T.BOOLEAN,
        "isvalidforexecuteasync": T.BOOLEAN,
    },
)
FILTER_SHAPE = defs.Shape(
    "sdkmessagefilter",
    {
        "sdkmessagefilterid": T.UNIQUEIDENTIFIER,
        "_sdkmessageid_value": T.UNIQUEIDENTIFIER,
        "sdkmessageid_name": T.STRING,
        "primaryobjecttypecode": T.STRING,
        "secondaryobjecttypecode": T.STRING,
        "isvisible": T.BOOLEAN,
        "iscustomprocessingstepallowed": T.BOOLEAN,
        "availability": T.INTEGER,
    },
    paths=("sdkmessageid/name",),
)


def _id(kind: str, name: str) -> uuid.UUID:
    return uuid.uuid5(defs.NAMESPACE, f"{kind}:{name}")


def message_rows() -> list[dict[str, Any]]:
    names = sorted({*PER_TABLE, *GLOBAL, *BOUND})
    return [
        {
            "sdkmessageid": str(_id("sdkmessage", n)),
            "name": n,
            "categoryname": "",
            "isprivate": False,
            "isactive": True,
            "isvalidforexecuteasync": n in ("BulkDelete",),
        }
        for n in names
    ]


def filter_rows(schema: Schema) -> list[dict[str, Any]]:
    pairs: list[tuple[str, str]] = [(m, "none") for m in GLOBAL]
    pairs += [(m, t) for m, t in BOUND.items() if t in schema]
    for table in schema.tables.values():
        if not table.intersect:
            pairs += [(m, table.name) for m in PER_TABLE]
    return [
        {
            "sdkmessagefilterid": str(_id("sdkmessagefilter", f"{m}.{t}")),
            "_sdkmessageid_value": str(_id("sdkmessage", m)),
            "sdkmessageid_name": m,
            "primaryobjecttypecode": t,
            "secondaryobjecttypecode": "none",
            "isvisible": True,
            "iscustomprocessingstepallowed": False,
            "availability": 0,
        }
        for m, t in pairs
    ]


def get(call: Call, req: ODataRequest, name: str, key: Key | None) -> ODataResponse:
    schema = call.platform.store.schema
    if name == "sdkmessages":
        rows, shape, pk = message_rows(), MESSAGE_SHAPE, "sdkmessageid"
    else:
        rows, shape, pk = filter_rows(schema), FILTER_SHAPE, "sdkmessagefilterid"
    context = f"{req.root}/$metadata#{name}"
    if key is not None:
        wanted = defs.only_metadata_id(key, name)
        row = next((r for r in rows if r[pk] == str(wanted)), None)
        if row is None:
            raise NotFound(f"no {name} row {wanted}", code="0x80040217")
        body = _public(defs.select(req, row, always=(pk,)))
        return ODataResponse(200, {"@odata.context": f"{context}/$entity", **body})
    value = [_public(r) for r in defs.query(req, rows, shape, schema, always=(pk,))]
    return ODataResponse(200, {"@odata.context": context, "value": value})


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """Drop the flattened ``sdkmessageid/name`` helper property; the formatted value of
    the message lookup says the same."""
    out = {k: v for k, v in row.items() if k != "sdkmessageid_name"}
    if "sdkmessageid_name" in row and "_sdkmessageid_value" in out:
        out["_sdkmessageid_value@OData.Community.Display.V1.FormattedValue"] = row[
            "sdkmessageid_name"
        ]
    return out
