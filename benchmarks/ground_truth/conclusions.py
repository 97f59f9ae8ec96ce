"""The prose of RESULTS.md that states conclusions: every number, every count and every verdict word
("predicts", "no evidence", "wrong direction", "higher", "lower") is derived from the computed
correlations and intervals, so that a rerun on other results states what those results say."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from benchmarks.ground_truth.metrics import PRIOR_BAND, PRIOR_CAPACITY_WEIGHT
from zsad import verdict as V

#: The prior band and the previous default score, as the prose writes them.
PRIOR = f"[{PRIOR_BAND[0]:g}, {PRIOR_BAND[1]:g}]"
PRIOR_SCORE = f"−d(NLC; {PRIOR_BAND[0]:g}, {PRIOR_BAND[1]:g}) + {PRIOR_CAPACITY_WEIGHT:g}·log10 params"

DATASETS = ("digits", "mnist")


def _corr(res, ds, t, col):
    return res["corr"].get((ds, t), {}).get(col, {})


def _fmt(c, key="spearman"):
    if not c or c.get(key) is None:
        return "—"
    ci = c.get(f"{key}_ci")
    return f"{c[key]:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{c[key]:+.2f}"


def _fmt_mean(m):
    if not m:
        return "—"
    return f"{m['mean']:+.2f} [{m['ci'][0]:+.2f}, {m['ci'][1]:+.2f}]"


def _fmt_delta(d, ci):
    if d is None:
        return "—"
    return f"{d:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _lr(t: str) -> str:
    return t.split("@")[1]


def share_label(share: float) -> str:
    f = Fraction(share).limit_denominator(64)
    return f"{f.numerator}/{f.denominator}"


def _count_words(n: int, total: int) -> str:
    return f"{n} of {total}"


def verdict(c, expected: int = -1) -> str:
    """Words for a correlation with test error, given the sign a good predictor should have."""
    if not c or c.get("spearman") is None:
        return "undefined"
    lo, hi = c["spearman_ci"]
    if expected < 0:
        if hi < 0:
            return "predicts (interval below 0)"
        if lo > 0:
            return "wrong direction (interval above 0)"
    else:
        if lo > 0:
            return "predicts (interval above 0)"
        if hi < 0:
            return "wrong direction (interval below 0)"
    return "no evidence (interval contains 0)"


def _sign_word(ci, pos: str, neg: str, none: str) -> str:
    if not ci:
        return none
    if ci[0] > 0:
        return pos
    if ci[1] < 0:
        return neg
    return none


def chaotic_min(res, band_hi: float) -> tuple[float | None, dict]:
    """Smallest grid threshold >= band_hi above which at least half the architectures fail (error above twice
    the in-band median) in every (data set, learning rate) case."""
    cases = {k: v for k, v in res["fail"].items() if k[1] != "test_error@best"}
    if not cases:
        return None, {}
    thresholds = [r["t"] for r in next(iter(cases.values()))["rows"]]
    for i, t in enumerate(thresholds):
        if t < band_hi:
            continue
        shares = [c["rows"][i]["bad_share"] for c in cases.values()]
        ns = [c["rows"][i]["n"] for c in cases.values()]
        if all(s is not None and s >= 0.5 for s in shares) and min(ns) >= 5:
            return t, {f"{k[0]}/{k[1]}": (c["rows"][i]["bad_share"], c["rows"][i]["n"]) for k, c in cases.items()}
    return None, {}


def _best_proxy(res, ds, t):
    best = None
    for col in ("params", "flops", "naswot", "synflow", "grad_norm", "snip", "jacob_cov"):
        c = _corr(res, ds, t, col)
        if c.get("spearman") is None:
            continue
        if best is None or c["spearman"] < best[1]["spearman"]:
            best = (col, c)
    return best


def _adopted_name(res) -> str:
    info = res.get("adopted_info") or {}
    return f"`{info.get('candidate', '?')}`"


def sections(res, lrs, targets) -> dict[str, str]:
    lo, hi = res["band"]
    lr_targets = [t for t, _ in targets if t != "test_error@best"]
    out = {}
    # ---------------------------------------------------------------- summary
    s = []
    s.append("Spearman ρ with test error (95% bootstrap interval, whole structures resampled); negative means "
             "that higher values go with lower error.\n")
    s.append("| data set | target | previous default score | adopted default score "
             f"({_adopted_name(res)}) | band distance (prior band {PRIOR}) | NLC | best baseline proxy |")
    s.append("|---|---|---|---|---|---|---|")
    for ds in DATASETS:
        for t, lab in targets:
            if (ds, t) not in res["corr"]:
                continue
            bp = _best_proxy(res, ds, t)
            ad = res.get("adopted", {}).get((ds, t), {}).get("adopted")
            s.append(f"| {ds} | {lab} | {_fmt(_corr(res, ds, t, 'default_score'))} | {_fmt(ad)} | "
                     f"{_fmt(_corr(res, ds, t, 'band_distance'))} | {_fmt(_corr(res, ds, t, 'nlc'))} | "
                     f"{bp[0] + ' ' + _fmt(bp[1]) if bp else '—'} |")
    s.append("")

    def per_case(metric: str, sign: int) -> str:
        return "; ".join(f"{ds}/{_lr(t)}: {verdict(_corr(res, ds, t, metric), sign)}"
                         for ds in DATASETS for t in lr_targets if (ds, t) in res["corr"])

    s.append(f"- **Previous default score** ({PRIOR_SCORE}): " + per_case("default_score", -1)
             + ".")
    s.append(_adopted_bullet(res, lr_targets))
    s.append(f"- **Band distance** of the NLC from {PRIOR} (positive ρ expected): " + per_case("band_distance", +1)
             + ".")
    est = res.get("band_estimate", (lo, hi))
    mv = res.get("band_moves", {})
    s.append(f"- **Best NLC band** estimated from the data (pooled): [{est[0]:g}, {est[1]:g}]; the bootstrap "
             f"intervals exclude the prior lower edge {PRIOR_BAND[0]:g} in {mv.get('lo_excluding')} and the prior "
             f"upper edge {PRIOR_BAND[1]:g} in {mv.get('hi_excluding')} of {mv.get('cases')} cases, so the proposed "
             f"band is [{lo:g}, {hi:g}] "
             f"(an edge moves only when at least {mv.get('need')} of {mv.get('cases')} cases exclude its prior "
             "value); " + _sensitivity_sentence(res) + " See below.")
    out["summary"] = "\n".join(s) + "\n" + _summary_extra(res, lrs, targets)
    # ---------------------------------------------------------------- proposal
    out["proposal"] = _proposal(res, lrs, targets) + _proposal_extra(res, lrs, targets)
    out["fail"] = _fail(res, lrs, targets)
    out["sensitivity"] = _sensitivity(res)
    out["adopted"] = _adopted(res, targets)
    return out


def _adopted_bullet(res, lr_targets) -> str:
    cases = [res["adopted"][(ds, t)] for ds in DATASETS for t in lr_targets if (ds, t) in res.get("adopted", {})]
    if not cases:
        return "- **Adopted default score**: not computed."
    words = "; ".join(f"{ds}/{_lr(t)}: {verdict(res['adopted'][(ds, t)]['adopted'], -1)}"
                      for ds in DATASETS for t in lr_targets if (ds, t) in res["adopted"])
    new = [c["adopted"]["spearman"] for c in cases if c["adopted"].get("spearman") is not None]
    old = [c["previous"]["spearman"] for c in cases if c["previous"].get("spearman") is not None]
    better = sum(1 for c in cases if c["delta_ci"] and c["delta_ci"][1] < 0)
    worse = sum(1 for c in cases if c["delta_ci"] and c["delta_ci"][0] > 0)
    wn = [c["within_adopted"]["mean"] for c in cases if c.get("within_adopted")]
    wo = [c["within_previous"]["mean"] for c in cases if c.get("within_previous")]
    text = (f"- **Adopted default score** (candidate {_adopted_name(res)} of `zsad.ranking`, the default of "
            f"`zsad rank`): {words}. Mean ρ over the {len(cases)} cases "
            f"{np.mean(new):+.2f} against {np.mean(old):+.2f} for the previous default score; the paired "
            f"difference's interval lies below 0 (adopted better) in {_count_words(better, len(cases))} cases"
            + (f" and above 0 in {worse}" if worse else "") + ".")
    if wn and wo:
        text += (f" Within structures the mean ρ is {np.mean(wn):+.2f} against {np.mean(wo):+.2f} (averaged over "
                 "the cases; section 'The adopted default score').")
    return text


def _proposal(res, lrs, targets) -> str:
    lo, hi = res["band"]
    mv = res.get("band_moves", {})
    cmin, cmin_detail = chaotic_min(res, hi)
    p = []
    est = res.get("band_estimate", (lo, hi))
    p.append(f"Pooled estimate of the best band: [{est[0]:g}, {est[1]:g}]. Rule for moving an edge of "
             f"zsad/verdict.py: at least {mv.get('need')} of the {mv.get('cases')} (data set, learning rate) "
             f"bootstrap intervals of that edge must exclude its prior value (Philipp's band {PRIOR}); otherwise "
             "the data do not support moving it. Result:")
    p.append("")
    p.append(f"**(b) Verdict bands.** LINEAR_MAX = {lo:g}, HEALTHY_MAX = {hi:g}, CHAOTIC_MIN = "
             f"{cmin:g}" if cmin is not None else
             f"**(b) Verdict bands.** LINEAR_MAX = {lo:g}, HEALTHY_MAX = {hi:g}; CHAOTIC_MIN: no NLC threshold in "
             "the population above which at least half the architectures fail in every case")
    p.append("")
    his = [(k, b) for k, b in res["bands"].items() if k[1] != "test_error@best" and b.get("hi_ci")]
    if his:
        p.append("Uncertainty of the edges (bootstrap 95% per case): lower edge " + ", ".join(
            f"{k[0]}/{_lr(k[1])}: [{b['lo_ci'][0]:g}, {b['lo_ci'][1]:g}]" for k, b in his) +
            "; upper edge " + ", ".join(f"{k[0]}/{_lr(k[1])}: [{b['hi_ci'][0]:g}, {b['hi_ci'][1]:g}]"
                                         for k, b in his) + ".")
        lo_lo, lo_hi = min(b["lo_ci"][0] for _, b in his), max(b["lo_ci"][1] for _, b in his)
        hi_lo, hi_hi = min(b["hi_ci"][0] for _, b in his), max(b["hi_ci"][1] for _, b in his)
        w_lo = float(np.median([math.log(b["lo_ci"][1] / b["lo_ci"][0]) for _, b in his]))
        w_hi = float(np.median([math.log(b["hi_ci"][1] / b["hi_ci"][0]) for _, b in his]))
        p.append("")
        text = (f"Every bootstrap interval of the lower edge lies within [{lo_lo:g}, {lo_hi:g}] and every one of "
                f"the upper edge within [{hi_lo:g}, {hi_hi:g}]; the median interval spans a factor "
                f"{math.exp(w_lo):.2f} for the lower edge and {math.exp(w_hi):.2f} for the upper edge")
        above2 = {ds: d["2_5"] + d["5_20"] + d["above_20"] for ds, d in res.get("nlc_dist", {}).items()}
        if above2:
            text += (", and " + " and ".join(f"{100 * v:.0f}% of the {ds} architectures" for ds, v in above2.items())
                     + " have an NLC of 2 or more, the range in which an upper edge above 2 gains architectures")
        p.append(text + ". " + _linear_sentence(res) + " These are small networks on 8×8 digit images; "
                 f"Philipp's band of roughly {PRIOR} comes from larger networks and data sets.")
    consts = res.get("verdict_constants")
    if consts:
        same = (consts["LINEAR_MAX"], consts["HEALTHY_MAX"]) == tuple(res["band"]) and (
            cmin is None or consts["CHAOTIC_MIN"] == cmin)
        p.append("")
        p.append(f"`zsad/verdict.py` holds LINEAR_MAX = {consts['LINEAR_MAX']:g}, HEALTHY_MAX = "
                 f"{consts['HEALTHY_MAX']:g}, CHAOTIC_MIN = {consts['CHAOTIC_MIN']:g}: "
                 + ("the values above." if same else "**not** the values above."))
    p.append("")
    if cmin is not None:
        p.append(f"CHAOTIC_MIN is the smallest threshold ≥ HEALTHY_MAX above which at least half of the "
                 "architectures end with a test error more than twice the in-band median, in every data set "
                 "and at both learning rates: " + ", ".join(f"{k}: {100 * v[0]:.0f}% of {v[1]}"
                                                            for k, v in cmin_detail.items()) + ".")
    return "\n".join(p) + "\n"


def _linear_sentence(res) -> str:
    """Effectively linear networks (NLC below report.LINEAR_NLC) against those inside the band."""
    from benchmarks.ground_truth.report import LINEAR_NLC

    lin = {k: v for k, v in res.get("linear", {}).items() if k[1] != "test_error@best" and v}
    if not lin:
        return ""
    higher = sum(1 for v in lin.values() if v["diff"] > 0)
    sig = sum(1 for v in lin.values() if v["ci"] and v["ci"][0] > 0)
    sig_lower = sum(1 for v in lin.values() if v["ci"] and v["ci"][1] < 0)
    lo, hi = res["band"]
    detail = "; ".join(f"{ds}/{_lr(t)}: {v['a_median']:.3f} (n={v['a_n']}) against {v['b_median']:.3f}, "
                       f"difference [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]" if v["ci"] else
                       f"{ds}/{_lr(t)}: {v['a_median']:.3f} against {v['b_median']:.3f}"
                       for (ds, t), v in lin.items())
    return (f"Effectively linear networks (NLC < {LINEAR_NLC:g}) have a higher median test error than those inside "
            f"the proposed band [{lo:g}, {hi:g}] in {higher} of {len(lin)} cases, with a bootstrap interval of the "
            f"difference above 0 in {sig}" + (f" and below 0 in {sig_lower}" if sig_lower else "")
            + f" ({detail}).")


def _sensitivity_sentence(res) -> str:
    """How much the band's upper edge moves with the search's minimum share."""
    sens = res.get("band_sensitivity") or {}
    pooled = res.get("band_sensitivity_pooled") or {}
    if not sens or not pooled:
        return ""
    shares = sorted(pooled, reverse=True)
    his = [pooled[sh][1] for sh in shares]
    factors = {}
    for k, per in sens.items():
        v = [per[sh]["hi"] for sh in shares if sh in per and per[sh]["hi"] is not None]
        if len(v) >= 2:
            factors[k] = (max(v) / min(v), v)
    worst = max(factors.items(), key=lambda kv: kv[1][0]) if factors else None
    text = (f"with a minimum share of {', '.join(share_label(sh) for sh in shares)} of the architectures per "
            f"interval, the pooled band is " + ", ".join(f"[{pooled[sh][0]:g}, {pooled[sh][1]:g}]" for sh in shares)
            + f": its upper edge moves from {min(his):g} to {max(his):g} (a factor {max(his) / min(his):.2f})")
    if worst:
        (ds, t), (f, v) = worst
        text += (f", and a single case's by up to a factor {f:.2f} ({ds}/{_lr(t)}: "
                 + " → ".join(f"{x:g}" for x in v) + ")")
    return text + "."


def _sensitivity(res) -> str:
    sens = res.get("band_sensitivity") or {}
    if not sens:
        return ""
    s = ["| data set | target | minimum share | best interval [a, b] | median test error inside | "
         "bootstrap 95% of a | of b |", "|---|---|---|---|---|---|---|"]
    for (ds, t), per in sens.items():
        for sh, b in per.items():
            if b["lo"] is None:
                s.append(f"| {ds} | {t} | {share_label(sh)} | — | — | — | — |")
                continue
            s.append(f"| {ds} | {t} | {share_label(sh)} ({b['min_n']} architectures) | [{b['lo']:g}, {b['hi']:g}] | "
                     f"{b['median_error']:.3f} | {_ci(b['lo_ci'])} | {_ci(b['hi_ci'])} |")
    s.append("")
    pooled = res.get("band_sensitivity_pooled") or {}
    if pooled:
        s.append("Pooled over the four cases (geometric median of the edges, two significant digits): "
                 + ", ".join(f"minimum share {share_label(sh)}: [{b[0]:g}, {b[1]:g}]" for sh, b in pooled.items())
                 + ".")
        s.append("")
        sent = _sensitivity_sentence(res)
        his = [b[1] for b in pooled.values()]
        s.append(sent[0].upper() + sent[1:] + f" `zsad/verdict.py`'s HEALTHY_MAX = {V.HEALTHY_MAX:g} is "
                 + ("within" if min(his) <= V.HEALTHY_MAX <= max(his) else "outside")
                 + " that range of pooled upper edges.")
        s.append("")
    return "\n".join(s) + "\n"


def _ci(ci):
    return "—" if not ci else f"[{ci[0]:g}, {ci[1]:g}]"


def _adopted(res, targets) -> str:
    info = res.get("adopted_info")
    cells = res.get("adopted") or {}
    if not info or not cells:
        return "Not computed.\n"
    s = [f"`zsad rank`'s default score, read from `zsad.ranking.DEFAULT_CANDIDATE` when this report was written, "
         f"is candidate **{info['candidate']}**: {info['formula']}. It is computed here from the study's stored "
         "metrics (`benchmarks.score_dev.study_rows()`: σ² is `zsad score`'s mean σ² of the hidden segment, "
         "nlc_block comes from the NLC profile), ranks taken within each data set; the previous default score is "
         f"the `default_score` column ({PRIOR_SCORE}). Both are evaluated on the "
         "architectures where both are defined (`zsad rank` ranks the others last). *Pooled*: Spearman ρ with "
         "test error over a data set's architectures, structures resampled. *Within structures*: the mean over "
         "structures of the Spearman ρ across the architectures of one structure (structures with at least 5 "
         "such architectures and non-constant values), structures resampled. Δ = adopted − previous, paired "
         "(the same resamples; negative = the adopted score orders better). Negative ρ = higher score, lower error.\n",
         "| data set | target | n | pooled ρ, previous | pooled ρ, adopted | Δρ [95%] | within, previous | "
         "within, adopted | Δ within [95%] | structures |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, t), c in cells.items():
        wd = c.get("within_delta")
        s.append(f"| {ds} | {t} | {c['adopted'].get('n')} | {_fmt(c['previous'])} | {_fmt(c['adopted'])} | "
                 f"{_fmt_delta(c['delta'], c['delta_ci'])} | {_fmt_mean(c.get('within_previous'))} | "
                 f"{_fmt_mean(c.get('within_adopted'))} | {_fmt_mean(wd)} | "
                 f"{(c.get('within_adopted') or {}).get('structures', '—')} |")
    s.append("")
    lr_cells = [c for (ds, t), c in cells.items() if t != "test_error@best"]
    k = len(lr_cells)
    pooled_lower = sum(1 for c in lr_cells if c["delta"] is not None and c["delta"] < 0)
    pooled_sig = sum(1 for c in lr_cells if c["delta_ci"] and c["delta_ci"][1] < 0)
    pooled_sig_worse = sum(1 for c in lr_cells if c["delta_ci"] and c["delta_ci"][0] > 0)
    wd = [c["within_delta"] for c in lr_cells if c.get("within_delta")]
    within_lower = sum(1 for d in wd if d["mean"] < 0)
    within_sig = sum(1 for d in wd if d["ci"][1] < 0)
    within_sig_worse = sum(1 for d in wd if d["ci"][0] > 0)
    wa = [c["within_adopted"] for c in lr_cells if c.get("within_adopted")]
    wa_pred = sum(1 for m in wa if m["ci"][1] < 0)
    wa_wrong = sum(1 for m in wa if m["ci"][0] > 0)
    wp = [c["within_previous"] for c in lr_cells if c.get("within_previous")]
    wp_pred = sum(1 for m in wp if m["ci"][1] < 0)
    wp_wrong = sum(1 for m in wp if m["ci"][0] > 0)
    s.append(
        f"Over the {k} (data set, learning rate) cases: pooled, the adopted score's ρ is lower (better) than the "
        f"previous one's in {pooled_lower} of {k}, with the interval of the difference below 0 in {pooled_sig}"
        + (f" and above 0 in {pooled_sig_worse}" if pooled_sig_worse else "") + ". "
        f"Within structures its mean ρ is lower than the previous score's in {within_lower} of {len(wd)}, with the "
        f"interval of the difference below 0 in {within_sig}" + (f" and above 0 in {within_sig_worse}"
                                                                    if within_sig_worse else "") + "; "
        f"the adopted score's within-structure interval lies below 0 (it orders the scalar settings of a structure "
        f"in the right direction) in {wa_pred} of {len(wa)} cases and above 0 (wrong direction) in {wa_wrong}, "
        f"against {wp_pred} and {wp_wrong} for the previous default score.")
    s.append("")
    return "\n".join(s) + "\n"


EXPECTED = {"band_distance": +1, "default_score": -1, "params": -1, "flops": -1, "naswot": -1, "synflow": -1,
            "grad_norm": -1, "snip": -1, "jacob_cov": -1, "abs_log_sigma2": +1, "sigma2_ratio": +1,
            "condition": +1, "isometry_share": -1, "abs_log_chi1": +1, "depth_over_xi_c": +1, "nlc_std": +1}


def _tally(res, lr_targets):
    """For each metric with a direction: in how many (data set, lr) cases it predicts / fails."""
    out = {}
    for col, sign in EXPECTED.items():
        words = [verdict(_corr(res, ds, t, col), sign) for ds in DATASETS for t in lr_targets
                 if (ds, t) in res["corr"]]
        out[col] = (sum(w.startswith("predicts") for w in words), sum(w.startswith("wrong") for w in words),
                    len(words))
    return out


def _summary_extra(res, lrs, targets) -> str:
    lr_targets = [t for t, _ in targets if t != "test_error@best"]
    tally = _tally(res, lr_targets)
    n_cases = len([1 for ds in DATASETS for t in lr_targets if (ds, t) in res["corr"]])
    good = [f"{c} ({p}/{n})" for c, (p, wr, n) in sorted(tally.items(), key=lambda kv: -kv[1][0]) if p]
    bad = [f"{c} ({wr}/{n})" for c, (p, wr, n) in tally.items() if wr]
    none = [c for c, (p, wr, n) in tally.items() if not p and not wr]
    s = [f"- Metrics whose interval excludes 0 **in the expected direction** (cases out of {n_cases} "
         f"data set × learning rate): {', '.join(good) or 'none'}.",
         f"- **Wrong direction** (interval excludes 0 with the opposite sign): {', '.join(bad) or 'none'}.",
         f"- **No evidence** either way in any case: {', '.join(none) or 'none'}."]
    for ds, d in res.get("nlc_dist", {}).items():
        below2 = d["below_1.2"] + d["1.2_2"]
        s.append(f"- NLC distribution on {ds} ({d['n']} architectures): {100 * d['below_1.2']:.0f}% below 1.2, "
                 f"{100 * d['1.2_2']:.0f}% in [1.2, 2), {100 * d['2_5']:.0f}% in [2, 5), {100 * d['5_20']:.0f}% in "
                 f"[5, 20), {100 * d['above_20']:.0f}% above 20 (median {d['median']:.2f}, max {d['max']:.3g}): "
                 f"{'most' if below2 > 0.5 else 'a minority'} ({100 * below2:.0f}%) below 2 at initialization on "
                 "these inputs.")
    chosen = res.get("chosen")
    if chosen:
        cur = [res["ablation"][(ds, t)][next(iter(res["ablation"][(ds, t)]))]["spearman"]
               for ds in DATASETS for t in lr_targets if (ds, t) in res["ablation"]]
        s.append(f"- **Best member of the band-score family** (Proposal): `{chosen.split(': ', 1)[-1]}`; mean ρ "
                 f"over the {len(cur)} cases {res['candidate_means'][chosen]:+.2f} against {np.mean(cur):+.2f} for "
                 "the previous default score (in-sample: the band and the member are chosen on these data).")
    return "\n".join(s) + "\n"


def _proposal_extra(res, lrs, targets) -> str:
    lr_targets = [t for t, _ in targets if t != "test_error@best"]
    lo, hi = res["band"]
    chosen = res.get("chosen")
    info = res.get("adopted_info") or {}
    sb = V.SCALE_BAND
    s = [""]
    if chosen:
        formula = chosen.split(": ", 1)[-1]
        s.append(f"**(a) Band-score family.** `zsad rank`'s default score is candidate "
                 f"{_adopted_name(res) if info else '?'} of `zsad.ranking` (section 'The adopted default "
                 "score'), chosen by the rule of `benchmarks/score_selection.md`; the family below "
                 "scores the band found here on this study alone (band and member both chosen on these data: its figures "
                 "are in-sample). Its best member: "
                 f"`score = {formula.replace('−', '-').replace('·', ' * ')}`, i.e.")
        s.append("")
        s.append(f"    d(NLC) = max(0, ln({lo:g} / NLC), ln(NLC / {hi:g}))      # log-distance from the band, "
                 "0 inside (direction: lower is better)")
        if "σ²" in formula:
            s.append(f"    s = max(0, abs(ln mean_sigma2) - ln {sb:g}) / 2            # log-factor by which the "
                     f"typical Jacobian singular value leaves [{1 / math.sqrt(sb):g}, {math.sqrt(sb):g}] "
                     "(lower is better)")
        if "ξ_c" in formula:
            s.append("    x = max(0, depth / xi_c - 1)                             # depth beyond one correlation "
                     "depth scale (lower is better)")
        if "params" in formula:
            s.append("    c = 0.01 * log10(params)                                 # capacity tie-breaker "
                     "(higher is better)")
        s.append("")
        members = ", ".join(f"`{n.split(': ', 1)[-1]}`" for n in res["candidate_means"])
        s.append(f"Chosen by a fixed rule: among the pre-declared family {{{members}}} (unit weights, all penalties "
                 "in natural-log units, capacity at the previous default's 0.01 per decade), the one with the lowest "
                 "mean Spearman ρ with test error over both data sets and both learning rates. No weight is fitted. "
                 "Mean ρ of each member:\n")
        s.append(f"| formula | mean ρ over the {len(lr_targets) * len(DATASETS)} cases |")
        s.append("|---|---|")
        for name, m in sorted(res["candidate_means"].items(), key=lambda kv: kv[1]):
            s.append(f"| `{name.split(': ', 1)[-1]}` | {m:+.3f} |")
        s.append("")
        s.append("Per case, with the paired difference to the previous default score (negative = better):\n")
        s.append("| data set | target | previous default | best of the family | Δρ [95%] |")
        s.append("|---|---|---|---|---|")
        for ds in DATASETS:
            for t in lr_targets:
                if (ds, t) not in res["ablation"]:
                    continue
                cells = res["ablation"][(ds, t)]
                cur = next(iter(cells.values()))
                c = cells[chosen]
                s.append(f"| {ds} | {t} | {_fmt(cur)} | {_fmt(c)} | {_fmt_delta(c.get('delta'), c.get('delta_ci'))} |")
        s.append("")
    if res.get("transfer"):
        s.append("**Does the band transfer?** The band estimated on one data set only, scored on the other "
                 "(Spearman ρ of the band distance's negative with test error; Δ against the prior band, "
                 "paired):\n")
        s.append(f"| scored on | target | band from the other data set | ρ with that band | ρ with {PRIOR} | "
                 "Δρ [95%] |")
        s.append("|---|---|---|---|---|---|")
        for (ds, t), tr in res["transfer"].items():
            new, cur = tr["new"].get("spearman"), tr["current"].get("spearman")
            d = new - cur if new is not None and cur is not None else None
            s.append(f"| {ds} | {t} | [{tr['band'][0]:g}, {tr['band'][1]:g}] | {_fmt(tr['new'])} | "
                     f"{_fmt(tr['current'])} | {_fmt_delta(d, tr['delta_ci'])} |")
        s.append("")
        k = len(res["transfer"])
        better = sum(1 for tr in res["transfer"].values() if tr["delta_ci"] and tr["delta_ci"][1] < 0)
        worse = sum(1 for tr in res["transfer"].values() if tr["delta_ci"] and tr["delta_ci"][0] > 0)
        s.append(f"The band from the other data set orders better than {PRIOR} (interval of Δρ below 0) in {better} "
                 f"of {k} cases" + (f", worse in {worse}" if worse else "") + ".")
        s.append("")
    return "\n".join(s) + "\n"


def _fail(res, lrs, targets) -> str:
    lr_targets = [t for t, _ in targets if t != "test_error@best"]
    lo, hi = res["band"]
    s = []
    tally = _tally(res, lr_targets)
    bad = [c for c, (p, wr, n) in tally.items() if wr]
    if bad:
        s.append("- Metrics that point the wrong way in at least one case: " + ", ".join(
            f"{c} ({tally[c][1]} of {tally[c][2]})" for c in bad) + "." + _gradient_sentence(res, bad, lr_targets))
    misses = {k: m for k, m in res.get("misses", {}).items() if k[1] != "test_error@best"}
    failed = sum(m["failed_inside"] for m in misses.values())
    scale = sum(m["failed_scale"] for m in misses.values())
    f_s2 = [v for m in misses.values() for v in m["failed_abs_log_sigma2"] if v is not None]
    k_s2 = [v for m in misses.values() for v in m["kept_abs_log_sigma2"] if v is not None]
    text = (f"- Inside the proposed band [{lo:g}, {hi:g}] the band distance is 0, so it cannot separate the "
            "architectures there; those that fail there (test error above twice the in-band median) are listed "
            f"by kind below. Over the {len(misses)} cases, {failed} failures inside the band")
    if failed:
        text += (f": {scale} of them have a Jacobian scale outside [1/{V.SCALE_BAND:g}, {V.SCALE_BAND:g}] "
                 f"(abs(ln mean σ²) > ln {V.SCALE_BAND:g}, where the scale term of the band-score family "
                 "starts)")
        if f_s2 and k_s2:
            text += (f", and their median abs(ln mean σ²) is {np.median(f_s2):.2f} against {np.median(k_s2):.2f} "
                     "for the in-band architectures that did not fail")
    s.append(text + ".\n")
    s.append("| data set | target | in band | failed in band | by depth | by normalization | by activation | "
             "outside the band but good |")
    s.append("|---|---|---|---|---|---|---|---|")
    for (ds, t), m in misses.items():
        s.append(f"| {ds} | {t} | {m['inside']} | {m['failed_inside']} | "
                 f"{', '.join(f'{k}: {v}' for k, v in m['by_depth'].items()) or '—'} | "
                 f"{', '.join(f'{k}: {v}' for k, v in m['by_norm'].items()) or '—'} | "
                 f"{', '.join(f'{k}: {v}' for k, v in list(m['by_activation'].items())[:4]) or '—'} | "
                 f"{m['good_outside']} of {m['outside']} |")
    s.append("")
    return "\n".join(s) + "\n"


def _gradient_sentence(res, bad, lr_targets) -> str:
    """Do the gradient-magnitude proxies that point the wrong way grow with the Jacobian scale, and does that
    scale go with higher test error?"""
    from benchmarks.ground_truth.report import GRADIENT_PROXIES

    cols = [c for c in GRADIENT_PROXIES if c in bad]
    ps = res.get("proxy_scale") or {}
    if not cols or not ps:
        return ""
    parts = []
    up = 0
    total = 0
    for c in cols:
        vals = [(ds, ps[(ds, c)]) for ds in DATASETS if (ds, c) in ps]
        total += len(vals)
        up += sum(1 for _, v in vals if v.get("spearman_ci") and v["spearman_ci"][0] > 0)
        parts.append(f"{c} " + ", ".join(f"{_fmt(v)} on {ds}" for ds, v in vals))
    s2 = [_corr(res, ds, t, "sigma2_mean") for ds in DATASETS for t in lr_targets if (ds, t) in res["corr"]]
    s2_up = sum(1 for c in s2 if c.get("spearman_ci") and c["spearman_ci"][0] > 0)
    text = (f" Spearman ρ of these gradient-magnitude proxies with the Jacobian mean σ²: {'; '.join(parts)} "
            f"(interval above 0 in {up} of {total}); the Jacobian mean σ² itself has a ρ with test error whose "
            f"interval lies above 0 in {s2_up} of {len(s2)} cases.")
    if up == total and s2_up == len(s2):
        text += (" So these proxies rank highest the networks with the largest Jacobian scale, which have the higher "
                 "test errors here.")
    return text
