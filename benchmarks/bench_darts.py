"""Throughput of `zsad rank` on the DARTS / NAS-Bench-301 space (benchmark, not a test).

Run:

    .venv/bin/python benchmarks/bench_darts.py [--archs 4] [--seed 0] [--width 32] [--depth 8] [--size 32] \
        [--seeds 2] [--batch 64] [--metrics all] [--out FILE.json]

Ranks a seeded sample of ``--archs`` architectures (``space: darts``, default
network: C = 32, 8 cells, 32x32 inputs) twice in one process with the default
metrics: cold (the first call: tracing and compiling the space's one program
included) and warm (the same architectures again, the program compiled). It
prints architectures/s warm, the cold time, and the compile share ``(cold -
warm) / cold``. One program serves the whole space, so the compile is paid once
per run whatever the number of architectures.
"""

from __future__ import annotations

import argparse
import json
import time

from zsad.rank import rank_space
from zsad.ranking import RankOptions, parse_metrics
from zsad.space import parse_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="input height and width")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--metrics", default="all")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    space = parse_space({"space": "darts", "width": args.width, "depth": args.depth,
                         "input": {"shape": [args.size, args.size, 3]},
                         "archs": {"sample": args.archs, "seed": args.seed}})
    options = RankOptions(metrics=parse_metrics(args.metrics), seeds=args.seeds, batch=args.batch)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        result = rank_space(space, options)
        times.append(time.perf_counter() - t0)
    cold, warm = times
    ok = sum(1 for r in result.rows if r["status"] == "ok")
    doc = {"archs": args.archs, "ok": ok, "width": args.width, "depth": args.depth, "size": args.size,
           "seeds": args.seeds, "batch": args.batch, "metrics": args.metrics, "cold_s": round(cold, 2),
           "warm_s": round(warm, 2), "archs_per_s_warm": round(args.archs / warm, 4),
           "compile_share": round((cold - warm) / cold, 3)}
    print(json.dumps(doc, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
