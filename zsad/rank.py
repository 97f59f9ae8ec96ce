"""Ranking a search space: many architectures, one compiled program per structure, resumable results.

:func:`rank_space` scores every architecture of a :class:`zsad.space.Space`
and ranks them. Per architecture it measures the NLC (mean and standard
deviation over ``seeds`` initializations) and the baseline zero-cost proxies
(:mod:`zsad.proxies`), all in one jitted program per network *structure*:
architectures that differ only in scalars (weight/bias scales, residual and
shaping scalars, activation parameters) share it, and the whole NAS-Bench-201
space shares one (the masked network of :mod:`zsad.spaces.nasbench201`, operation
choice as data). Architectures that differ only in activation functions share
one too: their activation layers choose the function by a traced index
(:func:`zsad.arch.build.with_choices`; on the CPU only the chosen function
runs). MLPs (dense and activation layers) that differ in widths and depths share
one too: widths padded to power-of-two buckets, depth a masked loop
(:mod:`zsad.arch.padding`), with the metrics of their own programs. The space
is streamed in chunks; within a chunk, architectures are grouped by shape
signature so that each program is compiled once (a small LRU keeps recent
programs across chunks). Memory does not grow with the size of
the space beyond one small row per architecture.

Where the architectures are scored is a :class:`Runner`: this process by
default (:func:`local_runner`), or a Ray cluster (``ray=``,
:mod:`zsad.cluster`); a runner gets a :class:`Job` and nothing else of this
module.

Results (``out``, :mod:`zsad.results`): CSV, JSONL or Parquet by extension, one row per
architecture with the columns of :func:`zsad.ranking.columns`. Rows are appended and flushed
as they are computed; at the end the file is rewritten atomically, in the
space's order, with ``score`` and ``rank`` filled. A sidecar ``FILE.meta.json``
records the space's fingerprint, the options, every column's direction and
description and the score formula; ``resume=True`` reads it back, refuses a
file from another space or other options, and computes only the architectures
not yet in the file. Same space, seed and options give a byte-identical file.

Degenerate architectures (constant output, e.g. NAS-Bench-201 cells whose
output node is unreachable), diverged ones (non-finite activations in every
initialization) and failed ones (invalid, or an error while building or
computing) get ``null`` metrics with ``status`` and ``reason``, and rank last.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterator, Protocol, Sequence

import jax

from zsad import _interrupt as interrupt
from zsad._errors import SpecError, WriteError, ZsadError
from zsad._files import FileLock
from zsad.measure import SIGMA2_PROBES, SIGMA2_SAMPLES
from zsad.ranking import DIRECTION, RankOptions, columns, metric_columns, parse_by, score_meta, score_rows
from zsad.results import check_out, open_results
from zsad.scorer import Scorer, SpaceContext
from zsad.space import Space, SpaceItem
from zsad.verdict import HEALTHY_MAX, LINEAR_MAX



DESCRIPTION: dict[str, str] = {
    "arch": "architecture name (a built-in space: the architecture in the space's notation)",
    "status": "ok, degenerate (constant output), diverged (non-finite activations) or failed",
    "reason": "why metrics are null or partial; empty when every metric is defined",
    "nlc": f"nonlinearity coefficient of the output, mean over seeds; best inside the band "
           f"[{LINEAR_MAX}, {HEALTHY_MAX}] (zsad.verdict)",
    "nlc_std": "standard deviation of the NLC over seeds (sample, ddof=1); lower is more reliable",
    "nlc_block": "largest growth of the NLC across one top-level block, max_b ln(NLC_b / NLC_{b-1}) over the "
                 "profile of prefixes (NAS-Bench-201: stem, cells, reductions, head), mean over seeds; lower "
                 "is better (no single block far more nonlinear than the rest)",
    "sigma2": "mean squared singular value of the Jacobian of the hidden layers (zsad score's default "
              "segment, which ends before global pooling and the head; NAS-Bench-201: input to the last "
              "cell's output; input to output where the network cannot be cut), Hutchinson's estimate on "
              f"{SIGMA2_SAMPLES} samples x {SIGMA2_PROBES} probes, mean over seeds; best near 1 "
              "(vanishing below, exploding above)",
    "params": "trainable parameters (exact count); higher taken as better (zero-cost NAS convention)",
    "flops": "FLOPs of one sample's forward pass. Architecture files: XLA's count (a multiply-add counts 2); "
             "NAS-Bench-201: the benchmark's convention (a multiply-add counts 1, as flops_m, "
             "zsad.spaces.nasbench201.flops); other built-in spaces: their flops method (zsad.spaces)",
    "naswot": "NASWOT, log|det K_H| of the Hamming kernel of activation codes (Mellor et al. 2021), "
              "mean over seeds; higher is better",
    "synflow": "log of synflow (Tanaka et al. 2020), float64, batch norm bypassed, mean over seeds; higher is better",
    "grad_norm": "log of the summed per-layer gradient norms of the cross-entropy (Abdelfattah et al. 2021), "
                 "mean over seeds; higher is better",
    "snip": "log of the summed |theta * dL/dtheta| (Lee et al. 2019), mean over seeds; higher is better",
    "jacob_cov": "jacob_cov score of the input-gradient correlations (Mellor et al. v1), mean over seeds; "
                 "higher is better",
    "score": "ranking score (see score.formula), higher is better; null ranks last",
    "rank": "1 = best; ties keep the space's order",
}

_CHUNK = 256  # architectures read from the space at a time (grouped by structure within)


# --------------------------------------------------------------------------- the driver

@dataclass
class RankResult:
    """Rows in the space's order with ``score`` and ``rank``; how many were computed vs resumed."""

    rows: list[dict]
    columns: list[str]
    by: tuple[str, ...]
    computed: int
    resumed: int
    meta: dict

    def top(self, k: int | None = None) -> list[dict]:
        ranked = sorted(self.rows, key=lambda r: r["rank"])
        return ranked if k is None else ranked[:k]


class RankInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`rank_space`; the results file holds every row computed so far."""

    def __init__(self, done: int, total: int | None, out: str | None):
        super().__init__(f"interrupted after {done} architectures")
        self.done, self.total, self.out = done, total, out


def make_meta(space: Space, options: RankOptions, by: Sequence[str]) -> dict:
    cols = columns(options.metrics)
    return {
        "format": "zsad-rank-results/1",
        "space": {"name": space.name, "form": space.form, "file": space.source, "size": space.size,
                  "fingerprint": space.fingerprint},
        "options": options.to_json(),
        "columns": {c: {"direction": DIRECTION.get(c), "description": DESCRIPTION[c]} for c in cols},
        "score": score_meta(by, options.metrics),
    }


def _chunks(items: Iterator[SpaceItem], size: int) -> Iterator[list[SpaceItem]]:
    chunk: list[SpaceItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- the runner interface

@dataclass(frozen=True)
class Job:
    """What a :class:`Runner` needs to score the items of one run: picklable, so cluster workers get it whole.

    Attributes:
      context: :meth:`SpaceContext.of` the space.
      options: what to compute.
    """

    context: SpaceContext
    options: RankOptions

    def scorer(self, devices: Sequence | None = None) -> Scorer:
        """A :class:`Scorer` of this run (``devices``: as :class:`Scorer`); its ``rows(items)`` scores items."""
        return Scorer(self.context, self.options, devices=devices)

    @staticmethod
    def group(item: SpaceItem) -> Hashable:
        """The structure of ``item`` (:meth:`Scorer.group_key`): items of one group share a compiled program."""
        return Scorer.group_key(item)

    def failed(self, item: SpaceItem, reason: str) -> dict:
        """The row of an item that could not be scored: ``failed``, every metric null."""
        return {"arch": item.id, "status": "failed", "reason": reason,
                **dict.fromkeys(metric_columns(self.options.metrics))}


class Runner(Protocol):
    """Where :func:`rank_space` scores: ``runner(chunks, job)`` pulls lists of items from ``chunks`` as it
    has room for them and yields their rows, in any order (each once; a row that arrives twice is written
    once). The default scores in this process with ``job.scorer()``; :func:`zsad.cluster.ray_runner`
    scores on a Ray cluster."""

    def __call__(self, chunks: Iterator[list[SpaceItem]], job: Job) -> Iterator[dict]: ...


def local_runner(devices: Sequence | None = None) -> Runner:
    """The default :class:`Runner`: one :class:`Scorer` in this process over ``devices`` (default: all of
    JAX's default backend)."""

    def run(chunks: Iterator[list[SpaceItem]], job: Job) -> Iterator[dict]:
        scorer = job.scorer(devices)
        return (row for chunk in chunks for row in scorer.rows(chunk))

    return run


def local_devices(n: int | None) -> list | None:
    """The first ``n`` devices of JAX's default backend (None: None, i.e. all of them)."""
    if n is None:
        return None
    devices = jax.devices()
    if not 1 <= n <= len(devices):
        raise SpecError(f"--devices: expected 1 to {len(devices)} (this machine's {devices[0].platform} "
                        f"devices); got {n}")
    return devices[:n]


def check_run(out: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
              ray: str | None = None, workers: int | None = None, devices: int | Sequence | None = None,
              runner: Runner | None = None) -> None:
    """Refuses, before any work, options of :func:`rank_space` that do not go together and a results file
    that cannot be written (see :func:`zsad.results.check_out`)."""
    check_out(out, resume=resume, overwrite=overwrite)
    if ray is None and workers is not None:
        raise SpecError("--workers: applies to a Ray cluster; add --ray")
    if ray is not None and devices is not None:
        raise SpecError("--devices: applies to this machine's devices, not to Ray workers (each uses its own)")
    if runner is not None and (ray is not None or devices is not None):
        raise SpecError("runner: expected either a runner or ray/devices; got both")


def rank_space(space: Space, options: RankOptions = RankOptions(), *, out: str | Path | None = None,
               resume: bool = False, overwrite: bool = False, ray: str | None = None, workers: int | None = None,
               devices: int | Sequence | None = None, runner: Runner | None = None, **kwargs) -> RankResult:
    # The results file is locked (FILE.lock) from before it is read to after it is final: a second
    # run on the same file fails at once instead of racing this one.
    check_run(out, resume=resume, overwrite=overwrite, ray=ray, workers=workers, devices=devices, runner=runner)
    if ray is not None:
        from zsad import cluster

        with contextlib.closing(cluster.ray_runner(ray, workers=workers)) as ray_runner:
            return rank_space(space, options, out=out, resume=resume, overwrite=overwrite, runner=ray_runner,
                              **kwargs)
    if runner is None:
        runner = local_runner(local_devices(devices) if isinstance(devices, int) else devices)
    lock = FileLock(out).acquire() if out is not None else None
    try:
        with interrupt.remembered() as ctrl_c:  # a Ctrl-C that something swallows still stops the run
            result = _rank_space(space, options, out=out, resume=resume, overwrite=overwrite, runner=runner,
                                 stop=lambda: ctrl_c.requested, **kwargs)
            if ctrl_c.requested:  # after the last row: the file is complete
                raise RankInterrupted(result.computed + result.resumed, space.size,
                                      str(out) if out is not None else None)
        return result
    finally:
        if lock is not None:
            lock.release()


def _rank_space(space: Space, options: RankOptions = RankOptions(), *, out: str | Path | None = None,
                resume: bool = False, overwrite: bool = False, by: str = "score",
                on_row: Callable[[dict], None] | None = None,
                on_progress: Callable[[int, int | None], None] | None = None, runner: Runner,
                stop: Callable[[], bool] = lambda: False) -> RankResult:
    """Scores and ranks every architecture of ``space``.

    Args:
      space: from :func:`zsad.space.load_space`.
      options: what to compute.
      out: results file (.csv, .jsonl, .parquet); None keeps results in memory only.
      resume: continue ``out``: architectures already in it are not recomputed.
      overwrite: replace an existing ``out`` (without it, an existing file is refused unless ``resume``).
      by: ``"score"`` (the default formula), one metric column, or several comma-separated
        (mean of per-metric ranks).
      on_row: called with each newly computed row after it is written.
      on_progress: called with ``(done, total)`` (total None when unknown) after each architecture.
      ray: score on a Ray cluster at this address (``"local"`` starts one; see
        :func:`zsad.cluster.ray_runner`), closed when the run ends.
      workers: with ``ray``: workers in the pool (default: one per CPU, or per GPU, of the cluster).
      devices: local devices to spread chunks of architectures over, or how many of the first
        (default: all of JAX's default backend; see :class:`Scorer`). Results do not depend on it.
      runner: where to score (a :class:`Runner`; default: this process), instead of ``ray`` and
        ``devices``. A row that arrives twice (a retried chunk) is written once.

    Returns:
      :class:`RankResult`.

    Raises:
      SpecError: bad ``by``/``metrics``, an unwritable, mismatched or locked ``out`` (another run holds
        ``FILE.lock``), ``resume`` without ``out`` or with ``overwrite``, ``workers`` without ``ray``,
        ``ray`` with ``devices``, a bad generator.
      RankInterrupted: on Ctrl-C; ``out`` then holds every row computed so far.
    """
    by_cols = parse_by(by, options.metrics)
    cols = columns(options.metrics)
    meta = make_meta(space, options, by_cols)
    results, done_rows = open_results(out, cols, meta, resume=resume, overwrite=overwrite)
    job = Job(SpaceContext.of(space), options)
    order: list[str] = []
    counts = {"computed": 0, "resumed": 0}

    def progress() -> None:
        if on_progress:
            on_progress(counts["computed"] + counts["resumed"], space.size)

    def todo() -> Iterator[list[SpaceItem]]:
        for chunk in _chunks(iter(space), _CHUNK):
            pending = []
            for item in chunk:
                order.append(item.id)
                if item.id in done_rows:
                    counts["resumed"] += 1
                else:
                    pending.append(item)
            progress()
            if pending:
                yield pending

    if results is not None:
        results.start(list(done_rows.values()))
    fresh: set[str] = set()
    try:
        progress()
        for row in runner(todo(), job):
            if row["arch"] in fresh or row["arch"] in done_rows:
                continue  # a retried chunk's row that already arrived
            fresh.add(row["arch"])
            done_rows[row["arch"]] = row
            counts["computed"] += 1
            if results is not None:
                results.append(row)
            if on_row:
                on_row(row)
            progress()
            if stop():
                raise KeyboardInterrupt
        if stop():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if results is not None:
            results.close()
        raise RankInterrupted(counts["computed"] + counts["resumed"], space.size,
                              str(out) if out is not None else None) from None
    except BaseException:
        if results is not None:
            results.close()
        raise
    missing = [a for a in order if a not in done_rows]
    if missing:
        raise ZsadError(f"{len(missing)} architecture(s) came back without a row (first: {missing[0]}); "
                        f"every finished row is in {out}: rerun with --resume" if out else
                        f"{len(missing)} architecture(s) came back without a row (first: {missing[0]})")
    rows = score_rows([done_rows[a] for a in order], by_cols, options.metrics)
    if results is not None:
        try:
            results.finish(rows)
        except OSError as err:
            raise WriteError(f"{out}: could not write the final results ({err.strerror or err}); every computed "
                             "row is in it as appended (without score and rank): rerun with --resume to finish "
                             "it") from None
    return RankResult(rows, cols, by_cols, counts["computed"], counts["resumed"], {**meta, "complete": True})


rank_space.__doc__ = _rank_space.__doc__
