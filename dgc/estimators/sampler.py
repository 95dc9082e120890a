"""DGC as an oversampler in imbalanced-learn's style, from codes drawn from a class's posteriors
and decoded (`dgc.nn.generation.oversample`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from dgc.estimators.classifier import DGCClassifier
from dgc.nn.generation import oversample


class DGCSampler(BaseEstimator):
    """Oversample every class to the largest one's count with examples a DGC generates. `estimator`
    is the `DGCClassifier` to fit (a clone of it; default `DGCClassifier` with `random_state`).
    `fit_resample(X, y)` returns the originals followed by the generated examples, in X's own scale
    and dtype (uint8 images stay uint8), so it works in an `imblearn.pipeline.Pipeline`. The fitted
    classifier is `estimator_`."""

    def __init__(self, estimator: DGCClassifier | None = None,
                 random_state: int | None = None):
        self.estimator = estimator
        self.random_state = random_state

    def fit_resample(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        estimator = clone(self.estimator) if self.estimator is not None else DGCClassifier()
        if self.random_state is not None:
            estimator.set_params(random_state=self.random_state)
        est = self.estimator_ = estimator.fit(X, y)
        X, y = np.asarray(X), np.asarray(y)
        labels = torch.from_numpy(np.searchsorted(est.classes_, y).astype(np.int64))
        examples = est._tensor(est._scaled(X[..., None] if X.ndim == 3 else X))
        grown, grown_labels = oversample(est.model_, examples, labels, est.random_seed_)
        new = grown[len(X):].cpu()
        if new.ndim == 4:  # NCHW back to the input's (n, H, W[, C]) layout
            new = new.permute(0, 2, 3, 1)
        values = new.double().numpy() * est.scale_ + est.offset_
        if X.dtype.kind in "iu":
            values = np.rint(values).clip(np.iinfo(X.dtype).min, np.iinfo(X.dtype).max)
        values = values.reshape(len(values), *X.shape[1:]).astype(X.dtype)
        return (np.concatenate([X, values]),
                np.concatenate([y, est.classes_[grown_labels[len(X):].numpy()]]))
