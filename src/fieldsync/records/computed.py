"""Columns the platform fills in from others, as Dataverse does, on every write whatever
its path (Web API, sync, portal, Python API):

- ``contact.fullname``: the first name, a space, the last name (Dataverse's default
  convention, "First Name Last Name"), recomputed when either changes; a value written to
  ``fullname`` itself is replaced (the column is Dataverse's read-only full name).
- ``systemuser.fullname``: the same when a user's first or last name changes (on create the
  organisation rules set it, keeping a full name given there); a user with neither name
  keeps the user name (``domainname``).

They run last among the pre-operation plugins, so plugins that change the names first are
taken into account.
"""

from __future__ import annotations

from typing import Final

from fieldsync.records.plugins import Message, PluginContext, PluginRegistry, Stage

NAME_PARTS: Final = ("firstname", "lastname")


def full_name(ctx: PluginContext) -> None:
    target, before = ctx.target, ctx.pre_image or {}
    if ctx.table == "systemuser":
        if ctx.pre_image is None or "fullname" in target:
            return
        if not any(k in target for k in NAME_PARTS):
            return
    elif ctx.pre_image is not None and not any(k in target for k in (*NAME_PARTS, "fullname")):
        return
    parts = [target[k] if k in target else before.get(k) for k in NAME_PARTS]
    name = " ".join(str(p).strip() for p in parts if p is not None and str(p).strip())
    if not name and ctx.table == "systemuser":
        name = target.get("domainname") or before.get("domainname") or ""
    target["fullname"] = name or None


def register(plugins: PluginRegistry) -> None:
    for table, messages in (
        ("contact", (Message.CREATE, Message.UPDATE)),
        ("systemuser", (Message.UPDATE,)),
    ):
        for message in messages:
            plugins.register(
                table,
                message,
                Stage.PRE_OPERATION,
                full_name,
                order=1000,
                name="fieldsync.full_name",
                row_only=True,
            )
