"""Many-to-many associations and fieldsync's bound actions, as the caller:

    POST   {set}(<id>)/<relationship>/$ref           {"@odata.id": "<url of the other row>"}
    DELETE {set}(<id>)/<relationship>(<other id>)/$ref
    DELETE {set}(<id>)/<relationship>/$ref?$id=<url of the other row>
    POST   {set}  with "<relationship>@odata.bind": ["<url>", …]   associates on create

The navigation property of a many-to-many relationship is the relationship's name on both of
its tables (``systemuserroles_association``, ``teammembership_association``,
``teamroles_association``, ``appmodule_savedquery``), as in Dataverse. Linking users, teams
and roles needs Write on both rows; other links need Append and Append To on both. (A lookup
set through its single-valued ``$ref`` is an update of the row: :mod:`.navigation`.)

    POST   mobileofflineprofiles(<id>)/Microsoft.Dynamics.CRM.PublishMobileOfflineProfile

validates the profile's draft and publishes it as the next version (fieldsync's own action:
Dataverse publishes from its maker portal only); the caller needs Write on the profile.

    POST   mobileofflineprofiles(<id>)/Microsoft.Dynamics.CRM.PreviewMobileOfflineProfile
           {"Users": ["<systemuserid>", …], "Sample": 100}          (both optional)

answers what publishing the draft would do (``fieldsync.sync.preview``), changing nothing;
the caller needs Write on the profile as well."""

from __future__ import annotations

from typing import Any

from fieldsync.errors import BadRequest, Forbidden, NotFound, RecordNotFound
from fieldsync.offline.profiles import PROFILE, as_id, publish
from fieldsync.schema.model import Relationship, RelationshipKind, Table
from fieldsync.security.model import Privilege
from fieldsync.security.predicate import has_privilege
from fieldsync.sync.preview import SAMPLE_USERS, preview_profile
from fieldsync.types import RecordId
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import Key, Segment
from fieldsync.webapi.reading import find, resolve_reference

PUBLISH_PROFILE = "PublishMobileOfflineProfile"
PREVIEW_PROFILE = "PreviewMobileOfflineProfile"


def navigation(call: Call, table: Table, name: str) -> tuple[Relationship, str] | None:
    """The many-to-many relationship a navigation property of ``table`` names, and the table
    at its other end."""
    rel = call.platform.store.schema.relationships.get(name)
    if rel is None or rel.kind is not RelationshipKind.MANY_TO_MANY:
        return None
    if rel.referenced_table == table.name:
        return rel, rel.referencing_table
    if rel.referencing_table == table.name:
        return rel, rel.referenced_table
    return None


def navigation_of(call: Call, table: Table, name: str) -> tuple[Relationship, str]:
    found = navigation(call, table, name)
    if found is None:
        raise BadRequest(
            f"{table.name} has no many-to-many navigation property {name!r}; lookups are set "
            "with <lookup>@odata.bind"
        )
    return found


def row_id(call: Call, table: Table, key: Key) -> RecordId:
    with call.reading() as conn:
        row = find(call, conn, table, key, (table.primary_id,))
    if row is None:
        raise RecordNotFound(table.name, key.value if key.pairs is None else dict(key.pairs))
    rid: RecordId = row[table.primary_id]
    return rid


def other_row(call: Call, url: Any, other: str) -> RecordId:
    ref = resolve_reference(call, url)
    if ref.table != other:
        raise BadRequest(f"{str(url)[:80]!r} is not a {other} row")
    return ref.id


def pair(
    rel: Relationship, table: Table, rid: RecordId, other: RecordId
) -> tuple[RecordId, RecordId]:
    """(referenced row, referencing row): the order the records service takes."""
    return (rid, other) if rel.referenced_table == table.name else (other, rid)


def ref(call: Call, req: ODataRequest, table: Table, segments: list[Segment]) -> ODataResponse:
    """``…/<relationship>/$ref`` (POST, DELETE) and ``…/<relationship>(<id>)/$ref`` (DELETE)."""
    head, nav = segments[0], segments[1]
    assert head.key is not None
    rel, other = navigation_of(call, table, nav.name)
    if req.method == "POST":
        if nav.key is not None:
            raise BadRequest("POST …/$ref adds a link: name the other row in @odata.id")
        body = req.json_object()
        if set(body) != {"@odata.id"}:
            raise BadRequest('the body of a $ref is {"@odata.id": "<url of the other row>"}')
        target = other_row(call, body["@odata.id"], other)
        first, second = pair(rel, table, row_id(call, table, head.key), target)
        call.write(
            lambda conn: call.platform.records.associate(
                rel.name, first, second, caller=call.caller, conn=conn
            )
        )
        return ODataResponse(204)
    if req.method == "DELETE":
        if nav.key is not None:
            if nav.key.pairs is not None or nav.key.value is None:
                raise BadRequest(f"{nav.name}(<id>)/$ref: name the other row by its id")
            schema = call.platform.store.schema
            target = other_row(
                call, f"{schema.table(other).entity_set_name}({nav.key.value})", other
            )
        elif "$id" in req.params:
            target = other_row(call, req.params["$id"], other)
        else:
            raise BadRequest("DELETE …/$ref names the other row: …/<nav>(<id>)/$ref or ?$id=")
        rid = row_id(call, table, head.key)
        first, second = pair(rel, table, rid, target)
        call.write(
            lambda conn: call.platform.records.disassociate(
                rel.name, first, second, caller=call.caller, conn=conn
            )
        )
        return ODataResponse(204)
    raise BadRequest(f"{req.method} is not allowed on $ref; use POST or DELETE")


