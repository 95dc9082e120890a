"""Label shift: every method of a `dgc bench` folder on test sets drawn to other class priors.

For each finished run (its `best.pt`): the test set resampled to a balanced prior, the training
imbalance, its reverse and three Dirichlet(1) priors (their mean is the `dirichlet` table);
accuracy, ACSA and ECE of the posteriors as they are and re-weighted by the EM estimate of the
test prior (Saerens et al. 2002), uncalibrated and after (bias-corrected) temperature scaling
fitted on the run's validation split, and the L1 error of the EM estimate (`dgc evaluate RUN
--prior-shift`, which also writes the run's prior-shift.json). Writes `label-shift.json` and
`label-shift.md` into OUT: per prior, mean ± std over seeds per method, and paired t-tests of
`dgc` against each other method.

    python benchmarks/label_shift.py runs/bench-fashion-cpu --out runs/capabilities-fashion
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgc.capabilities import (
    SHIFT_FILE,
    SHIFTS,
    bench_parser,
    evaluate_bench,
    evaluate_prior_shift,
    flat_row,
    reference_pairs,
    run_script,
    write_tables,
)

COLUMNS = (("none.as_is.accuracy", "accuracy"), ("none.em.accuracy", "accuracy, EM"),
           ("temperature.em.accuracy", "accuracy, TS + EM"),
           ("bcts.em.accuracy", "accuracy, BCTS + EM"), ("bcts.em.acsa", "ACSA, BCTS + EM"),
           ("none.as_is.ece", "ECE"), ("bcts.em.ece", "ECE, BCTS + EM"),
           ("none.prior_error_em", "prior error, EM"),
           ("bcts.prior_error_em", "prior error, BCTS + EM"))
LOWER = ("ece", "prior_error")


def tabulate(args: argparse.Namespace) -> Path:
    reports = evaluate_bench(args.bench,
                             lambda run_dir, run: evaluate_prior_shift(run_dir, run)[0],
                             "label shift", SHIFT_FILE, args.recompute)
    runs = [flat_row(method, seed, report) for method, seed, report in reports]
    methods = list(dict.fromkeys(method for method, _, _ in reports))
    sections = []
    for shift in SHIFTS:
        columns = [(f"{shift}.{key}", label) for key, label in COLUMNS]
        sections.append({"heading": f"Test prior: {shift}", "rows": methods,
                         "pairs": reference_pairs(methods), "columns": columns,
                         "lower": [key for key, _ in columns if any(w in key for w in LOWER)]})
    return write_tables(args.out or args.bench, "label-shift",
                        f"Test sets resampled to other class priors: {args.bench}",
                        ["EM: posteriors re-weighted to the EM estimate of the test prior. TS / "
                         "BCTS: (bias-corrected) temperature scaling fitted on validation. "
                         "Prior error: L1 distance of the EM estimate to the test set's prior. "
                         "Lower is better for ECE and prior error, higher for the rest."],
                        sections, runs)


if __name__ == "__main__":
    run_script("label_shift", tabulate, bench_parser(__doc__))
