"""KeyStore.resolve serves known keys without reading the keys file on every request, yet a
revoke here applies at once, a revoke by another process within a second, and a key created
by another process works at once."""

from __future__ import annotations

import time
from pathlib import Path

from avila.security.keys import KEY_RECHECK_S, KeyStore


def test_a_revoke_in_this_process_applies_to_the_next_request(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.sqlite")
    secret, info = keys.create("p", ["ingest"])
    assert keys.resolve(secret) is not None  # now served from memory for a while
    assert keys.resolve(secret) is not None
    assert keys.revoke(info.key_id)
    assert keys.resolve(secret) is None


def test_other_processes_creates_apply_at_once_and_revokes_within_a_second(
    tmp_path: Path,
) -> None:
    server = KeyStore(tmp_path / "keys.sqlite")
    cli = KeyStore(tmp_path / "keys.sqlite")  # `avila keys ...` in another process
    first, _ = server.create("p", ["read"])
    assert server.resolve(first) is not None
    created, info = cli.create("p", ["ingest"])
    principal = server.resolve(created)  # unknown here until now: the file is read at once
    assert principal is not None and principal.key_id == info.key_id
    assert principal.can("ingest") and not principal.can("read")

    assert cli.revoke(info.key_id)
    revoked_at = time.monotonic()
    while server.resolve(created) is not None:
        assert time.monotonic() - revoked_at < 1.0, "a revoked key still works after 1 s"
        time.sleep(0.01)
    time.sleep(KEY_RECHECK_S)
    assert server.resolve(created) is None
    assert server.resolve(first) is not None
