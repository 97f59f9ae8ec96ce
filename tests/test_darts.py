"""DARTS / NAS-Bench-301: the genotype notation, sampling, exact counts, the masked program against directly
built networks, and the space and score files."""

import csv
import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ranked_rows, run_cli
from zsad._errors import SpecError
from zsad.nlc import nlc_of_tangents, push_tangents
from zsad.cell_file import parse_cell
from zsad.space import BuiltinArch, load_space
from zsad.spaces import darts_net, get_space, restrict
from zsad.spaces.darts import DartsSpace
from zsad.spaces.darts_genotype import OPS, Genotype, format_genotype, parse_genotype

REFERENCE = Path(__file__).resolve().parent / "data" / "space_reference.csv"

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")

# Every operation in both cells, on the cell inputs (stride 2 in the reduction cell) and on intermediate nodes.
COVER_A = Genotype(
    normal=(("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("skip_connect", 2), ("sep_conv_3x3", 0),
            ("sep_conv_5x5", 3), ("dil_conv_3x3", 1), ("dil_conv_5x5", 4), ("skip_connect", 0)),
    reduce=(("skip_connect", 0), ("sep_conv_5x5", 1), ("max_pool_3x3", 2), ("dil_conv_3x3", 0),
            ("avg_pool_3x3", 3), ("dil_conv_5x5", 1), ("sep_conv_3x3", 4), ("max_pool_3x3", 2)))
COVER_B = Genotype(
    normal=(("dil_conv_5x5", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 2), ("max_pool_3x3", 1),
            ("sep_conv_5x5", 0), ("skip_connect", 3), ("dil_conv_3x3", 2), ("avg_pool_3x3", 4)),
    reduce=(("avg_pool_3x3", 1), ("dil_conv_5x5", 0), ("sep_conv_5x5", 2), ("skip_connect", 1),
            ("dil_conv_3x3", 3), ("max_pool_3x3", 0), ("skip_connect", 4), ("sep_conv_3x3", 2)))

TINY = dict(width=4, depth=3, input_shape=(8, 8, 3))


def _reference_rows():
    with REFERENCE.open() as f:
        return [r for r in csv.DictReader(f) if r["space"] == "nb301"]


# --------------------------------------------------------------------------- notation

def test_genotype_string_and_mapping_parse_alike_and_round_trip():
    g = parse_genotype(DARTS_V2)
    assert g.normal[7] == ("dil_conv_3x3", 2) and g.reduce[0] == ("max_pool_3x3", 0)
    assert format_genotype(g) == DARTS_V2
    mapping = {"normal": [list(p) for p in g.normal], "reduce": [list(p) for p in g.reduce]}
    assert parse_genotype(mapping) == g
    assert parse_genotype({**mapping, "normal_concat": [2, 3, 4, 5], "reduce_concat": [2, 3, 4, 5]}) == g
    assert parse_genotype("  " + DARTS_V2.replace(", ", ",\n    ") + "\n") == g
    assert parse_genotype(DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)")) == g
    for s in DartsSpace().sample(50, seed=4):
        assert parse_genotype(format_genotype(s)) == s


def test_reference_genotypes_round_trip():
    for row in _reference_rows():
        assert format_genotype(parse_genotype(row["arch"])) == row["arch"]


@pytest.mark.parametrize("text, fragment", [
    (DARTS_V2.replace("'sep_conv_3x3', 0", "'sep_conv_7x7', 0", 1),
     "normal.0: expected an operation among max_pool_3x3"),
    (DARTS_V2.replace("('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)",
                      "('sep_conv_3x3', 2), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", 1),
     "normal.0: node 2's input must be an existing node 0..1; got 2"),
    (DARTS_V2.replace("('skip_connect', 2), ('max_pool_3x3', 1)", "('skip_connect', 4), ('max_pool_3x3', 1)", 1),
     "reduce.2: node 3's input must be an existing node 0..2; got 4"),
    (DARTS_V2.replace("('sep_conv_3x3', 0), ", "", 1), "normal: expected 8 (operation, input) pairs"),
    (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 3, 4]"), "reduce_concat: expected [2, 3, 4, 5]"),
    (DARTS_V2.replace("Genotype(", "Genome("), "expected Genotype(normal=[(op, input) x 8]"),
    (DARTS_V2[:-1], "expected Genotype(normal="),
    ("Genotype(normal=[], reduce=[])", "normal: expected 8 (operation, input) pairs"),
    ("Genotype(normal=x, reduce=[])", "normal: expected a list of literals"),
    ("Genotype(normal=[('sep_conv_3x3', 0)])", "expected the fields normal, reduce"),
    (DARTS_V2.replace("('sep_conv_3x3', 1), ('sep_conv_3x3', 0)", "('sep_conv_3x3', 1, 2), ('sep_conv_3x3', 0)", 1),
     "normal.1: expected a pair (operation, input node)"),
])
def test_bad_genotypes(text, fragment):
    with pytest.raises(SpecError) as err:
        parse_genotype(text)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unknown_operation_suggests_the_closest():
    with pytest.raises(SpecError, match="did you mean 'sep_conv_3x3'"):
        parse_genotype(DARTS_V2.replace("'sep_conv_3x3', 0", "'sepconv_3x3', 0", 1))


def test_sample_follows_the_darts_rule():
    space = DartsSpace()
    a, b = space.sample(300, seed=1), space.sample(300, seed=1)
    assert a == b and len(set(a)) == 300 and space.sample(300, seed=2) != a
    seen_ops, seen_inputs = set(), set()
    for g in a:
        for cell in (g.normal, g.reduce):
            for i in range(4):
                (op1, s1), (op2, s2) = cell[2 * i], cell[2 * i + 1]
                assert s1 != s2 and 0 <= s1 < i + 2 and 0 <= s2 < i + 2  # two distinct earlier nodes
                seen_ops |= {op1, op2}
                seen_inputs |= {(i, s1), (i, s2)}
    assert seen_ops == set(OPS) and len(seen_inputs) == 2 + 3 + 4 + 5
    with pytest.raises(SpecError, match="too large to enumerate"):
        space.all()


# --------------------------------------------------------------------------- exact counts

def test_parameter_counts_and_flops_equal_the_reference():
    space = DartsSpace()
    rows = _reference_rows()
    assert len(rows) == 8
    for row in rows:
        g = space.parse(row["arch"])
        assert space.params(g) == int(row["params"])
        assert space.flops(g) == round(float(row["flops_m"]) * 1e6)  # the same convention: ratio 1


@pytest.mark.parametrize("width, depth, shape", [(4, 3, (8, 8, 3)), (6, 5, (12, 8, 3))])
def test_built_networks_hold_exactly_the_counted_parameters(width, depth, shape):
    space = DartsSpace(width, depth, shape)
    for g in (COVER_A, COVER_B):
        net = space.network(g)
        tree = jax.eval_shape(net.init, jax.random.key(0), net.scalars)
        assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree["params"])) == space.params(g)


