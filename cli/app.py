"""The click group, shared options and the one error handler of the ``zsad`` command."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape

from zsad._errors import ZsadError

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)  # text, not markup
    sys.exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Maps ``ZsadError`` to a one-line message and exit 2, anything else to exit 1.

    ``--debug`` (or ``ZSAD_DEBUG=1``) shows the traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, debug: bool = False, **kwargs):
        debug = debug or os.environ.get("ZSAD_DEBUG") == "1"
        try:
            load_engine()
            return fn(*args, **kwargs)
        except ZsadError as err:
            if debug:
                raise
            fail(str(err).replace("\n", " "), getattr(err, "exit_code", EXIT_BAD_INPUT))
        except KeyboardInterrupt:
            if debug:
                raise
            fail("interrupted", 130)
        except Exception as err:  # the last line of defence: one line, never a traceback
            if debug:
                raise
            first = str(err).splitlines()[0] if str(err) else ""
            fail(f"internal error: {type(err).__name__}: {first} (rerun with --debug for the traceback)",
                 EXIT_FAILURE)

    return click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")(wrapper)


def load_engine() -> None:
    """Imports jax and places its persistent compilation cache (:func:`zsad.cache.enable_compilation_cache`).

    Runs when a command starts, after its options are parsed (``--help`` never loads jax). A Ctrl-C
    during the import is held until the import is done, then raised: an interrupt inside an extension
    module's initialization would break the import rather than stop the command.
    """
    handler = signal.getsignal(signal.SIGINT)
    raising = getattr(handler, "raising", None)
    if raising is not None:
        handler.raising = False
    try:
        from zsad.cache import enable_compilation_cache  # imports jax

        enable_compilation_cache()
    finally:
        if raising is not None:
            handler.raising = raising
    if getattr(handler, "requested", False):
        raise KeyboardInterrupt


def x64_option(fn: Callable) -> Callable:
    def enable(ctx, param, value):
        if value:
            import jax

            jax.config.update("jax_enable_x64", True)
        return value

    return click.option("--x64", is_flag=True, expose_value=False, is_eager=True, callback=enable,
                        help="Compute in float64 (slower; for exact checks and very deep networks).")(fn)


def emit_json(doc: Any, out: str | None, as_json: bool) -> None:
    """Writes ``doc`` to ``out`` and/or stdout (stdout carries JSON alone)."""
    text = json.dumps(doc, indent=2, allow_nan=False)
    if out:
        from zsad._files import atomic_write

        atomic_write(out, text + "\n")
    if as_json:
        click.echo(text)


def usage_error(err: click.UsageError) -> str:
    """Click's usage error as one line, ``FIELD: expected X; got Y`` where click says which value of which
    option or argument is wrong, followed by the command's --help to read."""
    command = f"{err.ctx.command_path} --help" if err.ctx is not None else "zsad --help"
    param = getattr(err, "param", None)
    name = None
    if param is not None:
        name = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
    if isinstance(err, click.MissingParameter) and name:
        return f"{name}: expected a value; got none ({command})"
    if isinstance(err, click.NoSuchOption):
        maybe = f"; did you mean {err.possibilities[0]}?" if err.possibilities else ""
        return f"{err.option_name}: expected an option of {command[:-7]}; got an unknown one{maybe} ({command})"
    if isinstance(err, click.BadParameter) and name:
        text = err.message.strip().rstrip(".")
        for pattern, form in (
                (r"(?:File|Directory|Path) '?(.+?)'? is a directory", "{0}: {name}: expected a file; got a folder"),
                (r"(?:File|Directory|Path) '?(.+?)'? does not exist",
                 "{0}: {name}: expected an existing file; got none there"),
                (r"(.+?) is not in the range (.+)", "{name}: expected a value in the range {1}; got {0} ({command})"),
                (r"'?(.+?)'? is not one of (.+)", "{name}: expected one of {1}; got '{0}' ({command})"),
                (r"'?(.+?)'? is not a valid (.+?)(?: range)?", "{name}: expected {a} {1}; got '{0}' ({command})")):
            m = re.fullmatch(pattern, text)
            if m:
                a = "an" if m.groups()[-1][:1] in tuple("aeiou") else "a"
                return form.format(*m.groups(), name=name, command=command, a=a)
        return f"{name}: {text} ({command})"
    return f"{err.format_message().strip().rstrip('.')} ({command})"


class _Group(click.Group):
    """The ``zsad`` group: usage errors as one line (exit 2), Ctrl-C anywhere as exit 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from zsad import _interrupt as interrupt

        try:
            with interrupt.remembered() as ctrl_c:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                if ctrl_c.requested:  # a Ctrl-C that something swallowed: the command still ends with 130
                    raise KeyboardInterrupt
        except click.UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `zsad` alone: the help, as click shows it
                err.show()
                sys.exit(err.exit_code)
            fail(usage_error(err).replace("\n", " "), EXIT_BAD_INPUT)
        except click.ClickException as err:
            fail(err.format_message().replace("\n", " "), err.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            fail("interrupted", 130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zsad")
def cli() -> None:
    """Zero-shot architecture design: will this network train well? Ask before training.

    Scores architectures at random initialization with the nonlinearity
    coefficient (NLC), Jacobian spectra and mean-field theory.
    """
