"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020), built in.

Architecture strings, enumeration, exact parameter and FLOP counts, and the
network itself in two forms:

* :func:`build_network` -- one architecture; only its chosen operations are
  computed (``none`` edges and edges that cannot reach the cell output are
  skipped).
* :func:`build_masked_network` -- one program for the whole space. Every edge
  holds every candidate operation and the operation choice is *data* (an int
  array of shape ``[6]`` in ``scalars["ops"]``), so a single compilation
  serves all 15,625 architectures and can be ``vmap``-ed over a chunk of
  architectures, each with its own initialization.

Network (input ``[N, 32, 32, 3]``, NHWC): stem conv3x3 3->16 (no bias) + BN;
three stages of five cells with C = 16, 32, 64; between stages a residual
reduction block (ReLU-conv3x3 stride 2-BN, ReLU-conv3x3-BN, shortcut 2x2
average pool stride 2 then conv1x1, summed); head BN-ReLU-global average
pool-dense 64->10. A cell has four nodes: node 0 is the cell input, node
``j = sum_{i<j} op_{i->j}(node i)``, the cell outputs node 3. Operations:
``none`` (zeros), ``skip_connect`` (identity), ``nor_conv_1x1`` /
``nor_conv_3x3`` (ReLU-conv-BN, convolution without bias, padding 0 / 1),
``avg_pool_3x3`` (stride 1, padding 1, padding not counted).

Conventions (they reproduce the reference parameter counts exactly):

* convolutions have no bias; every batch norm is affine (scale and bias, 2C
  parameters); the dense layer has a bias. Batch-norm running statistics are
  not parameters.
* operations in dead ends (an edge whose target node never reaches the cell
  output) hold parameters, as in the reference PyTorch model, but
  :func:`build_network` never computes them.

Initialization (the zsad convention): every convolution and dense kernel is
drawn from :math:`N(0, \\sigma_w^2 / \\text{fan\\_in})` with
``fan_in = k*k*C_in`` (convolutions) or ``64`` (dense) and ``sigma_w =
scalars["weight_std"]`` (default :math:`\\sqrt 2`, critical for ReLU; this is
He/Kaiming normal with fan-in mode); the dense bias is drawn from
:math:`N(0, \\sigma_b^2)` with ``sigma_b = scalars["bias_std"]`` (default 0);
batch-norm scales are 1 and biases 0. Both scalars are traced: changing them
never recompiles.

Batch norm: ``calibrate`` runs the network in training mode on the scoring
batch and stores every batch norm's batch mean and biased variance
(:math:`\\epsilon = 10^{-5}`); ``apply`` then uses them frozen, so it is a
per-sample function and, on the calibration batch, equals training-mode batch
norm.

Degenerate architectures: when every path from node 0 to node 3 of the cell
contains ``none`` (:func:`is_degenerate`), each cell's output does not depend
on its input (it is zero at initialization), the network output is constant
and the NLC is 0/0; callers should rank such architectures last.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zsad._errors import DataError, SpecError
from zsad._types import Network
from zsad.activations import closest
from zsad.arch.build import FrozenBatchNorm

#: The five operations, in the order of their integer codes 0..4.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The six edges ``(source, target)`` in architecture-string order.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625
#: Channels of the three stages, cells per stage, classes, input shape (HWC).
CHANNELS: tuple[int, int, int] = (16, 32, 64)
CELLS_PER_STAGE = 5
NUM_CLASSES = 10
INPUT_SHAPE: tuple[int, int, int] = (32, 32, 3)
BN_EPSILON = 1e-5

Arch = Union[str, Sequence[str]]

_CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
_OP_CODE = {op: i for i, op in enumerate(OPS)}


# --------------------------------------------------------------------------- strings

def _valid_ops() -> str:
    return ", ".join(OPS)


