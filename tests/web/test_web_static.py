"""The dashboard's files over HTTP (gzip, ETag, CSP, no key needed) and GET /api/v1/me."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import httpx

from .conftest import Dashboard


def test_page_and_assets_are_gzipped_with_a_strong_etag_and_revalidate(
    dashboard: Dashboard,
) -> None:
    with httpx.Client(base_url=dashboard.url, timeout=30) as client:
        page = client.get("/", headers={"accept-encoding": "gzip"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-encoding"] == "gzip"
        assert page.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        # Every file the page names is served from this origin.
        for asset in re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text):
            assert client.get(asset).status_code == 200, asset

        url = "/ui/vendor/echarts.min.js"
        raw = resources.files("avila").joinpath("web/vendor/echarts.min.js").read_bytes()
        plain = client.get(url, headers={"accept-encoding": "identity"})
        assert plain.content == raw and "content-encoding" not in plain.headers
        packed = client.get(url, headers={"accept-encoding": "gzip, deflate"})
        assert packed.headers["content-encoding"] == "gzip"
        assert int(packed.headers["content-length"]) < len(raw) / 2
        etag = packed.headers["etag"]
        assert etag == plain.headers["etag"] == f'"{hashlib.sha256(raw).hexdigest()[:32]}"'
        again = client.get(url, headers={"if-none-match": etag, "accept-encoding": "gzip"})
        assert again.status_code == 304 and again.content == b""
        changed = client.get(url, headers={"if-none-match": '"something-else"'})
        assert changed.status_code == 200

        missing = client.get("/ui/js/../../app.py")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert client.get("/ui/nope.js").json()["error"]["code"] == "not_found"


def test_me_names_the_keys_project_and_scopes_never_the_key(dashboard: Dashboard) -> None:
    with httpx.Client(base_url=dashboard.url, timeout=30) as client:
        read = client.get("/api/v1/me", headers={"x-api-key": dashboard.read_key})
        assert read.json() == {"project": "default", "scopes": ["read"]}
        admin = client.get("/api/v1/me", headers={"authorization": f"Bearer {dashboard.admin_key}"})
        assert admin.json() == {"project": "default", "scopes": ["ingest", "read", "admin"]}
        assert dashboard.admin_key not in admin.text
        missing = client.get("/api/v1/me")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
