"""TransNAS-Bench-101 micro and macro spaces: notation, enumeration, exact sizes, networks.

``tests/data/space_reference.csv`` is a copy of the shared reference table: per space and task,
architectures with the parameter count of the benchmark's own network (``params``) and the FLOPs
NAS-Bench-Suite-Zero reports (``flops_m``, millions).
"""

import csv
import itertools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad._errors import SpecError
from zsad.nlc import nlc_profile
from zsad.spaces import get_space, restrict
from zsad.spaces.transnas import (
    TASKS, TransNASMacro, TransNASMicro, all_macro, format_macro, format_micro, parse_macro, parse_micro,
)
from zsad.spaces.transnas_net import DecoderConv

REFERENCE = Path(__file__).parent / "data" / "space_reference.csv"
SPACES = {"tnb_micro": TransNASMicro, "tnb_macro": TransNASMacro}


def _rows():
    with open(REFERENCE) as f:
        return [r for r in csv.DictReader(f) if r["space"] in SPACES]


ROWS = _rows()


def _space(row):
    return SPACES[row["space"]](row["task"])


# --------------------------------------------------------------------------- sizes

def test_reference_covers_every_task():
    assert {(r["space"], r["task"]) for r in ROWS} == {(s, t) for s in SPACES for t in TASKS}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['space']}-{r['task']}-{r['arch']}")
def test_params_match_the_benchmark(row):
    space = _space(row)
    arch = space.parse(row["arch"])
    assert space.format(arch) == row["arch"]
    assert space.params(arch) == int(row["params"])


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['space']}-{r['task']}-{r['arch']}")
def test_flops_convention_against_the_reference(row):
    space = _space(row)
    ratio = space.flops(space.parse(row["arch"])) / (1e6 * float(row["flops_m"]))
    kind = TASKS[row["task"]][0]
    if kind == "dense":  # everything counted alike; the reference holds 8,604 more in the skeleton
        assert 0.99997 < ratio <= 1.0
    elif kind == "jigsaw":  # the reference counts the encoder on one tile of nine
        assert 7.6 < ratio < 9.0
    else:  # the reference leaves the decoder's transposed convolutions and leaky ReLUs out
        assert 1.0 < ratio < 1.45


def _row(space, task):
    return next(r for r in ROWS if (r["space"], r["task"]) == (space, task))


#: One network per kind of head (tracing a network is slow; the other tasks' counts are checked above).
BUILT = [("tnb_micro", "class_object", (2, 100)), ("tnb_macro", "room_layout", (2, 9)),
         ("tnb_macro", "jigsaw", (2, 1000)), ("tnb_macro", "autoencoder", (2, 32, 32, 3)),
         ("tnb_macro", "segmentsemantic", (2, 32, 32, 17))]


