"""The field app: a Textual terminal app on the device SDK.

    from fieldsync.client import Device
    from fieldsync.fieldapp.app import FieldApp

    FieldApp(Device("/data/tech1")).run()

Everything the person sees comes from the device's replica, so the app works the same with
the network gone; only a sync talks to the server. The SDK's calls that may wait (a sync,
and local writes, which queue behind a running sync) run in threads; the SDK's status
callbacks arrive from those threads and are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, OptionList, Static
from textual.widgets.option_list import Option

from fieldsync.client import (
    AccessRemoved,
    Device,
    DeviceError,
    Offline,
    Progress,
    ServerError,
    SignInRequired,
    Status,
    SyncReport,
)
from fieldsync.errors import FieldsyncError
from fieldsync.fieldapp import forms
from fieldsync.fieldapp.screens import (
    FirstSyncScreen,
    RecordForm,
    SettingsScreen,
    SyncErrorsScreen,
)
from fieldsync.fieldapp.shell import StatusBar

log = logging.getLogger(__name__)
LIST_LIMIT = 1000
AUTO_SYNC_TICK = 30.0  # seconds between checks of what is due
ACCESS_REMOVED = 3  # the app's return code when the server took the app away


class FieldApp(App[None]):
    """Lists of the app's views, record forms, the sync status, sync now and sync errors."""

    TITLE = "fieldsync"
    CSS = """
    #lists { width: 32; border: round $primary; }
    #list-title { padding: 0 1; text-style: bold; }
    #rows { height: 1fr; }
    .hint { color: $text-muted; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sync", "Sync now"),
        Binding("e", "errors", "Sync errors"),
        Binding("t", "settings", "Sync settings"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, device: Device, *, auto_sync: bool = True) -> None:
        super().__init__()
        self.device = device
        self.auto_sync = auto_sync
        self.status = device.status
        self.syncing = False
        self.last_report: SyncReport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unobserve: Callable[[], None] | None = None

    # -- start and stop ---------------------------------------------------------------------

    def on_mount(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unobserve = self.device.observe(self._observed)
        try:
            handshake = self.device.handshake_data
        except DeviceError as exc:
            self.exit(message=f"{exc}")
            return
        self.sub_title = f"{handshake['app']['name']} · {handshake['user']['name']}"
        self.push_screen(HomeScreen())
        if self.needs_first_sync():
            self.push_screen(FirstSyncScreen())
        if self.auto_sync:
            self.set_interval(AUTO_SYNC_TICK, self.tick)

    def on_unmount(self) -> None:
        if self._unobserve is not None:
            self._unobserve()

    def needs_first_sync(self) -> bool:
        last = self.device.status.last_sync
        return any(not last.get(t) for t in self.device.handshake_data["order"])

    # -- status -------------------------------------------------------------------------------

    def _observed(self, status: Status) -> None:
        """Called by the SDK, from whichever thread changed something."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.show_status, status)

    def show_status(self, status: Status | None = None) -> None:
        self.status = status or self.device.status
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.show(self.status)

    # -- sync -----------------------------------------------------------------------------------

    async def sync_now(
        self,
        tables: list[str] | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> SyncReport | None:
        """Sync in a thread; say what happened in the app's words. ``None`` when it failed."""
        if self.syncing:
            self.notify("A sync is already running.")
            return None
        loop = asyncio.get_running_loop()

        def report(p: Progress) -> None:
            if progress is not None:
                loop.call_soon_threadsafe(progress, p)

        self.syncing = True
        result: SyncReport | None = None
        try:
            result = await asyncio.to_thread(self.device.sync, tables, progress=report)
        except Offline:
            self.notify(
                "No connection to the server: your changes are kept on this device.",
                title="Offline",
                severity="warning",
            )
        except SignInRequired:
            self.notify(
                "Your session ended: sign in again with 'fieldsync device login'.",
                severity="error",
            )
        except (ServerError, DeviceError, FieldsyncError) as exc:
            removed = isinstance(exc, AccessRemoved)
            self.notify(
                str(exc), title="Access removed" if removed else "Sync failed", severity="error"
            )
        else:
            self.last_report = result
            if result.rejected:
                self.notify(
                    f"{result.rejected} change(s) were rejected: press e to see them.",
                    severity="warning",
                )
            else:
                self.notify(f"Synced: {result.uploaded} uploaded.", title="Sync")
        finally:
            self.syncing = False
            self.show_status()
            self.after_sync()
        return result

    def after_sync(self) -> None:
        """Show what the sync brought, or leave when the device no longer holds the app."""
        try:
            tables = self.device.handshake_data["order"]
        except DeviceError:
            tables = None
        if tables is None:
            self.exit(
                return_code=ACCESS_REMOVED,
                message="You may no longer take this app offline: its data was removed from "
                "this device, and changes that had not been uploaded are kept as sync errors "
                "('fieldsync device errors').",
            )
            return
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen):
                screen.reload()

    def action_sync(self) -> None:
        self.run_worker(self.sync_now(), group="sync")

    async def tick(self) -> None:
        """Automatic sync: the tables that are due (the profile's intervals or the user's
        frequency, Wi-Fi only where chosen), and the outbox as soon as there is one."""
        if self.syncing or not self.allows_automatic_sync():
            return
        due = self.device.due_tables()
        if due or self.device.pending_changes():
            await self.sync_now(due)

    def allows_automatic_sync(self) -> bool:
        """No automatic sync without a network, with the frequency set to none, or on a
        metered network when the user chose Wi-Fi only (where the app allows each)."""
        device = self.device
        allows = device.handshake_data["app"]
        settings = device.settings()
        if not device.network.connected():
            return False
        if allows.get("allow_sync_frequency") and settings["frequency"] == 0:
            return False
        wifi_only = allows.get("allow_wifi_only") and settings["wifi_only"]
        return not (wifi_only and not device.network.wifi())

    # -- screens ----------------------------------------------------------------------------------

    def action_errors(self) -> None:
        self.push_screen(SyncErrorsScreen())

    def action_settings(self) -> None:
        self.push_screen(SettingsScreen())

    def names(self, table: str, record_id: str) -> str | None:
        """A looked-up row's name from the replica (the signed-in user is known too)."""
        user = self.device.handshake_data["user"]
        if record_id == user["id"]:
            return str(user.get("fullname") or user["name"])
        try:
            t, _ = self.device.replica.table(table)
            row = self.device.get(table, record_id)
        except (FieldsyncError, ValueError):
            return None
        return None if row is None else str(row.get(t.primary_name) or "")


