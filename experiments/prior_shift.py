"""Measure a test-time prior correction of DGC's Bayes-rule score on validation data.

For each run directory, scores its validation split and its test set with the Bayes rule (every
class, `--samples` codes per class) and subtracts τ · log π_c, π the training class frequencies
(logit adjustment at test time: τ > 0 favours rare classes; τ = −1 predicts under the training
prior). Prints, per τ, the mean validation ACSA (which chooses τ) and the mean test ACSA (which
only reports it), with the accuracy of each: what a correction trades between them. It scores
each image alone, also for runs that predict over eight views (`predict.views`).

    python experiments/prior_shift.py runs/bench-fashion-cpu/dgc-s{1,2,3,4,5}
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from common import parse, parser, studies

from dgc.core.metrics import acsa
from dgc.nn.losses import class_log_prior
from dgc.nn.prediction import class_scores


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--taus", default="-0.5,-0.25,0,0.25,0.5,0.75,1")
    arguments.add_argument("--samples", type=int, default=1)
    args = parse(arguments)
    taus = [float(t) for t in args.taus.split(",")]
    val: dict[float, list[tuple[float, float]]] = {t: [] for t in taus}
    test: dict[float, list[tuple[float, float]]] = {t: [] for t in taus}
    for run_dir, study in zip(args.runs, studies(args.runs, "dgc", "prior_shift"), strict=True):
        run = study.run
        log_prior = class_log_prior(torch.as_tensor(run.train_counts)).to(study.x_val.device)
        cfg = dataclasses.replace(run.cfg.predict, samples=args.samples, top_k=None)
        for x, y, into in ((study.x_val, study.y_val, val), (study.x_test, study.y_test, test)):
            scores = class_scores(study.model, x, cfg, seed=run.cfg.seed)
            for tau in taus:
                predicted = (scores - tau * log_prior).argmax(1).cpu().numpy()
                into[tau].append((acsa(y, predicted), float(np.mean(predicted == y))))
        print(f"{run_dir}: validation ACSA " +
              ", ".join(f"τ {t:g} {val[t][-1][0]:.4f}" for t in taus), flush=True)
    print(f"\n{len(args.runs)} run(s), exact rule, S = {args.samples}")
    print("| τ | mean validation ACSA | mean test ACSA | mean validation accuracy "
          "| mean test accuracy |\n|---|---|---|---|---|")
    for tau in taus:
        (val_acsa, val_accuracy), (test_acsa, test_accuracy) = (np.mean(val[tau], axis=0),
                                                                np.mean(test[tau], axis=0))
        print(f"| {tau:g} | {val_acsa:.4f} | {test_acsa:.4f} | {val_accuracy:.4f} "
              f"| {test_accuracy:.4f} |")


if __name__ == "__main__":
    main()
