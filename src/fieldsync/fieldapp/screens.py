"""The field app's screens besides the home screen: the first sync with a progress bar per
table, a record form with its lookups, the lookup picker, the sync errors and the sync
settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Input,
    Label,
    OptionList,
    ProgressBar,
    Select,
    SelectionList,
    Static,
    Switch,
)
from textual.widgets.option_list import Option

from fieldsync.client import DeviceError, Progress
from fieldsync.errors import FieldsyncError
from fieldsync.fieldapp import forms
from fieldsync.fieldapp.indicator import ago
from fieldsync.fieldapp.shell import Shell, StatusBar
from fieldsync.schema.model import ColumnType, Table

T = ColumnType


class _Screen(Screen[Any]):
    @property
    def field_app(self) -> Shell:
        app = self.app
        assert isinstance(app, Shell)
        return app


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB"):
        if count < 1024 or unit == "MB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} B"  # pragma: no cover


# -- the first sync --------------------------------------------------------------------------


class FirstSyncScreen(_Screen):
    """The first download: a progress bar per table with its rows and bytes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "continue", "Start working"),
        Binding("r", "retry", "Retry"),
        Binding("escape", "continue", "Work offline", show=False),
    ]
    DEFAULT_CSS = """
    FirstSyncScreen .table-row { height: 3; padding: 0 2; }
    FirstSyncScreen .table-name { width: 24; }
    FirstSyncScreen .counts { width: 30; }
    #first-sync-message { padding: 1 2; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.done = False
        self.counts: dict[str, tuple[int, int, bool]] = {}

    def compose(self) -> ComposeResult:
        yield StatusBar()
        handshake = self.field_app.device.handshake_data
        defs = forms.tables(handshake)
        yield Static("Downloading your data for the first time…", id="first-sync-message")
        for name in handshake["order"]:
            with Horizontal(classes="table-row"):
                yield Label(defs[name].display_name or name, classes="table-name")
                yield ProgressBar(total=None, show_eta=False, id=f"bar-{name}")
                yield Label("waiting", id=f"count-{name}", classes="counts")
        yield Footer()

    def on_mount(self) -> None:
        self.action_retry()

    def action_retry(self) -> None:
        if not self.done and not self.field_app.syncing:
            self.query_one("#first-sync-message", Static).update(
                "Downloading your data for the first time…"
            )
            self.run_worker(self._run(), group="sync")

    async def _run(self) -> None:
        report = await self.field_app.sync_now(progress=self.progress)
        message = self.query_one("#first-sync-message", Static)
        if report is None:
            message.update(
                "[b]The first sync needs the server.[/b] Press r to try again, or Esc to "
                "work with what is on this device."
            )
            return
        self.done = True
        for name, rows in report.downloaded.items():
            bar = self.query_one(f"#bar-{name}", ProgressBar)
            bar.update(total=max(rows, 1), progress=max(rows, 1))
            if name not in self.counts:
                self.query_one(f"#count-{name}", Label).update(f"{rows} rows")
        total = sum(report.downloaded.values())
        message.update(
            f"[b]Ready.[/b] {total} rows ({_size(report.bytes)}) are on this device. "
            "Press Enter to start working."
        )

    def progress(self, p: Progress) -> None:
        self.counts[p.table] = (p.rows, p.bytes, p.done)
        bar = self.query_one(f"#bar-{p.table}", ProgressBar)
        if p.done:
            bar.update(total=max(p.rows, 1), progress=max(p.rows, 1))
        self.query_one(f"#count-{p.table}", Label).update(
            f"{p.rows} rows, {_size(p.bytes)}" + (" ✓" if p.done else "")
        )

    def action_continue(self) -> None:
        if not self.field_app.syncing:
            self.dismiss(self.done)


# -- a record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """What the lookup picker chose: a row ``(id, table)``, or ``None`` to clear."""

    value: tuple[str, str] | None


class LookupPicker(ModalScreen[Pick | None]):
    """Pick a row of the lookup's target tables from the replica; type to filter."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    LookupPicker { align: center middle; }
    LookupPicker > Vertical { width: 60; height: 24; border: thick $primary; background: $surface; }
    """

    def __init__(self, field: forms.Field, choices: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.field = field
        self.choices = choices  # (label, id, table)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Choose {self.field.label}")
            yield Input(placeholder="type to filter", id="lookup-filter")
            yield OptionList(id="lookup-options")

    def on_mount(self) -> None:
        self.fill("")

    def fill(self, text: str) -> None:
        options = self.query_one("#lookup-options", OptionList)
        options.clear_options()
        if not self.field.column.required:
            options.add_option(Option("(none)", id="-"))
        needle = text.casefold()
        for label, rid, table in self.choices:
            if needle in label.casefold():
                options.add_option(Option(label, id=f"{table}:{rid}"))
        if options.option_count:  # typing highlights the first match, not "(none)"
            first = 0 if self.field.column.required else 1
            options.highlighted = first if text and options.option_count > first else 0

    def on_input_submitted(self, event: Input.Submitted) -> None:
        options = self.query_one("#lookup-options", OptionList)
        if options.highlighted is not None and options.option_count:
            self.choose(options.get_option_at_index(options.highlighted).id)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.fill(event.value)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.choose(event.option.id)

    def choose(self, key: str | None) -> None:
        if key is None or key == "-":
            self.dismiss(Pick(None))
        else:
            table, rid = key.split(":", 1)
            self.dismiss(Pick((rid, table)))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDelete(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Delete"),
        Binding("n,escape", "answer(False)", "Keep"),
    ]
    DEFAULT_CSS = """
    ConfirmDelete { align: center middle; }
    ConfirmDelete > Label { width: 50; border: thick $error; background: $surface; padding: 1 2; }
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.what = name

    def compose(self) -> ComposeResult:
        yield Label(f"Delete {self.what}? (y / n)")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class MultiChoice(SelectionList[int]):
    """A multi-select whose chosen options carry a check mark in their text, so they differ
    by more than colour."""

    def __init__(
        self, options: list[tuple[str, int, bool]], *, id: str, disabled: bool = False
    ) -> None:
        self.labels = {value: label for label, value, _ in options}
        super().__init__(
            *((self._prompt(label, on), value, on) for label, value, on in options),
            id=id,
            disabled=disabled,
        )

    @staticmethod
    def _prompt(label: str, chosen: bool) -> str:
        return f"✓ {label}" if chosen else f"  {label}"

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged[int]) -> None:
        chosen = set(self.selected)
        for index in range(self.option_count):
            value = self.get_option_at_index(index).value
            self.replace_option_prompt_at_index(
                index, self._prompt(self.labels[value], value in chosen)
            )


