"""NAS-Bench-101: the notation, pruning and graph hash, sampling, exact parameter counts and the network."""

import csv
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from zsad._errors import SpecError
from zsad.spaces.nasbench101 import NB101Space
from zsad.spaces.nasbench101_cell import Cell, graph_hash, parse_cell, prune, sample_cells

REFERENCE = Path(__file__).parent / "data" / "space_reference.csv"
with REFERENCE.open() as _f:
    ROWS = [r for r in csv.DictReader(_f) if r["space"] == "nb101"]

C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
CHAIN = {"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", C3, "output"]}


def test_every_reference_parameter_count_is_exact():
    assert len(ROWS) >= 5
    space = NB101Space()
    for row in ROWS:
        cell = parse_cell(row["arch"])
        assert space.params(cell) == int(row["params"]), row["arch"]
        assert space.flops(cell) > 0


def test_pruning_removes_vertices_off_every_path():
    # vertex 2 feeds nothing that reaches the output; vertex 3 is not reached from the input
    matrix = np.array([[0, 1, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]])
    m, ops = prune(matrix, ["input", C3, C1, MP, "output"])
    assert m.tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]] and ops == ["input", C3, "output"]
    assert prune(np.zeros((3, 3), int), ["input", C3, "output"]) is None
    assert parse_cell({"matrix": matrix.tolist(), "ops": ["input", C3, C1, MP, "output"]}) == parse_cell(CHAIN)


def test_graph_hash_is_invariant_to_vertex_order_and_sees_operations():
    a = Cell(((0, 1, 1, 0), (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 0)), ("input", C3, C1, "output"))
    b = Cell(((0, 1, 1, 0), (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 0)), ("input", C1, C3, "output"))  # swapped
    c = Cell(a.matrix, ("input", C3, C3, "output"))
    assert graph_hash(a) == graph_hash(b) != graph_hash(c)


@pytest.mark.parametrize("node, fragment", [
    ({"matrix": [[0, 1], [1, 0]], "ops": ["input", "output"]}, "upper-triangular"),
    ({"matrix": [[0, 0], [0, 0]], "ops": ["input", "output"]}, "a path from the input"),
    ({"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": ["input", "conv5x5", "output"]}, "ops.1: expected one of"),
    ({"matrix": [[0, 1], [0, 0]], "ops": ["input", C3, "output"]}, "ops: expected 2 operations"),
    ({"matrix": np.triu(np.ones((7, 7), int), 1).tolist(), "ops": ["input", *[C3] * 5, "output"]},
     "at most 9 edges after pruning"),
    ("{not json", "expected {matrix"),
])
def test_invalid_cells_are_one_line(node, fragment):
    with pytest.raises(SpecError) as err:
        parse_cell(node)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_sample_draws_valid_distinct_cells_reproducibly():
    cells = sample_cells(40, seed=3)
    assert cells == sample_cells(40, seed=3) and len({graph_hash(c) for c in cells}) == 40
    for c in cells:
        assert parse_cell(json.loads(NB101Space().format(c))) == c  # the notation round-trips, pruned already
        assert len(c.ops) <= 7 and sum(map(sum, c.matrix)) <= 9


def test_built_network_holds_exactly_the_counted_parameters():
    space = NB101Space(width=8, depth=1, input_shape=(8, 8, 3))
    for cell in (parse_cell(CHAIN), parse_cell(ROWS[1]["arch"])):
        net = space.network(cell)
        shapes = jax.eval_shape(net.init, jax.random.key(0), net.scalars)["params"]
        assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes)) == space.params(cell)
