"""The plugin pipeline: Python callables run per (table, message, stage).

Stages follow Dataverse: ``pre-validation`` (10) and ``pre-operation`` (20) may change the
target or reject the operation by raising :class:`~fieldsync.errors.PluginError`;
``post-operation`` (40) sees the result. All three run inside the operation's transaction, so
a rejection at any stage rolls back everything, plugin writes included.

A plugin module names its plugins in a ``register`` function::

    # my_company/plugins.py
    from fieldsync.records.plugins import PluginContext, PluginRegistry
    from fieldsync.errors import PluginError

    def register(plugins: PluginRegistry) -> None:
        @plugins.on("account", "create", "pre-operation")
        def default_city(ctx: PluginContext) -> None:
            ctx.target.setdefault("address1_city", "Unknown")

and is loaded with ``fieldsync serve --plugin my_company.plugins`` (or
``FIELDSYNC_PLUGINS=my_company.plugins``).
"""

from __future__ import annotations

import enum
import importlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fieldsync.errors import ConfigurationError, FieldsyncError, PluginError
from fieldsync.store.store import retryable
from fieldsync.types import RecordId, Row

if TYPE_CHECKING:
    from fieldsync.records.service import BoundRecords
    from fieldsync.security.model import SecurityContext

log = logging.getLogger(__name__)

MAX_DEPTH = 8


class Message(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ASSIGN = "assign"
    ASSOCIATE = "associate"
    DISASSOCIATE = "disassociate"


class Stage(enum.IntEnum):
    PRE_VALIDATION = 10
    PRE_OPERATION = 20
    POST_OPERATION = 40

    @classmethod
    def parse(cls, value: Stage | str | int) -> Stage:
        if isinstance(value, Stage):
            return value
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ConfigurationError(
                    f"unknown plugin stage {value}: use 10 (pre-validation), 20 (pre-operation) "
                    "or 40 (post-operation)"
                ) from None
        try:
            return cls[value.replace("-", "_").upper()]
        except KeyError:
            raise ConfigurationError(
                f"unknown plugin stage {value!r}: use pre-validation, pre-operation or "
                "post-operation"
            ) from None


@dataclass
class PluginContext:
    """What a plugin sees. ``target`` holds the values being written (change it in pre
    stages); ``pre_image`` and ``post_image`` the row before and after; ``records`` runs
    further operations in the same transaction."""

    message: Message
    stage: Stage
    table: str
    record_id: RecordId
    target: Row
    caller: SecurityContext
    records: BoundRecords
    depth: int
    pre_image: Row | None = None
    post_image: Row | None = None
    shared: dict[str, Any] = field(default_factory=dict)


Plugin = Callable[[PluginContext], None]


@dataclass(frozen=True)
class Registration:
    table: str
    message: Message
    stage: Stage
    plugin: Plugin
    order: int
    name: str
    row_only: bool = False  # reads and writes nothing but its own row (see PluginRegistry)


@dataclass(frozen=True)
class Conflict:
    """An offline update to columns the server changed since the device last saw the row.

    ``server`` is the row as it is now, ``device`` the values the device sent, ``columns``
    the columns both changed. A resolver returns the values to write (``{}`` writes nothing)
    or raises :class:`~fieldsync.errors.PluginError` to reject the change."""

    table: str
    record_id: RecordId
    server: Row
    device: Row
    columns: list[str]


ConflictResolver = Callable[[Conflict], Row]


class PluginRegistry:
    """Plugins by (table, message, stage); ``"*"`` as the table matches every table.

    A plugin may read other rows and decide on them ("the user name is taken", "no cycle in
    the hierarchy"). On PostgreSQL writers run side by side, so the records service writes a
    table that has such plugins one transaction at a time (:meth:`serialises`); a plugin
    registered ``row_only=True`` (it looks at nothing but the row it is given) does not
    hold its table's writers back.

    Conflict resolvers for offline updates register per table with :meth:`resolve_conflicts`.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, Message, Stage], list[Registration]] = defaultdict(list)
        self._resolvers: dict[str, ConflictResolver] = {}

    def resolve_conflicts(self, table: str) -> Callable[[ConflictResolver], ConflictResolver]:
        """Decorator: ``resolver(conflict) -> values`` decides what an offline update to
        ``table`` writes when the server changed the same columns since the device saw them."""

        def decorate(resolver: ConflictResolver) -> ConflictResolver:
            self._resolvers[table] = resolver
            return resolver

        return decorate

    def conflict_resolver(self, table: str) -> ConflictResolver | None:
        return self._resolvers.get(table)

    def register(
        self,
        table: str,
        message: Message | str,
        stage: Stage | str | int,
        plugin: Plugin,
        *,
        order: int = 0,
        name: str | None = None,
        row_only: bool = False,
    ) -> Registration:
        try:
            msg = Message(message)
        except ValueError:
            raise ConfigurationError(
                f"unknown plugin message {message!r}: use create, update, delete, assign, "
                "associate or disassociate"
            ) from None
        reg = Registration(
            table,
            msg,
            Stage.parse(stage),
            plugin,
            order,
            name or str(getattr(plugin, "__qualname__", repr(plugin))),
            row_only,
        )
        bucket = self._by_key[(table, msg, reg.stage)]
        bucket.append(reg)
        bucket.sort(key=lambda r: r.order)
        return reg

    def on(
        self, table: str, message: Message | str, stage: Stage | str | int, *, order: int = 0
    ) -> Callable[[Plugin], Plugin]:
        """Decorator form of :meth:`register`."""

        def decorate(plugin: Plugin) -> Plugin:
            self.register(table, message, stage, plugin, order=order)
            return plugin

        return decorate

    def unregister(self, reg: Registration) -> None:
        self._by_key[(reg.table, reg.message, reg.stage)].remove(reg)

    def handlers(self, table: str, message: Message, stage: Stage) -> list[Registration]:
        specific = self._by_key.get((table, message, stage), [])
        wildcard = self._by_key.get(("*", message, stage), [])
        if not wildcard:
            return specific
        return sorted([*specific, *wildcard], key=lambda r: r.order)

    def has(self, table: str, message: Message, stage: Stage) -> bool:
        return bool(self.handlers(table, message, stage))

    def serialises(self, table: str, message: Message, stage: Stage) -> bool:
        """Whether a plugin of this stage may read other rows (one not ``row_only``)."""
        return any(not r.row_only for r in self.handlers(table, message, stage))

    def run(self, ctx: PluginContext) -> None:
        if ctx.depth > MAX_DEPTH:
            raise PluginError(
                f"plugins called each other more than {MAX_DEPTH} levels deep; this looks like "
                "an infinite loop",
                code="0x80044182",
            )
        for reg in self.handlers(ctx.table, ctx.message, ctx.stage):
            try:
                reg.plugin(ctx)
            except FieldsyncError:
                raise
            except Exception as exc:
                if retryable(exc):
                    raise  # a deadlock in the plugin's writes: the unit of work runs again
                log.exception("plugin %s failed", reg.name)
                raise PluginError(
                    f"plugin {reg.name} failed on {ctx.message} of {ctx.table}: "
                    f"{type(exc).__name__}: {exc}",
                    code="0x80040224",
                ) from exc

    def load(self, modules: Iterable[str]) -> None:
        """Import each module and call its ``register(registry)``."""
        for name in modules:
            name = name.strip()
            if not name:
                continue
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ConfigurationError(f"cannot import plugin module {name!r}: {exc}") from exc
            register = getattr(module, "register", None)
            if not callable(register):
                raise ConfigurationError(
                    f"plugin module {name!r} has no register(plugins) function"
                )
            register(self)
