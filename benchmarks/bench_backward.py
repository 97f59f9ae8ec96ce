"""What a backward pass through NAS-Bench-201 costs against a forward pass (benchmark, not a test).

For one architecture (each of its 15 cells: five 3x3 convolutions and a skip), built directly and as
the space's masked program:
the time of a jitted forward pass (sum of squared outputs), of its gradient with respect to the
parameters by JAX's own rule, and of the same gradient through ``zsad.canonical.canonical_gradients``
(the rule the measurement program uses); batch 64, calibrated batch norm, warm (mean of 3 runs).

Run: ``.venv/bin/python benchmarks/bench_backward.py [direct] [masked]``
"""
import sys
import time

import jax
import jax.numpy as jnp

from zsad.spaces import nasbench201_net as N
from zsad.spaces.nasbench201 import parse_arch, encode
from zsad.canonical import canonical_gradients

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
x = jax.random.normal(jax.random.key(1), (64, 32, 32, 3))


def timed(f, *args, n=3):
    """Seconds per call of ``f(*args)``, compiled and warm."""
    jax.block_until_ready(f(*args))
    t = time.perf_counter()
    for _ in range(n):
        jax.block_until_ready(f(*args))
    return (time.perf_counter() - t) / n


for kind in sys.argv[1:] or ["direct", "masked"]:
    if kind == "direct":
        net = N.build_network(ARCH)
        scalars = net.scalars
    else:
        net = N.build_masked_network()
        scalars = {**net.scalars, "ops": jnp.asarray(encode(parse_arch(ARCH)))}
    v = jax.jit(net.init)(jax.random.key(0), scalars)
    v = net.calibrate(v, scalars, x)
    fwd_fn = lambda p, x: net.apply({**v, "params": p}, scalars, x)[0]  # noqa: E731
    out = lambda y: y if isinstance(y, jax.Array) else jax.tree.leaves(y)[-1]  # noqa: E731
    loss = lambda f: (lambda p: jnp.sum(out(f(p, x)) ** 2))  # noqa: E731
    fwd = jax.jit(loss(fwd_fn))
    g_plain = jax.jit(jax.grad(loss(fwd_fn)))
    g_canon = jax.jit(jax.grad(loss(canonical_gradients(fwd_fn))))
    p = v["params"]
    tf, tp, tc = timed(fwd, p), timed(g_plain, p), timed(g_canon, p)
    print(f"{kind}: forward {tf:.3f} s, grad (jax's rule) {tp:.3f} s ({tp / tf:.1f}x), "
          f"grad (canonical) {tc:.3f} s ({tc / tf:.1f}x)", flush=True)
