"""Scale-out ranking: several local devices (shard_map) and a Ray cluster (zsad.cluster).

Rows must not depend on where they are computed: the sharded run equals the
single-device run, and a Ray run (also one that loses a worker mid-run) writes
the same results file as a run in this process. One local Ray cluster with two
workers serves the whole module.
"""

import collections
import csv
import io
import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from zsad._errors import SpecError
from zsad.rank import RankOptions, rank_space
from zsad.space import load_space

from helpers import RELU_MLP_YAML, cpu_subprocess_env

BASE = RELU_MLP_YAML
# One structure, 10 architectures: over 4 devices, one call of 4 per device (the last 2 are padding),
# with ok rows on three of them, constant outputs (weight_std 0) and overflowing ones (1e15).
SHARDED = """\
base: base.yaml
choices:
  init.weight_std: [1.0, 0.0, 1.41, 1.0e+15, 2.0]
  init.bias_std: [0.0, 0.5]
"""
# Two structures x 10 x 3: 60 architectures.
SPACE60 = """\
base: base.yaml
choices:
  layers.1.fn: [relu, tanh]
  init.weight_std: [0.5, 0.8, 1.0, 1.2, 1.41, 1.6, 1.8, 2.0, 2.5, 3.0]
  init.bias_std: [0.0, 0.1, 0.3]
"""
FAST = RankOptions(seeds=2, batch=8, metrics=("nlc", "params"))


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster")
    (path / "base.yaml").write_text(BASE)
    (path / "sharded.yaml").write_text(SHARDED)
    (path / "space60.yaml").write_text(SPACE60)
    return path


# --------------------------------------------------------------------------- local devices

SHARD_SCRIPT = """\
import json, sys
import jax
jax.config.update("jax_numpy_rank_promotion", "raise")
from zsad.rank import RankOptions, rank_space
from zsad.space import load_space
assert len(jax.devices()) == 4, jax.devices()
space = load_space(sys.argv[1])
options = RankOptions(seeds=2, batch=8)  # every metric
one = rank_space(space, options, devices=jax.devices()[:1]).rows
four = rank_space(space, options).rows
print(json.dumps({"one": one, "four": four}))
"""


@pytest.mark.slow
def test_sharded_over_four_devices_equals_one_device(space_dir):
    proc = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, str(space_dir / "sharded.yaml")],
                          env=cpu_subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    one, four = result["one"], result["four"]
    assert [r["arch"] for r in one] == [r["arch"] for r in four]
    statuses = collections.Counter(r["status"] for r in one)
    assert statuses == {"ok": 6, "degenerate": 2, "diverged": 2}, statuses
    for a, b in zip(one, four):
        assert (a["status"], a["reason"], a["rank"]) == (b["status"], b["reason"], b["rank"]), a["arch"]
        for column, value in a.items():
            if isinstance(value, float):
                # equal up to float32 rounding: the chunked program (lax.map under shard_map) may round the
                # last bit differently (bit for bit here, jacob_cov included, whose near-singular
                # correlation matrix would amplify a difference)
                assert b[column] == pytest.approx(value, rel=1e-5), (a["arch"], column)
            else:
                assert b[column] == value, (a["arch"], column)


