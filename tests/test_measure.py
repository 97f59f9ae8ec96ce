"""The measurement engine's pieces: canonical convolution gradients and shared backward passes."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad import proxies
from zsad.canonical import canonical_gradients
from zsad.measure import gradient_proxies

CONVS = [  # (input shape, kernel shape, conv keywords, dimension numbers)
    ((2, 9, 9, 3), (3, 3, 3, 4), dict(window_strides=(1, 1), padding="SAME"), ("NHWC", "HWIO", "NHWC")),
    ((2, 9, 9, 3), (3, 3, 3, 4), dict(window_strides=(2, 2), padding=((1, 1), (1, 1))), ("NHWC", "HWIO", "NHWC")),
    ((2, 10, 9, 3), (2, 3, 3, 4), dict(window_strides=(2, 1), padding="VALID", rhs_dilation=(1, 2)),
     ("NHWC", "HWIO", "NHWC")),
    ((2, 3, 9, 8), (4, 3, 3, 2), dict(window_strides=(1, 2), padding=((0, 2), (1, 0)), lhs_dilation=(2, 1)),
     ("NCHW", "OIHW", "NCHW")),
    ((2, 11, 3), (3, 3, 5), dict(window_strides=(2,), padding="SAME"), ("NWC", "WIO", "NWC")),
]


@pytest.mark.parametrize("case", range(len(CONVS)))
def test_canonical_convolution_gradients_equal_jax_rule(case):
    """Strides, asymmetric padding, input and kernel dilation, channels-first and 1-D: the rewritten
    gradients of the input and the kernel are JAX's own (an independent derivation), to rounding."""
    xs, ws, kw, dn = CONVS[case]
    rng = np.random.default_rng(case)
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)

    def f(x, w):
        return jnp.sum(jnp.sin(jax.lax.conv_general_dilated(x, w, dimension_numbers=dn, **kw)))

    want = jax.grad(f, (0, 1))(x, w)
    got = jax.jit(jax.grad(canonical_gradients(f), (0, 1)))(x, w)
    assert float(canonical_gradients(f)(x, w)) == pytest.approx(float(f(x, w)), rel=1e-6)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(a))))


def _conv_labels(fn, *args) -> set:
    """The dimension numbers of the convolutions in ``fn``'s compiled program."""
    return set(re.findall(r"dim_labels=([^,\s]+)", jax.jit(fn).lower(*args).compile().as_text()))


def _scanned(x, ws):
    conv = lambda h, w: jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jax.lax.scan(lambda h, w: (jnp.tanh(conv(h, w)), None), x, ws)[0])


def test_convolution_gradients_in_a_loop_are_canonical_and_equal():
    """Inside a scan, JAX's gradient convolutions keep permuted dimension numbers (``01oi`` kernels,
    ``f01b`` inputs), which XLA:CPU runs as naive loops; the rewrite leaves only the canonical
    ``b01f_01io->b01f`` form, with the same gradients."""
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    ws = 0.3 * jax.random.normal(jax.random.key(1), (3, 3, 3, 4, 4))
    grad = jax.jit(jax.grad(_scanned, (0, 1)))
    fast = jax.jit(jax.grad(canonical_gradients(_scanned), (0, 1)))
    assert _conv_labels(grad, x, ws) != {"b01f_01io->b01f"}  # what the rewrite is for (if XLA fixes it, this says so)
    assert _conv_labels(fast, x, ws) == {"b01f_01io->b01f"}
    for a, b in zip(grad(x, ws), fast(x, ws)):  # float32 sums in another order: rounding relative to the largest
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(a))))


