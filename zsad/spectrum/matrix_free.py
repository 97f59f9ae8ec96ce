r"""The matrix-free path: Lanczos, stochastic Lanczos quadrature and Hutchinson's estimator.

Only Jacobian-vector products of the per-sample map are used: ``jax.linearize``
runs the forward pass once and keeps its residuals for :math:`J v`; reverse mode
through :func:`zsad.canonical.canonical_gradients` gives :math:`J^\top u`
(convolutions in the layout XLA:CPU runs fast inside loops). See :mod:`zsad.spectrum` for what
this path gets right and what it bounds.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from zsad._errors import ZsadError
from zsad.spectrum.dense import PerSampleFn, flatten_fn, io_dims, transposed_product


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


def gram_operator(fn: PerSampleFn, x: jax.Array) -> tuple[Callable[[jax.Array], jax.Array], int, bool]:
    """The ``r × r`` Gram operator of ``J`` as a matvec, by jvp and its transpose.

    Returns ``(matvec, r, input_side)``: ``matvec(v) = J^T J v`` on the input
    side when ``d_in <= d_out`` (``input_side=True``), else ``J J^T v`` on the
    output side. ``J v`` by ``jax.linearize``, ``J^T u`` by reverse mode
    (:func:`~zsad.spectrum.dense.transposed_product`): two forward passes, whose
    residuals (the activations) the operator keeps.
    """
    flat, x_flat = flatten_fn(fn, x)
    y, jvp = jax.linearize(flat, x_flat)
    vjp = transposed_product(flat, x_flat)
    d_in, d_out = x_flat.shape[0], y.shape[0]
    if d_in <= d_out:
        return (lambda v: vjp(jvp(v))), d_in, True
    return (lambda u: jvp(vjp(u))), d_out, False


def probe_side_product(fn: PerSampleFn, x: jax.Array) -> tuple[Callable[[jax.Array], jax.Array], int, int]:
    """One Jacobian product on the smaller side: ``v -> J v`` or ``u -> J^T u``.

    Returns ``(product, r, other_dim)``; ``||product(z)||^2 = z^T G z`` for the
    Gram operator ``G`` of :func:`gram_operator`.
    """
    flat, x_flat = flatten_fn(fn, x)
    d_in, d_out = io_dims(fn, jnp.shape(x), jnp.result_type(x))
    if d_in <= d_out:
        return (lambda v: jax.jvp(flat, (x_flat,), (v,))[1]), d_in, d_out
    return transposed_product(flat, x_flat), d_out, d_in


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


def rademacher_probes(key: jax.Array, lead: int | tuple[int, ...], n: int, dtype) -> jax.Array:
    """Rademacher (±1) vectors of shape ``[*lead, n]``, one random draw."""
    lead = (lead,) if isinstance(lead, int) else tuple(lead)
    return jax.random.rademacher(key, (*lead, n), dtype=dtype)


def stable_probes(key: jax.Array, num: int, n: int, dtype) -> jax.Array:
    """``[num, n]`` Rademacher (±1) vectors, probe ``p`` drawn under ``fold_in(key, p)``: with JAX's
    partitionable threefry (:func:`zsad.draws.available`), the first ``m`` entries of a probe of size
    ``n >= m`` are the probe of size ``m``, so a padded map sees the unpadded map's probes."""
    return jax.vmap(lambda p: jax.random.rademacher(jax.random.fold_in(key, p), (n,), dtype=dtype))(jnp.arange(num))


def slq(fn: PerSampleFn, x: jax.Array, probes: jax.Array, num_steps: int):
    """SLQ nodes/weights ``[P, m]`` and per-probe Hutchinson samples ``[P]``.

    ``probes`` are ``[P, r]`` Rademacher vectors on the smaller side.
    """
    matvec, r, _ = gram_operator(fn, x)
    steps = min(num_steps, r)
    ritz = jax.vmap(lambda z: lanczos(matvec, z, steps))(probes)
    # With q1 = z / sqrt(r) for Rademacher z, sum_k tau_k^2 theta_k = q1^T G q1 = z^T G z / r:
    # exactly Hutchinson's sample for Tr(G)/r (Gauss quadrature is exact for degree 1).
    hutch = jnp.sum(ritz.weights * ritz.nodes, axis=-1)
    return ritz, hutch


