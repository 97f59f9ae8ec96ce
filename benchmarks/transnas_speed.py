"""Speed of ``zsad rank`` on the TransNAS-Bench-101 spaces with the default metrics and options.

For each space (class_object, default input), ranks a seeded sample and records when each row
arrives. The micro space runs one compiled program: its first row holds the compilation, the
others run it (architectures/s = rows after the first / their time; compile share = the first
row's time beyond one steady row, over the total). Each macro skeleton is its own program, so
every macro row compiles (its architectures/s includes compilation).

Run: ``.venv/bin/python benchmarks/transnas_speed.py --micro 6 --macro 3`` (JSON to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from zsad.rank import RankOptions, rank_space
from zsad.space import parse_space


def run(kind: str, n: int) -> dict:
    space = parse_space({"space": kind, "task": "class_object", "archs": {"sample": n, "seed": 0}})
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = rank_space(space, RankOptions(), on_row=lambda row: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    ok = sum(r["status"] == "ok" for r in result.rows)
    gaps = [b - a for a, b in zip([t0, *stamps], stamps)]
    steady = sum(gaps[1:]) / max(1, len(gaps) - 1)
    out = {"space": kind, "input": list(space.input.shape), "archs": n, "ok": ok, "seconds": round(total, 1),
           "row_seconds": [round(g, 2) for g in gaps], "options": vars(RankOptions()) | {"metrics": "default"}}
    if kind == "transnas-micro":
        out["archs_per_s"] = round(1 / steady, 3)
        out["compile_share"] = round(max(0.0, gaps[0] - steady) / total, 3)
    else:
        out["archs_per_s"] = round(n / total, 3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", type=int, default=6)
    parser.add_argument("--macro", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transnas_speed.json"))
    args = parser.parse_args(argv)
    rows = [run("transnas-micro", args.micro), run("transnas-macro", args.macro)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(f"{r['space']} {r['input']}: {r['archs']} archs in {r['seconds']} s, {r['archs_per_s']} archs/s"
              + (f", compile share {r['compile_share']:.0%}" if "compile_share" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
