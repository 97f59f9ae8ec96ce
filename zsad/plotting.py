"""Figures (matplotlib, Agg canvas: never needs a display). Each function writes one PNG."""

from __future__ import annotations

import os
import pathlib
from typing import Callable

import numpy as np

from zsad._errors import DataError, NumericsError

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


def plot_score_spectrum(report, path) -> str:
    """Writes the σ² density of ``report`` (a :class:`zsad.score.ScoreReport`) to a PNG, with the
    Fuss–Catalan curve of a linear Gaussian network with as many layers as the segment has dense/conv
    layers."""
    from zsad.spectrum import fuss_catalan_density

    if report.density is None:
        raise NumericsError("no spectrum to plot: every initialization diverged")
    spec = report.extra["spectrum"]
    depth = max(1, spec.get("affine_layers") or 1)
    return str(plot_spectrum_density(
        path, *report.density, reference=lambda x: fuss_catalan_density(x, depth),
        reference_label=f"linear Gaussian, {depth} layer{'s' if depth > 1 else ''} (Fuss–Catalan)",
        title=f"{report.name}: Jacobian {spec['between'][0]} → {spec['between'][1]}"))


def plot_phase_diagram(
    path: str | os.PathLike,
    weight_vars,
    bias_vars,
    chi1,
    *,
    edge: tuple[np.ndarray, np.ndarray] | None = None,
    point: dict | None = None,
    activation: str = "",
    title: str | None = None,
    dpi: int = 120,
) -> pathlib.Path:
    r"""Order/chaos phase diagram in the :math:`(\sigma_w^2, \sigma_b^2)` plane.

    The colour is :math:`\log_{10}\chi_1` (diverging map centred on
    :math:`\chi_1 = 1`, clipped symmetrically at the 90th percentile of
    :math:`|\log_{10}\chi_1|`, between 0.25 and 1.5 decades); the black
    :math:`\chi_1 = 1` contour is the edge of chaos, with the ordered
    (:math:`\chi_1 < 1`) and chaotic (:math:`\chi_1 > 1`) regions labelled.

    Args:
      path: output PNG file (parent directories are created).
      weight_vars: the :math:`\sigma_w^2` axis, shape ``[W]``.
      bias_vars: the :math:`\sigma_b^2` axis, shape ``[B]``.
      chi1: :math:`\chi_1(q^*)` on the grid, shape ``[B, W]`` (non-finite cells are blank).
      edge: optional ``(bias_vars, critical_weight_vars)`` computed precisely
        (e.g. by bisection), drawn as markers on the contour.
      point: optional network to mark: ``{"weight_var", "bias_var", "label"}``
        (and optionally ``"phase"``).
      activation: activation name for the title.
      title: figure title (default from ``activation``).
      dpi: resolution of the PNG.

    Returns:
      The path written, as a ``pathlib.Path``.

    References:
      Poole et al., NeurIPS 2016, fig. 2; Schoenholz et al., ICLR 2017, fig. 1.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    w = np.asarray(weight_vars, dtype=np.float64)
    b = np.asarray(bias_vars, dtype=np.float64)
    chi = np.asarray(chi1, dtype=np.float64)
    if w.ndim != 1 or b.ndim != 1 or chi.shape != (b.size, w.size):
        raise DataError(f"chi1: expected shape [{b.size}, {w.size}] (bias_vars x weight_vars), got {list(chi.shape)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_chi = np.where(np.isfinite(chi) & (chi > 0), np.log10(chi), np.nan)
    if not np.any(np.isfinite(log_chi)):
        raise DataError("chi1: expected at least one finite positive value")
    limit = float(np.clip(np.nanpercentile(np.abs(log_chi), 90), 0.25, 1.5))
    shown = np.clip(log_chi, -limit, limit)

    fig = Figure(figsize=(6.4, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    mesh = ax.pcolormesh(w, b, shown, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit), shading="auto")
    cbar = fig.colorbar(mesh, ax=ax)
    cbar.set_label(r"$\log_{10}\chi_1$")
    handles = []
    finite = np.isfinite(log_chi)
    if np.nanmin(log_chi) < 0.0 < np.nanmax(log_chi) and b.size > 1 and w.size > 1:
        ax.contour(w, b, np.where(finite, log_chi, 0.0), levels=[0.0], colors="black", linewidths=1.6)
        handles.append(Line2D([], [], color="black", lw=1.6, label=r"edge of chaos ($\chi_1 = 1$)"))
    if edge is not None:
        eb, ew = (np.asarray(a, dtype=np.float64) for a in edge)
        keep = np.isfinite(eb) & np.isfinite(ew)
        ax.plot(ew[keep], eb[keep], "o", ms=3.5, color="black", mfc="white", zorder=3)
        handles.append(Line2D([], [], marker="o", ls="", ms=3.5, color="black", mfc="white",
                              label=r"critical $\sigma_w^2$ (bisection)"))
    ww, bb = np.meshgrid(w, b)
    for mask, text in ((log_chi < 0.0, "ordered\n" + r"$\chi_1 < 1$"), (log_chi > 0.0, "chaotic\n" + r"$\chi_1 > 1$")):
        mask = mask & finite
        if mask.sum() >= 4:
            # the cell of the region farthest (in grid units) from the other region's centroid
            other = finite & ~mask
            wc, bc = (float(np.mean(ww[other])), float(np.mean(bb[other]))) if other.any() else (w.mean(), b.mean())
            span_w, span_b = np.ptp(w) or 1.0, np.ptp(b) or 1.0
            dist = ((ww - wc) / span_w) ** 2 + ((bb - bc) / span_b) ** 2
            dist = np.where(mask, dist, -1.0)
            i, j = np.unravel_index(np.argmax(dist), dist.shape)
            x_text = np.clip(ww[i, j], w.min() + 0.12 * span_w, w.max() - 0.12 * span_w)
            y_text = np.clip(bb[i, j], b.min() + 0.1 * span_b, b.max() - 0.1 * span_b)
            ax.text(x_text, y_text, text, ha="center", va="center", fontsize=10, fontweight="bold",
                    color="black", bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7, "lw": 0})
    if point is not None:
        label = point.get("label", "network")
        if point.get("phase"):
            label = f"{label} ({point['phase']})"
        ax.plot([point["weight_var"]], [point["bias_var"]], marker="*", ms=15, color="gold", mec="black",
                ls="", zorder=4)
        handles.append(Line2D([], [], marker="*", ms=12, color="gold", mec="black", ls="", label=label))
    ax.set_xlabel(r"$\sigma_w^2$ (weight variance $\times$ fan-in)")
    ax.set_ylabel(r"$\sigma_b^2$ (bias variance)")
    ax.set_xlim(w.min(), w.max())
    ax.set_ylim(b.min(), b.max())
    ax.set_title(title or (f"mean-field phase diagram: {activation}" if activation else "mean-field phase diagram"))
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3,
                  frameon=False)
    fig.tight_layout()

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


__all__ += ["plot_phase_diagram"]
