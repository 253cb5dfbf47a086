"""FetchXML → query AST: Microsoft's documented queries, every error with its place, XML
attacks, and a fuzz test that nothing but ``QueryError`` ever comes out.

The corpus is transcribed from the FetchXML pages of the Power Apps documentation ("Filter
rows", "Join tables", "link-entity element", "Order rows", "Page results", "Count rows",
"condition operator values", "Use a left outer join ... not in"); tables the built-in schema
lacks are swapped for account, contact, workorder, systemuser, team and teammembership.
The queries are in ``CORPUS`` (and ``REFUSED``, the ones fieldsync refuses), which
``test_query_corpus.py`` also runs on a seeded database.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.errors import QueryError
from fieldsync.query.ast import (
    And,
    ColumnCompare,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Op,
    Or,
    Order,
    Query,
)
from fieldsync.query.fetchxml import MAX_BYTES, FetchXmlError, parse_fetchxml
from fieldsync.schema.builtin import builtin_relationships, builtin_tables
from fieldsync.schema.model import Schema

SCHEMA = Schema(builtin_tables(), builtin_relationships())
GUID = "E062B974-7F8D-DC11-9048-0003FF27AC3B"


def parse(text: str) -> Query:
    return parse_fetchxml(text, SCHEMA)


def entity(body: str, table: str = "account", fetch: str = "") -> str:
    return f"<fetch{fetch}><entity name='{table}'>{body}</entity></fetch>"


def where(condition: str, table: str = "account") -> Query:
    return parse(entity(f"<filter>{condition}</filter>", table))


# ------------------------------------------------------------------------------------------
# (a) The documentation's queries

# name -> FetchXML, as the documentation writes it; tests/test_query_corpus.py runs them all.
CORPUS: dict[str, str] = {
    "condition_eq": """
<fetch>
  <entity name='account'>
    <attribute name='name' />
    <filter type='and'>
      <condition attribute='address1_city'
        operator='eq'
        value='Redmond' />
    </filter>
  </entity>
</fetch>""",
    "filter_or_three_conditions": """
<fetch>
  <entity name='account'>
    <attribute name='name' />
    <attribute name='address1_city' />
    <filter type='or'>
      <condition attribute='address1_city' operator='eq' value='Redmond' />
      <condition attribute='address1_city' operator='eq' value='Seattle' />
      <condition attribute='address1_city' operator='eq' value='Bellevue' />
    </filter>
  </entity>
</fetch>""",
    "in_with_value_elements": """
<fetch>
  <entity name='account'>
    <attribute name='name' />
    <attribute name='address1_city' />
    <filter type='and'>
      <condition attribute='address1_city'
        operator='in'>
        <value>Redmond</value>
        <value>Seattle</value>
        <value>Bellevue</value>
      </condition>
    </filter>
  </entity>
</fetch>""",
    "no_parameter_eq_userid": entity(
        "<filter><condition attribute='ownerid' operator='eq-userid' /></filter>"
    ),
    "single_parameter_statecode": entity(
        "<filter><condition attribute='statecode' operator='eq' value='0' /></filter>"
    ),
    "between_numberofemployees": entity("""<filter>
<condition attribute="numberofemployees" operator="between">
  <value>6</value>
  <value>20</value>
</condition></filter>"""),
    "not_between": entity(
        "<filter><condition attribute='numberofemployees' operator='not-between'>"
        "<value>6</value><value>20</value></condition></filter>"
    ),
    "valueof_same_row": """
<fetch>
  <entity name='contact' >
    <attribute name='firstname' />
    <filter>
      <condition attribute='firstname' operator='eq' valueof='lastname'/>
    </filter>
  </entity>
</fetch>""",
    "union_hint_entityname_conditions": """
<fetch >
      <entity name="workorder">
            <attribute name="workorderid" />
            <attribute name="name" />
            <filter type="and">
                  <condition attribute="name" operator="like" value="Case%" />
                  <condition attribute="statuscode" operator="eq" value="1" />
                  <filter type="or" hint="union">
                        <condition attribute="telephone1" operator="eq"
                              value="425-425-4021" entityname="ac" />
                        <condition attribute="telephone1" operator="eq"
                              value="425-425-4021" entityname="co" />
                  </filter>
            </filter>
            <link-entity name="account" from="accountid" to="serviceaccountid"
                  link-type="outer" alias="ac" />
            <link-entity name="contact" from="contactid" to="primarycontactid"
                  link-type="outer" alias="co" />
      </entity>
</fetch>""",
    "many_to_one_join": """
<fetch top='5'>
  <entity name='account'>
    <attribute name='name' />
    <link-entity name='contact'
      from='contactid'
      to='primarycontactid'
      link-type='inner'
      alias='contact'>
      <attribute name='fullname' />
    </link-entity>
  </entity>
</fetch>""",
    "one_to_many_join": """
<fetch>
  <entity name='contact'>
    <attribute name='fullname' />
    <link-entity name='account'
     from='primarycontactid'
     to='contactid'
     alias='account'>
      <attribute name='name' />
    </link-entity>
  </entity>
</fetch>""",
    "many_to_many_through_intersect": """
<fetch>
  <entity name='systemuser'>
    <attribute name='fullname' />
    <link-entity name='teammembership'
      from='systemuserid'
      to='systemuserid'
      intersect='true' >
      <link-entity name='team'
        from='teamid'
        to='teamid'
        link-type='inner'
        alias='team'>
        <attribute name='name' />
      </link-entity>
    </link-entity>
  </entity>
</fetch>""",
    "link_type_any": """
<fetch>
  <entity name='contact'>
    <attribute name='fullname' />
    <filter type='and'>
      <link-entity name='account'
       from='primarycontactid'
       to='contactid'
       link-type='any'>
      </link-entity>
    </filter>
  </entity>
</fetch>""",
    "link_type_any_in_or_filter": """
<fetch>
  <entity name='contact'>
    <attribute name='fullname' />
    <filter type='or'>
      <link-entity name='account'
       from='primarycontactid'
       to='contactid'
       link-type='any'>
      </link-entity>
      <condition attribute='statecode' operator='eq' value='1' />
    </filter>
  </entity>
</fetch>""",
    "link_type_not_all": """
<fetch>
  <entity name='contact'>
    <attribute name='fullname' />
    <filter type='and'>
      <link-entity name='account'
       from='primarycontactid'
       to='contactid'
       link-type='not all'>
        <filter type='and'>
          <condition attribute='name' operator='eq' value='Contoso' />
        </filter>
      </link-entity>
    </filter>
  </entity>
</fetch>""",
    **{
        f"filter_link_type_{kind.replace(' ', '_')}": entity(
            "<filter>"
            f"<link-entity name='workorder' from='serviceaccountid' to='accountid' "
            f"link-type='{kind}'>"
            "<filter><condition attribute='priority' operator='eq' value='4'/></filter>"
            "</link-entity></filter>"
        )
        for kind in ("any", "not any", "all", "not all")
    },
    **{
        f"link_type_{kind}": entity(
            "<filter><condition attribute='name' operator='like' value='A%'/></filter>"
            f"<link-entity name='workorder' from='serviceaccountid' to='accountid' "
            f"link-type='{kind}'>"
            "<filter><condition attribute='signedoff' operator='eq' value='0'/></filter>"
            "</link-entity>"
        )
        for kind in ("exists", "in")
    },
    "order_rows": """
<fetch>
  <entity name='account'>
    <attribute name='name' />
    <attribute name='accountnumber' />
    <attribute name='createdon' />
    <order attribute='createdon' />
    <order attribute='name' />
    <order attribute='accountnumber' />
  </entity>
