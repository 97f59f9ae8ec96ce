"""zsad rank's default metric set in plain, eager PyTorch: the reference for checks and speed comparisons.

Next to the NLC of ``benchmarks/torch_reference.py``, for one initialization of a
:class:`torch_reference.Model` (batch norm calibrated on the scoring batch, then frozen, as zsad):

* ``sigma2``: Hutchinson's estimate of the mean squared singular value of the Jacobian of the segment
  zsad rank uses (:meth:`torch_reference.Model.segment`: NAS-Bench-201 input to the last cell's
  output, architecture files ``zsad.score.resolve_between``'s default), on the first
  :data:`SIGMA2_SAMPLES` samples with :data:`SIGMA2_PROBES` Rademacher probes each, on the smaller
  side (``||J z||²`` by ``torch.func.jvp`` when ``d_in <= d_out``, else ``||J^T z||²`` by
  ``torch.func.vjp``), divided by ``min(d_in, d_out)``; all probes of all samples in one batched call.
  Its standard error combines the per-sample standard errors over the probes.
* ``naswot`` (Mellor et al. 2021): ``log|det K|`` of the Hamming kernel ``K = C C^T + (1-C)(1-C)^T``
  of the binary codes ``C`` (sign of the pre-activations of zsad's code layers), float64 ``slogdet``;
  the codes come from the calibration pass.
* ``synflow`` (Tanaka et al. 2020): ``log sum |theta * dR/dtheta|`` over the kernels, all parameters
  replaced by their absolute values, ``R`` the sum of the outputs for one all-ones sample, in float64,
  batch norm in eval mode at initialization (statistics 0 and 1: the identity up to its epsilon).
* ``grad_norm`` and ``snip`` (Abdelfattah et al. 2021; Lee et al. 2019): ``log sum_l ||dL/dW_l||_F``
  and ``log sum |W * dL/dW|`` over the kernels ``W_l`` (every dense and convolution layer), ``L`` the
  mean cross-entropy of the flattened outputs with the given labels; sums in float64.
* ``jacob_cov`` (Mellor et al. v1 as Abdelfattah et al.): the input gradients ``g_i`` of the summed
  outputs, their ``n x n`` correlation matrix (float64) with eigenvalues ``lambda``, and
  ``-sum(log(lambda + k) + 1 / (lambda + k))``, ``k = 1e-5``. zsad leaves it out when the batch
  exceeds the input dimension (:func:`jacob_cov_degenerate`); so does :func:`measure`.

grad_norm, snip and jacob_cov share one forward pass (``torch.autograd.grad`` twice on its graph).
``params`` and ``flops`` are counted on the host: parameters of the model (NAS-Bench-201:
``zsad.spaces.nasbench201.param_count``, which counts dead-end operations as the benchmark does),
FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions only, so
not XLA's count; NAS-Bench-201: the benchmark's table, ``zsad.spaces.nasbench201.flops``).

:func:`check_metrics_same_weights` compares every metric with ``zsad rank``'s on zsad's own weights,
batch, labels and NLC tangents. Run it (a few minutes on two cores)::

    .venv/bin/python benchmarks/torch_metrics.py [--seeds 2] [--batch 64] [--tangents 2] [--nb201 2]

``benchmarks/bench_rank.py`` times this reference against ``zsad rank`` and runs the same check on the
architectures it times.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from torch_reference import NB201, BNState, Model, centred_tangents, derangements, model_for, nlc, zsad_network

#: Samples and probes per sample of sigma2 (zsad.measure.SIGMA2_SAMPLES / SIGMA2_PROBES).
SIGMA2_SAMPLES = 8
SIGMA2_PROBES = 4
#: jacob_cov's regularizer (zsad.proxies.JACOB_COV_K).
JACOB_COV_K = 1e-5
#: Metrics computed per initialization, in zsad's order (zsad.ranking.METRICS less the host counts).
MEASURED = ("nlc", "sigma2", "naswot", "synflow", "grad_norm", "snip", "jacob_cov")
#: Every metric of ``zsad rank`` (``--metrics all``).
ALL = ("nlc", "sigma2", "params", "flops", "naswot", "synflow", "grad_norm", "snip", "jacob_cov")


def jacob_cov_degenerate(batch: int, input_shape: Sequence[int]) -> bool:
    """Whether the batch exceeds the input dimension (the correlation matrix is then singular)."""
    return batch > math.prod(input_shape)


def _log_total(total: torch.Tensor) -> tuple[float, bool]:
    """``(log total, valid)``: valid when the total is positive and finite."""
    value = float(torch.log(total))
    return value, math.isfinite(value)


# --------------------------------------------------------------------------- the proxies

def sigma2(model: Model, params: dict, bn: BNState, x: torch.Tensor, generator: torch.Generator) -> dict:
    """``{value, stderr}`` of Hutchinson's mean squared singular value of the segment's Jacobian."""
    h, fn = model.segment(params, bn, x[:SIGMA2_SAMPLES])
    n = h.shape[0]
    with torch.no_grad():
        d_out = math.prod(fn(h[:1]).shape[1:])
    d_in = math.prod(h.shape[1:])
    r = min(d_in, d_out)
    probes = torch.randint(0, 2, (n, SIGMA2_PROBES, r), generator=generator).to(h.dtype) * 2 - 1
    p = probes.shape[1]
    points = h.repeat_interleave(p, 0)
    z = probes.reshape(n * p, r)
    with torch.no_grad():
        if d_in <= d_out:
            _, out = torch.func.jvp(fn, (points,), (z.reshape(points.shape),))
        else:
            y, pull = torch.func.vjp(fn, points)
            out = pull(z.reshape(y.shape))[0]
    samples = out.reshape(n, p, -1).square().sum(-1) / r  # [samples, probes]
    per_sample_se = samples.std(1, unbiased=True) / math.sqrt(p) if p > 1 else torch.zeros(n)
    return {"value": float(samples.mean()), "stderr": float(per_sample_se.square().sum().sqrt() / n)}


def naswot(codes: Sequence[torch.Tensor]) -> tuple[float, bool]:
    """``(log|det K|, valid)`` of the Hamming kernel of the sign codes of ``codes`` (each ``[n, ...]``)."""
    c = torch.cat([t.reshape(t.shape[0], -1) > 0 for t in codes], 1).to(torch.float32)
    k = (c @ c.T + (1 - c) @ (1 - c).T).double()  # integer entries, exact in float32 below 2**24 units
    sign, logabsdet = torch.linalg.slogdet(k)
    return float(logabsdet), bool(sign > 0) and math.isfinite(float(logabsdet))


def synflow(model: Model, params: dict, input_shape: Sequence[int]) -> tuple[float, bool]:
    """``(log S, valid)``: synflow in float64, parameters made positive, batch norm at its initial statistics."""
    positive = {k: v.detach().double().abs().requires_grad_(k in model.kernels) for k, v in params.items()}
    ones = model.to_torch_input(np.ones((1, *input_shape), np.float64))
    r = model.forward(positive, ones, initial_bn()).sum()
    grads = torch.autograd.grad(r, [positive[k] for k in model.kernels], allow_unused=True)
    total = sum((positive[k] * g).abs().sum() for k, g in zip(model.kernels, grads) if g is not None)
    return _log_total(torch.as_tensor(total, dtype=torch.float64).detach())


def jacob_cov(gx: torch.Tensor, k: float = JACOB_COV_K) -> tuple[float, bool]:
    """``(score, valid)`` of the per-sample input gradients ``gx`` (``[n, ...]``)."""
    rows = gx.reshape(gx.shape[0], -1).double()
    centred = rows - rows.mean(1, keepdim=True)
    norms = centred.norm(dim=1)
    if not (torch.isfinite(rows).all() and (norms > 0).all()):
        return float("nan"), False
    unit = centred / norms[:, None]
    lam = torch.linalg.eigvalsh(unit @ unit.T).clamp_min(0) + k
    return float(-(torch.log(lam) + 1 / lam).sum()), True


def gradient_proxies(model: Model, params: dict, bn: BNState, x: torch.Tensor, labels: torch.Tensor,
                     names: Sequence[str]) -> dict:
    """grad_norm, snip and jacob_cov (those in ``names``) from one forward pass, batch norm frozen."""
    want_w = "grad_norm" in names or "snip" in names
    want_x = "jacob_cov" in names
    out: dict = {}
    if not (want_w or want_x):
        return out
    p = {k: v.detach().requires_grad_(want_w and k in model.kernels) for k, v in params.items()}
    xg = x.detach().requires_grad_(want_x)
    y = model.frozen(p, bn)(xg)
    if want_w:
        loss = F.cross_entropy(y.reshape(y.shape[0], -1), labels)
        grads = torch.autograd.grad(loss, [p[k] for k in model.kernels], retain_graph=want_x, allow_unused=True)
        used = [(k, p[k].detach().double(), g.double()) for k, g in zip(model.kernels, grads) if g is not None]
        if "grad_norm" in names:
            out["grad_norm"] = _log_total(sum(g.square().sum().sqrt() for _, _, g in used))
        if "snip" in names:
            out["snip"] = _log_total(sum((w * g).abs().sum() for _, w, g in used))
    if want_x:
        out["jacob_cov"] = jacob_cov(torch.autograd.grad(y.sum(), xg)[0])
    return out


# --------------------------------------------------------------------------- one initialization, many

def measure(model: Model, params: dict, x: torch.Tensor, labels: torch.Tensor, metrics: Sequence[str], *,
            tangents: torch.Tensor | None, probe_generator: torch.Generator | None = None,
            input_shape: Sequence[int]) -> dict:
    """The metrics of one initialization: ``{name: (value, valid)}``, sigma2 as ``{value, stderr}``.

    Args:
      model, params: the network and its (uncalibrated) parameters.
      x: the scoring batch in the model's layout; labels: grad_norm's and snip's integer labels.
      metrics: names among :data:`MEASURED` (others are ignored).
      tangents: the NLC's centred tangents ``[K, n, ...]``; probe_generator: sigma2's probes.
      input_shape: one sample's shape in zsad's layout (synflow's all-ones input, jacob_cov's test).
    """
    want_codes = "naswot" in metrics
    taps: list | None = [] if want_codes else None
    bn = model.calibrate(params, x, taps)
    out: dict = {}
    if "nlc" in metrics:
        with torch.no_grad():
            r = nlc(model.frozen(params, bn), x, tangents)
        out["nlc"] = (r["nlc"], r["finite"] and not r["constant"])
    if "sigma2" in metrics:
        out["sigma2"] = sigma2(model, params, bn, x, probe_generator)
    if want_codes:
        out["naswot"] = naswot(taps)
    if "synflow" in metrics:
        out["synflow"] = synflow(model, params, input_shape)
    grads = [m for m in ("grad_norm", "snip", "jacob_cov") if m in metrics
             and not (m == "jacob_cov" and jacob_cov_degenerate(x.shape[0], input_shape))]
    out.update(gradient_proxies(model, params, bn, x, labels, grads))
    return out


def host_counts(model: Model, metrics: Sequence[str], input_shape: Sequence[int]) -> dict:
    """``params`` and ``flops`` (those in ``metrics``) of the model, counted on the host."""
    out: dict = {}
    if isinstance(model, NB201):
        from zsad.spaces import nasbench201 as nb

        if "params" in metrics:
            out["params"] = nb.param_count(model.ops)
        if "flops" in metrics:
            out["flops"] = nb.flops(model.ops)
        return out
    if "params" in metrics:
        out["params"] = int(sum(math.prod(shape) for shape in model.shapes.values()))
    if "flops" in metrics:
        from torch.utils.flop_counter import FlopCounterMode

        params = {name: torch.zeros(shape) for name, shape in model.shapes.items()}
        x = model.to_torch_input(np.zeros((1, *input_shape), np.float32))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model.forward(params, x, initial_bn())
        out["flops"] = int(counter.get_total_flops())
    return out


def initial_bn() -> BNState:
    """Batch norm at its initial statistics (mean 0, variance 1): eval mode at initialization."""
    bn = BNState()
    bn.start("init")
    return bn


def score_metrics(model: Model, x: np.ndarray, labels: np.ndarray, metrics: Sequence[str], *, seeds: int,
                  tangents: int, seed: int = 0) -> dict:
    """Every metric of ``metrics`` over ``seeds`` initializations of the reference's own random numbers:
    ``{name: mean over the seeds where valid (None if none)}``, ``nlc_std``, ``sigma2_stderr`` and the
    host counts. Seed ``s`` draws the weights, the NLC's permutations and sigma2's probes from three
    separate streams, so the weights do not depend on the batch or the metric set."""
    xt = model.to_torch_input(x)
    yt = torch.from_numpy(np.asarray(labels, np.int64))
    input_shape = tuple(x.shape[1:])
    per_seed: dict[str, list] = {m: [] for m in metrics if m in MEASURED}
    se: list[float] = []
    for s in range(seeds):
        base = 1_000_003 * seed + 3 * s
        params = model.init(torch.Generator().manual_seed(base))
        t = None
        if "nlc" in metrics:
            t = centred_tangents(xt, derangements(xt.shape[0], tangents, torch.Generator().manual_seed(base + 1)))
        res = measure(model, params, xt, yt, metrics, tangents=t,
                      probe_generator=torch.Generator().manual_seed(base + 2), input_shape=input_shape)
        for name, value in res.items():
            if name == "sigma2":
                per_seed[name].append((value["value"], math.isfinite(value["value"])))
                se.append(value["stderr"])
            else:
                per_seed[name].append(value)
    out: dict = {}
    for name, values in per_seed.items():
        good = [v for v, ok in values if ok]
        out[name] = float(np.mean(good)) if good else None
        if name == "nlc":
            out["nlc_std"] = float(np.std(good, ddof=1)) if len(good) > 1 else None
    if se:
        out["sigma2_stderr"] = float(math.sqrt(sum(v * v for v in se)) / len(se))
    out.update(host_counts(model, metrics, input_shape))
    return out


# --------------------------------------------------------------------------- the check against zsad rank

#: Relative difference (absolute for values below 1 in size) within which the deterministic metrics of
#: the same weights count as equal: float32 rounding, amplified by depth (NAS-Bench-201's NLC differs by
#: about 1e-4 between XLA's and PyTorch's convolutions).
SAME_WEIGHTS_TOL = 1e-3
#: |z| within which sigma2 (independent Rademacher probes, same weights) counts as equal.
SIGMA2_Z = 3.0


def check_metrics_same_weights(space, x_for, *, seeds: int, batch: int, tangents: int) -> list[dict]:
    """``zsad rank``'s default metrics against this reference's with zsad's weights, batch, labels and NLC
    tangents, seed by seed. One row per architecture and metric: the deterministic metrics' difference,
    sigma2's z-score (probes drawn independently: the standard error of the difference is sqrt(2) times
    the reference's, the two estimates having the same variance)."""
    import jax.numpy as jnp

    from zsad.measure import seed_inputs
    from zsad.rank import RankOptions, rank_space
    from zsad.score import seed_keys

    opts = RankOptions(seeds=seeds, batch=batch, tangents=tangents)
    zs = {r["arch"]: r for r in rank_space(space, opts).rows}
    rows = []
    for item in space:
        x = x_for(item)
        per_seed = seed_inputs(seed_keys(opts.seed, seeds), jnp.asarray(x), tangents)
        net = zsad_network(item)
        model = model_for(item)
        xt = model.to_torch_input(x)
        values: dict[str, list] = {m: [] for m in MEASURED}
        se: list[float] = []
        for s in range(seeds):
            params = model.from_zsad(net.init(per_seed["init"][s], net.scalars))
            if s == 0:
                with torch.no_grad():
                    classes = model.forward(params, xt[:2], model.calibrate(params, xt[:2])).reshape(2, -1).shape[1]
                labels = np.random.default_rng(opts.data_seed + 1).integers(0, classes, batch)
            tt = torch.stack([model.to_torch_input(t) for t in np.asarray(per_seed["tangents"][s])])
            res = measure(model, params, xt, torch.from_numpy(labels.astype(np.int64)), MEASURED, tangents=tt,
                          probe_generator=torch.Generator().manual_seed(s), input_shape=tuple(x.shape[1:]))
            for name, value in res.items():
                if name == "sigma2":
                    values[name].append((value["value"], True))
                    se.append(value["stderr"])
                else:
                    values[name].append(value)
        for name, per in values.items():
            z = zs[item.id].get(name)
            ok = [v for v, valid in per if valid]
            t = float(np.mean(ok)) if per and len(ok) == len(per) else None
            row = {"arch": item.id, "metric": name, "zsad": z, "torch": t}
            if z is None or t is None:
                row["agree"] = z is None and t is None
            elif name == "sigma2":
                row["stderr"] = math.sqrt(sum(v * v for v in se)) / len(se)
                row["z"] = (t - z) / (math.sqrt(2) * row["stderr"])
                row["agree"] = abs(row["z"]) <= SIGMA2_Z
            else:
                row["diff"] = abs(t - z) / max(1.0, abs(z))
                row["agree"] = row["diff"] <= SAME_WEIGHTS_TOL
            rows.append(row)
    return rows


