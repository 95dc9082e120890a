"""Measure a test-time prior correction of DGC's Bayes-rule score on validation data.

For each run directory, scores its validation split and its test set with the Bayes rule (every
class, `--samples` codes per class) and subtracts τ · log π_c, π the training class frequencies
(logit adjustment at test time: τ > 0 favours rare classes). Prints, per τ, the mean validation
ACSA (which chooses τ) and the mean test ACSA (which only reports it).

    python benchmarks/prior_shift.py runs/bench-fashion-cpu/dgc-s{1,2,3,4,5}
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from dgc.errors import DGCError
from dgc.experiment import load_generative_run, recorded_data, to_train_data
from dgc.losses import class_log_prior
from dgc.metrics import acsa
from dgc.model import images_to_tensor
from dgc.prediction import class_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--taus", default="-0.5,-0.25,0,0.25,0.5,0.75,1")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    taus = [float(t) for t in args.taus.split(",")]
    val: dict[float, list[float]] = {t: [] for t in taus}
    test: dict[float, list[float]] = {t: [] for t in taus}
    for run_dir in args.runs:
        try:
            run = load_generative_run(run_dir, "give `dgc` runs")
        except DGCError as error:
            raise SystemExit(f"prior_shift: {error}") from None
        model = run.generator
        data = recorded_data(run)
        split = to_train_data(data, run.cfg)
        log_prior = class_log_prior(torch.as_tensor(run.train_counts)).to(split.x_val.device)
        cfg = dataclasses.replace(run.cfg.predict, samples=args.samples, top_k=None)
        scored = {
            "val": (class_scores(model, split.x_val, cfg, seed=run.cfg.seed),
                    split.y_val.cpu().numpy()),
            "test": (class_scores(model, images_to_tensor(data.x_test, run.cfg.device), cfg,
                                  seed=run.cfg.seed), data.y_test),
        }
        for tau in taus:
            for name, into in (("val", val), ("test", test)):
                scores, y = scored[name]
                into[tau].append(acsa(y, (scores - tau * log_prior).argmax(1).cpu().numpy()))
        print(f"{run_dir}: validation ACSA " +
              ", ".join(f"τ {t:g} {val[t][-1]:.4f}" for t in taus), flush=True)
    print(f"\n{len(args.runs)} run(s), exact rule, S = {args.samples}")
    print("| τ | mean validation ACSA | mean test ACSA |\n|---|---|---|")
    for tau in taus:
        print(f"| {tau:g} | {np.mean(val[tau]):.4f} | {np.mean(test[tau]):.4f} |")


if __name__ == "__main__":
    main()
