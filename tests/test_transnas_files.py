"""TransNAS-Bench-101 spaces in space files, ``zsad rank`` and ``zsad score``: fields, errors, rows."""

import math

import pytest

from zsad._errors import SpecError
from zsad.rank import RankOptions, rank_space
from zsad.ranking import METRICS
from zsad.score import ScoreOptions, score_architecture
from zsad.cell_file import load_scorable
from zsad.space import load_space
from zsad.spaces.transnas import TransNASMicro

DEGENERATE = "64-41414-2_21_000"  # node 3 takes only `none`


def _write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_space_file_sample_list_and_all(tmp_path):
    space = load_space(_write(tmp_path, "space: transnas-micro\ntask: class_object\narchs: {sample: 5, seed: 1}\n"))
    items = list(space)
    assert space.form == "transnas-micro" and space.size == 5 and list(space.input.shape) == [32, 32, 3]
    assert [i.id for i in items] == [TransNASMicro("class_object").format(a)
                                     for a in TransNASMicro("class_object").sample(5, 1)]
    scene = load_space(_write(tmp_path, "space: tnb-micro\ntask: class_scene\narchs: {sample: 5, seed: 1}\n"))
    assert scene.fingerprint != space.fingerprint  # the task is part of the space
    macro = load_space(_write(tmp_path, "space: transnas-macro\ntask: jigsaw\narchs: all\n"))
    assert macro.size == 3256 and list(macro.input.shape) == [64, 64, 27]
    first = next(iter(macro))
    assert first.id == "64-1114-basic" and first.arch.space.params(first.arch.arch) > 0
    small = load_space(_write(tmp_path, "space: transnas-macro\ntask: class_scene\narchs: [64-1234-basic]\n"
                                        "input: {shape: [48, 48, 3]}\n"))
    assert next(iter(small)).arch.space.input_shape == (48, 48, 3)


@pytest.mark.parametrize("text, message", [
    ("space: transnas-micro\narchs: [64-41414-3_11_021]\n",
     r"s\.yaml: expected a field 'task' \(transnas-micro needs a head: one of class_object"),
    ("space: transnas-micro\ntask: class_objet\narchs: [64-41414-3_11_021]\n",
     r"s\.yaml:2:7: task: expected one of class_object.*; did you mean 'class_object'\?; got 'class_objet'"),
    ("space: transnas-micro\ntask: class_object\narchs: [64-41414-3_11_021, 64-41414-3_11_02]\n",
     r"s\.yaml:3:28: archs\.1: expected a micro cell '64-41414-a_bc_def'.*got '64-41414-3_11_02'"),
    ("space: transnas-micro\ntask: class_object\narchs: [64-41414-3_11_021, 64-41414-3_41_021]\n",
     r"s\.yaml:3:28: archs\.1: expected a micro cell .*digits 0-3"),
    ("space: transnas-macro\ntask: class_object\narchs: [64-4141-basic, 64-1511-basic]\n",
     r"s\.yaml:3:24: archs\.1: expected stage digits 1-4"),
    ("space: transnas-micro\ntask: class_object\narchs: [64-41414-3_11_021, 64-41414-3_11_021]\n",
     r"archs\.1: expected distinct architectures \(archs\.0 is the same\)"),
    ("space: transnas-micro\ntask: class_object\narchs: {sample: 4097}\n", r"archs\.sample: expected an integer from 1 to 4096 \(the size of transnas-micro\)"),
    ("space: transnas-micro\ntask: class_object\narchs: all\ninput: {shape: [32, 16, 3]}\n",
     r"s\.yaml:4:16: input\.shape: expected \[S, S, 3\] with a side S >= 8"),
    ("space: transnas-micro\ntask: jigsaw\narchs: all\ninput: {shape: [32, 32, 3]}\n",
     r"input\.shape: expected \[S, S, 27\] \(nine RGB tiles\)"),
    ("space: transnas-micro\ntask: class_object\nwidth: 3\narchs: all\n", r"s\.yaml:3:1: width: .*unknown field 'width'"),
    ("space: transnas-mikro\ntask: class_object\narchs: all\n",
     r"space: expected one of nas-bench-201.*transnas-micro.*; did you mean 'transnas-micro'\?"),
])
def test_bad_space_files(tmp_path, text, message):
    with pytest.raises(SpecError, match=message) as err:
        load_space(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_score_file_errors(tmp_path):
    with pytest.raises(SpecError, match=r"a\.yaml:3:7: arch: expected a macro skeleton '64-XXXX-basic'"):
        load_scorable(_write(tmp_path, "space: transnas-macro\ntask: room_layout\narch: 64-41414-3_11_021\n", "a.yaml"))
    with pytest.raises(SpecError, match=r"a\.yaml: expected a field 'task'"):
        load_scorable(_write(tmp_path, "space: transnas-macro\narch: 64-1234-basic\n", "a.yaml"))
    cell = load_scorable(_write(tmp_path, "space: tnb_micro\ntask: autoencoder\narch: ' 64-41414-3_11_021 '\n",
                                "a.yaml"))
    assert cell.space == "transnas-micro" and cell.notation == "64-41414-3_11_021" and cell.ops == (3, 1, 1, 0, 2, 1)


def test_rank_and_score_agree(tmp_path, monkeypatch):
    """Every metric through ``zsad rank`` (the masked program) on a one-stage micro network at 8x8, and
    ``zsad score`` (the directly built network) giving the same NLC for the same seed."""
    monkeypatch.setattr(TransNASMicro, "skeleton", (1,))
    archs = ["64-41414-3_11_021", "64-41414-1_02_130", DEGENERATE]
    path = _write(tmp_path, f"space: transnas-micro\ntask: class_object\narchs: {archs}\n"
                            "input: {shape: [8, 8, 3]}\n")
    result = rank_space(load_space(path), RankOptions(seeds=1, batch=4), out=tmp_path / "r.csv")
    rows = {r["arch"]: r for r in result.rows}
    assert [rows[a]["status"] for a in archs] == ["ok", "ok", "degenerate"]
    assert "none" in rows[DEGENERATE]["reason"]
    small = TransNASMicro("class_object")
    for arch in archs[:2]:
        row = rows[arch]
        assert row["params"] == small.params(small.parse(arch)) and row["flops"] == small.flops(small.parse(arch))
        for metric in METRICS:
            if metric not in ("params", "flops", "jacob_cov"):  # jacob_cov: batch 4 <= 192 inputs, computed too
                assert isinstance(row[metric], float) and math.isfinite(row[metric]), (arch, metric)
        assert row["jacob_cov"] is not None
        if arch != archs[0]:
            continue
        scored = load_scorable(_write(tmp_path, f"space: transnas-micro\ntask: class_object\narch: {arch}\n"
                                                "input: {shape: [8, 8, 3]}\n", "one.yaml"))
        report = score_architecture(scored, ScoreOptions(seeds=1, batch=4, spectrum=False))
        assert report.params == row["params"] and report.extra["space"]["arch"] == arch
        assert report.nlc_mean == pytest.approx(row["nlc"], rel=1e-4)


def test_select_and_normalize_refuse_the_space(tmp_path):
    from zsad.normalize import normalize_space
    from zsad.select_space import load_select_space

    path = _write(tmp_path, "space: transnas-macro\ntask: class_object\narchs: [64-1234-basic]\n")
    with pytest.raises(SpecError, match="the built-in space transnas-macro is not supported yet"):
        load_select_space(path)
    with pytest.raises(SpecError, match="The transnas-macro space's cells are built in without shaping scalars"):
        next(normalize_space(load_space(path), 1.5))
