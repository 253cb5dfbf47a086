"""Download cursors: opaque, signed tokens the server issues and the device stores per table.

A cursor says where a table's download stands and what it was computed against:

- ``phase`` ``"snapshot"``: streaming the whole scope in primary-key order, after ``key``;
  ``head`` is the version the stream started at (every change after it is sent afterwards);
- ``phase`` ``"delta"``: every change up to ``version`` has been sent;
- ``phase`` ``"diff"`` (or ``"diff-in"`` / ``"diff-out"``): the profile was republished and
  only the table's filter changed: the rows entering the scope and the ids of the rows leaving
  it stream in one pass (or the entering rows, then the leaving ids), after ``key``, computed
  against the published version ``old``; then the changes after ``version`` follow under the
  new version, so the rows staying are never sent again;
- ``profile`` and ``pversion``: the published profile (and version) the cursor was issued
  under, so a republish can be answered with the difference;
- ``fingerprint``: the user's security context, ``item``: the profile item (and what it
  depends on), ``registration``: when the device was registered, ``heal``: how many targeted
  re-scopes of the table an inventory report had asked for. When any of them no longer
  matches, the table is re-scoped (a purged device registers anew, so it starts over).

The server keeps no per-device state: everything it needs is in the cursor, signed with the
store's secret so a device cannot forge one (a forged cursor could only make the server send
rows the user may read, but a clear error beats a confusing sync).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import asdict, dataclass
from typing import Literal

import orjson

from fieldsync.errors import BadRequest

Phase = Literal["snapshot", "delta", "diff", "diff-in", "diff-out"]


class BadCursor(BadRequest):
    """A cursor the server did not issue, or issued for another user, device or table."""


@dataclass(frozen=True)
class Cursor:
    table: str
    user: str
    device: str
    phase: Phase
    fingerprint: str
    item: str
    version: int = 0  # delta: changes up to here are sent
    head: int = 0  # snapshot: the version the stream started at
    key: str | None = None  # snapshot: the last primary key sent
    registration: str = ""  # the device registration the cursor was issued to
    profile: str = ""  # the published profile the cursor was issued under
    pversion: int = 0  # and its version
    old: int = 0  # diff phases: the published version the device's rows were chosen by
    heal: int = 0  # the table's targeted re-scopes (fieldsync.sync.inventory) when issued

    def encode(self, secret: bytes) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps(asdict(self))).rstrip(b"=")
        mac = hmac.new(secret, body, hashlib.sha256).digest()[:16]
        return (body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()

    @classmethod
    def decode(cls, token: object, secret: bytes) -> Cursor:
        if not isinstance(token, str) or len(token) > 4096 or token.count(".") != 1:
            raise BadCursor("the download cursor is not one this server issued")
        body, _, mac = token.encode().partition(b".")
        expected = hmac.new(secret, body, hashlib.sha256).digest()[:16]
        try:
            given = base64.urlsafe_b64decode(mac + b"=" * (-len(mac) % 4))
            data = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            raise BadCursor("the download cursor is not one this server issued") from None
        if not hmac.compare_digest(given, expected) or not isinstance(data, dict):
            raise BadCursor("the download cursor is not one this server issued")
        try:
            cursor = cls(**data)
        except TypeError:
            raise BadCursor("the download cursor is not one this server issued") from None
        if cursor.key is not None:
            uuid.UUID(cursor.key)
        return cursor
