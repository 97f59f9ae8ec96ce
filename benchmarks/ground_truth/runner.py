"""Running the study: tasks, two worker processes, resumable JSONL results.

A *task* is one structure: the zero-shot metrics of its architectures and their training at
both learning rates, on both data sets (which share the input geometry, so the second data set
reuses every compiled program). Tasks run in ``workers`` persistent worker processes
(default 2: both cores), cheapest first (so that a run cut short has completed the most
architectures). Workers compile with XLA's backend optimization off: the
zero-shot programs run once per architecture, so compile time dominates them; the training
program, which runs 400 steps, asks for the default optimization back
(``train.TRAIN_COMPILER_OPTIONS``).

Results (``results/``), appended by the main process as each task completes:
  metrics.jsonl   one line per (architecture, data set): its description and zero-shot metrics
  train.jsonl     one line per (architecture, data set, learning rate): errors and losses
  tasks.jsonl     one line per finished task: seconds for metrics and training, status
  runs.jsonl      one line per invocation of ``run``: wall time, tasks run and skipped
A rerun skips every part (metrics, training) whose architectures are all present.

Two populations (``POPULATIONS``): ``main`` (``population.py``: MLPs and five small CNNs, results in
``results/``) and ``cnn`` (``cnn_population.py``: plain, batch-norm, residual and multi-branch CNNs,
results in ``results/cnn/``). The ``cnn`` population's zero-shot metrics are ``zsad rank``'s, with its
default options and metrics (:func:`benchmarks.ground_truth.metrics.rank_metrics`); training is the same.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"
PARTS = ("metrics", "train")
#: population name -> (module, results folder)
POPULATIONS = {"main": ("benchmarks.ground_truth.population", RESULTS),
               "cnn": ("benchmarks.ground_truth.cnn_population", RESULTS / "cnn")}


def population_of(name: str):
    """The population ``name`` of :data:`POPULATIONS`: [(structure, members)]."""
    import importlib

    return importlib.import_module(POPULATIONS[name][0]).population()


def results_of(name: str) -> Path:
    return POPULATIONS[name][1]

WORKER_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn last line from an interrupted run
        if isinstance(rec, dict):
            out.append(rec)
    return out


def append_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for row in rows:
            fh.write(json.dumps(row, allow_nan=False, sort_keys=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- one task (in a worker)

def run_task(structure_id: str, todo: dict[str, tuple[str, ...]], population: str = "main") -> dict:
    """Computes one structure's missing parts, ``todo = {dataset: parts}``.

    Both data sets have the same input geometry, so the second data set reuses every program
    compiled for the first. Returns ``{"metrics": rows, "train": rows, "seconds": {...}}``.
    """
    import jax

    from benchmarks.ground_truth import data as D

    pop = {s.id: ms for s, ms in population_of(population)}
    members = pop[structure_id]
    kind = members[0].structure.kind
    out: dict = {"metrics": [], "train": [], "seconds": {}}
    try:
        for dataset, parts in todo.items():
            d = D.load(dataset)
            x_train, x_test = d.inputs(kind)
            if "metrics" in parts:
                from benchmarks.ground_truth import metrics as M

                t0 = time.perf_counter()
                path = M.input_file(CACHE, dataset, kind, x_train)
                archs = [m.architecture(d.input_shape(kind), str(path)) for m in members]
                if population == "main":
                    values = M.group_metrics(archs, M.scoring_batch(x_train))
                else:
                    values = M.rank_metrics(archs)
                out["metrics"] += [{**m.record(), "dataset": dataset, "metrics": v} for m, v in zip(members, values)]
                out["seconds"][f"metrics_{dataset}"] = round(time.perf_counter() - t0, 1)
            if "train" in parts:
                from zsad.arch.build import build

                from benchmarks.ground_truth import train as T

                t0 = time.perf_counter()
                nets = [build(m.architecture(d.input_shape(kind))) for m in members]
                results = T.train_group(nets[0], [n.scalars for n in nets], x_train, d.y_train, x_test, d.y_test)
                out["train"] += [{"arch": m.id, "structure": structure_id, "dataset": dataset, "lr": lr,
                                  "steps": T.STEPS, "batch": T.BATCH, **r}
                                 for m, per_lr in zip(members, results) for lr, r in zip(T.LEARNING_RATES, per_lr)]
                out["seconds"][f"train_{dataset}"] = round(time.perf_counter() - t0, 1)
    except Exception as err:  # reported by the main process; other tasks go on
        out["error"] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"
    finally:
        jax.clear_caches()  # compiled programs of this structure are not needed again
    return out


def _worker_init() -> None:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + WORKER_XLA_FLAGS).strip()


# --------------------------------------------------------------------------- the scheduler

def _clean(rows: list[dict]) -> list[dict]:
    """JSON cannot hold NaN/inf: those become null (the analysis treats null as undefined)."""
    import math

    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return [fix(r) for r in rows]


def _done(part: str, results: Path = RESULTS) -> set[tuple[str, str]]:
    rows = read_jsonl(results / f"{part}.jsonl")
    if part == "train":
        from benchmarks.ground_truth.train import LEARNING_RATES

        seen: dict[tuple[str, str], set] = {}
        for r in rows:
            seen.setdefault((r["arch"], r["dataset"]), set()).add(r["lr"])
        return {k for k, lrs in seen.items() if all(lr in lrs for lr in LEARNING_RATES)}
    return {(r["arch"], r["dataset"]) for r in rows}


def _estimate(structure, todo) -> float:
    """Rough seconds, for longest-first scheduling."""
    depth, cnn = structure.depth, structure.kind == "cnn"
    parts = {p for ps in todo.values() for p in ps}
    t = 0.0
    if "metrics" in parts:
        t += 15 + 5.0 * depth * (2 if cnn else 1)
    if "train" in parts:
        t += 10 + 3.0 * depth + 0.5 * structure.cost() * (6 if cnn else 1)
    return t


def plan(datasets, structures: int | None = None, population: str = "main"):
    """[(structure, {dataset: parts})] still to do, cheapest first; and how many (structure, data
    set) pairs are already complete."""
    pop = population_of(population)
    if structures is not None:
        step = max(1, len(pop) // structures)
        pop = pop[::step][:structures]
    done = {part: _done(part, results_of(population)) for part in PARTS}
    tasks, skipped = [], 0
    for s, members in pop:
        todo = {}
        for ds in datasets:
            parts = tuple(part for part in PARTS if not all((m.id, ds) in done[part] for m in members))
            if parts:
                todo[ds] = parts
            else:
                skipped += 1
        if todo:
            tasks.append((s, todo))
    # cheapest first: on a shared machine a run may be cut short, and the cheap (shallow) structures are
    # the most numerous, so this order completes the most architectures per minute
    tasks.sort(key=lambda t: _estimate(t[0], t[1]))
    return tasks, skipped


def run(datasets, *, workers: int = 2, structures: int | None = None, log=print, population: str = "main") -> dict:
    """Runs every missing task of ``population``; returns the run's record (also appended to runs.jsonl)."""
    tasks, skipped = plan(datasets, structures, population)
    results = results_of(population)
    started = time.time()
    log(f"{len(tasks)} structures to run, {skipped} (structure, data set) pairs already done; "
        f"{workers} worker processes")
    finished = failed = 0
    interrupted = False
    ctx = multiprocessing.get_context("spawn")
    import signal

    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
    try:
        futures = {pool.submit(run_task, s.id, todo, population): (s, todo) for s, todo in tasks}
        for fut in cf.as_completed(futures):
            s, todo = futures[fut]
            try:
                res = fut.result()
            except Exception as err:  # a worker died (e.g. out of memory)
                res = {"error": f"{type(err).__name__}: {err}", "seconds": {}}
            for part in PARTS:
                if res.get(part):
                    append_jsonl(results / f"{part}.jsonl", _clean(res[part]))
            status = "ok" if "error" not in res else "failed: " + res["error"].splitlines()[0][:300]
            finished += "error" not in res
            failed += "error" in res
            append_jsonl(results / "tasks.jsonl", [{"structure": s.id, "todo": todo,
                                                    "seconds": res["seconds"], "status": status,
                                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}])
            elapsed = time.time() - started
            done = finished + failed
            eta = elapsed / done * (len(tasks) - done)
            log(f"[{done}/{len(tasks)}] {s.id}: {status} {res['seconds']} "
                f"(elapsed {elapsed / 60:.1f} min, about {eta / 60:.0f} min left)")
            if "error" in res:
                log(res["error"])
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: finished tasks are stored; the next run continues from there")
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    record = {"population": population, "datasets": list(datasets),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
              "wall_s": round(time.time() - started, 1), "tasks_run": finished, "tasks_failed": failed,
              "tasks_skipped": skipped, "workers": workers, "cpus": os.cpu_count(),
              "load_avg_end": [round(v, 2) for v in os.getloadavg()], "interrupted": interrupted}
    if tasks:
        append_jsonl(results / "runs.jsonl", [record])
    log(f"done: {finished} tasks in {record['wall_s'] / 60:.1f} min ({failed} failed, {skipped} skipped)")
    return record
