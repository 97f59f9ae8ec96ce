"""The shaping families of nonlinearity normalization (:mod:`zsad.normalize`), one layer at a time.

Every activation layer :math:`l` gets one shaping scalar, applied to
its current activation :math:`\\phi_l` (the registry function with the layer's
existing shaping, if any):

* ``interp`` (any activation, ReLU included) -- interpolation with the identity,

  .. math:: \\phi_{l,a}(s) = g_l\\,\\bigl(a_l\\,\\phi_l(s) + (1 - a_l)\\,s\\bigr),
     \\qquad a_l \\in [0, a_l^{\\rm peak}].

  :math:`a = 0` is linear, :math:`a = 1` the activation itself; :math:`a > 1`
  subtracts part of the linear component and *raises* the nonlinearity. The
  single-layer NLC is not monotone in :math:`a`: it peaks at
  :math:`a^{\\rm peak}` and falls again beyond (ReLU: :math:`a = 2` is
  :math:`|s|`, the most nonlinear; :math:`a \\to \\infty` tends to
  :math:`\\mathrm{relu}(-s)`, as nonlinear as ReLU). The search therefore stays
  on the monotone branch :math:`[0, a_l^{\\rm peak}]`, with
  :math:`a_l^{\\rm peak}` the most nonlinear :math:`a \\ge 1` at the layer's input
  variance, found on a grid up to :data:`ALPHA_RANGE` (2 for ReLU and GELU, 2.5
  for tanh at :math:`q = 1`, about :math:`1/q` for tanh at small :math:`q`, where
  :math:`\\phi_a \\approx s - a s^3/3`).
* ``scale`` (smooth, non-homogeneous activations) -- input scaling,

  .. math:: \\phi_{l,b}(s) = g_l\\,\\phi_l(b_l s)/b_l, \\qquad b_l \\in [10^{-3}, 10^{3}],
     \\ b_l\\beta_l\\sqrt{q_l} \\le 20 \\ (:data:`SIGMA_MAX`),

  :math:`b \\to 0` is linear and :math:`b > 1` raises the nonlinearity (without
  bound for saturating activations such as tanh or erf). Positively homogeneous
  activations (relu, leaky_relu, identity) are unchanged by it and rejected.

The gain :math:`g_l` makes each layer preserve the second moment at its input
variance :math:`q_l`: :math:`\\mathbb E\\,\\phi_{l,\\cdot}(\\sqrt{q_l} z)^2 =
\\mathbb E\\,\\phi_l(\\sqrt{q_l} z)^2`, so normalization changes nonlinearity, not
scale. :math:`q_l` is the **mean-field** pre-activation second moment of the
original network, propagated from the measured second moment of the scoring
batch by the walk of ``zsad score``'s mean-field summary
(:func:`zsad.meanfield.walk.propagate`: convolutions as dense layers,
orthogonal weights with their fan-in/fan-out factor, pooling and flattening
leave it unchanged, layer and batch norm set it to 1). Because every
shaped layer preserves :math:`q`, the :math:`q_l` of the shaped network are the
same, so the gains are consistent (the mean of the activation output may change,
which matters only for what follows a normalization or a residual sum).

Distribution over layers: layer :math:`l` has native single-layer NLC
:math:`\\tau_l = \\mathrm{NLC}_{\\phi_l}(\\sqrt{q_l})`, the NLC of the activation alone on
inputs :math:`\\sqrt{q_l}\\,z`, :math:`z \\sim N(0, 1)`. One global parameter
:math:`u \\in [0, u_{\\max}]` sets every layer's target single-layer log-NLC (clipped
to the layer's peak): :math:`u\\ln\\tau_l` for :math:`u \\le 1` (every layer moved
towards linear in proportion: :math:`u = 0` is the linear network, :math:`u = 1`
the unchanged one) and :math:`\\ln\\tau_l + (u - 1)\\,\\delta` for :math:`u \\ge 1`, with
:math:`\\delta` the mean :math:`\\ln\\tau_l` (every layer contributes the same factor of
the added nonlinearity, :math:`\\approx (T/\\mathrm{NLC})^{1/L}`); at :math:`u_{\\max}`
every layer is at its peak. The per-layer scalar is found by inverting the
single-layer NLC curve (closed form in :math:`a`, a tabulated quadrature in
:math:`b`) on its monotone branch, so every layer's nonlinearity grows with
:math:`u`.

:class:`LayerCurve` holds one layer's single-layer NLC curve and inverts it;
:func:`with_shaping` writes the scalars found back into an architecture.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from zsad._errors import NumericsError
from zsad.arch.spec import Activation, Architecture, Block, Layer, Residual, Shaping, named_layers, sub_prefix
from zsad.quadrature import graded_rule, value_and_slope

#: Search range of the interpolation scalar ``a`` (capped further at the layer's most nonlinear ``a``).
ALPHA_RANGE = (0.0, 1024.0)
#: Search range of the input scale ``b`` (relative to the layer's current ``beta``).
BETA_RANGE = (1e-3, 1e3)
#: Largest input scale (in standard deviations of the pre-activation) ``scale`` gives an activation:
#: beyond it a saturating activation is a step function at the resolution of a finite batch (its
#: derivative vanishes at almost every sample) and the measured NLC collapses instead of growing.
SIGMA_MAX = 20.0
#: Linear steps of 0.005 up to 4, then geometric (2% steps) up to ALPHA_RANGE[1]: at small input
#: variance q the most nonlinear ``a`` of a smooth activation grows like 1/q (tanh: phi_a ~ s - a s^3/3).
_ALPHA_GRID = np.concatenate([np.linspace(0.0, 4.0, 801), np.geomspace(4.0, ALPHA_RANGE[1], 281)[1:]])
_ALPHA_ONE = 200  # index of a = 1 (the unchanged activation)
_BETA_GRID = np.logspace(-3.0, 3.0, 241)
_BETA_ONE = 120  # index of b = 1
#: Activations that saturate (bounded): input scaling makes them as nonlinear as wanted.
SATURATING = frozenset({"tanh", "sigmoid", "erf"})
_FLAT = 1e-10  # a layer whose native log-NLC is below this is (numerically) linear: left alone


def log_target(u: float, log_native: float, step: float) -> float:
    """Target log single-layer NLC of a layer at global parameter ``u``.

    ``u <= 1``: ``u * log_native`` (every layer moved towards linear in proportion);
    ``u >= 1``: ``log_native + (u - 1) * step`` (every layer gets the same added
    log-NLC, ``step`` per unit of ``u``).
    """
    return u * log_native if u <= 1.0 else log_native + (u - 1.0) * step


class LayerCurve:
    """One activation layer: its current activation, input moment and single-layer NLC curve."""

    def __init__(self, name: str, spec: Activation, q: float, method: str):
        self.name, self.spec, self.q, self.method = name, spec, q, method
        sh = spec.shaping
        self.base = (sh.alpha, sh.beta, sh.gain)
        if method == "interp":
            # Moments of psi = phi - s (phi the current activation): phi_a = s + a psi.
            x, w = graded_rule(math.sqrt(q))
            v, d = self._values(x)
            psi, dpsi = v - x, d - 1.0
            self.moments = tuple(float(np.sum(w * t)) for t in (psi, psi * psi, x * psi, dpsi, dpsi * dpsi))
            self.m2_native = float(np.sum(w * v * v))
            grid, native = _ALPHA_GRID, _ALPHA_ONE
            nlc = self._interp_nlc(grid)
        else:
            sigma = _BETA_GRID * math.sqrt(q)
            m1, m2, d2 = self._scale_moments(sigma)
            var = m2 - m1 * m1
            with np.errstate(divide="ignore", invalid="ignore"):
                nlc = np.sqrt(sigma * sigma * d2 / var)
            self.m2_table = m2 / (_BETA_GRID * _BETA_GRID)  # E[phi(b s)^2 / b^2] at s ~ N(0, q)
            self.m2_native = float(m2[_BETA_ONE])
            self.table_nlc = np.maximum(nlc, 1.0)
            grid, native = _BETA_GRID, _BETA_ONE
        if not np.all(np.isfinite(nlc)):
            raise NumericsError(f"layer {name}: the single-layer NLC of {spec.fn} is undefined at some "
                                f"shaping (input second moment q = {q:.3g})")
        nlc = np.maximum(nlc, 1.0)
        self.native = float(nlc[native])
        # The monotone branch: from the linear end up to the most nonlinear parameter (at least the
        # current one); beyond it the single-layer NLC falls again (interp: a -> infinity tends to
        # phi - s, e.g. relu(-s) for relu), so the search never goes there.
        if method == "interp":
            top = native + int(np.argmax(nlc[native:]))
        else:  # input scales up to SIGMA_MAX standard deviations (and at least the current one)
            limit = max(int(np.sum(self.base[1] * _BETA_GRID * math.sqrt(q) <= SIGMA_MAX)), native + 1)
            top = int(np.argmax(nlc[:limit]))
        # Invert the monotone envelope: the records of the running maximum over increasing parameter.
        keep = [0]
        for i in range(1, top + 1):
            if nlc[i] > nlc[keep[-1]]:
                keep.append(i)
        self.grid, self.curve = grid[keep], nlc[keep]
        self.peak = float(grid[top])
        self.tau_max = float(self.curve[-1])
        self.log_native = math.log(self.native)

    def _values(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The current activation (with its existing shaping) and its derivative at ``x`` (float64)."""
        a0, b0, g0 = self.base
        evaluate = value_and_slope(self.spec.fn, tuple(self.spec.params))
        with jax.enable_x64(True):
            v, d = (np.asarray(t, dtype=np.float64) for t in evaluate(jnp.asarray(b0 * x, dtype=jnp.float64)))
        return g0 * (a0 * v / b0 + (1.0 - a0) * x), g0 * (a0 * d + (1.0 - a0))

    def _scale_moments(self, sigma: np.ndarray):
        """E phi, E phi^2, E phi'^2 of the current activation at s ~ N(0, sigma^2), for every sigma."""
        xs, ws = zip(*(graded_rule(float(s)) for s in sigma))
        x, w = np.stack(xs), np.stack(ws)
        v, d = self._values(x)
        return tuple(np.sum(w * t, axis=-1) for t in (v, v * v, d * d))

    def _interp_second(self, a):
        """``(E phi_a^2, Var phi_a, E phi_a'^2)`` at s ~ N(0, q), with phi_a = s + a (phi - s)."""
        m1, m2, ms, d1, d2 = self.moments
        second = self.q + 2.0 * a * ms + a * a * m2
        return second, second - (a * m1) ** 2, 1.0 + 2.0 * a * d1 + a * a * d2

    def _interp_nlc(self, a):
        _, var, grad2 = self._interp_second(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.q * grad2 / var)

    def param(self, u: float, step: float) -> float:
        """The shaping parameter at global parameter ``u`` (see :func:`log_target`)."""
        if self.tau_max <= 1.0 + 1e-12 or (u <= 1.0 and self.log_native < _FLAT):
            return 1.0
        tau = math.exp(min(log_target(u, self.log_native, step), math.log(self.tau_max)))
        return float(np.interp(tau, self.curve, self.grid))

    def u_max(self, step: float) -> float:
        """The smallest ``u`` at which this layer is at its most nonlinear shaping."""
        return 1.0 + max(math.log(self.tau_max) - self.log_native, 0.0) / step

    def shaping(self, p: float) -> Shaping:
        """The family scalars (alpha, beta, gain) of parameter ``p`` applied to the current activation."""
        a0, b0, g0 = self.base
        if self.method == "interp":
            second = float(self._interp_second(p)[0])
            g = math.sqrt(self.m2_native / second)
            scale = p * g0 + 1.0 - p
            if abs(scale) < 1e-9:
                raise NumericsError(f"layer {self.name}: interpolation a = {p:.6g} of the shaped activation "
                                    "has no (alpha, beta, gain) form; reset its shaping and retry")
            return Shaping(alpha=p * g0 * a0 / scale, beta=b0, gain=g * scale)
        m2 = float(np.exp(np.interp(math.log(p), np.log(_BETA_GRID), np.log(self.m2_table))))
        return Shaping(alpha=a0, beta=b0 * p, gain=g0 * math.sqrt(self.m2_native / m2))

    def layer_nlc(self, p: float) -> float:
        if self.method == "interp":
            return float(self._interp_nlc(np.asarray(p)))
        return float(np.exp(np.interp(math.log(p), np.log(_BETA_GRID), np.log(self.table_nlc))))


