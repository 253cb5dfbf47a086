from fieldsync.records.service import Records
from fieldsync.types import EntityRef


def test_roundtrip(records: Records) -> None:
    a = records.create("account", {"name": "Contoso", "revenue": "12.5"})
    c = records.create(
        "contact", {"lastname": "Smith", "parentcustomerid": EntityRef("account", a)}
    )
    row = records.retrieve("contact", c)
    assert row["parentcustomerid"] == a
    assert row["parentcustomeridtype"] == "account"
