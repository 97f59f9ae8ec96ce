"""DARTS' depthwise convolutions: XLA's grouped convolution against ``zsad.canonical.depthwise_conv``
(benchmark, not a test).

At NAS-Bench-301's first cells (batch 64, 32x32, 32 channels), for the kernels DARTS uses (3x3 and
5x5, dilation 1 and 2): the compile time and the warm time (mean of 3 runs) of a forward-mode
product (the NLC's) and of the gradient with respect to the input and the kernel inside ``lax.map``
over two kernels (the measurement program's loop over seeds), each way; and the largest difference
of their outputs.

Run: ``.venv/bin/python benchmarks/bench_depthwise.py`` (JSON to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from zsad.canonical import depthwise_conv

N, H, W, C = 64, 32, 32, 32
CASES = ((3, 1), (5, 1), (3, 2), (5, 2))  # (kernel, dilation)


def grouped(x, w, k, d):
    p = d * (k - 1) // 2
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((p, p), (p, p)), rhs_dilation=(d, d),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=C)


def views(x, w, k, d):
    p = d * (k - 1) // 2
    return depthwise_conv(x, w, (1, 1), ((p, p), (p, p)), (d, d))


def timed(f, *args, n: int = 3) -> tuple[float, float]:
    """(compile seconds, warm milliseconds per call)."""
    t = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(*args))
    t = time.perf_counter()
    for _ in range(n):
        jax.block_until_ready(compiled(*args))
    return round(compile_s, 2), round((time.perf_counter() - t) / n * 1e3, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    x = jax.random.normal(jax.random.key(0), (N, H, W, C))
    rows = []
    for k, d in CASES:
        w = jax.random.normal(jax.random.key(1), (k, k, 1, C))
        row = {"kernel": k, "dilation": d,
               "max_abs_difference": float(jnp.max(jnp.abs(grouped(x, w, k, d) - views(x, w, k, d))))}
        for name, conv in (("grouped", grouped), ("views", views)):
            fn = lambda x, w, conv=conv: conv(x, w, k, d)  # noqa: E731
            jvp = lambda x, w, fn=fn: jax.jvp(lambda u: fn(u, w), (x,), (x,))  # noqa: E731
            loss = lambda x, w, fn=fn: jnp.sum(jnp.sin(fn(x, w)))  # noqa: E731
            grads = lambda x, w, loss=loss: jax.lax.map(  # noqa: E731
                lambda v: jax.grad(loss, (0, 1))(x, v), jnp.stack([w, w]))
            row[name] = {"jvp": dict(zip(("compile_s", "warm_ms"), timed(jvp, x, w))),
                         "grad_in_map": dict(zip(("compile_s", "warm_ms"), timed(grads, x, w)))}
        rows.append(row)
        print(f"{k}x{k} dilation {d}: jvp {row['grouped']['jvp']['warm_ms']} -> {row['views']['jvp']['warm_ms']} ms,"
              f" gradients in a loop {row['grouped']['grad_in_map']['warm_ms']} -> "
              f"{row['views']['grad_in_map']['warm_ms']} ms (grouped -> views)", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "benchmarks/bench_depthwise.py", "shape": [N, H, W, C],
                                        "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
