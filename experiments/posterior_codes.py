"""What a DGC run's encoder posteriors look like, and whether a wider posterior helps its decision.

Bayes' rule can only use the generative part when the codes q(z | x, c) of one image differ
between classes. For each `dgc` run (its `best.pt`) on its validation split this prints:

- the spread of the code means against the N(0, I) prior (std over images and dimensions;
  1 matches the prior) and the median posterior σ of the true class;
- the mean distance between the codes of one image under two classes (zero when μ is computed
  from the image alone, `model.label_in_mean=false`);
- how much each term of the rule varies across the classes of one image (the spread of
  `dgc evaluate --decompose`, S = 1): a term that hardly varies cannot move the decision;
- the label rule's ACSA when every code is widened to μ + s·ε (S codes, the same ε for every
  image), an ensemble over codes that does vary: s is chosen on validation and only reported on
  the test set, against s = 0 with a paired t-test over the runs.

    python experiments/posterior_codes.py runs/bench-fashion-cpu/dgc-s{1,2,3,4,5}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from common import Study, parse, parser, studies
from scipy.stats import ttest_rel

from dgc.core.metrics import acsa
from dgc.nn.model import DGC, std_from_logvar
from dgc.nn.prediction import decompose


def widened_label_scores(model: DGC, x: torch.Tensor, scales: list[float], samples: int,
                         seed: int, batch: int = 500) -> dict[float, np.ndarray]:
    """log (1/S) Σ_j p(y = c | μ_c + s ε_j) for every class c, per scale s: (N, C) each."""
    noise = torch.randn(samples, model.cfg.latent_dim,
                        generator=torch.Generator().manual_seed(seed)).to(x.device)
    own = torch.arange(model.n_classes, device=x.device).view(1, -1, 1, 1)
    out: dict[float, list[np.ndarray]] = {scale: [] for scale in scales}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            mu, _ = model.encoder.all_classes(model.encoder.features(x[start:start + batch]))
            mu = mu.expand(-1, model.n_classes, -1)
            for scale in scales:
                log_probs = torch.log_softmax(model.head(mu[:, :, None, :] + scale * noise), -1)
                label = log_probs.gather(-1, own.expand(len(mu), -1, samples, 1)).squeeze(-1)
                score = torch.logsumexp(label, dim=2) - math.log(samples)
                out[scale].append(score.cpu().numpy())
    return {scale: np.concatenate(parts) for scale, parts in out.items()}


def describe(study: Study, scales: list[float], samples: int) -> dict[str, Any]:
    """The posterior statistics of one run and its label-rule ACSA per scale and split."""
    run, model, x_val, y_val = study.run, study.model, study.x_val, study.y_val
    model.eval()
    with torch.inference_mode():
        mu, logvar = model.encoder.all_classes(model.encoder.features(x_val))
        mu = mu.expand(-1, model.n_classes, -1)
        rows = torch.arange(len(y_val), device=mu.device)
        sigma = std_from_logvar(logvar).expand_as(mu)[rows, torch.from_numpy(y_val)]
        gap = (mu[:, :, None] - mu[:, None]).norm(dim=-1).mean(dim=(1, 2)) * (
            model.n_classes / max(1, model.n_classes - 1))
    terms = decompose(model, x_val, y_val, dataclasses.replace(run.cfg.predict, samples=1),
                      run.cfg.seed)
    splits = {"val": (x_val, y_val), "test": (study.x_test, study.y_test)}
    acsas = {(name, scale): acsa(y, scores.argmax(1))
             for name, (x, y) in splits.items()
             for scale, scores in widened_label_scores(model, x, scales, samples,
                                                       run.cfg.seed).items()}
    return {"code std": float(mu[:, 0].std()), "median sigma": float(sigma.median()),
            "class gap": float(gap.mean()),
            **{f"{term} spread": terms[term]["spread"] for term in ("label", "recon")},
            "acsa": acsas}


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--scales", default="0.3,1,3,10",
                           help="noise scales s of the widened codes μ + s·ε")
    arguments.add_argument("--samples", type=int, default=10, help="codes per class, S")
    args = parse(arguments)
    scales = sorted({0.0, *(float(s) for s in args.scales.split(","))})
    reports = [describe(study, scales, args.samples)
               for study in studies(args.runs, "dgc", "posterior_codes")]
    stats = ("code std", "median sigma", "class gap", "label spread", "recon spread")
    print(f"{len(args.runs)} run(s), validation split; mean ± std over the runs\n")
    print("| statistic | value |\n|---|---|")
    for name in stats:
        values = [r[name] for r in reports]
        print(f"| {name} | {np.mean(values):.4g} ± "
              f"{np.std(values, ddof=1) if len(values) > 1 else 0:.2g} |")
    acsas = {key: [r["acsa"][key] for r in reports] for key in reports[0]["acsa"]}
    print(f"\n| noise scale s (S = {args.samples}) | validation ACSA, label rule |\n|---|---|")
    for scale in scales:
        print(f"| {scale:g} | {np.mean(acsas['val', scale]):.4f} |")
    chosen = max(scales, key=lambda s: np.mean(acsas["val", s]))
    test, plain = acsas["test", chosen], acsas["test", 0.0]
    p = ttest_rel(test, plain).pvalue if len(test) > 1 and test != plain else float("nan")
    print(f"\nvalidation chooses s = {chosen:g}: test ACSA {np.mean(test):.4f} against "
          f"{np.mean(plain):.4f} at s = 0 (paired p {p:.3g})")


if __name__ == "__main__":
    main()