def split_associations(call: Call, table: Table, body: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """The body without its many-to-many ``@odata.bind`` arrays, and those arrays as
    (relationship, url) pairs to associate once the row exists."""
    if not isinstance(body, dict):
        return body, []
    rest: dict[str, Any] = {}
    links: list[tuple[str, Any]] = []
    for key, value in body.items():
        name, at, annotation = key.partition("@")
        if at and annotation == "odata.bind" and navigation(call, table, name) is not None:
            if not isinstance(value, list) or not value:
                raise BadRequest(f"{key}: a many-to-many bind is a non-empty list of URLs")
            if len(value) > 1000:
                raise BadRequest(f"{key}: at most 1000 rows at once")
            links.extend((name, url) for url in value)
        else:
            rest[key] = value
    return rest, links


def refuse_associations(call: Call, table: Table, body: Any) -> None:
    """Many-to-many binds only on create (as in Dataverse); elsewhere a clear 400."""
    if isinstance(body, dict):
        for key in body:
            name, at, annotation = key.partition("@")
            if at and annotation == "odata.bind" and navigation(call, table, name) is not None:
                raise BadRequest(
                    f"{key}: many-to-many links are bound on create only; "
                    f"otherwise POST {table.entity_set_name}(<id>)/{name}/$ref"
                )


def publish_profile(call: Call, req: ODataRequest, table: Table, key: Key) -> ODataResponse:
    if table.name != PROFILE:
        raise NotFound(f"{PUBLISH_PROFILE} is bound to mobileofflineprofiles, not {table.name}")
    if req.body.strip() and req.json_object():
        raise BadRequest(f"{PUBLISH_PROFILE} takes no parameters")
    pid = row_id(call, table, key)
    published = call.write(
        lambda conn: publish(call.platform.records, pid, caller=call.caller, conn=conn)
    )
    return ODataResponse(
        200,
        {
            "@odata.context": f"{req.root}/$metadata#Microsoft.Dynamics.CRM."
            f"{PUBLISH_PROFILE}Response",
            "ProfileId": str(published.profile_id),
            "Version": published.version,
            "PublishedOn": published.published_on.isoformat().replace("+00:00", "Z"),
            "Tables": [i.table for i in published.items],
        },
    )


def preview_profile_action(call: Call, req: ODataRequest, table: Table, key: Key) -> ODataResponse:
    if table.name != PROFILE:
        raise NotFound(f"{PREVIEW_PROFILE} is bound to mobileofflineprofiles, not {table.name}")
    body = req.json_object() if req.body.strip() else {}
    unknown = set(body) - {"Users", "Sample"}
    if unknown:
        raise BadRequest(f"{PREVIEW_PROFILE} takes Users and Sample, not {sorted(unknown)}")
    users = body.get("Users")
    if users is not None and (
        not isinstance(users, list) or not all(isinstance(u, str) for u in users)
    ):
        raise BadRequest("Users is a list of systemuser ids")
    sample = body.get("Sample", SAMPLE_USERS)
    if isinstance(sample, bool) or not isinstance(sample, int) or not 1 <= sample <= 10_000:
        raise BadRequest("Sample is a whole number from 1 to 10000")
    pid = row_id(call, table, key)
    if not has_privilege(call.caller, table, Privilege.WRITE):
        raise Forbidden(f"previewing a profile needs Write on {PROFILE}")
    ids = None if users is None else [as_id(u) for u in users]
    result = preview_profile(
        call.platform.records, pid, users=ids, sample=sample, contexts=call.platform.contexts
    )
    return ODataResponse(
        200,
        {
            "@odata.context": f"{req.root}/$metadata#Microsoft.Dynamics.CRM."
            f"{PREVIEW_PROFILE}Response",
            **result.to_json(),
        },
    )
