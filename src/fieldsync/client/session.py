"""The device's session with its server: where it is, who signed in (the tokens), the device
id and app, and whether the server answered last time (kept across runs).

Every call to the server goes through :meth:`Session.call` or :meth:`Session.online`, which
remember whether the server answered; the HTTP itself (token refresh, errors) is
:mod:`fieldsync.client.transport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from fieldsync.client.replica import Replica
from fieldsync.client.transport import BytesTransport, DeviceError, Offline
from fieldsync.sync.protocol import HandshakeAnswer, UserInfo

R = TypeVar("R")


class Session:
    def __init__(
        self,
        replica: Replica,
        *,
        transport: httpx.BaseTransport | None = None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.replica = replica
        self.notify = notify
        self._http_transport = transport
        self._transport: BytesTransport | None = None
        link = replica.get_state("link") or {}
        self.connected = bool(link.get("connected", False))
        self.last_error: str | None = link.get("error")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- who and where ----------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return str(self.replica.get_state("device"))

    @property
    def app(self) -> str:
        return str(self.replica.get_state("app"))

    @property
    def handshake(self) -> HandshakeAnswer:
        data = self.replica.handshake
        if not data:
            raise DeviceError("this device is not set up: log in first")
        found: HandshakeAnswer = data  # type: ignore[assignment]
        return found

    def user(self) -> UserInfo:
        return self.handshake["user"]

    def set_up(self, server: str, app: str, new_device_id: str) -> None:
        """Remember the server and the app; a device id is made once and kept."""
        with self.replica.write() as conn:
            self.replica.set_state(conn, "server", server.rstrip("/"))
            self.replica.set_state(conn, "app", app)
            if self.replica.get_state("device", conn) is None:
                self.replica.set_state(conn, "device", new_device_id)

    # -- HTTP -------------------------------------------------------------------------------

    def http(self) -> BytesTransport:
        if self._transport is None:
            server = self.replica.get_state("server")
            if not server:
                raise DeviceError("this device is not set up: log in first")

            def keep(tokens: dict[str, str]) -> None:
                with self.replica.write() as conn:
                    self.replica.set_state(conn, "tokens", tokens)

            self._transport = BytesTransport(
                server,
                tokens=self.replica.get_state("tokens"),
                on_tokens=keep,
                transport=self._http_transport,
            )
        return self._transport

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON call, remembering whether the server answered."""
        return self.online(lambda http: http.call(method, path, body))

    def online(self, action: Callable[[BytesTransport], R]) -> R:
        """Run ``action`` against the server, remembering whether the server answered."""
        try:
            result = action(self.http())
        except Offline as exc:
            self.link(False, str(exc))
            self.notify()
            raise
        self.link(True, self.last_error)
        return result

    def link(self, connected: bool, error: str | None) -> None:
        """Remember whether the server answered, and the last sync failure, across runs."""
        if (connected, error) == (self.connected, self.last_error):
            return
        self.connected, self.last_error = connected, error
        with self.replica.write() as conn:
            self.replica.set_state(conn, "link", {"connected": connected, "error": error})

    def revoke(self) -> None:
        """Revoke the session's refresh token at the server (quietly, when it cannot)."""
        tokens = self.replica.get_state("tokens") or {}
        if tokens.get("refresh_token"):
            self.http()._send(
                "POST", "/auth/revoke", {"token": tokens["refresh_token"]}, auth=False
            )
