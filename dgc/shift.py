"""Label shift at deployment: test sets drawn to other class priors, and the prior re-estimated.

A model trained on one class prior π_s meets another, π_t, at deployment. If p(x | y) stays the
same, the posterior follows by p_t(y | x) ∝ p_s(y | x) · π_t(y) / π_s(y) (`adjust_posteriors`),
and π_t itself can be estimated from unlabelled test images by EM (Saerens et al. 2002,
`em_prior`): alternate the adjusted posteriors and their mean.

π_s is the prior a method's posteriors are for. Uncalibrated, that is the one its training
assumes (`run_prior`): the prior of the rows it trained on (π, the training frequencies, or
uniform when they were drawn or weighted class-balanced), divided by π^τ for a τ-logit-adjusted
loss (whose logits alone are meant for a balanced prior when τ = 1 on rows drawn with π).
Temperature scaling changes how confident the posteriors are, not which classes they favour, so
it keeps that prior; bias-corrected temperature scaling fits a bias per class on the
validation split, which is drawn with π, and so makes it π.

`shift_report` resamples the test set to each target prior of `target_priors` and measures,
for every calibration of `dgc.calibration`, the posteriors as they are, adjusted by the EM
estimate, and adjusted by the true prior (the oracle), with the EM estimate's error.
ACSA is prior-free (mean recall), so a shift shows in accuracy, ECE and the prior estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dgc.calibration import calibrators
from dgc.config import RunConfig
from dgc.errors import DGCError
from dgc.experiment import family_of
from dgc.metrics import acsa, expected_calibration_error
from dgc.scoring import SplitScores

DIRICHLET_DRAWS = 3
DIRICHLET_ALPHA = 1.0
EM_TOLERANCE = 1e-8
EM_ITERATIONS = 1000


def frequencies(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    return values / values.sum()


def check_prior(prior: Any, n_classes: int, name: str = "test_prior") -> np.ndarray:
    """A prior as a float array of `n_classes` non-negative numbers summing to 1."""
    try:
        arr = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (n_classes,) or not np.all(np.isfinite(arr)) or arr.min() < 0 \
            or not np.isclose(arr.sum(), 1.0, atol=1e-6):
        raise DGCError(f"{name} must be {n_classes} non-negative numbers summing to 1 (one per "
                       f"class), or 'em' to estimate it; got {prior!r}")
    return arr


def run_prior(cfg: RunConfig, train_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """The prior a run's uncalibrated posteriors are for (`trained_prior`): DGC's label head
    (its logit-adjusted loss), or a baseline's loss, resampling and class weights."""
    if family_of(cfg).generative:
        return trained_prior(train_counts, cfg.train.logit_adjust_tau)
    b = cfg.baseline
    return trained_prior(train_counts, b.logit_tau if b.loss == "logit-adjust" else 0.0,
                         balanced=b.resample != "none" or b.weighting != "none")


def trained_prior(train_counts: Sequence[int] | np.ndarray, tau: float,
                  balanced: bool = False) -> np.ndarray:
    """The prior of posteriors trained with a τ-logit-adjusted loss on rows drawn with the
    training frequencies π, π^(1−τ), or class-balanced, π^(−τ); normalised."""
    return frequencies(frequencies(train_counts) ** ((0.0 if balanced else 1.0) - tau))


def adjust_posteriors(probs: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """p_t(y | x) ∝ p_s(y | x) · π_t(y) / π_s(y), row-normalised."""
    weighted = probs * (target / source)
    return weighted / weighted.sum(axis=1, keepdims=True)


def em_prior(probs: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Saerens et al. 2002: the test prior π_t that the adjusted posteriors average to, and
    those posteriors; EM from π_s until π_t moves less than `EM_TOLERANCE`."""
    prior = source
    for _ in range(EM_ITERATIONS):
        adjusted = adjust_posteriors(probs, source, prior)
        new = adjusted.mean(axis=0)
        if np.abs(new - prior).max() < EM_TOLERANCE:
            prior = new
            break
        prior = new
    return prior, adjust_posteriors(probs, source, prior)


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
    n_classes = len(train_counts)
    fitted = calibrators(scores.val, scores.y_val)
    trained = run_prior(cfg, train_counts)
    rng = np.random.default_rng(cfg.seed)
    report: dict[str, Any] = {}
    for name, prior in target_priors(train_counts, cfg.seed).items():
        index = resample_to_prior(scores.y_test, prior, rng)
        y = scores.y_test[index]
        true = np.bincount(y, minlength=n_classes) / len(y)
        report[name] = {"size": len(y), "prior": true.tolist()}
        for calibration, calibrate in fitted.items():
            source = frequencies(train_counts) if calibration == "bcts" else trained
            probs = calibrate(scores.test[index])
            estimate, adjusted = em_prior(probs, source)
            report[name][calibration] = {
                "as_is": outcome(y, probs), "em": outcome(y, adjusted),
                "oracle": outcome(y, adjust_posteriors(probs, source, true)),
                "prior_error_em": float(np.abs(estimate - true).sum()),
                "prior_error_source": float(np.abs(source - true).sum())}
    draws = [report[k] for k in report if k.startswith("dirichlet-")]
    report["dirichlet"] = mean_tree([{k: v for k, v in d.items() if k != "prior"}
                                     for d in draws])
    return report
