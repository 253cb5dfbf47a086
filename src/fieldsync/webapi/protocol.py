"""The OData wire details, as pure functions: resource paths and their keys, key literals,
``Prefer`` headers, entity tags and the opaque ``$skiptoken``.

>>> [s.name for s in parse_path("EntityDefinitions(LogicalName='account')/Attributes")]
['EntityDefinitions', 'Attributes']
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from fieldsync.errors import BadRequest
from fieldsync.limits import parse_json
from fieldsync.types import as_uuid

API_PREFIX: Final = "/api/data/v9.2"
MAX_PAGE_SIZE: Final = 5000


@dataclass(frozen=True, slots=True)
class Key:
    """A key in parentheses: one value (``accounts(<guid>)``) or named values
    (``accounts(accountnumber='A-1')``, an alternate key)."""

    value: Any = None
    pairs: tuple[tuple[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class Alias:
    """A parameter alias in a key or function parameter (``Query=@p1``); its value is the
    query parameter of that name."""

    name: str


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    key: Key | None = None


_SEGMENT = re.compile(r"([A-Za-z_$][A-Za-z0-9_.$]*)(?:\((.*)\))?", re.DOTALL)
_GUID = re.compile(
    r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?"
)
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is outside single or double quotes and parentheses."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                if quote == "'" and text[i + 1 : i + 2] == "'":
                    i += 1
                else:
                    quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quote or depth:
        raise BadRequest(f"unbalanced quotes or parentheses in {text[:80]!r}")
    parts.append(text[start:])
    return parts


def parse_literal(text: str) -> Any:
    """One key or parameter literal: ``'text'``, a GUID, a number, true, false, null."""
    text = text.strip()
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        body = text[1:-1]
        if re.search(r"(?<!')'(?!')", body.replace("''", "")):
            raise BadRequest(f"bad string literal {text[:80]!r}: double a quote inside a string")
        return body.replace("''", "'")
    if _GUID.fullmatch(text):
        return as_uuid(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    if re.fullmatch(r"@[A-Za-z_][A-Za-z0-9_]*", text):
        return Alias(text)
    if _NUMBER.fullmatch(text):
        if "." not in text:
            return int(text)
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            pass
    raise BadRequest(f"{text[:80]!r} is not a valid key value")


def parse_key(text: str) -> Key:
    items = [p.strip() for p in split_outside_quotes(text, ",")]
    if len(items) == 1 and "=" not in items[0].split("'")[0]:
        return Key(value=parse_literal(items[0]))
    pairs = []
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise BadRequest(f"expected name=value in the key, got {item[:80]!r}")
        pairs.append((name.strip(), parse_literal(value)))
    return Key(pairs=tuple(pairs))


def parse_path(path: str) -> list[Segment]:
    """The segments of a resource path below the service root."""
    return list(_segments(path))


# a request's path is parsed up to three times (the body limit, the file endpoints, the
# routes); the segments are frozen, so one parse serves them all
@functools.lru_cache(maxsize=1024)
def _segments(path: str) -> tuple[Segment, ...]:
    path = path.strip("/")
    if not path:
        return ()
    out = []
    for raw in split_outside_quotes(path, "/"):
        m = _SEGMENT.fullmatch(raw)
        if m is None:
            raise BadRequest(f"{raw[:80]!r} is not a valid resource path segment")
        key = None
        if m.group(2) is not None:
            key = Key() if not m.group(2).strip() else parse_key(m.group(2))
        out.append(Segment(m.group(1), key))
    return tuple(out)


def parse_prefer(header: str) -> dict[str, str]:
    """``Prefer`` preferences by lowercase name; commas inside quotes do not split."""
    out: dict[str, str] = {}
    if not header:
        return out
    for part in split_outside_quotes(header, ","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def page_size(prefer: dict[str, str]) -> int:
    raw = prefer.get("odata.maxpagesize")
    if raw is None:
        return MAX_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise BadRequest(f"odata.maxpagesize must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def wants_annotation(prefer: dict[str, str], name: str) -> bool:
    """Whether ``odata.include-annotations`` asks for annotation ``name`` (``*`` and
    ``Namespace.*`` patterns included)."""
    patterns = [p.strip() for p in prefer.get("odata.include-annotations", "").split(",")]
    for p in patterns:
        if p == "*" or p == name or (p.endswith(".*") and name.startswith(p[:-1])):
            return True
    return False


def etag(version: int) -> str:
    return f'W/"{version}"'


def etag_version(header: str) -> int | None:
    """The version in ``W/"<version>"`` (or ``"<version>"``); None if it is not one."""
    m = re.fullmatch(r'\s*(?:W/)?"(\d{1,19})"\s*', header)
    return int(m.group(1)) if m else None


def encode_skiptoken(offset: int) -> str:
    raw = json.dumps({"o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = parse_json(base64.urlsafe_b64decode(padded.encode("ascii")), max_depth=2)
        offset = data["o"]
    except (BadRequest, ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError):
        raise BadRequest("$skiptoken is not one this server issued") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 10**9:
        raise BadRequest("$skiptoken is not one this server issued")
    return offset
