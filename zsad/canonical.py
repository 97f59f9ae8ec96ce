"""Convolutions and max pools in the forms XLA:CPU runs fast, and their reverse-mode derivatives.

**Convolution gradients in loops.** JAX differentiates a convolution by two
more convolutions whose dimension numbers are permuted (the kernel's input and
output features swapped for the input gradient; batch and feature swapped for
the kernel gradient). Outside loops XLA:CPU rewrites them into its canonical
layout and runs them on Eigen; inside a loop body (a ``lax.scan`` over the
repeats of a block, NAS-Bench-201's five cells of a stage) it does not, and
falls back to a naive loop nest: on NAS-Bench-201 the kernel gradient of one
initialization took about 60 s against 0.4 s for the forward pass.
:func:`canonical_gradients` rewrites a function so that the gradients of
its convolutions are computed by convolutions in the canonical layout (the
operands transposed explicitly), inside loops as well. Values are those of
JAX's own rule up to rounding.

**Max pooling in float64.** ``lax.reduce_window``'s max has a derivative whose CPU and GPU
lowering builds its ``-inf`` padding in the float type of the moment the program is lowered,
not of the traced values; synflow's float64 passes (:func:`zsad.proxies.synflow`, a local
``jax.enable_x64`` context inside the jitted program) are lowered after that context has closed
and fail on any max pool (a YAML ``max_pool``, NAS-Bench-101's, PyTorch's ``MaxPool2d``).
:func:`canonical_gradients` also computes every such max as :func:`window_max`: the same
values and derivative from pads and selections in the values' own type.

:func:`canonical_gradients` is used by the gradient proxies
(:func:`zsad.measure.gradient_proxies`, synflow) and by the Jacobian
spectrum's transposed products (:func:`zsad.spectrum.dense.transposed_product`),
which run inside the loops over seeds and Lanczos steps; not by Hutchinson's
estimator on a padded map (``dims``: the dense layers of an MLP space), which
transposes its one linearization.

**Depthwise convolutions.** XLA:CPU also runs a grouped convolution (DARTS'
separable and dilated convolutions: one group per channel) as a naive loop, in
every mode; :func:`depthwise_conv` computes it from the input's strided views
instead, which fuse into one loop (:class:`zsad.spaces.ops.Conv` uses it).

**Traced once.** :func:`traced_once` jits a small function that a network calls
many times (a batch norm, a pool, a depthwise convolution), so that JAX traces
and differentiates it once per shape.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from jax.extend.core.primitives import conv_general_dilated_p, reduce_window_max_p


def _dilate(shape, dilation) -> np.ndarray:
    shape = np.asarray(shape)
    return np.where(shape == 0, 0, 1 + np.asarray(dilation) * (shape - 1))


def _canonical_dn(n: int) -> jax.lax.ConvDimensionNumbers:
    """Batch, spatial..., feature; kernel spatial..., in, out (XLA:CPU's Eigen layout)."""
    spatial = tuple(range(1, n - 1))
    return jax.lax.ConvDimensionNumbers((0, n - 1, *spatial), (n - 1, n - 2, *range(n - 2)), (0, n - 1, *spatial))


def _to_canonical(x: jax.Array, spec) -> jax.Array:
    """``x`` laid out by ``spec`` = (batch-like, feature-like, spatial...) -> (batch, spatial..., feature)."""
    return jnp.transpose(x, (spec[0], *spec[2:], spec[1]))


def _from_canonical(x: jax.Array, spec) -> jax.Array:
    """Inverse of :func:`_to_canonical`."""
    order = (spec[0], *spec[2:], spec[1])
    return jnp.transpose(x, np.argsort(order))


def _kernel_to_canonical(w: jax.Array, spec) -> jax.Array:
    """A kernel laid out by ``spec`` = (out, in, spatial...) -> (spatial..., in, out)."""
    return jnp.transpose(w, (*spec[2:], spec[1], spec[0]))


def _conv(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, precision, preferred):
    return jax.lax.conv_general_dilated(lhs, rhs, tuple(int(s) for s in strides),
                                        [(int(a), int(b)) for a, b in padding],
                                        tuple(int(d) for d in lhs_dilation), tuple(int(d) for d in rhs_dilation),
                                        _canonical_dn(lhs.ndim), precision=precision,
                                        preferred_element_type=preferred)


def _input_grad(g, rhs, in_shape, p) -> jax.Array:
    """d conv / d lhs pulled back from ``g``: JAX's rule, operands in the canonical layout."""
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    sdims = lambda spec, shape: np.take(shape, spec[2:])  # noqa: E731
    in_s, win, out_s = sdims(lhs_spec, in_shape), sdims(rhs_spec, rhs.shape), sdims(out_spec, g.shape)
    lhs_d = _dilate(in_s, p["lhs_dilation"])
    rhs_d = _dilate(win, p["rhs_dilation"])
    out_d = _dilate(out_s, p["window_strides"])
    before = rhs_d - np.asarray([lo for lo, _ in p["padding"]]) - 1
    after = lhs_d + rhs_d - 1 - out_d - before
    # The kernel reversed in space with in and out swapped: (spatial..., out, in) is (spatial..., in', out').
    w = jax.lax.rev(rhs, tuple(rhs_spec[2:]))
    w = jnp.transpose(w, (*rhs_spec[2:], rhs_spec[0], rhs_spec[1])).astype(g.dtype)
    out = _conv(_to_canonical(g, out_spec), w, p["lhs_dilation"], list(zip(before, after)), p["window_strides"],
                p["rhs_dilation"], p["precision"], p["preferred_element_type"])
    return _from_canonical(out, lhs_spec)


def _kernel_grad(g, lhs, rhs_shape, p) -> jax.Array:
    """d conv / d rhs pulled back from ``g``: JAX's rule (the batch contracted as a feature), operands in
    the canonical layout."""
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    in_s = np.take(lhs.shape, lhs_spec[2:])
    win = np.take(rhs_shape, rhs_spec[2:])
    out_s = np.take(g.shape, out_spec[2:])
    lhs_d = _dilate(in_s, p["lhs_dilation"])
    rhs_d = _dilate(win, p["rhs_dilation"])
    out_d = _dilate(out_s, p["window_strides"])
    lo = np.asarray([a for a, _ in p["padding"]])
    hi = (out_d - lhs_d) + (rhs_d - lo - 1)
    # lhs: batch <- its features, features <- its batch; kernel: in <- g's batch, out <- g's features.
    x = jnp.transpose(lhs, (lhs_spec[1], *lhs_spec[2:], lhs_spec[0])).astype(g.dtype)
    k = jnp.transpose(g, (*out_spec[2:], out_spec[0], out_spec[1]))
    out = _conv(x, k, p["rhs_dilation"], list(zip(lo, hi)), p["lhs_dilation"], p["window_strides"],
                p["precision"], p["preferred_element_type"])  # (in, spatial..., out)
    # back to the kernel's layout (out, in, spatial...) as given by rhs_spec
    return _from_canonical(out, (rhs_spec[1], rhs_spec[0], *rhs_spec[2:]))


def _rewritable(params: dict) -> bool:
    return params["feature_group_count"] == 1 and params["batch_group_count"] == 1


def _canonical_conv(lhs, rhs, **params):
    """``conv_general_dilated`` whose reverse-mode derivative uses canonical-layout convolutions."""

    def bind(a, b):
        return conv_general_dilated_p.bind(a, b, **params)

    @jax.custom_vjp
    def conv(a, b):
        return bind(a, b)

    def fwd(a, b):
        return bind(a, b), (a, b)

    def bwd(res, g):
        a, b = res
        da = _input_grad(g, b, a.shape, params).astype(a.dtype)
        db = _kernel_grad(g, a, b.shape, params).astype(b.dtype)
        return da, db

    conv.defvjp(fwd, bwd)
    return conv(lhs, rhs)


def _plain_window(params: dict) -> bool:
    return all(d == 1 for d in (*params["base_dilation"], *params["window_dilation"]))


def window_max(x: jax.Array, window: Sequence[int], strides: Sequence[int], padding: Sequence) -> jax.Array:
    """``lax.reduce_window(x, -inf, lax.max, window, strides, padding)`` (one ``(low, high)`` pair per axis)
    as a running ``where(v > m or v is NaN, v, m)`` over the window's strided views in row-major order:
    the same values (a NaN propagates, as in ``max``), and the same derivative (the first maximum of a
    window takes the whole gradient, as ``select_and_scatter_add`` gives it), with no padding built at
    lowering time (module docstring).

    Examples:
      >>> import flax.linen as nn
      >>> x = jnp.round(jax.random.normal(jax.random.key(0), (2, 6, 5, 3)))   # many ties
      >>> pads = jax.lax.padtype_to_pads(x.shape, (1, 3, 3, 1), (1, 2, 1, 1), "SAME")
      >>> pads
      [(0, 0), (0, 1), (1, 1), (0, 0)]
      >>> ours = lambda v: window_max(v, (1, 3, 3, 1), (1, 2, 1, 1), pads)
      >>> flax = lambda v: nn.max_pool(v, (3, 3), (2, 1), "SAME")
      >>> bool(jnp.array_equal(ours(x), flax(x)))
      True
      >>> weights = jnp.arange(90.0).reshape(2, 3, 5, 3)   # the output's shape
      >>> grad = lambda f: jax.grad(lambda v: jnp.sum(f(v) * weights))(x)
      >>> bool(jnp.array_equal(grad(ours), grad(flax)))
      True
      >>> bool(jnp.isnan(ours(x.at[0, 2, 2, 0].set(jnp.nan))[0, 1, 2, 0]))   # a NaN in the window
      True
    """
    pads = [(int(lo), int(hi)) for lo, hi in padding]
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, pads, constant_values=jnp.asarray(-jnp.inf, x.dtype))
    best = None
    for _, view in _window_views(x, window, strides):
        best = view if best is None else jnp.where((view > best) | jnp.isnan(view), view, best)
    return best


