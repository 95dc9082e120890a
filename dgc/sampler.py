"""DGC as an oversampler: new minority examples decoded from codes of the class's posteriors.

A trained DGC can make examples of a class: encode a real example x of class c by q(z | x,
y = c), draw z = μ + σ·ε, decode it. `oversample` grows every class to the largest one's
count this way (like SMOTE, but in the learned latent space rather than between pixels), and
serves two users:

* `DGCSampler`, an imbalanced-learn style sampler (`fit_resample`) that fits a `DGCClassifier`
  and can stand in an `imblearn.pipeline.Pipeline` before any classifier;
* the baselines' `baseline.resample=dgc` (`dgc.baselines`), which trains a discriminative
  method on real + generated images of a finished DGC run of the same training split,
  `baseline.generator=RUN` (`{seed}` in it is the run's seed, for `dgc bench`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from dgc.config import RunConfig
from dgc.data import DATASETS
from dgc.errors import DGCError
from dgc.estimator import DGCClassifier
from dgc.experiment import load_generative_run
from dgc.model import DGC, std_from_logvar

BATCH = 500


def class_samples(model: DGC, x: torch.Tensor, c: int, n: int,
                  generator: torch.Generator) -> torch.Tensor:
    """`n` decoded examples of class c from its real examples `x` (each used once before any
    is used again), in the decoder's output space."""
    order = torch.cat([torch.randperm(len(x), generator=generator)
                       for _ in range(-(-n // len(x)))])[:n]
    out = []
    with torch.inference_mode():
        for start in range(0, n, BATCH):
            source = x[order[start:start + BATCH]]
            label = torch.full((len(source),), c, dtype=torch.long, device=x.device)
            mu, logvar = model.encoder(source, label)
            noise = torch.randn(mu.shape, generator=generator).to(mu.device, mu.dtype)
            out.append(model.decoder(mu + std_from_logvar(logvar) * noise))
    return torch.cat(out)


def oversample(model: DGC, x: torch.Tensor, y: torch.Tensor,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class grown to the largest one's count with `class_samples`; the originals come
    first, the generated examples after them."""
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    counts = torch.bincount(y.cpu(), minlength=model.n_classes)
    xs, ys = [x], [y]
    for c, count in enumerate(counts.tolist()):
        if 0 < count < counts.max():
            wanted = int(counts.max()) - count
            xs.append(class_samples(model, x[y == c], c, wanted, generator).to(x.dtype))
            ys.append(torch.full((wanted,), c, dtype=y.dtype, device=y.device))
    model.train(was_training)
    return torch.cat(xs), torch.cat(ys)


def generator_run(cfg: RunConfig) -> DGC:
    """The DGC model of `baseline.generator`, refused unless it trained on this run's split."""
    path = Path(str(cfg.baseline.generator).format(seed=cfg.seed))
    run = load_generative_run(path, "give a DGC run as baseline.generator")
    same = ("exp", "seed", "profile", "image_size", "test_fraction",
            *(("data_dir",) if DATASETS[cfg.exp].user_data else ()))
    ours = [getattr(cfg, k) for k in same] + [cfg.train.val_fraction, list(cfg.train.held_out)]
    theirs = [getattr(run.cfg, k) for k in same] + [run.cfg.train.val_fraction,
                                                    list(run.cfg.train.held_out)]
    if ours != theirs:
        raise DGCError(f"baseline.generator {path} trained on another split ({', '.join(same)}, "
                       f"validation share, held-out classes: {theirs} vs {ours}); give the DGC "
                       "run of this seed's benchmark")
    return run.generator.to(cfg.device)


class DGCSampler(BaseEstimator):
    """Oversample every class to the largest one's count with examples a DGC generates.

    `estimator` is the `DGCClassifier` to fit (a clone of it; default `DGCClassifier` with
    `random_state`). `fit_resample(X, y)` returns the originals followed by the generated
    examples, in X's own scale and dtype (uint8 images stay uint8), so it works in an
    `imblearn.pipeline.Pipeline`. The fitted classifier is `estimator_`.
    """

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