</fetch>""",
    "order_descending": """
<fetch>
  <entity name='account'>
    <attribute name='name' />
    <attribute name='createdon' />
    <order attribute='createdon' descending='true' />
  </entity>
</fetch>""",
    "link_entity_orders": """
<fetch>
  <entity name='account'>
    <attribute name='name' />
    <attribute name='accountnumber' />
    <attribute name='createdon' />
    <link-entity name='account'
      from='accountid'
      to='parentaccountid'
      link-type='inner'
      alias='parentaccount'>
      <attribute name='name'
        alias='parentaccount' />
        <!-- The link-entity parentaccount name -->
      <order attribute='name' />
    </link-entity>
    <!-- The entity account name -->
    <order attribute='name' />
  </entity>
</fetch>""",
    "link_entity_orders_entityname": """
<fetch>
  <entity name='account'>
    <attribute name='name' />
    <attribute name='accountnumber' />
    <attribute name='createdon' />
    <link-entity name='account'
      from='accountid'
      to='parentaccountid'
      link-type='inner'
      alias='parentaccount'>
      <attribute name='name'
        alias='parentaccount' />
    </link-entity>
    <order entityname='parentaccount'
      attribute='name' />
    <order attribute='name' />
  </entity>
</fetch>""",
    "simple_paging": """
<fetch count='3' page='2'>
  <entity name='account'>
    <attribute name='name' />
    <order attribute='name' />
    <order attribute='accountid' />
  </entity>
</fetch>""",
    "paging_cookie": """
<fetch count='3' page='2' paging-cookie='&lt;cookie page="1"&gt;&lt;fullname last="Susanna Stubberod (sample)" first="Yvonne McKay (sample)" /&gt;&lt;contactid last="{70BF4D48-34CB-ED11-B596-0022481D68CD}" first="{49B0BE2E-D01C-ED11-B83E-000D3A572421}" /&gt;&lt;/cookie&gt;'>
  <entity name='contact'>
    <attribute name='fullname' />
    <attribute name='jobtitle' />
    <order descending='true' attribute='fullname' />
  </entity>
</fetch>""",  # noqa: E501 - the cookie is one attribute
    "legacy_paging_cookie_all_attributes": f"""
<fetch mapping='logical' paging-cookie='&lt;cookie page="1"&gt;&lt;accountid last="{{{GUID}}}" first="{{60B934EF-798D-DC11-9048-0003FF27AC3B}}"/&gt;&lt;/cookie&gt;' page='2' count='2'>
 <entity name='account'>
  <all-attributes/>
 </entity>
</fetch>""",  # noqa: E501
    "count_rows": entity("<attribute name='name'/>", fetch=" returntotalrecordcount='true'"),
    "fetch_element_without_attributes": "<fetch>\n  <entity name='account' />\n</fetch>",
    "left_outer_join_not_in": """
<fetch mapping='logical'>
 <entity name='account'>
  <attribute name='name'/>
  <link-entity name='contact'
               from='parentcustomerid'
               to='accountid'
               link-type='outer'/>
  <filter type='and'>
   <condition entityname='contact'
              attribute='contactid'
              operator='null'/>
  </filter>
 </entity>
</fetch>""",
    "left_outer_join_with_alias": """
<fetch version="1.0" output-format="xml-platform" mapping="logical" distinct="true">
  <entity name="account">
    <attribute name="name" />
    <link-entity name="workorder" from="serviceaccountid" to="accountid" alias="ab"
        link-type="outer">
      <attribute name="serviceaccountid" />
    </link-entity>
    <filter type="and">
      <condition entityname="ab" attribute="serviceaccountid" operator="null" />
    </filter>
  </entity>
</fetch>""",
}

# Documented queries that fieldsync refuses (with a QueryError saying why).
REFUSED: dict[str, str] = {
    "cross_table_valueof": """<fetch>
  <entity name='contact'>
    <attribute name='contactid' />
    <attribute name='fullname' />
    <filter type='and'>
      <condition attribute='fullname' operator='eq' valueof='acct.name' />
    </filter>
    <link-entity name='account' from='accountid' to='parentcustomerid' link-type='outer'
        alias='acct'>
      <attribute name='name' />
    </link-entity>
  </entity>
