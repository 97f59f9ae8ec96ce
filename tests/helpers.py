"""Helpers shared by the tests: architectures from inline mappings."""

from __future__ import annotations

import copy
import os

from zsad.arch.spec import Architecture, parse_architecture


#: A small ReLU MLP as an architecture file: the base of the rank and cluster test spaces.
RELU_MLP_YAML = """\
name: relu
input: {shape: [8]}
init: {weight_std: 1.41}
layers:
  - {type: dense, features: 16}
  - {type: activation, fn: relu}
  - {type: dense, features: 16}
  - {type: activation, fn: relu}
  - {type: dense, features: 4}
"""


def cpu_subprocess_env(**extra) -> dict:
    """This process's environment for a Python subprocess on the CPU: no inherited XLA_FLAGS, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


def run_cli(*args):
    """Runs ``zsad ARGS...`` in-process (click's runner); use with the ``cli_env`` fixture."""
    from click.testing import CliRunner

    from zsad_cli.main import cli

    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def ranked_rows(space_file, out, *options) -> list[dict]:
    """``zsad rank SPACE_FILE --out OUT OPTIONS...`` in-process (use with ``cli_env``): the rows of the file."""
    import csv

    result = run_cli("rank", space_file, "--out", out, *options)
    assert result.exit_code == 0, result.output
    with open(out) as f:
        return list(csv.DictReader(f))


def assert_same_rows(rows, other, *, rel: float, abs: float) -> None:
    """``other`` holds the rows of ``rows``: every float column within ``rel``/``abs``, every other column equal."""
    import pytest

    assert len(rows) == len(other)
    for a, b in zip(rows, other):
        for column, value in a.items():
            if isinstance(value, float):
                assert b[column] == pytest.approx(value, rel=rel, abs=abs), (a["arch"], column)
            else:
                assert b[column] == value, (a["arch"], column)


def arch_from(mapping: dict, name: str = "test") -> Architecture:
    return parse_architecture(copy.deepcopy(mapping), default_name=name)


def mlp(fn: str, depth: int = 3, width: int = 64, d_in: int = 32, *, weight_std=1.0, bias_std=0.0,
        std=1.0, dist="normal", out: int | None = 10) -> dict:
    layers = []
    for _ in range(depth):
        layers += [{"type": "dense", "features": width}, {"type": "activation", "fn": fn}]
    if out:
        layers.append({"type": "dense", "features": out})
    return {"name": f"{fn}-mlp", "input": {"shape": [d_in], "std": std},
            "init": {"dist": dist, "weight_std": weight_std, "bias_std": bias_std}, "layers": layers}


def interrupt_after(k):
    """``(on_row, seen)``: an ``on_row`` callback of ``rank_space`` that raises KeyboardInterrupt at the
    ``k``-th row (``seen`` lists the rows' architectures)."""
    seen = []

    def on_row(row):
        seen.append(row["arch"])
        if len(seen) == k:
            raise KeyboardInterrupt

    return on_row, seen


def interrupt_scoring_at(monkeypatch, k):
    """Makes ``zsad.rank.Scorer.row`` raise KeyboardInterrupt at its ``k``-th call (Ctrl-C in a CLI run);
    returns the original method, to put back with ``monkeypatch.setattr``."""
    from zsad import rank as rank_mod

    original = rank_mod.Scorer.row
    calls = []

    def row(self, item, choices=None):
        calls.append(item.id)
        if len(calls) == k:
            raise KeyboardInterrupt
        return original(self, item, choices)

    monkeypatch.setattr(rank_mod.Scorer, "row", row)
    return original
