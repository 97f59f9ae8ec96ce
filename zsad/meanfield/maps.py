"""Length and correlation maps of one wide layer, their slopes, and closed-form duals.

For a wide fully connected layer :math:`h = W\\phi(h_{\\rm prev}) + b` with
:math:`W_{ij}\\sim N(0, \\sigma_w^2/\\text{fan-in})`, :math:`b_i\\sim N(0,\\sigma_b^2)`
the pre-activations of two inputs are jointly Gaussian in the wide limit, and
their variances and correlation obey the maps below (:func:`q_map`,
:func:`c_map`, :func:`kernel_map`) with slopes :func:`chi1`, :func:`chi_c`,
:func:`chi_q`. Pure functions of arrays; expectations by :mod:`zsad.quadrature`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from zsad.activations import get_activation
from zsad.quadrature import ORDER_1D, ORDER_2D, expect, expect2, expect2_joint

#: An activation: a registry name (:data:`zsad.activations.ACTIVATIONS`) or an elementwise callable.
ActivationLike = str | Callable[[jax.Array], jax.Array]


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


def as_float(x) -> jax.Array:
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
    q1, q2, c = (as_float(a) for a in (q1, q2, c))
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
    q1, q2, c = (as_float(a) for a in (q1, q2, c))
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
    return as_float(weight_var) * expect(lambda x: fn(x) ** 2, q, order) + as_float(bias_var)


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
    q1, q2, q12 = (as_float(a) for a in (q1, q2, q12))
    c = q12 / jnp.sqrt(q1 * q2)
    wv, bv = as_float(weight_var), as_float(bias_var)
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
    q, c = as_float(q), as_float(c)
    wv, bv = as_float(weight_var), as_float(bias_var)
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
    q = as_float(q)
    # The limit q -> 0+ (a vanishing signal, q* = 0): phi'(0)^2 alone would be wrong for kinks at 0
    # (leaky ReLU's slopes 1 and a average to (1 + a^2)/2, not 1).
    q = jnp.maximum(q, jnp.square(jnp.finfo(q.dtype).eps))
    return as_float(weight_var) * expect(lambda x: dphi(x) ** 2, q, order)


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
    q, c = as_float(q), as_float(c)
    wv = as_float(weight_var)
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
    return q_map_and_slope(resolve(phi), derivative(phi), q, weight_var, 0.0, order)[1]


def q_map_and_slope(fn, dphi, q, weight_var, bias_var, order: int = ORDER_1D) -> tuple[jax.Array, jax.Array]:
    """``(Q(q), chi_q(q))`` from one quadrature pass (see :func:`q_map`, :func:`chi_q`).

    ``fn`` and ``dphi`` are the activation and its derivative as callables
    (:func:`resolve`, :func:`derivative`).
    """
    q = as_float(q)
    wv = as_float(weight_var)
    positive = q > 0
    q_safe = jnp.where(positive, q, 1.0)
    second, moment = expect(lambda u: (fn(u) ** 2, u * fn(u) * dphi(u)), q_safe, order)
    zero = jnp.zeros((), q.dtype)
    at_zero = dphi(zero) ** 2 + fn(zero) * derivative(dphi)(zero)
    q_next = wv * jnp.where(positive, second, fn(zero) ** 2) + as_float(bias_var)
    return q_next, wv * jnp.where(positive, moment / q_safe, at_zero)


def c_map_and_slope(fn, dphi, q, c, weight_var, bias_var, q_next, order_2d: tuple[int, int] = ORDER_2D):
    """``(C(c), chi_c(c))`` at length ``q`` from one 2-D pass; ``q_next = Q(q)``."""
    wv = as_float(weight_var)
    cov, dcov = expect2_joint(lambda a, b: (fn(a) * fn(b), dphi(a) * dphi(b)), q, q, c, order_2d)
    return (wv * cov + as_float(bias_var)) / q_next, wv * q * dcov / q_next
