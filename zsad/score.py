"""Scoring one architecture: build, initialize over seeds, calibrate, measure.

``make_profile_fn`` is the jit boundary: one compiled program per network
structure computes the NLC profile for all seeds at once (vmapped). Scalars are
traced inputs, so architectures that differ only in scalars reuse it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zsad._types import Network
from zsad.arch.build import build
from zsad.arch.spec import Architecture
from zsad.data import load_inputs
from zsad.nlc import NLCResult, nlc_profile
from zsad.verdict import Verdict, combine, nlc_verdict


@dataclass(frozen=True)
class ScoreOptions:
    """How to score.

    Attributes:
      seeds: number of random initializations (the NLC is reported as mean and spread over them).
      batch: samples in the scoring batch.
      tangents: permutations (tangent vectors) per sample in the NLC estimator.
      seed: base seed; initialization ``i`` uses ``fold_in(key(seed), i)``.
      data_seed: seed of the Gaussian inputs (or of the subset drawn from a data file);
        the same inputs serve every initialization, so the spread is the initialization's.
    """

    seeds: int = 3
    batch: int = 256
    tangents: int = 2
    seed: int = 0
    data_seed: int = 0


@functools.partial(jax.jit, static_argnames=("init", "apply", "calibrate", "num_tangents"))
def _profile_over_seeds(keys, x, scalars, *, init, apply, calibrate, num_tangents) -> NLCResult:
    def one(key):
        k_init, k_tangent = jax.random.split(key)
        variables = calibrate(init(k_init, scalars), scalars, x)
        return nlc_profile(lambda x: apply(variables, scalars, x)[1], x, k_tangent, num_tangents=num_tangents)

    return jax.vmap(one)(keys)


def make_profile_fn(net: Network, num_tangents: int):
    """Jitted ``fn(keys[S], x, scalars) -> NLCResult`` with ``[S]``-leading leaves per layer."""
    return functools.partial(_profile_over_seeds, init=net.init, apply=net.apply,
                             calibrate=net.calibrate, num_tangents=num_tangents)


def seed_keys(seed: int, seeds: int) -> jax.Array:
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(seeds))


def param_count(net: Network) -> int:
    """Number of trainable parameters (batch statistics excluded)."""
    shapes = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes.get("params", {}))))


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None]
    if not finite:
        return None, None
    mean = float(np.mean(finite))
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return mean, std


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class ScoreReport:
    """Everything ``zsad score`` reports about one architecture."""

    name: str
    params: int
    nlc_per_seed: list[float | None]
    nlc_mean: float | None
    nlc_std: float | None
    nlc_reason: str | None
    profile: list[dict]
    diverged: dict[int, str]
    verdict: Verdict
    options: ScoreOptions
    seconds: float
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The stable machine-readable document (keys documented in the README)."""
        return {
            "name": self.name,
            "params": self.params,
            "nlc": {"mean": self.nlc_mean, "std": self.nlc_std, "per_seed": self.nlc_per_seed,
                    "reason": self.nlc_reason},
            "profile": self.profile,
            "diverged": {str(k): v for k, v in self.diverged.items()} or None,
            "verdict": {"status": self.verdict.status, "summary": self.verdict.summary,
                        "reasons": list(self.verdict.reasons)},
            **self.extra,
            "options": dataclasses.asdict(self.options),
            "dtype": str(jnp.result_type(float)),
            "seconds": round(self.seconds, 3),
        }


def score_architecture(arch: Architecture, options: ScoreOptions = ScoreOptions()) -> ScoreReport:
    """Scores ``arch``: NLC with spread over ``options.seeds`` initializations and its profile.

    A seed whose forward pass overflows contributes ``None`` and the first layer
    with non-finite values is recorded in ``diverged``; an output that is constant
    across the batch gives ``None`` with a reason. Never raises on numerics.
    """
    start = time.perf_counter()
    net = build(arch)
    x = load_inputs(arch.input, options.batch, seed=options.data_seed, base_dir=arch.base_dir,
                    source=arch.source)
    x = jnp.asarray(x, dtype=jnp.result_type(float) if arch.input.dtype == "float32" else x.dtype)
    fn = make_profile_fn(net, options.tangents)
    result = jax.device_get(fn(seed_keys(options.seed, options.seeds), x, net.scalars))
    names = list(net.layer_names)
    out = names[-1]

    diverged: dict[int, str] = {}
    for s in range(options.seeds):
        bad = [n for n in names if not bool(result.finite[n][s])]
        if bad:
            diverged[s] = bad[0]
    per_seed = [None if s in diverged else _num(result.nlc[out][s]) for s in range(options.seeds)]
    constant = all(np.isnan(result.nlc[out][s]) for s in range(options.seeds) if s not in diverged)
    mean, std = _stats(per_seed)
    reason = None
    if mean is None:
        reason = (f"diverged: non-finite values from layer {next(iter(diverged.values()))}"
                  if len(diverged) == options.seeds else "output is constant across the batch")
    profile = []
    for n in names:
        vals = [None if s in diverged else _num(result.nlc[n][s]) for s in range(options.seeds)]
        m, sd = _stats(vals)
        profile.append({"layer": n, "nlc": m, "nlc_std": sd})
    items = [nlc_verdict(mean, std, diverged_at=diverged[min(diverged)] if len(diverged) == options.seeds else None,
                         constant_output=constant and not diverged)]
    if diverged and len(diverged) < options.seeds:
        items.append(("warning", f"{len(diverged)} of {options.seeds} initializations diverge "
                                 f"(first non-finite layer: {diverged[min(diverged)]})"))
    return ScoreReport(
        name=arch.name, params=param_count(net), nlc_per_seed=per_seed, nlc_mean=mean, nlc_std=std,
        nlc_reason=reason, profile=profile, diverged=diverged, verdict=combine(items), options=options,
        seconds=time.perf_counter() - start,
    )
