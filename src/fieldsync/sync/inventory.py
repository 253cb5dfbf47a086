"""Device inventory: what each device says it holds, compared with what its scope holds.

After a sync the device reports, per profile table, its row count and a checksum over its
``(id, versionnumber)`` pairs, with the table's download cursor. The server decides what the
device *should* hold with the scope code the download runs (the plan's filter node under the
user's read guard, :meth:`Downloader.settled` and :meth:`Downloader.inventory`), never a second
implementation, and compares:

- ``match``: count and checksum agree;
- ``mismatch``: they differ. The report is recorded, the device's audit gets a
  ``device.inventory_mismatch`` row, and the table is healed by a targeted re-scope: its heal
  count goes up, so the download cursor the device holds for it is stale and the next
  download streams that table's scope again (the device drops what did not arrive). No other
  table moves;
- ``behind``: the device's cursor is not settled (a snapshot or diff under way, a cursor of an
  earlier profile version, registration or security context) or a change since it could move
  rows in or out: the device cannot be expected to hold the scope of now, nothing is compared;
- ``clock``: the table's filter reads the clock; the download re-scopes it on every sync.

The checksum (the same on every device and on the server):

    h(id, version) = the first 8 bytes, big-endian, of SHA-256 over the UTF-8 text
                     "<id>:<version>" (the id lowercase with dashes, 36 characters; the
                     version in decimal digits, 0 when the row has none)
    checksum       = (the sum of h over the rows) mod 2**64, as 16 lowercase hex digits

A sum is cheap to keep, independent of row order, and computed on PostgreSQL inside the
database (one aggregate row crosses the wire); on SQLite the pairs stream through Python.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BIT

from fieldsync.errors import BadRequest
from fieldsync.store.catalog import fs_device, fs_device_inventory
from fieldsync.store.store import utcnow
from fieldsync.sync.protocol import (
    CHECKSUM_EMPTY,
    format_checksum,
    inventory_checksum,
    row_hash,
)

__all__ = ["EMPTY", "checksum", "format_checksum", "row_hash"]

Status = Literal["match", "mismatch", "behind", "clock"]
MODULUS = 1 << 64
EMPTY = CHECKSUM_EMPTY
MAX_TABLES = 500
MISMATCH_EVENT = "device.inventory_mismatch"


def checksum(pairs: Iterable[tuple[Any, Any]]) -> tuple[int, str]:
    """The row count and checksum of ``(id, version)`` pairs."""
    return inventory_checksum(pairs)


def pg_hash_sum(id_column: Any, version_column: Any) -> Any:
    """``h`` summed in PostgreSQL: the same value mod 2**64 (the sum is of signed 64-bit
    integers, which agree with the unsigned ones mod 2**64)."""
    text = (
        sa.cast(id_column, sa.Text)
        .concat(":")
        .concat(sa.cast(sa.func.coalesce(version_column, 0), sa.Text))
    )
    digest = sa.func.encode(sa.func.sha256(sa.func.convert_to(text, "UTF8")), "hex")
    bits = sa.cast(sa.literal("x").concat(sa.func.substr(digest, 1, 16)), BIT(64))
    return sa.func.coalesce(sa.func.sum(sa.cast(bits, sa.BigInteger)), 0)


@dataclass(frozen=True)
class TableReport:
    """What a device says it holds of one table."""

    table: str
    rows: int
    checksum: str
    cursor: str | None

    @classmethod
    def parse(cls, table: object, raw: object) -> TableReport:
        if not isinstance(table, str) or not 0 < len(table) <= 64:
            raise BadRequest("an inventory names each table (at most 64 characters)")
        if not isinstance(raw, Mapping):
            raise BadRequest(f"the inventory of {table!r} is an object: rows, checksum, cursor")
        rows, check, cursor = raw.get("rows"), raw.get("checksum"), raw.get("cursor")
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows < MODULUS:
            raise BadRequest(f"the inventory of {table!r}: 'rows' is a count, 0 or more")
        if (
            not isinstance(check, str)
            or len(check) != 16
            or any(c not in "0123456789abcdef" for c in check)
        ):
            raise BadRequest(f"the inventory of {table!r}: 'checksum' is 16 lowercase hex digits")
        if cursor is not None and not isinstance(cursor, str):
            raise BadRequest(f"the inventory of {table!r}: 'cursor' is the table's cursor")
        return cls(table, rows, check, cursor)


def parse_reports(tables: object) -> dict[str, TableReport]:
    if not isinstance(tables, Mapping) or not tables:
        raise BadRequest("'tables' maps each table the device reports to rows, checksum, cursor")
    if len(tables) > MAX_TABLES:
        raise BadRequest(f"report at most {MAX_TABLES} tables")
    return {str(k): TableReport.parse(k, v) for k, v in tables.items()}


@dataclass(frozen=True)
class Verdict:
    table: str
    status: Status
    rows: int
    checksum: str
    expected_rows: int | None = None
    expected_checksum: str | None = None
    verified: str | None = None  # a match: the hash of the cursor it was verified at

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"table": self.table, "status": self.status, "rows": self.rows}
        if self.expected_rows is not None:
            out["expected_rows"] = self.expected_rows
        return out


def cursor_key(cursor: str | None) -> str | None:
    return None if cursor is None else hashlib.sha256(cursor.encode()).hexdigest()[:32]


def verified(conn: sa.Connection, device: str) -> dict[str, tuple[int, str, str]]:
    """Per table, the last match of the device: rows, checksum and the cursor's hash."""
    t = fs_device_inventory
    rows = conn.execute(
        sa.select(t.c.tablename, t.c.rows, t.c.checksum, t.c.verified).where(
            t.c.deviceid == device, t.c.status == "match", t.c.verified.is_not(None)
        )
    )
    return {r.tablename: (int(r.rows), r.checksum, r.verified) for r in rows}


