"""The offline template's status icon, in text (pure).

Power Apps' offline template shows a globe whose variant follows ``Connection.Sync``; here each
of its nine states becomes a glyph, a short label and a colour, and :func:`describe` adds what
a person in the field wants to know next: how many changes wait, how many were rejected, and
when the device last synced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from fieldsync.client import Status


@dataclass(frozen=True)
class Indicator:
    glyph: str
    label: str
    style: str  # a Rich style


INDICATORS: Mapping[str, Indicator] = {
    "Connected": Indicator("●", "Online · synced", "bold green"),
    "ConnectedWithWarning": Indicator("▲", "Online · sync errors", "bold yellow"),
    "ConnectedPendingUpsync": Indicator("↑", "Online · changes to upload", "bold cyan"),
    "ConnectedError": Indicator("✖", "Online · sync failed", "bold red"),
    "ConnectedRefresh": Indicator("⟳", "Online · syncing", "bold blue"),
    "NotConnected": Indicator("○", "Offline", "bold white"),
    "NotConnectedWithWarning": Indicator("△", "Offline · sync errors", "bold yellow"),
    "NotConnectedPendingUpsync": Indicator("↑", "Offline · changes waiting", "bold magenta"),
    "NotConnectedSyncError": Indicator("✖", "Offline · sync failed", "bold red"),
}


def indicator(state: str) -> Indicator:
    return INDICATORS.get(state, Indicator("?", state, "bold"))


def describe(status: Status, now: dt.datetime | None = None) -> str:
    """One line of Rich markup: the state, pending changes, sync errors, the last sync."""
    mark = indicator(status.sync_state)
    parts = [f"[{mark.style}]{mark.glyph} {mark.label}[/]"]
    if status.pending_changes:
        parts.append(f"{status.pending_changes} pending")
    if status.sync_errors:
        parts.append(f"[yellow]{status.sync_errors} sync error(s)[/]")
    parts.append(f"last sync {ago(status.last_sync, now)}")
    return "  │  ".join(parts)


def ago(last_sync: Mapping[str, str | None], now: dt.datetime | None = None) -> str:
    """When every table was last in sync: the oldest table's last sync, as a person says it."""
    times = [dt.datetime.fromisoformat(v) for v in last_sync.values() if v]
    if not times or len(times) < len(last_sync):
        return "never"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - min(times)).total_seconds())
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"
