r"""Singular-value spectra of input-output Jacobians (dynamical isometry).

For a per-sample map :math:`f: \mathbb{R}^{d_{in}} \to \mathbb{R}^{d_{out}}` (inputs and
outputs of any shape, flattened internally) and a point :math:`x`, this module
studies the singular values :math:`\sigma_i` of :math:`J = \partial f / \partial x`.

Convention on the number of singular values. A :math:`d_{out} \times d_{in}`
matrix has :math:`r = \min(d_{in}, d_{out})` singular values in its thin SVD; the
remaining :math:`|d_{in} - d_{out}|` directions of the larger side are the null
space of :math:`J` (or of :math:`J^\top`) and carry no information about the
network. Every function here reports those :math:`r` values only, i.e. the
eigenvalues of the :math:`r \times r` Gram operator

.. math::
    G = J^\top J \ \text{ if } d_{in} \le d_{out}, \qquad
    G = J J^\top \ \text{ otherwise},

and every average over the spectrum is over :math:`r` values, in particular

.. math::
    \overline{\sigma^2} = \frac{1}{r}\operatorname{Tr}(J^\top J),
    \qquad r = \min(d_{in}, d_{out}).

For a square map this is the usual :math:`\operatorname{Tr}(J^\top J)/d`. For a
rectangular map the scale follows from the same rule: a Gaussian layer with
weight variance :math:`1/d_{in}` has :math:`\overline{\sigma^2} = 1` when
:math:`d_{out} \le d_{in}` and :math:`d_{out}/d_{in}` when it widens (its
:math:`d_{in}` singular values then carry all of :math:`\operatorname{Tr}(J^\top J)
= d_{out}`). Which sub-map to study is the caller's choice of ``fn``
(``zsad score`` takes by default the map from the input of the first hidden
layer to the output of the last, where it is square-ish).

Two paths compute the same quantities:

* **exact** (:func:`jacobian_singular_values`): materializes :math:`J` with
  ``jacfwd`` (when :math:`d_{in} \le d_{out}`) or ``jacrev`` and takes its
  singular values. Memory :math:`O(d_{in} d_{out})`, time
  :math:`O(d_{in} d_{out} r)`.
* **matrix-free** (:func:`slq_density`, :func:`hutchinson`): only Jacobian-vector
  products. ``jax.linearize`` runs the forward pass once and keeps its residuals
  (the activations) for :math:`J v`; reverse mode through
  :func:`zsad.canonical.canonical_gradients` gives :math:`J^\top u`. Lanczos
  with full reorthogonalization on :math:`G` gives Ritz
  values (extreme singular values) and Gauss quadrature weights (stochastic
  Lanczos quadrature, SLQ, for the density of :math:`\sigma^2`); Hutchinson's
  estimator gives :math:`\overline{\sigma^2}`. Memory per sample: the
  residuals of one forward pass (the activations), one tangent and cotangent
  per probe, and the Lanczos bases (``num_probes`` × ``num_steps`` × r
  numbers), i.e. O(parameters + activations); no :math:`d_{in} \times d_{out}`
  array is ever formed (``benchmarks/bench_spectrum_memory.py`` measures it).

What the matrix-free path gets right and what it does not:

* :math:`\overline{\sigma^2}` is unbiased (Hutchinson); its standard error is
  reported.
* :math:`\sigma_{max}` is the largest Ritz value: a lower bound that converges
  quickly (geometrically in the gap at the top of the spectrum).
* :math:`\sigma_{min}` is the smallest Ritz value of :math:`G` restricted to a
  Krylov space of dimension ``num_steps``: an **upper bound** that converges
  slowly when the bottom of the spectrum is crowded. For rank-deficient maps
  (ReLU networks, bottlenecks), where many :math:`\sigma_i` are zero or tiny, it
  typically overestimates :math:`\sigma_{min}` and so underestimates the
  condition number, unless ``num_steps`` reaches ``r`` (then the result is
  exact). Treat ``sigma_min`` and ``condition`` from this path as bounds.
* The density, the variance of :math:`\sigma^2` and the share of singular values
  near 1 come from the SLQ quadrature: exact for polynomials of degree
  :math:`< 2 \cdot` ``num_steps`` in expectation over probes, and within the
  largest quadrature weight for distribution functions
  (Chebyshev–Markov–Stieltjes inequalities), plus a Monte-Carlo error of order
  :math:`1/\sqrt{r \cdot \text{num\_probes}}`.

Modules (every public name is re-exported here): :mod:`zsad.spectrum.dense`
(the exact path), :mod:`zsad.spectrum.matrix_free` (Lanczos, SLQ, Hutchinson),
:mod:`zsad.spectrum.summary` (:func:`jacobian_spectrum` over a batch, by
either path) and :mod:`zsad.spectrum.densities` (histograms and the
random-matrix reference densities).

References:
  Pennington, Schoenholz & Ganguli, *Resurrecting the sigmoid in deep learning
  through dynamical isometry*, NeurIPS 2017.
  Ubaru, Chen & Saad, *Fast estimation of tr(f(A)) via stochastic Lanczos
  quadrature*, SIAM J. Matrix Anal. Appl. 38(4), 2017.
  Hutchinson, *A stochastic estimator of the trace of the influence matrix for
  Laplacian smoothing splines*, Commun. Stat. Simul. Comput. 18(3), 1989.
  Golub & Meurant, *Matrices, Moments and Quadrature with Applications*, 2010.
"""

from zsad.spectrum.dense import PerSampleFn, jacobian_singular_values, resolution
from zsad.spectrum.densities import LOG_SIGMA2_EDGES, density_histogram, fuss_catalan_density, marchenko_pastur_density
from zsad.spectrum.matrix_free import (
    HutchinsonEstimate, SpectralDensity, extreme_singular_values, hutchinson, lanczos, slq_density,
)
from zsad.spectrum.summary import (
    EXACT_MAX_ENTRIES, ISOMETRY_BAND, METHODS, JacobianSpectrum, jacobian_spectrum, make_spectrum_fn, resolve_method,
)

__all__ = [
    "EXACT_MAX_ENTRIES",
    "ISOMETRY_BAND",
    "LOG_SIGMA2_EDGES",
    "METHODS",
    "HutchinsonEstimate",
    "JacobianSpectrum",
    "PerSampleFn",
    "SpectralDensity",
    "density_histogram",
    "extreme_singular_values",
    "fuss_catalan_density",
    "hutchinson",
    "jacobian_singular_values",
    "jacobian_spectrum",
    "lanczos",
    "make_spectrum_fn",
    "marchenko_pastur_density",
    "resolution",
    "resolve_method",
    "slq_density",
]
