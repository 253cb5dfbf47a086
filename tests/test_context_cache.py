"""The security context cache: a context is reused only while the change log shows no change
to what it is made of, and a change committed through another process (another store on the
same database, with its own cache) is seen by the very next lookup, on both backends."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FAST_HASHING
from fieldsync.errors import NotFound, PreconditionFailed, Unauthorized
from fieldsync.http.principal import caller
from fieldsync.platform import Platform, build
from fieldsync.security.context import load_context, load_contexts, user_binding, user_bindings
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.roles import BASIC_USER
from fieldsync.store.changes import prune_changes
from fieldsync.store.store import Store
from fieldsync.sync.service import fingerprint
from fieldsync.types import EntityRef, RecordId


@pytest.fixture
def two(database_url: str) -> Iterator[tuple[Platform, Platform]]:
    """Two platforms on one database: ``a`` serves requests from its cache, ``b`` (another
    server process) makes the changes."""
    a = build(Store.open(database_url), auth_settings=FAST_HASHING)
    b = build(Store.open(database_url), auth_settings=FAST_HASHING)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def fresh(p: Platform, user: RecordId) -> SecurityContext:
    return load_context(p.store, user)


def same(cached: SecurityContext, loaded: SecurityContext) -> bool:
    return fingerprint(cached) == fingerprint(loaded) and cached == loaded


def test_a_context_is_reused_until_what_it_is_made_of_changes(
    two: tuple[Platform, Platform],
) -> None:
    a, b = two
    tech = b.org.user("tech", roles=[b.org.role_id(BASIC_USER)])
    first = a.contexts.get(tech)
    assert a.contexts.get(tech) is first  # nothing changed: the same context, no reload
    loads = a.contexts.loads
    # a business row written elsewhere moves nothing a context is made of
    b.records.create("account", {"name": "Contoso"})
    assert a.contexts.get(tech) is first
    assert a.contexts.loads == loads
    # a new role for the user, committed by the other process: seen at once
    reader = b.org.role("Readers", privileges={"contact": {"read": "organization"}})
    b.org.assign_role(EntityRef("systemuser", tech), reader)
    now = a.contexts.get(tech)
    assert now is not first
    assert same(now, fresh(a, tech))
    assert ("contact", Privilege.READ) in now.grants


DEPTHS = itertools.cycle(("user", "businessunit", "organization"))
Change = Callable[[Platform, RecordId, dict[str, RecordId]], None]


def _assign(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    with contextlib.suppress(PreconditionFailed):  # held already
        p.org.assign_role(EntityRef("systemuser", user), w["role"])


def _unassign(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    with contextlib.suppress(PreconditionFailed, NotFound):  # not held
        p.org.remove_role(EntityRef("systemuser", user), w["role"])


def _privilege(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.org.set_privilege(w["role"], "contact", "write", next(DEPTHS))


def _join(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.org.add_members(w["team"], [user])


def _leave(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.org.remove_members(w["team"], [user])


def _move(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    ctx = load_context(p.store, user)
    target = w["unit"] if ctx.business_unit_id != w["unit"] else w["root"]
    p.org.move_user(user, target)


def _new_unit(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.org.business_unit(f"Unit {uuid.uuid4().hex[:8]}", w["unit"])


def _share(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.records.share("contact", w["contact"], EntityRef("systemuser", user), [Privilege.READ])


def _unshare(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.records.share("contact", w["contact"], EntityRef("systemuser", user), 0)


def _hierarchy(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    enabled = not load_context(p.store, user).hierarchy.enabled
    p.org.set_hierarchy(enabled=enabled)


def _report(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.org.set_manager(w["other"], user)


def _business(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.records.create("account", {"name": "Fabrikam"})


def _prune(p: Platform, user: RecordId, w: dict[str, RecordId]) -> None:
    p.store.transact(lambda conn: prune_changes(conn, before=p.store.current_version(conn)))


CHANGES: dict[str, Change] = {
    "assign a role": _assign,
    "remove the role": _unassign,
    "change a privilege of the role": _privilege,
    "join a team": _join,
    "leave the team": _leave,
    "move to another business unit": _move,
    "add a business unit": _new_unit,
    "share a row": _share,
    "unshare the row": _unshare,
    "switch hierarchy security": _hierarchy,
    "gain a report": _report,
    "write a business row": _business,
    "prune the change log": _prune,
}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(st.sampled_from(sorted(CHANGES)), min_size=1, max_size=6))
def test_every_committed_change_is_seen_by_the_next_lookup_of_another_process(
    two: tuple[Platform, Platform], steps: list[str]
) -> None:
    a, b = two
    org = b.org
    world = _world(b)
    user = world["user"]
    a.contexts.get(user)
    for step in steps:
        CHANGES[step](b, user, world)
        cached = a.contexts.get(user)
        assert same(cached, fresh(a, user)), step
        together(a, [user, world["other"]], step)
    org.set_user_enabled(user, False)
    with pytest.raises(Unauthorized):
        a.contexts.get(user)
    assert together(a, [user, world["other"]], "disabled") == [world["other"]]
    org.set_user_enabled(user, True)
    assert same(a.contexts.get(user), fresh(a, user))


def together(p: Platform, users: list[RecordId], step: str) -> list[RecordId]:
    """Contexts loaded for several users at once (through the cache and without it) are each
    user's own; a disabled user is left out. Returns the users loaded."""
    with p.store.read() as conn:
        cached = p.contexts.get_many(users, conn)
        loaded = load_contexts(p.store, users, conn)
        bindings = user_bindings(p.store, conn, loaded.values())
        alone = {u: user_binding(p.store, conn, ctx) for u, ctx in loaded.items()}
    assert cached.keys() == loaded.keys(), step
    for u, ctx in loaded.items():
        assert same(cached[u], ctx), (step, u)
        assert same(ctx, fresh(p, u)), (step, u)
    assert bindings == alone, step
    return list(loaded)


