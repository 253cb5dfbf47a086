"""Access becomes a filter: ``privilege_filter(ctx, table, privilege)`` is the set of rows a
user may touch with a privilege, as a query node that compiles into the SELECT (lists are
filtered in the database, never after) and evaluates on a row in Python (sync uses it).

The rules, in order of precedence:

1. The SYSTEM context and System Administrators may do anything.
2. Privileges come only from roles: the user's own roles, measured from the user, and the
   roles of every enabled owner or group team the user belongs to, measured from the team.
   Roles add up: the union of what each grant allows.
3. What a depth reaches depends on the table's ownership type:

   ========================  ======================================================
   user-or-team tables       user: rows owned by the anchor (for the user's own roles
                             also rows owned by the user's owner and group teams);
                             business unit: rows of the anchor's unit; parent-child:
                             the anchor's unit and every unit below; organization: all
   business-owned tables     user and business unit: the anchor's unit; parent-child
                             and organization as above
   organization-owned and    any depth above none: every row
   unowned tables
   ========================  ======================================================

4. Sharing (user-or-team tables) adds the rows shared with the user or one of their teams
   with that right, provided the user holds the privilege at user depth or more.
5. Hierarchy security, when the organisation turns it on (user-or-team tables, and only for
   a user holding the privilege at user depth or more): read reaches the rows owned by the
   users below the caller in the manager hierarchy, down to the configured depth; write,
   append and append to reach the rows owned by direct reports when managers may write.
6. Create is checked on the new row with rules 1-3, and so is Append when the new row sets a
   lookup. On existing rows every privilege is checked per row: Write and Append on the row
   that changes (Append when it sets a lookup), Append To on the row a lookup points at,
   Append and Append To on both rows a many-to-many link joins (see ``records``).
"""

from __future__ import annotations

from fieldsync.query.ast import TRUE, Node, Shared, any_of, is_in
from fieldsync.schema.model import Ownership, Table
from fieldsync.security.model import Depth, Grant, Privilege, SecurityContext

HIERARCHY_WRITE = frozenset({Privilege.WRITE, Privilege.APPEND, Privilege.APPEND_TO})


def _reach(ctx: SecurityContext, table: Table, grant: Grant) -> Node:
    if grant.depth is Depth.ORGANIZATION:
        return TRUE
    if table.ownership in (Ownership.NONE, Ownership.ORGANIZATION):
        return TRUE
    if grant.depth is Depth.PARENT_CHILD:
        return is_in("owningbusinessunit", sorted(ctx.subtree(grant.business_unit)))
    if grant.depth is Depth.BUSINESS_UNIT or table.ownership is Ownership.BUSINESS:
        return is_in("owningbusinessunit", [grant.business_unit])
    if grant.owner == ctx.user_id:
        return is_in("ownerid", [ctx.user_id, *sorted(ctx.owner_teams)])
    return is_in("ownerid", [grant.owner])


def privilege_filter(ctx: SecurityContext, table: Table, privilege: Privilege) -> Node:
    """The rows of ``table`` that ``ctx`` may use ``privilege`` on."""
    if ctx.unrestricted:
        return TRUE
    return any_of([node for _, node in privilege_paths(ctx, table, privilege)])


def privilege_paths(
    ctx: SecurityContext, table: Table, privilege: Privilege
) -> list[tuple[str, Node]]:
    """Each way ``ctx`` reaches rows with ``privilege``, named (``owner``, ``team``,
    ``businessunit``, ``parentchild``, ``organization``, ``share``, ``hierarchy``), with the
    rows it reaches: :func:`privilege_filter` is their union, and explanations of scope name
    the ones a row passes."""
    if ctx.unrestricted:
        return [("administrator" if ctx.administrator else "system", TRUE)]
    grants = [g for g in ctx.grants_for(table.name, privilege) if g.depth > Depth.NONE]
    if not grants:
        return []
    paths = [(_path_name(ctx, table, g), _reach(ctx, table, g)) for g in grants]
    if table.owned and privilege is not Privilege.CREATE:
        if table.name in ctx.shared_tables:
            paths.append(("share", Shared(table.name, ctx.principals, int(privilege))))
        h = ctx.hierarchy
        if h.enabled and ctx.reports:
            if privilege is Privilege.READ:
                below = frozenset().union(*ctx.reports[: h.depth])
                paths.append(("hierarchy", is_in("ownerid", sorted(below))))
            elif privilege in HIERARCHY_WRITE and h.managers_write:
                paths.append(("hierarchy", is_in("ownerid", sorted(ctx.reports[0]))))
    return paths


def _path_name(ctx: SecurityContext, table: Table, grant: Grant) -> str:
    if grant.depth is Depth.ORGANIZATION or table.ownership in (
        Ownership.NONE,
        Ownership.ORGANIZATION,
    ):
        return "organization"
    if grant.depth is Depth.PARENT_CHILD:
        return "parentchild"
    if grant.depth is Depth.BUSINESS_UNIT or table.ownership is Ownership.BUSINESS:
        return "businessunit"
    return "owner" if grant.owner == ctx.user_id else "team"


def readable(ctx: SecurityContext, table: Table) -> Node:
    return privilege_filter(ctx, table, Privilege.READ)


def writable(ctx: SecurityContext, table: Table) -> Node:
    return privilege_filter(ctx, table, Privilege.WRITE)


def deletable(ctx: SecurityContext, table: Table) -> Node:
    return privilege_filter(ctx, table, Privilege.DELETE)


def assignable(ctx: SecurityContext, table: Table) -> Node:
    return privilege_filter(ctx, table, Privilege.ASSIGN)


def shareable(ctx: SecurityContext, table: Table) -> Node:
    return privilege_filter(ctx, table, Privilege.SHARE)


def has_privilege(ctx: SecurityContext, table: Table, privilege: Privilege) -> bool:
    """Whether any row of the table could be reached (the table-level check)."""
    return ctx.max_depth(table.name, privilege) > Depth.NONE
