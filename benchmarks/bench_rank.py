"""Throughput of `zsad rank` on this machine, side by side with a plain PyTorch reference.

Run (a few minutes on an idle two-core machine with the defaults):

    .venv/bin/python benchmarks/bench_rank.py [--nb201 4] [--mlp 200] \
        [--seeds 2] [--batch 64] [--tangents 2] [--metrics nlc,params] [--also-metrics all] \
        [--check-archs 2] [--spaces nb201,mlp] [--no-torch] [--out FILE.json]

Two search spaces:

* NAS-Bench-201: a seeded sample of ``--nb201`` architectures (``space: nas-bench-201,
  archs: {sample: N, seed: --nb201-seed}``); degenerate cells (output node unreachable)
  are ranked without computing anything by zsad and skipped by the reference too;
* an MLP space of 200 architectures (:data:`MLP_SPACE`, written to
  ``benchmarks/results/mlp_space.yaml``): depth 2 or 6 x width 128 or 512 x relu or
  tanh (8 structures; 4 shape signatures, so 4 compiled programs, the activation
  chosen by a traced index) x weight_std 5 values x bias_std 5 values (25 scalar
  variants per structure, which share their structure's program); ``--mlp N``
  takes a seeded sample of N;
* ``--spaces ...,mlp-mixed``: 200 MLPs of 50 shapes (:data:`MLP_MIXED_SPACE`), which zsad runs in
  12 padded programs (:mod:`zsad.arch.padding`); ``mlp-worst``: 20 MLPs of the padding's worst
  shape (:data:`MLP_WORST_SPACE`, width 257 padded to 512). ``--compare-padded`` runs every zsad configuration
  on the MLP spaces a second time with padded programs off (``zsad.scorer.PADDED_MLPS = False``: one
  program per shape), cold and rerun, in the same run, and prints the number of compiled programs
  and the time ratios.

Each engine runs in a fresh worker process, one after the other, in this order:
zsad NB201, zsad NB201 again, torch NB201, then the same for the MLP space. For
each it reports

* cold: the first ``zsad.rank.rank_space`` call of the process (empty in-process
  program cache and, as ``zsad rank`` does, JAX's persistent compilation cache
  in an empty, fresh ``ZSAD_CACHE_DIR``): everything a user's first run pays,
  tracing and compilation included; warm: a second call on the same space,
  whose programs are compiled already. "zsad (rerun)": a new process on the
  same ``ZSAD_CACHE_DIR``, a user's second run: its cold call reads the
  compiled programs from disk. The reference (eager PyTorch, ``benchmarks/torch_reference.py``)
  compiles nothing: after an untimed warm-up call it makes one timed pass, which
  is both its cold and its warm figure. Its OpenMP threads wait passively
  (``OMP_WAIT_POLICY=PASSIVE`` unless set): on a loaded machine, spinning threads
  made it up to 6 times slower;
* compile: the seconds JAX spends tracing, lowering and compiling, summed from
  ``jax.monitoring`` duration events (``/jax/core/compile/*``) over every thread
  (zsad rank compiles the structures side by side, so this sum can exceed the
  wall time); beside it "cold - warm", the difference of the two calls on the
  same architectures (first-call overhead measured end to end), and its share of
  the cold time: the compile share that the wall clock sees;
* GFLOP/s: FLOPs of the estimator over wall time (warm): what the NLC needs for
  one architecture and all seeds, one forward pass (which also computes the
  batch-norm statistics) and one push per tangent (drawing the weights is not
  counted: XLA counts random-number generation as FLOPs).
  MLPs: XLA's count of the compiled program (``jax.jit(f).lower(...).compile()
  .cost_analysis()``, a multiply-add counts 2), built from zsad's public pieces
  (``zsad.build``, ``zsad.nlc.nlc_profile``). NAS-Bench-201: analytic,
  seeds x batch x 2 x ``zsad.spaces.nasbench201.flops`` x (1 + tangents), because XLA's
  cost analysis counts the body of a loop once and the five cells of a stage are
  a loop (``nn.scan``). The same count is used for the reference, which executes
  more (each ``torch.func.jvp`` repeats the forward pass). Next to it the
  machine's float32 matmul rate (a 2048 x 2048 ``jnp.dot`` and ``torch.mm``,
  best of 5), measured before and after the engines;
* conv 3x3: the rate of the NAS-Bench-201 cells' 3 x 3 convolutions alone (jax,
  NHWC, 16/32/64 channels at 32/16/8 pixels, the batch of one forward pass and
  its tangents), measured with the matmul rate: the ceiling for that space;
* peak RSS: ``ru_maxrss`` of the worker after the timed runs (and its value right
  after imports), the only figure that sees XLA's own allocations on the CPU;
* agreement: Spearman correlation of the two engines' mean NLC over the
  architectures (independent random numbers: the seed spread limits it).

``--also-metrics`` (default ``all``, the metrics ``zsad rank`` computes by default) runs zsad again
on the same architectures with each further metric set, cold and rerun, in the same run, and prints
its warm time per architecture relative to ``--metrics``. The reference computes the same metric
sets, each in a process of its own (``benchmarks/torch_metrics.py``), and the report gives the ratio
zsad/torch for each set. After its timed pass of a set with more than the NLC, the reference checks
the first ``--check-archs`` architectures against ``zsad rank`` with zsad's weights, batch, labels and
tangents (``torch_reference.check_metrics_same_weights``; untimed): the deterministic metrics to
float32 rounding, sigma2 within its standard error; the rows go into the JSON (``same_weights``).

Prints a markdown table and writes JSON to ``--out`` (default
``benchmarks/results/bench_rank.json``). The machine's load average before and
after is printed with it: on a shared machine compare ratios within one run.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

MLP_BASE = {
    "name": "mlp",
    "input": {"shape": [64], "data": "gaussian", "std": 1.0},
    "init": {"dist": "normal", "weight_std": 1.0, "bias_std": 0.0},
    "layers": [
        {"type": "block", "repeat": 2, "layers": [{"type": "dense", "features": 128},
                                                  {"type": "activation", "fn": "relu"}]},
        {"type": "dense", "features": 10},
    ],
}
MLP_CHOICES = {
    "layers.0.repeat": [2, 6],
    "layers.0.layers.0.features": [128, 512],
    "layers.0.layers.1.fn": ["relu", "tanh"],
    "init.weight_std": [0.8, 1.0, 1.2, 1.41, 1.7],
    "init.bias_std": [0.0, 0.05, 0.1, 0.2, 0.3],
}
#: The 200-architecture MLP space (form 2 of a search-space file).
MLP_SPACE = {"name": "mlp200", "base": MLP_BASE, "choices": MLP_CHOICES}


#: MLPs of 50 shapes (depth 2..6 x ten widths 64..320) x relu or tanh x two weight scales: 200 architectures
#: whose shapes fall in 12 padded signatures (widths padded to 64, 128, 256 or 512, depths to 2, 4 or 8;
#: :mod:`zsad.arch.padding`), the width 320 padded to 512 its worst case (2.6x the hidden matmuls' FLOPs).
MLP_MIXED_CHOICES = {
    "layers.0.repeat": [2, 3, 4, 5, 6],
    "layers.0.layers.0.features": [64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    "layers.0.layers.1.fn": ["relu", "tanh"],
    "init.weight_std": [1.0, 1.41],
}
MLP_MIXED_SPACE = {"name": "mlp-mixed200", "base": MLP_BASE, "choices": MLP_MIXED_CHOICES}
#: The padding's worst case: width 257 padded to 512 (3.9x the hidden matmuls' FLOPs), depth 5 to 8;
#: 20 architectures of one shape.
MLP_WORST_SPACE = {"name": "mlp-worst20", "base": MLP_BASE, "choices": {
    "layers.0.repeat": [5], "layers.0.layers.0.features": [257], "layers.0.layers.1.fn": ["relu", "tanh"],
    "init.weight_std": [0.8, 1.0, 1.2, 1.41, 1.7], "init.bias_std": [0.0, 0.1]}}


def mlp_space_node(n: int | None = None, seed: int = 0) -> dict:
    """The MLP space as a search-space mapping; ``n`` < 200: a seeded sample of it."""
    node = json.loads(json.dumps(MLP_SPACE))
    if n is not None and n < math.prod(len(v) for v in MLP_CHOICES.values()):
        node.update(sample=n, seed=seed)
    return node


def nb201_space_node(n: int, seed: int) -> dict:
    return {"name": f"nb201-sample{n}", "space": "nas-bench-201", "archs": {"sample": n, "seed": seed}}


def spearman(a, b) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 pairs."""
    import numpy as np

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x)
             and math.isfinite(y)]
    if len(pairs) < 3:
        return None

    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        sv = v[order]
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and sv[j + 1] == sv[i]:
                j += 1
            r[order[i:j + 1]] = (i + j) / 2 + 1
            i = j + 1
        return r

    ra, rb = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------- workers

