"""The demo organisation: a small field-service company to try fieldsync with.

:func:`seed_demo` creates business units, users with a manager hierarchy, regional owner
teams with their members, and about 300 accounts, 900 contacts and 2000 work orders. Content
comes from a fixed random seed and ids from ``uuid5`` of fixed names, so every database gets
the same rows (work order dates are laid out around the day of seeding). Seeding is
idempotent: each step creates only the planned rows whose ids do not exist yet, all in one
transaction, so a second run writes nothing and a failed run leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa

from fieldsync.demo_offline import APP_NAME, seed_offline
from fieldsync.errors import SchemaError
from fieldsync.platform import Platform
from fieldsync.records.service import SYSTEM, Records, acting_as
from fieldsync.schema.builtin import ORGANIZATION_ID, ROOT_BUSINESS_UNIT_ID, SYSTEM_USER_ID
from fieldsync.schema.model import RelationshipKind
from fieldsync.security.model import SecurityContext
from fieldsync.security.roles import BASIC_USER, ENVIRONMENT_MAKER, SYSTEM_ADMINISTRATOR
from fieldsync.store.catalog import fs_credential
from fieldsync.store.store import Store
from fieldsync.types import EntityRef, RecordId, Row

NAMESPACE = uuid.UUID("5f0c7c9e-2b1d-4a8e-9d3b-6a1f0e4c2d71")
SEED = 20240611
BATCH = 500
ACCOUNTS_PER_REGION = 150
CONTACTS_PER_ACCOUNT = 3
WORK_ORDERS = 2000
EMAIL_DOMAIN = "demo.fieldsync.example"
DEMO_LOCK = 0x64656D6F  # advisory lock key on PostgreSQL: concurrent seeds queue up

_T = TypeVar("_T")
Creator = tuple[RecordId, RecordId]
"""Who creates a row: (user, business unit)."""
SYSTEM_CREATOR: Creator = (SYSTEM_USER_ID, ROOT_BUSINESS_UNIT_ID)


def demo_id(kind: str, key: str) -> RecordId:
    """The fixed id of one demo row."""
    return uuid.uuid5(NAMESPACE, f"{kind}:{key}")


@dataclass(frozen=True, slots=True)
class _Unit:
    key: str
    name: str
    parent: str | None
    description: str


@dataclass(frozen=True, slots=True)
class _User:
    username: str
    first: str
    last: str
    title: str
    unit: str | None
    manager: str | None


@dataclass(frozen=True, slots=True)
class _City:
    name: str
    lat: float
    lon: float
    phone: str
    postcodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Region:
    unit: str
    team: str
    manager: str
    dispatcher: str
    technicians: tuple[str, ...]
    cities: tuple[_City, ...]


UNITS = (
    _Unit("fieldservice", "Field Service", None, "Installation, maintenance and repair."),
    _Unit("north", "North Region", "fieldservice", "Field operations in the north."),
    _Unit("south", "South Region", "fieldservice", "Field operations in the south."),
    _Unit("sales", "Sales", None, "New business and service contracts."),
)

USERS = (
    _User("admin", "Morgan", "Blake", "IT Administrator", None, None),
    _User("diana", "Diana", "Reyes", "Director of Field Service", "fieldservice", None),
    _User("nora", "Nora", "Lindqvist", "North Region Manager", "north", "diana"),
    _User("samuel", "Samuel", "Okafor", "South Region Manager", "south", "diana"),
    _User("priya", "Priya", "Shah", "Dispatcher", "north", "nora"),
    _User("marco", "Marco", "Bianchi", "Dispatcher", "south", "samuel"),
    _User("lena", "Lena", "Novak", "Senior Field Technician", "north", "nora"),
    _User("tom", "Tom", "Fletcher", "Field Technician", "north", "nora"),
    _User("oscar", "Oscar", "Reid", "Field Technician", "north", "nora"),
    _User("carlos", "Carlos", "Mendes", "Senior Field Technician", "south", "samuel"),
    _User("fatima", "Fatima", "Haddad", "Field Technician", "south", "samuel"),
    _User("jake", "Jake", "Turner", "Apprentice Technician", "south", "samuel"),
    _User("sophie", "Sophie", "Laurent", "Sales Manager", "sales", None),
    _User("raj", "Raj", "Malhotra", "Account Executive", "sales", "sophie"),
)

# Phone numbers are in Ofcom's ranges reserved for drama, so none of them rings anyone.
REGIONS = (
    _Region(
        "north",
        "North Field Team",
        "nora",
        "priya",
        ("lena", "tom", "oscar"),
        (
            _City("Manchester", 53.4808, -2.2426, "+44 161 496 0", ("M1", "M2", "M4", "M14")),
            _City("Leeds", 53.8008, -1.5491, "+44 113 496 0", ("LS1", "LS2", "LS6", "LS11")),
            _City("Newcastle upon Tyne", 54.9783, -1.6178, "+44 191 498 0", ("NE1", "NE4")),
            _City("Liverpool", 53.4084, -2.9916, "+44 151 496 0", ("L1", "L3", "L8", "L17")),
            _City("Sheffield", 53.3811, -1.4701, "+44 114 496 0", ("S1", "S2", "S10")),
            _City("Edinburgh", 55.9533, -3.1883, "+44 131 496 0", ("EH1", "EH3", "EH6")),
            _City("Glasgow", 55.8642, -4.2518, "+44 141 496 0", ("G1", "G2", "G3", "G12")),
        ),
    ),
    _Region(
        "south",
        "South Field Team",
        "samuel",
        "marco",
        ("carlos", "fatima", "jake"),
        (
            _City("London", 51.5072, -0.1276, "+44 20 7946 0", ("EC1A", "SE1", "N1", "E14")),
            _City("Bristol", 51.4545, -2.5879, "+44 117 496 0", ("BS1", "BS2", "BS8")),
            _City("Reading", 51.4543, -0.9781, "+44 118 496 0", ("RG1", "RG2", "RG30")),
            _City("Cardiff", 51.4816, -3.1791, "+44 29 2018 0", ("CF10", "CF11", "CF24")),
            _City("Southampton", 50.9097, -1.4044, "+44 1632 960", ("SO14", "SO15")),
            _City("Brighton", 50.8225, -0.1372, "+44 1632 960", ("BN1", "BN2", "BN3")),
        ),
    ),
)

# fmt: off
COMPANY_PREFIXES = (
    "Pennine", "Harbour", "Riverside", "Oakfield", "Ashworth", "Granite", "Northgate", "Meridian",
    "Kestrel", "Beacon", "Highfield", "Redbrick", "Willow", "Summit", "Lakeside", "Ironbridge",
    "Thornbury", "Castlegate", "Fairview", "Brookside", "Bluebell", "Greenway", "Heron",
    "Millstone", "Kingsway", "Westfield", "Silverdale", "Hawthorn", "Crown", "Elmwood", "Falcon",
    "Sterling", "Cobalt", "Orchard", "Stonebridge", "Copperfield", "Marlow", "Foxglove", "Parkside",
    "Anchor",
)
INDUSTRIES: dict[int, tuple[int, tuple[str, ...]]] = {
    1: (4, ("Accountants", "Tax Advisers", "Audit Services")),
    2: (6, ("Farms", "Growers", "Agri Supplies", "Dairy")),
    3: (14, ("Construction", "Builders", "Developments", "Civils")),
    4: (10, ("Energy", "Solar", "Power Systems", "Renewables")),
    5: (16, ("Medical Centre", "Care Homes", "Dental Care", "Health Clinic")),
    6: (22, ("Engineering", "Fabrication", "Components", "Plastics", "Metalworks")),
    7: (18, ("Stores", "Foods", "Outfitters", "Garden Centre", "Home & Hardware")),
    8: (10, ("Logistics", "Haulage", "Freight", "Coaches")),
}
LEGAL_FORMS = ("Ltd", "Ltd", "Ltd", "Ltd", "plc", "Group", "")
STREETS = (
    "High Street", "Station Road", "Church Lane", "Mill Lane", "Victoria Road", "Park Road",
    "Queen Street", "King Street", "London Road", "Albert Road", "Canal Street", "Market Street",
    "Bridge Street", "York Road", "Dock Road", "Commercial Way",
)
POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
FIRST_NAMES = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Freya", "Lily", "Ella", "Sophia", "Emily",
    "Chloe", "Ruby", "Aisha", "Anjali", "Zara", "Hannah", "Lucy", "Megan", "Niamh", "Oliver",
    "George", "Harry", "Jack", "Noah", "Leo", "Arthur", "Owen", "Charlie", "Jacob", "Thomas",
    "James", "William", "Mohammed", "Ethan", "Daniel", "Rhys", "Callum", "Finlay", "Kwame",
)
LAST_NAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Thomas", "Clarke", "Jackson", "Wood", "Harris", "Edwards", "Turner", "Martin", "Cooper",
    "Hill", "Ward", "Hughes", "Moore", "Clark", "King", "Harrison", "Lewis", "Baker", "Lee",
    "Allen", "Morris", "Khan", "Campbell", "Murray", "O'Brien", "MacLeod", "Okoye", "Nowak",
    "Kowalski", "Singh",
)
JOB_TITLES = (
    "Facilities Manager", "Operations Manager", "Site Supervisor", "Maintenance Engineer",
    "Office Manager", "Procurement Lead", "Health and Safety Officer", "Managing Director",
    "Finance Director", "Building Services Manager", "Estates Manager", "Plant Manager",
    "Practice Manager", "Store Manager", "Logistics Coordinator",
)
ASSETS = (
    "boiler", "air handling unit", "chiller", "rooftop HVAC unit", "backup generator",
    "fire alarm panel", "refrigeration unit", "goods lift", "air compressor", "solar inverter",
    "water heater", "extraction system",
)
FAULTS = (
    "not starting", "making a grinding noise", "showing a fault code", "leaking",
    "tripping the breaker", "running hot", "shutting down intermittently",
)
ACCESS_NOTES = (
    "Report to reception and sign in.", "Parking at the rear of the building.",
    "The dispatcher has the key safe code.", "Site induction required on arrival.",
    "PPE required: hard hat and hi-vis.", "Call the site contact 30 minutes before arrival.",
)
# fmt: on
INSPECTION, REPAIR, INSTALLATION, MAINTENANCE, EMERGENCY = 1, 2, 3, 4, 5
INCIDENT_WEIGHTS = {INSPECTION: 20, REPAIR: 35, INSTALLATION: 10, MAINTENANCE: 28, EMERGENCY: 7}
INCIDENT_MINUTES = {INSPECTION: 60, REPAIR: 120, INSTALLATION: 240, MAINTENANCE: 90, EMERGENCY: 120}
UNSCHEDULED, SCHEDULED, IN_PROGRESS, COMPLETED, POSTED, CANCELED = range(690970000, 690970006)
LABOUR_RATE = Decimal("85.00")
CENT = Decimal("0.01")


@dataclass(slots=True)
class _Plan:
    """Every demo row, in creation order, with the caller that creates it."""

    units: list[Row] = field(default_factory=list)
    users: list[Row] = field(default_factory=list)
    teams: list[Row] = field(default_factory=list)
    memberships: list[tuple[RecordId, RecordId]] = field(default_factory=list)
    accounts: list[tuple[Creator, Row]] = field(default_factory=list)
    contacts: list[tuple[Creator, Row]] = field(default_factory=list)
    primary_contacts: dict[RecordId, tuple[Creator, RecordId]] = field(default_factory=dict)
    workorders: list[tuple[Creator, Row]] = field(default_factory=list)


def seed_demo(platform: Platform, *, today: dt.date | None = None) -> str:
    """Create whatever of the demo organisation is missing; return a report of what exists
    and how to sign in.

    ``today`` anchors work order dates (default: the current UTC date)."""
    data = _seed_data(platform, today)
    granted, roles = _seed_security(platform)
    offline = seed_offline(platform, roles)
    made = f"created {', '.join(offline)}" if offline else "already present"
    return (
        f"{data}\n\n{_row_counts(platform.store)}\n\n"
        f"Offline: app {APP_NAME!r} with a published profile ({made}).\n\n"
        + _sign_in_report(granted)
    )


def _seed_data(platform: Platform, today: dt.date | None) -> str:
    store = platform.store
    relationship, user_first = _membership_relationship(store)
    records = platform.records
    anchor = today or dt.datetime.now(dt.UTC).date()

    def work(conn: sa.Connection) -> str:
        created: dict[str, int] = {}
        if store.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": DEMO_LOCK})
        plan = _plan(anchor, _user_ids(store, conn))

        def create(table: str, rows: list[tuple[Creator, Row]]) -> list[RecordId]:
            ids = _create_missing(store, records, conn, table, rows)
            created[table] = created.get(table, 0) + len(ids)
            return ids

        create("businessunit", [(SYSTEM_CREATOR, r) for r in plan.units])
        create("systemuser", [(SYSTEM_CREATOR, r) for r in plan.users])
        create("team", [(SYSTEM_CREATOR, r) for r in plan.teams])
        links = _existing_links(store, conn, relationship)
        for user_id, team_id in plan.memberships:
            if (user_id, team_id) not in links:
                pair = (user_id, team_id) if user_first else (team_id, user_id)
                records.associate(relationship, *pair, caller=SYSTEM, conn=conn)
                created["teammembership"] = created.get("teammembership", 0) + 1
        new_accounts = create("account", plan.accounts)
        create("contact", plan.contacts)
        by_creator: dict[Creator, list[tuple[RecordId | str, dict[str, Any]]]] = defaultdict(list)
        for account_id in new_accounts:
            creator, contact_id = plan.primary_contacts[account_id]
            by_creator[creator].append((account_id, {"primarycontactid": contact_id}))
        for creator, changes in by_creator.items():
            for chunk in _chunks(changes, BATCH):
                records.update_many("account", chunk, caller=_caller(creator), conn=conn)
        create("workorder", plan.workorders)
        return _report(store, conn, created)

    return store.transact(work)


def _membership_relationship(store: Store) -> tuple[str, bool]:
    """The many-to-many relationship over ``teammembership``, and whether users come first."""
    for rel in store.schema.relationships.values():
        if rel.kind is RelationshipKind.MANY_TO_MANY and rel.intersect_table == "teammembership":
            return rel.name, rel.referenced_table == "systemuser"
    raise SchemaError(
        "no many-to-many relationship uses the teammembership table; "
        "run `fieldsync upgrade` with a version that defines it"
    )


def _user_ids(store: Store, conn: sa.Connection) -> dict[str, RecordId]:
    """Each demo username's id: an existing user with that name keeps its own id."""
    sql = store.sql_table("systemuser")
    names = [u.username for u in USERS]
    stmt = sa.select(sql.c.domainname, sql.c.systemuserid).where(sql.c.domainname.in_(names))
    existing: dict[str, RecordId] = dict(conn.execute(stmt).all())
    return {name: existing.get(name, demo_id("systemuser", name)) for name in names}


