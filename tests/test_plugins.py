"""Plugins: registration, the three stages and what each sees, target changes (validated),
rejection with full rollback at every stage of every message, unexpected exceptions, the
recursion limit, and loading plugin modules. Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fieldsync.errors import (
    BadRequest,
    ConfigurationError,
    FieldsyncError,
    InvalidChoice,
    LookupNotFound,
    MissingRequired,
    PluginError,
    ReadOnlyColumn,
    RecordNotFound,
    StringTooLong,
    UnknownColumn,
    ValueOutOfRange,
    WrongType,
)
from fieldsync.records.plugins import (
    MAX_DEPTH,
    Message,
    PluginContext,
    PluginRegistry,
    Registration,
    Stage,
)
from fieldsync.records.service import SYSTEM, Records
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID
from fieldsync.store.catalog import fs_change
from fieldsync.store.store import Store
from fieldsync.types import EntityRef, Row

PRE_STAGES = (Stage.PRE_VALIDATION, Stage.PRE_OPERATION)
MESSAGES = (Message.CREATE, Message.UPDATE, Message.DELETE, Message.ASSIGN)


def snapshot(store: Store) -> dict[str, Any]:
    """Every row of every table, the change log and the version counter (SQLite; a
    PostgreSQL sequence does not roll back: a rolled-back write leaves a gap, which no reader
    of the log can tell from a write that never happened)."""
    out: dict[str, Any] = {}
    with store.read() as conn:
        for name in sorted(store.schema.tables):
            sql = store.sql_table(name)
            pk = sql.c[store.schema.table(name).primary_id]
            out[name] = [dict(r) for r in conn.execute(sa.select(sql).order_by(pk)).mappings()]
        out["fs_change"] = [
            dict(r)
            for r in conn.execute(sa.select(fs_change).order_by(fs_change.c.version)).mappings()
        ]
        if store.dialect == "sqlite":
            out["version"] = store.current_version(conn)
    return out


def noop(ctx: PluginContext) -> None:
    pass


# -- registration ----------------------------------------------------------------------


def names(regs: list[Registration]) -> list[str]:
    return [r.name for r in regs]


def test_registration_by_table_message_and_stage() -> None:
    plugins = PluginRegistry()
    a = plugins.register("account", "create", "pre-operation", noop, name="a")
    plugins.register("account", Message.CREATE, Stage.PRE_VALIDATION, noop, name="b")
    plugins.register("account", "update", 20, noop, name="c")
    plugins.register("contact", "create", "pre_operation", noop, name="d")
    plugins.register("account", "delete", "POST-OPERATION", noop, name="e")
    plugins.register("account", "assign", 40, noop, name="f")

    assert isinstance(a, Registration)
    assert (a.table, a.message, a.stage, a.plugin) == (
        "account",
        Message.CREATE,
        Stage.PRE_OPERATION,
        noop,
    )
    assert names(plugins.handlers("account", Message.CREATE, Stage.PRE_OPERATION)) == ["a"]
    assert names(plugins.handlers("account", Message.CREATE, Stage.PRE_VALIDATION)) == ["b"]
    assert names(plugins.handlers("account", Message.UPDATE, Stage.PRE_OPERATION)) == ["c"]
    assert names(plugins.handlers("contact", Message.CREATE, Stage.PRE_OPERATION)) == ["d"]
    assert names(plugins.handlers("account", Message.DELETE, Stage.POST_OPERATION)) == ["e"]
    assert names(plugins.handlers("account", Message.ASSIGN, Stage.POST_OPERATION)) == ["f"]
    assert plugins.handlers("account", Message.CREATE, Stage.POST_OPERATION) == []
    assert plugins.handlers("workorder", Message.CREATE, Stage.PRE_OPERATION) == []
    assert plugins.has("account", Message.UPDATE, Stage.PRE_OPERATION)
    assert not plugins.has("account", Message.UPDATE, Stage.POST_OPERATION)

    plugins.unregister(a)
    assert plugins.handlers("account", Message.CREATE, Stage.PRE_OPERATION) == []
    assert not plugins.has("account", Message.CREATE, Stage.PRE_OPERATION)

    # the default name is the plugin's qualified name
    reg = plugins.register("account", "create", 10, noop)
    assert reg.name == "noop"


def test_stages_parse_from_names_and_numbers() -> None:
    cases: list[tuple[Stage | str | int, Stage]] = [
        ("pre-validation", Stage.PRE_VALIDATION),
        ("pre_validation", Stage.PRE_VALIDATION),
        ("PRE-OPERATION", Stage.PRE_OPERATION),
        ("post-operation", Stage.POST_OPERATION),
        (10, Stage.PRE_VALIDATION),
        (20, Stage.PRE_OPERATION),
        (40, Stage.POST_OPERATION),
        (Stage.POST_OPERATION, Stage.POST_OPERATION),
    ]
    for given, stage in cases:
        assert Stage.parse(given) is stage
    assert Stage.PRE_VALIDATION < Stage.PRE_OPERATION < Stage.POST_OPERATION


def test_wildcard_and_order() -> None:
    plugins = PluginRegistry()
    plugins.register("account", "create", "pre-operation", noop, order=5, name="late")
    plugins.register("*", "create", "pre-operation", noop, order=1, name="wild first")
    plugins.register("account", "create", "pre-operation", noop, order=3, name="middle")
    plugins.register("*", "create", "pre-operation", noop, order=9, name="wild last")
    plugins.register("account", "create", "pre-operation", noop, order=-1, name="earliest")
    # equal order: registration order
    plugins.register("account", "create", "pre-operation", noop, order=3, name="middle 2")

    assert names(plugins.handlers("account", Message.CREATE, Stage.PRE_OPERATION)) == [
        "earliest",
        "wild first",
        "middle",
        "middle 2",
        "late",
        "wild last",
    ]
    # the wildcard matches every table, and only its own message and stage
    assert names(plugins.handlers("team", Message.CREATE, Stage.PRE_OPERATION)) == [
        "wild first",
        "wild last",
    ]
    assert plugins.has("new_anything", Message.CREATE, Stage.PRE_OPERATION)
    assert plugins.handlers("team", Message.UPDATE, Stage.PRE_OPERATION) == []
    assert plugins.handlers("team", Message.CREATE, Stage.POST_OPERATION) == []

    seen: list[str] = []

    @plugins.on("contact", "update", "post-operation", order=2)
    def second(ctx: PluginContext) -> None:
        seen.append("second")

    @plugins.on("contact", "update", "post-operation", order=1)
    def first(ctx: PluginContext) -> None:
        seen.append("first")

    assert callable(second)
    assert second.__name__ == "second"  # the decorator hands the function back
    regs = plugins.handlers("contact", Message.UPDATE, Stage.POST_OPERATION)
    assert [r.plugin for r in regs] == [first, second]
    assert [r.name.rsplit(".", 1)[-1] for r in regs] == ["first", "second"]


@pytest.mark.parametrize(
    ("message", "stage", "text"),
    [
        ("upsert", "pre-operation", "unknown plugin message 'upsert'"),
        ("", "pre-operation", "unknown plugin message"),
        ("create", "post-validation", "unknown plugin stage 'post-validation'"),
        ("create", "", "unknown plugin stage"),
        ("create", 30, "unknown plugin stage"),
        ("create", 0, "unknown plugin stage"),
    ],
    ids=["message", "empty message", "stage", "empty stage", "stage 30", "stage 0"],
)
def test_bad_registrations_raise_configuration_error(
    message: str, stage: str | int, text: str
) -> None:
    plugins = PluginRegistry()
    with pytest.raises(ConfigurationError, match=text):
        plugins.register("account", message, stage, noop)
    assert plugins.handlers("account", Message.CREATE, Stage.PRE_OPERATION) == []


def test_plugin_error_carries_its_code() -> None:
    default = PluginError("credit limit exceeded")
    assert (default.code, default.status, default.message) == (
        "0x80040265",
        400,
        "credit limit exceeded",
    )
    custom = PluginError("credit limit exceeded", code="CREDIT_LIMIT")
    assert custom.code == "CREDIT_LIMIT"
    assert custom.to_json() == {
        "error": {"code": "CREDIT_LIMIT", "message": "credit limit exceeded"}
    }
    assert PluginError.code == "0x80040265"  # the class default is untouched


# -- what each stage sees --------------------------------------------------------------


class Recorder:
    """A plugin that records what it saw."""

    def __init__(self, extra: Callable[[PluginContext], Any] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.extra = extra

    def __call__(self, ctx: PluginContext) -> None:
        self.calls.append(
            {
                "message": ctx.message,
                "stage": ctx.stage,
                "table": ctx.table,
                "record_id": ctx.record_id,
                "target": copy.deepcopy(ctx.target),
                "pre": copy.deepcopy(ctx.pre_image),
                "post": copy.deepcopy(ctx.post_image),
                "depth": ctx.depth,
                "caller": ctx.caller,
                "extra": self.extra(ctx) if self.extra else None,
            }
        )


def retrieve_or_missing(ctx: PluginContext) -> Row | str:
    try:
        return ctx.records.retrieve(ctx.table, ctx.record_id)
    except RecordNotFound:
        return "missing"


def test_each_stage_sees_the_target_and_the_images(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    team = records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    recorder = Recorder(retrieve_or_missing)
    for message in MESSAGES:
        for stage in Stage:
            plugins.register("account", message, stage, recorder)

    # create
    rid = records.create("account", {"name": "Contoso", "revenue": "10.5"})
    created = records.retrieve("account", rid)
    calls = recorder.calls
    assert [(c["message"], c["stage"]) for c in calls] == [
        (Message.CREATE, Stage.PRE_VALIDATION),
        (Message.CREATE, Stage.PRE_OPERATION),
        (Message.CREATE, Stage.POST_OPERATION),
    ]
    for c in calls:
        assert (c["table"], c["record_id"], c["depth"], c["caller"]) == ("account", rid, 1, SYSTEM)
        assert c["pre"] is None
        assert c["target"]["name"] == "Contoso"
        assert c["target"]["revenue"] == created["revenue"]  # already coerced
    assert calls[0]["post"] is None
    assert calls[1]["post"] is None
    assert calls[0]["extra"] == calls[1]["extra"] == "missing"  # not written yet
    post = calls[2]["post"]
    assert post["versionnumber"] == created["versionnumber"]
    for key, value in post.items():
        assert created[key] == value, key
    assert calls[2]["extra"] == created  # written, in the same transaction

    # update
    recorder.calls.clear()
    version = records.update("account", rid, {"name": "Contoso Ltd", "telephone1": "555"})
    updated = records.retrieve("account", rid)
    assert [c["stage"] for c in calls] == list(Stage)
    assert all(c["message"] is Message.UPDATE for c in calls)
    for c in calls:
        assert c["pre"] == created
        assert c["target"] == {"name": "Contoso Ltd", "telephone1": "555"}
    assert calls[0]["post"] is None
    assert calls[1]["post"] is None
    assert calls[2]["post"] == updated
    assert calls[2]["post"]["versionnumber"] == version
    assert calls[1]["extra"] == created
    assert calls[2]["extra"] == updated

    # assign
    recorder.calls.clear()
    records.assign("account", rid, EntityRef("team", team))
    assigned = records.retrieve("account", rid)
    assert [(c["message"], c["stage"]) for c in calls] == [(Message.ASSIGN, s) for s in Stage]
    for c in calls:
        assert c["pre"] == updated
        assert c["target"] == {"ownerid": (team, "team")}
    assert calls[2]["post"] == assigned
    assert (assigned["ownerid"], assigned["owneridtype"]) == (team, "team")

    # delete
    recorder.calls.clear()
    records.delete("account", rid)
    assert [(c["message"], c["stage"]) for c in calls] == [(Message.DELETE, s) for s in Stage]
    for c in calls:
        assert c["pre"] == assigned
        assert c["post"] is None
        assert c["target"] == {}
    assert calls[1]["extra"] == assigned
    assert calls[2]["extra"] == "missing"  # gone, in the same transaction


def test_wildcard_plugins_see_every_table_and_nested_writes(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    seen: list[tuple[str, int, str]] = []

    @plugins.on("*", "create", "post-operation")
    def everything(ctx: PluginContext) -> None:
        seen.append((ctx.table, ctx.depth, str(ctx.post_image and ctx.post_image.get("name"))))

    @plugins.on("account", "create", "pre-operation")
    def add_contact(ctx: PluginContext) -> None:
        ctx.records.create("contact", {"lastname": f"for {ctx.target['name']}"})

    records.create("account", {"name": "Contoso"})
    records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    assert [(t, d) for t, d, _ in seen] == [("contact", 2), ("account", 1), ("team", 1)]
    assert seen[1][2] == "Contoso"
    assert records.retrieve_multiple("contact", where={"lastname": "for Contoso"}) != []


# -- pre stages change the target ------------------------------------------------------


def test_pre_stages_change_the_target(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    contact = records.create("contact", {"lastname": "Smith"})
    seen_in_pre_operation: list[Row] = []

    @plugins.on("account", "create", "pre-validation")
    def defaults(ctx: PluginContext) -> None:
        ctx.target.setdefault("address1_city", "Unknown")
        ctx.target["name"] = ctx.target["name"].upper()
        ctx.target["primarycontactid"] = str(contact)  # a plain id, coerced afterwards

    @plugins.on("account", "create", "pre-operation")
    def round_revenue(ctx: PluginContext) -> None:
        seen_in_pre_operation.append(dict(ctx.target))
        ctx.target["revenue"] = "12.345"
        ctx.target["statecode"] = 1

    rid = records.create("account", {"name": "Contoso"})
    row = records.retrieve("account", rid)
    assert (row["name"], row["address1_city"], row["primarycontactid"]) == (
        "CONTOSO",
        "Unknown",
        contact,
    )
    assert str(row["revenue"]) == "12.34"  # coerced: rounded half to even
    assert (row["statecode"], row["statuscode"]) == (1, 2)  # the status follows the state
    # pre-operation saw pre-validation's changes, already coerced
    assert seen_in_pre_operation[0]["primarycontactid"] == (contact, "contact")
    assert seen_in_pre_operation[0]["name"] == "CONTOSO"

    @plugins.on("account", "update", "pre-operation")
    def stamp(ctx: PluginContext) -> None:
        ctx.target["description"] = f"was {ctx.pre_image['name'] if ctx.pre_image else '?'}"

    version = records.update("account", rid, {"telephone1": "555"})
    row = records.retrieve("account", rid)
    assert (row["telephone1"], row["description"]) == ("555", "was CONTOSO")
    with store.read() as conn:
        entry = conn.execute(sa.select(fs_change).where(fs_change.c.version == version)).one()
    assert entry.changed == ["description", "telephone1"]
    assert entry.old["description"] is None


BAD_CHANGES: list[tuple[str, Callable[[Row, uuid.UUID], None], type[FieldsyncError]]] = [
    ("unknown column", lambda t, other: t.__setitem__("nosuchcolumn", 1), UnknownColumn),
    ("too long", lambda t, other: t.__setitem__("name", "x" * 161), StringTooLong),
    ("read-only", lambda t, other: t.__setitem__("versionnumber", 7), ReadOnlyColumn),
    ("created on", lambda t, other: t.__setitem__("createdon", "2024-01-01"), ReadOnlyColumn),
    ("wrong type", lambda t, other: t.__setitem__("numberofemployees", "many"), WrongType),
    ("required cleared", lambda t, other: t.__setitem__("name", None), MissingRequired),
    ("missing lookup", lambda t, other: t.__setitem__("primarycontactid", other), LookupNotFound),
    ("bad choice", lambda t, other: t.__setitem__("industrycode", 99), InvalidChoice),
    ("out of range", lambda t, other: t.__setitem__("numberofemployees", -5), ValueOutOfRange),
]


def test_target_changes_are_validated(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    account = records.create("account", {"name": "Contoso"})
    before = snapshot(store)
    problems: list[str] = []
    for message in (Message.CREATE, Message.UPDATE):
        for stage in PRE_STAGES:
            for label, change, error in BAD_CHANGES:

                def plugin(ctx: PluginContext, change: Any = change) -> None:
                    change(ctx.target, uuid.uuid4())

                reg = plugins.register("account", message, stage, plugin)
                try:
                    if message is Message.CREATE:
                        records.create("account", {"name": "Fabrikam"})
                    else:
                        records.update("account", account, {"telephone1": "1"})
                except Exception as exc:
                    if type(exc) is not error:
                        problems.append(f"{message} {stage.name} {label}: {exc!r}")
                else:
                    problems.append(f"{message} {stage.name} {label}: accepted")
                finally:
                    plugins.unregister(reg)
    # a plugin cannot give a new row another id
    for stage in PRE_STAGES:
        reg = plugins.register(
            "account",
            "create",
            stage,
            lambda ctx: ctx.target.__setitem__("accountid", uuid.uuid4()),
        )
        with pytest.raises(BadRequest, match="cannot change the row's id"):
            records.create("account", {"name": "Fabrikam"})
        plugins.unregister(reg)
    assert problems == []
    assert snapshot(store) == before


# -- rejection rolls everything back ---------------------------------------------------


class Rejecter:
    """Writes through ``ctx.records`` in the operation's transaction, then rejects the
    operation (for a batch: on its second row, after the first went through the stage)."""

    def __init__(self, other_contact: uuid.UUID, reject_on: uuid.UUID | None) -> None:
        self.other_contact = other_contact
        self.reject_on = reject_on
        self.runs = 0
        self.written: list[uuid.UUID] = []

    def __call__(self, ctx: PluginContext) -> None:
        self.runs += 1
        self.written.append(ctx.records.create("contact", {"lastname": f"by {ctx.stage.name}"}))
        ctx.records.update("contact", self.other_contact, {"telephone1": f"run {self.runs}"})
        assert ctx.records.retrieve("contact", self.written[-1])["lastname"].startswith("by ")
        if self.reject_on is None or ctx.record_id == self.reject_on:
            raise PluginError(f"rejected at {ctx.stage.name}", code="E_REJECTED")


@pytest.mark.parametrize("message", MESSAGES, ids=[m.value for m in MESSAGES])
def test_plugin_error_rolls_back_everything_at_every_stage(
    store: Store, records: Records, plugins: PluginRegistry, message: Message
) -> None:
    other = records.create("contact", {"lastname": "Bystander"})
    first = records.create("account", {"name": "First"})
    second = records.create("account", {"name": "Second"})
    team = records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    # rows that a delete of ``first`` changes (cleared lookups, a new version each)
    contact = records.create(
        "contact", {"lastname": "Points", "parentcustomerid": EntityRef("account", first)}
    )
    records.update("account", second, {"parentaccountid": first})
    new_id = uuid.uuid4()

    operations: dict[Message, tuple[Callable[[], object], uuid.UUID | None]] = {
        Message.CREATE: (
            lambda: records.create_many(
                "account", [{"name": "New 1"}, {"name": "New 2", "accountid": new_id}]
            ),
            new_id,
        ),
        Message.UPDATE: (
            lambda: records.update_many(
                "account", [(first, {"name": "First!"}), (second, {"name": "Second!"})]
            ),
            second,
        ),
        Message.DELETE: (lambda: records.delete("account", first), None),
        Message.ASSIGN: (lambda: records.assign("account", first, EntityRef("team", team)), None),
    }
    action, reject_on = operations[message]
    for stage in Stage:
        before = snapshot(store)
        rejecter = Rejecter(other, reject_on)
        reg = plugins.register("account", message, stage, rejecter)
        try:
            with pytest.raises(PluginError) as info:
                action()
        finally:
            plugins.unregister(reg)
        assert type(info.value) is PluginError
        assert (info.value.code, info.value.message, info.value.status) == (
            "E_REJECTED",
            f"rejected at {stage.name}",
            400,
        )
        assert rejecter.runs == (2 if reject_on else 1), stage
        assert snapshot(store) == before, stage
        for written in rejecter.written:
            with pytest.raises(RecordNotFound):
                records.retrieve("contact", written)
    # without the plugin the operation goes through
    action()
    if message is Message.DELETE:
        assert records.retrieve("contact", contact)["parentcustomerid"] is None


def test_unexpected_exception_becomes_a_plugin_error(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    account = records.create("account", {"name": "Contoso"})
    operations: dict[Message, Callable[[], object]] = {
        Message.CREATE: lambda: records.create("account", {"name": "Fabrikam"}),
        Message.UPDATE: lambda: records.update("account", account, {"telephone1": "1"}),
        Message.DELETE: lambda: records.delete("account", account),
        Message.ASSIGN: lambda: records.assign(
            "account", account, EntityRef("systemuser", SYSTEM.user_id)
        ),
    }

    def broken(ctx: PluginContext) -> None:
        ctx.records.create("contact", {"lastname": "half done"})
        raise ValueError(f"boom in {ctx.stage.name}")

    for message, operation in operations.items():
        for stage in Stage:
            before = snapshot(store)
            reg = plugins.register("account", message, stage, broken, name="broken_plugin")
            try:
                with pytest.raises(PluginError) as info:
                    operation()
            finally:
                plugins.unregister(reg)
            error = info.value
            assert type(error) is PluginError
            assert error.code == "0x80040224"
            assert error.status == 400
            assert "broken_plugin" in error.message
            assert f"ValueError: boom in {stage.name}" in error.message
            assert isinstance(error.__cause__, ValueError)
            assert snapshot(store) == before, (message, stage)


def test_recursion_deeper_than_eight_levels_is_stopped(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    assert MAX_DEPTH == 8
    account = records.create("account", {"name": "Contoso"})

    # a plugin that updates the row it is called for, forever
    depths: list[int] = []

    @plugins.on("account", "update", "post-operation")
    def again(ctx: PluginContext) -> None:
        depths.append(ctx.depth)
        ctx.records.update("account", ctx.record_id, {"telephone1": str(ctx.depth)})

    before = snapshot(store)
    with pytest.raises(PluginError) as info:
        records.update("account", account, {"telephone1": "0"})
    assert info.value.code == "0x80044182"
    assert depths == list(range(1, MAX_DEPTH + 1))
    assert snapshot(store) == before

    # eight levels are allowed
    chain: list[int] = []

    @plugins.on("contact", "create", "pre-operation")
    def next_link(ctx: PluginContext) -> None:
        chain.append(ctx.depth)
        if ctx.depth < MAX_DEPTH:
            ctx.records.create("contact", {"lastname": f"level {ctx.depth + 1}"})

    records.create("contact", {"lastname": "level 1"})
    assert chain == list(range(1, MAX_DEPTH + 1))
    made = records.retrieve_multiple("contact", columns=["lastname"])
    assert {f"level {i}" for i in range(1, MAX_DEPTH + 1)} <= {r["lastname"] for r in made}


# -- loading plugin modules ------------------------------------------------------------


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A new module on sys.path; returns its name (unique, so imports never collide)."""
    name = f"fs_test_plugin_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


