"""Profiles as code: a profile and the offline settings of its apps as a YAML file.

::

    id: 6f1c…                       # optional: import updates that profile (else by name)
    name: Field Service
    description: What technicians carry.
    tables:
      workorder:
        filter: other               # related | all | other | custom
        owned_by: [me, my_teams]    # with "other": me, my_teams, my_business_unit
        images: [sitephoto]
        files: [servicereport]      # every file column of the table, or none
        sync_interval: 15           # minutes, 5 to 1440
      account:
        filter: related
        relationships: [account_workorder_serviceaccountid]
        columns: [name, telephone1] # optional: the columns taken offline (default all)
      contact:
        filter: custom
        custom_filter: |
          <fetch><entity name="contact"><filter>
            <condition attribute="statecode" operator="eq" value="0" />
          </filter></entity></fetch>
    apps:
      - uniquename: fieldservice
        name: Field Service
        can_be_used_offline: true
        mode: offline-first         # or classic
        profile_mode: default       # or restricted
        allow_sync_frequency: true
        allow_wifi_only: false

Reading keeps every value's line, so each error names its line: bad YAML, an unknown key, a
wrong type, and every rule of :mod:`fieldsync.offline.validation` (a custom filter's
FetchXML errors point at the line inside the file). An invalid file changes nothing. An
exported profile imports back to the same profile, and exports again to the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import yaml

from fieldsync.errors import NotFound, ProfileInvalid
from fieldsync.offline.access import APP, find_app
from fieldsync.offline.profiles import (
    PROFILE,
    as_id,
    load_draft,
    load_profile_row,
    profile_id_by_name,
    write_draft,
)
from fieldsync.offline.snapshot import Distribution
from fieldsync.offline.validation import (
    ItemDraft,
    Problem,
    ProfileDraft,
    problems,
)
from fieldsync.records.service import SYSTEM, Records
from fieldsync.schema.model import Schema
from fieldsync.security.model import SecurityContext
from fieldsync.types import RecordId, as_uuid

FILTERS = {
    "related": Distribution.RELATED,
    "all": Distribution.ALL,
    "other": Distribution.OTHER,
    "custom": Distribution.CUSTOM,
}
FILTER_KEYS = {v: k for k, v in FILTERS.items()}
OWNERS = ("me", "my_teams", "my_business_unit")
MODES = {"offline-first": 0, "classic": 1}
PROFILE_MODES = {"default": 0, "restricted": 1}
TOP_KEYS = ("id", "name", "description", "tables", "apps")
TABLE_KEYS = (
    "filter",
    "owned_by",
    "custom_filter",
    "relationships",
    "columns",
    "files",
    "images",
    "sync_interval",
)
APP_KEYS = (
    "uniquename",
    "name",
    "can_be_used_offline",
    "mode",
    "profile_mode",
    "allow_sync_frequency",
    "allow_wifi_only",
)
FIELD_KEYS = {
    "filter": "filter",
    "owned_by": "owned_by",
    "custom_filter": "custom_filter",
    "relationships": "relationships",
    "cycle": "relationships",
    "relationship_count": "relationships",
    "columns": "columns",
    "files": "files",
    "images": "images",
    "sync_interval": "sync_interval",
}


@dataclass
class AppSettings:
    uniquename: str
    name: str
    can_be_used_offline: bool = False
    mode: int = 0
    profile_mode: int = 0
    allow_sync_frequency: bool = False
    allow_wifi_only: bool = False
    line: int = 0


@dataclass
class ProfileFile:
    """A parsed profile file, with the line of everything in it (1-based)."""

    draft: ProfileDraft
    profile_id: RecordId | None = None
    apps: list[AppSettings] = field(default_factory=list)
    lines: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    filter_offsets: dict[str, int] = field(default_factory=dict)

    def line_of(self, problem: Problem) -> int:
        key = FIELD_KEYS.get(problem.field or "")
        if problem.table is None:
            return self.lines.get((None, problem.field), self.lines.get((None, "tables"), 1))
        if (
            problem.field == "custom_filter"
            and problem.filter_line
            and problem.table in self.filter_offsets
        ):
            return self.filter_offsets[problem.table] + problem.filter_line
        return self.lines.get((problem.table, key), self.lines.get((problem.table, None), 1))


def _fail(node: yaml.Node, message: str) -> ProfileInvalid:
    return ProfileInvalid(message, line=node.start_mark.line + 1)


class _Reader:
    def __init__(self, text: str) -> None:
        self.loader = yaml.SafeLoader(text)

    def root(self) -> yaml.Node | None:
        try:
            return self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise ProfileInvalid(f"invalid YAML: {exc.problem or exc.context}", line=line) from None
        except yaml.YAMLError as exc:
            raise ProfileInvalid(f"invalid YAML: {exc}") from None

    def value(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise _fail(node, "expected a single value")
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _fail(node, f"invalid value: {exc}") from None

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.value(node)
        if not isinstance(value, str):
            raise _fail(node, f"{what} must be text")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            raise _fail(node, f"{what} must be true or false")
        return value

    def strings(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise _fail(node, f"{what} must be a list")
        return tuple(self.string(n, f"each of {what}") for n in node.value)

    @staticmethod
    def mapping(
        node: yaml.Node, what: str, keys: tuple[str, ...]
    ) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise _fail(node, f"{what} must be a mapping")
        out = []
        seen: set[str] = set()
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(name, str) or (keys and name not in keys):
                raise _fail(k, f"unknown key {name!r} in {what}; use {', '.join(keys)}")
            if name in seen:
                raise _fail(k, f"{name!r} appears twice in {what}")
            seen.add(name)
            out.append((name, k, v))
        return out


def parse_profile(text: str) -> ProfileFile:
    """Read a profile file; raise :class:`ProfileInvalid` with the line of the first error
    in its form (the profile rules are checked by :func:`check_profile`)."""
    r = _Reader(text)
    root = r.root()
    if root is None:
        raise ProfileInvalid("the file is empty: a profile needs a name and tables", line=1)
    out = ProfileFile(ProfileDraft(name=""))
    name, description, items = "", "", []
    has_name = False
    for key, knode, vnode in r.mapping(root, "the profile", TOP_KEYS):
        out.lines[(None, key)] = knode.start_mark.line + 1
        if key == "id":
            try:
                out.profile_id = as_uuid(str(r.value(vnode)))
            except ValueError:
                raise _fail(vnode, "id must be a profile id (a UUID)") from None
        elif key == "name":
            name, has_name = r.string(vnode, "name"), True
        elif key == "description":
            description = r.string(vnode, "description") if r.value(vnode) is not None else ""
        elif key == "tables":
            if isinstance(vnode, yaml.ScalarNode) and r.value(vnode) is None:
                continue
            for table, tnode, body in r.mapping(vnode, "tables", ()):
                items.append(_item(r, out, table, tnode, body))
        elif key == "apps":
            if not isinstance(vnode, yaml.SequenceNode):
                raise _fail(vnode, "apps must be a list")
            out.apps = [_app(r, n) for n in vnode.value]
    if not has_name:
        raise _fail(root, "a profile needs a name")
    out.draft = ProfileDraft(name=name, description=description, items=tuple(items))
    return out


def _item(r: _Reader, out: ProfileFile, table: str, tnode: yaml.Node, body: yaml.Node) -> ItemDraft:
    out.lines[(table, None)] = tnode.start_mark.line + 1
    values: dict[str, Any] = {"table": table}
    if isinstance(body, yaml.ScalarNode) and r.value(body) is None:
        return ItemDraft(table)
    for key, knode, vnode in r.mapping(body, f"table {table!r}", TABLE_KEYS):
        out.lines[(table, key)] = knode.start_mark.line + 1
        if key == "filter":
            choice = r.value(vnode)
            if choice not in FILTERS:
                raise _fail(vnode, f"filter must be one of {', '.join(FILTERS)}")
            values["distribution"] = FILTERS[choice]
        elif key == "owned_by":
            owners = r.strings(vnode, "owned_by")
            for owner in owners:
                if owner not in OWNERS:
                    raise _fail(vnode, f"owned_by takes {', '.join(OWNERS)}, not {owner!r}")
            values["owned_by_me"] = "me" in owners
            values["owned_by_my_teams"] = "my_teams" in owners
            values["owned_by_my_business_unit"] = "my_business_unit" in owners
        elif key == "custom_filter":
            values["custom_filter"] = r.string(vnode, "custom_filter")
            start = vnode.start_mark.line
            block = isinstance(vnode, yaml.ScalarNode) and vnode.style in ("|", ">")
            out.filter_offsets[table] = start + 1 if block else start
        elif key == "sync_interval":
            minutes = r.value(vnode)
            if not isinstance(minutes, int) or isinstance(minutes, bool):
                raise _fail(vnode, "sync_interval must be a whole number of minutes")
            values["sync_interval_minutes"] = minutes
        else:
            target = {
                "relationships": "relationships",
                "columns": "columns",
                "files": "file_columns",
                "images": "image_columns",
            }[key]
            values[target] = r.strings(vnode, key)
    return ItemDraft(**values)


def _app(r: _Reader, node: yaml.Node) -> AppSettings:
    values: dict[str, Any] = {"line": node.start_mark.line + 1}
    for key, _, vnode in r.mapping(node, "an app", APP_KEYS):
        if key in ("uniquename", "name"):
            values[key] = r.string(vnode, key)
        elif key == "mode":
            mode = r.value(vnode)
            if mode not in MODES:
                raise _fail(vnode, f"mode must be one of {', '.join(MODES)}")
            values["mode"] = MODES[mode]
        elif key == "profile_mode":
            mode = r.value(vnode)
            if mode not in PROFILE_MODES:
                raise _fail(vnode, f"profile_mode must be one of {', '.join(PROFILE_MODES)}")
            values["profile_mode"] = PROFILE_MODES[mode]
        else:
            values[key] = r.boolean(vnode, key)
    if "uniquename" not in values:
        raise _fail(node, "an app needs a uniquename")
    values.setdefault("name", values["uniquename"])
    return AppSettings(**values)


def check_profile(parsed: ProfileFile, schema: Schema) -> None:
    """Raise :class:`ProfileInvalid` naming the line of every broken rule."""
    found = problems(parsed.draft, schema)
    if not found:
        return
    located = sorted(((parsed.line_of(p), p.message) for p in found), key=lambda x: x[0])
    messages = tuple(f"line {line}: {message}" for line, message in located)
    exc = ProfileInvalid("; ".join(messages), messages)
    exc.line = located[0][0]
    raise exc


def validate_profile(schema: Schema, text: str) -> ProfileFile:
    parsed = parse_profile(text)
    check_profile(parsed, schema)
    return parsed


def import_profile(records: Records, text: str, *, caller: SecurityContext = SYSTEM) -> RecordId:
    """Make the stored profile (and its apps' offline settings) what the file says; all or
    nothing. The profile is found by ``id``, else by name, else created."""
    store = records.store
    parsed = validate_profile(store.schema, text)

    def work(conn: sa.Connection) -> RecordId:
        profile_id = parsed.profile_id
        if profile_id is None:
            try:
                profile_id = profile_id_by_name(conn, store, parsed.draft.name)
            except NotFound:
                profile_id = None
        profile_id = write_draft(records, conn, parsed.draft, profile_id=profile_id, caller=caller)
        for app in parsed.apps:
            values = {
                "name": app.name,
                "canbeusedoffline": app.can_be_used_offline,
                "offlinemode": app.mode,
                "offlineprofilemode": app.profile_mode,
                "allowsyncfrequency": app.allow_sync_frequency,
                "allowwifionly": app.allow_wifi_only,
                "mobileofflineprofileid": profile_id,
            }
            try:
                row = find_app(conn, store, app.uniquename)
            except Exception:
                records.create(
                    APP, {**values, "uniquename": app.uniquename}, caller=caller, conn=conn
                )
                continue
            changed = {k: v for k, v in values.items() if row[k] != v}
            if changed:
                records.update(APP, row["appmoduleid"], changed, caller=caller, conn=conn)
        return profile_id

    return store.transact(work)


def export_profile(
    records: Records, profile_id: RecordId | str, *, caller: SecurityContext = SYSTEM
) -> str:
    """The profile's draft and the offline settings of the apps that use it, as YAML."""
    store = records.store
    pid = as_id(profile_id)
    with store.read() as conn:
        records.retrieve(PROFILE, pid, columns=["name"], caller=caller, conn=conn)
        row = load_profile_row(conn, store, pid)
        draft = load_draft(conn, store, pid)
        apps = records.retrieve_multiple(
            APP,
            where={"mobileofflineprofileid": pid},
            order_by="uniquename",
            caller=caller,
            conn=conn,
        )
    data: dict[str, Any] = {"id": str(row["mobileofflineprofileid"]), "name": draft.name}
    if draft.description:
        data["description"] = draft.description
    tables: dict[str, Any] = {}
    for item in draft.items:
        body: dict[str, Any] = {"filter": FILTER_KEYS[item.distribution]}
        owners = [
            o
            for o, on in zip(
                OWNERS,
                (item.owned_by_me, item.owned_by_my_teams, item.owned_by_my_business_unit),
                strict=True,
            )
            if on
        ]
        if owners:
            body["owned_by"] = owners
        if item.custom_filter:
            body["custom_filter"] = item.custom_filter
        for key, value in (
            ("relationships", item.relationships),
            ("columns", item.columns),
            ("files", item.file_columns),
            ("images", item.image_columns),
        ):
            if value:
                body[key] = list(value)
        body["sync_interval"] = item.sync_interval_minutes
        tables[item.table] = body
    data["tables"] = tables
    if apps:
        data["apps"] = [
            {
                "uniquename": a["uniquename"],
                "name": a["name"],
                "can_be_used_offline": bool(a["canbeusedoffline"]),
                "mode": {v: k for k, v in MODES.items()}[a["offlinemode"] or 0],
                "profile_mode": {v: k for k, v in PROFILE_MODES.items()}[
                    a["offlineprofilemode"] or 0
                ],
                "allow_sync_frequency": bool(a["allowsyncfrequency"]),
                "allow_wifi_only": bool(a["allowwifionly"]),
            }
            for a in apps
        ]
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )


class _Dumper(yaml.SafeDumper):
    pass


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _string)