def _existing_ids(
    store: Store, conn: sa.Connection, table: str, ids: Iterable[RecordId]
) -> set[RecordId]:
    key = store.sql_table(table).c[store.schema.table(table).primary_id]
    found: set[RecordId] = set()
    for chunk in _chunks(list(ids), BATCH):
        found.update(conn.execute(sa.select(key).where(key.in_(chunk))).scalars())
    return found


def _existing_links(
    store: Store, conn: sa.Connection, relationship: str
) -> set[tuple[RecordId, RecordId]]:
    """Team memberships as (user, team) pairs."""
    rel = store.schema.relationships[relationship]
    sql = store.sql_table(rel.intersect_table)
    rows = conn.execute(sa.select(sql.c[rel.referenced_column], sql.c[rel.referencing_column]))
    if rel.referenced_table == "systemuser":
        return {(a, b) for a, b in rows}
    return {(b, a) for a, b in rows}


def _create_missing(
    store: Store,
    records: Records,
    conn: sa.Connection,
    table: str,
    rows: list[tuple[Creator, Row]],
) -> list[RecordId]:
    """Create the rows whose ids do not exist yet, in batches per creator; return their ids."""
    pk = store.schema.table(table).primary_id
    existing = _existing_ids(store, conn, table, (row[pk] for _, row in rows))
    by_creator: dict[Creator, list[Row]] = defaultdict(list)
    for creator, row in rows:
        if row[pk] not in existing:
            by_creator[creator].append(row)
    created: list[RecordId] = []
    for creator, todo in by_creator.items():
        for chunk in _chunks(todo, BATCH):
            created += records.create_many(table, chunk, caller=_caller(creator), conn=conn)
    return created


