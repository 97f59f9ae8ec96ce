"""Ranking on a Ray cluster: :func:`ray_runner`, a :class:`zsad.rank.Runner` for :func:`zsad.rank.rank_space`.

``rank_space(space, options, out=..., ray="auto")`` (``zsad rank --ray auto``),
or ``runner=ray_runner("auto")`` to keep the workers over several runs, scores the architectures on the workers of a Ray cluster instead
of in this process; the results file, ``--resume``, ``--top`` and the ranking
are the same as a local run (a CPU worker computes each row exactly as this
process does on one CPU device).

How the work is spread:

* a pool of Ray *actors*, one per worker (by default one per CPU of the
  cluster, or one per GPU when the cluster has GPUs). Each actor makes one
  scorer (the run's ``job.scorer()``) and keeps it, so each worker compiles a structure's
  program once (the worker's program cache keeps the last few structures) and
  reuses it for every architecture of that structure it is sent. CPU workers
  run with ``JAX_PLATFORMS=cpu``; GPU workers use their GPU(s) (JAX's default
  backend; with ``gpus_per_worker < 1`` without preallocating GPU memory). The
  driver's numeric JAX settings at each call (``jax_enable_x64``, i.e. ``--x64``;
  ``jax_numpy_rank_promotion``; ``jax_default_matmul_precision``) are applied on
  every worker;
* ``rank_space`` hands over chunks of up to 256 architectures; each is grouped
  by structure and each group cut into tasks of at most ``task_size``
  architectures (16), and into at least as many tasks as there are workers, so
  that the workers share even a small space. Chunks are pulled from
  the space only when a worker has room for more: at most ``in_flight`` tasks
  are queued per worker (2: one running, one waiting), so the driver's memory
  does not grow with the space. A task goes to a worker that has compiled its
  structure already while one has room, else preferably one of a structure no
  worker has compiled yet to the least loaded worker: structures spread over
  the workers, and a worker compiles a structure another one has only when
  those are busy (compiling takes seconds; scoring an architecture, milliseconds
  for small networks);
* rows are yielded as tasks complete (not in the space's order: ``rank_space``
  writes them as they come and restores the order at the end). A task's rows
  come back all at once, only when it succeeds, so each is yielded once;
* a worker that dies (its process killed, out of memory, its node lost) is
  replaced by a new actor, and every task it held is resubmitted, split into
  single architectures. Those run alone: on a worker with nothing else queued,
  which takes nothing more until it is done, so that a death is pinned on one
  architecture. A task is charged an attempt when its worker dies while it is
  the worker's only task (a worker that dies holding several cannot say which
  it was running: the replies of finished tasks may die with it); one whose
  worker dies ``max_retries + 1`` times while scoring it gets a ``failed`` row
  (the reason says so) instead of stopping the run. An exception raised by the
  scoring code itself is not retried: it stops the run with a one-line error
  (rows finished until then are in the results file; ``--resume`` continues).

Every worker needs zsad installed with the same Python, jax and Ray versions as
the driver (``pip install 'zsad[ray]'``), and the space's files (input data,
``module:factory`` entry points) at the same paths.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from zsad._errors import SpecError, ZsadError

#: JAX settings of the driver that are applied on every worker (they change the numbers).
JAX_SETTINGS = ("jax_enable_x64", "jax_numpy_rank_promotion", "jax_default_matmul_precision")

_NEEDS_RAY = "--ray needs the optional extra: pip install 'zsad[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SpecError(_NEEDS_RAY) from None
    return ray


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _probe(address: str | None, timeout: float = 10.0) -> None:
    """Fails fast (OSError) when ``HOST:PORT`` or ``ray://HOST:PORT`` does not accept connections.

    (``ray.init`` itself keeps retrying an unreachable cluster address for minutes.)
    """
    if not address or address in ("auto", "local"):
        return
    where = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


def _last_line(err: BaseException) -> str:
    """The last line of a remote traceback (the exception itself), without terminal colours."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


# --------------------------------------------------------------------------- the worker (a Ray actor)

class _Worker:
    """Scores lists of space items with one scorer (``job.scorer()``) kept while the job is the same."""

    def __init__(self, settings: dict):
        _apply(settings)
        self._job: tuple | None = None
        self._scorer = None

    def ready(self) -> dict:
        """Where this worker runs (answered once it has started: the driver waits for it)."""
        import jax

        return {"pid": os.getpid(), "host": socket.gethostname(), "devices": [str(d) for d in jax.devices()]}

    def rows(self, job: tuple, items: list) -> list[dict]:
        """The rows of ``items``; ``job`` is ``(the run's zsad.rank.Job, JAX settings)``."""
        if self._scorer is None or self._job != job:
            run, settings = job
            _apply(settings)
            self._scorer, self._job = run.scorer(), job
        return list(self._scorer.rows(items))


