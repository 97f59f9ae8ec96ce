"""Typed exceptions. Every user-facing failure is a one-line message."""

from __future__ import annotations

import difflib


class ZsadError(ValueError):
    """Base class of every error zsad raises on bad input or failed numerics."""


class SpecError(ZsadError):
    """An architecture or search-space file is malformed or inconsistent."""


class DataError(ZsadError):
    """Input data is missing, unreadable or of the wrong shape."""


class NumericsError(ZsadError):
    """A computation produced non-finite or undefined values."""


class WriteError(ZsadError):
    """An output that could not be written at the end of a run (exit 1, not bad input): what was computed
    is kept, and the message says where."""

    exit_code = 1


def locate(file: str | None, line: int | None = None, col: int | None = None) -> str:
    """Formats ``FILE[:LINE:COL]`` (1-based line and column) for error messages."""
    if file is None:
        return "<inline>"
    if line is None:
        return str(file)
    return f"{file}:{line}:{col if col is not None else 1}"


def closest(name: str, valid) -> str:
    """A ``; did you mean 'x'?`` suffix naming the entry of ``valid`` closest to ``name``, or ``""``."""
    match = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""
