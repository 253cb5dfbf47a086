"""The built-in tables of sync: Sync Errors (Dataverse's ``syncerror``), one row per change
a server rejected, owned by the user whose device sent it."""

from __future__ import annotations

from fieldsync.schema.model import Column, ColumnType, Option, Ownership, Table, define_table

T = ColumnType

ERROR_TYPES = (
    Option(0, "Conflict"),
    Option(1, "Record not found"),
    Option(2, "Record already exists"),
    Option(3, "Others"),
)


def sync_tables() -> list[Table]:
    syncerror = define_table(
        "syncerror",
        custom=False,
        display_name="Sync Error",
        ownership=Ownership.USER,
        columns=[
            Column("name", T.STRING, display_name="Table", max_length=160),
            Column("errorcode", T.STRING, display_name="Error Code", max_length=100),
            Column("errormessage", T.MEMO, display_name="Error Message", max_length=4000),
            Column("errordetail", T.MEMO, display_name="Error Detail", max_length=20000),
            Column("errortype", T.CHOICE, display_name="Error Type", options=ERROR_TYPES),
            Column("errortime", T.DATETIME, display_name="Error Time", required=True),
            Column("action", T.STRING, display_name="Action", max_length=100),
            Column("actiondata", T.MEMO, display_name="Action Data", max_length=1_048_576),
            Column("requestdata", T.MEMO, display_name="Request Data", max_length=1_048_576),
            Column("regardingobjectid", T.UNIQUEIDENTIFIER, display_name="Regarding"),
            Column(
                "regardingobjecttypecode", T.STRING, display_name="Regarding Table", max_length=64
            ),
            Column("description", T.MEMO, display_name="Description", max_length=2000),
            Column("deviceid", T.STRING, display_name="Device", max_length=64),
            Column("clientchangeid", T.UNIQUEIDENTIFIER, display_name="Client Change"),
        ],
    )
    return [syncerror]
