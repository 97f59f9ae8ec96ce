"""Speed of ``zsad rank`` on the built-in cell and macro spaces with the default metrics and options.

For each space named (its default network and input; TransNAS-Bench-101 on ``class_object``), ranks
a seeded sample and records when each row arrives, and how many programs were compiled
(``zsad.measure.TRACES``). Where one program serves the whole space (DARTS, TransNAS-Bench-101
micro), its first row holds the compilation and the others run it: architectures/s = rows after
the first / their time, compile share = the first row's time beyond one steady row, over the total.
Where architectures of different shapes get programs of their own (NAS-Bench-101's shape
signatures, TransNAS-Bench-101 macro skeletons), most rows compile, and architectures/s includes
compilation.

Run: ``.venv/bin/python benchmarks/space_speed.py --space darts --space transnas-macro:2`` (``NAME:N``
samples N architectures of that space, else ``--archs``; ``--metrics nlc,params`` as rank's option; JSON
to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from zsad import measure
from zsad.rank import RankOptions, rank_space
from zsad.space import parse_space

SPACES = ("darts", "nas-bench-101", "transnas-micro", "transnas-macro")
ONE_PROGRAM = ("darts", "transnas-micro")  # the architecture is data in one program


def run(kind: str, n: int, seed: int = 0, metrics: str | None = None) -> dict:
    node = {"space": kind, "archs": {"sample": n, "seed": seed}}
    if kind.startswith("transnas"):
        node["task"] = "class_object"
    space = parse_space(node)
    stamps: list[float] = []
    traces = sum(measure.TRACES.values())
    t0 = time.perf_counter()
    options = RankOptions() if metrics is None else RankOptions(metrics=tuple(metrics.split(",")))
    result = rank_space(space, options, on_row=lambda row: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    ok = sum(r["status"] == "ok" for r in result.rows)
    gaps = [b - a for a, b in zip([t0, *stamps], stamps)]
    out = {"space": kind, "input": list(space.input.shape) if space.input else None, "archs": n, "ok": ok,
           "programs": sum(measure.TRACES.values()) - traces, "seconds": round(total, 1),
           "row_seconds": [round(g, 2) for g in gaps], "options": vars(options) | {"metrics": metrics or "default"}}
    if kind in ONE_PROGRAM and len(gaps) > 1:
        steady = sum(gaps[1:]) / (len(gaps) - 1)
        out["archs_per_s"] = round(1 / steady, 3)
        out["compile_share"] = round(max(0.0, gaps[0] - steady) / total, 3)
    else:
        out["archs_per_s"] = round(n / total, 3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", action="append", metavar="NAME[:N]",
                        help=f"a space to measure, one of {', '.join(SPACES)} (repeatable; default: all four)")
    parser.add_argument("--archs", type=int, default=4, help="architectures sampled per space")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--metrics", default=None, help="rank's --metrics (default: the default metrics)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    rows = []
    for item in args.space or SPACES:
        kind, _, n = item.partition(":")
        if kind not in SPACES:
            parser.error(f"--space: one of {', '.join(SPACES)}; got {kind!r}")
        rows.append(run(kind, int(n) if n else args.archs, args.seed, args.metrics))
        r = rows[-1]
        print(f"{r['space']} {r['input']}: {r['archs']} archs in {r['seconds']} s ({r['programs']} programs), "
              f"{r['archs_per_s']} archs/s" + (f", compile share {r['compile_share']:.0%}" if "compile_share" in r
                                              else ""), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(["benchmarks/space_speed.py", *(argv or sys.argv[1:])]),
                                        "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
