"""Files and runs that must not lose work: output paths checked first, FLOPs per architecture (resume
byte-identical across a structure group), the lock on FILE.lock, the resume command, Ctrl-C."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import pytest

import zsad
from zsad import _files
from zsad import rank as rank_mod
from zsad import programs as programs_mod
from zsad import scorer as scorer_mod
from zsad._errors import SpecError
from zsad.arch.build import build
from zsad.rank import RankInterrupted, RankOptions, rank_space
from zsad.results import ResultsFile, meta_path
from zsad.space import load_space

from helpers import RELU_MLP_YAML, cpu_subprocess_env, interrupt_after, interrupt_scoring_at, run_cli

run = run_cli
# Four architectures of one shape signature: the activation is chosen by a traced index in one program.
GROUP = "base: base.yaml\nchoices:\n  layers.1.fn: [tanh, relu]\n  init.weight_std: [1.0, 2.0]\n"
SMALL = "base: base.yaml\nchoices:\n  init.weight_std: [0.5, 1.0, 1.41, 2.0]\n"
FAST = RankOptions(seeds=2, batch=8, metrics=("nlc", "params", "flops"))


@pytest.fixture
def space_dir(tmp_path, cli_env):
    (tmp_path / "base.yaml").write_text(RELU_MLP_YAML)
    (tmp_path / "group.yaml").write_text(GROUP)
    (tmp_path / "small.yaml").write_text(SMALL)
    return tmp_path


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[0]


# --------------------------------------------------------------------------- output paths, before any work

def test_output_paths_are_checked_before_computing(space_dir, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("computed before the output path was checked")

    monkeypatch.setattr(zsad, "score_architecture", never)
    monkeypatch.setattr(rank_mod, "_rank_space", never)
    arch = space_dir / "base.yaml"
    for option, path, expected in (
            ("--out", space_dir / "no" / "r.json", "--out: expected a file in an existing folder; got"),
            ("--plot", space_dir / "no" / "p.png", "--plot: expected a file in an existing folder; got"),
            ("--out", space_dir, "--out: expected a file; got a folder")):
        result = run("score", arch, option, path)
        assert result.exit_code == 2 and expected in one_error_line(result)
    result = run("rank", space_dir / "small.yaml", "--out", space_dir / "no" / "r.csv")
    assert result.exit_code == 2 and "r.csv: --out: expected a file in an existing folder" in one_error_line(result)
    assert not (space_dir / "no").exists()  # a missing folder is an error, not created


def test_a_folder_that_takes_no_file_is_refused(space_dir, monkeypatch):
    """Permission bits say nothing as root: the check creates (and removes) a file beside the output."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_files.tempfile, "mkstemp", refuse)
    with pytest.raises(SpecError, match=r"r\.csv: --out: expected a folder that takes new files; got .*Permission"):
        _files.check_writable(space_dir / "r.csv", "--out")


