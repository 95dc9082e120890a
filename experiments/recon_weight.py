"""Choose, on validation data, the weight of the reconstruction term in DGC's Bayes rule.

Bayes' rule scores class c by log p(x | z) + log p(y = c | z) over codes z ~ q(z | x, c); a
weight w on the reconstruction term asks whether the class-conditional likelihood could carry
more of the decision than Bayes' rule gives it (w = 1) or less (w = 0: the label head alone).
For each `dgc` run, its validation split and test set are scored once per term with one code
per class (S = 1, every class: the terms then add exactly), and every weight of `--weights`
is a sum of the two. The weight with the best mean validation ACSA is chosen; the test set
only reports it, against w = 1, with a paired t-test over the runs.

    python experiments/recon_weight.py runs/bench-fashion-cpu/dgc-s{1,2,3,4,5}
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from common import Study, parse, parser, studies
from scipy.stats import ttest_rel

from dgc.core.metrics import acsa
from dgc.nn.prediction import class_scores


def term_scores(study: Study) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split: labels, the label term and the reconstruction term, each (N, C)."""
    run = study.run
    if study.model.prior is not None:
        raise SystemExit(f"{run.directory} has a learned prior: choose its weight with "
                         "experiments/latent_weight.py")
    cfg = dataclasses.replace(run.cfg.predict, samples=1, top_k=None, rule="bayes")
    splits = {"val": (study.x_val, study.y_val), "test": (study.x_test, study.y_test)}

    def term(x: torch.Tensor, name: str) -> np.ndarray:
        return class_scores(study.model, x, cfg, run.cfg.seed, (name,)).double().numpy()

    return {name: (y, term(x, "label"), term(x, "recon")) for name, (x, y) in splits.items()}


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--weights", default="0,0.3,1,3,10,30,100")
    args = parse(arguments)
    weights = [float(w) for w in args.weights.split(",")]
    if 1.0 not in weights:
        weights.append(1.0)
    columns: list[float | str] = [*weights, "recon alone"]
    acsas: dict[tuple[str, float | str], list[float]] = {
        (split, w): [] for split in ("val", "test") for w in columns}
    for study in studies(args.runs, "dgc", "recon_weight"):
        scores = term_scores(study)
        for split, (y, label, recon) in scores.items():
            for w in weights:
                acsas[split, w].append(acsa(y, (label + w * recon).argmax(1)))
            acsas[split, "recon alone"].append(acsa(y, recon.argmax(1)))
    chosen = max(weights, key=lambda w: np.mean(acsas["val", w]))
    print(f"{len(args.runs)} run(s), S = 1, every class; ACSA mean ± std over the runs\n")
    print("| reconstruction weight | validation ACSA |\n|---|---|")
    for column in columns:
        values = acsas["val", column]
        print(f"| {column if isinstance(column, str) else f'{column:g}'} | {np.mean(values):.4f} ± "
              f"{np.std(values, ddof=1) if len(values) > 1 else 0:.4f} |")
    test, bayes = acsas["test", chosen], acsas["test", 1.0]
    p = ttest_rel(test, bayes).pvalue if len(test) > 1 and test != bayes else float("nan")
    print(f"\nvalidation chooses w = {chosen:g}: test ACSA {np.mean(test):.4f} against "
          f"{np.mean(bayes):.4f} at w = 1 (paired p {p:.3g}); the reconstruction term alone "
          f"{np.mean(acsas['test', 'recon alone']):.4f}")


if __name__ == "__main__":
    main()
