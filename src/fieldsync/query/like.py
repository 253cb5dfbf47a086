"""Dataverse LIKE patterns: ``%`` any run, ``_`` one character, ``[abc]`` / ``[a-c]`` one of,
``[^abc]`` none of; ``[%]`` ``[_]`` ``[[]`` match those characters literally.

A pattern becomes a plain SQL LIKE when it uses no character classes (the common case, which
indexes and both backends handle natively), and a regular expression otherwise. Matching is
case-insensitive, like Dataverse's default collation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

ESCAPE = "\\"


@dataclass(frozen=True, slots=True)
class Pattern:
    like: str | None  # a SQL LIKE pattern using ESCAPE, or None when a regex is needed
    regex: str  # anchored with ^…$ for PostgreSQL; Python uses fullmatch on ``body``

    @property
    def body(self) -> str:
        return self.regex[1:-1]


def _class_to_regex(body: str) -> str:
    negate = body.startswith("^")
    if negate:
        body = body[1:]
    out: list[str] = []
    for ch in body:
        out.append("\\-" if ch == "-" and out == [] else re.escape(ch) if ch != "-" else "-")
    return "[" + ("^" if negate else "") + "".join(out) + "]"


@lru_cache(maxsize=1024)
def parse_like(pattern: str) -> Pattern:
    """Translate a Dataverse LIKE pattern; an unclosed ``[`` is a literal bracket."""
    like: list[str] | None = []
    regex: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            regex.append(".*")
            if like is not None:
                like.append("%")
        elif ch == "_":
            regex.append(".")
            if like is not None:
                like.append("_")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                literal = "["
                regex.append(re.escape(literal))
                if like is not None:
                    like.append(literal)
                i += 1
                continue
            body = pattern[i + 1 : end]
            if len(body) == 1 and body != "^":
                regex.append(re.escape(body))
                if like is not None:
                    like.append(ESCAPE + body if body in "%_\\" else body)
            else:
                regex.append(_class_to_regex(body))
                like = None
            i = end + 1
            continue
        else:
            regex.append(re.escape(ch))
            if like is not None:
                like.append(ESCAPE + ch if ch == ESCAPE else ch)
        i += 1
    return Pattern(
        like=None if like is None else "".join(like),
        regex="^" + "".join(regex) + "$",
    )


def literal_like(text: str) -> str:
    """``text`` as a Dataverse pattern that matches it literally."""
    return "".join(f"[{c}]" if c in "%_[" else c for c in text)


@lru_cache(maxsize=1024)
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(parse_like(pattern).body, re.DOTALL)
