"""How large a batch and how many tangents does ranking by NLC need?

Run (the MLP space alone takes minutes; NAS-Bench-201 is the long part):

    .venv/bin/python benchmarks/rank_settings.py [--spaces mlp,nb201] [--nb201 60] [--mlp 200] \
        [--batches 16,32,64,128] [--tangents 1,2,4] [--ref-batch 256] [--ref-tangents 8] \
        [--ref-repeat | --no-ref-repeat] [--stability-seeds 1,2] [--out FILE.json]

For each space (the 200-architecture MLP space of ``bench_rank.py`` and a seeded
sample of NAS-Bench-201 architectures), every architecture is scored with
``zsad.rank.rank_space`` at one initialization (``RankOptions(seeds=1, seed=0)``:
the same weights at every setting, since the initialization key depends only on
the seed) and:

* a reference setting, ``--ref-batch`` x ``--ref-tangents`` (default 256 x 8), on
  the input batch ``data_seed=0``;
* every cheaper setting ``batch x tangents`` of the grid, on another input batch
  (``data_seed=1``), so that its estimate and the reference's share no samples;
* optionally the reference setting again on ``data_seed=1`` (``--ref-repeat``,
  default on for the MLP space): the reference's own noise floor, the Spearman no
  cheaper setting can be expected to beat.

Reported per setting: Spearman's rank correlation of the NLCs with the
reference's (over the architectures whose NLC is defined in both), the median
relative difference |NLC - NLC_ref| / NLC_ref, the relative cost
batch x (2 + tangents) (forward-pass equivalents: calibration, linearization,
one push per tangent) and the wall time of the call (compilation included: every
batch size and tangent count is a new program).

Then the cheapest setting (by relative cost) whose Spearman exceeds
``--target`` (0.99), or the best one if none does, and the rank stability over
initializations at that setting: Spearman between the NLCs of two independent
initializations (``seed=0`` and ``seed=1``), with one initialization per
architecture (``seeds=1``) and with the mean of two (``seeds=2``, as ``zsad rank``
does by default; ``--stability-seeds``), and the same at the ``zsad rank`` default
batch and tangents (64 x 2). Estimator noise that is small next to this
initialization noise buys nothing.

Prints markdown tables and writes JSON (``--out``, default
``benchmarks/results/rank_settings.json``; rewritten after every setting, so an
interrupted run keeps what it computed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_rank import mlp_space_node, nb201_space_node, spearman  # noqa: E402


def relative_cost(batch: int, tangents: int) -> int:
    """Forward-pass equivalents per initialization: calibration, linearization, one push per tangent."""
    return batch * (2 + tangents)


def run_setting(space, *, batch: int, tangents: int, seeds: int = 1, seed: int = 0, data_seed: int = 0) -> dict:
    from zsad.rank import RankOptions, rank_space

    opts = RankOptions(seeds=seeds, batch=batch, tangents=tangents, seed=seed, data_seed=data_seed,
                       metrics=("nlc", "params"))
    t0 = time.perf_counter()
    res = rank_space(space, opts)
    return {"batch": batch, "tangents": tangents, "seeds": seeds, "seed": seed, "data_seed": data_seed,
            "seconds": time.perf_counter() - t0, "nlc": {r["arch"]: r.get("nlc") for r in res.rows}}


def compare(a: dict, b: dict) -> dict:
    ids = [k for k in a if a[k] is not None and b.get(k) is not None and math.isfinite(a[k]) and math.isfinite(b[k])]
    rel = [abs(a[k] - b[k]) / abs(b[k]) for k in ids if b[k]]
    return {"spearman": spearman([a[k] for k in ids], [b[k] for k in ids]), "n": len(ids),
            "median_rel_diff": statistics.median(rel) if rel else None}


def study(name: str, space, args, save, out: dict) -> dict:
    """Fills ``out`` (already part of what ``save`` writes) setting by setting."""
    log = lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    ref = run_setting(space, batch=args.ref_batch, tangents=args.ref_tangents, data_seed=0)
    out["reference"] = ref
    log(f"reference {args.ref_batch} x {args.ref_tangents}: {ref['seconds']:.0f} s")
    save()
    grid = [(b, k) for b in args.batches for k in args.tangents]
    repeat = args.ref_repeat if args.ref_repeat is not None else (name == "mlp")
    if repeat:
        grid.append((args.ref_batch, args.ref_tangents))
    for b, k in sorted(grid, key=lambda s: relative_cost(*s)):
        r = run_setting(space, batch=b, tangents=k, data_seed=1)
        row = {"batch": b, "tangents": k, "relative_cost": relative_cost(b, k), "seconds": r["seconds"],
               **compare(r["nlc"], ref["nlc"]), "nlc": r["nlc"]}
        out["settings"].append(row)
        log(f"{b} x {k}: Spearman {row['spearman']:.4f} ({r['seconds']:.0f} s)")
        save()
    cheap = [s for s in out["settings"] if (s["batch"], s["tangents"]) != (args.ref_batch, args.ref_tangents)]
    passing = [s for s in cheap if s["spearman"] is not None and s["spearman"] > args.target]
    chosen = (min(passing, key=lambda s: (s["relative_cost"], s["seconds"])) if passing else
              max(cheap, key=lambda s: s["spearman"] if s["spearman"] is not None else -2))
    out["chosen"] = {"batch": chosen["batch"], "tangents": chosen["tangents"], "spearman": chosen["spearman"],
                     "meets_target": bool(passing), "target": args.target}
    # rank stability over initializations
    cases = [(chosen["batch"], chosen["tangents"], n) for n in args.stability_seeds]
    if (chosen["batch"], chosen["tangents"]) != (64, 2):
        cases += [(64, 2, n) for n in args.stability_seeds]
    for b, k, seeds in cases:
        a = run_setting(space, batch=b, tangents=k, seeds=seeds, seed=0, data_seed=1)
        c = run_setting(space, batch=b, tangents=k, seeds=seeds, seed=1, data_seed=1)
        row = {"batch": b, "tangents": k, "seeds": seeds, **compare(a["nlc"], c["nlc"]),
               "seconds": a["seconds"] + c["seconds"]}
        out["seed_stability"].append(row)
        log(f"seed stability {b} x {k}, {seeds} seed(s): Spearman {row['spearman']:.4f}")
        save()
    out["seconds"] = time.perf_counter() - t0
    return out


def report(res: dict, args) -> None:
    ref = res["reference"]
    print(f"\n## {res['space']}: {res['archs']} architectures, reference {args.ref_batch} x {args.ref_tangents} "
          f"({ref['seconds']:.0f} s); NLC of one initialization\n")
    print("| batch | tangents | relative cost | Spearman vs reference | median rel. diff | archs | seconds |")
    print("|---|---|---|---|---|---|---|")
    for s in res["settings"]:
        tag = " (reference repeated on another batch)" if (s["batch"], s["tangents"]) == (
            args.ref_batch, args.ref_tangents) else ""
        sp = "—" if s["spearman"] is None else f"{s['spearman']:.4f}"
        mr = "—" if s["median_rel_diff"] is None else f"{100 * s['median_rel_diff']:.1f}%"
        print(f"| {s['batch']} | {s['tangents']}{tag} | {s['relative_cost']} | {sp} | {mr} | {s['n']} | "
              f"{s['seconds']:.0f} |")
    c = res.get("chosen")
    if c:
        verdict = ("cheapest setting with Spearman > " if c["meets_target"] else "no setting reaches Spearman > ")
        print(f"\n{verdict}{c['target']}: " + (f"batch {c['batch']} x {c['tangents']} tangents "
                                                  f"(Spearman {c['spearman']:.4f})" if c["meets_target"] else
                                                  f"best is batch {c['batch']} x {c['tangents']} tangents "
                                                  f"(Spearman {c['spearman']:.4f})"))
    if res["seed_stability"]:
        print("\n| rank stability over initializations | Spearman (seed 0 vs seed 1) | median rel. diff | archs |")
        print("|---|---|---|---|")
        for s in res["seed_stability"]:
            print(f"| batch {s['batch']} x {s['tangents']} tangents, {s['seeds']} initialization(s) per arch | "
                  f"{s['spearman']:.4f} | {100 * s['median_rel_diff']:.1f}% | {s['n']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description="batch size and tangents needed for a stable NLC ranking")
    parser.add_argument("--spaces", default="mlp,nb201")
    parser.add_argument("--nb201", type=int, default=60, help="NAS-Bench-201 architectures (seeded sample)")
    parser.add_argument("--nb201-seed", type=int, default=1)
    parser.add_argument("--mlp", type=int, default=200)
    parser.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[16, 32, 64, 128])
    parser.add_argument("--tangents", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--ref-batch", type=int, default=256)
    parser.add_argument("--ref-tangents", type=int, default=8)
    parser.add_argument("--ref-repeat", action=argparse.BooleanOptionalAction, default=None,
                        help="repeat the reference on another batch (default: on for mlp, off for nb201)")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--stability-seeds", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2],
                        help="initializations per architecture in the seed-stability comparison")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rank_settings.json")
    args = parser.parse_args()

    from zsad.space import parse_space

    results: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                     "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "load_average_before": os.getloadavg(), "cpus": os.cpu_count(), "spaces": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    for name in args.spaces.split(","):
        if name == "mlp":
            space = parse_space(mlp_space_node(args.mlp))
        elif name == "nb201":
            space = parse_space(nb201_space_node(args.nb201, args.nb201_seed))
        else:
            raise SystemExit(f"--spaces: expected mlp and/or nb201; got {name!r}")
        out = results["spaces"][name] = {"space": name, "archs": space.size, "settings": [], "seed_stability": []}
        res = study(name, space, args, save, out)
        results["load_average_after"] = os.getloadavg()
        save()
        report(res, args)
    la, lb = results["load_average_before"], results.get("load_average_after", os.getloadavg())
    print(f"\nload average {la[0]:.1f} before, {lb[0]:.1f} after; JSON: {args.out}")


if __name__ == "__main__":
    main()
