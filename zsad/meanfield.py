"""Mean-field signal propagation: length and correlation maps, fixed points, predicted NLC.

For a wide fully connected layer :math:`h = W\\phi(h_{\\rm prev}) + b` with
:math:`W_{ij}\\sim N(0, \\sigma_w^2/\\text{fan-in})`, :math:`b_i\\sim N(0,\\sigma_b^2)`:

.. math::
    q_{l+1} &= \\sigma_w^2\\,\\mathbb E_z\\,\\phi(\\sqrt{q_l}\\,z)^2 + \\sigma_b^2 \\\\
    c_{l+1} &= \\bigl(\\sigma_w^2\\,\\mathbb E\\,\\phi(u_1)\\phi(u_2) + \\sigma_b^2\\bigr)/q_{l+1},
        \\quad (u_1,u_2)\\sim N\\bigl(0, q_l
        \\bigl[\\begin{smallmatrix}1 & c_l\\\\ c_l & 1\\end{smallmatrix}\\bigr]\\bigr)\\\\
    \\chi_1 &= \\sigma_w^2\\,\\mathbb E_z\\,\\phi'(\\sqrt{q^*}\\,z)^2

Everything here is a pure function of arrays: no flax, no I/O, no jit (callers
jit; activations and quadrature orders are static, every scalar may be traced).
An activation ``phi`` is a registry name (:data:`zsad.activations.ACTIVATIONS`,
default parameters) or any jax-traceable elementwise callable, e.g.
:func:`zsad.activations.shaped` with traced ``alpha``/``beta``/``gain``. Its
derivative is taken with ``jax.jvp``. Expectations use :mod:`zsad.quadrature`
(half-range 1-D rule of order :data:`~zsad.quadrature.ORDER_1D`, polar 2-D rule
of order :data:`~zsad.quadrature.ORDER_2D`); both are exact for kinks at 0, the
only place the registry's activations have them.

The kernel-propagation part (:class:`KernelState` and the per-layer functions
:func:`dense`, :func:`activation`, :func:`layer_norm`, :func:`rescale`,
:func:`avg_pool`, :func:`residual`) carries the length, the correlations of any
number of input pairs, the mean feature value and the log-slope of the
input-to-here correlation map at :math:`c = 1` through an arbitrary layer
sequence; :func:`predicted_nlc` turns the final state into the NLC prediction.

References:
  B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, Exponential
  expressivity in deep neural networks through transient chaos, NeurIPS 2016.
  S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, Deep information
  propagation, ICLR 2017.
  L. Xiao, Y. Bahri, J. Sohl-Dickstein, S. S. Schoenholz, J. Pennington,
  Dynamical isometry and a mean field theory of CNNs, ICML 2018.
  Y. Cho, L. K. Saul, Kernel methods for deep learning, NeurIPS 2009.
  C. K. I. Williams, Computing with infinite networks, NeurIPS 1997.
  G. Philipp, The nonlinearity coefficient -- a practical guide to neural
  architecture design, arXiv:2105.12210, 2021.
  J. Martens, A. Ballard, G. Desjardins, G. Swirszcz, V. Dalibard,
  J. Sohl-Dickstein, S. S. Schoenholz, Rapid training of deep neural networks
  without skip connections or normalization layers using Deep Kernel Shaping,
  arXiv:2110.01765, 2021.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from zsad._errors import NumericsError
from zsad.activations import get_activation
from zsad.quadrature import ORDER_1D, ORDER_2D, expect, expect2, expect2_joint

ActivationLike = str | Callable[[jax.Array], jax.Array]

#: Default tolerance of :func:`phase`: ``|chi_1 - 1| <= 0.01``, i.e. the correlation
#: depth scale at ``c = 1``, ``1/|ln chi_1|``, exceeds about 100 layers.
PHASE_TOL = 1e-2


# --------------------------------------------------------------------------- activations

def resolve(phi: ActivationLike) -> Callable[[jax.Array], jax.Array]:
    """The elementwise function of ``phi`` (a registry name or a callable).

    Raises:
      KeyError: for an unknown name (the message lists the valid ones).
      TypeError: if ``phi`` is neither a string nor callable.
    """
    if isinstance(phi, str):
        return get_activation(phi)
    if callable(phi):
        return phi
    raise TypeError(f"activation: expected a name or a callable, got {type(phi).__name__}")


def derivative(phi: ActivationLike) -> Callable[[jax.Array], jax.Array]:
    """Elementwise derivative ``x -> phi'(x)`` (one ``jax.jvp`` with unit tangent)."""
    fn = resolve(phi)

    def dphi(x):
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]

    return dphi