def _conv_map(w, stride):
    def fn(u):  # one sample [H, W, C] -> [H', W', C']
        h = jax.lax.conv_general_dilated(u[None], w, (stride, stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(h)[0]
    return fn


def test_spectrum_transposes_convolutions_in_the_canonical_layout():
    """The spectrum's transposed products (Lanczos' ``Jᵀ J v``, the exact path's ``jacrev`` rows), mapped
    over points as the program maps the seeds: only canonical convolutions, and the values of JAX's own
    transpose (``jax.linear_transpose`` of the linearized map; the SVD of the ``jacfwd`` Jacobian)."""
    from zsad.spectrum import jacobian_singular_values
    from zsad.spectrum.matrix_free import gram_operator

    w = 0.3 * jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
    xs = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    vs = jax.random.normal(jax.random.key(2), (2, 6 * 6 * 4))
    fn = _conv_map(w, 1)

    def ours(x, v):
        matvec, r, input_side = gram_operator(fn, x)
        assert r == v.size and input_side
        return matvec(v)

    def reference(x, v):
        _, jvp = jax.linearize(lambda u: fn(u.reshape(x.shape)).ravel(), x.ravel())
        return jax.linear_transpose(jvp, x.ravel())(jvp(v))[0]

    mapped = lambda f: lambda xs, vs: jax.lax.map(lambda a: f(*a), (xs, vs))  # noqa: E731
    assert _conv_labels(mapped(reference), xs, vs) != {"b01f_01io->b01f"}  # what the rewrite is for
    assert _conv_labels(mapped(ours), xs, vs) == {"b01f_01io->b01f"}
    got, want = jax.jit(mapped(ours))(xs, vs), jax.jit(mapped(reference))(xs, vs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))

    strided = _conv_map(w, 2)  # d_out = 36 < d_in = 144: the exact path builds J row by row (jacrev)
    mapped_svd = lambda xs: jax.lax.map(lambda x: jacobian_singular_values(strided, x), xs)  # noqa: E731
    assert _conv_labels(mapped_svd, xs) == {"b01f_01io->b01f"}
    for x, s in zip(xs, jax.jit(mapped_svd)(xs)):
        jac = jax.jacfwd(lambda u: strided(u.reshape(x.shape)).ravel())(x.ravel())
        np.testing.assert_allclose(s, np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False),
                                   rtol=1e-4, atol=1e-5 * float(s[0]))


DEPTHWISE = [  # (kernel, stride, dilation, channel multiplier, padding)
    (5, 2, 1, 1, None), (3, 1, 2, 2, None), (3, 2, 1, 1, "SAME"),
]


