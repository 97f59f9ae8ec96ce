"""Architecture files: the canonical form, every field, and one-line errors."""

import re
from pathlib import Path

import numpy as np
import pytest

import zsad
from zsad.arch.shapes import infer_shapes
from zsad.arch.spec import (
    Activation, Block, Conv, Dense, Residual, dump_architecture, expand, load_architecture,
)

SPEC = Path(__file__).resolve().parents[2] / "shared" / "SPEC.md"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def canonical_yaml() -> str:
    """The first ```yaml block of SPEC §5, exactly as written (bundled copy if SPEC is absent)."""
    if SPEC.exists():
        match = re.search(r"```yaml\n(.*?)```", SPEC.read_text(), re.S)
        return match.group(1)
    return (EXAMPLES / "canonical.yaml").read_text()


def write(tmp_path, text, name="arch.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_canonical_file_parses_as_written(tmp_path):
    arch = load_architecture(write(tmp_path, canonical_yaml()))
    assert arch.name == "tanh-mlp"
    assert arch.input.shape == (256,) and arch.input.data == "gaussian" and arch.input.std == 1.0
    assert (arch.init.dist, arch.init.weight_std, arch.init.bias_std) == ("normal", 1.0, 0.0)
    flat = list(expand(arch.layers))
    assert [layer.kind for layer in flat] == (["dense", "activation"] * 5 + ["residual", "layer_norm", "dense"])
    block = arch.layers[2]
    assert isinstance(block, Block) and block.repeat == 4
    assert block.layers[0].init.weight_std == 1.2 and block.layers[0].init.dist == "normal"
    res = flat[10]
    assert isinstance(res, Residual) and res.branch_scale == 1.0 and res.shortcut == ()
    assert [layer.kind for layer in res.branch] == ["dense", "activation", "dense"]
    assert infer_shapes(arch)[-1] == (10,)


def test_bundled_canonical_copy_matches_spec():
    if not SPEC.exists():
        pytest.skip("SPEC.md not beside the repository")
    assert (EXAMPLES / "canonical.yaml").read_text() == canonical_yaml()


@pytest.mark.parametrize("path", sorted(p for p in EXAMPLES.glob("*.yaml") if not p.stem.startswith("space")),
                         ids=lambda p: p.stem)
def test_examples_parse(path):
    arch = load_architecture(path)
    assert arch.name


def test_round_trip(tmp_path):
    arch = load_architecture(write(tmp_path, canonical_yaml()))
    out = tmp_path / "again.yaml"
    dump_architecture(arch, out)
    again = load_architecture(out)
    assert again == arch
    net_a, net_b = zsad.build(arch), zsad.build(again)
    assert net_a.layer_names == net_b.layer_names


def test_conv_fields_and_repeat_on_a_layer(tmp_path):
    text = """
name: cnn
input: {shape: [16, 16, 3]}
init: {dist: delta_orthogonal, weight_std: 1.0}
layers:
  - {type: conv, features: 8, kernel: 3, stride: 2, padding: same, repeat: 2}
  - {type: activation, fn: leaky_relu, negative_slope: 0.2}
  - {type: conv, features: 8, kernel: [3, 1], padding: valid, init: {dist: orthogonal}}
  - {type: max_pool, window: 2}
  - {type: global_avg_pool}
"""
    arch = load_architecture(write(tmp_path, text))
    flat = list(expand(arch.layers))
    assert isinstance(flat[0], Conv) and flat[0].stride == (2, 2) and flat[0].kernel == (3, 3)
    assert flat[1].stride == (2, 2)
    assert isinstance(flat[2], Activation) and dict(flat[2].params) == {"negative_slope": 0.2}
    assert flat[3].init.dist == "orthogonal" and flat[0].init.dist == "delta_orthogonal"
    assert infer_shapes(arch) == [(8, 8, 8), (4, 4, 8), (4, 4, 8), (2, 4, 8), (1, 2, 8), (8,)]


def test_one_d_convolution(tmp_path):
    text = "input: {shape: [32, 4]}\nlayers:\n  - {type: conv, features: 6, kernel: 5, padding: valid}\n"
    arch = load_architecture(write(tmp_path, text))
    assert infer_shapes(arch) == [(28, 6)]
    net = zsad.build(arch)
    import jax

    v = net.init(jax.random.key(0), net.scalars)
    y, _ = net.apply(v, net.scalars, np.ones((2, 32, 4), np.float32))
    assert y.shape == (2, 28, 6)


def test_every_activation_builds(tmp_path):
    import jax

    from zsad.activations import ACTIVATIONS

    for fn in ACTIVATIONS:
        text = f"input: {{shape: [4]}}\nlayers:\n  - {{type: activation, fn: {fn}}}\n"
        net = zsad.build(load_architecture(write(tmp_path, text)))
        y, _ = net.apply(net.init(jax.random.key(0), net.scalars), net.scalars, np.ones((2, 4), np.float32))
        assert np.all(np.isfinite(y)), fn


BAD = [
    ("input: {shape: [4]}\nlayers:\n  - {type: dense, features: 4\n", r"arch\.yaml:\d+:\d+: malformed YAML"),
    ("input: {shape: [4]}\nlayers:\n  - {type: dens, features: 4}\n",
     r"arch\.yaml:3:12: layers\.0\.type: expected one of dense, conv, .*; got 'dens'; did you mean 'dense'\?$"),
    ("input: {shape: [4]}\nlayers:\n  - {type: activation, fn: tahn}\n",
     r"arch\.yaml:3:28: layers\.0\.fn: expected one of relu, .*tanh.*; got 'tahn'; did you mean 'tanh'\?$"),
    ("input: {shape: [4]}\nlayers:\n  - {type: dense, feature: 4}\n",
     r"arch\.yaml:3:19: layers\.0\.feature: expected a field of dense layer \(features, use_bias, init.*got unknown field 'feature'; did you mean 'features'\?$"),
    ("input: {shape: [4]}\nlayers:\n  - {type: dense, features: -3}\n",
     r"arch\.yaml:3:29: layers\.0\.features: expected an integer >= 1; got -3"),
    ("input: {shape: [4]}\ninit: {dist: gaussian}\nlayers:\n  - {type: dense, features: 3}\n",
     r"init\.dist: expected one of normal, truncated_normal"),
    ("input: {shape: [4]}\nlayers:\n  - {type: conv, features: 3, kernel: 3}\n",
     r"arch\.yaml:3:5: layers\.0 \(conv\): expected an input of shape \[L, C\], got \[4\]"),
    ("input: {shape: [8]}\nlayers:\n  - type: residual\n    branch: [{type: dense, features: 4}]\n",
     r"layers\.0 \(residual\): branch output shape \[4\] differs from shortcut output shape \[8\]"),
    ("layers:\n  - {type: dense, features: 3}\n", r"expected a field 'input'"),
    ("input: {shape: [4]}\nlayers: []\n", r"layers: expected a non-empty list of layers"),
    ("input: {shape: [4]}\nmodule: nocolon\n", r"module: expected 'package\.module:factory'"),
]


@pytest.mark.parametrize("text,pattern", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_files_give_one_line_errors(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(zsad.SpecError) as err:
        load_architecture(path)
    message = str(err.value)
    assert "\n" not in message
    assert re.search(pattern, message), message
    assert message.startswith(str(path))


def test_data_files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((50, 6)).astype(np.float32))
    np.savez(tmp_path / "d.npz", a=np.ones((10, 6)), b=np.zeros((3, 6)))
    arch = load_architecture(write(tmp_path, "input: {shape: [6], data: x.npy}\nlayers: [{type: dense, features: 2}]\n"))
    x = zsad.load_inputs(arch.input, 20, base_dir=arch.base_dir)
    assert x.shape == (20, 6) and x.dtype == np.float32
    assert len({tuple(row) for row in x}) == 20  # drawn without replacement
    arch = load_architecture(write(tmp_path, "input: {shape: [6], data: d.npz, key: b}\nlayers: [{type: flatten}]\n"))
    assert zsad.load_inputs(arch.input, 3, base_dir=arch.base_dir).shape == (3, 6)
    # fewer samples than the batch: refused, never a smaller batch than the one reported
    with pytest.raises(zsad.DataError, match=r":1:\d+: input\.data: expected at least 20 samples \(the batch\); got 3"):
        zsad.load_inputs(arch.input, 20, base_dir=arch.base_dir)


@pytest.mark.parametrize("text,pattern", [
    ("input: {shape: [6], data: missing.npy}\nlayers: [{type: flatten}]\n", r"input\.data: cannot read .*missing\.npy"),
    ("input: {shape: [5], data: x.npy}\nlayers: [{type: flatten}]\n", r"expected samples of shape \[N, 5\], got an array of shape \[50, 6\]"),
    ("input: {shape: [6], data: d.npz}\nlayers: [{type: flatten}]\n", r"holds several arrays \(a, b\)"),
], ids=["missing", "shape", "npz-key"])
def test_bad_data(tmp_path, text, pattern):
    np.save(tmp_path / "x.npy", np.ones((50, 6)))
    np.savez(tmp_path / "d.npz", a=np.ones((10, 6)), b=np.zeros((3, 6)))
    arch = load_architecture(write(tmp_path, text))
    with pytest.raises(zsad.DataError, match=pattern):
        zsad.load_inputs(arch.input, 8, base_dir=arch.base_dir, source=arch.source)


def _apply(arch, x):
    import jax

    net = zsad.build(arch)
    y, _ = net.apply(net.init(jax.random.key(0), net.scalars), net.scalars, x)
    return np.asarray(y)


def test_activation_parameters_are_not_shaping_scalars(tmp_path):
    """ELU's parameter ``alpha`` and the shaping scalar ``alpha`` are two scalars: each acts alone."""
    x = np.linspace(-3.0, 3.0, 8, dtype=np.float32).reshape(2, 4)
    elu = lambda s, a: np.where(s > 0, s, a * np.expm1(np.minimum(s, 0.0)))  # noqa: E731

    def arch(act):
        return load_architecture(write(tmp_path, f"input: {{shape: [4]}}\nlayers:\n  - {act}\n"))

    np.testing.assert_allclose(_apply(arch("{type: activation, fn: elu, alpha: 0.5}"), x), elu(x, 0.5), rtol=1e-6)
    np.testing.assert_allclose(_apply(arch("{type: activation, fn: elu, shaping: {alpha: 0.5}}"), x),
                               0.5 * elu(x, 1.0) + 0.5 * x, rtol=1e-6)
    np.testing.assert_allclose(_apply(arch("{type: activation, fn: elu, alpha: 0.3, shaping: {alpha: 0.5, gain: 2}}"),
                                      x), 2 * (0.5 * elu(x, 0.3) + 0.5 * x), rtol=1e-6)


def test_an_activation_choice_computes_the_chosen_function(tmp_path):
    """``with_choices``: one structure for every candidate function, and each architecture's own outputs."""
    import dataclasses

    import jax

    from zsad.arch.build import activation_fns, signature, structure, with_choices

    def arch(act):
        return load_architecture(write(tmp_path, f"""
input: {{shape: [4]}}
layers:
  - {{type: block, repeat: 2, layers: [{{type: dense, features: 8}}, {act}]}}
  - {{type: residual, branch: [{{type: dense, features: 8}}, {{type: activation, fn: tanh}}]}}
  - {{type: dense, features: 2}}
"""))

    acts = ["{type: activation, fn: relu}", "{type: activation, fn: elu, alpha: 0.5}",
            "{type: activation, fn: leaky_relu, negative_slope: 0.2}", "{type: activation, fn: tanh}"]
    archs = [arch(a) for a in acts]
    assert activation_fns(archs[1].layers) == ("elu", "tanh")
    assert len({signature(a.layers) for a in archs}) == 1 and len({structure(a.layers) for a in archs}) == 4
    choices = (("elu", "leaky_relu", "relu", "tanh"), ("tanh",))
    chosen = [dataclasses.replace(a, layers=with_choices(a.layers, choices)) for a in archs]
    assert len({structure(a.layers) for a in chosen}) == 1  # one program
    x = np.asarray(jax.random.normal(jax.random.key(1), (5, 4)))
    outputs = [_apply(a, x) for a in archs]
    for a, want in zip(chosen, outputs):
        np.testing.assert_array_equal(_apply(a, x), want)
    assert not np.allclose(outputs[0], outputs[1])
    names = [name for name, _ in zsad.arch.spec.named_layers(chosen[0].layers)]
    assert names[1] == "1.elu|leaky_relu|relu|tanh"
    with pytest.raises(ValueError, match="not among the choices"):
        with_choices(archs[0].layers, (("tanh", "elu"), ("tanh",)))
