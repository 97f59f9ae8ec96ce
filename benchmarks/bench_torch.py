"""PyTorch modules: zsad through torchax against the eager PyTorch estimator, side by side in one run.

Run (several minutes on two cores; nice it on a shared machine):

    .venv/bin/python benchmarks/bench_torch.py [--batch 16] [--seeds 2] [--tangents 2] [--space-batch 32] \
        [--out benchmarks/results/bench_torch.json]

Two workloads, each the NLC (mean over seeds) and nothing else:

* torchvision's ResNet-18 (``weights=None``, 10 classes) at 3 x 32 x 32, its own PyTorch
  initialization per seed. zsad: ``zsad.score.make_profile_fn`` (the NLC profile program of ``zsad
  score``: initialization on the host, batch norm calibrated on the batch and frozen, the tangents pushed
  forward). Reported: conversion (``zsad.build``: importing the factory, converting with torchax and
  tracing once for the layer names), the first call (tracing and XLA compilation included) and warm calls
  (median of three). Eager: :class:`benchmarks.torch_reference.TorchModule` and its estimator (one
  ``torch.func.jvp`` per tangent), an untimed warm-up, then the median of three timed passes;
* a space of 50 architectures (:mod:`benchmarks.torch_space_models`): five PyTorch structures (three MLPs,
  two CNNs with batch norm) x ten initializations from the file's ``init:`` (zsad's normal distribution,
  weight_std 1, 1.25, 1.5, 1.75, 2 x bias_std 0, 0.2), at 3 x 16 x 16. zsad: ``zsad.rank.rank_space``
  (metrics nlc; one program per structure shared by its ten initializations), cold (first call: conversion,
  tracing, compilation) and warm (a second call, programs compiled). Eager: the same modules with the same
  distributions drawn by torch, an untimed warm-up over the five structures, then one timed pass.

The two engines use independent random numbers (same inputs); agreement is the Spearman correlation of
their mean NLCs over the space and the ratio of their ResNet-18 NLCs. Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from zsad import torch_bridge  # noqa: E402

torch, _, _ = torch_bridge.import_torch()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import torch_reference as ref  # noqa: E402
import torch_space_models as tsm  # noqa: E402
from zsad import build  # noqa: E402
from zsad.arch.spec import parse_architecture  # noqa: E402
from zsad.data import load_inputs  # noqa: E402
from zsad.rank import RankOptions, rank_space  # noqa: E402
from zsad.score import make_profile_fn, seed_keys  # noqa: E402
from zsad.space import parse_space  # noqa: E402

WEIGHT_STDS = (1.0, 1.25, 1.5, 1.75, 2.0)
BIAS_STDS = (0.0, 0.2)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class _Override(ref.TorchModule):
    """The eager side of ``init: {dist: normal, weight_std, bias_std}``: weights of 2+ dims N(0, w²/fan_in)
    (fan_in = in x prod(kernel)), their biases N(0, b²), the rest as the module initializes it."""

    def __init__(self, factory, weight_std: float, bias_std: float):
        super().__init__(factory)
        self.weight_std, self.bias_std = weight_std, bias_std

    def init(self, generator):
        params = super().init(generator)
        drawn = {k for k, v in params.items() if k in dict(self.module.named_parameters()) and v.ndim >= 2}
        for k in list(params):
            if k in drawn:
                fan_in = math.prod(params[k].shape[1:])
                params[k] = self.weight_std / math.sqrt(fan_in) * torch.randn(params[k].shape, generator=generator)
            elif k.endswith("bias") and k[:-4] + "weight" in drawn:
                params[k] = self.bias_std * torch.randn(params[k].shape, generator=generator)
        return params


def bench_resnet(args) -> dict:
    arch = parse_architecture({"name": "resnet18", "input": {"shape": [3, 32, 32]},
                               "module": "torch:torch_models:resnet18"}, file=str(ROOT / "examples" / "x.yaml"))
    convert, net = _timed(lambda: build(arch))
    x = jnp.asarray(load_inputs(arch.input, args.batch, seed=0))
    fn = make_profile_fn(net, args.tangents)
    keys = seed_keys(0, args.seeds)
    first, res = _timed(lambda: jax.block_until_ready(fn(keys, x, net.scalars)))
    warm = statistics.median(_timed(lambda: jax.block_until_ready(fn(keys, x, net.scalars)))[0] for _ in range(3))
    zsad_nlc = float(np.mean(np.asarray(res.nlc[net.layer_names[-1]])))

    sys.path.insert(0, str(ROOT / "examples"))
    import torch_models

    model = ref.TorchModule(torch_models.resnet18)
    xn = np.asarray(x)
    ref.score(model, xn, seeds=1, tangents=args.tangents)  # warm-up
    eager_times, eager = [], None
    for _ in range(3):
        t, eager = _timed(lambda: ref.score(model, xn, seeds=args.seeds, tangents=args.tangents))
        eager_times.append(t)
    eager_t = statistics.median(eager_times)
    return {"batch": args.batch, "seeds": args.seeds, "tangents": args.tangents, "params": 11_181_642,
            "zsad": {"convert_s": convert, "first_call_s": first, "compile_s": first - warm, "warm_s": warm,
                     "nlc": zsad_nlc},
            "eager": {"warm_s": eager_t, "nlc": eager["mean"]},
            "speedup_warm": eager_t / warm}


def space_archs() -> list[dict]:
    return [{"name": f"{f}_w{w:g}_b{b:g}", "input": {"shape": [3, 16, 16]}, "module": f"torch:torch_space_models:{f}",
             "init": {"dist": "normal", "weight_std": w, "bias_std": b}}
            for f in tsm.FACTORIES for w in WEIGHT_STDS for b in BIAS_STDS]


def bench_space(args) -> dict:
    archs = space_archs()
    space = parse_space({"archs": archs}, file=str(ROOT / "benchmarks" / "torch_space.yaml"))
    opts = RankOptions(seeds=args.seeds, batch=args.space_batch, tangents=args.tangents, metrics=("nlc",))
    cold, res = _timed(lambda: rank_space(space, opts))
    warm, res = _timed(lambda: rank_space(space, opts))
    zsad = {r["arch"]: r["nlc"] for r in res.rows}

    inp = parse_architecture(archs[0]).input
    xn = load_inputs(inp, args.space_batch, seed=0)
    models = {a["name"]: _Override(getattr(tsm, a["module"].rsplit(":", 1)[1]), a["init"]["weight_std"],
                                   a["init"]["bias_std"]) for a in archs}
    for f in tsm.FACTORIES:  # warm-up: one architecture per structure
        ref.score(next(m for n, m in models.items() if n.startswith(f)), xn, seeds=1, tangents=args.tangents)
    t0 = time.perf_counter()
    eager = {n: ref.score(m, xn, seeds=args.seeds, tangents=args.tangents)["mean"] for n, m in models.items()}
    eager_t = time.perf_counter() - t0
    names = [a["name"] for a in archs]
    from scipy.stats import spearmanr

    rho = float(spearmanr([zsad[n] for n in names], [eager[n] for n in names]).statistic)
    statuses = sorted({r["status"] for r in res.rows})
    return {"architectures": len(archs), "structures": len(tsm.FACTORIES), "batch": args.space_batch,
            "seeds": args.seeds, "tangents": args.tangents, "statuses": statuses,
            "zsad": {"cold_s": cold, "warm_s": warm, "first_call_overhead_s": cold - warm},
            "eager": {"warm_s": eager_t}, "speedup_warm": eager_t / warm, "spearman_nlc": rho}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="ResNet-18 scoring batch")
    parser.add_argument("--space-batch", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--tangents", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_torch.json")
    args = parser.parse_args()
    load = os.getloadavg()
    resnet = bench_resnet(args)
    print(json.dumps({"resnet18": resnet}, indent=2))
    space = bench_space(args)
    print(json.dumps({"space": space}, indent=2))
    doc = {"machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                       "loadavg_before": load, "loadavg_after": os.getloadavg(),
                       "torch": torch.__version__, "jax": jax.__version__, "torch_threads": torch.get_num_threads()},
           "resnet18": resnet, "space": space}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"| workload | zsad warm (s) | eager PyTorch (s) | speed-up | zsad first call (s) | conversion (s) |")
    print("|---|---|---|---|---|---|")
    print(f"| ResNet-18, 32x32, batch {resnet['batch']} | {resnet['zsad']['warm_s']:.2f} | {resnet['eager']['warm_s']:.2f} "
          f"| {resnet['speedup_warm']:.2f}x | {resnet['zsad']['first_call_s']:.1f} | {resnet['zsad']['convert_s']:.1f} |")
    print(f"| 50 torch architectures | {space['zsad']['warm_s']:.2f} | {space['eager']['warm_s']:.2f} | "
          f"{space['speedup_warm']:.2f}x | {space['zsad']['cold_s']:.1f} | — |")


if __name__ == "__main__":
    main()
