"""Peak memory of the matrix-free Jacobian spectrum vs one forward pass, on a CNN.

The network: 32×32×3 input, six 3×3 'SAME' convolutions (16, 32, 32, 64, 64, 64
channels, stride 1) with ReLU between them; the Jacobian runs from the input to
the last convolution's output, so d_in = 3,072 and d_out = 65,536.

Memory is XLA's compiled memory analysis of each program
(``jax.jit(f).lower(...).compile().memory_analysis()``): argument + output + temp
bytes, the buffers the program needs at its peak (on CPU this is the figure to
use; there is no device allocator to poll). Three programs, same batch:

* the forward pass;
* ``jacobian_spectrum(method='lanczos')``: one linearization per sample, then
  ``num_steps`` Lanczos steps (one jvp + one transposed jvp each) for
  ``num_probes`` probes, with the Lanczos basis;
* for contrast, the size of the materialized Jacobian, d_in × d_out × 4 bytes
  per sample, and XLA's figure for the compiled exact program (jacfwd + SVD;
  compiled, never run).

The spectrum is then run once (matrix-free) and its summary and wall time
printed. Usage: ``.venv/bin/python benchmarks/bench_spectrum_memory.py
[--batch 1] [--steps 32] [--probes 4] [--no-run] [--no-exact]``.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from zsad.spectrum import jacobian_spectrum

INPUT_SHAPE = (32, 32, 3)
CHANNELS = (16, 32, 32, 64, 64, 64)


def init_cnn(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-normal 3×3 kernels (HWIO, variance 2/fan_in) and zero biases."""
    rng = np.random.default_rng(seed)
    params, c_in = [], INPUT_SHAPE[-1]
    for c_out in CHANNELS:
        fan_in = 9 * c_in
        w = rng.standard_normal((3, 3, c_in, c_out)) * math.sqrt(2.0 / fan_in)
        params.append((w.astype(np.float32), np.zeros((c_out,), np.float32)))
        c_in = c_out
    return params


def cnn(params, x: jax.Array) -> jax.Array:
    """One sample ``[32, 32, 3] -> [32, 32, 64]``: conv-ReLU-...-conv."""
    h = x[None]
    for i, (w, b) in enumerate(params):
        if i:
            h = jax.nn.relu(h)
        h = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = h + b[None, None, None, :]
    return h[0]


def compiled_bytes(fn, *args) -> tuple[int, dict[str, int], float]:
    """Argument + output + temp bytes of the compiled program, and compile time."""
    t0 = time.perf_counter()
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    seconds = time.perf_counter() - t0
    parts = {
        "argument": int(stats.argument_size_in_bytes),
        "output": int(stats.output_size_in_bytes),
        "temp": int(stats.temp_size_in_bytes),
    }
    return sum(parts.values()), parts, seconds


def mib(n: float) -> str:
    return f"{n / 2**20:10.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="samples per program (default 1)")
    parser.add_argument("--steps", type=int, default=32, help="Lanczos steps (default 32)")
    parser.add_argument("--probes", type=int, default=4, help="SLQ probes per sample (default 4)")
    parser.add_argument("--no-run", action="store_true", help="do not run the spectrum (memory figures only)")
    parser.add_argument("--no-exact", action="store_true", help="do not compile the exact path")
    args = parser.parse_args()

    params = init_cnn()
    xs = np.random.default_rng(1).standard_normal((args.batch, *INPUT_SHAPE)).astype(np.float32)
    key = jax.random.key(0)
    d_in = math.prod(INPUT_SHAPE)
    d_out = math.prod(jax.eval_shape(cnn, params, xs[0]).shape)
    n_params = sum(w.size + b.size for w, b in params)
    activations = sum(32 * 32 * c for c in CHANNELS) * args.batch  # conv outputs, floats

    def forward(params, xs):
        return jax.vmap(lambda x: cnn(params, x))(xs)

    def spectrum(params, xs, key):
        return jacobian_spectrum(
            lambda x: cnn(params, x), xs, key, method="lanczos", num_steps=args.steps, num_probes=args.probes
        )

    fwd_total, fwd_parts, fwd_s = compiled_bytes(forward, params, xs)
    spec_total, spec_parts, spec_s = compiled_bytes(spectrum, params, xs, key)
    exact_matrix = d_in * d_out * 4 * args.batch

    print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}")
    print(
        f"CNN {INPUT_SHAPE} -> conv{list(CHANNELS)}: d_in = {d_in:,}, d_out = {d_out:,}, "
        f"params = {n_params:,} ({mib(4 * n_params).strip()} MiB), "
        f"conv activations = {mib(4 * activations).strip()} MiB; batch = {args.batch}, "
        f"Lanczos steps = {args.steps}, probes = {args.probes}"
    )
    print()
    header = f"{'program':<44}{'argument':>10}{'output':>10}{'temp':>10}{'total MiB':>11}{'vs fwd':>9}"
    print(header)
    print("-" * len(header))

    def row(name, parts, total):
        cells = "".join(mib(parts[k]) for k in ("argument", "output", "temp")) if parts else " " * 30
        print(f"{name:<44}{cells}{mib(total):>11}{total / fwd_total:>8.1f}x")

    row("forward pass", fwd_parts, fwd_total)
    row("spectrum, matrix-free (Lanczos + SLQ)", spec_parts, spec_total)
    row("exact: J alone (batch x d_in x d_out x 4 B)", None, exact_matrix)
    if not args.no_exact:

        def exact(params, xs, key):
            return jacobian_spectrum(lambda x: cnn(params, x), xs, key, method="exact")

        ex_total, ex_parts, _ = compiled_bytes(exact, params, xs, key)
        row("exact path, compiled (jacfwd + SVD)", ex_parts, ex_total)
    basis = 4 * args.batch * args.probes * args.steps * min(d_in, d_out)
    tangents = 4 * args.probes * activations
    print()
    print(
        f"matrix-free / forward = {spec_total / fwd_total:.1f}x;  exact J / matrix-free = {exact_matrix / spec_total:.0f}x"
    )
    print(
        f"expected O(params + activations): residuals {mib(4 * activations).strip()} MiB + probe tangents "
        f"{mib(tangents).strip()} MiB + Lanczos basis {mib(basis).strip()} MiB (probes x steps x min(d_in, d_out))"
    )
    print(f"compile time: forward {fwd_s:.1f} s, spectrum {spec_s:.1f} s")

    if not args.no_run:
        fn = jax.jit(spectrum)
        jax.block_until_ready(fn(params, xs, key))
        t0 = time.perf_counter()
        s = jax.block_until_ready(fn(params, xs, key))
        seconds = time.perf_counter() - t0
        print(
            f"run: {seconds:.2f} s for {args.batch} sample(s); sample 0: mean sigma^2 = "
            f"{float(s.sigma2_mean[0]):.3f} ± {float(s.sigma2_mean_stderr[0]):.3f}, "
            f"sigma_max = {float(s.sigma_max[0]):.3f}, sigma_min <= {float(s.sigma_min[0]):.3g}"
        )


if __name__ == "__main__":
    main()