</fetch>""",
    "aggregate": (
        "<fetch aggregate='true'><entity name='account'>"
        "<attribute name='revenue' alias='total' aggregate='sum'/></entity></fetch>"
    ),
}


def test_doc_condition_eq() -> None:
    q = parse(CORPUS["condition_eq"])
    assert q == Query(
        table="account",
        columns=("name",),
        filter=Condition("address1_city", Op.EQ, "Redmond"),
    )


def test_doc_filter_or_three_conditions() -> None:
    q = parse(CORPUS["filter_or_three_conditions"])
    assert q.columns == ("name", "address1_city")
    assert q.filter == Or(
        tuple(Condition("address1_city", Op.EQ, c) for c in ("Redmond", "Seattle", "Bellevue"))
    )


def test_doc_in_with_value_elements() -> None:
    q = parse(CORPUS["in_with_value_elements"])
    assert q.filter == Condition("address1_city", Op.IN, ("Redmond", "Seattle", "Bellevue"))


def test_doc_no_parameter_eq_userid() -> None:
    assert parse(CORPUS["no_parameter_eq_userid"]).filter == Condition("ownerid", Op.EQ_USERID)


def test_doc_single_parameter_statecode() -> None:
    q = parse(CORPUS["single_parameter_statecode"])
    assert q.filter == Condition("statecode", Op.EQ, 0)


def test_doc_between_numberofemployees() -> None:
    q = parse(CORPUS["between_numberofemployees"])
    assert q.filter == And(
        (
            Condition("numberofemployees", Op.GE, 6),
            Condition("numberofemployees", Op.LE, 20),
        )
    )


def test_doc_not_between() -> None:
    q = parse(CORPUS["not_between"])
    assert q.filter == Or(
        (
            Condition("numberofemployees", Op.LT, 6),
            Condition("numberofemployees", Op.GT, 20),
        )
    )


def test_doc_valueof_same_row() -> None:
    q = parse(CORPUS["valueof_same_row"])
    assert q.table == "contact"
    assert q.filter == ColumnCompare("firstname", Op.EQ, "lastname")


def test_doc_cross_table_valueof_is_not_supported() -> None:
    with pytest.raises(FetchXmlError, match="another table is not supported") as info:
        parse(REFUSED["cross_table_valueof"])
    assert (info.value.line, info.value.column) == (6, 7)


def test_doc_union_hint_with_entityname_conditions() -> None:
    # The doc's incident / account / contact query, on workorder.
    q = parse(CORPUS["union_hint_entityname_conditions"])
    assert q.filter == And(
        (
            Condition("name", Op.LIKE, "Case%"),
            Condition("statuscode", Op.EQ, 1),
            Or(
                (
                    Condition("telephone1", Op.EQ, "425-425-4021", entity="ac"),
                    Condition("telephone1", Op.EQ, "425-425-4021", entity="co"),
                )
            ),
        )
    )
    assert q.links == (
        Link("account", "accountid", "serviceaccountid", "ac", LinkType.OUTER),
        Link("contact", "contactid", "primarycontactid", "co", LinkType.OUTER),
    )


def test_doc_many_to_one_join() -> None:
    q = parse(CORPUS["many_to_one_join"])
    assert q == Query(
        table="account",
        columns=("name",),
        links=(Link("contact", "contactid", "primarycontactid", "contact", columns=("fullname",)),),
        top=5,
    )


def test_doc_one_to_many_join_defaults_to_inner() -> None:
    q = parse(CORPUS["one_to_many_join"])
    (link,) = q.links
    assert link == Link("account", "primarycontactid", "contactid", "account", columns=("name",))
    assert link.type is LinkType.INNER


def test_doc_many_to_many_through_intersect() -> None:
    q = parse(CORPUS["many_to_many_through_intersect"])
    (membership,) = q.links
    assert membership.table == "teammembership"
    assert membership.alias == "teammembership"  # no alias: the table name
    assert membership.columns == ()
    assert membership.links == (Link("team", "teamid", "teamid", "team", columns=("name",)),)


def test_doc_link_type_any() -> None:
    q = parse(CORPUS["link_type_any"])
    assert q.links == ()
    assert q.filter == LinkFilter(
        Link("account", "primarycontactid", "contactid", "account", LinkType.ANY)
    )


def test_doc_link_type_any_in_or_filter() -> None:
    q = parse(CORPUS["link_type_any_in_or_filter"])
    assert q.filter == Or(
        (
            LinkFilter(Link("account", "primarycontactid", "contactid", "account", LinkType.ANY)),
            Condition("statecode", Op.EQ, 1),
        )
    )


def test_doc_link_type_not_all() -> None:
    q = parse(CORPUS["link_type_not_all"])
    assert q.filter == LinkFilter(
        Link(
            "account",
            "primarycontactid",
            "contactid",
            "account",
            LinkType.NOT_ALL,
            filter=Condition("name", Op.EQ, "Contoso"),
        )
    )


@pytest.mark.parametrize("kind", ["any", "not any", "all", "not all"])
def test_filter_link_types(kind: str) -> None:
    q = parse(CORPUS[f"filter_link_type_{kind.replace(' ', '_')}"])
    assert isinstance(q.filter, LinkFilter)
    assert q.filter.link.type == LinkType(kind)
    assert q.filter.link.filter == Condition("priority", Op.EQ, 4)


@pytest.mark.parametrize("kind", ["exists", "in"])
def test_exists_and_in_become_any_filters(kind: str) -> None:
    q = parse(CORPUS[f"link_type_{kind}"])
    assert q.links == ()
    assert q.filter == And(
        (
            Condition("name", Op.LIKE, "A%"),
            LinkFilter(
                Link(
                    "workorder",
                    "serviceaccountid",
                    "accountid",
                    "workorder",
                    LinkType.ANY,
                    filter=Condition("signedoff", Op.EQ, False),
                )
            ),
        )
    )


def test_doc_order_rows() -> None:
    q = parse(CORPUS["order_rows"])
    assert q.orders == (Order("createdon"), Order("name"), Order("accountnumber"))


def test_doc_order_descending() -> None:
    q = parse(CORPUS["order_descending"])
    assert q.orders == (Order("createdon", descending=True),)


def test_doc_link_entity_orders() -> None:
    q = parse(CORPUS["link_entity_orders"])
    (link,) = q.links
    assert link.alias == "parentaccount"
    assert link.columns == ("name",)
    assert link.orders == (Order("name"),)
    assert q.orders == (Order("name"),)


def test_doc_link_entity_orders_first_with_entityname() -> None:
    q = parse(CORPUS["link_entity_orders_entityname"])
    assert q.orders == (Order("name", entity="parentaccount"), Order("name"))
    assert q.links[0].orders == ()


def test_doc_simple_paging() -> None:
    q = parse(CORPUS["simple_paging"])
    assert (q.page, q.page_size, q.top, q.paging_cookie) == (2, 3, None, None)
    assert q.orders == (Order("name"), Order("accountid"))


def test_doc_paging_cookie_is_kept_decoded() -> None:
    q = parse(CORPUS["paging_cookie"])
    assert q.paging_cookie is not None
    assert q.paging_cookie.startswith('<cookie page="1"><fullname last="Susanna Stubberod')
    assert q.paging_cookie.endswith("</cookie>")
    assert q.orders == (Order("fullname", descending=True),)


def test_doc_legacy_paging_cookie_with_all_attributes() -> None:
    q = parse(CORPUS["legacy_paging_cookie_all_attributes"])
    assert q.columns is None
    assert (q.page, q.page_size) == (2, 2)
    assert q.paging_cookie is not None
    assert GUID in q.paging_cookie


def test_doc_count_rows() -> None:
    q = parse(CORPUS["count_rows"])
    assert q.count is True


def test_doc_fetch_element_without_attributes() -> None:
    q = parse(CORPUS["fetch_element_without_attributes"])
    assert q == Query(table="account")


def test_doc_left_outer_join_not_in() -> None:
    # "Find all accounts that have no leads", on contacts whose company is the account.
    q = parse(CORPUS["left_outer_join_not_in"])
    assert q.links == (Link("contact", "parentcustomerid", "accountid", "contact", LinkType.OUTER),)
    assert q.filter == Condition("contactid", Op.NULL, entity="contact")


def test_doc_left_outer_join_with_alias() -> None:
    # "Find all leads that have no tasks, using an alias", on accounts without work orders.
    q = parse(CORPUS["left_outer_join_with_alias"])
    assert q.distinct is True
    assert q.links[0].columns == ("serviceaccountid",)
    assert q.filter == Condition("serviceaccountid", Op.NULL, entity="ab")


def test_doc_aggregate_is_refused() -> None:
    with pytest.raises(QueryError, match=r"aggregation .* is not supported"):
        parse(REFUSED["aggregate"])
    with pytest.raises(QueryError, match="aggregation"):
        parse(entity("<attribute name='revenue' alias='total' aggregate='sum'/>"))
    assert parse(entity("", fetch=" aggregate='false'")).table == "account"


@pytest.mark.parametrize(
    "operator",
    ["in-fiscal-year", "next-x-fiscal-years", "last-fiscal-period", "under", "last-week"],
)
def test_doc_fiscal_and_hierarchy_operators_are_not_supported(operator: str) -> None:
    with pytest.raises(QueryError, match=f"operator '{operator}' is not supported"):
        where(f"<condition attribute='createdon' operator='{operator}' value='3'/>")


# ------------------------------------------------------------------------------------------
# Operators and values


def test_values_are_typed_per_column() -> None:
    ref = uuid.UUID(GUID)
    cases = [
        ("<condition attribute='revenue' operator='ge' value='1000.505'/>", Decimal("1000.50")),
        ("<condition attribute='address1_latitude' operator='lt' value='47.6'/>", 47.6),
        ("<condition attribute='creditonhold' operator='eq' value='true'/>", True),
        ("<condition attribute='creditonhold' operator='ne' value='0'/>", False),
        ("<condition attribute='industrycode' operator='eq' value=' 3 '/>", 3),
        (f"<condition attribute='accountid' operator='eq' value='{{{GUID}}}'/>", ref),
        (f"<condition attribute='ownerid' operator='eq' value='{GUID.lower()}'/>", ref),
        (f"<condition attribute='parentaccountid' operator='ne' value='{GUID}'/>", ref),
        (
            "<condition attribute='createdon' operator='gt' value='2024-01-02T03:04:05Z'/>",
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        ),
        ("<condition attribute='name' operator='eq' value=' padded '/>", " padded "),
    ]
    for xml, expected in cases:
        cond = where(xml).filter
        assert isinstance(cond, Condition), xml
        assert cond.value == expected, xml
        assert type(cond.value) is type(expected), xml


def test_more_value_types() -> None:
    q = where(
        "<condition attribute='ticketnumber' operator='in'>"
        "<value>1</value><value>2</value><value>1</value></condition>"
        "<condition attribute='duedate' operator='le' value='2024-02-29'/>"
        "<condition attribute='laborhours' operator='gt' value='1.5'/>",
        "workorder",
    )
    assert q.filter == And(
        (
            Condition("ticketnumber", Op.IN, (1, 2)),
            Condition("duedate", Op.LE, dt.date(2024, 2, 29)),
            Condition("laborhours", Op.GT, Decimal("1.50")),
        )
    )


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("like", "%con_oso%"),
        ("not-like", "[a-c]%"),
        ("begins-with", "Con"),
        ("not-begin-with", "Con"),
        ("ends-with", "oso"),
        ("not-end-with", "oso"),
    ],
)
def test_like_family_keeps_patterns(operator: str, value: str) -> None:
    q = where(f"<condition attribute='name' operator='{operator}' value='{value}'/>")
    assert q.filter == Condition("name", Op(operator), value)


def test_multichoice_contain_values() -> None:
    q = where(
        "<condition attribute='incidenttypes' operator='contain-values'>"
        "<value>3</value><value>1</value></condition>"
        "<condition attribute='incidenttypes' operator='not-contain-values' value='5'/>",
        "workorder",
    )
    assert q.filter == And(
        (
            Condition("incidenttypes", Op.CONTAIN_VALUES, (1, 3)),
            Condition("incidenttypes", Op.NOT_CONTAIN_VALUES, (5,)),
        )
    )


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("today", None, None),
        ("yesterday", None, None),
        ("tomorrow", None, None),
        ("this-week", None, None),
        ("this-month", None, None),
        ("this-year", None, None),
        ("last-x-days", "7", 7),
        ("next-x-days", "30", 30),
        ("last-x-hours", "12", 12),
        ("next-x-hours", "1", 1),
        ("older-x-days", "90", 90),
        ("on", "2024-03-01", dt.date(2024, 3, 1)),
        ("on-or-before", "2024-03-01", dt.date(2024, 3, 1)),
        ("on-or-after", "2024-03-01", dt.date(2024, 3, 1)),
    ],
)
def test_date_operators(operator: str, value: str | None, expected: object) -> None:
    attr = "" if value is None else f" value='{value}'"
    q = where(f"<condition attribute='scheduledstart' operator='{operator}'{attr}/>", "workorder")
    assert q.filter == Condition("scheduledstart", Op(operator), expected)


@pytest.mark.parametrize(
    ("name", "op", "value"),
    [
        ("neq", Op.NE, 5),
        ("olderthan-x-days", Op.OLDER_X_DAYS, 5),
        ("last-seven-days", Op.LAST_X_DAYS, 7),
        ("next-seven-days", Op.NEXT_X_DAYS, 7),
    ],
)
def test_operator_aliases(name: str, op: Op, value: int) -> None:
    column = "numberofemployees" if op is Op.NE else "createdon"
    attr = "" if name.endswith("seven-days") else " value='5'"
    q = where(f"<condition attribute='{column}' operator='{name}'{attr}/>")
    assert q.filter == Condition(column, op, value)


@pytest.mark.parametrize(
    ("table", "column", "operator"),
    [
        ("account", "ownerid", "eq-userid"),
        ("account", "ownerid", "ne-userid"),
        ("account", "ownerid", "eq-userteams"),
        ("account", "ownerid", "eq-useroruserteams"),
        ("account", "ownerid", "eq-useroruserhierarchy"),
        ("account", "ownerid", "eq-useroruserhierarchyandteams"),
        ("account", "createdby", "eq-userid"),
        ("account", "owningbusinessunit", "eq-businessid"),
        ("account", "owningbusinessunit", "ne-businessid"),
        ("systemuser", "systemuserid", "eq-userid"),
        ("businessunit", "businessunitid", "eq-businessid"),
        ("team", "teamid", "eq-userteams"),
        ("systemuser", "uilanguageid", "eq-userlanguage"),
        ("principalobjectaccess", "principalid", "eq-useroruserteams"),
    ],
)
def test_user_operators(table: str, column: str, operator: str) -> None:
    q = where(f"<condition attribute='{column}' operator='{operator}'/>", table)
    assert q.filter == Condition(column, Op(operator))


def test_nested_filters_any_depth() -> None:
    inner = "<condition attribute='name' operator='not-null'/>"
    for _ in range(20):
        inner = f"<filter type='or'><filter type='and'>{inner}</filter></filter>"
    assert where(inner).filter == Condition("name", Op.NOT_NULL)
    q = where(
        "<filter type='or'><condition attribute='name' operator='null'/>"
        "<filter><condition attribute='revenue' operator='gt' value='1'/>"
        "<condition attribute='revenue' operator='lt' value='9'/></filter></filter>"
        "<filter/>"
    )
    assert isinstance(q.filter, Or)
    assert isinstance(q.filter.items[1], And)


def test_empty_filters_give_no_node() -> None:
    assert parse(entity("<filter/><filter type='or'><filter/></filter>")).filter is None


def test_default_aliases_stay_unique() -> None:
    q = parse(
        entity(
            "<link-entity name='account' from='accountid' to='parentaccountid' link-type='outer'>"
            "<link-entity name='account' from='accountid' to='parentaccountid' link-type='outer'/>"
            "</link-entity>"
            "<link-entity name='contact' from='contactid' to='primarycontactid'/>"
            "<link-entity name='contact' from='parentcustomerid' to='accountid' alias='contact1'/>"
            "<filter><condition entityname='account2' attribute='name' operator='null'/></filter>"
        )
    )
    first, contact, explicit = q.links
    assert first.alias == "account1"  # "account" is the query's own table
    assert first.links[0].alias == "account2"
    assert contact.alias == "contact"
    assert explicit.alias == "contact1"
    assert q.filter == Condition("name", Op.NULL, entity="account2")


def test_semi_join_nesting() -> None:
    q = parse(
        entity(
            "<filter><link-entity name='contact' from='parentcustomerid' to='accountid' "
            "link-type='not any' alias='c'>"
            "<link-entity name='systemuser' from='systemuserid' to='ownerid' alias='u'/>"
            "<filter><condition attribute='isdisabled' operator='eq' value='1' entityname='u'/>"
            "<condition attribute='lastname' operator='eq' value='X' entityname='c'/>"
            "<link-entity name='workorder' from='primarycontactid' to='contactid' "
            "link-type='any'/>"
            "</filter></link-entity></filter>"
        )
    )
    assert isinstance(q.filter, LinkFilter)
    link = q.filter.link
    assert link.type is LinkType.NOT_ANY
    assert link.links == (Link("systemuser", "systemuserid", "ownerid", "u"),)
    assert link.filter == And(
        (
            Condition("isdisabled", Op.EQ, True, entity="u"),
            Condition("lastname", Op.EQ, "X"),  # its own alias: the link's own table
            LinkFilter(
                Link("workorder", "primarycontactid", "contactid", "workorder", LinkType.ANY)
            ),
        )
    )


def test_outer_link_filter_and_all_attributes() -> None:
    q = parse(
        entity(
            "<link-entity name='contact' from='contactid' to='primarycontactid' "
            "link-type='outer' alias='pc'><all-attributes/>"
            "<filter><condition attribute='donotphone' operator='eq' value='false'/></filter>"
            "</link-entity>"
        )
    )
    (link,) = q.links
    assert link.columns is None
    assert link.filter == Condition("donotphone", Op.EQ, False)


def test_duplicate_attributes_collapse() -> None:
    q = parse(
        entity("<attribute name='name'/><attribute name='address1_city'/><attribute name='name'/>")
    )
    assert q.columns == ("name", "address1_city")


# ------------------------------------------------------------------------------------------
# (b) Errors: what and where


def err(text: str) -> FetchXmlError:
    with pytest.raises(FetchXmlError) as info:
        parse(text)
    return info.value


def cond(attrs: str, inner: str = "", table: str = "account") -> str:
    """A fetch whose one condition has ``attrs`` (and ``inner`` children)."""
    element = f"<condition {attrs}>{inner}</condition>" if inner else f"<condition {attrs}/>"
    return entity(f"<filter>{element}</filter>", table)


def link(attrs: str, body: str = "", where: str = "") -> str:
    """A fetch on account with one link-entity (inside a filter when ``where`` is 'filter')."""
    element = f"<link-entity {attrs}>{body}</link-entity>"
    return entity(f"<filter>{element}</filter>" if where == "filter" else element)


CONTACT = "name='contact' from='contactid' to='primarycontactid'"
E = pytest.param
# (fetchxml, what the message says, the text the error points at: its first occurrence)
ERRORS = [
    E("<query/>", "root element must be <fetch>", "<query", id="root"),
    E("<fetch bogus='1'><entity name='account'/></fetch>", "no attribute 'bogus'", "<fetch"),
    E("<fetch>\n</fetch>", "needs one <entity>", "<fetch", id="no entity"),
    E(
        "<fetch><entity name='account'/>\n  <entity name='contact'/></fetch>",
        "exactly one <entity>",
        "<entity name='contact'",
        id="two entities",
    ),
    E("<fetch>\n <entity name='nope'/></fetch>", "table 'nope' does not exist", "<entity"),
    E("<fetch><entity/></fetch>", "<entity> is missing its 'name' attribute", "<entity"),
    E(entity("", fetch=" top='5001'"), "top must be a whole number from 1 to 5000", "<fetch"),
    E(entity("", fetch=" top='0'"), "top must be a whole number from 1 to 5000", "<fetch"),
    E(entity("", fetch=" top='ten'"), "not 'ten'", "<fetch", id="top text"),
    E(entity("", fetch=" count='9999'"), "count must be a whole number", "<fetch"),
    E(entity("", fetch=" page='0'"), "page must be a whole number", "<fetch"),
    E(entity("", fetch=" top='5' page='1'"), "top cannot be used with paging", "<fetch"),
    E(entity("", fetch=" top='5' paging-cookie=''"), "top cannot be used with paging", "<fetch"),
    E(
        entity("", fetch=" top='5' returntotalrecordcount='true'"),
        "top cannot be used with returntotalrecordcount",
        "<fetch",
    ),
    E(entity("", fetch=" distinct='yes'"), "distinct must be true or false", "<fetch"),
    E(entity("", fetch=" mapping='physical'"), "mapping must be 'logical'", "<fetch"),
    E(entity("", fetch=" output-format='json'"), "output-format 'json' is not", "<fetch"),
    E(entity("", fetch=" aggregate='true'"), "aggregation", "<fetch", id="aggregate"),
    E(entity("", fetch=" datasource='retained'"), "datasource", "<fetch", id="retained"),
    E(entity("\n<select/>"), "<select> is not allowed inside <entity>", "<select"),
    E(entity("\n  hello"), "<entity> cannot contain text", "hello", id="text in entity"),
    E("<fetch> x <entity name='account'/></fetch>", "<fetch> cannot contain text", "x"),
    E(entity("\n  <attribute name='nope'/>"), "table 'account' has no column 'nope'", "<attr"),
    E(entity("<attribute name='name' x='1'/>"), "<attribute> has no attribute 'x'", "<attr"),
    E(entity("<attribute name='name' groupby='true'/>"), "aggregation", "<attr", id="groupby"),
    E(entity("<attribute name='name' alias='a-b'/>"), "alias 'a-b' is not valid", "<attr"),
    E(entity("<attribute name='name'><x/></attribute>"), "<x> is not allowed", "<x"),
    E(entity("<all-attributes x='1'/>"), "<all-attributes> has no attribute 'x'", "<all"),
    E(entity("<order alias='n'/>"), "ordering by an alias", "<order", id="order alias"),
    E(entity("<order attribute='name' alias='n'/>"), "attribute or alias, not both", "<order"),
    E(entity("<order attribute='x'/>"), "table 'account' has no column 'x'", "<order"),
    E(entity("<order attribute='name' descending='desc'/>"), "descending must be", "<order"),
    E(
        entity("<order attribute='incidenttypes'/>", "workorder"),
        "cannot order by workorder.incidenttypes (type multichoice)",
        "<order",
    ),
    E(entity("<order entityname='zz' attribute='name'/>"), "entityname 'zz' is not", "<order"),
    E(entity("<filter type='xor'/>"), "filter type must be 'and' or 'or'", "<filter"),
    E(entity("<filter hint='loop'/>"), "filter hint 'loop' is not known", "<filter"),
    E(
        entity("<filter><attribute name='name'/></filter>"),
        "<attribute> is not allowed inside <filter>",
        "<attribute",
    ),
    E(cond("attribute='name'"), "<condition> is missing its 'operator' attribute", "<condition"),
    E(cond("operator='null'"), "<condition> is missing its 'attribute' attribute", "<condition"),
    E(cond("attribute='name' operator='null' aggregate='count'"), "aggregation", "<condition"),
    E(cond("attribute='name' operator='null' bogus='1'"), "has no attribute 'bogus'", "<cond"),
    E(
        cond("attribute='name' operator='equals' value='x'"),
        "'equals' is not a FetchXML condition operator",
        "<condition",
    ),
    E(cond("attribute='x' operator='null'"), "table 'account' has no column 'x'", "<condition"),
    E(
        entity(
            "<filter>\n <condition attribute='numberofemployees' operator='like' value='1'/>"
            "</filter>"
        ),
        "operator 'like' cannot be used on account.numberofemployees (type integer)",
        "<condition",
        id="like on integer",
    ),
    E(
        cond("attribute='name' operator='today'"),
        "operator 'today' cannot be used on account.name (type string)",
        "<condition",
        id="date operator on string",
    ),
    E(
        cond(f"attribute='primarycontactid' operator='gt' value='{GUID}'"),
        "operator 'gt' cannot be used on account.primarycontactid (type lookup)",
        "<condition",
        id="gt on lookup",
    ),
    E(
        cond("attribute='creditonhold' operator='gt' value='1'"),
        "operator 'gt' cannot be used on account.creditonhold (type boolean)",
        "<condition",
        id="gt on boolean",
    ),
    E(
        cond("attribute='birthdate' operator='last-x-hours' value='2'", table="contact"),
        "operator 'last-x-hours' cannot be used on contact.birthdate (type date)",
        "<condition",
        id="hours on a date-only column",
    ),
    E(
        cond("attribute='name' operator='between'", "<value>a</value><value>b</value>"),
        "operator 'between' cannot be used on account.name (type string)",
        "<condition",
    ),
    E(
        cond("attribute='industrycode' operator='begins-with' value='1'"),
        "cannot be used on account.industrycode (type choice)",
        "<condition",
    ),
    E(
        cond("attribute='incidenttypes' operator='eq' value='1'", table="workorder"),
        "cannot be used on workorder.incidenttypes (type multichoice)",
        "<condition",
    ),
    E(
        cond("attribute='sitephoto' operator='eq' value='1'", table="workorder"),
        "cannot be used on workorder.sitephoto (type image)",
        "<condition",
    ),
    E(cond("attribute='name' operator='eq-userid'"), "cannot be used on account.name", "<cond"),
    E(
        cond("attribute='createdby' operator='eq-userteams'"),
        "operator 'eq-userteams' needs a column that points at team; "
        "account.createdby points at systemuser",
        "<condition",
    ),
    E(
        cond("attribute='ownerid' operator='eq-businessid'"),
        "needs a column that points at businessunit; account.ownerid points at systemuser, team",
        "<condition",
    ),
    E(
        cond("attribute='accountid' operator='eq-userid'"),
        "needs a column that points at systemuser; account.accountid points at account",
        "<condition",
    ),
    E(
        cond("attribute='revenue' operator='eq-userlanguage'"),
        "cannot be used on account.revenue (type money)",
        "<condition",
    ),
    E(cond("attribute='name' operator='null' value='x'"), "'null' takes no value", "<cond"),
    E(cond("attribute='ownerid' operator='eq-userid' value='x'"), "takes no value", "<cond"),
    E(cond("attribute='createdon' operator='today'", "<value/>"), "takes no value", "<cond"),
    E(cond("attribute='name' operator='eq'"), "operator 'eq' needs a value", "<condition"),
    E(
        cond("attribute='name' operator='eq'", "<value>a</value><value>b</value>"),
        "operator 'eq' takes one value, not 2",
        "<condition",
    ),
    E(
        cond("attribute='name' operator='in' value='a'", "<value>b</value>"),
        "a value attribute or <value> elements, not both",
        "<condition",
    ),
    E(
        cond("attribute='name' operator='in' value='a'"),
        "operator 'in' takes its values as <value> elements",
        "<condition",
    ),
    E(
        cond("attribute='revenue' operator='between'", "<value>1</value>"),
        "operator 'between' needs two <value> elements",
        "<condition",
    ),
    E(cond("attribute='name' operator='in'", "<item>a</item>"), "<item> is not allowed", "<item"),
    E(cond("attribute='name' operator='in'", "<value><b/></value>"), "<b> is not allowed", "<b"),
    E(
        cond("attribute='name' operator='in'", "<value x='1'>a</value>"),
        "<value> has no attribute 'x'",
        "<value",
    ),
    E(cond("attribute='name' operator='null'", "oops"), "<condition> cannot contain text", "oops"),
    E(
        cond("attribute='numberofemployees' operator='eq' value='12.5'"),
        "the value for account.numberofemployees must be a whole number, not '12.5'",
        "<condition",
    ),
    E(
        cond("attribute='numberofemployees' operator='eq' value='-1'"),
        "bad value for account.numberofemployees: -1 is outside 0 .. 1000000000",
        "<condition",
    ),
    E(
        cond("attribute='industrycode' operator='in'", "<value>1</value><value>99</value>"),
        "bad value for account.industrycode: 99 is not one of the options",
        "<condition",
    ),
    E(
        cond("attribute='creditonhold' operator='eq' value='yes'"),
        "must be true, false, 1 or 0, not 'yes'",
        "<condition",
    ),
    E(
        cond("attribute='primarycontactid' operator='eq' value='nope'"),
        "bad value for account.primarycontactid: expected a GUID, got 'nope'",
        "<condition",
    ),
    E(
        cond("attribute='accountid' operator='ne' value='123'"),
        "expected a GUID",
        "<condition",
        id="bad uniqueidentifier",
    ),
    E(cond("attribute='revenue' operator='eq' value='1e'"), "must be a number", "<condition"),
    E(
        cond("attribute='address1_latitude' operator='eq' value='nan'"),
        "must be a number, not 'nan'",
        "<condition",
    ),
    E(
        cond("attribute='address1_latitude' operator='eq' value='91'"),
        "91.0 is outside -90.0 .. 90.0",
        "<condition",
    ),
    E(
        cond("attribute='revenue' operator='gt' value='1e400'"),
        "is outside",
        "<condition",
        id="huge decimal",
    ),
    E(
        cond("attribute='name' operator='eq' value='" + "x" * 161 + "'"),
        "161 characters is longer than the maximum 160",
        "<condition",
    ),
    E(
        cond("attribute='createdon' operator='gt' value='yesterday'"),
        "expected an ISO 8601 date and time, got 'yesterday'",
        "<condition",
    ),
    E(
        cond("attribute='createdon' operator='on' value='2024-02-30'"),
        "operator 'on' needs a date (YYYY-MM-DD), not '2024-02-30'",
        "<condition",
    ),
    E(
        cond("attribute='createdon' operator='on' value='2024-02-01T00:00:00'"),
        "needs a date (YYYY-MM-DD)",
        "<condition",
    ),
    E(
        cond("attribute='createdon' operator='last-x-days' value='0'"),
        "operator 'last-x-days' needs a whole number from 1 to 100000, not '0'",
        "<condition",
    ),
    E(
        cond("attribute='createdon' operator='next-x-hours' value='x'"),
        "needs a whole number from 1 to 2400000",
        "<condition",
    ),
    E(
        cond(
            "attribute='incidenttypes' operator='contain-values'",
            "<value>9</value>",
            table="workorder",
        ),
        "bad value for workorder.incidenttypes: 9 is not one of the options",
        "<condition",
    ),
    E(
        cond("attribute='incidenttypes' operator='contain-values' value='1,x'", table="workorder"),
        "must be whole numbers",
        "<condition",
    ),
    E(
        cond("attribute='firstname' operator='like' valueof='lastname'", table="contact"),
        "valueof works with eq, ne, gt, ge, lt and le, not 'like'",
        "<condition",
    ),
    E(
        cond("attribute='name' operator='eq' valueof='numberofemployees'"),
        "cannot compare account.name (string) with account.numberofemployees (integer)",
        "<condition",
    ),
    E(
        cond("attribute='primarycontactid' operator='gt' valueof='parentaccountid'"),
        "operator 'gt' cannot be used on account.primarycontactid",
        "<condition",
    ),
    E(cond("attribute='name' operator='eq' valueof='nope'"), "has no column 'nope'", "<cond"),
    E(
        cond("attribute='firstname' operator='eq' value='x' valueof='lastname'", table="contact"),
        "valueof or a value, not both",
        "<condition",
    ),
    E(
        entity("<filter>\n<condition entityname='c' attribute='name' operator='null'/></filter>"),
        "entityname 'c' is not the alias of an inner or outer <link-entity> of this query "
        "(known: none)",
        "<condition",
        id="entityname unknown",
    ),
    E(
        entity(
            f"<link-entity {CONTACT} alias='pc'/><filter>"
            "<condition entityname='c' attribute='name' operator='null'/></filter>"
        ),
        "(known: pc)",
        "<condition",
        id="entityname lists the known aliases",
    ),
    E(
        entity(
            f"<link-entity {CONTACT} alias='pc'/><filter>"
            "<condition entityname='pc' attribute='name' operator='null'/></filter>"
        ),
        "table 'contact' has no column 'name'",
        "<condition",
        id="entityname column is looked up on the linked table",
    ),
    E(
        entity(
            f"<filter><link-entity {CONTACT} link-type='any' alias='c'/>"
            "<condition entityname='c' attribute='lastname' operator='null'/></filter>"
        ),
        "entityname 'c' is not the alias",
        "<condition",
        id="entityname cannot reach into a semi-join",
    ),
    E(
        entity("\n  <link-entity name='lead' from='leadid' to='originatingleadid'/>"),
        "table 'lead' does not exist",
        "<link-entity",
    ),
    E(link("from='contactid' to='primarycontactid'"), "is missing its 'name' attribute", "<link"),
    E(link("name='contact' to='primarycontactid'"), "is missing its 'from' attribute", "<link"),
    E(link("name='contact' from='contactid'"), "is missing its 'to' attribute", "<link"),
    E(
        link("name='contact' from='x' to='primarycontactid'"),
        "table 'contact' has no column 'x'",
        "<link",
    ),
    E(link("name='contact' from='contactid' to='x'"), "table 'account' has no column 'x'", "<l"),
    E(
        link("name='contact' from='contactid' to='name'"),
        "cannot join contact.contactid (uniqueidentifier) to account.name (string)",
        "<link",
    ),
    E(
        link("name='contact' from='contactid' to='parentaccountid'"),
        "cannot join account.parentaccountid (which points at account) to contact.contactid",
        "<link",
    ),
    E(
        link("name='contact' from='description' to='description'"),
        "cannot join on contact.description (type memo)",
        "<link",
    ),
    E(link(f"{CONTACT} link-type='left'"), "link-type 'left' is not one of inner, outer", "<l"),
    E(
        link(f"{CONTACT} link-type='matchfirstrowusingcrossapply'"),
        "link-type 'matchfirstrowusingcrossapply' is not supported",
        "<link",
    ),
    E(
        link(f"{CONTACT} link-type='any'"),
        "link-type 'any' is only allowed on a <link-entity> in a <filter>",
        "<link",
    ),
    E(
        link(CONTACT, where="filter"),
        "a <link-entity> inside a <filter> needs link-type any, not any, all or not all",
        "<link",
    ),
    E(
        link(f"{CONTACT} link-type='outer'", where="filter"),
        "needs link-type any, not any, all or not all",
        "<link",
    ),
    E(
        link(f"{CONTACT} link-type='any'", "<attribute name='fullname'/>", where="filter"),
        "<attribute> is not allowed in a <link-entity> of link-type any",
        "<attribute",
    ),
    E(
        link(f"{CONTACT} link-type='exists'", "<order attribute='fullname'/>"),
        "returns no columns",
        "<order",
    ),
    E(
        link(
            f"{CONTACT} link-type='not any'",
            "<link-entity name='systemuser' from='systemuserid' to='ownerid'><all-attributes/>"
            "</link-entity>",
            where="filter",
        ),
        "<all-attributes> is not allowed in a <link-entity> of link-type any",
        "<all-attributes",
    ),
    E(
        entity(
            f"<link-entity {CONTACT} alias='x'/>\n"
            "<link-entity name='contact' from='parentcustomerid' to='accountid' alias='x'/>"
        ),
        "alias 'x' is used by another <link-entity>",
        "<link-entity name='contact' from='parentcustomerid'",
    ),
    E(link(f"{CONTACT} alias='a b'"), "alias 'a b' is not valid", "<link"),
    E(link(f"{CONTACT} foo='1'"), "<link-entity> has no attribute 'foo'", "<link"),
    E(link(f"{CONTACT} intersect='maybe'"), "intersect must be true or false", "<link"),
    E(link(CONTACT, "<value>1</value>"), "<value> is not allowed inside <link-entity>", "<value"),
]


@pytest.mark.parametrize(("xml", "message", "at"), ERRORS)
def test_errors_say_what_and_where(xml: str, message: str, at: str) -> None:
    offset = xml.index(at)
    line = xml.count("\n", 0, offset) + 1
    column = offset - (xml.rfind("\n", 0, offset) + 1) + 1
    e = err(xml)
    assert message in e.message, e.message
    assert (e.line, e.column) == (line, column), e.message
    assert e.message.startswith(f"line {line}, column {column}: ")
    assert isinstance(e, QueryError)
    assert e.status == 400


def test_more_than_fifteen_links() -> None:
    links = "".join(
        f"<link-entity name='contact' from='contactid' to='primarycontactid' alias='c{i}'/>"
        for i in range(16)
    )
    e = err(entity(links))
    assert "at most 15 <link-entity>" in e.message
    assert parse(entity(links[: links.rindex("<link-entity")])).links[-1].alias == "c14"


@pytest.mark.parametrize(
    ("xml", "message", "line", "column"),
    [
        ("<fetch>", "not well-formed XML: no element found", 1, 8),
        ("<fetch><entity name='account'></fetch>", "mismatched tag", 1, 33),
        ("<fetch>\n<entity name='a' name='b'/></fetch>", "duplicate attribute", 2, 18),
        ("<fetch/><fetch/>", "junk after document element", 1, 9),
        ("<fetch>&nbsp;</fetch>", "undefined entity", 1, 8),
    ],
)
def test_xml_syntax_errors_have_positions(xml: str, message: str, line: int, column: int) -> None:
    e = err(xml)
    assert message in e.message
    assert (e.line, e.column) == (line, column)


def test_positions_count_leading_blank_lines_and_declaration() -> None:
    text = "\n\n  <?xml version='1.0' encoding='utf-8'?>\n<fetch>\n  <entity name='nope'/></fetch>"
    assert (err(text).line, err(text).column) == (5, 3)
    e = err("\r\n   <fetch><entity name='nope'/></fetch>")
    assert (e.line, e.column) == (2, 11)
    e = err("   <fetch><entity name='nope'/></fetch>")
    assert (e.line, e.column) == (1, 11)
    e = err("  <fetch>\n <entity name='account'></fetch>")
    assert "mismatched tag" in e.message
    assert (e.line, e.column) == (2, 27)


def test_alias_may_be_the_root_table_name() -> None:
    q = parse(
        entity(
            "<link-entity name='contact' from='contactid' to='primarycontactid' alias='account'/>"
        )
    )
    assert q.links[0].alias == "account"


def test_non_positional_errors() -> None:
    for text, message in [
        ("", "FetchXML is empty"),
        ("   \n ", "FetchXML is empty"),
        ("<fetch>\ud800</fetch>", "not valid Unicode"),
    ]:
        with pytest.raises(QueryError, match=message):
            parse(text)
    with pytest.raises(QueryError, match="must be text"):
        parse_fetchxml(b"<fetch/>", SCHEMA)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# (c) XML attacks

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<fetch><entity name='account'><filter>
<condition attribute='name' operator='eq' value='&lol9;'/>
</filter></entity></fetch>"""