def _space(args):
    from zsad.space import parse_space

    if args.space == "nb201":
        return parse_space(nb201_space_node(args.nb201, args.nb201_seed))
    if args.space in ("mlp-mixed", "mlp-worst"):
        return parse_space(json.loads(json.dumps(MLP_MIXED_SPACE if args.space == "mlp-mixed" else MLP_WORST_SPACE)))
    return parse_space(mlp_space_node(args.mlp, args.mlp_seed))


def worker_zsad(args) -> dict:
    import jax
    import jax.monitoring

    from zsad import measure, scorer
    from zsad.cache import enable_compilation_cache
    from zsad.rank import RankOptions, rank_space
    from zsad.ranking import parse_metrics

    enable_compilation_cache()  # as `zsad rank` does: $ZSAD_CACHE_DIR
    scorer.PADDED_MLPS = not args.unpadded

    compile_events: dict[str, float] = collections.defaultdict(float)

    def listener(event, duration, **kwargs):
        if "compil" in event or event.startswith("/jax/core/compile"):
            compile_events[event] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    space = _space(args)
    opts = RankOptions(seeds=args.seeds, batch=args.batch, tangents=args.tangents,
                       metrics=parse_metrics(args.metrics))
    rss_imports = maxrss_mib()

    def timed(sp):
        compile_events.clear()
        stamps = []
        t0 = time.perf_counter()
        res = rank_space(sp, opts, on_row=lambda r: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t0
        return res, total, dict(compile_events), [s - t0 for s in stamps]

    cold, cold_s, cold_events, cold_stamps = timed(space)
    programs, traces = len(measure.TRACES), sum(measure.TRACES.values())
    warm, warm_s, warm_events, _ = timed(space)
    rss = maxrss_mib()
    statuses = collections.Counter(r["status"] for r in cold.rows)
    out = {
        "engine": "zsad", "space": args.space, "archs": len(cold.rows), "warm_archs": len(warm.rows),
        "computed": sum(1 for r in cold.rows if r["status"] != "degenerate"),
        "warm_computed": sum(1 for r in warm.rows if r["status"] != "degenerate"),
        "statuses": dict(statuses), "cold_s": cold_s, "warm_s": warm_s,
        "compile_s": sum(cold_events.values()), "compile_events": cold_events,
        "warm_compile_s": sum(warm_events.values()), "row_times": cold_stamps,
        "nlc": {r["arch"]: r.get("nlc") for r in cold.rows}, "rss_imports_mib": rss_imports, "rss_peak_mib": rss,
        "devices": [str(d) for d in jax.devices()], "padded": not args.unpadded,
        "programs": programs, "traces": traces, "warm_traces": sum(measure.TRACES.values()) - traces,
    }
    if args.no_flops:
        return out
    try:
        out["flops"] = estimator_flops(args, space)
    except Exception as err:  # the count is informative; never lose the timings for it
        out["flops"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    return out


def estimator_flops(args, space) -> dict:
    """FLOPs of the NLC estimator (one forward pass + one push per tangent, all seeds; not the weights' draw) per arch."""
    import jax
    import jax.numpy as jnp

    from zsad.spaces import nasbench201 as nb
    from zsad.data import load_inputs
    from zsad.nlc import nlc_profile

    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(args.seeds))

    def cost(net, x) -> float:
        def one(v, key, scalars):
            v = net.calibrate(v, scalars, x)
            return nlc_profile(lambda z: net.apply(v, scalars, z)[0], x, key, num_tangents=args.tangents).nlc

        variables = jax.eval_shape(jax.vmap(net.init, in_axes=(0, None)), keys, net.scalars)
        fn = jax.jit(lambda v, keys, scalars: jax.vmap(one, in_axes=(0, 0, None))(v, keys, scalars))
        ca = fn.lower(variables, keys, net.scalars).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return float(ca["flops"])

    def forward_cost(net, x) -> float:
        v = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
        ca = jax.jit(lambda v, s, z: net.apply(v, s, z)[0]).lower(v, net.scalars, x).compile().cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return float(ca["flops"])

    per_arch: dict[str, float] = {}
    forward: dict[str, float] = {}
    t0 = time.perf_counter()
    if args.space == "nb201":
        # XLA's cost analysis counts a loop body once, and NB201's stages are loops (nn.scan) over five cells:
        # count analytically instead, from the benchmark's forward count (a multiply-add counts 1).
        factor = 1 + args.tangents
        for item in space:
            if not nb.is_degenerate(item.arch):
                per_arch[item.id] = args.seeds * args.batch * 2.0 * nb.flops(item.arch) * factor
        note = (f"analytic: seeds x batch x 2 x zsad.spaces.nasbench201.flops x (1 + tangents) = {factor} forward passes "
                "(one forward pass, which also computes the batch-norm statistics, and one push per tangent; XLA's "
                "cost analysis counts the loop over the "
                "five cells of a stage once, so it cannot be used here)")
    else:
        from zsad import build
        from zsad.arch.build import structure

        by_structure: dict = {}
        for item in space:
            if item.arch is None:
                continue
            key = (structure(item.arch.layers), tuple(item.arch.input.shape))
            by_structure.setdefault(key, []).append(item)
        for items in by_structure.values():
            net = build(items[0].arch)
            x = jnp.asarray(load_inputs(items[0].arch.input, args.batch, seed=0))
            c, f = cost(net, x), forward_cost(net, x)
            for item in items:
                per_arch[item.id], forward[item.id] = c, f
        note = (f"XLA's count of the compiled (optimized) program, one per structure ({len(by_structure)} "
                "structures)")
    total = sum(per_arch.values())
    fwd = [per_arch[a] / forward[a] for a in forward if forward[a]]
    return {"total": total, "per_arch": per_arch, "note": note, "seconds": time.perf_counter() - t0,
            "estimator_over_forward": (min(fwd) / args.seeds, max(fwd) / args.seeds) if fwd else None}


def worker_torch(args) -> dict:
    """The eager PyTorch reference on the space, computing the metric set ``--metrics`` of the zsad run it is
    compared with (``benchmarks/torch_metrics.py``); then, untimed, the same-weights check of the first
    ``--check-archs`` architectures against ``zsad rank`` when the set holds more than the NLC."""
    import dataclasses

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from torch_metrics import ALL, check_metrics_same_weights, score_metrics
    from torch_reference import model_for

    from zsad.spaces import nasbench201 as nb
    from zsad.data import load_inputs

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    metrics = ALL if args.metrics == "all" else tuple(m for m in ALL if m in args.metrics.split(","))
    space = _space(args)
    rss_imports = maxrss_mib()
    inputs: dict = {}

    def x_for(item):
        inp = space.input if isinstance(item.arch, tuple) else item.arch.input
        if inp not in inputs:
            inputs[inp] = load_inputs(inp, args.batch, seed=0)
        return inputs[inp]

    def labels_for(model, x):  # as zsad rank: uniform over the output units, data_seed + 1 (untimed)
        with torch.no_grad():
            xt = model.to_torch_input(x[:2])
            params = model.init(torch.Generator().manual_seed(0))
            classes = model.forward(params, xt, model.calibrate(params, xt)).reshape(2, -1).shape[1]
        return np.random.default_rng(1).integers(0, classes, args.batch)

    items = [item for item in space]
    todo = {item.id: (model_for(item), x_for(item)) for item in items
            if not (isinstance(item.arch, tuple) and nb.is_degenerate(item.arch))}
    labels = {key: labels_for(*mx) for key, mx in todo.items()}
    if todo:  # eager warm-up (allocator, kernels), untimed: the reference compiles nothing
        key, (model, x) = next(iter(todo.items()))
        score_metrics(model, x[:4], labels[key][:4], metrics, seeds=1, tangents=1)
    values, stamps = {}, []
    t0 = time.perf_counter()
    for item in items:
        if item.id in todo:  # else as zsad: degenerate, ranked last, nothing computed
            model, x = todo[item.id]
            values[item.id] = score_metrics(model, x, labels[item.id], metrics, seeds=args.seeds,
                                            tangents=args.tangents)
        stamps.append(time.perf_counter() - t0)
    cold_s = time.perf_counter() - t0
    out = {"engine": "torch", "space": args.space, "archs": len(items), "warm_archs": len(items),
           "computed": len(todo), "warm_computed": len(todo), "cold_s": cold_s, "warm_s": cold_s,
           "compile_s": 0.0, "warm_compile_s": 0.0, "row_times": stamps, "metrics_computed": list(metrics),
           "nlc": {item.id: values.get(item.id, {}).get("nlc") for item in items}, "values": values,
           "rss_imports_mib": rss_imports, "rss_peak_mib": maxrss_mib(), "threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__}
    if args.check_archs and set(metrics) - {"nlc", "params", "flops"}:
        first = [item for item in items if item.id in todo][:args.check_archs]
        sub = dataclasses.replace(space, items=lambda: iter(first), size=len(first))
        t1 = time.perf_counter()
        out["same_weights"] = check_metrics_same_weights(sub, x_for, seeds=args.seeds, batch=args.batch,
                                                         tangents=args.tangents)
        out["same_weights_s"] = time.perf_counter() - t1
    return out


def worker_peak(args) -> dict:
    """Float32 matmul rate of this machine (jax and torch), best of 5 after a warm-up."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    n = args.matmul_n
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    flops = 2.0 * n ** 3

    def best(fn, count=flops):
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return count / min(times) / 1e9

    ja = jnp.asarray(a)
    dot = jax.jit(jnp.dot)
    ta = torch.from_numpy(a)
    out = {"n": n, "jax_gflops": best(lambda: dot(ja, ja).block_until_ready()),
           "torch_gflops": best(lambda: torch.mm(ta, ta)), "jax": jax.__version__}
    # NAS-Bench-201's 3x3 convolutions (C channels at H x H pixels), the batch of one forward pass and its pushes.
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    batch = args.batch * (1 + args.tangents)
    conv_rates = {}
    for c, h in ((16, 32), (32, 16), (64, 8)):
        x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, h, h, c)).astype(np.float32))
        w = jnp.asarray(np.random.default_rng(2).standard_normal((3, 3, c, c)).astype(np.float32))
        conv_rates[f"C{c}xH{h}"] = best(lambda: conv(x, w).block_until_ready(), 2.0 * batch * h * h * 9 * c * c)
    out["conv3x3_gflops"] = conv_rates
    return out


WORKERS = {"zsad": worker_zsad, "torch": worker_torch, "peak": worker_peak}


# --------------------------------------------------------------------------- driver

def _spawn(kind: str, space: str, args, cache_dir: str, metrics: str | None = None, extra: tuple = ()) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    argv = [sys.executable, __file__, "--worker", kind, "--space", space, "--worker-out", path,
            *args.passthrough, *([f"--metrics={metrics}"] if metrics else []), *extra]
    env = {**os.environ, "ZSAD_CACHE_DIR": cache_dir}
    if kind == "torch":  # OpenMP threads that spin while waiting lose their core on a shared machine
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    try:
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            return {"engine": kind, "space": space, "error": f"exit {proc.returncode}: {tail}"}
        out = json.loads(Path(path).read_text())
        out["process_wall_s"] = wall
        return out
    finally:
        Path(path).unlink(missing_ok=True)


def _fingerprint() -> dict:
    """Which engine was measured: the commit and hashes of the files that make it (worktree state)."""
    info: dict = {}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                        check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "zsad"], cwd=ROOT, capture_output=True,
                               text=True).stdout.split("\n")
        info["zsad_modified"] = sorted(line[3:] for line in dirty if line.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    for name in ("zsad/rank.py", "zsad/spaces/nasbench201.py", "zsad/nlc.py"):
        p = ROOT / name
        if p.exists():
            info[name] = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    return info


def _fmt(x, spec=".2f", none="—"):
    return none if x is None else format(x, spec)


def _row(r: dict, flops: float | None) -> dict:
    if "error" in r:
        return {"error": r["error"]}
    warm_rate = r["warm_archs"] / r["warm_s"] if r["warm_s"] > 0 else None
    overhead = r["cold_s"] - r["warm_s"]
    gflops = None
    if flops and r["warm_s"] > 0:
        gflops = flops["total"] / r["warm_s"] / 1e9
    return {"cold_rate": r["archs"] / r["cold_s"], "warm_rate": warm_rate, "overhead_s": overhead,
            "compile_share": r["compile_s"] / r["cold_s"] if r["cold_s"] > 0 else None, "gflops": gflops}


def main() -> None:
    parser = argparse.ArgumentParser(description="zsad rank throughput vs a PyTorch reference")
    parser.add_argument("--nb201", type=int, default=4, help="NAS-Bench-201 architectures (seeded sample)")
    parser.add_argument("--nb201-seed", type=int, default=0)
    parser.add_argument("--mlp", type=int, default=200, help="MLP architectures (200: the whole space)")
    parser.add_argument("--mlp-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=2, help="initializations per architecture (rank default 2)")
    parser.add_argument("--batch", type=int, default=64, help="scoring batch (rank default 64)")
    parser.add_argument("--tangents", type=int, default=2, help="tangents per sample (rank default 2)")
    parser.add_argument("--metrics", default="nlc,params", help="zsad rank metrics (params is free)")
    parser.add_argument("--also-metrics", default="all",
                        help="';'-separated further metric sets that zsad measures on the same architectures in the "
                             "same run (default: all, what `zsad rank` computes by default; '' for none)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--check-archs", type=int, default=2,
                        help="architectures per space whose metrics the reference checks against zsad rank's "
                             "with the same weights (untimed, after its timed pass of the default metrics; 0: none)")
    parser.add_argument("--spaces", default="nb201,mlp", help="comma-separated: nb201, mlp, mlp-mixed, mlp-worst")
    parser.add_argument("--compare-padded", action="store_true",
                        help="on the MLP space, run every zsad configuration again with padded programs off "
                             "(zsad.scorer.PADDED_MLPS = False: one program per shape), in the same run")
    parser.add_argument("--unpadded", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-flops", action="store_true",
                        help="skip the estimator's FLOPs count (one compilation per structure) and the peak rates")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_rank.json")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--space", choices=["nb201", "mlp", "mlp-mixed", "mlp-worst"], default="nb201", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = WORKERS[args.worker](args)
        Path(args.worker_out).write_text(json.dumps(result))
        return

    args.passthrough = [f"--nb201={args.nb201}", f"--nb201-seed={args.nb201_seed}",
f"--mlp={args.mlp}", f"--mlp-seed={args.mlp_seed}",
                        f"--seeds={args.seeds}", f"--batch={args.batch}", f"--tangents={args.tangents}",
                        f"--metrics={args.metrics}",
                        f"--torch-threads={args.torch_threads}", f"--matmul-n={args.matmul_n}",
                        f"--check-archs={args.check_archs}", *(["--no-flops"] if args.no_flops else [])]
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        from ruamel.yaml import YAML

        with open(RESULTS / "mlp_space.yaml", "w") as fh:
            fh.write("# The MLP space of benchmarks/bench_rank.py and rank_settings.py (written by them).\n")
            YAML().dump(MLP_SPACE, fh)
    except ImportError:
        (RESULTS / "mlp_space.yaml").write_text(json.dumps(MLP_SPACE, indent=2) + "\n")

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    runs: list[dict] = []
    peaks = []
    with tempfile.TemporaryDirectory() as root:
        if not args.no_flops:
            peaks.append(_spawn("peak", "nb201", args, root))
        for space in args.spaces.split(","):
            for engine in ("zsad", "torch"):
                if engine == "torch" and args.no_torch:
                    continue
                if engine == "torch":  # the reference computes each metric set that zsad computes
                    cache = tempfile.mkdtemp(dir=root)
                    print(f"... torch on {space}", file=sys.stderr, flush=True)
                    runs.append(_spawn(engine, space, args, cache))
                    for metrics in filter(None, args.also_metrics.split(";")):
                        print(f"... torch --metrics {metrics} on {space}", file=sys.stderr, flush=True)
                        runs.append({**_spawn(engine, space, args, cache, metrics),
                                     "engine": f"torch --metrics {metrics}", "metrics": metrics})
                    continue
                padded = [("", ())] + ([(" (unpadded)", ("--unpadded",))] if args.compare_padded and space != "nb201"
                                       else [])
                for metrics in [None, *filter(None, args.also_metrics.split(";"))]:  # the same architectures
                    for tag, extra in padded:
                        cache = tempfile.mkdtemp(dir=root)  # empty: a cold start for zsad
                        name = f"zsad --metrics {metrics}" if metrics else "zsad"
                        for label in ("", " (rerun)"):  # a second process on the same persistent cache
                            print(f"... {name}{tag} on {space}{label}", file=sys.stderr, flush=True)
                            run = {**_spawn(engine, space, args, cache, metrics, extra), "engine": f"{name}{tag}{label}"}
                            runs.append({**run, "metrics": metrics} if metrics else run)
        if not args.no_flops:
            peaks.append(_spawn("peak", "nb201", args, root))
    load_after = os.getloadavg()

    flops = {r["space"]: r.get("flops") for r in runs if r.get("engine") == "zsad" and "error" not in r}
    table = []
    for r in runs:
        f = flops.get(r["space"])
        f = f if f and "error" not in f and not r.get("metrics") else None  # the NLC's FLOPs only
        table.append({**r, **_row(r, f)})

    opts = f"seeds {args.seeds}, batch {args.batch}, tangents {args.tangents}, metrics {args.metrics}"
    if args.also_metrics:
        opts += f" (also: {args.also_metrics}, by both engines)"
    print(f"## zsad rank vs PyTorch reference ({opts})\n")
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; load average "
          f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} before, "
          f"{load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after; "
          f"{time.perf_counter() - t_start:.0f} s in all\n")
    print("| space | engine | archs (computed) | cold s | cold archs/s | warm s | warm archs/s | "
          "compile s, all threads | cold − warm s (share of cold) | GFLOP/s (warm) | peak RSS MiB (after imports) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        if "error" in r:
            print(f"| {r['space']} | {r['engine']} | error: {r['error'].splitlines()[-1][:120]} ||||||||")
            continue
        zsad = r["engine"].startswith("zsad")
        comp = f"{r['compile_s']:.1f}" if zsad else "—"
        first = f"{r['overhead_s']:.1f} ({100 * r['overhead_s'] / r['cold_s']:.0f}%)" if zsad else "—"
        print(f"| {r['space']} | {r['engine']} | {r['archs']} ({r['computed']}) | {r['cold_s']:.1f} | "
              f"{_fmt(r['cold_rate'], '.3g')} | {r['warm_s']:.1f} | {_fmt(r['warm_rate'], '.3g')} | "
              f"{comp} | {first} | {_fmt(r['gflops'], '.1f')} | "
              f"{r['rss_peak_mib']:.0f} ({r['rss_imports_mib']:.0f}) |")
    print()
    for i, p in enumerate(peaks):
        if "error" not in p:
            convs = ", ".join(f"{k} {v:.0f}" for k, v in p.get("conv3x3_gflops", {}).items())
            print(f"matmul {p['n']}² float32 ({'before' if i == 0 else 'after'}): jax {p['jax_gflops']:.1f} GFLOP/s, "
                  f"torch {p['torch_gflops']:.1f} GFLOP/s; jax conv 3x3 alone (NAS-Bench-201 shapes): {convs} GFLOP/s")
    for space, f in flops.items():
        if f and "error" not in f:
            n = len(f["per_arch"])
            lo_hi = f["estimator_over_forward"]
            print(f"{space}: estimator FLOPs {f['total'] / 1e9:.1f} G for {n} computed architectures "
                  f"({f['total'] / max(n, 1) / 1e9:.2f} G each{lo_hi and f'; {lo_hi[0]:.1f}–{lo_hi[1]:.1f} forward passes per seed' or ''}"
                  f"); {f['note']}")
        elif f:
            print(f"{space}: estimator FLOPs not counted: {f['error']}")
    by_space = collections.defaultdict(dict)
    for r in table:
        if "error" not in r:
            by_space[r["space"]][r["engine"]] = r
    for space, engines in by_space.items():
        if "zsad" in engines and "torch" in engines:
            z, t = engines["zsad"], engines["torch"]
            ids = [a for a in z["nlc"] if a in t["nlc"]]
            rho = spearman([z["nlc"][a] for a in ids], [t["nlc"][a] for a in ids])
            ratio = (z["warm_rate"] / t["warm_rate"]) if z["warm_rate"] and t["warm_rate"] else None
            cold_ratio = z["cold_rate"] / t["cold_rate"] if t["cold_rate"] else None
            print(f"{space}: zsad/torch speed {_fmt(ratio)}x warm, {_fmt(cold_ratio)}x cold (--metrics {args.metrics}); "
                  f"Spearman of the mean NLCs (independent random numbers) {_fmt(rho, '.3f')} over {len(ids)} "
                  "architectures")
            z["spearman_vs_torch"], z["speedup_vs_torch_warm"], z["speedup_vs_torch_cold"] = rho, ratio, cold_ratio
        for metrics in filter(None, args.also_metrics.split(";")):
            z, t = engines.get(f"zsad --metrics {metrics}"), engines.get(f"torch --metrics {metrics}")
            if z and t:
                ratio = z["warm_rate"] / t["warm_rate"] if z["warm_rate"] and t["warm_rate"] else None
                cold_ratio = z["cold_rate"] / t["cold_rate"] if t["cold_rate"] else None
                rerun = engines.get(f"zsad --metrics {metrics} (rerun)")
                rerun_ratio = rerun["cold_rate"] / t["cold_rate"] if rerun and t["cold_rate"] else None
                print(f"{space}: zsad/torch speed {_fmt(ratio)}x warm, {_fmt(cold_ratio)}x cold, {_fmt(rerun_ratio)}x "
                      f"cold rerun (--metrics {metrics}, both engines)")
                z["speedup_vs_torch_warm"], z["speedup_vs_torch_cold"] = ratio, cold_ratio
                if rerun:
                    rerun["speedup_vs_torch_cold"] = rerun_ratio
    for r in table:
        checks = r.get("same_weights")
        if r.get("engine", "").startswith("torch") and checks:
            bad = [c for c in checks if not c["agree"]]
            det = [c["diff"] for c in checks if "diff" in c]
            zs = [abs(c["z"]) for c in checks if "z" in c]
            print(f"{r['space']}: same weights, {len({c['arch'] for c in checks})} architectures: "
                  f"{len(checks) - len(bad)} of {len(checks)} metric values agree (deterministic metrics: largest "
                  f"relative difference {_fmt(max(det, default=None), '.1e')}; sigma2: largest |z| "
                  f"{_fmt(max(zs, default=None), '.2f')})")
            for c in bad:
                extra = (f"; with one norm per stacked parameter array, as zsad's: {c['torch_stacked']:.6g} "
                         f"({c['diff_stacked']:.1e})" if "torch_stacked" in c else "")
                print(f"  differs: {c['arch']} {c['metric']}: zsad {c['zsad']}, torch {_fmt(c['torch'], '.6g')}{extra}")
    for space, engines in by_space.items():
        base = engines.get("zsad")
        for name, r in engines.items():
            if r.get("metrics") and name.startswith("zsad") and not name.endswith("(rerun)") and base \
                    and base["warm_s"] > 0:
                ratio = (r["warm_s"] / r["warm_archs"]) / (base["warm_s"] / base["warm_archs"])
                r["warm_time_vs_first_metrics"] = ratio
                print(f"{space}: --metrics {r['metrics']} takes {ratio:.2f}x the warm time of --metrics {args.metrics} "
                      f"on the same architectures ({_fmt(r['warm_rate'], '.3g')} archs/s warm)")
    for space, engines in by_space.items():
        for name, r in engines.items():
            other = engines.get(name.replace(" (rerun)", "") + " (unpadded)" + (" (rerun)" if "(rerun)" in name
                                                                                 else ""))
            if "(unpadded)" in name or other is None:
                continue
            r["vs_unpadded"] = {"cold": other["cold_s"] / r["cold_s"], "warm": other["warm_s"] / r["warm_s"]}
            print(f"{space}: {name}: padded programs {r['programs']} (unpadded {other['programs']}); "
                  f"cold {r['cold_s']:.1f} s against {other['cold_s']:.1f} s unpadded "
                  f"({r['vs_unpadded']['cold']:.2f}x faster), warm {r['warm_s']:.1f} s against "
                  f"{other['warm_s']:.1f} s ({r['vs_unpadded']['warm']:.2f}x)")
    for r in table:
        if r.get("engine") == "zsad" and "error" not in r and r["warm_compile_s"] > 0.5:
            print(f"note: {r['space']}: the warm zsad run still compiled for {r['warm_compile_s']:.1f} s")

    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "options": vars(args) | {"out": str(args.out)},
           "load_average": {"before": load_before, "after": load_after}, "cpus": os.cpu_count(),
           "engine": _fingerprint(), "peak": peaks, "runs": table}
    out["options"].pop("passthrough", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nJSON: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
