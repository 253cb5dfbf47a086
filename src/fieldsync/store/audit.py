"""The security audit log: refusals and security changes, as log lines and ``fs_audit`` rows.

What is recorded (``event``, with the acting user, the client's address, a target, an
outcome and a detail):

    signin.refused           a wrong password, a disabled user, too many failures
    write.refused            the records service refused a write for lack of privilege
    cursor.forged            a sync download cursor this server did not issue
    ticket.forged            a file download ticket that is not valid for its user and file
    device.takeover          a handshake naming a device registered to another user
    token.revoked            a refresh token (its session) or an API token revoked
    session.reused           a refresh token used twice: its session is revoked
    role.assigned / role.removed               a security role given or taken away
    team.member_added / team.member_removed    team membership
    user.business_unit_changed                 a user moved to another business unit

Only refusals and security changes are recorded, so the hot paths (reads, permitted writes,
syncs) never touch the log.

A refusal rolls its transaction back, and its audit row must not go with it: events raised
inside a ``Store.write()`` wait until that transaction has ended and are then written in a
short transaction of their own (on SQLite there is one writer, so they could not be written
beside it anyway). Changes (roles, membership, business unit) are written only if their
transaction commits.

Bounded in rate: refusals are limited to ``per_minute`` rows per minute for each
(event, user) and each (event, address), and to ``per_minute * 50`` rows per minute in all.
The rest are counted; when the minute is over, one ``outcome="suppressed"`` row per event
says how many were left out (also in :attr:`AuditLog.suppressed`). Changes are not limited:
they need administrator rights. Bounded in size: every few hundred rows, rows beyond the
newest ``rows`` and rows older than ``days`` are deleted (one indexed DELETE).

Every event is also one log line on the ``fieldsync.audit`` logger, JSON:

    {"event": "signin.refused", "user": null, "username": "ann", "ip": "10.0.0.7",
     "target": "ann", "outcome": "refused", "detail": "invalid username or password"}
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from fieldsync.store.catalog import fs_audit
from fieldsync.store.engine import WRITE_OPTION
from fieldsync.types import as_uuid

if TYPE_CHECKING:
    from fieldsync.store.store import Store

log = logging.getLogger("fieldsync.audit")

SIGNIN_REFUSED = "signin.refused"
WRITE_REFUSED = "write.refused"
CURSOR_FORGED = "cursor.forged"
TICKET_FORGED = "ticket.forged"
DEVICE_TAKEOVER = "device.takeover"
TOKEN_REVOKED = "token.revoked"
SESSION_REUSED = "session.reused"
ROLE_ASSIGNED = "role.assigned"
ROLE_REMOVED = "role.removed"
TEAM_MEMBER_ADDED = "team.member_added"
TEAM_MEMBER_REMOVED = "team.member_removed"
BUSINESS_UNIT_CHANGED = "user.business_unit_changed"
EVENTS = (
    SIGNIN_REFUSED,
    WRITE_REFUSED,
    CURSOR_FORGED,
    TICKET_FORGED,
    DEVICE_TAKEOVER,
    TOKEN_REVOKED,
    SESSION_REUSED,
    ROLE_ASSIGNED,
    ROLE_REMOVED,
    TEAM_MEMBER_ADDED,
    TEAM_MEMBER_REMOVED,
    BUSINESS_UNIT_CHANGED,
)
CHANGES = frozenset(
    {ROLE_ASSIGNED, ROLE_REMOVED, TEAM_MEMBER_ADDED, TEAM_MEMBER_REMOVED, BUSINESS_UNIT_CHANGED}
)
SUPPRESSED = "suppressed"
PRUNE_EVERY = 256  # rows written between two prunings
MAX_KEYS = 100_000  # distinct (event, user/address) keys counted in one minute

client_address: contextvars.ContextVar[str] = contextvars.ContextVar(
    "fieldsync_client_address", default=""
)
"""The address of the client whose request is being served (the HTTP server sets it)."""


@dataclass(frozen=True)
class AuditLimits:
    rows: int = 100_000  # newest rows kept
    days: int = 90  # rows older than this are deleted
    per_minute: int = 20  # refusal rows per minute for one (event, user) or (event, address)


@dataclass(frozen=True)
class AuditEvent:
    event: str
    outcome: str
    userid: uuid.UUID | None = None
    username: str | None = None
    address: str | None = None
    target: str | None = None
    detail: Any = None

    def to_row(self, at: dt.datetime) -> dict[str, Any]:
        return {
            "createdon": at,
            "event": self.event,
            "userid": self.userid,
            "username": (self.username or None) and self.username[:256],
            "address": (self.address or None) and self.address[:64],
            "target": (self.target or None) and self.target[:512],
            "outcome": self.outcome,
            "detail": self.detail,
        }

    def log_line(self) -> str:
        return json.dumps(
            {
                "event": self.event,
                "user": None if self.userid is None else str(self.userid),
                "username": self.username,
                "ip": self.address or None,
                "target": self.target,
                "outcome": self.outcome,
                "detail": self.detail,
            },
            default=str,
            separators=(", ", ": "),
        )


class _Pending(threading.local):
    depth = 0

    def __init__(self) -> None:
        self.events: list[tuple[AuditEvent, bool]] = []  # (event, only if committed)


class AuditLog:
    """The store's audit log (``store.audit``).

    >>> store.audit.device_takeover(user, "dev-1", owner=other)   # doctest: +SKIP
    >>> store.audit.read(event="device.takeover")                  # doctest: +SKIP
    """

    def __init__(self, store: Store, limits: AuditLimits | None = None) -> None:
        self.store = store
        self.limits = limits or AuditLimits()
        self.suppressed: Counter[str] = Counter()  # events left out by the rate limit, ever
        self.dropped = 0  # events that could not be written (the database was unavailable)
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._minute = 0
        self._counts: Counter[tuple[str, str]] = Counter()
        self._total = 0
        self._left_out: Counter[str] = Counter()
        self._since_prune = PRUNE_EVERY  # prune at the first write

    def configure(self, limits: AuditLimits) -> None:
        self.limits = limits

    # -- transactions (Store.write calls these) ---------------------------------------------

    def enter(self) -> None:
        self._pending.depth += 1

    def mark(self) -> int:
        """Where the current write transaction's events stand: a savepoint's start, for
        :meth:`rolled_back`."""
        return len(self._pending.events)

    def rolled_back(self, mark: int, *, refusals: bool = True) -> None:
        """A savepoint taken at ``mark`` rolled back: the changes it recorded did not happen
        (and with ``refusals=False``, its refusals are forgotten too: the work is about to
        be tried again, and the attempt that counts records its own)."""
        events = self._pending.events
        events[mark:] = [] if not refusals else [e for e in events[mark:] if not e[1]]

    def leave(self, committed: bool) -> None:
        """A write transaction ended: write what it raised (changes only if it committed)."""
        p = self._pending
        p.depth -= 1
        if p.depth > 0 or not p.events:
            return
        events = [e for e, only_committed in p.events if committed or not only_committed]
        p.events = []
        self._write(events)

    # -- recording --------------------------------------------------------------------------

    def record(
        self,
        event: str,
        *,
        outcome: str = "refused",
        user: uuid.UUID | None = None,
        username: str | None = None,
        target: str | None = None,
        detail: Any = None,
        address: str | None = None,
    ) -> None:
        """Record one event (after the current write transaction, if there is one)."""
        change = event in CHANGES
        item = AuditEvent(
            event,
            outcome,
            user,
            username,
            client_address.get() if address is None else address,
            target,
            detail,
        )
        summaries = self._admit(item, limited=not change)
        if self._pending.depth > 0:
            self._pending.events.extend((s, change and s is item) for s in summaries)
        else:
            self._write(summaries)

    def _admit(self, item: AuditEvent, *, limited: bool) -> list[AuditEvent]:
        """The events to write now: last minute's summaries, then ``item`` unless the rate
        limit leaves it out."""
        minute = int(time.time() // 60)
        out: list[AuditEvent] = []
        with self._lock:
            if minute != self._minute:
                out += [
                    AuditEvent(event, SUPPRESSED, detail={"count": n, "seconds": 60})
                    for event, n in sorted(self._left_out.items())
                ]
                self._minute = minute
                self._counts.clear()
                self._left_out.clear()
                self._total = 0
            if limited:
                k = self.limits.per_minute
                keys = [(item.event, f"u:{item.userid or item.username or ''}")]
                if item.address:
                    keys.append((item.event, f"a:{item.address}"))
                over = (
                    self._total >= k * 50
                    or len(self._counts) >= MAX_KEYS
                    or any(self._counts[key] >= k for key in keys)
                )
                if over:
                    self._left_out[item.event] += 1
                    self.suppressed[item.event] += 1
                    return out
                for key in keys:
                    self._counts[key] += 1
                self._total += 1
        out.append(item)
        return out

    def flush(self) -> None:
        """Write the summaries of a minute that is over (reading does this first)."""
        with self._lock:
            if int(time.time() // 60) == self._minute or not self._left_out:
                return
            summaries = [
                AuditEvent(event, SUPPRESSED, detail={"count": n, "seconds": 60})
                for event, n in sorted(self._left_out.items())
            ]
            self._left_out.clear()
        self._write(summaries)

    def _write(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        for e in events:
            log.info("%s", e.log_line())
        now = dt.datetime.now(dt.UTC)
        try:
            with self.store.engine.connect() as conn:
                conn = conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    conn.execute(fs_audit.insert(), [e.to_row(now) for e in events])
                    self._since_prune += len(events)
                    if self._since_prune >= PRUNE_EVERY:
                        self._since_prune = 0
                        self._prune(conn, now)
        except sa.exc.SQLAlchemyError as exc:
            # the refusal itself must still be answered; the log line above keeps the event
            self.dropped += len(events)
            log.warning("the audit log could not be written: %s", exc)

    def _prune(self, conn: sa.Connection, now: dt.datetime) -> None:
        newest = conn.execute(sa.select(sa.func.max(fs_audit.c.auditid))).scalar() or 0
        conn.execute(
            fs_audit.delete().where(
                sa.or_(
                    fs_audit.c.auditid <= newest - self.limits.rows,
                    fs_audit.c.createdon < now - dt.timedelta(days=self.limits.days),
                )
            )
        )

    # -- the events, by name -----------------------------------------------------------------

    def signin_refused(self, username: str, reason: str, *, address: str | None = None) -> None:
        self.record(
            SIGNIN_REFUSED, username=username, target=username, detail=reason, address=address
        )

    def write_refused(self, user: uuid.UUID, username: str, reason: str) -> None:
        self.record(WRITE_REFUSED, user=user, username=username or None, detail=reason)

    def cursor_forged(self, user: uuid.UUID, device: str, reason: str) -> None:
        self.record(CURSOR_FORGED, user=user, target=f"device {device}", detail=reason)

    def ticket_forged(self, user: uuid.UUID, file_id: uuid.UUID, reason: str) -> None:
        self.record(TICKET_FORGED, user=user, target=f"file {file_id}", detail=reason)

    def device_takeover(
        self, user: uuid.UUID, device: str, *, owner: uuid.UUID, username: str = ""
    ) -> None:
        """A handshake by ``user`` named ``device``, which is registered to ``owner``."""
        self.record(
            DEVICE_TAKEOVER,
            user=user,
            username=username or None,
            target=f"device {device}",
            detail={"owner": str(owner)},
        )

    def token_revoked(self, user: uuid.UUID | None, kind: str, token_id: uuid.UUID) -> None:
        self.record(TOKEN_REVOKED, outcome="done", user=user, target=f"{kind} {token_id}")

    def session_reused(self, user: uuid.UUID, session_id: uuid.UUID) -> None:
        self.record(
            SESSION_REUSED,
            outcome="revoked",
            user=user,
            target=f"session {session_id}",
            detail="a refresh token was used twice: the session is revoked",
        )

    def change(
        self, event: str, user: uuid.UUID, username: str, target: str, detail: Any = None
    ) -> None:
        """A security change by ``user`` (written only if its transaction commits)."""
        self.record(
            event,
            outcome="done",
            user=user,
            username=username or None,
            target=target,
            detail=detail,
        )

    # -- reading -----------------------------------------------------------------------------

    def select(
        self,
        *,
        since: dt.datetime | None = None,
        event: str | None = None,
        user: str | None = None,
        limit: int = 1000,
    ) -> sa.Select[Any]:
        """The rows, newest first: since a moment, of one event (or a prefix ending in
        ``.``), of one user (an id, or the name given)."""
        stmt = sa.select(fs_audit).order_by(fs_audit.c.auditid.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(fs_audit.c.createdon >= since)
        if event:
            if event.endswith("."):
                stmt = stmt.where(fs_audit.c.event.startswith(event, autoescape=True))
            else:
                stmt = stmt.where(fs_audit.c.event == event)
        if user:
            try:
                stmt = stmt.where(fs_audit.c.userid == as_uuid(user))
            except ValueError:
                name = user.strip().lower()
                su = self.store.sql_table("systemuser")
                stmt = stmt.where(
                    sa.or_(
                        sa.func.lower(fs_audit.c.username) == name,
                        fs_audit.c.userid.in_(
                            sa.select(su.c.systemuserid).where(
                                sa.func.lower(su.c.domainname) == name
                            )
                        ),
                    )
                )
        return stmt

    def read(self, **criteria: Any) -> list[dict[str, Any]]:
        self.flush()
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(self.select(**criteria)).mappings()]
