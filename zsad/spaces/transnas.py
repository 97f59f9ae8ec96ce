"""The TransNAS-Bench-101 search spaces (Duan et al., CVPR 2021): micro cells and macro skeletons.

Notation (the benchmark's own):

* micro: ``64-41414-a_bc_def``: base width 64, the fixed skeleton ``41414``, and a cell of four
  nodes: node 1 <- ``a`` from node 0; node 2 <- ``b`` from 0, ``c`` from 1; node 3 <- ``d``,
  ``e``, ``f`` from 0, 1, 2; digits 0 ``none``, 1 ``skip`` (identity, or a factorized reduce
  where the stride or width changes), 2 ``conv1x1``, 3 ``conv3x3`` (ReLU-conv-BN); 4,096 cells.
* macro: ``64-XXXX-basic``: 4 to 6 stages of two residual basic blocks; digit 1 plain, 2 width
  x2, 3 stride 2, 4 both; the width doubles 1 to 3 times and the size halves 1 to 4 times
  (3,256 skeletons).

Every stage holds two cells or blocks, the first carrying the stride and width change; the
stem halves the resolution twice. The task (``task:``, required) picks the head:
``class_object`` (100 classes), ``class_scene`` (63), ``room_layout`` (9 outputs), ``jigsaw``
(9 tiles of 64x64 through one encoder, 1,000 permutations; the input is the tiles stacked on
the channel axis, ``[64, 64, 27]``), ``autoencoder`` and ``normal`` (a 14-layer conv/deconv
decoder to a 3-channel image), ``segmentsemantic`` (a decoder to 17-class logits). The
benchmark's images are 256x256; the default input here is smaller, the cheapest resolution
whose ranking kept a Spearman correlation >= 0.95 with the 256x256 ranking in
``benchmarks/transnas_resolution.py`` (NLC, sigma2 and the default score, class_object):
32x32 for micro cells (:data:`MICRO_RESOLUTION`; rho 0.976 NLC, 0.983 sigma2, 0.961 score
over 30 cells) and 128x128 for macro skeletons (:data:`MACRO_RESOLUTION`; rho 0.970, 0.984,
0.954 over 22 skeletons; up to four more halvings leave too little of 32x32 or 64x64, where
rho falls to 0.44-0.76). A space file's ``input: {shape: [H, W, 3]}``
chooses another (jigsaw: ``[H, W, 27]``, nine tiles, default 64x64 as the benchmark's).

Parameters (:meth:`TransNAS.params`): convolutions without bias in the encoder, affine batch
norms (2C), dense and decoder convolutions with bias, running statistics excluded; operations
in dead ends of a cell count (the benchmark's model holds them). The pixel decoders are laid
out by the benchmark's rule for a 224x224 input (its ``MacroNet`` default), which fixes how
many of their layers upsample. This reproduces every parameter count of the benchmark.

FLOPs (:meth:`TransNAS.flops`): one forward pass of one sample at the benchmark's resolution
(256x256, jigsaw nine 64x64 tiles): a multiply-accumulate counts 1, a bias 1 per output, an
affine batch norm 2 per element, a ReLU (leaky or not) and a tanh 1 per input element, global
average pooling 1 per input element; identity, ``none`` and sums 0. Against the ``flops_m`` of
NAS-Bench-Suite-Zero (``tests/data/space_reference.csv``) this is 0.99998-1 for the dense heads
(class_object, class_scene, room_layout), 1.004-1.44 for the pixel decoders (the reference
leaves their transposed convolutions and leaky ReLUs out) and 7.7-9.0 for jigsaw (the
reference counts the encoder on one tile).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import re
from typing import Any, ClassVar, Hashable, Iterator

import numpy as np

from zsad._errors import SpecError, closest
from zsad.spaces.base import BuiltinSpace, restrict

BASE = 64
MICRO_SKELETON: tuple[int, ...] = (4, 1, 4, 1, 4)
#: The benchmark's input resolution, and the default ones here (``input:`` overrides them; see above).
BENCHMARK_RESOLUTION = 256
MICRO_RESOLUTION = 32
MACRO_RESOLUTION = 128
JIGSAW_TILE = 64
_LAYOUT_RESOLUTION = 224  # the benchmark's MacroNet default: fixes the decoders' upsampling layers
TASKS: dict[str, tuple[str, int]] = {
    "class_object": ("dense", 100), "class_scene": ("dense", 63), "room_layout": ("dense", 9),
    "jigsaw": ("jigsaw", 1000), "autoencoder": ("generative", 3), "normal": ("generative", 3),
    "segmentsemantic": ("segmentation", 17),
}
OP_NAMES = ("none", "skip", "conv1x1", "conv3x3")
NUM_MICRO = 4 ** 6
#: The six edges ``(source, target)`` of a micro cell in notation order ``a_bc_def``.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for j in (1, 2, 3) for i in range(j))

_MICRO_RE = re.compile(r"^(\d+)-(\d+)-(\d)_(\d\d)_(\d\d\d)$")
_MACRO_RE = re.compile(r"^(\d+)-(\d+)-basic$")


def _fail(ctx, options: dict, name: str, expected: str, got: Any) -> SpecError:
    if ctx is not None:
        return ctx.child(options, name).error(expected, got)
    return SpecError(f"{name}: expected {expected}; got {got!r}")


# --------------------------------------------------------------------------- notation

def parse_micro(text: Any) -> tuple[int, ...]:
    """``64-41414-a_bc_def`` -> the six operation codes ``(a, b, c, d, e, f)``.

    Raises:
      SpecError: anything else; the one-line reason says what was expected.

    Examples:
      >>> parse_micro("64-41414-3_11_021")
      (3, 1, 1, 0, 2, 1)
    """
    want = "a micro cell '64-41414-a_bc_def' with digits 0-3 (0 none, 1 skip, 2 conv1x1, 3 conv3x3)"
    if not isinstance(text, str):
        raise SpecError(f"expected {want}; got {type(text).__name__}")
    m = _MICRO_RE.match(text.strip())
    if m is None:
        raise SpecError(f"expected {want}; got {text!r}")
    if int(m.group(1)) != BASE or tuple(int(d) for d in m.group(2)) != MICRO_SKELETON:
        raise SpecError(f"expected the micro skeleton '64-41414-'; got {text!r}")
    codes = tuple(int(d) for d in m.group(3) + m.group(4) + m.group(5))
    if any(c > 3 for c in codes):
        raise SpecError(f"expected {want}; got {text!r}")
    return codes


def format_micro(codes) -> str:
    """Six operation codes -> ``64-41414-a_bc_def``."""
    a, b, c, d, e, f = (int(x) for x in codes)
    return f"{BASE}-{''.join(map(str, MICRO_SKELETON))}-{a}_{b}{c}_{d}{e}{f}"


def macro_valid(digits) -> str | None:
    """Why a macro code is outside the benchmark's space, else None."""
    if not 4 <= len(digits) <= 6:
        return f"4 to 6 stage digits; got {len(digits)}"
    if any(d not in (1, 2, 3, 4) for d in digits):
        return "stage digits 1-4 (1 plain, 2 width x2, 3 stride 2, 4 both)"
    if not 1 <= sum(d in (2, 4) for d in digits) <= 3:
        return "the width doubled (digit 2 or 4) 1 to 3 times"
    if not 1 <= sum(d in (3, 4) for d in digits) <= 4:
        return "the size halved (digit 3 or 4) 1 to 4 times"
    return None


