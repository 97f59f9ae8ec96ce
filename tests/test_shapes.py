"""Static shape inference (zsad.arch.shapes): analytic output lengths, agreement with the built network,
and one-line errors before anything is traced."""

import jax
import jax.numpy as jnp
import pytest

import zsad
from zsad._errors import SpecError
from zsad.arch.shapes import infer_shapes, spatial_out

from helpers import arch_from


@pytest.mark.parametrize("n, window, stride, padding, expected", [
    (7, 3, 1, "same", 7), (7, 3, 2, "same", 4), (8, 3, 2, "same", 4),  # ceil(n / stride)
    (7, 3, 1, "valid", 5), (7, 3, 2, "valid", 3), (8, 2, 2, "valid", 4),  # floor((n - k) / s) + 1
    (7, 3, 2, 1, 4), (5, 5, 1, 2, 5), (4, 3, 3, 0, 1),  # floor((n + 2p - k) / s) + 1
])
def test_spatial_out_closed_form(n, window, stride, padding, expected):
    assert spatial_out(n, window, stride, padding) == expected


CNN = {"name": "shapes", "input": {"shape": [9, 9, 3]}, "layers": [
    {"type": "conv", "features": 8, "kernel": 3, "stride": 2},  # same: 9 -> 5
    {"type": "activation", "fn": "relu"},
    {"type": "conv", "features": 6, "kernel": [3, 1], "padding": 1},  # 5 -> 5 and 5 -> 7
    {"type": "avg_pool", "window": 2, "stride": 1, "padding": "same"},
    {"type": "residual", "branch": [{"type": "conv", "features": 6, "kernel": 3}, {"type": "batch_norm"}]},
    {"type": "max_pool", "window": [2, 3], "stride": [2, 3]},  # valid: 5 -> 2, 7 -> 2
    {"type": "layer_norm"},
    {"type": "flatten"},
    {"type": "dense", "features": 5},
]}


def test_inferred_shapes_are_the_built_networks():
    arch = arch_from(CNN)
    expected = [(5, 5, 8), (5, 5, 8), (5, 7, 6), (5, 7, 6), (5, 7, 6), (2, 2, 6), (2, 2, 6), (24,), (5,)]
    assert infer_shapes(arch) == expected
    net = zsad.build(arch)
    variables = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
    x = jax.ShapeDtypeStruct((2, *arch.input.shape), jnp.float32)
    _, inter = jax.eval_shape(net.apply, variables, net.scalars, x)
    assert [tuple(inter[name].shape[1:]) for name in net.layer_names] == expected


@pytest.mark.parametrize("layers, message", [
    ([{"type": "conv", "features": 4, "kernel": [3, 3]}], r"expected an input of shape \[H, W, C\], got \[6\]"),
    ([{"type": "max_pool", "window": 7}], r"window \[7\] does not fit input of shape \[6, 2\]"),
    ([{"type": "residual", "branch": [{"type": "dense", "features": 3}]}],
     r"branch output shape \[3\] differs from shortcut output shape \[6\]"),
    ([{"type": "global_avg_pool"}], r"expected an input with spatial axes and channels, got \[6\]"),
])
def test_mismatches_are_one_line_errors_naming_the_layer(layers, message):
    with pytest.raises(SpecError, match=message) as err:
        arch_from({"name": "bad", "input": {"shape": [6] if layers[0]["type"] != "max_pool" else [6, 2]},
                   "layers": layers})
    assert "\n" not in str(err.value) and f"layers.0 ({layers[0]['type']}): " in str(err.value)
