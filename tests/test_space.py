"""Search-space files: every form, the canonical files of SPEC §5, and one-line errors."""

import textwrap
from pathlib import Path

import pytest

from zsad.spaces import nasbench201 as nb
from zsad._errors import SpecError
from zsad.arch.spec import Architecture
from zsad.space import load_space

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MLP = """\
name: mlp
input: {shape: [8]}
init: {dist: normal, weight_std: 1.0, bias_std: 0.0}
layers:
  - {type: dense, features: 16}
  - {type: activation, fn: tanh}
  - {type: dense, features: 4}
"""

# SPEC §5, verbatim.
CANONICAL_PRODUCT = """\
# form 2: a base architecture and choices; a field is a dotted path, list items by index
base: mlp.yaml                 # relative to the space file, or an inline architecture mapping
choices:
  layers.1.fn: [relu, tanh, gelu]
  init.weight_std: [1.0, 1.41, 2.0]
sample: 6                      # optional: a seeded sample of the product instead of all of it
seed: 0
"""
CANONICAL_NB201 = """\
# form 3: the built-in NAS-Bench-201 space
space: nas-bench-201
archs: {sample: 100, seed: 0}   # or: all, or a list of architecture strings (section 6)
"""

A1 = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"
A2 = "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def mlp_dir(tmp_path):
    write(tmp_path, "mlp.yaml", MLP)
    return tmp_path


def ids(space):
    return [item.id for item in space]


# --------------------------------------------------------------------------- form 1

def test_list_of_files_and_inline(mlp_dir):
    path = write(mlp_dir, "s.yaml", """\
        archs:
          - mlp.yaml
          - name: inline
            input: {shape: [4]}
            layers: [{type: dense, features: 2}]
          - {input: {shape: [4]}, layers: [{type: dense, features: 3}]}
        """)
    space = load_space(path)
    assert space.form == "list" and space.size == 3
    items = list(space)
    assert [i.id for i in items] == ["mlp", "inline", "s-2"]
    assert all(isinstance(i.arch, Architecture) and i.error is None for i in items)
    assert items[0].arch.layers[1].fn == "tanh"
    assert ids(space) == ids(space)  # re-iterable


def test_list_errors_name_the_entry(mlp_dir):
    path = write(mlp_dir, "s.yaml", "archs:\n  - mlp.yaml\n  - nope.yaml\n")
    with pytest.raises(SpecError, match=r"s\.yaml:3:5: archs\.1: expected an architecture file .*; got 'nope\.yaml'"):
        load_space(path)
    path = write(mlp_dir, "s.yaml", "archs:\n  - mlp.yaml\n  - mlp.yaml\n")
    with pytest.raises(SpecError, match="archs.1: expected a unique architecture name"):
        load_space(path)
    path = write(mlp_dir, "s.yaml", "archs:\n  - {input: {shape: [4]}, layers: [{type: activation, fn: tahn}]}\n")
    expected = r"s\.yaml:2:\d+: archs\.0\.layers\.0\.fn: expected one of .*did you mean 'tanh'"
    with pytest.raises(SpecError, match=expected):
        load_space(path)


# --------------------------------------------------------------------------- form 2

def test_canonical_product_parses_as_written(mlp_dir):
    space = load_space(write(mlp_dir, "space.yaml", CANONICAL_PRODUCT))
    assert space.form == "product" and space.size == 6
    items = list(space)
    assert len({i.id for i in items}) == 6
    first = items[0].arch
    assert isinstance(first, Architecture) and first.name == items[0].id
    assert items[0].id.startswith("mlp[layers.1.fn=") and ",init.weight_std=" in items[0].id
    # the chosen values are really applied
    for item in items:
        fn = item.id.split("layers.1.fn=")[1].split(",")[0]
        std = float(item.id.split("init.weight_std=")[1].rstrip("]"))
        assert item.arch.layers[1].fn == fn and item.arch.layers[0].init.weight_std == std
    # same seed: same sample; another seed: (here) another one
    assert ids(load_space(mlp_dir / "space.yaml")) == ids(space)
    other = write(mlp_dir, "other.yaml", CANONICAL_PRODUCT.replace("seed: 0", "seed: 5"))
    assert ids(load_space(other)) != ids(space)
    assert load_space(other).fingerprint != space.fingerprint


