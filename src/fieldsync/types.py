"""Named types shared by every layer."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

RecordId: TypeAlias = uuid.UUID
Version: TypeAlias = int
Row: TypeAlias = dict[str, Any]


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""Marks an argument that was not given (as opposed to ``None``, which clears a value)."""


@dataclass(frozen=True, slots=True)
class EntityRef:
    """A reference to one record: the value of a polymorphic lookup such as ``ownerid``.

    >>> EntityRef("team", uuid.UUID(int=1))
    EntityRef(table='team', id=UUID('00000000-0000-0000-0000-000000000001'))
    """

    table: str
    id: RecordId


_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")


def as_uuid(value: object) -> uuid.UUID:
    """The GUID ``value`` is (a UUID, or text in the forms ``uuid.UUID`` reads: with or
    without hyphens and braces, or as ``urn:uuid:…``); ``ValueError`` for anything else.

    Every GUID that comes from outside is read here. Unlike ``uuid.UUID`` it takes ASCII hex
    digits only: no other Unicode digits, no signs.

    >>> as_uuid("{00000000-0000-0000-0000-00000000000A}")
    UUID('00000000-0000-0000-0000-00000000000a')
    >>> as_uuid("٠" * 32)
    Traceback (most recent call last):
    ValueError: '٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠٠' is not a GUID
    """
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        digits = value.replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "")
        if _HEX32.fullmatch(digits):
            return uuid.UUID(digits)
        raise ValueError(f"{value[:60]!r} is not a GUID")
    raise ValueError(f"expected a GUID, got {type(value).__name__}")
