"""``fieldsync.types``: the one GUID parser every caller reads outside input with."""

from __future__ import annotations

import uuid

import pytest

from fieldsync.types import as_uuid

G = uuid.UUID("e062b974-7f8d-dc11-9048-0003ff27ac3b")


@pytest.mark.parametrize(
    "text",
    [
        "e062b974-7f8d-dc11-9048-0003ff27ac3b",
        "E062B974-7F8D-DC11-9048-0003FF27AC3B",
        "{e062b974-7f8d-dc11-9048-0003ff27ac3b}",
        "e062b9747f8ddc1190480003ff27ac3b",
        "urn:uuid:e062b974-7f8d-dc11-9048-0003ff27ac3b",
    ],
)
def test_reads_the_forms_uuid_reads(text: str) -> None:
    assert as_uuid(text) == G
    assert as_uuid(G) is G


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not a guid",
        "e062b974-7f8d-dc11-9048-0003ff27ac3",
        " e062b974-7f8d-dc11-9048-0003ff27ac3b",
        "e062b974-7f8d-dc11-9048-0003ff27ac3b\n",
        "٠" * 32,  # Arabic-Indic zeros: uuid.UUID takes them, a GUID has ASCII hex digits
        "+" + "0" * 31,
        "0_" + "0" * 30,
        "x" * 10_000,
        12,
        None,
        b"e062b9747f8ddc1190480003ff27ac3b",
    ],
)
def test_anything_else_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="GUID"):
        as_uuid(value)