def test_full_product_order_and_inline_base(tmp_path):
    path = write(tmp_path, "s.yaml", """\
        base:
          name: tiny
          input: {shape: [4]}
          layers:
            - {type: dense, features: 2}
            - {type: activation, fn: relu}
        choices:
          layers.0.features: [2, 3]
          layers.1.fn: [relu, tanh]
        """)
    space = load_space(path)
    assert space.size == 4
    assert ids(space) == ["tiny[layers.0.features=2,layers.1.fn=relu]", "tiny[layers.0.features=2,layers.1.fn=tanh]",
                          "tiny[layers.0.features=3,layers.1.fn=relu]", "tiny[layers.0.features=3,layers.1.fn=tanh]"]


def test_choice_may_add_a_known_field(mlp_dir):
    path = write(mlp_dir, "s.yaml", "base: mlp.yaml\nchoices:\n  layers.0.use_bias: [true, false]\n")
    assert [i.arch.layers[0].use_bias for i in load_space(path)] == [True, False]


@pytest.mark.parametrize("field, expected", [
    ("layers.1.fnn", r"s\.yaml:3:3: choices\.layers\.1\.fnn: expected a field that exists in the base architecture"),
    ("layers.9.fn", r"choices\.layers\.9\.fn: expected a field that exists .*layers has 3 items"),
    ("inti.weight_std", r"choices\.inti\.weight_std: expected a field that exists"),
], ids=["unknown-key", "index-out-of-range", "unknown-top"])
def test_choice_field_that_does_not_exist(mlp_dir, field, expected):
    path = write(mlp_dir, "s.yaml", f"base: mlp.yaml\nchoices:\n  {field}: [relu, tanh]\n")
    with pytest.raises(SpecError, match=expected) as err:
        load_space(path)
    assert "\n" not in str(err.value) and field in str(err.value)


def test_choice_bad_value_points_at_the_value(mlp_dir):
    path = write(mlp_dir, "s.yaml", "base: mlp.yaml\nchoices:\n  layers.1.fn: [relu, tahn]\n")
    with pytest.raises(SpecError, match=r"s\.yaml:3:\d+: choices\.layers\.1\.fn\.1: value 'tahn' makes the base "
                                        r"architecture invalid: .*did you mean 'tanh'"):
        load_space(path)


def test_choice_values_must_be_distinct(mlp_dir):
    path = write(mlp_dir, "s.yaml", "base: mlp.yaml\nchoices:\n  init.weight_std: [1.0, 2.0, 1.0]\n")
    with pytest.raises(SpecError, match=r"choices\.init\.weight_std\.2: expected distinct values \(item 0"):
        load_space(path)


def test_sample_larger_than_product(mlp_dir):
    path = write(mlp_dir, "s.yaml", "base: mlp.yaml\nchoices:\n  layers.1.fn: [relu, tanh]\nsample: 3\n")
    with pytest.raises(SpecError, match=r"s\.yaml:4:9: sample: expected at most 2 \(the size of the product"):
        load_space(path)


def test_jointly_invalid_combination_is_an_item_error(tmp_path):
    # each value alone fits the base; a 9-wide valid convolution on a length-8 input does not
    path = write(tmp_path, "s.yaml", """\
        base:
          input: {shape: [8, 3]}
          layers:
            - {type: conv, features: 4, kernel: 3, padding: same}
            - {type: flatten}
            - {type: dense, features: 2}
        choices:
          layers.0.kernel: [3, 9]
          layers.0.padding: [same, valid]
        """)
    items = list(load_space(path))
    assert len(items) == 4
    assert [i.error is None for i in items] == [True, True, True, False]
    assert items[3].arch is None and items[3].error.startswith("invalid combination of choices: ")
    assert "\n" not in items[3].error


# --------------------------------------------------------------------------- form 3

def test_canonical_nb201_parses_as_written(tmp_path):
    space = load_space(write(tmp_path, "nb.yaml", CANONICAL_NB201))
    assert space.form == "nas-bench-201" and space.size == 100
    items = list(space)
    assert [i.arch for i in items] == nb.sample_archs(100, 0)
    assert all(i.is_nb201 and i.id == nb.format_arch(i.arch) for i in items)
    assert space.input.shape == (32, 32, 3) and space.input.data == "gaussian"


