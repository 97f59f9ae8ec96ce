"""Nonlinearity normalization: targets reached, no recompilation, files, CLI errors, golden values.

Compilation dominates the runtime, so every test reuses a handful of structures
(the scoring program is cached per structure: other targets, methods, seeds'
values and scalars add no compilation): one program per (kind, activation) of
the target grid, plus a plain ReLU MLP.

The networks of the grid put a batch norm after each of six activations. A plain
ReLU or GELU network cannot be normalized to an NLC of 10 at a testable depth:
under interpolation ReLU is at most |s|, which keeps it at the edge of chaos
(NLC about 1/sqrt(1 - k^L(c)), +0.3 per layer at best; 2.7 for the plain
4-layer MLP below), while the centring of batch norm makes |s| chaotic (slope
2.75 per layer); see the ``zsad.normalize`` docstring.
"""

import dataclasses
import json
import math
import re

import numpy as np
import pytest

from zsad.arch.spec import Activation, Block, Shaping, expand, load_architecture
from zsad.data import load_inputs
from zsad.meanfield.walk import batch_state
from zsad.arch.files import save_architecture as save
from zsad.normalize import NormalizeError, _next_u, _Predictor, normalize
from zsad.shaping import LayerCurve, with_shaping
from zsad import measure
from zsad.space import load_space

from helpers import arch_from, mlp, run_cli

SEEDS, BATCH = 2, 128
#: The solver stops within 2% of the target (mean over seeds); the acceptance band is 5%.
BAND = 0.05
DEPTH = 6
#: Each network's measured range at these settings, for reference (interp; tanh also scale): MLP relu
#: [1, 20.4], gelu [1, 14.1], tanh [1, 107] and [1, 918]; CNN relu [1, 18.1], gelu [1, 12.4], tanh
#: [1, 86.5] and [1, 1110].
TARGETS = (1.2, 3.0, 10.0)


def _net(kind, fn):
    """``DEPTH`` x (dense 64 | conv 3x3 16) -> fn -> batch_norm, then a dense readout; weight_std 2."""
    linear = ({"type": "dense", "features": 64} if kind == "mlp"
              else {"type": "conv", "features": 16, "kernel": 3, "padding": "same"})
    head = [{"type": "dense", "features": 10}] if kind == "mlp" else [{"type": "flatten"},
                                                                      {"type": "dense", "features": 10}]
    block = {"type": "block", "repeat": DEPTH,
             "layers": [linear, {"type": "activation", "fn": fn}, {"type": "batch_norm"}]}
    return arch_from({"name": f"{fn}-{kind}", "input": {"shape": [32] if kind == "mlp" else [8, 8, 3]},
                      "init": {"weight_std": 2.0}, "layers": [block, *head]})


def _plain_relu():
    """A plain 4-layer ReLU MLP (He init): interpolation reaches NLC 2.72 at most."""
    return arch_from(mlp("relu", depth=4, width=64, d_in=32, weight_std=1.414), name="relu-mlp")


CASES = ([(k, f, "interp", t) for k in ("mlp", "cnn") for f in ("relu", "gelu", "tanh") for t in TARGETS]
         + [(k, "tanh", "scale", t) for k in ("mlp", "cnn") for t in (1.2, 10.0)]
         + [("mlp", "relu", "interp", 1.0)])


run = run_cli
pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.mark.parametrize("kind,fn,method,target", CASES,
                         ids=[f"{k}-{f}-{m}-{t:g}" for k, f, m, t in CASES])
def test_reaches_target(kind, fn, method, target):
    r = normalize(_net(kind, fn), target, method=method, seeds=SEEDS, batch=BATCH, summaries=False)
    assert r.converged, r.history
    assert abs(r.nlc_after[0] / target - 1.0) <= BAND, (r.nlc_after, target)
    assert r.compilations == 0
    assert len(r.layers) == DEPTH
    # The shaping is recorded on every activation layer of the returned architecture.
    acts = [layer for layer in expand(r.arch.layers) if isinstance(layer, Activation)]
    assert [(a.shaping.alpha, a.shaping.beta, a.shaping.gain) for a in acts] == [
        (s.alpha, s.beta, s.gain) for s in r.layers]
    if method == "scale":
        assert all(s.alpha == 1.0 for s in r.layers)
    else:
        assert all(s.beta == 1.0 for s in r.layers)
        assert all(0.0 <= s.alpha <= 2.6 for s in r.layers)  # on the monotone branch
    if target == 1.0:  # all activations linear: the network is affine
        assert all(s.alpha == 0.0 for s in r.layers) and r.nlc_after[0] == pytest.approx(1.0, abs=1e-4)


