"""Importing ``package.module:name`` entry points named in architecture and space files."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable

from zsad._errors import SpecError


def import_callable(module_name: str, attr: str, base_dir: Path, where: str) -> Callable:
    """Imports ``module_name`` (with ``base_dir`` importable) and returns its callable ``attr``.

    Raises:
      SpecError: ``{where}: ...`` if the module does not import or has no such callable.
    """
    base = str(base_dir)
    added = base not in sys.path
    if added:
        sys.path.insert(0, base)
    try:
        mod = importlib.import_module(module_name)
    except Exception as err:  # any import-time failure is the user's module's
        raise SpecError(f"{where}: cannot import {module_name!r}: {type(err).__name__}: {err}") from None
    finally:
        if added:
            sys.path.remove(base)
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise SpecError(f"{where}: {module_name!r} has no callable {attr!r}")
    return fn