def parse_macro(text: Any) -> tuple[int, ...]:
    """``64-XXXX-basic`` -> the stage digits.

    Raises:
      SpecError: malformed, or a skeleton outside the benchmark's space.

    Examples:
      >>> parse_macro("64-41434-basic")
      (4, 1, 4, 3, 4)
    """
    want = "a macro skeleton '64-XXXX-basic' with 4 to 6 digits 1-4"
    if not isinstance(text, str):
        raise SpecError(f"expected {want}; got {type(text).__name__}")
    m = _MACRO_RE.match(text.strip())
    if m is None or int(m.group(1)) != BASE:
        raise SpecError(f"expected {want}; got {text!r}")
    digits = tuple(int(d) for d in m.group(2))
    why = macro_valid(digits)
    if why is not None:
        raise SpecError(f"expected {why.split('; got')[0]} in '64-XXXX-basic'; got {text!r}")
    return digits


def format_macro(digits) -> str:
    """Stage digits -> ``64-XXXX-basic``."""
    return f"{BASE}-{''.join(str(int(d)) for d in digits)}-basic"


def all_macro() -> list[tuple[int, ...]]:
    """The 3,256 skeletons: by length (4, 5, 6), then lexicographically."""
    return [s for n in (4, 5, 6) for s in itertools.product((1, 2, 3, 4), repeat=n) if macro_valid(s) is None]


