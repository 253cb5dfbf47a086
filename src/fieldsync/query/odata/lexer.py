"""The ``$filter`` tokenizer and the text helpers every query option uses: positions in
messages (counted from 1), splitting at commas outside quotes and brackets."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from fieldsync.errors import QueryError
from fieldsync.schema.model import (
    ColumnType,
)
from fieldsync.types import as_uuid

T = ColumnType


def fail_at(message: str, pos: int, where: str) -> NoReturn:
    raise QueryError(f"{message} at character {pos + 1} of {where}")


def show(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message (text with quotes in it shows as written)."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text if "'" in text or '"' in text else f"'{text}'"


def shorten(text: str, limit: int = 40) -> str:
    """A literal as written, shortened for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def a_or_an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_outside(text: str, sep: str, where: str, offset: int = 0) -> list[tuple[str, int]]:
    """``text`` split at ``sep`` outside parentheses, brackets and quotes: (part, position)."""
    parts: list[tuple[str, int]] = []
    depth = 0
    start = 0
    i = 0
    opened: list[int] = []
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            end = string_end(text, i)
            if end < 0:
                fail_at("unterminated string", offset + i, where)
            i = end
            continue
        if ch in "([":
            depth += 1
            opened.append(i)
        elif ch in ")]":
            if depth == 0:
                fail_at(f"unbalanced {ch!r}", offset + i, where)
            depth -= 1
            opened.pop()
        elif ch == sep and depth == 0:
            parts.append((text[start:i], offset + start))
            start = i + 1
        i += 1
    if depth:
        fail_at(f"unclosed {text[opened[-1]]!r}", offset + opened[-1], where)
    parts.append((text[start:], offset + start))
    return parts


def string_end(text: str, i: int) -> int:
    """The index after the string literal starting at ``text[i]``, or -1 if unterminated."""
    quote = text[i]
    j = i + 1
    while j < len(text):
        ch = text[j]
        if quote == '"' and ch == "\\":
            j += 2
            continue
        if ch == quote:
            if quote == "'" and j + 1 < len(text) and text[j + 1] == "'":
                j += 2
                continue
            return j + 1
        j += 1
    return -1


def comma_items(text: str, where: str) -> list[tuple[str, int]]:
    """Comma-separated items, stripped, with the position of each; none may be empty."""
    if not text.strip():
        fail_at(f"{where} is empty", 0, where)
    out = []
    for part, pos in split_outside(text, ",", where):
        stripped = part.strip()
        lead = len(part) - len(part.lstrip())
        if not stripped:
            fail_at("empty item", pos + lead, where)
        out.append((stripped, pos + lead))
    return out


@dataclass(frozen=True, slots=True)
class Tok:
    """kind: ident alias string jstring int num guid datetime date bool null, a punctuation
    character, or eof. ``value`` is the parsed literal (``int``/``num`` keep their text)."""

    kind: str
    text: str
    pos: int
    value: Any = None


_HEX = "[0-9A-Fa-f]"
GUID = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?![\w-])")
DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,12})?)?(?:[Zz]|[+-]\d{2}:\d{2})?(?![\w:.])"
)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\w:.-])")
NUMBER = re.compile(r"-?\d{1,40}(\.\d{1,40})?([eE][+-]?\d{1,4})?([mMdDfFlL]?)(?![\w.])")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ALIAS = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*")
_JUNK = re.compile(r"[\w.:+-]+")
_PUNCT: Final = frozenset("(),[]=/:")
_SPACE: Final = frozenset(" \t\r\n")
_TYPED_PREFIXES: Final = frozenset({"guid", "datetime", "datetimeoffset", "date"})
LITERALS: Final = frozenset(
    {"string", "jstring", "int", "num", "guid", "datetime", "date", "bool", "null"}
)


def literal(kind: str, text: str, body: str, pos: int, where: str) -> Tok:
    """A guid, datetime, date or number token from its spelling ``body``."""
    try:
        if kind == "guid":
            return Tok("guid", text, pos, as_uuid(body))
        if kind == "datetime":
            return Tok("datetime", text, pos, dt.datetime.fromisoformat(body.upper()))
        if kind == "date":
            return Tok("date", text, pos, dt.date.fromisoformat(body))
    except ValueError:
        fail_at(f"{show(text)} is not a valid {kind}", pos, where)
    m = NUMBER.fullmatch(body)
    assert m is not None
    fraction, exponent, suffix = m.group(1), m.group(2), m.group(3).lower()
    number = body[: len(body) - len(suffix)] if suffix else body
    integral = not fraction and not exponent and suffix in ("", "l")
    return Tok("int" if integral else "num", text, pos, number)


def tokenize(text: str, where: str) -> list[Tok]:
    tokens: list[Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
            continue
        if ch in _PUNCT:
            tokens.append(Tok(ch, ch, i))
            i += 1
            continue
        if ch in "'\"":
            end = string_end(text, i)
            if end < 0:
                fail_at("unterminated string", i, where)
            raw = text[i:end]
            if ch == "'":
                tokens.append(Tok("string", raw, i, raw[1:-1].replace("''", "'")))
            else:
                try:
                    value = json.loads(raw)
                except ValueError:
                    fail_at(f"{show(raw)} is not a valid double-quoted string", i, where)
                tokens.append(Tok("jstring", raw, i, value))
            i = end
            continue
        m = GUID.match(text, i)
        kind = "guid"
        if m is None:
            m, kind = DATETIME.match(text, i), "datetime"
        if m is None:
            m, kind = DATE.match(text, i), "date"
        if m is None:
            m, kind = NUMBER.match(text, i), "number"
        if m is not None:
            tokens.append(literal(kind, m.group(), m.group(), i, where))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m is not None:
            word = m.group()
            end = m.end()
            if word.lower() in _TYPED_PREFIXES and end < n and text[end] == "'":
                close = string_end(text, end)
                if close < 0:
                    fail_at("unterminated string", end, where)
                body = text[end + 1 : close - 1]
                kind = "datetime" if word.lower() == "datetimeoffset" else word.lower()
                tokens.append(literal(kind, text[i:close], body.strip(), i, where))
                i = close
                continue
            tokens.append(Tok("ident", word, i))
            i = end
            continue
        m = _ALIAS.match(text, i)
        if m is not None:
            tokens.append(Tok("alias", m.group(), i))
            i = m.end()
            continue
        junk = _JUNK.match(text, i)
        if junk is not None and ch.isdigit():
            fail_at(f"{show(junk.group())} is not a valid number, date or GUID", i, where)
        fail_at(f"unexpected character {ch!r}", i, where)
    tokens.append(Tok("eof", "", n))
    return tokens