class HomeScreen(Screen[None]):
    """The app's views on the left, the rows of the chosen one on the right."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.specs: list[forms.ListSpec] = []
        self.current: forms.ListSpec | None = None

    @property
    def field_app(self) -> FieldApp:
        app = self.app
        assert isinstance(app, FieldApp)
        return app

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with Horizontal():
            yield OptionList(id="lists")
            with Vertical():
                yield Static("", id="list-title")
                yield DataTable(id="rows", cursor_type="row", zebra_stripes=True)
                yield Static(
                    "↑ waiting to upload   ! rejected at the last sync   enter: open",
                    classes="hint",
                )
        yield Footer()

    def on_mount(self) -> None:
        self.fill_lists()
        self.reload()

    def fill_lists(self) -> None:
        """The app's views (or tables); keeps the chosen one when it is still there."""
        self.specs = forms.lists(self.field_app.device.handshake_data)
        lists = self.query_one("#lists", OptionList)
        lists.clear_options()
        lists.add_options(Option(s.name, id=str(i)) for i, s in enumerate(self.specs))
        if self.current not in self.specs:
            self.current = self.specs[0] if self.specs else None
        if self.current is not None:
            with self.prevent(OptionList.OptionHighlighted):
                lists.highlighted = self.specs.index(self.current)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "lists" and event.option.id is not None:
            self.show_list(self.specs[int(event.option.id)])

    def show_list(self, spec: forms.ListSpec) -> None:
        self.current = spec
        self.reload()

    def reload(self) -> None:
        app = self.field_app
        device = app.device
        handshake = device.handshake_data
        if forms.lists(handshake) != self.specs:  # a new profile version or other views
            self.fill_lists()
        spec = self.current
        if spec is None:
            return
        table = forms.tables(handshake)[spec.table]
        if spec.fetchxml is not None:
            rows = device.query(fetchxml=spec.fetchxml, top=LIST_LIMIT)
        else:
            rows = device.query(spec.table, top=LIST_LIMIT)
        pending = {c["recordid"] for c in device.outbox() if c["tablename"] == spec.table}
        rejected = {e["recordid"] for e in device.errors() if e["tablename"] == spec.table}
        columns = forms.list_columns(table, list(rows[0]) if rows else [table.primary_name])
        grid = self.query_one("#rows", DataTable)
        grid.clear(columns=True)
        grid.add_column(" ", key="_mark", width=2)
        for name in columns:
            col = table.column(name)
            grid.add_column(col.label() if col else name, key=name)
        for row in rows:
            rid = str(row[table.primary_id])
            mark = "↑" if rid in pending else "!" if rid in rejected else ""
            cells = [forms.show(table.column(c), row.get(c), app.names, row) for c in columns]
            grid.add_row(mark, *cells, key=rid)
        title = f"{spec.name} · {len(rows)} row(s)"
        if pending:
            title += f" · {len(pending)} waiting to upload"
        self.query_one("#list-title", Static).update(title)

    def action_reload(self) -> None:
        self.reload()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.open(event.row_key.value)

    def action_open(self) -> None:
        grid = self.query_one("#rows", DataTable)
        if grid.row_count:
            key = grid.coordinate_to_cell_key(grid.cursor_coordinate).row_key.value
            if key is not None:
                self.open(key)

    def open(self, record_id: str | None) -> None:
        if self.current is None:
            return
        row: dict[str, Any] | None = None
        if record_id is not None:
            row = self.field_app.device.get(self.current.table, record_id)
            if row is None:
                self.notify("That row is no longer on this device.", severity="warning")
                self.reload()
                return

        def done(saved: bool | None) -> None:
            self.reload()

        self.app.push_screen(RecordForm(self.current.table, row), done)

    def action_new(self) -> None:
        self.open(None)
