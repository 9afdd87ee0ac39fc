"""GET /api/v1/me: who the presented key is (its project and scopes), never the key itself.

The dashboard calls it to sign in: a key that answers here with ``read`` can use every page,
and ``admin`` shows the admin-only actions. Semantics: docs/dashboard.md.
"""

from __future__ import annotations

from typing import Any

from litestar import get

from avila.security.keys import SCOPES, Principal


@get(
    "/api/v1/me",
    opt={"scope": "read"},
    summary="The calling key's project and scopes",
    description="`{project, scopes}` of the key in `x-api-key`; needs the `read` scope.",
    tags=["security"],
)
async def whoami(principal: Principal) -> dict[str, Any]:
    return {
        "project": principal.project_id,
        "scopes": [scope for scope in SCOPES if principal.can(scope)],
    }


ROUTES = [whoami]
