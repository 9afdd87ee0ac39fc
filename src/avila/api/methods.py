"""``OPTIONS`` on any path answers 204 with ``Allow`` listing every method the path has.

Litestar adds an OPTIONS handler when a path is first registered and computes its ``Allow``
from the methods known then, so a second handler on the same path (``GET`` then ``DELETE
/api/v1/users/{id}``) was missing from ``Allow``. Registering our own OPTIONS handler first
for every path stops Litestar from adding its own; ours reads the path's methods at request
time. (CORS preflights never reach it: the CORS middleware answers them.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import HttpMethod, MediaType, Request, Response, route
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute


def _allow(request: Request[Any, Any, Any]) -> Response[None]:
    template = request.scope.get("path_template")
    methods: set[str] = {"OPTIONS"}
    for candidate in request.app.routes:
        if isinstance(candidate, HTTPRoute) and candidate.path_format == template:
            methods |= set(candidate.methods)
    return Response(
        None,
        status_code=204,
        headers={"Allow": ", ".join(sorted(methods))},
        media_type=MediaType.TEXT,
    )


def with_options(handlers: Iterable[Any]) -> list[Any]:
    """``handlers`` preceded by one OPTIONS handler per HTTP path they serve."""
    handlers = list(handlers)
    paths: list[str] = []
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler) and "OPTIONS" not in handler.http_methods:
            paths.extend(p for p in sorted(handler.paths) if p not in paths)
    options = [
        route(
            path, http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False
        )(_allow)
        for path in paths
    ]
    return [*options, *handlers]
