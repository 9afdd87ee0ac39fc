"""A client generated from /openapi.json by ``openapi-python-client`` works against the server.

The test generates the package from the live document, then ingests through it, asks a funnel
and reads a profile. The answers are checked against what the test itself sent (a user id no
one else has: the funnel counts exactly that user, the profile holds exactly its events).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from avila.testing import ServerProcess
from tests.api.demo_server import demo_key


def _generate(server: ServerProcess, where: Path) -> None:
    document = where / "openapi.json"
    document.write_bytes(httpx.get(server.url + "/openapi.json", timeout=30).content)
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--output-path",
            str(where / "avila_client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=where,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (where / "avila_client" / "client.py").exists(), result.stdout + result.stderr


def test_generated_client_ingests_asks_a_funnel_and_reads_a_profile(
    demo_server: ServerProcess, tmp_path: Path
) -> None:
    _generate(demo_server, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod = importlib.import_module("avila_client")
        batch_api = importlib.import_module(
            "avila_client.api.events.api_v1_events_batch_ingest_batch"
        )
        single_api = importlib.import_module("avila_client.api.events.api_v1_events_ingest_event")
        funnel_api = importlib.import_module(
            "avila_client.api.analytics.api_v1_analytics_funnel_funnel_report"
        )
        user_api = importlib.import_module("avila_client.api.users.api_v1_users_user_id_get_user")
        models = importlib.import_module("avila_client.models")
    finally:
        sys.path.remove(str(tmp_path))

    client = client_mod.AuthenticatedClient(
        base_url=demo_server.url, token=demo_key(), prefix="", auth_header_name="x-api-key"
    )
    user = f"generated_{uuid.uuid4().hex[:10]}"
    page = f"/generated/{user}"
    view = models.SingleEventRequest.from_dict(
        {"event": {"user_id": user, "event_type": {"type": "PageView", "data": {"url": page}}}}
    )
    single = single_api.sync_detailed(client=client, body=view)
    assert single.status_code == 202, single.content
    assert isinstance(single.parsed, models.SingleIngestResult) and single.parsed.accepted == 1

    purchase = {
        "user_id": user,
        "event_type": {
            "type": "Purchase",
            "data": {"order_id": f"o-{user}", "revenue": 42.5, "currency": "EUR"},
        },
    }
    batch = batch_api.sync_detailed(
        client=client, body=models.BatchEventRequest.from_dict({"events": [purchase]})
    )
    assert batch.status_code == 202, batch.content
    assert batch.parsed.accepted == 1 and batch.parsed.rejected == []

    query = models.FunnelQuery.from_dict(
        {
            "funnel_name": "generated client",
            "steps": [
                {"name": "Visited", "condition_type": "page_view", "condition_value": page},
                {"name": "Bought", "condition_type": "purchase"},
            ],
        }
    )
    funnel = funnel_api.sync_detailed(client=client, body=query)
    assert funnel.status_code == 200, funnel.content
    steps = funnel.parsed.to_dict()["steps"]
    assert [(s["name"], s["count"]) for s in steps] == [("Visited", 1), ("Bought", 1)]

    profile = user_api.sync_detailed(user, client=client)
    assert profile.status_code == 200, profile.content
    body = profile.parsed.to_dict()
    assert body["user_id"] == user and body["total_events"] == 2
    assert body["total_revenue"] == 42.5

    missing = user_api.sync_detailed(f"nobody-{uuid.uuid4().hex}", client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Error)
    assert missing.parsed.error.code == "user_not_found"
