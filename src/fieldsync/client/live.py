"""Live sync on the device: hold the server's change stream, sync the tables it names.

    stop = threading.Event()
    device.live(stop)          # blocks until stop is set; run it in a thread

On connect (``ready``) the device syncs every table, since changes made while it was away were
not announced; on ``changes`` it syncs the named tables; the profile's intervals stay the floor
(checked on every event, keep-alives included). A lost connection, a server error or a refused
token retries with exponential backoff and jitter: attempt *n* waits a random time between
half and all of ``min(cap, base * 2**n)``, so a fleet that lost its server does not come back
in step. Signing in again (an expired session) or a disabled user ends the loop.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import httpx
import orjson

from fieldsync.client.transport import (
    AccessRemoved,
    BytesTransport,
    DeviceError,
    Offline,
    ServerError,
    SignInRequired,
)

log = logging.getLogger(__name__)


def backoff(attempt: int, *, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 is the first retry)."""
    ceiling: float = min(cap, base * 2.0 ** min(attempt, 32))
    return float(ceiling * (0.5 + 0.5 * rand()))


def events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Server-sent events as (event, data); a comment (a keep-alive) comes as ("", "")."""
    name, data = "", list[str]()
    for line in lines:
        if not line:
            if name or data:
                yield name or "message", "\n".join(data)
            name, data = "", list[str]()
        elif line.startswith(":"):
            yield "", ""
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


class Syncable(Protocol):
    """What the live loop needs of a device (a :class:`fieldsync.client.Device`)."""

    @property
    def app(self) -> str: ...

    @property
    def device_id(self) -> str: ...

    def http(self) -> BytesTransport: ...

    def sync(self, tables: list[str] | None = None) -> Any: ...

    def due_tables(self) -> list[str]: ...

    def pending_changes(self) -> int: ...


class LiveSync:
    """The live loop of one device; ``delays`` records each backoff wait."""

    def __init__(
        self,
        device: Syncable,
        *,
        base: float = 0.5,
        cap: float = 60.0,
        read_timeout: float = 60.0,
        rand: Callable[[], float] = random.random,
        on_event: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.device = device
        self.base, self.cap = base, cap
        self.read_timeout = read_timeout
        self.rand = rand
        self.on_event = on_event
        self.delays: list[float] = []
        self.connects = 0

    def run(self, stop: threading.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                if self._session(stop):
                    attempt = 0
                    continue  # the server ended the stream: reconnect at once
            except (SignInRequired, AccessRemoved):
                raise
            except ServerError as exc:
                if exc.status not in (401, 408, 429, 503):
                    raise
                log.info("live sync refused: %s", exc)
            except (Offline, httpx.TransportError, httpx.StreamError, DeviceError) as exc:
                log.info("live sync lost the server: %s", exc)
            delay = backoff(attempt, base=self.base, cap=self.cap, rand=self.rand)
            attempt += 1
            self.delays.append(delay)
            stop.wait(delay)

    def _session(self, stop: threading.Event) -> bool:
        """One connection; True when it was established and ended cleanly."""
        device = self.device
        transport = device.http()
        timeout = httpx.Timeout(10.0, read=self.read_timeout)
        for retry in (False, True):
            token = transport.tokens.get("access_token", "")
            with transport.client.stream(
                "GET",
                "/sync/v1/live",
                params={"app": device.app, "device": device.device_id},
                headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.status_code == 401 and not retry:
                    transport.refresh()
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                return self._follow(response, stop)
        return False  # pragma: no cover - the loop returns or raises

    def _follow(self, response: httpx.Response, stop: threading.Event) -> bool:
        device = self.device
        for name, data in events(response.iter_lines()):
            if stop.is_set():
                return True
            if name == "ready":
                self.connects += 1
                self._sync(None)
            elif name == "changes":
                self._sync(orjson.loads(data)["tables"])
            elif name == "bye":
                return True
            if name in ("", "ready", "changes"):
                due = device.due_tables()
                if due or device.pending_changes():
                    self._sync(due)
            if self.on_event is not None and name:
                self.on_event(name, list(orjson.loads(data).get("tables", [])) if data else [])
        return True

    def _sync(self, tables: list[str] | None) -> None:
        try:
            self.device.sync(tables)
        except ServerError as exc:
            if isinstance(exc, (SignInRequired, AccessRemoved)):
                raise
            log.info("live sync: a sync failed: %s", exc)


def _error(response: httpx.Response) -> ServerError:
    try:
        err = orjson.loads(response.content)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message = str(response.status_code), response.text[:200]
    if response.status_code >= 500:
        return ServerError(503, code, message)
    return ServerError(response.status_code, code, message)
