"""The Web API's route table: no two routes of one precedence match the same path, no route
is shadowed by another, and every path has exactly one route (a drawn path's matching
routes have one highest precedence)."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given
from hypothesis import strategies as st

from fieldsync.webapi.protocol import Key, Segment
from fieldsync.webapi.routes import ACTIONS, ROUTES, Route, route_for

NAMES = sorted(
    {n for r in ROUTES if r.pattern.names for n in r.pattern.names}
    | {s.name for r in ROUTES for s in r.pattern.rest if s.name}
    | {"accounts", "contacts", "$count", "$ref", ACTIONS + "CreateMultiple", ACTIONS, "x"}
)


def test_routes_of_one_precedence_never_match_the_same_path() -> None:
    for a, b in combinations(ROUTES, 2):
        if a.pattern.overlaps(b.pattern):
            assert a.precedence != b.precedence, f"{a.name!r} and {b.name!r} are ambiguous"


def test_no_route_is_shadowed() -> None:
    names = [r.name for r in ROUTES]
    assert len(set(names)) == len(names)
    for route in ROUTES:
        path = route.pattern.example("accounts")
        assert route.pattern.matches(path)
        assert route_for(path) is route, f"{route.name!r} is shadowed by {route_for(path).name!r}"


def test_overlap_agrees_with_matching() -> None:
    """Two patterns that both match a path overlap (the check above relies on it)."""
    for a, b in combinations(ROUTES, 2):
        for path in (a.pattern.example("accounts"), b.pattern.example("accounts")):
            if a.pattern.matches(path) and b.pattern.matches(path):
                assert a.pattern.overlaps(b.pattern)


keys = st.sampled_from([None, Key(), Key(value="1"), Key(pairs=(("name", "x"),))])
segments = st.builds(Segment, st.sampled_from(NAMES) | st.text(max_size=4), keys)


@given(st.lists(segments, max_size=4))
def test_every_path_has_one_route(path: list[Segment]) -> None:
    matching: list[Route] = [r for r in ROUTES if r.pattern.matches(path)]
    assert matching, f"no route for {path!r}"
    top = max(r.precedence for r in matching)
    best = [r for r in matching if r.precedence == top]
    assert len(best) == 1, f"{path!r} matches {[r.name for r in best]}"
    assert route_for(path) is best[0]
    for other in matching:
        if other is not best[0]:
            assert other.pattern.overlaps(best[0].pattern)
