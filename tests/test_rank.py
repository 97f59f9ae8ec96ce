"""Ranking a search space: metrics, statuses, ranking, resumable results files, and the ``rank`` command.

Every space here has one network structure (choices over scalars only), so the
whole file compiles few programs; runs in one process share them.
"""

import collections
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zsad.spaces import nasbench201 as nb
from zsad import rank as rank_mod
from zsad import programs as programs_mod
from zsad import scorer as scorer_mod
from zsad.measure import all_finite
from zsad._errors import SpecError
from zsad.rank import RankInterrupted, rank_space
from zsad.ranking import DIRECTION, INGREDIENTS, METRICS, RankOptions, columns
from zsad.results import meta_path
from zsad.space import load_space

from helpers import (
    RELU_MLP_YAML, assert_same_rows, cpu_subprocess_env, interrupt_after, interrupt_scoring_at, run_cli,
)

BASE = RELU_MLP_YAML
# One structure: ok (1.0, 1.41), constant output (0.0), overflow in float32 (1e15 over three layers).
SPACE = "base: base.yaml\nchoices:\n  init.weight_std: [1.0, 1.41, 0.0, 1.0e+15]\n"
SMALL = "base: base.yaml\nchoices:\n  init.weight_std: [0.5, 1.0, 1.41, 2.0]\n"
FAST = RankOptions(seeds=2, batch=8, metrics=("nlc", "params"))

DEGENERATE = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
MIXED = "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture
def space_dir(tmp_path, cli_env):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "small.yaml").write_text(SMALL)
    return tmp_path


def by_arch(rows):
    return {r["arch"]: r for r in rows}


# --------------------------------------------------------------------------- metrics and statuses

def test_every_metric_through_a_padded_max_pool(tmp_path):
    """A CNN with a padded, strided max pool gets every metric (synflow's float64 passes through the
    pool's derivative: zsad.canonical.window_max)."""
    (tmp_path / "cnn.yaml").write_text(textwrap.dedent("""\
        name: pooled
        input: {shape: [6, 6, 2]}
        layers:
          - {type: conv, features: 3, kernel: 3, padding: same}
          - {type: activation, fn: relu}
          - {type: max_pool, window: 3, stride: 2, padding: same}
          - {type: flatten}
          - {type: dense, features: 4}
        """))
    (tmp_path / "space.yaml").write_text("archs: [cnn.yaml]\n")
    row, = rank_space(load_space(tmp_path / "space.yaml"), RankOptions(seeds=1, batch=8)).rows
    assert row["status"] == "ok", row["reason"]
    for column in METRICS:
        assert row[column] is not None and math.isfinite(row[column]), column


def test_every_proxy_column_and_statuses(space_dir):
    options = RankOptions(seeds=2, batch=8)
    programs_mod.PROGRAM_CACHE.clear()  # below, the programs of this run alone are counted
    result = rank_space(load_space(space_dir / "space.yaml"), options, out=space_dir / "r.csv")
    assert result.columns == ["arch", "status", "reason", "nlc", "nlc_std", "nlc_block", "sigma2", "params", "flops",
                              "naswot",
                              "synflow", "grad_norm", "snip", "jacob_cov", "score", "rank"]
    ok, std1, constant, overflow = result.rows  # the space's order
    assert [ok["arch"], std1["arch"], constant["arch"]] == [
        "relu[init.weight_std=1.0]", "relu[init.weight_std=1.41]", "relu[init.weight_std=0.0]"]
    for row in (ok, std1):
        assert row["status"] == "ok"
        for column in ("nlc", "nlc_std", "nlc_block", "sigma2", "params", "flops", "synflow", "grad_norm", "snip",
                       "jacob_cov"):
            assert row[column] is not None and math.isfinite(row[column]), column
        assert row["naswot"] is not None or "naswot: undefined" in row["reason"]
    assert ok["params"] == 8 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4
    assert ok["nlc"] == pytest.approx(std1["nlc"], rel=1e-5)  # ReLU: NLC independent of the scale
    assert std1["synflow"] > ok["synflow"]  # synflow grows with the weights' scale
    # ReLU: sigma2 scales as weight_std^2 per dense layer of the hidden segment (one here: layers 1..3)
    assert std1["sigma2"] / ok["sigma2"] == pytest.approx(1.41 ** 2, rel=1e-4)
    assert constant["status"] == "degenerate" and "constant" in constant["reason"]
    assert overflow["status"] == "diverged" and "non-finite" in overflow["reason"]
    for row in (constant, overflow):
        assert all(row[c] is None for c in ("nlc", "sigma2", "naswot", "synflow", "grad_norm", "snip", "jacob_cov",
                                            "score"))
        assert row["params"] == ok["params"]
        assert row["rank"] in (3, 4)  # ranked last
    # one compiled program for the four architectures (they differ only in weight_std)
    programs = [p for k, p in programs_mod.PROGRAM_CACHE.items() if k[1] == options.metrics and k[3] == 8]
    assert len(programs) == 1 and programs[0].fn._cache_size() == 1
    # directions documented in the metadata
    meta = json.loads(meta_path(space_dir / "r.csv").read_text())
    assert meta["complete"] is True
    assert {c: meta["columns"][c]["direction"] for c in ("nlc", "nlc_std", "sigma2", "params", "naswot")} == {
        "nlc": "band", "nlc_std": "lower", "sigma2": "near 1", "params": "higher", "naswot": "higher"}
    assert "score_selection" in meta["score"]["formula"] and meta["score"]["candidate"] in meta["score"]["formula"]
    assert set(meta["score"]["ingredients"]) <= set(INGREDIENTS)


