"""Baseline zero-cost proxies: parameters, FLOPs, synflow, grad_norm, snip, jacob_cov (NASWOT: :mod:`zsad.naswot`).

Each proxy is a pure function of plain callables and pytrees (no flax, no I/O),
implemented from its paper's definition. All but :func:`param_count` and
:func:`flops` are jittable; the caller puts the jit boundary around them, e.g.
``jax.jit(lambda p, x: snip(loss_fn, p, x, y))``.

Conventions shared by every proxy:

* ``apply_fn(params, x) -> y`` is a batched forward pass that acts on each
  sample independently. A :class:`zsad._types.Network` is adapted with
  ``lambda p, x: net.apply(p, scalars, x)[0]``. Batch normalization follows the
  project rule: statistics computed once on the scoring batch (``calibrate``)
  and then frozen, so gradients do not flow through batch statistics (the
  reference implementations run batch norm in training mode; forward values
  agree, gradients through the statistics are left out). Synflow is the
  exception: its paper removes batch norm, so its caller passes an
  ``apply_fn`` with batch norm bypassed (an identity).
* ``loss_fn(params, x, y) -> scalar``; :func:`cross_entropy_loss` builds the
  mean cross-entropy of a classifier producing logits.
* Metrics that span orders of magnitude (synflow, grad_norm, snip) are returned
  as natural logarithms; NASWOT is a log-determinant and jacob_cov a sum of
  logarithms by definition. Monotone transforms leave rankings unchanged.
* Every jittable proxy returns a :class:`ProxyScore` ``(value, valid)`` whose
  ``value`` is always finite. When the mathematical value is undefined or
  :math:`-\\infty` (a singular NASWOT kernel, a zero gradient, NaN from the
  network), ``valid`` is False and ``value`` is :data:`FLOOR`, below every
  attainable score, so a descending sort ranks it last. When a sum overflows,
  ``valid`` is False and ``value`` is the logarithm of the largest finite
  number of the dtype that overflowed (a lower bound of the true value).
  Callers report an invalid score as ``null`` with its reason.
* Parameter-wise proxies (synflow, grad_norm, snip) sum over the leaves
  selected by ``where(path, leaf) -> bool``; the default :func:`is_weight`
  keeps leaves of two or more dimensions (dense and convolution kernels), the
  layers that Abdelfattah et al. score (``nn.Linear`` and ``nn.Conv2d``
  weights; no biases, no normalization parameters). ``where=None`` keeps every
  leaf.

:data:`DIRECTION` gives, per proxy, whether a higher or a lower value is taken
to mean a better architecture.

References:
  Mellor, Turner, Storkey, Crowley. Neural Architecture Search without
  Training. ICML 2021 (arXiv:2006.04647; v1 introduced jacob_cov).
  Tanaka, Kunin, Yamins, Ganguli. Pruning neural networks without any data by
  iteratively conserving synaptic flow. NeurIPS 2020.
  Lee, Ajanthan, Torr. SNIP: Single-shot network pruning based on connection
  sensitivity. ICLR 2019.
  Abdelfattah, Mehrotra, Dudziak, Lane. Zero-Cost Proxies for Lightweight NAS.
  ICLR 2021.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zsad._errors import DataError, NumericsError
from zsad.ranking import PROXY_DIRECTION as DIRECTION  # noqa: F401  (whether higher or lower is better)

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
LossFn = Callable[[PyTree, jax.Array, jax.Array], jax.Array]
Where = Callable[[tuple, Any], bool]

#: Value of an invalid score (undefined or :math:`-\infty`): finite and below
#: every attainable value, so that a descending sort ranks it last.
FLOOR = -(2.0**100)  # about -1.27e30, exact in float32 and float64

#: Default regularizer of jacob_cov (Abdelfattah et al.'s ``k``).
JACOB_COV_K = 1e-5



class ProxyScore(NamedTuple):
    """A proxy value, always finite, and whether it is the exact value.

    Attributes:
      value: scalar float; the proxy (in log scale where documented), or
        :data:`FLOOR` when undefined, or a clamp at the largest representable
        logarithm when a sum overflowed.
      valid: scalar bool; False when ``value`` is :data:`FLOOR` or a clamp.
    """

    value: jax.Array
    valid: jax.Array


# --------------------------------------------------------------------------- helpers


def is_weight(path: tuple, leaf: Any) -> bool:
    """Default leaf selector: kernels of dense and convolution layers (``ndim >= 2``)."""
    del path
    return len(np.shape(leaf)) >= 2


def _default_float():
    """The canonical float dtype outside any local float64 context."""
    return jnp.result_type(float)


def _pairs(params: PyTree, grads: PyTree, where: Where | None, *, with_path: bool = False) -> list[tuple]:
    """(parameter, gradient) leaf pairs kept by ``where`` (``with_path``: (path, parameter, gradient))."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    grad_leaves = jax.tree.leaves(grads)
    pairs = [(path, p, g) if with_path else (p, g) for (path, p), g in zip(leaves, grad_leaves)
             if where is None or where(path, p)]
    if not pairs:
        raise DataError("params: expected at least one leaf selected by `where`, got none")
    return pairs


