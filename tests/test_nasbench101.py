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


# --------------------------------------------------------------------------- the group's program, rank

# Two cells of one group (same vertices feeding the output, same widths): edges and operations differ.
CELL_A = {"matrix": [[0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
          "ops": ["input", C3, MP, C1, "output"]}
CELL_B = {"matrix": [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
          "ops": ["input", C1, C3, MP, "output"]}
TINY = dict(width=4, depth=1, input_shape=(8, 8, 3))


def test_group_program_equals_the_directly_built_network(x64):
    from zsad.nlc import nlc_of_tangents, push_tangents
    from zsad.spaces import restrict

    space = NB101Space(**TINY)
    a, b = parse_cell(CELL_A), parse_cell(CELL_B)
    assert space.group(a) == space.group(b) and a.matrix != b.matrix
    program = space.program(space.group(a))
    key, x = jax.random.key(3), jax.random.normal(jax.random.key(1), (6, *TINY["input_shape"]))
    tangents = jax.random.normal(jax.random.key(2), (2, *x.shape))

    def outs_and_nlc(net, variables, scalars):
        (y, _), ((pushed, _), _) = push_tangents(lambda z: net.apply_calibrating(variables, scalars, z), x, tangents)
        return y[1], nlc_of_tangents(y[0], pushed).nlc

    variables = program.init(key, space.scalars(a))  # eager, as the direct networks' draws below
    run = jax.jit(lambda scalars: outs_and_nlc(program, variables, scalars))  # one program, both cells
    heads = []
    for cell in (a, b):
        net = space.network(cell)
        direct = net.init(key, net.scalars)
        assert jax.tree.all(jax.tree.map(np.array_equal, restrict(variables, direct), direct))  # same weights
        (outs_p, nlc_p), (outs_d, nlc_d) = (run(space.scalars(cell)),
                                            jax.jit(lambda v: outs_and_nlc(net, v, net.scalars))(direct))
        for name in net.layer_names:
            np.testing.assert_allclose(outs_p[name], outs_d[name], rtol=1e-9, atol=1e-9)
        assert float(nlc_p) == pytest.approx(float(nlc_d), rel=1e-9) and float(nlc_d) > 1.0
        heads.append(outs_p["head"])
    assert not np.allclose(*heads)  # the scalars do choose the cell


def test_rank_a_space_file(tmp_path, cli_env):
    from helpers import ranked_rows

    path = tmp_path / "space.yaml"
    path.write_text("space: nas-bench-101\nwidth: 4\ndepth: 1\ninput: {shape: [8, 8, 3]}\narchs:\n"
                    f"  - {json.dumps(CELL_A)}\n  - {json.dumps(CELL_B)}\n  - {json.dumps(CHAIN)}\n")
    rows = ranked_rows(path, tmp_path / "ranked.csv", "--seeds", "2", "--batch", "8",
                       "--metrics", "nlc,params,flops,naswot")
    space = NB101Space(**TINY)
    cells = [parse_cell(c) for c in (CELL_A, CELL_B, CHAIN)]
    assert [parse_cell(json.loads(r["arch"])) for r in rows] == cells
    for row, cell in zip(rows, cells):
        assert row["status"] == "ok" and not row["reason"], row
        assert int(row["params"]) == space.params(cell) and int(row["flops"]) == space.flops(cell)
        for column in ("nlc", "nlc_std", "nlc_block", "naswot", "score"):
            assert math.isfinite(float(row[column])), column
    assert sorted(int(r["rank"]) for r in rows) == [1, 2, 3]
