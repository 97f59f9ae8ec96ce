"""What each metric adds to ``zsad rank``'s time (benchmark, not a test).

In one process, for each metric set (each with ``params``, which is counted on the host): one
first run (compiling; the persistent cache is a temporary folder, so it starts empty), then
``--rounds`` warm runs of every set, the sets interleaved round by round so that the machine's load
falls on all of them alike (the process keeps every set's programs compiled). Reported per set: the
median warm time, its ratio to the NLC-only set and what it adds to it. The default options
otherwise (two initializations, batch 64, two tangents).

Run: ``.venv/bin/python benchmarks/metric_costs.py [--space nb201|mlp] [--archs 4] [--rounds 3]``
(results: ``benchmarks/results/metric_costs_SPACE.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_rank import _fingerprint, mlp_space_node, nb201_space_node  # noqa: E402

#: Metric sets measured (each with params); the first is the baseline of the ratios.
SETS = ("nlc", "nlc,naswot", "nlc,synflow", "nlc,sigma2", "nlc,jacob_cov", "nlc,grad_norm,snip",
        "nlc,grad_norm,snip,jacob_cov", "all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", choices=("nb201", "mlp"), default="nb201")
    parser.add_argument("--archs", type=int, default=4, help="seeded sample of the space")
    parser.add_argument("--rounds", type=int, default=3, help="warm runs of each set")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ["ZSAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="zsad-metric-costs-")

    from zsad import measure, scorer
    from zsad.rank import RankOptions, rank_space
    from zsad.ranking import METRICS
    from zsad.space import parse_space

    # Every set's programs stay compiled, as for a user who runs one metric set again: the process's
    # caches keep only the most recent programs, which the interleaved sets would otherwise evict.
    scorer.PROGRAMS = measure._MAX_PROGRAMS = 1000

    node = nb201_space_node(args.archs, 0) if args.space == "nb201" else mlp_space_node(args.archs, 0)
    space = parse_space(node)
    sets = {s: METRICS if s == "all" else tuple(dict.fromkeys((*s.split(","), "params"))) for s in SETS}

    def run(metrics) -> float:
        t = time.perf_counter()
        result = rank_space(space, RankOptions(metrics=metrics))
        elapsed = time.perf_counter() - t
        bad = [r.get("reason") for r in result.rows if r["status"] == "failed"]
        if bad:
            raise SystemExit(f"metric_costs: rows failed with {metrics}: {bad}")
        return elapsed

    load = {"before": os.getloadavg()}
    first = {name: run(m) for name, m in sets.items()}
    warm: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(args.rounds):
        for name, m in sets.items():
            warm[name].append(run(m))
    load["after"] = os.getloadavg()
    base = statistics.median(warm[SETS[0]])
    report = {
        "command": " ".join(["python", "benchmarks/metric_costs.py", *sys.argv[1:]]),
        "space": node, "archs": args.archs, "rounds": args.rounds, "cpus": os.cpu_count(),
        "load_average": load, "engine": _fingerprint(),
        "sets": {name: {"metrics": list(sets[name]), "first_s": first[name], "warm_s": warm[name],
                        "warm_median_s": statistics.median(warm[name]),
                        "ratio_to_nlc": statistics.median(warm[name]) / base,
                        "added_s": statistics.median(warm[name]) - base} for name in sets},
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"metric_costs_{args.space}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.space}, {args.archs} architectures, warm medians of {args.rounds} "
          f"(load {load['before'][0]:.1f} -> {load['after'][0]:.1f}):")
    for name, r in report["sets"].items():
        print(f"  {name:32s} {r['warm_median_s']:7.2f} s  {r['ratio_to_nlc']:5.2f}x  +{r['added_s']:6.2f} s"
              f"   first {r['first_s']:6.1f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
