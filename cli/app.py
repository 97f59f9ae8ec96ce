"""The click group, shared options and the one error handler of the ``zsad`` command."""

from __future__ import annotations

import functools
import json
import os
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
            return fn(*args, **kwargs)
        except ZsadError as err:
            if debug:
                raise
            fail(str(err).replace("\n", " "), EXIT_BAD_INPUT)
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
        with open(out, "w") as fh:
            fh.write(text + "\n")
    if as_json:
        click.echo(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zsad")
def cli() -> None:
    """Zero-shot architecture design: will this network train well? Ask before training.

    Scores architectures at random initialization with the nonlinearity
    coefficient (NLC), Jacobian spectra and mean-field theory.
    """
    from zsad.cache import enable_compilation_cache

    enable_compilation_cache()
