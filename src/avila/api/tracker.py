"""GET /avila.js: the browser tracker (``src/avila/static/avila.js``, docs/tracker.md).

Public (no key: the page supplies its ingest-only key in ``data-api-key``), cacheable for an
hour with an ETag so browsers revalidate cheaply after a deploy.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from litestar import Request, Response, get

MEDIA_TYPE = "text/javascript"  # Litestar appends "; charset=utf-8"
MAX_AGE_SECONDS = 3600


def _load() -> tuple[bytes, str]:
    script = resources.files("avila").joinpath("static/avila.js").read_bytes()
    return script, '"' + hashlib.sha256(script).hexdigest()[:32] + '"'


SCRIPT, ETAG = _load()


@get(
    "/avila.js",
    summary="Browser tracker script",
    description=(
        'Include with `<script src="https://HOST/avila.js" data-api-key="INGEST_KEY" defer>`.'
        " Records page views (including SPA navigation) and exposes `window.avila`."
    ),
    tags=["tracker"],
    include_in_schema=True,
)
async def tracker_script(request: Request[Any, Any, Any]) -> Response[bytes]:
    headers = {
        "Cache-Control": f"public, max-age={MAX_AGE_SECONDS}",
        "ETag": ETAG,
        "X-Content-Type-Options": "nosniff",
    }
    if ETAG in request.headers.get("if-none-match", ""):
        return Response(b"", status_code=304, headers=headers, media_type=MEDIA_TYPE)
    return Response(SCRIPT, headers=headers, media_type=MEDIA_TYPE)


ROUTES = [tracker_script]
