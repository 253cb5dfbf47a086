"""The built-in tables of mobile offline: profiles, their items and relationships, who holds
a profile, apps and views. Logical names and option values follow Dataverse."""

from __future__ import annotations

from fieldsync.schema.model import (
    Column,
    ColumnType,
    Option,
    Ownership,
    Relationship,
    RelationshipKind,
    Table,
    define_intersect,
    define_table,
)

T = ColumnType

COMPONENT_STATES = (
    Option(0, "Published"),
    Option(1, "Unpublished"),
    Option(2, "Deleted"),
    Option(3, "Deleted Unpublished"),
)
DISTRIBUTION_CRITERIA = (
    Option(0, "Download related data only"),
    Option(1, "All records"),
    Option(2, "Other data filter"),
    Option(3, "Custom data filter"),
)
OFFLINE_MODES = (Option(0, "Offline-first"), Option(1, "Classic"))
PROFILE_MODES = (Option(0, "Default"), Option(1, "Restricted to selected users"))
LIST_MAX = 100_000  # comma-separated column lists and FetchXML


def _table(name: str, display: str, columns: list[Column], **kw: object) -> Table:
    return define_table(
        name,
        display_name=display,
        ownership=Ownership.ORGANIZATION,
        custom=False,
        columns=columns,
        **kw,  # type: ignore[arg-type]
    )