def test_pools_match_flax():
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
    for stride in (1, 2):
        ref_max = nn.max_pool(x, (3, 3), (stride, stride), ((1, 1), (1, 1)))
        ref_avg = nn.avg_pool(x, (3, 3), (stride, stride), ((1, 1), (1, 1)), count_include_pad=False)
        np.testing.assert_allclose(darts_net._max_pool(x, stride), ref_max, rtol=1e-6)
        np.testing.assert_allclose(darts_net._avg_pool(x, stride), ref_avg, rtol=1e-6)


# --------------------------------------------------------------------------- masked program vs direct networks

def _outs_and_nlc(net, variables, scalars, x, tangents):
    (y, _), ((pushed, _), _) = push_tangents(lambda z: net.apply_calibrating(variables, scalars, z), x, tangents)
    return y[1], nlc_of_tangents(y[0], pushed).nlc


def test_masked_program_equals_direct_networks(x64):
    space = DartsSpace(**TINY)
    program = space.program(space.group(COVER_A))
    key = jax.random.key(3)
    variables = program.init(key, space.scalars(COVER_A))
    x = jax.random.normal(jax.random.key(1), (6, *TINY["input_shape"]))
    tangents = jax.random.normal(jax.random.key(2), (2, *x.shape))
    run = jax.jit(lambda sc: _outs_and_nlc(program, variables, sc, x, tangents))
    heads = [run(space.scalars(COVER_B))[0]["head"]]  # the program on another genotype
    for g in (COVER_A,):  # COVER_A holds every operation: one direct network is enough
        net = space.network(g)
        direct = net.init(key, net.scalars)  # eager, as the program's draws above
        assert jax.tree.all(jax.tree.map(jnp.array_equal, restrict(variables, direct), direct))  # same weights
        (outs_p, nlc_p), (outs_d, nlc_d) = (run(space.scalars(g)),
                                            jax.jit(lambda v: _outs_and_nlc(net, v, net.scalars, x, tangents))(direct))
        for name in net.layer_names:
            np.testing.assert_allclose(outs_p[name], outs_d[name], rtol=1e-9, atol=1e-9)
        assert float(nlc_p) == pytest.approx(float(nlc_d), rel=1e-9) and float(nlc_d) > 1.0
        heads.append(outs_p["head"])
    assert not np.allclose(*heads)  # the scalars do choose the architecture


