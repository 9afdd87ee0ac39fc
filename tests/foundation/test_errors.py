"""Every error class renders the one error shape with its status and stable code."""

from __future__ import annotations

import re

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from avila.api.errors import EXCEPTION_HANDLERS
from avila.errors import AvilaError, all_error_classes


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_error_shape(cls: type[AvilaError]) -> None:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise cls("something specific", details=[{"path": "a.b[0]", "message": "bad"}])

    with TestClient(Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)) as client:
        response = client.get("/boom")
    assert response.status_code == cls.status
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == cls.code
    assert re.fullmatch(r"[a-z][a-z0-9_]*", body["error"]["code"])
    assert body["error"]["message"] == "something specific"
    assert body["error"]["details"] == [{"path": "a.b[0]", "message": "bad"}]


def test_unexpected_exception_is_a_generic_500_without_internals() -> None:
    @get("/crash", sync_to_thread=False)
    def crash() -> None:
        raise RuntimeError("secret internal detail")

    with TestClient(Litestar([crash], exception_handlers=EXCEPTION_HANDLERS)) as client:
        response = client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "internal server error", "details": []}
    }
