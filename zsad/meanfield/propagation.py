"""Kernel propagation through any layer sequence, and the predicted NLC.

:class:`KernelState` carries the length, the correlations of any number of
input pairs, the mean feature value and the log-slope of the input-to-here
correlation map at :math:`c = 1`; the per-layer functions (:func:`dense`,
:func:`activation`, :func:`layer_norm`, :func:`rescale`, :func:`avg_pool`,
:func:`residual`) map a state to a state, and :func:`predicted_nlc` turns the
final state into the NLC prediction. :func:`mlp_nlc` is the whole prediction
for a plain MLP.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from zsad.meanfield.maps import ActivationLike, as_float, derivative, resolve
from zsad.quadrature import ORDER_1D, ORDER_2D, expect, expect2


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
    q_in = as_float(q_in)
    return KernelState(q_in, as_float(c_in), as_float(mean), jnp.zeros_like(q_in))


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
    wv, bv = as_float(weight_var), as_float(bias_var)
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
    target = as_float(q)
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
    f = as_float(spatial_corr) + (1.0 - as_float(spatial_corr)) / window
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
    a2, b2 = as_float(shortcut_scale) ** 2, as_float(branch_scale) ** 2
    cross = 2.0 * as_float(shortcut_scale) * as_float(branch_scale) * shortcut.mean * branch.mean
    q = a2 * shortcut.q + b2 * branch.q + cross
    cov = a2 * shortcut.q * shortcut.c + b2 * branch.q * branch.c + cross
    log_slope = jnp.logaddexp(jnp.log(a2 * shortcut.q) + shortcut.log_slope,
                              jnp.log(b2 * branch.q) + branch.log_slope) - jnp.log(q)
    mean = as_float(shortcut_scale) * shortcut.mean + as_float(branch_scale) * branch.mean
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
      G. Philipp, arXiv:2105.12210 (2021), sec. 6.
    """
    num = 1.0 - jnp.mean(as_float(c_in))
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
      G. Philipp, arXiv:2105.12210 (2021); Poole et al. (2016).
    """
    if depth < 1:
        raise ValueError(f"mlp_nlc: depth: expected a positive integer, got {depth!r}")
    c_in = as_float(c_in)
    wv = jnp.broadcast_to(as_float(weight_var), (depth,))
    bv = jnp.broadcast_to(as_float(bias_var), (depth,))
    rw, rb = (wv[-1], bv[-1]) if readout is None else (as_float(readout[0]), as_float(readout[1]))
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
