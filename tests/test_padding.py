"""Padded MLPs: the same weights (bit for bit), outputs and per-layer NLC as the unpadded networks, and
one compiled program for MLPs of different widths, depths and activations in one bucket."""

import jax
import numpy as np
import pytest

from zsad.arch.build import build
from zsad.arch.padding import build_padded, bucket, padded_signature
from zsad.arch.spec import parse_architecture
from zsad import draws, measure
from zsad.score import make_metrics_fn, seed_keys


def _mlp(widths, fns, dist="normal", bias=True, out=3):
    layers = [x for w, f in zip(widths, fns)
              for x in ({"type": "dense", "features": w, "use_bias": bias}, {"type": "activation", "fn": f})]
    return parse_architecture({"name": "m", "input": {"shape": [6], "data": "gaussian"},
                               "init": {"dist": dist, "weight_std": 1.4, "bias_std": 0.2},
                               "layers": [*layers, {"type": "dense", "features": out, "use_bias": bias}]})


MLPS = {  # one signature: widths up to 8, 3 or 4 hidden layers; tanh and relu, or relu alone
    "deep": _mlp([5, 7, 3, 8], ["tanh", "relu", "tanh", "tanh"]),
    "shallow": _mlp([8, 2, 6], ["relu", "relu", "relu"]),
}


def _padded_kernels(variables):
    p = variables["params"]
    return [p[name] for name in sorted(p, key=lambda name: int(name.split(".")[0]))]


@pytest.mark.parametrize("arch, fns", [(MLPS["deep"], None), (MLPS["shallow"], ("relu", "tanh")),
                                       (_mlp([3, 5], ["gelu", "tanh"], "truncated_normal", bias=False), ("relu",)),
                                       (_mlp([4], ["tanh"], "uniform", out=8), None)],
                         ids=["deep", "shallow", "trunc", "uniform"])
