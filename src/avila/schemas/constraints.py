"""What a request field accepts, read from its msgspec type, for validation error details.

msgspec's messages name the violated bound or the bad enum value but not what would have been
accepted ("Invalid enum value 'year'", "Expected `int` <= 20"). :func:`accepted` looks the
field up by its error path (``steps``, ``start.match``, ``filters[0].operator``) and returns
``{"allowed": [...]}`` for a literal/enum field or ``{"minimum": m, "maximum": n}`` for a
bounded number or length, which :func:`explain` adds to each ``{"path", "message"}`` detail.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import msgspec.inspect as mi

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@cache
def _info(model: type) -> mi.Type:
    return mi.type_info(model)


def _strip(t: mi.Type) -> mi.Type:
    """The one non-None member of an optional type."""
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(members) == 1:
            return _strip(members[0])
    return t


def _field_type(model: type, path: str) -> mi.Type | None:
    t: mi.Type = _info(model)
    for name, index in _SEGMENT.findall(path):
        t = _strip(t)
        if index:
            if not isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
                return None
            t = t.item_type
            continue
        if not isinstance(t, mi.StructType):
            return None
        found = next((f for f in t.fields if f.encode_name == name), None)
        if found is None:
            return None
        t = found.type
    return _strip(t)


def accepted(model: type, path: str) -> dict[str, Any]:
    """``{"allowed": [...]}`` or ``{"minimum", "maximum"}`` for the field at ``path``; ``{}``
    when the field is unconstrained or unknown."""
    t = _field_type(model, path) if path else None
    if isinstance(t, mi.LiteralType):
        return {"allowed": list(t.values)}
    if isinstance(t, mi.EnumType):
        return {"allowed": [m.value for m in t.cls]}
    if isinstance(t, mi.IntType | mi.FloatType):
        bounds = {"minimum": t.ge, "maximum": t.le}
        if t.gt is not None:
            bounds["exclusive_minimum"] = t.gt
        if t.lt is not None:
            bounds["exclusive_maximum"] = t.lt
        return {k: v for k, v in bounds.items() if v is not None}
    if isinstance(t, mi.StrType | mi.ListType):
        length = {"min_length": t.min_length, "max_length": t.max_length}
        return {k: v for k, v in length.items() if v is not None}
    return {}


def _describe(extra: dict[str, Any]) -> str:
    if "allowed" in extra:
        return "allowed values: " + ", ".join(repr(v) for v in extra["allowed"])
    if "minimum" in extra and "maximum" in extra:
        return f"allowed range: {extra['minimum']}..{extra['maximum']}"
    return ", ".join(f"{k} {v}" for k, v in extra.items())


def explain(model: type, details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``details`` with what each bad field accepts added (keys and a sentence in ``message``)."""
    out = []
    for item in details:
        extra = accepted(model, str(item.get("path", "")))
        if extra:
            message = str(item.get("message", ""))
            item = {**item, **extra, "message": f"{message}; {_describe(extra)}".lstrip("; ")}
        out.append(item)
    return out