def test_nb201_all_and_list_and_input(tmp_path):
    space = load_space(write(tmp_path, "all.yaml", "space: nas-bench-201\narchs: all\n"))
    assert space.size == nb.NUM_ARCHS
    first = next(iter(space))
    assert first.arch == ("none",) * 6
    space = load_space(write(tmp_path, "l.yaml", f"""\
        space: nas-bench-201
        archs: ['{A1}', ' {A2} ']
        input: {{std: 0.5}}
        """))
    assert ids(space) == [A1, A2] and space.input.std == 0.5
    space = load_space(write(tmp_path, "d.yaml", f"space: nas-bench-201\narchs: ['{A1}']\ndata: batch.npy\n"))
    assert space.input.data == "batch.npy"


@pytest.mark.parametrize("text, expected", [
    (f"space: nas-bench-201\narchs: ['{A1}', '{A1.replace('nor_conv_1x1', 'conv_5x5')}']\n",
     r"n\.yaml:2:\d+: archs\.1: architecture .*expected one of none, skip_connect.*got 'conv_5x5'"),
    ("space: nas-bench-201\narchs: ['|nor_conv_3x3~0|+|none~0|']\n",
     r"archs\.0: architecture .*expected 3 nodes"),
    ("space: nas-bench-201\narchs: {sample: 20000, seed: 0}\n",
     r"n\.yaml:2:17: archs\.sample: expected at most 15625 .*; got 20000"),
    ("space: nas-bench-202\narchs: all\n", r"n\.yaml:1:8: space: expected one of nas-bench-201"),
    ("space: nas-bench-201\narchs: some\n", r"archs: expected all, \{sample: N, seed: S\}"),
    ("space: nas-bench-201\narchs: all\ninput: {shape: [28, 28, 1]}\n", r"input\.shape: expected \[32, 32, 3\]"),
    ("space: nas-bench-201\narchs: all\nsampel: 3\n", r"unknown field 'sampel'"),
], ids=["unknown-op", "malformed", "sample-too-large", "unknown-space", "bad-archs", "bad-shape", "unknown-field"])
def test_nb201_errors(tmp_path, text, expected):
    with pytest.raises(SpecError, match=expected) as err:
        load_space(write(tmp_path, "n.yaml", text))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- form 4

def test_generator(tmp_path):
    write(tmp_path, "gen_mod.py", """\
        from zsad.arch.spec import parse_architecture

        def archs():
            for width in (2, 3):
                yield {"name": f"w{width}", "input": {"shape": [4]}, "layers": [{"type": "dense", "features": width}]}
            yield parse_architecture({"input": {"shape": [4]}, "layers": [{"type": "flatten"}]}, default_name="obj")
            yield {"input": {"shape": [4]}, "layers": [{"type": "dense", "features": 0}]}

        def broken():
            yield {"input": {"shape": [4]}, "layers": [{"type": "flatten"}]}
            raise RuntimeError("generator exploded")
        """)
    space = load_space(write(tmp_path, "g.yaml", "generator: gen_mod:archs\n"))
    assert space.form == "generator" and space.size is None
    items = list(space)
    assert [i.id for i in items] == ["w2", "w3", "obj", "archs-3"]
    assert items[3].arch is None and "features: expected an integer >= 1" in items[3].error
    assert [i.id for i in space] == [i.id for i in items]
    broken = load_space(write(tmp_path, "b.yaml", "generator: gen_mod:broken\n"))
    with pytest.raises(SpecError, match=r"generator: gen_mod:broken\(\) failed after 1 architectures: "
                                        "RuntimeError: generator exploded"):
        list(broken)


def test_generator_errors(tmp_path):
    with pytest.raises(SpecError, match=r"g\.yaml:1:12: generator: cannot import 'no_such_module'"):
        load_space(write(tmp_path, "g.yaml", "generator: no_such_module:f\n"))
    with pytest.raises(SpecError, match=r"generator: expected 'package\.module:function'"):
        load_space(write(tmp_path, "g.yaml", "generator: just_a_name\n"))


# --------------------------------------------------------------------------- files in general

def test_not_a_space(tmp_path):
    with pytest.raises(SpecError, match="expected one of the search-space forms"):
        load_space(write(tmp_path, "x.yaml", "layers: []\n"))
    with pytest.raises(SpecError, match="malformed YAML"):
        load_space(write(tmp_path, "x.yaml", "archs: [\n"))


@pytest.mark.parametrize("name, size", [("space_mlp", 9), ("space_list", 3), ("space_generator", 4),
                                        ("space_nb201", 8)])
def test_bundled_examples_parse(name, size):
    space = load_space(EXAMPLES / f"{name}.yaml")
    items = list(space)
    assert len(items) == size and all(i.error is None for i in items)
