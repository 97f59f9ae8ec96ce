"""Zero-shot metrics of one structure's architectures, at initialization, the way zsad computes them.

For each architecture and data set (the scoring batch is drawn from that data set's training
inputs, the same samples for every architecture):

* ``zsad.rank.rank_space`` on the group (one compiled program per structure): the baseline
  proxies params, flops, naswot, synflow, grad_norm, snip, jacob_cov (means over ``RANK_SEEDS``
  initializations, batch ``RANK_BATCH``);
* ``zsad.score.score_architecture`` (``SCORE_SEEDS`` initializations, batch ``SCORE_BATCH``): the
  NLC with its spread (the study's NLC), the NLC of every layer prefix, and the Jacobian
  spectrum of the hidden segment (mean and variance of sigma^2, sigma_max/min, condition number,
  isometry share); the previous default score (``zsad.rank.default_score`` without sigma2) and
  ``zsad.ranking.band_distance`` are evaluated on this NLC and the parameter count (the NLC is
  computed once per architecture, with the larger batch, rather than twice);
* ``zsad.meanfield_arch.meanfield_summary`` on the scoring batch: q*, chi1, phase, xi_c, chi_c,
  xi_q, c*, the predicted NLC.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

RANK_SEEDS = 2
RANK_BATCH = 64
SCORE_SEEDS = 3
SCORE_BATCH = 256
TANGENTS = 2
DATA_SEED = 0

SPECTRUM_KEYS = ("sigma2_mean", "sigma2_var", "sigma2_ratio", "sigma_max", "sigma_min", "condition",
                 "isometry_share")
MEANFIELD_KEYS = ("q_star", "chi1", "chi_q", "c_star", "chi_c", "xi_q", "xi_c", "phase", "nlc_predicted",
                  "q_in", "c_in_mean")
PROXIES = ("params", "flops", "naswot", "synflow", "grad_norm", "snip", "jacob_cov")


def _num(v):
    if v is None or isinstance(v, str):
        return v
    v = float(v)
    return v if math.isfinite(v) else None


#: The columns ``band_distance`` and ``default_score`` are the *previous* default score's, with
#: these constants written out (not read from zsad, whose band and score have moved since), so
#: that a rerun stores what the report's labels say: the log-distance of the NLC from the prior
#: band [1.2, 5], and -d(NLC; 1.2, 5) + 0.01 log10(params).
PRIOR_BAND = (1.2, 5.0)
PRIOR_CAPACITY_WEIGHT = 0.01


def prior_band_distance(nlc: float) -> float:
    lo, hi = PRIOR_BAND
    return max(0.0, math.log(lo / nlc), math.log(nlc / hi))


def prior_score(nlc: float | None, params: float | None) -> float | None:
    if not nlc:
        return None
    return -prior_band_distance(nlc) + (PRIOR_CAPACITY_WEIGHT * math.log10(params) if params else 0.0)


def group_metrics(archs, x_batch: np.ndarray) -> list[dict]:
    """Metrics of architectures that share one structure; ``archs`` read their inputs from a file."""
    from zsad.meanfield_arch import meanfield_summary
    from zsad.rank import RankOptions, rank_space
    from zsad.score import ScoreOptions, score_architecture
    from zsad.space import Space, SpaceItem

    items = tuple(SpaceItem(a.name, a) for a in archs)
    space = Space("list", "ground-truth", None, len(items), "ground-truth", items=lambda: iter(items))
    ranked = rank_space(space, RankOptions(seeds=RANK_SEEDS, batch=RANK_BATCH, tangents=TANGENTS,
                                           data_seed=DATA_SEED, metrics=PROXIES), by="params")
    rows = {r["arch"]: r for r in ranked.rows}
    out = []
    for arch in archs:
        r = rows[arch.name]
        m: dict = {"status": r["status"], "reason": r["reason"]}
        for p in PROXIES:
            m[p] = _num(r.get(p))
        rep = score_architecture(arch, ScoreOptions(seeds=SCORE_SEEDS, batch=SCORE_BATCH, tangents=TANGENTS,
                                                    data_seed=DATA_SEED))
        m["nlc"] = _num(rep.nlc_mean)
        m["nlc_std"] = _num(rep.nlc_std)
        m["nlc_per_seed"] = [_num(v) for v in rep.nlc_per_seed]
        m["nlc_reason"] = rep.nlc_reason
        m["band_distance"] = prior_band_distance(m["nlc"]) if m["nlc"] else None
        m["default_score"] = _num(prior_score(m["nlc"], r.get("params")))
        m["diverged_seeds"] = len(rep.diverged)
        m["verdict"] = rep.verdict.status
        m["profile"] = [_num(p["nlc"]) for p in rep.profile]
        spec = rep.extra.get("spectrum", {})
        for k in SPECTRUM_KEYS:
            m[k] = _num(spec.get(k))
        m["spectrum_between"] = spec.get("between")
        try:
            mf = meanfield_summary(arch, x_batch)
            for k in MEANFIELD_KEYS:
                m[f"mf_{k}"] = _num(mf.get(k))
        except Exception as err:  # recorded, not fatal: the row keeps its other metrics
            m["mf_error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        out.append(m)
    return out


#: The columns of ``zsad rank`` that :func:`rank_metrics` stores.
RANK_COLUMNS = ("status", "reason", "nlc", "nlc_std", "nlc_block", "sigma2", "params", "flops", "naswot", "synflow",
                "grad_norm", "snip", "jacob_cov")


def rank_metrics(archs) -> list[dict]:
    """``zsad rank``'s columns (default options: ``RankOptions()``, every metric) of architectures that share
    one structure, in zsad's column names; the options are stored under ``rank_options``."""
    from zsad.rank import RankOptions, rank_space
    from zsad.space import Space, SpaceItem

    items = tuple(SpaceItem(a.name, a) for a in archs)
    space = Space("list", "ground-truth", None, len(items), "ground-truth", items=lambda: iter(items))
    options = RankOptions()
    rows = {r["arch"]: r for r in rank_space(space, options).rows}
    opts = {k: v for k, v in options.to_json().items() if k != "metrics"}
    return [{**{k: _num(rows[a.name].get(k)) for k in RANK_COLUMNS}, "rank_options": opts} for a in archs]


def scoring_batch(x_train: np.ndarray, batch: int = SCORE_BATCH, seed: int = DATA_SEED) -> np.ndarray:
    """The samples zsad draws from the training-input file (``zsad.data.load_inputs``'s rule)."""
    rng = np.random.default_rng(seed)
    if len(x_train) <= batch:
        return x_train
    return x_train[np.sort(rng.choice(len(x_train), batch, replace=False))]


def input_file(cache: Path, dataset: str, kind: str, x_train: np.ndarray) -> Path:
    """The training inputs as a .npy file that architectures name as ``input.data``."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{dataset}_{kind}_{'x'.join(map(str, x_train.shape))}_train.npy"
    if not path.exists() or np.load(path, mmap_mode="r").shape != x_train.shape:
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, x_train)
        tmp.replace(path)
    return path
