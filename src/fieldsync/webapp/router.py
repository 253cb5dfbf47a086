"""``/app``: the field web app's files, from the bundle in ``static/``.

The app holds no data of its own (the replica is in the browser, the API is ``/sync/v1``), so
these routes need no sign-in. Every answer carries an ETag and ``Cache-Control: no-cache``:
browsers revalidate, and the service worker, not the HTTP cache, is what opens the app with no
network. ``sw.js`` is allowed the ``/app/`` scope; ``.wasm`` goes out as ``application/wasm``
so ``WebAssembly.instantiateStreaming`` takes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from fieldsync.errors import NotFound

STATIC = Path(__file__).parent / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
SCOPE = "/app/"

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class Bundle:
    """The files of ``static/``, read once: they change only with a new release."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.assets: dict[str, Asset] = {}

    def get(self, path: str) -> Asset:
        hit = self.assets.get(path)
        if hit is not None:
            return hit
        parts = path.split("/")
        if not path or any(p in ("", ".", "..") or "\\" in p for p in parts):
            raise NotFound(f"no file {path!r} in the field app")
        file = self.root.joinpath(*parts)
        media_type = TYPES.get(file.suffix)
        if media_type is None or not file.is_file():
            if not (self.root / "index.html").is_file():
                raise NotFound("the field app is not built: run `make web`")
            raise NotFound(f"no file {path!r} in the field app")
        body = file.read_bytes()
        asset = Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        self.assets[path] = asset
        return asset


bundle = Bundle(STATIC)


def _answer(request: Request, path: str) -> Response:
    asset = bundle.get(path)
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if path == "sw.js":
        headers["Service-Worker-Allowed"] = SCOPE
    if path == "index.html":
        headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        headers["Referrer-Policy"] = "same-origin"
    match = request.headers.get("if-none-match", "")
    if asset.etag in (tag.strip() for tag in match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/app")
def app_root() -> RedirectResponse:
    return RedirectResponse(SCOPE, status_code=308)


@router.get("/app/")
def app_index(request: Request) -> Response:
    return _answer(request, "index.html")


@router.get("/app/{path:path}")
def app_file(request: Request, path: str) -> Response:
    return _answer(request, path)