def _caller(creator: Creator) -> SecurityContext:
    """A trusted caller whose writes are recorded as the creator's."""
    return SYSTEM if creator == SYSTEM_CREATOR else acting_as(*creator)


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- the plan ---------------------------------------------------------------------------


def _plan(today: dt.date, user_ids: dict[str, RecordId]) -> _Plan:
    rng = random.Random(SEED)
    plan = _Plan()
    unit_ids = {u.key: demo_id("businessunit", u.key) for u in UNITS}
    for unit in UNITS:
        parent = unit_ids[unit.parent] if unit.parent else ROOT_BUSINESS_UNIT_ID
        plan.units.append(
            {
                "businessunitid": unit_ids[unit.key],
                "name": unit.name,
                "parentbusinessunitid": parent,
                "description": unit.description,
                "isdisabled": False,
            }
        )
    for n, user in enumerate(USERS):
        plan.users.append(
            {
                "systemuserid": user_ids[user.username],
                "domainname": user.username,
                "fullname": f"{user.first} {user.last}",
                "firstname": user.first,
                "lastname": user.last,
                "internalemailaddress": f"{user.username}@{EMAIL_DOMAIN}",
                "title": user.title,
                "mobilephone": f"+44 7700 900{100 + n:03d}",
                "businessunitid": unit_ids[user.unit] if user.unit else ROOT_BUSINESS_UNIT_ID,
                "parentsystemuserid": user_ids[user.manager] if user.manager else None,
                "isdisabled": False,
            }
        )
    used_names: set[str] = set()
    units = {u.key: u.name for u in UNITS}
    for region in REGIONS:
        unit_id = unit_ids[region.unit]
        team_id = demo_id("team", region.team)
        plan.teams.append(
            {
                "teamid": team_id,
                "name": region.team,
                "teamtype": 0,
                "businessunitid": unit_id,
                "administratorid": user_ids[region.manager],
                "description": f"Owner team of the {units[region.unit]} business unit.",
                "isdisabled": False,
            }
        )
        for username in (region.manager, region.dispatcher, *region.technicians):
            plan.memberships.append((user_ids[username], team_id))
        creator = (user_ids[region.dispatcher], unit_id)
        technicians = [user_ids[t] for t in region.technicians]
        accounts = _accounts(rng, plan, region, creator, team_id, technicians, used_names)
        _workorders(rng, plan, today, creator, technicians, accounts)
    return plan


