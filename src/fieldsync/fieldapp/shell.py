"""What the field app's screens need of the app: its interface (:class:`Shell`) and the
status bar every screen shows. The app imports its screens and the screens import this, so
the two import each other in one direction only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from textual.widgets import Static

from fieldsync.client import Device, Progress, Status, SyncReport
from fieldsync.fieldapp.indicator import describe


@runtime_checkable
class Shell(Protocol):
    """The running field app, as its screens use it."""

    device: Device
    status: Status
    syncing: bool

    async def sync_now(
        self,
        tables: list[str] | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> SyncReport | None: ...

    def names(self, table: str, record_id: str) -> str | None: ...


class StatusBar(Static):
    """The always-visible connection and sync indicator (the offline template's icon)."""

    DEFAULT_CSS = """
    StatusBar { dock: top; height: 1; padding: 0 1; background: $boost; }
    """

    def on_mount(self) -> None:
        app = self.app
        if isinstance(app, Shell):
            self.show(app.status)

    def show(self, status: Status) -> None:
        self.update(describe(status))
