"""PyTorch modules through torchax: conversion, NLC against the eager PyTorch estimator, batch norm, seeds,
initialization, parameter count, and the errors (missing extra, an operation torchax cannot lower)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchax") is None:
    pytest.skip("needs the zsad[torch] extra", allow_module_level=True)

from zsad import build, torch_bridge  # noqa: E402
from zsad._errors import SpecError  # noqa: E402
from zsad.arch.spec import load_architecture, parse_architecture  # noqa: E402
from zsad.data import load_inputs  # noqa: E402
from zsad.nlc import derangement_tangents, nlc_profile, push_tangents, nlc_of_tangents  # noqa: E402
from zsad.score import ScoreOptions, param_count, score_architecture  # noqa: E402

torch, _, _ = torch_bridge.import_torch()  # torch with the bridge's shims (torchvision imports after them)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import torch_reference as ref  # noqa: E402

MODELS = """\
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class BNCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.head(torch.flatten(x, 1))


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.geqrf(self.fc(x).reshape(-1, 2, 2))[0].reshape(x.shape[0], -1)


def mlp():
    return MLP()


def bn_cnn():
    return BNCNN()


def unsupported():
    return Unsupported()


def resnet18():
    from torchvision.models import resnet18 as make

    return make(weights=None, num_classes=10)
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch_models")
    (folder / "tmodels.py").write_text(MODELS)
    return folder


def _arch(folder: Path, factory: str, shape, extra: str = ""):
    path = folder / f"{factory}.yaml"
    path.write_text(f"name: {factory}\ninput: {{shape: {list(shape)}}}\nmodule: \"torch:tmodels:{factory}\"\n{extra}")
    return load_architecture(path)


def _factory(folder: Path, name: str):
    sys.path.insert(0, str(folder))
    try:
        import tmodels
    finally:
        sys.path.remove(str(folder))
    return getattr(tmodels, name)


def _torch_state(variables) -> dict:
    state = {**variables["params"], **variables["buffers"]}
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


CASES = [("mlp", (12,), 16), ("bn_cnn", (3, 8, 8), 16), ("resnet18", (3, 32, 32), 8)]


@pytest.mark.parametrize("factory, shape, batch", CASES, ids=[c[0] for c in CASES])
def test_nlc_equals_eager_pytorch(models, factory, shape, batch):
    """Same weights, inputs and tangents: zsad through torchax equals benchmarks/torch_reference.py."""
    arch = _arch(models, factory, shape)
    net = build(arch)
    x = jnp.asarray(load_inputs(arch.input, batch, seed=0))
    k_init, k_tan = jax.random.split(jax.random.key(3))
    v0 = net.init(k_init, net.scalars)
    v = net.calibrate(v0, net.scalars, x)
    r = nlc_profile(lambda z: net.apply(v, net.scalars, z)[0], x, k_tan, num_tangents=2)
    t = derangement_tangents(x, k_tan, 2)
    # zsad rank's single pass (statistics of the batch held constant) gives the same
    ((y, _), _), ((pushed, _), _) = push_tangents(lambda z: net.apply_calibrating(v0, net.scalars, z), x, t)
    one_pass = float(nlc_of_tangents(y, pushed).nlc)

    model = ref.TorchModule(_factory(models, factory))
    xt = torch.from_numpy(np.array(x))
    fn = model.per_sample(_torch_state(v0), xt)
    with torch.no_grad():
        eager = ref.nlc(fn, xt, torch.from_numpy(np.array(t)))
    assert np.isfinite(eager["nlc"])
    assert abs(float(r.nlc) - eager["nlc"]) <= 1e-4 * eager["nlc"]
    assert abs(one_pass - eager["nlc"]) <= 1e-4 * eager["nlc"]