@dataclass(frozen=True, slots=True)
class _Account:
    id: RecordId
    owner: EntityRef
    contacts: tuple[RecordId, ...]
    lat: float
    lon: float
    contact_titles: tuple[str, ...]


def _accounts(
    rng: random.Random,
    plan: _Plan,
    region: _Region,
    creator: Creator,
    team_id: RecordId,
    technicians: list[RecordId],
    used_names: set[str],
) -> list[_Account]:
    industries = list(INDUSTRIES)
    weights = [INDUSTRIES[i][0] for i in industries]
    out: list[_Account] = []
    for _ in range(ACCOUNTS_PER_REGION):
        industry = rng.choices(industries, weights)[0]
        while True:
            stem = f"{rng.choice(COMPANY_PREFIXES)} {rng.choice(INDUSTRIES[industry][1])}"
            if stem not in used_names:
                used_names.add(stem)
                break
        legal = rng.choice(LEGAL_FORMS)
        name = f"{stem} {legal}".strip()
        number = len(used_names)
        account_id = demo_id("account", stem)
        domain = re.sub(r"[^a-z0-9]+", "-", stem.lower().replace("&", "and")) + ".example"
        city = rng.choice(region.cities)
        lat = round(city.lat + rng.uniform(-0.06, 0.06), 5)
        lon = round(city.lon + rng.uniform(-0.09, 0.09), 5)
        revenue = Decimal(min(round(rng.lognormvariate(14.8, 1.3), -3), 4e9)).quantize(CENT)
        employees = max(3, int(float(revenue) / rng.uniform(60_000, 180_000)))
        owner = (
            EntityRef("team", team_id)
            if rng.random() < 0.2
            else EntityRef("systemuser", rng.choice(technicians))
        )
        postcode = (
            f"{rng.choice(city.postcodes)} {rng.randint(1, 9)}"
            f"{rng.choice(POSTCODE_LETTERS)}{rng.choice(POSTCODE_LETTERS)}"
        )
        plan.accounts.append(
            (
                creator,
                {
                    "accountid": account_id,
                    "name": name,
                    "accountnumber": f"ACC-{10000 + number}",
                    "telephone1": f"{city.phone}{rng.randint(0, 999):03d}",
                    "emailaddress1": f"info@{domain}",
                    "websiteurl": f"https://www.{domain}",
                    "address1_line1": f"{rng.randint(1, 240)} {rng.choice(STREETS)}",
                    "address1_city": city.name,
                    "address1_postalcode": postcode,
                    "address1_country": "United Kingdom",
                    "address1_latitude": lat,
                    "address1_longitude": lon,
                    "industrycode": industry,
                    "revenue": revenue,
                    "numberofemployees": employees,
                    "creditonhold": rng.random() < 0.04,
                    "ownerid": owner,
                },
            )
        )
        contacts, titles = _contacts(rng, plan, creator, account_id, owner, domain, city)
        plan.primary_contacts[account_id] = (creator, contacts[0])
        out.append(_Account(account_id, owner, contacts, lat, lon, titles))
    return out