def parse_arch(s: str) -> tuple[str, ...]:
    """Parses a NAS-Bench-201 architecture string.

    ``|a~0|+|b~0|c~1|+|d~0|e~1|f~2|`` means op(0->1) = a; op(0->2) = b,
    op(1->2) = c; op(0->3) = d, op(1->3) = e, op(2->3) = f.

    Args:
      s: the architecture string (surrounding whitespace is ignored).

    Returns:
      The six operation names in string order (see ``EDGES``).

    Raises:
      SpecError: the string is malformed or names an unknown operation; the
        one-line message names the bad token and lists the valid operations.

    Examples:
      >>> parse_arch("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
      ('nor_conv_3x3', 'none', 'skip_connect', 'avg_pool_3x3', 'none', 'nor_conv_1x1')
    """
    if not isinstance(s, str):
        raise SpecError(f"architecture: expected a string like '|a~0|+|b~0|c~1|+|d~0|e~1|f~2|', got {type(s).__name__}")
    text = s.strip()
    where = f"architecture {text!r}"
    groups = text.split("+")
    if len(groups) != 3:
        raise SpecError(f"{where}: expected 3 nodes separated by '+' as in '|a~0|+|b~0|c~1|+|d~0|e~1|f~2|', "
                        f"got {len(groups)}")
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise SpecError(f"{where}: node {node}: expected '|op~i|...|' (bars at both ends), got {group!r}")
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise SpecError(f"{where}: node {node}: expected {node} token(s) 'op~i', got {len(tokens)}: {group!r}")
        for source, token in enumerate(tokens):
            op, sep, index = token.partition("~")
            if not sep:
                raise SpecError(f"{where}: token {token!r}: expected 'op~{source}'")
            if op not in _OP_CODE:
                raise SpecError(f"{where}: token {token!r}: expected one of {_valid_ops()}; got {op!r}"
                                f"{closest(op, OPS)}")
            if index != str(source):
                raise SpecError(f"{where}: token {token!r}: expected source node {source}, got {index!r}")
            ops.append(op)
    return tuple(ops)


def _as_ops(arch: Arch) -> tuple[str, ...]:
    """Architecture string or sequence of six op names -> validated tuple of op names."""
    if isinstance(arch, str):
        return parse_arch(arch)
    ops = tuple(arch)
    if len(ops) != len(EDGES):
        raise SpecError(f"architecture: expected {len(EDGES)} operations, got {len(ops)}")
    for i, op in enumerate(ops):
        if op not in _OP_CODE:
            raise SpecError(f"architecture: operation {i} {op!r}: expected one of {_valid_ops()}"
                            f"{closest(str(op), OPS)}")
    return ops


def format_arch(ops: Arch) -> str:
    """Formats six operation names as a NAS-Bench-201 architecture string.

    Args:
      ops: six operation names in string order (or an architecture string,
        which is validated and normalized).

    Returns:
      The string ``|a~0|+|b~0|c~1|+|d~0|e~1|f~2|``.

    Raises:
      SpecError: wrong number of operations or an unknown operation.

    Examples:
      >>> format_arch(("skip_connect",) * 6)
      '|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|'
    """
    ops = _as_ops(ops)
    nodes = []
    for target in (1, 2, 3):
        tokens = [f"{ops[e]}~{src}" for e, (src, tgt) in enumerate(EDGES) if tgt == target]
        nodes.append("|" + "|".join(tokens) + "|")
    return "+".join(nodes)


# --------------------------------------------------------------------------- encoding / enumeration

def encode(arch: Arch) -> np.ndarray:
    """Integer encoding of an architecture: shape ``[6]``, int32, codes 0..4 (index into ``OPS``)."""
    return np.asarray([_OP_CODE[op] for op in _as_ops(arch)], dtype=np.int32)


def decode(codes: Iterable[int]) -> tuple[str, ...]:
    """Inverse of :func:`encode`: six integer codes 0..4 -> six operation names.

    Raises:
      SpecError: not six codes, or a code outside 0..4.
    """
    codes = [int(c) for c in np.asarray(codes).reshape(-1)]
    if len(codes) != len(EDGES) or any(c < 0 or c >= len(OPS) for c in codes):
        raise SpecError(f"architecture encoding: expected {len(EDGES)} integers in 0..{len(OPS) - 1}, got {codes}")
    return tuple(OPS[c] for c in codes)