def offline_tables() -> list[Table]:
    """Definitions of the offline tables, targets before the lookups that point at them."""
    profile = _table(
        "mobileofflineprofile",
        "Mobile Offline Profile",
        [
            Column("name", T.STRING, display_name="Name", max_length=255, required=True),
            Column("description", T.MEMO, display_name="Description", max_length=2000),
            Column("isvalidated", T.BOOLEAN, display_name="Is Validated"),
            Column("publishedon", T.DATETIME, display_name="Published On"),
            Column(
                "componentstate", T.CHOICE, display_name="Component State", options=COMPONENT_STATES
            ),
            Column(
                "publishedversion",
                T.INTEGER,
                display_name="Published Version",
                min_value=0,
            ),
        ],
    )
    item = _table(
        "mobileofflineprofileitem",
        "Mobile Offline Profile Item",
        [
            Column("name", T.STRING, display_name="Name", max_length=255),
            Column(
                "regardingobjectid",
                T.LOOKUP,
                display_name="Profile",
                targets=("mobileofflineprofile",),
                required=True,
            ),
            Column(
                "selectedentitytypecode",
                T.STRING,
                display_name="Table",
                max_length=64,
                required=True,
            ),
            Column(
                "recorddistributioncriteria",
                T.CHOICE,
                display_name="Data Download Filter",
                options=DISTRIBUTION_CRITERIA,
            ),
            Column("recordsownedbyme", T.BOOLEAN, display_name="Download My Rows"),
            Column("recordsownedbymyteam", T.BOOLEAN, display_name="Download My Team's Rows"),
            Column(
                "recordsownedbymybusinessunit",
                T.BOOLEAN,
                display_name="Download My Business Unit's Rows",
            ),
            Column(
                "profileitementityfilter",
                T.MEMO,
                display_name="Custom Filter (FetchXML)",
                max_length=LIST_MAX,
            ),
            Column("syncintervalinminutes", T.INTEGER, display_name="Sync Interval (minutes)"),
            Column(
                "selectedcolumns",
                T.MEMO,
                display_name="Columns Taken Offline",
                max_length=LIST_MAX,
            ),
            Column(
                "selectedfilecolumns",
                T.MEMO,
                display_name="File Columns Taken Offline",
                max_length=LIST_MAX,
            ),
            Column(
                "selectedimagecolumns",
                T.MEMO,
                display_name="Image Columns Taken Offline",
                max_length=LIST_MAX,
            ),
        ],
    )
    association = _table(
        "mobileofflineprofileitemassociation",
        "Mobile Offline Profile Item Association",
        [
            Column("name", T.STRING, display_name="Name", max_length=255, required=True),
            Column(
                "mobileofflineprofileitemid",
                T.LOOKUP,
                display_name="Profile Item",
                targets=("mobileofflineprofileitem",),
                required=True,
            ),
            Column(
                "selectedrelationshipsschema",
                T.STRING,
                display_name="Relationship",
                max_length=128,
                required=True,
            ),
            Column(
                "relationshipdisplayname",
                T.STRING,
                display_name="Relationship Display Name",
                max_length=255,
            ),
        ],
    )
    user_membership = _table(
        "usermobileofflineprofilemembership",
        "User Mobile Offline Profile Membership",
        [
            Column("name", T.STRING, display_name="Name", max_length=255),
            Column(
                "systemuserid",
                T.LOOKUP,
                display_name="User",
                targets=("systemuser",),
                required=True,
            ),
            Column(
                "mobileofflineprofileid",
                T.LOOKUP,
                display_name="Profile",
                targets=("mobileofflineprofile",),
                required=True,
            ),
        ],
    )
    team_membership = _table(
        "teammobileofflineprofilemembership",
        "Team Mobile Offline Profile Membership",
        [
            Column("name", T.STRING, display_name="Name", max_length=255),
            Column("teamid", T.LOOKUP, display_name="Team", targets=("team",), required=True),
            Column(
                "mobileofflineprofileid",
                T.LOOKUP,
                display_name="Profile",
                targets=("mobileofflineprofile",),
                required=True,
            ),
        ],
    )
    view = _table(
        "savedquery",
        "View",
        [
            Column("name", T.STRING, display_name="Name", max_length=255, required=True),
            Column(
                "returnedtypecode", T.STRING, display_name="Table", max_length=64, required=True
            ),
            Column("fetchxml", T.MEMO, display_name="FetchXML", max_length=LIST_MAX, required=True),
            Column("description", T.MEMO, display_name="Description", max_length=2000),
            Column("isdefault", T.BOOLEAN, display_name="Default View"),
        ],
    )
    app = _table(
        "appmodule",
        "Model-driven App",
        [
            Column("name", T.STRING, display_name="Name", max_length=255, required=True),
            Column(
                "uniquename", T.STRING, display_name="Unique Name", max_length=100, required=True
            ),
            Column("description", T.MEMO, display_name="Description", max_length=2000),
            Column("canbeusedoffline", T.BOOLEAN, display_name="Can Be Used Offline"),
            Column(
                "mobileofflineprofileid",
                T.LOOKUP,
                display_name="Offline Profile",
                targets=("mobileofflineprofile",),
            ),
            Column("offlinemode", T.CHOICE, display_name="Offline Mode", options=OFFLINE_MODES),
            Column(
                "offlineprofilemode",
                T.CHOICE,
                display_name="Offline Profile Mode",
                options=PROFILE_MODES,
            ),
            Column(
                "allowsyncfrequency",
                T.BOOLEAN,
                display_name="Allow Users To Adjust Sync Frequency",
            ),
            Column("allowwifionly", T.BOOLEAN, display_name="Allow Users To Sync On Wi-Fi Only"),
            Column("tablenames", T.MEMO, display_name="Tables", max_length=LIST_MAX),
        ],
    )
    app_views = define_intersect(
        "appmoduleview", ("appmoduleid", "appmodule"), ("savedqueryid", "savedquery")
    )
    app_views.custom = False
    return [profile, item, association, user_membership, team_membership, view, app, app_views]


def offline_relationships() -> list[Relationship]:
    """The many-to-many relationships of the offline tables: the views an app lists."""
    return [
        Relationship(
            name="appmodule_savedquery",
            kind=RelationshipKind.MANY_TO_MANY,
            referenced_table="appmodule",
            referencing_table="savedquery",
            referenced_column="appmoduleid",
            referencing_column="savedqueryid",
            intersect_table="appmoduleview",
        )
    ]
