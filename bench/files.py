"""File and image throughput through sync, next to a plain HTTP copy of the same bytes.

    python bench/files.py                          # a 100 MB file and 1,000 small images, 3 runs
    python bench/files.py --mb 20 --images 200 --repeat 5

A real ``fieldsync serve`` (SQLite, blobs on the local file system) runs in a child process
on a loopback port; one device attaches the files offline and syncs them up (a big file
chunked, each chunk with its digest, the whole file verified; small files in batches), then
the row changes; a second device of the same user syncs the rows and fetches the blobs
(granted, ranged, verified). Beside it, in the same run and interleaved with it, a plain
``http.server`` child process on loopback receives the same bytes with PUT and serves them
back with GET (httpx, one keep-alive connection): the floor that the protocol's overhead is
measured against. Every run uploads new bytes (no blob is deduplicated). Printed: the median
of ``--repeat`` runs of each figure, and the ratio of sync to plain next to its goal (0.7 for
the big file, 0.5 for the images).
"""

from __future__ import annotations

import argparse
import http.server
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync import PASSWORD, Server  # the same child-process server the sync bench uses

PROFILE = """\
name: Bench files
tables:
  account: {filter: all}
  workorder:
    filter: other
    owned_by: [me]
    images: [sitephoto]
    files: [servicereport, bigreport]
apps:
  - {uniquename: files, name: Bench files, can_be_used_offline: true, mode: offline-first}
"""


def seed(url: str, rows: int) -> None:
    from fieldsync.platform import build
    from fieldsync.schema.model import Column, ColumnType
    from fieldsync.security.roles import BASIC_USER
    from fieldsync.store.store import Store
    from fieldsync.types import EntityRef

    p = build(Store.open(url))
    try:
        p.store.add_column(
            "workorder", Column("bigreport", ColumnType.FILE, max_size_kb=1024 * 1024)
        )
        org = p.org
        mine = {"create": "user", "read": "user", "write": "user", "append": "user"}
        role = org.role(
            "Bench technician",
            privileges={
                "workorder": mine,
                "account": {"read": "organization", "appendto": "organization"},
            },
        )
        tech = org.user("tech", password=PASSWORD, roles=[org.role_id(BASIC_USER), role])
        acc = p.records.create("account", {"name": "Bench customer"})
        p.records.create_many(
            "workorder",
            [
                {
                    "name": f"Job {i:05d}",
                    "serviceaccountid": acc,
                    "ownerid": EntityRef("systemuser", tech),
                }
                for i in range(rows)
            ],
        )
        p.offline.import_yaml(PROFILE)
        p.offline.publish("Bench files")
    finally:
        p.close()


def images(n: int) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(n):
        noise = Image.frombytes("RGB", (96, 96), os.urandom(96 * 96 * 3))
        buf = io.BytesIO()
        noise.save(buf, "JPEG", quality=80)
        out.append(buf.getvalue() + i.to_bytes(4, "big"))  # distinct digests
    return out


class _Plain(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body
    root = Path(".")

    def do_PUT(self) -> None:
        size = int(self.headers["Content-Length"])
        with (self.root / self.path.strip("/")).open("wb") as f:
            left = size
            while left:
                piece = self.rfile.read(min(left, 1 << 20))
                f.write(piece)
                left -= len(piece)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = self.root / self.path.strip("/")
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as f:
            while piece := f.read(1 << 20):
                self.wfile.write(piece)

    def log_message(self, *args: object) -> None:
        pass


def plain_server(port: int, root: str) -> None:
    _Plain.root = Path(root)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), _Plain).serve_forever()


def plain_copy(blobs: list[bytes], directory: Path) -> tuple[float, float]:
    """Seconds to PUT then GET every blob with a plain HTTP server on loopback."""
    import subprocess

    from sync import free_port

    port = free_port()
    (directory / "plain").mkdir()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--plain", str(port), str(directory / "plain")]
    )
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            while True:
                try:
                    client.get("/missing")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            start = time.perf_counter()
            for i, blob in enumerate(blobs):
                client.put(f"/b{i}", content=blob)
            up = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(len(blobs)):
                with (
                    (directory / "plain-got").open("wb") as out,
                    client.stream("GET", f"/b{i}") as r,
                ):
                    for piece in r.iter_bytes():
                        out.write(piece)
            down = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(10)
    return up, down


