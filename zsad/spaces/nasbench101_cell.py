"""NAS-Bench-101 cells (Ying et al., ICML 2019): the notation, pruning, the graph hash and sampling.

A cell is a directed acyclic graph of at most 7 vertices given by an
upper-triangular 0/1 adjacency matrix (``matrix[i][j] = 1``: an edge from
vertex ``i`` to vertex ``j``) and one operation per vertex: ``input`` (first),
``output`` (last) and, between them, ``conv3x3-bn-relu``, ``conv1x1-bn-relu``
or ``maxpool3x3``; at most 9 edges. Notation (YAML or the compact JSON of the
``arch`` column)::

    {matrix: [[0, 1, 1], [0, 0, 1], [0, 0, 0]], ops: [input, conv3x3-bn-relu, output]}

As the benchmark's API (``ModelSpec``) does, a cell is *pruned* first: vertices
that are not on a path from the input to the output are removed; the limits
(7 vertices, 9 edges) are checked on the pruned cell, and a cell whose output
cannot be reached from its input is invalid. The canonical architecture is the
pruned cell (:class:`Cell`); :func:`graph_hash` is the benchmark's
``hash_module`` (equal for isomorphic cells).

The space (:mod:`zsad.spaces.nasbench101`) and its networks
(:mod:`zsad.spaces.nasbench101_net`) both read these definitions. No jax.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

import numpy as np

from zsad._errors import SpecError, closest

#: The operations of interior vertices, in the order of their codes (the benchmark's ``available_ops``).
OPS: tuple[str, ...] = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
INPUT, OUTPUT = "input", "output"
MAX_VERTICES = 7
MAX_EDGES = 9
NUM_CLASSES = 10
INPUT_SHAPE = (32, 32, 3)
#: The convolution operations and their kernel sizes.
KERNEL = {"conv3x3-bn-relu": 3, "conv1x1-bn-relu": 1}


class Cell(NamedTuple):
    """A pruned NAS-Bench-101 cell: ``matrix`` (tuple of row tuples of 0/1) and ``ops`` (vertex operations)."""

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.int64)


NOTATION = "{matrix: [[0/1 x N] x N] upper-triangular, ops: [input, <op> x (N-2), output]} with N <= 7"


def prune(matrix: np.ndarray, ops: list[str]) -> tuple[np.ndarray, list[str]] | None:
    """Removes the vertices not on an input-to-output path (the benchmark's ``ModelSpec._prune``);
    None when the output cannot be reached from the input."""
    n = matrix.shape[0]
    seen_in, frontier = {0}, [0]
    while frontier:
        top = frontier.pop()
        for v in range(top + 1, n):
            if matrix[top, v] and v not in seen_in:
                seen_in.add(v)
                frontier.append(v)
    seen_out, frontier = {n - 1}, [n - 1]
    while frontier:
        top = frontier.pop()
        for v in range(top):
            if matrix[v, top] and v not in seen_out:
                seen_out.add(v)
                frontier.append(v)
    extraneous = sorted(set(range(n)) - (seen_in & seen_out))
    if len(extraneous) > n - 2:
        return None
    keep = [v for v in range(n) if v not in extraneous]
    return matrix[np.ix_(keep, keep)], [ops[v] for v in keep]


def graph_hash(cell: Cell) -> str:
    """The benchmark's ``hash_module`` of a pruned cell (labels: input -1, output -2, else the op's code)."""
    matrix = cell.array
    labeling = [-1] + [OPS.index(op) for op in cell.ops[1:-1]] + [-2]
    n = matrix.shape[0]
    in_edges = np.sum(matrix, axis=0).tolist()
    out_edges = np.sum(matrix, axis=1).tolist()
    hashes = [hashlib.md5(str(h).encode("utf-8")).hexdigest() for h in zip(out_edges, in_edges, labeling)]
    for _ in range(n):
        hashes = [hashlib.md5(("".join(sorted(hashes[w] for w in range(n) if matrix[w, v])) + "|"
                               + "".join(sorted(hashes[w] for w in range(n) if matrix[v, w])) + "|"
                               + hashes[v]).encode("utf-8")).hexdigest() for v in range(n)]
    return hashlib.md5(str(sorted(hashes)).encode("utf-8")).hexdigest()


def parse_cell(node: Any) -> Cell:
    """``{matrix, ops}`` (a mapping or its JSON text) -> the pruned :class:`Cell`.

    Raises:
      SpecError: a one-line reason (malformed, unknown operation, not upper-triangular, no path from
        input to output, more than 7 vertices or 9 edges after pruning).
    """
    if isinstance(node, str):
        try:
            node = json.loads(node)
        except json.JSONDecodeError:
            raise SpecError(f"expected {NOTATION}; got {node!r}") from None
    if not isinstance(node, dict) or set(map(str, node)) != {"matrix", "ops"}:
        raise SpecError(f"expected {NOTATION}; got {_show(node)}")
    rows, ops = node["matrix"], node["ops"]
    if not isinstance(rows, list) or len(rows) < 2 or not all(isinstance(r, list) and len(r) == len(rows)
                                                              for r in rows):
        raise SpecError(f"matrix: expected a square list of N >= 2 rows of N integers 0 or 1; got {_show(rows)}")
    if not all(v in (0, 1) and not isinstance(v, float) for r in rows for v in r):
        raise SpecError(f"matrix: expected entries 0 or 1; got {_show(rows)}")
    n = len(rows)
    if not isinstance(ops, list) or len(ops) != n:
        raise SpecError(f"ops: expected {n} operations (one per vertex of the {n}x{n} matrix); got {_show(ops)}")
    if ops[0] != INPUT or ops[-1] != OUTPUT:
        raise SpecError(f"ops: expected 'input' first and 'output' last; got {_show(ops)}")
    for i, op in enumerate(ops[1:-1], start=1):
        if op not in OPS:
            raise SpecError(f"ops.{i}: expected one of {', '.join(OPS)}; got {op!r}{closest(str(op), OPS)}")
    matrix = np.asarray(rows, dtype=np.int64)
    if np.any(np.tril(matrix)):
        i, j = (int(v) for v in np.argwhere(np.tril(matrix))[0])
        raise SpecError(f"matrix: expected an upper-triangular matrix (edges i -> j with i < j only); "
                        f"got a 1 at row {i}, column {j}")
    pruned = prune(matrix, list(ops))
    if pruned is None:
        raise SpecError("expected a path from the input to the output vertex; got none")
    m, o = pruned
    if m.shape[0] > MAX_VERTICES:
        raise SpecError(f"expected at most {MAX_VERTICES} vertices after pruning; got {m.shape[0]}")
    if int(m.sum()) > MAX_EDGES:
        raise SpecError(f"expected at most {MAX_EDGES} edges after pruning; got {int(m.sum())}")
    return Cell(tuple(tuple(int(v) for v in r) for r in m), tuple(str(v) for v in o))


def _show(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str) if isinstance(value, (list, dict)) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."



def format_cell(cell: Cell) -> str:
    """Compact JSON of ``matrix`` and ``ops`` (the ``arch`` column)."""
    return json.dumps({"matrix": [list(r) for r in cell.matrix], "ops": list(cell.ops)}, separators=(",", ":"))


def vertex_channels(c_in: int, c_out: int, matrix: np.ndarray) -> list[int]:
    """Channels of each vertex of a cell from ``c_in`` to ``c_out`` (the benchmark's ``compute_vertex_channels``)."""
    n = matrix.shape[0]
    ch = [0] * n
    ch[0], ch[n - 1] = c_in, c_out
    if n == 2:
        return ch
    in_degree = np.sum(matrix[1:], axis=0)
    interior, correction = divmod(c_out, int(in_degree[n - 1]))
    for v in range(1, n - 1):
        if matrix[v, n - 1]:
            ch[v] = interior + (1 if correction else 0)
            correction -= 1 if correction else 0
    for v in range(n - 3, 0, -1):
        if not matrix[v, n - 1]:
            for dst in range(v + 1, n - 1):
                if matrix[v, dst]:
                    ch[v] = max(ch[v], ch[dst])
    return ch


def sample_cells(n: int, seed: int) -> list[Cell]:
    """``n`` cells by the benchmark's rule: a random 0/1 matrix (upper triangle) and random operations, pruned,
    drawn again while invalid; distinct by :func:`graph_hash`. ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    out: list[Cell] = []
    seen: set[str] = set()
    while len(out) < n:
        matrix = np.triu(rng.integers(0, 2, size=(MAX_VERTICES, MAX_VERTICES)), 1)
        ops = [INPUT] + [OPS[i] for i in rng.integers(0, len(OPS), size=MAX_VERTICES - 2)] + [OUTPUT]
        pruned = prune(matrix, ops)
        if pruned is None or int(pruned[0].sum()) > MAX_EDGES:
            continue
        m, o = pruned
        cell = Cell(tuple(tuple(int(v) for v in r) for r in m), tuple(o))
        h = graph_hash(cell)
        if h not in seen:
            seen.add(h)
            out.append(cell)
    return out
