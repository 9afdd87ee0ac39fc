"""avila keys create|list|revoke: API keys per project, stored hashed."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from avila.config import Settings
from avila.security.keys import SCOPES


def run(args: argparse.Namespace) -> int:
    # Here, not at the top: every ``avila`` command imports this module to build its parser,
    # and the shared-state package brings the Redis client.
    from avila.shared import open_key_registry

    settings = Settings.from_env()
    if not settings.redis_url:  # keys.sqlite lives in the data directory
        settings.ensure_directories()
    store = open_key_registry(dataclasses.replace(settings, api_keys=()))
    if args.keys_command == "create":
        secret, info = store.create(args.project, args.scopes.split(","), args.name or "")
        print(f"key_id:  {info.key_id}")
        print(f"project: {info.project_id}")
        print(f"scopes:  {','.join(info.scopes)}")
        print(f"key:     {secret}")
        print("Store the key now: only its hash is kept.", file=sys.stderr)
        return 0
    if args.keys_command == "list":
        print(f"{'KEY_ID':<18} {'PROJECT':<16} {'SCOPES':<20} {'CREATED':<26} {'REVOKED':<26} NAME")
        for k in store.list():
            print(
                f"{k.key_id:<18} {k.project_id:<16} {','.join(k.scopes):<20} "
                f"{k.created_at:<26} {k.revoked_at or '-':<26} {k.name}"
            )
        return 0
    if not store.revoke(args.key_id):
        print(f"avila: no active key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for a project")
    create.add_argument("--project", default="default")
    create.add_argument(
        "--scopes", default="ingest,read", help=f"comma-separated subset of {','.join(SCOPES)}"
    )
    create.add_argument("--name", help="a label for the key")
    keys_sub.add_parser("list", help="list keys (never the secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    keys.set_defaults(func=run)
