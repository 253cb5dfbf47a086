"""HTTP to a fieldsync server: sign-in, token refresh, JSON calls, and errors a device can act
on (offline, signed out, access removed, refused)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class DeviceError(Exception):
    """Base of the errors the device SDK raises."""


class Offline(DeviceError):
    """The server could not be reached (no network, server down, connection cut)."""


class StorageFull(DeviceError):
    """The device's disk is full: the local write or download page was rolled back whole."""


class ServerError(DeviceError):
    """The server answered with an error (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message


class SignInRequired(ServerError):
    """The tokens are no longer valid: sign in again."""


class AccessRemoved(ServerError):
    """The user may no longer take this app offline (disabled, removed from the profile, app
    no longer offline): the device purges the profile's data."""


class Transport:
    """One server, with the device's tokens; refreshes the access token once on a 401."""

    def __init__(
        self,
        server: str,
        *,
        tokens: dict[str, str] | None = None,
        on_tokens: Callable[[dict[str, str]], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.tokens = dict(tokens or {})
        self.on_tokens = on_tokens
        self.client = httpx.Client(base_url=self.server, timeout=TIMEOUT, transport=transport)
        self.last_size = 0  # bytes of the last response body

    def close(self) -> None:
        self.client.close()

    def sign_in(self, username: str, password: str) -> dict[str, str]:
        data = self._send(
            "POST",
            "/auth/token",
            {"grant_type": "password", "username": username, "password": password},
            auth=False,
        )
        self._store(data)
        return self.tokens

    def _store(self, data: dict[str, Any]) -> None:
        self.tokens = {
            "access_token": str(data["access_token"]),
            "refresh_token": str(data.get("refresh_token", "")),
        }
        if self.on_tokens is not None:
            self.on_tokens(self.tokens)

    def refresh(self) -> None:
        refresh = self.tokens.get("refresh_token")
        if not refresh:
            raise SignInRequired(401, "0x8004AD03", "sign in again")
        try:
            data = self._send(
                "POST",
                "/auth/token",
                {"grant_type": "refresh_token", "refresh_token": refresh},
                auth=False,
            )
        except ServerError as exc:
            if exc.status == 401:
                raise _unauthorised(exc) from None
            raise
        self._store(data)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            return self._send(method, path, body)
        except ServerError as exc:
            if exc.status != 401:
                raise
            if "disabled" in exc.message:
                raise _unauthorised(exc) from None
        self.refresh()
        try:
            return self._send(method, path, body)
        except ServerError as exc:
            if exc.status == 401:
                raise _unauthorised(exc) from None
            raise

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, *, auth: bool = True
    ) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.tokens.get('access_token', '')}"
        content = None if body is None else orjson.dumps(body)
        try:
            response = self.client.request(method, path, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise Offline(f"cannot reach {self.server}: {exc}") from exc
        self.last_size = len(response.content)
        check(response)
        return orjson.loads(response.content) if response.content else None


class BytesTransport(Transport):
    """Transport with the raw-bytes calls that files need: chunks up, ranges down."""

    def send_bytes(self, method: str, path: str, content: bytes, headers: dict[str, str]) -> Any:
        """Send raw bytes; answers the JSON reply (refreshing the token once on a 401)."""

        def send() -> Any:
            response = self._raw(method, path, content=content, headers=headers)
            return orjson.loads(response.content) if response.content else None

        return self._refreshing(send)

    def exchange_bytes(
        self, path: str, content: bytes, headers: dict[str, str]
    ) -> tuple[httpx.Headers, bytes]:
        """POST raw bytes and answer the reply's headers and raw bytes (refreshing the token
        once on a 401)."""

        def send() -> tuple[httpx.Headers, bytes]:
            response = self._raw("POST", path, content=content, headers=headers)
            return response.headers, response.content

        result: tuple[httpx.Headers, bytes] = self._refreshing(send)
        return result

    def fetch(
        self,
        path: str,
        *,
        params: dict[str, str],
        headers: dict[str, str],
        sink: Callable[[bytes], None],
    ) -> httpx.Headers:
        """Stream a GET's body into ``sink`` as it arrives: bytes received before the
        connection breaks stay written (the caller resumes with a Range from there)."""

        def send() -> httpx.Headers:
            auth = {"Authorization": f"Bearer {self.tokens.get('access_token', '')}"}
            try:
                with self.client.stream(
                    "GET", path, params=params, headers={**headers, **auth}
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        check(response)
                    for piece in response.iter_bytes():
                        sink(piece)
                    return response.headers
            except httpx.TransportError as exc:
                raise Offline(f"cannot reach {self.server}: {exc}") from exc

        result: httpx.Headers = self._refreshing(send)
        return result

    def _raw(
        self, method: str, path: str, *, content: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        headers = {**headers, "Authorization": f"Bearer {self.tokens.get('access_token', '')}"}
        try:
            response = self.client.request(method, path, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise Offline(f"cannot reach {self.server}: {exc}") from exc
        check(response)
        return response

    def _refreshing(self, send: Callable[[], Any]) -> Any:
        try:
            return send()
        except ServerError as exc:
            if exc.status != 401:
                raise
            if "disabled" in exc.message:
                raise _unauthorised(exc) from None
        self.refresh()
        try:
            return send()
        except ServerError as exc:
            if exc.status == 401:
                raise _unauthorised(exc) from None
            raise


def check(response: httpx.Response) -> None:
    """Raise what an error answer means to a device: 5xx is the server being away (try
    again later), 4xx a refusal with the server's code and message."""
    if response.status_code < 400:
        return
    try:
        err = orjson.loads(response.content)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message = str(response.status_code), response.text[:200]
    if response.status_code == 503:
        raise Offline(f"the server is unavailable (503): {message}")
    if response.status_code >= 500:
        raise Offline(f"the server failed ({response.status_code}): {message}")
    raise ServerError(response.status_code, code, message)


def _unauthorised(exc: ServerError) -> ServerError:
    if "disabled" in exc.message:
        return AccessRemoved(exc.status, exc.code, exc.message)
    return SignInRequired(exc.status, exc.code, exc.message)
