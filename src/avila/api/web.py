"""The web dashboard: ``GET /`` (the page) and ``GET /ui/{path}`` (its modules, styles and
vendored libraries) from ``src/avila/web/``. No key is needed for these files; every number on
the pages comes from the public API with the key the user signs in with (docs/dashboard.md).

Files are read and gzipped once at start. Each answer carries a strong ETag and ``no-cache``
(revalidate every time, a 304 costs a header) since file names carry no content hash. A
Content-Security-Policy keeps everything on this origin.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from typing import Any

from litestar import Request, Response, get

from avila.errors import NotFound

PACKAGE_DIR = "web"
_COMPRESSIBLE = ("text/", "application/javascript", "image/svg+xml", "application/json")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str


def _media_type(name: str) -> str:
    suffix = name[name.rfind(".") :] if "." in name else ""
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _walk(folder: Traversable, prefix: str = "") -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            files.update(_walk(entry, name + "/"))
            continue
        if entry.name.startswith(".") or entry.name.endswith((".py", ".pyc")):
            continue
        body = entry.read_bytes()
        media_type = _media_type(entry.name)
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        compress = media_type.startswith(_COMPRESSIBLE) and len(packed) < len(body)
        files[name] = StaticFile(
            body=body,
            gzipped=packed if compress else None,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            media_type=media_type,
        )
    return files


def load_files() -> dict[str, StaticFile]:
    """Every file under src/avila/web/, by its path relative to that folder."""
    return _walk(resources.files("avila").joinpath(PACKAGE_DIR))


FILES = load_files()


def _etag_matches(request: Request[Any, Any, Any], etag: str) -> bool:
    presented = request.headers.get("if-none-match", "")
    # A gzipped answer carries the same strong ETag; proxies may add W/ or -gzip suffixes.
    tags = {t.strip().removeprefix("W/").replace("-gzip", "") for t in presented.split(",")}
    return etag in tags or "*" in tags


def serve_file(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
    found = FILES.get(name)
    if found is None:
        raise NotFound(f"no dashboard file named {name!r}", code="not_found")
    headers = {
        "ETag": found.etag,
        "Cache-Control": "no-cache",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "no-referrer",
    }
    if _etag_matches(request, found.etag):
        return Response(b"", status_code=304, headers=headers, media_type=found.media_type)
    body = found.body
    if found.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = found.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, headers=headers, media_type=found.media_type)


@get("/", include_in_schema=False)
async def dashboard_page(request: Request[Any, Any, Any]) -> Response[bytes]:
    return serve_file(request, "index.html")


@get("/ui/{path:path}", include_in_schema=False)
async def dashboard_asset(request: Request[Any, Any, Any], path: str) -> Response[bytes]:
    return serve_file(request, path.lstrip("/"))


ROUTES = [dashboard_page, dashboard_asset]
