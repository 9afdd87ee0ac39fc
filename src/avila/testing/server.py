"""Start ``avila serve`` as a real child process on a free port and wait until it is healthy."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One ``avila serve`` child. ``env`` adds to (not replaces) the current environment."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.env = {**os.environ, "AVILA_DATA_DIR": str(self.data_dir), **(env or {})}
        self.env.pop("AVILA_STORAGE_URL", None) if "AVILA_STORAGE_URL" not in (env or {}) else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The child gets its own copy of the descriptor: close ours at once (a handle left to
        # the garbage collector raises ResourceWarning, possibly in another test's thread).
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "avila.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=log,
                stderr=log,
                cwd=self.data_dir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        # A server that never became healthy must not outlive the test that started it.
        self.kill()
        raise RuntimeError(f"server not healthy after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for a graceful exit; returns 0 for a clean shutdown, else the exit
        code. (uvicorn re-raises the signal after its graceful shutdown, so the raw status of
        a clean stop is -SIGTERM.)"""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._report_hang(timeout)
                self.proc.kill()
                self.proc.wait(10)
        code = int(self.proc.returncode or 0)
        return 0 if code == -signal.SIGTERM else code

    def _report_hang(self, timeout: float) -> None:
        """A stop that did not finish: have the server write its threads' stacks into its log
        (``avila serve`` registers SIGUSR1 with faulthandler), then show the log's end on
        stderr, which pytest prints beside the failing test."""
        assert self.proc is not None
        with contextlib.suppress(OSError):
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        tail = self.log()[-20_000:]
        print(
            f"avila serve (pid {self.proc.pid}) still running {timeout:.0f} s after SIGTERM; "
            f"the end of its log:\n{tail}",
            file=sys.stderr,
        )

    def children(self) -> list[int]:
        """The server's live child processes (any thread may be the parent)."""
        if self.proc is None:
            return []
        found: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    found.extend(int(c) for c in (task / "children").read_text().split())
        return found

    def store_pids(self) -> list[int]:
        """The store process: the spawned child holding the DuckDB file open."""
        return [c for c in self.children() if _spawned(c) and _holds_duckdb(c)]

    def query_worker_pids(self) -> list[int]:
        """Query workers: the spawned children other than the store process (multiprocessing's
        resource tracker is not a spawn child)."""
        return [c for c in self.children() if _spawned(c) and not _holds_duckdb(c)]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawned(pid: int) -> bool:
    """A ``multiprocessing`` spawn child."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _holds_duckdb(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).endswith(".duckdb"):
                    return True
    return False
