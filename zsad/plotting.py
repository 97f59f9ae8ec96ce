"""Figures (matplotlib, Agg canvas: never needs a display). Each function writes one PNG."""

from __future__ import annotations

import os
import pathlib
from typing import Callable

import numpy as np

from zsad._errors import DataError

__all__ = ["plot_spectrum_density"]


def plot_spectrum_density(
    path: str | os.PathLike,
    nodes,
    weights=None,
    *,
    variable: str = "sigma2",
    bins: int | np.ndarray = 50,
    reference: Callable[[np.ndarray], np.ndarray] | tuple[np.ndarray, np.ndarray] | None = None,
    reference_label: str = "reference",
    title: str | None = None,
    dpi: int = 120,
) -> pathlib.Path:
    r"""Histogram of a singular-value spectrum on a log axis, with a reference curve.

    ``nodes`` are values of :math:`\sigma^2` (e.g. the exact squared singular
    values, or SLQ Ritz values with their quadrature ``weights``, as in
    ``JacobianSpectrum.density``; leading axes are pooled). Because the x axis is
    logarithmic, the y axis is the density per unit of :math:`\ln v`
    (:math:`v = \sigma^2` or :math:`\sigma`), so that areas on the plot are
    probabilities:

    .. math::
        h_b = \frac{\sum_{k : v_k \in [e_b, e_{b+1})} w_k}
                   {\sum_k w_k \, \ln(e_{b+1} / e_b)},
        \qquad
        \text{reference curve: } x\,\rho(x) \ (v = \sigma^2 = x), \quad
        2x\,\rho(x) \ (v = \sigma = \sqrt{x}),

    where :math:`\rho` is a density of :math:`\sigma^2` (e.g.
    ``zsad.spectrum.marchenko_pastur_density`` or ``fuss_catalan_density``).
    The isometric band :math:`\tfrac12 \le \sigma \le 2` is shaded. Nodes
    :math:`\le 0` cannot be shown on a log axis; their share is stated in the
    legend.

    Args:
      path: output PNG file (parent directories are created).
      nodes: values of :math:`\sigma^2`, any shape.
      weights: masses of the nodes (same shape; default equal masses).
      variable: ``'sigma2'`` (plot :math:`\sigma^2`) or ``'sigma'`` (plot :math:`\sigma`).
      bins: number of log-spaced bins over the data range, or explicit increasing
        positive bin edges in units of ``variable``.
      reference: a density of :math:`\sigma^2` as a callable, or ``(x, rho)``
        arrays, overlaid as a curve; ``None`` for none.
      reference_label: legend entry of the reference curve.
      title: figure title.
      dpi: resolution of the PNG.

    Returns:
      The path written, as a ``pathlib.Path``.

    References:
      Pennington, Schoenholz & Ganguli, NeurIPS 2017 (figures of the
      squared-singular-value density of deep network Jacobians).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if variable not in ("sigma2", "sigma"):
        raise DataError(f"variable: expected one of sigma2, sigma; got {variable!r}")
    nodes = np.asarray(nodes, dtype=np.float64).ravel()
    weights = np.ones_like(nodes) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if nodes.shape != weights.shape:
        raise DataError(f"weights: expected {nodes.size} values (one per node), got {weights.size}")
    if nodes.size == 0 or not np.all(np.isfinite(nodes)):
        raise DataError("nodes: expected a non-empty array of finite values")
    total = float(np.sum(weights))
    if not total > 0.0:
        raise DataError(f"weights: expected a positive total mass, got {total}")

    positive = nodes > 0.0
    dropped = float(np.sum(weights[~positive])) / total
    values = nodes[positive] if variable == "sigma2" else np.sqrt(nodes[positive])
    mass = weights[positive] / total
    if values.size == 0:
        raise DataError("nodes: expected at least one positive value of sigma^2 to place on a log axis")

    if np.ndim(bins) == 0:
        lo, hi = float(values.min()), float(values.max())
        lo, hi = lo / 1.05, hi * 1.05
        edges = np.logspace(np.log10(lo), np.log10(hi), int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
            raise DataError(f"bins: expected increasing positive edges, got shape {edges.shape}")
    counts, _ = np.histogram(values, bins=edges, weights=mass)
    heights = counts / np.diff(np.log(edges))

    label = r"$\sigma^2$" if variable == "sigma2" else r"$\sigma$"
    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    band = (0.25, 4.0) if variable == "sigma2" else (0.5, 2.0)
    ax.axvspan(*band, color="tab:green", alpha=0.08, lw=0, label="isometric band")
    ax.axvline(1.0, color="tab:green", lw=0.8, ls=":")
    hist_label = "Jacobian" if dropped == 0.0 else f"Jacobian ({dropped:.1%} of mass at 0, not shown)"
    ax.stairs(heights, edges, fill=True, alpha=0.5, color="tab:blue", label=hist_label)

    if reference is not None:
        if callable(reference):
            grid = np.logspace(np.log10(edges[0]), np.log10(edges[-1]), 600)
            x = grid if variable == "sigma2" else grid**2
            rho = np.asarray(reference(x), dtype=np.float64)
        else:
            x, rho = (np.asarray(a, dtype=np.float64) for a in reference)
            keep = x > 0
            x, rho = x[keep], rho[keep]
            grid = x if variable == "sigma2" else np.sqrt(x)
        factor = 1.0 if variable == "sigma2" else 2.0
        ax.plot(grid, factor * x * rho, color="tab:red", lw=1.5, label=reference_label)

    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel(f"density per unit ln {label}")
    ax.set_ylim(bottom=0.0)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