def _contacts(
    rng: random.Random,
    plan: _Plan,
    creator: Creator,
    account_id: RecordId,
    owner: EntityRef,
    domain: str,
    city: _City,
) -> tuple[tuple[RecordId, ...], tuple[str, ...]]:
    ids: list[RecordId] = []
    titles = rng.sample(JOB_TITLES, CONTACTS_PER_ACCOUNT)
    names: set[tuple[str, str]] = set()
    while len(names) < CONTACTS_PER_ACCOUNT:
        names.add((rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)))
    for (first, last), title in zip(sorted(names), titles, strict=True):
        contact_id = demo_id("contact", f"{account_id}:{first} {last}")
        ids.append(contact_id)
        email = f"{first}.{last}".lower().replace("'", "")
        birthdate = (
            dt.date(1960, 1, 1) + dt.timedelta(days=rng.randint(0, 40 * 365))
            if rng.random() < 0.6
            else None
        )
        plan.contacts.append(
            (
                creator,
                {
                    "contactid": contact_id,
                    "fullname": f"{first} {last}",
                    "firstname": first,
                    "lastname": last,
                    "jobtitle": title,
                    "emailaddress1": f"{email}@{domain}",
                    "telephone1": f"{city.phone}{rng.randint(0, 999):03d}",
                    "mobilephone": f"+44 7700 900{rng.randint(0, 999):03d}",
                    "birthdate": birthdate,
                    "preferredcontactmethodcode": rng.choices((1, 2, 3, 5), (40, 35, 22, 3))[0],
                    "donotphone": rng.random() < 0.05,
                    "parentcustomerid": EntityRef("account", account_id),
                    "ownerid": owner,
                },
            )
        )
    return tuple(ids), tuple(titles)


