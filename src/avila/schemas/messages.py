"""Validation messages a person can act on, the same on every route.

- One path style everywhere: ``events[3].event_type.data.url`` (no ``$``, no leading dot; the
  whole body is ``""``). :func:`normalize_path` turns msgspec's ``$.a[0].b`` into that.
- An invalid enum value names the allowed values: :func:`enum_choices` finds them by walking
  the msgspec type the body was decoded into along the error's path.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import inspect as mi

_MSGSPEC_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `([^`]*)`$")
_ENUM = re.compile(r"^Invalid enum value (?P<value>.*)$", re.DOTALL)
_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def normalize_path(path: str) -> str:
    """``$.a[0].b`` / ``.a[0].b`` / ``a[0].b`` → ``a[0].b``; ``$`` → ``""``."""
    if path.startswith("$"):
        path = path[1:]
    return path.lstrip(".")


def join_path(prefix: str, rest: str) -> str:
    """``join_path("events[3]", ".event_type")`` → ``events[3].event_type``."""
    rest = normalize_path(rest)
    if not prefix:
        return rest
    if not rest:
        return prefix
    return prefix + rest if rest.startswith("[") else f"{prefix}.{rest}"


def _types_at(info: Any, tokens: list[str]) -> list[Any]:
    """The msgspec type infos found at ``tokens`` (several through unions)."""
    found: list[Any] = []
    pending = [(info, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, mi.UnionType):
            pending.extend((t, depth) for t in node.types)
            continue
        if isinstance(node, mi.Metadata):
            pending.append((node.type, depth))
            continue
        if depth == len(tokens):
            found.append(node)
            continue
        token = tokens[depth]
        if isinstance(node, mi.StructType):
            for field in node.fields:
                if field.encode_name == token:
                    pending.append((field.type, depth + 1))
        elif isinstance(node, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            if token.isdigit():
                pending.append((node.item_type, depth + 1))
        elif isinstance(node, mi.DictType):
            pending.append((node.value_type, depth + 1))
    return found


def enum_choices(root: Any, path: str) -> list[str]:
    """The allowed values of the Literal/Enum at ``path`` (this module's path style) of the
    type ``root``; ``[]`` when ``path`` does not lead to one."""
    try:
        info = mi.type_info(root)
    except (TypeError, ValueError):
        return []
    tokens = [index or name for index, name in _TOKEN.findall(normalize_path(path))]
    choices: list[str] = []
    for node in _types_at(info, tokens):
        if isinstance(node, mi.LiteralType):
            values = [str(v) for v in node.values]
        elif isinstance(node, mi.EnumType):
            values = [str(m.value) for m in node.cls]
        else:
            continue
        choices.extend(v for v in values if v not in choices)
    return choices


def with_choices(message: str, root: Any, path: str) -> tuple[str, list[str]]:
    """``message`` extended with the allowed values when it is an invalid-enum message."""
    if root is None or not _ENUM.match(message):
        return message, []
    choices = enum_choices(root, path)
    if not choices:
        return message, []
    return f"{message}; expected one of: {', '.join(choices)}", choices


def split_msgspec_error(
    exc: msgspec.ValidationError | msgspec.DecodeError, prefix: str = "", root: Any = None
) -> tuple[str, str]:
    """``("message", "prefix.field[2].x")`` from a msgspec error raised while decoding ``root``
    (then an invalid enum value lists the allowed ones). A missing field's path is the field."""
    text = str(exc)
    match = _MSGSPEC_AT.match(text)
    message, relative = (match.group("message"), match.group("path")) if match else (text, "")
    missing = _MISSING.match(message)
    if missing:  # point at the missing field itself, not at its parent object
        relative = f"{relative}.{missing.group(1)}"
    message, _ = with_choices(message, root, relative)
    return message, join_path(prefix, relative)


def detail(path: str, message: str, choices: list[str] | None = None) -> dict[str, Any]:
    """One ``details`` entry: ``{"path", "message"}`` plus ``allowed`` for an enum."""
    out: dict[str, Any] = {"path": normalize_path(path), "message": message}
    if choices:
        out["allowed"] = choices
    return out
