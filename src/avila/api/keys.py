"""Keys admin API: list, create and revoke the API keys of the caller's project (scope
``admin``). The secret of a new key is in the creation answer only; the store keeps its hash.
Keys from ``API_KEYS`` live in the environment, not in ``data/keys.sqlite`` (or Redis, with
``AVILA_REDIS_URL``): they are not listed and cannot be revoked here. Semantics: docs/security.md.

The handlers use the registry's ``*_async`` methods: with Redis, its calls run in threads of
their own, so a hung Redis answers these routes 503 ``shared_state_unavailable`` and holds up
no other request (``/health`` included).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from litestar import Request, delete, get, post
from msgspec import Meta, Struct

from avila.errors import NotFound
from avila.security.keys import SCOPES, KeyInfo, KeyRegistry, Principal

_TAGS = ["security"]


class NewKey(Struct, forbid_unknown_fields=True):
    scopes: Annotated[list[str], Meta(min_length=1, max_length=len(SCOPES))]
    name: Annotated[str, Meta(max_length=200)] = ""


def _keys(request: Request[Any, Any, Any]) -> KeyRegistry:
    store: KeyRegistry = request.app.state.key_store
    return store


def _public(info: KeyInfo) -> dict[str, Any]:
    fields = asdict(info)
    fields["project"] = fields.pop("project_id")
    fields["scopes"] = list(info.scopes)
    return fields


@get(
    "/api/v1/keys",
    opt={"scope": "admin"},
    summary="List the project's API keys",
    description="Id, name, scopes, creation and revocation time of every stored key of the"
    " caller's project (never the secret).",
    tags=_TAGS,
)
async def list_keys(request: Request[Any, Any, Any], principal: Principal) -> dict[str, Any]:
    keys = await _keys(request).list_async(principal.project_id)
    return {"keys": [_public(k) for k in keys]}


@post(
    "/api/v1/keys",
    opt={"scope": "admin"},
    status_code=201,
    summary="Create an API key",
    description="Body `{scopes, name?}`. The answer holds the secret `key`: it is shown once.",
    tags=_TAGS,
)
async def create_key(
    request: Request[Any, Any, Any], principal: Principal, data: NewKey
) -> dict[str, Any]:
    secret, info = await _keys(request).create_async(principal.project_id, data.scopes, data.name)
    return {"key": secret, **_public(info)}


@delete(
    "/api/v1/keys/{key_id:str}",
    opt={"scope": "admin"},
    status_code=200,
    summary="Revoke an API key",
    description="Refused within a second by every request that presents it.",
    tags=_TAGS,
)
async def revoke_key(
    request: Request[Any, Any, Any], principal: Principal, key_id: str
) -> dict[str, Any]:
    if not await _keys(request).revoke_async(key_id, principal.project_id):
        raise NotFound(f"no active key {key_id!r} in this project", code="key_not_found")
    return {"key_id": key_id, "revoked": True}


ROUTES = [list_keys, create_key, revoke_key]
