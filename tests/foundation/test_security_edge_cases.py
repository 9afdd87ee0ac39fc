"""Edge cases of keys, revocation and key management against real server processes."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from avila.security.keys import KeyStore
from tests.conftest import TEST_KEY
from tests.foundation.helpers import assert_error


def _file_times(path: Path) -> dict[str, tuple[int, int, int]]:
    """(atime_ns, mtime_ns, size) of the keys file and its WAL."""
    times = {}
    for suffix in ("", "-wal"):
        st = os.stat(f"{path}{suffix}")
        times[suffix] = (st.st_atime_ns, st.st_mtime_ns, st.st_size)
    return times


def _restore_times(path: Path, before: dict[str, tuple[int, int, int]]) -> None:
    """Put the modification times back: what a revoke looks like on a file system whose
    timestamps are coarse (1 s on ext3 or HFS+, 2 s on FAT, one clock tick on ext4) when it
    lands in the same tick as the previous write."""
    after = _file_times(path)
    # The WAL was checkpointed, so the revoke rewrote it from its start: no size changed.
    assert {s: t[2] for s, t in after.items()} == {s: t[2] for s, t in before.items()}
    for suffix, (atime, mtime, _) in before.items():
        os.utime(f"{path}{suffix}", ns=(atime, mtime))


@contextmanager
def _keys_with_checkpointed_wal(
    data: Path,
) -> Iterator[tuple[KeyStore, list[tuple[str, str]]]]:
    """A keys file with an admin key and a read key of project alpha (plus a few others, so
    the WAL is larger than one revoke), its WAL fully checkpointed: the next write starts the
    WAL over from its beginning, as SQLite does after every automatic checkpoint. A connection
    stays open meanwhile, as in a long-running deployment, so no close deletes the WAL."""
    keys = KeyStore(data / "keys.sqlite")
    created = [keys.create("alpha", ["admin"]), keys.create("alpha", ["read"])]
    for _ in range(4):
        keys.create("alpha", ["ingest"])
    holder = sqlite3.connect(data / "keys.sqlite")
    try:
        busy, _, _ = holder.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0
        yield keys, [(secret, info.key_id) for secret, info in created]
    finally:
        holder.close()


def test_a_revoke_over_http_is_refused_even_when_the_keys_file_times_do_not_change(
    make_server, tmp_path: Path
) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    with _keys_with_checkpointed_wal(data) as (_, [(admin, _), (reader, reader_id)]):
        server = make_server(data_dir=data)
        me = server.url + "/api/v1/me"
        assert httpx.get(me, headers={"x-api-key": reader}).status_code == 200
        before = _file_times(data / "keys.sqlite")

        revoked = httpx.delete(
            f"{server.url}/api/v1/keys/{reader_id}", headers={"x-api-key": admin}
        )
        assert revoked.status_code == 200, revoked.text
        _restore_times(data / "keys.sqlite", before)

        assert_error(httpx.get(me, headers={"x-api-key": reader}), 401, "invalid_api_key")


def test_a_revoke_by_another_process_is_refused_even_when_the_keys_file_times_do_not_change(
    make_server, tmp_path: Path
) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    with _keys_with_checkpointed_wal(data) as (keys, [_, (reader, reader_id)]):
        server = make_server(data_dir=data)
        me = server.url + "/api/v1/me"
        assert httpx.get(me, headers={"x-api-key": reader}).status_code == 200
        before = _file_times(data / "keys.sqlite")

        assert keys.revoke(reader_id)  # this test's process: `avila keys revoke` for the server
        _restore_times(data / "keys.sqlite", before)

        # docs/security.md: refused within a second; generous here, the machine may be busy.
        deadline = time.monotonic() + 10
        status = 200
        while status != 401 and time.monotonic() < deadline:
            status = httpx.get(me, headers={"x-api-key": reader}).status_code
            time.sleep(0.05)
        assert status == 401, "a revoked key still works"


@pytest.mark.parametrize(
    "name",
    [
        "tracker\nkey_0123456789ab default ingest,read,admin",  # a forged `keys list` line
        "\x1b]0;owned\x07\x1b[2J",  # terminal escape sequences
        "report\u202egpj.exe",  # right-to-left override
        "tab\there",
        "nul\x00byte",
        "line\u2028separator",
    ],
)
def test_key_names_with_control_characters_are_refused(server, name: str) -> None:  # noqa: ANN001
    response = httpx.post(
        server.url + "/api/v1/keys",
        json={"scopes": ["read"], "name": name},
        headers={"x-api-key": TEST_KEY},
    )
    error = assert_error(response, 422, "validation_failed")
    assert error["details"][0]["path"] == "name"
    listed = httpx.get(server.url + "/api/v1/keys", headers={"x-api-key": TEST_KEY}).json()
    assert name not in [k["name"] for k in listed["keys"]]


def test_key_names_in_any_script_with_emoji_are_accepted(server) -> None:  # noqa: ANN001
    name = "Café tracker — São Paulo 東京 👩\u200d💻"
    response = httpx.post(
        server.url + "/api/v1/keys",
        json={"scopes": ["read"], "name": name},
        headers={"x-api-key": TEST_KEY},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
