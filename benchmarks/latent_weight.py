"""Choose the weight of a learned prior's log p(z) in DGCMM's score on validation data.

For each run directory (a `dgcmm` run, untied or class-tied), rebuilds the run's validation
split and scores it with the exact Bayes rule (every class, `--samples` codes per class) for
every weight in `--weights` (0 leaves the prior out; 1 is Bayes' rule as written). Prints the
mean validation ACSA of each weight over the runs; the test set is never touched.

    python benchmarks/latent_weight.py runs/explore/dgcmm-class-s1 --weights 0,0.1,0.3,1
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from dgc.errors import DGCError
from dgc.experiment import load_generative_run, recorded_data, to_train_data
from dgc.metrics import acsa
from dgc.prediction import class_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--weights", default="0,0.03,0.1,0.3,1")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = [float(w) for w in args.weights.split(",")]
    scores: dict[float, list[float]] = {w: [] for w in weights}
    for run_dir in args.runs:
        try:
            run = load_generative_run(run_dir, "give `dgcmm` runs")
        except DGCError as error:
            raise SystemExit(f"latent_weight: {error}") from None
        model = run.generator
        if model.prior is None:
            raise SystemExit(f"{run_dir} has no learned prior (train it with --method dgcmm)")
        data = recorded_data(run)
        split = to_train_data(data, run.cfg)
        y = split.y_val.cpu().numpy()
        for weight in weights:
            cfg = dataclasses.replace(run.cfg.predict, samples=args.samples, top_k=None,
                                      rule="bayes", latent_weight=weight)
            prediction = class_scores(model, split.x_val, cfg, seed=run.cfg.seed).argmax(1)
            scores[weight].append(acsa(y, prediction.cpu().numpy()))
    print(f"validation splits of {len(args.runs)} run(s), exact rule, S = {args.samples}")
    print("| latent weight | mean validation ACSA |\n|---|---|")
    for weight, values in scores.items():
        print(f"| {weight:g} | {np.mean(values):.4f} |")


if __name__ == "__main__":
    main()
