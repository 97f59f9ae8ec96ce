"""A plain PyTorch implementation of zsad's NLC estimator, for checking and for speed comparisons.

Run (the correctness check; a few minutes on two cores):

    .venv/bin/python benchmarks/torch_reference.py [--seeds 4] [--batch 64] [--tangents 2] [--nb201 2]

The estimator is the one of ``zsad/nlc.py``, written out eagerly with
``torch.func.jvp`` on the CPU. For a batch ``x_1..x_n`` with mean ``mu`` and
``K`` random derangements ``pi_k`` (each a uniformly random single n-cycle:
``pi(o_i) = o_{i+1}`` for a random order ``o``)::

    numerator   = mean_{k,i} || J(x_i) (x_{pi_k(i)} - mu) ||²     (one jvp per tangent k, batched over i)
    denominator = sum_j Var_i f_j(x_i)                             (biased variance)
    NLC         = sqrt(numerator / denominator)                    (NaN if the output is constant)

One initialization ("seed") draws the weights, calibrates batch norm on the
scoring batch (training-mode statistics: batch mean and biased variance, then
frozen, so the network is a per-sample function, as zsad does) and evaluates
the estimator; the reported NLC of an architecture is the mean over seeds, as
in ``zsad rank``. zsad computes one forward linearization and pushes the K
tangents through it; here each tangent is one ``torch.func.jvp`` call (primal
and tangent together), the straightforward eager form.

Networks:

* architecture files (``zsad.arch.spec.Architecture``, as parsed by zsad):
  ``dense``, ``activation`` (every zsad activation, with shaping and
  parameters), ``block``/``repeat``, ``residual`` (branch, shortcut, scales),
  ``layer_norm``, ``batch_norm`` (calibrated, then frozen) and ``flatten``;
  initialization ``normal``, ``truncated_normal``, ``uniform``, ``orthogonal``
  with Var(W) = weight_std²/fan_in and biases N(0, bias_std²), per-layer
  overrides included. Convolutions and pooling are not supported (the MLP
  space of the benchmarks does not use them).
* PyTorch modules (:class:`TorchModule`): a ``torch.nn.Module`` run as it is, its own
  initialization, batch norm calibrated and frozen as above.
* NAS-Bench-201 (Dong & Yang, ICLR 2020), built as ``zsad.spaces.nasbench201_net.build_network`` builds
  one architecture: stem conv3x3 3->16 (no bias) + BN; three stages of five
  cells (C = 16, 32, 64) with residual reduction blocks between them
  (ReLU-conv3x3 stride 2-BN, ReLU-conv3x3-BN, shortcut 2x2 average pool then
  conv1x1, summed); head BN-ReLU-global average pool-dense 64->10. Cell ops:
  ``none``, ``skip_connect``, ``nor_conv_1x1``/``nor_conv_3x3``
  (ReLU-conv-BN, no conv bias, padding k//2), ``avg_pool_3x3`` (padding not
  counted). Edges that are ``none`` or cannot reach node 3 are skipped; a
  convolution whose input node is still empty runs on zeros (as in zsad).
  Kernels N(0, weight_std²/fan_in) with weight_std = sqrt(2), dense bias
  N(0, bias_std²) with bias_std = 0, BN scale 1 and shift 0. Layout NCHW.

The rest of ``zsad rank``'s default metrics (sigma2, NASWOT, synflow, grad_norm, snip, jacob_cov) are
in ``benchmarks/torch_metrics.py``, on the models defined here.

Random numbers come from ``torch.Generator`` (initialization and permutations
from separate streams, so the weights of a seed do not depend on the batch
size or the number of tangents); the inputs are zsad's (``zsad.data``), so the
two implementations differ only in their random numbers. The check below
therefore compares them two ways:

1. same weights and permutations: zsad's own weights (``zsad.build`` /
   ``zsad.spaces.nasbench201_net.build_network``) and tangents
   (``zsad.nlc.derangement_tangents``) copied into this implementation; the
   two NLCs must agree to float32 rounding;
2. independent random numbers: the mean NLC over seeds of each implementation
   (zsad's from ``zsad.rank.rank_space``) must agree within the spread over
   seeds (a z-score: difference / standard error of the difference).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zsad.arch.spec import (  # noqa: E402  (after the path set-up)
    Activation, Architecture, BatchNorm, Block, Dense, Flatten, LayerNorm, Residual, expand, layer_label,
    named_layers,
)

_TRUNC_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2] (zsad.arch.weights)
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NB201_CHANNELS = (16, 32, 64)
NB201_CELLS = 5
NB201_EPS = 1e-5
_CONV_K = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


# --------------------------------------------------------------------------- the estimator

def derangements(n: int, num: int, generator: torch.Generator) -> torch.Tensor:
    """``[num, n]`` index arrays, each a uniformly random single n-cycle (a derangement)."""
    out = torch.empty((num, n), dtype=torch.long)
    for k in range(num):
        order = torch.randperm(n, generator=generator)
        out[k, order] = torch.roll(order, -1)
    return out


def nlc(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tangents: torch.Tensor) -> dict:
    """NLC of the per-sample batched function ``fn`` on ``x`` with the centred tangents ``[K, n, ...]``.

    Returns ``{nlc, numerator, denominator, finite}`` as Python floats/bools.
    """
    y, num = None, 0.0
    for t in tangents:
        y_k, jt = torch.func.jvp(fn, (x,), (t,))
        y = y_k if y is None else y
        num = num + jt.reshape(jt.shape[0], -1).square().sum(1).mean()
    num = num / tangents.shape[0]
    yf = y.reshape(y.shape[0], -1)
    den = yf.var(0, unbiased=False).sum()
    scale = yf.square().mean(0).sum()
    eps = torch.finfo(yf.dtype).eps
    constant = bool(den <= (1000 * eps) ** 2 * scale)
    finite = bool(torch.isfinite(yf).all() and torch.isfinite(num) and torch.isfinite(den))
    value = float("nan") if constant else float(torch.sqrt(num / den))
    return {"nlc": value, "numerator": float(num), "denominator": float(den), "finite": finite,
            "constant": constant}


def centred_tangents(x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """``x[pi_k] - mean(x)`` for every permutation row of ``perms``."""
    mu = x.mean(0, keepdim=True)
    return torch.stack([x[p] - mu for p in perms])


class BNState:
    """Batch-norm statistics: recorded in call order while calibrating, then replayed frozen.

    Modes (:meth:`start`): ``"calibrate"`` (training mode: batch mean and biased variance, recorded),
    ``"frozen"`` (the recorded statistics, in call order from ``at``) and ``"init"`` (the statistics of a
    freshly initialized network, mean 0 and variance 1: eval mode at initialization).
    """

    def __init__(self):
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.mode = "frozen"
        self.i = 0

    def start(self, calibrating: bool | str, at: int = 0) -> None:
        self.mode = {True: "calibrate", False: "frozen"}.get(calibrating, calibrating)
        self.i = at
        if self.mode == "calibrate":
            self.stats = []

    def __call__(self, x: torch.Tensor, channel_axis: int, eps: float, scale=None, bias=None) -> torch.Tensor:
        axes = tuple(a for a in range(x.ndim) if a != channel_axis)
        shape = [1] * x.ndim
        shape[channel_axis] = x.shape[channel_axis]
        if self.mode == "calibrate":
            m = x.mean(axes)
            v = (x - m.reshape(shape)).square().mean(axes)
            self.stats.append((m.detach(), v.detach()))
        elif self.mode == "init":
            m, v = x.new_zeros(x.shape[channel_axis]), x.new_ones(x.shape[channel_axis])
        else:
            m, v = self.stats[self.i]
            self.i += 1
        mult = torch.rsqrt(v + eps)
        if scale is not None:
            mult = mult * scale
        y = (x - m.reshape(shape)) * mult.reshape(shape)
        return y if bias is None else y + bias.reshape(shape)


class Model:
    """A network as plain functions of an explicit parameter dict (no autograd graph kept).

    ``forward(params, x, bn, taps)`` appends to the list ``taps`` (when given) the outputs whose signs
    are NASWOT's codes (:meth:`calibrate` collects them from the calibration pass);
    :meth:`segment` gives the map of sigma2's Jacobian; :attr:`kernels` names the parameters that the
    parameter-wise proxies sum over (dense and convolution kernels).
    """

    kernels: tuple[str, ...] = ()

    def init(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, params: dict, x: torch.Tensor, bn: BNState, taps: list | None = None) -> torch.Tensor:
        raise NotImplementedError

    def to_torch_input(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(x, copy=True))

    def calibrate(self, params: dict, x: torch.Tensor, taps: list | None = None) -> BNState:
        """Batch-norm statistics of ``x`` (training mode), recorded for the frozen network."""
        bn = BNState()
        bn.start(True)
        with torch.no_grad():
            self.forward(params, x, bn, taps)
        return bn

    def frozen(self, params: dict, bn: BNState) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-sample function with the statistics of ``bn`` frozen."""

        def fn(z):
            bn.start(False)
            return self.forward(params, z, bn)

        return fn

    def per_sample(self, params: dict, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Calibrates batch norm on ``x`` and returns the frozen, per-sample function."""
        return self.frozen(params, self.calibrate(params, x))

    def segment(self, params: dict, bn: BNState, x: torch.Tensor):
        """``(h, fn)``: sigma2's points (from the samples ``x``) and per-sample map, batch norm frozen."""
        return x, self.frozen(params, bn)


def score(model: Model, x: np.ndarray, *, seeds: int, tangents: int, seed: int = 0) -> dict:
    """NLC over ``seeds`` initializations: ``{mean, std (ddof=1), per_seed}`` (NaN seeds excluded)."""
    xt = model.to_torch_input(x)
    values = []
    for s in range(seeds):
        g_init = torch.Generator().manual_seed(1_000_003 * seed + 2 * s)
        g_perm = torch.Generator().manual_seed(1_000_003 * seed + 2 * s + 1)
        params = model.init(g_init)
        fn = model.per_sample(params, xt)
        t = centred_tangents(xt, derangements(xt.shape[0], tangents, g_perm))
        with torch.no_grad():
            r = nlc(fn, xt, t)
        values.append(r["nlc"] if r["finite"] else float("nan"))
    good = [v for v in values if math.isfinite(v)]
    return {"mean": float(np.mean(good)) if good else None,
            "std": float(np.std(good, ddof=1)) if len(good) > 1 else None, "per_seed": values}


# --------------------------------------------------------------------------- architecture files (MLPs)

def _act(fn: str, params: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    table = {
        "relu": torch.relu,
        "leaky_relu": lambda x: F.leaky_relu(x, params.get("negative_slope", 0.01)),
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "gelu": lambda x: F.gelu(x, approximate="none"),
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "swish": F.silu,
        "silu": F.silu,
        "selu": F.selu,
        "elu": lambda x: F.elu(x, params.get("alpha", 1.0)),
        "erf": torch.erf,
        "softplus": F.softplus,
        "identity": lambda x: x,
    }
    if fn not in table:
        raise NotImplementedError(f"activation {fn!r}")
    return table[fn]


def _shaped(layer: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    phi = _act(layer.fn, dict(layer.params))
    a, b, g = layer.shaping.alpha, layer.shaping.beta, layer.shaping.gain
    if (a, b, g) == (1.0, 1.0, 1.0):
        return phi
    return lambda x: g * (a * phi(b * x) / b + (1.0 - a) * x)


def _unit_weights(shape: tuple[int, int], dist: str, g: torch.Generator) -> torch.Tensor:
    fan_in = shape[0]
    if dist == "normal":
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)
    if dist == "truncated_normal":
        w = torch.empty(shape)
        torch.nn.init.trunc_normal_(w, 0.0, 1.0, -2.0, 2.0, generator=g)
        return w / (_TRUNC_STD * math.sqrt(fan_in))
    if dist == "uniform":
        bound = math.sqrt(3.0 / fan_in)
        return (torch.rand(shape, generator=g) * 2 - 1) * bound
    if dist in ("orthogonal", "delta_orthogonal"):
        w = torch.empty(shape)
        torch.nn.init.orthogonal_(w, generator=g)
        return w
    raise NotImplementedError(f"init distribution {dist!r}")


def _bn_count(layer) -> int:
    """Batch norms that one top-level layer applies (inside residual branches too)."""
    if isinstance(layer, BatchNorm):
        return 1
    if isinstance(layer, Residual):
        return sum(_bn_count(sub) for sub in (*expand(layer.shortcut), *expand(layer.branch)))
    return 0


class MLP(Model):
    """A zsad architecture file of dense / activation / norm / residual layers.

    Parameter names follow zsad (``"0.dense.kernel"``, ``"3.residual/branch.0.dense.bias"``), kernels are
    ``[in, out]`` as in zsad, so zsad's own weights can be copied in (:meth:`from_zsad`).
    """

    def __init__(self, arch: Architecture):
        if arch.module is not None:
            raise NotImplementedError("flax entry points")
        self.arch = arch
        self.in_dim = int(np.prod(arch.input.shape))
        self.shapes: dict[str, tuple[int, ...]] = {}
        shape = tuple(arch.input.shape)
        self._plan(arch.layers, "", shape)
        self.kernels = tuple(name for name in self.shapes if name.endswith(".kernel"))
        self.top = named_layers(tuple(expand(arch.layers)))  # the top-level layers, blocks unrolled
        # batch norms before each top-level layer (where a segment's frozen statistics start)
        self.bn_before = np.cumsum([0] + [_bn_count(layer) for _, layer in self.top]).tolist()

    def _plan(self, layers, prefix: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        for name, layer in named_layers(tuple(expand(layers)), prefix):
            if isinstance(layer, Dense):
                self.shapes[f"{name}.kernel"] = (shape[-1], layer.features)
                if layer.use_bias:
                    self.shapes[f"{name}.bias"] = (layer.features,)
                shape = (*shape[:-1], layer.features)
            elif isinstance(layer, (LayerNorm, BatchNorm)):
                self.shapes[f"{name}.scale"] = (shape[-1],)
                self.shapes[f"{name}.bias"] = (shape[-1],)
            elif isinstance(layer, Flatten):
                shape = (int(np.prod(shape)),)
            elif isinstance(layer, Residual):
                s1 = self._plan(layer.shortcut, f"{name}/shortcut.", shape)
                s2 = self._plan(layer.branch, f"{name}/branch.", shape)
                if s1 != s2:
                    raise ValueError(f"{name}: shortcut {s1} and branch {s2} shapes differ")
                shape = s2
            elif isinstance(layer, Block):  # expand() already unrolled blocks
                raise AssertionError
            elif not isinstance(layer, Activation):
                raise NotImplementedError(f"layer type {type(layer).__name__}")
        return shape

    def _inits(self, layers, prefix: str, out: dict) -> None:
        for name, layer in named_layers(tuple(expand(layers)), prefix):
            if isinstance(layer, Dense):
                out[name] = layer
            elif isinstance(layer, Residual):
                self._inits(layer.shortcut, f"{name}/shortcut.", out)
                self._inits(layer.branch, f"{name}/branch.", out)

    def init(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        dense: dict[str, Dense] = {}
        self._inits(self.arch.layers, "", dense)
        params: dict[str, torch.Tensor] = {}
        for name, shape in self.shapes.items():
            layer_name, _, leaf = name.rpartition(".")
            if layer_name in dense:
                init = dense[layer_name].init
                if leaf == "kernel":
                    params[name] = init.weight_std * _unit_weights(shape, init.dist, generator)
                else:
                    params[name] = init.bias_std * torch.randn(shape, generator=generator)
            else:
                params[name] = torch.ones(shape) if leaf == "scale" else torch.zeros(shape)
        return params

    def forward(self, params: dict, x: torch.Tensor, bn: BNState, taps: list | None = None, start: int = 0,
                stop: int | None = None) -> torch.Tensor:
        """Top-level layers ``start .. stop-1``; ``taps``: the pre-activations of the top-level activation
        layers (the previous layer's output; the input before a first activation), as zsad's NASWOT codes."""
        top = self.top[start:stop]
        for i, (_, layer) in enumerate(top, start=start):
            if taps is not None and isinstance(layer, Activation):
                taps.append(x)
            x = self._run((layer,), "", params, x, bn, offset=i)
        return x

    def segment(self, params: dict, bn: BNState, x: torch.Tensor):
        """zsad score's default segment (``zsad.score.resolve_between``): the hidden, square-ish part."""
        from zsad.score import resolve_between

        start, stop, _ = resolve_between(self.arch, [name for name, _ in self.top], None)

        def part(z, a, b):
            bn.start(False, at=self.bn_before[a])
            return self.forward(params, z, bn, start=a, stop=b)

        with torch.no_grad():
            h = x if start == 0 else part(x, 0, start)
        return h, lambda z: part(z, start, stop)

    def _run(self, layers, prefix, params, x, bn, offset: int = 0):
        for i, layer in enumerate(expand(layers), start=offset):
            name = f"{prefix}{i}.{layer_label(layer)}"
            if isinstance(layer, Dense):
                x = x @ params[f"{name}.kernel"]
                if layer.use_bias:
                    x = x + params[f"{name}.bias"]
            elif isinstance(layer, Activation):
                x = _shaped(layer)(x)
            elif isinstance(layer, LayerNorm):
                m = x.mean(-1, keepdim=True)
                v = (x - m).square().mean(-1, keepdim=True)
                x = (x - m) * torch.rsqrt(v + layer.epsilon) * params[f"{name}.scale"] + params[f"{name}.bias"]
            elif isinstance(layer, BatchNorm):
                x = bn(x, x.ndim - 1, layer.epsilon, params[f"{name}.scale"], params[f"{name}.bias"])
            elif isinstance(layer, Flatten):
                x = x.reshape(x.shape[0], -1)
            elif isinstance(layer, Residual):
                short = self._run(layer.shortcut, f"{name}/shortcut.", params, x, bn)
                branch = self._run(layer.branch, f"{name}/branch.", params, x, bn)
                x = layer.shortcut_scale * short + layer.branch_scale * branch
        return x

    def from_zsad(self, variables: dict) -> dict[str, torch.Tensor]:
        """zsad's variables (``zsad.build(arch).init``) as this model's parameter dict."""
        p = variables["params"]
        out = {}
        for name in self.shapes:
            layer_name, _, leaf = name.rpartition(".")
            out[name] = torch.from_numpy(np.array(p[layer_name.replace("/", "|")][leaf]))
        return out


# --------------------------------------------------------------------------- NAS-Bench-201

def live_edges(ops: Sequence[str]) -> tuple[bool, ...]:
    """Edges whose op is not ``none`` and whose target reaches node 3 through such edges."""
    reaches = {3}
    for node in (2, 1, 0):
        if any(src == node and tgt in reaches and ops[e] != "none" for e, (src, tgt) in enumerate(NB201_EDGES)):
            reaches.add(node)
    return tuple(ops[e] != "none" and tgt in reaches for e, (src, tgt) in enumerate(NB201_EDGES))


class NB201(Model):
    """One NAS-Bench-201 architecture (six op names), NCHW, only its live operations computed."""

    def __init__(self, ops: Sequence[str], weight_std: float = math.sqrt(2.0), bias_std: float = 0.0):
        self.ops = tuple(ops)
        assert len(self.ops) == 6 and all(o in NB201_OPS for o in self.ops), ops
        self.live = live_edges(self.ops)
        self.weight_std, self.bias_std = weight_std, bias_std
        self.kernels = tuple(name for name in self.kernel_shapes() if name != "head_bias")

    def to_torch_input(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))  # NHWC -> NCHW

    def kernel_shapes(self) -> dict[str, tuple[int, int, int, int]]:
        """Every convolution kernel (OIHW) and the dense head, in a fixed order."""
        out: dict[str, tuple] = {"stem": (NB201_CHANNELS[0], 3, 3, 3)}
        for s, c in enumerate(NB201_CHANNELS):
            if s > 0:
                cp = NB201_CHANNELS[s - 1]
                out[f"reduction{s}/conv_a"] = (c, cp, 3, 3)
                out[f"reduction{s}/conv_b"] = (c, c, 3, 3)
                out[f"reduction{s}/shortcut"] = (c, cp, 1, 1)
            for cell in range(NB201_CELLS):
                for e, op in enumerate(self.ops):
                    if op in _CONV_K and self.live[e]:
                        k = _CONV_K[op]
                        out[f"stage{s + 1}/cell{cell}/edge{e}"] = (c, c, k, k)
        out["head_kernel"] = (NB201_CHANNELS[-1], 10)
        out["head_bias"] = (10,)
        return out

    def init(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        params = {}
        for name, shape in self.kernel_shapes().items():
            if name == "head_bias":
                params[name] = self.bias_std * torch.randn(shape, generator=generator)
            else:
                fan_in = shape[0] if name == "head_kernel" else int(np.prod(shape[1:]))
                params[name] = (self.weight_std / math.sqrt(fan_in)) * torch.randn(shape, generator=generator)
        return params

    def from_zsad(self, variables: dict) -> dict[str, torch.Tensor]:
        """zsad's variables (``zsad.spaces.nasbench201_net.build_network(ops).init``) as this model's parameter dict."""
        p = variables["params"]
        conv = lambda w: torch.from_numpy(np.array(w).transpose(3, 2, 0, 1).copy())  # noqa: E731  HWIO -> OIHW
        out = {"stem": conv(p["stem_conv"]["kernel"])}
        for s in range(len(NB201_CHANNELS)):
            if s > 0:
                r = p[f"reduction{s}"]
                out[f"reduction{s}/conv_a"] = conv(r["conv_a"]["conv"]["kernel"])
                out[f"reduction{s}/conv_b"] = conv(r["conv_b"]["conv"]["kernel"])
                out[f"reduction{s}/shortcut"] = conv(r["shortcut"]["kernel"])
            for cell in range(NB201_CELLS):
                for e, op in enumerate(self.ops):
                    if op in _CONV_K and self.live[e]:
                        src, tgt = NB201_EDGES[e]
                        w = p[f"stage{s + 1}"][f"edge_{src}_{tgt}_{op}"]["conv"]["kernel"][cell]
                        out[f"stage{s + 1}/cell{cell}/edge{e}"] = conv(w)
        out["head_kernel"] = torch.from_numpy(np.array(p["head_kernel"]))
        out["head_bias"] = torch.from_numpy(np.array(p["head_bias"]))
        return out

    @staticmethod
    def _relu_conv_bn(x, w, stride, bn):
        k = w.shape[-1]
        y = F.conv2d(torch.relu(x), w, stride=stride, padding=k // 2)
        return bn(y, 1, NB201_EPS)

    def _cell(self, params, prefix, x, bn):
        nodes: list[Any] = [x, None, None, None]  # None: identically zero
        for e, (src, tgt) in enumerate(NB201_EDGES):
            op, h = self.ops[e], nodes[src]
            if not self.live[e]:
                continue
            if op in _CONV_K:  # on a zero node: the conv of zeros, then BN (as zsad)
                out = self._relu_conv_bn(torch.zeros_like(x) if h is None else h, params[f"{prefix}/edge{e}"], 1, bn)
            elif h is None:
                out = None
            elif op == "skip_connect":
                out = h
            else:
                out = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
            if out is not None:
                nodes[tgt] = out if nodes[tgt] is None else nodes[tgt] + out
        return torch.zeros_like(x) if nodes[3] is None else nodes[3]

    def forward(self, params: dict, x: torch.Tensor, bn: BNState, taps: list | None = None,
                features: bool = False) -> torch.Tensor:
        """The logits; ``features``: the last cell's output instead (before the head). ``taps``: the outputs
        of the stem, every cell and reduction block (zsad's NASWOT code layers: every output but the head)."""
        tap = taps.append if taps is not None else (lambda _: None)
        y = bn(F.conv2d(x, params["stem"], padding=1), 1, NB201_EPS)
        tap(y)
        for s in range(len(NB201_CHANNELS)):
            if s > 0:
                a = self._relu_conv_bn(y, params[f"reduction{s}/conv_a"], 2, bn)
                b = self._relu_conv_bn(a, params[f"reduction{s}/conv_b"], 1, bn)
                y = F.conv2d(F.avg_pool2d(y, 2, 2), params[f"reduction{s}/shortcut"]) + b
                tap(y)
            for cell in range(NB201_CELLS):
                y = self._cell(params, f"stage{s + 1}/cell{cell}", y, bn)
                tap(y)
        if features:
            return y
        y = torch.relu(bn(y, 1, NB201_EPS))
        y = y.mean((2, 3))
        return y @ params["head_kernel"] + params["head_bias"]

    def segment(self, params: dict, bn: BNState, x: torch.Tensor):
        """Input to the last cell's output (``zsad.spaces.nasbench201.FEATURES``), as zsad rank's sigma2."""

        def fn(z):
            bn.start(False)
            return self.forward(params, z, bn, features=True)

        return x, fn


class TorchModule(Model):
    """A ``torch.nn.Module`` that ``factory()`` returns, run eagerly (``torch.func.functional_call``).

    ``init``: the module's own initialization, ``factory()`` after ``torch.manual_seed`` of a seed drawn from
    the generator (in a forked RNG state). Its parameters and buffers are the parameter dict. Batch norm in
    training mode (or without running statistics) is calibrated on the batch and frozen (:class:`BNState`:
    batch mean and biased variance, in call order); its running buffers are neither read nor updated. A
    batch norm in eval mode runs as PyTorch runs it. The NLC only (no code layers, segment or kernels).
    """

    def __init__(self, factory: Callable[[], torch.nn.Module]):
        self.factory = factory
        self.module = factory()
        self.bns = [m for m in self.module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                    and (m.training or not m.track_running_stats)]

    def init(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.factory()
        return {**dict(module.named_parameters()), **dict(module.named_buffers())}

    def forward(self, params: dict, x: torch.Tensor, bn: BNState, taps: list | None = None) -> torch.Tensor:
        if taps is not None:
            raise NotImplementedError("NASWOT's codes of a PyTorch module (zsad needs an architecture file's layers)")
        for m in self.bns:
            m.forward = lambda z, m=m: bn(z, 1, m.eps, m.weight, m.bias)
        try:
            return torch.func.functional_call(self.module, params, (x,))
        finally:
            for m in self.bns:
                del m.forward


def model_for(item) -> Model:
    """The torch model of a ``zsad.space.SpaceItem`` (NB201 op tuple or an Architecture)."""
    return NB201(item.arch) if isinstance(item.arch, tuple) else MLP(item.arch)


# --------------------------------------------------------------------------- checks against zsad

def _zsad_same_weights(item, x: np.ndarray, tangents: int, key_seed: int):
    """zsad's NLC for one initialization, its variables, and its centred tangents (public API only)."""
    import jax
    import jax.numpy as jnp

    from zsad.nlc import derangement_tangents, nlc_profile

    net = zsad_network(item)
    k_init, k_tan = jax.random.split(jax.random.key(key_seed))
    xj = jnp.asarray(x)
    v = net.calibrate(net.init(k_init, net.scalars), net.scalars, xj)
    r = nlc_profile(lambda z: net.apply(v, net.scalars, z)[0], xj, k_tan, num_tangents=tangents)
    t = derangement_tangents(xj, k_tan, tangents)
    return float(r.nlc), v, np.asarray(t)


def check_same_weights(items, x_for, tangents: int) -> list[dict]:
    rows = []
    for item in items:
        x = x_for(item)
        z, variables, t = _zsad_same_weights(item, x, tangents, key_seed=7)
        model = model_for(item)
        params = model.from_zsad(variables)
        xt = model.to_torch_input(x)
        tt = torch.stack([model.to_torch_input(tk) for tk in t])
        fn = model.per_sample(params, xt)
        with torch.no_grad():
            r = nlc(fn, xt, tt)
        rows.append({"arch": item.id, "zsad": z, "torch": r["nlc"], "rel_diff": abs(r["nlc"] - z) / abs(z)})
    return rows


def zsad_network(item):
    """zsad's network of a space item: ``zsad.build`` or ``zsad.spaces.nasbench201_net.build_network``."""
    if isinstance(item.arch, tuple):
        from zsad.spaces import nasbench201_net as nb

        return nb.build_network(item.arch)
    from zsad import build

    return build(item.arch)


def check_seed_spread(space, x_for, *, seeds: int, batch: int, tangents: int) -> list[dict]:
    from zsad.rank import RankOptions, rank_space

    res = rank_space(space, RankOptions(seeds=seeds, batch=batch, tangents=tangents, metrics=("nlc", "params")))
    zs = {r["arch"]: r for r in res.rows}
    rows = []
    for item in space:
        t = score(model_for(item), x_for(item), seeds=seeds, tangents=tangents)
        z = zs[item.id]
        se = math.sqrt((z["nlc_std"] ** 2 + t["std"] ** 2) / seeds)
        rows.append({"arch": item.id, "zsad_mean": z["nlc"], "zsad_std": z["nlc_std"], "torch_mean": t["mean"],
                     "torch_std": t["std"], "diff": t["mean"] - z["nlc"], "z": (t["mean"] - z["nlc"]) / se})
    return rows


CHECK_MLPS = [
    {"name": "tanh-mlp", "input": {"shape": [64]}, "init": {"weight_std": 1.5, "bias_std": 0.1},
     "layers": [{"type": "block", "repeat": 4, "layers": [{"type": "dense", "features": 128},
                                                           {"type": "activation", "fn": "tanh"}]},
                {"type": "dense", "features": 10}]},
    {"name": "relu-resnet-ln", "input": {"shape": [64]}, "init": {"weight_std": 1.41},
     "layers": [{"type": "dense", "features": 128},
                {"type": "residual", "repeat": 3, "branch_scale": 0.7,
                 "branch": [{"type": "layer_norm"}, {"type": "activation", "fn": "relu"},
                            {"type": "dense", "features": 128}]},
                {"type": "activation", "fn": "gelu"}, {"type": "dense", "features": 10}]},
    {"name": "bn-selu-mlp", "input": {"shape": [64]}, "init": {"dist": "truncated_normal", "weight_std": 1.2},
     "layers": [{"type": "dense", "features": 128}, {"type": "batch_norm"},
                {"type": "activation", "fn": "selu"},
                {"type": "dense", "features": 128, "init": {"dist": "orthogonal"}},
                {"type": "activation", "fn": "leaky_relu", "negative_slope": 0.2},
                {"type": "dense", "features": 10}]},
]
CHECK_NB201 = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|",
    "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="initializations per architecture (spread check)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tangents", type=int, default=2)
    parser.add_argument("--nb201", type=int, default=2, help="NB201 architectures to check")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "torch_reference.json")
    args = parser.parse_args()

    from zsad.data import load_inputs
    from zsad.space import parse_space

    mlp_space = parse_space({"archs": CHECK_MLPS})
    nb_space = parse_space({"space": "nas-bench-201", "archs": CHECK_NB201[: args.nb201]})

    def x_for(item):
        inp = nb_space.input if isinstance(item.arch, tuple) else item.arch.input
        return load_inputs(inp, args.batch, seed=0)

    t0 = time.perf_counter()
    same = check_same_weights(list(mlp_space) + list(nb_space), x_for, args.tangents)
    print("## Same weights and permutations (zsad's, copied into torch)\n")
    print("| architecture | zsad NLC | torch NLC | relative difference |\n|---|---|---|---|")
    for r in same:
        print(f"| `{r['arch']}` | {r['zsad']:.6f} | {r['torch']:.6f} | {r['rel_diff']:.1e} |")
    spread = check_seed_spread(mlp_space, x_for, seeds=args.seeds, batch=args.batch, tangents=args.tangents)
    spread += check_seed_spread(nb_space, x_for, seeds=args.seeds, batch=args.batch, tangents=args.tangents)
    print(f"\n## Independent random numbers: mean NLC over {args.seeds} seeds (batch {args.batch}, "
          f"{args.tangents} tangents)\n")
    print("| architecture | zsad mean ± std | torch mean ± std | difference | z |\n|---|---|---|---|---|")
    for r in spread:
        print(f"| `{r['arch']}` | {r['zsad_mean']:.4f} ± {r['zsad_std']:.4f} | {r['torch_mean']:.4f} ± "
              f"{r['torch_std']:.4f} | {r['diff']:+.4f} | {r['z']:+.2f} |")
    elapsed = time.perf_counter() - t0
    print(f"\nmax relative difference (same weights): {max(r['rel_diff'] for r in same):.1e}; "
          f"max |z| (independent): {max(abs(r['z']) for r in spread):.2f}; {elapsed:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"options": {"seeds": args.seeds, "batch": args.batch,
                                                  "tangents": args.tangents},
                                     "same_weights": same, "seed_spread": spread, "seconds": elapsed},
                                    indent=2) + "\n")


if __name__ == "__main__":
    main()
