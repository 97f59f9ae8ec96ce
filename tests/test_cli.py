"""The ``zsad`` command: JSON contract, exit codes and one-line errors."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli

DATA = Path(__file__).resolve().parent / "data"
TINY = "name: tiny\ninput: {shape: [8]}\nlayers:\n  - {type: dense, features: 16}\n  - {type: activation, fn: tanh}\n  - {type: dense, features: 3}\n"


run = run_cli


pytestmark = pytest.mark.usefixtures("cli_env")


def test_score_json_contract(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    out = tmp_path / "out.json"
    result = run("score", path, "--seeds", 2, "--batch", 32, "--json", "--out", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert json.loads(out.read_text()) == doc
    assert {"name", "params", "nlc", "profile", "verdict"} <= set(doc)
    assert doc["name"] == "tiny" and doc["params"] == 8 * 16 + 16 + 16 * 3 + 3
    assert set(doc["nlc"]) >= {"mean", "std", "per_seed"} and len(doc["nlc"]["per_seed"]) == 2
    assert doc["nlc"]["mean"] > 1.0
    assert [row["layer"] for row in doc["profile"]] == ["0.dense", "1.tanh", "2.dense"]
    assert doc["profile"][0]["nlc"] == pytest.approx(1.0, abs=1e-4)
    assert doc["verdict"]["status"] in ("good", "warning", "bad")


def test_score_rich_output(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    result = run("score", path, "--seeds", 2, "--batch", 16)
    assert result.exit_code == 0
    assert "NLC profile" in result.stdout and "verdict" in result.stdout


def test_flax_entry_point(tmp_path):
    shutil.copy(DATA / "tiny_flax.py", tmp_path / "tiny_flax.py")
    (tmp_path / "m.yaml").write_text('input: {shape: [4]}\nmodule: "tiny_flax:make"\n')
    result = run("score", tmp_path / "m.yaml", "--seeds", 2, "--batch", 16, "--json", "--x64")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["params"] == 4 * 7 + 7 + 7 * 5 + 5
    assert doc["nlc"]["mean"] == pytest.approx(1.0, abs=1e-6)  # a linear flax model


def test_diverging_network_reports_instead_of_crashing(tmp_path):
    layers = "".join("  - {type: dense, features: 16}\n  - {type: activation, fn: relu}\n" for _ in range(8))
    path = tmp_path / "big.yaml"
    path.write_text(f"input: {{shape: [8]}}\ninit: {{weight_std: 1.0e+6}}\nlayers:\n{layers}")
    result = run("score", path, "--seeds", 1, "--batch", 8, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["nlc"]["mean"] is None and "diverged" in doc["nlc"]["reason"]
    assert doc["verdict"]["status"] == "bad"
    # the finite layers before the first non-finite one keep their values; from it on, none
    names = [row["layer"] for row in doc["profile"]]
    first = names.index(doc["diverged"]["0"])
    assert first > 0 and doc["profile"][0]["nlc"] == pytest.approx(1.0, abs=1e-4)
    assert all(row["nlc"] is not None and math.isfinite(row["nlc"]) for row in doc["profile"][:first])
    assert all(row["nlc"] is None for row in doc["profile"][first:])


BAD_INPUTS = {
    "malformed-yaml": ("input: {shape: [4]\nlayers: []\n", "malformed YAML"),
    "unknown-layer": ("input: {shape: [4]}\nlayers:\n  - {type: densee, features: 2}\n", "layers.0.type: expected one of dense"),
    "unknown-activation": ("input: {shape: [4]}\nlayers:\n  - {type: activation, fn: rleu}\n", "did you mean 'relu'"),
    "shape-mismatch": ("input: {shape: [4]}\nlayers:\n  - {type: conv, features: 2, kernel: 3}\n", ":3:5: layers.0 (conv): expected an input of shape [L, C], got [4]"),
    "missing-data": ("input: {shape: [4], data: nope.npy}\nlayers:\n  - {type: dense, features: 2}\n", ":1:27: input.data: cannot read"),
    "module-import": ('input: {shape: [4]}\nmodule: "no_such_pkg.models:make"\n', ":2:9: module: cannot import 'no_such_pkg.models'"),
    "module-factory-fails": ('input: {shape: [4]}\nmodule: "tiny_flax:broken"\n', ":2:9: module: tiny_flax:broken() failed: RuntimeError: factory exploded"),
    "binary-file": (b"\x00\x01\xff\xfe\x00", ":1:3: file: expected UTF-8 text (YAML); got byte 0xff, not a text file"),
    "too-large-for-memory": ("input: {shape: [8]}\nlayers:\n  - {type: dense, features: 1000000000000}\n",
                             "layers: expected a network that fits in memory; got one that needs at least"),
    "text-as-npy": ("input: {shape: [4], data: text.npy}\nlayers:\n  - {type: dense, features: 2}\n",
                    ":1:27: input.data: expected a NumPy array file (.npy or .npz); got"),
    "fewer-samples-than-batch": ("input: {shape: [4], data: few.npy}\nlayers:\n  - {type: dense, features: 2}\n",
                                 ":1:27: input.data: expected at least 256 samples (the batch); got 10"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_nonzero_no_traceback(tmp_path, case):
    text, expected = BAD_INPUTS[case]
    shutil.copy(DATA / "tiny_flax.py", tmp_path / "tiny_flax.py")
    (tmp_path / "text.npy").write_text("0.5, 1.0, 2.0\n")
    np.save(tmp_path / "few.npy", np.ones((10, 4), np.float32))
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    result = run("score", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0] and expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize("args,expected", [
    (["--seeds", "0"], "--seeds: expected a value in the range x>=1; got 0 ("),
    (["--batch", "many"], "--batch: expected an integer; got 'many' ("),
    (["--spectrum-method", "svd"], "--spectrum-method: expected one of 'auto', 'exact', 'lanczos'; got 'svd'"),
    (["--no-such-option"], "--no-such-option: expected an option of "),
], ids=["range", "type", "choice", "unknown"])
def test_option_errors_are_one_line(tmp_path, args, expected):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    result = run("score", path, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}") and lines[0].endswith("score --help)"), lines
    assert "Usage:" not in result.output and result.stdout == ""


def test_a_folder_as_the_file_is_one_line(tmp_path):
    for command in ("score", "rank"):
        result = run(command, tmp_path)
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [f"error: {tmp_path}: {'ARCH_FILE' if command == 'score' else 'SPACE_FILE'}: "
                                                      "expected a file; got a folder"], result.stderr


def test_missing_file():
    result = run("score", "/does/not/exist.yaml")
    assert result.exit_code == 2
    assert "cannot read file" in result.stderr and "Traceback" not in result.stderr


def test_rank_errors_start_on_the_first_line(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "space.yaml").write_text("base: tiny.yaml\nchoices:\n  init.weight_std: [1.0, 2.0]\n")
    result = run("rank", tmp_path / "space.yaml", "--by", "nope", "--batch", 8)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --by: expected score or computed metrics") and \
        result.stderr.count("\n") == 1, repr(result.stderr)


def test_the_command_alone_shows_its_help():
    result = run()
    assert result.exit_code == 2 and "Usage:" in result.output and "Commands:" in result.output
