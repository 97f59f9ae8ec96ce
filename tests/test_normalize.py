"""Nonlinearity normalization: targets reached, no recompilation, files, CLI errors, golden values.

Compilation dominates the runtime, so every test reuses a handful of structures
(the scoring program is cached per structure: other targets, methods and
scalars add no compilation).
"""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import arch_from, mlp

from zsad.arch.spec import Activation, Block, Shaping, load_architecture
from zsad.normalize import NormalizeError, normalize, save, with_shaping
from zsad.score import _metrics_over_seeds
from zsad.space import load_space
from zsad_cli.main import cli

SEEDS, BATCH = 2, 128
#: The solver stops within 2% of the target (mean over seeds); the acceptance band is 5%.
BAND = 0.05


def _mlp(fn):
    return arch_from(mlp(fn, depth=4, width=64, d_in=32, weight_std=1.0 if fn == "tanh" else 1.414),
                     name=f"{fn}-mlp")


def _cnn(fn):
    conv = {"type": "conv", "features": 8, "kernel": 3, "padding": "same"}
    layers = []
    for _ in range(3):
        layers += [dict(conv), {"type": "activation", "fn": fn}]
    layers += [{"type": "global_avg_pool"}, {"type": "dense", "features": 10}]
    return arch_from({"name": f"{fn}-cnn", "input": {"shape": [8, 8, 3]},
                      "init": {"weight_std": 1.0 if fn == "tanh" else 1.414}, "layers": layers})


ARCHS = {"mlp": _mlp, "cnn": _cnn}