def _log_sum(log_terms: jax.Array) -> jax.Array:
    """``log(sum(exp(log_terms)))`` over a 1-D array; exact at -inf, +inf and NaN."""
    m = jnp.max(log_terms)
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    return jnp.log(jnp.sum(jnp.exp(log_terms - shift))) + shift


def _log_sum_of(parts: Sequence[jax.Array]) -> jax.Array:
    """``log`` of the sum of every element of the nonnegative arrays ``parts``; exact at 0 (-inf), +inf
    and NaN. Overflow-safe as :func:`_log_sum` of their logarithms, and several times faster on many
    elements: the sum is taken scaled by the largest element (one division per element, where the
    logarithms cost a logarithm and an exponential)."""
    parts = [p for p in parts if p.size]
    m = jnp.max(jnp.stack([jnp.max(p) for p in parts]))
    scale = jax.lax.stop_gradient(jnp.where((m > 0) & jnp.isfinite(m), m, 1.0))
    total = sum(jnp.sum(p / scale) for p in parts)
    return jnp.log(total) + jnp.log(scale)


def _finite(log_total: jax.Array, ceiling: float) -> ProxyScore:
    """Maps a log-sum to a finite :class:`ProxyScore` (see the module docstring)."""
    value = jnp.where(
        jnp.isnan(log_total),
        FLOOR,
        jnp.where(log_total == jnp.inf, ceiling, jnp.where(log_total == -jnp.inf, FLOOR, log_total)),
    )
    return ProxyScore(value, jnp.isfinite(log_total))


def _log_ceiling(dtype) -> float:
    return math.log(float(jnp.finfo(dtype).max))


def _check_batch(x: jax.Array, y: jax.Array) -> None:
    if jnp.ndim(x) < 1 or jnp.ndim(y) < 1 or jnp.shape(x)[0] != jnp.shape(y)[0]:
        raise DataError(
            f"y: expected the batch size of x {tuple(jnp.shape(x))[:1]}, got shape {tuple(jnp.shape(y))}"
        )


# --------------------------------------------------------------------------- params, flops


def param_count(params: PyTree) -> int:
    """Number of scalar parameters in a pytree.

    Counts every leaf (arrays or ``jax.ShapeDtypeStruct``). Pass the trainable
    parameters only (e.g. ``variables['params']``): batch-norm running
    statistics are buffers, not parameters, as in PyTorch's count.

    Args:
      params: a pytree of arrays.

    Returns:
      The total number of elements, a Python int.

    Examples:
      >>> param_count({'dense': {'kernel': jnp.zeros((3, 4)), 'bias': jnp.zeros(4)}})
      16
    """
    leaves = jax.tree.leaves(params)
    shapes = [leaf.shape if hasattr(leaf, "shape") else np.shape(leaf) for leaf in leaves]
    return int(sum(math.prod(shape) for shape in shapes))


