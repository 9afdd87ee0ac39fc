"""avila serve: run the HTTP server."""

from __future__ import annotations

import argparse
import faulthandler
import signal
from collections.abc import Callable
from typing import Any

from avila.config import Settings, parse_setting
from avila.errors import ConfigError


def run(args: argparse.Namespace) -> int:
    # Settings first: a configuration error is reported before ~2 CPU-s of imports.
    settings = Settings.from_env(host=args.host, port=args.port, mqtt_url=args.mqtt)
    settings.ensure_directories()

    import uvicorn

    from avila.api.http_protocol import CoalescingHttpToolsProtocol
    from avila.app import create_app
    from avila.logs import configure_logging

    configure_logging(settings.log_level, secrets=settings.api_keys)
    # `kill -USR1 <pid>` writes every thread's stack to stderr: what a hung server is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools, with a response's header and body sent in one syscall (api/http_protocol).
        http=CoalescingHttpToolsProtocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # Live frames are encoded once and shared by every subscriber; permessage-deflate
        # would compress them again for each connection (docs/realtime.md, "Compression").
        ws_per_message_deflate=False,
    )
    return 0


def asgi_app() -> object:
    """The application for an external ASGI server (settings from env), e.g.
    ``granian --interface asgi --factory avila.commands.serve:asgi_app`` (benchmarks)."""
    from avila.app import create_app
    from avila.logs import configure_logging

    settings = Settings.from_env()
    settings.ensure_directories()
    configure_logging(settings.log_level, secrets=settings.api_keys)
    return create_app(settings)


def _setting(name: str) -> Callable[[str], Any]:
    """An argparse ``type`` holding a flag to the rules of the setting it overrides."""

    def parse(raw: str) -> Any:
        try:
            return parse_setting(name, raw, "the value")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    parse.__name__ = name
    return parse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("serve", help="run the HTTP server (settings from env / .env)")
    parser.add_argument("--host", help="bind address (overrides HOST)")
    parser.add_argument("--port", type=_setting("port"), help="port, 1-65535 (overrides PORT)")
    parser.add_argument(
        "--mqtt",
        metavar="URL",
        type=_setting("mqtt_url"),
        help="bridge telemetry from this MQTT broker (overrides AVILA_MQTT_URL)",
    )
    parser.set_defaults(func=run)