def _workorders(
    rng: random.Random,
    plan: _Plan,
    today: dt.date,
    creator: Creator,
    technicians: list[RecordId],
    accounts: list[_Account],
) -> None:
    share = WORK_ORDERS // len(REGIONS)
    first = len(plan.workorders)
    incident_types = list(INCIDENT_WEIGHTS)
    incident_weights = list(INCIDENT_WEIGHTS.values())
    for n in range(first + 1, first + share + 1):
        account = rng.choice(accounts)
        contact_at = rng.randrange(len(account.contacts))
        kinds = [rng.choices(incident_types, incident_weights)[0]]
        if rng.random() < 0.25:
            extra = rng.choice(incident_types)
            if extra not in kinds and EMERGENCY not in (extra, kinds[0]):
                kinds.append(extra)
        emergency = kinds[0] == EMERGENCY
        offset = rng.randint(-1, 2) if emergency else rng.randint(-60, 30)
        status = _status(rng, offset)
        day = today + dt.timedelta(days=offset)
        start = dt.datetime.combine(
            day, dt.time(rng.randint(7, 16), rng.choice((0, 30))), tzinfo=dt.UTC
        )
        minutes = max(30, INCIDENT_MINUTES[kinds[0]] + 30 * rng.randint(-1, 2))
        if account.owner.table == "systemuser" and rng.random() < 0.7:
            owner = account.owner.id
        else:
            owner = rng.choice(technicians)
        worked = status in (COMPLETED, POSTED)
        hours = Decimal(minutes / 60 * rng.uniform(0.7, 1.5)).quantize(CENT) if worked else None
        parts = Decimal(rng.choice((0, 0, 25, 60, 140, 320, 900)) + rng.randint(0, 99))
        amount = (LABOUR_RATE * Decimal(minutes) / 60 + parts).quantize(CENT)
        plan.workorders.append(
            (
                creator,
                {
                    "workorderid": demo_id("workorder", str(n)),
                    "name": f"WO-{n:05d}",
                    "ticketnumber": 100_000 + n,
                    "serviceaccountid": account.id,
                    "primarycontactid": account.contacts[contact_at],
                    "priority": 4 if emergency else rng.choices((1, 2, 3), (20, 60, 20))[0],
                    "systemstatus": status,
                    "incidenttypes": kinds,
                    "scheduledstart": None if status == UNSCHEDULED else start,
                    "duedate": day + dt.timedelta(days=0 if emergency else rng.randint(0, 10)),
                    "estimatedduration": minutes,
                    "totalamount": Decimal(0).quantize(CENT) if status == CANCELED else amount,
                    "laborhours": hours,
                    "latitude": account.lat,
                    "longitude": account.lon,
                    "signedoff": status == POSTED or (status == COMPLETED and rng.random() < 0.85),
                    "instructions": _instructions(
                        rng, kinds[0], account.contact_titles[contact_at]
                    ),
                    "ownerid": EntityRef("systemuser", owner),
                },
            )
        )


def _status(rng: random.Random, offset: int) -> int:
    if offset < -2:
        return rng.choices((COMPLETED, POSTED, CANCELED), (55, 35, 10))[0]
    if offset < 0:
        return rng.choices((COMPLETED, IN_PROGRESS, SCHEDULED, CANCELED), (60, 25, 10, 5))[0]
    if offset == 0:
        return rng.choices((IN_PROGRESS, SCHEDULED, COMPLETED), (50, 40, 10))[0]
    return rng.choices((SCHEDULED, UNSCHEDULED), (80, 20))[0]


