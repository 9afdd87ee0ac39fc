"""Key creation names the bad scope by its index; bootstrap key ids do not depend on the order
of ``API_KEYS``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from avila.security.keys import KeyStore
from avila.security.ratelimit import RateLimiter
from tests.foundation.helpers import assert_error


def test_an_unknown_scope_is_reported_at_its_index(client: httpx.Client) -> None:
    response = client.post("/api/v1/keys", json={"scopes": ["read", "owner", "root"]})
    error = assert_error(response, 422, "invalid_scopes")
    assert [d["path"] for d in error["details"]] == ["scopes[1]", "scopes[2]"]
    assert "owner" in error["message"] and "root" in error["message"]


def test_bootstrap_key_ids_come_from_the_key_not_its_position(tmp_path: Path) -> None:
    first = KeyStore(tmp_path / "a.sqlite", ("alpha-key", "beta-key"))
    second = KeyStore(tmp_path / "b.sqlite", ("beta-key", "alpha-key"))
    for key in ("alpha-key", "beta-key"):
        expected = "env:" + hashlib.sha256(key.encode()).hexdigest()[:12]
        assert first.resolve(key) == second.resolve(key)
        principal = first.resolve(key)
        assert principal is not None and principal.key_id == expected


def test_replicas_with_api_keys_in_another_order_keep_separate_budgets(tmp_path: Path) -> None:
    """A rolling update that reorders API_KEYS: the shared limiter (Redis, here one process's
    counters) must not charge one key's requests to another."""
    limiter = RateLimiter(2)
    old = KeyStore(tmp_path / "old.sqlite", ("alpha-key", "beta-key"))
    new = KeyStore(tmp_path / "new.sqlite", ("beta-key", "alpha-key"))

    def hit(store: KeyStore, key: str) -> bool:
        principal = store.resolve(key)
        assert principal is not None
        decision = limiter.hit(principal.key_id)
        assert decision is not None
        return decision.allowed

    assert [hit(old, "alpha-key"), hit(old, "alpha-key")] == [True, True]
    assert hit(new, "beta-key")
    assert not hit(new, "alpha-key")


@pytest.mark.parametrize("scopes", [["read", "bogus"], ["bogus"]])
def test_the_keys_file_refuses_unknown_scopes_at_their_index(
    tmp_path: Path, scopes: list[str]
) -> None:
    from avila.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as refused:
        KeyStore(tmp_path / "keys.sqlite").create("shop", scopes)
    assert refused.value.details == [
        {"path": f"scopes[{scopes.index('bogus')}]", "message": "unknown scope 'bogus'"}
    ]
