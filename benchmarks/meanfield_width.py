"""Predicted (infinite-width mean field) vs measured NLC of MLPs as the width shrinks.

For each activation, depth and width: an MLP ``d_in -> [dense(width) -> phi] x depth -> dense(10)``
on i.i.d. Gaussian inputs; the prediction is the ``meanfield`` section of ``zsad.score_architecture`` (which does
not depend on the width), the measurement ``zsad.score_architecture`` over several initializations.
Prints a Markdown table with the relative deviation ``measured / predicted - 1``.

Usage::

    python benchmarks/meanfield_width.py [--widths 128 256 512 1024 2048] [--depths 5 20]
        [--seeds 4] [--tangents 4] [--batch 256] [--x64]
"""

from __future__ import annotations

import argparse
import math
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--depths", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--activations", nargs="+", default=["tanh:2.5:0.05", "relu:2.0:0.0"],
                        help="fn:weight_var:bias_var")
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--tangents", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--x64", action="store_true")
    args = parser.parse_args()

    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import zsad
    from zsad.arch.spec import parse_architecture

    print(f"inputs: N(0, 1) in {args.d_in} dims, batch {args.batch}; {args.seeds} seeds x {args.tangents} tangents; "
          f"{jax.numpy.result_type(float)} on {jax.devices()[0].platform}\n")
    print("| activation (σ_w², σ_b²) | depth | width | predicted | measured (mean ± std over seeds) | deviation |")
    print("|---|---|---|---|---|---|")
    for spec in args.activations:
        fn, wv, bv = spec.split(":")
        wv, bv = float(wv), float(bv)
        for depth in args.depths:
            for width in args.widths:
                layers = [{"type": "dense", "features": width}, {"type": "activation", "fn": fn}] * depth
                layers.append({"type": "dense", "features": 10})
                arch = parse_architecture({
                    "name": f"{fn}-{depth}x{width}", "input": {"shape": [args.d_in]},
                    "init": {"weight_std": math.sqrt(wv), "bias_std": math.sqrt(bv)}, "layers": layers})
                options = zsad.ScoreOptions(seeds=args.seeds, batch=args.batch, tangents=args.tangents,
                                            spectrum=False)
                t0 = time.perf_counter()
                report = zsad.score_architecture(arch, options)
                predicted = report.extra["meanfield"]["nlc_predicted"]
                dev = report.nlc_mean / predicted - 1.0
                print(f"| {fn} ({wv:g}, {bv:g}) | {depth} | {width} | {predicted:.4f} | "
                      f"{report.nlc_mean:.4f} ± {report.nlc_std:.4f} | {100 * dev:+.1f}% |"
                      f"  <!-- {time.perf_counter() - t0:.1f} s -->", flush=True)


if __name__ == "__main__":
    main()