def check_counts(num_steps: int, num_probes: int) -> None:
    """Raises :class:`~zsad._errors.ZsadError` unless both counts are positive ints."""
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
    check_counts(num_steps, num_probes)
    dtype = jnp.result_type(x)
    probes = rademacher_probes(key, num_probes, min(io_dims(fn, jnp.shape(x), dtype)), dtype)
    ritz, _ = slq(fn, x, probes, num_steps)
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
    check_counts(num_steps, num_probes)
    dtype = jnp.result_type(x)
    probes = rademacher_probes(key, num_probes, min(io_dims(fn, jnp.shape(x), dtype)), dtype)
    ritz, _ = slq(fn, x, probes, num_steps)
    nodes = jnp.maximum(ritz.nodes, 0.0)
    return jnp.sqrt(jnp.max(nodes)), jnp.sqrt(jnp.min(nodes))


def hutchinson(fn: PerSampleFn, x: jax.Array, key: jax.Array, *, num_probes: int = 16,
               dims: tuple[jax.Array, jax.Array] | None = None) -> HutchinsonEstimate:
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
    mean of :func:`jacobian_singular_values` squared. The probes are
    :func:`stable_probes`: a map padded with inputs and outputs it ignores (``dims``)
    gets the same estimate as the map itself.

    Args:
      fn: per-sample map ``x -> y``.
      x: one input point (no batch axis).
      key: PRNG key for the probes.
      num_probes: number of probes ``P`` (static).
      dims: ``(d_in, d_out)`` (may be traced) where ``fn`` is a padded map whose Jacobian is the true
        one in its leading ``d_out x d_in`` block (flattened), zero elsewhere: the side and ``r`` are
        then the true map's. None: those of ``fn``'s shapes.

    Returns:
      ``HutchinsonEstimate(mean, stderr)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> est = hutchinson(lambda x: 2.0 * x, jnp.ones(4), jax.random.key(0), num_probes=3)
      >>> round(float(est.mean), 4), round(float(est.stderr), 4)
      (4.0, 0.0)
      >>> pad = lambda x: jnp.concatenate([2.0 * x[:3], jnp.zeros(2)])   # 2x on 3 of 5 inputs
      >>> round(float(hutchinson(pad, jnp.ones(5), jax.random.key(0), num_probes=3, dims=(3, 3)).mean), 4)
      4.0

    References:
      Hutchinson, Commun. Stat. Simul. Comput. 18(3):1059-1076, 1989.
    """
    check_counts(1, num_probes)
    dtype = jnp.result_type(x)
    if dims is None:
        product, r, _ = probe_side_product(fn, x)
        samples = jax.vmap(lambda z: jnp.sum(product(z) ** 2))(stable_probes(key, num_probes, r, dtype)) / r
        return HutchinsonEstimate(jnp.mean(samples), probe_stderr(samples))
    flat, x_flat = flatten_fn(fn, x)
    d_in, d_out = (jnp.asarray(d) for d in dims)
    size_in, size_out = io_dims(fn, jnp.shape(x), dtype)
    probes = stable_probes(key, num_probes, max(size_in, size_out), dtype)
    # One forward pass serves both sides (the padded map of an MLP space: dense layers, whose transposes
    # XLA:CPU runs well in any loop, unlike convolutions': see transposed_product).
    y, jvp = jax.linearize(flat, x_flat)
    vjp = jax.linear_transpose(jvp, x_flat)

    def sample(z):
        def forward():  # ||J z||^2, z on the true inputs
            v = jnp.where(jnp.arange(size_in) < d_in, z[:size_in], 0)
            return jnp.sum(jvp(v) ** 2)

        def backward():  # ||J^T z||^2, z on the true outputs
            u = jnp.where(jnp.arange(size_out) < d_out, z[:size_out], 0).astype(y.dtype)
            return jnp.sum(vjp(u)[0] ** 2)

        return jax.lax.cond(d_in <= d_out, forward, backward)

    samples = jax.vmap(sample)(probes) / jnp.minimum(d_in, d_out).astype(dtype)
    return HutchinsonEstimate(jnp.mean(samples), probe_stderr(samples))


def probe_stderr(samples: jax.Array) -> jax.Array:
    """Standard error of the mean of per-probe ``samples`` (0 for one probe)."""
    p = samples.shape[0]
    if p < 2:
        return jnp.zeros((), samples.dtype)
    return jnp.std(samples, ddof=1) / math.sqrt(p)
