"""The measurement engine's building blocks: gradients that XLA:CPU computes fast, shared backward passes.

**Convolution gradients in loops.** JAX differentiates a convolution by two
more convolutions whose dimension numbers are permuted (the kernel's input and
output features swapped for the input gradient; batch and feature swapped for
the kernel gradient). Outside loops XLA:CPU rewrites them into its canonical
layout and runs them on Eigen; inside a loop body (a ``lax.scan`` over the
repeats of a block, NAS-Bench-201's five cells of a stage) it does not, and
falls back to a naive loop nest: on NAS-Bench-201 the kernel gradient of one
initialization took about 60 s against 0.4 s for the forward pass.
:func:`canonical_convolutions` rewrites a function so that the gradients of
its convolutions are computed by convolutions in the canonical layout (the
operands transposed explicitly), inside loops as well. Values are those of
JAX's own rule up to rounding.

**One backward pass for the gradient proxies.** grad_norm and snip both need
``d loss / d weights`` of the same loss; jacob_cov needs ``d sum(outputs) / d
inputs`` at the same point. :func:`gradient_proxies` makes one forward pass
(``jax.vjp``) and pulls both cotangents back through it, instead of a forward
and a backward pass per proxy.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from jax.extend.core.primitives import conv_general_dilated_p

from zsad import proxies

# --------------------------------------------------------------------------- canonical convolution gradients


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


def _rewrite_param(value: Any) -> Any:
    if isinstance(value, jcore.ClosedJaxpr):
        return _rewrite_closed(value)
    if isinstance(value, tuple) and value and all(isinstance(v, jcore.ClosedJaxpr) for v in value):
        return tuple(_rewrite_closed(v) for v in value)
    return value


def _rewrite_closed(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
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
            else:
                params = {k: _rewrite_param(v) for k, v in eqn.params.items()}
                outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(params))
                if not eqn.primitive.multiple_results:
                    outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def canonical_convolutions(fn: Callable) -> Callable:
    """``fn`` with the same values, whose convolutions (in loops and branches too) have reverse-mode
    derivatives computed by canonical-layout convolutions (see the module docstring).

    For reverse mode only (``jax.grad``, ``jax.vjp``): the rewritten convolutions are
    ``jax.custom_vjp`` functions, which forward mode (``jax.jvp``) does not differentiate.
    Grouped convolutions keep JAX's rule.

    Examples:
      >>> conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
      ...                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> x, w = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
      >>> bool(jnp.allclose(jax.grad(lambda w: conv(x, w).sum())(w),
      ...                   jax.grad(lambda w: canonical_convolutions(conv)(x, w).sum())(w)))
      True
    """

    @functools.wraps(fn)
    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        out = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return wrapped


# --------------------------------------------------------------------------- shared backward passes


class GradientScores(NamedTuple):
    """The gradient proxies of one initialization (None where not requested)."""

    grad_norm: proxies.ProxyScore | None
    snip: proxies.ProxyScore | None
    jacob_cov: proxies.ProxyScore | None


def gradient_proxies(forward: Callable, params: Any, x: jax.Array, labels: jax.Array, *, where,
                     names: tuple[str, ...]) -> GradientScores:
    """grad_norm, snip and jacob_cov (those in ``names``) from one forward pass and its backward passes.

    Args:
      forward: ``forward(params, x) -> outputs [n, ...]`` (batch statistics frozen), per sample.
      params: the parameters grad_norm and snip differentiate.
      x: the batch; labels: integer labels of the cross-entropy (flattened outputs as logits).
      where: leaf selector of grad_norm and snip (:func:`zsad.proxies.is_weight`'s signature).
      names: the proxies to compute.

    Returns:
      :class:`GradientScores`, each equal to its :mod:`zsad.proxies` function up to rounding.
    """
    want_params = "grad_norm" in names or "snip" in names
    want_x = "jacob_cov" in names
    if not (want_params or want_x):
        return GradientScores(None, None, None)
    fast = canonical_convolutions(forward)
    if want_params and want_x:
        y, pull = jax.vjp(fast, params, x)
    elif want_params:
        y, pull_p = jax.vjp(lambda p: fast(p, x), params)
        pull = lambda ct: (pull_p(ct)[0], None)  # noqa: E731
    else:
        y, pull_x = jax.vjp(lambda z: fast(params, z), x)
        pull = lambda ct: (None, pull_x(ct)[0])  # noqa: E731
    grad_norm = snip = jacob_cov = None
    if want_params:
        logits = y.reshape(y.shape[0], -1)
        _, pull_loss = jax.vjp(lambda o: proxies.cross_entropy_loss(lambda _, z: z)(None, o, labels), logits)
        grads = pull(pull_loss(jnp.ones((), y.dtype))[0].reshape(y.shape))[0]
        if "grad_norm" in names:
            grad_norm = proxies.grad_norm_of_gradients(params, grads, where=where)
        if "snip" in names:
            snip = proxies.snip_of_gradients(params, grads, where=where)
    if want_x:
        jacob_cov = proxies.jacob_cov_of_gradients(pull(jnp.ones_like(y))[1])
    return GradientScores(grad_norm, snip, jacob_cov)