def _instructions(rng: random.Random, kind: int, contact_title: str) -> str:
    asset = rng.choice(ASSETS)
    fault = rng.choice(FAULTS)
    task = {
        INSPECTION: f"Annual safety inspection of the {asset}; record readings on the checklist.",
        REPAIR: f"Customer reports the {asset} {fault}. Diagnose and repair.",
        INSTALLATION: f"Install the new {asset} as quoted and take away the old unit.",
        MAINTENANCE: f"Planned maintenance on the {asset}: filters, belts, lubrication.",
        EMERGENCY: f"Emergency call-out: the {asset} {fault}. The site is waiting.",
    }[kind]
    return f"{task} {rng.choice(ACCESS_NOTES)} Ask for the {contact_title.lower()}."


# -- the report -------------------------------------------------------------------------


def _report(store: Store, conn: sa.Connection, created: dict[str, int]) -> str:
    total = sum(created.values())
    if total:
        made = ", ".join(f"{n} {t}" for t, n in created.items() if n)
        lines = [f"Demo organisation seeded: created {made}."]
    else:
        lines = ["Demo organisation already present: nothing to add."]

    units = {
        r.businessunitid: (r.name, r.parentbusinessunitid)
        for r in conn.execute(sa.select(store.sql_table("businessunit")))
    }
    children: dict[RecordId | None, list[RecordId]] = defaultdict(list)
    for uid, (_, parent) in units.items():
        children[parent if parent in units else None].append(uid)
    lines += ["", "Business units:"]

    def walk_units(parent: RecordId | None, depth: int) -> None:
        for uid in sorted(children[parent], key=lambda u: units[u][0]):
            root = " (root)" if uid == ROOT_BUSINESS_UNIT_ID else ""
            lines.append(f"  {'  ' * depth}{units[uid][0]}{root}")
            walk_units(uid, depth + 1)

    walk_units(None, 0)

    users = {r.systemuserid: r for r in conn.execute(sa.select(store.sql_table("systemuser")))}
    rel, _ = _membership_relationship(store)
    members: dict[RecordId, list[str]] = defaultdict(list)
    for user_id, team_id in sorted(_existing_links(store, conn, rel)):
        if user_id in users:
            members[team_id].append(users[user_id].domainname)
    teams = conn.execute(sa.select(store.sql_table("team"))).all()
    if teams:
        lines += ["", "Teams:"]
        for team in sorted(teams, key=lambda t: t.name):
            unit = units.get(team.businessunitid, ("?", None))[0]
            names = ", ".join(sorted(members[team.teamid])) or "no members"
            lines.append(f"  {team.name} ({unit}): {names}")

    reports: dict[RecordId | None, list[RecordId]] = defaultdict(list)
    for uid, user in users.items():
        manager = user.parentsystemuserid
        reports[manager if manager in users and manager != uid else None].append(uid)
    table = [("User name", "Full name", "Title", "Business unit", "Manager")]
    seen: set[RecordId] = set()

    def walk_users(manager: RecordId | None, depth: int) -> None:
        for uid in sorted(reports[manager], key=lambda u: users[u].domainname):
            if uid in seen:
                continue
            seen.add(uid)
            user = users[uid]
            boss = users[manager].domainname if manager is not None else "-"
            table.append(
                (
                    "  " * depth + user.domainname,
                    user.fullname or "",
                    user.title or "",
                    units.get(user.businessunitid, ("?", None))[0],
                    boss,
                )
            )
            walk_users(uid, depth + 1)

    walk_users(None, 0)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["", "Users:"]
    for row in table:
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )

    return "\n".join(lines)


def _row_counts(store: Store) -> str:
    """Rows per table, counted once everything (the offline set-up too) is written."""
    lines = ["Rows per table:"]
    width = max(len(name) for name in store.schema.tables)
    with store.read() as conn:
        for name in sorted(store.schema.tables):
            sql = store.sql_table(name)
            count = conn.execute(sa.select(sa.func.count()).select_from(sql)).scalar_one()
            lines.append(f"  {name:{width}} {count:>6}")
    return "\n".join(lines)


# -- security: roles, role holders, hierarchy, passwords ---------------------------------

