"""When the device syncs by itself: the user's settings (a frequency, Wi-Fi only, live) where
the app allows them, and the tables whose sync interval has passed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from fieldsync.client.replica import Replica
from fieldsync.client.status import NetworkProvider
from fieldsync.errors import BadRequest


class Schedule:
    def __init__(self, replica: Replica, network: NetworkProvider) -> None:
        self.replica = replica
        self.network = network

    def settings(self) -> dict[str, Any]:
        found = self.replica.get_state("settings") or {}
        return {
            "frequency": found.get("frequency"),
            "wifi_only": found.get("wifi_only", False),
            "live": found.get("live", False),
        }

    def set_settings(
        self,
        app: Mapping[str, Any],
        *,
        frequency: int | str | None = "keep",
        wifi_only: bool | None = None,
        live: bool | None = None,
    ) -> dict[str, Any]:
        current = self.settings()
        if frequency != "keep":
            if not app.get("allow_sync_frequency"):
                raise BadRequest("this app does not let users adjust the sync frequency")
            if frequency is not None and (not isinstance(frequency, int) or frequency < 0):
                raise BadRequest("the sync frequency is a number of minutes (0: no automatic sync)")
            current["frequency"] = frequency
        if wifi_only is not None:
            if not app.get("allow_wifi_only"):
                raise BadRequest("this app does not let users sync on Wi-Fi only")
            current["wifi_only"] = bool(wifi_only)
        if live is not None:
            current["live"] = bool(live)  # run_scheduler holds a live stream (live.py)
        with self.replica.write() as conn:
            self.replica.set_state(conn, "settings", current)
        return current

    def due_tables(self, now: dt.datetime | None = None) -> list[str]:
        now = now or dt.datetime.now(dt.UTC)
        handshake = self.replica.handshake
        if not handshake or not self.may_sync_automatically():
            return []
        settings = self.settings()
        app = handshake["app"]
        frequency = settings["frequency"] if app.get("allow_sync_frequency") else None
        last = self.replica.last_syncs()
        due: list[str] = []
        for item in handshake["profile"]["items"]:
            minutes = frequency or item.get("sync_interval_minutes", 15)
            when = last.get(item["table"])
            if when is None or now - dt.datetime.fromisoformat(when) >= dt.timedelta(
                minutes=minutes
            ):
                due.append(item["table"])
        return [t for t in handshake["order"] if t in due]

    def may_sync_automatically(self) -> bool:
        handshake = self.replica.handshake
        if not handshake or not self.network.connected():
            return False
        settings = self.settings()
        app = handshake["app"]
        if app.get("allow_wifi_only") and settings["wifi_only"] and not self.network.wifi():
            return False
        return not (app.get("allow_sync_frequency") and settings["frequency"] == 0)
