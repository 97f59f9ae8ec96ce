"""Dotted field paths into YAML mappings (``layers.0.fn``): split, set, and the label of a value.

A product space's ``choices:`` (:mod:`zsad.space`) and a selection's positions
(:mod:`zsad.select_space`) name the fields they change this way.
"""

from __future__ import annotations

import json
from typing import Any, Union


def split_path(key: str) -> list[Union[str, int]]:
    """``"layers.0.fn"`` -> ``["layers", 0, "fn"]`` (integers are list indices)."""
    return [int(p) if p.lstrip("-").isdigit() else p for p in key.split(".")]


def set_path(root: Any, parts: list, value: Any, *, create: bool) -> bool:
    """Sets ``root[parts]`` to ``value``. Returns whether the full path existed before.

    Raises LookupError (with a message) if the path cannot be followed.
    """
    existed = True
    cur = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(map(str, parts[:depth])) or "the architecture"
        if isinstance(cur, list):
            if not isinstance(part, int):
                raise LookupError(f"{where} is a list; expected an item index, got {part!r}")
            if not 0 <= part < len(cur):
                raise LookupError(f"{where} has {len(cur)} items (indices 0..{len(cur) - 1}); no item {part}")
            if last:
                cur[part] = value
                return existed
            cur = cur[part]
        elif isinstance(cur, dict):
            key = str(part)
            if key not in cur:
                if not create:
                    raise LookupError(f"{where} has no field {key!r}")
                existed = False
                cur[key] = value if last else {}
            elif last:
                cur[key] = value
            if last:
                return existed
            cur = cur[key]
        else:
            raise LookupError(f"{where} is a value ({cur!r}), not a mapping or a list")
    return existed


def value_text(value: Any) -> str:
    """A value as a choice's label: YAML's spelling of scalars, compact JSON of mappings and lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(plain(value), separators=(",", ":"))


def plain(node: Any) -> Any:
    """ruamel nodes -> plain dicts/lists (for fingerprints and ids)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node