def flops(apply_fn: ApplyFn, params: PyTree, x: jax.Array) -> float:
    """Floating-point operations of one forward pass of one sample.

    Read from XLA's cost analysis of the compiled forward pass
    (``jax.jit(apply_fn).lower(params, x[:1]).compile().cost_analysis()``), so
    it counts what XLA executes after its own simplifications. Convention: a
    multiply-add counts as 2 flops (a dense layer ``d_in -> d_out`` costs
    ``2 d_in d_out`` plus ``d_out`` for its bias add); elementwise operations
    (activations, normalization, pooling sums) count one per element and
    operation. Benchmarks that count multiply-accumulates (NAS-Bench-201's
    "FLOPs") report roughly half of this figure.

    Host-side: compiles a program, hence not jittable. XLA counts the body of a
    loop (``lax.scan``, ``lax.fori_loop``) once, whatever its trip count: pass
    the unrolled network (``zsad.build(arch, scan=False)``) to count every repeat.

    Args:
      apply_fn: ``apply_fn(params, x) -> y``, batched.
      params: parameters (arrays or ``jax.ShapeDtypeStruct``).
      x: a batch of inputs ``(n, *input_shape)``; only its shape and dtype
        are used (one sample).

    Returns:
      The flop count as a Python float.

    Raises:
      NumericsError: the backend reports no flop count.

    Examples:
      >>> dense = lambda p, x: x @ p['kernel']
      >>> flops(dense, {'kernel': jnp.ones((8, 4))}, jnp.ones((5, 8)))
      64.0
    """
    shape = tuple(jnp.shape(x))
    if len(shape) < 1 or shape[0] < 1:
        raise DataError(f"x: expected a batch of shape (n >= 1, ...), got shape {shape}")
    one = jax.ShapeDtypeStruct((1, *shape[1:]), jnp.result_type(x))
    analysis = jax.jit(apply_fn).lower(params, one).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        raise NumericsError("flops: the XLA backend reports no cost analysis for this program")
    return float(analysis["flops"])


# --------------------------------------------------------------------------- synflow


def synflow(
    apply_fn: ApplyFn,
    params: PyTree,
    input_shape: Sequence[int],
    *,
    where: Where | None = is_weight,
) -> ProxyScore:
    """Synflow of Tanaka et al. (2020), summed over parameters, in log scale.

    Every parameter is replaced by its absolute value, the input is one sample
    of all ones, ``R`` is the sum of the outputs and

    .. math::
        S = \\sum_{\\theta} \\bigl\\lvert \\theta \\odot
            \\frac{\\partial R}{\\partial \\theta} \\bigr\\rvert, \\qquad
        \\text{returned value} = \\log S

    summed over the leaves kept by ``where`` (default: dense/convolution
    kernels, as Abdelfattah et al.; every parameter, biases included, is made
    positive). For a bias-free network with positive weights and ReLU or
    identity activations, ``R`` is a homogeneous polynomial of degree ``L`` (the
    number of weight layers) in the weights and ``S = L R`` (Euler).

    The forward and backward passes and the sum run in float64 inside a local
    ``jax.enable_x64`` context, whatever the global setting; ``apply_fn`` must
    compute in its inputs' dtype (flax's default ``dtype=None`` does). The sum
    is taken scaled by its largest term and its logarithm returned, so the
    value is finite whenever the float64 passes are; an overflow of the
    float64 pass is reported as ``valid=False`` with the value clamped at
    ``log(float64 max)``. Batch norm is bypassed: the caller passes an
    ``apply_fn`` without it (Abdelfattah et al. remove it; at initialization
    eval-mode batch norm, with statistics (0, 1), is the identity up to its
    epsilon). Higher is better.

    Args:
      apply_fn: ``apply_fn(params, x) -> y``, batched, batch norm bypassed.
      params: parameters (signs are discarded).
      input_shape: shape of one sample, without the batch axis.
      where: leaf selector ``(path, leaf) -> bool``; None keeps every leaf.

    Returns:
      :class:`ProxyScore` with ``value = log S`` in the default float dtype.

    References:
      Tanaka et al., NeurIPS 2020, Algorithm 1; Abdelfattah et al., ICLR 2021.

    Examples:
      >>> net = lambda p, x: x @ p['w1'] @ p['w2']
      >>> p = {'w1': jnp.full((2, 3), 1.0), 'w2': jnp.full((3, 1), 2.0)}
      >>> round(float(synflow(net, p, (2,)).value), 4)   # R = 12, S = 2 R
      3.1781
    """
    out = _default_float()
    shape = (1, *(int(d) for d in input_shape))
    with jax.enable_x64(True):
        positive = jax.tree.map(lambda a: jnp.abs(jnp.asarray(a, jnp.float64)), params)
        ones = jnp.ones(shape, jnp.float64)
        grads = jax.grad(lambda p: jnp.sum(apply_fn(p, ones)))(positive)
        pairs = _pairs(positive, grads, where)
        score = _finite(_log_sum_of([jnp.abs(t * g) for t, g in pairs]), _log_ceiling(jnp.float64))
        return ProxyScore(score.value.astype(out), score.valid)


