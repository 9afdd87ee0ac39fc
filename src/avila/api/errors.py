"""The one exception handler: every 4xx/5xx leaves as ``{"error": {code, message, details}}``."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from avila.errors import AvilaError
from avila.schemas.messages import normalize_path, with_choices

log = logging.getLogger("avila.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    return Response(
        error_body(code, message, details),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def error_body(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": _normalized(details or [])}}


def handle_avila_error(request: Request[Any, Any, Any], exc: AvilaError) -> Response[Any]:
    if exc.status >= 500:
        log.error(
            "request failed",
            extra={"path": request.url.path, "code": exc.code, "error": exc.message},
        )
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        return _validation_response(request, exc)
    if status == 400 and "Number out of range" in str(exc.detail):
        return _out_of_range(request)
    if status == 400 and _is_json_decode_error(exc):
        # Same code as the ingest routes, which decode their bodies themselves.
        return error_response(
            400, "malformed_json", f"request body is not valid JSON: {exc.detail}"
        )
    if status == 413:
        return _too_large(request)
    return error_response(
        status, _HTTP_CODES.get(status, f"http_{status}"), str(exc.detail), [], exc.headers
    )


def _validation_response(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Any]:
    """422 from the framework's decoding: ``validation_failed`` for the body, ``invalid_query``
    for query/path/header parameters (the codes docs/errors.md lists), enums with choices."""
    params = request.route_handler.parsed_fn_signature.parameters
    details: list[dict[str, Any]] = []
    in_body = False
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        path, message = str(item.get("key", "")), str(item.get("message", ""))
        body = item.get("source") == "body" or (path == "data" and "data" in params)
        in_body = in_body or body
        if body:
            path = "" if path == "data" else path
            root = params["data"].annotation if "data" in params else None
        else:
            root = params[path].annotation if path in params else None
            message += _range_note(params.get(path))
        message, choices = with_choices(message, root, path if body else "")
        entry: dict[str, Any] = {"path": path, "message": message}
        if choices:
            entry["allowed"] = choices
        details.append(entry)
    if in_body:
        first = details[0]["message"] if details else "the body does not match the schema"
        return error_response(422, "validation_failed", f"invalid request body: {first}", details)
    names = ", ".join(d["path"] for d in details) or "query"
    first = details[0]["message"] if details else ""
    return error_response(422, "invalid_query", f"invalid parameter {names}: {first}", details)


def _range_note(field: Any) -> str:
    """``"; allowed: between 0 and 200"`` for a parameter declared with bounds, else ``""``."""
    bounds = getattr(field, "kwarg_definition", None)
    low = getattr(bounds, "ge", None)
    high = getattr(bounds, "le", None)
    if low is None and high is None:
        return ""
    if low is not None and high is not None:
        return f"; allowed: between {low} and {high}"
    return f"; allowed: >= {low}" if low is not None else f"; allowed: <= {high}"


def _too_large(request: Request[Any, Any, Any]) -> Response[Any]:
    """413 naming the route's limit and the size received (from Content-Length when sent)."""
    limit = request.route_handler.resolve_request_max_body_size()
    length = request.headers.get("content-length", "")
    size = int(length) if length.isdigit() else None
    received = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    message = f"request body is {received}; the limit is {limit:,} bytes"
    return error_response(
        413,
        "payload_too_large",
        message,
        [{"path": "", "message": message, "limit_bytes": limit, "received_bytes": size}],
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, "internal_error", "internal server error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    AvilaError: handle_avila_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


#: The largest finite double: a JSON number past it (``1e999``, a 400-digit integer) is valid
#: JSON text but no number the server can hold.
_DOUBLE_MAX = 1.7976931348623157e308


def _out_of_range(request: Request[Any, Any, Any]) -> Response[Any]:
    """422 at the field for a number past any double. The framework's first, untyped decode
    refuses it before any schema runs, naming no field (``$[...][0][...]``); the body is read
    again here with Python's json, which takes such a number (as inf or an int), to find it."""
    body = getattr(getattr(request, "_connection_state", None), "body", None)
    path = _non_finite_path(body) if isinstance(body, bytes) else None
    message = f"a number is out of range: JSON numbers must be finite, within ±{_DOUBLE_MAX:.4g}"
    return error_response(
        422, "validation_failed", message, [{"path": path or "", "message": message}]
    )


def _non_finite_path(body: bytes) -> str | None:
    """The path of the first number past any double in ``body`` (``rules[0].max``)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            keys = list(value)
            stack.extend((f"{path}.{k}" if path else str(k), value[k]) for k in reversed(keys))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", value[i]) for i in reversed(range(len(value))))
        elif _past_doubles(value):
            return path
    return None


def _past_doubles(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > _DOUBLE_MAX


def _is_json_decode_error(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, msgspec.DecodeError) and not isinstance(
            cause, msgspec.ValidationError
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _normalized(details: list[Any]) -> list[Any]:
    """Every ``details[*].path`` in the one path style (``events[3].event_type.data.url``)."""
    out: list[Any] = []
    for item in details:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            item = {**item, "path": normalize_path(item["path"])}
        out.append(item)
    return out