def test_each_switch_carries_its_own_edges_variables():
    """An edge's switch takes that edge's variables (and its inputs), not its cell's: with the cell's,
    each of the program's 24 switches took every variable of the cell as operands, and tracing the
    program's derivatives took several times as long."""
    space = DartsSpace(**TINY)
    program = space.program(())
    sc = space.scalars(COVER_A)
    variables = jax.eval_shape(program.init, jax.random.key(0), sc)
    cells = [f"cell{i}" for i in range(TINY["depth"])]

    def leaves(cell, *edge):
        return sum(len(jax.tree.leaves(variables[kind][cell].get(*edge) if edge else variables[kind][cell]))
                   for kind in ("params", "batch_stats"))

    jaxpr = jax.make_jaxpr(lambda v, x: program.apply(v, sc, x))(variables, jnp.zeros((2, *TINY["input_shape"])))
    switches = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond" and len(e.params["branches"]) >= 7]
    assert len(switches) == 8 * len(cells)  # one per edge
    largest_edge = max(leaves(c, f"e{e}") for c in cells for e in range(8))
    assert max(len(e.invars) for e in switches) <= largest_edge + 3 < min(leaves(c) for c in cells)


def test_program_shares_its_draws():
    space = DartsSpace(**TINY)
    program = space.program(())
    (dist, fold, dtype, shapes), = program.draws
    key = jax.random.key(5)
    from zsad import draws

    flat = draws.draw(dist, key[None], sum(math.prod(s) for s in shapes), dtype, fold=fold)[0]
    ends = np.cumsum([math.prod(s) for s in shapes])
    pieces = [flat[e - math.prod(s):e].reshape(s) for s, e in zip(shapes, ends)]
    sc = space.scalars(COVER_B)
    shared, inside = program.init_with({"normal": pieces}, key, sc), program.init(key, sc)
    assert jax.tree.all(jax.tree.map(lambda a, b: np.allclose(a, b, rtol=1e-6), shared, inside))


# --------------------------------------------------------------------------- files, rank and score

def _flow(pairs) -> str:
    """A cell's pairs as a YAML flow list ``[[op, input], ...]``."""
    return "[" + ", ".join(f"[{op}, {src}]" for op, src in pairs) + "]"


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_space_file_forms_and_options(tmp_path):
    path = _write(tmp_path, f"""space: nb301
width: 4
depth: 3
input: {{shape: [8, 8, 3]}}
archs:
  - "{DARTS_V2}"
  - {{normal: {_flow(COVER_A.normal)}, reduce: {_flow(COVER_A.reduce)}}}
""")
    space = load_space(path)
    items = list(space)
    assert space.form == "darts" and space.size == 2 and [i.id for i in items][0] == DARTS_V2
    assert isinstance(items[1].arch, BuiltinArch) and items[1].arch.arch == COVER_A
    assert items[1].arch.space.options() == {"width": 4, "depth": 3} and space.input.shape == (8, 8, 3)
    sampled = load_space(_write(tmp_path, "space: darts\narchs: {sample: 3, seed: 2}\n", "s.yaml"))
    assert [i.arch.arch for i in sampled] == DartsSpace().sample(3, 2) and sampled.input.shape == (32, 32, 3)
    assert sampled.fingerprint != load_space(_write(tmp_path, "space: darts\nwidth: 16\narchs: {sample: 3, seed: 2}\n",
                                                    "w.yaml")).fingerprint
    assert get_space("NB301") is DartsSpace
    with pytest.raises(SpecError, match="nas-bench-201 has no space class"):
        get_space("nb201")  # a space of its own form, not a BuiltinSpace


