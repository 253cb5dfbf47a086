"""Sync against an oracle: random server writes, device edits, syncs, lost responses and
device crashes; after every quiescent sync each replica must equal its user's scope computed
from scratch, and every local change must have been applied once or be a sync error.

Server writes cover what moves rows in and out of scopes: creates, edits, reassignment,
deletes, team joins and leaves, business unit moves, role changes, shares, profile
republishes with other filters, and access removed and given back. Runs on SQLite and
PostgreSQL through the ``platform`` fixture; every example makes new rows and new devices on
the same database, and the oracle covers all rows, old ones included.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fieldsync.client import Device, DeviceError
from fieldsync.errors import FieldsyncError
from fieldsync.offline.snapshot import Distribution, ItemSnapshot, RelationshipRef
from fieldsync.platform import Platform
from fieldsync.security.model import Privilege
from fieldsync.types import EntityRef
from sync_world import World, field_profile, replica

SETTINGS = settings(
    max_examples=6,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[p for p in settings.default.phases if p.name not in ("explain", "shrink")],
)
USERS = ("tech1", "tech2", "tech3")
VERSIONS = itertools.count(2)  # a published (profile, version) never changes: never reuse one
DEVICES = (("a", "tech1"), ("b", "tech2"), ("c", "tech3"))


def profiles() -> list[Any]:
    """The profile versions a republish picks from: other filters, other relationships."""
    mine = ItemSnapshot("workorder", Distribution.OTHER, owned_by_me=True)
    teams = ItemSnapshot("workorder", Distribution.OTHER, owned_by_me=True, owned_by_my_teams=True)
    everything = ItemSnapshot("workorder", Distribution.ALL)
    custom = ItemSnapshot(
        "workorder",
        Distribution.CUSTOM,
        custom_filter=(
            '<fetch><entity name="workorder"><filter type="or">'
            '<condition attribute="ownerid" operator="eq-userid"/>'
            '<condition attribute="priority" operator="eq" value="1"/>'
            "</filter></entity></fetch>"
        ),
    )
    unit_accounts = ItemSnapshot(
        "account",
        Distribution.OTHER,
        owned_by_my_business_unit=True,
        relationships=(RelationshipRef("account_workorder_serviceaccountid", "workorder"),),
    )
    return [
        {"workorder": mine},
        {"workorder": teams},
        {"workorder": everything},
        {"workorder": custom},
        {"workorder": mine, "account": unit_accounts},
    ]


class LossyTransport(httpx.BaseTransport):
    """Forwards to the server; can drop the network, or lose the next response after the
    server handled the request."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.inner = world.transport()
        self.lose_next = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.lose_next and request.url.path.startswith("/sync/v1/upload"):
            self.lose_next = False
            raise httpx.ReadError("the connection broke before the answer", request=request)
        return response


