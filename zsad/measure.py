"""The measurement engine: one jitted program per network structure and metric set.

:func:`make_measure` returns ``(per-seed inputs, x, labels, scalars) -> Measurements``
for a built network, used by ``zsad score``, ``zsad rank``, ``zsad normalize``
and the cluster workers. Per seed, one primal pass gives the outputs, the
batch-norm statistics (under ``stop_gradient``), the NLC's pushed tangents and
NASWOT's codes; the gradient proxies share one forward pass and its backward
passes. Seeds run one after another on the CPU (``lax.map``: unbatched weights,
no grouped convolutions) and vmapped on accelerators. Scalars are traced; the
program is cached under an explicit key (:func:`program_key`: the structure,
the :class:`MeasureConfig` and the float type), and :data:`TRACES` counts its
traces.

**One backward pass for the gradient proxies.** grad_norm and snip both need
``d loss / d weights`` of the same loss; jacob_cov needs ``d sum(outputs) / d
inputs`` at the same point. :func:`gradient_proxies` makes one forward pass
(``jax.vjp``) and pulls both cotangents back through it, instead of a forward
and a backward pass per proxy.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Any, Callable, Hashable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from zsad import naswot as naswot_, proxies
from zsad._batching import map_leading
from zsad._types import Network
from zsad.canonical import canonical_gradients
from zsad.layer_values import LayerValues
from zsad.nlc import NLCResult, derangement_tangents, nlc_of_tangents, push_tangents
from zsad.spectrum import hutchinson, jacobian_spectrum

# --------------------------------------------------------------------------- shared backward passes


class GradientScores(NamedTuple):
    """The gradient proxies of one initialization (None where not requested)."""

    grad_norm: proxies.ProxyScore | None
    snip: proxies.ProxyScore | None
    jacob_cov: proxies.ProxyScore | None


def gradient_proxies(forward: Callable, params: Any, x: jax.Array, labels: jax.Array, *, where,
                     names: tuple[str, ...], stacked=None) -> GradientScores:
    """grad_norm, snip and jacob_cov (those in ``names``) from one forward pass and its backward passes.

    Args:
      forward: ``forward(params, x) -> outputs [n, ...]`` (batch statistics frozen), per sample.
      params: the parameters grad_norm and snip differentiate.
      x: the batch; labels: integer labels of the cross-entropy (flattened outputs as logits).
      where: leaf selector of grad_norm and snip (:func:`zsad.proxies.is_weight`'s signature).
      names: the proxies to compute.
      stacked: grad_norm's selector of leaves that stack layers (:func:`zsad.proxies.grad_norm`).

    Returns:
      :class:`GradientScores`, each equal to its :mod:`zsad.proxies` function up to rounding.
    """
    want_params = "grad_norm" in names or "snip" in names
    want_x = "jacob_cov" in names
    if not (want_params or want_x):
        return GradientScores(None, None, None)
    fast = canonical_gradients(forward)
    if want_params and want_x:
        y, pull = jax.vjp(fast, params, x)
    elif want_params:
        y, pull_p = jax.vjp(lambda p: fast(p, x), params)
        pull = lambda ct: (pull_p(ct)[0], None)  # noqa: E731
    else:
        y, pull_x = jax.vjp(lambda z: fast(params, z), x)
        pull = lambda ct: (None, pull_x(ct)[0])  # noqa: E731
    grad_norm = snip = jacob_cov = None
    if want_params:
        logits = y.reshape(y.shape[0], -1)
        _, pull_loss = jax.vjp(lambda o: proxies.cross_entropy_loss(lambda _, z: z)(None, o, labels), logits)
        grads = pull(pull_loss(jnp.ones((), y.dtype))[0].reshape(y.shape))[0]
        if "grad_norm" in names:
            grad_norm = proxies.grad_norm_of_gradients(params, grads, where=where, stacked=stacked)
        if "snip" in names:
            snip = proxies.snip_of_gradients(params, grads, where=where)
    if want_x:
        jacob_cov = proxies.jacob_cov_of_gradients(pull(jnp.ones_like(y))[1])
    return GradientScores(grad_norm, snip, jacob_cov)


# --------------------------------------------------------------------------- the measurement program

#: Metrics measured inside the program (``params`` and ``flops`` are counted on the host).
METRICS = ("nlc", "sigma2", "naswot", "synflow", "grad_norm", "snip", "jacob_cov", "spectrum")

#: Samples and Rademacher probes per sample of the ``sigma2`` estimate (Hutchinson).
SIGMA2_SAMPLES = 8
SIGMA2_PROBES = 4


@dataclass(frozen=True)
class MeasureConfig:
    """What the program measures: part of its cache key (with the network's structure).

    Attributes:
      metrics: a subset of :data:`METRICS`.
      tangents: permutations per sample of the NLC.
      batched: seeds (and a chunk's architectures) ``vmap``-ed (accelerators) or one after another
        (``lax.map``, the CPU: unbatched weights, no grouped convolutions).
      code_layers: outputs whose signs give NASWOT's codes (None: the input).
      input_shape: one sample's shape (synflow's all-ones input).
      segment_range: top-level layers ``(start, stop)`` of sigma2's Jacobian; None: input to
        ``sigma2_output`` (None: the output).
      spectrum: :class:`zsad.score.SpectrumConfig` of the Jacobian spectrum (``zsad score``).
      code_mask: ``code_mask(scalars)``: per code layer, a bool mask of the units NASWOT counts
        (None: all); a padded network's (:func:`zsad.arch.padding.build_padded`) leaves out its padding.
      segment_dims: ``segment_dims(scalars) -> (d_in, d_out)``: the true sizes of sigma2's segment
        where the network is padded (:func:`zsad.spectrum.hutchinson`'s ``dims``); None: its shapes.
    """

    metrics: tuple[str, ...]
    tangents: int = 2
    batched: bool = False
    code_layers: tuple | None = None
    input_shape: tuple[int, ...] = ()
    segment_range: tuple[int, int] | None = None
    sigma2_output: str | None = None
    spectrum: Any = None
    code_mask: Callable | None = None
    segment_dims: Callable | None = None


class Measurements(NamedTuple):
    """Every metric of one architecture, leading axis the seeds; None where not requested.

    Attributes:
      finite: ``[S, L]`` whether each layer's output is finite.
      constant: ``[S]`` whether the output is constant across the batch.
      nlc: ``[S]`` NLC of the output; nlc_finite: ``[S]`` whether its parts are finite.
      layers: :class:`zsad.nlc.NLCResult` of every layer's output, leaves ``[S, L]`` in layer order.
      sigma2: ``[S]`` Hutchinson's mean squared singular value of the segment's Jacobian.
      spectrum: :class:`zsad.spectrum.JacobianSpectrum` (``zsad score``).
      naswot, synflow, grad_norm, snip, jacob_cov: :class:`zsad.proxies.ProxyScore` of ``[S]``.
    """

    finite: jax.Array
    constant: jax.Array
    nlc: jax.Array | None = None
    nlc_finite: jax.Array | None = None
    layers: NLCResult | None = None
    sigma2: jax.Array | None = None
    spectrum: Any = None
    naswot: proxies.ProxyScore | None = None
    synflow: proxies.ProxyScore | None = None
    grad_norm: proxies.ProxyScore | None = None
    snip: proxies.ProxyScore | None = None
    jacob_cov: proxies.ProxyScore | None = None


def is_kernel(path: tuple, leaf: Any) -> bool:
    """Kernels of dense and convolution layers (leaf named ``kernel``/``*_kernel``; of a PyTorch module, a
    ``*.weight`` of two or more dimensions), as Abdelfattah et al."""
    last = path[-1] if path else None
    name = getattr(last, "key", getattr(last, "name", None))
    if isinstance(name, str) and name.endswith(".weight"):  # a PyTorch module's: Linear/Conv weights have 2+ dims
        return len(getattr(leaf, "shape", ())) >= 2
    return isinstance(name, str) and name.endswith("kernel")


def stacked_in(collections: tuple[str, ...]):
    """The :func:`zsad.proxies.grad_norm` ``stacked`` selector of the leaves under the top-level parameter
    ``collections`` (:attr:`zsad._types.Network.stacked`); None when there are none."""
    if not collections:
        return None
    names = set(collections)
    return lambda path, leaf: bool(path) and getattr(path[0], "key", None) in names


def flat(y: jax.Array) -> jax.Array:
    return y.reshape(y.shape[0], -1)


def all_finite(y: jax.Array) -> jax.Array:
    """``all(isfinite(y))`` as ``isfinite(sum(y * 0))`` (NaN exactly when some element is not finite):
    a plain sum, which XLA:CPU compiles several times faster than a reduction of booleans."""
    return jnp.isfinite(jnp.sum(y * jnp.zeros((), y.dtype)))


def in_layer_order(values, names: Sequence[str]) -> jax.Array:
    """Per-layer scalars (a dict, or a :class:`~zsad.layer_values.LayerValues` whose repeated layers are
    stacked) as one array in the order ``names``: for a ``LayerValues``, one concatenation and one gather
    (:meth:`~zsad.layer_values.LayerValues.stacked`), so the program does not grow with the number of
    repeated layers."""
    if isinstance(values, LayerValues) and tuple(values.order) == tuple(names):
        return values.stacked()
    return jnp.stack([values[n] for n in names])


def is_constant(y: jax.Array) -> jax.Array:
    """Whether ``y`` is constant across the batch up to rounding (the NLC's criterion, zsad.nlc)."""
    f = flat(y)
    eps = jnp.finfo(f.dtype).eps
    var = jnp.sum(jnp.var(f, axis=0))
    scale = jnp.sum(jnp.mean(jnp.square(f), axis=0))
    return var <= jnp.square(1000 * eps) * scale


@functools.partial(jax.jit, static_argnums=2)
def seed_inputs(keys: jax.Array, x: jax.Array, tangents: int | None) -> dict:
    """What every architecture's seed ``i`` shares, computed once per batch: its key, the key of its
    initialization, and (``tangents``: a count) the NLC's derangement tangents of ``x``. One program
    (a first run compiles it once, not its pieces one by one)."""
    init_keys, tangent_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    out = {"key": keys, "init": init_keys}
    if tangents:
        out["tangents"] = jax.vmap(derangement_tangents, in_axes=(None, 0, None))(x, tangent_keys, tangents)
    return out


def _jacobian_fn(net: Network, variables, scalars, xs, start_stop, output):
    """``(h, fn)``: the points and the per-sample map of a segment's Jacobian (see :class:`MeasureConfig`)."""
    if net.segment is None or start_stop is None:
        pick = (lambda o: o[0]) if output is None else (lambda o: o[1][output])
        return xs, lambda u: pick(net.apply(variables, scalars, u[None]))[0]
    start, stop = start_stop
    h = xs if start == 0 else net.segment(variables, scalars, xs, 0, start)
    return h, lambda u: net.segment(variables, scalars, u[None], start, stop)[0]


def _sigma2(net, config, variables, scalars, x, key) -> jax.Array:
    """Hutchinson's estimate of the mean squared singular value of the segment's Jacobian, averaged
    over the first :data:`SIGMA2_SAMPLES` samples (:func:`zsad.spectrum.hutchinson`)."""
    h, fn = _jacobian_fn(net, variables, scalars, x[:SIGMA2_SAMPLES], config.segment_range, config.sigma2_output)
    keys = jax.random.split(key, h.shape[0])
    dims = None if config.segment_dims is None else config.segment_dims(scalars)
    return jnp.mean(jax.vmap(lambda hi, k: hutchinson(fn, hi, k, num_probes=SIGMA2_PROBES, dims=dims).mean)(h, keys))


def _spectrum(net, config, variables, scalars, x, key):
    spec = config.spectrum
    h, fn = _jacobian_fn(net, variables, scalars, x[:spec.samples], (spec.start, spec.stop), None)
    return jacobian_spectrum(fn, h, key, method=spec.method, num_steps=spec.num_steps, num_probes=spec.num_probes)


def _one_seed(seed, x, labels, scalars, net: Network, config: MeasureConfig) -> Measurements:
    """Every metric of one initialization: one primal pass (outputs, batch-norm statistics under
    ``stop_gradient``, NLC tangents, NASWOT codes), one forward pass for the gradient proxies."""
    metrics = config.metrics
    v0 = net.init(seed["init"], scalars) if "flats" not in seed else net.init_with(seed["flats"], seed["init"],
                                                                                      scalars)
    if net.apply_calibrating is not None:
        primal = lambda z: net.apply_calibrating(v0, scalars, z)  # noqa: E731
    else:
        v_cal = net.calibrate(v0, scalars, x)
        primal = lambda z: (net.apply(v_cal, scalars, z), v_cal)  # noqa: E731
    out: dict[str, Any] = {}
    if "nlc" in metrics:
        ((y, outs), v), ((pushed, pushed_outs), _) = push_tangents(primal, x, seed["tangents"])
        r = nlc_of_tangents(y, pushed)
        layers = nlc_of_tangents(outs, pushed_outs)
        # in the network's order (a dict through a JAX transformation comes back with sorted keys)
        out.update(nlc=r.nlc, nlc_finite=r.finite,
                   layers=NLCResult(*(in_layer_order(part, net.layer_names) for part in layers)))
    else:
        (y, outs), v = primal(x)
    finite = outs.map_groups(lambda o: (all_finite(o),))[0] if isinstance(outs, LayerValues) else {
        n: all_finite(outs[n]) for n in net.layer_names}
    out.update(finite=in_layer_order(finite, net.layer_names), constant=is_constant(y))
    if "sigma2" in metrics:
        out["sigma2"] = _sigma2(net, config, v, scalars, x, jax.random.fold_in(seed["key"], 3))
    if "spectrum" in metrics:
        out["spectrum"] = _spectrum(net, config, v, scalars, x, jax.random.fold_in(seed["key"], 2))
    if "naswot" in metrics and config.code_layers:
        codes = [(x if n is None else outs[n]) > 0 for n in config.code_layers]  # one block per layer
        s = naswot_.naswot(codes, None if config.code_mask is None else config.code_mask(scalars))
        out["naswot"] = proxies.ProxyScore(s.value, s.valid)
    with_params = lambda base: lambda p, z: net.apply({**base, "params": p}, scalars, z)[0]  # noqa: E731
    if "synflow" in metrics:  # batch norm bypassed: uncalibrated statistics (0, 1) are the identity
        out["synflow"] = proxies.synflow(canonical_gradients(with_params(v0)), v0["params"], config.input_shape,
                                         where=is_kernel)
    # naswot and jacob_cov each end in a LAPACK eigendecomposition, batched over the seeds; XLA:CPU
    # may run two such kernels at once and, on a pool of two threads, both wait for workers that
    # never come free. The barrier makes jacob_cov's input wait for naswot.
    x_grad = x if "naswot" not in out else jax.lax.optimization_barrier((x, out["naswot"].value))[0]
    grads = gradient_proxies(lambda p, z: flat(with_params(v)(p, z)), v["params"], x_grad, labels,
                             where=is_kernel, names=metrics, stacked=stacked_in(net.stacked))
    out.update({k: s for k, s in grads._asdict().items() if s is not None})
    return Measurements(**out)


def measure_fn(net: Network, config: MeasureConfig) -> Callable:
    """The unjitted program ``(per_seed, x, labels, scalars) -> Measurements`` (leading axis: seeds).

    ``per_seed``: :func:`seed_inputs`, plus ``flats`` (``{dist: [seeds, ...]}``, the network's
    :attr:`~zsad._types.Network.draws` made already) where the initialization draws are shared
    across architectures. Mapped over the seeds per ``config.batched`` (:mod:`zsad._batching`).
    For a caller that puts it inside a larger program (a chunk of architectures); else
    :func:`make_measure`.
    """
    def measure(per_seed, x, labels, scalars):
        return map_leading(lambda seed: _one_seed(seed, x, labels, scalars, net, config), per_seed,
                           batched=config.batched)

    return measure


_PROGRAMS: "collections.OrderedDict[Any, Callable]" = collections.OrderedDict()
_MAX_PROGRAMS = 16
#: Traces of each cached program (key: :func:`program_key`): 1 after any number of calls with new scalars.
TRACES: collections.Counter = collections.Counter()


def program_key(structure: Hashable, config: MeasureConfig) -> tuple:
    """The cache key of a program: the network's structure (whatever identifies its functions up to
    traced scalars), what is measured, and the float type."""
    return structure, config, bool(jax.config.jax_enable_x64)


def make_measure(net: Network, config: MeasureConfig, *, structure: Hashable | None = None) -> Callable:
    """The one jitted measurement program of ``net``: ``(per_seed, x, labels, scalars) -> Measurements``.

    Args:
      net: the built network.
      config: what to measure.
      structure: identifies ``net``'s structure: networks built from the same structure (any
        scalars) share the program, traced and compiled once per input shape. None: not shared.

    Returns:
      A jitted function; scalars are traced (new scalars never recompile).
    """
    key = None if structure is None else program_key(structure, config)
    if key is not None and key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    measure = measure_fn(net, config)

    def _measure(per_seed, x, labels, scalars):  # named in JAX's compile events: jit(_measure)
        TRACES[key] += 1  # at trace time only
        return measure(per_seed, x, labels, scalars)

    jitted = jax.jit(_measure)
    if key is not None:
        _PROGRAMS[key] = jitted
        while len(_PROGRAMS) > _MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    return jitted
