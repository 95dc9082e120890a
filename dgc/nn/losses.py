"""Every loss, as plain functions: DGC's objective of METHOD §2 and its pre-training loss, logit
adjustment (the one place it is written, for every method), and the baselines' losses, class weights
and margins of METHOD §8.

A weighted baseline loss is the plain weighted mean (1/N) Σ_i w_{y_i} ℓ_i, as Cui et al. define it
(not PyTorch's Σ w ℓ / Σ w, which cancels the weights' overall scale batch by batch)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgc.config import BaselineConfig

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def batch_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean over the batch, or with per-row `weights` (mean 1 over the training set, so not
    over a batch) the weighted mean (1/B) Σ_i w_i v_i: a row of weight 2 counts as two rows."""
    return values.mean() if weights is None else (values * weights).mean()


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """½‖x − G_X(z)‖² summed over pixels, averaged over the batch (weighted: `batch_mean`)."""
    return batch_mean(0.5 * (x - recon).pow(2).flatten(1).sum(1), weights)


def imq_mmd(z: torch.Tensor, z_prior: torch.Tensor,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """MMD with inverse multiquadratic kernels C/(C + ‖a − b‖²), C = 2·k·s over the paper's scales.
    Within-sample terms are U-statistics (diagonal excluded, divided by n² − n); the cross term
    is 2/n² Σ k(z_i, z̃_j). With row `weights` w the codes' terms are the weighted estimates
    Σ_{i≠j} w_i w_j k(z_i, z_j) / Σ_{i≠j} w_i w_j and 2 Σ_ij w_i k(z_i, z̃_j) / (m Σ_i w_i): each
    pair of rows counts w_i w_j times (a row's copies are not paired with each other, as their
    codes would differ only by their noise), and a row of weight 0 is a row removed."""
    n, k = z.shape
    m = z_prior.shape[0]
    d_zz = torch.cdist(z, z).pow(2)
    d_pp = torch.cdist(z_prior, z_prior).pow(2)
    d_zp = torch.cdist(z, z_prior).pow(2)
    off_z = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    off_p = 1.0 - torch.eye(m, dtype=z.dtype, device=z.device)
    pairs: float | torch.Tensor = n * n - n
    cross: float | torch.Tensor = n * m
    rows = None if weights is None else weights[:, None]
    if weights is not None:
        off_z = off_z * weights[:, None] * weights[None, :]
        pairs, cross = off_z.sum(), weights.sum() * m
    total = z.new_zeros(())
    for scale in IMQ_SCALES:
        c = 2.0 * k * scale
        between = c / (c + d_zp)
        if rows is not None:
            between = between * rows
        total = total + (c / (c + d_zz) * off_z).sum() / pairs
        total = total + (c / (c + d_pp) * off_p).sum() / (m * m - m)
        total = total - 2.0 * between.sum() / cross
    return total


def moment_matching_loss(z: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Encoder pre-training: mean((m_q − 0)²) + mean((Cov_q − I)²) against the N(0, I) prior;
    with row `weights`, the weighted mean and (frequency-weighted) covariance."""
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    if weights is None:
        mean = z.mean(0)
        centred = z - mean
        cov = centred.T @ centred / (z.shape[0] - 1)
    else:
        total = weights.sum()
        mean = (weights[:, None] * z).sum(0) / total
        centred = z - mean
        cov = (weights[:, None] * centred).T @ centred / (total - 1)
    return mean.pow(2).mean() + (cov - eye).pow(2).mean()


def class_log_prior(counts: torch.Tensor) -> torch.Tensor:
    """log π_c of the training class counts (float32), the logit-adjustment offsets."""
    counts = torch.as_tensor(counts).double()
    return torch.log(counts / counts.sum()).float()


def logit_adjusted(logits: torch.Tensor, log_prior: torch.Tensor | None,
                   tau: float) -> torch.Tensor:
    """logits + τ·log π (Menon et al. 2021): trained through this, the logits alone are meant
    for the prior π^(1−τ), balanced at τ = 1; unchanged at τ = 0 (`train.logit_adjust_tau`)."""
    return logits if not tau or log_prior is None else logits + tau * log_prior.to(logits.device)


def classification_loss(logits: torch.Tensor, y: torch.Tensor, weight: float | None,
                        log_prior: torch.Tensor | None = None, tau: float = 0.0,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """DGC's cross-entropy, optionally logit-adjusted (`logit_adjusted`). `weight=None` sums over
    the rows, as the official code does (its effective weight is the batch size); a number
    multiplies the mean instead. Row `weights` multiply each row's term."""
    logits = logit_adjusted(logits, log_prior, tau)
    if weights is not None:
        terms = F.cross_entropy(logits, y, reduction="none") * weights
        return terms.sum() if weight is None else weight * terms.mean()
    if weight is None:
        return F.cross_entropy(logits, y, reduction="sum")
    return weight * F.cross_entropy(logits, y)


def oversampling_index(y: torch.Tensor, train_counts: torch.Tensor, rate: float,
                       largest: float | None = None) -> torch.Tensor:
    """Row indices of a batch oversampled by class in latent space (METHOD §3): with
    ρ_c = r·(n_max − n_c)/n_c from the whole training set, the m_c rows of class c are repeated
    ⌈1 + ρ_c⌉ times (round-robin: every row once, then every row again, ...) and the first
    ⌊m_c·(1 + ρ_c)⌋ are kept, so each instance contributes about 1 + ρ_c codes. `largest` caps
    ρ_c: weighted class totals (`TrainData.weighted_counts`) can be far below one row's."""
    counts = train_counts.to(torch.float64)
    rho = rate * (counts.max() - counts) / counts
    if largest is not None:
        rho = rho.clamp(max=largest)
    pieces = []
    for c in torch.unique(y).tolist():
        rows = torch.nonzero(y == c).flatten()
        factor = 1.0 + float(rho[c])
        repeated = rows.repeat(math.ceil(factor - 1e-9))
        pieces.append(repeated[: int(len(rows) * factor + 1e-9)])
    return torch.cat(pieces)


# -- the baselines' losses (METHOD §8) --------------------------------------------------------

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


@dataclass(frozen=True)
class Loss:
    """A baseline loss: `compute(baseline_loss, logits, labels, class_weights)` and `tau`, the
    logit adjustment it builds in: its logits are then meant for the prior π^(−tau) of the rows
    they trained on (0 for a loss that leaves the prior alone). Declared with the loss, so that
    label shift (`dgc.methods.family`) can never get a new loss's prior wrong."""

    compute: Callable[..., torch.Tensor]
    tau: float


# `baseline.loss` (one of dgc.config.BASELINE_LOSSES) → its `Loss`.
LOSSES: dict[str, Loss] = {
    "ce": Loss(lambda _, logits, y, w: cross_entropy(logits, y, w), tau=0.0),
    "focal": Loss(lambda b, logits, y, w: focal_loss(logits, y, b.settings.focal_gamma, w),
                  tau=0.0),
    "ldam": Loss(lambda b, logits, y, w: ldam_loss(logits, y, b.margins.to(logits.device),
                                                   b.settings.ldam_scale, w), tau=0.0),
}


class BaselineLoss:
    """A baseline's loss at a given epoch, from its settings, the training counts and the logit
    adjustment `tau` every method shares (`train.logit_adjust_tau`)."""

    def __init__(self, settings: BaselineConfig, counts: torch.Tensor, epochs: int,
                 tau: float = 0.0):
        self.settings, self.tau = settings, tau
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
        logits = logit_adjusted(logits, self.log_prior, self.tau)
        return LOSSES[self.settings.loss].compute(self, logits, y, weights)
