"""Class priors and label shift: the prior a model's posteriors are for, posteriors moved to another
prior, and EM re-estimation of an unknown test prior (Saerens et al. 2002).

A model trained on one class prior π_s meets another, π_t, at deployment. If p(x | y) stays the
same, the posterior follows by p_t(y | x) ∝ p_s(y | x) · π_t(y) / π_s(y) (`adjust_posteriors`), and
π_t itself can be estimated from unlabelled test images by EM (`em_prior`): alternate the adjusted
posteriors and their mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dgc.core.errors import DGCError

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
        prior, previous = adjust_posteriors(probs, source, prior).mean(axis=0), prior
        if np.abs(prior - previous).max() < EM_TOLERANCE:
            break
    return prior, adjust_posteriors(probs, source, prior)