def test_devices_option_is_checked(space_dir):
    result = CliRunner().invoke(_cli(), ["rank", str(space_dir / "space60.yaml"), "--devices", "99"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --devices: expected 1 to ") and result.output.count("\n") == 1


def _cli():
    from zsad_cli.main import cli

    return cli


# --------------------------------------------------------------------------- Ray

def test_missing_ray_is_one_line(monkeypatch):
    from zsad.cluster import ray_runner

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SpecError, match=r"^--ray needs the optional extra: pip install 'zsad\[ray\]'$"):
        ray_runner()


@pytest.mark.slow
def test_unreachable_cluster_is_one_line_and_keeps_the_results(space_dir, tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("partial results\n")
    args = [sys.executable, "-c", "from zsad_cli.main import main; main()", "rank", str(space_dir / "space60.yaml"),
            "--out", str(out), "--resume", "--ray", "127.0.0.1:9"]
    proc = subprocess.run(args, env=cpu_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --ray: cannot connect to the Ray cluster at 127.0.0.1:9: ")
    assert proc.stderr.count("\n") == 1
    assert out.read_text() == "partial results\n"


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray")
    from zsad.cluster import ray_runner

    runner = ray_runner(workers=2, task_size=4)
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(scope="module")
def reference(space_dir, tmp_path_factory):
    """The 60-architecture space ranked in this process: the file every Ray run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "ref.csv"
    rank_space(load_space(space_dir / "space60.yaml"), FAST, out=out)
    return out.read_text()


def assert_same_results(text: str, reference: str) -> None:
    """The same rows, statuses, reasons, scores and ranks as the in-process file; float metrics equal to
    float32 rounding (a worker process may sum in another order: nlc_block, a difference of logarithms of
    prefix NLCs, shows it in its last digits)."""
    got, ref = list(csv.reader(io.StringIO(text))), list(csv.reader(io.StringIO(reference)))
    assert got[0] == ref[0] and len(got) == len(ref)
    for row, want in zip(got[1:], ref[1:]):
        for column, a, b in zip(ref[0], row, want):
            if column not in ("arch", "status", "reason", "rank") and a and b and ("." in b or "e" in b):
                assert float(a) == pytest.approx(float(b), rel=1e-5, abs=1e-6), (row[0], column)
            else:
                assert a == b, (row[0], column)


class Recorder:
    """Wraps a runner and counts the rows it yields (rank_space would drop a second copy silently)."""

    def __init__(self, runner):
        self.runner, self.seen = runner, collections.Counter()

    def __call__(self, chunks, job):
        for row in self.runner(chunks, job):
            self.seen[row["arch"]] += 1
            yield row


@pytest.mark.slow
def test_two_ray_workers_write_the_same_file(ray_cluster, reference, space_dir, tmp_path):
    out = tmp_path / "ray.csv"
    recorder = Recorder(ray_cluster)
    result = rank_space(load_space(space_dir / "space60.yaml"), FAST, out=out, runner=recorder)
    assert result.computed == 60 and len(result.rows) == 60
    assert set(recorder.seen.values()) == {1} and len(recorder.seen) == 60
    assert len({w["pid"] for w in ray_cluster.pool}) == 2  # both workers took part
    # relu and tanh: one shape signature (one program), so 60 architectures in 15 tasks of 4
    assert ray_cluster.stats["tasks"] == 15
    assert_same_results(out.read_text(), reference)
    assert json.loads((tmp_path / "ray.csv.meta.json").read_text())["complete"] is True


@pytest.mark.slow
def test_losing_a_worker_mid_run_loses_no_row(ray_cluster, reference, space_dir, tmp_path):
    out = tmp_path / "ray.csv"
    recorder = Recorder(ray_cluster)
    killed = []

    def kill_a_worker(row):
        if not killed:  # on the first row, while both workers hold queued tasks: SIGKILL one
            pid = ray_cluster.pool[-1]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = rank_space(load_space(space_dir / "space60.yaml"), FAST, out=out, runner=recorder,
                        on_row=kill_a_worker)
    assert killed and killed[0] not in {w["pid"] for w in ray_cluster.pool}
    assert ray_cluster.stats["lost"] == 1 and ray_cluster.stats["retried"] >= 1, ray_cluster.stats
    assert ray_cluster.stats["failed"] == 0
    assert result.computed == 60
    assert set(recorder.seen.values()) == {1} and len(recorder.seen) == 60
    assert_same_results(out.read_text(), reference)


@pytest.mark.slow
def test_resume_over_ray(ray_cluster, reference, space_dir, tmp_path):
    """A file cut short (an interrupted run) is completed over Ray into the same file."""
    out = tmp_path / "ray.csv"
    space = load_space(space_dir / "space60.yaml")
    rank_space(space, FAST, out=out, runner=ray_cluster)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:25]))  # header + 24 rows survive
    result = rank_space(space, FAST, out=out, resume=True, runner=ray_cluster)
    assert (result.resumed, result.computed) == (24, 36)
    assert_same_results(out.read_text(), reference)


@pytest.mark.slow
def test_workers_follow_the_drivers_x64_mode(ray_cluster, space_dir, x64):
    """--x64 on the driver: the (already running) workers compute in float64 too."""
    (space_dir / "two.yaml").write_text("base: base.yaml\nchoices:\n  init.weight_std: [1.0, 2.0]\n")
    space = load_space(space_dir / "two.yaml")
    here = rank_space(space, FAST).rows
    there = rank_space(space, FAST, runner=ray_cluster).rows
    assert there == here
    assert any(len(repr(r["nlc"])) > 12 for r in here)  # float64 digits, not float32's shortest repr


@pytest.mark.slow
def test_an_architecture_that_kills_its_worker_fails_alone(ray_cluster, space_dir, monkeypatch):
    """A worker that dies on every attempt at one architecture: a failed row for it, the others ok."""
    # a flax entry point that ends any process but this one: every Ray worker that builds it dies
    (space_dir / "poison_model.py").write_text(
        f"import os\n\n\ndef factory():\n    if os.getpid() != {os.getpid()}:\n        os._exit(1)\n"
        "    raise RuntimeError('not here')\n")
    mlp = "input: {shape: [8]}, init: {weight_std: 1.41}, layers: [{type: dense, features: 16}, " \
          "{type: activation, fn: relu}, {type: dense, features: 16}, {type: activation, fn: relu}, " \
          "{type: dense, features: 4}]"
    (space_dir / "poison.yaml").write_text(
        f"archs:\n  - {{name: a, {mlp}}}\n  - {{name: poison, input: {{shape: [8]}}, module: 'poison_model:factory'}}\n"
        f"  - {{name: b, {mlp}}}\n")
    monkeypatch.setattr(ray_cluster, "max_retries", 1)
    # one task per worker: every death is pinned on its task (a worker that dies holding two cannot say which
    # it was running, since the reply of a finished one may die with it, and charges neither)
    monkeypatch.setattr(ray_cluster, "in_flight", 1)
    rows = {r["arch"]: r for r in rank_space(load_space(space_dir / "poison.yaml"), FAST, runner=ray_cluster).rows}
    assert rows["poison"]["status"] == "failed" and rows["poison"]["nlc"] is None
    assert rows["poison"]["reason"] == "its Ray worker died each of the 2 times it was scored (out of memory?)"
    assert rows["a"]["status"] == rows["b"]["status"] == "ok"
    assert ray_cluster.stats["lost"] == 2 and ray_cluster.stats["failed"] == 1, ray_cluster.stats


def test_cli_passes_ray_options(reference, space_dir, tmp_path, monkeypatch):
    """``zsad rank ... --ray [ADDRESS] --workers N`` hands both to ray_runner and closes the runner."""
    import zsad.cluster

    calls = []

    class Local:  # scores in this process, as the default runner does
        def __init__(self, address, *, workers):
            calls.append((address, workers))

        def __call__(self, chunks, job):
            scorer = job.scorer()
            return (row for chunk in chunks for row in scorer.rows(chunk))

        def close(self):
            calls.append("closed")

    monkeypatch.setattr(zsad.cluster, "ray_runner", Local)
    common = [str(space_dir / "space60.yaml"), "--seeds", "2", "--batch", "8", "--metrics", "nlc,params"]
    for extra, expected in ((["--ray"], ("local", None)), (["--ray", "auto", "--workers", "3"], ("auto", 3))):
        out = tmp_path / f"{len(calls)}.csv"
        result = CliRunner().invoke(_cli(), ["rank", *common, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        assert calls[-2:] == [expected, "closed"]
        assert_same_results(out.read_text(), reference)
    result = CliRunner().invoke(_cli(), ["rank", *common, "--workers", "2"])
    assert result.exit_code == 2 and result.output == "error: --workers: applies to a Ray cluster; add --ray\n"
