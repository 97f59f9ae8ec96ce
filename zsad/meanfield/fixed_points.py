"""Fixed points of the length and correlation maps, depth scales, phase and edge of chaos.

:func:`q_star` and :func:`c_star` solve :math:`q^* = \\mathcal Q(q^*)` and
:math:`c^* = \\mathcal C(c^*)` by safeguarded Newton iterations that are
jittable and differentiable (implicit function theorem);
:func:`fixed_point_summary` adds the slopes and depth scales
:math:`\\xi = -1/\\ln\\chi` (Schoenholz et al. 2017), :func:`phase` names the phase from
:math:`\\chi_1` and :func:`critical_weight_var` finds the edge of chaos.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from zsad._errors import NumericsError
from zsad.meanfield.maps import (
    ActivationLike, as_float, c_map_and_slope, chi1, derivative, q_map_and_slope, resolve,
)
from zsad.quadrature import ORDER_1D, ORDER_2D, expect

#: Default tolerance of :func:`phase`: ``|chi_1 - 1| <= 0.01``, i.e. the correlation
#: depth scale at ``c = 1``, ``1/|ln chi_1|``, exceeds about 100 layers.
PHASE_TOL = 1e-2


# --------------------------------------------------------------------------- fixed points

class FixedPoint(NamedTuple):
    """Result of a fixed-point solve.

    Attributes:
      value: the fixed point (the last iterate when not converged).
      converged: whether ``|F(x) - x| <= tol * max(|x|, floor)`` was reached.
      iterations: number of iterations taken.
    """

    value: jax.Array
    converged: jax.Array
    iterations: jax.Array


def _default_tol(dtype) -> float:
    return 64.0 * float(jnp.finfo(dtype).eps)


def _scalar_tangent_solve(linear, rhs):
    """Solves the scalar linear equation ``linear(x) = rhs`` (implicit differentiation)."""
    return rhs / linear(jnp.ones_like(rhs))


def _solve(F_and_slope, x0, lo, hi, floor, tol, max_iter, big=1e30) -> FixedPoint:
    """Safeguarded Newton for ``F(x) = x`` on ``[lo, hi]``, implicitly differentiable.

    Newton's step on ``g(x) = F(x) - x`` is taken when ``F'(x) < 1`` (so ``g`` is
    decreasing there) and lands in ``[lo, hi]``; otherwise the plain iteration
    ``x <- F(x)``. Stops when converged, after ``max_iter`` steps, or when the
    iterate leaves the finite range (``|x| > big``: no fixed point ahead).
    Derivatives (forward and reverse mode) of the fixed point with respect to
    anything ``F`` closes over follow from the implicit function theorem
    (``lax.custom_root``), not from unrolling the iterations.
    """

    def cond(state):
        _, it, done, _ = state
        return (~done) & (it < max_iter)

    def body(state):
        x, it, _, _ = state
        fx, dfx = F_and_slope(x)
        g = fx - x
        converged = jnp.abs(g) <= tol * jnp.maximum(jnp.abs(x), floor)
        newton = x - g / jnp.where(dfx < 1.0, dfx - 1.0, -1.0)
        take_newton = (dfx < 1.0) & jnp.isfinite(newton) & (newton >= lo) & (newton <= hi)
        x_next = jnp.where(take_newton, newton, jnp.clip(fx, lo, hi))
        escaped = ~jnp.isfinite(x_next) | (jnp.abs(x_next) > big)
        x_next = jnp.where(converged | escaped, x, x_next)
        return x_next, it + 1, converged | escaped, converged

    def iterate(_, x0):
        init = (x0, jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros((), bool))
        x, it, _, converged = lax.while_loop(cond, body, init)
        # aux travels as floats: custom_root's JVP rule mishandles integer aux outputs
        return x, jnp.stack([converged, it]).astype(x.dtype)

    x, aux = lax.custom_root(lambda x: F_and_slope(x)[0] - x, as_float(x0), iterate, _scalar_tangent_solve,
                             has_aux=True)
    aux = lax.stop_gradient(aux)
    return FixedPoint(x, aux[0] > 0.5, aux[1].astype(jnp.int32))


def q_star(
    phi: ActivationLike, weight_var, bias_var, *, q0=1.0, order: int = ORDER_1D, tol: float | None = None,
    max_iter: int = 200,
) -> FixedPoint:
    """Fixed point :math:`q^* = \\mathcal Q(q^*)` of the length map, from ``q0``.

    Safeguarded Newton on :math:`\\mathcal Q(q) - q` (slope :func:`chi_q`), falling
    back to the plain iteration :math:`q \\leftarrow \\mathcal Q(q)`; jittable
    (``lax.while_loop``) and differentiable in both modes by the implicit
    function theorem (``lax.custom_root``). Converged when
    :math:`|\\mathcal Q(q) - q| \\le \\text{tol}\\cdot q` (default ``tol`` = 64 machine
    epsilons of the dtype). Special cases: a positively homogeneous activation
    at :math:`\\sigma_w^2\\,\\mathbb E\\phi'^2 = 1`, :math:`\\sigma_b^2 = 0` leaves every
    ``q`` fixed (``q0`` is returned, converged); when the length diverges (e.g.
    ReLU with :math:`\\sigma_w^2 > 2`) the iteration stops past :math:`10^{30}`
    with ``converged = False``.

    Args:
      phi: activation.
      weight_var, bias_var: :math:`\\sigma_w^2`, :math:`\\sigma_b^2` (may be traced).
      q0: starting length.
      order: 1-D quadrature order (static).
      tol: relative tolerance (static); default from the dtype.
      max_iter: iteration cap (static).

    Returns:
      :class:`FixedPoint` with ``value`` :math:`q^*`.

    Examples:
      >>> fp = q_star("relu", 1.0, 0.5)  # q* = sigma_b^2 / (1 - sigma_w^2/2)
      >>> round(float(fp.value), 5), bool(fp.converged)
      (1.0, True)

    References:
      Poole et al. (2016), sec. 2.
    """
    fn, dphi = resolve(phi), derivative(phi)
    wv, bv, q0 = as_float(weight_var), as_float(bias_var), as_float(q0)
    dtype = jnp.result_type(wv, bv, q0)
    tol = _default_tol(dtype) if tol is None else tol
    return _solve(
        lambda q: q_map_and_slope(fn, dphi, q, wv, bv, order), q0.astype(dtype), 0.0, jnp.inf, 0.0, tol, max_iter
    )


def c_star(
    phi: ActivationLike, weight_var, bias_var, q=None, *, order_1d: int = ORDER_1D,
    order_2d: tuple[int, int] = ORDER_2D, tol: float | None = None, max_iter: int = 200,
) -> FixedPoint:
    """Stable fixed point :math:`c^*` of the correlation map at length ``q`` (default :math:`q^*`).

    On :math:`[0, 1]` the map :math:`\\mathcal C(c)` is convex and increasing
    (:math:`\\mathbb E\\phi'(u_1)\\phi'(u_2)` has a power series in :math:`c` with
    non-negative coefficients) and :math:`\\mathcal C(1) = 1`. Hence if its slope at
    1, :math:`\\chi_c(1) = \\chi_1 q/\\mathcal Q(q)` (:math:`=\\chi_1` at :math:`q^*`), is
    at most 1 (ordered phase, edge of chaos) the attractor is :math:`c^* = 1`;
    otherwise (chaotic) it is the unique fixed point below 1, found by Newton's
    method from :math:`c = 0` (monotone for a convex map), with the plain
    iteration as fallback. A slope within 64 epsilons of 1 counts as 1. When
    :math:`q^* = 0` (e.g. tanh with :math:`\\sigma_b = 0` in the ordered phase) the
    map is taken in the limit :math:`q \\to 0^+` (``q`` is floored at
    :math:`\\sqrt{\\text{tiny}}` of the dtype). Jittable.

    Args:
      phi: activation.
      weight_var, bias_var: :math:`\\sigma_w^2`, :math:`\\sigma_b^2`.
      q: length at which the map is taken; ``None`` solves :func:`q_star` first.
      order_1d, order_2d: quadrature orders (static).
      tol: absolute tolerance on :math:`|\\mathcal C(c) - c|` (default: 64 epsilons).
      max_iter: iteration cap (static).

    Returns:
      :class:`FixedPoint` with ``value`` :math:`c^*`.

    Examples:
      >>> float(c_star("relu", 2.0, 0.0).value)
      1.0

    References:
      Poole et al. (2016), sec. 3; Schoenholz et al. (2017), sec. 3.
    """
    fn, dphi = resolve(phi), derivative(phi)
    wv, bv = as_float(weight_var), as_float(bias_var)
    if q is None:
        q = q_star(fn, wv, bv, order=order_1d).value
    q = _positive(as_float(q))
    dtype = jnp.result_type(wv, bv, q)
    tol = _default_tol(dtype) if tol is None else tol
    one = jnp.ones((), dtype)
    q_next, grad2 = expect(lambda x: (fn(x) ** 2, dphi(x) ** 2), q, order_1d)
    q_next = wv * q_next + bv
    slope_at_one = wv * q * grad2 / q_next  # chi_c(1) = chi_1(q) q / Q(q)
    inner = _solve(
        lambda c: c_map_and_slope(fn, dphi, q, c, wv, bv, q_next, order_2d),
        jnp.zeros((), dtype), 0.0, 1.0, 1.0, tol, max_iter,
    )
    ordered = slope_at_one <= 1.0 + _default_tol(dtype)
    return FixedPoint(
        jnp.where(ordered, one, inner.value),
        jnp.where(ordered, True, inner.converged),
        jnp.where(ordered, 0, inner.iterations),
    )


def depth_scale(chi) -> jax.Array:
    """Depth scale of a map with slope ``chi`` at an attracting fixed point.

    .. math::
        \\xi = -1/\\ln\\chi \\quad (0 \\le \\chi < 1),\\qquad \\xi = \\infty \\quad (\\chi \\ge 1)

    Perturbations decay like :math:`e^{-l/\\xi}`; :math:`\\chi \\ge 1` (criticality,
    or a marginal/unstable point) gives ``inf``, never ``nan``. A slope within 64
    machine epsilons of 1 (rounding of an exactly critical map, e.g. ReLU at
    :math:`\\sigma_w^2 = 2`) counts as 1.

    Examples:
      >>> float(depth_scale(1.0)), round(float(depth_scale(0.5)), 6)
      (inf, 1.442695)

    References:
      Schoenholz et al. (2017), eqs. (6) and (9).
    """
    chi = as_float(chi)
    below = chi < 1.0 - _default_tol(chi.dtype)
    return jnp.where(below, -1.0 / jnp.log(jnp.where(below, chi, 0.5)), jnp.inf)


def _positive(q):
    """``q`` floored at sqrt(tiny) so that correlations stay defined when ``q* = 0``."""
    return jnp.maximum(q, jnp.sqrt(jnp.finfo(q.dtype).tiny))


class MeanField(NamedTuple):
    """Mean-field summary of a deep homogeneous MLP (:func:`fixed_point_summary`).

    Attributes:
      q_star: fixed point of the length map.
      q_converged: whether the :math:`q^*` solve converged.
      chi1: :math:`\\chi_1` at :math:`q^*`.
      chi_q: slope of the length map at :math:`q^*`.
      c_star: stable fixed point of the correlation map.
      chi_c: slope of the correlation map at :math:`c^*`.
      xi_q: length depth scale :math:`-1/\\ln\\chi_q`.
      xi_c: correlation depth scale :math:`-1/\\ln\\chi_c` (``inf`` at criticality).
    """

    q_star: jax.Array
    q_converged: jax.Array
    chi1: jax.Array
    chi_q: jax.Array
    c_star: jax.Array
    chi_c: jax.Array
    xi_q: jax.Array
    xi_c: jax.Array


def fixed_point_summary(
    phi: ActivationLike, weight_var, bias_var, *, q0=1.0, order_1d: int = ORDER_1D,
    order_2d: tuple[int, int] = ORDER_2D,
) -> MeanField:
    """:math:`q^*`, :math:`\\chi_1`, :math:`c^*`, slopes and depth scales in one call.

    .. math::
        \\xi_q = -1/\\ln\\chi_q(q^*),\\qquad \\xi_c = -1/\\ln\\chi_c(c^*; q^*)

    Args:
      phi: activation.
      weight_var, bias_var: :math:`\\sigma_w^2`, :math:`\\sigma_b^2` (may be traced).
      q0: start of the :math:`q^*` iteration.
      order_1d, order_2d: quadrature orders (static).

    Returns:
      :class:`MeanField`. When ``q_converged`` is false (the length diverges) the
      other fields are evaluated at the last iterate of the length map; for a
      positively homogeneous activation they do not depend on the length.

    Examples:
      >>> mf = fixed_point_summary("relu", 2.0, 0.0)
      >>> round(float(mf.chi1), 6), float(mf.xi_c)
      (1.0, inf)

    References:
      Schoenholz et al. (2017), sec. 3.
    """
    fn, dphi = resolve(phi), derivative(phi)
    wv, bv = as_float(weight_var), as_float(bias_var)
    fp = q_star(fn, wv, bv, q0=q0, order=order_1d)
    q = fp.value
    cs = c_star(fn, wv, bv, q, order_1d=order_1d, order_2d=order_2d)
    qp = _positive(q)  # slopes at q* = 0 are taken in the limit q -> 0+
    x1 = chi1(fn, qp, wv, order=order_1d)
    q_next, xq = q_map_and_slope(fn, dphi, qp, wv, bv, order_1d)
    xc = c_map_and_slope(fn, dphi, qp, cs.value, wv, bv, q_next, order_2d)[1]
    return MeanField(q, fp.converged, x1, xq, cs.value, xc, depth_scale(xq), depth_scale(xc))


def phase(chi1_value, tol: float = PHASE_TOL) -> str:
    """``'ordered'``, ``'critical'`` or ``'chaotic'`` from :math:`\\chi_1` (host function).

    Critical when :math:`|\\chi_1 - 1| \\le` ``tol``. The default ``tol = 0.01``
    means the correlation depth scale at :math:`c=1`, :math:`1/|\\ln\\chi_1|`, is
    at least about 100 layers -- deeper than the networks this tool scores, so
    within it the network behaves as at the edge of chaos.

    Args:
      chi1_value: a concrete :math:`\\chi_1` (not a tracer).
      tol: half-width of the critical band.

    Returns:
      The phase name.

    Raises:
      NumericsError: if ``chi1_value`` is not finite.

    Examples:
      >>> phase(1.0), phase(0.5), phase(1.5)
      ('critical', 'ordered', 'chaotic')
    """
    x = float(chi1_value)
    if not math.isfinite(x):
        raise NumericsError(f"phase: chi1: expected a finite number, got {x!r}")
    if abs(x - 1.0) <= tol:
        return "critical"
    return "ordered" if x < 1.0 else "chaotic"


def critical_weight_var(
    phi: ActivationLike, bias_var, *, bracket: tuple[float, float] = (1e-2, 1e2), iterations: int = 64,
    q0=1.0, order: int = ORDER_1D,
) -> jax.Array:
    """The :math:`\\sigma_w^2` at which :math:`\\chi_1(q^*(\\sigma_w^2)) = 1` (edge of chaos).

    Bisection on :math:`\\ln\\sigma_w^2` over ``bracket`` of
    :math:`F(\\sigma_w^2) = \\chi_1(q^*) - 1`, increasing in :math:`\\sigma_w^2`; each
    step solves :func:`q_star`. When :math:`q^*` does not exist (the length
    diverges, e.g. ReLU with :math:`\\sigma_b^2 > 0`) :math:`\\chi_1` is taken at the
    last iterate, which for a homogeneous activation does not depend on ``q``.
    ``iterations = 64`` halvings resolve the bracket to machine precision. Returns
    ``nan`` if :math:`F` does not change sign over the bracket. Jittable and
    differentiable in ``bias_var`` (implicit function theorem). Near
    :math:`\\sigma_b^2 = 0` the root of tanh-like activations is flat
    (:math:`F = O((\\sigma_w^2-1)^2)`), so its accuracy there is about
    :math:`\\sqrt{\\text{eps}}` (1e-8 in float64, 3e-3 in float32).

    Args:
      phi: activation.
      bias_var: :math:`\\sigma_b^2` (may be traced).
      bracket: search interval of :math:`\\sigma_w^2` (static).
      iterations: bisection steps (static).
      q0: start of each :math:`q^*` iteration.
      order: 1-D quadrature order (static).

    Returns:
      The critical :math:`\\sigma_w^2` (scalar).

    Examples:
      >>> round(float(critical_weight_var("relu", 0.0)), 6)
      2.0

    References:
      Schoenholz et al. (2017), fig. 1; Poole et al. (2016), fig. 2.
    """
    fn = resolve(phi)
    bv = as_float(bias_var)
    dtype = bv.dtype

    def excess(log_wv):
        wv = jnp.exp(log_wv)
        q = q_star(fn, wv, bv, q0=q0, order=order).value
        return chi1(fn, q, wv, order=order) - 1.0

    lo, hi = (jnp.log(jnp.asarray(b, dtype)) for b in bracket)
    valid = (excess(lo) <= 0.0) & (excess(hi) >= 0.0)

    def bisect(_, guess):
        def body(_, ab):
            a, b = ab
            mid = 0.5 * (a + b)
            up = excess(mid) < 0.0
            return jnp.where(up, mid, a), jnp.where(up, b, mid)

        a, b = lax.fori_loop(0, iterations, body, (lo, hi))
        return 0.5 * (a + b)

    log_root = lax.custom_root(excess, 0.5 * (lo + hi), bisect, _scalar_tangent_solve)
    return jnp.where(valid, jnp.exp(log_root), jnp.nan)
