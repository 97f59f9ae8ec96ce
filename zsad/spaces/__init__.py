"""The built-in search spaces (``space: NAME`` in a space file).

:data:`NAMES` lists every built-in space; :data:`SPACES` maps the name of each
space that is a :class:`~zsad.spaces.base.BuiltinSpace` to its class (NAS-Bench-201
has a form of its own in :mod:`zsad.space`, its functions in
:mod:`zsad.spaces.nasbench201`); :func:`get_space` also accepts the aliases and
suggests the closest name on a typo. A space's module is imported
on first use, so that listing or parsing spaces loads no more than needed.

=================  ==========================  =============================================
name               aliases                     module
=================  ==========================  =============================================
nas-bench-201      nasbench201, nb201          :mod:`zsad.spaces.nasbench201`
nas-bench-101      nasbench101, nb101          :mod:`zsad.spaces.nasbench101`
darts              nas-bench-301, nb301        :mod:`zsad.spaces.darts`
transnas-micro     tnb-micro, tnb_micro        :mod:`zsad.spaces.transnas`
transnas-macro     tnb-macro, tnb_macro        :mod:`zsad.spaces.transnas`
=================  ==========================  =============================================
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Iterator

from zsad._errors import SpecError
from zsad.spaces.base import BuiltinSpace, restrict

__all__ = ["NAMES", "SPACES", "BuiltinSpace", "canonical_name", "get_space", "restrict", "suggestion"]

#: name -> (module, class (None: not a BuiltinSpace), aliases)
_REGISTRY: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "nas-bench-201": ("zsad.spaces.nasbench201", None, ("nasbench201", "nas_bench_201", "nb201")),
    "nas-bench-101": ("zsad.spaces.nasbench101", "NB101Space", ("nasbench101", "nas_bench_101", "nb101")),
    "darts": ("zsad.spaces.darts", "DartsSpace", ("nas-bench-301", "nasbench301", "nas_bench_301", "nb301")),
    "transnas-micro": ("zsad.spaces.transnas", "TransNASMicro", ("transnas_micro", "tnb-micro", "tnb_micro")),
    "transnas-macro": ("zsad.spaces.transnas", "TransNASMacro", ("transnas_macro", "tnb-macro", "tnb_macro")),
}


#: Every built-in space's name (``space: NAME``).
NAMES: tuple[str, ...] = tuple(_REGISTRY)


class _Spaces(Mapping):
    """Name -> space class, importing each space's module on first access."""

    def __getitem__(self, name: str) -> type:
        module, cls, _ = _REGISTRY[name]
        if cls is None:
            raise KeyError(name)
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return (name for name, (_, cls, _) in _REGISTRY.items() if cls is not None)

    def __len__(self) -> int:
        return sum(cls is not None for _, cls, _ in _REGISTRY.values())


SPACES: Mapping[str, type] = _Spaces()


def canonical_name(name: str) -> str | None:
    """The registry name of ``name`` (a name or an alias, any case), else None."""
    key = str(name).strip().lower()
    for canon, (_, _, aliases) in _REGISTRY.items():
        if key == canon or key in aliases:
            return canon
    return None


def get_space(name: str) -> type:
    """The class of the built-in space ``name`` (aliases accepted).

    Raises:
      SpecError: an unknown name (the message lists the spaces and suggests the closest), or NAS-Bench-201,
        which is not a class (see the module docstring).
    """
    canon = canonical_name(name)
    if canon is None:
        raise SpecError(f"space: expected one of {', '.join(_REGISTRY)}; got {name!r}{suggestion(name)}")
    if canon not in SPACES:
        raise SpecError(f"space: {canon} has no space class; its functions are in {_REGISTRY[canon][0]}")
    return SPACES[canon]


def suggestion(name: str) -> str:
    """A ``; did you mean 'x'?`` suffix naming the closest space, or an empty string."""
    names = [n for canon, (_, _, aliases) in _REGISTRY.items() for n in (canon, *aliases)]
    match = difflib.get_close_matches(str(name).strip().lower(), names, n=1)
    return f"; did you mean '{canonical_name(match[0])}'?" if match else ""
