"""The PyTorch reference's metrics (benchmarks/torch_metrics.py) against zsad.proxies with the same weights,
and its sigma2 estimate against the exact Jacobian."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

if importlib.util.find_spec("torch") is None:
    pytest.skip("needs the zsad[torch] extra", allow_module_level=True)

import torch  # noqa: E402

from zsad import build, proxies  # noqa: E402
from zsad import naswot as naswot_mod  # noqa: E402
from zsad.arch.spec import parse_architecture  # noqa: E402
from zsad.measure import is_kernel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import torch_metrics as tm  # noqa: E402
import torch_reference as ref  # noqa: E402

ARCH = {"name": "tiny", "input": {"shape": [6]}, "init": {"weight_std": 1.3, "bias_std": 0.2},
        "layers": [{"type": "dense", "features": 32}, {"type": "batch_norm"}, {"type": "activation", "fn": "relu"},
                   {"type": "dense", "features": 32}, {"type": "activation", "fn": "tanh"},
                   {"type": "dense", "features": 3}]}


@pytest.fixture(scope="module")
def same():
    arch = parse_architecture(ARCH)
    net = build(arch)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    v0 = net.init(jax.random.key(3), net.scalars)
    model = ref.MLP(arch)
    return net, v0, model, x, np.array([0, 2, 1, 1, 0])


def test_proxies_equal_zsad_with_the_same_weights(same):
    net, v0, model, x, labels = same

    @jax.jit
    def zsad_proxies(v0, x, labels):  # one program: cheaper to compile than the operations one by one
        v = net.calibrate(v0, net.scalars, x)
        apply = lambda p, z: net.apply({**v, "params": p}, net.scalars, z)[0]  # noqa: E731
        _, outs = net.apply(v, net.scalars, x)
        loss = proxies.cross_entropy_loss(apply)
        return {
            "naswot": naswot_mod.naswot(naswot_mod.relu_codes([outs["1.batch_norm"], outs["3.dense"]])).value,
            "synflow": proxies.synflow(lambda p, z: net.apply({**v0, "params": p}, net.scalars, z)[0],
                                       v0["params"], (6,), where=is_kernel).value,
            "grad_norm": proxies.grad_norm(loss, v["params"], x, labels, where=is_kernel).value,
            "snip": proxies.snip(loss, v["params"], x, labels, where=is_kernel).value,
            "jacob_cov": proxies.jacob_cov(apply, v["params"], x).value,
        }

    expect = zsad_proxies(v0, jnp.asarray(x), jnp.asarray(labels))
    got = tm.measure(model, model.from_zsad(v0), torch.from_numpy(x), torch.from_numpy(labels), tuple(expect),
                     tangents=None, input_shape=(6,))
    for name, value in expect.items():  # jacob_cov's small eigenvalues amplify float32 rounding to ~1e-5
        assert got[name][1], name
        assert got[name][0] == pytest.approx(float(value), rel=1e-4), name


def test_sigma2_within_its_stderr_of_the_exact_value(same):
    _, v0, model, x, _ = same
    params = model.from_zsad(v0)
    xt = torch.from_numpy(x)
    bn = model.calibrate(params, xt)
    est = tm.sigma2(model, params, bn, xt, torch.Generator().manual_seed(0))
    h, fn = model.segment(params, bn, xt)  # layers 1..4 (batch norm to tanh): 32 -> 32
    assert h.shape == (5, 32)
    jac = [torch.autograd.functional.jacobian(lambda u: fn(u[None])[0], hi) for hi in h]
    exact = float(sum(j.square().sum() for j in jac) / len(jac) / 32)
    assert est["stderr"] > 0
    assert abs(est["value"] - exact) <= 4 * est["stderr"]
    assert math.isfinite(exact) and exact > 0
