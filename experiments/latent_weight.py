"""Choose the weight of a learned prior's log p(z) in DGCMM's score on validation data.

For each run directory (a `dgcmm` run, untied or class-tied), rebuilds the run's validation
split and scores it with the exact Bayes rule (every class, `--samples` codes per class) for
every weight in `--weights` (0 leaves the prior out; 1 is Bayes' rule as written). Prints the
mean validation ACSA of each weight over the runs; the test set is never touched.

    python experiments/latent_weight.py runs/explore/dgcmm-class-s1 --weights 0,0.1,0.3,1
"""

from __future__ import annotations

import dataclasses

import numpy as np
from common import parse, parser, studies

from dgc.core.metrics import acsa
from dgc.nn.prediction import class_scores


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--weights", default="0,0.03,0.1,0.3,1")
    arguments.add_argument("--samples", type=int, default=1)
    args = parse(arguments)
    weights = [float(w) for w in args.weights.split(",")]
    scores: dict[float, list[float]] = {w: [] for w in weights}
    for run_dir, study in zip(args.runs, studies(args.runs, "dgcmm", "latent_weight"),
                              strict=True):
        if study.model.prior is None:
            raise SystemExit(f"{run_dir} has no learned prior (train it with --method dgcmm)")
        for weight in weights:
            cfg = dataclasses.replace(study.run.cfg.predict, samples=args.samples, top_k=None,
                                      rule="bayes", latent_weight=weight)
            prediction = class_scores(study.model, study.x_val, cfg, seed=study.run.cfg.seed)
            scores[weight].append(acsa(study.y_val, prediction.argmax(1).cpu().numpy()))
    print(f"validation splits of {len(args.runs)} run(s), exact rule, S = {args.samples}")
    print("| latent weight | mean validation ACSA |\n|---|---|")
    for weight, values in scores.items():
        print(f"| {weight:g} | {np.mean(values):.4f} |")


if __name__ == "__main__":
    main()