def test_padded_equals_unpadded(arch, fns):
    padded, net = build_padded(arch, fns), build(arch)
    key = jax.random.key(4)
    vp, vn = padded.network.init(key, padded.network.scalars), net.init(key, net.scalars)
    dense = [name for name in net.layer_names if name.endswith("dense")]
    kernels = _padded_kernels(vp)
    hidden = len(dense) - 1
    for k, name in enumerate(dense):
        got = kernels[k if k < hidden else -1]
        for part, want in vn["params"][name].items():  # the true block, zeros around it
            block = got[part][tuple(slice(0, n) for n in want.shape)]
            # the same draws; the scale (weight_std / sqrt(fan_in), a constant where unpadded) may round
            # differently by an ulp or two (truncated normal: the erf inverse fused otherwise)
            np.testing.assert_allclose(block, want, rtol=1e-6, atol=0)
            assert float(np.abs(got[part]).sum()) == pytest.approx(float(np.abs(want).sum()), rel=1e-6)
    # the draws shared by the signature's MLPs (a prefix of each distribution's draw) give the same weights
    flats = {d: [draws.draw(d, key[None], shapes[0][0], dtype, fold=fold)[0]]
             for d, fold, dtype, shapes in padded.network.draws}
    for a, b in zip(jax.tree.leaves(vp), jax.tree.leaves(padded.network.init_with(flats, key, padded.network.scalars))):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=0)
    x = jax.random.normal(jax.random.key(1), (16, 6))
    (yp, op), (yn, on) = padded.network.apply(vp, padded.network.scalars, x), net.apply(vn, net.scalars, x)
    np.testing.assert_allclose(yp, yn, rtol=1e-5, atol=1e-6)
    for name in net.layer_names:
        value = op[padded.layers[name]]
        np.testing.assert_allclose(value[:, :on[name].shape[1]], on[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(value[:, on[name].shape[1]:], 0)  # the padding stays zero
    rp, _ = make_metrics_fn(padded.network, 2)(seed_keys(0, 2), x, padded.network.scalars)
    rn, _ = make_metrics_fn(net, 2)(seed_keys(0, 2), x, net.scalars)
    for name in net.layer_names:
        np.testing.assert_allclose(rp.nlc[padded.layers[name]], rn.nlc[name], rtol=1e-5)
        np.testing.assert_array_equal(rp.finite[padded.layers[name]], rn.finite[name])


def test_one_program_for_one_signature():
    # 5 outputs: a signature no other test compiles
    archs = [_mlp([5, 7, 3, 8], ["tanh", "relu", "tanh", "tanh"], out=5), _mlp([8, 2, 6], ["relu"] * 3, out=5)]
    assert padded_signature(archs[0]) == padded_signature(archs[1]) is not None
    x = jax.random.normal(jax.random.key(1), (16, 6))
    key = ("padded", padded_signature(archs[0]), ("relu", "tanh"))
    traced = []
    for arch in archs:
        padded = build_padded(arch, fns=("relu", "tanh"))
        make_metrics_fn(padded.network, 2, structure=key)(seed_keys(0, 2), x, padded.network.scalars)
        traced.append(sum(measure.TRACES.values()))
    assert traced[1] == traced[0]  # the second structure runs the first one's program: nothing traced again


def test_signatures():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16] and bucket(3, minimum=8) == 8
    assert padded_signature(_mlp([100, 20], ["relu"] * 2))[3:5] == (128, 2)
    assert padded_signature(_mlp([9], ["relu"])) != padded_signature(_mlp([8], ["relu"]))  # 16 against 8 wide
    assert padded_signature(_mlp([5], ["relu"], dist="orthogonal")) is None
    conv = parse_architecture({"name": "c", "input": {"shape": [8, 8, 1], "data": "gaussian"},
                               "layers": [{"type": "conv", "features": 2, "kernel": [3, 3]}]})
    bn = parse_architecture({"name": "b", "input": {"shape": [6], "data": "gaussian"},
                             "layers": [{"type": "dense", "features": 4}, {"type": "batch_norm"},
                                        {"type": "activation", "fn": "relu"}, {"type": "dense", "features": 2}]})
    assert padded_signature(conv) is None and padded_signature(bn) is None


def test_naswot_mask_per_layer_gradient_sums_and_segment_are_exact():
    """The padded network's NASWOT kernel over its masked codes, its grad_norm (one leaf per layer) and its
    Jacobian segment (with Hutchinson's true sizes) are the unpadded network's; without the mask, or with
    the hidden kernels in one leaf, they are not."""
    from zsad import naswot as naswot_mod, proxies
    from zsad.measure import is_kernel
    from zsad.spectrum import hutchinson

    arch = MLPS["shallow"]  # widths 8, 2, 6 in 8 x 4: padded units and one padded layer
    padded, net = build_padded(arch), build(arch)
    vp, vn = padded.network.init(jax.random.key(2), padded.network.scalars), net.init(jax.random.key(2), net.scalars)
    sp, sn = padded.network.scalars, net.scalars
    x = jax.random.normal(jax.random.key(1), (16, 6))
    (_, op), (_, on) = padded.network.apply(vp, sp, x), net.apply(vn, sn, x)
    own_codes = naswot_mod.relu_codes([on[n] for n in net.layer_names if n.endswith("dense")][:-1])
    codes = naswot_mod.relu_codes([op[n] for n in padded.code_layers])
    mask = np.concatenate(padded.code_mask(sp))
    np.testing.assert_array_equal(naswot_mod.naswot_kernel(codes, mask), naswot_mod.naswot_kernel(own_codes))
    assert not np.array_equal(naswot_mod.naswot_kernel(codes), naswot_mod.naswot_kernel(own_codes))

    labels = np.arange(16) % 3
    loss = lambda apply, s: lambda p: proxies.cross_entropy_loss(  # noqa: E731
        lambda q, z: apply({"params": q}, s, z)[0])(p, x, labels)
    gp, gn = jax.grad(loss(padded.network.apply, sp))(vp["params"]), jax.grad(loss(net.apply, sn))(vn["params"])
    want = proxies.grad_norm_of_gradients(vn["params"], gn, where=is_kernel)
    got = proxies.grad_norm_of_gradients(vp["params"], gp, where=is_kernel)
    assert bool(got.valid) and float(got.value) == pytest.approx(float(want.value), rel=1e-6)
    names = sorted(gp, key=lambda n: int(n.split(".")[0]))
    one_leaf = lambda t: {"first": t[names[0]], "out": t[names[-1]],  # noqa: E731
                          "hidden": {"kernel": np.stack([t[n]["kernel"] for n in names[1:-1]])}}
    stacked = proxies.grad_norm_of_gradients(one_leaf(vp["params"]), one_leaf(gp), where=is_kernel)
    assert abs(float(stacked.value) - float(want.value)) > 1e-3

    start, stop = padded.segment_range
    h = padded.network.segment(vp, sp, x[:2], 0, start)
    fn = lambda u: padded.network.segment(vp, sp, u[None], start, stop)[0]  # noqa: E731
    own_fn = lambda u: net.segment(vn, sn, u[None], 1, 6)[0]  # noqa: E731  (zsad score's default: layers 1..5)
    np.testing.assert_allclose(fn(h[0])[:6], own_fn(h[0][:8]), rtol=1e-5, atol=1e-6)
    key = jax.random.key(5)
    est = hutchinson(fn, h[0], key, num_probes=4, dims=padded.segment_dims(sp))
    assert float(est.mean) == pytest.approx(float(hutchinson(own_fn, h[0][:8], key, num_probes=4).mean), rel=1e-5)
