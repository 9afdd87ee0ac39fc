"""No log call passes a LogRecord attribute in ``extra``: logging raises KeyError for it, at the
moment something went wrong (a failed shutdown step once skipped closing the store that way,
and a rejected MQTT reading once left its message unacknowledged)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import avila

RESERVED = set(vars(logging.LogRecord("n", logging.INFO, "p", 0, "m", None, None))) | {
    "message",
    "asctime",
}
SOURCE = Path(avila.__file__).parent


def _extra_keys(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of every constant key of a literal ``extra={...}`` dict in the tree."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                found.extend(
                    (node.lineno, key.value)
                    for key in keyword.value.keys
                    if isinstance(key, ast.Constant) and isinstance(key.value, str)
                )
    return found


def test_no_log_call_passes_a_reserved_key_in_extra() -> None:
    bad = [
        f"{path.relative_to(SOURCE)}:{line}: {key!r}"
        for path in sorted(SOURCE.rglob("*.py"))
        for line, key in _extra_keys(ast.parse(path.read_text(encoding="utf-8")))
        if key in RESERVED
    ]
    assert bad == []


def test_the_scan_finds_a_reserved_key() -> None:
    tree = ast.parse('log.info("x", extra={"module": "m", "component": "c"})')
    assert [key for _, key in _extra_keys(tree) if key in RESERVED] == ["module"]
    assert "component" not in RESERVED
