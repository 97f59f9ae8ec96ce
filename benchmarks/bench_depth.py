"""Start-up and compile time against depth: cold ``zsad score`` of a repeated-block MLP at several depths,
``zsad --help``, and a warm ``zsad score examples/tanh_mlp.yaml``.

Run (a few minutes on an idle two-core machine):

    .venv/bin/python benchmarks/bench_depth.py [--depths 10,400] [--width 128] [--repeats 1] \
        [--zsad .venv/bin/zsad] [--out FILE.json]

The network is ``input [width] -> block(dense width, tanh) x depth -> dense 10`` (``depth`` hidden
layers: 2 x depth + 1 named layers), scored with ``zsad score``'s defaults (3 seeds, batch 256,
2 tangents, Jacobian spectrum, mean field) in a fresh process with an empty ``ZSAD_CACHE_DIR``: the
first run a user pays, tracing and compilation included. The depths run one after the other,
``--repeats`` times in turn (so background load falls on each alike); the table gives each depth's
median wall time and its ratio to the shallowest depth's.

Then ``zsad --help`` (median of 5 runs) and ``zsad score examples/tanh_mlp.yaml --json`` warm: once to
fill a fresh persistent cache, then the median of 3 runs that find its programs there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mlp_yaml(depth: int, width: int) -> str:
    """The architecture file of the benchmark's MLP of ``depth`` hidden dense layers."""
    return (f"name: block-mlp-{depth}\n"
            f"input: {{shape: [{width}], data: gaussian}}\n"
            "init: {dist: normal, weight_std: 1.2, bias_std: 0.1}\n"
            "layers:\n"
            f"  - type: block\n    repeat: {depth}\n    layers:\n"
            f"      - {{type: dense, features: {width}}}\n"
            "      - {type: activation, fn: tanh}\n"
            "  - {type: dense, features: 10}\n")


def cold_score(zsad: str, path: Path) -> tuple[float, dict]:
    """Wall seconds of ``zsad score PATH --json`` with an empty persistent cache, and its report."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ZSAD_CACHE_DIR": cache}
        t0 = time.perf_counter()
        proc = subprocess.run([zsad, "score", str(path), "--json"], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{path}: zsad score failed: {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)


def wall(cmd: list[str], env: dict, runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of ``cmd`` (each must succeed)."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return out


def start_up(zsad: str) -> dict:
    """``zsad --help`` and the warm ``zsad score examples/tanh_mlp.yaml``, median wall seconds."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ZSAD_CACHE_DIR": cache}
        helps = wall([zsad, "--help"], env, 5)
        example = [zsad, "score", "examples/tanh_mlp.yaml", "--json"]
        first = wall(example, env, 1)
        warm = wall(example, env, 3)
    return {"help_seconds": round(statistics.median(helps), 3), "help_runs": [round(t, 3) for t in helps],
            "tanh_mlp_cold_seconds": round(first[0], 3),
            "tanh_mlp_warm_seconds": round(statistics.median(warm), 3),
            "tanh_mlp_warm_runs": [round(t, 3) for t in warm]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="10,400")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--zsad", default=str(Path(sys.executable).parent / "zsad"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    times: dict[int, list[float]] = {d: [] for d in depths}
    reports: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for depth in depths:
                path = Path(tmp) / f"mlp_{depth}.yaml"
                path.write_text(mlp_yaml(depth, args.width))
                seconds, reports[depth] = cold_score(args.zsad, path)
                times[depth].append(seconds)
                print(f"depth {depth}: {seconds:.2f} s", file=sys.stderr, flush=True)
    base = statistics.median(times[depths[0]])
    rows = [{"depth": d, "layers": len(reports[d]["profile"]), "seconds": round(statistics.median(times[d]), 3),
             "runs": [round(t, 3) for t in times[d]], "ratio": round(statistics.median(times[d]) / base, 2),
             "nlc": reports[d]["nlc"]["mean"]} for d in depths]
    print("| depth | named layers | cold wall (s) | ratio to depth %d | NLC |" % depths[0])
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['depth']} | {r['layers']} | {r['seconds']:.2f} | {r['ratio']:.2f} | {r['nlc']} |")
    extra = start_up(args.zsad)
    print(f"zsad --help: {extra['help_seconds']:.2f} s; zsad score examples/tanh_mlp.yaml: "
          f"{extra['tanh_mlp_cold_seconds']:.2f} s cold, {extra['tanh_mlp_warm_seconds']:.2f} s warm")
    doc = {"width": args.width, "repeats": args.repeats, "zsad": args.zsad, "rows": rows, **extra,
           "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