def test_failed_architecture_gets_a_row(tmp_path):
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        archs:
          - {name: good, input: {shape: [4]}, layers: [{type: dense, features: 2}]}
          - {name: missing, input: {shape: [4]}, module: "no_such_pkg.models:make"}
        """))
    result = rank_space(load_space(tmp_path / "s.yaml"), RankOptions(batch=4, metrics=("params",)), by="params")
    rows = by_arch(result.rows)
    assert rows["good"]["status"] == "ok" and rows["good"]["params"] == 10 and rows["good"]["rank"] == 1
    assert rows["missing"]["status"] == "failed" and "cannot import 'no_such_pkg.models'" in rows["missing"]["reason"]
    assert rows["missing"]["rank"] == 2


def test_nb201_counts_and_degenerate_without_compiling(tmp_path):
    (tmp_path / "n.yaml").write_text(f"space: nas-bench-201\narchs: ['{MIXED}', '{DEGENERATE}']\n")
    result = rank_space(load_space(tmp_path / "n.yaml"), RankOptions(batch=4, metrics=("params", "flops")),
                        by="params,flops")
    rows = by_arch(result.rows)
    assert rows[MIXED]["params"] == nb.param_count(MIXED) and rows[MIXED]["flops"] == nb.flops(MIXED)
    assert rows[DEGENERATE]["status"] == "degenerate" and "unreachable" in rows[DEGENERATE]["reason"]
    assert rows[DEGENERATE]["score"] is None and rows[DEGENERATE]["rank"] == 2


def test_stream_groups_by_structure_and_keeps_the_space_order(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_mod, "_CHUNK", 3)
    archs = "".join(f"  - {{name: a{i}, input: {{shape: [4]}}, layers: [{{type: dense, features: {2 + i % 2}}}]}}\n"
                    for i in range(5))
    (tmp_path / "s.yaml").write_text("archs:\n" + archs)
    computed = []
    result = rank_space(load_space(tmp_path / "s.yaml"), RankOptions(batch=4, metrics=("params",)), by="params",
                        on_row=lambda r: computed.append(r["arch"]))
    assert computed == ["a0", "a2", "a1", "a3", "a4"]  # chunks of 3, grouped by structure within
    assert [r["arch"] for r in result.rows] == ["a0", "a1", "a2", "a3", "a4"]
    assert [r["rank"] for r in result.rows] == [3, 1, 4, 2, 5]


@pytest.mark.skipif(not os.environ.get("ZSAD_SLOW_TESTS"), reason="compiles the NAS-Bench-201 program (~1 min on CPU)")
def test_nb201_nlc_with_the_masked_program(tmp_path):
    all_3x3 = nb.format_arch(("nor_conv_3x3",) * 6)
    (tmp_path / "n.yaml").write_text(f"space: nas-bench-201\narchs: ['{MIXED}', '{DEGENERATE}', '{all_3x3}']\n")
    options = RankOptions(seeds=1, batch=4, metrics=("nlc", "params"))
    result = rank_space(load_space(tmp_path / "n.yaml"), options)
    rows = result.rows
    assert rows[0]["status"] == rows[2]["status"] == "ok" and rows[0]["nlc"] > 1.0
    assert rows[1]["status"] == "degenerate" and rows[1]["rank"] == 3
    # one program for both computed cells (other tests may have cached NAS-Bench-201 programs of other options)
    programs = [p for k, p in programs_mod.PROGRAM_CACHE.items()
                if k[0] == ("nb201",) and k[1] == options.metrics and k[3] == options.batch]
    assert len(programs) == 1 and programs[0].fn._cache_size() == 1


# --------------------------------------------------------------------------- ranking

def test_directions_cover_every_column_and_cli_help():
    from zsad_cli.rank import METRICS_HELP

    for column in columns(METRICS)[3:-1]:
        assert DIRECTION[column] in ("higher", "lower", "band", "near 1")
    for metric in METRICS:
        assert f"{metric} ({DIRECTION[metric]}" in METRICS_HELP.replace("band:", "band").replace("near 1:", "near 1")


def test_bad_by_and_metrics(space_dir):
    space = load_space(space_dir / "small.yaml")
    with pytest.raises(SpecError, match="--by: expected score or computed metrics .*got 'naswot'"):
        rank_space(space, FAST, by="naswot")
    with pytest.raises(SpecError, match="the default score needs at least one of nlc, sigma2, flops"):
        rank_space(space, RankOptions(metrics=("params",)))
    with pytest.raises(SpecError, match="metrics: expected names among .*got 'nlcc'; did you mean 'nlc'"):
        RankOptions(metrics=("nlcc",))


# --------------------------------------------------------------------------- results files and resume

@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_resume_after_interrupt_is_byte_identical(space_dir, ext):
    space = load_space(space_dir / "small.yaml")
    straight = space_dir / f"straight.{ext}"
    rank_space(space, FAST, out=straight)
    out = space_dir / f"r.{ext}"
    on_row, seen = interrupt_after(2)
    with pytest.raises(RankInterrupted) as stop:
        rank_space(space, FAST, out=out, on_row=on_row)
    assert stop.value.done == 2 and stop.value.total == 4
    text = out.read_text()
    lines = text.splitlines()
    assert len(lines) == 2 + (ext == "csv") and text.endswith("\n")  # a valid file with the finished rows
    assert json.loads(meta_path(out).read_text())["complete"] is False
    computed = []
    result = rank_space(space, FAST, out=out, resume=True, on_row=lambda r: computed.append(r["arch"]))
    assert result.resumed == 2 and result.computed == 2
    assert sorted(computed + seen) == sorted(i.id for i in space)  # nothing recomputed, nothing skipped
    assert out.read_bytes() == straight.read_bytes()
    assert meta_path(out).read_bytes() == meta_path(straight).read_bytes()
    # resuming a finished file computes nothing and changes nothing
    again = rank_space(space, FAST, out=out, resume=True)
    assert again.computed == 0 and out.read_bytes() == straight.read_bytes()


def test_resume_after_truncation(space_dir):
    space = load_space(space_dir / "small.yaml")
    out = space_dir / "r.csv"
    first = rank_space(space, FAST, out=out)
    full = out.read_bytes()
    lines = full.decode().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:10])  # header, two rows, a torn third row
    result = rank_space(space, FAST, out=out, resume=True)
    assert result.resumed == 2 and result.computed == 2
    assert out.read_bytes() == full
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and len({r["arch"] for r in rows}) == 4
    assert [int(r["rank"]) for r in rows] == [r["rank"] for r in first.rows]


def test_resume_refuses_another_space_or_options(space_dir):
    out = space_dir / "r.csv"
    rank_space(load_space(space_dir / "small.yaml"), FAST, out=out)
    before = out.read_bytes(), meta_path(out).read_bytes()
    (space_dir / "other.yaml").write_text(SMALL.replace("2.0]", "3.0]"))
    with pytest.raises(SpecError, match="r.csv: --resume: the file holds results of a different search space"):
        rank_space(load_space(space_dir / "other.yaml"), FAST, out=out, resume=True)
    with pytest.raises(SpecError, match=r"--resume: the file was computed with other options \(seeds = 2, now 3\)"):
        rank_space(load_space(space_dir / "small.yaml"), RankOptions(seeds=3, batch=8, metrics=("nlc", "params")),
                   out=out, resume=True)
    with pytest.raises(SpecError, match="the results file exists; pass --resume"):
        rank_space(load_space(space_dir / "small.yaml"), FAST, out=out)
    assert (out.read_bytes(), meta_path(out).read_bytes()) == before  # nothing lost


def test_unsupported_outputs(space_dir):
    space = load_space(space_dir / "small.yaml")
    with pytest.raises(SpecError, match=r"expected a results file ending in \.csv, \.jsonl or \.parquet"):
        rank_space(space, FAST, out=space_dir / "r.txt")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(SpecError, match="r.parquet: writing Parquet needs pyarrow"):
            rank_space(space, FAST, out=space_dir / "r.parquet")
        assert not (space_dir / "r.parquet").exists()


# --------------------------------------------------------------------------- the command

run = run_cli


def test_cli_rank_table_json_and_file(space_dir):
    out = space_dir / "r.jsonl"
    args = ("rank", space_dir / "small.yaml", "--seeds", 2, "--batch", 8, "--metrics", "nlc,params")
    result = run(*args, "--out", out, "--top", 3)
    assert result.exit_code == 0, result.output
    assert "top 3 of 4" in result.stdout and "relu[init.weight_std=0.5]" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [list(r) for r in rows[:1]] == [["arch", "status", "reason", "nlc", "nlc_std", "nlc_block", "params", "score", "rank"]]
    result = run(*args, "--by", "nlc_std", "--top", 2, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["rows"]) == 2 and doc["rows"][0]["rank"] == 1 and doc["meta"]["score"]["by"] == ["nlc_std"]
    assert doc["rows"][0]["nlc_std"] <= doc["rows"][1]["nlc_std"]


def test_cli_interrupt_prints_how_to_resume(space_dir, monkeypatch):
    interrupt_scoring_at(monkeypatch, 2)
    out = space_dir / "r.csv"
    result = run("rank", space_dir / "small.yaml", "--batch", 8, "--metrics", "nlc,params", "--out", out)
    assert result.exit_code == 130
    assert "interrupted after 1 architecture(s)" in result.stderr and "--resume" in result.stderr
    assert len(out.read_text().splitlines()) == 2


BAD = {
    "unknown-op": ("space: nas-bench-201\narchs: ['|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|']\n",
                   "archs.0: architecture"),
    "malformed-arch": ("space: nas-bench-201\narchs: ['|none~0|+|none~0|']\n", "expected 3 nodes"),
    "missing-field": ("base: base.yaml\nchoices:\n  layers.1.fnn: [relu]\n", "choices.layers.1.fnn: expected a field"),
    "sample-too-large": ("base: base.yaml\nchoices:\n  layers.1.fn: [relu, tanh]\nsample: 5\n",
                         "sample: expected at most 2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_bad_input_one_line_exit_2(space_dir, case):
    text, expected = BAD[case]
    path = space_dir / "bad.yaml"
    path.write_text(text)
    result = run("rank", path, "--out", space_dir / "r.csv")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output and not (space_dir / "r.csv").exists()


def test_cli_resume_of_another_space_keeps_the_file(space_dir):
    out = space_dir / "r.csv"
    out.write_text("arch,status\n")
    meta_path(out).write_text(json.dumps({"space": {"fingerprint": "0" * 64, "name": "other"}, "options": {}}))
    before = out.read_bytes()
    result = run("rank", space_dir / "small.yaml", "--metrics", "params", "--by", "params", "--out", out, "--resume")
    assert result.exit_code == 2 and "different search space" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and out.read_bytes() == before
    result = run("rank", space_dir / "small.yaml", "--out", space_dir / "r.parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert result.exit_code == 2 and "needs pyarrow" in result.stderr


# --------------------------------------------------------------------------- LAPACK calls on a small CPU pool

HANG_SPACE = """\
base: {name: mlp, input: {shape: [64]}, init: {weight_std: 1.0, bias_std: 0.1},
       layers: [{type: block, repeat: 4, layers: [{type: dense, features: 128}, {type: activation, fn: tanh}]},
                {type: dense, features: 10}]}
