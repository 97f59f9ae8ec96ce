"""Files naming one architecture of a built-in space (``space:`` + ``arch:``), as ``zsad score`` reads them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from zsad._errors import SpecError, locate
from zsad.arch.spec import Architecture, Context, Input, check_mapping, load_architecture, read_yaml
from zsad.space import NB201_ALIASES, NB201_NAMES, configured_space, file_name, nb201_input
from zsad.spaces import NAMES, canonical_name, suggestion
from zsad.spaces import nasbench201 as nb201


@dataclass(frozen=True)
class CellArchitecture:
    """One architecture of a built-in space, as ``zsad score`` reads it from a file with ``space:`` and ``arch:``.

    Attributes:
      name: the file's ``name`` (default: the file's stem).
      space: the built-in space's name (``nas-bench-201``, ``transnas-micro`` ...).
      ops: the architecture in the space's own terms (NAS-Bench-201: its six operations; other spaces:
        their canonical architecture).
      input: the input, as in a space file.
      source: the file it came from.
      model: the configured :class:`zsad.spaces.BuiltinSpace` (None: NAS-Bench-201).
    """

    name: str
    space: str
    ops: Any
    input: Input
    source: str | None = None
    model: Any = None

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    @property
    def notation(self) -> str:
        if self.model is not None:
            return self.model.format(self.ops)
        return nb201.format_arch(self.ops)


def parse_cell(node: Any, *, file: str | None = None) -> CellArchitecture:
    """Validates a mapping ``{space: nas-bench-201, arch: '<string>', name?, input?, data?}``."""
    ctx = Context(file)
    canon = canonical_name(node["space"]) if isinstance(node, dict) and isinstance(node.get("space"), str) else None
    if canon is not None and canon not in NB201_NAMES:
        return _builtin_cell(node, ctx, file, canon)
    check_mapping(node, ctx, ("name", "space", "arch", "input", "data"), "architecture of a built-in space")
    kind = node["space"]
    if isinstance(kind, str):
        kind = NB201_ALIASES.get(kind.lower(), kind.lower())
    if kind not in NB201_NAMES:
        raise ctx.child(node, "space").error(f"one of {', '.join(NAMES)}", node["space"],
                                             suggestion(str(node["space"])))
    if "arch" not in node:
        raise ctx.error("a field 'arch' (a NAS-Bench-201 architecture string '|a~0|+|b~0|c~1|+|d~0|e~1|f~2|')")
    actx = ctx.child(node, "arch")
    if not isinstance(node["arch"], str):
        raise actx.error("a NAS-Bench-201 architecture string '|a~0|+|b~0|c~1|+|d~0|e~1|f~2|'", node["arch"])
    try:
        ops = nb201.parse_arch(node["arch"])
    except SpecError as err:
        raise SpecError(f"{locate(actx.file, actx.line, actx.col)}: arch: {err}") from None
    name = file_name(node, ctx, file, "cell")
    return CellArchitecture(name, kind, ops, nb201_input(node, ctx), file)


def _builtin_cell(node, ctx, file, canon: str) -> CellArchitecture:
    space, inp = configured_space(node, ctx, canon, ("name", "space", "arch", "input", "data"))
    if "arch" not in node:
        raise ctx.error(f"a field 'arch' ({space.notation})")
    actx = ctx.child(node, "arch")
    try:
        arch = space.parse(node["arch"])
    except SpecError as err:
        raise SpecError(f"{locate(actx.file, actx.line, actx.col)}: arch: {err}") from None
    name = file_name(node, ctx, file, "cell")
    return CellArchitecture(name, canon, arch, inp, file, model=space)


def load_scorable(path: str | Path) -> Union[Architecture, CellArchitecture]:
    """An architecture file, or a file naming one architecture of a built-in space (``space:`` + ``arch:``)."""
    node = read_yaml(path)
    if isinstance(node, dict) and "space" in node and "archs" not in node:
        return parse_cell(node, file=str(path))
    return load_architecture(path)
