"""CLI subcommands: each module defines ``register(subparsers)``; avila.cli lists them."""
