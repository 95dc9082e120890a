"""Label shift at deployment: test sets drawn to other class priors, and the prior re-estimated by
EM (`dgc.nn.priors`).

π_s is the prior a method's posteriors are for. Uncalibrated, that is the one its training assumes
(`Family.prior`): the prior of the rows it trained on (π, the training frequencies, or uniform when
they were drawn or weighted class-balanced), divided by π^τ for a τ-logit-adjusted loss (whose
logits alone are meant for a balanced prior when τ = 1 on rows drawn with π). Temperature scaling
changes how confident the posteriors are, not which classes they favour, so it keeps that prior;
bias-corrected temperature scaling fits a bias per class on the validation split, which is drawn
with π, and so makes it π.

`shift_report` resamples the test set to each target prior of `target_priors` and measures, for
every calibration of `dgc.evaluation.calibration`, the posteriors as they are, adjusted by the EM
estimate, and adjusted by the true prior (the oracle), with the EM estimate's error. ACSA is
prior-free (mean recall), so a shift shows in accuracy, ECE and the prior estimate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dgc.config import RunConfig
from dgc.core.errors import DGCError
from dgc.core.metrics import acsa, expected_calibration_error
from dgc.evaluation.calibration import calibrators
from dgc.evaluation.scoring import SplitScores
from dgc.methods.family import family_of
from dgc.nn.priors import adjust_posteriors, check_em_size, em_prior, frequencies

DIRICHLET_DRAWS = 3
DIRICHLET_ALPHA = 1.0


def target_priors(train_counts: Sequence[int] | np.ndarray, seed: int,
                  draws: int = DIRICHLET_DRAWS) -> dict[str, np.ndarray]:
    """balanced, the training imbalance, its reverse, and `draws` Dirichlet(1) priors."""
    train = frequencies(train_counts)
    rng = np.random.default_rng(seed)
    priors = {"balanced": np.full(len(train), 1.0 / len(train)), "train": train,
              "reversed": train[::-1].copy()}
    for k in range(1, draws + 1):
        priors[f"dirichlet-{k}"] = rng.dirichlet(np.full(len(train), DIRICHLET_ALPHA))
    return priors


def resample_to_prior(y: np.ndarray, prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the largest subset of `y` (drawn without replacement) whose class
    frequencies are `prior`, with at least one image of every class the prior gives weight."""
    available = np.bincount(y, minlength=len(prior))
    weighted = prior > 0
    if np.any(available[weighted] == 0):
        raise DGCError("the test set lacks a class the target prior needs")
    size = np.min(available[weighted] / prior[weighted])
    wanted = np.where(weighted, np.clip(np.floor(prior * size), 1, available), 0).astype(int)
    parts = [rng.choice(np.flatnonzero(y == c), size=n, replace=False)
             for c, n in enumerate(wanted) if n]
    return np.sort(np.concatenate(parts))


def outcome(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {"acsa": acsa(y, probs.argmax(1)), "accuracy": float(np.mean(probs.argmax(1) == y)),
            "ece": expected_calibration_error(y, probs)}


def mean_tree(trees: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The leaf-wise mean of dicts of the same shape (numbers at the leaves)."""
    return {key: mean_tree([t[key] for t in trees]) if isinstance(trees[0][key], dict)
            else float(np.mean([t[key] for t in trees])) for key in trees[0]}


def shift_report(scores: SplitScores, cfg: RunConfig,
                 train_counts: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """Per target prior and calibration: outcomes as they are, after EM and with the true
    prior, and the L1 error of the EM estimate (and of the source prior) to the true prior.
    `dirichlet` is the mean over the Dirichlet draws."""
    fitted = calibrators(scores.val, scores.y_val)
    trained = family_of(cfg).prior(cfg, train_counts)
    rng = np.random.default_rng(cfg.seed)
    report: dict[str, Any] = {}
    for name, prior in target_priors(train_counts, cfg.seed).items():
        index = resample_to_prior(scores.y_test, prior, rng)
        y = scores.y_test[index]
        true = np.bincount(y, minlength=len(train_counts)) / len(y)
        report[name] = {"size": len(y), "prior": true.tolist()}
        for calibration, calibrate in fitted.items():
            source = frequencies(train_counts) if calibration == "bcts" else trained
            probs = calibrate(scores.test[index])
            estimate, adjusted = em_prior(probs, source, warn=False)
            report[name][calibration] = {
                "as_is": outcome(y, probs), "em": outcome(y, adjusted),
                "oracle": outcome(y, adjust_posteriors(probs, source, true)),
                "prior_error_em": float(np.abs(estimate - true).sum()),
                "prior_error_source": float(np.abs(source - true).sum())}
    check_em_size(min(r["size"] for r in report.values()), len(train_counts))  # once
    draws = [report[k] for k in report if k.startswith("dirichlet-")]
    report["dirichlet"] = mean_tree([{k: v for k, v in d.items() if k != "prior"}
                                     for d in draws])
    return report