class SyncMachine(RuleBasedStateMachine):
    world: World
    tmp: Path

    @initialize()
    def start(self) -> None:
        self.run = uuid.uuid4().hex[:8]
        w = self.world
        w.profile = field_profile(version=1)
        w.allowed = lambda ctx: True
        w.down = False
        self.rows: dict[str, list[uuid.UUID]] = {"account": [], "contact": [], "workorder": []}
        self.transports: dict[str, LossyTransport] = {}
        self.devices: dict[str, Device] = {}
        self.owner: dict[str, str] = {}
        self.change_ids: dict[str, dict[str, tuple[str, str, str]]] = {}
        for name, user in DEVICES:
            self.transports[name] = LossyTransport(w)
            self.devices[name] = self._open(name, user, login=True)
            self.owner[name] = user
            self.change_ids[name] = {}
        org = w.platform.org
        for user in ("tech1", "tech2", "tech3"):  # back to the first state
            unit = w.unit if user != "tech3" else w.other_unit
            org.move_user(w.users[user], unit)
        org.add_members(w.team, [w.users["tech1"]])
        org.remove_members(w.team, [w.users["tech2"], w.users["tech3"]])
        for user in USERS:
            if w.technician not in self._roles(user):
                org.assign_role(EntityRef("systemuser", w.users[user]), w.technician)

    def _roles(self, user: str) -> set[uuid.UUID]:
        t = self.world.platform.store.sql_table("systemuserroles")
        with self.world.platform.store.read() as conn:
            return set(
                conn.execute(
                    sa.select(t.c.roleid).where(t.c.systemuserid == self.world.users[user])
                ).scalars()
            )

    def _open(self, name: str, user: str, *, login: bool = False) -> Device:
        directory = self.tmp / f"{self.run}-{name}"
        if login:
            return Device.login(
                directory,
                server="http://testserver",
                username=user,
                password="correct horse battery",
                app="fieldservice",
                transport=self.transports[name],
            )
        return Device(directory, transport=self.transports[name])

    def teardown(self) -> None:
        try:
            if hasattr(self, "devices"):
                self.quiescent_sync_converges()
        finally:
            for device in getattr(self, "devices", {}).values():
                device.close()

    # -- server writes ----------------------------------------------------------------------

    def _user(self, data: st.DataObject) -> uuid.UUID:
        return self.world.users[data.draw(st.sampled_from(USERS), label="user")]

    def _owner(self, data: st.DataObject) -> EntityRef:
        if data.draw(st.integers(0, 4), label="team?") == 0:
            return EntityRef("team", self.world.team)
        return EntityRef("systemuser", self._user(data))

    def _pick(self, data: st.DataObject, table: str) -> uuid.UUID | None:
        if not self.rows[table]:
            return None
        return data.draw(st.sampled_from(self.rows[table]), label=table)

    @rule(data=st.data())
    def create_account(self, data: st.DataObject) -> None:
        r = self.world.platform.records
        rid = r.create(
            "account",
            {"name": f"acc {len(self.rows['account'])}", "ownerid": self._owner(data)},
        )
        self.rows["account"].append(rid)

    @precondition(lambda self: self.rows["account"])
    @rule(data=st.data())
    def create_contact(self, data: st.DataObject) -> None:
        account = self._pick(data, "account")
        rid = self.world.platform.records.create(
            "contact",
            {
                "lastname": f"c {len(self.rows['contact'])}",
                "parentcustomerid": EntityRef("account", account),  # type: ignore[arg-type]
                "ownerid": self._owner(data),
            },
        )
        self.rows["contact"].append(rid)

    @precondition(lambda self: self.rows["account"])
    @rule(data=st.data())
    def create_workorder(self, data: st.DataObject) -> None:
        account = self._pick(data, "account")
        rid = self.world.platform.records.create(
            "workorder",
            {
                "name": f"wo {len(self.rows['workorder'])}",
                "serviceaccountid": account,
                "priority": data.draw(st.sampled_from([1, 2, 3]), label="priority"),
                "ownerid": self._owner(data),
            },
        )
        self.rows["workorder"].append(rid)

    @rule(data=st.data(), table=st.sampled_from(["account", "contact", "workorder"]))
    def server_edit(self, data: st.DataObject, table: str) -> None:
        rid = self._pick(data, table)
        if rid is None:
            return
        values: dict[str, Any] = {
            "account": {"telephone1": data.draw(st.sampled_from(["1", "2", "3"]))},
            "contact": {"jobtitle": data.draw(st.sampled_from(["a", "b"]))},
            "workorder": {"priority": data.draw(st.sampled_from([1, 2, 3]))},
        }[table]
        if table == "workorder" and data.draw(st.booleans(), label="repoint"):
            account = self._pick(data, "account")
            values["serviceaccountid"] = account
        if table == "contact" and data.draw(st.booleans(), label="repoint"):
            values["parentcustomerid"] = EntityRef("account", self._pick(data, "account"))  # type: ignore[arg-type]
        self._try(lambda: self.world.platform.records.update(table, rid, values))

    @rule(data=st.data(), table=st.sampled_from(["account", "contact", "workorder"]))
    def reassign(self, data: st.DataObject, table: str) -> None:
        rid = self._pick(data, table)
        if rid is not None:
            owner = self._owner(data)
            self._try(lambda: self.world.platform.records.assign(table, rid, owner))

    @rule(data=st.data(), table=st.sampled_from(["contact", "workorder", "account"]))
    def server_delete(self, data: st.DataObject, table: str) -> None:
        rid = self._pick(data, table)
        if rid is not None and self._try(lambda: self.world.platform.records.delete(table, rid)):
            self.rows[table].remove(rid)

    @rule(data=st.data())
    def team_membership(self, data: st.DataObject) -> None:
        org, user = self.world.platform.org, self._user(data)
        if data.draw(st.booleans(), label="join"):
            org.add_members(self.world.team, [user])
        else:
            org.remove_members(self.world.team, [user])

    @rule(data=st.data())
    def move_business_unit(self, data: st.DataObject) -> None:
        w = self.world
        unit = data.draw(st.sampled_from([w.unit, w.other_unit]), label="unit")
        self._try(lambda: w.platform.org.move_user(self._user(data), unit))

    @rule(data=st.data())
    def change_role(self, data: st.DataObject) -> None:
        w = self.world
        user = data.draw(st.sampled_from(USERS), label="user")
        ref = EntityRef("systemuser", w.users[user])
        if w.technician in self._roles(user):
            w.platform.org.remove_role(ref, w.technician)
        else:
            w.platform.org.assign_role(ref, w.technician)

    @rule(data=st.data(), table=st.sampled_from(["account", "workorder"]))
    def share(self, data: st.DataObject, table: str) -> None:
        rid = self._pick(data, table)
        if rid is None:
            return
        principal = EntityRef("systemuser", self._user(data))
        rights = 0 if data.draw(st.booleans(), label="unshare") else int(Privilege.READ)
        records = self.world.platform.records
        self._try(lambda: records.share(table, rid, principal, [Privilege.READ] if rights else 0))

    @rule(index=st.integers(0, len(profiles()) - 1))
    def republish(self, index: int) -> None:
        self.world.profile = field_profile(next(VERSIONS), **profiles()[index])

    @rule(data=st.data())
    def toggle_access(self, data: st.DataObject) -> None:
        blocked = data.draw(st.sampled_from([(), ("tech2",), ("tech3",)]), label="blocked")
        ids = {self.world.users[u] for u in blocked}
        self.world.allowed = lambda ctx: ctx.user_id not in ids

    def _try(self, fn: Any) -> bool:
        try:
            fn()
        except FieldsyncError:
            return False
        return True

    # -- devices ------------------------------------------------------------------------------

    def _device(self, data: st.DataObject) -> tuple[str, Device]:
        name = data.draw(st.sampled_from([n for n, _ in DEVICES]), label="device")
        return name, self.devices[name]

    def _local(self, device: Device, table: str) -> list[str]:
        try:
            t, _ = device.replica.table(table)
        except FieldsyncError:
            return []
        return [r[t.primary_id] for r in device.query(table)]

    @rule(data=st.data())
    def device_edit(self, data: st.DataObject) -> None:
        name, device = self._device(data)
        table = data.draw(st.sampled_from(["workorder", "account"]), label="table")
        rows = self._local(device, table)
        if not rows:
            return
        rid = data.draw(st.sampled_from(rows), label="row")
        values = (
            {"priority": data.draw(st.sampled_from([1, 2, 3]))}
            if table == "workorder"
            else {"telephone1": data.draw(st.sampled_from(["7", "8"]))}
        )
        device.update(table, rid, values)
        self._note(name)

    @rule(data=st.data())
    def device_create(self, data: st.DataObject) -> None:
        name, device = self._device(data)
        accounts = self._local(device, "account")
        if not accounts or "workorder" not in device.replica.sql:
            return
        account = data.draw(st.sampled_from(accounts), label="account")
        device.create("workorder", {"name": "offline job", "serviceaccountid": account})
        self._note(name)

    @rule(data=st.data())
    def device_delete(self, data: st.DataObject) -> None:
        name, device = self._device(data)
        rows = self._local(device, "workorder")
        if rows:
            device.delete("workorder", data.draw(st.sampled_from(rows), label="row"))
            self._note(name)

    def _note(self, name: str) -> None:
        for change in self.devices[name].outbox():
            self.change_ids[name][change["changeid"]] = (
                change["tablename"],
                change["operation"],
                change["recordid"],
            )

    @rule(data=st.data(), lose=st.booleans())
    def sync_one(self, data: st.DataObject, lose: bool) -> None:
        name, device = self._device(data)
        self._note(name)
        self.transports[name].lose_next = lose
        with contextlib.suppress(DeviceError, FieldsyncError):
            device.sync()
        self.transports[name].lose_next = False

    @rule(data=st.data())
    def crash_and_reopen(self, data: st.DataObject) -> None:
        name, device = self._device(data)
        self._note(name)
        device.close()
        self.devices[name] = self._open(name, self.owner[name])

    @rule()
    def network_flaps(self) -> None:
        self.world.down = not self.world.down

    # -- the check ----------------------------------------------------------------------------

    @rule()
    def quiescent_sync_converges(self) -> None:
        down = self.world.down
        self.world.down = False
        try:
            for _ in range(2):
                for name, device in self.devices.items():
                    self._note(name)
                    # access removed raises: checked below
                    with contextlib.suppress(DeviceError, FieldsyncError):
                        device.sync()
            for name, device in self.devices.items():
                user = self.owner[name]
                ctx_allowed = self.world.allowed(self.world.ctx(user))
                if ctx_allowed:
                    assert replica(device) == self.world.scope(user), name
                else:
                    assert device.replica.sql == {}, name
                assert device.pending_changes() == 0, name
                self._nothing_lost(name, device)
        finally:
            self.world.down = down

    def _nothing_lost(self, name: str, device: Device) -> None:
        """Every change the device queued left its outbox (checked by the caller); the ones
        the server rejected have exactly one Sync Errors row and are listed on the device."""
        sql = self.world.platform.store.sql_table("syncerror")
        with self.world.platform.store.read() as conn:
            rows = conn.execute(
                sa.select(sql.c.clientchangeid).where(sql.c.deviceid == device.device_id)
            ).scalars()
            rejected = Counter(str(r) for r in rows)
        assert all(n == 1 for n in rejected.values()), rejected
        local_errors = {e["changeid"] for e in device.errors()}
        for change in self.change_ids[name]:
            if change in rejected:
                assert change in local_errors, (name, change)


def test_sync_converges_under_random_histories(platform: Platform, tmp_path: Path) -> None:
    world = World(platform, tmp_path)

    class Machine(SyncMachine):
        pass

    Machine.world = world
    Machine.tmp = tmp_path
    run_state_machine_as_test(Machine, settings=SETTINGS)