@pytest.mark.parametrize("case", range(len(DEPTHWISE)))
def test_depthwise_convolution_is_the_grouped_convolution_without_one(case, x64):
    """DARTS' depthwise convolutions (:class:`zsad.spaces.ops.Conv` with ``groups`` = channels) equal XLA's
    grouped convolution in value, forward and reverse mode, also mapped over seeds as the program runs
    them; and no grouped convolution is left in the compiled program (XLA:CPU's runs as a naive loop)."""
    from zsad.spaces.ops import Conv

    k, stride, dilation, mult, padding = DEPTHWISE[case]
    c = 3
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, c))
    conv = Conv(c * mult, k, stride, dilation, groups=c, padding=padding)
    ws = jnp.stack([conv.init(jax.random.key(i), x)["params"]["kernel"] for i in (1, 2)])
    p = padding if padding is not None else dilation * (k - 1) // 2
    pad = p if isinstance(p, str) else ((p, p), (p, p))

    def grouped(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), pad, rhs_dilation=(dilation, dilation),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)

    ours = lambda x, w: conv.apply({"params": {"kernel": w}}, x)  # noqa: E731
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    t = jax.random.normal(jax.random.key(3), x.shape)
    assert ours(x, ws[0]).shape == grouped(x, ws[0]).shape
    np.testing.assert_allclose(ours(x, ws[0]), grouped(x, ws[0]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.jvp(lambda u: ours(u, ws[0]), (x,), (t,))[1],
                               jax.jvp(lambda u: grouped(u, ws[0]), (x,), (t,))[1], rtol=1e-12, atol=1e-12)
    mapped = [jax.jit(lambda x, ws, f=f: jax.lax.map(lambda w: jax.grad(loss(f), (0, 1))(x, w), ws)).lower(x, ws)
              .compile() for f in (grouped, ours)]
    for a, b in zip(mapped[0](x, ws), mapped[1](x, ws)):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    assert "convolution(" in mapped[0].as_text() and "convolution(" not in mapped[1].as_text()


def _cnn(p, x):
    h = jax.lax.conv_general_dilated(x, p["c"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(h + p["c"]["bias"][None, None, None, :])
    return h.reshape(h.shape[0], -1) @ p["d"]["kernel"]


def test_one_backward_pass_gives_the_proxies_of_their_own_functions():
    """grad_norm, snip (one pull-back of the cross-entropy) and jacob_cov (one of the summed outputs),
    from one forward pass, equal zsad.proxies' functions, each of which differentiates on its own."""
    keys = jax.random.split(jax.random.key(0), 4)
    params = {"c": {"kernel": jax.random.normal(keys[0], (3, 3, 2, 3)), "bias": 0.1 * jax.random.normal(keys[1], (3,))},
              "d": {"kernel": 0.2 * jax.random.normal(keys[2], (4 * 4 * 3, 5))}}
    x = jax.random.normal(keys[3], (6, 4, 4, 2))
    labels = jnp.array([0, 1, 2, 3, 4, 0])
    got = jax.jit(lambda p, z: gradient_proxies(_cnn, p, z, labels, where=proxies.is_weight,
                                                names=("grad_norm", "snip", "jacob_cov")))(params, x)
    loss = proxies.cross_entropy_loss(_cnn)
    want = {"grad_norm": proxies.grad_norm(loss, params, x, labels), "snip": proxies.snip(loss, params, x, labels),
            "jacob_cov": proxies.jacob_cov(_cnn, params, x)}
    for name, w in want.items():
        g = getattr(got, name)
        assert bool(g.valid) == bool(w.valid) and bool(w.valid), name
        assert float(g.value) == pytest.approx(float(w.value), rel=1e-5), name
    only = gradient_proxies(_cnn, params, x, labels, where=proxies.is_weight, names=("snip",))
    assert only.grad_norm is None and only.jacob_cov is None
    assert float(only.snip.value) == pytest.approx(float(want["snip"].value), rel=1e-5)


# --------------------------------------------------------------------------- the program


def _program_inputs(net, seeds=2, batch=8, tangents=2):
    from zsad.measure import seed_inputs
    from zsad.score import seed_keys

    x = jax.random.normal(jax.random.key(5), (batch, *net.input_shape))
    return seed_inputs(seed_keys(0, seeds), x, tangents), x, jnp.zeros((batch,), jnp.int32)


def test_layers_come_in_network_order_and_match_an_independent_profile():
    """Twelve layers (names 0..11: sorted as text, 10 and 11 come before 2): every layer's NLC and
    finiteness in the network's order, equal to zsad.nlc_profile of the same weights by name."""
    from tests.helpers import arch_from, mlp

    import zsad
    from zsad.measure import MeasureConfig, make_measure

    net = zsad.build(arch_from(mlp("tanh", depth=6, width=8, d_in=4, weight_std=1.5, bias_std=0.1), name="deep"))
    assert len(net.layer_names) == 13
    per_seed, x, labels = _program_inputs(net)
    m = make_measure(net, MeasureConfig(("nlc",), 2))(per_seed, x, labels, net.scalars)
    for s in range(2):
        k_init = per_seed["init"][s]
        k_tangent = jax.random.split(per_seed["key"][s])[1]
        v = net.calibrate(net.init(k_init, net.scalars), net.scalars, x)
        want = zsad.nlc_profile(lambda z: net.apply(v, net.scalars, z)[1], x, k_tangent, num_tangents=2)
        for i, name in enumerate(net.layer_names):
            assert float(m.layers.nlc[s, i]) == pytest.approx(float(want.nlc[name]), rel=1e-5), name
        assert float(m.nlc[s]) == pytest.approx(float(want.nlc[net.layer_names[-1]]), rel=1e-5)
    assert np.asarray(m.finite).all()


def test_one_program_per_structure_and_metric_set_scalars_traced():
    """Two networks of one structure (other weight and bias scales) share one program, traced once;
    another metric set is another program; the results differ with the scalars."""
    from tests.helpers import arch_from, mlp

    import zsad
    from zsad import measure
    from zsad.measure import MeasureConfig, make_measure
    from zsad.score import structure_key

    a = arch_from(mlp("relu", depth=2, width=8, d_in=4, weight_std=1.0), name="a")
    b = arch_from(mlp("relu", depth=2, width=8, d_in=4, weight_std=2.0, bias_std=0.5), name="b")
    key = ("test-measure", structure_key(a))
    assert structure_key(a) == structure_key(b)
    na, nb = zsad.build(a), zsad.build(b)
    config = MeasureConfig(("nlc", "naswot", "grad_norm", "snip"), 2, code_layers=("0.dense", "2.dense"))
    per_seed, x, labels = _program_inputs(na)
    fa = make_measure(na, config, structure=key)
    ra = fa(per_seed, x, labels, na.scalars)
    fb = make_measure(nb, config, structure=key)
    rb = fb(per_seed, x, labels, nb.scalars)
    assert fa is fb and measure.TRACES[measure.program_key(key, config)] == 1
    assert not np.allclose(ra.nlc, rb.nlc) and not np.allclose(ra.grad_norm.value, rb.grad_norm.value)
    other = dataclasses.replace(config, metrics=("nlc",))
    assert make_measure(na, other, structure=key) is not fa
    make_measure(na, other, structure=key)(per_seed, x, labels, na.scalars)
    assert measure.TRACES[measure.program_key(key, other)] == 1
    assert ra.snip is not None and rb.synflow is None and ra.sigma2 is None
