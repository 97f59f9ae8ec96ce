"""Scale-out throughput of `zsad rank`: 1 and 2 local Ray workers, 1 and 2 host devices.

Run (a few minutes on an idle two-core machine with the defaults):

    .venv/bin/python benchmarks/bench_scaleout.py [--mlp 120] [--nb201 0] [--seeds 2] [--batch 64] \
        [--tangents 2] [--metrics nlc,params] [--configs ray1,ray2,dev1,dev2] [--out FILE.json]

Spaces:

* an MLP space (written to ``benchmarks/results/scaleout_mlp.yaml``): input 32,
  depth 2 or 4 x relu or tanh (4 structures, 4 compiled programs) x weight_std
  10 values x bias_std 3 values (30 scalar variants per structure), 120
  architectures; ``--mlp N`` takes a seeded sample of N;
* optionally (``--nb201 N``, default 0: skipped) a seeded sample of N
  NAS-Bench-201 architectures (one compiled program for the whole space).

Configurations, each in a fresh Python process (so each pays its own start and
compilation, as a user's run does):

* ``rayK``: ``zsad.cluster.ray_runner(workers=K)``, a local Ray cluster of K CPUs
  and K workers (``zsad rank --ray --workers K``); every worker compiles the
  programs of the structures it is sent;
* ``devK``: this process alone with ``XLA_FLAGS=--xla_force_host_platform_device_count=K``
  (``zsad rank --devices K``): with K > 1 a chunk's architectures are split over
  the K host devices (``shard_map``) and run one after the other on each
  (``lax.map``); with K = 1 each architecture is one call of its program.

Reported per configuration: ``start`` (Ray: starting the cluster; not counted in
the rates), ``cold`` (the first ``rank_space`` call: worker start-up, tracing and
compilation included) and ``warm`` (a second call on the same space, programs
compiled), as architectures per second. Prints a markdown table and writes JSON
to ``--out`` (default ``benchmarks/results/bench_scaleout.json``). The machine's
load average before and after is printed with it: on a shared machine compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

MLP_BASE = {
    "name": "mlp",
    "input": {"shape": [32]},
    "init": {"weight_std": 1.41},
    "layers": [
        {"type": "block", "repeat": 2, "layers": [{"type": "dense", "features": 64},
                                                  {"type": "activation", "fn": "relu"}]},
        {"type": "dense", "features": 10},
    ],
}
MLP_CHOICES = {
    "layers.0.repeat": [2, 4],
    "layers.0.layers.1.fn": ["relu", "tanh"],
    "init.weight_std": [0.5, 0.8, 1.0, 1.2, 1.41, 1.6, 1.8, 2.0, 2.5, 3.0],
    "init.bias_std": [0.0, 0.1, 0.3],
}


def write_spaces(args) -> dict[str, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    spaces = {}
    if args.mlp:
        doc = {"name": "scaleout-mlp", "base": MLP_BASE, "choices": MLP_CHOICES}
        total = 1
        for values in MLP_CHOICES.values():
            total *= len(values)
        if args.mlp < total:
            doc.update(sample=args.mlp, seed=0)
        path = RESULTS / "scaleout_mlp.yaml"
        path.write_text(json.dumps(doc, indent=2) + "\n")  # JSON is YAML
        spaces["mlp"] = path
    if args.nb201:
        path = RESULTS / "scaleout_nb201.yaml"
        path.write_text(json.dumps({"name": "scaleout-nb201", "space": "nas-bench-201",
                                    "archs": {"sample": args.nb201, "seed": 0}}) + "\n")
        spaces["nb201"] = path
    return spaces


# --------------------------------------------------------------------------- one configuration (a child process)

def run_config(config: str, space_file: str, options: dict) -> dict:
    from zsad.rank import RankOptions, rank_space
    from zsad.space import load_space

    space = load_space(space_file)
    opts = RankOptions(**{**options, "metrics": tuple(options["metrics"])})
    kind, k = config[:3], int(config[3:])
    runner = None
    start = 0.0
    if kind == "ray":
        from zsad.cluster import ray_runner

        t0 = time.perf_counter()
        runner = ray_runner(workers=k)
        start = time.perf_counter() - t0
    times = []
    try:
        for _ in range(2):
            t0 = time.perf_counter()
            result = rank_space(space, opts, runner=runner)
            times.append(time.perf_counter() - t0)
    finally:
        if runner is not None:
            runner.close()
    import jax

    statuses: dict[str, int] = {}
    for row in result.rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return {"config": config, "archs": len(result.rows), "start_s": start, "cold_s": times[0], "warm_s": times[1],
            "devices": len(jax.devices()), "statuses": statuses,
            "rows": {r["arch"]: r.get("nlc") for r in result.rows}}


def child(config: str, space_file: str, options: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    env["JAX_PLATFORMS"] = "cpu"
    if config.startswith("dev"):
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={int(config[3:])}"
    proc = subprocess.run([sys.executable, __file__, "--child", config, space_file, json.dumps(options)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{config} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the driver

def max_relative_difference(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        return float("inf")
    worst = 0.0
    for arch, x in a.items():
        y = b[arch]
        if (x is None) != (y is None):
            return float("inf")
        if x is not None:
            worst = max(worst, abs(x - y) / max(abs(x), 1e-30))
    return worst


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp", type=int, default=120, help="MLP architectures (0: skip)")
    parser.add_argument("--nb201", type=int, default=0, help="NAS-Bench-201 architectures (0: skip)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tangents", type=int, default=2)
    parser.add_argument("--metrics", default="nlc,params")
    parser.add_argument("--configs", default="ray1,ray2,dev1,dev2")
    parser.add_argument("--out", default=str(RESULTS / "bench_scaleout.json"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config, space_file, options = args.child
        print(json.dumps(run_config(config, space_file, json.loads(options))))
        return
    options = {"seeds": args.seeds, "batch": args.batch, "tangents": args.tangents,
               "metrics": [m.strip() for m in args.metrics.split(",") if m.strip()]}
    spaces = write_spaces(args)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    before = load()
    print(f"{before}; options {options}", flush=True)
    results = []
    for name, path in spaces.items():
        for config in configs:
            t0 = time.perf_counter()
            res = child(config, str(path), options)
            res.update(space=name, wall_s=time.perf_counter() - t0)
            results.append(res)
            print(f"  {name} {config}: cold {res['cold_s']:.1f} s, warm {res['warm_s']:.1f} s "
                  f"({res['archs']} archs)", flush=True)
    after = load()
    # every configuration must compute the same rows (up to float32 rounding: the programs differ)
    for name in spaces:
        runs = [r for r in results if r["space"] == name]
        for r in runs[1:]:
            diff = max_relative_difference(runs[0]["rows"], r["rows"])
            r["nlc_max_rel_diff"] = diff
            print(f"{name}: {r['config']} vs {runs[0]['config']}: largest relative NLC difference {diff:.1e}")
    print()
    print("| space | config | archs | start s | cold s | cold archs/s | warm s | warm archs/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        label = {"ray": f"Ray, {r['config'][3:]} worker(s)", "dev": f"{r['config'][3:]} host device(s)"}[r["config"][:3]]
        print(f"| {r['space']} | {label} | {r['archs']} | {r['start_s']:.1f} | {r['cold_s']:.1f} | "
              f"{r['archs'] / r['cold_s']:.1f} | {r['warm_s']:.2f} | {r['archs'] / r['warm_s']:.1f} |")
    print(f"\nbefore: {before}\nafter:  {after}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for r in results:
        r.pop("rows")
    Path(args.out).write_text(json.dumps({"options": options, "load_before": before, "load_after": after,
                                          "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
