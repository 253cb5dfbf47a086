"""The Web API's route table: which handler serves a resource path and method.

A route is a path pattern, the handlers by HTTP method, the refusal for any other method,
and an explicit precedence. A path goes to the matching route of the highest precedence;
routes of equal precedence never match the same path with the same method
(``tests/test_webapi_routes.py`` checks every pair, and that no route is shadowed).

A pattern names the first segment (one of some literal names, or any entity set of the
schema) with the state of its key (none, empty ``()``, or one naming a row), then the
segments that follow: each a literal name, a name prefix, or anything; ``tail`` lets any
number of further segments follow. The entity set is resolved (404 for an unknown one)
before the method is checked, as Dataverse does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from fieldsync.errors import BadRequest, FieldsyncError, MethodNotAllowed, NotFound
from fieldsync.schema.builtin import ORGANIZATION_ID
from fieldsync.schema.model import Table
from fieldsync.webapi import (
    audit,
    csdl,
    links,
    messages,
    metadata,
    metadatachanges,
    navigation,
    reading,
    relationships,
    sqlquery,
    writing,
)
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Key, Segment

ACTIONS = "Microsoft.Dynamics.CRM."
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
KeyState = Literal["none", "empty", "row"]
ANY_KEY: frozenset[KeyState] = frozenset(("none", "empty", "row"))


class NotImplementedHere(FieldsyncError):
    """A part of the Dataverse Web API that fieldsync does not serve (yet)."""

    status: ClassVar[int] = 501
    code: ClassVar[str] = "0x8004800d"


def key_state(segment: Segment) -> KeyState:
    key = segment.key
    if key is None:
        return "none"
    if key.pairs is None and key.value is None:
        return "empty"
    return "row"


# -- patterns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seg:
    """A segment after the first: ``name`` exactly (``prefix``: any name starting with it;
    ``keyless``: and without a key)."""

    name: str
    prefix: bool = False
    keyless: bool = False

    def matches(self, segment: Segment) -> bool:
        if self.keyless and segment.key is not None:
            return False
        if self.prefix:
            return segment.name.startswith(self.name)
        return segment.name == self.name

    def overlaps(self, other: Seg) -> bool:
        """Whether one segment can match both."""
        if self.prefix and other.prefix:
            return self.name.startswith(other.name) or other.name.startswith(self.name)
        if self.prefix:
            return other.name.startswith(self.name)
        if other.prefix:
            return self.name.startswith(other.name)
        return self.name == other.name

    def example(self) -> Segment:
        return Segment(self.name + ("Example" if self.prefix else ""))


ANY_SEGMENT = Seg("", prefix=True)


@dataclass(frozen=True)
class Pattern:
    """``names``: the first segment's literal names (``None``: an entity set; empty with
    ``root``: no segment at all)."""

    names: frozenset[str] | None
    keys: frozenset[KeyState] = ANY_KEY
    rest: tuple[Seg, ...] = ()
    tail: bool = False
    root: bool = False

    def matches(self, segments: list[Segment]) -> bool:
        if self.root or not segments:
            return self.root and not segments
        head, after = segments[0], segments[1:]
        if self.names is not None and head.name not in self.names:
            return False
        if key_state(head) not in self.keys:
            return False
        if len(after) < len(self.rest) or (len(after) > len(self.rest) and not self.tail):
            return False
        return all(s.matches(a) for s, a in zip(self.rest, after, strict=False))

    def overlaps(self, other: Pattern) -> bool:
        """Whether some path matches both (an entity set may be named like a literal)."""
        if self.root or other.root:
            return self.root and other.root
        if self.names is not None and other.names is not None and not self.names & other.names:
            return False
        if not self.keys & other.keys:
            return False
        short, long = sorted((self, other), key=lambda p: len(p.rest))
        if len(short.rest) < len(long.rest) and not short.tail:
            return False
        return all(a.overlaps(b) for a, b in zip(short.rest, long.rest, strict=False))

    def example(self, entity_set: str) -> list[Segment]:
        """A path this pattern matches."""
        if self.root:
            return []
        name = sorted(self.names)[0] if self.names is not None else entity_set
        key = {"none": None, "empty": Key(), "row": Key(value="1")}[sorted(self.keys)[-1]]
        return [Segment(name, key), *(s.example() for s in self.rest)]


# -- routes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """A request routed: the call, the request, its segments and (for an entity set's
    routes) the table."""

    call: Call
    req: ODataRequest
    segments: list[Segment]
    table: Table | None = None

    @property
    def head(self) -> Segment:
        return self.segments[0]

    @property
    def key(self) -> Key:
        assert self.head.key is not None
        return self.head.key

    @property
    def of(self) -> Table:
        assert self.table is not None
        return self.table


Handler = Callable[[Hit], ODataResponse]


@dataclass(frozen=True)
class Route:
    """``refusal`` (for a method with no handler) may name ``{method}``, ``{head}`` (the
    first segment) and ``{action}`` (the last segment without the action namespace).
    ``change_set``: this route refuses to change anything inside a ``$batch`` change set."""

    name: str
    pattern: Pattern
    precedence: int
    methods: Mapping[str, Handler] = field(default_factory=dict)
    refusal: str = "{method} is not allowed here"
    change_set: str | None = None

    def serve(self, call: Call, req: ODataRequest, segments: list[Segment]) -> ODataResponse:
        if self.change_set is not None and call.conn is not None and req.method != "GET":
            raise BadRequest(self.change_set)
        table = _table(call, segments[0]) if self.pattern.names is None else None
        handler = self.methods.get(req.method)
        if handler is None:
            last = segments[-1].name if segments else ""
            raise MethodNotAllowed(
                self.refusal.format(
                    method=req.method,
                    head=segments[0].name if segments else "",
                    action=last.removeprefix(ACTIONS),
                )
            )
        return handler(Hit(call, req, segments, table))


def _table(call: Call, segment: Segment) -> Table:
    try:
        return call.platform.store.schema.by_entity_set(segment.name)
    except NotFound:
        raise NotFound(
            f"Resource not found for the segment '{segment.name}'", code="0x80060888"
        ) from None


def every(handler: Handler) -> dict[str, Handler]:
    return dict.fromkeys(METHODS, handler)


def named(*names: str) -> frozenset[str]:
    """A name with and without the action namespace."""
    return frozenset(n for name in names for n in (name, ACTIONS + name))


# -- the handlers that are not a module's own --------------------------------------------------


def service_root(hit: Hit) -> ODataResponse:
    sets = sorted(t.entity_set_name for t in hit.call.platform.store.schema.tables.values())
    body = {"value": [{"name": s, "kind": "EntitySet", "url": s} for s in sets]}
    return ODataResponse(200, {"@odata.context": f"{hit.req.root}/$metadata", **body})


def who_am_i(hit: Hit) -> ODataResponse:
    caller = hit.call.caller
    return ODataResponse(
        200,
        {
            "@odata.context": f"{hit.req.root}/$metadata#{ACTIONS}WhoAmIResponse",
            "BusinessUnitId": str(caller.business_unit_id),
            "UserId": str(caller.user_id),
            "OrganizationId": str(ORGANIZATION_ID),
        },
    )


def metadata_document(hit: Hit) -> ODataResponse:
    if len(hit.segments) != 1:
        raise MethodNotAllowed("$metadata is read with GET")
    return ODataResponse(
        200, csdl.document(hit.call.platform.store.schema), media_type=csdl.MEDIA_TYPE
    )


def nested_batch(hit: Hit) -> ODataResponse:
    raise BadRequest("$batch cannot be nested")


def not_supported(hit: Hit) -> ODataResponse:
    raise NotImplementedHere(f"{hit.head.name} is not supported yet")


def create_entities(hit: Hit) -> ODataResponse:
    if hit.call.conn is not None:
        raise BadRequest("table and column changes cannot be part of a change set")
    if hit.req.method != "POST":
        raise MethodNotAllowed(f"{hit.head.name} is an action: use POST")
    return metadata.create_entities(hit.call, hit.req)


def relationship_create(hit: Hit) -> ODataResponse:
    if len(hit.segments) == 1 and hit.head.key is None:
        return relationships.create(hit.call, hit.req)
    raise MethodNotAllowed("POST is not allowed here on RelationshipDefinitions")


def relationship_delete(hit: Hit) -> ODataResponse:
    if hit.head.key is not None:
        return relationships.delete(hit.call, hit.req, hit.segments)
    raise MethodNotAllowed("DELETE is not allowed here on RelationshipDefinitions")


def list_or_query(hit: Hit) -> ODataResponse:
    if "sql" in hit.req.params:
        return sqlquery.sql_query(hit.call, hit.req, hit.of)
    return reading.list_entities(hit.call, hit.req, hit.of)


SET_ACTIONS: dict[str, Callable[[Call, ODataRequest, Table], ODataResponse]] = {
    "CreateMultiple": writing.create_multiple,
    "UpdateMultiple": writing.update_multiple,
    "UpsertMultiple": writing.upsert_multiple,
}


def set_action(hit: Hit) -> ODataResponse:
    action = hit.segments[1].name.removeprefix(ACTIONS)
    run = SET_ACTIONS.get(action)
    if run is None:
        raise NotImplementedHere(f"the action {action} is not supported")
    return run(hit.call, hit.req, hit.of)


def name_one_row(hit: Hit) -> ODataResponse:
    raise BadRequest(f"{hit.req.path[:80]!r}: name one row, {hit.of.entity_set_name}(<id>)")


# -- the table --------------------------------------------------------------------------------

NAMED = 100  # the service's own names before entity sets
SPECIFIC = 50  # an entity set's exact shapes
PREFIXED = 40  # an entity set's actions, by their namespace
FALLBACK = 10  # what is left of an entity set's paths
ENTITY_SET, ROW = frozenset[KeyState](("none",)), frozenset[KeyState](("row",))
TABLE_CHANGES = "table and column changes cannot be part of a change set"

ROUTES: tuple[Route, ...] = (
    Route(
        "service root",
        Pattern(frozenset(), root=True),
        NAMED,
        {"GET": service_root},
        "{method} is not allowed on the service root",
    ),
    Route(
        "WhoAmI",
        Pattern(named("WhoAmI")),
        NAMED,
        {"GET": who_am_i},
        "WhoAmI is a function: use GET",
    ),
    Route(
        "$metadata",
        Pattern(frozenset({"$metadata"}), tail=True),
        NAMED,
        {"GET": metadata_document},
        "$metadata is read with GET",
    ),
    Route("$batch", Pattern(frozenset({"$batch"}), tail=True), NAMED, every(nested_batch)),
    Route(
        "EntityDefinitions",
        Pattern(frozenset({"EntityDefinitions"}), tail=True),
        NAMED,
        {
            "GET": lambda h: metadata.get(h.call, h.req, h.segments),
            "POST": lambda h: metadata.post(h.call, h.req, h.segments),
            "PUT": lambda h: metadata.update_attribute(h.call, h.req, h.segments),
            "DELETE": lambda h: metadata.delete(h.call, h.req, h.segments),
        },
        "{method} is not allowed on EntityDefinitions",
        change_set=TABLE_CHANGES,
    ),
    Route("CreateEntities", Pattern(named("CreateEntities")), NAMED, every(create_entities)),
    Route(
        "BulkDelete",
        Pattern(named("BulkDelete")),
        NAMED,
        {"POST": lambda h: writing.bulk_delete(h.call, h.req)},
        "{head} is an action: use POST",
    ),
    Route(
        "RelationshipDefinitions",
        Pattern(frozenset({"RelationshipDefinitions"}), tail=True),
        NAMED,
        {
            "GET": lambda h: relationships.get(h.call, h.req, h.segments),
            "POST": relationship_create,
            "DELETE": relationship_delete,
        },
        "{method} is not allowed here on RelationshipDefinitions",
        change_set="relationship changes cannot be part of a change set",
    ),
    Route(
        "RetrieveMetadataChanges",
        Pattern(named("RetrieveMetadataChanges"), tail=True),
        NAMED,
        {"GET": lambda h: metadatachanges.retrieve(h.call, h.req, h.head)},
        "RetrieveMetadataChanges is a function: use GET",
    ),
    Route(
        "SDK messages",
        Pattern(frozenset(messages.SETS)),
        NAMED,
        {"GET": lambda h: messages.get(h.call, h.req, h.head.name, h.head.key)},
        "{head} is read-only",
    ),
    Route(
        "GlobalOptionSetDefinitions",
        Pattern(frozenset({"GlobalOptionSetDefinitions"}), tail=True),
        NAMED,
        every(not_supported),
    ),
    Route(
        "audit log",
        Pattern(frozenset({audit.ENTITY_SET}), tail=True),
        NAMED,
        every(lambda h: audit.get(h.call, h.req, h.segments)),
    ),
    Route(
        "entity set",
        Pattern(None, ENTITY_SET),
        SPECIFIC,
        {"GET": list_or_query, "POST": lambda h: writing.create(h.call, h.req, h.of)},
        "{method} is not allowed on an entity set",
    ),
    Route(
        "count",
        Pattern(None, ENTITY_SET, (Seg("$count", keyless=True),)),
        SPECIFIC,
        {"GET": lambda h: reading.count(h.call, h.req, h.of)},
        "$count is read with GET",
    ),
    Route(
        "entity set action",
        Pattern(None, ENTITY_SET, (Seg(ACTIONS, prefix=True),)),
        PREFIXED,
        {"POST": set_action},
        "{action} is an action: use POST",
    ),
    Route(
        "no row named",
        Pattern(None, ENTITY_SET, (ANY_SEGMENT,), tail=True),
        FALLBACK,
        every(name_one_row),
    ),
    Route(
        "empty key",
        Pattern(None, frozenset[KeyState](("empty",)), tail=True),
        SPECIFIC,
        every(name_one_row),
    ),
    Route(
        "publish profile",
        Pattern(None, ROW, (Seg(ACTIONS + links.PUBLISH_PROFILE),)),
        SPECIFIC,
        {"POST": lambda h: links.publish_profile(h.call, h.req, h.of, h.key)},
        "{action} is an action: use POST",
    ),
    Route(
        "preview profile",
        Pattern(None, ROW, (Seg(ACTIONS + links.PREVIEW_PROFILE),)),
        SPECIFIC,
        {"POST": lambda h: links.preview_profile_action(h.call, h.req, h.of, h.key)},
        "{action} is an action: use POST",
    ),
    Route(
        "navigation",
        Pattern(None, ROW, (ANY_SEGMENT,), tail=True),
        FALLBACK,
        every(lambda h: navigation.handle(h.call, h.req, h.of, h.key, h.segments[1:])),
    ),
    Route(
        "row",
        Pattern(None, ROW),
        SPECIFIC,
        {
            "GET": lambda h: reading.get_entity(h.call, h.req, h.of, h.key),
            "PATCH": lambda h: writing.patch(h.call, h.req, h.of, h.key),
            "DELETE": lambda h: writing.delete(h.call, h.req, h.of, h.key),
        },
        "{method} is not allowed on a row; use GET, PATCH or DELETE",
    ),
)

_BY_PRECEDENCE = sorted(ROUTES, key=lambda r: -r.precedence)


def route_for(segments: list[Segment]) -> Route:
    """The route of a path: the matching one of the highest precedence (every path has
    one: an entity set's fallbacks take whatever the others leave)."""
    for route in _BY_PRECEDENCE:
        if route.pattern.matches(segments):
            return route
    raise AssertionError(f"no route for {segments!r}")  # the entity set routes cover all