def test_conversion_children_params_and_buffers(models):
    arch = _arch(models, "resnet18", (3, 32, 32))
    net = build(arch)
    module = _factory(models, "resnet18")()
    assert net.layer_names == ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                               "avgpool", "fc")
    assert param_count(net) == sum(p.numel() for p in module.parameters()) == 11_181_642
    shapes = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    assert {k: tuple(v.shape) for k, v in shapes["params"].items()} == {
        k: tuple(p.shape) for k, p in module.named_parameters()}
    x = jnp.asarray(load_inputs(arch.input, 4, seed=0))
    y, outs = net.apply(net.init(jax.random.key(0), net.scalars), net.scalars, x)
    assert list(outs) == list(net.layer_names) and outs["layer2"].shape == (4, 128, 4, 4) and y.shape == (4, 10)


def test_batch_norm_frozen_on_the_batch_and_buffers_untouched(models):
    arch = _arch(models, "bn_cnn", (3, 8, 8))
    net = build(arch)
    x = jnp.asarray(load_inputs(arch.input, 16, seed=1))
    v0 = net.init(jax.random.key(5), net.scalars)
    v = net.calibrate(v0, net.scalars, x)
    # the statistics are the batch's: mean and biased variance of bn1's input
    module = _factory(models, "bn_cnn")()
    module.load_state_dict(_torch_state(v0))
    pre = module.conv1(torch.from_numpy(np.array(x))).detach()
    np.testing.assert_allclose(v["batch_stats"]["bn1"]["mean"], pre.mean((0, 2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v["batch_stats"]["bn1"]["var"], pre.var((0, 2, 3), unbiased=False).numpy(),
                               rtol=1e-5, atol=1e-6)
    # on the calibration batch the frozen network is PyTorch's training-mode forward
    module.train()
    with torch.no_grad():
        expected = module(torch.from_numpy(np.array(x))).numpy()
    np.testing.assert_allclose(net.apply(v, net.scalars, x)[0], expected, rtol=1e-4, atol=1e-5)
    # zsad neither reads nor updates the running buffers
    np.testing.assert_array_equal(v["buffers"]["bn1.running_mean"], np.zeros(8))
    np.testing.assert_array_equal(v["buffers"]["bn1.running_var"], np.ones(8))
    assert int(v["buffers"]["bn1.num_batches_tracked"]) == 0
    converted = torch_bridge._MODELS[next(k for k in torch_bridge._MODELS if k[1] == "tmodels:bn_cnn")].module
    assert float(converted.bn1.running_mean.abs().sum()) == 0.0 and int(converted.bn1.num_batches_tracked) == 0
    # per-sample: the first sample's output does not depend on the rest of the batch
    y_all = net.apply(v, net.scalars, x)[0]
    y_one = net.apply(v, net.scalars, x[:1])[0]
    np.testing.assert_allclose(y_one[0], y_all[0], rtol=1e-5, atol=1e-6)


def test_seeds_are_pytorch_initializations(models):
    arch = _arch(models, "mlp", (12,))
    net = build(arch)
    init = jax.jit(net.init)
    a, a2, b = init(jax.random.key(1), {}), init(jax.random.key(1), {}), init(jax.random.key(2), {})
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], a2["params"][k])
        assert not np.array_equal(a["params"][k], b["params"][k])
    # the key's two words seed torch: hi * 2**32 + lo
    hi, lo = (int(w) for w in np.asarray(jax.random.key_data(jax.random.key(1))))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((hi << 32) | lo)
        module = _factory(models, "mlp")()
    np.testing.assert_array_equal(a["params"]["fc1.weight"], module.fc1.weight.detach().numpy())
    # vmapped over keys (zsad on accelerators) gives each key's own draw
    both = jax.vmap(net.init, in_axes=(0, None))(jnp.stack([jax.random.key(1), jax.random.key(2)]), {})
    np.testing.assert_array_equal(both["params"]["fc2.weight"][1], b["params"]["fc2.weight"])