@pytest.mark.parametrize("space_name, task, out_shape", BUILT, ids=lambda v: str(v))
def test_built_network_holds_the_benchmark_parameters(space_name, task, out_shape):
    """The built network's variables hold exactly the reference's parameters; its head has the task's shape."""
    row = _row(space_name, task)
    space = SPACES[space_name](task)
    net = space.network(space.parse(row["arch"]))
    variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    assert sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(variables["params"])) == int(row["params"])
    shape = (2, 32, 32, 27 if task == "jigsaw" else 3)
    y, outs = jax.eval_shape(net.apply, variables, net.scalars, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert y.shape == out_shape and sorted(outs) == sorted(net.layer_names)
    digits = (4, 1, 4, 1, 4) if space_name == "tnb_micro" else space.parse(row["arch"])
    channels = 64 * 2 ** sum(d in (2, 4) for d in digits)  # the encoder's width
    assert outs["encoder"].shape[-1] == (9 * channels if task == "jigsaw" else channels)


def test_masked_program_holds_every_candidate():
    space = TransNASMicro("class_object", skeleton=(4,))
    program = jax.eval_shape(space.program("micro").init, jax.random.key(0), space.scalars((3,) * 6))
    cell = program["params"]["encoder"]["cell0"]  # stride 2 and 64 -> 128: skip is a factorized reduce
    assert set(cell) == {f"edge{e}_{op}" for e in range(6) for op in ("conv1x1", "conv3x3")} | {
        f"edge{e}_reduce" for e in (0, 1, 3)}
    assert "edge0_reduce" not in program["params"]["encoder"]["cell1"]  # identity there


# --------------------------------------------------------------------------- notation

def test_enumeration_sizes_and_round_trips():
    micro, macro = TransNASMicro("class_scene"), TransNASMacro("class_scene")
    cells = list(micro.all())
    assert len(cells) == micro.size == 4096 == len(set(cells))
    assert all(parse_micro(format_micro(c)) == c for c in cells)
    skeletons = list(macro.all())
    assert len(skeletons) == macro.size == 3256 == len(set(skeletons))
    assert all(parse_macro(format_macro(s)) == s for s in skeletons)
    # the rule, counted independently: 4-6 digits, width doubled 1-3 times, size halved 1-4 times
    brute = [s for n in (4, 5, 6) for s in itertools.product(range(1, 5), repeat=n)
             if 1 <= sum(d % 2 == 0 for d in s) <= 3 and 1 <= sum(d > 2 for d in s) <= 4]
    assert set(brute) == set(all_macro())
    assert all(macro.parse(r["arch"]) in set(skeletons) for r in ROWS if r["space"] == "tnb_macro")


@pytest.mark.parametrize("cls", [TransNASMicro, TransNASMacro])
def test_sample_is_seeded_distinct_and_in_space(cls):
    space = cls("class_object")
    a, b = space.sample(50, 3), space.sample(50, 3)
    assert a == b and len(set(a)) == 50 and a != space.sample(50, 4)
    assert set(a) <= set(space.all())
    with pytest.raises(SpecError, match="sample: expected an integer"):
        space.sample(space.size + 1, 0)


@pytest.mark.parametrize("text, expected", [
    ("64-41414-3_11_02", "64-41414-a_bc_def"),
    ("64-41414-4_11_021", "digits 0-3"),
    ("64-41414-311021", "64-41414-a_bc_def"),
    ("32-41414-3_11_021", "skeleton '64-41414-'"),
    ("64-4141-3_11_021", "skeleton '64-41414-'"),
    (41414, "got int"),
])
def test_micro_bad_notation(text, expected):
    with pytest.raises(SpecError, match=expected) as err:
        TransNASMicro("class_object").parse(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("64-111-basic", "4 to 6 stage digits"),
    ("64-1111111-basic", "4 to 6 stage digits"),
    ("64-1511-basic", "stage digits 1-4"),
    ("64-1111-basic", "width doubled"),
    ("64-2222-basic", "width doubled"),
    ("64-2111-basic", "size halved"),
    ("64-41414-3_11_021", "64-XXXX-basic"),
    ("128-4211-basic", "64-XXXX-basic"),
])
def test_macro_bad_notation(text, expected):
    with pytest.raises(SpecError, match=expected) as err:
        TransNASMacro("class_object").parse(text)
    assert "\n" not in str(err.value)


def test_configure_and_registry():
    assert get_space("tnb_micro") is TransNASMicro and get_space("transnas-macro") is TransNASMacro
    space = TransNASMicro.configure({"task": "jigsaw"}, None)
    assert space.input_shape == (64, 64, 27) and space.task == "jigsaw"
    with pytest.raises(SpecError, match="task: expected a field 'task' \\(transnas-micro needs a head"):
        TransNASMicro.configure({}, None)
    with pytest.raises(SpecError, match="class_object"):
        TransNASMacro.configure({"task": "class_objet"}, None)
    with pytest.raises(SpecError, match="expected one of"):
        get_space("transnas-mikro")


def test_degenerate_cells():
    space = TransNASMicro("class_object")
    assert space.degenerate((2, 2, 1, 0, 0, 0)) is not None  # node 3 takes only `none`
    assert space.degenerate((0, 3, 3, 0, 3, 0)) is not None  # 0 -> 2 -> 3 cut at 2 -> 3
    assert space.degenerate((0, 0, 0, 1, 0, 0)) is None
    assert sum(space.degenerate(a) is not None for a in space.all()) == 4096 - sum(
        1 for a in space.all() if a[3] or (a[5] and (a[1] or (a[0] and a[2]))) or (a[4] and a[0]))
    assert TransNASMacro("class_object").degenerate((4, 1, 4, 1)) is None