def test_a_write_that_fails_at_the_end_keeps_the_report(space_dir, monkeypatch):
    folder = space_dir / "gone"
    folder.mkdir()
    real = zsad.score_architecture

    def score_then_lose_the_folder(*args, **kwargs):
        report = real(*args, **kwargs)
        folder.rmdir()
        return report

    monkeypatch.setattr(zsad, "score_architecture", score_then_lose_the_folder)
    result = run("score", space_dir / "base.yaml", "--seeds", 2, "--batch", 16, "--no-spectrum", "--json",
                 "--out", folder / "r.json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["name"] == "relu"  # the report is on stdout
    assert "r.json: --out: could not write the report" in one_error_line(result)


# --------------------------------------------------------------------------- FLOPs per architecture

def test_flops_are_each_architectures_own_and_resume_is_byte_identical_across_a_group(space_dir):
    space = load_space(space_dir / "group.yaml")
    straight = space_dir / "straight.csv"
    first = rank_space(space, FAST, out=straight)
    for item, row in zip(space, first.rows):
        assert row["flops"] == programs_mod.xla_flops(build(item.arch), jnp.result_type(float)), item.id
    assert len({r["flops"] for r in first.rows}) == 2  # tanh and relu differ
    for done in (1, 3):  # the rest of the group alone: one activation, a program without a choice
        out = space_dir / f"r{done}.csv"
        on_row, _ = interrupt_after(done)
        with pytest.raises(RankInterrupted):
            rank_space(space, FAST, out=out, on_row=on_row)
        scorer_mod._FLOPS_CACHE.clear()
        programs_mod.PROGRAM_CACHE.clear()
        result = rank_space(space, FAST, out=out, resume=True)
        assert result.resumed == done and result.computed == 4 - done
        assert out.read_bytes() == straight.read_bytes()


# --------------------------------------------------------------------------- the lock

HOLDER = """\
import fcntl, os, sys, time
fd = os.open(sys.argv[1] + ".lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_run_on_the_same_file_fails_at_once(space_dir):
    out = space_dir / "r.csv"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        for extra in ((), ("--overwrite",)):
            result = run("rank", space_dir / "small.yaml", "--batch", 8, "--metrics", "params", "--by", "params",
                         "--out", out, *extra)
            assert result.exit_code == 2
            assert "r.csv: --out: expected a results file no other run is using" in one_error_line(result)
        assert time.perf_counter() - t0 < 30 and not out.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    result = run("rank", space_dir / "small.yaml", "--batch", 8, "--metrics", "params", "--by", "params", "--out", out)
    assert result.exit_code == 0, result.output
    leftovers = [p.name for p in space_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_the_lock_excludes_within_a_process_too_and_is_released(space_dir):
    out = space_dir / "r.csv"
    with _files.FileLock(out):
        with pytest.raises(SpecError, match="locked by another run"):
            rank_space(load_space(space_dir / "small.yaml"), RankOptions(batch=8, metrics=("params",)), out=out,
                       by="params")
    rank_space(load_space(space_dir / "small.yaml"), RankOptions(batch=8, metrics=("params",)), out=out, by="params")
    with _files.FileLock(out):  # released after the run
        pass


def test_concurrent_atomic_writes_use_unique_temporary_names(tmp_path):
    path = tmp_path / "f.txt"
    errors = []

    def writer(tag):
        try:
            for i in range(100):
                _files.atomic_write(path, f"{tag} {i}\n" * 50)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(path.read_text().splitlines())) == 1  # one writer's whole file, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# --------------------------------------------------------------------------- resume options

def test_resume_needs_out_and_excludes_overwrite(space_dir):
    for args, expected in ((("--resume",), "--resume: expected --out FILE"),
                           (("--resume", "--overwrite", "--out", space_dir / "r.csv"),
                            "--resume, --overwrite: expected one of them")):
        result = run("rank", space_dir / "small.yaml", *args)
        assert result.exit_code == 2 and expected in one_error_line(result)
    with pytest.raises(SpecError, match="--resume: expected --out"):
        rank_space(load_space(space_dir / "small.yaml"), FAST, resume=True)


def test_interrupt_prints_the_full_resume_command_and_a_mismatch_names_every_option(space_dir, monkeypatch):
    out = space_dir / "r.csv"
    args = ["rank", str(space_dir / "small.yaml"), "--seeds", "3", "--batch", "8", "--metrics", "nlc,params",
            "--by", "nlc", "--top", "2", "--out", str(out)]
    straight = space_dir / "straight.csv"
    assert run(*args[:-1], straight).exit_code == 0
    original = interrupt_scoring_at(monkeypatch, 3)
    result = run(*args, "--overwrite")
    assert result.exit_code == 130
    line = one_error_line(result)
    command = shlex.split(line.split("Continue with: ", 1)[1])
    assert command[:2] == ["zsad", "rank"] and "--overwrite" not in command and command[-1] == "--resume"
    for a, b in zip(args[2::2], args[3::2]):
        assert command[command.index(a) + 1] == b
    monkeypatch.setattr(rank_mod.Scorer, "row", original)
    result = run(*command[1:])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == straight.read_bytes()
    result = run("rank", space_dir / "small.yaml", "--seeds", 2, "--batch", 16, "--metrics", "nlc,params",
                 "--out", out, "--resume")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "(seeds = 3, now 2; batch = 8, now 16)" in line and "--seeds 3 --batch 8" in line


# --------------------------------------------------------------------------- Ctrl-C

SIGINT_SPACE = ("base: base.yaml\nchoices:\n  layers.0.features: [16, 24, 32]\n  layers.1.fn: [tanh, relu]\n"
                "  init.weight_std: [0.5, 1.0, 2.0]\n")


def valid_results(out) -> list[list[str]]:
    """Rows of a results file that must be whole: a header, complete rows and valid metadata."""
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0][:3] == ["arch", "status", "reason"] and all(len(r) == len(rows[0]) for r in rows)
    json.loads(meta_path(out).read_text())
    return rows


def test_sigint_at_random_moments_stops_cleanly_with_a_valid_file(space_dir):
    """SIGINT at random moments of real runs: exit 130 with a valid file (or 0 when the run was done),
    never a swallowed interrupt that lets the run finish with 0; the printed command continues it."""
    (space_dir / "space.yaml").write_text(SIGINT_SPACE)
    env = cpu_subprocess_env(ZSAD_CACHE_DIR=str(space_dir / "cache"))
    zsad_cmd = [sys.executable, "-m", "zsad_cli.main"]
    base = ["rank", "space.yaml", "--batch", "8", "--seeds", "2", "--metrics", "nlc,params,naswot"]
    times = []
    for _ in range(2):  # the second run, compiled programs in the cache, sets the time scale
        t0 = time.perf_counter()
        subprocess.run([*zsad_cmd, *base, "--out", "straight.csv", "--overwrite"], cwd=space_dir, env=env,
                       check=True, capture_output=True, timeout=300)
        times.append(time.perf_counter() - t0)
    seconds = times[1]
    straight = (space_dir / "straight.csv").read_bytes()
    rng = random.Random(20)
    codes = []
    for trial in range(4):
        out = space_dir / f"r{trial}.csv"
        proc = subprocess.Popen([*zsad_cmd, *base, "--out", out.name], cwd=space_dir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.5, 0.8 * seconds)  # after the interpreter's own start-up
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        codes.append(proc.returncode)
        assert "Traceback" not in stderr, (delay, stderr)
        if proc.returncode == 0:  # the run ended before the signal
            assert out.read_bytes() == straight and "top " in stdout
            continue
        assert proc.returncode == 130, (delay, proc.returncode, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "interrupted" in lines[0], (delay, stderr)
        if not out.exists():  # interrupted before the file was started
            continue
        valid_results(out)
        if "Continue with: " in lines[0]:
            command = shlex.split(lines[0].split("Continue with: ", 1)[1])
            done = subprocess.run([*zsad_cmd, *command[1:]], cwd=space_dir, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            assert out.read_bytes() == straight
    assert codes.count(130) >= 1, (codes, seconds)  # at least one run was interrupted mid-way


def test_a_final_rewrite_that_fails_keeps_the_rows_and_says_so(space_dir, monkeypatch):
    """The last rewrite of a rank results file fails (disk full, say): one line, exit 1, and the rows
    appended so far are in the file, so --resume finishes it."""
    out = space_dir / "full.csv"

    def no_space(self, rows):
        self.close()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultsFile, "finish", no_space)
    result = run_cli("rank", space_dir / "small.yaml", "--batch", 8, "--seeds", 1, "--metrics", "nlc,params",
                     "--out", out)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert "could not write the final results (No space left on device)" in line and "--resume" in line
    assert len(out.read_text().strip().splitlines()) > 1  # the appended rows are kept
    monkeypatch.undo()
    done = run_cli("rank", space_dir / "small.yaml", "--batch", 8, "--seeds", 1, "--metrics", "nlc,params",
                   "--out", out, "--resume")
    assert done.exit_code == 0, done.output