CASES = [
    ("mlp", "tanh", "scale", 1.2), ("mlp", "tanh", "scale", 3.0), ("mlp", "tanh", "scale", 10.0),
    ("mlp", "tanh", "interp", 3.0),
    ("cnn", "tanh", "scale", 1.2), ("cnn", "tanh", "scale", 3.0), ("cnn", "tanh", "scale", 10.0),
    ("mlp", "relu", "interp", 1.2), ("mlp", "relu", "interp", 2.5),
    ("cnn", "relu", "interp", 1.2), ("cnn", "relu", "interp", 2.0),
    ("mlp", "gelu", "interp", 1.2), ("mlp", "gelu", "interp", 2.0),
    ("cnn", "gelu", "interp", 1.5),
]


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A private compilation cache for CLI runs; --x64 undone after each test."""
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    previous = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("kind,fn,method,target", CASES,
                         ids=[f"{k}-{f}-{m}-{t:g}" for k, f, m, t in CASES])
def test_reaches_target(kind, fn, method, target):
    r = normalize(ARCHS[kind](fn), target, method=method, seeds=SEEDS, batch=BATCH)
    assert r.converged, r.history
    assert abs(r.nlc_after[0] / target - 1.0) <= BAND, (r.nlc_after, target)
    assert r.compilations == 0
    assert len(r.layers) == 4 if kind == "mlp" else len(r.layers) == 3
    # The shaping is recorded on every activation layer of the returned architecture.
    shaped = [layer.shaping for layer in r.arch.layers if isinstance(layer, Activation)]
    assert [(s.alpha, s.beta, s.gain) for s in shaped] == [(s.alpha, s.beta, s.gain) for s in r.layers]
    if method == "scale":
        assert all(s.alpha == 1.0 for s in r.layers)
    else:
        assert all(s.beta == 1.0 for s in r.layers)


def test_search_never_recompiles():
    arch = _mlp("tanh")
    normalize(arch, 2.0, method="scale", seeds=SEEDS, batch=BATCH)  # compiled here (or earlier)
    size = _metrics_over_seeds._cache_size()
    r = normalize(arch, 5.0, method="scale", seeds=SEEDS, batch=BATCH)
    assert r.iterations >= 1 and r.compilations == 0
    assert _metrics_over_seeds._cache_size() == size


def test_current_nlc_leaves_network_unchanged():
    arch = _mlp("relu")
    current = normalize(arch, 1.0, method="interp", seeds=SEEDS, batch=BATCH).nlc_before[0]
    r = normalize(arch, current, seeds=SEEDS, batch=BATCH)
    assert r.iterations == 0 and r.arch == arch
    assert all((s.alpha, s.beta, s.gain) == (1.0, 1.0, 1.0) for s in r.layers)
    # A tight tolerance forces a search; it ends next to the unchanged scalars.
    r = normalize(arch, current * 1.01, seeds=SEEDS, batch=BATCH, tol=0.002)
    assert r.converged
    assert all(abs(s.alpha - 1.0) < 0.05 and abs(s.gain - 1.0) < 0.05 for s in r.layers), r.layers


def test_written_file_round_trips_and_scores_to_target(tmp_path):
    target = 3.0
    r = normalize(_mlp("tanh"), target, method="scale", seeds=SEEDS, batch=BATCH)
    path = tmp_path / "normalized.yaml"
    written = save(r.arch, path)
    assert load_architecture(path) == written == r.arch
    result = run("score", path, "--no-spectrum", "--seeds", SEEDS, "--batch", BATCH, "--json")
    assert result.exit_code == 0, result.output
    nlc = json.loads(result.stdout)["nlc"]["mean"]
    assert abs(nlc / target - 1.0) <= BAND
    assert nlc == pytest.approx(r.nlc_after[0], rel=1e-4)  # the same measurement as the solver's


def test_cli_json_contract(tmp_path):
    src = tmp_path / "relu.yaml"
    save(_mlp("relu"), src)
    out = tmp_path / "out.yaml"
    result = run("normalize", src, "--target", 1.5, "-o", out, "--seeds", SEEDS, "--batch", BATCH, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"name", "target", "method", "nlc_before", "nlc_after", "layers", "iterations", "seconds", "history",
            "converged", "compilations", "output"} <= set(doc)
    assert doc["output"] == str(out) and doc["compilations"] == 0
    assert abs(doc["nlc_after"]["mean"] / 1.5 - 1.0) <= BAND and len(doc["nlc_after"]["per_seed"]) == SEEDS
    assert [row["layer"] for row in doc["layers"]] == ["1.relu", "3.relu", "5.relu", "7.relu"]
    arch = load_architecture(out)
    assert [a.shaping.alpha for a in arch.layers if isinstance(a, Activation)] == [
        row["alpha"] for row in doc["layers"]]
    rich = run("normalize", src, "--target", 1.5, "-o", out, "--seeds", SEEDS, "--batch", BATCH)
    assert rich.exit_code == 0 and "NLC after" in rich.stdout and "alpha" in rich.stdout


NO_ACT = "name: lin\ninput: {shape: [8]}\nlayers:\n  - {type: dense, features: 4}\n"


@pytest.mark.parametrize("case", ["below-one", "no-activation", "scale-relu", "unreachable", "no-input"])
def test_cli_bad_input_one_line(case, tmp_path):
    src = tmp_path / "relu.yaml"
    save(_mlp("relu"), src)
    args, expected = {
        "below-one": (["--target", 0.5], "affine maps have exactly 1"),
        "no-activation": (["--target", 2], "no activation layers"),
        "scale-relu": (["--target", 2, "--method", "scale"], "layer 1.relu: method 'scale'"),
        "unreachable": (["--target", 10], "reachable NLC range [1, "),
        "no-input": (["--target", 2], "either ARCH_FILE or --space"),
    }[case]
    if case == "no-activation":
        src.write_text(NO_ACT)
    path = [] if case == "no-input" else [src]
    result = run("normalize", *path, *args, "--seeds", SEEDS, "--batch", BATCH, "-o", tmp_path / "o.yaml")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_library_errors():
    with pytest.raises(NormalizeError, match="never below 1"):
        normalize(_mlp("relu"), 0.9)
    with pytest.raises(NormalizeError, match="method"):
        normalize(_mlp("relu"), 2.0, method="bogus")


def test_space_form_1(tmp_path):
    for fn in ("relu", "tanh"):
        save(_mlp(fn), tmp_path / f"{fn}.yaml")
    space = tmp_path / "space.yaml"
    space.write_text("archs: [relu.yaml, tanh.yaml]\n")
    out = tmp_path / "norm.yaml"
    result = run("normalize", "--space", space, "--target", 2.0, "-o", out, "--seeds", SEEDS, "--batch", BATCH,
                 "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [row["arch"] for row in doc["archs"]] == ["relu-mlp", "tanh-mlp"]
    assert all(abs(row["nlc_after"]["mean"] / 2.0 - 1.0) <= BAND for row in doc["archs"])
    items = list(load_space(out))
    assert [item.id for item in items] == ["relu-mlp", "tanh-mlp"]
    assert all(not item.arch.layers[1].shaping.is_identity for item in items)


def test_with_shaping_unrolls_only_differing_blocks():
    arch = arch_from({"name": "b", "input": {"shape": [4]}, "layers": [
        {"type": "block", "repeat": 2, "layers": [{"type": "dense", "features": 4},
                                                  {"type": "activation", "fn": "tanh"}]},
        {"type": "dense", "features": 2}]})
    same = with_shaping(arch, {"1.tanh": Shaping(beta=2.0), "3.tanh": Shaping(beta=2.0)})
    assert isinstance(same.layers[0], Block) and same.layers[0].layers[1].shaping.beta == 2.0
    differ = with_shaping(arch, {"1.tanh": Shaping(beta=2.0), "3.tanh": Shaping(beta=3.0)})
    assert [type(layer).__name__ for layer in differ.layers] == ["Dense", "Activation", "Dense", "Activation",
                                                                  "Dense"]
    assert [differ.layers[i].shaping.beta for i in (1, 3)] == [2.0, 3.0]
    assert dataclasses.replace(differ, layers=()) == dataclasses.replace(arch, layers=())


# Golden values (float64, fixed seeds): a tiny tanh MLP scaled to NLC 2. Regressions in the
# per-layer curves, the mean-field guess or the secant show up here first.
GOLDEN = {
    "1.tanh": {"alpha": 1.0, "beta": 2.5416670960382004, "gain": 2.001015000740818},
    "3.tanh": {"alpha": 1.0, "beta": 3.156451188082244, "gain": 2.1378899697415985},
}
GOLDEN_NLC = 2.0124272579392866
GOLDEN_ITERATIONS = 2


def test_golden_values(x64):
    arch = arch_from(mlp("tanh", depth=2, width=16, d_in=8, weight_std=1.2, bias_std=0.1), name="golden")
    r = normalize(arch, 2.0, method="scale", seeds=2, batch=32, tol=0.01)
    assert r.converged and r.compilations == 0
    got = r.scalars
    assert r.iterations == GOLDEN_ITERATIONS
    assert r.nlc_after[0] == pytest.approx(GOLDEN_NLC, rel=1e-7)
    for name, values in GOLDEN.items():
        for key, value in values.items():
            assert got[name][key] == pytest.approx(value, rel=1e-7), (name, key)
    assert math.isclose(np.mean(r.per_seed_after), r.nlc_after[0])
