"""The discriminative baselines of METHOD §8, on DGC's own network and DGC's training loop.

Every baseline is a `Classifier`: the convolutional trunk of DGC's encoder
(`dgc.model.conv_trunk`) followed by one linear layer, so that a comparison with DGC is about the
method, not the network. Baselines differ only in their `BaselineConfig` (dgc.config):

* the loss (`LOSSES`): cross-entropy, focal loss (Lin et al. 2017), LDAM (Cao et al. 2019) or the
  logit-adjusted cross-entropy (Menon et al. 2021);
* class weights: none, inverse frequency, or the "effective number" weights of Cui et al. 2019,
  optionally deferred to the last epochs (DRW, Cao et al. 2019);
* resampling: none, class-balanced random oversampling, SMOTE (imbalanced-learn) once on
  the flattened training images, or images a trained DGC generates once (`dgc.sampler`). An
  epoch of any of them still visits N rows, as many as the training split holds, now drawn
  with every class equally likely, so every method gets the same number of gradient steps
  (oversampling to C · n_max rows per epoch would give the resampling methods 4.4× the steps
  of the others on Fashion-MNIST).

A weighted loss is the plain weighted mean (1/N) Σ_i w_{y_i} ℓ_i, as Cui et al. define it (not
PyTorch's Σ w ℓ / Σ w, which cancels the weights' overall scale batch by batch). Training goes
through `EpochTrainer`, the loop DGC uses, so the batches, augmentation, learning-rate schedule,
validation and best-checkpoint rule are the same code for every method. A classifier predicts
with the softmax of its logits; only a method that is itself a prior correction (logit
adjustment, LDAM's margins) builds one in, at training time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dgc.config import BaselineConfig, ModelConfig, RunConfig
from dgc.errors import DGCError
from dgc.losses import class_log_prior
from dgc.model import conv_trunk, images_to_tensor, initialise
from dgc.precision import autocast
from dgc.training import EpochTrainer, TrainData

PREDICT_BATCH = 1024


class CosineLinear(nn.Module):
    """s · cos(feature, w_c): the normalised last layer LDAM's scale s assumes (Cao et al.'s code).

    Same number of weights as a linear layer, without the bias.
    """

    def __init__(self, n_in: int, n_out: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.normal_(self.weight, 0.0, 0.01)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class Classifier(nn.Module):
    """DGC's encoder trunk plus a linear layer (cosine with `cosine_scale`); `image_shape` is
    (H, W, C). Initialised like DGC (`ModelConfig.init`)."""

    def __init__(self, image_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig,
                 cosine_scale: float | None = None):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.n_classes = n_classes
        self.cfg = cfg
        self.trunk, flat = conv_trunk(self.image_shape, cfg)
        self.head: nn.Module = (nn.Linear(flat, n_classes) if cosine_scale is None
                                else CosineLinear(flat, n_classes, cosine_scale))
        initialise(self, self.trunk, cfg.init)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as DGC

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def build_classifier(cfg: RunConfig, image_shape: tuple[int, ...],
                     n_classes: int) -> Classifier:
    """The baseline network of a run: cosine last layer for LDAM, linear otherwise."""
    scale = cfg.baseline.ldam_scale if cfg.baseline.loss == "ldam" else None
    return Classifier(image_shape, n_classes, cfg.model, cosine_scale=scale)


# -- class weights and margins ----------------------------------------------------------------

def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """w_c ∝ 1/n_c, normalised to mean 1 over the classes."""
    inverse = 1.0 / counts.double()
    return (inverse * len(counts) / inverse.sum()).float()


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al. 2019: w_c ∝ (1 − β)/(1 − β^n_c), normalised to sum C (mean 1)."""
    raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64),
                                          counts.double()))
    return (raw * len(counts) / raw.sum()).float()


def ldam_margins(counts: torch.Tensor, max_margin: float) -> torch.Tensor:
    """Cao et al. 2019: m_c ∝ n_c^(−1/4), scaled so the smallest class gets `max_margin`."""
    raw = counts.double().pow(-0.25)
    return (raw * max_margin / raw.max()).float()


# -- losses -----------------------------------------------------------------------------------

def weighted_mean(losses: torch.Tensor, y: torch.Tensor,
                  weights: torch.Tensor | None) -> torch.Tensor:
    """(1/N) Σ_i w_{y_i} ℓ_i, or the plain mean without weights."""
    return losses.mean() if weights is None else (losses * weights[y]).mean()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    return weighted_mean(F.cross_entropy(logits, y, reduction="none"), y, weights)


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Lin et al. 2017: −(1 − p_y)^γ log p_y (without their detection-specific α)."""
    log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return weighted_mean(-(1.0 - log_p.exp()).pow(gamma) * log_p, y, weights)


def ldam_loss(logits: torch.Tensor, y: torch.Tensor, margins: torch.Tensor, scale: float,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cao et al. 2019: cross-entropy of s·(cos − m_y·1[c = y]); `logits` are already s·cos."""
    shift = torch.zeros_like(logits).scatter_(1, y[:, None], (scale * margins[y])[:, None])
    return cross_entropy(logits - shift, y, weights)


