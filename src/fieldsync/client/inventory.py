"""What the device holds, told to the server: the inventory after each sync, and the receipt
of a purge (access ended) or a remote wipe.

**Inventory.** Per profile table without changes in the outbox: the row count, the checksum of
the ``(id, versionnumber)`` pairs (:func:`fieldsync.sync.protocol.inventory_checksum`) and the
table's download cursor. A table's count and checksum are computed again only when its cursor
moved since the last report (every change that reaches the table moves it; a re-scope the
server asks for drops the kept value), so a sync in which nothing changed reads no rows. The
server answers a verdict per table and lists the tables it re-scopes (``rescope``): the syncer
downloads those again at once.

**Receipts.** After removing data the device says how much (rows per table, changes discarded,
files removed). A receipt that cannot be delivered (no network) is kept and sent before the
next sync's handshake.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from fieldsync.client.localdb import quote
from fieldsync.client.replica import Replica
from fieldsync.client.session import Session
from fieldsync.client.transport import Offline, ServerError
from fieldsync.sync.protocol import (
    SQLITE_PAIR_TEXT,
    InventoryAnswer,
    InventoryRequest,
    ReceiptKind,
    ReceiptRequest,
    TableInventory,
    format_checksum,
    inventory_checksum_texts,
)

log = logging.getLogger(__name__)

CACHE = "inventory"  # state: per table, the cursor the count and checksum were computed at
RECEIPT = "receipt"  # state: a receipt not delivered yet


def _matched(kept: dict[str, Any] | None, now: TableInventory) -> bool:
    """The server found this table a match at the cursor, count and checksum of ``now``."""
    return (
        kept is not None
        and bool(kept.get("matched"))
        and (kept["cursor"], kept["rows"], kept["checksum"])
        == (now["cursor"], now["rows"], now["checksum"])
    )


class Follower:
    """Keeps the kept counts and checksums in step with the pages a download applies, so the
    inventory after a small change reads only the rows the pages touched, not the table. A
    table's kept value moves with a page only when it was computed at the cursor the page
    follows; a re-scope, a table with changes in the outbox, or anything unexpected drops it
    (it is computed from the rows at the next report). Kept once, after the download: a crash
    before leaves the values at their old cursor, which no longer matches, so they are
    computed afresh."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        with replica.read() as conn:
            self.cache: dict[str, Any] = replica.get_state(CACHE, conn) or {}
            self.pending = {r[0] for r in conn.execute("SELECT DISTINCT tablename FROM _fs_outbox")}
        self.cursors = replica.cursors(list(self.cache))
        self.changed = False

    def _drop(self, name: str) -> None:
        if self.cache.pop(name, None) is not None:
            self.changed = True

    def before(self, page: Mapping[str, Any]) -> tuple[list[str], list[str]] | None:
        """The pair texts of the rows the page replaces or removes (read now) and of the rows
        it brings; None when the table's kept value cannot follow this page."""
        name = str(page["table"])
        kept = self.cache.get(name)
        if kept is None:
            return None
        columns = list(page["columns"])
        try:
            t, _ = self.replica.table(name)
            pk, version = columns.index(t.primary_id), columns.index("versionnumber")
        except (KeyError, ValueError):
            self._drop(name)
            return None
        upserts = [str(r[pk]).lower() for r in page["upserts"]]
        removes = [str(r).lower() for r in page["removes"]]
        if (
            page.get("rescope")
            or page.get("complete")
            or name in self.pending
            or kept["cursor"] != self.cursors.get(name)
            or len(set(upserts) | set(removes)) != len(upserts) + len(removes)
        ):
            self._drop(name)
            return None
        brought = [
            f"{i}:{int(r[version] or 0)}" for i, r in zip(upserts, page["upserts"], strict=True)
        ]
        text = SQLITE_PAIR_TEXT.format(id=quote(t.primary_id), version="versionnumber")
        touched = [uuid.UUID(i).hex for i in upserts + removes]
        held: list[str] = []
        if not touched:
            return held, brought
        with self.replica.read() as conn:
            for start in range(0, len(touched), 500):
                part = touched[start : start + 500]
                held.extend(
                    r[0]
                    for r in conn.execute(
                        f"SELECT {text} FROM {quote(name)} WHERE {quote(t.primary_id)} "
                        f"IN ({', '.join('?' for _ in part)})",
                        part,
                    )
                )
        return held, brought

    def after(self, page: Mapping[str, Any], texts: tuple[list[str], list[str]] | None) -> None:
        """The page is applied: move the table's kept value to the page's cursor."""
        name = str(page["table"])
        kept = self.cache.get(name)
        if texts is None or kept is None:
            return
        held, brought = texts
        if not held and not brought and page["cursor"] == kept["cursor"]:
            return  # nothing moved: the value stays, verdict and all
        gone_rows, gone = inventory_checksum_texts(held)
        new_rows, new = inventory_checksum_texts(brought)
        total = int(kept["checksum"], 16) - int(gone, 16) + int(new, 16)
        self.cache[name] = {
            "cursor": page["cursor"],
            "rows": kept["rows"] - gone_rows + new_rows,
            "checksum": format_checksum(total),
        }
        self.cursors[name] = page["cursor"]
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        with self.replica.write() as conn:
            # what moved meanwhile (another writer) is left as it is now: keep only the
            # values still at the table's cursor
            now = self.replica.cursors(list(self.cache))
            kept = {n: v for n, v in self.cache.items() if v["cursor"] == now.get(n)}
            self.replica.set_state(conn, CACHE, kept)