def test_init_override_uses_zsad_distributions(models):
    arch = _arch(models, "bn_cnn", (3, 8, 8), "init: {dist: normal, weight_std: 2.0, bias_std: 0.5}\n")
    net = build(arch)
    v = net.init(jax.random.key(0), net.scalars)
    w = np.asarray(v["params"]["conv2.weight"])  # [out 8, in 8, 3, 3]: fan_in 72
    assert abs(w.var() - 4.0 / 72) < 0.15 * 4.0 / 72
    assert abs(np.asarray(v["params"]["conv1.bias"]).std() - 0.5) < 0.3
    np.testing.assert_array_equal(v["params"]["bn1.weight"], np.ones(8))  # norms keep PyTorch's own
    orth = build(_arch(models, "mlp", (12,), "init: {dist: orthogonal}\n"))
    w = np.asarray(orth.init(jax.random.key(0), orth.scalars)["params"]["fc2.weight"])  # [32, 32]
    np.testing.assert_allclose(w @ w.T, np.eye(32), atol=1e-5)
    report = score_architecture(arch, ScoreOptions(seeds=2, batch=16, spectrum=False, meanfield=False))
    assert report.extra["init"]["source"] == "zsad" and report.nlc_mean is not None


def test_score_report(models):
    arch = _arch(models, "bn_cnn", (3, 8, 8))
    report = score_architecture(arch, ScoreOptions(seeds=2, batch=16, spectrum_samples=4))
    doc = report.to_json()
    assert doc["init"]["source"] == "pytorch"
    assert [p["layer"] for p in doc["profile"]] == ["conv1", "bn1", "relu", "conv2", "bn2", "relu#2", "head"]
    assert doc["params"] == 224 + 16 + 576 + 16 + 1290
    assert doc["nlc"]["mean"] is not None and doc["spectrum"]["sigma2_mean"] is not None


def test_rank_space_of_torch_factories(models):
    from zsad.rank import RankOptions, rank_space
    from zsad.space import parse_space

    archs = [{"name": f"mlp_{s}", "input": {"shape": [12]}, "module": "torch:tmodels:mlp",
              "init": {"weight_std": s}} for s in (1.0, 2.0)]
    archs.append({"name": "cnn", "input": {"shape": [3, 8, 8]}, "module": "torch:tmodels:bn_cnn"})
    space = parse_space({"archs": archs}, file=str(models / "space.yaml"))
    res = rank_space(space, RankOptions(seeds=2, batch=16, metrics=("nlc", "sigma2", "params", "grad_norm")))
    rows = {r["arch"]: r for r in res.rows}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["mlp_2.0"]["nlc"] > rows["mlp_1.0"]["nlc"] and rows["cnn"]["grad_norm"] is not None


def test_unsupported_operation_is_one_line(models):
    with pytest.raises(SpecError) as err:
        build(_arch(models, "unsupported", (4,)))
    message = str(err.value)
    assert "\n" not in message and "aten::geqrf" in message and "torchax cannot lower" in message


def test_missing_extra_is_one_line_exit_2(models, monkeypatch, cli_env):
    from click.testing import CliRunner

    from zsad_cli.main import cli

    def missing():
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(torch_bridge, "_import", missing)
    path = models / "mlp_missing.yaml"
    path.write_text("name: m\ninput: {shape: [12]}\nmodule: \"torch:tmodels:mlp\"\n")
    result = CliRunner().invoke(cli, ["score", str(path), "--seeds", "1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'zsad[torch]'" in lines[0]


def test_spec_reads_torch_entry_points():
    arch = parse_architecture({"input": {"shape": [3, 4, 4]}, "module": "torch:pkg.mod:make"})
    assert arch.module == "torch:pkg.mod:make" and not arch.init_set
    with pytest.raises(SpecError, match="torch:package.module:factory"):
        parse_architecture({"input": {"shape": [3]}, "module": "torch:pkg.mod"})