def arch_index(arch: Arch) -> int:
    """Position of ``arch`` in :func:`all_archs`: :math:`\\sum_e c_e 5^{5-e}` (edge 0 most significant).

    This is zsad's own order, not the index of the NAS-Bench-201 benchmark file.
    """
    index = 0
    for c in encode(arch):
        index = index * len(OPS) + int(c)
    return index


def arch_from_index(index: int) -> tuple[str, ...]:
    """Inverse of :func:`arch_index`.

    Raises:
      SpecError: ``index`` outside ``0..15624``.
    """
    if not 0 <= int(index) < NUM_ARCHS:
        raise SpecError(f"architecture index: expected 0..{NUM_ARCHS - 1}, got {index}")
    codes = []
    index = int(index)
    for _ in EDGES:
        index, c = divmod(index, len(OPS))
        codes.append(c)
    return decode(codes[::-1])


def all_archs() -> list[tuple[str, ...]]:
    """All 15,625 architectures, in lexicographic order of their codes (edge 0 most significant).

    The i-th entry has ``arch_index == i``: it starts with all-``none`` and ends
    with all-``avg_pool_3x3`` (codes follow ``OPS``).
    """
    return [tuple(p) for p in itertools.product(OPS, repeat=len(EDGES))]


def sample_archs(n: int, seed: int = 0) -> list[tuple[str, ...]]:
    """``n`` distinct architectures drawn uniformly without replacement.

    Args:
      n: how many (0..15,625).
      seed: seed of ``numpy.random.default_rng``; the same seed gives the same list.

    Returns:
      The architectures in the order drawn.

    Raises:
      SpecError: ``n`` negative or larger than the space.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= NUM_ARCHS:
        raise SpecError(f"sample: expected an integer in 0..{NUM_ARCHS} (the size of NAS-Bench-201), got {n!r}")
    picks = np.random.default_rng(seed).choice(NUM_ARCHS, size=int(n), replace=False)
    return [arch_from_index(int(i)) for i in picks]


# --------------------------------------------------------------------------- graph analysis

def _live_edges(ops: Sequence[str]) -> tuple[bool, ...]:
    """Edges whose operation is not ``none`` and whose target reaches node 3 through such edges."""
    reaches = {3}
    for node in (2, 1, 0):
        if any(src == node and tgt in reaches and ops[e] != "none" for e, (src, tgt) in enumerate(EDGES)):
            reaches.add(node)
    return tuple(ops[e] != "none" and tgt in reaches for e, (src, tgt) in enumerate(EDGES))


def is_degenerate(arch: Arch) -> bool:
    """Whether node 3 is unreachable from node 0 (every path contains ``none``).

    Such a cell's output does not depend on its input, hence neither does the
    network's: its NLC is 0/0 and it should be treated as untrainable.

    Examples:
      >>> is_degenerate("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|")
      True
    """
    ops = _as_ops(arch)
    reached = {0}
    for e, (src, tgt) in enumerate(EDGES):  # edges are in topological order
        if src in reached and ops[e] != "none":
            reached.add(tgt)
    return 3 not in reached


# --------------------------------------------------------------------------- counting

def _stages():
    """(channels, spatial size) of the three stages for a 32x32 input."""
    return [(c, INPUT_SHAPE[0] // 2 ** s) for s, c in enumerate(CHANNELS)]


def _op_params(op: str, c: int) -> int:
    if op in _CONV_KERNEL:
        k = _CONV_KERNEL[op]
        return k * k * c * c + 2 * c
    return 0


def param_count(arch: Arch) -> int:
    """Exact number of parameters (10-class head); batch-norm running statistics excluded.

    Counts convolution kernels (no biases), batch-norm scales and biases (2C
    each) and the dense kernel and bias. Operations in dead ends count (the
    reference model holds them). Equals the reference values, e.g. 1,531,546
    for the all-``nor_conv_3x3`` cell.

    Examples:
      >>> param_count(("nor_conv_3x3",) * 6)
      1531546
    """
    ops = _as_ops(arch)
    c0, c_in = CHANNELS[0], INPUT_SHAPE[2]
    total = 9 * c_in * c0 + 2 * c0  # stem
    for s, (c, _) in enumerate(_stages()):
        if s > 0:
            cp = CHANNELS[s - 1]
            total += 9 * cp * c + 2 * c + 9 * c * c + 2 * c + cp * c  # reduction: conv_a, conv_b, shortcut
        total += CELLS_PER_STAGE * sum(_op_params(op, c) for op in ops)
    c_last = CHANNELS[-1]
    total += 2 * c_last + c_last * NUM_CLASSES + NUM_CLASSES  # head BN + dense
    return total


def _relu_conv_bn_flops(c_in: int, c_out: int, k: int, hw_in: int, hw_out: int) -> int:
    """ReLU (one per input element) + convolution MACs + affine batch norm (two per element)."""
    return hw_in * hw_in * c_in + hw_out * hw_out * c_out * (k * k * c_in) + 2 * hw_out * hw_out * c_out


def _op_flops(op: str, c: int, hw: int) -> int:
    if op in _CONV_KERNEL:
        return _relu_conv_bn_flops(c, c, _CONV_KERNEL[op], hw, hw)
    if op == "avg_pool_3x3":
        return 9 * hw * hw * c
    return 0


def flops(arch: Arch) -> int:
    """FLOPs of one forward pass of one 32x32x3 sample.

    Convention (per layer, per sample): a convolution or dense
    multiply-accumulate counts 1 (no biases here, except the dense bias: 1 per
    output); an affine batch norm 2 per element; a ReLU 1 per input element;
    an average pool its window size per output element (9 for the 3x3 cell
    pool, borders included; 4 for the 2x2 shortcut pool); the global average
    pool 1 per input element; identity, ``none`` and elementwise sums 0.
    Operations in dead ends count (the reference model computes them).

    Against the reference ``flops_m`` (NAS-Bench-Suite-Zero) every
    per-operation cost agrees exactly -- per edge over the 15 cells
    ``nor_conv_3x3`` 35,819,520, ``nor_conv_1x1`` 4,362,240, ``avg_pool_3x3``
    1,290,240, ``skip_connect`` and ``none`` 0 -- and this function is lower by
    the same 1,078 FLOPs for every architecture, all in the fixed skeleton
    (stem, reductions, head: 7,942,794 here, 7,943,872 in the reference), so
    ``flops / (1e6 * flops_m)`` lies between 0.999898 (smallest network,
    10.52 M) and 0.999995 (largest, 222.86 M).

    Examples:
      >>> flops(("nor_conv_3x3",) * 6)
      222859914
    """
    ops = _as_ops(arch)
    h = INPUT_SHAPE[0]
    c0, c_in = CHANNELS[0], INPUT_SHAPE[2]
    total = h * h * c0 * (9 * c_in) + 2 * h * h * c0  # stem conv + BN
    for s, (c, hw) in enumerate(_stages()):
        if s > 0:
            cp = CHANNELS[s - 1]
            total += _relu_conv_bn_flops(cp, c, 3, 2 * hw, hw)  # conv_a, stride 2
            total += _relu_conv_bn_flops(c, c, 3, hw, hw)  # conv_b
            total += 4 * hw * hw * cp  # 2x2 average pool
            total += hw * hw * c * cp  # shortcut conv1x1
        total += CELLS_PER_STAGE * sum(_op_flops(op, c, hw) for op in ops)
    c_last, hw_last = CHANNELS[-1], _stages()[-1][1]
    total += 2 * hw_last * hw_last * c_last  # head BN
    total += hw_last * hw_last * c_last  # head ReLU
    total += hw_last * hw_last * c_last  # global average pool
    total += c_last * NUM_CLASSES + NUM_CLASSES  # dense
    return total


# --------------------------------------------------------------------------- flax modules
#
# Parameters and batch-norm statistics are created by ``_init_variables`` (a
# few large random draws rather than one per layer, which keeps ``init`` cheap
# to compile); the modules below only declare them (flax checks the shapes).
# The five cells of a stage share their structure, so each stage is one
# ``nn.scan`` over cells with variables stacked on a leading axis of length 5.

class _Conv(nn.Module):
    """Convolution without bias, kernel ``[k, k, C_in, C_out]``, padding ``k // 2``."""

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        k = self.kernel
        w = self.param("kernel", nn.initializers.zeros_init(), (k, k, x.shape[-1], self.features), x.dtype)
        pad = ((k // 2, k // 2), (k // 2, k // 2))
        return jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), pad,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


class _ReLUConvBN(nn.Module):
    features: int
    kernel: int
    stride: int = 1
    calibrate: bool = False

    @nn.compact
    def __call__(self, x):
        y = _Conv(self.features, self.kernel, self.stride, name="conv")(jax.nn.relu(x))
        return FrozenBatchNorm(BN_EPSILON, name="bn")(y, self.calibrate)


def _avg_pool_3x3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class _Reduction(nn.Module):
    features: int
    calibrate: bool = False

    @nn.compact
    def __call__(self, x):
        y = _ReLUConvBN(self.features, 3, 2, self.calibrate, name="conv_a")(x)
        y = _ReLUConvBN(self.features, 3, 1, self.calibrate, name="conv_b")(y)
        short = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return _Conv(self.features, 1, name="shortcut")(short) + y


def _op_name(e: int, op: str) -> str:
    src, tgt = EDGES[e]
    return f"edge_{src}_{tgt}_{op}"


class _Cell(nn.Module):
    """One cell (scanned over a stage). ``ops`` given: that architecture only; ``None``: chosen by ``codes``."""

    channels: int
    ops: tuple[str, ...] | None = None
    calibrate: bool = False

    @nn.compact
    def __call__(self, x, codes):
        y = self._direct(x) if self.ops is not None else self._masked(x, codes)
        return y, y

    def _conv_op(self, e, op):
        return _ReLUConvBN(self.channels, _CONV_KERNEL[op], 1, self.calibrate, name=_op_name(e, op))

    def _direct(self, x):
        ops = self.ops
        live = _live_edges(ops)
        nodes: list[jax.Array | None] = [x, None, None, None]  # None: identically zero
        for e, (src, tgt) in enumerate(EDGES):
            op, h = ops[e], nodes[src]
            if not live[e]:
                continue  # `none`, or a dead end: its parameters exist but are never used
            if op in _CONV_KERNEL:  # on a zero node this is the constant BN bias: computed
                out = self._conv_op(e, op)(jnp.zeros_like(x) if h is None else h)
            elif h is None:
                out = None  # skip / pool of zeros
            elif op == "skip_connect":
                out = h
            else:
                out = _avg_pool_3x3(h)
            if out is not None:
                nodes[tgt] = out if nodes[tgt] is None else nodes[tgt] + out
        return jnp.zeros_like(x) if nodes[3] is None else nodes[3]

    def _masked(self, x, codes):
        """Each edge's operation chosen by ``codes[e]`` with ``lax.switch``: only the chosen one runs.

        Under ``vmap`` over architectures the switch becomes a select over all five
        (every candidate computed, batched: right for accelerators); unbatched, as
        on CPU, the other branches are never executed.
        """
        nodes = [x, None, None, None]
        for e, (src, tgt) in enumerate(EDGES):
            branches = [_branch(e, op, self.channels, self.calibrate) for op in OPS]
            if self.is_initializing():  # declare every branch's variables before the switch reads them
                for branch in branches:
                    branch(self, nodes[src])
            out = nn.switch(codes[e], branches, self, nodes[src])
            nodes[tgt] = out if nodes[tgt] is None else nodes[tgt] + out
        return nodes[3]


def _branch(e: int, op: str, channels: int, calibrate: bool):
    """The operation ``op`` on edge ``e`` as an ``nn.switch`` branch ``(module, h) -> out``."""
    if op == "none":
        return lambda mdl, h: jnp.zeros_like(h)
    if op == "skip_connect":
        return lambda mdl, h: h
    if op == "avg_pool_3x3":
        return lambda mdl, h: _avg_pool_3x3(h)
    k = _CONV_KERNEL[op]
    return lambda mdl, h: _ReLUConvBN(channels, k, 1, calibrate, name=_op_name(e, op), parent=mdl)(h)


_ScanCells = nn.scan(_Cell, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                     in_axes=nn.broadcast, length=CELLS_PER_STAGE)


def _layer_names() -> tuple[str, ...]:
    names = ["stem"]
    for s in range(len(CHANNELS)):
        if s > 0:
            names.append(f"reduction{s}")
        names.extend(f"cell{s * CELLS_PER_STAGE + i}" for i in range(CELLS_PER_STAGE))
    names.append("head")
    return tuple(names)


#: Names of the outputs ``apply`` returns, in network order; ``head`` is the logits.
LAYER_NAMES: tuple[str, ...] = _layer_names()
#: The last feature map (the last cell's output), before the head's batch norm, ReLU, global average
#: pooling and dense layer: where the Jacobian of the hidden part ends (``sigma2``).
FEATURES: str = LAYER_NAMES[-2]


class _NB201(nn.Module):
    """The whole network; ``ops=None`` builds the masked program (``scalars["ops"]`` chooses)."""

    ops: tuple[str, ...] | None = None
    calibrate: bool = False

    @nn.compact
    def __call__(self, x, scalars):
        cal = self.calibrate
        if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
            raise DataError(f"NAS-Bench-201 input: expected shape [N, {', '.join(map(str, INPUT_SHAPE))}], "
                             f"got {list(x.shape)}")
        codes = None if self.ops is not None else scalars["ops"]
        outs: dict[str, jax.Array] = {}
        y = _Conv(CHANNELS[0], 3, name="stem_conv")(x)
        y = FrozenBatchNorm(BN_EPSILON, name="stem_bn")(y, cal)
        outs["stem"] = y
        for s, c in enumerate(CHANNELS):
            if s > 0:
                y = _Reduction(c, cal, name=f"reduction{s}")(y)
                outs[f"reduction{s}"] = y
            y, stacked = _ScanCells(c, self.ops, cal, name=f"stage{s + 1}")(y, codes)
            for i in range(CELLS_PER_STAGE):
                outs[f"cell{s * CELLS_PER_STAGE + i}"] = stacked[i]
        y = jax.nn.relu(FrozenBatchNorm(BN_EPSILON, name="head_bn")(y, cal))
        y = jnp.mean(y, axis=(1, 2))
        c_last = CHANNELS[-1]
        kernel = self.param("head_kernel", nn.initializers.zeros_init(), (c_last, NUM_CLASSES), x.dtype)
        bias = self.param("head_bias", nn.initializers.zeros_init(), (NUM_CLASSES,), x.dtype)
        y = jnp.dot(y, kernel) + bias[None, :]
        outs["head"] = y
        return y, outs


# --------------------------------------------------------------------------- initialization

def _bn_variables(c: int, lead: tuple[int, ...], dtype):
    shape = (*lead, c)
    return ({"scale": jnp.ones(shape, dtype), "bias": jnp.zeros(shape, dtype)},
            {"mean": jnp.zeros(shape, dtype), "var": jnp.ones(shape, dtype)})


def _draw_layout() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Every random block of the masked program, in draw order: (name, shape)."""
    c0, c_in = CHANNELS[0], INPUT_SHAPE[2]
    out = [("stem", (3, 3, c_in, c0))]
    for s, c in enumerate(CHANNELS):
        if s > 0:
            cp = CHANNELS[s - 1]
            out += [(f"reduction{s}/conv_a", (3, 3, cp, c)), (f"reduction{s}/conv_b", (3, 3, c, c)),
                    (f"reduction{s}/shortcut", (1, 1, cp, c))]
        for op, k in _CONV_KERNEL.items():
            out.append((f"stage{s + 1}/{op}", (len(EDGES), CELLS_PER_STAGE, k, k, c, c)))
    out += [("head_kernel", (CHANNELS[-1], NUM_CLASSES)), ("head_bias", (NUM_CLASSES,))]
    return tuple(out)


def _init_variables(key, scalars, ops: tuple[str, ...] | None, dtype):
    """Draws all variables. Kernels ~ N(0, weight_std**2 / fan_in), dense bias ~ N(0, bias_std**2).

    All random numbers come from one standard-normal draw laid out as the
    masked program's variables (``_draw_layout``: every candidate operation on
    every edge of every cell), which is cheap to compile; a direct build takes
    the blocks of its chosen operations, so the masked program and every direct
    build hold the same values at the same place for the same key.
    """
    ws, bs = scalars["weight_std"], scalars["bias_std"]
    layout = _draw_layout()
    sizes = [math.prod(shape) for _, shape in layout]
    z = jax.random.normal(key, (sum(sizes),), dtype)
    blocks, offset = {}, 0
    for (name, shape), size in zip(layout, sizes):
        blocks[name] = z[offset:offset + size].reshape(shape)
        offset += size

    def kernel(name):  # fan_in = k * k * C_in of a [k, k, C_in, C_out] kernel
        w = blocks[name]
        return (ws / math.sqrt(math.prod(w.shape[-4:-1]))) * w

    def relu_conv_bn(name, c_out):
        bn_p, bn_s = _bn_variables(c_out, (), dtype)
        return {"conv": {"kernel": kernel(name)}, "bn": bn_p}, {"bn": bn_s}

    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    params["stem_conv"] = {"kernel": kernel("stem")}
    params["stem_bn"], stats["stem_bn"] = _bn_variables(CHANNELS[0], (), dtype)
    for s, c in enumerate(CHANNELS):
        if s > 0:
            pa, sa = relu_conv_bn(f"reduction{s}/conv_a", c)
            pb, sb = relu_conv_bn(f"reduction{s}/conv_b", c)
            params[f"reduction{s}"] = {"conv_a": pa, "conv_b": pb,
                                       "shortcut": {"kernel": kernel(f"reduction{s}/shortcut")}}
            stats[f"reduction{s}"] = {"conv_a": sa, "conv_b": sb}
        stage_p: dict[str, Any] = {}
        stage_s: dict[str, Any] = {}
        for e in range(len(EDGES)):
            chosen = tuple(_CONV_KERNEL) if ops is None else ((ops[e],) if ops[e] in _CONV_KERNEL else ())
            for op in chosen:
                k = _CONV_KERNEL[op]
                bn_p, bn_s = _bn_variables(c, (CELLS_PER_STAGE,), dtype)
                w = blocks[f"stage{s + 1}/{op}"][e]  # [cells, k, k, C, C]
                stage_p[_op_name(e, op)] = {"conv": {"kernel": (ws / math.sqrt(k * k * c)) * w}, "bn": bn_p}
                stage_s[_op_name(e, op)] = {"bn": bn_s}
        if stage_p:
            params[f"stage{s + 1}"], stats[f"stage{s + 1}"] = stage_p, stage_s
    params["head_bn"], stats["head_bn"] = _bn_variables(CHANNELS[-1], (), dtype)
    params["head_kernel"] = (ws / math.sqrt(CHANNELS[-1])) * blocks["head_kernel"]
    params["head_bias"] = bs * blocks["head_bias"]
    return {"params": params, "batch_stats": stats}


# --------------------------------------------------------------------------- builders

def default_scalars(arch: Arch | None = None) -> dict[str, jax.Array]:
    """Default traced scalars: ``weight_std`` = sqrt(2), ``bias_std`` = 0, and ``ops`` (int32 ``[6]``) if given."""
    dtype = jnp.result_type(float)
    out = {"weight_std": jnp.asarray(math.sqrt(2.0), dtype), "bias_std": jnp.asarray(0.0, dtype)}
    if arch is not None:
        out["ops"] = jnp.asarray(encode(arch))
    return out


def _network(ops: tuple[str, ...] | None, scalars) -> Network:
    from zsad.spaces.ops import module_network

    def init(key, scalars):
        return _init_variables(key, scalars, ops, jnp.result_type(float))

    return module_network(lambda calibrate: _NB201(ops, calibrate=calibrate), init, scalars, LAYER_NAMES,
                          INPUT_SHAPE, space="NAS-Bench-201")


def build_network(arch: Arch) -> Network:
    """The network of one architecture, computing only its chosen operations.

    ``none`` edges are skipped, and so are edges whose target cannot reach the
    cell output (their parameters still exist, see :func:`param_count`).

    Args:
      arch: an architecture string or six operation names.

    Returns:
      A :class:`zsad.Network`: ``init(key, scalars)``, ``calibrate(variables,
      scalars, x)``, ``apply(variables, scalars, x) -> (logits [N, 10],
      {name: output})`` with outputs named ``LAYER_NAMES`` (stem, cells
      ``cell0..cell14``, ``reduction1``, ``reduction2``, ``head`` = the
      logits); inputs ``x`` are ``[N, 32, 32, 3]``; ``scalars`` are
      ``{"weight_std", "bias_std"}`` (see :func:`default_scalars`).

    Raises:
      SpecError: a malformed architecture.

    Examples:
      >>> net = build_network("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|")
      >>> variables = net.init(jax.random.key(0), net.scalars)
      >>> x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
      >>> variables = net.calibrate(variables, net.scalars, x)
      >>> net.apply(variables, net.scalars, x)[0].shape
      (4, 10)
    """
    return _network(_as_ops(arch), default_scalars())


def build_masked_network() -> Network:
    """One program for the whole space: the operation choice is data, ``scalars["ops"]`` (int ``[6]``, codes 0..4).

    Every edge holds all candidate operations and ``lax.switch`` runs the chosen
    one (``nn.switch``), so for every encoding the outputs
    equal those of :func:`build_network` with the variables of
    :func:`masked_to_direct` (which are also what ``build_network(...).init``
    draws from the same key). ``init``, ``calibrate`` and ``apply`` may be
    ``vmap``-ed over keys and encodings (a chunk of architectures, each with
    its own initialization); under ``vmap`` the switch computes every candidate
    and selects, which suits accelerators. On CPU, call it per architecture (or
    ``lax.map`` over a chunk): unbatched, the switch computes only the chosen
    operations, and no grouped convolutions arise.

    Returns:
      A :class:`zsad.Network` whose default scalars encode the all-``nor_conv_3x3`` cell.

    Examples:
      >>> net = build_masked_network()
      >>> keys = jax.random.split(jax.random.key(0), 2)
      >>> scalars = {**net.scalars, "ops": jnp.stack([jnp.asarray(encode(a)) for a in all_archs()[:2]])}
      >>> axes = {"weight_std": None, "bias_std": None, "ops": 0}
      >>> variables = jax.vmap(net.init, in_axes=(0, axes))(keys, scalars)
      >>> variables["params"]["head_kernel"].shape
      (2, 64, 10)
    """
    return _network(None, default_scalars(("nor_conv_3x3",) * len(EDGES)))


def masked_to_direct(variables: Any, arch: Arch) -> Any:
    """Selects, from the masked program's variables, those of :func:`build_network` for ``arch``.

    Keeps every variable outside the cells and, on each edge, the variables of
    the chosen convolution (dead ends included); drops the others.
    """
    ops = _as_ops(arch)
    keep = {_op_name(e, op) for e, op in enumerate(ops) if op in _CONV_KERNEL}

    def select(collection):
        out = {}
        for name, sub in collection.items():
            if name.startswith("stage"):
                sub = {k: v for k, v in sub.items() if k in keep}
                if not sub:
                    continue
            out[name] = sub
        return out

    return {col: select(tree) for col, tree in variables.items()}
