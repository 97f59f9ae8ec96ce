"""What people read in a terminal: the ranked table in a real 80-column pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading

import pytest

from helpers import RELU_MLP_YAML, cpu_subprocess_env

from zsad_cli.render import short_names

BASE = RELU_MLP_YAML.replace("name: relu", "name: m", 1)
# Names such as m[layers.1.fn=tanh,init.weight_std=0.5]: what differs is in the middle and at the end.
SPACE = "base: base.yaml\nchoices:\n  layers.1.fn: [tanh, relu]\n  init.weight_std: [0.5, 1.0, 1.41]\n"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def in_pty(args: list[str], cwd, columns: int = 80) -> tuple[int, str, str]:
    """Runs ``zsad ARGS`` with stdout on a pseudo-terminal ``columns`` wide; (exit code, stdout, stderr)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = cpu_subprocess_env(COLUMNS=str(columns), LINES="24", ZSAD_CACHE_DIR=str(cwd / "cache"), TERM="xterm")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "zsad_cli.main", *args], stdout=slave, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def read():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _, err = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
    return proc.returncode, text, err.decode()


@pytest.fixture
def space_dir(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def table_rows(text: str) -> list[list[str]]:
    """Cells (split on runs of 2+ spaces) of the table's body lines: those that start with a rank."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if re.match(r"^\s+\d+\s{2,}", line)]


def test_ranked_table_fits_80_columns_with_rank_score_and_distinct_names(space_dir):
    code, out, err = in_pty(["rank", "space.yaml", "--batch", "8", "--seeds", "2"], space_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    header = next(line for line in lines if re.search(r"\brank\b", line) and "arch" in line)
    assert re.findall(r"\w+", header)[:2] == ["rank", "arch"] and "score" in header and "status" in header
    rows = table_rows(out)
    assert len(rows) == 6
    names = [cells[1] for cells in rows]
    assert len(set(names)) == 6, names  # elided, yet what differs stays visible
    assert any("tanh" in n for n in names) and any("relu" in n for n in names)
    assert all(cells[-1] == "ok" for cells in rows)
    assert "not shown at this width:" in out and "--wide" in out


def test_wide_shows_every_column_and_whole_names(space_dir):
    code, out, err = in_pty(["rank", "space.yaml", "--batch", "8", "--seeds", "2", "--wide",
                             "--metrics", "nlc,sigma2,params,flops"], space_dir)
    assert code == 0, err
    header = next(line for line in out.splitlines() if re.search(r"\brank\b", line) and "arch" in line)
    assert re.findall(r"\w+", header) == ["rank", "arch", "nlc", "nlc_block", "sigma2", "params", "flops", "score",
                                          "status"]
    assert "m[layers.1.fn=tanh,init.weight_std=0.5]" in out and "not shown" not in out


def test_short_names_stay_distinct():
    names = [f"m[layers.1.fn={fn},init.weight_std={s}]" for fn in ("tanh", "relu") for s in ("0.5", "1.0")]
    short, ids = short_names(names, 24)
    assert not ids and len(set(short)) == 4 and all(len(n) <= 24 for n in short)
    # names that differ only deep inside and cannot be cut apart: short ids with a legend
    names = ["a" * 20 + c + "b" * 20 for c in "xyz"]
    short, ids = short_names(names, 5)
    assert ids and short == ["#1", "#2", "#3"]
    assert short_names(["short", "names"], 24) == (["short", "names"], False)