ATTACKS = {
    "billion laughs": BILLION_LAUGHS,
    "quadratic blowup": (
        f'<!DOCTYPE fetch [<!ENTITY a "{"x" * 50_000}">]>'
        f"<fetch><entity name='account'><filter><condition attribute='name' operator='eq' "
        f"value='{'&a;' * 1000}'/></filter></entity></fetch>"
    ),
    "external entity": (
        '<?xml version="1.0"?>\n<!DOCTYPE fetch [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        "<fetch><entity name='account'><filter><condition attribute='name' operator='eq' "
        "value='&xxe;'/></filter></entity></fetch>"
    ),
    "external parameter entity": (
        '<!DOCTYPE fetch [<!ENTITY % dtd SYSTEM "http://127.0.0.1:1/evil.dtd"> %dtd;]>'
        "<fetch><entity name='account'/></fetch>"
    ),
    "external DTD": (
        '<!DOCTYPE fetch SYSTEM "http://127.0.0.1:1/fetch.dtd">'
        "<fetch><entity name='account'/></fetch>"
    ),
    "empty DTD": "<!DOCTYPE fetch>\n<fetch><entity name='account'/></fetch>",
    "internal DTD with attribute defaults": (
        "<!DOCTYPE fetch [<!ATTLIST fetch top CDATA '5'>]><fetch><entity name='account'/></fetch>"
    ),
}


