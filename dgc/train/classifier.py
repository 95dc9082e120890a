"""Training the baselines of METHOD §8 (`dgc.nn.classifier`) on DGC's own loop.

They differ only in their `BaselineConfig` and the logit adjustment every method shares
(`train.logit_adjust_tau`):

* the loss (`dgc.nn.losses.LOSSES`): cross-entropy, focal loss (Lin et al. 2017) or LDAM (Cao et
  al. 2019), logit-adjusted when τ > 0 (Menon et al. 2021: the `logit-adjust` method);
* class weights: none, inverse frequency, or the "effective number" weights of Cui et al. 2019,
  optionally deferred to the last epochs (DRW, Cao et al. 2019);
* resampling: none, class-balanced random oversampling, SMOTE (imbalanced-learn) once on
  the flattened training images, or images a trained DGC generates once (`dgc.nn.generation`).
  An epoch of any of them still visits N rows, as many as the training split holds, now drawn
  with every class equally likely, so every method gets the same number of gradient steps
  (oversampling to C · n_max rows per epoch would give the resampling methods 4.4× the steps
  of the others on Fashion-MNIST)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from dgc.config import RunConfig
from dgc.core.errors import DGCError
from dgc.core.io import CheckpointFiles
from dgc.nn.classifier import Classifier, classifier_logits
from dgc.nn.generation import oversample
from dgc.nn.losses import BaselineLoss
from dgc.nn.model import DGC
from dgc.train.loop import EpochTrainer, TrainData


def balanced_order(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` rows with the classes present in `y` equally often (±1), in a random order. A class
    contributes whole random permutations of its rows before any row repeats, so a small class is
    oversampled by repetition and a large one is covered across epochs."""
    classes = torch.nonzero(torch.bincount(y)).flatten()
    quota = torch.full((len(classes),), n // len(classes), dtype=torch.long)
    quota[torch.randperm(len(classes), generator=generator)[:n % len(classes)]] += 1
    pieces = []
    for c, wanted in zip(classes.tolist(), quota.tolist(), strict=True):
        rows = torch.nonzero(y == c).flatten()
        rounds = -(-wanted // len(rows))
        cycled = torch.cat([rows[torch.randperm(len(rows), generator=generator)]
                            for _ in range(rounds)])
        pieces.append(cycled[:wanted])
    order = torch.cat(pieces)
    return order[torch.randperm(len(order), generator=generator)]


def smote_k(y: np.ndarray, k: int) -> int:
    """SMOTE's neighbour count: `k`, or fewer where the smallest class cannot supply k."""
    smallest = int(np.bincount(y)[np.unique(y)].min())
    if smallest < 2:
        raise DGCError("SMOTE needs at least two training images of every class to interpolate "
                       "between, but one class has a single one; use another method, a larger "
                       "--profile or a smaller validation split")
    return min(k, smallest - 1)


def smote(x: torch.Tensor, y: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """imbalanced-learn's SMOTE on the flattened images: every class up to the largest's count. The
    originals come first, the synthetic images (convex combinations of a class's neighbours, so
    still in [0, 1]) after them."""
    from imblearn.over_sampling import SMOTE

    labels = y.cpu().numpy()
    sampler = SMOTE(k_neighbors=smote_k(labels, k), random_state=seed)
    flat, labels = sampler.fit_resample(x.cpu().reshape(len(x), -1).numpy(), labels)
    images = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    images = images.view(len(labels), *x.shape[1:]).contiguous(memory_format=torch.channels_last)
    return images.to(x.device), torch.from_numpy(labels).long()


class ClassifierTrainer(EpochTrainer):
    """One gradient step per batch on the baseline's loss. The whole-set training counts
    (`data.train_counts`) set the class weights, margins and prior, as they set DGC's; SMOTE or
    the DGC generator grows the training rows once, before the first epoch."""

    model: Classifier

    def __init__(self, model: Classifier, cfg: RunConfig, data: TrainData,
                 files: CheckpointFiles | None = None, progress: bool = False,
                 log: Callable[[str], None] = print, generator: DGC | None = None):
        self.rows_per_epoch = len(data.y)
        if cfg.baseline.resample in ("smote", "dgc"):
            if cfg.baseline.resample == "smote":
                x, y = smote(data.x, data.y, cfg.baseline.smote_k, cfg.seed)
            elif generator is None:
                raise DGCError("baseline.resample=dgc needs the DGC run of baseline.generator")
            else:
                x, y = oversample(generator, data.x, data.y, cfg.seed)
                x = x.contiguous(memory_format=torch.channels_last)
            grower = "SMOTE" if cfg.baseline.resample == "smote" else "the DGC generator"
            log(f"dgc: {grower} grew the training split from {len(data.y)} to {len(y)} images")
            data = dataclasses.replace(data, x=x, y=y)
        super().__init__(model, cfg, data, files, progress, log)
        self.loss = BaselineLoss(cfg.baseline, data.train_counts, cfg.train.epochs,
                                 cfg.train.logit_adjust_tau)

    def epoch_order(self) -> torch.Tensor:
        """N rows per epoch for every method: class-balanced for `ros`, a fresh random subset
        of the (balanced) grown set for `smote` and `dgc`."""
        if self.cfg.baseline.resample == "ros":
            return balanced_order(self.data.y, self.rows_per_epoch, self.generator)
        return super().epoch_order()[:self.rows_per_epoch]

    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        x, y = self.batch(index)
        y = y.to(x.device)
        mix, partner = self.mixing(len(y))
        with self.mixed_precision():
            if partner is None:
                loss = self.loss(self.model(x), y, self.epoch)
            else:  # mixup of the images (`train.mixup`)
                logits = self.model(mix * x + (1 - mix) * x[partner])
                loss = (mix * self.loss(logits, y, self.epoch)
                        + (1 - mix) * self.loss(logits, y[partner], self.epoch))
        self.check_finite({f"{self.cfg.method} training": loss})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.finish_gradients(self.model.parameters())
        self.optimizer.step()
        self.cap_norms(self.model.head)
        return {"loss": float(loss.detach())}

    def validation_scores(self) -> torch.Tensor:
        return classifier_logits(self.model, self.data.x_val, bf16=self.cfg.predict.bf16)