def test_search_never_recompiles():
    arch = _net("mlp", "tanh")
    normalize(arch, 2.0, method="scale", seeds=SEEDS, batch=BATCH, summaries=False)  # compiled here (or earlier)
    traces = sum(measure.TRACES.values())
    r = normalize(arch, 5.0, method="scale", seeds=SEEDS, batch=BATCH, summaries=False)
    assert r.iterations >= 1 and r.compilations == 0
    assert sum(measure.TRACES.values()) == traces


@pytest.mark.parametrize("make", [_plain_relu, lambda: _net("cnn", "gelu")], ids=["plain-relu-mlp", "gelu-cnn"])
def test_current_nlc_leaves_network_unchanged(make):
    arch = make()
    current = normalize(arch, 1.0, seeds=SEEDS, batch=BATCH, summaries=False).nlc_before[0]
    r = normalize(arch, current, seeds=SEEDS, batch=BATCH, summaries=False)
    assert r.iterations == 0 and r.arch == arch and r.converged
    assert r.nlc_after == r.nlc_before and r.nlc_after[0] == current
    assert all((s.alpha, s.beta, s.gain) == (1.0, 1.0, 1.0) for s in r.layers)
    # A tight tolerance forces a search; it ends next to the unchanged scalars.
    r = normalize(arch, current * 1.01, seeds=SEEDS, batch=BATCH, tol=0.002, summaries=False)
    assert r.converged and r.compilations == 0
    assert all(abs(s.alpha - 1.0) < 0.05 and abs(s.gain - 1.0) < 0.05 for s in r.layers), r.layers


def test_written_file_round_trips_and_scores_to_target(tmp_path):
    target = 3.0
    r = normalize(_net("mlp", "tanh"), target, method="scale", seeds=SEEDS, batch=BATCH, summaries=False)
    path = tmp_path / "normalized.yaml"
    written = save(r.arch, path)
    assert load_architecture(path) == written == r.arch
    # The file measures the same NLC as the solver's last evaluation (the program scoring uses):
    # normalizing it again to the same target changes nothing.
    again = normalize(load_architecture(path), target, method="scale", seeds=SEEDS, batch=BATCH, summaries=False)
    assert again.iterations == 0 and again.arch == written and again.compilations == 0
    assert again.nlc_before[0] == pytest.approx(r.nlc_after[0], rel=1e-5)
    assert abs(again.nlc_before[0] / target - 1.0) <= BAND


def test_cli_json_contract(tmp_path):
    src = tmp_path / "relu.yaml"
    save(_plain_relu(), src)
    out = tmp_path / "out.yaml"
    result = run("normalize", src, "--target", 1.5, "-o", out, "--seeds", SEEDS, "--batch", BATCH, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"name", "target", "method", "nlc_before", "nlc_after", "layers", "iterations", "seconds", "history",
            "converged", "compilations", "output"} <= set(doc)
    assert doc["output"] == str(out) and doc["compilations"] == 0
    assert {"before", "after"} <= set(doc["meanfield"])  # mean-field summaries, on by default
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
    save(_plain_relu(), src)
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


def test_unreachable_states_the_measured_range():
    """A plain ReLU MLP tops out at |s| in every layer (alpha = 2); the error gives the measured range."""
    with pytest.raises(NormalizeError) as info:
        normalize(_plain_relu(), 10.0, seeds=SEEDS, batch=BATCH, summaries=False)
    message = str(info.value)
    lo, hi = map(float, re.search(r"reachable NLC range \[([0-9.]+), ([0-9.]+)\]", message).groups())
    assert lo == pytest.approx(1.0, abs=1e-3)  # all activations linear: an affine network
    assert 2.4 < hi < 3.0  # mean field 2.85 at 4 layers; finite width a little lower
    assert "|s| (alpha = 2)" in message and "\n" not in message
    # Inside the range the same network is normalized (close to its top).
    r = normalize(_plain_relu(), 0.95 * hi, seeds=SEEDS, batch=BATCH, summaries=False)
    assert r.converged and all(1.0 < s.alpha <= 2.0 for s in r.layers)


def test_per_layer_curves():
    """Monotone branch of the interpolation: peak a and single-layer NLC (no network compiled)."""
    relu = LayerCurve("1.relu", Activation(fn="relu"), 2.0, "interp")
    assert relu.peak == pytest.approx(2.0) and relu.native == pytest.approx(1.211174, abs=1e-5)
    assert relu.tau_max == pytest.approx(1.0 / math.sqrt(1.0 - 2.0 / math.pi), rel=1e-6)  # |s|
    sh = relu.shaping(2.0)
    assert (sh.alpha, sh.gain) == pytest.approx((2.0, math.sqrt(0.5)))  # E|s|^2 = 2 E relu(s)^2
    for q, peak in ((1.0, 2.535), (0.01, 1.0 / 0.01)):  # tanh: phi_a ~ s - a s^3/3 at small q
        tanh = LayerCurve("1.tanh", Activation(fn="tanh"), q, "interp")
        assert tanh.peak == pytest.approx(peak, rel=0.05)
        assert np.all(np.diff(tanh.curve) > 0) and tanh.grid[-1] == tanh.peak
    assert LayerCurve("1.gelu", Activation(fn="gelu"), 1.0, "interp").peak == pytest.approx(2.0)


