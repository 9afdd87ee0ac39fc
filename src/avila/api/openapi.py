"""The OpenAPI document as clients see the wire, built once from Litestar's and post-processed.

Litestar documents what it can see in handler signatures. This module adds, for EVERY HTTP
operation (so routes added later conform without edits here):

- the ``x-api-key`` / ``Authorization: Bearer`` security schemes, applied to every route whose
  handler declares ``opt={"scope": ...}`` (routes without one are documented as public);
- the one error body ``{"error": {"code", "message", "details"}}`` (component ``Error``) for
  every error status the route kind can return: 400 malformed JSON, 413 body too large and 422
  schema violation for routes with a body; 422 for routes with parameters; 404 for routes with
  path parameters or a body (named resources); 401/403/429/503 for authenticated routes;
- ``RateLimit-*`` headers on authenticated responses and ``Retry-After`` on 429;
- the framework's 400 ``{status_code, detail, extra}`` removed (it is never sent).

Routes that read their body raw (ingestion, export, Segment) are invisible to Litestar's
schema generation; :data:`avila.api.route_docs.ROUTE_DOCS` (or ``opt={"openapi": RouteDoc(...)}`` on a new handler)
gives their request body (from the msgspec types), success status, response body, content
types and any extra error statuses.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

import msgspec
from litestar import Litestar
from litestar.routes import HTTPRoute

from avila.api.route_docs import DOC_TYPES, REF, ROUTE_DOCS, RouteDoc
from avila.schemas.events import DATA_TYPES, EventTypeName

ERROR_REF = {"$ref": REF.format(name="Error")}
SECURITY_SCHEMES = {
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An API key (docs/security.md). `API_KEYS` keys have every scope.",
    },
    "BearerAuth": {"type": "http", "scheme": "bearer", "description": "The same key as a bearer"},
    "SegmentBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "Segment write key: an ingest API key as the Basic user name",
    },
}
KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"BearerAuth": []}]
SEGMENT_SECURITY: list[dict[str, list[str]]] = [
    {"SegmentBasic": []},
    {"ApiKeyHeader": []},
    {"BearerAuth": []},
]

_ERROR_TEXT = {
    400: "Malformed JSON (`malformed_json`) or a request the route cannot read",
    401: "Missing or unknown API key (`missing_api_key`, `invalid_api_key`)",
    403: "The key lacks the scope this route needs (`missing_scope`)",
    404: "The named resource does not exist in the key's project (`*_not_found`)",
    409: "Conflict with the current state",
    412: "`If-Match` does not match the current version (`version_mismatch`)",
    413: "Request body over the route's limit; `details[0]` has `limit_bytes` and `received_bytes`",
    415: "Unsupported Content-Type",
    422: (
        "Schema violation (`validation_failed` for the body, `invalid_query` for parameters) or a"
        " semantic error with its own code; `details[*].path` names each field"
    ),
    429: "Rate limit exceeded (`rate_limited`); retry after `Retry-After` seconds",
    503: "Storage unavailable or the server is shutting down; nothing was stored, retry",
}
_SUCCESS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: durably stored",
    204: "No content",
    304: "Not modified (ETag matched)",
}
_RATE_HEADERS = {
    "RateLimit-Limit": ("integer", "Requests allowed per sliding minute for this key"),
    "RateLimit-Remaining": ("integer", "Requests the sliding minute lets through now"),
    "RateLimit-Reset": ("integer", "Seconds until the count frees the next request"),
}


# --- schema building -------------------------------------------------------------------------


def _error_schemas() -> dict[str, Any]:
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "description": "stable snake_case code"},
                        "message": {"type": "string", "description": "what to change"},
                        "details": {
                            "type": "array",
                            "items": {"$ref": REF.format(name="ErrorDetail")},
                        },
                    },
                }
            },
        },
        "ErrorDetail": {
            "type": "object",
            "description": (
                "Usually `{path, message}`: `path` in the one style `events[3].event_type.data.url`"
                ' (`""` is the whole body); `allowed` lists the values of an enum.'
            ),
            "properties": {
                "path": {"type": "string"},
                "message": {"type": "string"},
                "allowed": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _event_type_schema() -> dict[str, Any]:
    """``event_type`` as a oneOf over the types, each with its own ``data`` shape."""
    names: tuple[str, ...] = get_args(EventTypeName)
    variants = []
    for name in names:
        data = DATA_TYPES[name]
        variants.append(
            {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"const": name},
                    "data": {"$ref": REF.format(name=data.__name__)},
                },
            }
        )
    return {"oneOf": variants}


def _type_components() -> dict[str, Any]:
    types = (*DOC_TYPES, *DATA_TYPES.values())
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    components["EventDoc"]["properties"]["event_type"] = _event_type_schema()
    return components


def _schema_of(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {"$ref": REF.format(name=value.__name__)}


def _handlers(app: Litestar) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                out[(method.upper(), route.path_format or "/")] = handler
    return out


def _optional_data(handler: Any) -> bool:
    """Whether the handler's ``data`` (the decoded body) has a default: the body may be omitted."""
    try:
        data = handler.parsed_fn_signature.parameters.get("data")
    except AttributeError:
        return False
    return data is not None and data.has_default