def heals(conn: sa.Connection, device: str) -> dict[str, int]:
    """The targeted re-scopes asked for each table of a device."""
    rows = conn.execute(
        sa.select(fs_device_inventory.c.tablename, fs_device_inventory.c.heal).where(
            fs_device_inventory.c.deviceid == device, fs_device_inventory.c.heal > 0
        )
    )
    return {name: int(heal) for name, heal in rows}


def record(conn: sa.Connection, device: str, user: uuid.UUID, verdicts: list[Verdict]) -> None:
    """Keep the verdicts (one row per table) and the device's summary; a mismatch raises the
    table's heal count, which makes its download cursor stale: a targeted re-scope."""
    now = utcnow()
    t = fs_device_inventory
    for v in verdicts:
        values: dict[str, Any] = {
            "reportedon": now,
            "status": v.status,
            "rows": v.rows,
            "checksum": v.checksum,
            "expectedrows": v.expected_rows,
            "expectedchecksum": v.expected_checksum,
            "verified": v.verified,
        }
        if v.status == "mismatch":
            values["heal"] = t.c.heal + 1
            values["mismatches"] = t.c.mismatches + 1
        where = sa.and_(t.c.deviceid == device, t.c.tablename == v.table)
        if conn.execute(t.update().where(where).values(**values)).rowcount == 0:
            if v.status == "mismatch":
                values["heal"] = values["mismatches"] = 1
            conn.execute(t.insert().values(deviceid=device, tablename=v.table, **values))
    statuses = {v.status for v in verdicts}
    summary = (
        "mismatch" if "mismatch" in statuses else "match" if "match" in statuses else "unchecked"
    )
    conn.execute(
        fs_device.update()
        .where(fs_device.c.deviceid == device, fs_device.c.userid == user)
        .values(inventoryon=now, inventorystatus=summary)
    )


def device_inventory(conn: sa.Connection, device: str) -> list[dict[str, Any]]:
    """The last report of each table of a device, for the portal and the CLI."""
    t = fs_device_inventory
    rows = conn.execute(sa.select(t).where(t.c.deviceid == device).order_by(t.c.tablename))
    return [
        {
            "table": r.tablename,
            "status": r.status,
            "reported_on": r.reportedon.isoformat(),
            "rows": r.rows,
            "checksum": r.checksum,
            "expected_rows": r.expectedrows,
            "expected_checksum": r.expectedchecksum,
            "mismatches": r.mismatches,
            "rescoped": r.heal,
        }
        for r in rows
    ]
