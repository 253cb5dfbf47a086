"""The portal's session: the sign-in tokens in a signed cookie, and the CSRF token of its
forms.

The cookie holds the access and refresh tokens the authenticator issued at sign-in (so a
session is exactly an API session: revoking it, disabling the user or a password change ends
it) and a random CSRF token. It is signed with a key derived from the store's secret, so any
server process reads it, and it is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` over
HTTPS). Every form repeats the CSRF token in a hidden field; a POST without the token of its
session is refused before anything runs.

An expired access token is refreshed on the next page. Two pages loading at once both
refresh with the same refresh token; the authenticator's grace period for a just-rotated
token gives both the same successor, so neither signs the user out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from urllib.parse import parse_qs

import orjson

COOKIE = "fieldsync_portal"


@dataclass(frozen=True)
class Session:
    csrf: str
    access: str = ""
    refresh: str = ""

    @classmethod
    def new(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(24))

    def signed_in(self, access: str, refresh: str) -> Session:
        """A fresh session after sign-in (a new CSRF token too)."""
        return Session(csrf=secrets.token_urlsafe(24), access=access, refresh=refresh)

    def with_tokens(self, access: str, refresh: str) -> Session:
        return replace(self, access=access, refresh=refresh)


class Signer:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"fieldsync-portal-session:" + secret.encode()).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def dump(self, session: Session) -> str:
        body = base64.urlsafe_b64encode(
            orjson.dumps({"c": session.csrf, "a": session.access, "r": session.refresh})
        ).rstrip(b"=")
        mac = base64.urlsafe_b64encode(self._mac(body)).rstrip(b"=")
        return (body + b"." + mac).decode()

    def load(self, value: str | None) -> Session | None:
        """The session in a cookie value, ``None`` if absent or not one this server signed."""
        if not value or value.count(".") != 1 or len(value) > 8192:
            return None
        body, _, mac = value.encode().partition(b".")
        try:
            given = base64.urlsafe_b64decode(mac + b"=" * (-len(mac) % 4))
            data = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not hmac.compare_digest(given, self._mac(body)) or not isinstance(data, dict):
            return None
        parts = [data.get(k) for k in ("c", "a", "r")]
        if not all(isinstance(p, str) for p in parts) or not parts[0]:
            return None
        return Session(csrf=str(parts[0]), access=str(parts[1]), refresh=str(parts[2]))


class Form:
    """A posted form (``application/x-www-form-urlencoded``): one or many values per name."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    @classmethod
    def parse(cls, body: bytes) -> Form:
        text = body.decode("utf-8", errors="strict")
        return cls(parse_qs(text, keep_blank_values=True, max_num_fields=2000))

    def get(self, name: str, default: str = "") -> str:
        values = self._values.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return [v for v in self._values.get(name, []) if v]

    def flag(self, name: str) -> bool:
        return self.get(name) in ("on", "true", "1", "yes")

    def __contains__(self, name: str) -> bool:
        return name in self._values


def csrf_matches(session: Session | None, form: Form) -> bool:
    return session is not None and hmac.compare_digest(
        session.csrf.encode(), form.get("csrf").encode()
    )