def micro_degenerate(codes) -> str | None:
    """Why a micro cell's output is independent of its input (no path 0 -> 3 without ``none``), else None."""
    reached = {0}
    for (src, tgt), op in zip(EDGES, codes):
        if src in reached and op != 0:
            reached.add(tgt)
    return None if 3 in reached else "every path from the cell input to its output holds 'none': the output is constant"


# --------------------------------------------------------------------------- counting

def _blocks(macro) -> list[tuple[int, int, int]]:
    """``(C_in, C_out, stride)`` of every cell or block."""
    out, c = [], BASE
    for d in macro:
        t, s = (2 * c if d % 2 == 0 else c), (2 if d > 2 else 1)
        out += [(c, t, s), (t, t, 1)]
        c = t
    return out


def _rcb(ci, co, k, h_in, h_out) -> tuple[int, int]:
    """(params, flops) of ReLU-conv-BN."""
    return ci * co * k * k + 2 * co, h_in * h_in * ci + h_out * h_out * co * (ci * k * k + 2)


def _edge_cost(op, ci, co, s, h) -> tuple[int, int]:
    ho = (h + s - 1) // s
    if op == 0 or (op == 1 and s == 1 and ci == co):
        return 0, 0
    if op == 1:  # factorized reduce
        return ci * co + 2 * co, h * h * ci + ho * ho * (ci * co + 2 * co)
    return _rcb(ci, co, 1 if op == 2 else 3, h, ho)


def _encoder_cost(macro, cell, h) -> tuple[int, int, int]:
    """(params, flops, output size) of the encoder at input size ``h``."""
    half = BASE // 2
    h1 = (h + 1) // 2
    p, f = 27 * half + 2 * half, h1 * h1 * half * 29
    h2 = (h1 + 1) // 2
    dp, df = _rcb(half, BASE, 3, h1, h2)
    p, f, h = p + dp, f + df, h2
    for ci, co, s in _blocks(macro):
        ho = (h + s - 1) // s
        if cell is None:
            for a, b in (_rcb(ci, co, 3, h, ho), _rcb(co, co, 3, ho, ho)):
                p, f = p + a, f + b
            if s != 1 or ci != co:
                p, f = p + ci * co + 2 * co, f + ho * ho * co * (ci + 2)
        else:
            for (src, _), op in zip(EDGES, cell):
                a, b = _edge_cost(op, ci, co, s, h) if src == 0 else _edge_cost(op, co, co, 1, ho)
                p, f = p + a, f + b
        h = ho
    return p, f, h


def layout_width(macro) -> int:
    """Width of the encoder's output for the benchmark's 224x224 layout rule (``MacroNet.feature_dim``)."""
    w = _LAYOUT_RESOLUTION // 4
    for d in macro:
        w //= 2 if d > 2 else 1
    return w


