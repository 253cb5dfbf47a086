"""A stateful property test of the records service and the change log sync stands on.

A hypothesis rule-based state machine drives random valid writes (create_many, update_many,
delete, assign, associate, disassociate) on accounts, contacts, users and teams, with lookups
between them (in-batch and self references included), and random invalid ones (unknown
column, wrong type, missing required, lookup to a missing row, duplicate id, ...). A Python
oracle keeps the rows it expects and the change log it expects. After every step:

- every tracked row reads back equal to the oracle (``createdon``/``modifiedon`` aside);
- row versions are unique, and every write's versions come after all earlier ones;
- ``fs_change`` holds exactly one row per version handed out since the machine started, in
  version order, each naming the right table, record, operation, changed columns and old
  values (a delete's old row is the tombstone; an update's old values are what it replaced);
- replaying ``fs_change`` (creates add, deletes remove, updates keep) gives the live ids;
- an invalid operation raises its exact ``fieldsync.errors`` class and changes nothing at all
  (every table, the change log, the version counter).

Runs on SQLite and PostgreSQL through the ``store`` fixture: one fresh upgraded database
per test function, shared by every run of the machine, so each run clears the tracked tables
first and checks the change log from the version it started at.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar

import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    InvalidChoice,
    LookupNotFound,
    MissingRequired,
    NotFound,
    PreconditionFailed,
    ReadOnlyColumn,
    RecordNotFound,
    StringTooLong,
    UnknownColumn,
    ValidationError,
    ValueOutOfRange,
    WrongType,
)
from fieldsync.records.service import SYSTEM, Records, acting_as
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID, SYSTEM_USER_ID
from fieldsync.schema.values import jsonable
from fieldsync.security.model import SecurityContext
from fieldsync.store.catalog import fs_change
from fieldsync.store.store import Store
from fieldsync.types import EntityRef, Row

# No explain phase: it traces every line of every example, which made shrinking a failure
# take the full five minutes Hypothesis allows; without it a failure shrinks in about one.
SETTINGS = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)

# tables the machine writes, in an order that is safe to clear
TRACKED = ("teammembership", "account", "contact", "team", "systemuser")
UNCHECKED = frozenset({"createdon", "modifiedon"})  # set from the clock
SCOPE = ("ownerid", "owneridtype", "owningbusinessunit")
STATUS_FOR_STATE = {0: 1, 1: 2}
MEMBERSHIP = "teammembership_association"
PRINCIPALS = 3  # users and teams the machine keeps at most: most steps go to business rows

# lookups between the business tables: (table, column) -> tables it may point at
LOOKUPS: dict[tuple[str, str], tuple[str, ...]] = {
    ("account", "primarycontactid"): ("contact",),
    ("account", "parentaccountid"): ("account",),
    ("contact", "parentcustomerid"): ("account", "contact"),
}
POLYMORPHIC = {("contact", "parentcustomerid")}
REQUIRED = {"account": "name", "contact": "lastname"}
SOME_ID = uuid.UUID("6d1f5a1e-0000-4000-8000-00000000abcd")

# values that break a column's rules: (table, column, value, the error)
BAD_VALUES: list[tuple[str, str, Any, type[FieldsyncError]]] = [
    ("account", "numberofemployees", "many", WrongType),
    ("account", "numberofemployees", -1, ValueOutOfRange),
    ("account", "creditonhold", "yes", WrongType),
    ("account", "revenue", [1], WrongType),
    ("account", "industrycode", 99, InvalidChoice),
    ("account", "accountnumber", "x" * 21, StringTooLong),
    ("account", "primarycontactid", "not-a-guid", WrongType),
    ("account", "parentaccountid", EntityRef("contact", SOME_ID), WrongType),
    ("contact", "parentcustomerid", SOME_ID, WrongType),  # polymorphic: must name its table
    ("contact", "parentcustomerid", EntityRef("team", SOME_ID), WrongType),
    ("contact", "birthdate", "yesterday", WrongType),
    ("contact", "birthdate", dt.date(1700, 1, 1), ValueOutOfRange),
    ("contact", "preferredcontactmethodcode", True, WrongType),
    ("contact", "lastname", "x" * 51, StringTooLong),
]


# -- values: each strategy draws (what the caller passes, what the store must hold) ---------

Pair = tuple[Any, Any]
Action = Callable[[], object]
Maker = Callable[[], Action]

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


def _same(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Pair]:
    return strategy.map(lambda v: (v, v))


def _money() -> st.SearchStrategy[Pair]:
    def pair(cents: int, as_text: bool) -> Pair:
        value = Decimal(cents).scaleb(-2)
        return (str(value) if as_text else value), value

    return st.builds(pair, st.integers(-(10**14), 10**14), st.booleans())


def _date() -> st.SearchStrategy[Pair]:
    def pair(day: dt.date, as_text: bool) -> Pair:
        return (day.isoformat() if as_text else day), day

    return st.builds(pair, st.dates(dt.date(1753, 1, 1), dt.date(9999, 12, 31)), st.booleans())


def _latitude() -> st.SearchStrategy[Pair]:
    return st.floats(-90, 90, allow_nan=False).map(lambda f: (f, round(f, 5)))


FIELDS: dict[str, dict[str, st.SearchStrategy[Pair]]] = {
    "account": {
        "name": _same(TEXT),
        "accountnumber": _same(TEXT),
        "telephone1": _same(TEXT),
        "description": _same(st.text(max_size=40).filter(lambda s: "\x00" not in s)),
        "numberofemployees": _same(st.integers(0, 10**9)),
        "creditonhold": _same(st.booleans()),
        "industrycode": _same(st.integers(1, 8)),
        "revenue": _money(),
        "address1_latitude": _latitude(),
    },
    "contact": {
        "lastname": _same(TEXT),
        "firstname": _same(TEXT),
        "jobtitle": _same(TEXT),
        "donotphone": _same(st.booleans()),
        "preferredcontactmethodcode": _same(st.integers(1, 5)),
        "birthdate": _date(),
    },
}


def _values(table: str, *, creating: bool) -> st.SearchStrategy[dict[str, Pair]]:
    """A dict of column -> (api value, stored value); required columns on create, and
    any column may be cleared (None) on update unless it is required."""
    fields = FIELDS[table]
    required = REQUIRED[table]
    optional: dict[str, st.SearchStrategy[Pair]] = {}
    for name, strategy in fields.items():
        if name == required:
            optional[name] = strategy
        else:
            optional[name] = st.one_of(strategy, st.just((None, None)))
    if creating:
        fixed = {required: optional.pop(required)}
        return st.fixed_dictionaries(fixed, optional=optional)
    return st.fixed_dictionaries({}, optional=optional)


# -- reading the database ------------------------------------------------------------------


def snapshot(store: Store, since: int) -> dict[str, Any]:
    """Every row of every table, the change log after ``since`` (and its size), and the
    version counter."""
    out: dict[str, Any] = {}
    with store.read() as conn:
        for name in sorted(store.schema.tables):
            sql = store.sql_table(name)
            pk = sql.c[store.schema.table(name).primary_id]
            out[name] = [dict(r) for r in conn.execute(sa.select(sql).order_by(pk)).mappings()]
        recent = sa.select(fs_change).where(fs_change.c.version > since)
        out["fs_change"] = [
            dict(r) for r in conn.execute(recent.order_by(fs_change.c.version)).mappings()
        ]
        out["fs_change count"] = conn.execute(
            sa.select(sa.func.count()).select_from(fs_change)
        ).scalar_one()
        out["version"] = store.current_version(conn)
    return out


def _log_entry(row: Mapping[str, Any]) -> Row:
    """A change-log row as the oracle predicts it: no clock values."""
    entry = {k: v for k, v in row.items() if k != "changedon"}
    if isinstance(entry.get("old"), dict):
        entry["old"] = {k: v for k, v in entry["old"].items() if k not in UNCHECKED}
    return entry


def _diff(got: Mapping[Any, Any], want: Mapping[Any, Any]) -> list[str]:
    out = []
    for key in sorted(set(got) | set(want), key=str):
        if got.get(key, "<absent>") != want.get(key, "<absent>"):
            out.append(
                f"{key}: got {got.get(key, '<absent>')!r}, want {want.get(key, '<absent>')!r}"
            )
    return out


# -- the machine ---------------------------------------------------------------------------


class RecordsMachine(RuleBasedStateMachine):
    """Set ``STORE``, ``BUSINESS_UNITS`` and ``BASELINE_USERS`` in a subclass per database.

    One store serves every run of the machine (as one serves a server's requests): opening
    a store per run builds its SQL tables again and defeats SQLAlchemy's statement cache,
    which makes shrinking a failure several times slower."""

    STORE: ClassVar[Store]
    BUSINESS_UNITS: ClassVar[tuple[uuid.UUID, ...]] = (ROOT_BUSINESS_UNIT_ID,)
    BASELINE_USERS: ClassVar[frozenset[uuid.UUID]] = frozenset({SYSTEM_USER_ID})

    def __init__(self) -> None:
        super().__init__()
        self.store = self.STORE
        self.records = Records(self.store)
        with self.store.write() as conn:
            for name in TRACKED:
                sql = self.store.sql_table(name)
                stmt = sql.delete()
                if name == "systemuser":
                    stmt = stmt.where(sql.c.systemuserid.not_in(list(self.BASELINE_USERS)))
                conn.execute(stmt)
            self.start = self.store.current_version(conn)
        self.version = self.start  # the last version the oracle expects handed out
        self.columns = {t: [c.name for c in self.store.sql_table(t).c] for t in TRACKED}
        self.pk = {t: self.store.schema.table(t).primary_id for t in TRACKED}
        self.rows: dict[str, dict[uuid.UUID, Row]] = {t: {} for t in TRACKED}
        self.log: list[Row] = []  # the expected change log since start
        self.gone: list[tuple[str, uuid.UUID]] = []  # deleted rows, for lookups that miss
        # business unit of each principal that can own rows
        self.units: dict[tuple[str, uuid.UUID], uuid.UUID] = {
            ("systemuser", SYSTEM_USER_ID): ROOT_BUSINESS_UNIT_ID
        }
        self.counter = 0

    # -- oracle helpers --------------------------------------------------------------------

    def _pick(self, data: st.DataObject, items: list[Any]) -> Any:
        return data.draw(st.sampled_from(items))

    def _caller(self, data: st.DataObject) -> SecurityContext:
        users = list(self.rows["systemuser"])
        if not users or data.draw(st.booleans()):
            return SYSTEM
        user = self._pick(data, users)
        return acting_as(user, self.rows["systemuser"][user]["businessunitid"])

    def _owners(self) -> list[EntityRef]:
        """Principals that may own rows: users and enabled teams."""
        out = [EntityRef("systemuser", SYSTEM_USER_ID)]
        out += [EntityRef("systemuser", u) for u in self.rows["systemuser"]]
        out += [
            EntityRef("team", t) for t, row in self.rows["team"].items() if not row["isdisabled"]
        ]
        return out

    def _blank(self, table: str) -> Row:
        return {c: None for c in self.columns[table] if c not in UNCHECKED}

    def _missing_id(self, data: st.DataObject, table: str) -> uuid.UUID:
        gone = [rid for t, rid in self.gone if t == table]
        reuse: bool = data.draw(st.booleans())
        if gone and reuse:
            return self._pick(data, gone)  # type: ignore[no-any-return]
        return data.draw(st.uuids())

    def _lookup(
        self, data: st.DataObject, table: str, column: str, batch: list[tuple[str, uuid.UUID]]
    ) -> Pair | None:
        """A valid lookup value (api, (id, target table)) or None when nothing to point at;
        ``batch`` holds rows of the same write with a chosen id (they may be pointed at)."""
        choices: list[tuple[str, uuid.UUID]] = []
        for target in LOOKUPS[(table, column)]:
            choices += [(target, rid) for rid in self.rows[target]]
            choices += [(t, rid) for t, rid in batch if t == target]
        if not choices:
            return None
        target, rid = self._pick(data, choices)
        if (table, column) in POLYMORPHIC:
            style = data.draw(st.sampled_from(["ref", "tuple"]))
            api: Any = EntityRef(target, rid) if style == "ref" else (str(rid), target)
        else:
            api = data.draw(st.sampled_from([rid, str(rid), EntityRef(target, rid)]))
        return api, (rid, target)

    def _add_lookups(
        self,
        data: st.DataObject,
        table: str,
        values: dict[str, Pair],
        batch: list[tuple[str, uuid.UUID]],
        *,
        clearing: bool,
    ) -> None:
        for tab, column in LOOKUPS:
            if tab != table or not data.draw(st.booleans()):
                continue
            if clearing and data.draw(st.integers(0, 3)) == 0:
                values[column] = (None, None)
                continue
            value = self._lookup(data, table, column, batch)
            if value is not None:
                values[column] = value

    def _store_values(self, table: str, values: Mapping[str, Pair]) -> Row:
        """The stored columns of drawn values: lookups split into id and target table."""
        out: Row = {}
        for name, (_, stored) in values.items():
            if (table, name) in LOOKUPS:
                out[name] = None if stored is None else stored[0]
                if (table, name) in POLYMORPHIC:
                    out[f"{name}type"] = None if stored is None else stored[1]
            else:
                out[name] = stored
        return out

    def _next_versions(self, count: int) -> list[int]:
        first = self.version + 1
        self.version += count
        return list(range(first, first + count))

    def _logged(
        self,
        version: int,
        table: str,
        rid: uuid.UUID,
        operation: str,
        caller: SecurityContext,
        changed: list[str] | None = None,
        old: Row | None = None,
    ) -> None:
        self.log.append(
            {
                "version": version,
                "tablename": table,
                "recordid": rid,
                "operation": operation,
                "changed": changed,
                "old": None
                if old is None
                else {k: jsonable(v) for k, v in old.items() if k not in UNCHECKED},
                "userid": caller.user_id,
            }
        )

    def _new_log(self) -> list[Row]:
        """Change-log rows after the oracle's last expected version."""
        with self.store.read() as conn:
            stmt = (
                sa.select(fs_change)
                .where(fs_change.c.version > self.version)
                .order_by(fs_change.c.version)
            )
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def _fails(self, error: type[FieldsyncError], action: Action, label: str) -> None:
        """The action raises exactly ``error`` and leaves every table as it was."""
        before = snapshot(self.store, self.start)
        raised: FieldsyncError | None = None
        try:
            action()
        except FieldsyncError as exc:
            raised = exc
        assert raised is not None, f"{label}: accepted, expected {error.__name__}"
        assert type(raised) is error, f"{label}: raised {type(raised).__name__}: {raised}"
        after = snapshot(self.store, self.start)
        if after != before:
            changed = [k for k in before if before[k] != after[k]]
            raise AssertionError(f"{label}: the failed operation changed {changed}")

    # -- valid writes ----------------------------------------------------------------------

    @precondition(lambda self: len(self.rows["systemuser"]) < PRINCIPALS)
    @rule(data=st.data())
    def create_user(self, data: st.DataObject) -> None:
        caller = self._caller(data)
        unit = self._pick(data, list(self.BUSINESS_UNITS))
        self.counter += 1
        name = f"user{self.counter}@example.com"
        rid = self.records.create(
            "systemuser", {"domainname": name, "businessunitid": unit}, caller=caller
        )
        (version,) = self._next_versions(1)
        row = self._blank("systemuser")
        row.update(
            systemuserid=rid,
            domainname=name,
            businessunitid=unit,
            owningbusinessunit=unit,
            createdby=caller.user_id,
            modifiedby=caller.user_id,
            statecode=0,
            statuscode=1,
            versionnumber=version,
        )
        self.rows["systemuser"][rid] = row
        self.units[("systemuser", rid)] = unit
        self._logged(version, "systemuser", rid, "create", caller)

    @precondition(lambda self: len(self.rows["team"]) < PRINCIPALS)
    @rule(data=st.data())
    def create_team(self, data: st.DataObject) -> None:
        caller = self._caller(data)
        unit = self._pick(data, list(self.BUSINESS_UNITS))
        name = data.draw(TEXT)
        rid = self.records.create("team", {"name": name, "businessunitid": unit}, caller=caller)
        (version,) = self._next_versions(1)
        row = self._blank("team")
        row.update(
            teamid=rid,
            name=name,
            businessunitid=unit,
            owningbusinessunit=unit,
            createdby=caller.user_id,
            modifiedby=caller.user_id,
            statecode=0,
            statuscode=1,
            versionnumber=version,
        )
        self.rows["team"][rid] = row
        self.units[("team", rid)] = unit
        self._logged(version, "team", rid, "create", caller)

    # one rule per table, so that business rows get most of the steps

    @rule(data=st.data())
    def create_accounts(self, data: st.DataObject) -> None:
        self._create_many(data, "account")

    @rule(data=st.data())
    def create_contacts(self, data: st.DataObject) -> None:
        self._create_many(data, "contact")

    @precondition(lambda self: self.rows["account"])
    @rule(data=st.data())
    def update_accounts(self, data: st.DataObject) -> None:
        self._update_many(data, "account")

    @precondition(lambda self: self.rows["contact"])
    @rule(data=st.data())
    def update_contacts(self, data: st.DataObject) -> None:
        self._update_many(data, "contact")

    @precondition(lambda self: self.rows["account"])
    @rule(data=st.data())
    def delete_account(self, data: st.DataObject) -> None:
        self._delete(data, "account", self._pick(data, list(self.rows["account"])))

    @precondition(lambda self: self.rows["contact"])
    @rule(data=st.data())
    def delete_contact(self, data: st.DataObject) -> None:
        self._delete(data, "contact", self._pick(data, list(self.rows["contact"])))

    @precondition(lambda self: any(not self._owns_rows(t) for t in self.rows["team"]))
    @rule(data=st.data())
    def delete_team(self, data: st.DataObject) -> None:
        teams = [t for t in self.rows["team"] if not self._owns_rows(t)]
        self._delete(data, "team", self._pick(data, teams))

    def _create_many(self, data: st.DataObject, table: str) -> None:
        caller = self._caller(data)
        count = data.draw(st.integers(1, 4), label="rows")
        pk = self.pk[table]
        chosen = [data.draw(st.one_of(st.none(), st.uuids())) for _ in range(count)]
        chosen = [c if c is None or c not in self.rows[table] else None for c in chosen]
        if len({c for c in chosen if c is not None}) != len([c for c in chosen if c is not None]):
            chosen = [None] * count
        batch = [(table, c) for c in chosen if c is not None]
        inputs: list[dict[str, Pair]] = []
        for rid in chosen:
            values = data.draw(_values(table, creating=True))
            self._add_lookups(data, table, values, batch, clearing=False)
            if rid is not None:
                values[pk] = (data.draw(st.sampled_from([rid, str(rid)])), rid)
            if data.draw(st.integers(0, 3)) == 0:
                owner = self._pick(data, self._owners())
                values["ownerid"] = (owner, owner)
            inputs.append(values)

        ids = self.records.create_many(
            table, [{k: api for k, (api, _) in v.items()} for v in inputs], caller=caller
        )

        assert len(ids) == count
        versions = self._next_versions(count)
        for rid, given, values, version in zip(ids, chosen, inputs, versions, strict=True):
            if given is not None:
                assert rid == given
            row = self._blank(table)
            owner_pair = values.pop("ownerid", None)
            row.update(self._store_values(table, values))
            if owner_pair is None:
                owner = EntityRef("systemuser", caller.user_id)
                unit = caller.business_unit_id
            else:
                owner = owner_pair[1]
                unit = self.units[(owner.table, owner.id)]
            row.update(
                {pk: rid},
                ownerid=owner.id,
                owneridtype=owner.table,
                owningbusinessunit=unit,
                createdby=caller.user_id,
                modifiedby=caller.user_id,
                statecode=0,
                statuscode=1,
                versionnumber=version,
            )
            self.rows[table][rid] = row
            self._logged(version, table, rid, "create", caller)

    def _update_many(self, data: st.DataObject, table: str) -> None:
        caller = self._caller(data)
        existing = list(self.rows[table])
        ids = data.draw(st.lists(st.sampled_from(existing), min_size=1, max_size=3, unique=True))
        changes: list[tuple[uuid.UUID, dict[str, Pair]]] = []
        for rid in ids:
            values = data.draw(_values(table, creating=False))
            self._add_lookups(data, table, values, [], clearing=True)
            if data.draw(st.integers(0, 4)) == 0:
                owner = self._pick(data, self._owners())
                values["ownerid"] = (owner, owner)
            if data.draw(st.integers(0, 4)) == 0:
                state = data.draw(st.integers(0, 1))
                values["statecode"] = (state, state)
            changes.append((rid, values))
        as_id = data.draw(st.booleans())
        versions = self.records.update_many(
            table,
            [
                (rid if as_id else str(rid), {k: api for k, (api, _) in v.items()})
                for rid, v in changes
            ],
            caller=caller,
        )
        assert len(versions) == len(ids)
        for (rid, values), version in zip(changes, versions, strict=True):
            row = self.rows[table][rid]
            if not values:  # nothing to write: no new version, none logged
                assert version == row["versionnumber"]
                continue
            (expected,) = self._next_versions(1)
            assert version == expected
            written = self._store_values(table, {k: v for k, v in values.items() if k != "ownerid"})
            changed = set(values)
            if "ownerid" in values:
                owner = values["ownerid"][1]
                written.update(
                    ownerid=owner.id,
                    owneridtype=owner.table,
                    owningbusinessunit=self.units[(owner.table, owner.id)],
                )
            if "statecode" in values:
                written["statuscode"] = STATUS_FOR_STATE[written["statecode"]]
                changed.add("statuscode")
            old = {c: row[c] for c in written}
            old.update({c: row[c] for c in SCOPE})
            row.update(written, modifiedby=caller.user_id, versionnumber=version)
            self._logged(version, table, rid, "update", caller, sorted(changed), old)

    @precondition(lambda self: self.rows["account"] or self.rows["contact"])
    @rule(data=st.data())
    def assign(self, data: st.DataObject) -> None:
        table = self._pick(data, [t for t in ("account", "contact") if self.rows[t]])
        rid = self._pick(data, list(self.rows[table]))
        owner = self._pick(data, self._owners())
        caller = self._caller(data)
        version = self.records.assign(table, rid, owner, caller=caller)
        (expected,) = self._next_versions(1)
        assert version == expected
        row = self.rows[table][rid]
        old = {c: row[c] for c in SCOPE}
        row.update(
            ownerid=owner.id,
            owneridtype=owner.table,
            owningbusinessunit=self.units[(owner.table, owner.id)],
            modifiedby=caller.user_id,
            versionnumber=version,
        )
        self._logged(version, table, rid, "assign", caller, ["ownerid"], old)

    @precondition(lambda self: self.rows["team"])
    @rule(data=st.data())
    def enable_or_disable_team(self, data: st.DataObject) -> None:
        rid = self._pick(data, list(self.rows["team"]))
        disabled = data.draw(st.booleans())
        caller = self._caller(data)
        (version,) = self.records.update_many(
            "team", [(rid, {"isdisabled": disabled})], caller=caller
        )
        (expected,) = self._next_versions(1)
        assert version == expected
        row = self.rows["team"][rid]
        old = {"isdisabled": row["isdisabled"], "owningbusinessunit": row["owningbusinessunit"]}
        row.update(isdisabled=disabled, modifiedby=caller.user_id, versionnumber=version)
        self._logged(version, "team", rid, "update", caller, ["isdisabled"], old)

    def _pairs(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        users = [SYSTEM_USER_ID, *self.rows["systemuser"]]
        linked = {(r["systemuserid"], r["teamid"]) for r in self.rows["teammembership"].values()}
        return [(u, t) for u in users for t in self.rows["team"] if (u, t) not in linked]

    @precondition(lambda self: self._pairs())
    @rule(data=st.data())
    def associate(self, data: st.DataObject) -> None:
        user, team = self._pick(data, self._pairs())
        caller = self._caller(data)
        rid = self.records.associate(MEMBERSHIP, user, team, caller=caller)
        (version,) = self._next_versions(1)
        self.rows["teammembership"][rid] = {
            "teammembershipid": rid,
            "systemuserid": user,
            "teamid": team,
            "versionnumber": version,
        }
        self._logged(version, "teammembership", rid, "associate", caller)

    @precondition(lambda self: self.rows["teammembership"])
    @rule(data=st.data())
    def disassociate(self, data: st.DataObject) -> None:
        rid = self._pick(data, list(self.rows["teammembership"]))
        link = self.rows["teammembership"][rid]
        caller = self._caller(data)
        version = self.records.disassociate(
            MEMBERSHIP, link["systemuserid"], link["teamid"], caller=caller
        )
        (expected,) = self._next_versions(1)
        assert version == expected
        del self.rows["teammembership"][rid]
        self._logged(version, "teammembership", rid, "disassociate", caller, old=link)

    def _owns_rows(self, team: uuid.UUID) -> bool:
        return any(
            row["ownerid"] == team for t in ("account", "contact") for row in self.rows[t].values()
        )

    def _referencing(self, table: str, rid: uuid.UUID) -> dict[tuple[str, uuid.UUID], list[str]]:
        """Rows whose lookups point at (table, rid): (their table, id) -> cleared columns."""
        out: dict[tuple[str, uuid.UUID], list[str]] = {}
        for (tab, column), targets in LOOKUPS.items():
            if table not in targets:
                continue
            for other, row in self.rows[tab].items():
                if row[column] != rid:
                    continue
                if (tab, column) in POLYMORPHIC:
                    if row[f"{column}type"] != table:
                        continue
                    out[(tab, other)] = [column, f"{column}type"]
                else:
                    out[(tab, other)] = [column]
        if table == "team":
            for link, row in self.rows["teammembership"].items():
                if row["teamid"] == rid:
                    out[("teammembership", link)] = []
        return out

    def _delete(self, data: st.DataObject, table: str, rid: uuid.UUID) -> None:
        caller = self._caller(data)
        # rows pointing at it, the row itself aside: a self link stays in the tombstone
        referencing = self._referencing(table, rid)
        referencing.pop((table, rid), None)

        version = self.records.delete(table, rid, caller=caller)

        new = self._new_log()
        assert [c["version"] for c in new] == list(range(self.version + 1, version + 1)), (
            "the delete and its cascade take consecutive versions, all logged"
        )
        *cascade, tombstone = new
        touched = {(c["tablename"], c["recordid"]) for c in cascade}
        assert len(touched) == len(cascade), "a row changed twice by one cascade"
        # every other row pointing at it is cleared (or its link removed) exactly once, and
        # the deleted row itself is not changed on its way out
        assert touched == set(referencing), (
            f"cascade of deleting {table} {rid}: logged {sorted(touched, key=str)}, "
            f"expected {sorted(referencing, key=str)}"
        )
        for change in cascade:
            key = (change["tablename"], change["recordid"])
            other_table, other = key
            if other_table == "teammembership":
                link = self.rows["teammembership"].pop(other)
                self._logged(
                    change["version"], other_table, other, "disassociate", caller, old=link
                )
                continue
            columns = referencing[key]
            row = self.rows[other_table][other]
            old = {c: row[c] for c in columns}
            row.update(
                dict.fromkeys(columns),
                modifiedby=caller.user_id,
                versionnumber=change["version"],
            )
            self._logged(change["version"], other_table, other, "update", caller, columns[:1], old)
        self.version = version
        # the tombstone is the row as it was: as the log last left it
        old_row = self.rows[table].pop(rid)
        self._logged(version, table, rid, "delete", caller, old=old_row)
        assert (tombstone["tablename"], tombstone["recordid"]) == (table, rid)
        self.gone.append((table, rid))
        if table == "team":
            del self.units[("team", rid)]

    # -- invalid writes --------------------------------------------------------------------

    def _valid_rows(self, data: st.DataObject, table: str) -> list[dict[str, Any]]:
        count = data.draw(st.integers(0, 2))
        return [
            {k: api for k, (api, _) in data.draw(_values(table, creating=True)).items()}
            for _ in range(count)
        ]

    def _bad_create(self, data: st.DataObject, table: str, bad: dict[str, Any]) -> Action:
        rows = self._valid_rows(data, table)
        good = {k: api for k, (api, _) in data.draw(_values(table, creating=True)).items()}
        good.update(bad)
        good = {k: v for k, v in good.items() if v is not _DROP}
        rows.insert(data.draw(st.integers(0, len(rows))), good)
        caller = self._caller(data)
        return lambda: self.records.create_many(table, rows, caller=caller)

    def _bad_update(self, data: st.DataObject, table: str, bad: dict[str, Any]) -> Action:
        ids = data.draw(
            st.lists(st.sampled_from(list(self.rows[table])), min_size=1, max_size=3, unique=True)
        )
        changes: list[tuple[Any, Mapping[str, Any]]] = [
            (rid, {k: api for k, (api, _) in data.draw(_values(table, creating=False)).items()})
            for rid in ids
        ]
        at = data.draw(st.integers(0, len(changes) - 1))
        changes[at] = (changes[at][0], {**changes[at][1], **bad})
        caller = self._caller(data)
        return lambda: self.records.update_many(table, changes, caller=caller)

    @rule(data=st.data())
    def invalid_operation(self, data: st.DataObject) -> None:
        cases = self._invalid_cases(data)
        label = data.draw(st.sampled_from(sorted(cases)), label="invalid")
        error, make = cases[label]
        self._fails(error, make(), label)

    def _invalid_cases(self, data: st.DataObject) -> dict[str, tuple[type[FieldsyncError], Maker]]:
        """Every invalid operation that the current state allows: label -> (the error it
        must raise, what builds it). Builders draw their details when called."""
        rows = self.rows
        cases: dict[str, tuple[type[FieldsyncError], Maker]] = {}

        def add(label: str, error: type[FieldsyncError], make: Maker) -> None:
            cases[label] = (error, make)

        def create(table: str, bad: Callable[[], dict[str, Any]]) -> Maker:
            return lambda: self._bad_create(data, table, bad())

        def update(table: str, bad: Callable[[], dict[str, Any]]) -> Maker:
            return lambda: self._bad_update(data, table, bad())

        def one(values: dict[str, Any]) -> Callable[[], dict[str, Any]]:
            return lambda: values

        for table in ("account", "contact"):
            required = REQUIRED[table]
            add(
                f"create {table}: unknown column",
                UnknownColumn,
                create(table, one({"nosuchcolumn": 1})),
            )
            add(
                f"create {table}: missing required",
                MissingRequired,
                create(table, partial(self._without, data, required)),
            )
            add(
                f"create {table}: read-only column",
                ReadOnlyColumn,
                create(table, one({"versionnumber": 1})),
            )
            add(
                f"create {table}: owner that does not exist",
                LookupNotFound,
                create(
                    table, lambda: {"ownerid": EntityRef("team", self._missing_id(data, "team"))}
                ),
            )
            if self._disabled():
                add(
                    f"create {table}: disabled owner",
                    ValidationError,
                    create(table, lambda: {"ownerid": self._disabled_team(data)}),
                )
            if not rows[table]:
                continue
            add(
                f"create {table}: id that exists",
                PreconditionFailed,
                create(table, partial(self._existing_id, data, table)),
            )
            add(
                f"update {table}: missing required",
                MissingRequired,
                update(table, one({required: None})),
            )
            add(
                f"update {table}: unknown column",
                UnknownColumn,
                update(
                    table, lambda: {data.draw(st.sampled_from(["nosuchcolumn", "owneridtype"])): 1}
                ),
            )
            add(
                f"update {table}: read-only column",
                ReadOnlyColumn,
                update(table, partial(self._read_only, data, table)),
            )
            add(
                f"update {table}: the same row twice",
                BadRequest,
                partial(self._same_row_twice, data, table),
            )
            add(
                f"update {table}: row that does not exist",
                RecordNotFound,
                partial(self._update_missing, data, table),
            )
            add(
                f"delete {table}: row that does not exist",
                RecordNotFound,
                partial(self._delete_missing, data, table),
            )
            add(
                f"assign {table}: row that does not exist",
                RecordNotFound,
                partial(self._bad_assign, data, table, row_exists=False),
            )
            add(
                f"assign {table}: team that does not exist",
                LookupNotFound,
                partial(self._bad_assign, data, table, row_exists=True),
            )
            if self._disabled():
                add(
                    f"assign {table}: disabled team",
                    ValidationError,
                    partial(self._bad_assign, data, table, row_exists=True, disabled=True),
                )

        for table, column, value, error in BAD_VALUES:
            add(f"create {table}: {column} {value!r}", error, create(table, one({column: value})))
            if rows[table]:
                add(
                    f"update {table}: {column} {value!r}",
                    error,
                    update(table, one({column: value})),
                )

        # lookups to rows that do not exist (never created, or deleted)
        for (table, column), targets in LOOKUPS.items():
            for target in targets:

                def missing(t: str = table, c: str = column, to: str = target) -> dict[str, Any]:
                    rid = self._missing_id(data, to)
                    return {c: EntityRef(to, rid) if (t, c) in POLYMORPHIC else rid}

                add(
                    f"create {table}: {column} to a missing {target}",
                    LookupNotFound,
                    create(table, missing),
                )
                if rows[table]:
                    add(
                        f"update {table}: {column} to a missing {target}",
                        LookupNotFound,
                        update(table, missing),
                    )
        add(
            "create account: the same id twice in one batch",
            PreconditionFailed,
            partial(self._same_id_twice, data),
        )

        # memberships and teams
        if rows["teammembership"]:
            add(
                "associate: already associated",
                PreconditionFailed,
                partial(self._associate_again, data),
            )
        if rows["team"]:
            add(
                "associate: user that does not exist",
                LookupNotFound,
                partial(self._bad_membership, data, associate=True),
            )
            add(
                "disassociate: not associated",
                NotFound,
                partial(self._bad_membership, data, associate=False),
            )
        if any(self._owns_rows(t) for t in rows["team"]):
            add("delete team: it still owns rows", BadRequest, partial(self._delete_owner, data))
        return cases

    def _without(self, data: st.DataObject, column: str) -> dict[str, Any]:
        return {column: data.draw(st.sampled_from([None, _DROP]))}  # null, or left out

    def _existing_id(self, data: st.DataObject, table: str) -> dict[str, Any]:
        return {self.pk[table]: self._pick(data, list(self.rows[table]))}

    def _read_only(self, data: st.DataObject, table: str) -> dict[str, Any]:
        column = self._pick(data, [self.pk[table], "createdon", "versionnumber"])
        return {column: self._pick(data, [1, str(SOME_ID)])}

    def _delete_missing(self, data: st.DataObject, table: str) -> Action:
        rid = self._missing_id(data, table)
        caller = self._caller(data)
        return lambda: self.records.delete(table, rid, caller=caller)

    def _bad_assign(
        self, data: st.DataObject, table: str, *, row_exists: bool, disabled: bool = False
    ) -> Action:
        if row_exists:
            rid = self._pick(data, list(self.rows[table]))
            owner = (
                self._disabled_team(data)
                if disabled
                else EntityRef("team", self._missing_id(data, "team"))
            )
        else:
            rid = self._missing_id(data, table)
            owner = self._pick(data, self._owners())
        caller = self._caller(data)
        return lambda: self.records.assign(table, rid, owner, caller=caller)

    def _associate_again(self, data: st.DataObject) -> Action:
        link = self._pick(data, list(self.rows["teammembership"].values()))
        caller = self._caller(data)
        return lambda: self.records.associate(
            MEMBERSHIP, link["systemuserid"], link["teamid"], caller=caller
        )

    def _bad_membership(self, data: st.DataObject, *, associate: bool) -> Action:
        team = self._pick(data, list(self.rows["team"]))
        if associate:
            user = self._missing_id(data, "systemuser")
            return lambda: self.records.associate(MEMBERSHIP, user, team)
        linked = {
            r["systemuserid"] for r in self.rows["teammembership"].values() if r["teamid"] == team
        }
        users = [u for u in [SYSTEM_USER_ID, *self.rows["systemuser"]] if u not in linked]
        user = self._pick(data, users) if users else data.draw(st.uuids())
        return lambda: self.records.disassociate(MEMBERSHIP, user, team)

    def _delete_owner(self, data: st.DataObject) -> Action:
        team = self._pick(data, [t for t in self.rows["team"] if self._owns_rows(t)])
        return lambda: self.records.delete("team", team)

    def _disabled(self) -> list[uuid.UUID]:
        return [t for t, row in self.rows["team"].items() if row["isdisabled"]]

    def _disabled_team(self, data: st.DataObject) -> EntityRef:
        return EntityRef("team", self._pick(data, self._disabled()))

    def _same_row_twice(self, data: st.DataObject, table: str) -> Action:
        rid = self._pick(data, list(self.rows[table]))
        first = {k: api for k, (api, _) in data.draw(_values(table, creating=False)).items()}
        second = {k: api for k, (api, _) in data.draw(_values(table, creating=False)).items()}
        changes = [(rid, first), (str(rid), second)]
        return lambda: self.records.update_many(table, changes)

    def _update_missing(self, data: st.DataObject, table: str) -> Action:
        rid = self._pick(data, list(self.rows[table]))
        changes: list[tuple[uuid.UUID, dict[str, Any]]] = [
            (rid, {}),
            (self._missing_id(data, table), {}),
        ]
        if data.draw(st.booleans()):
            changes.reverse()
        return lambda: self.records.update_many(table, changes)

    def _same_id_twice(self, data: st.DataObject) -> Action:
        rid = data.draw(st.uuids())
        rows = self._valid_rows(data, "account")
        rows.insert(data.draw(st.integers(0, len(rows))), {"name": "a", "accountid": rid})
        rows.insert(data.draw(st.integers(0, len(rows))), {"name": "b", "accountid": str(rid)})
        return lambda: self.records.create_many("account", rows)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def the_database_matches_the_oracle(self) -> None:
        with self.store.read() as conn:
            current = self.store.current_version(conn)
            live: dict[str, dict[uuid.UUID, Row]] = {}
            for table in TRACKED:
                sql = self.store.sql_table(table)
                rows = {
                    r[self.pk[table]]: {k: v for k, v in r.items() if k not in UNCHECKED}
                    for r in conn.execute(sa.select(sql)).mappings()
                }
                if table == "systemuser":
                    rows = {k: v for k, v in rows.items() if k not in self.BASELINE_USERS}
                live[table] = rows
            log = [
                dict(r)
                for r in conn.execute(
                    sa.select(fs_change)
                    .where(fs_change.c.version > self.start)
                    .order_by(fs_change.c.version)
                ).mappings()
            ]

        # the version counter: every version handed out is accounted for
        assert current == self.version, f"current_version {current}, oracle {self.version}"

        # every row reads back as the oracle has it
        for table in TRACKED:
            got, want = live[table], self.rows[table]
            assert set(got) == set(want), (
                f"{table}: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
            )
            for rid, row in want.items():
                problems = _diff(got[rid], row)
                assert not problems, f"{table} {rid}: {problems}"

        # versions: unique per row, all handed out since the start
        versions = [r["versionnumber"] for rows in live.values() for r in rows.values()]
        assert len(versions) == len(set(versions)), "two rows share a version"
        assert all(self.start < v <= current for v in versions)

        # the change log: one row per version since the start, in order, as expected
        assert [c["version"] for c in log] == list(range(self.start + 1, current + 1))
        for got_entry, want_entry in zip(log, self.log, strict=True):
            assert got_entry["changedon"].tzinfo is not None
            problems = _diff(_log_entry(got_entry), want_entry)
            assert not problems, f"change {want_entry['version']}: {problems}"
        # each live row's version is its latest change
        latest = {(c["tablename"], c["recordid"]): c["version"] for c in log}
        for table, rows in live.items():
            for rid, row in rows.items():
                assert latest[(table, rid)] == row["versionnumber"], (table, rid)

        # replaying the log gives exactly the live ids
        replay: dict[str, set[uuid.UUID]] = {t: set() for t in TRACKED}
        for c in log:
            ids = replay[c["tablename"]]
            if c["operation"] in ("create", "associate"):
                assert c["recordid"] not in ids, f"created twice: {c}"
                ids.add(c["recordid"])
            elif c["operation"] in ("delete", "disassociate"):
                assert c["recordid"] in ids, f"removed before it was created: {c}"
                ids.remove(c["recordid"])
            else:
                assert c["operation"] in ("update", "assign"), c
                assert c["recordid"] in ids, f"changed while not live: {c}"
        for table in TRACKED:
            assert replay[table] == set(live[table]), f"replay of {table} differs"


class _Drop:
    """Marks a column to leave out of a row (as opposed to setting it to None)."""


_DROP = _Drop()


def test_records_state_machine(store: Store) -> None:
    east = Records(store).create(
        "businessunit", {"name": "East", "parentbusinessunitid": ROOT_BUSINESS_UNIT_ID}
    )
    with store.read() as conn:
        users = frozenset(
            conn.execute(sa.select(store.sql_table("systemuser").c.systemuserid)).scalars()
        )

    class Machine(RecordsMachine):
        STORE = store
        BUSINESS_UNITS = (ROOT_BUSINESS_UNIT_ID, east)
        BASELINE_USERS = users

    run_state_machine_as_test(Machine, settings=SETTINGS)
