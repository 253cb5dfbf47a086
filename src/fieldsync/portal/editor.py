"""What the profile editor shows and reads back, as pure functions: the filter choices a
table's ownership offers, the relationships an item can follow, the problems of a draft by
table and setting, and an item draft from a posted form. The rules themselves live in
:mod:`fieldsync.offline.validation`; the editor only lays them out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from fieldsync.errors import BadRequest
from fieldsync.offline.profiles import split_list
from fieldsync.offline.snapshot import Distribution
from fieldsync.offline.validation import (
    FILTER_OPERATORS,
    FILTERS_BY_OWNERSHIP,
    ItemDraft,
    ProfileDraft,
    problems,
    related_table,
)
from fieldsync.portal.session import Form
from fieldsync.schema.model import ColumnType, Ownership, Schema, Table

FILTER_LABELS = {
    Distribution.RELATED: "Download related rows only",
    Distribution.ALL: "All rows",
    Distribution.OTHER: "Other data filter",
    Distribution.CUSTOM: "Custom filter (FetchXML)",
}
OWNERSHIP_LABELS = {
    Ownership.USER: "User or team",
    Ownership.ORGANIZATION: "Organization",
    Ownership.BUSINESS: "Business",
    Ownership.NONE: "None",
}
OPERATORS = sorted(op.value for op in FILTER_OPERATORS)
# where a problem's setting is shown in the item's form
FIELD_OF = {"cycle": "relationships", "relationship_count": "relationships"}


@dataclass(frozen=True)
class RelationshipChoice:
    name: str
    other: str
    column: str
    label: str
    in_profile: bool


def filter_choices(table: Table) -> list[tuple[int, str]]:
    offered = FILTERS_BY_OWNERSHIP[table.ownership]
    return [(int(d), FILTER_LABELS[d]) for d in Distribution if d in offered]


def owner_choices(table: Table) -> list[tuple[str, str]]:
    """The "other data filter" choices: the seeds' labels, by ownership."""
    if table.ownership is Ownership.BUSINESS:
        return [("owned_by_my_business_unit", "Download my business unit's rows")]
    if table.ownership is Ownership.USER:
        return [
            ("owned_by_me", "Download user rows"),
            ("owned_by_my_teams", "Download team rows"),
            ("owned_by_my_business_unit", "Download my business unit's rows"),
        ]
    return []


def relationship_choices(
    schema: Schema, table: str, in_profile: set[str]
) -> list[RelationshipChoice]:
    """Every relationship between ``table`` and another table; those whose other table is
    in the profile first (the others need that table added before they can be saved)."""
    out = []
    for rel in schema.relationships.values():
        other = related_table(rel, table)
        if other is None or other == table or other not in schema:
            continue
        label = f"{schema.table(other).display_name} | Field name: {rel.referencing_column}"
        out.append(
            RelationshipChoice(rel.name, other, rel.referencing_column, label, other in in_profile)
        )
    return sorted(out, key=lambda c: (not c.in_profile, c.label, c.name))


def file_columns(table: Table) -> list[str]:
    return sorted(c.name for c in table.columns.values() if c.type is ColumnType.FILE)


def image_columns(table: Table) -> list[str]:
    return sorted(c.name for c in table.columns.values() if c.type is ColumnType.IMAGE)


def problems_by_field(
    draft: ProfileDraft, schema: Schema, *, publishing: bool = False
) -> dict[str | None, dict[str | None, list[str]]]:
    """``{table: {setting: [messages]}}``; table ``None`` is the profile itself."""
    out: dict[str | None, dict[str | None, list[str]]] = defaultdict(lambda: defaultdict(list))
    for p in problems(draft, schema, publishing=publishing):
        out[p.table][FIELD_OF.get(p.field or "", p.field)].append(p.message)
    return {table: dict(fields) for table, fields in out.items()}


def item_from_form(table: Table, form: Form, current: ItemDraft) -> ItemDraft:
    """The item the form describes. Settings the chosen filter hides (the owner choices of
    "other", the FetchXML of "custom") are not kept when another filter is chosen."""
    try:
        distribution = Distribution(int(form.get("filter")))
    except ValueError:
        raise BadRequest("choose a download filter") from None
    other = distribution is Distribution.OTHER
    text = form.get("sync_interval").strip()
    try:
        interval = int(text)
    except ValueError:
        raise BadRequest(f"the sync interval is a whole number of minutes, not {text!r}") from None
    custom = form.get("custom_filter").strip() if distribution is Distribution.CUSTOM else ""
    return replace(
        current,
        distribution=distribution,
        owned_by_me=other and form.flag("owned_by_me"),
        owned_by_my_teams=other and form.flag("owned_by_my_teams"),
        owned_by_my_business_unit=other and form.flag("owned_by_my_business_unit"),
        custom_filter=custom or None,
        relationships=tuple(sorted(dict.fromkeys(form.all("relationship")))),
        columns=split_list(form.get("columns")),
        file_columns=tuple(file_columns(table)) if form.flag("files") else (),
        image_columns=tuple(sorted(dict.fromkeys(form.all("image")))),
        sync_interval_minutes=interval,
    )


def with_item(draft: ProfileDraft, item: ItemDraft) -> ProfileDraft:
    """The draft with ``item`` replacing the item of its table (or added at the end)."""
    items = [item if i.table == item.table else i for i in draft.items]
    if draft.item(item.table) is None:
        items.append(item)
    return replace(draft, items=tuple(items))


def without_item(draft: ProfileDraft, table: str) -> ProfileDraft:
    return replace(draft, items=tuple(i for i in draft.items if i.table != table))