class RecordForm(_Screen):
    """One row: a field per column, lookups picked from the replica; save, delete, cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: a text field has the focus, and its own ctrl+d deletes a character
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+d", "delete", "Delete", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]
    DEFAULT_CSS = """
    RecordForm .field { height: auto; padding: 0 1; }
    RecordForm .field Label { width: 28; padding: 1 0 0 0; }
    RecordForm .field Input, RecordForm .field Select, RecordForm .field Button { width: 1fr; }
    RecordForm SelectionList { height: auto; max-height: 7; width: 1fr; }
    #form-title { padding: 0 1; text-style: bold; }
    #form-error { color: $error; padding: 0 1; height: auto; }
    #form-buttons { height: 3; padding: 0 1; }
    """

    def __init__(self, table: str, row: dict[str, Any] | None) -> None:
        super().__init__()
        self.table_name = table
        self.row = row or {}
        self.lookups: dict[str, tuple[str, str] | None] = {}

    def compose(self) -> ComposeResult:
        app = self.field_app
        handshake = app.device.handshake_data
        self.table = forms.tables(handshake)[self.table_name]
        self.fields = forms.form_fields(self.table, handshake["columns"][self.table_name])
        title = self.row.get(self.table.primary_name) if self.row else None
        kind = self.table.display_name or self.table.name
        yield StatusBar()
        yield Static(f"{kind}: {title}" if self.row else f"New {kind}", id="form-title")
        with VerticalScroll(id="form-fields"):
            for field in self.fields:
                with Horizontal(classes="field"):
                    yield Label(field.label + (" *" if field.column.required else ""))
                    yield self._widget(field)
        yield Static("", id="form-error")
        with Horizontal(id="form-buttons"):
            yield Button("Save", id="save", variant="primary")
            if self.row:
                yield Button("Delete", id="delete", variant="error")
            yield Button("Cancel", id="cancel")
        yield Footer()

    def _widget(self, field: forms.Field) -> Widget:
        wid = f"f-{field.name}"
        value = forms.current(field, self.row) if self.row else None
        col = field.column
        disabled = not field.editable
        if field.type is T.LOOKUP:
            self.lookups[field.name] = value
            label = self._lookup_label(field, value)
            return Button(label, id=wid, disabled=disabled, classes="lookup")
        if field.type is T.CHOICE:
            options = [(o.label, o.value) for o in col.options]
            return Select(
                options, id=wid, value=Select.NULL if value is None else value, disabled=disabled
            )
        if field.type is T.BOOLEAN:
            return Select(
                [("Yes", True), ("No", False)],
                id=wid,
                value=Select.NULL if value is None else bool(value),
                disabled=disabled,
            )
        if field.type is T.MULTICHOICE:
            chosen = set(value or [])
            return MultiChoice(
                [(o.label, o.value, o.value in chosen) for o in col.options],
                id=wid,
                disabled=disabled,
            )
        text = "" if value is None else forms.show(col, value, self.field_app.names, self.row)
        return Input(text, id=wid, disabled=disabled)

    def on_mount(self) -> None:
        # the first field that can be changed takes the focus, so typing starts at once
        for field in self.fields:
            widget = self.query_one(f"#f-{field.name}")
            if field.editable and widget.focusable:
                widget.focus()
                break

    def _lookup_label(self, field: forms.Field, value: tuple[str, str] | None) -> str:
        if value is None:
            return "(none) · choose…"
        rid, table = value
        return self.field_app.names(table, rid) or f"({table} {rid[:8]})"

    def values(self) -> dict[str, Any]:
        """What the form holds, parsed; raises ``BadRequest`` naming the first bad field."""
        out: dict[str, Any] = {}
        for field in self.fields:
            if not field.editable:
                continue
            widget = self.query_one(f"#f-{field.name}")
            raw: Any
            if field.type is T.LOOKUP:
                raw = self.lookups.get(field.name)
            elif isinstance(widget, Select):
                raw = None if widget.value is Select.NULL else widget.value
            elif isinstance(widget, SelectionList):
                raw = list(widget.selected)
            else:
                assert isinstance(widget, Input)
                raw = widget.value
            out[field.name] = forms.parse(field, raw)
        return out

    def show_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(message)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id or ""
        if button == "save":
            await self.action_save()
        elif button == "delete":
            self.action_delete()
        elif button == "cancel":
            self.action_cancel()
        elif button.startswith("f-"):
            self.pick(button[2:])

    def pick(self, name: str) -> None:
        field = next(f for f in self.fields if f.name == name)
        device = self.field_app.device
        choices: list[tuple[str, str, str]] = []
        defs = forms.tables(device.handshake_data)
        for target in field.column.targets:
            if target not in defs:
                continue
            t = defs[target]
            for row in device.query(target, top=2000):
                label = str(row.get(t.primary_name) or row[t.primary_id])
                choices.append((label, str(row[t.primary_id]), target))
        choices.sort()

        def chosen(pick: Pick | None) -> None:
            if pick is None:
                return
            self.lookups[name] = pick.value
            self.query_one(f"#f-{name}", Button).label = self._lookup_label(field, pick.value)

        self.app.push_screen(LookupPicker(field, choices), chosen)

    async def action_save(self) -> None:
        try:
            values = self.values()
        except FieldsyncError as exc:
            self.show_error(exc.message)
            return
        changes = forms.changed(self.fields, self.row, values)
        device = self.field_app.device
        try:
            if self.row:
                if changes:
                    rid = self.row[self.table.primary_id]
                    await asyncio.to_thread(device.update, self.table_name, rid, changes)
            else:
                await asyncio.to_thread(device.create, self.table_name, changes)
        except (FieldsyncError, DeviceError) as exc:
            self.show_error(getattr(exc, "message", str(exc)))
            return
        self.dismiss(True)

    def action_delete(self) -> None:
        if not self.row:
            return
        name = str(self.row.get(self.table.primary_name) or "this row")

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            rid = self.row[self.table.primary_id]
            try:
                await asyncio.to_thread(self.field_app.device.delete, self.table_name, rid)
            except (FieldsyncError, DeviceError) as exc:
                self.show_error(getattr(exc, "message", str(exc)))
                return
            self.dismiss(True)

        self.app.push_screen(ConfirmDelete(name), answered)

    def action_cancel(self) -> None:
        self.dismiss(False)


# -- sync errors and settings ---------------------------------------------------------------


class SyncErrorsScreen(_Screen):
    """The changes the server rejected, with what was sent and what the row went back to."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("c", "clear", "Clear the list"),
    ]

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static("Sync errors", id="list-title")
        yield DataTable(id="errors", cursor_type="row", zebra_stripes=True)
        yield Static(
            "Each rejected change was undone on this device: the row shows the server's values.",
            classes="hint",
        )
        yield Footer()

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        app = self.field_app
        defs = forms.tables(app.device.handshake_data)
        grid = self.query_one("#errors", DataTable)
        grid.clear(columns=True)
        for label in ("When", "Table", "Row", "Action", "Error", "Sent", "Reverted to"):
            grid.add_column(label, key=label)
        for error in app.device.errors():
            table = defs.get(error["tablename"])
            sent, reverted = error["sent"], error["reverted"]
            name = None
            if table is not None:
                name = (reverted or {}).get(table.primary_name) or app.names(
                    table.name, error["recordid"]
                )

            grid.add_row(
                str(error["occurredon"])[:16].replace("T", " "),
                error["tablename"],
                name or error["recordid"][:8],
                error["operation"],
                f"{error['message']} ({error['code']})",
                _values(table, sent, sent, app.names),
                _values(table, sent, reverted, app.names),
            )
        count = grid.row_count
        self.query_one("#list-title", Static).update(
            f"Sync errors · {count}" if count else "Sync errors · none"
        )

    def action_clear(self) -> None:
        self.field_app.device.clear_errors()
        self.reload()

    def action_back(self) -> None:
        self.dismiss(None)


