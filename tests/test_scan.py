"""Repeated layers as loops: the scanned network equals the unrolled one (variables, outputs, NLC profile,
first non-finite layer, Jacobian spectrum of a segment cutting through a loop), runs of equal layers are
folded into blocks without renaming anything, and the program's matrix products do not grow with depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad.arch.build import build, structure
from zsad.arch.repeats import fold_repeats
from zsad.arch.spec import Activation, Block, Dense, Residual, named_layers, parse_architecture
from zsad.layer_values import LayerValues
from zsad.score import SpectrumConfig, make_metrics_fn, seed_keys


def _arch(layers, weight_std=1.5, dist="normal"):
    return parse_architecture({"name": "m", "input": {"shape": [6], "data": "gaussian"},
                               "init": {"dist": dist, "weight_std": weight_std, "bias_std": 0.1},
                               "layers": layers})


def _block(body, repeat):
    return {"type": "block", "repeat": repeat, "layers": body}


DENSE5, TANH = {"type": "dense", "features": 5}, {"type": "activation", "fn": "tanh"}
NETWORKS = {
    # a block with batch norm (statistics calibrated per repeat), its first repeat changing the width
    "block_bn": [_block([DENSE5, {"type": "batch_norm"}, TANH], 4), {"type": "dense", "features": 3}],
    # equal layers written out, each with its own weight_std: folded into a loop
    "flat": [DENSE5, *[x for i in range(5) for x in ({**DENSE5, "init": {"weight_std": 1.0 + 0.2 * i}}, TANH)],
             {"type": "dense", "features": 3}],
    # a residual layer inside a block, a block inside a residual branch
    "residual": [DENSE5, _block([{"type": "residual", "branch": [DENSE5, TANH]}, TANH], 3),
                 {"type": "residual", "branch": [_block([DENSE5, TANH], 3)]}],
}


def _metrics(net, x, cfg):
    fn = make_metrics_fn(net, 2, cfg)
    return jax.device_get(fn(seed_keys(0, 2), x, net.scalars))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_scanned_equals_unrolled(name):
    arch = _arch(NETWORKS[name])
    scanned, unrolled = build(arch), build(arch, scan=False)
    assert scanned.layer_names == unrolled.layer_names
    key = jax.random.key(3)
    va, vb = scanned.init(key, scanned.scalars), unrolled.init(key, unrolled.scalars)
    assert jax.tree.structure(va) == jax.tree.structure(vb)
    jax.tree.map(lambda p, q: np.testing.assert_array_equal(p, q), va, vb)  # the same draws, bit for bit
    x = jax.random.normal(jax.random.key(1), (32, 6))
    va, vb = scanned.calibrate(va, scanned.scalars, x), unrolled.calibrate(vb, unrolled.scalars, x)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6), va, vb)
    (ya, oa), (yb, ob) = scanned.apply(va, scanned.scalars, x), unrolled.apply(vb, unrolled.scalars, x)
    assert isinstance(oa, LayerValues) and isinstance(ob, dict) and list(oa) == list(ob)
    np.testing.assert_allclose(ya, yb, rtol=1e-5, atol=1e-6)
    for layer in ob:
        np.testing.assert_allclose(oa[layer], ob[layer], rtol=1e-5, atol=1e-6)
    n = len(scanned.layer_names)
    # a segment that starts and ends inside loops (on one network: the spectrum's compile is the slow part)
    cfg = SpectrumConfig(2, n - 1) if name == "block_bn" else None
    (ra, sa), (rb, sb) = _metrics(scanned, x, cfg), _metrics(unrolled, x, cfg)
    for layer in scanned.layer_names:
        np.testing.assert_allclose(ra.nlc[layer], rb.nlc[layer], rtol=1e-5)
        assert ra.nlc[layer].shape == (2,)
    np.testing.assert_allclose(np.stack([ra.nlc[k] for k in scanned.layer_names], -1),
                               np.stack([rb.nlc[k] for k in unrolled.layer_names], -1), rtol=1e-5)
    for field in ("sigma2_mean", "sigma2_var", "sigma_max") if cfg else ():  # sigma_min: rounding-level, ill-conditioned
        np.testing.assert_allclose(getattr(sa, field), getattr(sb, field), rtol=1e-4)


def test_first_diverging_layer_of_a_loop():
    # ReLU layers of gain 1e5: float32 overflows a few layers into the loop; the same layer either way
    arch = _arch([DENSE5, _block([DENSE5, {"type": "activation", "fn": "relu"}], 12)], weight_std=1e5)
    x = jax.random.normal(jax.random.key(1), (16, 6))
    firsts = []
    for net in (build(arch), build(arch, scan=False)):
        r, _ = _metrics(net, x, None)
        firsts.append([next(k for k in net.layer_names if not r.finite[k][s]) for s in range(2)])
    assert firsts[0] == firsts[1]
    assert 2 < net.layer_names.index(firsts[0][0]) < len(net.layer_names) - 1


def _program_text(net, x) -> str:
    return str(jax.make_jaxpr(make_metrics_fn(net, 2))(seed_keys(0, 1), x, net.scalars))


def _dots(net, x) -> int:
    """The matrix products in the NLC program's text (a loop's body counts once)."""
    return _program_text(net, x).count("dot_general")


def test_program_does_not_grow_with_depth():
    x = jnp.zeros((8, 6))
    counts = [_dots(build(_arch([DENSE5, _block([DENSE5, TANH], depth)])), x) for depth in (4, 32)]
    assert counts[0] == counts[1]
    flat = [_dots(build(_arch([DENSE5, *[DENSE5, TANH] * depth])), x) for depth in (4, 32)]
    assert flat[0] == flat[1] == counts[0]
    unrolled = [_dots(build(_arch([DENSE5, _block([DENSE5, TANH], d)]), scan=False), x) for d in (4, 32)]
    assert unrolled[1] > unrolled[0]  # the count does see depth
    # Nor do the per-layer results: each layer's finiteness test and NLC come out of a loop's layers as
    # one array, not one reduction and one slice per layer (a 400-layer block compiled 5x slower).
    texts = [_program_text(build(_arch([DENSE5, _block([DENSE5, TANH], depth)])), x) for depth in (4, 32)]
    for op in ("reduce_sum", "is_finite"):
        assert texts[0].count(op) == texts[1].count(op), op


def test_fold_repeats_keeps_names():
    d, t, wide = Dense(features=8), Activation(fn="tanh"), Dense(features=16)
    layers = (wide, *(d, t) * 5, wide, t, wide, *(t,) * 4)
    folded = fold_repeats(layers)
    assert [type(x).__name__ for x in folded] == ["Dense", "Block", "Dense", "Activation", "Dense", "Block"]
    assert (folded[1].layers, folded[1].repeat) == ((d, t), 5) and folded[-1] == Block(layers=(t,), repeat=4)
    assert named_layers(folded) == named_layers(layers)
    assert fold_repeats((d, t) * 3) == (d, t) * 3  # fewer repeats than the minimum: as written
    assert fold_repeats((Block(layers=(d, t), repeat=2),) * 4) == (Block(layers=(d, t), repeat=2),) * 4
    inside = fold_repeats((Residual(branch=(d,) * 4),))
    assert inside == (Residual(branch=(Block(layers=(d,), repeat=4),)),)
    # layers that differ only in scalars fold once their structure is taken
    scaled = _arch([DENSE5, *[{**DENSE5, "init": {"weight_std": 1.0 + i}} for i in range(4)]])
    assert len(fold_repeats(scaled.layers)) == 5 and len(fold_repeats(structure(scaled.layers))) == 1


def test_layer_values_mapping():
    v = LayerValues(((("a",), jnp.arange(2.0), None), (("b", "c"), jnp.arange(6.0).reshape(3, 2)[:2] * 0 +
                                                          jnp.asarray([[1.0, 2.0], [3.0, 4.0]]), 1)),
                    order=("b", "a", "c"))
    assert list(v) == ["b", "a", "c"] and len(v) == 3
    np.testing.assert_array_equal(v["c"], [3.0, 4.0])
    seeds = jax.vmap(lambda s: jax.tree.map(lambda a: a * s, v))(jnp.asarray([1.0, 10.0]))  # a leading axis
    np.testing.assert_array_equal(seeds["c"], [[3.0, 4.0], [30.0, 40.0]])
    norms, = v.map_groups(lambda a: (jnp.sum(a),))
    np.testing.assert_array_equal(norms.stacked(), [3.0, 1.0, 7.0])
    shapes = jax.eval_shape(lambda: v)
    assert shapes["c"].shape == (2,) and shapes["a"].shape == (2,)
