"""Command line: avila serve | demo | keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from avila.config import Settings
from avila.errors import AvilaError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from avila.app import create_app
    from avila.logs import configure_logging

    settings = Settings.from_env(host=args.host, port=args.port)
    import os

    sys.setswitchinterval(float(os.environ.get("AVILA_SWITCH", "0.005")))
    configure_logging(settings.log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0


def _keys(args: argparse.Namespace) -> int:
    from avila.security.keys import KeyStore

    settings = Settings.from_env()
    store = KeyStore(settings.data_dir / "keys.sqlite")
    if args.keys_command == "create":
        secret, info = store.create(args.project, args.scopes.split(","), args.name or "")
        print(
            f"key_id:  {info.key_id}\nproject: {info.project_id}\nscopes:  {','.join(info.scopes)}"
        )
        print(f"key:     {secret}\n(store the key now: only its hash is kept)")
    elif args.keys_command == "list":
        rows = store.list()
        print(f"{'KEY_ID':<18} {'PROJECT':<16} {'SCOPES':<20} {'CREATED':<26} {'REVOKED':<26} NAME")
        for k in rows:
            print(
                f"{k.key_id:<18} {k.project_id:<16} {','.join(k.scopes):<20} {k.created_at:<26} {k.revoked_at or '-':<26} {k.name}"
            )
    elif args.keys_command == "revoke":
        if not store.revoke(args.key_id):
            print(f"no active key with id {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from avila.demo.ecommerce import run_demo

    settings = Settings.from_env()
    return run_demo(
        settings,
        users=args.users,
        days=args.days,
        seed=args.seed,
        end=args.end,
        project=args.project,
        if_empty=args.if_empty,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avila", description="Avila Analytics server and tools")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (settings from env / .env)")
    serve.add_argument("--host", help="bind address (overrides HOST)")
    serve.add_argument("--port", type=int, help="port (overrides PORT)")
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="write a deterministic e-commerce demo dataset")
    demo.add_argument("--users", type=int, default=500)
    demo.add_argument("--days", type=int, default=30)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--end", help="last day of data, YYYY-MM-DD (default: today, UTC)")
    demo.add_argument("--project", default="default")
    demo.add_argument(
        "--if-empty", action="store_true", help="do nothing when the store has events"
    )
    demo.set_defaults(func=_demo)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for a project")
    create.add_argument("--project", default="default")
    create.add_argument(
        "--scopes", default="ingest,read", help="comma-separated: ingest,read,admin"
    )
    create.add_argument("--name", help="a label for the key")
    keys_sub.add_parser("list", help="list keys (never the secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    keys.set_defaults(func=_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AvilaError as exc:
        print(f"avila: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