def _window_views(x: jax.Array, window: Sequence[int], strides: Sequence[int], dilation: Sequence[int] | None = None):
    """``(offset, view)`` for every offset of ``window`` (one size per axis of ``x``) in row-major order:
    the strided view of ``x`` that the windows' elements at that offset form (a valid window, padding
    already applied; ``dilation`` spaces a window's elements)."""
    dilation = dilation or (1,) * len(window)
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(x.shape, window, strides, dilation)]
    for offset in itertools.product(*(range(k) for k in window)):
        start = [o * d for o, d in zip(offset, dilation)]
        limit = [b + s * (n - 1) + 1 for b, s, n in zip(start, strides, out)]
        yield offset, jax.lax.slice(x, start, limit, tuple(strides))


def depthwise_conv(x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Sequence,
                   dilation: Sequence[int]) -> jax.Array:
    """A depthwise convolution (``feature_group_count`` = the input's channels), channels last, kernel
    ``[spatial..., 1, C * m]``, as the sum over the window of the input's strided views scaled by the
    kernel's taps (output channel ``o`` reads input channel ``o // m``, as XLA's grouped convolution).

    XLA:CPU runs a grouped convolution as a naive loop nest: at DARTS' shapes (batch 16, 32x32, 32
    channels, 3x3) about 40 times slower than these views, which fuse into one loop, and its gradients
    inside a loop over seeds slower still. The views' derivatives are views and sums again, in
    forward and reverse mode. A jitted function of the geometry (:func:`traced_once`).

    Examples:
      >>> x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
      >>> w = jax.random.normal(jax.random.key(1), (3, 3, 1, 6))   # channel multiplier 2
      >>> grouped = jax.lax.conv_general_dilated(x, w, (2, 1), [(2, 2), (2, 2)], rhs_dilation=(2, 2),
      ...                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3)
      >>> ours = depthwise_conv(x, w, (2, 1), [(2, 2), (2, 2)], (2, 2))
      >>> ours.shape == grouped.shape and bool(jnp.allclose(ours, grouped, atol=1e-5))
      True
    """
    return _depthwise_conv(x, w, tuple(int(s) for s in strides), tuple((int(a), int(b)) for a, b in padding),
                           tuple(int(d) for d in dilation))