choices:
  init.weight_std: [0.5, 1.0, 2.0]
"""
HANG_SCRIPT = """\
import sys
from zsad import rank
from zsad.space import load_space


class Vmapped(rank.Scorer):  # seeds vmapped, as on accelerators: each LAPACK call is batched
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batched = True


rank.Scorer = Vmapped
metrics = ("params", "naswot", "synflow", "grad_norm", "snip", "jacob_cov")
r = rank.rank_space(load_space(sys.argv[1]), rank.RankOptions(seeds=2, batch=64, metrics=metrics), by="params")
print(",".join(row["status"] for row in r.rows))
"""


def test_batched_eigendecompositions_do_not_deadlock_two_cpu_threads(tmp_path):
    """With NASWOT's determinant from an LU beside its eigendecomposition, this program (2 seeds,
    so each LAPACK call is batched) hung on a two-core machine every time: XLA:CPU ran two batched
    kernels at once and each waited for pool threads held by the other. NASWOT now makes one
    call and jacob_cov's waits for it. Run on two host threads whatever this machine has."""
    (tmp_path / "space.yaml").write_text(HANG_SPACE)
    # taskset pins the process (and so XLA's pool of one thread per core) to two cores
    prefix = ["taskset", "-c", "0,1"] if os.cpu_count() > 2 and shutil.which("taskset") else []
    proc = subprocess.run([*prefix, sys.executable, "-c", HANG_SCRIPT, str(tmp_path / "space.yaml")],
                          env=cpu_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok,ok,ok"


def test_naswot_makes_one_lapack_call():
    import jax
    import jax.numpy as jnp

    from zsad import naswot as naswot_mod

    codes = jnp.zeros((2, 8, 16), bool)  # two seeds: the batched case
    hlo = jax.jit(jax.vmap(naswot_mod.naswot)).lower(codes).as_text()
    calls = [line for line in hlo.splitlines() if "custom_call" in line and "lapack" in line]
    assert len(calls) == 1 and "syevd" in calls[0], calls


def test_seeds_mapped_or_vmapped_give_the_same_rows(tmp_path, monkeypatch):
    """On the CPU the seeds run one after another (lax.map: plain convolutions); on accelerators they
    are vmapped. Both are the same computation: every metric of a small CNN agrees to rounding."""
    cnn = textwrap.dedent("""\
        name: cnn
        input: {shape: [8, 8, 3]}
        init: {weight_std: 1.41}
        layers:
          - {type: conv, features: 4, kernel: 3}
          - {type: activation, fn: relu}
          - {type: conv, features: 4, kernel: 3, stride: 2}
          - {type: activation, fn: tanh}
          - {type: flatten}
          - {type: dense, features: 3}
        """)
    (tmp_path / "cnn.yaml").write_text(cnn)
    (tmp_path / "space.yaml").write_text("archs: [cnn.yaml]\n")
    space = load_space(tmp_path / "space.yaml")
    options = RankOptions(seeds=3, batch=8)
    mapped = rank_space(space, options).rows[0]
    real_scorer = rank_mod.Scorer

    class Vmapped(real_scorer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batched = True  # the accelerator program, on the CPU

    monkeypatch.setattr(rank_mod, "Scorer", Vmapped)
    programs_mod.PROGRAM_CACHE.clear()
    vmapped = rank_space(space, options).rows[0]
    assert mapped["status"] == vmapped["status"] == "ok"
    assert_same_rows([mapped], [vmapped], rel=1e-4, abs=1e-6)


# --------------------------------------------------------------------------- sigma2 (Jacobian scale)

def _one_arch_space(tmp_path, text):
    (tmp_path / "a.yaml").write_text(textwrap.dedent(text))
    (tmp_path / "space.yaml").write_text("archs: [a.yaml]\n")
    return load_space(tmp_path / "space.yaml")


def test_sigma2_of_an_orthogonal_linear_segment_is_one(tmp_path):
    # hidden segment = layers 1..3 (identity, dense, identity): an orthogonal 16 x 16 map, every
    # singular value 1, so every Rademacher probe gives ||Jz||^2 / r = 1 exactly.
    space = _one_arch_space(tmp_path, """\
        name: lin
        input: {shape: [8]}
        init: {dist: orthogonal, weight_std: 1.0}
        layers:
          - {type: dense, features: 16}
          - {type: activation, fn: identity}
          - {type: dense, features: 16}
          - {type: activation, fn: identity}
          - {type: dense, features: 4}
        """)
    row = rank_space(space, RankOptions(seeds=2, batch=8, metrics=("nlc", "sigma2", "params"))).rows[0]
    assert row["sigma2"] == pytest.approx(1.0, rel=1e-5)
    assert row["nlc"] == pytest.approx(1.0, rel=1e-4)


def test_sigma2_matches_the_exact_spectrum_of_zsad_score(tmp_path):
    """The same weights (same seeds) as zsad score: Hutchinson's mean over 8 samples x 4 probes agrees
    with the exact mean of sigma^2 on the same 8 samples within its noise (relative sd ~ 0.05 here)."""
    from zsad.score import ScoreOptions, score_architecture

    text = """\
        name: relu
        input: {shape: [32]}
        init: {weight_std: 1.7}
        layers:
          - {type: dense, features: 64}
          - {type: activation, fn: relu}
          - {type: dense, features: 64}
          - {type: activation, fn: relu}
          - {type: dense, features: 64}
          - {type: activation, fn: relu}
          - {type: dense, features: 4}
        """
    space = _one_arch_space(tmp_path, text)
    row = rank_space(space, RankOptions(seeds=3, batch=16, metrics=("nlc", "sigma2", "params"))).rows[0]
    report = score_architecture(next(iter(space.items())).arch,
                                ScoreOptions(seeds=3, batch=16, spectrum_samples=8, spectrum_method="exact"))
    exact = report.extra["spectrum"]["sigma2_mean"]
    assert exact > 0.5  # (1.7^2 / 2)^2 = 2.1 in the wide limit
    assert row["sigma2"] == pytest.approx(exact, rel=0.2)


# --------------------------------------------------------------------------- shared draws, compiling ahead

def _three_structures(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text(
        "base: base.yaml\nchoices:\n  layers.0.features: [8, 16, 24]\n  init.weight_std: [1.0, 1.41]\n")
    return load_space(tmp_path / "space.yaml")


def test_shared_draws_give_the_rows_of_drawing_inside_each_program(tmp_path, monkeypatch):
    """A structure's initialization is drawn once per seed and shared by its architectures (they differ
    only in scalars): the same weights as each architecture drawing its own, so the same rows."""
    monkeypatch.setattr(scorer_mod, "PADDED_MLPS", False)  # the unpadded path: one program per shape
    space = _three_structures(tmp_path)
    options = RankOptions(seeds=2, batch=8, metrics=("nlc", "sigma2", "params", "grad_norm"))
    programs_mod.PROGRAM_CACHE.clear()
    shared = rank_space(space, options).rows
    assert all(p.draws for p in programs_mod.PROGRAM_CACHE.values())
    monkeypatch.setattr(programs_mod, "SHARED_DRAWS", 0)  # every program draws inside
    programs_mod.PROGRAM_CACHE.clear()
    inside = rank_space(space, options).rows
    assert not any(p.draws for p in programs_mod.PROGRAM_CACHE.values())
    assert len(shared) == 6 and all(r["status"] == "ok" for r in shared)
    assert_same_rows(shared, inside, rel=1e-5, abs=1e-7)


def test_programs_compiled_ahead_are_not_compiled_again(tmp_path, monkeypatch):
    """The structures' programs compile side by side on a thread pool; each compiles exactly once, there
    (batch 6: programs no other test compiles, so no cache of this process already holds them)."""
    import threading

    from jax import monitoring

    monkeypatch.setattr(scorer_mod, "PADDED_MLPS", False)  # the unpadded path: one program per shape

    space = _three_structures(tmp_path)
    names = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration") and kwargs.get("fun_name") == "jit(_measure)":
            names.append(threading.current_thread().name)

    programs_mod.PROGRAM_CACHE.clear()
    monitoring.register_event_duration_secs_listener(listener)
    try:
        rows = rank_space(space, RankOptions(seeds=2, batch=6, metrics=("nlc", "params"))).rows
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert [r["status"] for r in rows] == ["ok"] * 6
    assert len(names) == 3 and all(n.startswith("zsad-compile") for n in names), names
    assert all(p.compiled for p in programs_mod.PROGRAM_CACHE.values())


def test_all_finite_flags_inf_and_nan():
    import jax.numpy as jnp

    assert bool(all_finite(jnp.array([1.0, -3e38, 0.0])))
    assert not bool(all_finite(jnp.array([1.0, jnp.inf])))
    assert not bool(all_finite(jnp.array([[jnp.nan, 2.0]])))


def test_architectures_differing_in_activations_share_one_program(tmp_path, monkeypatch):
    """One shape signature, six activation pairs: one compiled program (the functions chosen by a traced
    index), and the rows of compiling each pair's own program."""
    from jax import monitoring

    monkeypatch.setattr(scorer_mod, "PADDED_MLPS", False)  # the unpadded path: one program per shape
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text("base: base.yaml\nchoices:\n  layers.1.fn: [relu, tanh, elu]\n"
                                         "  layers.3.fn: [relu, tanh]\n  init.weight_std: [1.41, 1.0e+25]\n")
    space = load_space(tmp_path / "space.yaml")
    options = RankOptions(seeds=2, batch=7, metrics=("nlc", "params", "naswot", "grad_norm"))
    compiles = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration") and kwargs.get("fun_name") == "jit(_measure)":
            compiles.append(1)

    real_scorer = rank_mod.Scorer

    class Accelerator(real_scorer):  # the accelerator path on the CPU: chunks vmapped over architectures
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batched = self.chunked = True

    monitoring.register_event_duration_secs_listener(listener)
    try:
        programs_mod.PROGRAM_CACHE.clear()
        shared = rank_space(space, options).rows
        n_shared = len(compiles)
        monkeypatch.setattr(rank_mod, "Scorer", Accelerator)
        programs_mod.PROGRAM_CACHE.clear()
        vmapped = rank_space(space, options).rows
        monkeypatch.setattr(rank_mod, "Scorer", real_scorer)
        monkeypatch.setattr(rank_mod.Scorer, "choices", staticmethod(lambda group: None))
        programs_mod.PROGRAM_CACHE.clear()
        before_own = len(compiles)
        own = rank_space(space, options).rows
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert n_shared == 1 and len(compiles) - before_own == 6
    statuses = collections.Counter(r["status"] for r in shared)
    assert statuses["ok"] >= 6 and statuses["diverged"] >= 1, statuses  # relu-relu at 1e25 overflows float32
    for other in (own, vmapped):  # one program per activation pair; the choice vmapped (a select)
        assert_same_rows(shared, other, rel=1e-4, abs=1e-6)


def test_jacob_cov_is_left_out_where_the_batch_exceeds_the_input_dimension(tmp_path):
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        archs:
          - {name: narrow, input: {shape: [4]}, layers: [{type: dense, features: 8}, {type: activation, fn: tanh},
             {type: dense, features: 2}]}
          - {name: wide, input: {shape: [16]}, layers: [{type: dense, features: 8}, {type: activation, fn: tanh},
             {type: dense, features: 2}]}
        """))
    rows = by_arch(rank_space(load_space(tmp_path / "s.yaml"),
                              RankOptions(seeds=1, batch=8, metrics=("nlc", "params", "jacob_cov"))).rows)
    assert rows["narrow"]["jacob_cov"] is None and "jacob_cov: left out, degenerate" in rows["narrow"]["reason"]
    assert rows["narrow"]["status"] == "ok" and rows["narrow"]["nlc"] is not None
    assert rows["wide"]["jacob_cov"] is not None and math.isfinite(rows["wide"]["jacob_cov"])
    assert programs_mod.jacob_cov_degenerate(8, (4,)) and not programs_mod.jacob_cov_degenerate(8, (2, 2, 2))


# --------------------------------------------------------------------------- the runner interface


def test_a_job_travels_whole_and_groups_and_fails_rows_without_scoring(space_dir):
    """What a runner gets (:class:`zsad.rank.Job`): picklable, the structure of each item, a failed row."""
    import pickle

    from zsad.rank import Job, SpaceContext

    space = load_space(space_dir / "space.yaml")
    job = Job(SpaceContext.of(space), RankOptions(metrics=("nlc", "params")))
    assert pickle.loads(pickle.dumps(job)) == job
    items = list(space)
    groups = {job.group(item) for item in items}
    assert len(groups) == 1 < len(items)  # architectures differing in a weight scale share a structure
    row = job.failed(items[0], "its worker died")
    assert list(row) == columns(("nlc", "params"))[:-2]
    assert (row["status"], row["reason"], row["nlc"], row["params"]) == ("failed", "its worker died", None, None)


def test_rank_space_runs_any_runner_and_refuses_options_that_do_not_go_together(space_dir):
    from zsad.rank import check_run

    space = load_space(space_dir / "small.yaml")
    seen = []

    def static_rows(chunks, job):  # a runner: rows without a compiled program
        for chunk in chunks:
            seen.extend(item.id for item in chunk)
            yield from (job.failed(item, "not scored") for item in chunk)

    result = rank_space(space, RankOptions(metrics=("params",)), by="params", runner=static_rows)
    assert seen == [r["arch"] for r in result.rows] and {r["status"] for r in result.rows} == {"failed"}
    with pytest.raises(SpecError, match=r"^--workers: applies to a Ray cluster; add --ray$"):
        check_run(workers=2)
    with pytest.raises(SpecError, match=r"^--devices: applies to this machine's devices"):
        rank_space(space, ray="local", devices=1)
    with pytest.raises(SpecError, match=r"^runner: expected either a runner or ray/devices; got both$"):
        rank_space(space, runner=static_rows, devices=1)


def test_flops_count_every_repeat_of_a_scanned_block(tmp_path):
    """A repeated block runs as one loop, whose body XLA's cost analysis counts once: the FLOPs column
    must equal that of the same network written out layer by layer."""
    layer = "[{type: dense, features: 8}, {type: activation, fn: tanh}]"
    (tmp_path / "s.yaml").write_text(textwrap.dedent(f"""\
        archs:
          - {{name: scanned, input: {{shape: [4]}}, layers: [{{type: block, repeat: 6, layers: {layer}}}]}}
          - {{name: written, input: {{shape: [4]}}, layers: {layer[:-1]}, {layer[1:-1]}, {layer[1:-1]},
              {layer[1:-1]}, {layer[1:-1]}, {layer[1:]}}}
          - {{name: once, input: {{shape: [4]}}, layers: {layer}}}
        """))
    result = rank_space(load_space(tmp_path / "s.yaml"), RankOptions(batch=4, metrics=("flops",)), by="flops")
    rows = by_arch(result.rows)
    assert rows["scanned"]["flops"] == rows["written"]["flops"]
    assert rows["scanned"]["flops"] > 5 * rows["once"]["flops"]  # six repeats, not one


# --------------------------------------------------------------------------- padded MLP programs

def _mlp_yaml(name, widths, fns, weight_std, bias_std=0.1):
    layers = "".join(f"  - {{type: dense, features: {w}}}\n  - {{type: activation, fn: {f}}}\n"
                     for w, f in zip(widths, fns))
    return (f"name: {name}\ninput: {{shape: [8]}}\ninit: {{dist: normal, weight_std: {weight_std}, "
            f"bias_std: {bias_std}}}\nlayers:\n{layers}  - {{type: dense, features: 3}}\n")


def test_padded_mlps_give_the_rows_of_their_own_programs_in_one_program(tmp_path, monkeypatch):
    """MLPs of other widths (up to 16), depths (3, 4) and activation functions share one padded program
    (one trace) whose every metric column is that of each architecture's own program; a diverged one
    names its own layer."""
    from zsad import measure

    archs = {"a": ([12, 9, 16], ["tanh", "elu", "relu"], 1.4), "b": ([16, 5, 11, 7], ["relu"] * 4, 1.2),
             "c": ([16, 5, 11, 7], ["relu"] * 4, 1e25)}
    for name, spec in archs.items():
        (tmp_path / f"{name}.yaml").write_text(_mlp_yaml(name, *spec))
    (tmp_path / "space.yaml").write_text("archs: [a.yaml, b.yaml, c.yaml]\n")
    space = load_space(tmp_path / "space.yaml")
    options = RankOptions(seeds=2, batch=8)
    programs_mod.PROGRAM_CACHE.clear()
    before = collections.Counter(measure.TRACES)
    padded = rank_space(space, options).rows
    traced = collections.Counter(measure.TRACES) - before
    assert list(traced.values()) == [1] and next(iter(traced))[0][0][0] == "padded", traced
    monkeypatch.setattr(scorer_mod, "PADDED_MLPS", False)
    programs_mod.PROGRAM_CACHE.clear()
    own = rank_space(space, options).rows
    assert [r["status"] for r in own] == ["ok", "ok", "diverged"], own
    assert all(r[c] is not None for r in own[:2] for c in ("naswot", "sigma2", "grad_norm", "nlc_block")), own
    assert_same_rows(own, padded, rel=1e-5, abs=1e-6)
