"""Compares ``zsad select`` on NAS-Bench-201 with a development split's trained accuracies.

Per edge, the order of the five operations by their marginal effect on the default score is compared
(Spearman rho over the five) with their order by the mean CIFAR-10 / CIFAR-100 / ImageNet16-120
accuracy (every accuracy column of the split) of the split's architectures that use them (the
selection never sees these accuracies). The selected architecture's accuracy is shown where the split
holds it, else that of its nearest architectures in the split. Usage::

    zsad select SPACE.yaml --out select_nb201.json     # SPACE.yaml: space: nas-bench-201
    python -m benchmarks.select_dev select_nb201.json [benchmarks/data/nb201_dev_200ep.csv | benchmarks/data/nb201_dev_12ep.csv]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from zsad.spaces import nasbench201 as nb201



def _spearman(a, b) -> float:
    """Spearman's rho with tied values given their average rank."""
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


# The parameter count of each operation alone, in the order of ``nb201.OPS``: a baseline that needs no
# measurement (none, skip and pooling tie at zero).
OP_PARAMS = {"none": 0, "skip_connect": 0, "nor_conv_1x1": 1, "nor_conv_3x3": 9, "avg_pool_3x3": 0}


def main(selection: str, split: str = "benchmarks/data/nb201_dev_200ep.csv") -> None:
    doc = json.loads(Path(selection).read_text())
    with open(split) as fh:
        reader = csv.DictReader(fh)
        columns = tuple(c for c in reader.fieldnames if c != "arch")  # the split's accuracy columns
        rows = [(nb201.parse_arch(r["arch"]), {c: float(r[c]) if r[c] else None for c in columns})
                for r in reader]  # a missing accuracy is left out of its means
    print(f"{len(rows)} architectures of {split}; selection {selection} ({doc['options']['samples']} samples)")
    print("edge   " + "  ".join(f"{op:>13}" for op in nb201.OPS) + "   rho " + " ".join(c.split("_")[0] for c in columns))
    rhos: dict[str, dict[str, list[float]]] = {}
    for e, pos in enumerate(doc["positions"]):
        acc = {c: [np.mean([a[c] for ops, a in rows if ops[e] == op and a[c] is not None]) for op in nb201.OPS]
               for c in columns}
        orders = {"score": [c["marginal"] for c in pos["candidates"]],
                  **{f"ingredient {k}": [c["ingredients"][k]["marginal"] for c in pos["candidates"]]
                     for k in pos["candidates"][0].get("ingredients", {})},
                  "baseline: the operation's params": [OP_PARAMS[op] for op in nb201.OPS]}
        for name, order in orders.items():
            for c in columns:
                rhos.setdefault(name, {}).setdefault(c, []).append(_spearman(order, acc[c]))
        cells = "  ".join(f"{m:+.2f} ({a:5.1f})" for m, a in zip(orders["score"], acc[columns[0]]))
        print(f"{pos['name']:5}  {cells}   " + " ".join(f"{rhos['score'][c][-1]:+.2f}" for c in columns))
    print("mean rho over edges (" + ", ".join(columns) + "):")
    for name, per in rhos.items():
        print(f"  {name:34} " + "  ".join(f"{np.mean(per[c]):+.2f}" for c in columns))
    arch = doc["selected"]["arch"]
    ops = nb201.parse_arch(arch)
    print(f"selected: {arch}")
    hit = [a for o, a in rows if o == ops]
    for c in columns:
        accs = np.array([a[c] for _, a in rows if a[c] is not None])
        if hit and hit[0][c] is not None:
            print(f"  {c}: {hit[0][c]:.2f} (percentile {100 * np.mean(accs < hit[0][c]):.0f} of the split)")
    if not hit:
        print("  (not in the split: no trained accuracy here)")
        # Its nearest neighbours in the split (fewest edges with another operation) stand in for it.
        dist = [sum(a != b for a, b in zip(o, ops)) for o, _ in rows]
        near = min(dist)
        hood = [a for (o, a), d in zip(rows, dist) if d == near]
        print(f"  its {len(hood)} nearest architecture(s) in the split differ on {near} edge(s):")
        for c in columns:
            accs = np.array([a[c] for _, a in rows if a[c] is not None])
            mine = [a[c] for a in hood if a[c] is not None]
            pct = [100 * np.mean(accs < v) for v in mine]
            print(f"  {c}: mean {np.mean(mine):.2f}, percentiles {', '.join(f'{p:.0f}' for p in pct)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
