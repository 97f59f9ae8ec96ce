"""Entry point of the ``zsad`` command: imports each command module so it registers itself."""

import os
import signal
import sys


class _Remember:
    """SIGINT handler until the command runs: remembers Ctrl-C, raising it only once the imports are
    done (an interrupt inside an extension module's initialization breaks the import instead of
    stopping it). Has ``requested``, so zsad._interrupt uses it rather than installing its own."""

    def __init__(self):
        self.requested = False
        self.raising = False

    def __call__(self, signum, frame):
        self.requested = True
        if self.raising:
            raise KeyboardInterrupt


def _load():
    # The command modules only (click and rich): the engine (jax) loads when a command runs,
    # its Ctrl-C deferred the same way (zsad_cli.app.load_engine), so `zsad --help` starts fast.
    from zsad_cli import score as _score  # noqa: F401
    from zsad_cli import rank as _rank  # noqa: F401
    from zsad_cli import normalize as _normalize  # noqa: F401
    from zsad_cli import phase as _phase  # noqa: F401
    from zsad_cli import select as _select  # noqa: F401
    from zsad_cli.app import cli

    return cli


def __getattr__(name):
    if name == "cli":  # ``from zsad_cli.main import cli``, as the tests do
        return _load()
    raise AttributeError(name)


def _unraisable(info, hook=sys.unraisablehook) -> None:
    """A Ctrl-C that landed where Python cannot raise it (JAX's garbage-collection callback): not a
    traceback on stderr; the handler remembered it and the command stops."""
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        return
    hook(info)


def _interrupted() -> None:
    sys.stderr.write("error: interrupted\n")
    sys.stderr.flush()
    sys.exit(130)


def _exit_now(code: int) -> None:
    """Ends the process with ``code`` at once. A Ctrl-C that broke an extension module's import (or
    landed in code run through ``PyRun_*``) leaves the interpreter marked as killed by SIGINT, and
    Python would then end by re-raising the signal (exit status -2) whatever ``sys.exit`` asked for;
    the command's output is complete at this point, so nothing is lost by skipping the shutdown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main() -> None:
    ctrl_c = _Remember()
    signal.signal(signal.SIGINT, ctrl_c)
    sys.unraisablehook = _unraisable
    try:
        try:
            cli = _load()
        except BaseException:
            if ctrl_c.requested:
                _interrupted()
            raise
        if ctrl_c.requested:
            _interrupted()
        ctrl_c.raising = True
        try:
            cli(prog_name="zsad")
        except SystemExit as stop:
            if stop.code == 130:  # interrupted: every result is written, the message printed
                _exit_now(130)
            raise
        except BaseException:
            if ctrl_c.requested:
                _interrupted()
            raise
    finally:
        # The command is over (its results written and printed, or its error reported): Ctrl-C during
        # the interpreter's shutdown (JAX's atexit clean-up) would only add a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    main()
