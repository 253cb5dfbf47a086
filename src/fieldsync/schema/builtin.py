"""The built-in tables: the organisation (business units, users, teams) and a small
field-service data model (accounts, contacts, work orders) in the spirit of Dataverse."""

from __future__ import annotations

import uuid

from fieldsync.schema import builtin_offline
from fieldsync.schema.builtin_sync import sync_tables
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

ROOT_BUSINESS_UNIT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
SYSTEM_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
ORGANIZATION_ID = uuid.UUID("00000000-0000-4000-8000-000000000003")

TEAM_TYPES = (
    Option(0, "Owner"),
    Option(1, "Access"),
    Option(2, "Security Group"),
    Option(3, "Office Group"),
)


def _builtin(name: str, **kw: object) -> Table:
    return define_table(name, custom=False, **kw)  # type: ignore[arg-type]


def builtin_tables() -> list[Table]:
    """Definitions of every built-in table, in creation order (targets before lookups)."""
    businessunit = _builtin(
        "businessunit",
        display_name="Business Unit",
        ownership=Ownership.NONE,
        columns=[
            Column("name", T.STRING, display_name="Name", max_length=160, required=True),
            Column(
                "parentbusinessunitid",
                T.LOOKUP,
                display_name="Parent Business",
                targets=("businessunit",),
            ),
            Column("isdisabled", T.BOOLEAN, display_name="Is Disabled"),
            Column("description", T.MEMO, display_name="Description"),
        ],
    )
    systemuser = _builtin(
        "systemuser",
        display_name="User",
        ownership=Ownership.BUSINESS,
        primary_name="fullname",
        columns=[
            Column("fullname", T.STRING, display_name="Full Name", max_length=200),
            Column(
                "domainname", T.STRING, display_name="User Name", max_length=1024, required=True
            ),
            Column("firstname", T.STRING, display_name="First Name", max_length=64),
            Column("lastname", T.STRING, display_name="Last Name", max_length=64),
            Column("internalemailaddress", T.STRING, display_name="Primary Email", max_length=100),
            Column("title", T.STRING, display_name="Title", max_length=128),
            Column("mobilephone", T.STRING, display_name="Mobile Phone", max_length=64),
            Column(
                "businessunitid",
                T.LOOKUP,
                display_name="Business Unit",
                targets=("businessunit",),
                required=True,
            ),
            Column("parentsystemuserid", T.LOOKUP, display_name="Manager", targets=("systemuser",)),
            Column("isdisabled", T.BOOLEAN, display_name="Status"),
            Column("uilanguageid", T.INTEGER, display_name="UI Language", min_value=0),
        ],
    )
    team = _builtin(
        "team",
        display_name="Team",
        ownership=Ownership.BUSINESS,
        columns=[
            Column("name", T.STRING, display_name="Team Name", max_length=160, required=True),
            Column("teamtype", T.CHOICE, display_name="Team Type", options=TEAM_TYPES),
            Column(
                "businessunitid",
                T.LOOKUP,
                display_name="Business Unit",
                targets=("businessunit",),
                required=True,
            ),
            Column(
                "administratorid", T.LOOKUP, display_name="Administrator", targets=("systemuser",)
            ),
            Column(
                "azureactivedirectoryobjectid", T.UNIQUEIDENTIFIER, display_name="Group Object Id"
            ),
            Column("isdisabled", T.BOOLEAN, display_name="Is Disabled"),
            Column("description", T.MEMO, display_name="Description"),
        ],
    )
    teammembership = define_intersect(
        "teammembership", ("systemuserid", "systemuser"), ("teamid", "team")
    )
    account = _builtin(
        "account",
        display_name="Account",
        offline=True,
        columns=[
            Column("name", T.STRING, display_name="Account Name", max_length=160, required=True),
            Column("accountnumber", T.STRING, display_name="Account Number", max_length=20),
            Column("telephone1", T.STRING, display_name="Main Phone", max_length=50),
            Column("emailaddress1", T.STRING, display_name="Email", max_length=100),
            Column("websiteurl", T.STRING, display_name="Website", max_length=200),
            Column("address1_line1", T.STRING, display_name="Street 1", max_length=250),
            Column("address1_city", T.STRING, display_name="City", max_length=80),
            Column("address1_postalcode", T.STRING, display_name="ZIP/Postal Code", max_length=20),
            Column("address1_country", T.STRING, display_name="Country", max_length=80),
            Column(
                "address1_latitude",
                T.FLOAT,
                display_name="Latitude",
                precision=5,
                min_value=-90.0,
                max_value=90.0,
            ),
            Column(
                "address1_longitude",
                T.FLOAT,
                display_name="Longitude",
                precision=5,
                min_value=-180.0,
                max_value=180.0,
            ),
            Column(
                "industrycode",
                T.CHOICE,
                display_name="Industry",
                options=(
                    Option(1, "Accounting"),
                    Option(2, "Agriculture"),
                    Option(3, "Construction"),
                    Option(4, "Energy"),
                    Option(5, "Healthcare"),
                    Option(6, "Manufacturing"),
                    Option(7, "Retail"),
                    Option(8, "Transport"),
                ),
            ),
            Column("revenue", T.MONEY, display_name="Annual Revenue"),
            Column(
                "numberofemployees",
                T.INTEGER,
                display_name="Number of Employees",
                min_value=0,
                max_value=1_000_000_000,
            ),
            Column("creditonhold", T.BOOLEAN, display_name="Credit Hold"),
            Column(
                "primarycontactid", T.LOOKUP, display_name="Primary Contact", targets=("contact",)
            ),
            Column(
                "parentaccountid", T.LOOKUP, display_name="Parent Account", targets=("account",)
            ),
            Column("description", T.MEMO, display_name="Description"),
        ],
    )
    contact = _builtin(
        "contact",
        display_name="Contact",
        offline=True,
        primary_name="fullname",
        columns=[
            Column("fullname", T.STRING, display_name="Full Name", max_length=160),
            Column("firstname", T.STRING, display_name="First Name", max_length=50),
            Column("lastname", T.STRING, display_name="Last Name", max_length=50, required=True),
            Column("jobtitle", T.STRING, display_name="Job Title", max_length=100),
            Column("emailaddress1", T.STRING, display_name="Email", max_length=100),
            Column("telephone1", T.STRING, display_name="Business Phone", max_length=50),
            Column("mobilephone", T.STRING, display_name="Mobile Phone", max_length=50),
            Column("birthdate", T.DATE, display_name="Birthday"),
            Column(
                "parentcustomerid",
                T.LOOKUP,
                display_name="Company Name",
                targets=("account", "contact"),
            ),
            Column(
                "preferredcontactmethodcode",
                T.CHOICE,
                display_name="Preferred Method",
                options=(
                    Option(1, "Any"),
                    Option(2, "Email"),
                    Option(3, "Phone"),
                    Option(4, "Fax"),
                    Option(5, "Mail"),
                ),
            ),
            Column("donotphone", T.BOOLEAN, display_name="Do not allow Phone Calls"),
            Column("description", T.MEMO, display_name="Description"),
        ],
    )
    workorder = _builtin(
        "workorder",
        display_name="Work Order",
        offline=True,
        columns=[
            Column(
                "name", T.STRING, display_name="Work Order Number", max_length=100, required=True
            ),
            Column(
                "serviceaccountid",
                T.LOOKUP,
                display_name="Service Account",
                targets=("account",),
                required=True,
            ),
            Column(
                "primarycontactid", T.LOOKUP, display_name="Primary Contact", targets=("contact",)
            ),
            Column(
                "priority",
                T.CHOICE,
                display_name="Priority",
                options=(
                    Option(1, "Low"),
                    Option(2, "Normal"),
                    Option(3, "High"),
                    Option(4, "Urgent"),
                ),
            ),
            Column(
                "systemstatus",
                T.CHOICE,
                display_name="System Status",
                options=(
                    Option(690970000, "Unscheduled"),
                    Option(690970001, "Scheduled"),
                    Option(690970002, "In Progress"),
                    Option(690970003, "Completed"),
                    Option(690970004, "Posted"),
                    Option(690970005, "Canceled"),
                ),
            ),
            Column(
                "incidenttypes",
                T.MULTICHOICE,
                display_name="Incident Types",
                options=(
                    Option(1, "Inspection"),
                    Option(2, "Repair"),
                    Option(3, "Installation"),
                    Option(4, "Maintenance"),
                    Option(5, "Emergency"),
                ),
            ),
            Column("scheduledstart", T.DATETIME, display_name="Scheduled Start"),
            Column("duedate", T.DATE, display_name="Due Date"),
            Column(
                "estimatedduration",
                T.INTEGER,
                display_name="Estimated Duration (min)",
                min_value=0,
                max_value=100_000,
            ),
            Column("totalamount", T.MONEY, display_name="Total Amount"),
            Column("laborhours", T.DECIMAL, display_name="Labor Hours", precision=2, min_value=0),
            Column("ticketnumber", T.BIGINT, display_name="Ticket Number"),
            Column(
                "latitude",
                T.FLOAT,
                display_name="Latitude",
                precision=5,
                min_value=-90.0,
                max_value=90.0,
            ),
            Column(
                "longitude",
                T.FLOAT,
                display_name="Longitude",
                precision=5,
                min_value=-180.0,
                max_value=180.0,
            ),
            Column("signedoff", T.BOOLEAN, display_name="Signed Off"),
            Column("externalreference", T.UNIQUEIDENTIFIER, display_name="External Reference"),
            Column("instructions", T.MEMO, display_name="Instructions", max_length=10000),
            Column("sitephoto", T.IMAGE, display_name="Site Photo", max_size_kb=10240),
            Column("servicereport", T.FILE, display_name="Service Report", max_size_kb=32768),
        ],
    )
    organization = _builtin(
        "organization",
        display_name="Organization",
        ownership=Ownership.NONE,
        columns=[
            Column("name", T.STRING, display_name="Name", max_length=160, required=True),
            Column("hierarchysecurity", T.BOOLEAN, display_name="Hierarchy Security Enabled"),
            Column(
                "hierarchydepth",
                T.INTEGER,
                display_name="Hierarchy Depth",
                min_value=1,
                max_value=100,
            ),
            Column("hierarchymanagerwrite", T.BOOLEAN, display_name="Direct Managers May Write"),
            Column("languagecode", T.INTEGER, display_name="Base Language", min_value=0),
        ],
    )
    role = _builtin(
        "role",
        display_name="Security Role",
        ownership=Ownership.BUSINESS,
        columns=[
            Column("name", T.STRING, display_name="Name", max_length=100, required=True),
            Column(
                "businessunitid",
                T.LOOKUP,
                display_name="Business Unit",
                targets=("businessunit",),
                required=True,
            ),
            Column("isadministrator", T.BOOLEAN, display_name="Full Access To Everything"),
            Column("ismanaged", T.BOOLEAN, display_name="Predefined"),
            Column("description", T.MEMO, display_name="Description"),
        ],
    )
    roleprivilege = _builtin(
        "roleprivilege",
        display_name="Role Privilege",
        ownership=Ownership.NONE,
        columns=[
            Column("name", T.STRING, display_name="Name", max_length=200),
            Column("roleid", T.LOOKUP, display_name="Role", targets=("role",), required=True),
            Column("tablename", T.STRING, display_name="Table", max_length=64, required=True),
            Column(
                "privilege",
                T.CHOICE,
                display_name="Privilege",
                required=True,
                options=(
                    Option(1, "Create"),
                    Option(2, "Read"),
                    Option(4, "Write"),
                    Option(8, "Delete"),
                    Option(16, "Append"),
                    Option(32, "Append To"),
                    Option(64, "Assign"),
                    Option(128, "Share"),
                ),
            ),
            Column(
                "depth",
                T.CHOICE,
                display_name="Access Level",
                required=True,
                options=(
                    Option(0, "None"),
                    Option(1, "User"),
                    Option(2, "Business Unit"),
                    Option(3, "Parent: Child Business Units"),
                    Option(4, "Organization"),
                ),
            ),
        ],
    )
    systemuserroles = define_intersect(
        "systemuserroles", ("systemuserid", "systemuser"), ("roleid", "role")
    )
    teamroles = define_intersect("teamroles", ("teamid", "team"), ("roleid", "role"))
    principalobjectaccess = _builtin(
        "principalobjectaccess",
        display_name="Record Share",
        ownership=Ownership.NONE,
        columns=[
            Column("name", T.STRING, display_name="Name", max_length=200),
            Column("objectid", T.UNIQUEIDENTIFIER, display_name="Record", required=True),
            Column("objecttypecode", T.STRING, display_name="Table", max_length=64, required=True),
            Column("principalid", T.UNIQUEIDENTIFIER, display_name="Shared With", required=True),
            Column(
                "principaltypecode",
                T.STRING,
                display_name="Principal Table",
                max_length=64,
                required=True,
            ),
            Column(
                "accessrightsmask",
                T.INTEGER,
                display_name="Access Rights",
                min_value=0,
                max_value=255,
                required=True,
            ),
        ],
    )
    for intersect in (teammembership, systemuserroles, teamroles):
        intersect.custom = False
    return [
        businessunit,
        systemuser,
        team,
        teammembership,
        organization,
        role,
        roleprivilege,
        systemuserroles,
        teamroles,
        principalobjectaccess,
        contact,
        account,
        workorder,
        *sync_tables(),
        *builtin_offline.offline_tables(),
    ]


def builtin_relationships() -> list[Relationship]:
    """Many-to-many relationships between built-in tables (one-to-many ones come from lookups)."""
    return [
        Relationship(
            name="teammembership_association",
            kind=RelationshipKind.MANY_TO_MANY,
            referenced_table="systemuser",
            referencing_table="team",
            referenced_column="systemuserid",
            referencing_column="teamid",
            intersect_table="teammembership",
        ),
        Relationship(
            name="systemuserroles_association",
            kind=RelationshipKind.MANY_TO_MANY,
            referenced_table="systemuser",
            referencing_table="role",
            referenced_column="systemuserid",
            referencing_column="roleid",
            intersect_table="systemuserroles",
        ),
        Relationship(
            name="teamroles_association",
            kind=RelationshipKind.MANY_TO_MANY,
            referenced_table="team",
            referencing_table="role",
            referenced_column="teamid",
            referencing_column="roleid",
            intersect_table="teamroles",
        ),
        *builtin_offline.offline_relationships(),
    ]
