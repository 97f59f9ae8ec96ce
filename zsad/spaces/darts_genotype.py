"""DARTS genotypes (Liu et al., ICLR 2019): the notation, parsing, formatting and sampling.

An architecture is a normal and a reduction cell. Each cell has two inputs
(nodes 0 and 1: the outputs of the two previous cells) and four intermediate
nodes; node ``i`` (2..5) sums two operations, each applied to an earlier node
(0..i-1), chosen among ``max_pool_3x3, avg_pool_3x3, skip_connect,
sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5``; the cell outputs the
concatenation of nodes 2..5. Notation, DARTS' genotype::

    Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ...8 pairs...], normal_concat=[2, 3, 4, 5],
             reduce=[...8 pairs...], reduce_concat=[2, 3, 4, 5])

(pairs ``(operation, input node)``, two per intermediate node in order), or the
YAML mapping ``{normal: [[op, input], ...], reduce: [...]}``.

The space (:mod:`zsad.spaces.darts`) and its networks (:mod:`zsad.spaces.darts_net`)
both read these definitions. No jax.
"""

from __future__ import annotations

import ast
from typing import Any, NamedTuple

import numpy as np

from zsad._errors import SpecError

#: The operations, in the order of their codes.
OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                        "dil_conv_3x3", "dil_conv_5x5")
NODES = 4
EDGES = 2 * NODES
CONCAT = (2, 3, 4, 5)
NUM_CLASSES = 10
INPUT_SHAPE = (32, 32, 3)
NOTATION = ("Genotype(normal=[(op, input) x 8], normal_concat=[2, 3, 4, 5], reduce=[(op, input) x 8], "
            "reduce_concat=[2, 3, 4, 5]) with op one of " + ", ".join(OPS) + " and node i's inputs in 0..i-1")

Pairs = tuple[tuple[str, int], ...]


class Genotype(NamedTuple):
    """A DARTS architecture: eight ``(operation, input node)`` pairs per cell."""

    normal: Pairs
    reduce: Pairs


def _pairs(value: Any, field: str) -> Pairs:
    if not isinstance(value, (list, tuple)) or len(value) != EDGES:
        raise SpecError(f"{field}: expected {EDGES} (operation, input) pairs, two per node; got "
                        f"{len(value) if isinstance(value, (list, tuple)) else repr(value)}")
    out = []
    for e, pair in enumerate(value):
        node = 2 + e // 2
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError(f"{field}.{e}: expected a pair (operation, input node); got {pair!r}")
        op, src = pair
        if op not in OPS:
            import difflib

            match = difflib.get_close_matches(str(op), OPS, n=1)
            raise SpecError(f"{field}.{e}: expected an operation among {', '.join(OPS)}; got {op!r}"
                            + (f"; did you mean '{match[0]}'?" if match else ""))
        if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < node:
            raise SpecError(f"{field}.{e}: node {node}'s input must be an existing node 0..{node - 1}; got {src!r}")
        out.append((str(op), int(src)))
    return tuple(out)


def _concat(value: Any, field: str) -> None:
    if list(value) != list(CONCAT) if isinstance(value, (list, tuple, range)) else True:
        raise SpecError(f"{field}: expected [2, 3, 4, 5] (every intermediate node is concatenated); got {value!r}")


def parse_genotype(node: Any) -> Genotype:
    """A genotype string or a ``{normal, reduce[, normal_concat, reduce_concat]}`` mapping -> :class:`Genotype`.

    Raises:
      SpecError: a one-line reason (malformed, wrong length, unknown operation, an input node that does
        not exist yet, a concatenation other than [2, 3, 4, 5]).
    """
    if isinstance(node, str):
        node = _genotype_fields(node)
    if not isinstance(node, dict):
        raise SpecError(f"expected {NOTATION}; got {node!r}")
    keys = set(map(str, node))
    if not {"normal", "reduce"} <= keys or not keys <= {"normal", "reduce", "normal_concat", "reduce_concat"}:
        raise SpecError(f"expected the fields normal, reduce (and normal_concat, reduce_concat); got "
                        f"{', '.join(sorted(keys)) or 'none'}")
    for key in ("normal_concat", "reduce_concat"):
        if key in node:
            _concat(node[key], key)
    return Genotype(_pairs(node["normal"], "normal"), _pairs(node["reduce"], "reduce"))


def _genotype_fields(text: str) -> dict:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        tree = None
    if (not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name) or tree.func.id != "Genotype"
            or tree.args):
        raise SpecError(f"expected {NOTATION}; got {text if len(text) < 80 else text[:77] + '...'!r}")
    out = {}
    for kw in tree.keywords:
        try:
            v = kw.value
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "range" and not v.keywords:
                out[str(kw.arg)] = list(range(*(int(ast.literal_eval(a)) for a in v.args)))  # DARTS prints range(2, 6)
            else:
                out[str(kw.arg)] = ast.literal_eval(v)
        except (ValueError, TypeError):
            raise SpecError(f"{kw.arg}: expected a list of literals; got {ast.unparse(kw.value)!r}") from None
    return out


def format_genotype(g: Genotype) -> str:
    """DARTS' genotype notation."""
    def cell(pairs):
        return "[" + ", ".join(f"('{op}', {src})" for op, src in pairs) + "]"

    return (f"Genotype(normal={cell(g.normal)}, normal_concat=[2, 3, 4, 5], reduce={cell(g.reduce)}, "
            f"reduce_concat=[2, 3, 4, 5])")


def sample_genotypes(n: int, seed: int) -> list[Genotype]:
    """``n`` distinct genotypes by DARTS' rule: each node draws two distinct inputs among the earlier nodes
    and an operation for each, uniformly (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    out: list[Genotype] = []
    seen: set[Genotype] = set()
    while len(out) < n:
        cells = []
        for _ in range(2):
            pairs = []
            for i in range(NODES):
                inputs = rng.choice(i + 2, size=2, replace=False)
                ops = rng.integers(0, len(OPS), size=2)
                pairs += [(OPS[int(o)], int(s)) for o, s in zip(ops, inputs)]
            cells.append(tuple(pairs))
        g = Genotype(*cells)
        if g not in seen:
            seen.add(g)
            out.append(g)
    return out
