r"""Per-sample summaries of the Jacobian spectrum over a batch, by either path.

:func:`jacobian_spectrum` picks the exact path (:mod:`zsad.spectrum.dense`) or
the matrix-free one (:mod:`zsad.spectrum.matrix_free`) and reduces each
sample's spectrum to :class:`JacobianSpectrum`; :func:`make_spectrum_fn`
compiles it for a parameterized map.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from zsad._errors import DataError, ZsadError
from zsad.spectrum.dense import PerSampleFn, io_dims, jacobian_singular_values
from zsad.spectrum.matrix_free import SpectralDensity, check_counts, probe_stderr, rademacher_probes, slq

#: ``method='auto'`` uses the exact path when ``d_in * d_out`` is at most this
#: (2**20 entries, i.e. a 4 MiB float32 Jacobian per sample, e.g. 1024 × 1024,
#: whose SVD takes well under a second on a CPU); otherwise the matrix-free path.
EXACT_MAX_ENTRIES = 2**20

#: Singular values within a factor 2 of 1 count as "isometric":
#: ``0.5 <= sigma <= 2``, i.e. ``0.25 <= sigma**2 <= 4``.
ISOMETRY_BAND = (0.5, 2.0)

#: The methods of :func:`jacobian_spectrum`.
METHODS = ("auto", "exact", "lanczos")


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
    ritz, hutch = slq(fn, x, probes, num_steps)
    nodes = jnp.ravel(ritz.nodes)
    weights = jnp.ravel(ritz.weights) / num_probes
    return _summarize(nodes, weights, jnp.mean(hutch), probe_stderr(hutch))


def resolve_method(method: str, d_in: int, d_out: int) -> str:
    """The path ``method`` takes for a ``d_out x d_in`` Jacobian: ``'exact'`` or ``'lanczos'``.

    Raises:
      ZsadError: ``method`` is not one of :data:`METHODS`.

    Examples:
      >>> resolve_method("auto", 64, 64), resolve_method("auto", 2048, 2048)
      ('exact', 'lanczos')
    """
    if method not in METHODS:
        raise ZsadError(f"method: expected one of {', '.join(METHODS)}; got {method!r}")
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
    check_counts(num_steps, num_probes)
    xs = jnp.asarray(xs)
    if xs.ndim < 1 or xs.shape[0] < 1:
        raise DataError(f"xs: expected a batch [n, *input_shape] with n >= 1, got shape {xs.shape}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise DataError(f"xs: expected a floating-point array, got dtype {xs.dtype}")
    d_in, d_out = io_dims(fn, xs.shape[1:], xs.dtype)
    resolved = resolve_method(method, d_in, d_out)
    if resolved == "exact":
        args = xs

        def one(x):
            return _exact_one(fn, x)

    else:
        # All probes in one draw: [n, P, r] with r = min(d_in, d_out).
        args = (xs, rademacher_probes(key, (xs.shape[0], num_probes), min(d_in, d_out), xs.dtype))

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
    check_counts(num_steps, num_probes)
    resolve_method(method, 1, 1)

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