def _f(x):
    """``x`` as an array of the default float dtype (or its own float dtype)."""
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x, float))


# --------------------------------------------------------------------------- closed forms

def relu_kernel(q1, q2, c, degree: int = 1) -> jax.Array:
    """Arc-cosine kernel: the closed-form ReLU (``degree=1``) or step (``degree=0``) dual.

    .. math::
        \\mathbb E\\,\\mathrm{relu}(u_1)\\,\\mathrm{relu}(u_2) &=
            \\frac{\\sqrt{q_1 q_2}}{2\\pi}\\bigl(\\sin\\theta + (\\pi-\\theta)\\cos\\theta\\bigr),\\\\
        \\mathbb E\\,\\Theta(u_1)\\,\\Theta(u_2) &= \\frac{\\pi-\\theta}{2\\pi},
        \\qquad \\theta = \\arccos c,

    with :math:`(u_1,u_2)` centred normal of variances :math:`q_1, q_2` and
    correlation :math:`c`; :math:`\\Theta` is the Heaviside step (the ReLU's
    derivative), so ``degree=0`` gives :math:`\\mathbb E\\,\\phi'(u_1)\\phi'(u_2)`.

    Args:
      q1, q2: variances (broadcastable arrays).
      c: correlations in ``[-1, 1]``.
      degree: 0 or 1.

    Returns:
      The expectation, of the broadcast shape.

    Examples:
      >>> round(float(relu_kernel(2.0, 2.0, 1.0)), 6)  # E relu(u)^2 = q/2
      1.0

    References:
      Y. Cho and L. K. Saul, Kernel methods for deep learning, NeurIPS 2009, eq. (6).
    """
    q1, q2, c = (_f(a) for a in (q1, q2, c))
    theta = jnp.arccos(jnp.clip(c, -1.0, 1.0))
    if degree == 0:
        return (jnp.pi - theta) / (2.0 * jnp.pi) + 0.0 * (q1 + q2)
    if degree == 1:
        return jnp.sqrt(q1 * q2) / (2.0 * jnp.pi) * (jnp.sin(theta) + (jnp.pi - theta) * jnp.cos(theta))
    raise ValueError(f"relu_kernel: degree: expected 0 or 1, got {degree!r}")


def erf_kernel(q1, q2, c, derivative: bool = False) -> jax.Array:
    """Closed-form dual of ``erf`` (or of its derivative).

    .. math::
        \\mathbb E\\,\\mathrm{erf}(u_1)\\,\\mathrm{erf}(u_2) &= \\frac{2}{\\pi}
            \\arcsin\\frac{2 c\\sqrt{q_1q_2}}{\\sqrt{(1+2q_1)(1+2q_2)}},\\\\
        \\mathbb E\\,\\mathrm{erf}'(u_1)\\,\\mathrm{erf}'(u_2) &= \\frac{4}{\\pi}
            \\bigl((1+2q_1)(1+2q_2) - 4c^2q_1q_2\\bigr)^{-1/2}.

    Args:
      q1, q2: variances (broadcastable arrays).
      c: correlations in ``[-1, 1]``.
      derivative: if true, the kernel of :math:`\\mathrm{erf}'(x) = 2e^{-x^2}/\\sqrt\\pi`.

    Returns:
      The expectation, of the broadcast shape.

    Examples:
      >>> round(float(erf_kernel(1.0, 1.0, 0.0)), 6)
      0.0

    References:
      C. K. I. Williams, Computing with infinite networks, NeurIPS 1997 (erf
      kernel); the derivative kernel follows by Price's theorem.
    """
    q1, q2, c = (_f(a) for a in (q1, q2, c))
    if derivative:
        return (4.0 / jnp.pi) / jnp.sqrt((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2) - 4.0 * c * c * q1 * q2)
    return (2.0 / jnp.pi) * jnp.arcsin(2.0 * c * jnp.sqrt(q1 * q2) / jnp.sqrt((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2)))


# --------------------------------------------------------------------------- maps