@pytest.mark.parametrize("text", ATTACKS.values(), ids=ATTACKS.keys())
def test_xml_attacks_are_refused_without_expansion(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(FetchXmlError, match="DTD") as info:
        parse(text)
    assert time.perf_counter() - started < 1.0
    assert info.value.line >= 1
    assert "lol" not in info.value.message
    assert "root:" not in info.value.message


def test_xinclude_is_just_an_unknown_element() -> None:
    e = err(
        "<fetch xmlns:xi='http://www.w3.org/2001/XInclude'><entity name='account'>"
        "<xi:include href='file:///etc/passwd' parse='text'/></entity></fetch>"
    )
    assert "no attribute 'xmlns:xi'" in e.message


def test_size_limit() -> None:
    padding = " " * (MAX_BYTES + 1)
    started = time.perf_counter()
    with pytest.raises(QueryError, match="larger than 1048576 bytes"):
        parse(f"<fetch><entity name='account'/></fetch>{padding}")
    # multibyte characters count in bytes
    with pytest.raises(QueryError, match="larger than"):
        parse(f"<fetch><entity name='account'/><!--{'é' * (MAX_BYTES // 2)}--></fetch>")
    assert time.perf_counter() - started < 1.0
    # just under the limit is fine
    comment = "x" * (MAX_BYTES - 100)
    assert parse(f"<fetch><entity name='account'/><!--{comment}--></fetch>").table == "account"


def test_nesting_and_element_limits() -> None:
    deep = "<filter>" * 100 + "</filter>" * 100
    e = err(entity(deep))
    assert "nested more than 64 levels" in e.message
    many = "<attribute name='name'/>" * 20_001
    assert "more than 20000 elements" in err(entity(many)).message


# ------------------------------------------------------------------------------------------
# (d) Fuzzing: only QueryError (or a Query) comes out

FUZZ_SEEDS = [
    entity(
        "<attribute name='name'/><filter>"
        "<condition attribute='name' operator='eq' value='x'/></filter>"
    ),
    entity(
        "<link-entity name='contact' from='contactid' to='primarycontactid' link-type='outer' "
        "alias='c'><attribute name='fullname'/><order attribute='fullname'/></link-entity>"
        "<filter type='or'><condition entityname='c' attribute='birthdate' operator='on' "
        "value='2024-01-01'/><condition attribute='revenue' operator='between'><value>1</value>"
        "<value>9</value></condition></filter><order attribute='name' descending='true'/>",
        fetch=" count='10' page='2' distinct='true'",
    ),
    entity(
        "<filter><link-entity name='workorder' from='serviceaccountid' to='accountid' "
        "link-type='not all'><filter><condition attribute='incidenttypes' "
        "operator='contain-values'><value>1</value></condition><condition attribute='priority' "
        f"operator='in'><value>1</value><value>2</value></condition></filter></link-entity>"
        f"<condition attribute='ownerid' operator='eq' value='{GUID}'/>"
        "<condition attribute='ownerid' operator='eq-useroruserteams'/></filter>"
    ),
    entity(
        "<all-attributes/><filter><condition attribute='scheduledstart' operator='last-x-hours' "
        "value='3'/><condition attribute='name' operator='eq' valueof='instructions'/>"
        "<condition attribute='estimatedduration' operator='gt' valueof='estimatedduration'/>"
        "</filter><link-entity name='account' from='accountid' to='serviceaccountid' "
        "link-type='exists'/>",
        table="workorder",
        fetch=" top='10'",
    ),
]
TOKENS = [
    "<",
    ">",
    "/>",
    "</",
    "'",
    '"',
    "=",
    "&",
    "&amp;",
    "&lt;",
    "&#0;",
    "&#x41;",
    "&lol;",
    "<!DOCTYPE x>",
    "<![CDATA[x]]>",
    "<!--x-->",
    "<?pi x?>",
    "\x00",
    "\ud800",
    "é",
    " ",
    "\n",
    "<filter>",
    "</filter>",
    "<filter type='or'>",
    "<condition attribute='name' operator='null'/>",
    "<value>1</value>",
    "<link-entity name='contact' from='contactid' to='primarycontactid'>",
    "</link-entity>",
    "<all-attributes/>",
    "<order attribute='name'/>",
    "eq",
    "ne",
    "neq",
    "in",
    "like",
    "between",
    "contain-values",
    "eq-userid",
    "today",
    "last-x-days",
    "on",
    "any",
    "not any",
    "all",
    "exists",
    "outer",
    "inner",
    "account",
    "contact",
    "workorder",
    "systemuser",
    "name",
    "ownerid",
    "revenue",
    "createdon",
    "incidenttypes",
    "priority",
    "0",
    "1",
    "-1",
    "5001",
    "1e999",
    "NaN",
    "9" * 30,
    GUID,
    "2024-13-45",
    "true",
    "false",
    "c",
    "x",
]

mutation = st.tuples(
    st.sampled_from(["delete", "insert", "replace", "duplicate"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=40),
    st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)),
)