def _apply(settings: dict) -> None:
    import jax

    for name, value in settings.items():
        if getattr(jax.config, name) != value:
            jax.config.update(name, value)


# --------------------------------------------------------------------------- the driver side

@dataclass
class _Task:
    items: list  # SpaceItems
    key: Any  # the structure (Job.group) shared by the items
    attempts: int = 0  # how many workers died while running it alone
    alone: bool = False  # held by a worker that died: runs alone on its worker


@dataclass
class _Member:
    """One actor of the pool."""

    handle: Any
    ready_ref: Any
    ready: bool = False
    info: dict = dataclasses.field(default_factory=dict)
    keys: "collections.OrderedDict[Any, None]" = dataclasses.field(default_factory=collections.OrderedDict)
    running: int = 0
    alone: bool = False  # running a task alone: takes no other until it is done
    blamed: int | None = None  # once dead: the submission it was running for sure (None: it held several)

    def learn(self, key: Any) -> None:
        self.keys[key] = None
        self.keys.move_to_end(key)
        while len(self.keys) > 8:  # zsad.rank keeps the last 8 programs
            self.keys.popitem(last=False)


def _split(items: Sequence, group: Callable[[Any], Any], size: int, workers: int = 1) -> list[_Task]:
    """Items grouped by structure (``group(item)``), each group cut into near-equal tasks of at most
    ``size`` and into at least one task per worker (a small space is shared too)."""
    groups: dict[Any, list] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    tasks = []
    for key, group in groups.items():
        parts = max(-(-len(group) // size), min(workers, len(group)))
        step, extra = divmod(len(group), parts)
        pos = 0
        for p in range(parts):
            n = step + (p < extra)
            tasks.append(_Task(group[pos:pos + n], key))
            pos += n
    return tasks


class RayRunner:
    """A :class:`zsad.rank.Runner` over the actors of a Ray cluster; make it with :func:`ray_runner`.

    The actor pool is started on the first call and kept for later calls (their
    compiled programs too); :meth:`close` (or leaving a ``with`` block) kills it
    and, when this runner started Ray, shuts Ray down.

    Attributes:
      address: the cluster (None: a local cluster started here).
      workers: the pool's size.
      stats: counters of the last call: ``tasks`` submitted, ``retried`` (tasks
        resubmitted after their worker died), ``lost`` (workers that died),
        ``failed`` (architectures given up after ``max_retries``).
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None, max_retries: int = 3,
                 in_flight: int = 2, task_size: int = 16, gpus_per_worker: float | None = None,
                 start_timeout: float = 300.0):
        if workers is not None and workers < 1:
            raise SpecError(f"workers: expected an integer >= 1; got {workers}")
        if max_retries < 0 or in_flight < 1 or task_size < 1:
            raise SpecError(f"max_retries, in_flight, task_size: expected >= 0, >= 1, >= 1; "
                            f"got {max_retries}, {in_flight}, {task_size}")
        ray = _import_ray()
        address = None if address in ("", "local") else address
        self.address = address
        self.max_retries, self.in_flight, self.task_size = max_retries, in_flight, task_size
        self.start_timeout = start_timeout
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address is None:
                kwargs.update(include_dashboard=False, num_cpus=workers)
            where = "start a local Ray cluster" if address is None else f"connect to the Ray cluster at {address}"
            try:
                _probe(address)
                with warnings.catch_warnings():  # the one-line error below says it all
                    warnings.simplefilter("ignore")
                    ray.init(address=address, **kwargs)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:
                if ray.is_initialized():
                    ray.shutdown()
                raise ZsadError(f"--ray: cannot {where}: {_first_line(err)}") from None
            self._owns_ray = True
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        self.gpus_per_worker = (1.0 if gpus >= 1 else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
        if workers is None:
            workers = (int(gpus // self.gpus_per_worker) if self.gpus_per_worker
                       else int(resources.get("CPU", 1)))
        self.workers = max(1, workers)
        self.stats = {"tasks": 0, "retried": 0, "lost": 0, "failed": 0}
        self._pool: list[_Member] = []
        self._failed_starts = 0
        self._actor = ray.remote(_Worker)

    # ---- the pool

    def _settings(self) -> dict:
        import jax

        return {name: getattr(jax.config, name) for name in JAX_SETTINGS}

    def _start(self) -> _Member:
        if not self.gpus_per_worker:
            env = {"JAX_PLATFORMS": "cpu"}
        elif self.gpus_per_worker < 1:  # workers share a GPU: no worker may take 75% of its memory
            env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        else:
            env = {}
        actor = self._actor.options(
            num_cpus=1, num_gpus=self.gpus_per_worker, max_restarts=0, max_concurrency=1,
            runtime_env={"env_vars": env} if env else None,
        ).remote(self._settings())
        member = _Member(actor, actor.ready.remote())
        self._pool.append(member)
        return member

    def _drop(self, member: _Member) -> None:
        if member in self._pool:
            self._pool.remove(member)
            try:
                self._ray.kill(member.handle)
            except Exception:  # already gone
                pass

    @property
    def pool(self) -> list[dict]:
        """The running workers: ``{"pid", "host", "devices"}`` each (those started so far)."""
        return [dict(m.info) for m in self._pool if m.ready]

    def close(self) -> None:
        """Kills the workers; shuts Ray down if this runner started it."""
        for member in list(self._pool):
            self._drop(member)
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> "RayRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- running

    def __call__(self, chunks: Iterator[list], job) -> Iterator[dict]:
        return self._run(chunks, job)

    def _pick(self, free: list[_Member], queue: Sequence[_Task]) -> tuple[_Member, _Task]:
        """A worker with room and its task: the oldest task of a structure some worker with room has
        compiled already (the least loaded such worker takes it), else the least loaded worker takes the
        oldest task of a structure no worker has compiled yet, else the oldest task."""
        knowing = []
        for member in free:
            task = next((t for t in queue if t.key in member.keys), None)
            if task is not None:
                knowing.append((member.running, len(knowing), member, task))
        if knowing:
            _, _, member, task = min(knowing)
            return member, task
        known = {key for m in self._pool for key in m.keys}
        return min(free, key=lambda m: m.running), next((t for t in queue if t.key not in known), queue[0])

    def _gave_up(self, item, job) -> dict:
        return job.failed(item, f"its Ray worker died each of the {self.max_retries + 1} times it was scored "
                                "(out of memory?)")

    def _ended(self, ref) -> bool:
        """Whether the task of ``ref`` ended on its worker (its rows or its own error, not collected yet)
        rather than dying with it."""
        ray = self._ray
        try:
            ray.get(ref, timeout=0)
        except ray.exceptions.RayTaskError:
            return True
        except Exception:  # still pending (GetTimeoutError), or lost with the worker
            return False
        return True

    def _run(self, chunks: Iterator[list], job) -> Iterator[dict]:
        ray = self._ray
        retryable = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                     ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError,
                     ray.exceptions.OutOfMemoryError)
        self.stats = {"tasks": 0, "retried": 0, "lost": 0, "failed": 0}
        queue: collections.deque[_Task] = collections.deque()
        running: dict[Any, tuple[_Task, _Member, int]] = {}  # ref -> task, worker, submission number
        exhausted = False
        finished = False
        waiting_since = time.monotonic()

        def submit(member: _Member, task: _Task) -> None:
            queue.remove(task)
            member.learn(task.key)
            member.running += 1
            self.stats["tasks"] += 1
            running[member.handle.rows.remote(shared, task.items)] = (task, member, self.stats["tasks"])

        try:
            shared = ray.put((job, self._settings()))
            while len(self._pool) < self.workers:
                self._start()
            while True:
                # hand out tasks to every ready worker with room, pulling chunks only as needed
                while True:
                    free = [m for m in self._pool if m.ready and not m.alone and m.running < self.in_flight]
                    if not free:
                        break
                    solo = next((t for t in queue if t.alone), None)
                    if solo is not None:  # a task to pin a death on: alone on an idle worker
                        idle = [m for m in free if m.running == 0]
                        if idle:
                            idle[0].alone = True
                            submit(idle[0], solo)
                            continue
                        free.remove(min(free, key=lambda m: m.running))  # it takes no more: it drains
                        if not free:
                            break
                    normal = [t for t in queue if not t.alone]
                    if not normal:
                        if exhausted:
                            break
                        chunk = next(chunks, None)
                        if chunk is None:
                            exhausted = True
                            break
                        queue.extend(_split(chunk, job.group, self.task_size, self.workers))
                        continue
                    submit(*self._pick(free, normal))
                if exhausted and not queue and not running:
                    break
                starting = {m.ready_ref: m for m in self._pool if not m.ready}
                if not running and not starting:  # every worker died and could not be replaced
                    raise ZsadError("--ray: no Ray worker is left to score the remaining architectures")
                done, _ = ray.wait([*running, *starting], num_returns=1, timeout=10.0)
                if not done:
                    if not running and time.monotonic() - waiting_since > self.start_timeout:
                        raise ZsadError(f"--ray: no Ray worker started within {self.start_timeout:.0f} s "
                                        f"(does the cluster have a free CPU{' and GPU' if self.gpus_per_worker else ''}"
                                        " for each of them?)")
                    continue
                ref = done[0]
                if ref in starting:
                    member = starting[ref]
                    try:
                        member.info = ray.get(ref)
                        member.ready = True
                    except retryable as err:
                        if getattr(err, "actor_init_failed", False):  # an exception in _Worker.__init__
                            raise ZsadError(f"--ray: a Ray worker cannot start: {_last_line(err)}") from None
                        self._failed_starts += 1
                        self._drop(member)
                        if self._failed_starts > self.max_retries * self.workers:
                            raise ZsadError(f"--ray: Ray workers fail to start: {_first_line(err)}") from None
                        self._start()
                    except ray.exceptions.RayTaskError as err:  # an import or jax error on the worker
                        raise self._task_error(err) from None
                    waiting_since = time.monotonic()
                    continue
                task, member, number = running.pop(ref)
                member.running -= 1
                if member.running == 0:
                    member.alone = False
                try:
                    rows = ray.get(ref)
                except retryable:
                    waiting_since = time.monotonic()
                    if member in self._pool:  # its first lost task: replace it
                        self.stats["lost"] += 1
                        held = [number, *(n for r, (_, m, n) in running.items()
                                          if m is member and not self._ended(r))]
                        member.blamed = number if len(held) == 1 else None
                        self._drop(member)
                        self._start()
                    self.stats["retried"] += 1
                    attempts = task.attempts + (number == member.blamed)
                    for item in reversed(task.items):
                        if attempts > self.max_retries:
                            self.stats["failed"] += 1
                            yield self._gave_up(item, job)
                        else:
                            queue.appendleft(_Task([item], task.key, attempts, alone=True))
                    continue
                except ray.exceptions.RayTaskError as err:
                    raise self._task_error(err) from None
                yield from rows
            finished = True
        except (KeyboardInterrupt, GeneratorExit, ZsadError):
            raise
        except ray.exceptions.RayError as err:
            raise ZsadError(f"--ray: lost the Ray cluster: {_first_line(err)}") from None
        except ConnectionError as err:
            raise ZsadError(f"--ray: lost the Ray cluster: {_first_line(err)}") from None
        finally:
            if not finished:  # stopped early: drop the workers' queued work along with them
                for member in list(self._pool):
                    self._drop(member)

    def _task_error(self, err) -> ZsadError:
        cause = getattr(err, "cause", None)
        if isinstance(cause, ZsadError):
            return type(cause)(str(cause).replace("\n", " "))
        if cause is not None:
            return ZsadError(f"a Ray worker failed: {type(cause).__name__}: {_first_line(cause)}")
        return ZsadError(f"a Ray worker failed: {_first_line(err)}")


def ray_runner(address: str | None = None, *, workers: int | None = None, max_retries: int = 3,
               in_flight: int = 2, task_size: int = 16, gpus_per_worker: float | None = None,
               start_timeout: float = 300.0) -> RayRunner:
    """A runner for :func:`zsad.rank.rank_space` that scores on a Ray cluster.

    Args:
      address: the cluster: ``"auto"`` (the one ``ray start`` runs on this machine),
        ``"HOST:6379"``, ``"ray://HOST:10001"`` (Ray client); None (or ``"local"``) starts a
        local cluster from this process (stopped by :meth:`RayRunner.close`). If Ray is already
        initialized in this process, that cluster is used.
      workers: workers (actors) in the pool; default one per CPU of the cluster, or one per
        GPU when it has GPUs. For a local cluster it also sets the cluster's CPUs.
      max_retries: times an architecture is resubmitted after its worker died; past that
        it gets a ``failed`` row.
      in_flight: tasks queued per worker (one running, the others waiting).
      task_size: the most architectures in one task.
      gpus_per_worker: GPUs reserved by each worker (default: 1 if the cluster has GPUs, else 0;
        0 runs JAX on the CPU).
      start_timeout: seconds to wait for a worker to start while nothing else runs.

    Returns:
      a :class:`RayRunner`; pass it as ``runner=`` and close it when done.

    Raises:
      SpecError: Ray is not installed (``pip install 'zsad[ray]'``).
      ZsadError: the cluster cannot be started or reached (one line).
    """
    return RayRunner(address, workers=workers, max_retries=max_retries, in_flight=in_flight, task_size=task_size,
                     gpus_per_worker=gpus_per_worker, start_timeout=start_timeout)