def _values(
    table: Table | None, sent: dict[str, Any], source: dict[str, Any] | None, names: forms.Names
) -> str:
    """The columns a change sent, with their values in ``source`` (what was sent, or the
    server's row it was reverted to)."""
    if source is None:
        return "(removed)"
    parts = []
    for key in sent:
        col = table.column(key) if table is not None else None
        if col is None and table is not None and key.endswith("type"):
            continue  # a polymorphic lookup's table travels with the lookup
        label = col.label() if col is not None else key
        parts.append(f"{label}: {forms.show(col, source.get(key), names, source)}")
    return ", ".join(parts)


FREQUENCIES: list[tuple[str, int]] = [
    ("The profile's intervals", -1),
    ("None: sync only when I ask", 0),
    ("Every 5 minutes", 5),
    ("Every 15 minutes", 15),
    ("Every hour", 60),
    ("Every 4 hours", 240),
    ("Once a day", 1440),
]


class SettingsScreen(_Screen):
    """The sync settings the app lets the user change, and each table's last sync."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    SettingsScreen .field { height: auto; padding: 0 1; }
    SettingsScreen .field Label { width: 28; padding: 1 0 0 0; }
    #settings-error { color: $error; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        device = self.field_app.device
        handshake = device.handshake_data
        allows = handshake["app"]
        current = device.settings()
        frequency = current["frequency"]
        options = list(FREQUENCIES)
        if frequency is not None and frequency not in [v for _, v in options]:
            options.append((f"Every {frequency} minutes", frequency))
        yield StatusBar()
        yield Static("Sync settings", id="list-title")
        with Horizontal(classes="field"):
            yield Label("Sync frequency")
            yield Select(
                options,
                id="frequency",
                allow_blank=False,
                value=-1 if frequency is None else frequency,
                disabled=not allows.get("allow_sync_frequency"),
            )
        with Horizontal(classes="field"):
            yield Label("Sync on Wi-Fi only")
            yield Switch(
                value=bool(current["wifi_only"]),
                id="wifi-only",
                disabled=not allows.get("allow_wifi_only"),
            )
        if not (allows.get("allow_sync_frequency") and allows.get("allow_wifi_only")):
            yield Static("Greyed-out settings are fixed by your app's maker.", classes="hint")
        yield Static("", id="settings-error")
        intervals = {
            i["table"]: i.get("sync_interval_minutes") for i in handshake["profile"]["items"]
        }
        last = device.status.last_sync
        lines = [
            f"{name}: every {intervals.get(name, 15)} min (profile), last sync "
            f"{ago({name: last.get(name)})}"
            for name in handshake["order"]
        ]
        yield Static("\n".join(lines), classes="hint")
        yield Button("Save", id="save-settings", variant="primary")
        yield Footer()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save-settings":
            self.action_save()

    def action_save(self) -> None:
        device = self.field_app.device
        allows = device.handshake_data["app"]
        chosen: object = self.query_one("#frequency", Select).value
        wifi = self.query_one("#wifi-only", Switch).value
        try:
            frequency: int | str | None = "keep"
            if allows.get("allow_sync_frequency") and isinstance(chosen, int):
                frequency = None if chosen == -1 else chosen
            device.set_settings(
                frequency=frequency,
                wifi_only=wifi if allows.get("allow_wifi_only") else None,
            )
        except FieldsyncError as exc:
            self.query_one("#settings-error", Static).update(exc.message)
            return
        self.notify("Sync settings saved.")
        self.dismiss(None)

    def action_back(self) -> None:
        self.dismiss(None)
