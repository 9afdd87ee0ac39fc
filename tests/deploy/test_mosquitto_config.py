"""deploy/mosquitto/mosquitto.conf in a real broker (Debian's mosquitto 2.0, the compose image's
major version): it starts, listens beyond localhost, and the compose health check passes on it.
Only the port and the persistence directory are moved into the test's temporary directory."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from avila.testing.server import free_port
from tests.deploy.deploy_files import DEPLOY, compose


def test_broker_runs_the_config_and_passes_the_health_check(tmp_path: Path) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(mosquitto).exists(), "mosquitto is missing (see .ci/run)"
    port = free_port()
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    conf, listeners = re.subn(r"^listener 1883 ", f"listener {port} ", conf, flags=re.M)
    conf, stores = re.subn(
        r"^persistence_location .*$", f"persistence_location {tmp_path}/", conf, flags=re.M
    )
    assert listeners == 1 and stores == 1
    (tmp_path / "mosquitto.conf").write_text(conf)
    broker = subprocess.Popen(
        [mosquitto, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    check = compose()["services"]["mosquitto"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    argv = [str(port) if arg == "1883" else arg for arg in check[1:]]
    try:
        deadline = time.monotonic() + 20
        while True:
            assert broker.poll() is None, broker.stdout.read() if broker.stdout else ""
            result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            if result.returncode == 0:
                break
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.2)
        assert result.stdout.startswith("mosquitto version 2.")
    finally:
        broker.terminate()
        broker.wait(10)