def test_next_u_brackets_and_ends():
    # Bracketed: regula falsi inside the sign change next to the best point.
    u = _next_u([(1.0, -0.5), (2.0, 0.5)], 3.0)
    assert 1.0 < u < 2.0 and u == pytest.approx(1.5)
    # A non-monotone measured curve: the bracket next to the best point is used.
    u = _next_u([(1.0, -0.5), (2.0, 0.2), (3.0, -0.1)], 3.0)
    assert 2.0 < u < 3.0
    # No bracket: secant towards the target side, capped at the ends; None once an end is measured.
    assert 1.0 < _next_u([(1.0, -1.0), (1.5, -0.5)], 4.0) <= 4.0
    assert _next_u([(1.0, -1.0), (1.5, -0.5)], 1.6) == 1.6
    assert _next_u([(1.0, -1.0), (1.6, -0.5)], 1.6) is None
    assert 0.0 <= _next_u([(1.0, 1.0), (0.5, 0.4)], 2.0) < 0.5
    assert _next_u([(1.0, 1.0), (0.0, 0.4)], 2.0) is None


def test_library_errors():
    with pytest.raises(NormalizeError, match="never below 1"):
        normalize(_plain_relu(), 0.9)
    with pytest.raises(NormalizeError, match="method"):
        normalize(_plain_relu(), 2.0, method="bogus")


def test_space_form_1(tmp_path):
    for fn in ("relu", "tanh"):
        save(_net("mlp", fn), tmp_path / f"{fn}.yaml")
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
    assert all(not next(a for a in expand(item.arch.layers) if isinstance(a, Activation)).shaping.is_identity
               for item in items)


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
    "1.tanh": {"alpha": 1.0, "beta": 2.5412061076743764, "gain": 2.000706227081351},
    "3.tanh": {"alpha": 1.0, "beta": 3.1558431503919935, "gain": 2.137555695530418},
}
GOLDEN_NLC = 2.0121126843688417
GOLDEN_ITERATIONS = 2
GOLDEN_Q = (1.4842670681133339, 0.6815742154083307)  # the layers' mean-field input lengths


def test_golden_values(x64):
    arch = arch_from(mlp("tanh", depth=2, width=16, d_in=8, weight_std=1.2, bias_std=0.1), name="golden")
    r = normalize(arch, 2.0, method="scale", seeds=2, batch=32, tol=0.01)
    assert r.converged and r.compilations == 0
    got = r.scalars
    assert r.iterations == GOLDEN_ITERATIONS
    assert [s.q for s in r.layers] == pytest.approx(GOLDEN_Q, rel=1e-12)
    assert r.nlc_after[0] == pytest.approx(GOLDEN_NLC, rel=1e-7)
    for name, values in GOLDEN.items():
        for key, value in values.items():
            assert got[name][key] == pytest.approx(value, rel=1e-7), (name, key)
    assert math.isclose(np.mean(r.per_seed_after), r.nlc_after[0])


def test_meanfield_walk_is_the_summarys():
    """The layers' input lengths and the mean-field prediction that guide the solve are those of score's
    mean-field summary on the same batch: orthogonal weights with their fan-in/fan-out factor, batch
    norm centred over the batch (pair Gram matrix), a residual branch."""
    arch = arch_from({"name": "walk", "input": {"shape": [8]}, "layers": [
        {"type": "dense", "features": 32, "init": {"dist": "orthogonal", "weight_std": 1.5}},
        {"type": "activation", "fn": "tanh"}, {"type": "batch_norm"},
        {"type": "residual", "branch": [{"type": "dense", "features": 32, "init": {"weight_std": 1.5}},
                                        {"type": "activation", "fn": "relu"}, {"type": "dense", "features": 32}]},
        {"type": "dense", "features": 4}]})
    r = normalize(arch, 50.0, seeds=1, batch=32, max_iter=0)
    summary = r.meanfield["before"]
    q_in = summary["q_in"]
    # orthogonal 8 -> 32: sigma_w^2 * 8/32 per unit input length; after batch norm q = 1, so 1.5^2
    assert [s.q for s in r.layers] == pytest.approx([2.25 * 8 / 32 * q_in, 2.25], rel=1e-6)
    assert r.layers[0].q == pytest.approx(summary["layers"][0]["q"], rel=1e-6)
    x = np.asarray(load_inputs(arch.input, 32, seed=0), dtype=np.float32)
    predicted = _Predictor(arch, batch_state(x), lambda u: {})(1.0)
    assert predicted == summary["nlc_predicted"] and predicted > 1.0