# --------------------------------------------------------------------------- networks

def test_transposed_convolution_doubles_exactly():
    """The decoder's deconvolution equals PyTorch's ConvTranspose2d(3, stride 2, padding 1, output padding 1),
    written out as a scatter: input (i, j) adds w[a, b] to output (2i + a - 1, 2j + b - 1)."""
    x = np.asarray(jax.random.normal(jax.random.key(0), (1, 3, 4, 2)))
    w = np.asarray(jax.random.normal(jax.random.key(1), (3, 3, 2, 5)))  # torch's kernel, [kh, kw, in, out]
    full = np.zeros((1, 3 * 2 + 2, 4 * 2 + 2, 5))
    for i, j, a, b in itertools.product(range(3), range(4), range(3), range(3)):
        full[0, 2 * i + a, 2 * j + b] += x[0, i, j] @ w[a, b]
    expected = full[:, 1:7, 1:9]  # drop the padding of 1 on top/left; 2H x 2W
    module = DecoderConv(5, transpose=True)
    y = module.apply({"params": {"kernel": jnp.asarray(w[::-1, ::-1]), "bias": jnp.zeros(5)}}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


def _nlc(net, variables, scalars, x):
    return nlc_profile(lambda v: net.apply(variables, scalars, v)[0], x, jax.random.key(7), num_tangents=2).nlc


def test_masked_program_equals_direct_network():
    """One compiled program, the cell chosen by scalars, against each cell built directly (same variables):
    same outputs and NLC. A two-cell skeleton (stride 2 and width x2, then plain) meets every branch:
    factorized reduce, identity, zeros of a new shape, both convolutions."""
    space = TransNASMicro("class_object", skeleton=(4,))
    program = space.program(space.group((3,) * 6))
    init, calibrate = jax.jit(program.init), jax.jit(program.calibrate)
    run = jax.jit(lambda v, s, x: (program.apply(v, s, x)[0], _nlc(program, v, s, x)))
    x = jax.random.normal(jax.random.key(1), (6, 16, 16, 3))
    for arch in [(1, 2, 1, 3, 0, 1), (0, 1, 3, 1, 3, 2)]:  # a degenerate cell: tests/test_transnas_files.py
        scalars = space.scalars(arch)
        assert space.group(arch) == "micro"
        variables = calibrate(init(jax.random.key(0), scalars), scalars, x)
        y, nlc = run(variables, scalars, x)
        net = space.network(arch)
        direct = restrict(variables, jax.eval_shape(net.init, jax.random.key(0), net.scalars))
        drawn = net.init(jax.random.key(0), net.scalars)  # the direct network draws the program's values
        for a, b in zip(jax.tree_util.tree_leaves(drawn["params"]), jax.tree_util.tree_leaves(direct["params"])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
        y_direct = net.apply(direct, net.scalars, x)[0]
        np.testing.assert_allclose(np.asarray(y), np.asarray(y_direct), rtol=1e-5, atol=1e-6)
        recal = net.calibrate(direct, net.scalars, x)
        np.testing.assert_allclose(np.asarray(net.apply(recal, net.scalars, x)[0]), np.asarray(y_direct),
                                   rtol=1e-5, atol=1e-6)
        assert space.degenerate(arch) is None and float(jnp.std(y[:, 0])) > 0
        np.testing.assert_allclose(float(_nlc(net, direct, net.scalars, x)), float(nlc), rtol=1e-5)


def test_macro_group_is_the_skeleton():
    space = TransNASMacro("class_scene")
    a, b = (4, 1, 1, 1), (1, 4, 1, 1)
    assert space.group(a) == a != space.group(b)
    program, net = space.program(space.group(a)), space.network(a)
    x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
    variables = program.calibrate(program.init(jax.random.key(0), space.scalars(a)), space.scalars(a), x)
    y = program.apply(variables, space.scalars(a), x)[0]
    assert y.shape == (4, 63) and net.layer_names == program.layer_names
    np.testing.assert_allclose(np.asarray(net.apply(variables, net.scalars, x)[0]), np.asarray(y), rtol=1e-6)
    assert net.layer_names[-2:] == ("encoder", "head") and len(net.layer_names) == 1 + 8 + 1