def activation_layers(layers: tuple[Layer, ...], prefix: str = "") -> list[tuple[str, Activation]]:
    """``(scalar name, layer)`` of every activation layer, residual branches included, in network order."""
    out = []
    for name, layer in named_layers(layers, prefix):
        if isinstance(layer, Activation):
            out.append((name, layer))
        elif isinstance(layer, Residual):
            out += activation_layers(layer.shortcut, sub_prefix(name, "shortcut"))
            out += activation_layers(layer.branch, sub_prefix(name, "branch"))
    return out


# --------------------------------------------------------------------------- writing shaping back

def with_shaping(arch: Architecture, shapes: dict[str, Shaping]) -> Architecture:
    """``arch`` with the shaping of the named activation layers replaced.

    A ``block`` whose repeats end up with different shaping is unrolled (its
    copies spliced in place), since a file records one shaping per written layer.
    """
    layers, _ = _reshape(arch.layers, "", 0, shapes)
    return dataclasses.replace(arch, layers=layers)


def _reshape(layers, prefix: str, index: int, shapes) -> tuple[tuple[Layer, ...], int]:
    out: list[Layer] = []
    for layer in layers:
        if isinstance(layer, Block):
            copies = []
            for _ in range(layer.repeat):
                inner, index = _reshape(layer.layers, prefix, index, shapes)
                copies.append(inner)
            if all(c == copies[0] for c in copies):
                out.append(dataclasses.replace(layer, layers=copies[0]))
            else:
                for c in copies:
                    out.extend(c)
            continue
        name = f"{prefix}{index}.{layer.fn if isinstance(layer, Activation) else layer.kind}"
        if isinstance(layer, Activation) and name in shapes:
            layer = dataclasses.replace(layer, shaping=shapes[name])
        elif isinstance(layer, Residual):
            branch, _ = _reshape(layer.branch, sub_prefix(name, "branch"), 0, shapes)
            shortcut, _ = _reshape(layer.shortcut, sub_prefix(name, "shortcut"), 0, shapes)
            layer = dataclasses.replace(layer, branch=branch, shortcut=shortcut)
        out.append(layer)
        index += 1
    return tuple(out), index
