"""How the TransNAS-Bench-101 ranking moves with the input resolution (class_object).

For a seeded sample of micro cells and macro skeletons, every architecture is initialized once
(the weights do not depend on the resolution) and measured on Gaussian inputs at each
resolution: the NLC of the output (``zsad.nlc.nlc_profile``, batch-norm statistics calibrated
on the batch), sigma2 = Tr(J^T J) / min(d_in, d_out) of the input -> encoder-output Jacobian
(the default sigma2 segment, estimated with Rademacher probes, one JVP each: Hutchinson, as
the matrix-free spectrum computes the mean), and the default score (``zsad.ranking``'s default
candidate: a rank combination of ln nlc, -|ln sigma2| and ln flops). It reports the Spearman correlation of each
resolution's ranking with the largest resolution's, per space, and the cheapest resolution
whose correlation is >= 0.95 on every column (``summary`` in the JSON; ``seconds`` there are
the median per measurement, compilation included, on a shared machine).

Run: ``.venv/bin/python benchmarks/transnas_resolution.py --micro 30 --macro 30``
(``--resolutions 32 64 128 256``; results go to ``--out`` as JSON, written after every
architecture, and a markdown table is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

from zsad.nlc import nlc_profile
from zsad.ranking import CANDIDATES, DEFAULT_CANDIDATE, rank_combination
from zsad.spaces.transnas import TransNASMacro, TransNASMicro

COLUMNS = ("nlc", "sigma2", "score")


def measure_fn(net, tangents: int, probes: int, samples: int):
    """Jitted ``fn(key, x, scalars) -> (nlc, sigma2)`` for one program at one input shape."""

    def fn(key, x, scalars):
        k_init, k_tan, k_probe = jax.random.split(key, 3)
        variables = net.calibrate(net.init(k_init, scalars), scalars, x)
        profile = nlc_profile(lambda v: net.apply(variables, scalars, v)[0], x, k_tan, num_tangents=tangents)
        xs = x[:samples]
        encode = lambda v: net.apply(variables, scalars, v)[1]["encoder"]  # noqa: E731
        v = jax.random.rademacher(k_probe, (probes, *xs.shape), x.dtype)
        sq = jax.vmap(lambda t: jnp.sum(jnp.square(jax.jvp(encode, (xs,), (t,))[1]), axis=(1, 2, 3)))(v)
        d_in, d_out = math.prod(xs.shape[1:]), math.prod(encode(xs[:1]).shape[1:])
        return profile.nlc, jnp.mean(sq) / min(d_in, d_out)

    return jax.jit(fn)


def run_space(space, archs, resolutions, args, log, store):
    """Measures every architecture at every resolution: one compiled program per (group, resolution)."""
    compiled = {}
    groups = list(dict.fromkeys(space.group(a) for a in archs))
    work = sorted(((groups.index(space.group(a)), res, i) for i, a in enumerate(archs) for res in resolutions))
    for _, res, i in work:
        arch = archs[i]
        name = space.format(arch)
        row = store.setdefault(name, {"flops": space.flops(arch)})
        if str(res) not in row:
            t0 = time.perf_counter()
            group = space.group(arch)
            if (group, res) not in compiled:
                compiled = {(group, res): measure_fn(space.program(group), args.tangents, args.probes, args.samples)}
            x = jax.random.normal(jax.random.key(1000 + res), (args.batch, res, res, 3))
            nlc, sigma2 = jax.device_get(compiled[group, res](jax.random.key(i), x, space.scalars(arch)))
            row[str(res)] = {"nlc": float(nlc), "sigma2": float(sigma2), "seconds": time.perf_counter() - t0}
            log(f"{space.name} {name} {res}: nlc {float(nlc):.4g} sigma2 {float(sigma2):.4g} "
                f"({time.perf_counter() - t0:.1f} s)")
            args.out.write_text(json.dumps(results_of(args), indent=1))


def results_of(args):
    return {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "store")}, "rows": args.store}


def correlations(rows: dict, resolutions: list[int]) -> dict:
    """Spearman of each resolution's column with the largest resolution's, over the architectures measured
    at every resolution."""
    names = [n for n, r in rows.items() if all(str(res) in r for res in resolutions)]
    ref = str(max(resolutions))
    out = {}
    table = {}
    for res in resolutions:
        recs = [{"status": "ok", "nlc": rows[n][str(res)]["nlc"], "sigma2": rows[n][str(res)]["sigma2"],
                 "flops": rows[n]["flops"]} for n in names]
        score = rank_combination(recs, CANDIDATES[DEFAULT_CANDIDATE])
        table[str(res)] = {"nlc": [r["nlc"] for r in recs], "sigma2": [abs(math.log(r["sigma2"])) for r in recs],
                           "score": score}
    for res in resolutions:
        out[res] = {c: float(spearmanr(table[str(res)][c], table[ref][c])[0]) for c in COLUMNS}
        out[res]["seconds"] = float(np.median([rows[n][str(res)]["seconds"] for n in names])) if names else None
    return {"n": len(names), "rho": out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", type=int, default=30)
    parser.add_argument("--macro", type=int, default=30)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tangents", type=int, default=2)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transnas_resolution.json"))
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text())["rows"] if args.out.exists() else {}
    args.store = previous
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    micro, macro = TransNASMicro("class_object"), TransNASMacro("class_object")
    micro_archs = [a for a in micro.sample(4 * args.micro, args.seed) if micro.degenerate(a) is None][:args.micro]
    macro_archs = macro.sample(args.macro, args.seed)
    res = sorted(args.resolutions)
    run_space(micro, micro_archs, res, args, log, args.store.setdefault("micro", {}))
    run_space(macro, macro_archs, res, args, log, args.store.setdefault("macro", {}))
    print("| space | resolution | archs | rho nlc | rho sigma2 | rho score | s/arch |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for key in ("micro", "macro"):
        c = correlations(args.store.get(key, {}), res)
        keeps = [r for r in res if min(c["rho"][r][col] for col in COLUMNS) >= 0.95]
        summary[key] = {**c, "cheapest_rho_0.95": min(keeps) if keeps else None}
        for r in res:
            rho = c["rho"][r]
            print(f"| {key} | {r} | {c['n']} | {rho['nlc']:.3f} | {rho['sigma2']:.3f} | {rho['score']:.3f} | "
                  f"{rho['seconds']:.1f} |")
    results = results_of(args)
    results["settings"].pop("micro"), results["settings"].pop("macro")  # the sample sizes: summary[...]["n"]
    args.out.write_text(json.dumps({**results, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
