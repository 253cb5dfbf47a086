"""A fault-injecting TCP proxy for HTTP on loopback: latency, bandwidth limits, connections cut
mid-request or mid-response, and responses lost after the server answered.

It runs its own asyncio loop in a thread; the faults are switched at run time:

    proxy = FaultProxy(upstream_port=8000)
    proxy.start()
    proxy.faults = Faults(latency=0.05, cut_request=0.1)   # from now on
    ...
    proxy.stop()

Each connection draws its fate once, when it opens: ``cut_request`` closes it after a random
part of what the client sent (the server never sees a whole request), ``cut_response`` after a
random part of the answer, ``lose_response`` forwards the whole request, waits for the whole
answer, and drops it (the server committed; the client sees a broken connection). Counters say
what was injected, and what status each answer began with (``statuses``: every response passes
here, so a 5xx cannot hide behind a client that retries). ``on_request`` is called with each
request's line and headers as they pass (the reliability suite kills the server when a file transfer
starts).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Faults:
    latency: float = 0.0  # seconds added to each chunk, each way
    bandwidth: int = 0  # bytes per second, each way (0: unlimited)
    cut_request: float = 0.0  # share of connections cut while the request travels
    cut_response: float = 0.0  # share cut while the response travels
    lose_response: float = 0.0  # share whose whole response is dropped


class FaultProxy:
    def __init__(self, upstream_port: int, *, seed: int = 0) -> None:
        self.upstream_port = upstream_port
        self.faults = Faults()
        self.random = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.on_request: Callable[[str], None] | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> int:
        self._thread.start()
        ready = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = ready.result(10)
        return self.port

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # connections still open (live streams): end them before the loop stops
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        faults = self.faults
        fate = self._draw(faults)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            self.injected["upstream down"] += 1
            client_w.close()
            return
        budget = self.random.randint(1, 400)  # bytes let through before a cut
        up = asyncio.create_task(
            self._pipe(
                client_r,
                server_w,
                faults,
                budget if fate == "cut_request" else None,
                first=self._request,
            )
        )
        down = asyncio.create_task(
            self._pipe(
                server_r,
                client_w,
                faults,
                budget if fate == "cut_response" else None,
                hold=fate == "lose_response",
                first=self._status,
            )
        )
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up in done and not up.result():
            await asyncio.wait({down}, timeout=60)  # the request is whole: wait for the answer
        for task in (up, down):
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    def _request(self, chunk: bytes) -> None:
        if self.on_request is not None:
            head = chunk.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            self.on_request(head)

    def _status(self, chunk: bytes) -> None:
        parts = chunk.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
            self.statuses[int(parts[1])] += 1

    def _draw(self, faults: Faults) -> str:
        roll = self.random.random()
        for name, share in (
            ("cut_request", faults.cut_request),
            ("cut_response", faults.cut_response),
            ("lose_response", faults.lose_response),
        ):
            if roll < share:
                self.injected[name] += 1
                return name
            roll -= share
        return "pass"

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        faults: Faults,
        cut_after: int | None,
        *,
        hold: bool = False,
        first: Callable[[bytes], None] | None = None,
    ) -> bool:
        """Copy until EOF; returns True when the copy was cut short on purpose. ``first``
        sees the first chunk (where the request or status line is)."""
        sent = 0
        try:
            while True:
                chunk = await reader.read(65536)
                if first is not None and chunk:
                    first(chunk)
                    first = None
                if not chunk:
                    if not hold and writer.can_write_eof():
                        writer.write_eof()
                    return False
                if cut_after is not None and sent + len(chunk) > cut_after:
                    writer.write(chunk[: max(0, cut_after - sent)])
                    await writer.drain()
                    return True
                if faults.latency:
                    await asyncio.sleep(faults.latency)
                if faults.bandwidth:
                    await asyncio.sleep(len(chunk) / faults.bandwidth)
                if hold:
                    # the answer has begun, so the server has done the work: drop it, the
                    # client never hears of it
                    return True
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            return True
