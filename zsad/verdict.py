"""Plain-language verdicts from the metrics of one architecture.

Bands (NLC): below ``LINEAR_MAX`` the network is effectively
linear; up to ``HEALTHY_MAX`` its nonlinearity is right-sized; above
``CHAOTIC_MIN`` expect unstable training and high test error. The edges were
set by the ground-truth study (benchmarks/RESULTS.md, "Proposal"), starting
from Philipp's (2021) band of roughly [1.2, 5], by a rule fixed in advance: an
edge moves to the study's estimate when at least 3 of its 4 (data set, learning
rate) bootstrap intervals exclude the old value. The best band depends on the
task; these values come from small networks on 8x8 digit images.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

#: NLC below this: the network behaves like a linear model (Philipp 2021, §4; kept by the study,
#: whose bootstrap intervals of the lower edge lie within [1.0, 1.2]).
LINEAR_MAX = 1.2
#: NLC up to this: right-sized nonlinearity (the study's estimate: every bootstrap interval of the
#: upper edge excludes Philipp's 5, and lies within [1.15, 2]).
HEALTHY_MAX = 1.4
#: NLC above this: at least half the study's networks end with more than twice the in-band test error,
#: on both data sets and at both learning rates.
CHAOTIC_MIN = 4.0

#: Mean squared Jacobian singular value outside [1/SCALE_BAND, SCALE_BAND]: signals vanish or explode
#: (the typical singular value leaves [0.1, 10]); the default score's scale term starts here.
SCALE_BAND = 1e2

#: Depth in units of the correlation depth scale xi_c beyond which signal propagation
#: no longer carries the input's geometry (Schoenholz et al. 2017: networks train
#: up to about 6 xi_c layers).
DEPTH_SCALES_MAX = 6.0

#: Verdict statuses, least severe first. ``unknown``: the evidence behind the bands does not cover the
#: network and nothing else raised a concern (it outranks ``good``: a healthy spectrum does not make
#: up for a measurement the evidence cannot judge).
STATUSES = ("good", "unknown", "warning", "bad")

#: The families the NLC bands' evidence covers (the ground-truth study: MLPs, plain or residual,
#: without normalization or with layer or batch norm; convolutional networks without normalization
#: and without residual connections, on 8x8 images).
COVERED = ("dense networks (plain or residual, with or without layer or batch norm) and plain convolutional "
           "networks without normalization")


def outside_evidence(kinds: set[str], *, residual_conv: bool = False, multi_branch: bool = False,
                     foreign: bool = False) -> str | None:
    """What puts a network outside :data:`COVERED` (None: inside), from the layer types it has.

    Args:
      kinds: layer types present anywhere in the network (``dense``, ``conv``, ``batch_norm``, ...).
      residual_conv: a residual connection around convolutions.
      multi_branch: parallel paths other than an identity shortcut (a residual with its own shortcut
        layers, a NAS cell).
      foreign: a module zsad cannot look into (flax).

    Examples:
      >>> outside_evidence({"dense", "activation", "batch_norm"}) is None
      True
      >>> outside_evidence({"conv", "batch_norm", "activation"})
      'batch-normalized convolutions'
    """
    if foreign:
        return "a module whose layers zsad cannot inspect"
    reasons = []
    if "conv" in kinds and ({"batch_norm", "layer_norm"} & kinds):
        reasons.append("batch-normalized convolutions" if "batch_norm" in kinds else "normalized convolutions")
    if residual_conv:
        reasons.append("residual convolutional blocks")
    if multi_branch:
        reasons.append("multi-branch cells")
    if not reasons:
        return None
    return reasons[0] if len(reasons) == 1 else ", ".join(reasons[:-1]) + " and " + reasons[-1]


class Verdict(NamedTuple):
    """``status`` is one of good / warning / bad; ``summary`` one sentence; ``reasons`` the evidence."""

    status: str
    summary: str
    reasons: tuple[str, ...]


def _worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=STATUSES.index) if statuses else "good"


def nlc_verdict(mean: float | None, std: float | None, *, diverged_at: str | None = None,
                constant_output: bool = False, outside: str | None = None) -> tuple[str, str]:
    """(status, reason) for the network's NLC.

    ``outside``: what puts the network outside the families the bands were estimated on
    (:func:`outside_evidence`). There an NLC above the band gets no judgment (``unknown``): on
    NAS-Bench-201 (batch-normalized, multi-branch cells) a higher NLC went with a higher trained
    accuracy. An NLC below the band is still a warning: near-linear networks underfit in both.
    """
    if diverged_at is not None:
        return "bad", (f"activations stop being finite at layer {diverged_at}: the network diverges at "
                       "initialization (reduce weight_std, add normalization, or score with --x64)")
    if constant_output:
        return "bad", "the output does not depend on the input (constant across the batch): NLC is undefined"
    if mean is None:
        return "bad", "the NLC could not be computed"
    spread = f" ± {std:.2g}" if std is not None else ""
    value = f"NLC {mean:.3g}{spread}"
    if mean < LINEAR_MAX:
        return "warning", (f"{value} is below {LINEAR_MAX}: the network is effectively linear and will "
                           "perform like a linear model; use a more nonlinear activation or deeper stack")
    if mean <= HEALTHY_MAX:
        return "good", f"{value} lies in the right-sized band [{LINEAR_MAX}, {HEALTHY_MAX}]"
    if outside:
        return "unknown", (f"{value} is above the band [{LINEAR_MAX}, {HEALTHY_MAX}], which was estimated on "
                           f"{COVERED}; this network has {outside}, outside that evidence (on NAS-Bench-201 a "
                           "higher NLC went with higher accuracy), so the NLC alone gives no verdict: compare it "
                           "with alternatives using zsad rank")
    if mean <= CHAOTIC_MIN:
        return "warning", (f"{value} is above {HEALTHY_MAX}: more nonlinear than the networks that trained "
                           "best in the ground-truth study; expect less stable training and higher test error "
                           "(`zsad normalize` can lower it)")
    return "bad", (f"{value} is far above {HEALTHY_MAX} (beyond {CHAOTIC_MIN:g}, where most networks of the "
                   "ground-truth study trained badly): unlikely to train well; `zsad normalize` can lower it")


def meanfield_verdict(mf: dict | None) -> list[tuple[str, str]]:
    """(status, reason) items from a mean-field summary (:func:`zsad.meanfield_arch.meanfield_summary`).

    Two depth scales of the repeated hidden layer: the gradient's, :math:`1/|\\ln\\chi_1|`
    (backpropagated signals scale by :math:`\\chi_1` per layer), and the
    correlation depth scale :math:`\\xi_c`. A warning when the network stacks more
    than ``DEPTH_SCALES_MAX`` of either; nothing when the summary is missing,
    critical, or the network shallow enough.
    """
    if not mf or mf.get("phase") in (None, "critical") or mf.get("chi1") is None or not mf.get("hidden"):
        return []
    depth, chi1 = mf["hidden"].get("count") or 0, mf["chi1"]
    if depth == 0 or chi1 <= 0.0:
        return []
    gradient = depth * abs(math.log(chi1))
    correlation = depth / mf["xi_c"] if mf.get("xi_c") else 0.0
    if max(gradient, correlation) <= DEPTH_SCALES_MAX:
        return []
    if gradient >= correlation:
        what = "vanish" if chi1 < 1 else "explode"
        detail = (f"gradients {what} by chi1^depth = {chi1 ** depth:.2g} ({depth} layers, "
                  f"{gradient:.1f} depth scales 1/|ln chi1|)")
    else:
        what = ("converge: inputs become indistinguishable" if mf["phase"] == "ordered"
                else "decorrelate: nearby inputs map to unrelated outputs")
        detail = f"{depth} layers are {correlation:.1f} correlation depth scales (xi_c = {mf['xi_c']:.3g}), signals {what}"
    return [("warning", f"mean field: {mf['phase']} phase (chi1 = {chi1:.3g}); {detail}; beyond about "
                        f"{DEPTH_SCALES_MAX:g} depth scales training stalls: move weight_std toward the edge of "
                        "chaos (`zsad phase`)")]


def combine(items: Sequence[tuple[str, str]]) -> Verdict:
    """Combines (status, reason) pairs; the summary states the worst finding first."""
    status = _worst([s for s, _ in items])
    headline = {
        "unknown": "No verdict from the evidence",
        "good": "Likely to train well",
        "warning": "Trainable, with a caveat",
        "bad": "Unlikely to train well",
    }[status]
    ordered = sorted(items, key=lambda item: -STATUSES.index(item[0]))
    first = ordered[0][1] if ordered else ""
    return Verdict(status, f"{headline}: {first}." if first else f"{headline}.",
                   tuple(reason for _, reason in ordered))
