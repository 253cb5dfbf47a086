"""OData query options -> query AST (``fieldsync.query.odata``), without a database.

The ``$filter`` strings marked SDK are the ones Microsoft's Python SDK sends
(``/work/shared/reference/sdk-wire-transcript.txt`` and the SDK's ``filters.py``). ``CORPUS``
holds whole requests (the transcript's and realistic field-service ones), which
``test_query_corpus.py`` also runs on a seeded database."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.errors import QueryError
from fieldsync.query.ast import (
    FALSE,
    TRUE,
    And,
    ColumnCompare,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Not,
    Op,
    Or,
    Order,
    Query,
)
from fieldsync.query.odata import (
    MAX_TOP,
    Expand,
    ODataQuery,
    parse_filter,
    parse_query_options,
    resolve_navigation,
)
from fieldsync.schema.builtin import builtin_relationships, builtin_tables
from fieldsync.schema.model import Schema

SCHEMA = Schema(builtin_tables(), builtin_relationships())
G1 = uuid.UUID("00000000-0000-0000-0000-000000000001")
G2 = uuid.UUID("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
UTC = dt.UTC


def f(text: str, table: str = "account", **kw: object) -> Node:
    return parse_filter(text, SCHEMA.table(table), SCHEMA, **kw)  # type: ignore[arg-type]


def err(text: str, table: str = "account", **kw: object) -> str:
    with pytest.raises(QueryError) as info:
        f(text, table, **kw)
    return info.value.message


def q(params: dict[str, str], table: str = "account") -> ODataQuery:
    return parse_query_options(params, SCHEMA.table(table), SCHEMA)


def qerr(params: dict[str, str], table: str = "account") -> str:
    with pytest.raises(QueryError) as info:
        q(params, table)
    return info.value.message


def C(column: str, op: Op, value: object = None) -> Condition:
    return Condition(column, op, value)


def link(table: str, frm: str, to: str, node: Node | None, kind: LinkType = LinkType.ANY) -> Node:
    return LinkFilter(Link(table=table, from_column=frm, to_column=to, type=kind, filter=node))


# ---------------------------------------------------------------------------------------------
# What the SDK sends

FN = "Microsoft.Dynamics.CRM."
# name -> (table, query options) of realistic collection requests: the transcript's own (sdk_*)
# and the kind a field-service app sends, in the SDK's forms (its In/NotIn with double-quoted
# values, startswith with a space after the comma, several where() calls joined with " and ").
# tests/test_query_corpus.py runs them all on the demo organisation.
CORPUS: dict[str, tuple[str, dict[str, str]]] = {
    "sdk_querybuilder": (
        "account",
        {
            "$select": "name",
            "$filter": "(statecode eq 0 and startswith(name, 'Con')) and "
            'Microsoft.Dynamics.CRM.In(PropertyName=\'statecode\',PropertyValues=["0","1"])',
            "$orderby": "name desc",
            "$top": "10",
            "$count": "true",
        },
    ),
    "sdk_skiptoken": ("account", {"$select": "name", "$skiptoken": '<cookie pagenumber="2" />'}),
    "sdk_filter": ("account", {"$filter": "name eq 'A'"}),
    "sdk_top": ("account", {"$top": "1", "$select": "name"}),
    "sdk_retrieve_expand": (
        "account",
        {"$select": "name", "$expand": "primarycontactid($select=fullname)"},
    ),
    "sdk_batch_get": ("account", {"$select": "name", "$filter": "name eq 'a b'"}),
    "accounts_in_city_by_revenue": (
        "account",
        {
            "$select": "name,address1_city,revenue",
            "$filter": "address1_city eq 'Manchester' and revenue gt 1000000",
            "$orderby": "revenue desc",
        },
    ),
    "accounts_in_cities": (
        "account",
        {
            "$select": "name,address1_city,telephone1",
            "$filter": f'{FN}In(PropertyName=\'address1_city\',PropertyValues=["London","Bristol"])'
            " and creditonhold eq false",
            "$orderby": "address1_city,name",
        },
    ),
    "accounts_mid_sized_not_between": (
        "account",
        {
            "$select": "name,numberofemployees,industrycode",
            "$filter": "not ((numberofemployees ge 10 and numberofemployees le 20)) and "
            f'{FN}NotIn(PropertyName=\'industrycode\',PropertyValues=["1","2"])',
            "$top": "25",
        },
    ),
    "accounts_by_name_parameter_alias": (
        "account",
        {
            "$select": "name,accountnumber",
            "$filter": "contains(name, @word) or address1_city eq @city",
            "@word": "'Logistics'",
            "@city": "'Leeds'",
            "$orderby": "accountnumber",
        },
    ),
    "my_accounts_and_teams": (
        "account",
        {
            "$select": "name,address1_city",
            "$filter": f"{FN}EqualUserOrUserTeams(PropertyName='ownerid')",
            "$expand": "primarycontactid($select=fullname,telephone1)",
        },
    ),
    "accounts_with_urgent_work": (
        "account",
        {
            "$select": "name",
            "$filter": "workorder_serviceaccountid/any(w: w/priority eq 4)",
            "$count": "true",
        },
    ),
    "accounts_all_work_signed_off": (
        "account",
        {"$select": "name", "$filter": "workorder_serviceaccountid/all(w: w/signedoff)"},
    ),
    "contacts_named": (
        "contact",
        {
            "$select": "fullname,jobtitle,emailaddress1",
            "$filter": "startswith(lastname, 'Smith') or contains(jobtitle, 'Manager')",
            "$orderby": "lastname,firstname",
            "$top": "50",
        },
    ),
    "contacts_phoneable_born_before": (
        "contact",
        {
            "$select": "fullname,birthdate,telephone1",
            "$filter": "birthdate ne null and birthdate lt 1970-01-01 and donotphone eq false",
            "$orderby": "birthdate desc",
        },
    ),
    "contacts_of_accounts_in_city": (
        "contact",
        {
            "$select": "fullname,_parentcustomerid_value",
            "$filter": "parentcustomerid_account/address1_city eq 'Leeds'",
            "$expand": "parentcustomerid_account($select=name,address1_city)",
        },
    ),
    "my_open_work_orders": (
        "workorder",
        {
            "$select": "name,scheduledstart,priority,systemstatus",
            "$filter": f"{FN}EqualUserId(PropertyName='ownerid') and "
            f'{FN}NotIn(PropertyName=\'systemstatus\',PropertyValues=["690970003","690970004",'
            '"690970005"])',
            "$orderby": "scheduledstart",
        },
    ),
    "urgent_work_next_7_days": (
        "workorder",
        {
            "$select": "name,scheduledstart,_serviceaccountid_value",
            "$filter": f"priority eq 4 and {FN}Next7Days(PropertyName='scheduledstart')",
            "$orderby": "scheduledstart",
            "$expand": "serviceaccountid($select=name,telephone1)",
        },
    ),
    "overdue_unsigned_work": (
        "workorder",
        {
            "$select": "name,duedate,laborhours",
            "$filter": f"{FN}LastXDays(PropertyName='duedate',PropertyValue=14) and "
            "signedoff eq false",
            "$orderby": "duedate desc",
        },
    ),
    "team_work_with_incident_types": (
        "workorder",
        {
            "$select": "name,incidenttypes,totalamount",
            "$filter": f'{FN}ContainValues(PropertyName=\'incidenttypes\',PropertyValues=["3","5"])'
            f" and {FN}EqualUserOrUserHierarchyAndTeams(PropertyName='ownerid')",
            "$top": "100",
        },
    ),
    "work_in_london_by_value": (
        "workorder",
        {
            "$select": "name,totalamount,laborhours",
            "$filter": "serviceaccountid/address1_city eq 'London' and totalamount ge 500 and "
            "laborhours ne null",
            "$orderby": "totalamount desc",
            "$top": "20",
        },
    ),
    "colleagues_in_my_unit": (
        "systemuser",
        {
            "$select": "fullname,title",
            "$filter": f"{FN}EqualBusinessId(PropertyName='businessunitid') and "
            "isdisabled eq false",
            "$orderby": "fullname",
        },
    ),
    "my_teams": (
        "team",
        {"$select": "name", "$filter": f"{FN}EqualUserTeams(PropertyName='teamid')"},
    ),
}


def corpus(name: str) -> ODataQuery:
    table, params = CORPUS[name]
    return q(params, table)


def test_corpus_parses() -> None:
    for name in CORPUS:
        assert isinstance(corpus(name).query, Query), name


def test_sdk_querybuilder_request_from_the_transcript() -> None:
    assert corpus("sdk_querybuilder") == ODataQuery(
        Query(
            table="account",
            columns=("name",),
            filter=And(
                (
                    C("statecode", Op.EQ, 0),
                    C("name", Op.BEGINS_WITH, "Con"),
                    C("statecode", Op.IN, (0, 1)),
                )
            ),
            orders=(Order("name", descending=True),),
            top=10,
            count=True,
        )
    )


def test_sdk_transcript_simple_requests() -> None:
    assert corpus("sdk_filter").query.filter == C("name", Op.EQ, "A")
    assert corpus("sdk_skiptoken") == ODataQuery(
        Query("account", columns=("name",)), skiptoken='<cookie pagenumber="2" />'
    )
    assert corpus("sdk_top").query == Query("account", ("name",), top=1)
    retrieve = corpus("sdk_retrieve_expand")
    assert retrieve.expand == (
        Expand("primarycontactid", "primarycontactid", "contact", columns=("fullname",)),
    )
    batch = corpus("sdk_batch_get")
    assert batch.query.filter == C("name", Op.EQ, "a b")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # col(...) comparisons: _format_value of every type
        ("statecode eq 0", C("statecode", Op.EQ, 0)),
        ("name ne 'O''Brien'", C("name", Op.NE, "O'Brien")),
        ("revenue gt 1000000", C("revenue", Op.GT, Decimal(1000000))),
        ("address1_latitude ge 12.5", C("address1_latitude", Op.GE, 12.5)),
        ("address1_latitude lt 1e-05", C("address1_latitude", Op.LT, 1e-05)),
        ("creditonhold eq true", C("creditonhold", Op.EQ, True)),
        ("creditonhold eq false", C("creditonhold", Op.EQ, False)),
        ("parentaccountid eq null", C("parentaccountid", Op.NULL)),
        ("parentaccountid ne null", C("parentaccountid", Op.NOT_NULL)),
        (
            "createdon le 2024-01-02T03:04:05Z",
            C("createdon", Op.LE, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ),
        (
            "createdon gt 2024-01-02T03:04:05.123456Z",
            C("createdon", Op.GT, dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ),
        (
            "_primarycontactid_value eq aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            C("primarycontactid", Op.EQ, G2),
        ),
        # &, |, ~
        (
            "(statecode eq 0 or statecode eq 1)",
            Or((C("statecode", Op.EQ, 0), C("statecode", Op.EQ, 1))),
        ),
        ("not (statecode eq 1)", Not(C("statecode", Op.EQ, 1))),
        (
            "((statecode eq 0 or statecode eq 1) and revenue gt 100000)",
            And(
                (
                    Or((C("statecode", Op.EQ, 0), C("statecode", Op.EQ, 1))),
                    C("revenue", Op.GT, Decimal(100000)),
                )
            ),
        ),
        # between / not_between
        (
            "(numberofemployees ge 10 and numberofemployees le 20)",
            And((C("numberofemployees", Op.GE, 10), C("numberofemployees", Op.LE, 20))),
        ),
        (
            "not ((numberofemployees ge 10 and numberofemployees le 20))",
            Not(And((C("numberofemployees", Op.GE, 10), C("numberofemployees", Op.LE, 20)))),
        ),
        # string functions, with the SDK's space after the comma
        ("contains(name, 'Corp')", C("name", Op.LIKE, "%Corp%")),
        ("startswith(name, 'Contoso')", C("name", Op.BEGINS_WITH, "Contoso")),
        ("endswith(name, 'Ltd')", C("name", Op.ENDS_WITH, "Ltd")),
        ("not (startswith(name, 'Contoso'))", Not(C("name", Op.BEGINS_WITH, "Contoso"))),
        # in_ / not_in: Collection(Edm.String) in double quotes
        (
            'Microsoft.Dynamics.CRM.In(PropertyName=\'statecode\',PropertyValues=["0","1","2"])',
            C("statecode", Op.IN, (0, 1, 2)),
        ),
        (
            'Microsoft.Dynamics.CRM.NotIn(PropertyName=\'statecode\',PropertyValues=["0","1"])',
            C("statecode", Op.NOT_IN, (0, 1)),
        ),
        (
            'Microsoft.Dynamics.CRM.In(PropertyName=\'name\',PropertyValues=["A","B"])',
            C("name", Op.IN, ("A", "B")),
        ),
        (
            "Microsoft.Dynamics.CRM.In(PropertyName='creditonhold',PropertyValues=[\"true\"])",
            C("creditonhold", Op.EQ, True),
        ),
        (
            "Microsoft.Dynamics.CRM.In(PropertyName='createdon',"
            'PropertyValues=["2024-01-01T00:00:00Z","2024-01-02"])',
            C(
                "createdon",
                Op.IN,
                (dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)),
            ),
        ),
        (
            "Microsoft.Dynamics.CRM.In(PropertyName='_primarycontactid_value',"
            'PropertyValues=["00000000-0000-0000-0000-000000000001",'
            '"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"])',
            C("primarycontactid", Op.IN, (G1, G2)),
        ),
        # raw() example from the SDK docs
        ("Microsoft.Dynamics.CRM.Today(PropertyName='createdon')", C("createdon", Op.TODAY)),
        # several where() calls are joined with " and "
        (
            "(statecode eq 0 or statecode eq 1) and revenue gt 100000",
            And(
                (
                    Or((C("statecode", Op.EQ, 0), C("statecode", Op.EQ, 1))),
                    C("revenue", Op.GT, Decimal(100000)),
                )
            ),
        ),
    ],
)
def test_sdk_filters(text: str, expected: Node) -> None:
    assert f(text) == expected


# ---------------------------------------------------------------------------------------------
# Literals


@pytest.mark.parametrize(
    ("table", "text", "expected"),
    [
        ("account", "name eq 'x'", C("name", Op.EQ, "x")),
        ("account", "name eq ''", C("name", Op.EQ, "")),
        ("account", "name eq ''''", C("name", Op.EQ, "'")),
        ("account", "name eq 'a''b''''c'", C("name", Op.EQ, "a'b''c")),
        ("account", "name eq 'a and b or not c eq 1'", C("name", Op.EQ, "a and b or not c eq 1")),
        ("account", "name eq 'Zürich ✓'", C("name", Op.EQ, "Zürich ✓")),
        ("account", "name eq '(x)'", C("name", Op.EQ, "(x)")),
        ("account", "numberofemployees eq 12", C("numberofemployees", Op.EQ, 12)),
        ("account", "numberofemployees eq -12", C("numberofemployees", Op.EQ, -12)),
        ("account", "numberofemployees eq 12L", C("numberofemployees", Op.EQ, 12)),
        (
            "workorder",
            "ticketnumber eq 9007199254740993",
            C("ticketnumber", Op.EQ, 9007199254740993),
        ),
        ("workorder", "laborhours eq 12.5", C("laborhours", Op.EQ, Decimal("12.5"))),
        ("workorder", "laborhours eq 12.5m", C("laborhours", Op.EQ, Decimal("12.5"))),
        ("workorder", "laborhours eq 12.5M", C("laborhours", Op.EQ, Decimal("12.5"))),
        ("workorder", "laborhours eq 12", C("laborhours", Op.EQ, Decimal(12))),
        ("workorder", "laborhours lt 0.005", C("laborhours", Op.LT, Decimal("0.005"))),
        ("workorder", "totalamount ge 1e3", C("totalamount", Op.GE, Decimal(1000))),
        ("workorder", "latitude eq 12.5d", C("latitude", Op.EQ, 12.5)),
        ("workorder", "latitude eq -3", C("latitude", Op.EQ, -3.0)),
        ("workorder", "signedoff eq true", C("signedoff", Op.EQ, True)),
        ("workorder", "signedoff eq false", C("signedoff", Op.EQ, False)),
        ("workorder", "priority eq 3", C("priority", Op.EQ, 3)),
        (
            "workorder",
            "externalreference eq 00000000-0000-0000-0000-000000000001",
            C("externalreference", Op.EQ, G1),
        ),
        (
            "workorder",
            "externalreference eq guid'00000000-0000-0000-0000-000000000001'",
            C("externalreference", Op.EQ, G1),
        ),
        (
            "workorder",
            "externalreference eq AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE",
            C("externalreference", Op.EQ, G2),
        ),
        ("workorder", "duedate eq 2024-02-29", C("duedate", Op.EQ, dt.date(2024, 2, 29))),
        (
            "workorder",
            "scheduledstart ge 2024-01-01",
            C("scheduledstart", Op.GE, dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ),
        (
            "workorder",
            "scheduledstart ge 2024-01-01T10:00:00+02:00",
            C("scheduledstart", Op.GE, dt.datetime(2024, 1, 1, 8, tzinfo=UTC)),
        ),
        (
            "workorder",
            "scheduledstart ge 2024-01-01T10:00:00",
            C("scheduledstart", Op.GE, dt.datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ),
        (
            "workorder",
            "scheduledstart ge 2024-01-01T10:00Z",
            C("scheduledstart", Op.GE, dt.datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ),
        (
            "workorder",
            "scheduledstart lt 2024-01-01T10:00:00.1234567Z",
            C("scheduledstart", Op.LT, dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ),
        (
            "workorder",
            "scheduledstart eq datetime'2024-01-01T10:00:00Z'",
            C("scheduledstart", Op.EQ, dt.datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ),
        ("account", "name eq null", C("name", Op.NULL)),
        ("account", "null eq name", C("name", Op.NULL)),
        ("account", "name ne null", C("name", Op.NOT_NULL)),
        ("workorder", "sitephoto eq null", C("sitephoto", Op.NULL)),
        ("workorder", "incidenttypes ne null", C("incidenttypes", Op.NOT_NULL)),
        ("account", "name gt 'M'", C("name", Op.GT, "M")),
    ],
)
def test_literals(table: str, text: str, expected: Node) -> None:
    assert f(text, table) == expected


def test_whitespace_and_keyword_case() -> None:
    assert f("  name   eq\t'a'\r\n") == C("name", Op.EQ, "a")
    assert f("NAME EQ 'a' AND Revenue GT 5 OR NOT creditonhold") == Or(
        (
            And((C("name", Op.EQ, "a"), C("revenue", Op.GT, Decimal(5)))),
            Not(C("creditonhold", Op.EQ, True)),
        )
    )


def test_literal_on_the_left_flips_the_operator() -> None:
    assert f("5 lt numberofemployees") == C("numberofemployees", Op.GT, 5)
    assert f("5 ge numberofemployees") == C("numberofemployees", Op.LE, 5)
    assert f("'x' eq name") == C("name", Op.EQ, "x")


def test_boolean_columns_and_constants_are_conditions() -> None:
    assert f("creditonhold") == C("creditonhold", Op.EQ, True)
    assert f("not creditonhold") == Not(C("creditonhold", Op.EQ, True))
    assert f("true") == TRUE
    assert f("false") == FALSE
    assert f("true and name eq 'a'") == C("name", Op.EQ, "a")
    assert f("false or name eq 'a'") == C("name", Op.EQ, "a")


# ---------------------------------------------------------------------------------------------
# Precedence: not > comparisons > and > or

A, B, D = C("name", Op.EQ, "a"), C("name", Op.EQ, "b"), C("name", Op.EQ, "d")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name eq 'a' or name eq 'b' and name eq 'd'", Or((A, And((B, D))))),
        ("name eq 'a' and name eq 'b' or name eq 'd'", Or((And((A, B)), D))),
        ("(name eq 'a' or name eq 'b') and name eq 'd'", And((Or((A, B)), D))),
        ("name eq 'a' and (name eq 'b' or name eq 'd')", And((A, Or((B, D))))),
        ("not name eq 'a' and name eq 'b'", And((Not(A), B))),
        ("not name eq 'a' or name eq 'b'", Or((Not(A), B))),
        ("not (name eq 'a' or name eq 'b')", Not(Or((A, B)))),
        ("name eq 'a' and not name eq 'b'", And((A, Not(B)))),
        ("not not name eq 'a'", A),
        ("not (not (name eq 'a'))", A),
        ("name eq 'a' and name eq 'b' and name eq 'd'", And((A, B, D))),
        ("name eq 'a' or name eq 'b' or name eq 'd'", Or((A, B, D))),
        ("(name eq 'a' and name eq 'b') and name eq 'd'", And((A, B, D))),
        ("((((name eq 'a'))))", A),
        ("name eq 'a' or not name eq 'b' and name eq 'd'", Or((A, And((Not(B), D))))),
    ],
)
def test_precedence(text: str, expected: Node) -> None:
    assert f(text) == expected


# ---------------------------------------------------------------------------------------------
# String functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contains(name,'abc')", C("name", Op.LIKE, "%abc%")),
        ("contains(name,'50%')", C("name", Op.LIKE, "%50[%]%")),
        ("contains(name,'a_b')", C("name", Op.LIKE, "%a[_]b%")),
        ("contains(name,'[x]')", C("name", Op.LIKE, "%[[]x]%")),
        ("contains(name,'it''s')", C("name", Op.LIKE, "%it's%")),
        ("contains(name,'')", C("name", Op.LIKE, "%%")),
        ("contains(description,'x')", C("description", Op.LIKE, "%x%")),
        ("startswith(name,'a%_[')", C("name", Op.BEGINS_WITH, "a[%][_][[]")),
        ("endswith(name,'%')", C("name", Op.ENDS_WITH, "[%]")),
        ("contains(name,'x') eq true", C("name", Op.LIKE, "%x%")),
        ("contains(name,'x') ne false", C("name", Op.LIKE, "%x%")),
        ("contains(name,'x') eq false", Not(C("name", Op.LIKE, "%x%"))),
        ("not contains(name,'x')", Not(C("name", Op.LIKE, "%x%"))),
        ("CONTAINS(NAME,'x')", C("name", Op.LIKE, "%x%")),
        ("contains( name , 'x' )", C("name", Op.LIKE, "%x%")),
    ],
)
def test_string_functions(text: str, expected: Node) -> None:
    assert f(text) == expected


# ---------------------------------------------------------------------------------------------
# Lookups, column comparisons and navigation


def test_lookup_properties() -> None:
    assert f(f"_primarycontactid_value eq {G1}") == C("primarycontactid", Op.EQ, G1)
    assert f(f"primarycontactid eq {G1}") == C("primarycontactid", Op.EQ, G1)
    assert f(f"_ownerid_value ne {G1}") == C("ownerid", Op.NE, G1)
    assert f(f"_PrimaryContactId_Value eq {G1}") == C("primarycontactid", Op.EQ, G1)
    assert f("_parentcustomerid_value eq null", "contact") == C("parentcustomerid", Op.NULL)


def test_column_comparisons() -> None:
    assert f("name eq telephone1") == ColumnCompare("name", Op.EQ, "telephone1")
    assert f("numberofemployees gt revenue") == ColumnCompare("numberofemployees", Op.GT, "revenue")
    assert f("createdon lt modifiedon") == ColumnCompare("createdon", Op.LT, "modifiedon")
    assert f("_createdby_value eq _modifiedby_value") == ColumnCompare(
        "createdby", Op.EQ, "modifiedby"
    )
    assert f("creditonhold ne creditonhold") == ColumnCompare("creditonhold", Op.NE, "creditonhold")


def test_single_valued_navigation_paths() -> None:
    assert f("primarycontactid/fullname eq 'A'") == link(
        "contact", "contactid", "primarycontactid", C("fullname", Op.EQ, "A")
    )
    # a related row's id is the lookup itself
    assert f(f"primarycontactid/contactid eq {G1}") == C("primarycontactid", Op.EQ, G1)
    assert f("primarycontactid/contactid eq null") == C("primarycontactid", Op.NULL)
    # eq null through a navigation also matches rows without a related row
    assert f("primarycontactid/fullname eq null") == Or(
        (
            C("primarycontactid", Op.NULL),
            link("contact", "contactid", "primarycontactid", C("fullname", Op.NULL)),
        )
    )
    assert f("contains(primarycontactid/fullname,'x')") == link(
        "contact", "contactid", "primarycontactid", C("fullname", Op.LIKE, "%x%")
    )
    assert f("parentcustomerid_account/name eq 'x'", "contact") == link(
        "account", "accountid", "parentcustomerid", C("name", Op.EQ, "x")
    )
    assert f("owninguser/fullname eq 'x'") == link(
        "systemuser", "systemuserid", "ownerid", C("fullname", Op.EQ, "x")
    )
    assert f("serviceaccountid/primarycontactid/lastname eq 'x'", "workorder") == link(
        "account",
        "accountid",
        "serviceaccountid",
        link("contact", "contactid", "primarycontactid", C("lastname", Op.EQ, "x")),
    )
    assert f("$it/name eq 'x'") == C("name", Op.EQ, "x")
    assert f(f"serviceaccountid/primarycontactid/contactid eq {G1}", "workorder") == link(
        "account", "accountid", "serviceaccountid", C("primarycontactid", Op.EQ, G1)
    )


def test_collection_valued_navigation_with_any_and_all() -> None:
    assert f("contact_parentcustomerid/any(c: c/lastname eq 'X')") == link(
        "contact", "parentcustomerid", "accountid", C("lastname", Op.EQ, "X")
    )
    assert f("contact_parentcustomerid/any()") == link(
        "contact", "parentcustomerid", "accountid", None
    )
    assert f("not contact_parentcustomerid/any()") == link(
        "contact", "parentcustomerid", "accountid", None, LinkType.NOT_ANY
    )
    assert f("workorder_serviceaccountid/all(w: w/priority eq 3 and w/signedoff)") == link(
        "workorder",
        "serviceaccountid",
        "accountid",
        And((C("priority", Op.EQ, 3), C("signedoff", Op.EQ, True))),
        LinkType.ALL,
    )
    assert f("not workorder_serviceaccountid/all(w: w/signedoff)") == link(
        "workorder", "serviceaccountid", "accountid", C("signedoff", Op.EQ, True), LinkType.NOT_ALL
    )
    inner = "Microsoft.Dynamics.CRM.In(PropertyName='priority',PropertyValues=['3','4'])"
    assert f(f"workorder_serviceaccountid/any(w: {inner})") == link(
        "workorder", "serviceaccountid", "accountid", C("priority", Op.IN, (3, 4))
    )
    assert f("contact_parentcustomerid/any(c: c/contact_parentcustomerid/any())") == link(
        "contact",
        "parentcustomerid",
        "accountid",
        link("contact", "parentcustomerid", "contactid", None),
    )
    assert f("primarycontactid/contact_parentcustomerid/any(c: c/lastname eq 'x')") == link(
        "contact",
        "contactid",
        "primarycontactid",
        link("contact", "parentcustomerid", "contactid", C("lastname", Op.EQ, "x")),
    )


def test_navigation_names() -> None:
    account, contact = SCHEMA.table("account"), SCHEMA.table("contact")
    with pytest.raises(QueryError, match="case-sensitive"):
        resolve_navigation(account, SCHEMA, "PrimaryContactId")
    nav = resolve_navigation(account, SCHEMA, "primarycontactid")
    assert (nav.name, nav.column.name, nav.target.name, nav.collection) == (
        "primarycontactid",
        "primarycontactid",
        "contact",
        False,
    )
    nav = resolve_navigation(contact, SCHEMA, "parentcustomerid_contact")
    assert (nav.name, nav.column.name, nav.target.name) == (
        "parentcustomerid_contact",
        "parentcustomerid",
        "contact",
    )
    nav = resolve_navigation(account, SCHEMA, "ownerid_team")
    assert (nav.column.name, nav.target.name) == ("ownerid", "team")
    nav = resolve_navigation(account, SCHEMA, "owningteam")
    assert (nav.name, nav.column.name, nav.target.name) == ("owningteam", "ownerid", "team")
    nav = resolve_navigation(account, SCHEMA, "contact_parentcustomerid")
    assert (nav.column.name, nav.target.name, nav.collection) == (
        "parentcustomerid",
        "contact",
        True,
    )


# ---------------------------------------------------------------------------------------------
# Dataverse query functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=['0','1'])",
            C("statecode", Op.IN, (0, 1)),
        ),
        (f"{FN}In(PropertyName='statecode',PropertyValues=[0,1])", C("statecode", Op.IN, (0, 1))),
        (f"{FN}In(PropertyName='statecode',PropertyValues=['0'])", C("statecode", Op.EQ, 0)),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=['1','0','1'])",
            C("statecode", Op.IN, (1, 0)),
        ),
        (
            f'{FN}In( PropertyName = \'statecode\' , PropertyValues = [ "0" , "1" ] )',
            C("statecode", Op.IN, (0, 1)),
        ),
        (
            "microsoft.dynamics.crm.in(propertyname='StateCode',propertyvalues=['0','1'])",
            C("statecode", Op.IN, (0, 1)),
        ),
        (
            f"{FN}In(PropertyValues=['0','1'],PropertyName='statecode')",
            C("statecode", Op.IN, (0, 1)),
        ),
        (
            f"{FN}In(PropertyName='name',PropertyValues=['a''b',\"c\\\"d\",\"\\u00e9\"])",
            C("name", Op.IN, ("a'b", 'c"d', "é")),
        ),
        (f"{FN}In(PropertyName='name',PropertyValues=[\"12\"])", C("name", Op.EQ, "12")),
        (
            f"{FN}In(PropertyName='revenue',PropertyValues=['1.5','2'])",
            C("revenue", Op.IN, (Decimal("1.5"), Decimal(2))),
        ),
        (
            f"{FN}In(PropertyName='primarycontactid',PropertyValues=['{{{G1}}}'])",
            C("primarycontactid", Op.EQ, G1),
        ),
        (
            f"{FN}NotIn(PropertyName='statecode',PropertyValues=['0','1'])",
            C("statecode", Op.NOT_IN, (0, 1)),
        ),
        (f"{FN}NotIn(PropertyName='statecode',PropertyValues=['1'])", C("statecode", Op.NE, 1)),
        (
            f"{FN}Between(PropertyName='numberofemployees',PropertyValues=['10','20'])",
            And((C("numberofemployees", Op.GE, 10), C("numberofemployees", Op.LE, 20))),
        ),
        (
            f'{FN}NotBetween(PropertyName=\'numberofemployees\',PropertyValues=["10","20"])',
            Not(And((C("numberofemployees", Op.GE, 10), C("numberofemployees", Op.LE, 20)))),
        ),
        (
            f"{FN}Between(PropertyName='createdon',PropertyValues=['2024-01-01','2024-02-01'])",
            And(
                (
                    C("createdon", Op.GE, dt.datetime(2024, 1, 1, tzinfo=UTC)),
                    C("createdon", Op.LE, dt.datetime(2024, 2, 1, tzinfo=UTC)),
                )
            ),
        ),
        (f"{FN}EqualUserId(PropertyName='ownerid')", C("ownerid", Op.EQ_USERID)),
        (f"{FN}EqualUserId(PropertyName='_createdby_value')", C("createdby", Op.EQ_USERID)),
        (f"{FN}NotEqualUserId(PropertyName='ownerid')", C("ownerid", Op.NE_USERID)),
        (f"{FN}EqualUserTeams(PropertyName='ownerid')", C("ownerid", Op.EQ_USERTEAMS)),
        (f"{FN}EqualUserOrUserTeams(PropertyName='ownerid')", C("ownerid", Op.EQ_USERORUSERTEAMS)),
        (
            f"{FN}EqualUserOrUserHierarchy(PropertyName='ownerid')",
            C("ownerid", Op.EQ_USERORUSERHIERARCHY),
        ),
        (
            f"{FN}EqualUserOrUserHierarchyAndTeams(PropertyName='ownerid')",
            C("ownerid", Op.EQ_USERORUSERHIERARCHYANDTEAMS),
        ),
        (
            f"{FN}EqualBusinessId(PropertyName='owningbusinessunit')",
            C("owningbusinessunit", Op.EQ_BUSINESSID),
        ),
        (
            f"{FN}NotEqualBusinessId(PropertyName='owningbusinessunit')",
            C("owningbusinessunit", Op.NE_BUSINESSID),
        ),
        (f"{FN}Today(PropertyName='createdon')", C("createdon", Op.TODAY)),
        (f"{FN}Yesterday(PropertyName='createdon')", C("createdon", Op.YESTERDAY)),
        (f"{FN}Tomorrow(PropertyName='createdon')", C("createdon", Op.TOMORROW)),
        (f"{FN}ThisWeek(PropertyName='createdon')", C("createdon", Op.THIS_WEEK)),
        (f"{FN}ThisMonth(PropertyName='createdon')", C("createdon", Op.THIS_MONTH)),
        (f"{FN}ThisYear(PropertyName='createdon')", C("createdon", Op.THIS_YEAR)),
        (f"{FN}Last7Days(PropertyName='createdon')", C("createdon", Op.LAST_X_DAYS, 7)),
        (f"{FN}Next7Days(PropertyName='createdon')", C("createdon", Op.NEXT_X_DAYS, 7)),
        (
            f"{FN}LastXDays(PropertyName='createdon',PropertyValue=3)",
            C("createdon", Op.LAST_X_DAYS, 3),
        ),
        (
            f"{FN}LastXDays(PropertyName='createdon',PropertyValue='3')",
            C("createdon", Op.LAST_X_DAYS, 3),
        ),
        (
            f"{FN}NextXDays(PropertyName='createdon',PropertyValue=0)",
            C("createdon", Op.NEXT_X_DAYS, 0),
        ),
        (
            f"{FN}LastXHours(PropertyName='createdon',PropertyValue=5)",
            C("createdon", Op.LAST_X_HOURS, 5),
        ),
        (
            f"{FN}NextXHours(PropertyName='createdon',PropertyValue=5)",
            C("createdon", Op.NEXT_X_HOURS, 5),
        ),
        (
            f"{FN}OlderThanXDays(PropertyName='createdon',PropertyValue=30)",
            C("createdon", Op.OLDER_X_DAYS, 30),
        ),
        (
            f"{FN}On(PropertyName='createdon',PropertyValue='2024-01-01')",
            C("createdon", Op.ON, dt.date(2024, 1, 1)),
        ),
        (
            f"{FN}On(PropertyName='createdon',PropertyValue=2024-01-01)",
            C("createdon", Op.ON, dt.date(2024, 1, 1)),
        ),
        (
            f"{FN}On(PropertyName='createdon',PropertyValue=2024-01-01T23:00:00-02:00)",
            C("createdon", Op.ON, dt.date(2024, 1, 2)),
        ),
        (
            f"{FN}OnOrBefore(PropertyName='createdon',PropertyValue='2024-01-01')",
            C("createdon", Op.ON_OR_BEFORE, dt.date(2024, 1, 1)),
        ),
        (
            f"{FN}OnOrAfter(PropertyName='createdon',PropertyValue=\"2024-01-01\")",
            C("createdon", Op.ON_OR_AFTER, dt.date(2024, 1, 1)),
        ),
    ],
)
def test_query_functions_on_account(text: str, expected: Node) -> None:
    assert f(text) == expected


@pytest.mark.parametrize(
    ("table", "text", "expected"),
    [
        (
            "workorder",
            f"{FN}ContainValues(PropertyName='incidenttypes',PropertyValues=['2','1','2'])",
            C("incidenttypes", Op.CONTAIN_VALUES, (1, 2)),
        ),
        (
            "workorder",
            f"{FN}DoesNotContainValues(PropertyName='incidenttypes',PropertyValues=[\"5\"])",
            C("incidenttypes", Op.NOT_CONTAIN_VALUES, (5,)),
        ),
        ("workorder", f"{FN}Today(PropertyName='duedate')", C("duedate", Op.TODAY)),
        (
            "systemuser",
            f"{FN}EqualUserId(PropertyName='systemuserid')",
            C("systemuserid", Op.EQ_USERID),
        ),
        (
            "systemuser",
            f"{FN}EqualUserLanguage(PropertyName='uilanguageid')",
            C("uilanguageid", Op.EQ_USERLANGUAGE),
        ),
        (
            "systemuser",
            f"{FN}EqualBusinessId(PropertyName='businessunitid')",
            C("businessunitid", Op.EQ_BUSINESSID),
        ),
        ("team", f"{FN}EqualUserTeams(PropertyName='teamid')", C("teamid", Op.EQ_USERTEAMS)),
    ],
)
def test_query_functions_on_other_tables(table: str, text: str, expected: Node) -> None:
    assert f(text, table) == expected


def test_query_functions_combine_with_and_or_not() -> None:
    text = (
        f"not {FN}EqualUserId(PropertyName='ownerid') and ({FN}Today(PropertyName='createdon') "
        f"or {FN}In(PropertyName='statecode',PropertyValues=['1']))"
    )
    assert f(text) == And(
        (
            Not(C("ownerid", Op.EQ_USERID)),
            Or((C("createdon", Op.TODAY), C("statecode", Op.EQ, 1))),
        )
    )


def test_parameter_aliases() -> None:
    aliases = {"@p1": "'x'", "@p2": '["0","1"]', "@p3": "'statecode'", "@d": "2024-01-01"}
    assert f("name eq @p1", aliases=aliases) == C("name", Op.EQ, "x")
    assert f("@p1 eq name", aliases=aliases) == C("name", Op.EQ, "x")
    assert f(f"{FN}In(PropertyName=@p3,PropertyValues=@p2)", aliases=aliases) == C(
        "statecode", Op.IN, (0, 1)
    )
    assert f("contains(name,@p1)", aliases=aliases) == C("name", Op.LIKE, "%x%")
    assert f("createdon ge @d", aliases=aliases) == C(
        "createdon", Op.GE, dt.datetime(2024, 1, 1, tzinfo=UTC)
    )
    opts = q({"$filter": "name eq @p1", "@p1": "'y'"})
    assert opts.query.filter == C("name", Op.EQ, "y")


# ---------------------------------------------------------------------------------------------
# $filter errors: what and where


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown names
        (
            "nmae eq 'a'",
            "table 'account' has no column 'nmae' (did you mean 'name'?) at character 1",
        ),
        ("zzz eq 1", "table 'account' has no column 'zzz' at character 1"),
        ("name eq 'a' and zzz eq 1", "table 'account' has no column 'zzz' at character 17"),
        ("_name_value eq 'a'", "table 'account' has no column '_name_value' at character 1"),
        ("frobnicate(name)", "unknown function frobnicate() at character 1"),
        ("tolower(name) eq 'a'", "the function tolower() is not supported at character 1"),
        ("year(createdon) eq 2024", "the function year() is not supported at character 1"),
        (
            "In(PropertyName='name')",
            "write Dataverse query functions in full: Microsoft.Dynamics.CRM.In at character 1",
        ),
        (
            f"{FN}Frob(PropertyName='name')",
            "unknown function Microsoft.Dynamics.CRM.Frob at character 1",
        ),
        (
            f"{FN}LastMonth(PropertyName='createdon')",
            "Microsoft.Dynamics.CRM.LastMonth is not supported yet at character 1",
        ),
        (
            f"{FN}Under(PropertyName='accountid',PropertyValue='x')",
            "Microsoft.Dynamics.CRM.Under is not supported yet at character 1",
        ),
        # wrong literal for the column
        (
            "name eq 5",
            "account.name is a string column: expected a string in single quotes, got 5 at "
            "character 9",
        ),
        (
            'name eq "x"',
            'account.name is a string column: expected a string in single quotes, got "x" '
            "(strings take single quotes) at character 9",
        ),
        (
            "numberofemployees eq 'x'",
            "account.numberofemployees is an integer column: expected a whole number, got 'x' "
            "(numbers, GUIDs, dates and true/false are written without quotes) at character 22",
        ),
        (
            "numberofemployees eq 1.5",
            "account.numberofemployees is an integer column: expected a whole number, got 1.5 at "
            "character 22",
        ),
        (
            "statecode eq '0'",
            "account.statecode is a choice column: expected a choice value, got '0' (numbers, "
            "GUIDs, dates and true/false are written without quotes) at character 14",
        ),
        (
            "creditonhold eq 1",
            "account.creditonhold is a boolean column: expected true or false, got 1 at character "
            "17",
        ),
        (
            f"primarycontactid eq '{G1}'",
            f"account.primarycontactid is a lookup column: expected a GUID, got '{G1}' (numbers, "
            f"GUIDs, dates and true/false are written without quotes) at character 21",
        ),
        (
            "primarycontactid eq 5",
            "account.primarycontactid is a lookup column: expected a GUID, got 5 at character 21",
        ),
        (
            "createdon eq '2024-01-01'",
            "account.createdon is a datetime column: expected a date and time such as "
            "2024-01-01T00:00:00Z, got '2024-01-01' (numbers, GUIDs, dates and true/false are "
            "written without quotes) at character 14",
        ),
        (
            "revenue eq true",
            "account.revenue is a money column: expected a number, got true at character 12",
        ),
        (
            "createdon eq 1700-01-01T00:00:00Z",
            "account.createdon: dates before 1753-01-01 are not supported at character 14",
        ),
        ("createdon eq 2024-13-01", "'2024-13-01' is not a valid date at character 14"),
        (
            "createdon eq 2024-02-30T00:00:00Z",
            "'2024-02-30T00:00:00Z' is not a valid datetime at character 14",
        ),
        ("primarycontactid eq guid'xyz'", "guid'xyz' is not a valid guid at character 21"),
        (
            "numberofemployees eq 2147483648",
            "2147483648 is outside -2147483648 .. 2147483647 at character 22",
        ),
        ("revenue gt 1e20", "1e20 is outside -922337203685477 .. 922337203685477 at character 12"),
        (
            "address1_latitude gt 1e400",
            "1e400 is outside -100000000000 .. 100000000000 at character 22",
        ),
        (
            "createdon eq 9999-12-31T23:59:59-05:00",
            "account.createdon: dates after 9999-12-31 are not supported at character 14",
        ),
        ("naïve eq 1", "unexpected character 'ï' at character 3"),
        ("name eq 'a\x00b'", "text cannot contain NUL characters at character 9"),
        ("name eq '\ud800'", "text must be valid Unicode (no lone surrogates) at character 9"),
        # operator not valid for the type
        (
            "creditonhold gt true",
            "gt does not apply to the boolean column 'creditonhold' at character 14",
        ),
        (
            f"primarycontactid ge {G1}",
            "ge does not apply to the lookup column 'primarycontactid'; lookups compare with eq, "
            "ne and In at character 18",
        ),
        (
            f"accountid lt {G1}",
            "lt does not apply to the uniqueidentifier column 'accountid' at character 11",
        ),
        (
            "contains(numberofemployees,'1')",
            "contains() applies to text columns; 'numberofemployees' is an integer column at "
            "character 10",
        ),
        (
            "startswith(createdon,'2024')",
            "startswith() applies to text columns; 'createdon' is a datetime column at character "
            "12",
        ),
        ("contains(name,5)", "contains() needs a string in single quotes, got 5 at character 15"),
        ("contains('x',name)", "contains() needs a column as its first argument at character 10"),
        (
            "contains(name,'x') gt true",
            "contains() can only be compared with eq/ne true or false at character 20",
        ),
        ("name gt null", "only eq and ne compare with null, not gt at character 6"),
        (
            "name eq numberofemployees",
            "cannot compare the string column 'name' with the integer column 'numberofemployees' "
            "at character 9",
        ),
        ("creditonhold gt creditonhold", "gt does not apply to boolean columns at character 1"),
        (
            "primarycontactid/fullname eq name",
            "comparing columns through navigation properties is not supported at character 18",
        ),
        ("5 eq 5", "a comparison needs a column on one side at character 3"),
        ("name eq", "expected a column or a value, got the end of $filter at character 8"),
        # syntax
        ("", "$filter is empty at character 1"),
        ("   ", "$filter is empty at character 1"),
        ("name eq 'abc", "unterminated string at character 9"),
        ("name eq 'a' and", "expected a column or a value, got the end of $filter at character 16"),
        ("name eq 'a' name eq 'b'", "expected 'and', 'or' or the end, got 'name' at character 13"),
        ("(name eq 'a'", "expected ')', got the end of $filter at character 13"),
        ("name eq 'a')", "expected 'and', 'or' or the end, got ')' at character 12"),
        ("name eq 'a' && name eq 'b'", "unexpected character '&' at character 13"),
        (
            "name == 'a'",
            "expected a comparison operator (eq, ne, gt, ge, lt, le) after 'name', got '=' at "
            "character 6",
        ),
        (
            "name",
            "expected a comparison operator (eq, ne, gt, ge, lt, le) after 'name', got the end of "
            "$filter at character 5",
        ),
        ("eq 'a'", "expected a column or a value, got 'eq' at character 1"),
        ("and", "expected a column or a value, got 'and' at character 1"),
        ("name eq 12abc", "'12abc' is not a valid number, date or GUID at character 9"),
        ("name eq 'a' or", "expected a column or a value, got the end of $filter at character 15"),
        (
            "name in ('a','b')",
            "the 'in' operator is not supported; use "
            "Microsoft.Dynamics.CRM.In(PropertyName='c',PropertyValues=['a','b']) at character 6",
        ),
        ("numberofemployees add 1 eq 2", "arithmetic is not supported in $filter at character 19"),
        ("name has 'a'", "the 'has' operator is not supported at character 6"),
        ("name eq tolower('A')", "tolower() cannot be used as a value at character 9"),
        ("name eq [1]", "expected a column or a value, got '[' at character 9"),
        ("name eq @p1", "the parameter alias @p1 is not defined at character 9"),
        (
            "(" * 51 + "name eq 'a'" + ")" * 51,
            "the filter is nested more than 50 levels deep at character 51",
        ),
        # query functions
        (
            f"{FN}In(PropertyName='statecode')",
            "Microsoft.Dynamics.CRM.In needs PropertyValues at character 1",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=[])",
            "PropertyValues must list at least one value at character 67",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues='0')",
            "PropertyValues must be a list: ['a','b'] at character 67",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=['0'],PropertyValue='1')",
            "Microsoft.Dynamics.CRM.In takes PropertyName, PropertyValues, not PropertyValue at "
            "character 73",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyName='name',PropertyValues=['0'])",
            "the parameter PropertyName is given twice at character 52",
        ),
        (
            f"{FN}In(PropertyName=statecode,PropertyValues=['0'])",
            "expected a value, got 'statecode' at character 40",
        ),
        (
            f"{FN}In(PropertyName=5,PropertyValues=['0'])",
            "PropertyName must name a column as a string ('name') at character 40",
        ),
        (
            f"{FN}In(PropertyName='zzz',PropertyValues=['0'])",
            "table 'account' has no column 'zzz' at character 40",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=['x'])",
            "account.statecode is a choice column: expected a choice value, got 'x' at character "
            "68",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=[null])",
            "null is not a value here; compare with eq null at character 68",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=[['0']])",
            "lists cannot be nested at character 68",
        ),
        (
            f"{FN}In(PropertyName='statecode',PropertyValues=['0' '1'])",
            "expected ',' or ']', got '1' at character 72",
        ),
        (
            f"{FN}In(PropertyName='statecode' PropertyValues=['0'])",
            "expected ',' or ')', got 'PropertyValues' at character 52",
        ),
        (
            f"{FN}In(PropertyName 'statecode')",
            "expected '=' after PropertyName, got 'statecode' at character 40",
        ),
        (
            f"{FN}In(PropertyName='sitephoto',PropertyValues=['0'])",
            "table 'account' has no column 'sitephoto' at character 40",
        ),
        (
            f"{FN}Between(PropertyName='numberofemployees',PropertyValues=['1'])",
            "Microsoft.Dynamics.CRM.Between needs two PropertyValues, from and to at character 80",
        ),
        (
            f"{FN}Between(PropertyName='creditonhold',PropertyValues=['1','2'])",
            "Microsoft.Dynamics.CRM.Between applies to number and date columns; "
            "'creditonhold' is a boolean column at character 45",
        ),
        (
            f"{FN}ContainValues(PropertyName='statecode',PropertyValues=['1'])",
            "Microsoft.Dynamics.CRM.ContainValues applies to multichoice columns; 'statecode' is "
            "a choice column at character 51",
        ),
        (
            f"{FN}EqualUserId(PropertyName='name')",
            "Microsoft.Dynamics.CRM.EqualUserId applies to lookups to systemuser (and id "
            "columns); 'name' is not one at character 49",
        ),
        (
            f"{FN}EqualUserId(PropertyName='primarycontactid')",
            "Microsoft.Dynamics.CRM.EqualUserId applies to lookups to systemuser (and id "
            "columns); 'primarycontactid' is not one at character 49",
        ),
        (
            f"{FN}EqualBusinessId(PropertyName='ownerid')",
            "Microsoft.Dynamics.CRM.EqualBusinessId applies to lookups to businessunit (and id "
            "columns); 'ownerid' is not one at character 53",
        ),
        (
            f"{FN}EqualUserLanguage(PropertyName='name')",
            "Microsoft.Dynamics.CRM.EqualUserLanguage applies to whole-number columns; 'name' is "
            "a string column at character 55",
        ),
        (
            f"{FN}EqualUserId(PropertyName='ownerid',PropertyValue='x')",
            "Microsoft.Dynamics.CRM.EqualUserId takes PropertyName, not PropertyValue at "
            "character 59",
        ),
        (
            f"{FN}Today(PropertyName='name')",
            "Microsoft.Dynamics.CRM.Today applies to date and time columns; 'name' is a string "
            "column at character 43",
        ),
        (
            f"{FN}LastXDays(PropertyName='createdon')",
            "Microsoft.Dynamics.CRM.LastXDays needs PropertyValue at character 1",
        ),
        (
            f"{FN}LastXDays(PropertyName='createdon',PropertyValue=-1)",
            "Microsoft.Dynamics.CRM.LastXDays needs a whole number of days from 0 to 100000, got "
            "-1 at character 73",
        ),
        (
            f"{FN}LastXHours(PropertyName='createdon',PropertyValue='x')",
            "Microsoft.Dynamics.CRM.LastXHours needs a whole number of hours from 0 to 2400000, "
            "got 'x' at character 74",
        ),
        (
            f"{FN}LastXDays(PropertyName='createdon',PropertyValue=1.5)",
            "Microsoft.Dynamics.CRM.LastXDays needs a whole number of days from 0 to 100000, got "
            "1.5 at character 73",
        ),
        (
            f"{FN}On(PropertyName='createdon',PropertyValue='soon')",
            "Microsoft.Dynamics.CRM.On needs a date such as '2024-01-01', got 'soon' at character "
            "66",
        ),
        (
            f"{FN}On(PropertyName='createdon',PropertyValue='2024-02-30')",
            "'2024-02-30' is not a valid date at character 66",
        ),
        (
            f"{FN}On(PropertyName='createdon',PropertyValue=['2024-01-01'])",
            "PropertyValue takes one value at character 66",
        ),
        (
            f"{FN}On(PropertyName='createdon',PropertyValue=1700-01-01)",
            "1700-01-01 is outside 1753-01-01 .. 9999-12-30 at character 66",
        ),
        # navigation
        (
            "parentcustomerid/name eq 'x'",
            "table 'account' has no navigation property 'parentcustomerid'; single-valued ones "
            "are named after the lookup (primarycontactid, parentcustomerid_account), "
            "collection-valued ones after the referencing table and lookup "
            "(contact_parentcustomerid) at character 1",
        ),
        ("name/x eq 'a'", "'name' is a string column, not a navigation property at character 1"),
        ("primarycontactid/zzz eq 'a'", "table 'contact' has no column 'zzz' at character 18"),
        (
            "contact_parentcustomerid/lastname eq 'x'",
            "'contact_parentcustomerid' is collection-valued: filter it with "
            "contact_parentcustomerid/any(x: x/column eq …) or all(…) at character 1",
        ),
        (
            "contact_parentcustomerid/all()",
            "all() needs a condition: all(x: x/column eq …) at character 30",
        ),
        (
            "contact_parentcustomerid/any(c: lastname eq 'x')",
            "inside any/all, write columns as c/column (columns of the outer table are not "
            "supported there) at character 33",
        ),
        (
            "contact_parentcustomerid/any(c: c eq 'x')",
            "expected a column after 'c' at character 33",
        ),
        (
            "contact_parentcustomerid/any(c c/lastname eq 'x')",
            "expected ':' after the range variable, got 'c' at character 32",
        ),
        (
            "contact_parentcustomerid/any(c: c/lastname eq 'x'",
            "expected ')', got the end of $filter at character 50",
        ),
        (
            "primarycontactid/any(c: c/lastname eq 'x')",
            "any() needs a collection-valued navigation property at character 18",
        ),
        (
            "contact_parentcustomerid/any() eq true",
            "any()/all() is a condition and cannot be compared at character 1",
        ),
        (
            "any(c: c/name eq 'x')",
            "any() follows a navigation property: nav/any(x: …) at character 1",
        ),
        (
            "primarycontactid/",
            "expected a column or navigation property after '/', got the end of $filter at "
            "character 18",
        ),
    ],
)
def test_filter_errors(text: str, message: str) -> None:
    assert err(text) == f"{message} of $filter"


def test_filter_errors_on_other_tables() -> None:
    assert err("parentcustomerid/name eq 'x'", "contact") == (
        "'parentcustomerid' can point at account, contact: name the target, "
        "parentcustomerid_account or parentcustomerid_contact at character 1 of $filter"
    )
    assert err("incidenttypes eq 1", "workorder") == (
        "the multichoice column 'incidenttypes' compares with null or with "
        "Microsoft.Dynamics.CRM.ContainValues / DoesNotContainValues at character 1 of $filter"
    )
    assert err("sitephoto eq 'x'", "workorder") == (
        "the image column 'sitephoto' only compares with null at character 1 of $filter"
    )
    assert err("servicereport ne 'x'", "workorder") == (
        "the file column 'servicereport' only compares with null at character 1 of $filter"
    )
    assert err("duedate eq 2024-01-01T00:00:00Z", "workorder") == (
        "workorder.duedate is a date column: expected a date such as 2024-01-01, "
        "got 2024-01-01T00:00:00Z at character 12 of $filter"
    )
    # one column-family table for every query language (fieldsync.query.operators)
    assert err("priority gt 1", "workorder") == (
        "gt does not apply to the choice column 'priority' at character 10 of $filter"
    )
    assert err("duedate lt createdon", "workorder") == (
        "cannot compare the date column 'duedate' with the datetime column 'createdon' "
        "at character 12 of $filter"
    )
    assert err("priority eq estimatedduration", "workorder").startswith(
        "cannot compare the choice column 'priority' with the integer column"
    )
    assert err("incidenttypes eq incidenttypes", "workorder") == (
        "the multichoice column 'incidenttypes' cannot be compared with another column "
        "at character 1 of $filter"
    )
    assert err(
        f"{FN}ContainValues(PropertyName='incidenttypes',PropertyValues=['9x'])", "workorder"
    ) == (
        "workorder.incidenttypes is a multichoice column: expected a choice value, got '9x' "
        "at character 83 of $filter"
    )
    assert err("teammembership_association/any()", "systemuser") == (
        "'teammembership_association' is a many-to-many relationship; filtering through it is "
        "not supported (expand it, or read systemusers(<id>)/teammembership_association) "
        "at character 1 of $filter"
    )


def test_alias_errors_point_at_the_alias() -> None:
    assert err("numberofemployees eq @p1", aliases={"@p1": "'x'"}) == (
        "account.numberofemployees is an integer column: expected a whole number, got 'x' "
        "(numbers, GUIDs, dates and true/false are written without quotes) "
        "at character 22 of $filter"
    )
    assert err("name eq @p1", aliases={"@p1": "'x' 'y'"}) == (
        "expected the end, got 'y' at character 5 of parameter alias @p1"
    )
    assert err("name eq @p1", aliases={"@p1": "['x']"}) == (
        "a list is not a value here at character 9 of $filter"
    )
    assert err("name eq @p1", aliases={"@p1": ""}) == (
        "the parameter alias @p1 is empty at character 9 of $filter"
    )
    assert err("name eq @p1", aliases={"@p1": "@p2", "@p2": "'x'"}) == (
        "the parameter alias @p2 is not defined at character 1 of parameter alias @p1"
    )


def test_filter_error_label() -> None:
    with pytest.raises(QueryError) as info:
        parse_filter("zzz eq 1", SCHEMA.table("account"), SCHEMA, where="$filter of $expand x")
    assert info.value.message.endswith("at character 1 of $filter of $expand x")


# ---------------------------------------------------------------------------------------------
# $select, $orderby, $top, $count and the other options


def test_select() -> None:
    assert q({"$select": "name,revenue"}).query.columns == ("name", "revenue")
    assert q({"$select": " name , Revenue "}).query.columns == ("name", "revenue")
    assert q({"$select": "name,name"}).query.columns == ("name",)
    assert q({"$select": "_primarycontactid_value,primarycontactid"}).query.columns == (
        "primarycontactid",
    )
    assert q({"$select": "*"}).query.columns is None
    assert q({}).query == Query("account")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("zzz", "table 'account' has no column 'zzz' at character 1 of $select"),
        (
            "name,nmae",
            "table 'account' has no column 'nmae' (did you mean 'name'?) at character 6 of $select",
        ),
        ("", "$select is empty at character 1 of $select"),
        ("name,,revenue", "empty item at character 6 of $select"),
        ("name,", "empty item at character 6 of $select"),
        (
            "primarycontactid/fullname",
            "'primarycontactid/fullname': select related columns with $expand at character 1 of "
            "$select",
        ),
        ("name desc", "'name desc' is not a column name at character 1 of $select"),
        ("_name_value", "table 'account' has no column '_name_value' at character 1 of $select"),
    ],
)
def test_select_errors(value: str, message: str) -> None:
    assert qerr({"$select": value}) == message


def test_orderby() -> None:
    assert q({"$orderby": "name desc,revenue asc,createdon"}).query.orders == (
        Order("name", descending=True),
        Order("revenue"),
        Order("createdon"),
    )
    assert q({"$orderby": " Name  DESC , _primarycontactid_value"}).query.orders == (
        Order("name", descending=True),
        Order("primarycontactid"),
    )


@pytest.mark.parametrize(
    ("value", "message", "table"),
    [
        ("zzz", "table 'account' has no column 'zzz' at character 1 of $orderby", "account"),
        (
            "name sideways",
            "expected asc or desc, got 'sideways' at character 6 of $orderby",
            "account",
        ),
        (
            "name, revenue up",
            "expected asc or desc, got 'up' at character 15 of $orderby",
            "account",
        ),
        (
            "name desc extra",
            "expected 'column', 'column asc' or 'column desc', got 'name desc extra' at character "
            "1 of $orderby",
            "account",
        ),
        ("", "$orderby is empty at character 1 of $orderby", "account"),
        (
            "primarycontactid/fullname",
            "'primarycontactid/fullname': ordering by a related table's column is not supported "
            "at character 1 of $orderby",
            "account",
        ),
        (
            "incidenttypes",
            "cannot order by the multichoice column 'incidenttypes' at character 1 of $orderby",
            "workorder",
        ),
        (
            "sitephoto",
            "cannot order by the image column 'sitephoto' at character 1 of $orderby",
            "workorder",
        ),
        ("name(", "unclosed '(' at character 5 of $orderby", "account"),
    ],
)
def test_orderby_errors(value: str, message: str, table: str) -> None:
    assert qerr({"$orderby": value}, table) == message


@pytest.mark.parametrize(
    ("value", "top"), [("1", 1), ("5000", 5000), (str(MAX_TOP), MAX_TOP), (" 7 ", 7)]
)
def test_top(value: str, top: int) -> None:
    assert q({"$top": value}).query.top == top


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_TOP + 1), "abc", "", "1.5", "9" * 5000])
def test_top_errors(value: str) -> None:
    message = qerr({"$top": value})
    assert message.startswith(f"$top must be a whole number from 1 to {MAX_TOP}, got ")


def test_count() -> None:
    assert q({"$count": "true"}).query.count is True
    assert q({"$count": "TRUE"}).query.count is True
    assert q({"$count": "false"}).query.count is False
    assert qerr({"$count": "yes"}) == "$count must be true or false, got 'yes'"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"$skip": "10"},
            "$skip is not supported, use paging: send Prefer: odata.maxpagesize=N and follow "
            "@odata.nextLink",
        ),
        (
            {"$apply": "groupby((name))"},
            "$apply (aggregation) is not supported; use FetchXML for aggregates",
        ),
        ({"$search": "x"}, "$search is not supported"),
        ({"$compute": "x"}, "$compute is not supported"),
        (
            {"$SKIP": "10"},
            "$skip is not supported, use paging: send Prefer: odata.maxpagesize=N and follow "
            "@odata.nextLink",
        ),
        (
            {"$frob": "1"},
            "unknown query option '$frob'; the options are $count, $expand, $filter, $orderby, "
            "$select, $skiptoken, $top",
        ),
        (
            {"$filter": "name eq 'a'", "$FILTER": "name eq 'b'"},
            "the query option $filter is given twice",
        ),
    ],
)
def test_refused_options(params: dict[str, str], message: str) -> None:
    assert qerr(params) == message


def test_option_names_are_case_insensitive_and_other_parameters_are_ignored() -> None:
    opts = q({"$Filter": "name eq 'a'", "$TOP": "3", "fetchXml": "<fetch/>", "sql": "x"})
    assert opts.query == Query("account", filter=C("name", Op.EQ, "a"), top=3)


def test_filter_errors_through_parse_query_options() -> None:
    assert (
        qerr({"$filter": "zzz eq 1"})
        == "table 'account' has no column 'zzz' at character 1 of $filter"
    )


# ---------------------------------------------------------------------------------------------
# $expand


def test_expand_single_valued() -> None:
    opts = q({"$expand": "primarycontactid,owninguser($select=fullname,domainname)"})
    assert opts.expand == (
        Expand("primarycontactid", "primarycontactid", "contact"),
        Expand("owninguser", "ownerid", "systemuser", columns=("fullname", "domainname")),
    )
    opts = q({"$expand": "parentcustomerid_account($select=name)"}, "contact")
    assert opts.expand == (
        Expand("parentcustomerid_account", "parentcustomerid", "account", columns=("name",)),
    )
    opts = q({"$expand": " primarycontactid ( $select = fullname ; ) "})
    assert opts.expand == (
        Expand("primarycontactid", "primarycontactid", "contact", columns=("fullname",)),
    )
    with pytest.raises(QueryError, match="case-sensitive: account has 'primarycontactid'"):
        q({"$expand": "PrimaryContactId"})


def test_expand_collection_valued_with_every_option() -> None:
    text = (
        "contact_parentcustomerid($select=fullname,emailaddress1;"
        "$filter=contains(fullname,'a;b,c(d') and statecode eq 0;"
        "$orderby=fullname desc,createdon;$top=5),primarycontactid($select=fullname)"
    )
    assert q({"$expand": text}).expand == (
        Expand(
            "contact_parentcustomerid",
            "parentcustomerid",
            "contact",
            columns=("fullname", "emailaddress1"),
            filter=And((C("fullname", Op.LIKE, "%a;b,c(d%"), C("statecode", Op.EQ, 0))),
            orders=(Order("fullname", descending=True), Order("createdon")),
            top=5,
            collection=True,
        ),
        Expand("primarycontactid", "primarycontactid", "contact", columns=("fullname",)),
    )


def test_expand_nested_and_options_without_dollar() -> None:
    opts = q({"$expand": "primarycontactid(select=fullname;$expand=parentcustomerid_account)"})
    assert opts.expand == (
        Expand(
            "primarycontactid",
            "primarycontactid",
            "contact",
            columns=("fullname",),
            expand=(Expand("parentcustomerid_account", "parentcustomerid", "account"),),
        ),
    )
    aliases = q({"$expand": "contact_parentcustomerid($filter=fullname eq @n)", "@n": "'x'"})
    assert aliases.expand[0].filter == C("fullname", Op.EQ, "x")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "zzz",
            "table 'account' has no navigation property 'zzz'; single-valued ones are named after "
            "the lookup (primarycontactid, parentcustomerid_account), collection-valued ones "
            "after the referencing table and lookup (contact_parentcustomerid) at character 1 of "
            "$expand",
        ),
        ("name", "'name' is a string column, not a navigation property at character 1 of $expand"),
        (
            "*",
            "$expand=* is not supported; name the navigation properties at character 1 of $expand",
        ),
        (
            "primarycontactid/$ref",
            "'primarycontactid/$ref': expand one navigation property at a time at character 1 of "
            "$expand",
        ),
        (
            "primarycontactid,primarycontactid",
            "'primarycontactid' is expanded twice at character 18 of $expand",
        ),
        ("", "$expand is empty at character 1 of $expand"),
        ("primarycontactid(", "unclosed '(' at character 17 of $expand"),
        ("primarycontactid($select=fullname))", "unbalanced ')' at character 35 of $expand"),
        (
            "primarycontactid($select=fullname) x",
            "expected a navigation property, got 'primarycontactid($select=fullname) x' at "
            "character 1 of $expand",
        ),
        (
            "primarycontactid($filter=fullname eq 'x')",
            "$filter applies to collection-valued navigation properties; 'primarycontactid' is "
            "single-valued at character 18 of $expand",
        ),
        (
            "primarycontactid($top=1)",
            "$top applies to collection-valued navigation properties; 'primarycontactid' is "
            "single-valued at character 18 of $expand",
        ),
        (
            "primarycontactid($orderby=fullname)",
            "$orderby applies to collection-valued navigation properties; 'primarycontactid' is "
            "single-valued at character 18 of $expand",
        ),
        (
            "primarycontactid($count=true)",
            "$count is not supported inside $expand at character 18 of $expand",
        ),
        (
            "primarycontactid($select=fullname;$select=lastname)",
            "$select is given twice at character 35 of $expand",
        ),
        (
            "primarycontactid(fullname)",
            "expected $option=value, got 'fullname' at character 18 of $expand",
        ),
        (
            "primarycontactid($select=zzz)",
            "table 'contact' has no column 'zzz' at character 1 of $select of $expand "
            "primarycontactid",
        ),
        (
            "contact_parentcustomerid($filter=zzz eq 1)",
            "table 'contact' has no column 'zzz' at character 1 of $filter of $expand "
            "contact_parentcustomerid",
        ),
        (
            "contact_parentcustomerid($top=0)",
            "$top of $expand contact_parentcustomerid must be a whole number from 1 to 100000, "
            "got '0'",
        ),
        (
            "contact_parentcustomerid($orderby=fullname up)",
            "expected asc or desc, got 'up' at character 10 of $orderby of $expand "
            "contact_parentcustomerid",
        ),
        (
            "contact_parentcustomerid($filter=name eq 'it''s;x')",
            "table 'contact' has no column 'name' (did you mean 'lastname'?) at character 1 of "
            "$filter of $expand contact_parentcustomerid",
        ),
        ("primarycontactid($filter=x eq 'a", "unterminated string at character 31 of $expand"),
        (
            "primarycontactid($expand="
            + "parentcustomerid_contact($expand=" * 4
            + "parentcustomerid_contact"
            + ")" * 5,
            "$expand of $expand parentcustomerid_contact: $expand is nested more than 4 levels "
            "deep",
        ),
    ],
)
def test_expand_errors(value: str, message: str) -> None:
    assert qerr({"$expand": value}) == message


def test_expand_on_other_tables() -> None:
    assert qerr({"$expand": "parentcustomerid"}, "contact") == (
        "'parentcustomerid' can point at account, contact: name the target, "
        "parentcustomerid_account or parentcustomerid_contact at character 1 of $expand"
    )
    [members] = q(
        {"$expand": "teammembership_association($select=name;$orderby=name;$top=2)"},
        "systemuser",
    ).expand
    assert members == Expand(
        navigation="teammembership_association",
        lookup_column="teamid",
        target_table="team",
        columns=("name",),
        orders=(Order("name"),),
        top=2,
        collection=True,
        relationship="teammembership_association",
    )


# ---------------------------------------------------------------------------------------------
# Fuzz: nothing but QueryError, ever

VALID = [
    "(statecode eq 0 and startswith(name, 'Con')) and "
    'Microsoft.Dynamics.CRM.In(PropertyName=\'statecode\',PropertyValues=["0","1"])',
    "not (revenue gt 12.5m) or name eq 'O''Brien'",
    f"_primarycontactid_value eq {G1} and createdon ge 2024-01-01T00:00:00Z",
    "contact_parentcustomerid/any(c: c/lastname eq 'x' and c/birthdate lt 2000-01-01)",
    "Microsoft.Dynamics.CRM.LastXDays(PropertyName='createdon',PropertyValue=3)",
    "Microsoft.Dynamics.CRM.Between(PropertyName='numberofemployees',PropertyValues=['1','9'])",
    "primarycontactid/fullname eq null or contains(name,'50%') eq false",
    f"primarycontactid eq guid'{G1}' and creditonhold and address1_latitude lt -1e-3",
]
PIECES = [
    "name", "revenue", "statecode", "creditonhold", "createdon", "primarycontactid",
    "_primarycontactid_value", "contact_parentcustomerid", "c", "/", "any", "all", ":",
    "eq", "ne", "gt", "le", "and", "or", "not", "(", ")", ",", "[", "]", "=", "'x'", "''",
    '"0"', "0", "-1", "12.5m", "1e999", "true", "false", "null", str(G1), "guid'", "2024-01-01",
    "2024-01-01T00:00:00Z", "contains", "startswith", "Microsoft.Dynamics.CRM.In",
    "Microsoft.Dynamics.CRM.On", "Microsoft.Dynamics.CRM.LastXDays", "PropertyName",
    "PropertyValue", "PropertyValues", "@p1", "$it", "9999-12-31T23:59:59-05:00", "\x00",
]  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_query_errors(call: object, *args: object, **kw: object) -> None:
    with contextlib.suppress(QueryError):
        call(*args, **kw)  # type: ignore[operator]


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_random_filters(text: str) -> None:
    _only_query_errors(f, text, aliases={"@p1": text})


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.sampled_from(["", " "]))
def test_fuzz_token_soup(pieces: list[str], sep: str) -> None:
    _only_query_errors(f, sep.join(pieces), aliases={"@p1": sep.join(reversed(pieces))})


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace"]),
            st.integers(min_value=0, max_value=200),
            st.text(alphabet=st.sampled_from("()[],'\":/=@ -.09azAZ_%\\é\x00"), max_size=3),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_fuzz_mutated_valid_filters(base: str, edits: list[tuple[str, int, str]]) -> None:
    text = base
    for action, at, chunk in edits:
        at = at % (len(text) + 1)
        if action == "insert":
            text = text[:at] + chunk + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + len(chunk) + 1 :]
        else:
            text = text[:at] + chunk + text[at + len(chunk) :]
    _only_query_errors(f, text)
    _only_query_errors(f, text, "contact")


OPTION_NAMES = ["$filter", "$select", "$orderby", "$top", "$count", "$expand", "$skiptoken", "@p1"]


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(OPTION_NAMES),
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(VALID),
            st.lists(st.sampled_from(PIECES)).map("".join),
        ),
        max_size=4,
    ),
    st.sampled_from(["account", "contact", "workorder", "systemuser"]),
)
def test_fuzz_query_options(params: dict[str, str], table: str) -> None:
    _only_query_errors(q, params, table)


@FUZZ
@given(
    st.recursive(
        st.sampled_from(
            ["primarycontactid", "contact_parentcustomerid", "parentcustomerid_account", "x"]
        ),
        lambda inner: st.tuples(
            st.sampled_from(
                ["primarycontactid", "contact_parentcustomerid", "parentcustomerid_account"]
            ),
            st.lists(
                st.one_of(
                    st.sampled_from(
                        [
                            "$select=fullname",
                            "$top=2",
                            "$filter=fullname eq 'a;b'",
                            "$orderby=fullname",
                            "$select=",
                        ]
                    ),
                    inner.map(lambda s: f"$expand={s}"),
                ),
                max_size=3,
            ),
        ).map(lambda t: f"{t[0]}({';'.join(t[1])})"),
        max_leaves=8,
    )
)
def test_fuzz_expand(text: str) -> None:
    _only_query_errors(q, {"$expand": text})
    _only_query_errors(q, {"$expand": text}, "contact")
