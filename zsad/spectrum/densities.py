r"""Spectral densities on the host: fixed-bin histograms and the random-matrix references.

:func:`marchenko_pastur_density` (one Gaussian layer) and
:func:`fuss_catalan_density` (a product of Gaussian layers) are what a network
without nonlinearity would show; :func:`density_histogram` bins a measured
density on :data:`LOG_SIGMA2_EDGES`.
"""

from __future__ import annotations

import math

import numpy as np

from zsad._errors import DataError, ZsadError

#: Fixed log-spaced bin edges for histograms of ``sigma**2``: 64 bins from
#: 1e-6 to 1e6 (values outside fall into the first or last bin).
LOG_SIGMA2_EDGES = np.logspace(-6.0, 6.0, 65)


def density_histogram(nodes, weights, edges=LOG_SIGMA2_EDGES) -> np.ndarray:
    r"""Histogram of a discrete spectral measure on fixed bins (host, numpy).

    .. math::
        h_b = \sum_k w_k\, \mathbf{1}[e_b \le \nu_k < e_{b+1}],

    with nodes below the first edge counted in the first bin and nodes above the
    last edge in the last bin, so the masses sum to the total weight.

    Args:
      nodes: ``[..., k]`` values of ``sigma**2`` (e.g. ``JacobianSpectrum.density.nodes``).
      weights: ``[..., k]`` their masses; leading axes are pooled and averaged.
      edges: ``[B + 1]`` increasing bin edges (default ``LOG_SIGMA2_EDGES``).

    Returns:
      ``[B]`` bin masses (a probability vector when the weights of each leading
      index sum to 1).

    Examples:
      >>> density_histogram([0.5, 2.0], [0.5, 0.5], edges=[0.1, 1.0, 10.0]).tolist()
      [0.5, 0.5]
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if nodes.shape != weights.shape:
        raise DataError(f"weights: expected the shape of nodes {nodes.shape}, got {weights.shape}")
    groups = max(1, int(np.prod(nodes.shape[:-1]))) if nodes.ndim > 1 else 1
    idx = np.clip(np.searchsorted(edges, nodes.ravel(), side="right") - 1, 0, edges.shape[0] - 2)
    return np.bincount(idx, weights=weights.ravel(), minlength=edges.shape[0] - 1) / groups


def marchenko_pastur_density(x, ratio: float = 1.0) -> np.ndarray:
    r"""Marchenko–Pastur density of :math:`\sigma^2` for one Gaussian layer.

    For a :math:`d_{out} \times d_{in}` matrix :math:`W` with i.i.d. entries of
    variance :math:`1/\max(d_{in}, d_{out})` (i.e. :math:`1/\text{fan\_in}` when
    :math:`d_{out} \le d_{in}`), the :math:`r = \min(d_{in}, d_{out})` squared
    singular values follow, as the sizes grow with
    :math:`\lambda = r / \max(d_{in}, d_{out}) \in (0, 1]` fixed,

    .. math::
        \rho(x) = \frac{\sqrt{(x_+ - x)(x - x_-)}}{2\pi \lambda x}, \qquad
        x_\pm = (1 \pm \sqrt{\lambda})^2,

    with mean 1 and variance :math:`\lambda`.

    Args:
      x: points (array-like) at which to evaluate the density.
      ratio: aspect ratio :math:`\lambda \in (0, 1]`.

    Returns:
      Density values (0 outside :math:`[x_-, x_+]`), same shape as ``x``.

    Examples:
      >>> round(float(marchenko_pastur_density(1.0, 1.0)), 6)  # sqrt(3)/(2 pi)
      0.275664

    References:
      Marchenko & Pastur, Math. USSR-Sbornik 1(4):457-483, 1967.
    """
    if not 0.0 < ratio <= 1.0:
        raise ZsadError(f"ratio: expected 0 < ratio <= 1 (min/max of the dimensions), got {ratio}")
    x = np.asarray(x, dtype=np.float64)
    lo, hi = (1.0 - math.sqrt(ratio)) ** 2, (1.0 + math.sqrt(ratio)) ** 2
    inside = (x > lo) & (x < hi)
    safe = np.where(inside, x, 1.0)
    return np.where(inside, np.sqrt(np.maximum((hi - safe) * (safe - lo), 0.0)) / (2.0 * np.pi * ratio * safe), 0.0)


def _fuss_catalan_x(phi: np.ndarray, depth: int) -> np.ndarray:
    return np.sin((depth + 1) * phi) ** (depth + 1) / (np.sin(phi) * np.sin(depth * phi) ** depth)


def fuss_catalan_density(x, depth: int) -> np.ndarray:
    r"""Fuss–Catalan density of :math:`\sigma^2` for a product of ``depth`` Gaussian layers.

    For :math:`J = W_L \cdots W_1` with square :math:`n \times n` factors of
    i.i.d. entries of variance :math:`1/n`, the squared singular values of
    :math:`J` converge (:math:`n \to \infty`) to the Fuss–Catalan law with
    parameter :math:`L`: moments :math:`\frac{1}{Lk+1}\binom{(L+1)k}{k}` (mean 1,
    variance :math:`L`), support :math:`[0, (L+1)^{L+1}/L^L]`. Its density has
    the parametric form (Haagerup & Möller), for
    :math:`\varphi \in (0, \pi/(L+1))`,

    .. math::
        x(\varphi) = \frac{\sin^{L+1}((L+1)\varphi)}{\sin\varphi\,\sin^L(L\varphi)},
        \qquad
        \rho(x(\varphi)) = \frac{1}{\pi}
        \frac{\sin^2\varphi\,\sin^{L-1}(L\varphi)}{\sin^L((L+1)\varphi)},

    where :math:`x(\varphi)` decreases from the right edge to 0; it is inverted
    by bisection. ``depth=1`` is Marchenko–Pastur with ratio 1. Near 0,
    :math:`\rho(x) \sim x^{-L/(L+1)}`.

    Args:
      x: points (array-like) at which to evaluate the density.
      depth: number of Gaussian factors :math:`L \ge 1`.

    Returns:
      Density values (0 outside the support), same shape as ``x``.

    Examples:
      >>> round(float(fuss_catalan_density(1.0, 1)), 6)  # = Marchenko-Pastur
      0.275664

    References:
      Penson & Życzkowski, Phys. Rev. E 83, 061118, 2011.
      Haagerup & Möller, *The law of large numbers for the free multiplicative
      convolution*, 2013 (parametrization).
    """
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ZsadError(f"depth: expected an integer >= 1, got {depth!r}")
    x = np.asarray(x, dtype=np.float64)
    edge = (depth + 1) ** (depth + 1) / depth**depth
    inside = (x > 0.0) & (x < edge)
    target = np.where(inside, x, 1.0)
    lo = np.zeros_like(target)
    hi = np.full_like(target, np.pi / (depth + 1))
    for _ in range(100):  # x(phi) is decreasing: bisection to machine precision
        mid = 0.5 * (lo + hi)
        above = _fuss_catalan_x(mid, depth) > target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    phi = 0.5 * (lo + hi)
    rho = np.sin(phi) ** 2 * np.sin(depth * phi) ** (depth - 1) / (np.pi * np.sin((depth + 1) * phi) ** depth)
    return np.where(inside, rho, 0.0)