@pytest.mark.parametrize("body, fragment", [
    ("archs:\n  - \"Genotype(normal=[], reduce=[])\"", ":5:5: archs.0: normal: expected 8"),
    (f"archs:\n  - \"{DARTS_V2}\"\n  - \"{DARTS_V2.replace('max_pool_3x3', 'maxpool_3x3', 1)}\"",
     ":6:5: archs.1: reduce.0: expected an operation among"),
    (f"archs:\n  - \"{DARTS_V2}\"\n  - \"{DARTS_V2}\"", ":6:5: archs.1: expected distinct architectures"),
    ("archs: all", ":4:8: archs: expected {sample: N, seed: S} or a list"),
    ("archs: {sample: 0}", "archs.sample: expected an integer >= 1"),
    ("width: 3\narchs: {sample: 1}", ":2:8: width: expected an even integer >= 2; got 3"),
    ("depth: 2\narchs: {sample: 1}", "depth: expected an integer >= 3; got 2"),
    ("input: {shape: [30, 32, 3]}\narchs: {sample: 1}", "input.shape: expected [H, W, 3] with H and W multiples of 4"),
    ("layers: 8\narchs: {sample: 1}", "unknown field 'layers'"),
])
def test_bad_space_files_are_one_line(tmp_path, body, fragment):
    path = _write(tmp_path, "space: darts\nwidth: 4\ndepth: 3\n" + body + "\n")
    if body.startswith(("width", "depth")):
        path = _write(tmp_path, "space: darts\n" + body + "\n")
    with pytest.raises(SpecError) as err:
        load_space(path)
    message = str(err.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message


def test_select_refuses_darts_in_one_line(tmp_path):
    from zsad.select_space import load_select_space

    with pytest.raises(SpecError, match="the built-in space darts is not supported yet"):
        load_select_space(_write(tmp_path, "space: darts\narchs: {sample: 2}\n"))


def test_rank_computes_every_metric(tmp_path, cli_env):
    path = _write(tmp_path, f"space: darts\nwidth: 2\ndepth: 3\ninput: {{shape: [4, 4, 3]}}\n"
                            f"archs:\n  - \"{format_genotype(COVER_A)}\"\n  - \"{format_genotype(COVER_B)}\"\n")
    # the default score's ingredients and NASWOT (the gradient proxies compile for minutes on this space)
    rows = ranked_rows(path, tmp_path / "ranked.csv", "--seeds", "2", "--batch", "8",
                       "--metrics", "nlc,params,flops,naswot")
    space = DartsSpace(2, 3, (4, 4, 3))
    assert [r["arch"] for r in rows] == [format_genotype(COVER_A), format_genotype(COVER_B)]
    for row, g in zip(rows, (COVER_A, COVER_B)):
        assert row["status"] == "ok" and not row["reason"], row
        assert int(row["params"]) == space.params(g) and int(row["flops"]) == space.flops(g)
        for column in ("nlc", "nlc_std", "nlc_block", "naswot", "score"):
            assert math.isfinite(float(row[column])), column
    bad = _write(tmp_path, "space: darts\narchs:\n  - \"Genotype(normal=[('sep_conv_3x3', 9)] * 8)\"\n", "bad.yaml")
    result = run_cli("rank", bad)
    assert result.exit_code == 2 and "bad.yaml:3:5: archs.0:" in result.output


def test_score_one_architecture(tmp_path, cli_env):
    from zsad.score import ScoreOptions, score_architecture

    path = _write(tmp_path, f"space: darts\nwidth: 2\ndepth: 3\ninput: {{shape: [4, 4, 3]}}\narch: \"{DARTS_V2}\"\n",
                  "one.yaml")
    arch = parse_cell(__import__("zsad.arch.spec", fromlist=["read_yaml"]).read_yaml(path), file=str(path))
    report = score_architecture(arch, ScoreOptions(seeds=2, batch=8, spectrum_samples=2))
    doc = report.to_json()
    assert doc["params"] == DartsSpace(2, 3, (4, 4, 3)).params(parse_genotype(DARTS_V2))
    assert doc["space"] == {"name": "darts", "arch": DARTS_V2}
    assert doc["nlc"]["mean"] > 1.0 and doc["spectrum"]["between"] == ["input", "cell2"]
    assert [p["layer"] for p in doc["profile"]] == ["stem", "cell0", "cell1", "cell2", "head"]
    result = run_cli("score", path.with_name("missing.yaml"))
    assert result.exit_code == 2
