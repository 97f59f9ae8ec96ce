"""Ctrl-C that is never lost.

A KeyboardInterrupt can land where it is swallowed: in JAX's garbage-collection
callback or a ``__del__``, whose exceptions Python only prints. While
:func:`remembered` is active, SIGINT raises KeyboardInterrupt as usual *and*
sets a flag that nothing swallows; long loops check it and stop.

The protocol is duck-typed: any SIGINT handler with a ``requested`` attribute
remembers (the ``zsad`` command installs one before its imports).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Remember:
    """A SIGINT handler that sets ``requested`` and (when ``raising``) raises KeyboardInterrupt."""

    def __init__(self, raising: bool = True):
        self.requested = False
        self.raising = raising

    def __call__(self, signum, frame) -> None:
        self.requested = True
        if self.raising:
            raise KeyboardInterrupt


class _Unwatched:
    requested = False


@contextlib.contextmanager
def remembered() -> Iterator[Remember]:
    """Yields the handler that remembers SIGINT: the one installed already, or one installed for the
    block where Python's default handler is in place (main thread only; elsewhere nothing is watched)."""
    current = signal.getsignal(signal.SIGINT)
    if hasattr(current, "requested"):
        yield current
        return
    if threading.current_thread() is not threading.main_thread() or current is not signal.default_int_handler:
        yield _Unwatched()
        return
    mine = Remember()
    signal.signal(signal.SIGINT, mine)
    try:
        yield mine
    finally:
        signal.signal(signal.SIGINT, current)
