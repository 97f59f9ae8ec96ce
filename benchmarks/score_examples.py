"""Wall time of `zsad score` on each bundled example: cold (empty compilation cache) and warm.

Run: .venv/bin/python benchmarks/score_examples.py [--seeds 3]
Each run is a fresh process, as a user would type it; the cold run uses a new,
empty cache directory and the warm run reuses it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZSAD = Path(sys.executable).with_name("zsad")


def run(arch: Path, cache: str, seeds: int) -> float:
    env = {**os.environ, "ZSAD_CACHE_DIR": cache}
    start = time.perf_counter()
    subprocess.run([str(ZSAD), "score", str(arch), "--seeds", str(seeds), "--json"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'example':<22} {'cold (s)':>9} {'warm (s)':>9} {'warm/cold':>9}")
    for arch in sorted((ROOT / "examples").glob("*.yaml")):
        if "space" in arch.stem:
            continue
        with tempfile.TemporaryDirectory() as cache:
            cold = run(arch, cache, args.seeds)
            warm = run(arch, cache, args.seeds)
        print(f"{arch.stem:<22} {cold:>9.2f} {warm:>9.2f} {warm / cold:>9.2f}")


if __name__ == "__main__":
    main()