def mutate(text: str, edits: list[tuple[str, int, int, str]]) -> str:
    for kind, at, size, token in edits:
        at %= len(text) + 1
        if kind == "delete":
            text = text[:at] + text[at + size :]
        elif kind == "insert":
            text = text[:at] + token + text[at:]
        elif kind == "replace":
            text = text[:at] + token + text[at + size :]
        else:
            text = text[:at] + text[at : at + size] * 2 + text[at + size :]
    return text


def only_query_errors(text: str) -> None:
    try:
        result = parse(text)
    except QueryError:
        return
    assert isinstance(result, Query)


def test_corpus_parses() -> None:
    for text in [*CORPUS.values(), *FUZZ_SEEDS]:
        assert isinstance(parse(text), Query)
    for text in REFUSED.values():
        with pytest.raises(QueryError):
            parse(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_fuzz_random_text(text: str) -> None:
    only_query_errors(text)
    only_query_errors(f"<fetch>{text}</fetch>")
    only_query_errors(entity(text))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FUZZ_SEEDS), st.lists(mutation, min_size=1, max_size=6))
def test_fuzz_mutations_of_valid_fetchxml(
    text: str, edits: list[tuple[str, int, int, str]]
) -> None:
    only_query_errors(mutate(text, edits))


VALUE_ATTRS = st.sampled_from(
    [
        "name",
        "attribute",
        "operator",
        "value",
        "link-type",
        "from",
        "to",
        "alias",
        "entityname",
        "valueof",
        "type",
        "top",
        "count",
        "page",
        "descending",
    ]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(FUZZ_SEEDS),
    st.lists(st.tuples(VALUE_ATTRS, st.sampled_from(TOKENS)), max_size=4),
)
def test_fuzz_attribute_values(text: str, swaps: list[tuple[str, str]]) -> None:
    """Swap whole attribute values, which reaches the schema checks rather than expat."""
    for attr, token in swaps:
        marker = f"{attr}='"
        at = text.find(marker)
        if at < 0:
            continue
        start = at + len(marker)
        end = text.find("'", start)
        safe = token.replace("'", "&apos;").replace("<", "&lt;").replace("&lol;", "")
        text = text[:start] + safe + text[end:]
    only_query_errors(text)
