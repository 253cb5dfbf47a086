"""Make docs/fieldapp.svg, the README's picture of the field app, from the demo organisation.

    .venv/bin/python docs/fieldapp_screenshot.py

A server with the demo data on a temporary SQLite file, on a loopback port; Lena's device signs
in, runs its first sync, and edits a work order, which waits to upload.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from textual.widgets import OptionList

from fieldsync.client import Device
from fieldsync.config import Settings
from fieldsync.demo import DEMO_PASSWORD, seed_demo
from fieldsync.fieldapp.app import FieldApp
from fieldsync.platform import open_platform
from fieldsync.server.app import create_app

OUT = Path(__file__).parent / "fieldapp.svg"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        platform = open_platform(f"sqlite:///{tmp}/demo.db")
        seed_demo(platform)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            uvicorn.Config(create_app(Settings(), platform=platform), log_level="warning")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        device = Device.login(
            f"{tmp}/lena", server=url, username="lena", password=DEMO_PASSWORD, app="fieldservice"
        )
        try:
            asyncio.run(shoot(device))
        finally:
            device.close()
            server.should_exit = True
            thread.join(10)
            platform.close()
    print(f"wrote {OUT}")


async def shoot(device: Device) -> None:
    app = FieldApp(device, auto_sync=False)
    async with app.run_test(size=(132, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("enter")
        lists = app.screen.query_one("#lists", OptionList)
        lists.highlighted = next(
            i
            for i in range(lists.option_count)
            if str(lists.get_option_at_index(i).prompt) == "My active work orders"
        )
        await pilot.pause()
        order = device.query(view="My active work orders")[0]
        device.update("workorder", order["workorderid"], {"priority": 4})
        await pilot.press("r")
        await pilot.pause()
        app.save_screenshot(filename=OUT.name, path=str(OUT.parent))


if __name__ == "__main__":
    main()
