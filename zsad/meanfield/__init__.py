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

Modules (every name is re-exported here):

* :mod:`zsad.meanfield.maps` -- the length and correlation maps of one layer,
  their slopes and the closed-form ReLU and erf duals;
* :mod:`zsad.meanfield.fixed_points` -- fixed points, depth scales, phase and
  edge of chaos;
* :mod:`zsad.meanfield.propagation` -- :class:`KernelState`, the per-layer
  functions, the predicted NLC and the plain-MLP prediction :func:`mlp_nlc`;
* :mod:`zsad.meanfield.walk` -- the walk of an architecture file's layers
  (imports :mod:`zsad.arch`; not re-exported).

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

from zsad.meanfield.fixed_points import (
    PHASE_TOL, FixedPoint, MeanField, c_star, critical_weight_var, depth_scale, fixed_point_summary, phase, q_star,
)
from zsad.meanfield.maps import (
    ActivationLike, as_float, c_map, c_map_and_slope, chi1, chi_c, chi_q, derivative, erf_kernel, kernel_map,
    q_map, q_map_and_slope, relu_kernel, resolve,
)
from zsad.meanfield.propagation import (
    KernelState, MLPPrediction, activation, avg_pool, conv, dense, input_state, layer_norm, mlp_nlc,
    predicted_nlc, rescale, residual,
)

__all__ = [
    "PHASE_TOL", "ActivationLike", "FixedPoint", "KernelState", "MLPPrediction", "MeanField", "activation",
    "as_float", "avg_pool", "c_map", "c_map_and_slope", "c_star", "chi1", "chi_c", "chi_q", "conv",
    "critical_weight_var", "dense", "depth_scale", "derivative", "erf_kernel", "fixed_point_summary",
    "input_state", "kernel_map", "layer_norm", "mlp_nlc", "phase", "predicted_nlc", "q_map", "q_map_and_slope",
    "q_star", "relu_kernel", "rescale", "residual", "resolve",
]
