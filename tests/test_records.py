"""Records: exact round trips of every column type, validation errors with their exact
classes, atomic batches, versions and the change log, deletes that clear lookups, assign.
Every test runs on SQLite and PostgreSQL through the ``store`` and ``records`` fixtures."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    InvalidChoice,
    LookupNotFound,
    MissingRequired,
    PreconditionFailed,
    ReadOnlyColumn,
    RecordNotFound,
    StringTooLong,
    UnknownColumn,
    ValidationError,
    ValueOutOfRange,
    WrongType,
)
from fieldsync.records.service import Records, acting_as
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID, SYSTEM_USER_ID
from fieldsync.schema.model import (
    BIGINT_RANGE,
    DECIMAL_RANGE,
    FLOAT_RANGE,
    INT_RANGE,
    MONEY_RANGE,
    Column,
    ColumnType,
    define_table,
)
from fieldsync.schema.values import jsonable
from fieldsync.store.catalog import fs_change, fs_file
from fieldsync.store.store import Store
from fieldsync.types import EntityRef, Row

T = ColumnType
UTC = dt.UTC


# -- helpers ---------------------------------------------------------------------------


def add_file(store: Store) -> uuid.UUID:
    """A stored file row, the thing file and image columns point at."""
    fileid = uuid.uuid4()
    with store.write() as conn:
        conn.execute(
            fs_file.insert().values(
                fileid=fileid,
                name="photo.jpg",
                mimetype="image/jpeg",
                size=3,
                sha256="0" * 64,
                createdon=dt.datetime.now(UTC),
            )
        )
    return fileid


def count_rows(store: Store, table: str) -> int:
    with store.read() as conn:
        stmt = sa.select(sa.func.count()).select_from(store.sql_table(table))
        return int(conn.execute(stmt).scalar_one())


def changes(store: Store, recordid: uuid.UUID | None = None) -> list[Row]:
    """The change log, in version order (for one record when given)."""
    stmt = sa.select(fs_change).order_by(fs_change.c.version)
    if recordid is not None:
        stmt = stmt.where(fs_change.c.recordid == recordid)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def snapshot(store: Store) -> dict[str, Any]:
    """Every row of every table, the change log and the version counter."""
    out: dict[str, Any] = {}
    with store.read() as conn:
        for name in sorted(store.schema.tables):
            sql = store.sql_table(name)
            pk = sql.c[store.schema.table(name).primary_id]
            out[name] = [dict(r) for r in conn.execute(sa.select(sql).order_by(pk)).mappings()]
        out["fs_change"] = [
            dict(r)
            for r in conn.execute(sa.select(fs_change).order_by(fs_change.c.version)).mappings()
        ]
        if store.dialect == "sqlite":  # a PostgreSQL sequence leaves a gap when rolled back
            out["version"] = store.current_version(conn)
    return out


def assert_exact(row: Row, expected: Row) -> None:
    """Equal values of the same Python type (so 1 is not accepted for True, nor a float
    for a Decimal), datetimes in UTC."""
    problems = []
    for name, want in expected.items():
        got = row[name]
        if got != want or type(got) is not type(want):
            problems.append(f"{name}: got {got!r}, want {want!r}")
        elif isinstance(got, dt.datetime) and got.tzinfo is not UTC:
            problems.append(f"{name}: {got!r} is not in UTC")
    assert problems == []


# -- round trips -----------------------------------------------------------------------


def test_every_workorder_column_round_trips(store: Store, records: Records) -> None:
    account = records.create("account", {"name": "Contoso"})
    other_account = records.create("account", {"name": "Fabrikam"})
    contact = records.create("contact", {"lastname": "Smith"})
    photo, report, photo2 = add_file(store), add_file(store), add_file(store)
    external = uuid.uuid4()

    rid = records.create(
        "workorder",
        {
            "name": "WO-" + "9" * 97,  # exactly max_length
            "instructions": "Line 1\nLine 2 ✓ ünïcødé 🚧\ttab",
            "estimatedduration": 100_000,
            "ticketnumber": BIGINT_RANGE[1],
            "laborhours": "1.005",
            "totalamount": Decimal("1234.565"),
            "latitude": 47.6062095,
            "longitude": -122.3320708,
            "signedoff": True,
            "scheduledstart": "2024-05-01T12:30:00.250000+02:00",
            "duedate": "2024-05-31",
            "priority": 3,
            "systemstatus": 690970001,
            "incidenttypes": [4, 2, 4],
            "serviceaccountid": str(account),
            "primarycontactid": contact,
            "externalreference": str(external),
            "sitephoto": photo,
            "servicereport": str(report),
        },
    )
    row = records.retrieve("workorder", rid)
    assert_exact(
        row,
        {
            "workorderid": rid,
            "name": "WO-" + "9" * 97,
            "instructions": "Line 1\nLine 2 ✓ ünïcødé 🚧\ttab",
            "estimatedduration": 100_000,
            "ticketnumber": BIGINT_RANGE[1],
            "laborhours": Decimal("1.00"),  # rounded half to even at precision 2
            "totalamount": Decimal("1234.56"),
            "latitude": 47.60621,  # precision 5
            "longitude": -122.33207,
            "signedoff": True,
            "scheduledstart": dt.datetime(2024, 5, 1, 10, 30, 0, 250000, tzinfo=UTC),
            "duedate": dt.date(2024, 5, 31),
            "priority": 3,
            "systemstatus": 690970001,
            "incidenttypes": [2, 4],
            "serviceaccountid": account,
            "primarycontactid": contact,
            "externalreference": external,
            "sitephoto": photo,
            "servicereport": report,
            "statecode": 0,
            "statuscode": 1,
            "ownerid": SYSTEM_USER_ID,
            "owneridtype": "systemuser",
            "owningbusinessunit": ROOT_BUSINESS_UNIT_ID,
            "createdby": SYSTEM_USER_ID,
            "modifiedby": SYSTEM_USER_ID,
        },
    )
    assert row["createdon"] == row["modifiedon"]
    assert row["createdon"].tzinfo is UTC
    assert abs(dt.datetime.now(UTC) - row["createdon"]) < dt.timedelta(minutes=5)

    # update every column, through other input forms
    version = records.update(
        "workorder",
        rid,
        {
            "name": "WO-2",
            "instructions": "x" * 10_000,
            "estimatedduration": 0,
            "ticketnumber": BIGINT_RANGE[0],
            "laborhours": Decimal("1.015"),
            "totalamount": 10.005,
            "latitude": -90,
            "longitude": Decimal("179.999994"),
            "signedoff": False,
            "scheduledstart": dt.datetime(1753, 1, 1, 0, 0, 0),  # naive: taken as UTC
            "duedate": dt.date(9999, 12, 31),
            "priority": 1,
            "systemstatus": 690970005,
            "incidenttypes": "5,1",
            "serviceaccountid": other_account,
            "primarycontactid": None,
            "externalreference": None,
            "sitephoto": str(photo2),
            "servicereport": None,
            "statecode": 1,
        },
    )
    row = records.retrieve("workorder", rid)
    assert row["versionnumber"] == version
    assert_exact(
        row,
        {
            "name": "WO-2",
            "instructions": "x" * 10_000,
            "estimatedduration": 0,
            "ticketnumber": BIGINT_RANGE[0],
            "laborhours": Decimal("1.02"),
            "totalamount": Decimal("10.00"),
            "latitude": -90.0,
            "longitude": 179.99999,
            "signedoff": False,
            "scheduledstart": dt.datetime(1753, 1, 1, tzinfo=UTC),
            "duedate": dt.date(9999, 12, 31),
            "priority": 1,
            "systemstatus": 690970005,
            "incidenttypes": [1, 5],
            "serviceaccountid": other_account,
            "sitephoto": photo2,
            "statecode": 1,
            "statuscode": 2,
        },
    )
    for name in ("primarycontactid", "externalreference", "servicereport"):
        assert row[name] is None
    assert row["modifiedon"] > row["createdon"]

    # clear every optional column
    optional = [
        "instructions",
        "estimatedduration",
        "ticketnumber",
        "laborhours",
        "totalamount",
        "latitude",
        "longitude",
        "signedoff",
        "scheduledstart",
        "duedate",
        "priority",
        "systemstatus",
        "sitephoto",
    ]
    records.update("workorder", rid, {**dict.fromkeys(optional), "incidenttypes": []})
    row = records.retrieve("workorder", rid)
    for name in [*optional, "incidenttypes"]:
        assert row[name] is None, name

    # assign and delete
    team = records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    records.assign("workorder", rid, EntityRef("team", team))
    row = records.retrieve("workorder", rid)
    assert (row["ownerid"], row["owneridtype"]) == (team, "team")
    records.delete("workorder", rid)
    with pytest.raises(RecordNotFound):
        records.retrieve("workorder", rid)


def test_polymorphic_lookups_keep_their_table(store: Store, records: Records) -> None:
    account = records.create("account", {"name": "Contoso"})
    parent = records.create("contact", {"lastname": "Parent"})
    rid = records.create(
        "contact", {"lastname": "Child", "parentcustomerid": EntityRef("account", account)}
    )
    row = records.retrieve("contact", rid)
    assert (row["parentcustomerid"], row["parentcustomeridtype"]) == (account, "account")

    records.update("contact", rid, {"parentcustomerid": EntityRef("contact", parent)})
    row = records.retrieve("contact", rid, columns=["parentcustomerid"])
    assert row == {"contactid": rid, "parentcustomerid": parent, "parentcustomeridtype": "contact"}

    records.update("contact", rid, {"parentcustomerid": (str(account), "account")})
    row = records.retrieve("contact", rid)
    assert (row["parentcustomerid"], row["parentcustomeridtype"]) == (account, "account")

    records.update("contact", rid, {"parentcustomerid": None})
    row = records.retrieve("contact", rid)
    assert (row["parentcustomerid"], row["parentcustomeridtype"]) == (None, None)

    team = records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    owned = records.create("contact", {"lastname": "Owned", "ownerid": EntityRef("team", team)})
    row = records.retrieve("contact", owned)
    assert (row["ownerid"], row["owneridtype"]) == (team, "team")
    linked = records.create(
        "contact", {"lastname": "Linked", "parentcustomerid": EntityRef("contact", parent)}
    )
    unlinked = {
        r["contactid"]
        for r in records.retrieve_multiple("contact", where={"parentcustomerid": None})
    }
    assert {parent, rid, owned} <= unlinked
    assert linked not in unlinked
    found = records.retrieve_multiple(
        "contact", where={"parentcustomerid": EntityRef("contact", parent)}
    )
    assert [r["contactid"] for r in found] == [linked]


# -- random values of each type --------------------------------------------------------

# any text a string column can hold: no NUL, no lone surrogates (neither is storable text)
characters = st.characters(codec="utf-8", exclude_characters="\x00")
text = st.text(characters, max_size=80)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)


def quantized(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def as_is(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    """(value to send, value stored): the same."""
    return strategy.map(lambda v: (v, v))


def either_form(
    strategy: st.SearchStrategy[Any], to_text: Callable[[Any], str] = str
) -> st.SearchStrategy[tuple[Any, Any]]:
    """The value itself or its JSON text form; both store the value."""
    return strategy.flatmap(lambda v: st.sampled_from([(v, v), (to_text(v), v)]))


def exact_decimal(lo: Decimal, hi: Decimal, places: int) -> st.SearchStrategy[tuple[Any, Any]]:
    def decimals(lo: Decimal, hi: Decimal, places: int) -> st.SearchStrategy[Decimal]:
        return st.decimals(lo, hi, places=places, allow_nan=False, allow_infinity=False)

    span = Decimal(10) ** 6
    exact = either_form(
        st.one_of(
            decimals(lo, hi, places),
            decimals(hi - span, hi, places),  # near the ends of the range, where most
            decimals(lo, lo + span, places),  # digits are in use
        )
    )
    # more digits than the column keeps: rounded half to even
    extra = decimals(lo / 2, hi / 2, places + 3).map(lambda v: (v, quantized(v, places)))
    return st.one_of(exact, extra)


def floats(lo: float, hi: float, places: int) -> st.SearchStrategy[tuple[Any, Any]]:
    return st.floats(lo, hi, allow_nan=False).map(lambda v: (v, round(v, places)))


def multichoice_values(options: list[int]) -> st.SearchStrategy[tuple[Any, Any]]:
    picks = st.lists(st.sampled_from(options), max_size=6)
    return picks.flatmap(
        lambda vs: st.sampled_from(
            [list(vs), tuple(vs), set(vs), ",".join(str(v) for v in vs)]
        ).map(lambda given: (given, sorted(set(vs)) or None))
    )


def datetime_values() -> st.SearchStrategy[tuple[Any, Any]]:
    moments = st.datetimes(
        dt.datetime(1753, 1, 2), dt.datetime(9999, 12, 30), timezones=st.one_of(st.none(), offsets)
    )

    def stored(v: dt.datetime) -> dt.datetime:
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC)

    return moments.flatmap(lambda v: st.sampled_from([(v, stored(v)), (v.isoformat(), stored(v))]))


# group -> (table, {column: strategy of (value sent, value stored)}); built-in columns of every
# type (their definitions are in fieldsync.schema.builtin)
ROUND_TRIPS: dict[str, tuple[str, dict[str, st.SearchStrategy[tuple[Any, Any]]]]] = {
    "text-numbers-boolean": (
        "account",
        {
            "address1_line1": as_is(text),  # string(250)
            "description": as_is(st.text(characters, max_size=400)),
            "numberofemployees": as_is(st.integers(0, 1_000_000_000)),  # integer
            "address1_latitude": floats(-90, 90, 5),  # float, precision 5
            "address1_longitude": floats(-180, 180, 5),
            "creditonhold": as_is(st.booleans()),
        },
    ),
    "bigint-time-choice-id": (
        "workorder",
        {
            "ticketnumber": as_is(st.integers(*BIGINT_RANGE)),
            "scheduledstart": datetime_values(),
            "duedate": either_form(
                st.dates(dt.date(1753, 1, 1), dt.date(9999, 12, 31)), dt.date.isoformat
            ),
            "priority": as_is(st.sampled_from([1, 2, 3, 4])),
            "incidenttypes": multichoice_values([1, 2, 3, 4, 5]),
            "externalreference": either_form(st.uuids()),
        },
    ),
    "decimal": ("workorder", {"laborhours": exact_decimal(Decimal(0), DECIMAL_RANGE[1], 2)}),
    "money": (
        "account",
        {"revenue": exact_decimal(*MONEY_RANGE, 2)},
    ),
    # columns no built-in table has: the largest precisions, and none
    "precisions": (
        "new_precise",
        {
            "d10": exact_decimal(*DECIMAL_RANGE, 10),
            "d0": exact_decimal(*DECIMAL_RANGE, 0),
            "m4": exact_decimal(*MONEY_RANGE, 4),
            "f2": floats(*FLOAT_RANGE, 2),
            "i": as_is(st.integers(*INT_RANGE)),
        },
    ),
}
PRECISE = define_table(
    "new_precise",
    ownership="none",
    columns=[
        Column("d10", T.DECIMAL, precision=10),
        Column("d0", T.DECIMAL, precision=0),
        Column("m4", T.MONEY, precision=4),
        Column("f2", T.FLOAT),
        Column("i", T.INTEGER),
    ],
)


@pytest.mark.parametrize("group", list(ROUND_TRIPS))
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_values_round_trip(
    store: Store, records: Records, group: str, data: st.DataObject
) -> None:
    table, strategies = ROUND_TRIPS[group]
    if table == PRECISE.name and table not in store.schema:
        store.create_table(PRECISE)
    base: Row = {"name": "random"}
    if table == "workorder":
        accounts = records.retrieve_multiple("account", where={"name": "random"}, limit=1)
        account = accounts[0]["accountid"] if accounts else records.create("account", base)
        base["serviceaccountid"] = account
    first = {c: data.draw(s, label=c) for c, s in strategies.items()}
    rid = records.create(table, {**base, **{c: given for c, (given, _) in first.items()}})
    assert_exact(records.retrieve(table, rid), {c: w for c, (_, w) in first.items()})

    second = {c: data.draw(s, label=f"{c} (update)") for c, s in strategies.items()}
    records.update(table, rid, {c: given for c, (given, _) in second.items()})
    assert_exact(records.retrieve(table, rid), {c: w for c, (_, w) in second.items()})


# -- validation errors -----------------------------------------------------------------

NOW = dt.datetime(2024, 1, 1, tzinfo=UTC)


class Refs:
    """Rows the validation cases point at."""

    def __init__(self, records: Records) -> None:
        self.account = records.create("account", {"name": "Contoso"})
        self.contact = records.create("contact", {"lastname": "Smith"})
        self.workorder = records.create(
            "workorder", {"name": "WO-1", "serviceaccountid": self.account}
        )

    def base(self, table: str) -> Row:
        bases: dict[str, Row] = {
            "workorder": {"name": "WO-2", "serviceaccountid": self.account},
            "account": {"name": "Fabrikam"},
            "contact": {"lastname": "Jones"},
        }
        return bases[table]

    def existing(self, table: str) -> uuid.UUID:
        return {
            "workorder": self.workorder,
            "account": self.account,
            "contact": self.contact,
            "systemuser": SYSTEM_USER_ID,
        }[table]


# A case is (operation, table, values, column): a create merges the values into a valid row
# (MISSING leaves the column out), an update applies them to an existing row.
Case = tuple[str, str, dict[str, Any], str]
MakeCase = Callable[["Refs"], Case]
MISSING = object()


def on(table: str, column: str, value: Any, operation: str = "create") -> MakeCase:
    return lambda refs: (operation, table, {column: value}, column)


def wo(column: str, value: Any, operation: str = "create") -> MakeCase:
    return on("workorder", column, value, operation)


VALIDATION_CASES: dict[type[ValidationError], list[MakeCase]] = {
    UnknownColumn: [
        wo("nosuchcolumn", 1),
        on("account", "nosuchcolumn", "x", "update"),
        on("account", "NAME", "upper case"),
    ],
    ReadOnlyColumn: [
        wo("versionnumber", 5),
        wo("createdon", NOW),
        wo("modifiedon", NOW),
        wo("createdby", SYSTEM_USER_ID),
        wo("modifiedby", SYSTEM_USER_ID),
        on("account", "owningbusinessunit", ROOT_BUSINESS_UNIT_ID),
        on("account", "versionnumber", 99, "update"),
        on("account", "createdon", NOW, "update"),
        on("account", "accountid", uuid.uuid4(), "update"),
        on("account", "owningbusinessunit", ROOT_BUSINESS_UNIT_ID, "update"),
    ],
    MissingRequired: [
        wo("name", MISSING),
        wo("serviceaccountid", MISSING),
        wo("name", None),
        on("contact", "lastname", MISSING),
        on("account", "ownerid", None),
        wo("name", None, "update"),
        wo("serviceaccountid", None, "update"),
        on("account", "statecode", None, "update"),
    ],
    WrongType: [
        wo("estimatedduration", "abc"),
        wo("estimatedduration", 1.5),
        wo("estimatedduration", True),
        wo("estimatedduration", "5"),
        wo("ticketnumber", 1.0),
        wo("serviceaccountid", "x"),
        wo("serviceaccountid", 42),
        lambda r: wo("serviceaccountid", EntityRef("contact", r.contact))(r),
        lambda r: on("contact", "parentcustomerid", r.account)(r),  # needs its table
        on("contact", "parentcustomerid", EntityRef("systemuser", SYSTEM_USER_ID)),
        on("contact", "parentcustomerid", EntityRef("account", "x")),  # type: ignore[arg-type]
        lambda r: on("account", "ownerid", EntityRef("account", r.account))(r),
        wo("name", 5),
        wo("name", "a\x00b"),
        wo("name", "a\ud800b"),  # a lone surrogate cannot be stored either
        wo("signedoff", "yes"),
        wo("signedoff", 1),
        wo("laborhours", "abc"),
        wo("laborhours", True),
        wo("laborhours", "NaN"),
        wo("totalamount", [1]),
        wo("latitude", "12.5"),
        wo("latitude", float("nan")),
        wo("scheduledstart", "not a date"),
        wo("scheduledstart", dt.date(2024, 1, 1)),
        wo("scheduledstart", 1_700_000_000),
        wo("duedate", NOW),
        wo("duedate", "2024-13-01"),
        wo("priority", "3"),
        wo("priority", True),
        wo("incidenttypes", 3),
        wo("incidenttypes", ["2"]),
        wo("incidenttypes", "a,b"),
        wo("externalreference", "x"),
        wo("externalreference", 123),
        wo("sitephoto", "not-a-guid"),
        wo("primarycontactid", "x", "update"),
        on("account", "numberofemployees", 2.5, "update"),
    ],
    StringTooLong: [
        wo("name", "x" * 101),
        wo("instructions", "x" * 10_001),
        on("account", "telephone1", "1" * 51),
        on("contact", "description", "é" * 2001, "update"),
    ],
    ValueOutOfRange: [
        on("systemuser", "uilanguageid", INT_RANGE[1] + 1, "update"),  # integer, no max
        wo("ticketnumber", BIGINT_RANGE[1] + 1),
        wo("ticketnumber", BIGINT_RANGE[0] - 1),
        wo("laborhours", Decimal("100000000000.01")),  # decimal, no max
        wo("laborhours", Decimal("1e30")),
        wo("laborhours", "1e40"),
        wo("totalamount", "922337203685478"),  # money
        wo("totalamount", "-922337203685477.01"),
        wo("totalamount", 1e300),
        # the column's own bounds
        wo("estimatedduration", -1),
        wo("estimatedduration", 100_001),
        wo("laborhours", "-0.01"),
        wo("latitude", 90.00001),
        wo("longitude", -180.1, "update"),
        on("account", "numberofemployees", -1, "update"),
        on("account", "numberofemployees", 1_000_000_001),
        # dates
        wo("scheduledstart", "1752-12-31T23:59:59+00:00"),
        wo("scheduledstart", "1753-01-01T00:30:00+01:00"),
        wo("scheduledstart", "9999-12-31T23:00:00-05:00"),
        wo("duedate", "1752-12-31"),
    ],
    InvalidChoice: [
        wo("priority", 99),
        wo("systemstatus", 0),
        wo("incidenttypes", [1, 99]),
        wo("incidenttypes", "1,99"),
        wo("incidenttypes", [0], "update"),
        on("account", "statecode", 2, "update"),
        on("account", "industrycode", -1, "update"),
    ],
    LookupNotFound: [
        wo("serviceaccountid", uuid.uuid4()),
        wo("primarycontactid", uuid.uuid4()),
        lambda r: wo("primarycontactid", r.account)(r),  # an account is not a contact
        on("contact", "parentcustomerid", EntityRef("contact", uuid.uuid4())),
        lambda r: on("contact", "parentcustomerid", EntityRef("contact", r.account))(r),
        wo("sitephoto", uuid.uuid4()),
        wo("servicereport", str(uuid.uuid4())),
        on("account", "ownerid", EntityRef("team", uuid.uuid4())),
        wo("serviceaccountid", uuid.uuid4(), "update"),
        wo("servicereport", uuid.uuid4(), "update"),
        on("account", "ownerid", EntityRef("systemuser", uuid.uuid4()), "update"),
    ],
}


def run_case(records: Records, refs: Refs, case: Case) -> None:
    operation, table, values, _ = case
    if operation == "create":
        row = {**refs.base(table), **values}
        records.create(table, {k: v for k, v in row.items() if v is not MISSING})
    else:
        records.update(table, refs.existing(table), values)


CODES = {
    UnknownColumn: "0x80060888",
    ReadOnlyColumn: "0x80040203",
    MissingRequired: "0x80040200",
    WrongType: "0x80040203",
    StringTooLong: "0x80044331",
    ValueOutOfRange: "0x80044330",
    InvalidChoice: "0x8004431A",
    LookupNotFound: "0x80040217",
}


def test_validation_errors_have_exact_classes(store: Store, records: Records) -> None:
    refs = Refs(records)
    # values just inside the bounds are accepted
    limits: Row = {
        "ticketnumber": BIGINT_RANGE[0],
        "laborhours": DECIMAL_RANGE[1],
        "totalamount": MONEY_RANGE[0],
        "estimatedduration": 100_000,
        "latitude": -90,
        "longitude": 180.0,
        "scheduledstart": "1753-01-01T00:00:00+00:00",
        "duedate": "1753-01-01",
    }
    records.update("workorder", refs.workorder, limits)
    assert_exact(
        records.retrieve("workorder", refs.workorder),
        {
            "ticketnumber": BIGINT_RANGE[0],
            "laborhours": Decimal("100000000000.00"),
            "totalamount": Decimal("-922337203685477.00"),
            "estimatedduration": 100_000,
            "latitude": -90.0,
            "longitude": 180.0,
            "scheduledstart": dt.datetime(1753, 1, 1, tzinfo=UTC),
            "duedate": dt.date(1753, 1, 1),
        },
    )
    records.update(
        "workorder",
        refs.workorder,
        {"ticketnumber": BIGINT_RANGE[1], "laborhours": 0, "totalamount": MONEY_RANGE[1]},
    )
    assert_exact(
        records.retrieve("workorder", refs.workorder),
        {
            "ticketnumber": BIGINT_RANGE[1],
            "laborhours": Decimal("0.00"),
            "totalamount": Decimal("922337203685477.00"),
        },
    )
    records.update("systemuser", SYSTEM_USER_ID, {"uilanguageid": INT_RANGE[1]})
    assert records.retrieve("systemuser", SYSTEM_USER_ID)["uilanguageid"] == INT_RANGE[1]

    # values outside them, and every other mistake, are refused with their own error
    before = snapshot(store)
    problems: list[str] = []
    for error, cases in VALIDATION_CASES.items():
        assert error.code == CODES[error]
        for make in cases:
            case = make(refs)
            operation, table, values, column = case
            label = f"{error.__name__}: {operation} {table} {values!r}"
            try:
                run_case(records, refs, case)
            except Exception as exc:
                if type(exc) is not error:
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    problems.append(f"{label} raised {type(exc).__name__} ({first})")
                elif (exc.table, exc.column) != (table, column):
                    problems.append(f"{label} names {exc.table}.{exc.column}")
                elif not exc.message.startswith(f"{table}.{column}: "):
                    problems.append(f"{label} message {exc.message!r}")
                elif exc.status != 400:
                    problems.append(f"{label} status {exc.status}")
            else:
                problems.append(f"{label} was accepted")
    assert problems == []
    assert snapshot(store) == before


# -- batches ---------------------------------------------------------------------------


def test_a_failing_row_leaves_nothing_of_its_batch(store: Store, records: Records) -> None:
    account = records.create("account", {"name": "Contoso"})
    existing = records.create("workorder", {"name": "WO-1", "serviceaccountid": account})
    existing2 = records.create("workorder", {"name": "WO-2", "serviceaccountid": account})
    fresh = uuid.uuid4()

    def rows(n: int, **bad: Any) -> list[Row]:
        out: list[Row] = [
            {"name": f"WO-{i}", "serviceaccountid": account, "priority": 2} for i in range(n)
        ]
        out[-2].update(bad)
        return out

    failing: list[tuple[str, Callable[[], object], type[FieldsyncError]]] = [
        (
            "wrong type",
            lambda: records.create_many("workorder", rows(3, priority="high")),
            WrongType,
        ),
        (
            "missing lookup",
            lambda: records.create_many("workorder", rows(4, primarycontactid=uuid.uuid4())),
            LookupNotFound,
        ),
        (
            "missing required",
            lambda: records.create_many("workorder", rows(3, name=None)),
            MissingRequired,
        ),
        (
            "existing id",
            lambda: records.create_many("workorder", rows(3, workorderid=existing)),
            PreconditionFailed,
        ),
        (
            "same id twice",
            lambda: records.create_many(
                "workorder",
                [
                    *rows(2, workorderid=fresh),
                    {"name": "x", "workorderid": fresh, "serviceaccountid": account},
                ],
            ),
            PreconditionFailed,
        ),
        (
            "update with a missing row",
            lambda: records.update_many(
                "workorder", [(existing, {"priority": 4}), (uuid.uuid4(), {"priority": 4})]
            ),
            RecordNotFound,
        ),
        (
            "update with a bad value",
            lambda: records.update_many(
                "workorder", [(existing, {"priority": 4}), (existing2, {"priority": 99})]
            ),
            InvalidChoice,
        ),
        (
            "update with the same row twice",
            lambda: records.update_many(
                "workorder", [(existing, {"priority": 4}), (existing, {"priority": 3})]
            ),
            BadRequest,
        ),
    ]
    for label, action, error in failing:
        before = snapshot(store)
        with pytest.raises(error):
            action()
        after = snapshot(store)
        assert after == before, label
    assert count_rows(store, "workorder") == 2

    # and a good batch writes every row, with consecutive versions
    with store.read() as conn:
        start = store.current_version(conn)
    ids = records.create_many("workorder", rows(3))
    versions = [records.retrieve("workorder", i)["versionnumber"] for i in ids]
    assert versions == [start + 1, start + 2, start + 3]
    assert count_rows(store, "workorder") == 5


# -- versions and the change log -------------------------------------------------------


def test_versions_increase_and_every_write_is_logged(store: Store, records: Records) -> None:
    user = records.create(
        "systemuser",
        {
            "fullname": "Field Tech",
            "domainname": "tech@example.com",
            "businessunitid": ROOT_BUSINESS_UNIT_ID,
        },
    )
    tech = acting_as(user, ROOT_BUSINESS_UNIT_ID)
    team = records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    account = records.create("account", {"name": "Contoso"}, caller=tech)
    account2 = records.create("account", {"name": "Fabrikam"})
    contact = records.create(
        "contact",
        {
            "lastname": "Smith",
            "parentcustomerid": EntityRef("account", account),
            "jobtitle": "Engineer",
        },
        caller=tech,
    )
    with store.read() as conn:
        start = store.current_version(conn)

    versions: list[int] = []
    ops: list[tuple[str, uuid.UUID]] = []

    def did(op: str, rid: uuid.UUID, version: int) -> None:
        versions.append(version)
        ops.append((op, rid))

    batch = records.create_many("contact", [{"lastname": "A"}, {"lastname": "B"}], caller=tech)
    for rid in batch:
        did("create", rid, records.retrieve("contact", rid)["versionnumber"])
    did(
        "update",
        contact,
        records.update(
            "contact",
            contact,
            {"parentcustomerid": EntityRef("account", account2), "jobtitle": None},
            caller=tech,
        ),
    )
    did("update", account, records.update("account", account, {"revenue": "5"}, caller=tech))
    did("assign", contact, records.assign("contact", contact, EntityRef("team", team), caller=tech))
    did("update", contact, records.update("contact", contact, {"jobtitle": "Lead"}, caller=tech))
    link = records.associate("teammembership_association", user, team, caller=tech)
    did("associate", link, records.retrieve("teammembership", link)["versionnumber"])
    did(
        "disassociate",
        link,
        records.disassociate("teammembership_association", user, team, caller=tech),
    )
    before_delete = records.retrieve("contact", batch[0])
    did("delete", batch[0], records.delete("contact", batch[0], caller=tech))

    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert versions[0] > start
    with store.read() as conn:
        assert store.current_version(conn) == versions[-1]

    log = [c for c in changes(store) if c["version"] > start]
    assert [c["version"] for c in log] == versions
    assert [(c["operation"], c["recordid"]) for c in log] == ops
    tables = [
        "contact",
        "contact",
        "contact",
        "account",
        "contact",
        "contact",
        "teammembership",
        "teammembership",
        "contact",
    ]
    assert [c["tablename"] for c in log] == tables
    assert all(c["userid"] == user for c in log)
    assert all(c["changedon"].tzinfo is UTC for c in log)
    for c in log:
        if c["operation"] in ("create", "update", "assign") and c["recordid"] != batch[0]:
            row = records.retrieve(c["tablename"], c["recordid"])
            assert row["modifiedby"] == user

    create, _, update_lookup, update_money, assign, update_after, associate, dis, delete = log
    assert (create["changed"], create["old"]) == (None, None)
    assert associate["old"] is None
    scope = {
        "ownerid": str(user),
        "owneridtype": "systemuser",
        "owningbusinessunit": str(ROOT_BUSINESS_UNIT_ID),
    }
    assert update_lookup["changed"] == ["jobtitle", "parentcustomerid"]
    assert update_lookup["old"] == {
        "parentcustomerid": str(account),
        "parentcustomeridtype": "account",
        "jobtitle": "Engineer",
        **scope,
    }
    assert update_money["changed"] == ["revenue"]
    assert update_money["old"] == {"revenue": None, **scope}
    assert assign["changed"] == ["ownerid"]
    assert assign["old"] == scope
    assert update_after["old"] == {
        "jobtitle": None,
        "ownerid": str(team),
        "owneridtype": "team",
        "owningbusinessunit": str(ROOT_BUSINESS_UNIT_ID),
    }
    assert dis["old"]["systemuserid"] == str(user)
    assert dis["old"]["teamid"] == str(team)
    assert delete["changed"] is None
    assert delete["old"] == {k: jsonable(v) for k, v in before_delete.items()}

    # the row's version is its latest change
    row = records.retrieve("contact", contact)
    assert row["versionnumber"] == versions[5]
    # an earlier write's log rows are untouched
    assert [c["operation"] for c in changes(store, account2)] == ["create"]


# -- delete ----------------------------------------------------------------------------


def test_delete_clears_lookups_and_links_and_leaves_a_tombstone(
    store: Store, records: Records
) -> None:
    account = records.create("account", {"name": "Contoso"})
    gone = records.create(
        "contact",
        {
            "lastname": "Leaving",
            "jobtitle": "Tech",
            "parentcustomerid": EntityRef("account", account),
        },
    )
    child = records.create(
        "contact", {"lastname": "Child", "parentcustomerid": EntityRef("contact", gone)}
    )
    bystander = records.create(
        "contact", {"lastname": "Other", "parentcustomerid": EntityRef("account", account)}
    )
    pointing = records.create("account", {"name": "Fabrikam", "primarycontactid": gone})
    workorder = records.create(
        "workorder", {"name": "WO-1", "serviceaccountid": account, "primarycontactid": gone}
    )
    before = {
        (t, i): records.retrieve(t, i)
        for t, i in (
            ("contact", child),
            ("contact", bystander),
            ("account", pointing),
            ("workorder", workorder),
        )
    }
    old_row = records.retrieve("contact", gone)

    version = records.delete("contact", gone)

    with pytest.raises(RecordNotFound):
        records.retrieve("contact", gone)
    cleared = {
        ("contact", child): ["parentcustomerid", "parentcustomeridtype"],
        ("account", pointing): ["primarycontactid"],
        ("workorder", workorder): ["primarycontactid"],
    }
    for (table, rid), columns in cleared.items():
        row = records.retrieve(table, rid)
        for col in columns:
            assert row[col] is None, (table, col)
        assert row["versionnumber"] > before[(table, rid)]["versionnumber"]
        assert row["versionnumber"] < version
        entry = changes(store, rid)[-1]
        assert entry["operation"] == "update"
        assert entry["version"] == row["versionnumber"]
        assert entry["changed"] == [columns[0]]
        expected_old = {columns[0]: str(gone)}
        if len(columns) == 2:
            expected_old[columns[1]] = "contact"
        assert entry["old"] == expected_old
    # a row pointing elsewhere is untouched
    assert records.retrieve("contact", bystander) == before[("contact", bystander)]
    assert records.retrieve("account", account)["name"] == "Contoso"

    tombstone = changes(store, gone)[-1]
    assert (tombstone["operation"], tombstone["version"]) == ("delete", version)
    assert tombstone["changed"] is None
    assert tombstone["old"] == {k: jsonable(v) for k, v in old_row.items()}
    assert tombstone["old"]["jobtitle"] == "Tech"
    assert tombstone["old"]["parentcustomeridtype"] == "account"
    with store.read() as conn:
        assert store.current_version(conn) == version

    # a deleted row's many-to-many links go too, each as a disassociate of its own
    team = records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    link = records.associate("teammembership_association", SYSTEM_USER_ID, team)
    team_version = records.delete("team", team)
    assert records.retrieve_multiple("teammembership", where={"teamid": team}) == []
    link_log = changes(store, link)
    assert [c["operation"] for c in link_log] == ["associate", "disassociate"]
    assert link_log[-1]["old"]["teamid"] == str(team)
    assert link_log[-1]["old"]["systemuserid"] == str(SYSTEM_USER_ID)
    assert link_log[-1]["version"] < team_version
    assert changes(store, team)[-1]["operation"] == "delete"


def test_delete_is_refused_while_a_required_lookup_points_at_the_row(
    store: Store, records: Records
) -> None:
    account = records.create("account", {"name": "Contoso"})
    records.create(
        "contact", {"lastname": "Smith", "parentcustomerid": EntityRef("account", account)}
    )
    records.create("account", {"name": "Child", "parentaccountid": account})
    workorder = records.create("workorder", {"name": "WO-1", "serviceaccountid": account})
    before = snapshot(store)
    with pytest.raises(BadRequest, match="serviceaccountid"):
        records.delete("account", account)
    assert snapshot(store) == before  # nothing cleared either

    # once the required reference is gone, the delete goes through
    records.delete("workorder", workorder)
    records.delete("account", account)
    assert (
        records.retrieve_multiple(
            "contact", where={"parentcustomerid": EntityRef("account", account)}
        )
        == []
    )


# -- assign ----------------------------------------------------------------------------


def test_assign_moves_the_row_to_the_owner_business_unit(store: Store, records: Records) -> None:
    east = records.create(
        "businessunit", {"name": "East", "parentbusinessunitid": ROOT_BUSINESS_UNIT_ID}
    )
    team = records.create("team", {"name": "East crew", "businessunitid": east})
    assert records.retrieve("team", team)["owningbusinessunit"] == east
    user = records.create("systemuser", {"domainname": "east@example.com", "businessunitid": east})
    account = records.create("account", {"name": "Contoso"})
    row = records.retrieve("account", account)
    assert row["owningbusinessunit"] == ROOT_BUSINESS_UNIT_ID

    version = records.assign("account", account, EntityRef("team", team))
    row = records.retrieve("account", account)
    assert (row["ownerid"], row["owneridtype"], row["owningbusinessunit"]) == (team, "team", east)
    assert row["versionnumber"] == version
    assert changes(store, account)[-1]["operation"] == "assign"

    records.assign("account", account, EntityRef("systemuser", SYSTEM_USER_ID))
    row = records.retrieve("account", account)
    assert (row["ownerid"], row["owneridtype"], row["owningbusinessunit"]) == (
        SYSTEM_USER_ID,
        "systemuser",
        ROOT_BUSINESS_UNIT_ID,
    )

    records.assign("account", account, EntityRef("systemuser", user))
    assert records.retrieve("account", account)["owningbusinessunit"] == east

    # creating with an owner, and changing the owner in an update, do the same
    owned = records.create("contact", {"lastname": "X", "ownerid": EntityRef("team", team)})
    assert records.retrieve("contact", owned)["owningbusinessunit"] == east
    records.update("contact", owned, {"ownerid": EntityRef("systemuser", SYSTEM_USER_ID)})
    assert records.retrieve("contact", owned)["owningbusinessunit"] == ROOT_BUSINESS_UNIT_ID

    before = snapshot(store)
    with pytest.raises(LookupNotFound):
        records.assign("account", account, EntityRef("team", uuid.uuid4()))
    with pytest.raises(WrongType):
        records.assign("account", account, EntityRef("account", account))
    with pytest.raises(BadRequest):
        records.assign("account", account, team)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        records.assign("team", team, EntityRef("systemuser", user))  # business-owned
    with pytest.raises(RecordNotFound):
        records.assign("account", uuid.uuid4(), EntityRef("team", team))
    assert snapshot(store) == before


# -- missing and duplicate rows --------------------------------------------------------


def test_missing_and_duplicate_rows(store: Store, records: Records) -> None:
    account = records.create("account", {"name": "Contoso"})
    missing = uuid.uuid4()
    before = snapshot(store)
    for action in (
        lambda: records.update("account", missing, {"name": "x"}),
        lambda: records.update("account", str(missing), {"name": "x"}),
        lambda: records.delete("account", missing),
        lambda: records.retrieve("account", missing),
        lambda: records.assign("account", missing, EntityRef("systemuser", SYSTEM_USER_ID)),
    ):
        with pytest.raises(RecordNotFound) as info:
            action()
        assert info.value.record_id == missing
        assert info.value.status == 404
    with pytest.raises(BadRequest):
        records.update("account", "not-a-guid", {"name": "x"})

    for same in (account, str(account)):
        with pytest.raises(PreconditionFailed) as failed:
            records.create("account", {"name": "Again", "accountid": same})
        assert failed.value.status == 412
    assert snapshot(store) == before

    chosen = uuid.uuid4()
    assert records.create("account", {"name": "Chosen id", "accountid": str(chosen)}) == chosen
    assert records.retrieve("account", chosen)["accountid"] == chosen


def test_deleting_a_row_that_points_at_itself(store: Store, records: Records) -> None:
    """No pointless update of a row about to go: one delete change, and the tombstone keeps
    the self link as it was."""
    c = records.create("contact", {"lastname": "Loop"})
    records.update("contact", c, {"parentcustomerid": EntityRef("contact", c)})
    with store.read() as conn:
        before = store.current_version(conn)
    version = records.delete("contact", c)
    with store.read() as conn:
        rows = conn.execute(sa.select(fs_change).where(fs_change.c.version > before)).all()
    assert [(r.version, r.operation) for r in rows] == [(version, "delete")]
    assert rows[0].old["parentcustomerid"] == str(c)
