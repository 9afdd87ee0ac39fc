"""The OpenAPI document's promises, operation by operation, and the local docs pages."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from avila.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "src" / "avila" / "static" / "docs"
CHROMIUM = os.environ.get("AVILA_CHROMIUM", "/usr/bin/chromium")
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def document(server: ServerProcess) -> dict:
    return httpx.get(server.url + "/openapi.json", timeout=30).json()


def _operations(document: dict) -> list[tuple[str, str, dict]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


def test_every_operation_states_auth_errors_and_success(document: dict) -> None:
    assert document["components"]["securitySchemes"]["ApiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": document["components"]["securitySchemes"]["ApiKeyHeader"]["description"],
    }
    public = {("GET", "/health"), ("GET", "/metrics"), ("GET", "/avila.js")}
    operations = _operations(document)
    assert len(operations) >= 50
    for method, path, op in operations:
        where = f"{method} {path}"
        responses = op["responses"]
        successes = [code for code in responses if code.startswith("2")]
        assert len(successes) == 1, where
        if (method, path) in public:
            assert op["security"] == [], where
        else:
            assert op["security"], where
            assert {"401", "403", "429"} <= set(responses), where
            assert "Retry-After" in responses["429"]["headers"], where
            assert "RateLimit-Remaining" in responses[successes[0]]["headers"], where
        if "requestBody" in op or method in ("POST", "PUT"):
            assert {"400", "413", "422"} <= set(responses) or path.startswith("/v1/"), where
            assert "requestBody" in op, f"{where} has no request body schema"
        for code, response in responses.items():
            if code[0] in "45":
                assert response["content"] == {"application/json": {"schema": ERROR_REF}}, where
                assert "status_code" not in str(response), where


def test_ingest_routes_document_202_and_their_bodies(document: dict) -> None:
    paths = document["paths"]
    for path, result in [
        ("/api/v1/events", "SingleIngestResult"),
        ("/api/v1/events/batch", "BatchIngestResult"),
        ("/api/v1/industry40/iot/ingest", "TelemetryIngestResult"),
    ]:
        op = paths[path]["post"]
        assert set(op["responses"]) & {"200", "201"} == set(), path
        schema = op["responses"]["202"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{result}"}
    event = document["components"]["schemas"]["EventDoc"]
    variants = event["properties"]["event_type"]["oneOf"]
    assert len(variants) == 14
    page_view = next(v for v in variants if v["properties"]["type"] == {"const": "PageView"})
    assert page_view["properties"]["data"] == {"$ref": "#/components/schemas/PageViewData"}
    batch = document["components"]["schemas"]["BatchEventRequest"]["properties"]["events"]
    assert batch["minItems"] == 1 and batch["maxItems"] == 10_000
    export = paths["/api/v1/export"]["post"]["responses"]["200"]["content"]
    assert set(export) == {
        "text/csv",
        "application/json",
        "application/x-ndjson",
        "application/vnd.apache.parquet",
    }


def test_bounded_parameters_state_their_range(document: dict) -> None:
    params = {
        p["name"]: p["schema"]
        for p in document["paths"]["/api/v1/users/{user_id}"]["get"]["parameters"]
    }
    assert params["recent"]["minimum"] == 0 and params["recent"]["maximum"] == 200


def test_options_lists_every_method_of_a_path(server: ServerProcess) -> None:
    response = httpx.options(server.url + "/api/v1/users/someone")
    assert response.status_code == 204
    assert response.headers["allow"] == "DELETE, GET, OPTIONS"


def test_vendored_assets_match_the_table_in_docs_api(server: ServerProcess) -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| [^|]+\| [^|]+\| [^|]+\| `([0-9a-f]{64})` \|$", text, re.M)
    assert len(rows) == 4
    for name, digest in rows:
        body = (ASSETS / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == digest, name
        served = httpx.get(f"{server.url}/docs/assets/{name}", timeout=30)
        assert served.status_code == 200 and served.content == body, name
    assert httpx.get(f"{server.url}/docs/assets/..%2Fapp.py").status_code == 404


@pytest.mark.parametrize(("page", "marker"), [("/docs", ".opblock"), ("/docs/redoc", "h1")])
def test_docs_pages_render_from_this_origin_only(
    server: ServerProcess, page: str, marker: str
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is required and was not found at {CHROMIUM}", pytrace=False)
    from playwright.sync_api import sync_playwright

    origin = urlparse(server.url).netloc
    requested: list[str] = []
    loaded: list[str] = []
    failed: dict[str, str] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            tab = browser.new_page()
            tab.on("request", lambda request: requested.append(request.url))
            tab.on("requestfinished", lambda request: loaded.append(request.url))
            tab.on("requestfailed", lambda request: failed.update({request.url: request.failure}))
            tab.goto(server.url + page)
            tab.wait_for_selector(marker, timeout=60_000)
            assert "Avila Analytics" in tab.content()
        finally:
            browser.close()
    # ReDoc tries its CDN logo; the page's Content-Security-Policy blocks it before any
    # network access (so the test does not depend on this machine having no Internet).
    foreign = [url for url in requested if urlparse(url).netloc not in (origin, "")]
    unblocked = [url for url in foreign if "csp" not in (failed.get(url) or "").lower()]
    assert requested and loaded and not unblocked, (unblocked, failed)
    assert any(url.endswith("/openapi.json") for url in loaded), loaded
