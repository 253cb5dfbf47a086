"""A device in a process of its own, for the kill tests: logs in (when asked), makes local
changes (when asked) and syncs with small pages, printing a line per page written."""

from __future__ import annotations

import sys
import time

from fieldsync.client import Device, Progress


def main() -> None:
    server, directory, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "login":
        device = Device.login(
            directory,
            server=server,
            username="tech1",
            password="correct horse battery",
            app="fieldservice",
        )
    else:
        device = Device(directory)
    if mode == "edit":
        account = sys.argv[4]
        for i in range(int(sys.argv[5])):
            device.create("workorder", {"name": f"offline {i}", "serviceaccountid": account})
        print("edited", flush=True)

    def show(p: Progress) -> None:
        print(f"page {p.table} {p.rows}", flush=True)
        time.sleep(0.01)

    device.sync(progress=show, page_size=50)
    print("done", flush=True)


if __name__ == "__main__":
    main()
