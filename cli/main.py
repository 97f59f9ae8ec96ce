"""Entry point of the ``zsad`` command: imports each command module so it registers itself."""

from zsad_cli import score as _score  # noqa: F401
from zsad_cli import rank as _rank  # noqa: F401
from zsad_cli import normalize as _normalize  # noqa: F401
from zsad_cli import phase as _phase  # noqa: F401
from zsad_cli import select as _select  # noqa: F401
from zsad_cli.app import cli


def main() -> None:
    cli(prog_name="zsad")


if __name__ == "__main__":
    main()
