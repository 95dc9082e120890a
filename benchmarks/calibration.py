"""Calibration of every method of a `dgc bench` folder, before and after temperature scaling.

For each finished run (its `best.pt`): ECE, classwise ECE, Brier score and NLL of the test set
as predicted, after temperature scaling and after bias-corrected temperature scaling, both
fitted on the run's own validation split (`dgc evaluate RUN --calibration`, which also writes
the run's calibration.json). Writes `calibration.json` and `calibration.md` into OUT: mean ±
std over seeds per method, and paired t-tests of `dgc` against each other method.

    python benchmarks/calibration.py runs/bench-fashion-cpu --out runs/capabilities-fashion
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgc.calibration import CALIBRATIONS
from dgc.capabilities import (
    CALIBRATION_FILE,
    CALIBRATION_METRICS,
    bench_parser,
    evaluate_bench,
    evaluate_calibration,
    flat_row,
    reference_pairs,
    run_script,
    write_tables,
)

TITLES = {"none": "As predicted", "temperature": "Temperature scaling (fitted on validation)",
          "bcts": "Bias-corrected temperature scaling (fitted on validation)"}


def tabulate(args: argparse.Namespace) -> Path:
    reports = evaluate_bench(args.bench, lambda run_dir, run: evaluate_calibration(run_dir, run)[0],
                             "calibration", CALIBRATION_FILE, args.recompute)
    runs = [flat_row(method, seed, report) for method, seed, report in reports]
    methods = list(dict.fromkeys(method for method, _, _ in reports))
    sections = [{"heading": TITLES[name], "rows": methods, "pairs": reference_pairs(methods),
                 "columns": [(f"{name}.{key}", label) for key, label in CALIBRATION_METRICS],
                 "lower": [f"{name}.{key}" for key, _ in CALIBRATION_METRICS]}
                for name in CALIBRATIONS]
    return write_tables(args.out or args.bench, "calibration",
                        f"Calibration of the test set: {args.bench}",
                        ["Lower is better in every column."], sections, runs)


if __name__ == "__main__":
    run_script("calibration", tabulate, bench_parser(__doc__))