def _error_statuses(method: str, op: dict[str, Any], doc: RouteDoc, authed: bool) -> set[int]:
    if doc.only_errors is not None:
        return set(doc.only_errors)
    params = op.get("parameters", [])
    has_body = "requestBody" in op or method in ("POST", "PUT", "PATCH")
    path_params = any(p.get("in") == "path" for p in params)
    statuses: set[int] = set(doc.errors)
    if has_body:
        statuses |= {400, 413, 422}
    if params:
        statuses.add(422)
    if path_params or has_body:
        statuses.add(404)
    if authed:
        statuses |= {401, 403, 429, 503}
    return statuses


def _rate_headers() -> dict[str, Any]:
    return {
        name: {"description": text, "required": False, "schema": {"type": kind}}
        for name, (kind, text) in _RATE_HEADERS.items()
    }


def _conform_operation(
    method: str, path: str, op: dict[str, Any], handler: Any, docs: dict[tuple[str, str], RouteDoc]
) -> None:
    opt = getattr(handler, "opt", {}) or {}
    doc: RouteDoc = opt.get("openapi") or docs.get((method, path)) or RouteDoc()
    auth = doc.auth or ("key" if opt.get("scope") else "none")
    authed = auth != "none"
    responses: dict[str, Any] = op.setdefault("responses", {})

    if doc.body is not None:
        op["requestBody"] = {
            "required": doc.body_required,
            "content": {"application/json": {"schema": _schema_of(doc.body)}},
        }
    elif "requestBody" in op and _optional_data(handler):
        op["requestBody"]["required"] = False

    # Success: the documented status and body are the ones actually sent.
    success = sorted(k for k in responses if k.startswith("2"))
    current = responses.pop(success[0]) if success else {}
    status = doc.status or (int(success[0]) if success else 200)
    for extra in success[1:]:
        responses.pop(extra)
    content = current.get("content") or {}
    if doc.content is not None:
        content = {media: {"schema": schema} for media, schema in doc.content.items()}
    elif doc.response is not None:
        content = {"application/json": {"schema": _schema_of(doc.response)}}
    else:
        json_schema = content.get("application/json", {}).get("schema")
        if json_schema == {"type": "string"}:  # a handler returning pre-encoded JSON bytes
            content["application/json"] = {"schema": {"type": "object"}}
    ok: dict[str, Any] = {"description": _SUCCESS_TEXT.get(status, "OK")}
    if content:
        ok["content"] = content
    if authed:
        ok["headers"] = _rate_headers()
    elif current.get("headers"):
        ok["headers"] = current["headers"]
    responses[str(status)] = ok
    for code, text in doc.extra_success.items():
        responses[str(code)] = {"description": text}

    # Errors: the one shape, every status the route kind can return.
    for key in [k for k in responses if k[0] in "45"]:
        responses.pop(key)
    for code in sorted(_error_statuses(method, op, doc, authed)):
        response: dict[str, Any] = {
            "description": _ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        if code == 429:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait",
                    "required": True,
                    "schema": {"type": "integer"},
                },
                **_rate_headers(),
            }
        responses[str(code)] = response

    if auth == "key":
        op["security"] = KEY_SECURITY
    elif auth == "segment":
        op["security"] = SEGMENT_SECURITY
    else:
        op["security"] = []


_DATE_TIME = {"type": "string", "format": "date-time"}


def _lenient_times(node: Any) -> Any:
    """Litestar decodes parameters and bodies in msgspec's lax mode, where a date-time may also
    be a number of Unix seconds; document what is accepted."""
    if isinstance(node, dict):
        if node == _DATE_TIME:
            return {"anyOf": [dict(_DATE_TIME), {"type": "number", "description": "Unix seconds"}]}
        return {k: _lenient_times(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_lenient_times(v) for v in node]
    return node


def conform(document: dict[str, Any], app: Litestar) -> dict[str, Any]:
    """``document`` (Litestar's) rewritten to match the wire; see the module docstring."""
    doc: dict[str, Any] = _lenient_times(copy.deepcopy(document))
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in {**_type_components(), **_error_schemas()}.items():
        if name in schemas and schemas[name] != schema:
            raise RuntimeError(f"OpenAPI component {name!r} defined twice, differently")
        schemas[name] = schema
    components["securitySchemes"] = SECURITY_SCHEMES
    handlers = _handlers(app)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
                handler = handlers.get((method.upper(), path))
                _conform_operation(method.upper(), path, op, handler, ROUTE_DOCS)
    doc["info"]["description"] = (
        "Self-hostable behavioural analytics and Industry 4.0. Authenticate with `x-api-key`"
        ' (or `Authorization: Bearer`). Every error is `{"error": {"code", "message",'
        ' "details"}}`; see docs/api.md.'
    )
    return doc


_CACHE = "avila_openapi_document"


def document(app: Litestar) -> dict[str, Any]:
    """The conformed document of ``app`` (built on first use, then cached)."""
    cached = app.state.get(_CACHE)
    if cached is None:
        cached = conform(app.openapi_schema.to_schema(), app)
        app.state[_CACHE] = cached
    return cached