PLUGIN_MODULE = """
from fieldsync.errors import PluginError
from fieldsync.records.plugins import PluginContext, PluginRegistry

LOADED = []


def register(plugins: PluginRegistry) -> None:
    LOADED.append(plugins)

    @plugins.on("account", "create", "pre-operation")
    def default_city(ctx: PluginContext) -> None:
        ctx.target.setdefault("address1_city", "Unknown")

    @plugins.on("account", "update", "pre-validation")
    def no_blanks(ctx: PluginContext) -> None:
        if ctx.target.get("telephone1") == "":
            raise PluginError("telephone1 cannot be blank", code="NO_BLANKS")
"""


def test_load_calls_the_module_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = write_module(tmp_path, monkeypatch, PLUGIN_MODULE)
    plugins = PluginRegistry()
    plugins.load([name, "", "  "])  # blank names are skipped
    [loaded] = sys.modules[name].LOADED
    assert loaded is plugins
    assert [r.plugin.__name__ for r in plugins.handlers("account", Message.CREATE, Stage(20))] == [
        "default_city"
    ]
    assert plugins.has("account", Message.UPDATE, Stage.PRE_VALIDATION)


def test_loaded_plugins_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store, plugins: PluginRegistry
) -> None:
    name = write_module(tmp_path, monkeypatch, PLUGIN_MODULE)
    plugins.load([f" {name} "])
    records = Records(store, plugins)
    rid = records.create("account", {"name": "Contoso"})
    assert records.retrieve("account", rid)["address1_city"] == "Unknown"
    with pytest.raises(PluginError) as info:
        records.update("account", rid, {"telephone1": ""})
    assert info.value.code == "NO_BLANKS"


@pytest.mark.parametrize(
    ("source", "text"),
    [
        (None, "cannot import plugin module"),
        ("X = 1\n", "has no register\\(plugins\\) function"),
        ("register = 42\n", "has no register\\(plugins\\) function"),
        ("import fs_no_such_dependency_xyz\n", "cannot import plugin module"),
    ],
    ids=["missing module", "no register", "register not callable", "missing dependency"],
)
def test_bad_plugin_modules_raise_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str | None, text: str
) -> None:
    if source is None:
        name = f"fs_test_plugin_missing_{uuid.uuid4().hex[:10]}"
    else:
        name = write_module(tmp_path, monkeypatch, source)
    plugins = PluginRegistry()
    with pytest.raises(ConfigurationError, match=text) as info:
        plugins.load([name])
    assert name in info.value.message
    with pytest.raises(ConfigurationError):
        plugins.load(["fieldsync.no_such_module"])
