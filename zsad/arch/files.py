"""Writing architecture and search-space files (YAML) that read the same inputs from their new folder.

A relative input-data path (``input.data``) is relative to the file that names
it; a file written elsewhere gets the path rewritten relative to its own folder,
so that it reads the same samples. Imports no jax.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from zsad.arch.spec import Architecture, architecture_to_dict, dump_architecture


def relocated(arch: Architecture, folder: str | Path) -> Architecture:
    """``arch`` with a relative input-data path rewritten relative to ``folder``.

    >>> from zsad.arch.spec import parse_architecture
    >>> arch = parse_architecture({"input": {"shape": [4], "data": "x.npy"},
    ...                            "layers": [{"type": "dense", "features": 2}]}, file="/data/a/m.yaml")
    >>> relocated(arch, "/data/b").input.data
    '../a/x.npy'
    """
    inp = arch.input
    if inp.data == "gaussian" or Path(inp.data).is_absolute():
        return arch
    data = os.path.relpath(arch.base_dir / inp.data, Path(folder).resolve())
    return dataclasses.replace(arch, input=dataclasses.replace(inp, data=data))


def save_architecture(arch: Architecture, path: str | Path) -> Architecture:
    """Writes ``arch`` to ``path`` (``dump_architecture``); returns the architecture as written.

    A relative input-data path is rewritten relative to the new file's folder, so
    the written file reads the same samples.
    """
    path = Path(path)
    arch = relocated(arch, path.parent)
    dump_architecture(arch, path)
    return dataclasses.replace(arch, source=str(path))


def save_space(archs: list[Architecture], path: str | Path, name: str) -> None:
    """Writes ``archs`` as a search-space file of form 1 (``archs:`` inline architectures)."""
    from ruamel.yaml import YAML

    path = Path(path)
    doc = {"name": name, "archs": [architecture_to_dict(relocated(a, path.parent)) for a in archs]}
    yaml = YAML()
    yaml.default_flow_style = None
    with open(path, "w") as fh:
        yaml.dump(doc, fh)