def _world(p: Platform) -> dict[str, RecordId]:
    """A user, a role, a team, a unit, a colleague and a contact (found again if there)."""
    org = p.org
    try:
        return {
            "user": org.user_id("cached"),
            "other": org.user_id("colleague"),
            "role": org.role_id("Cached readers"),
            "team": org.team_id("Cached team"),
            "unit": org.unit_id("Cached unit"),
            "root": load_context(p.store, org.user_id("colleague")).business_unit_id,
            "contact": p.records.retrieve_multiple("contact", where={"lastname": "Cached"})[0][
                "contactid"
            ],
        }
    except NotFound:  # the first example: make them
        pass
    unit = org.business_unit("Cached unit")
    user = org.user("cached", roles=[org.role_id(BASIC_USER)])
    other = org.user("colleague")
    role = org.role("Cached readers", privileges={"contact": {"read": "user"}})
    team = org.team("Cached team")
    contact = p.records.create("contact", {"lastname": "Cached"})
    return {
        "user": user,
        "other": other,
        "role": role,
        "team": team,
        "unit": unit,
        "root": load_context(p.store, other).business_unit_id,
        "contact": contact,
    }


def test_a_revoked_token_or_disabled_user_is_refused_by_the_next_request_elsewhere(
    two: tuple[Platform, Platform],
) -> None:
    """The bearer token is read with the context's stamp on every request (one statement):
    a token revoked, a session signed out or a user disabled through another process is
    refused by the very next request, however warm the cache."""
    a, b = two
    tech = b.org.user("tech", roles=[b.org.role_id(BASIC_USER)])
    token_id, api = b.auth.create_api_token(tech, "script")
    b.auth.set_password(tech, "correct horse battery")
    session = b.auth.sign_in("tech", "correct horse battery").access_token
    for token in (api, session):
        assert caller(a, token).user_id == tech
        assert caller(a, token) is caller(a, token)  # served from the cache
    b.auth.revoke_api_token(tech, token_id)
    with pytest.raises(Unauthorized, match="revoked"):
        caller(a, api)
    assert caller(a, session).user_id == tech
    b.auth.sign_out_everywhere(tech)
    with pytest.raises(Unauthorized, match="revoked"):
        caller(a, session)
    _, api = b.auth.create_api_token(tech, "another")
    assert caller(a, api).user_id == tech
    b.org.set_user_enabled(tech, False)
    with pytest.raises(Unauthorized):
        caller(a, api)


def test_the_user_binding_is_kept_beside_its_context(two: tuple[Platform, Platform]) -> None:
    """The query operators' binding (the manager hierarchy below the caller and its teams) is
    read once per context and renewed with it: a new report committed elsewhere shows in the
    next request's binding."""
    a, b = two
    tech = b.org.user("tech", roles=[b.org.role_id(BASIC_USER)])
    other = b.org.user("other", roles=[b.org.role_id(BASIC_USER)])
    ctx = a.contexts.get(tech)
    with a.store.read() as conn:
        first = a.contexts.binding(ctx, conn)
        assert first == user_binding(a.store, conn, ctx)
        assert a.contexts.binding(ctx, conn) is first
    assert other not in first.hierarchy
    b.org.set_manager(other, tech)
    now = a.contexts.get(tech)
    assert now is not ctx
    with a.store.read() as conn:
        bound = a.contexts.binding(now, conn)
        assert bound == user_binding(a.store, conn, now)
        # a context the cache no longer holds is bound afresh
        assert a.contexts.binding(ctx, conn) == user_binding(a.store, conn, ctx)
    assert other in bound.hierarchy
