"""Ids in URL paths: an encoded slash (``%2F``) is part of its segment, not a separator.

Ingest accepts any id of 1-256 characters, ``/`` included, so ``/api/v1/users/{user_id}`` must
reach ``a/b`` as ``/api/v1/users/a%2Fb``. The ASGI server decodes the path before routing
(uvicorn: ``scope["path"] = unquote(raw_path)``) and Litestar matches routes on that decoded
``path``, never on ``raw_path`` (``litestar/_asgi/asgi_router.py``: ``path = scope["path"]``;
the trie splits it at every ``/``). So ``a%2Fb`` was two segments: a 404 on every user route,
and ``GET /api/v1/users/a%2Fsegment`` answered user ``a``'s segment.

The rule here, for every route: the path is split at the slashes that are in the raw path,
then each segment is percent-decoded exactly once. Two pieces implement it:

- :class:`RawPathRouting` wraps the Litestar app. When the raw path holds an encoded slash, it
  gives Litestar a path whose segments are the raw ones decoded once and then re-escaped so
  that only ``%`` and ``/`` read ``%25`` and ``%2F``: the router sees the right number of
  segments and static segments (``segment``, ``sessions``) compare as before. It marks the
  scope as escaped.
- :func:`decode_path_params` is a Litestar middleware, so it runs after routing: on a marked
  scope it reverses that escape in the path parameters (``%25`` -> ``%``, ``%2F`` -> ``/``),
  so handlers get the id decoded once.

A request without ``%2F`` in its raw path (nearly all) is not touched: for it, splitting then
decoding and decoding then splitting give the same segments.
"""

from __future__ import annotations

import re
from typing import Any, cast
from urllib.parse import unquote

from litestar.types import ASGIApp, Receive, Scope, Send

#: Scope key set when the path given to the router has escaped segments.
ESCAPED = "avila.path_escaped"

_ENCODED_SLASH = re.compile(rb"%2[fF]")
_ESCAPE = str.maketrans({"%": "%25", "/": "%2F"})


def escaped_path(raw_path: bytes) -> str | None:
    """The routing path for ``raw_path``, or None when it has no encoded slash (or is not
    ASCII, which the server would not have decoded the way this module assumes)."""
    if not _ENCODED_SLASH.search(raw_path):
        return None
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return None
    # unquote's defaults (UTF-8, errors="replace") are uvicorn's for the whole path.
    return "/".join(unquote(segment).translate(_ESCAPE) for segment in text.split("/"))


def unescape(value: str) -> str:
    """Inverse of the segment escape: only ``%25`` and ``%2F`` occur in an escaped value."""
    return unquote(value)


class RawPathRouting:
    """ASGI wrapper of the Litestar app: routes a path with encoded slashes by its raw segments.

    The scope is changed in place: outer middleware reads what Litestar adds to it (the route
    template of the request metrics)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        # Tools and tests reach the wrapped Litestar app's attributes (state, openapi ...).
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            raw_path = scope.get("raw_path")
            path = escaped_path(raw_path) if raw_path else None
            if path is not None:
                scope["path"] = path
                scope[ESCAPED] = True
        await self.app(scope, receive, send)


def decode_path_params(app: ASGIApp) -> ASGIApp:
    """Litestar middleware: the path parameters of an escaped request, decoded (see above)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if cast("dict[str, Any]", scope).get(ESCAPED):
            # A new dict: Litestar caches (lru_cache) the parsed parameters it returned.
            scope["path_params"] = {
                name: unescape(value) if isinstance(value, str) else value
                for name, value in scope["path_params"].items()
            }
        await app(scope, receive, send)

    return middleware