def through_sync(
    server: str, blobs: list[bytes], column: str, directory: Path
) -> tuple[float, float]:
    """Seconds for one device to upload the blobs (attached to rows offline) with a sync,
    and for another to fetch them."""
    from fieldsync.client import Device

    up_dev = Device.login(
        directory / "up", server=server, username="tech", password=PASSWORD, app="files"
    )
    up_dev.sync()
    rows = [r["workorderid"] for r in up_dev.query("workorder")][: len(blobs)]
    for rid, blob in zip(rows, blobs, strict=True):
        up_dev.attach("workorder", rid, column, blob, "bench.bin")
    start = time.perf_counter()
    up_dev.sync(files=False)
    up = time.perf_counter() - start
    down_dev = Device.login(
        directory / "down", server=server, username="tech", password=PASSWORD, app="files"
    )
    down_dev.sync(files=False)
    start = time.perf_counter()
    report = down_dev.fetch_files()
    down = time.perf_counter() - start
    if report.downloaded < len(blobs) or report.failed:
        raise RuntimeError(f"the fetch did not complete: {report}")
    up_dev.close()
    down_dev.close()
    return up, down


GOALS = {"big file": 0.7, "images": 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=100, help="size of the big file (MB)")
    ap.add_argument("--images", type=int, default=1000, help="how many small images")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each case (medians)")
    ap.add_argument(
        "--case", choices=("big", "images"), action="append", help="only this case (repeatable)"
    )
    ap.add_argument("--plain", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        plain_server(int(args.plain[0]), args.plain[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        url = f"sqlite:///{base / 'files.db'}"
        seed(url, max(args.images, 1))
        os.environ["FIELDSYNC_DATA_DIR"] = str(base / "server")
        os.environ["FIELDSYNC_MAX_FILE_MB"] = str(args.mb + 16)
        server = Server(url)
        try:
            cases = [("big file", "bigreport"), ("images", "sitephoto")]
            if args.case:
                cases = [c for c in cases if c[0].split()[0] in args.case]
            print(
                f"{'case':10} {'size':>9}  {'sync up':>11} {'plain PUT':>11} {'ratio':>6}"
                f"  {'sync down':>11} {'plain GET':>11} {'ratio':>6}  goal"
            )
            for name, column in cases:
                runs: list[tuple[float, float, float, float]] = []
                for run in range(args.repeat):
                    blobs = [os.urandom(args.mb * 2**20)] if column == "bigreport" else None
                    blobs = blobs or images(args.images)
                    work = base / f"{name.replace(' ', '-')}-{run}"
                    work.mkdir()
                    up, down = through_sync(server.url, blobs, column, work)
                    plain_up, plain_down = plain_copy(blobs, work)
                    runs.append((up, plain_up, down, plain_down))
                total = sum(map(len, blobs))
                up, plain_up, down, plain_down = (
                    statistics.median(r[i] for r in runs) for i in range(4)
                )
                up_ratio = statistics.median(r[1] / r[0] for r in runs)
                down_ratio = statistics.median(r[3] / r[2] for r in runs)
                goal = GOALS[name]
                verdict = "met" if min(up_ratio, down_ratio) >= goal else "not met"
                if len(blobs) > 1:
                    n = len(blobs)
                    figures = [f"{n / s:7.0f} /s" for s in (up, plain_up, down, plain_down)]
                    size = f"{n} files"
                else:
                    mb = total / 2**20
                    figures = [f"{mb / s:6.1f} MB/s" for s in (up, plain_up, down, plain_down)]
                    size = f"{mb:.0f} MB"
                print(
                    f"{name:10} {size:>9}  {figures[0]:>11} {figures[1]:>11} {up_ratio:5.2f}x"
                    f"  {figures[2]:>11} {figures[3]:>11} {down_ratio:5.2f}x"
                    f"  {goal}x {verdict}",
                    flush=True,
                )
            print(f"(medians of {args.repeat} runs; ratio = sync speed / plain speed, run by run)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