def logit_adjusted_loss(logits: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor,
                        tau: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Menon et al. 2021: cross-entropy of logits + τ·log π; predictions use the logits alone."""
    return cross_entropy(logits + tau * log_prior, y, weights)


class BaselineLoss:
    """A baseline's loss at a given epoch, from its settings and the training counts."""

    def __init__(self, settings: BaselineConfig, counts: torch.Tensor, epochs: int):
        self.settings = settings
        self.weights = {"none": None, "inverse": inverse_frequency_weights(counts),
                        "effective": effective_number_weights(counts, settings.cb_beta)
                        }[settings.weighting]
        self.weights_from = round(settings.weights_from * epochs)
        self.margins = ldam_margins(counts, settings.ldam_max_margin)
        self.log_prior = class_log_prior(counts)

    def weights_at(self, epoch: int) -> torch.Tensor | None:
        """Class weights in the 0-based `epoch` (None before deferred re-weighting starts)."""
        return self.weights if epoch >= self.weights_from else None

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        weights = self.weights_at(epoch)
        if weights is not None:
            weights = weights.to(logits.device)
        return LOSSES[self.settings.loss](self, logits, y, weights)


# `baseline.loss` (one of dgc.config.BASELINE_LOSSES) → its loss of (the `BaselineLoss` holding
# settings, margins and prior, logits, labels, class weights).
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": lambda _, logits, y, w: cross_entropy(logits, y, w),
    "focal": lambda b, logits, y, w: focal_loss(logits, y, b.settings.focal_gamma, w),
    "ldam": lambda b, logits, y, w: ldam_loss(logits, y, b.margins.to(logits.device),
                                              b.settings.ldam_scale, w),
    "logit-adjust": lambda b, logits, y, w: logit_adjusted_loss(
        logits, y, b.log_prior.to(logits.device), b.settings.logit_tau, w),
}


# -- resampling -------------------------------------------------------------------------------

def balanced_order(y: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` rows with the classes present in `y` equally often (±1), in a random order.

    A class contributes whole random permutations of its rows before any row repeats, so a
    small class is oversampled by repetition and a large one is covered across epochs.
    """
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
    """imbalanced-learn's SMOTE on the flattened images: every class up to the largest's count.

    The originals come first, the synthetic images (convex combinations of a class's
    neighbours, so still in [0, 1]) after them.
    """
    from imblearn.over_sampling import SMOTE

    labels = y.cpu().numpy()
    sampler = SMOTE(k_neighbors=smote_k(labels, k), random_state=seed)
    flat, labels = sampler.fit_resample(x.cpu().reshape(len(x), -1).numpy(), labels)
    images = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    images = images.view(len(labels), *x.shape[1:]).contiguous(memory_format=torch.channels_last)
    return images.to(x.device), torch.from_numpy(labels).long()


def dgc_images(data: TrainData, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split grown by the images of `baseline.generator`'s DGC (`dgc.sampler`)."""
    from dgc.sampler import generator_run, oversample  # it needs dgc.experiment, which needs us

    x, y = oversample(generator_run(cfg), data.x, data.y, cfg.seed)
    return x.contiguous(memory_format=torch.channels_last), y


# -- training and prediction ------------------------------------------------------------------

class ClassifierTrainer(EpochTrainer):
    """One gradient step per batch on the baseline's loss; everything else is `EpochTrainer`'s.

    The whole-set training counts (`data.train_counts`) set the class weights, margins and
    prior, as they set DGC's; SMOTE replaces the training rows once, before the first epoch,
    and every epoch draws as many rows as the training split had before it.
    """

    model: Classifier

    def __init__(self, model: Classifier, cfg: RunConfig, data: TrainData,
                 run_dir: Path | None = None, progress: bool = False,
                 log: Callable[[str], None] = print):
        self.rows_per_epoch = len(data.y)
        if cfg.baseline.resample in ("smote", "dgc"):
            x, y = (smote(data.x, data.y, cfg.baseline.smote_k, cfg.seed)
                    if cfg.baseline.resample == "smote" else dgc_images(data, cfg))
            grower = "SMOTE" if cfg.baseline.resample == "smote" else "the DGC generator"
            log(f"dgc: {grower} grew the training split from {len(data.y)} to {len(y)} images")
            data = dataclasses.replace(data, x=x, y=y)
        super().__init__(model, cfg, data, run_dir, progress, log)
        self.loss = BaselineLoss(cfg.baseline, data.train_counts, cfg.train.epochs)

    def epoch_order(self) -> torch.Tensor:
        """N rows per epoch for every method: class-balanced for `ros`, a fresh random subset
        of the (balanced) grown set for `smote` and `dgc`."""
        if self.cfg.baseline.resample == "ros":
            return balanced_order(self.data.y, self.rows_per_epoch, self.generator)
        order = super().epoch_order()
        return order[:self.rows_per_epoch]

    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        x, y = self.batch(index)
        with self.mixed_precision():
            loss = self.loss(self.model(x), y.to(x.device), self.epoch)
        self.check_finite({f"{self.cfg.method} training": loss})
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.finish_gradients(self.model.parameters())
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def validation_scores(self) -> torch.Tensor:
        return classifier_logits(self.model, self.data.x_val, bf16=self.cfg.predict.bf16)


def classifier_logits(model: Classifier, x: torch.Tensor, batch: int = PREDICT_BATCH,
                      bf16: bool = False) -> torch.Tensor:
    """Logits (N, C) of a float batch (N, C, H, W) in evaluation mode, in the batch's dtype
    even under bfloat16 autocast."""
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(bf16, x.device.type):
        logits = [model(x[i:i + batch]).to(x.dtype) for i in range(0, len(x), batch)]
    model.train(was_training)
    if not logits:
        return torch.empty(0, model.n_classes, device=x.device)
    return torch.cat(logits)


def classifier_proba(model: Classifier, images: np.ndarray, device: str = "cpu",
                     bf16: bool = False) -> np.ndarray:
    """Class probabilities (N, C), the softmax of the logits, for uint8 images (N, H, W, C)."""
    logits = classifier_logits(model, images_to_tensor(images, device), bf16=bf16)
    probs = torch.softmax(logits.double(), dim=1)
    return probs.cpu().numpy()