def traced_once(fn: Callable | None = None, *, static_argnums: Sequence[int] = ()) -> Callable:
    """``jax.jit(fn)``, for a small pure function that a network calls many times on the same shapes
    (a batch norm, a pool, a depthwise convolution on every candidate operation of a DARTS edge).

    JAX traces a jitted function once per shape and caches its derivatives, batching and partial
    evaluation per traced program, so a network that calls it a hundred times is traced and
    transformed as if it called it once; XLA inlines the calls, so the compiled program and its
    values are those of the function written inline. On DARTS' masked program (every operation of
    every edge behind a ``lax.switch``) this is most of the time spent tracing.
    """
    if fn is None:
        return functools.partial(traced_once, static_argnums=static_argnums)
    return jax.jit(fn, static_argnums=tuple(static_argnums))


# Rematerialized: reverse mode keeps the input, not each view, for the kernel's gradient. Inside a switch
# every branch returns the residuals of all branches, so DARTS' programs with gradient metrics compile
# about a fifth faster (grad_norm on a 3-cell network, 116 s -> 91 s), the backward pass recomputing the views.
@traced_once(static_argnums=(2, 3, 4))
@functools.partial(jax.checkpoint, static_argnums=(2, 3, 4))
def _depthwise_conv(x: jax.Array, w: jax.Array, strides: tuple, padding: tuple, dilation: tuple) -> jax.Array:
    channels, features = x.shape[-1], w.shape[-1]
    if features != channels:
        x = jnp.repeat(x, features // channels, axis=-1)
    pads = [(0, 0), *padding, (0, 0)]
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, pads)
    total = None
    for offset, view in _window_views(x, (1, *w.shape[:-2], 1), (1, *strides, 1), (1, *dilation, 1)):
        term = view * w[(*offset[1:-1], 0)][None, None, None, :]
        total = term if total is None else total + term
    return total