class Inventory:
    def __init__(self, replica: Replica, session: Session) -> None:
        self.replica = replica
        self.session = session

    # -- inventory --------------------------------------------------------------------------

    def held(self, tables: Iterable[str]) -> dict[str, TableInventory]:
        """The inventory of ``tables`` that have a cursor and no change in the outbox."""
        wanted = [t for t in tables if t in self.replica.sql]
        cursors = self.replica.cursors(wanted)
        out: dict[str, TableInventory] = {}
        changed = False
        with self.replica.read() as conn:
            cache: dict[str, Any] = self.replica.get_state(CACHE, conn) or {}
            pending = {r[0] for r in conn.execute("SELECT DISTINCT tablename FROM _fs_outbox")}
            for name in wanted:
                cursor = cursors[name]
                if cursor is None or name in pending:
                    continue
                kept = cache.get(name)
                if kept is None or kept["cursor"] != cursor:
                    t, _ = self.replica.table(name)
                    # ids as stored (32 hex digits): SQLite writes each pair's text, Python
                    # hashes it
                    text = SQLITE_PAIR_TEXT.format(id=quote(t.primary_id), version="versionnumber")
                    texts = conn.execute(f"SELECT {text} FROM {quote(name)}").fetchall()
                    rows, check = inventory_checksum_texts(r[0] for r in texts)
                    kept = cache[name] = {"cursor": cursor, "rows": rows, "checksum": check}
                    changed = True
                out[name] = {"rows": kept["rows"], "checksum": kept["checksum"], "cursor": cursor}
        if changed:  # a durable write costs a sync to disk: only when something moved
            with self.replica.write() as conn:
                self.replica.set_state(conn, CACHE, cache)
        return out

    def report(self, tables: Iterable[str]) -> InventoryAnswer | None:
        """Send the inventory; ``None`` when there is nothing to report. When the server
        found every table a match at the very cursor, count and checksum reported now, the
        report would tell it nothing new (it answers such a report from its record of the
        match, counting nothing): the verdicts are taken from that answer, and nothing is
        sent. Any change that reaches a table moves its cursor, so the next report goes."""
        held = self.held(tables)
        if not held:
            return None
        cache: dict[str, Any] = self.replica.get_state(CACHE) or {}
        if all(_matched(cache.get(name), inventory) for name, inventory in held.items()):
            return {
                "tables": [
                    {"table": n, "status": "match", "rows": i["rows"], "expected_rows": i["rows"]}
                    for n, i in held.items()
                ],
                "rescope": [],
            }
        request: InventoryRequest = {
            "device": self.session.device_id,
            "app": self.session.app,
            "tables": held,
        }
        answer: InventoryAnswer = self.session.call("POST", "/sync/v1/inventory", request)
        if answer["rescope"]:
            self.forget(answer["rescope"])
        matched = [
            v["table"]
            for v in answer["tables"]
            if v["status"] == "match" and v["table"] in held and v["table"] not in answer["rescope"]
        ]
        fresh = [n for n in matched if not (cache.get(n) or {}).get("matched")]
        if fresh:  # a durable write only when a verdict is new
            with self.replica.write() as conn:
                cache = self.replica.get_state(CACHE, conn) or {}
                for name in fresh:
                    kept = cache.get(name)
                    if kept is not None and kept["cursor"] == held[name]["cursor"]:
                        kept["matched"] = True
                self.replica.set_state(conn, CACHE, cache)
        return answer

    def forget(self, tables: Iterable[str] | None = None) -> None:
        """Drop the kept counts of ``tables`` (all when None): computed afresh next time."""
        with self.replica.write() as conn:
            if tables is None:
                self.replica.delete_state(conn, CACHE)
                return
            cache = self.replica.get_state(CACHE, conn) or {}
            for name in tables:
                cache.pop(name, None)
            self.replica.set_state(conn, CACHE, cache)

    def counts(self) -> dict[str, int]:
        """Rows held per profile table (what a receipt reports as removed)."""
        out: dict[str, int] = {}
        with self.replica.read() as conn:
            for name in self.replica.sql:
                out[name] = int(conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0])
        return out

    # -- receipts ---------------------------------------------------------------------------

    def receipt(
        self,
        kind: ReceiptKind,
        tables: dict[str, int],
        *,
        outbox: int,
        files: int,
        reason: str | None,
    ) -> bool:
        """Tell the server what was removed; kept for the next sync when it cannot be sent.
        Returns whether it was delivered."""
        request: ReceiptRequest = {
            "device": self.session.device_id,
            "app": self.session.app,
            "kind": kind,
            "tables": tables,
            "outbox": outbox,
            "files": files,
            "reason": reason,
        }
        with self.replica.write() as conn:
            self.replica.set_state(conn, RECEIPT, request)
        return self.flush()

    def flush(self) -> bool:
        """Send a receipt kept from before; True when none is left."""
        request = self.replica.get_state(RECEIPT)
        if not request:
            return True
        try:
            self.session.call("POST", "/sync/v1/receipt", request)
        except Offline:
            return False
        except ServerError as exc:
            if exc.status >= 500 or exc.status == 401:
                return False  # try again next time
            # refused for good (an old server, a wipe already closed): nothing to resend
            log.warning("the server refused the %s receipt: %s", request.get("kind"), exc)
        with self.replica.write() as conn:
            self.replica.delete_state(conn, RECEIPT)
        return True
