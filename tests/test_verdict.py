"""Verdicts: which families the NLC bands' evidence covers, and what a network outside them is told."""

import json
import textwrap

import pytest

from zsad.arch.spec import family_of, parse_architecture
from zsad.verdict import COVERED, HEALTHY_MAX, LINEAR_MAX, combine, nlc_verdict, outside_evidence

from helpers import run_cli


def arch(layers: str, shape="[8, 8, 3]"):
    return parse_architecture({"name": "a", "input": {"shape": eval(shape)},
                               "layers": eval(textwrap.dedent(layers))})


MLP_BN_RES = """[{"type": "dense", "features": 8}, {"type": "batch_norm"}, {"type": "activation", "fn": "relu"},
   {"type": "residual", "branch": [{"type": "dense", "features": 8}, {"type": "activation", "fn": "tanh"}]},
   {"type": "dense", "features": 2}]"""
PLAIN_CNN = """[{"type": "conv", "features": 4, "kernel": 3}, {"type": "activation", "fn": "relu"},
   {"type": "avg_pool", "window": 2}, {"type": "flatten"}, {"type": "dense", "features": 2}]"""
BN_CNN = """[{"type": "conv", "features": 4, "kernel": 3}, {"type": "batch_norm"}, {"type": "activation", "fn": "relu"},
   {"type": "global_avg_pool"}, {"type": "dense", "features": 2}]"""
RES_CNN = """[{"type": "conv", "features": 4, "kernel": 3},
   {"type": "residual", "branch": [{"type": "activation", "fn": "relu"}, {"type": "conv", "features": 4, "kernel": 3}]},
   {"type": "global_avg_pool"}, {"type": "dense", "features": 2}]"""
TWO_PATHS = """[{"type": "dense", "features": 8},
   {"type": "residual", "branch": [{"type": "activation", "fn": "relu"}],
    "shortcut": [{"type": "dense", "features": 8}]}, {"type": "dense", "features": 2}]"""


@pytest.mark.parametrize("layers, shape, expected", [
    (MLP_BN_RES, "[8]", None),
    (PLAIN_CNN, "[8, 8, 3]", None),
    (BN_CNN, "[8, 8, 3]", "batch-normalized convolutions"),
    (RES_CNN, "[8, 8, 3]", "residual convolutional blocks"),
    (TWO_PATHS, "[8]", "multi-branch cells"),
], ids=["mlp-bn-residual", "plain-cnn", "bn-cnn", "residual-cnn", "two-paths"])
def test_family_decided_by_the_layer_types(layers, shape, expected):
    assert outside_evidence(**family_of(arch(layers, shape))) == expected


def test_foreign_modules_are_outside():
    a = parse_architecture({"name": "f", "input": {"shape": [4]}, "module": "pkg.mod:make"})
    assert outside_evidence(**family_of(a)) == "a module whose layers zsad cannot inspect"


def test_outside_the_evidence_a_high_nlc_gets_no_verdict_but_a_low_one_still_warns():
    high = 8 * HEALTHY_MAX
    assert nlc_verdict(high, 0.1)[0] == "bad"  # inside the evidence: far above the band
    status, reason = nlc_verdict(high, 0.1, outside="multi-branch cells")
    assert status == "unknown" and "multi-branch cells" in reason and COVERED in reason
    assert nlc_verdict(0.9 * LINEAR_MAX, None, outside="multi-branch cells")[0] == "warning"
    inside = (LINEAR_MAX + HEALTHY_MAX) / 2
    assert nlc_verdict(inside, None, outside="multi-branch cells")[0] == "good"
    # "unknown" outranks "good" (a healthy spectrum does not make up for it), not a warning
    assert combine([("good", "x"), ("unknown", "y")]).status == "unknown"
    assert combine([("warning", "x"), ("unknown", "y")]).status == "warning"
    assert combine([("unknown", "y")]).summary.startswith("No verdict from the evidence")


def test_pooled_cnn_sigma2_segment_stops_before_global_pooling():
    from zsad.arch.build import build
    from zsad.score import resolve_between

    a = arch(BN_CNN)
    names = list(build(a).layer_names)
    start, stop, between = resolve_between(a, names, None)
    assert names[stop - 1] == "2.relu" and between == ("0.conv", "2.relu")
    # an MLP keeps the hidden part up to the last dense layer's input
    m = arch(MLP_BN_RES, "[8]")
    mnames = list(build(m).layer_names)
    assert resolve_between(m, mnames, None)[2] == ("0.dense", "3.residual")


def test_pooled_cnn_sigma2_is_not_scaled_by_the_pooling(cli_env, tmp_path):
    """A linear convolution with unit-gain orthogonal-like init: sigma2 of the segment before global
    pooling is O(1); the whole network's (through the pooling) is smaller by about H*W."""
    from zsad.rank import RankOptions, rank_space
    from zsad.space import load_space

    (tmp_path / "a.yaml").write_text(textwrap.dedent("""\
        name: pooled
        input: {shape: [8, 8, 4]}
        init: {weight_std: 1.0}
        layers:
          - {type: conv, features: 16, kernel: 3}
          - {type: conv, features: 16, kernel: 3}
          - {type: global_avg_pool}
          - {type: dense, features: 4}
        """))
    (tmp_path / "s.yaml").write_text("archs: [a.yaml]\n")
    row = rank_space(load_space(tmp_path / "s.yaml"),
                     RankOptions(seeds=2, batch=8, metrics=("nlc", "sigma2", "params"))).rows[0]
    # the segment is the second convolution alone (Var W = 1/fan_in): mean sigma2 near 1, not 1/64
    assert 0.5 < row["sigma2"] < 2.0


NB201_CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


def test_score_one_nas_bench_201_architecture(cli_env, tmp_path):
    from zsad.spaces import nasbench201 as nb

    (tmp_path / "cell.yaml").write_text(f"space: nas-bench-201\narch: '{NB201_CELL}'\n")
    result = run_cli("score", tmp_path / "cell.yaml", "--seeds", 2, "--batch", 8, "--spectrum-samples", 1,
                     "--spectrum-method", "lanczos", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["params"] == nb.param_count(nb.parse_arch(NB201_CELL))
    assert doc["space"] == {"name": "nas-bench-201", "arch": NB201_CELL}
    assert doc["spectrum"]["between"] == ["input", nb.FEATURES]
    assert [p["layer"] for p in doc["profile"]] == list(nb.LAYER_NAMES)
    assert doc["meanfield"]["reason"] and doc["evidence"]["outside"]
    assert doc["nlc"]["mean"] > HEALTHY_MAX and doc["verdict"]["status"] != "bad"
    assert "no verdict" in " ".join(doc["verdict"]["reasons"])


def test_cell_file_errors_name_the_field(cli_env, tmp_path):
    (tmp_path / "bad.yaml").write_text("space: nas-bench-201\narch: '|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|'\n")
    result = run_cli("score", tmp_path / "bad.yaml")
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert "bad.yaml:2" in line and "arch" in line
    (tmp_path / "typo.yaml").write_text("space: nas-bench-201\narhc: 'x'\n")
    result = run_cli("score", tmp_path / "typo.yaml")
    assert result.exit_code == 2 and "arhc" in result.output and "did you mean 'arch'" in result.output