def _rewrite_param(value: Any) -> Any:
    subs = tuple(_rewrite_closed(c) for c in _sub_jaxprs(value))
    return value if not subs else subs[0] if isinstance(value, jcore.ClosedJaxpr) else subs


def _rewrites(eqn: jcore.JaxprEqn) -> bool:
    return ((eqn.primitive is conv_general_dilated_p and _rewritable(eqn.params))
            or (eqn.primitive is reduce_window_max_p and _plain_window(eqn.params)))


def _sub_jaxprs(value: Any) -> tuple:
    if isinstance(value, jcore.ClosedJaxpr):
        return (value,)
    if isinstance(value, tuple) and value and all(isinstance(v, jcore.ClosedJaxpr) for v in value):
        return value
    return ()


@functools.lru_cache(maxsize=4096)
def _needs_rewrite(closed: jcore.ClosedJaxpr) -> bool:
    return any(_rewrites(eqn) or any(_needs_rewrite(c) for v in eqn.params.values() for c in _sub_jaxprs(v))
               for eqn in closed.jaxpr.eqns)


@functools.lru_cache(maxsize=4096)
def _rewrite_closed(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
    """The rewritten program, or ``closed`` itself where there is nothing to rewrite; one per program
    (cached), so that a :func:`traced_once` function keeps one traced program, and JAX's caches of its
    derivatives hold."""
    if not _needs_rewrite(closed):
        return closed
    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
             for a in closed.in_avals]
    return jax.make_jaxpr(lambda *args: _eval(closed.jaxpr, closed.consts, args))(*avals)


def _eval(jaxpr: jcore.Jaxpr, consts, args) -> list:
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        with eqn.ctx.manager:
            if eqn.primitive is conv_general_dilated_p and _rewritable(eqn.params):
                outs = [_canonical_conv(*values, **eqn.params)]
            elif _rewrites(eqn):  # a plain max pool
                outs = [window_max(values[0], eqn.params["window_dimensions"], eqn.params["window_strides"],
                                   eqn.params["padding"])]
            else:
                params = {k: _rewrite_param(v) for k, v in eqn.params.items()}
                outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(params))
                if not eqn.primitive.multiple_results:
                    outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def canonical_gradients(fn: Callable) -> Callable:
    """``fn`` with the same values, whose convolutions (in loops and branches too) have reverse-mode
    derivatives computed by canonical-layout convolutions, and whose max pools are :func:`window_max`
    (see the module docstring).

    For reverse mode only (``jax.grad``, ``jax.vjp``): the rewritten convolutions are
    ``jax.custom_vjp`` functions, which forward mode (``jax.jvp``) does not differentiate.
    Grouped convolutions keep JAX's rule.

    Examples:
      >>> conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
      ...                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> x, w = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
      >>> bool(jnp.allclose(jax.grad(lambda w: conv(x, w).sum())(w),
      ...                   jax.grad(lambda w: canonical_gradients(conv)(x, w).sum())(w)))
      True
    """

    @functools.wraps(fn)
    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        out = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return wrapped
