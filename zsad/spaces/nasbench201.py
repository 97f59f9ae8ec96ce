"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020): notation, enumeration and exact counts.

Architecture strings, integer encodings, enumeration and seeded sampling of the
15,625 architectures, degenerate cells, and exact parameter and FLOP counts.
This module imports no jax: parsing a space file loads none. The network
itself is :mod:`zsad.spaces.nasbench201_net`.

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
  output) hold parameters, as in the reference PyTorch model, but the direct
  network (:func:`zsad.spaces.nasbench201_net.build_network`) never computes them.

Degenerate architectures: when every path from node 0 to node 3 of the cell
contains ``none`` (:func:`is_degenerate`), each cell's output does not depend
on its input (it is zero at initialization), the network output is constant
and the NLC is 0/0; callers should rank such architectures last.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence, Union

import numpy as np

from zsad._errors import SpecError, closest

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

#: The convolution operations and their kernel sizes.
CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}
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


def as_ops(arch: Arch) -> tuple[str, ...]:
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
    ops = as_ops(ops)
    nodes = []
    for target in (1, 2, 3):
        tokens = [f"{ops[e]}~{src}" for e, (src, tgt) in enumerate(EDGES) if tgt == target]
        nodes.append("|" + "|".join(tokens) + "|")
    return "+".join(nodes)


# --------------------------------------------------------------------------- encoding / enumeration

def encode(arch: Arch) -> np.ndarray:
    """Integer encoding of an architecture: shape ``[6]``, int32, codes 0..4 (index into ``OPS``)."""
    return np.asarray([_OP_CODE[op] for op in as_ops(arch)], dtype=np.int32)


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

def live_edges(ops: Sequence[str]) -> tuple[bool, ...]:
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
    ops = as_ops(arch)
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
    if op in CONV_KERNEL:
        k = CONV_KERNEL[op]
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
    ops = as_ops(arch)
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
    if op in CONV_KERNEL:
        return _relu_conv_bn_flops(c, c, CONV_KERNEL[op], hw, hw)
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
    ops = as_ops(arch)
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


def _layer_names() -> tuple[str, ...]:
    names = ["stem"]
    for s in range(len(CHANNELS)):
        if s > 0:
            names.append(f"reduction{s}")
        names.extend(f"cell{s * CELLS_PER_STAGE + i}" for i in range(CELLS_PER_STAGE))
    names.append("head")
    return tuple(names)


#: Names of the outputs the network's ``apply`` returns, in network order; ``head`` is the logits.
LAYER_NAMES: tuple[str, ...] = _layer_names()
#: The last feature map (the last cell's output), before the head's batch norm, ReLU, global average
#: pooling and dense layer: where the Jacobian of the hidden part ends (``sigma2``).
FEATURES: str = LAYER_NAMES[-2]
