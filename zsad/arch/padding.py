"""Many small MLPs in one program: widths padded to a few buckets, depth as a masked loop.

An MLP here is ``input [d] -> (dense w_i, activation f_i) x D -> dense o`` (blocks unrolled). MLPs of one
:func:`padded_signature` share one :class:`~zsad._types.Network` whose functions, hence compiled
programs, are the same: every hidden width is padded to ``W = bucket(max w_i)`` and the depth to
``bucket(D)``; the padding's units are masked to zero after each activation and the padded layers pass
their input through unchanged (computing nothing: a ``lax.cond`` per layer of the loop). What differs
between the MLPs -- widths, depth, activation functions among the signature's, every scalar -- is data
(the network's ``scalars``).

Padding bucket rule: the next power of two (at least :data:`MIN_WIDTH`), so a handful of programs
cover any range of widths; its worst case (a width of ``2^k + 1``) nearly doubles the width, about 4x
the hidden layers' matmul FLOPs.

The metrics see through the padding: one parameter leaf per dense layer (the per-layer sums of the
gradient proxies; a padded layer's zero gradient adds ``log 0 = -inf``, nothing), NASWOT's codes with
a mask of the MLP's own units (:attr:`Padded.code_mask`), and the Jacobian segment of ``zsad score``'s
default (first dense output to the last hidden output) with its true sizes (:attr:`Padded.segment_dims`,
for :func:`zsad.spectrum.hutchinson`).

The weights are those that :func:`zsad.arch.build.build`'s ``init`` draws for the same key, bit for bit:
each element is drawn at its place in the unpadded network's per-distribution draw
(:func:`zsad.draws.at`; ``init_with``: gathered from the draws shared by every MLP of the
signature, :attr:`~zsad._types.Network.draws`), then scaled as ``init`` scales it; the padding is
zero. So the outputs and every per-layer metric equal those of the unpadded network up to float
rounding (sums over padded zeros).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zsad import draws
from zsad._types import Network
from zsad.activations import ACTIVATION_PARAMS, get_activation, shaped
from zsad.arch.spec import Activation, Architecture, Dense, expand, named_layers
from zsad.layer_values import LayerValues

MIN_WIDTH = 8  # the smallest width bucket
_NORM = {"normal": 1.0, "truncated_normal": 0.87962566103423978, "uniform": 1.0 / np.sqrt(3.0)}
_FOLD = {dist: j for j, dist in enumerate(("normal", "truncated_normal", "uniform"))}  # as init folds them


def bucket(n: int, minimum: int = 1) -> int:
    """The smallest power of two ``>= max(n, minimum)``: widths and depths are padded to these.

    Example:
      >>> [bucket(n) for n in (1, 3, 8, 100)], bucket(5, minimum=8)
      ([1, 4, 8, 128], 8)
    """
    return 1 << max(0, int(np.ceil(np.log2(max(n, minimum)))))


class MLPShape(NamedTuple):
    """An MLP's shape: hidden ``widths``, their activation ``fns``, ``out`` features, the weights' ``dist``
    and whether the dense layers have biases."""

    widths: tuple[int, ...]
    fns: tuple[str, ...]
    out: int
    dist: str
    use_bias: bool


def mlp_shape(arch: Architecture) -> MLPShape | None:
    """``arch``'s :class:`MLPShape`, or None where it is not such an MLP (a module, a 1-D input, only dense
    layers each followed by one activation of a single function, a last dense layer, one distribution
    among :data:`zsad.draws.DISTRIBUTIONS` and one bias setting for all)."""
    if arch.module is not None or len(arch.input.shape) != 1 or not draws.available():
        return None
    layers = list(expand(arch.layers))
    if len(layers) < 3 or len(layers) % 2 == 0:
        return None
    dense, acts = layers[0::2], layers[1::2]
    if not all(isinstance(d, Dense) for d in dense) or not all(isinstance(a, Activation) and not a.choices
                                                                for a in acts):
        return None
    dists, biases = {d.init.dist for d in dense}, {d.use_bias for d in dense}
    if len(dists) != 1 or len(biases) != 1 or not dists <= set(draws.DISTRIBUTIONS):
        return None
    return MLPShape(tuple(d.features for d in dense[:-1]), tuple(a.fn for a in acts), dense[-1].features,
                    dists.pop(), biases.pop())


def padded_signature(arch: Architecture) -> tuple | None:
    """The key of the padded program ``arch`` runs in (None: it runs in its own, unpadded): MLPs of equal
    keys built with the same candidate activations (:func:`build_padded`'s ``fns``, e.g. those the group
    holds) share one compiled program. The activation functions are not part of it: each layer chooses
    its function among the candidates by a traced index."""
    shape = mlp_shape(arch)
    if shape is None:
        return None
    return ("padded_mlp", tuple(arch.input.shape), arch.input.dtype, bucket(max(shape.widths), MIN_WIDTH),
            bucket(len(shape.widths)), shape.out, shape.dist, shape.use_bias)


class Padded(NamedTuple):
    """A padded MLP.

    Attributes:
      network: shared functions, this MLP's ``scalars``; ``segment`` runs any of its layers.
      layers: the MLP's own layer names mapped to the names of the padded network's outputs
        (:attr:`Network.layer_names`); a padded hidden layer (beyond the MLP's depth) is none of them
        and passes its input on.
      code_layers: the outputs whose signs are NASWOT's codes (every hidden dense output).
      code_mask: ``code_mask(scalars)``: per code layer, a ``[width]`` bool mask of the MLP's own units
        (False on the padding's units and on the padded layers).
      segment_range: the padded layers of the default Jacobian segment (``zsad score``'s: the first
        dense output to the last hidden output), whatever the MLP's depth.
      segment_dims: ``segment_dims(scalars) -> (d_in, d_out)``, the segment's true sizes (traced): its
        Jacobian is the true one in the leading ``d_out x d_in`` block, zero elsewhere.
    """

    network: Network
    layers: dict[str, str]
    code_layers: tuple[str, ...]
    code_mask: Callable
    segment_range: tuple[int, int]
    segment_dims: Callable


def build_padded(arch: Architecture, fns: Sequence[str] | None = None) -> Padded:
    """The padded network of ``arch`` (an MLP: :func:`padded_signature` is not None) whose activation
    layers choose among ``fns`` and ``arch``'s own functions (sorted; the candidates are part of the
    compiled program, as the signature is)."""
    signature = padded_signature(arch)
    if signature is None:
        raise ValueError(f"{arch.name}: not an MLP that can be padded")
    _, input_shape, _, width, depth, out, dist, use_bias = signature
    own_fns = set(mlp_shape(arch).fns)
    fns = tuple(sorted(set(fns or ()) | own_fns))
    f = _functions(input_shape[0], width, depth, out, dist, use_bias, fns, jnp.result_type(float).name)
    scalars = _layout(arch, mlp_shape(arch), depth, fns)
    own = [name for name, _ in named_layers(arch.layers)]
    hidden = len(own) // 2
    layers = {name: f.names[i] if i < 2 * hidden else f.names[-1] for i, name in enumerate(own)}
    network = Network(f.init, f.apply, f.calibrate, scalars, f.names, input_shape, segment=f.segment, draws=f.draws,
                      init_with=f.init_with)
    return Padded(network, layers, f.code_layers, f.code_mask, (1, 2 * depth), f.segment_dims)


def param_count(arch: Architecture) -> int:
    """The trainable parameters of ``arch``'s own (unpadded) network (an MLP: :func:`mlp_shape`)."""
    shape = mlp_shape(arch)
    if shape is None:
        raise ValueError(f"{arch.name}: not an MLP that can be padded")
    fan_in, fan_out = [arch.input.shape[0], *shape.widths], [*shape.widths, shape.out]
    return sum(i * o + (o if shape.use_bias else 0) for i, o in zip(fan_in, fan_out))


def _layout(arch: Architecture, shape: MLPShape, depth: int, fns: tuple[str, ...]) -> dict:
    """The data of one MLP: per layer (``depth`` hidden, then the output) its scalars, true sizes and the
    offsets of its kernel and bias in ``init``'s per-distribution draws."""
    from zsad.arch.build import scalars_of

    f = jnp.result_type(float)
    named = named_layers(arch.layers)
    dense = [(name, layer) for name, layer in named if isinstance(layer, Dense)]
    fan_in = [arch.input.shape[0], *shape.widths]
    fan_out = [*shape.widths, shape.out]
    offsets, sizes = {}, {"normal": 0, shape.dist: 0}
    for k in sorted(range(len(dense)), key=lambda k: dense[k][0]):  # init's order: module names sorted
        offsets[k] = [sizes[shape.dist], 0]
        sizes[shape.dist] += fan_in[k] * fan_out[k]
        if shape.use_bias:
            offsets[k][1] = sizes["normal"]
            sizes["normal"] += fan_out[k]
    if max(sizes.values()) >= 1 << 31:
        raise ValueError(f"{arch.name}: too many weights to pad")
    n = len(dense)

    def per_layer(values, fill, dtype):  # [depth] hidden entries, then the output layer's
        hidden = list(values[:n - 1]) + [fill] * (depth - (n - 1))
        return np.asarray([*hidden, values[n - 1]], dtype)

    scal = scalars_of(arch)
    acts = [(scal[name], layer.fn) for name, layer in named if isinstance(layer, Activation)]
    pad = depth - len(acts)

    def act_column(key, fill):
        return np.asarray([float(a[key]) for a, _ in acts] + [fill] * pad, f)

    params = {c: {p: np.asarray([float(a["params"].get(p, d)) if fn == c else d for a, fn in acts] + [d] * pad, f)
                  for p, d in ACTIVATION_PARAMS.get(c, {}).items()} for c in fns}
    return {
        "weight_std": per_layer([float(scal[name]["weight_std"]) for name, _ in dense], 0.0, f),
        "bias_std": per_layer([float(scal[name]["bias_std"]) for name, _ in dense], 0.0, f),
        "denom": per_layer([_NORM[shape.dist] * np.sqrt(fan_in[k]) for k in range(n)], 1.0, f),
        "fan_in": per_layer(fan_in, 0, np.int32), "fan_out": per_layer(fan_out, 0, np.int32),
        "kernel_at": per_layer([offsets[k][0] for k in range(n)], 0, np.int32),
        "bias_at": per_layer([offsets[k][1] for k in range(n)], 0, np.int32),
        "active": np.arange(depth) < n - 1,
        "alpha": act_column("alpha", 1.0), "beta": act_column("beta", 1.0), "gain": act_column("gain", 1.0),
        "choice": np.asarray([fns.index(fn) for _, fn in acts] + [0] * pad, np.int32),
        "params": params,
    }


def _grid(rows: int, cols: int):
    return jnp.arange(rows, dtype=jnp.int32)[:, None], jnp.arange(cols, dtype=jnp.int32)[None, :]


class _Functions(NamedTuple):
    """What one padded signature compiles: the network's functions, its output names, and what the
    measurement engine needs to see through the padding (:class:`zsad.measure.MeasureConfig`)."""

    init: Callable
    apply: Callable
    calibrate: Callable
    segment: Callable
    names: tuple[str, ...]
    code_layers: tuple[str, ...]
    code_mask: Callable
    segment_dims: Callable
    draws: tuple
    init_with: Callable


@functools.lru_cache(maxsize=64)
def _functions(d_in: int, width: int, depth: int, out: int, dist: str, use_bias: bool, fns: tuple[str, ...],
               dtype: str) -> _Functions:
    """The functions of one padded signature drawing ``dtype`` weights (cached: equal signatures get the
    same objects, so that programs keyed by them are shared)."""
    names = tuple(f"{i}.{'dense' if i % 2 == 0 else 'activation'}" for i in range(2 * depth + 1))
    dense_names = names[0::2]  # one parameter leaf per dense layer (per-layer sums of the gradient proxies)

    # Every MLP of the signature uses a prefix of each distribution's whole-array draw, at most this long:
    # drawn once per seed and shared (Network.draws), each MLP gathers its elements from it (init_with).
    longest = {dist: d_in * width + (depth - 1) * width * width + width * out}
    if use_bias:
        longest["normal"] = longest.get("normal", 0) + depth * width + out
    shared = tuple((d, _FOLD[d], dtype, ((n,),)) for d, n in sorted(longest.items()))

    def layers(sample, s, ks, shape):  # the layers ks ([L]) at their padded shape, [L, *shape]
        r, c = (g[None] for g in _grid(*shape))
        fan_in, fan_out = s["fan_in"][ks][:, None, None], s["fan_out"][ks][:, None, None]
        valid = (r < fan_in) & (c < fan_out)
        at = jnp.where(valid, s["kernel_at"][ks][:, None, None] + r * fan_out + c, 0)
        scale = (s["weight_std"][ks] / s["denom"][ks])[:, None, None]
        kernel = jnp.where(valid, scale * sample(dist, at), 0)
        if not use_bias:
            return {"kernel": kernel}
        c = c[:, 0]  # [1, cols]
        at = s["bias_at"][ks][:, None] + c
        b = s["bias_std"][ks][:, None] * sample("normal", at)
        return {"kernel": kernel, "bias": jnp.where(c < fan_out[:, 0], b, 0)}

    def init_from(sample, s):
        s = jax.tree.map(jnp.asarray, s)  # host arrays, outside a jit, are indexed by traced layers
        first = layers(sample, s, jnp.zeros(1, jnp.int32), (d_in, width))
        hidden = layers(sample, s, jnp.arange(1, depth), (width, width))
        last = layers(sample, s, jnp.full(1, depth), (width, out))
        per_layer = [jax.tree.map(lambda a: a[0], first),
                     *[jax.tree.map(lambda a, k=k: a[k], hidden) for k in range(depth - 1)],
                     jax.tree.map(lambda a: a[0], last)]
        return {"params": dict(zip(dense_names, per_layer))}

    def init(key, s):
        return init_from(lambda d, at: draws.at(d, jax.random.fold_in(key, _FOLD[d]), at, dtype), s)

    def init_with(flats, key, s):
        return init_from(lambda d, at: jnp.take(flats[d][0], at), s)

    def activation(z, s, k):
        branches = [shaped(get_activation(c), s["alpha"][k], s["beta"][k], s["gain"][k],
                           {p: v[k] for p, v in s["params"][c].items()}) for c in fns]
        a = branches[0](z) if len(fns) == 1 else jax.lax.switch(s["choice"][k], branches, z)
        return a * (jnp.arange(width) < s["fan_out"][k])[None, :].astype(a.dtype)  # the padding's units stay zero

    def dense(p, h):
        return h @ p["kernel"] + p["bias"][None, :] if use_bias else h @ p["kernel"]

    def hidden_params(p, first: int, stop: int):  # hidden layers first .. stop-1 stacked for the scan
        return jax.tree.map(lambda *a: jnp.stack(a), *[p[dense_names[k]] for k in range(first, stop)])

    def step(s):
        def body(h, layer_k):  # one hidden layer; a padded one (inactive) passes h on, computing nothing
            q, k = layer_k

            def run():
                z = dense(q, h)
                return z, activation(z, s, k)

            z, a = jax.lax.cond(s["active"][k], run, lambda: (h, h))
            return a, (z, a)

        return body

    def apply(variables, s, x):
        s = jax.tree.map(jnp.asarray, s)
        p = variables["params"]
        z0 = dense(p[names[0]], x)
        a0 = activation(z0, s, 0)
        if depth > 1:
            h, (zs, acts) = jax.lax.scan(step(s), a0, (hidden_params(p, 1, depth), jnp.arange(1, depth)))
        else:
            h, zs, acts = a0, None, None
        y = dense(p[names[-1]], h)
        groups = ((names[:1], z0, None), (names[1:2], a0, None),
                  *(((names[2:-1:2], zs, 2), (names[3:-1:2], acts, 2)) if depth > 1 else ()),
                  (names[-1:], y, None))
        return y, LayerValues(groups, names)

    def segment(variables, s, h, start: int, stop: int):
        """Layers ``start .. stop-1`` on ``h``; whole hidden layers (dense and activation) in a scan."""
        s = jax.tree.map(jnp.asarray, s)
        p = variables["params"]
        body = step(s)
        i = start
        while i < stop:
            k = i // 2
            if i == 2 * depth:  # the output layer
                h = dense(p[names[-1]], h)
            elif i == 0:
                h = dense(p[names[0]], h)
            elif i == 1:
                h = activation(h, s, 0)
            elif i % 2 == 0 and i + 1 < stop:  # whole hidden layers k .. last-1 at once
                last = min(depth, stop // 2)
                h, _ = jax.lax.scan(body, h, (hidden_params(p, k, last), jnp.arange(k, last)))
                i = 2 * last
                continue
            elif i % 2 == 0:
                h = jnp.where(s["active"][k], dense(p[names[i]], h), h)
            else:
                h = jnp.where(s["active"][k], activation(h, s, k), h)
            i += 1
        return h

    def calibrate(variables, s, x):
        return variables

    def code_mask(s):
        """Per code layer (the hidden dense outputs), which units are the MLP's own."""
        s = jax.tree.map(jnp.asarray, s)
        units = jnp.arange(width)[None, :] < s["fan_out"][:depth, None]
        return tuple(units[k] & s["active"][k] for k in range(depth))

    def segment_dims(s):
        """The true input and output sizes of the default segment (first dense output -> last hidden)."""
        s = jax.tree.map(jnp.asarray, s)
        return s["fan_out"][0], s["fan_in"][depth]

    return _Functions(init, apply, calibrate, segment, names, names[0:2 * depth:2], code_mask, segment_dims, shared,
                      init_with)
