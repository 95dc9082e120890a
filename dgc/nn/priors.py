"""Class priors and label shift: the prior a model's posteriors are for, posteriors moved to another
prior, and EM re-estimation of an unknown test prior (Saerens et al. 2002).

A model trained on one class prior π_s meets another, π_t, at deployment. If p(x | y) stays the
same, the posterior follows by p_t(y | x) ∝ p_s(y | x) · π_t(y) / π_s(y) (`adjust_posteriors`), and
π_t itself can be estimated from unlabelled test images by EM (`em_prior`): alternate the adjusted
posteriors and their mean."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dgc.core.errors import DGCError, DGCWarning

EM_TOLERANCE = 1e-8
EM_ITERATIONS = 1000
# Fewer images per class than this, and EM can drive the estimate towards a near-certain prior
# (one image: all of it on that image's class).
EM_MIN_PER_CLASS = 10


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


def em_prior(probs: np.ndarray, source: np.ndarray,
             warn: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Saerens et al. 2002: the test prior π_t that the adjusted posteriors average to, and
    those posteriors; EM from π_s until π_t moves less than `EM_TOLERANCE`. With `warn`, a
    DGCWarning when the images are too few to estimate it (`check_em_size`)."""
    if len(probs) == 0:
        raise DGCError("EM estimates the test prior from the images being predicted; give some")
    if warn:
        check_em_size(len(probs), probs.shape[1])
    prior = source
    for _ in range(EM_ITERATIONS):
        prior, previous = adjust_posteriors(probs, source, prior).mean(axis=0), prior
        if np.abs(prior - previous).max() < EM_TOLERANCE:
            break
    return prior, adjust_posteriors(probs, source, prior)


def check_em_size(n_images: int, n_classes: int) -> None:
    """Warn that an EM estimate rests on `n_images`, fewer than `EM_MIN_PER_CLASS` a class."""
    if n_images < EM_MIN_PER_CLASS * n_classes:
        warnings.warn(f"EM re-estimated the test prior from only {n_images} "
                      f"image{'s' * (n_images != 1)}, fewer than "
                      f"{EM_MIN_PER_CLASS} per class ({EM_MIN_PER_CLASS * n_classes} here): so few "
                      "can drive it towards a near-certain prior; give more images at once, or "
                      "the prior itself if it is known", DGCWarning, stacklevel=3)
