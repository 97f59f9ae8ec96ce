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
= d_{out}`). Which sub-map to study (SPEC: by default from the input of the first
hidden layer to the output of the last, where the map is square-ish) is the
caller's choice of ``fn``.

Two paths compute the same quantities:

* **exact** (:func:`jacobian_singular_values`): materializes :math:`J` with
  ``jacfwd`` (when :math:`d_{in} \le d_{out}`) or ``jacrev`` and takes its
  singular values. Memory :math:`O(d_{in} d_{out})`, time
  :math:`O(d_{in} d_{out} r)`.
* **matrix-free** (:func:`slq_density`, :func:`hutchinson`): only Jacobian-vector
  products. ``jax.linearize`` runs the forward pass once and keeps its residuals
  (the activations); ``jax.linear_transpose`` of the linearized map gives
  :math:`J^\top u`. Lanczos with full reorthogonalization on :math:`G` gives Ritz
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

References:
  Pennington, Schoenholz & Ganguli, *Resurrecting the sigmoid in deep learning
  through dynamical isometry*, NeurIPS 2017.
  Ubaru, Chen & Saad, *Fast estimation of tr(f(A)) via stochastic Lanczos
  quadrature*, SIAM J. Matrix Anal. Appl. 38(4), 2017.
  Hutchinson, *A stochastic estimator of the trace of the influence matrix for
  Laplacian smoothing splines*, Commun. Stat. Simul. Comput. 18(3), 1989.
  Golub & Meurant, *Matrices, Moments and Quadrature with Applications*, 2010.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zsad._errors import DataError, ZsadError

__all__ = [
    "EXACT_MAX_ENTRIES",
    "ISOMETRY_BAND",
    "LOG_SIGMA2_EDGES",
    "HutchinsonEstimate",
    "JacobianSpectrum",
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
    "slq_density",
]

PerSampleFn = Callable[[jax.Array], jax.Array]

#: ``method='auto'`` uses the exact path when ``d_in * d_out`` is at most this
#: (2**20 entries, i.e. a 4 MiB float32 Jacobian per sample, e.g. 1024 × 1024,
#: whose SVD takes well under a second on a CPU); otherwise the matrix-free path.
EXACT_MAX_ENTRIES = 2**20

#: Singular values within a factor 2 of 1 count as "isometric":
#: ``0.5 <= sigma <= 2``, i.e. ``0.25 <= sigma**2 <= 4``.
ISOMETRY_BAND = (0.5, 2.0)

#: Fixed log-spaced bin edges for histograms of ``sigma**2``: 64 bins from
#: 1e-6 to 1e6 (values outside fall into the first or last bin).
LOG_SIGMA2_EDGES = np.logspace(-6.0, 6.0, 65)

_METHODS = ("auto", "exact", "lanczos")


class SpectralDensity(NamedTuple):
    """A discrete measure on ``sigma**2``: ``sum_k weights[k] * delta(nodes[k])``.

    For the exact path the nodes are the ``r`` squared singular values, each with
    weight ``1/r``; for SLQ they are Ritz values with Gauss quadrature weights.
    Weights are non-negative and sum to 1.

    Attributes:
      nodes: ``[..., k]`` values of ``sigma**2``.
      weights: ``[..., k]`` their probability masses.
    """

    nodes: jax.Array
    weights: jax.Array


class HutchinsonEstimate(NamedTuple):
    """Monte-Carlo estimate of ``mean sigma**2 = Tr(J^T J) / min(d_in, d_out)``.

    Attributes:
      mean: the estimate (average over probes).
      stderr: its standard error (sample standard deviation over probes divided
        by ``sqrt(num_probes)``; 0 when ``num_probes == 1``).
    """

    mean: jax.Array
    stderr: jax.Array


class JacobianSpectrum(NamedTuple):
    """Per-sample summaries of the Jacobian singular values (leading axis: samples).

    Every field has shape ``[n]`` (one value per input point) except the density,
    so callers can average over samples and seeds and report the spread. Averages
    over the spectrum are over the ``r = min(d_in, d_out)`` singular values.

    Attributes:
      sigma2_mean: mean of ``sigma**2`` = ``Tr(J^T J) / r``.
      sigma2_mean_stderr: standard error of ``sigma2_mean`` (Hutchinson probes of
        the matrix-free path; 0 on the exact path).
      sigma2_var: variance of ``sigma**2`` over the spectrum.
      sigma2_ratio: ``sigma2_var / sigma2_mean**2`` (squared coefficient of
        variation; scale-free, and equal to ``sigma2_var`` when the mean is 1).
      sigma_max: largest singular value.
      sigma_min: smallest of the ``r`` singular values (an upper bound on the
        matrix-free path, see the module docstring).
      condition: ``sigma_max / sigma_min`` (``inf`` when ``sigma_min == 0``).
      isometry_share: share of singular values with ``0.5 <= sigma <= 2``.
      density: ``SpectralDensity`` with arrays of shape ``[n, k]``: ``k = r``
        (exact) or ``k = num_probes * num_steps`` (SLQ).
    """

    sigma2_mean: jax.Array
    sigma2_mean_stderr: jax.Array
    sigma2_var: jax.Array
    sigma2_ratio: jax.Array
    sigma_max: jax.Array
    sigma_min: jax.Array
    condition: jax.Array
    isometry_share: jax.Array
    density: SpectralDensity


# --------------------------------------------------------------------------- #
# Shapes and operators
# --------------------------------------------------------------------------- #


def _flatten_fn(fn: PerSampleFn, x: jax.Array) -> tuple[PerSampleFn, jax.Array]:
    """Returns ``fn`` as a map between flat vectors, and the flat point."""
    x = jnp.asarray(x)
    shape = x.shape

    def flat(v):
        return jnp.ravel(fn(jnp.reshape(v, shape)))

    return flat, jnp.ravel(x)


def _dims(fn: PerSampleFn, shape: tuple[int, ...], dtype) -> tuple[int, int]:
    """``(d_in, d_out)`` of ``fn`` on inputs of this shape, from shapes only (no computation)."""
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(tuple(shape), dtype))
    if not hasattr(out, "shape"):
        raise DataError(f"fn: expected a single array output, got {type(out).__name__}")
    return int(math.prod(shape)), int(math.prod(out.shape))


def _gram_operator(fn: PerSampleFn, x: jax.Array) -> tuple[Callable[[jax.Array], jax.Array], int, bool]:
    """The ``r × r`` Gram operator of ``J`` as a matvec, by jvp and its transpose.

    Returns ``(matvec, r, input_side)``: ``matvec(v) = J^T J v`` on the input
    side when ``d_in <= d_out`` (``input_side=True``), else ``J J^T v`` on the
    output side. The forward pass runs once (``jax.linearize``); the residuals
    it keeps are the activations of one forward pass.
    """
    flat, x_flat = _flatten_fn(fn, x)
    y, jvp = jax.linearize(flat, x_flat)
    vjp = jax.linear_transpose(jvp, x_flat)
    d_in, d_out = x_flat.shape[0], y.shape[0]
    if d_in <= d_out:
        return (lambda v: vjp(jvp(v))[0]), d_in, True
    return (lambda u: jvp(vjp(u)[0])), d_out, False


def _probe_side_product(fn: PerSampleFn, x: jax.Array) -> tuple[Callable[[jax.Array], jax.Array], int, int]:
    """One Jacobian product on the smaller side: ``v -> J v`` or ``u -> J^T u``.

    Returns ``(product, r, other_dim)``; ``||product(z)||^2 = z^T G z`` for the
    Gram operator ``G`` of :func:`_gram_operator`.
    """
    flat, x_flat = _flatten_fn(fn, x)
    d_in, d_out = _dims(fn, jnp.shape(x), jnp.result_type(x))
    if d_in <= d_out:
        return (lambda v: jax.jvp(flat, (x_flat,), (v,))[1]), d_in, d_out
    _, vjp = jax.vjp(flat, x_flat)
    return (lambda u: vjp(u)[0]), d_out, d_in


# --------------------------------------------------------------------------- #
# Exact path
# --------------------------------------------------------------------------- #


def jacobian_singular_values(fn: PerSampleFn, x: jax.Array) -> jax.Array:
    r"""Singular values of the materialized Jacobian of ``fn`` at ``x``.

    .. math::
        J = \frac{\partial\, \mathrm{vec} f(x)}{\partial\, \mathrm{vec}\, x}
        \in \mathbb{R}^{d_{out} \times d_{in}}, \qquad
        J = U \operatorname{diag}(\sigma_1 \ge \dots \ge \sigma_r) V^\top,
        \quad r = \min(d_{in}, d_{out}).

    ``J`` is built column by column with ``jacfwd`` when ``d_in <= d_out`` and
    row by row with ``jacrev`` otherwise (the number of passes is ``r``); the
    singular values are those of the ``r x r`` triangular factor of a QR
    decomposition of ``J`` (or ``Jᵀ``), by an SVD: backward stable, so small
    ones are resolved to about ``eps * sigma_max`` (not ``sqrt(eps) * sigma_max``,
    as the eigenvalues of the Gram matrix ``JᵀJ`` would be). See
    :func:`resolution` for the smallest value a method resolves.

    Args:
      fn: per-sample map ``x -> y`` (arrays of any shape).
      x: one input point (no batch axis).

    Returns:
      ``[r]`` singular values in descending order (the ``|d_in - d_out|`` trivial
      zeros of the larger side are not included).

    Examples:
      >>> import jax.numpy as jnp
      >>> s = jacobian_singular_values(lambda x: 2.0 * x[:2], jnp.ones(3))
      >>> [round(float(v), 4) for v in s]
      [2.0, 2.0]

    References:
      Pennington, Schoenholz & Ganguli, NeurIPS 2017.
    """
    flat, x_flat = _flatten_fn(fn, x)
    d_in, d_out = _dims(fn, jnp.shape(x), jnp.result_type(x))
    jac = jax.jacfwd(flat)(x_flat) if d_in <= d_out else jax.jacrev(flat)(x_flat)
    # The SVD of the r x r factor R of J = QR (tall side first) rather than of J itself: LAPACK's SVD
    # of a very wide Jacobian allocates workspace of the larger side squared; the QR does not. Not the
    # eigenvalues of the Gram matrix JᵀJ either: they lose half the digits of the small singular values.
    tall = jac if d_in <= d_out else jac.T
    factor = jnp.linalg.qr(tall, mode="r") if tall.shape[0] > tall.shape[1] else tall
    return jnp.linalg.svd(factor, compute_uv=False)


def resolution(method: str, d_in: int, d_out: int, dtype) -> float:
    """The smallest singular value, relative to ``sigma_max``, that ``method`` resolves in ``dtype``:
    below ``resolution * sigma_max`` a computed value is round-off (an upper bound, not a value).

    ``'exact'`` (QR and SVD, backward stable): ``eps * max(d_in, d_out)``, the numerical-rank
    tolerance of LAPACK and NumPy. ``'lanczos'`` works with eigenvalues of the Gram operator, resolved
    to ``eps * sigma_max**2``: ``sqrt(eps * min(d_in, d_out))``.
    """
    eps = float(jnp.finfo(dtype).eps)
    if method == "exact":
        return eps * max(d_in, d_out)
    return math.sqrt(eps * min(d_in, d_out))


# --------------------------------------------------------------------------- #
# Matrix-free path
# --------------------------------------------------------------------------- #


def _orthogonalize(basis: jax.Array, w: jax.Array) -> jax.Array:
    """Removes the span of the rows of ``basis`` from ``w`` (twice: "twice is enough")."""
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


def lanczos(
    matvec: Callable[[jax.Array], jax.Array],
    v0: jax.Array,
    num_steps: int,
) -> SpectralDensity:
    r"""Lanczos with full reorthogonalization: Ritz values and Gauss weights.

    Builds an orthonormal basis :math:`Q_m = [q_1, \dots, q_m]` of the Krylov
    space :math:`\mathcal{K}_m(A, v_0)` of a symmetric operator :math:`A` and the
    tridiagonal :math:`T_m = Q_m^\top A Q_m`. With :math:`T_m = U \Theta U^\top`,
    the Ritz values :math:`\theta_k` approximate eigenvalues of :math:`A` and

    .. math::
        q_1^\top g(A)\, q_1 \approx \sum_{k=1}^m \tau_k^2\, g(\theta_k),
        \qquad \tau_k = U_{1k},

    is the :math:`m`-point Gauss quadrature of the spectral measure of
    :math:`A` seen from :math:`q_1 = v_0/\|v_0\|` (exact for polynomials of
    degree :math:`< 2m`). Every new vector is reorthogonalized against the whole
    basis (twice), so no spurious copies of converged Ritz values appear. When the
    Krylov space becomes invariant (:math:`\beta_j = 0`, e.g. :math:`A = I`), the
    iteration continues with :math:`\beta_j = 0` from the coordinate vector
    :math:`e_i` least represented in the basis (orthogonalized; it has
    :math:`\|(I - Q Q^\top) e_i\|^2 \ge 1 - j/n`); the extra Ritz values are
    exact eigenvalues of :math:`A` and get quadrature weight 0.

    Args:
      matvec: ``v -> A v`` for a symmetric ``A`` of size ``n × n``.
      v0: ``[n]`` start vector (need not be normalized; must be nonzero).
      num_steps: number of Lanczos steps ``m`` (static; at most ``n``).

    Returns:
      ``SpectralDensity`` with ``[m]`` Ritz values (ascending) and weights
      :math:`\tau_k^2` summing to 1.

    Memory: the basis, ``m × n`` numbers, plus what ``matvec`` needs.

    Examples:
      >>> import jax.numpy as jnp
      >>> a = jnp.diag(jnp.arange(1.0, 5.0))
      >>> ritz = lanczos(lambda v: a @ v, jnp.ones(4), 4)
      >>> [round(float(t), 4) for t in ritz.nodes], [round(float(w), 4) for w in ritz.weights]
      ([1.0, 2.0, 3.0, 4.0], [0.25, 0.25, 0.25, 0.25])

    References:
      Golub & Meurant, *Matrices, Moments and Quadrature with Applications*,
      Princeton 2010, ch. 4 and 6. Parlett, *The Symmetric Eigenvalue Problem*,
      SIAM 1998, ch. 13.
    """
    n = v0.shape[0]
    if not 1 <= num_steps <= n:
        raise ZsadError(f"num_steps: expected 1 <= num_steps <= {n} (the operator size), got {num_steps}")
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).tiny
    eps = jnp.finfo(dtype).eps

    def body(j, carry):
        basis, alphas, betas, q = carry
        basis = basis.at[j].set(q)
        aq = matvec(q)
        alpha = jnp.vdot(q, aq)
        w = _orthogonalize(basis, aq)
        beta = jnp.linalg.norm(w)
        # Invariant subspace: restart from the coordinate vector least in the basis.
        broke = beta <= 10.0 * eps * jnp.maximum(jnp.linalg.norm(aq), tiny)
        coord = jnp.argmin(jnp.sum(basis**2, axis=0))
        fresh = _orthogonalize(basis, (jnp.arange(n) == coord).astype(dtype))
        w = jnp.where(broke, fresh, w)
        q_next = w / jnp.maximum(jnp.linalg.norm(w), tiny)
        beta = jnp.where(broke, jnp.zeros_like(beta), beta)
        return basis, alphas.at[j].set(alpha), betas.at[j].set(beta), q_next

    q0 = v0 / jnp.linalg.norm(v0)
    init = (jnp.zeros((num_steps, n), dtype), jnp.zeros(num_steps, dtype), jnp.zeros(num_steps, dtype), q0)
    _, alphas, betas, _ = jax.lax.fori_loop(0, num_steps, body, init)
    off = betas[: num_steps - 1]
    tri = jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, vecs = jnp.linalg.eigh(tri)
    return SpectralDensity(theta, vecs[0, :] ** 2)


def _rademacher_probes(key: jax.Array, lead: int | tuple[int, ...], n: int, dtype) -> jax.Array:
    """Rademacher (±1) vectors of shape ``[*lead, n]``, one random draw."""
    lead = (lead,) if isinstance(lead, int) else tuple(lead)
    return jax.random.rademacher(key, (*lead, n), dtype=dtype)


def _slq(fn: PerSampleFn, x: jax.Array, probes: jax.Array, num_steps: int):
    """SLQ nodes/weights ``[P, m]`` and per-probe Hutchinson samples ``[P]``.

    ``probes`` are ``[P, r]`` Rademacher vectors on the smaller side.
    """
    matvec, r, _ = _gram_operator(fn, x)
    steps = min(num_steps, r)
    ritz = jax.vmap(lambda z: lanczos(matvec, z, steps))(probes)
    # With q1 = z / sqrt(r) for Rademacher z, sum_k tau_k^2 theta_k = q1^T G q1 = z^T G z / r:
    # exactly Hutchinson's sample for Tr(G)/r (Gauss quadrature is exact for degree 1).
    hutch = jnp.sum(ritz.weights * ritz.nodes, axis=-1)
    return ritz, hutch


def _check_counts(num_steps: int, num_probes: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ZsadError(f"num_steps: expected a positive int, got {num_steps!r}")
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ZsadError(f"num_probes: expected a positive int, got {num_probes!r}")


def slq_density(
    fn: PerSampleFn,
    x: jax.Array,
    key: jax.Array,
    *,
    num_steps: int = 64,
    num_probes: int = 4,
) -> SpectralDensity:
    r"""Stochastic Lanczos quadrature for the spectral density of :math:`\sigma^2`.

    Runs :func:`lanczos` on the Gram operator :math:`G` (:math:`J^\top J` or
    :math:`J J^\top`, whichever is :math:`r \times r`, :math:`r = \min(d_{in},
    d_{out})`) from ``num_probes`` normalized Rademacher vectors
    :math:`q^{(p)} = z^{(p)}/\sqrt{r}` and pools the Gauss rules:

    .. math::
        \frac{1}{r}\sum_{i=1}^r g(\sigma_i^2) = \frac{1}{r}\operatorname{Tr} g(G)
        \approx \frac{1}{P}\sum_{p=1}^P \sum_{k=1}^m
        \bigl(\tau_k^{(p)}\bigr)^2 g\bigl(\theta_k^{(p)}\bigr).

    Only Jacobian-vector products are used (one ``jvp`` and one transposed
    ``jvp`` per step and probe, after a single forward pass).

    Args:
      fn: per-sample map ``x -> y``.
      x: one input point (no batch axis).
      key: PRNG key for the probes.
      num_steps: Lanczos steps ``m`` per probe (static; capped at ``r``).
      num_probes: number of probe vectors ``P`` (static).

    Returns:
      ``SpectralDensity`` with ``P * m`` nodes (values of :math:`\sigma^2`) and
      weights summing to 1.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> d = slq_density(lambda x: 3.0 * x, jnp.ones(5), jax.random.key(0), num_steps=3)
      >>> round(float(jnp.sum(d.weights * d.nodes)), 4)
      9.0

    References:
      Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38(4):1075-1099, 2017.
    """
    _check_counts(num_steps, num_probes)
    dtype = jnp.result_type(x)
    probes = _rademacher_probes(key, num_probes, min(_dims(fn, jnp.shape(x), dtype)), dtype)
    ritz, _ = _slq(fn, x, probes, num_steps)
    return SpectralDensity(jnp.ravel(ritz.nodes), jnp.ravel(ritz.weights) / num_probes)


def extreme_singular_values(
    fn: PerSampleFn,
    x: jax.Array,
    key: jax.Array,
    *,
    num_steps: int = 64,
    num_probes: int = 1,
) -> tuple[jax.Array, jax.Array]:
    r"""Largest and smallest singular values from Lanczos Ritz values.

    .. math::
        \sigma_{max} \approx \sqrt{\max_{p,k} \theta_k^{(p)}}, \qquad
        \sigma_{min} \approx \sqrt{\min_{p,k} \theta_k^{(p)}}.

    Ritz values interlace the spectrum, so the first is a lower bound on
    :math:`\sigma_{max}` (fast convergence) and the second an upper bound on
    :math:`\sigma_{min}` (slow convergence when small singular values are
    crowded, e.g. rank-deficient maps; exact once ``num_steps`` reaches ``r``).

    Args:
      fn: per-sample map ``x -> y``.
      x: one input point (no batch axis).
      key: PRNG key for the start vectors.
      num_steps: Lanczos steps per probe (static; capped at ``r``).
      num_probes: independent start vectors (static); extremes over all.

    Returns:
      ``(sigma_max, sigma_min)`` as scalars.

    References:
      Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1.
    """
    _check_counts(num_steps, num_probes)
    dtype = jnp.result_type(x)
    probes = _rademacher_probes(key, num_probes, min(_dims(fn, jnp.shape(x), dtype)), dtype)
    ritz, _ = _slq(fn, x, probes, num_steps)
    nodes = jnp.maximum(ritz.nodes, 0.0)
    return jnp.sqrt(jnp.max(nodes)), jnp.sqrt(jnp.min(nodes))


def hutchinson(fn: PerSampleFn, x: jax.Array, key: jax.Array, *, num_probes: int = 16) -> HutchinsonEstimate:
    r"""Hutchinson's estimator of the mean squared singular value.

    With Rademacher probes :math:`z^{(p)} \in \{\pm 1\}^r` on the smaller side
    (:math:`r = \min(d_{in}, d_{out})`), using :math:`\|J z\|^2` (``jvp``) when
    :math:`d_{in} \le d_{out}` and :math:`\|J^\top z\|^2` (``vjp``) otherwise:

    .. math::
        \overline{\sigma^2} = \frac{\operatorname{Tr}(J^\top J)}{r}
        \approx \frac{1}{P r}\sum_{p=1}^P \|J z^{(p)}\|^2,
        \qquad \operatorname{Var}\bigl[\|Jz\|^2\bigr]
        = 2\bigl(\|G\|_F^2 - \textstyle\sum_i G_{ii}^2\bigr).

    Normalization is by :math:`r` (the number of reported singular values), so
    that a square orthogonal map gives exactly 1 and the estimate matches the
    mean of :func:`jacobian_singular_values` squared.

    Args:
      fn: per-sample map ``x -> y``.
      x: one input point (no batch axis).
      key: PRNG key for the probes.
      num_probes: number of probes ``P`` (static).

    Returns:
      ``HutchinsonEstimate(mean, stderr)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> est = hutchinson(lambda x: 2.0 * x, jnp.ones(4), jax.random.key(0), num_probes=3)
      >>> round(float(est.mean), 4), round(float(est.stderr), 4)
      (4.0, 0.0)

    References:
      Hutchinson, Commun. Stat. Simul. Comput. 18(3):1059-1076, 1989.
    """
    _check_counts(1, num_probes)
    product, r, _ = _probe_side_product(fn, x)
    probes = _rademacher_probes(key, num_probes, r, jnp.result_type(x))
    samples = jax.vmap(lambda z: jnp.sum(product(z) ** 2))(probes) / r
    return HutchinsonEstimate(jnp.mean(samples), _stderr(samples))


def _stderr(samples: jax.Array) -> jax.Array:
    p = samples.shape[0]
    if p < 2:
        return jnp.zeros((), samples.dtype)
    return jnp.std(samples, ddof=1) / math.sqrt(p)


# --------------------------------------------------------------------------- #
# Summaries over a batch
# --------------------------------------------------------------------------- #


def _summarize(nodes: jax.Array, weights: jax.Array, mean: jax.Array, stderr: jax.Array) -> JacobianSpectrum:
    nodes = jnp.maximum(nodes, 0.0)
    second = jnp.sum(weights * nodes**2)
    var = jnp.maximum(second - mean**2, 0.0)
    sigma_max = jnp.sqrt(jnp.max(nodes))
    sigma_min = jnp.sqrt(jnp.min(nodes))
    lo, hi = ISOMETRY_BAND
    inside = (nodes >= lo**2) & (nodes <= hi**2)
    return JacobianSpectrum(
        sigma2_mean=mean,
        sigma2_mean_stderr=stderr,
        sigma2_var=var,
        sigma2_ratio=var / mean**2,
        sigma_max=sigma_max,
        sigma_min=sigma_min,
        condition=sigma_max / sigma_min,
        isometry_share=jnp.sum(jnp.where(inside, weights, 0.0)),
        density=SpectralDensity(nodes, weights),
    )


def _exact_one(fn: PerSampleFn, x: jax.Array) -> JacobianSpectrum:
    sigma2 = jacobian_singular_values(fn, x) ** 2
    r = sigma2.shape[0]
    weights = jnp.full((r,), 1.0 / r, sigma2.dtype)
    return _summarize(sigma2, weights, jnp.mean(sigma2), jnp.zeros((), sigma2.dtype))


def _lanczos_one(fn: PerSampleFn, x: jax.Array, probes: jax.Array, num_steps: int) -> JacobianSpectrum:
    num_probes = probes.shape[0]
    ritz, hutch = _slq(fn, x, probes, num_steps)
    nodes = jnp.ravel(ritz.nodes)
    weights = jnp.ravel(ritz.weights) / num_probes
    return _summarize(nodes, weights, jnp.mean(hutch), _stderr(hutch))


def _resolve_method(method: str, d_in: int, d_out: int) -> str:
    if method not in _METHODS:
        raise ZsadError(f"method: expected one of {', '.join(_METHODS)}; got {method!r}")
    if method == "auto":
        return "exact" if d_in * d_out <= EXACT_MAX_ENTRIES else "lanczos"
    return method


def jacobian_spectrum(
    fn: PerSampleFn,
    xs: jax.Array,
    key: jax.Array,
    *,
    method: str = "auto",
    num_steps: int = 64,
    num_probes: int = 4,
    batch_size: int | None = None,
) -> JacobianSpectrum:
    r"""Summaries of the Jacobian singular values at each point of a batch.

    For each sample :math:`x_i` (leading axis of ``xs``) and the
    :math:`r = \min(d_{in}, d_{out})` singular values of :math:`J(x_i)`:

    .. math::
        \overline{\sigma^2} = \tfrac{1}{r}\operatorname{Tr}(J^\top J), \quad
        \operatorname{Var}\sigma^2 = \overline{\sigma^4} - \bigl(\overline{\sigma^2}\bigr)^2,
        \quad \kappa = \sigma_{max}/\sigma_{min}, \quad
        s_{iso} = \tfrac{1}{r}\#\{i : \tfrac12 \le \sigma_i \le 2\}.

    A network is dynamically isometric when the :math:`\sigma_i` concentrate
    around 1 (:math:`\overline{\sigma^2} \approx 1`, small variance,
    :math:`s_{iso} \approx 1`).

    Methods:
      * ``'exact'``: :func:`jacobian_singular_values`; the density is the ``r``
        values of :math:`\sigma^2` with weight ``1/r`` each.
      * ``'lanczos'``: matrix-free. Mean from Hutchinson (the same Rademacher
        probes that start SLQ; ``sigma2_mean_stderr`` is its standard error),
        variance and isometry share from the SLQ quadrature, extremes from Ritz
        values (``sigma_min`` and ``condition`` are bounds; see the module
        docstring). The density is the pooled SLQ nodes and weights.
      * ``'auto'``: ``'exact'`` when ``d_in * d_out <= EXACT_MAX_ENTRIES``
        (2**20), else ``'lanczos'``.

    Args:
      fn: per-sample map ``x -> y`` (arrays of any shape; flattened).
      xs: ``[n, *input_shape]`` batch of points.
      key: PRNG key (probes of the matrix-free path; unused by ``'exact'``).
      method: ``'auto'``, ``'exact'`` or ``'lanczos'`` (static).
      num_steps: Lanczos steps per probe (static; capped at ``r``).
      num_probes: SLQ/Hutchinson probes per sample (static).
      batch_size: if given, samples are processed ``batch_size`` at a time
        (``jax.lax.map``) instead of all at once (``vmap``), to bound memory.

    Returns:
      ``JacobianSpectrum`` with per-sample fields of shape ``[n]`` and a density
      of shape ``[n, k]``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> s = jacobian_spectrum(lambda x: 2.0 * x, jnp.ones((3, 4)), jax.random.key(0))
      >>> s.sigma2_mean.shape, float(s.sigma_max[0]), float(s.isometry_share[0])
      ((3,), 2.0, 1.0)

    References:
      Pennington, Schoenholz & Ganguli, NeurIPS 2017;
      Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 2017.
    """
    _check_counts(num_steps, num_probes)
    xs = jnp.asarray(xs)
    if xs.ndim < 1 or xs.shape[0] < 1:
        raise DataError(f"xs: expected a batch [n, *input_shape] with n >= 1, got shape {xs.shape}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise DataError(f"xs: expected a floating-point array, got dtype {xs.dtype}")
    d_in, d_out = _dims(fn, xs.shape[1:], xs.dtype)
    resolved = _resolve_method(method, d_in, d_out)
    if resolved == "exact":
        args = xs

        def one(x):
            return _exact_one(fn, x)

    else:
        # All probes in one draw: [n, P, r] with r = min(d_in, d_out).
        args = (xs, _rademacher_probes(key, (xs.shape[0], num_probes), min(d_in, d_out), xs.dtype))

        def one(x_and_probes):
            return _lanczos_one(fn, *x_and_probes, num_steps)

    if batch_size is None:
        return jax.vmap(one)(args)
    return jax.lax.map(one, args, batch_size=batch_size)


def make_spectrum_fn(
    apply: Callable[[Any, jax.Array], jax.Array],
    *,
    method: str = "auto",
    num_steps: int = 64,
    num_probes: int = 4,
    batch_size: int | None = None,
) -> Callable[[Any, jax.Array, jax.Array], JacobianSpectrum]:
    r"""Compiles :func:`jacobian_spectrum` for a parameterized per-sample map.

    The structure (method, Lanczos steps, probes, batch size) is closed over and
    static; parameters, inputs and key are traced, so calling the returned
    function with new parameters of the same shapes (other seeds, other scalar
    hyperparameters) does not recompile.

    Args:
      apply: ``apply(params, x) -> y`` for one sample ``x`` (no batch axis);
        ``params`` is any pytree of arrays (weights, scalars, ...).
      method: ``'auto'``, ``'exact'`` or ``'lanczos'``.
      num_steps: Lanczos steps per probe.
      num_probes: probes per sample.
      batch_size: see :func:`jacobian_spectrum`.

    Returns:
      A jitted ``spectrum(params, xs, key) -> JacobianSpectrum``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> spectrum = make_spectrum_fn(lambda w, x: w * x, method="lanczos", num_steps=4)
      >>> round(float(spectrum(jnp.float32(0.5), jnp.ones((2, 4)), jax.random.key(0)).sigma_max[1]), 4)
      0.5

    References:
      Pennington, Schoenholz & Ganguli, NeurIPS 2017.
    """
    _check_counts(num_steps, num_probes)
    _resolve_method(method, 1, 1)

    def spectrum(params, xs, key):
        return jacobian_spectrum(
            lambda x: apply(params, x),
            xs,
            key,
            method=method,
            num_steps=num_steps,
            num_probes=num_probes,
            batch_size=batch_size,
        )

    return jax.jit(spectrum)


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


# --------------------------------------------------------------------------- #
# Reference densities (numpy, host)
# --------------------------------------------------------------------------- #


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
