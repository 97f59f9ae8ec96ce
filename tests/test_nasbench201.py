"""NAS-Bench-201: strings, enumeration, exact counts, and the direct vs masked networks."""

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad.spaces import nasbench201 as nb
from zsad.spaces import nasbench201_net as nbn
from zsad._errors import DataError, SpecError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "nb201_reference.csv"
BATCH = 8

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
WITH_NONE = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
# conv on 0->1 is a dead end (node 1 feeds only `none` edges); node 2 is zero but feeds a conv
DEAD_END = "|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|"
DEGENERATE = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
MIXED = "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"


def _reference_rows():
    if not REFERENCE.exists():
        pytest.skip(f"reference table {REFERENCE} not found (it lives in the shared folder beside the repository)")
    with REFERENCE.open() as f:
        return list(csv.DictReader(f))


def _inputs(n=BATCH, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, *nb.INPUT_SHAPE), jnp.result_type(float))


def _close(a, b, tol=1e-10):
    """Max error relative to the magnitude of the layer.

    Network comparisons run in float64: in float32, rounding differences between
    two compiled programs grow through the 15 cells (to ~1e-4 relative at the
    last cell of the all-``nor_conv_3x3`` network), which would hide real
    mismatches; in float64 they stay below 1e-12.
    """
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(1.0, float(np.max(np.abs(b))))
    err = float(np.max(np.abs(a - b))) / scale
    assert err <= tol, err


# --------------------------------------------------------------------------- strings and enumeration