DEMO_PASSWORD = "fieldsync-demo"
FIELD_TECHNICIAN = "Field Technician"
DISPATCHER = "Dispatcher"
FIELD_MANAGER = "Field Service Manager"
RECORD_PRIVILEGES = ("create", "read", "write", "delete", "append", "appendto", "assign", "share")
_ORG_READ = {t: {"read": "organization"} for t in ("businessunit", "systemuser", "team")}
DEMO_ROLES: dict[str, dict[str, dict[str, str]]] = {
    FIELD_TECHNICIAN: {
        "account": {
            "read": "businessunit",
            "write": "user",
            "append": "user",
            "appendto": "businessunit",
        },
        "contact": {
            "create": "user",
            "read": "businessunit",
            "write": "user",
            "append": "user",
            "appendto": "businessunit",
        },
        "workorder": {
            "create": "user",
            "read": "user",
            "write": "user",
            "append": "user",
            "appendto": "user",
        },
        **_ORG_READ,
    },
    DISPATCHER: {
        "account": {
            "read": "businessunit",
            "write": "businessunit",
            "appendto": "businessunit",
            "append": "businessunit",
        },
        "contact": {
            "create": "businessunit",
            "read": "businessunit",
            "write": "businessunit",
            "append": "businessunit",
            "appendto": "businessunit",
        },
        "workorder": dict.fromkeys(RECORD_PRIVILEGES, "businessunit"),
        **_ORG_READ,
    },
    FIELD_MANAGER: {
        **{
            t: dict.fromkeys(RECORD_PRIVILEGES, "parentchild")
            for t in ("account", "contact", "workorder")
        },
        **_ORG_READ,
    },
}
USER_ROLES: dict[str, tuple[str, ...]] = {
    "admin": (SYSTEM_ADMINISTRATOR,),
    "diana": (FIELD_MANAGER, ENVIRONMENT_MAKER),
    "nora": (FIELD_MANAGER,),
    "samuel": (FIELD_MANAGER,),
    "priya": (DISPATCHER,),
    "marco": (DISPATCHER,),
    "lena": (FIELD_TECHNICIAN,),
    "tom": (FIELD_TECHNICIAN,),
    "oscar": (FIELD_TECHNICIAN,),
    "carlos": (FIELD_TECHNICIAN,),
    "fatima": (FIELD_TECHNICIAN,),
    "jake": (FIELD_TECHNICIAN,),
    "sophie": (BASIC_USER,),
    "raj": (BASIC_USER,),
}
TEAM_ROLES = {region.team: (FIELD_TECHNICIAN,) for region in REGIONS}


def _seed_security(platform: Platform) -> tuple[list[tuple[str, str]], dict[str, RecordId]]:
    """Roles, who holds them, hierarchy security and passwords; idempotent. Returns the
    (user name, roles) pairs for the sign-in report and the demo roles by name."""
    store, org, records = platform.store, platform.org, platform.records
    role_sql = store.sql_table("role")
    with store.read() as conn:
        roles = {
            name: rid for rid, name in conn.execute(sa.select(role_sql.c.roleid, role_sql.c.name))
        }
    for name, privileges in DEMO_ROLES.items():
        if name not in roles:
            roles[name] = org.role(
                name,
                privileges=privileges,  # type: ignore[arg-type]
                description="Demo role for the field-service organisation.",
            )
    sur, tr = store.sql_table("systemuserroles"), store.sql_table("teamroles")
    with store.read() as conn:
        user_links = {(u, r) for u, r in conn.execute(sa.select(sur.c.systemuserid, sur.c.roleid))}
        team_links = {(t, r) for t, r in conn.execute(sa.select(tr.c.teamid, tr.c.roleid))}
        with_password = set(conn.execute(sa.select(fs_credential.c.userid)).scalars())
        org_row = records.retrieve("organization", ORGANIZATION_ID, conn=conn)
    granted: list[tuple[str, str]] = []
    hashed = ""
    for username, names in USER_ROLES.items():
        user = org.user_id(username)
        for name in names:
            if (user, roles[name]) not in user_links:
                org.assign_role(EntityRef("systemuser", user), roles[name])
        if user not in with_password:
            hashed = hashed or platform.auth.hash_password(DEMO_PASSWORD)
            platform.auth.set_password_hash(user, hashed)
        granted.append((username, ", ".join(names)))
    for team_name, names in TEAM_ROLES.items():
        team = org.team_id(team_name)
        for name in names:
            if (team, roles[name]) not in team_links:
                org.assign_role(EntityRef("team", team), roles[name])
    if not org_row["hierarchysecurity"]:
        org.set_hierarchy(enabled=True, depth=3, managers_write=True)
    return granted, {name: roles[name] for name in DEMO_ROLES}


def _sign_in_report(granted: list[tuple[str, str]]) -> str:
    width = max(len(u) for u, _ in granted)
    lines = [
        "Sign in:",
        f"  every demo user's password is {DEMO_PASSWORD!r}; hierarchy security is on.",
        "",
        *(f"  {user:{width}}  {roles}" for user, roles in granted),
        "",
        "  curl -s http://127.0.0.1:8000/auth/token \\",
        f"       -d grant_type=password -d username=admin -d password={DEMO_PASSWORD}",
        "  fieldsync user token admin      # a long-lived API token for scripts",
    ]
    return "\n".join(lines)