# --------------------------------------------------------------------------- gradient proxies


def cross_entropy_loss(apply_fn: ApplyFn) -> LossFn:
    """Mean cross-entropy of a classifier producing logits.

    .. math::
        L = -\\frac{1}{n} \\sum_i \\sum_k y_{ik} \\log \\operatorname{softmax}(f(x_i))_k

    Args:
      apply_fn: ``apply_fn(params, x) -> logits`` of shape ``(n, classes)``.

    Returns:
      ``loss_fn(params, x, y) -> scalar``; ``y`` holds integer labels ``(n,)``
      or target probabilities ``(n, classes)`` (e.g. one-hot).

    Examples:
      >>> loss = cross_entropy_loss(lambda p, x: x @ p)
      >>> round(float(loss(jnp.zeros((2, 4)), jnp.ones((3, 2)), jnp.array([0, 1, 3]))), 4)
      1.3863
    """

    def loss_fn(params: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = apply_fn(params, x)
        logp = jax.nn.log_softmax(logits, axis=-1)
        if jnp.ndim(y) == jnp.ndim(logits) - 1 and jnp.issubdtype(jnp.result_type(y), jnp.integer):
            nll = -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
        elif jnp.shape(y) == jnp.shape(logits):
            nll = -jnp.sum(y * logp, axis=-1)
        else:
            raise DataError(
                f"y: expected integer labels {tuple(jnp.shape(logits))[:-1]} or targets "
                f"{tuple(jnp.shape(logits))}, got shape {tuple(jnp.shape(y))} ({jnp.result_type(y)})"
            )
        return jnp.mean(nll)

    return loss_fn


def grad_norm(
    loss_fn: LossFn,
    params: PyTree,
    x: jax.Array,
    y: jax.Array,
    *,
    where: Where | None = is_weight,
    stacked: Where | None = None,
) -> ProxyScore:
    """grad_norm of Abdelfattah et al. (2021), in log scale.

    The paper describes "the Euclidean norm of the gradients"; its reference
    implementation (``measures/grad_norm.py``) takes the norm of each layer's
    weight gradient and sums over layers. That is what is computed here, with
    each selected leaf as a layer:

    .. math::
        G = \\sum_{l} \\Bigl\\lVert \\frac{\\partial L}{\\partial W_l} \\Bigr\\rVert_F,
        \\qquad \\text{returned value} = \\log G

    with ``L`` the minibatch loss (mean cross-entropy in the paper). Norms and
    sums are taken in float64. Higher is better.

    Args:
      loss_fn: ``loss_fn(params, x, y) -> scalar``.
      params: parameters.
      x: inputs ``(n, ...)``.
      y: targets ``(n, ...)``.
      where: leaf selector ``(path, leaf) -> bool``; None keeps every leaf.
      stacked: ``(path, leaf) -> bool``: the leaf holds layers stacked on its leading axis (the
        parameters of a scanned stage), one norm per slice; None: none is.

    Returns:
      :class:`ProxyScore` with ``value = log G``.

    Example:
      Two layers stacked in one leaf count as two layers, as when they are two leaves:

      >>> w, g = {"a": jnp.ones((2, 3))}, {"a": jnp.array([[3., 0., 4.], [0., 0., 1.]])}
      >>> float(jnp.exp(grad_norm_of_gradients(w, g, where=None, stacked=lambda path, leaf: True).value))
      6.0
      >>> float(jnp.exp(grad_norm_of_gradients(w, g, where=None).value))  # one layer: sqrt(26)
      5.0990...

    References:
      Abdelfattah et al., Zero-Cost Proxies for Lightweight NAS, ICLR 2021, §3.
    """
    _check_batch(x, y)
    return grad_norm_of_gradients(params, jax.grad(loss_fn)(params, x, y), where=where, stacked=stacked)


def grad_norm_of_gradients(params: PyTree, grads: PyTree, *, where: Where | None = is_weight,
                           stacked: Where | None = None) -> ProxyScore:
    """:func:`grad_norm` from the loss gradients ``grads`` (same structure as ``params``) already computed,
    e.g. shared with :func:`snip_of_gradients` (one backward pass for both); ``stacked`` as there."""
    def log_norms(path, p, g):
        axes = tuple(range(1, g.ndim)) if stacked is not None and g.ndim > 1 and stacked(path, p) else None
        return jnp.atleast_1d(0.5 * jnp.log(jnp.sum(jnp.square(g), axis=axes)))

    return _log_gradient_score(params, grads, where, log_norms, logs=True)


def snip(
    loss_fn: LossFn,
    params: PyTree,
    x: jax.Array,
    y: jax.Array,
    *,
    where: Where | None = is_weight,
) -> ProxyScore:
    """SNIP connection sensitivity (Lee et al. 2019) summed as in Abdelfattah et al., log scale.

    .. math::
        S = \\sum_{\\theta} \\Bigl\\lvert \\theta \\odot
            \\frac{\\partial L}{\\partial \\theta} \\Bigr\\rvert, \\qquad
        \\text{returned value} = \\log S

    (the gradient with respect to a multiplicative mask at 1, times the
    weight), summed over the leaves kept by ``where`` in float64. Higher is
    better.

    Args:
      loss_fn: ``loss_fn(params, x, y) -> scalar``.
      params: parameters.
      x: inputs ``(n, ...)``.
      y: targets ``(n, ...)``.
      where: leaf selector ``(path, leaf) -> bool``; None keeps every leaf.

    Returns:
      :class:`ProxyScore` with ``value = log S``.

    References:
      Lee et al., SNIP, ICLR 2019, eq. (6); Abdelfattah et al., ICLR 2021, §3.
    """
    _check_batch(x, y)
    return snip_of_gradients(params, jax.grad(loss_fn)(params, x, y), where=where)


def snip_of_gradients(params: PyTree, grads: PyTree, *, where: Where | None = is_weight) -> ProxyScore:
    """:func:`snip` from the loss gradients ``grads`` (same structure as ``params``) already computed."""
    return _log_gradient_score(params, grads, where, lambda path, p, g: jnp.abs(p * g), logs=False)


def _log_gradient_score(params, grads, where, terms, *, logs: bool) -> ProxyScore:
    """The logarithm of the sum of ``terms(path, param, grad)`` (float64 arrays) over the kept leaves, in
    float64: ``logs``: the terms are logarithms (``log sum exp``, :func:`_log_sum`); else nonnegative
    values (:func:`_log_sum_of`)."""
    pairs = _pairs(params, grads, where, with_path=True)
    out = _default_float()
    ceiling = _log_ceiling(jnp.result_type(*[g for _, _, g in pairs]))
    with jax.enable_x64(True):
        parts = [terms(path, jnp.asarray(p, jnp.float64), jnp.asarray(g, jnp.float64)) for path, p, g in pairs]
        score = _finite(_log_sum(jnp.concatenate(parts)) if logs else _log_sum_of(parts), ceiling)
        return ProxyScore(score.value.astype(out), score.valid)


# --------------------------------------------------------------------------- jacob_cov


def jacob_cov(apply_fn: ApplyFn, params: PyTree, x: jax.Array, *, k: float = JACOB_COV_K) -> ProxyScore:
    """jacob_cov of Mellor et al. (arXiv v1) as implemented by Abdelfattah et al.

    For each sample, ``j_i`` is the input gradient of the sum of its outputs,
    flattened; ``C = corrcoef(j_1, ..., j_n)`` is the ``n x n`` correlation
    matrix of these rows, with eigenvalues ``lambda_i``, and

    .. math::
        s = -\\sum_{i=1}^{n} \\Bigl[ \\log(\\lambda_i + k) + \\frac{1}{\\lambda_i + k} \\Bigr],
        \\qquad k = 10^{-5}.

    Each term is minimal at ``lambda + k = 1``: ``s`` is largest (about
    ``-n``) when the Jacobians are uncorrelated and falls to about
    ``-(n - 1)/k`` when they are all alike. Higher is better. Correlations and
    eigenvalues are computed in float64; eigenvalues, nonnegative in exact
    arithmetic, are clipped at 0. The value is already a sum of logarithms and
    is returned as is. A sample whose Jacobian is constant across input
    coordinates (zero variance, e.g. an output independent of the input) has
    no correlation: the score is then invalid (``FLOOR``), where the reference
    code would produce NaN.

    Args:
      apply_fn: ``apply_fn(params, x) -> y``, batched and per-sample.
      params: parameters.
      x: inputs ``(n, ...)``, floating point.
      k: regularizer of the eigenvalues.

    Returns:
      :class:`ProxyScore` with the score ``s``.

    References:
      Mellor et al., Neural Architecture Search without Training, arXiv:2006.04647v1,
      eq. (2); Abdelfattah et al., ICLR 2021 (``measures/jacob_cov.py``).
    """
    if jnp.ndim(x) < 2:
        raise DataError(f"x: expected a batch of shape (n, ...), got shape {tuple(jnp.shape(x))}")
    return jacob_cov_of_gradients(jax.grad(lambda xb: jnp.sum(apply_fn(params, xb)))(x), k=k)


def jacob_cov_of_gradients(jac: jax.Array, *, k: float = JACOB_COV_K) -> ProxyScore:
    """:func:`jacob_cov` from the per-sample input gradients ``jac`` (``(n, ...)``, the gradient of the
    sum of the outputs with respect to the batch) already computed."""
    n = jnp.shape(jac)[0]
    out = _default_float()
    with jax.enable_x64(True):
        rows = jnp.reshape(jac, (n, -1)).astype(jnp.float64)
        centred = rows - jnp.mean(rows, axis=1, keepdims=True)
        norms = jnp.sqrt(jnp.sum(jnp.square(centred), axis=1))
        ok = jnp.all(jnp.isfinite(rows)) & jnp.all(norms > 0)
        unit = centred / jnp.where(norms > 0, norms, 1.0)[:, None]
        corr = jnp.where(ok, jnp.matmul(unit, unit.T, precision=jax.lax.Precision.HIGHEST), jnp.eye(n))
        lam = jnp.clip(jnp.linalg.eigvalsh(corr), 0.0) + k
        score = -jnp.sum(jnp.log(lam) + 1.0 / lam)
        value = jnp.where(ok, score, FLOOR)
        return ProxyScore(value.astype(out), ok)