def q_map(phi: ActivationLike, q, weight_var, bias_var, *, order: int = ORDER_1D) -> jax.Array:
    """Length map of one wide dense layer.

    .. math::
        \\mathcal Q(q) = \\sigma_w^2\\,\\mathbb E_{z\\sim N(0,1)}\\,\\phi(\\sqrt q\\,z)^2 + \\sigma_b^2

    Args:
      phi: activation (name or elementwise callable).
      q: pre-activation variance(s) of the previous layer, any shape.
      weight_var: :math:`\\sigma_w^2` (weights have variance ``weight_var / fan_in``).
      bias_var: :math:`\\sigma_b^2`.
      order: 1-D quadrature order (static).

    Returns:
      The next layer's pre-activation variance, shape of ``q``.

    Examples:
      >>> round(float(q_map("relu", 3.0, 2.0, 0.0)), 6)
      3.0

    References:
      Poole et al. (2016), eq. (3).
    """
    fn = resolve(phi)
    return _f(weight_var) * expect(lambda x: fn(x) ** 2, q, order) + _f(bias_var)


def kernel_map(
    phi: ActivationLike, q1, q2, q12, weight_var, bias_var, *, order_1d: int = ORDER_1D,
    order_2d: tuple[int, int] = ORDER_2D,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Covariance map of one wide dense layer for two inputs of any lengths.

    .. math::
        \\begin{bmatrix} q_1 & q_{12} \\\\ q_{12} & q_2 \\end{bmatrix}
        \\mapsto \\sigma_w^2\\,\\mathbb E
        \\begin{bmatrix} \\phi(u_1)^2 & \\phi(u_1)\\phi(u_2)\\\\ \\phi(u_1)\\phi(u_2) & \\phi(u_2)^2 \\end{bmatrix}
        + \\sigma_b^2,\\qquad (u_1,u_2)\\sim N\\left(0,
        \\begin{bmatrix} q_1 & q_{12} \\\\ q_{12} & q_2 \\end{bmatrix}\\right)

    Args:
      phi: activation.
      q1, q2: variances of the two inputs' pre-activations (``> 0``).
      q12: their covariance (``|q12| <= sqrt(q1 q2)``).
      weight_var, bias_var: :math:`\\sigma_w^2`, :math:`\\sigma_b^2`.
      order_1d, order_2d: quadrature orders (static).

    Returns:
      ``(q1', q2', q12')`` of the broadcast shape.

    References:
      Poole et al. (2016), eq. (5); Cho & Saul (2009).
    """
    fn = resolve(phi)
    q1, q2, q12 = (_f(a) for a in (q1, q2, q12))
    c = q12 / jnp.sqrt(q1 * q2)
    wv, bv = _f(weight_var), _f(bias_var)
    cov = wv * expect2(fn, fn, q1, q2, c, order_2d) + bv
    return q_map(fn, q1, wv, bv, order=order_1d), q_map(fn, q2, wv, bv, order=order_1d), cov


def c_map(
    phi: ActivationLike, q, c, weight_var, bias_var, *, order_1d: int = ORDER_1D,
    order_2d: tuple[int, int] = ORDER_2D,
) -> jax.Array:
    """Correlation map of one wide dense layer for two inputs of equal length ``q``.

    .. math::
        \\mathcal C(c; q) = \\frac{\\sigma_w^2\\,\\mathbb E\\,\\phi(u_1)\\phi(u_2) + \\sigma_b^2}{\\mathcal Q(q)},
        \\qquad (u_1,u_2)\\sim N\\bigl(0, q\\bigl[\\begin{smallmatrix}1 & c\\\\ c & 1\\end{smallmatrix}\\bigr]\\bigr)

    At the fixed point :math:`q = q^*` this is the correlation map of Poole et al.

    Args:
      phi: activation.
      q: common pre-activation variance (scalar or broadcastable with ``c``).
      c: correlation(s), any shape, in ``[-1, 1]``.
      weight_var, bias_var: :math:`\\sigma_w^2`, :math:`\\sigma_b^2`.
      order_1d, order_2d: quadrature orders (static).

    Returns:
      The next layer's correlation(s), broadcast shape of ``q`` and ``c``.

    Examples:
      >>> round(float(c_map("relu", 1.0, 0.0, 2.0, 0.0)), 6)  # 1/pi
      0.31831

    References:
      Poole et al. (2016), eq. (5).
    """
    fn = resolve(phi)
    q, c = _f(q), _f(c)
    wv, bv = _f(weight_var), _f(bias_var)
    cov = wv * expect2(fn, fn, q, q, c, order_2d) + bv
    return cov / q_map(fn, q, wv, bv, order=order_1d)


def chi1(phi: ActivationLike, q, weight_var, *, order: int = ORDER_1D) -> jax.Array:
    """Order/chaos parameter: the slope of the correlation map at ``c = 1`` when ``q = q*``.

    .. math::
        \\chi_1(q) = \\sigma_w^2\\,\\mathbb E_{z}\\,\\phi'(\\sqrt q\\,z)^2

    :math:`\\chi_1 < 1`: ordered, :math:`\\chi_1 > 1`: chaotic, :math:`= 1`: edge of chaos.
    Away from the fixed point the slope of :func:`c_map` at 1 is
    :math:`\\chi_1(q)\\,q/\\mathcal Q(q)` (see :func:`chi_c`).

    Args:
      phi: activation.
      q: pre-activation variance(s), any shape.
      weight_var: :math:`\\sigma_w^2`.
      order: 1-D quadrature order (static).

    Returns:
      :math:`\\chi_1`, shape of ``q``.

    Examples:
      >>> round(float(chi1("relu", 1.7, 2.0)), 6)
      1.0

    References:
      Poole et al. (2016), eq. (7); Schoenholz et al. (2017), eq. (5).
    """
    dphi = derivative(phi)
    q = _f(q)
    # The limit q -> 0+ (a vanishing signal, q* = 0): phi'(0)^2 alone would be wrong for kinks at 0
    # (leaky ReLU's slopes 1 and a average to (1 + a^2)/2, not 1).
    q = jnp.maximum(q, jnp.square(jnp.finfo(q.dtype).eps))
    return _f(weight_var) * expect(lambda x: dphi(x) ** 2, q, order)


def chi_c(
    phi: ActivationLike, q, c, weight_var, bias_var, *, order_1d: int = ORDER_1D,
    order_2d: tuple[int, int] = ORDER_2D,
) -> jax.Array:
    """Slope of the correlation map :func:`c_map` at any ``c`` (Price's theorem).

    .. math::
        \\chi_c(c; q) = \\frac{\\partial\\mathcal C}{\\partial c}
        = \\frac{\\sigma_w^2\\, q\\,\\mathbb E\\,\\phi'(u_1)\\phi'(u_2)}{\\mathcal Q(q)}

    Equal to :func:`chi1` at ``c = 1``, ``q = q*``.

    Args:
      phi: activation.
      q: common pre-activation variance.
      c: correlation(s), any shape.
      weight_var, bias_var: :math:`\\sigma_w^2`, :math:`\\sigma_b^2`.
      order_1d, order_2d: quadrature orders (static).

    Returns:
      The slope, broadcast shape of ``q`` and ``c``.

    References:
      R. Price, A useful theorem for nonlinear devices having Gaussian inputs,
      IRE Trans. Inf. Theory 4, 1958; Schoenholz et al. (2017), eq. (7).
    """
    fn, dphi = resolve(phi), derivative(phi)
    q, c = _f(q), _f(c)
    wv = _f(weight_var)
    slope = wv * q * expect2(dphi, dphi, q, q, c, order_2d)
    return slope / q_map(fn, q, wv, bias_var, order=order_1d)


def chi_q(phi: ActivationLike, q, weight_var, *, order: int = ORDER_1D) -> jax.Array:
    """Slope of the length map :func:`q_map`.

    .. math::
        \\chi_q(q) = \\frac{d\\mathcal Q}{dq} = \\frac{\\sigma_w^2}{q}\\,
        \\mathbb E\\bigl[u\\,\\phi(u)\\,\\phi'(u)\\bigr],\\quad u = \\sqrt q\\,z
        \\qquad\\bigl(q = 0:\\ \\sigma_w^2(\\phi'(0)^2 + \\phi(0)\\phi''(0))\\bigr)

    The first form needs only :math:`\\phi'` and is exact for kinks at 0.

    Args:
      phi: activation.
      q: variance(s) ``>= 0``, any shape.
      weight_var: :math:`\\sigma_w^2`.
      order: 1-D quadrature order (static).

    Returns:
      The slope, shape of ``q``.

    Examples:
      >>> round(float(chi_q("relu", 0.3, 1.5)), 6)
      0.75

    References:
      Poole et al. (2016), sec. 2; Schoenholz et al. (2017), eq. (4).
    """
    return _q_map_and_slope(resolve(phi), derivative(phi), q, weight_var, 0.0, order)[1]


def _q_map_and_slope(fn, dphi, q, weight_var, bias_var, order):
    """``(Q(q), chi_q(q))`` from one quadrature pass (see :func:`q_map`, :func:`chi_q`)."""
    q = _f(q)
    wv = _f(weight_var)
    positive = q > 0
    q_safe = jnp.where(positive, q, 1.0)
    second, moment = expect(lambda u: (fn(u) ** 2, u * fn(u) * dphi(u)), q_safe, order)
    zero = jnp.zeros((), q.dtype)
    at_zero = dphi(zero) ** 2 + fn(zero) * derivative(dphi)(zero)
    q_next = wv * jnp.where(positive, second, fn(zero) ** 2) + _f(bias_var)
    return q_next, wv * jnp.where(positive, moment / q_safe, at_zero)


def _c_map_and_slope(fn, dphi, q, c, weight_var, bias_var, q_next, order_2d):
    """``(C(c), chi_c(c))`` at length ``q`` from one 2-D pass; ``q_next = Q(q)``."""
    wv = _f(weight_var)
    cov, dcov = expect2_joint(lambda a, b: (fn(a) * fn(b), dphi(a) * dphi(b)), q, q, c, order_2d)
    return (wv * cov + _f(bias_var)) / q_next, wv * q * dcov / q_next


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

    x, aux = lax.custom_root(lambda x: F_and_slope(x)[0] - x, _f(x0), iterate, _scalar_tangent_solve,
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
    wv, bv, q0 = _f(weight_var), _f(bias_var), _f(q0)
    dtype = jnp.result_type(wv, bv, q0)
    tol = _default_tol(dtype) if tol is None else tol
    return _solve(
        lambda q: _q_map_and_slope(fn, dphi, q, wv, bv, order), q0.astype(dtype), 0.0, jnp.inf, 0.0, tol, max_iter
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
    wv, bv = _f(weight_var), _f(bias_var)
    if q is None:
        q = q_star(fn, wv, bv, order=order_1d).value
    q = _positive(_f(q))
    dtype = jnp.result_type(wv, bv, q)
    tol = _default_tol(dtype) if tol is None else tol
    one = jnp.ones((), dtype)
    q_next, grad2 = expect(lambda x: (fn(x) ** 2, dphi(x) ** 2), q, order_1d)
    q_next = wv * q_next + bv
    slope_at_one = wv * q * grad2 / q_next  # chi_c(1) = chi_1(q) q / Q(q)
    inner = _solve(
        lambda c: _c_map_and_slope(fn, dphi, q, c, wv, bv, q_next, order_2d),
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
    chi = _f(chi)
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
    wv, bv = _f(weight_var), _f(bias_var)
    fp = q_star(fn, wv, bv, q0=q0, order=order_1d)
    q = fp.value
    cs = c_star(fn, wv, bv, q, order_1d=order_1d, order_2d=order_2d)
    qp = _positive(q)  # slopes at q* = 0 are taken in the limit q -> 0+
    x1 = chi1(fn, qp, wv, order=order_1d)
    q_next, xq = _q_map_and_slope(fn, dphi, qp, wv, bv, order_1d)
    xc = _c_map_and_slope(fn, dphi, qp, cs.value, wv, bv, q_next, order_2d)[1]
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
    bv = _f(bias_var)
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


# --------------------------------------------------------------------------- kernel propagation

class KernelState(NamedTuple):
    """Mean-field state of a wide layer's output for a set of inputs of equal length.

    Attributes:
      q: mean squared feature, :math:`\\frac1N\\sum_k x_k^2` (uncentred), shared by all
        inputs (scalar).
      c: correlations :math:`\\frac1{Nq}\\sum_k x_{ik}x_{jk}` of the tracked input pairs
        (any shape, e.g. all off-diagonal pairs of a batch, or just their mean).
      mean: mean feature :math:`\\frac1N\\sum_k x_k` (scalar; 0 after a dense layer,
        :math:`\\mathbb E\\phi` after an activation). Needed for layer norm and residual sums.
      log_slope: :math:`\\ln C'(1)`, the log-slope at :math:`c = 1` of the correlation
        map from the network input to here (scalar); 0 at the input.

    Every per-layer function maps a state to a state, so any layer sequence is
    a composition; the derivative chain is carried in ``log_slope`` (a log, so
    that deep chaotic networks do not overflow).
    """

    q: jax.Array
    c: jax.Array
    mean: jax.Array
    log_slope: jax.Array

    @property
    def slope(self) -> jax.Array:
        """:math:`C'(1)`, the slope of the input-to-here correlation map at 1."""
        return jnp.exp(self.log_slope)


def input_state(q_in, c_in, mean=0.0) -> KernelState:
    """State of the network input.

    Args:
      q_in: mean squared input entry, :math:`\\|x\\|^2/d_{\\rm in}` (equal for all inputs).
      c_in: pairwise input correlations :math:`x_i\\cdot x_j/(d_{\\rm in} q_{\\rm in})`, any shape.
      mean: mean input entry (it matters only for layer norm / residual sums
        taken before the first dense layer).

    Returns:
      :class:`KernelState` with ``log_slope = 0``.
    """
    q_in = _f(q_in)
    return KernelState(q_in, _f(c_in), _f(mean), jnp.zeros_like(q_in))


def dense(state: KernelState, weight_var, bias_var) -> KernelState:
    """Wide dense (or, per position, convolutional) layer with weight variance ``weight_var/fan_in``.

    .. math::
        q' = \\sigma_w^2 q + \\sigma_b^2,\\quad
        c' = \\frac{\\sigma_w^2 q c + \\sigma_b^2}{q'},\\quad
        \\text{mean}' = 0,\\quad
        \\ln C'(1) \\mathrel{+}= \\ln\\frac{\\sigma_w^2 q}{q'}

    A convolution acts on the same-position kernel exactly like a dense layer
    with ``fan_in = kernel_size * in_channels`` when the kernel is the same at
    every position (stationarity; borders ignored), so use this function for
    ``conv`` as well (Xiao et al. 2018).
    """
    wv, bv = _f(weight_var), _f(bias_var)
    scaled = wv * state.q
    q = scaled + bv
    return KernelState(q, (scaled * state.c + bv) / q, jnp.zeros_like(state.mean),
                       state.log_slope + jnp.log(scaled / q))


conv = dense


def activation(
    state: KernelState, phi: ActivationLike, *, order_1d: int = ORDER_1D,
    order_2d: tuple[int, int] = ORDER_2D,
) -> KernelState:
    """Elementwise activation on centred Gaussian pre-activations (output of a dense layer).

    .. math::
        q' = \\mathbb E\\phi(u)^2,\\quad
        c' = \\mathbb E\\phi(u_1)\\phi(u_2)/q',\\quad
        \\text{mean}' = \\mathbb E\\phi(u),\\quad
        \\ln C'(1) \\mathrel{+}= \\ln\\frac{q\\,\\mathbb E\\phi'(u)^2}{q'}

    with :math:`u\\sim N(0, q)` and :math:`(u_1,u_2)` of correlation :math:`c`. The
    input features must be centred Gaussian (true after a dense/conv layer, a
    residual sum of such, or a normalization of one); the ``mean`` of the input
    state is not used.
    """
    return _activation(state, resolve(phi), order_1d, order_2d)[0]


def _activation(state: KernelState, fn, order_1d, order_2d) -> tuple[KernelState, jax.Array]:
    """:func:`activation` and :math:`\\mathbb E\\phi'(u)^2`."""
    dphi = derivative(fn)
    q = state.q
    second, first, grad2 = expect(lambda x: (fn(x) ** 2, fn(x), dphi(x) ** 2), q, order_1d)
    cov = expect2(fn, fn, q, q, state.c, order_2d)
    out = KernelState(second, cov / second, first, state.log_slope + jnp.log(q * grad2 / second))
    return out, grad2


def layer_norm(state: KernelState) -> KernelState:
    """Layer normalization (centre and scale each sample over its features; no affine part).

    .. math::
        q' = 1,\\quad c' = \\frac{qc - m^2}{q - m^2},\\quad \\text{mean}' = 0,\\quad
        \\ln C'(1) \\mathrel{+}= \\ln\\frac{q}{q - m^2}

    with :math:`m` the mean feature. On centred features (after a dense layer)
    this only rescales ``q`` to 1.
    """
    m2 = state.mean**2
    var = state.q - m2
    return KernelState(jnp.ones_like(state.q), (state.q * state.c - m2) / var, jnp.zeros_like(state.mean),
                       state.log_slope + jnp.log(state.q / var))


def rescale(state: KernelState, q=1.0) -> KernelState:
    """Rescale the features so that their mean square is ``q`` (correlations unchanged).

    .. math::
        q' = q_{\\rm target},\\quad c' = c,\\quad \\text{mean}' = \\text{mean}\\sqrt{q_{\\rm target}/q}

    Batch normalization is approximated by this map (the spec's "normalization
    rescales q to 1"): the per-feature batch centring depends on the whole
    correlation matrix of the batch, which a state of pair correlations does not
    determine; on centred features (after a dense/conv layer) the two agree.
    """
    target = _f(q)
    return KernelState(jnp.broadcast_to(target, jnp.shape(state.q)).astype(state.q.dtype), state.c,
                       state.mean * jnp.sqrt(target / state.q), state.log_slope)


def avg_pool(state: KernelState, window: int = 1, spatial_corr=1.0) -> KernelState:
    """Average pooling over ``window`` positions, a linear map on the kernel.

    With :math:`\\rho` (``spatial_corr``) the correlation of the centred features
    between two distinct positions of a window (assumed the same for one input
    and across inputs) and :math:`f = \\rho + (1-\\rho)/\\text{window}`:

    .. math::
        q' = m^2 + f\\,(q - m^2),\\quad q'c' = m^2 + f\\,(qc - m^2),\\quad \\text{mean}' = m

    The default :math:`\\rho = 1` is the per-position approximation (positions
    carry the same kernel, pooling leaves it unchanged), consistent with
    treating convolutions as dense layers; :math:`\\rho = 0` treats positions as
    independent. Global average pooling is the same map with ``window`` the
    number of positions. The exact map needs the cross-position kernel, which
    this state does not track (Xiao et al. 2018, sec. 2).
    """
    f = _f(spatial_corr) + (1.0 - _f(spatial_corr)) / window
    m2 = state.mean**2
    q = m2 + f * (state.q - m2)
    cov = m2 + f * (state.q * state.c - m2)
    slope = f * state.q / q
    return KernelState(q, cov / q, state.mean, state.log_slope + jnp.log(slope))


def residual(shortcut: KernelState, branch: KernelState, branch_scale=1.0, shortcut_scale=1.0) -> KernelState:
    """Residual sum ``shortcut_scale * shortcut(x) + branch_scale * branch(x)``.

    The branch and shortcut features are independent in the wide limit except
    through their means, so kernels add with the scales squared:

    .. math::
        q' &= a^2 q_s + b^2 q_b + 2ab\\,m_s m_b,\\qquad
        q'c' = a^2 q_s c_s + b^2 q_b c_b + 2ab\\,m_s m_b,\\\\
        \\text{mean}' &= a m_s + b m_b,\\qquad
        C'(1) = \\frac{a^2 q_s C_s'(1) + b^2 q_b C_b'(1)}{q'}

    (:math:`a` = ``shortcut_scale``, :math:`b` = ``branch_scale``; both states must
    have been propagated from the same block input, so their slopes are relative
    to the same network input).
    """
    a2, b2 = _f(shortcut_scale) ** 2, _f(branch_scale) ** 2
    cross = 2.0 * _f(shortcut_scale) * _f(branch_scale) * shortcut.mean * branch.mean
    q = a2 * shortcut.q + b2 * branch.q + cross
    cov = a2 * shortcut.q * shortcut.c + b2 * branch.q * branch.c + cross
    log_slope = jnp.logaddexp(jnp.log(a2 * shortcut.q) + shortcut.log_slope,
                              jnp.log(b2 * branch.q) + branch.log_slope) - jnp.log(q)
    mean = _f(shortcut_scale) * shortcut.mean + _f(branch_scale) * branch.mean
    return KernelState(q, cov / q, mean, log_slope)


def predicted_nlc(state: KernelState, c_in) -> jax.Array:
    """NLC predicted from the output state of a network (infinite width).

    .. math::
        \\mathrm{NLC}^2 \\approx C_f'(1)\\,\\frac{1 - \\overline{c_{\\rm in}}}{1 - \\overline{C_f(c_{\\rm in})}}

    with :math:`C_f` the input-to-output correlation map (``state`` propagated
    from :func:`input_state` with the same ``c_in``), the bars means over the
    tracked input pairs. The output's bias variance cancels.

    Args:
      state: output state.
      c_in: the input correlations the state was propagated from.

    Returns:
      The predicted NLC (scalar); ``nan`` when all inputs coincide (``c_in = 1``).

    References:
      G. Philipp, arXiv:2105.12210 (2021), sec. 6; SPEC section 3.
    """
    num = 1.0 - jnp.mean(_f(c_in))
    den = 1.0 - jnp.mean(state.c)
    return jnp.sqrt(state.slope * num / den)


# --------------------------------------------------------------------------- plain MLP

class MLPPrediction(NamedTuple):
    """Mean-field prediction for a plain MLP (:func:`mlp_nlc`).

    Attributes:
      nlc: predicted NLC of the whole network (input to readout).
      slope: :math:`C_f'(1) = \\sigma_w^2 q_{\\rm in}\\prod_l\\chi^l/q_{\\rm out}`.
      c_out: output correlations :math:`C_f(c_{\\rm in})` (shape of ``c_in``).
      q: pre-activation lengths :math:`q^1,\\dots,q^{L+1}` (shape ``(depth + 1,)``;
        the last is the readout's :math:`q_{\\rm out}`).
      chi: :math:`\\chi^l = \\sigma_{w,l+1}^2\\,\\mathbb E\\phi'(\\sqrt{q^l}z)^2` of each hidden
        layer (shape ``(depth,)``; the weight variance is that of the next dense layer).
      profile: predicted NLC of each prefix ending at hidden layer ``l``'s
        activation output (shape ``(depth,)``).
    """

    nlc: jax.Array
    slope: jax.Array
    c_out: jax.Array
    q: jax.Array
    chi: jax.Array
    profile: jax.Array


def mlp_nlc(
    phi: ActivationLike | Sequence[ActivationLike], weight_var, bias_var, depth: int, q_in=1.0, c_in=0.0, *,
    readout: tuple | None = None, order_1d: int = ORDER_1D, order_2d: tuple[int, int] = ORDER_2D,
) -> MLPPrediction:
    """Predicted NLC of the MLP ``dense -> phi -> ... -> dense -> phi -> dense`` (``depth`` activations).

    Propagates the actual lengths :math:`q^1 = \\sigma_w^2 q_{\\rm in} + \\sigma_b^2,
    q^2, \\dots` (not ``depth`` copies of the fixed-point map) and the input
    correlations through every layer, then

    .. math::
        \\mathrm{NLC}^2 \\approx C_f'(1)\\,\\frac{1 - \\overline{c}}{1 - \\overline{C_f(c)}},\\qquad
        C_f'(1) = \\frac{\\sigma_{w,1}^2\\,q_{\\rm in}\\prod_{l=1}^{L}\\chi^l}{q_{\\rm out}},\\quad
        \\chi^l = \\sigma_{w,l+1}^2\\,\\mathbb E\\,\\phi'(\\sqrt{q^l}z)^2

    (:math:`\\sigma_{w,L+1}^2` is the readout's). With :math:`q_{\\rm in} = (q^*-\\sigma_b^2)/\\sigma_w^2`
    this reduces to :math:`\\chi_1^L(1-\\bar c^1)/(1-\\overline{M_*^L(c^1)})`.

    Args:
      phi: one activation for all hidden layers (propagated with ``lax.scan``) or a
        sequence of ``depth`` activations (unrolled).
      weight_var, bias_var: :math:`\\sigma_w^2`, :math:`\\sigma_b^2` of the ``depth`` dense
        layers before each activation: scalars or arrays of shape ``(depth,)``.
      depth: number of hidden layers :math:`L` (static).
      q_in: mean squared input entry.
      c_in: pairwise input correlations (any shape; the mean is over all entries).
      readout: ``(weight_var, bias_var)`` of the readout layer; default: those of
        the last hidden layer. It does not change the predicted NLC.
      order_1d, order_2d: quadrature orders (static).

    Returns:
      :class:`MLPPrediction`.

    Examples:
      >>> round(float(mlp_nlc("relu", 2.0, 0.0, depth=2).nlc), 4)  # sqrt(1/(1 - M(M(0))))
      1.4054

    References:
      G. Philipp, arXiv:2105.12210 (2021); Poole et al. (2016); SPEC section 3.
    """
    if depth < 1:
        raise ValueError(f"mlp_nlc: depth: expected a positive integer, got {depth!r}")
    c_in = _f(c_in)
    wv = jnp.broadcast_to(_f(weight_var), (depth,))
    bv = jnp.broadcast_to(_f(bias_var), (depth,))
    rw, rb = (wv[-1], bv[-1]) if readout is None else (_f(readout[0]), _f(readout[1]))
    next_wv = jnp.concatenate([wv[1:], jnp.reshape(rw, (1,)).astype(wv.dtype)])
    state = input_state(q_in, c_in)

    def layer(state, fn, w, b, w_next):
        pre = dense(state, w, b)
        post, grad2 = _activation(pre, fn, order_1d, order_2d)
        return post, (pre.q, w_next * grad2, predicted_nlc(post, c_in))

    if isinstance(phi, (str,)) or callable(phi):
        fn = resolve(phi)
        state, (qs, chis, profile) = lax.scan(
            lambda s, xs: layer(s, fn, *xs), state, (wv, bv, next_wv)
        )
    else:
        fns = [resolve(p) for p in phi]
        if len(fns) != depth:
            raise ValueError(f"mlp_nlc: phi: expected {depth} activations, got {len(fns)}")
        outs = []
        for i, fn in enumerate(fns):
            state, out = layer(state, fn, wv[i], bv[i], next_wv[i])
            outs.append(out)
        qs, chis, profile = (jnp.stack(z) for z in zip(*outs))
    out = dense(state, rw, rb)
    return MLPPrediction(
        predicted_nlc(out, c_in), out.slope, out.c,
        jnp.concatenate([qs, jnp.reshape(out.q, (1,))]), chis, profile,
    )
