"""One experiments server per test package run: a real ``avila serve`` on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from avila.testing import ServerProcess

from .experiment_data import Keys, experiment_server


@pytest.fixture(scope="package")
def exp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Keys]]:
    with experiment_server(tmp_path_factory.mktemp("experiments")) as running:
        yield running