def main() -> None:
    import argparse
    import json
    import time
    from pathlib import Path

    from torch_reference import CHECK_MLPS, CHECK_NB201

    from zsad.data import load_inputs
    from zsad.space import parse_space

    parser = argparse.ArgumentParser(description="zsad rank's default metrics against the PyTorch reference, "
                                                 "same weights")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tangents", type=int, default=2)
    parser.add_argument("--nb201", type=int, default=2, help="NAS-Bench-201 architectures to check")
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "torch_metrics_check.json")
    args = parser.parse_args()
    spaces = [parse_space({"archs": CHECK_MLPS})]
    if args.nb201:
        spaces.append(parse_space({"space": "nas-bench-201", "archs": CHECK_NB201[:args.nb201]}))

    def x_for(item):
        inp = spaces[-1].input if isinstance(item.arch, tuple) else item.arch.input
        return load_inputs(inp, args.batch, seed=0)

    t0 = time.perf_counter()
    rows = [r for space in spaces for r in check_metrics_same_weights(space, x_for, seeds=args.seeds,
                                                                      batch=args.batch, tangents=args.tangents)]
    print("| architecture | metric | zsad | torch | relative difference or z | agree |\n|---|---|---|---|---|---|")
    for r in rows:
        gap = f"z = {r['z']:+.2f}" if "z" in r else (f"{r['diff']:.1e}" if "diff" in r else "—")
        print(f"| `{r['arch']}` | {r['metric']} | {r['zsad']} | {r['torch']} | {gap} | {r['agree']} |")
    elapsed = time.perf_counter() - t0
    print(f"\n{sum(r['agree'] for r in rows)} of {len(rows)} agree; {elapsed:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    where = args.json.resolve().relative_to(root) if args.json.resolve().is_relative_to(root) else args.json
    args.json.write_text(json.dumps({"options": vars(args) | {"json": str(where)}, "same_weights": rows,
                                     "tolerance": {"relative": SAME_WEIGHTS_TOL, "sigma2_z": SIGMA2_Z},
                                     "seconds": elapsed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
