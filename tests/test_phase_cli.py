"""``zsad phase``: edge-of-chaos table, JSON values, phase-diagram PNG and errors."""

import json

import pytest

from helpers import run_cli

MLP = """name: my-tanh
input: {shape: [16]}
init: {weight_std: 1.5, bias_std: 0.3}
layers:
  - {type: dense, features: 32}
  - {type: activation, fn: tanh}
  - {type: dense, features: 32}
  - {type: activation, fn: tanh}
  - {type: dense, features: 4}
"""


def run(*args):
    return run_cli("phase", *args)


pytestmark = pytest.mark.usefixtures("cli_env")


def test_table():
    result = run("--activation", "tanh")
    assert result.exit_code == 0, result.output
    assert "edge of chaos" in result.stdout and "critical σ_w²" in result.stdout
    assert "1.760961" in result.stdout or "1.760955" in result.stdout


def test_json_values():
    result = run("--activation", "tanh", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {row["bias_var"]: row for row in doc["edge_of_chaos"]}
    assert set(rows) >= {0.0, 0.05, 0.1, 0.5}
    # SPEC §3 reference values (float32: the root is well conditioned away from sigma_b^2 = 0)
    assert rows[0.05]["weight_var"] == pytest.approx(1.760955, rel=1e-5)
    assert rows[0.05]["q_star"] == pytest.approx(0.570048, rel=1e-4)
    assert rows[0.1]["weight_var"] == pytest.approx(1.986073, rel=1e-5)
    assert rows[0.0]["weight_var"] == pytest.approx(1.0, abs=5e-3)  # flat root: ~sqrt(eps) accuracy


def test_relu_json():
    result = run("--activation", "relu", "--json", "--bias-var-max", "0.2", "--rows", "3")
    doc = json.loads(result.stdout)
    first, second = doc["edge_of_chaos"][:2]
    assert first["bias_var"] == 0.0 and first["weight_var"] == pytest.approx(2.0, rel=1e-6)
    assert second["weight_var"] == pytest.approx(2.0, rel=1e-6)
    assert second["q_star"] is None and "grows without bound" in second["reason"]
    # ReLU without bias at sigma_w^2 = 2: every q is fixed; with a bias the length diverges
    assert (first["q_star_kind"], second["q_star_kind"]) == ("any", "infinite")


def test_relu_table_says_which_q_star():
    result = run("--activation", "relu", "--bias-var-max", "0.2", "--rows", "3")
    assert result.exit_code == 0, result.output
    assert "any q" in result.stdout and "∞ (diverges)" in result.stdout


def test_plot_with_network(tmp_path):
    arch = tmp_path / "mlp.yaml"
    arch.write_text(MLP)
    png = tmp_path / "phase.png"
    result = run("--arch", arch, "--plot", png, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["plot"] == str(png) and doc["activation"] == "tanh"
    net = doc["network"]
    assert net["name"] == "my-tanh" and net["weight_var"] == pytest.approx(2.25) and net["bias_var"] == pytest.approx(0.09)
    assert net["phase"] == "chaotic"  # critical sigma_w^2 at sigma_b^2 = 0.09 is ~1.95 < 2.25


def test_unknown_activation():
    result = run("--activation", "tahn")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tahn" in lines[0] and "did you mean 'tanh'" in lines[0]