def num_upsample(macro) -> int:
    """How many layers of a pixel decoder upsample (the benchmark's ``int(log2(256 / width))``)."""
    return int(math.log2(BENCHMARK_RESOLUTION / layout_width(macro)))


def generative_layers(num_upsample: int) -> list[tuple[int, int, bool]]:
    """``(C_in, C_out, transposed)`` of the pixel decoder after its first layer (``C_in -> 1024``)."""
    up = {3: num_upsample == 6, 5: num_upsample >= 5, 7: num_upsample >= 4, 9: num_upsample >= 3, 11: True, 13: True}
    chans = [(1024, 1024), (1024, 512), (512, 512), (512, 256), (256, 128), (128, 64), (64, 64), (64, 32),
             (32, 32), (32, 16), (16, 32), (32, 16)]
    return [(ci, co, up.get(i + 2, False)) for i, (ci, co) in enumerate(chans)]


def segmentation_layers(num_upsample: int) -> list[tuple[int, int, bool]]:
    """``(C_in, C_out, transposed)`` of the segmentation decoder after its first layer (``C_in -> 1024``)."""
    out, c = [], 1024
    for _ in range(6 - num_upsample):
        out.append((c, c // 2, False))
        c //= 2
    for _ in range(num_upsample - 1):
        out.append((c, c // 2, True))
        c //= 2
    out.append((c, c, True))
    return out


def decoder_layers(macro, kind: str) -> list[tuple[int, int, bool]]:
    """The pixel decoder of a task kind (``generative`` or ``segmentation``) after ``macro``."""
    nu = num_upsample(macro)
    return generative_layers(nu) if kind == "generative" else segmentation_layers(nu)


def _decoder_cost(layers, c_in, out_channels, h, tanh) -> tuple[int, int]:
    p = f = 0
    for ci, co, transposed in [(c_in, 1024, False), *layers]:
        ho = 2 * h if transposed else h
        p += 9 * ci * co + co + 2 * co
        f += (h * h if transposed else ho * ho) * ci * co * 9 + ho * ho * co * 4  # MACs, bias, BN, leaky ReLU
        h = ho
    p += 9 * layers[-1][1] * out_channels + out_channels
    f += h * h * out_channels * (9 * layers[-1][1] + 1 + (1 if tanh else 0))
    return p, f


def cost(macro, cell, task) -> tuple[int, int]:
    """(parameters, FLOPs) of the benchmark's network (see the module docstring for the conventions)."""
    kind, arg = TASKS[task]
    res = JIGSAW_TILE if kind == "jigsaw" else BENCHMARK_RESOLUTION
    p, f, h = _encoder_cost(macro, cell, res)
    c = _blocks(macro)[-1][1]
    if kind == "dense":
        return p + c * arg + arg, f + h * h * c + c * arg + arg
    if kind == "jigsaw":
        return p + 9 * c * arg + arg, 9 * (f + h * h * c) + 9 * c * arg + arg
    layers = decoder_layers(macro, kind)
    dp, df = _decoder_cost(layers, c, arg, h, kind == "generative")
    return p + dp, f + df


# --------------------------------------------------------------------------- the spaces

class TransNAS(BuiltinSpace):
    """Shared part of the two spaces (a :class:`~zsad.spaces.base.BuiltinSpace`)."""

    option_fields: ClassVar[tuple[str, ...]] = ("task",)
    features = "encoder"
    resolution: ClassVar[int] = BENCHMARK_RESOLUTION

    def __init__(self, task: str, resolution: int | None = None):
        if task not in TASKS:
            raise SpecError(f"task: expected one of {', '.join(TASKS)}; got {task!r}")
        self.task = task
        jigsaw = TASKS[task][0] == "jigsaw"
        side = resolution or (JIGSAW_TILE if jigsaw else self.resolution)
        self.input_shape = (side, side, 27 if jigsaw else 3)

    @classmethod
    def configure(cls, options: dict, ctx=None):
        expected = f"one of {', '.join(TASKS)}"
        if "task" not in options:
            why = f"a field 'task' ({cls.name} needs a head: {expected})"
            raise ctx.error(why) if ctx is not None else SpecError(f"task: expected {why}; got nothing")
        task = options["task"]
        if not isinstance(task, str) or task not in TASKS:
            raise _fail(ctx, options, "task", expected + closest(str(task), tuple(TASKS)), task)
        return cls(task)

    def options(self) -> dict:
        return {"task": self.task}

    def check_input(self, shape) -> str | None:
        channels = self.input_shape[-1]
        if (len(shape) != 3 or shape[0] != shape[1] or shape[-1] != channels or isinstance(shape[0], bool)
                or not isinstance(shape[0], int) or shape[0] < 8):
            tiles = " (nine RGB tiles)" if channels == 27 else ""
            return f"[S, S, {channels}]{tiles} with a side S >= 8"
        return None

    def with_input(self, shape) -> "TransNAS":
        why = self.check_input(shape)
        if why is not None:
            raise SpecError(f"{self.name}: input shape {list(shape)}: expected {why}")
        out = copy.copy(self)
        out.input_shape = tuple(int(v) for v in shape)
        return out

    def _parts(self, arch) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        raise NotImplementedError

    def params(self, arch) -> int:
        return cost(*self._parts(arch), self.task)[0]

    def flops(self, arch) -> int:
        return cost(*self._parts(arch), self.task)[1]

    def _layer_names(self, macro, basic: bool) -> list[str]:
        kind = TASKS[self.task][0]
        n = 2 * len(macro)
        names = ["stem"] + [f"{'block' if basic else 'cell'}{i}" for i in range(n - 1)] + ["encoder"]
        if kind in ("generative", "segmentation"):
            names += [f"decoder{i + 1}" for i in range(1 + len(decoder_layers(macro, kind)))]
        return names + ["head"]

    def _build(self, macro, cell, basic: bool, ops=None):
        """The network of ``macro`` with micro cell ``cell`` (None and not ``basic``: the masked program);
        built once per configuration (programs are traced to lay out their variables)."""
        return _build(self.task, tuple(self.input_shape), tuple(macro), cell, basic, ops,
                      tuple(self._layer_names(macro, basic)))


@functools.lru_cache(maxsize=32)
def _build(task, input_shape, macro, cell, basic, ops, layer_names):
    import jax.numpy as jnp
    from zsad.spaces.transnas_net import make_network
    kind, arg = TASKS[task]
    pixel = kind in ("generative", "segmentation")
    decoder = tuple(decoder_layers(macro, kind)) if pixel else ()
    blocks = tuple((co, s) for _, co, s in _blocks(macro))
    kw = dict(base=BASE, blocks=blocks, basic=basic, head=(kind, arg), decoder=decoder, cell=cell)
    scalars = default_scalars()
    if ops is not None:
        scalars["ops"] = jnp.asarray(ops, jnp.int32)
    return make_network(kw, layer_names, input_shape, scalars)


def default_scalars() -> dict:
    """``weight_std`` sqrt(2) (critical for ReLU), ``bias_std`` 0."""
    import jax.numpy as jnp
    dtype = jnp.result_type(float)
    return {"weight_std": jnp.asarray(math.sqrt(2.0), dtype), "bias_std": jnp.asarray(0.0, dtype)}


def _shapes(net):
    """The variables' shapes of ``net`` (nothing computed)."""
    import jax
    return jax.eval_shape(net.init, jax.random.key(0), net.scalars)


def _check_sample(n, size) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= size:
        raise SpecError(f"sample: expected an integer in 0..{size}; got {n!r}")
    return int(n)


class TransNASMicro(TransNAS):
    """TransNAS-Bench-101 micro: 4,096 cells on the skeleton ``64-41414``; one program per task."""

    name: ClassVar[str] = "transnas-micro"
    aliases: ClassVar[tuple[str, ...]] = ("transnas_micro", "tnb-micro", "tnb_micro")
    notation: ClassVar[str] = "'64-41414-a_bc_def' (digits 0 none, 1 skip, 2 conv1x1, 3 conv3x3)"
    size = NUM_MICRO
    resolution: ClassVar[int] = MICRO_RESOLUTION
    #: The stage digits the cells are stacked on (the benchmark's ``41414``).
    skeleton: tuple[int, ...] = MICRO_SKELETON

    def __init__(self, task: str, resolution: int | None = None, skeleton: tuple[int, ...] | None = None):
        """``skeleton``: another stack of stages (a shorter one builds a smaller network of the same cells,
        for tests); its parameter counts are then not the benchmark's."""
        super().__init__(task, resolution)
        if skeleton is not None:
            self.skeleton = tuple(skeleton)

    def parse(self, node) -> tuple[int, ...]:
        return parse_micro(node)

    def format(self, arch) -> str:
        return format_micro(arch)

    def all(self) -> Iterator[tuple[int, ...]]:
        return iter(itertools.product(range(4), repeat=6))

    def sample(self, n: int, seed: int) -> list[tuple[int, ...]]:
        picks = np.random.default_rng(seed).choice(NUM_MICRO, size=_check_sample(n, NUM_MICRO), replace=False)
        return [tuple(int(c) for c in np.base_repr(int(i), 4).zfill(6)) for i in picks]

    def _parts(self, arch):
        return self.skeleton, tuple(arch)

    def degenerate(self, arch) -> str | None:
        return micro_degenerate(arch)

    def group(self, arch) -> Hashable:
        return "micro"

    def program(self, group: Hashable):
        return self._build(self.skeleton, None, False, ops=(3,) * 6)

    def scalars(self, arch) -> dict:
        import jax.numpy as jnp
        return {**default_scalars(), "ops": jnp.asarray(arch, jnp.int32)}

    def network(self, arch):
        """The cell's own network (only its operations are computed); ``init`` takes the variables the
        masked program draws from the same key, so both hold the same values."""
        import jax.numpy as jnp

        net = self._build(self.skeleton, tuple(arch), False)
        program = self.program(self.group(arch))
        template = _shapes(net)

        def init(key, scalars):
            return restrict(program.init(key, {**scalars, "ops": jnp.zeros((6,), jnp.int32)}), template)

        return net._replace(init=init)


class TransNASMacro(TransNAS):
    """TransNAS-Bench-101 macro: 3,256 residual skeletons; every skeleton has its own shapes, hence its
    own program (``group(a) == a``)."""

    name: ClassVar[str] = "transnas-macro"
    aliases: ClassVar[tuple[str, ...]] = ("transnas_macro", "tnb-macro", "tnb_macro")
    notation: ClassVar[str] = "'64-XXXX-basic' (4 to 6 digits: 1 plain, 2 width x2, 3 stride 2, 4 both)"
    size = 3256
    resolution: ClassVar[int] = MACRO_RESOLUTION

    def parse(self, node) -> tuple[int, ...]:
        return parse_macro(node)

    def format(self, arch) -> str:
        return format_macro(arch)

    def all(self) -> Iterator[tuple[int, ...]]:
        return iter(all_macro())

    def sample(self, n: int, seed: int) -> list[tuple[int, ...]]:
        space = all_macro()
        picks = np.random.default_rng(seed).choice(len(space), size=_check_sample(n, len(space)), replace=False)
        return [space[int(i)] for i in picks]

    def _parts(self, arch):
        return tuple(arch), None

    def degenerate(self, arch) -> str | None:
        return None  # every block adds its input: the output always depends on it

    def group(self, arch) -> Hashable:
        return tuple(arch)

    def program(self, group: Hashable):
        return self._build(tuple(group), None, True)

    def scalars(self, arch) -> dict:
        return default_scalars()

    def network(self, arch):
        return self._build(tuple(arch), None, True)
