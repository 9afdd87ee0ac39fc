"""``/openapi.json`` and the documentation pages (``/docs`` Swagger UI, ``/docs/redoc``).

The pages' scripts and styles are vendored (docs/api.md lists versions, licences, hashes) and
served from ``/docs/assets/``; a Content-Security-Policy keeps the pages to this origin.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin

from avila import __version__
from avila.api.openapi import document
from avila.errors import NotFound

ASSET_DIR = "static/docs"
ASSETS_PATH = "/docs/assets"
_ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


@get("/openapi.json", include_in_schema=False, media_type=MediaType.JSON, sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    return Response(document(request.app))


#: The pages load only from this server (ReDoc's "powered by" logo from its CDN is blocked).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self'"
)


class _LocalPlugin(OpenAPIRenderPlugin):
    """A UI page whose scripts and styles come from :data:`ASSETS_PATH` on this server."""

    def __init__(self, path: str | list[str], head: str, body: str) -> None:
        super().__init__(path=path, favicon="", style="")
        self._head, self._body = head, body

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'/>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{DOCS_CSP}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Avila Analytics API</title>{self._head}</head><body>{self._body}</body></html>"
        ).encode()


class _JsonPlugin(OpenAPIRenderPlugin):
    def __init__(self) -> None:
        super().__init__(path="/openapi.json", media_type=MediaType.JSON)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return msgspec.json.encode(document(request.app))


SWAGGER = _LocalPlugin(
    ["/swagger"],
    f"<link rel='stylesheet' href='{ASSETS_PATH}/swagger-ui.css'>"
    f"<script src='{ASSETS_PATH}/swagger-ui-bundle.js'></script>"
    f"<script src='{ASSETS_PATH}/swagger-ui-standalone-preset.js'></script>",
    "<div id='swagger-ui'></div><script src='" + ASSETS_PATH + "/swagger-init.js'></script>",
)
REDOC = _LocalPlugin(
    ["/redoc"],
    f"<script src='{ASSETS_PATH}/redoc.standalone.js'></script>",
    "<div id='redoc'></div><script src='" + ASSETS_PATH + "/redoc-init.js'></script>",
)
# Inline scripts would need 'unsafe-inline' under a strict CSP; these tiny initialisers are
# served as files next to the vendored bundles.
_INIT_SCRIPTS = {
    "swagger-init.js": (
        "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui',"
        " validatorUrl: null, deepLinking: true, presets: [SwaggerUIBundle.presets.apis,"
        " SwaggerUIStandalonePreset], layout: 'StandaloneLayout'});\n"
    ),
    "redoc-init.js": ("Redoc.init('/openapi.json', {}, document.getElementById('redoc'));\n"),
}


def _asset(name: str) -> tuple[bytes, str] | None:
    if name in _INIT_SCRIPTS:
        return _INIT_SCRIPTS[name].encode(), "text/javascript"
    if "/" in name or name.startswith("."):
        return None
    suffix = name[name.rfind(".") :] if "." in name else ""
    kind = _ASSET_TYPES.get(suffix) or ("text/plain" if name.endswith("LICENSE") else None)
    if kind is None:
        return None
    resource = resources.files("avila").joinpath(f"{ASSET_DIR}/{name}")
    if not resource.is_file():
        return None
    return resource.read_bytes(), kind


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def docs_asset(name: str) -> Response[bytes]:
    found = _asset(name)
    if found is None:
        raise NotFound(f"no documentation asset {name!r}", code="asset_not_found")
    body, kind = found
    return Response(
        body,
        media_type=kind,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def openapi_config() -> OpenAPIConfig:
    """``/docs`` (Swagger UI, the default), ``/docs/redoc``, ``/docs/openapi.json``."""
    return OpenAPIConfig(
        title="Avila Analytics",
        version=__version__,
        path="/docs",
        render_plugins=[SWAGGER, REDOC, _JsonPlugin()],
    )


ROUTES = [openapi_json, docs_asset]
