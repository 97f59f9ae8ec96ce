"""Compares ``zsad select`` on NAS-Bench-201 with the development split's 200-epoch accuracies.

Per edge, the order of the five operations by their marginal effect on the default score is compared
(Spearman rho over the five) with their order by the mean 200-epoch CIFAR-10 / CIFAR-100 /
ImageNet16-120 validation accuracy of the split's architectures that use them (the selection never
sees these accuracies). Usage::

    zsad select SPACE.yaml --out select_nb201.json     # SPACE.yaml: space: nas-bench-201
    python -m benchmarks.select_dev select_nb201.json [benchmarks/data/nb201_dev_200ep.csv]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from zsad import nasbench201 as nb201

COLUMNS = ("cifar10_val_200ep", "cifar100_val_200ep", "imagenet16_val_200ep")


def _spearman(a, b) -> float:
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(selection: str, split: str = "benchmarks/data/nb201_dev_200ep.csv") -> None:
    doc = json.loads(Path(selection).read_text())
    with open(split) as fh:
        rows = [(nb201.parse_arch(r["arch"]), {c: float(r[c]) if r[c] else None for c in COLUMNS})
                for r in csv.DictReader(fh)]  # a missing accuracy is left out of its means
    print(f"{len(rows)} architectures of {split}; selection {selection} ({doc['options']['samples']} samples)")
    print("edge   " + "  ".join(f"{op:>13}" for op in nb201.OPS) + "   rho " + " ".join(c.split("_")[0] for c in COLUMNS))
    rhos = {c: [] for c in COLUMNS}
    for e, pos in enumerate(doc["positions"]):
        marg = [c["marginal"] for c in pos["candidates"]]
        acc = {c: [np.mean([a[c] for ops, a in rows if ops[e] == op and a[c] is not None]) for op in nb201.OPS]
               for c in COLUMNS}
        r = {c: _spearman(marg, acc[c]) for c in COLUMNS}
        for c in COLUMNS:
            rhos[c].append(r[c])
        cells = "  ".join(f"{m:+.2f} ({a:5.1f})" for m, a in zip(marg, acc[COLUMNS[0]]))
        print(f"{pos['name']:5}  {cells}   " + " ".join(f"{r[c]:+.2f}" for c in COLUMNS))
    print("mean rho over edges: " + ", ".join(f"{c}: {np.mean(rhos[c]):+.2f}" for c in COLUMNS))
    arch = doc["selected"]["arch"]
    ops = nb201.parse_arch(arch)
    print(f"selected: {arch}")
    hit = [a for o, a in rows if o == ops]
    for c in COLUMNS:
        accs = np.array([a[c] for _, a in rows if a[c] is not None])
        if hit and hit[0][c] is not None:
            print(f"  {c}: {hit[0][c]:.2f} (percentile {100 * np.mean(accs < hit[0][c]):.0f} of the split)")
    if not hit:
        print("  (not in the split: no trained accuracy here)")


if __name__ == "__main__":
    main(*sys.argv[1:])
