"""The one exception handler: every 4xx/5xx leaves as ``{"error": {code, message, details}}``."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from avila.errors import AvilaError

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
        {"error": {"code": code, "message": message, "details": details or []}},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


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
        details = [
            {"path": str(item.get("key", "")), "message": str(item.get("message", ""))}
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, dict)
        ]
        return error_response(422, "validation_failed", "request parameters are invalid", details)
    if status == 400 and _is_json_decode_error(exc):
        # Same code as the ingest routes, which decode their bodies themselves.
        return error_response(
            400, "malformed_json", f"request body is not valid JSON: {exc.detail}"
        )
    return error_response(
        status, _HTTP_CODES.get(status, f"http_{status}"), str(exc.detail), [], exc.headers
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, "internal_error", "internal server error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    AvilaError: handle_avila_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def _is_json_decode_error(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, msgspec.DecodeError) and not isinstance(
            cause, msgspec.ValidationError
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