def test_parse_and_format_round_trip():
    ops = nb.parse_arch(WITH_NONE)
    assert ops == ("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "none", "nor_conv_1x1")
    assert nb.format_arch(ops) == WITH_NONE
    assert nb.parse_arch(f"  {WITH_NONE}\n") == ops
    for arch in nb.sample_archs(200, seed=3):
        assert nb.parse_arch(nb.format_arch(arch)) == arch


def test_reference_strings_round_trip():
    for row in _reference_rows():
        assert nb.format_arch(nb.parse_arch(row["arch"])) == row["arch"]


@pytest.mark.parametrize("text, fragment", [
    ("|nor_conv_3x4~0|+|none~0|none~1|+|none~0|none~1|none~2|", "'nor_conv_3x4~0'"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "got 'conv'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "expected source node 0"),
    ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "'none'"),
    ("|none~0|+|none~0|none~1|", "expected 3 nodes"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2: expected 2 token(s)"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "bars at both ends"),
    ("", "expected 3 nodes"),
], ids=["typo", "unknown-op", "bad-index", "no-index", "two-nodes", "short-node", "no-bar", "empty"])
def test_bad_strings(text, fragment):
    with pytest.raises(SpecError) as err:
        nb.parse_arch(text)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_unknown_op_lists_valid_ops_and_suggests():
    with pytest.raises(SpecError, match="did you mean 'nor_conv_3x3'") as err:
        nb.parse_arch("|nor_conv_3x4~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert "none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3" in str(err.value)
    with pytest.raises(SpecError, match="expected 6 operations"):
        nb.format_arch(("none",) * 5)
    with pytest.raises(SpecError, match="expected one of"):
        nb.param_count(("none",) * 5 + ("max_pool_3x3",))
    with pytest.raises(SpecError, match="expected a string"):
        nb.parse_arch(3)


def test_all_archs_order_and_indices():
    archs = nb.all_archs()
    assert len(archs) == nb.NUM_ARCHS == 15625
    assert len(set(archs)) == 15625
    assert archs[0] == ("none",) * 6 and archs[-1] == ("avg_pool_3x3",) * 6
    for i in (0, 1, 4, 5, 777, 15624):
        assert nb.arch_index(archs[i]) == i
        assert nb.arch_from_index(i) == archs[i]
        codes = nb.encode(archs[i])
        assert codes.shape == (6,) and codes.dtype == np.int32
        assert nb.decode(codes) == archs[i]
    assert list(nb.encode(WITH_NONE)) == [3, 0, 1, 4, 0, 2]
    with pytest.raises(SpecError):
        nb.arch_from_index(15625)
    with pytest.raises(SpecError):
        nb.decode([0, 1, 2, 3, 4, 5])


def test_sample_archs():
    a = nb.sample_archs(50, seed=7)
    assert a == nb.sample_archs(50, seed=7)
    assert a != nb.sample_archs(50, seed=8)
    assert len(set(a)) == 50
    assert len(set(nb.sample_archs(nb.NUM_ARCHS, seed=0))) == nb.NUM_ARCHS
    for bad in (15626, -1, 2.5):
        with pytest.raises(SpecError, match="15625"):
            nb.sample_archs(bad)


def test_is_degenerate_matches_path_enumeration():
    def reachable(ops):  # the four paths 0->3, 0->1->3, 0->2->3, 0->1->2->3 (edge indices)
        paths = ((3,), (0, 4), (1, 5), (0, 2, 5))
        return any(all(ops[e] != "none" for e in p) for p in paths)

    degenerate = [a for a in nb.all_archs() if nb.is_degenerate(a)]
    assert degenerate == [a for a in nb.all_archs() if not reachable(a)]
    assert len(degenerate) == 341
    assert nb.is_degenerate(DEGENERATE) and not nb.is_degenerate(DEAD_END)


# --------------------------------------------------------------------------- counts

def test_param_count_matches_reference():
    rows = _reference_rows()
    assert len(rows) == 41
    for row in rows:
        assert nb.param_count(row["arch"]) == int(row["params"]), row["arch"]
    assert nb.param_count(ALL_3X3) == 1531546


def test_flops_match_reference_up_to_constant_skeleton_offset():
    rows = _reference_rows()
    # per-operation costs are exact: the difference to the reference is one constant
    offsets = {round(float(r["flops_m"]) * 1e6) - nb.flops(r["arch"]) for r in rows}
    assert offsets == {1078}
    ratios = [nb.flops(r["arch"]) / (float(r["flops_m"]) * 1e6) for r in rows]
    assert 0.99989 < min(ratios) and max(ratios) < 1.0
    per_edge = {op: nb.flops((op,) * 6) - nb.flops(("none",) * 6) for op in nb.OPS}
    assert {op: v // 6 for op, v in per_edge.items()} == {
        "none": 0, "skip_connect": 0, "nor_conv_1x1": 4362240, "nor_conv_3x3": 35819520, "avg_pool_3x3": 1290240}


@pytest.mark.parametrize("arch", [ALL_3X3, WITH_NONE, DEAD_END, DEGENERATE, ("skip_connect",) * 6],
                         ids=["all3x3", "with-none", "dead-end", "degenerate", "all-skip"])
def test_network_parameters_equal_param_count(arch):
    for net in (nbn.build_network(arch),):
        variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
        n = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables["params"]))
        assert n == nb.param_count(arch)


def test_variables_match_flax_declarations():
    """The drawn variables have exactly the structure and shapes the flax modules declare."""
    for ops, net in ((None, nbn.build_masked_network()), (nb.parse_arch(MIXED), nbn.build_network(MIXED))):
        module = nbn._NB201(ops)
        x = jnp.zeros((1, *nb.INPUT_SHAPE))
        declared = jax.eval_shape(module.init, jax.random.key(0), x, net.scalars)
        drawn = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
        assert jax.tree_util.tree_structure(declared) == jax.tree_util.tree_structure(drawn)
        assert [v.shape for v in jax.tree_util.tree_leaves(declared)] == \
            [v.shape for v in jax.tree_util.tree_leaves(drawn)]


# --------------------------------------------------------------------------- networks
#
# Network comparisons run in float64 (see ``_close``). The masked program is
# compiled once (init, calibrate, apply) and each architecture's run is shared
# between the tests, so that the file stays fast on a small CPU.

CHUNK = (WITH_NONE, DEAD_END, DEGENERATE, MIXED)


@pytest.fixture(scope="module")
def f64():
    """float64 for the network tests of this module (restored afterwards)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


class _Masked:
    """The masked program, jitted once, with one cached run per architecture."""

    def __init__(self):
        self.net = nbn.build_masked_network()
        self.init = jax.jit(self.net.init)
        self.calibrate = jax.jit(self.net.calibrate)
        self.apply = jax.jit(self.net.apply)
        self.x = _inputs()
        self._runs = {}

    def scalars(self, arch):
        return {**self.net.scalars, "ops": jnp.asarray(nb.encode(arch))}

    @staticmethod
    def key(arch):
        return jax.random.key(nb.arch_index(arch))

    def run(self, arch):
        """(initial variables, calibrated variables, logits, outputs) of ``arch`` on ``self.x``."""
        if arch not in self._runs:
            s = self.scalars(arch)
            v0 = self.init(self.key(arch), s)
            v = self.calibrate(v0, s, self.x)
            self._runs[arch] = (v0, v, *self.apply(v, s, self.x))
        return self._runs[arch]


@pytest.fixture(scope="module")
def masked(f64):
    return _Masked()


def _run_direct(arch, variables, x):
    net = nbn.build_network(arch)

    def run(v, x):
        v = net.calibrate(v, net.scalars, x)
        return (v, *net.apply(v, net.scalars, x))

    return jax.jit(run)(variables, x)


@pytest.mark.parametrize("arch", CHUNK, ids=["with-none", "dead-end", "degenerate", "mixed"])
def test_masked_equals_direct(masked, arch):
    v0, v_cal, y, outs = masked.run(arch)
    direct_vars = nbn.masked_to_direct(v0, arch)
    # built to match: the direct build draws the same values from the same key (up to the
    # last bit of the scaling, eager here and compiled there)
    own = nbn.build_network(arch).init(masked.key(arch), masked.net.scalars)
    assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(direct_vars)
    for a, b in zip(jax.tree_util.tree_leaves(own), jax.tree_util.tree_leaves(direct_vars)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)

    d_cal, yd, outs_d = _run_direct(arch, direct_vars, masked.x)
    assert set(outs_d) == set(outs) == set(nb.LAYER_NAMES)
    assert len(nb.LAYER_NAMES) == 19 and nb.LAYER_NAMES[-1] == "head"
    np.testing.assert_array_equal(outs_d["head"], yd)
    for name in nb.LAYER_NAMES:
        _close(outs_d[name], outs[name])
    _close(yd, y)
    # statistics of every computed batch norm agree (dead ends are never run by the direct build)
    ops = nb.parse_arch(arch)
    dead = {nbn._op_name(e, op) for e, op in enumerate(ops) if not nb.live_edges(ops)[e]}
    stats_m = jax.tree_util.tree_flatten_with_path(nbn.masked_to_direct(v_cal, arch)["batch_stats"])[0]
    stats_d = jax.tree_util.tree_flatten_with_path(d_cal["batch_stats"])[0]
    assert [p for p, _ in stats_m] == [p for p, _ in stats_d]
    for (path, a), (_, b) in zip(stats_d, stats_m):
        if not dead & {getattr(k, "key", None) for k in path}:
            _close(a, b)
    if nb.is_degenerate(arch):  # constant output: every sample gets the same logits
        np.testing.assert_allclose(yd, jnp.broadcast_to(yd[:1], yd.shape), atol=1e-12)
        assert float(jnp.max(jnp.abs(outs_d["cell14"]))) == 0.0
    else:
        assert float(jnp.std(yd, axis=0).min()) > 1e-3


def test_calibration_makes_apply_per_sample(masked):
    arch = MIXED
    s, x = masked.scalars(arch), masked.x
    v0, v_cal, y, _ = masked.run(arch)
    # changing the other samples leaves sample 0 unchanged once the statistics are frozen
    other = x.at[1:].set(3.0 * _inputs(seed=5)[1:])
    y_other, _ = masked.apply(v_cal, s, other)
    np.testing.assert_allclose(y_other[0], y[0], rtol=1e-12, atol=1e-12)
    assert float(jnp.max(jnp.abs(y_other[1:] - y[1:]))) > 1e-2
    # calibrating on another batch changes the statistics, hence sample 0's output
    y_recal, _ = masked.apply(masked.calibrate(v0, s, other), s, x)
    assert float(jnp.max(jnp.abs(y_recal[0] - y[0]))) > 1e-3
    # the stored statistics are the batch mean and the biased variance: check the stem's by hand,
    # and that with them the stem's output is training-mode batch norm
    stem = jax.lax.conv_general_dilated(x, v0["params"]["stem_conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    stem = np.asarray(stem)
    stats = v_cal["batch_stats"]["stem_bn"]
    np.testing.assert_allclose(stats["mean"], np.mean(stem, axis=(0, 1, 2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats["var"], np.var(stem, axis=(0, 1, 2)), rtol=1e-10)
    train_bn = (stem - stem.mean((0, 1, 2))) / np.sqrt(stem.var((0, 1, 2)) + nb.BN_EPSILON)
    _close(masked.apply(v_cal, s, x)[1]["stem"], train_bn)


def test_frozen_apply_equals_training_mode_batch_norm(f64):
    """On the calibration batch, apply with frozen statistics = the network in training mode."""
    net = nbn.build_network(MIXED)
    x = _inputs()

    @jax.jit
    def run(v, x):
        (y_train, outs_train), updates = nbn._NB201(nb.parse_arch(MIXED), calibrate=True).apply(
            v, x, net.scalars, mutable=["batch_stats"])
        y, outs = net.apply({**v, **updates}, net.scalars, x)
        return y_train, outs_train, y, outs

    y_train, outs_train, y, outs = run(net.init(jax.random.key(2), net.scalars), x)
    for name in nb.LAYER_NAMES:
        _close(outs[name], outs_train[name])
    _close(y, y_train)


def test_vmapped_chunk_equals_one_by_one(masked):
    net, x = masked.net, masked.x
    codes = jnp.stack([jnp.asarray(nb.encode(a)) for a in CHUNK])
    keys = jnp.stack([masked.key(a) for a in CHUNK])
    axes = {"weight_std": None, "bias_std": None, "ops": 0}

    @jax.jit
    def chunk(keys, codes, x):
        scalars = {**net.scalars, "ops": codes}
        v = jax.vmap(net.init, in_axes=(0, axes))(keys, scalars)
        v = jax.vmap(net.calibrate, in_axes=(0, axes, None))(v, scalars, x)
        return jax.vmap(net.apply, in_axes=(0, axes, None))(v, scalars, x)

    ys, outs = chunk(keys, codes, x)
    assert ys.shape == (len(CHUNK), BATCH, nb.NUM_CLASSES)
    for i, arch in enumerate(CHUNK):
        _, _, y, o = masked.run(arch)
        _close(ys[i], y)
        for name in nb.LAYER_NAMES:
            _close(outs[name][i], o[name])
    # each architecture has its own initialization
    assert float(jnp.max(jnp.abs(outs["stem"][0] - outs["stem"][1]))) > 1e-3


def test_weight_std_is_traced(masked):
    """Another weight_std rescales the kernels and reuses the compiled init."""
    s = masked.scalars(MIXED)
    v_ref = masked.init(jax.random.key(0), s)
    v = masked.init(jax.random.key(0), {**s, "weight_std": jnp.asarray(3.0, s["weight_std"].dtype)})
    assert masked.init._cache_size() == 1
    for name in ("stem_conv", "head_kernel"):
        a = jax.tree_util.tree_leaves(v["params"][name])[0]
        b = jax.tree_util.tree_leaves(v_ref["params"][name])[0]
        np.testing.assert_allclose(a / b, 3.0 / np.sqrt(2.0), rtol=1e-12)
    with pytest.raises(DataError, match=r"expected shape \[N, 32, 32, 3\]"):
        masked.net.apply(v, s, masked.x[:, :16])
