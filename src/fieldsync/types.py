"""Named types shared by every layer."""

from __future__ import annotations

import enum
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


def as_uuid(value: object) -> uuid.UUID:
    """Parse a UUID from a UUID or a string; raise ``ValueError`` otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        return uuid.UUID(value)
    raise ValueError(f"expected a UUID, got {type(value).__name__}")
