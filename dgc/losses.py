"""The training objective of METHOD §2 and the pre-training loss, as plain functions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """½‖x − G_X(z)‖² summed over pixels, averaged over the batch."""
    return 0.5 * (x - recon).pow(2).flatten(1).sum(1).mean()


def imq_mmd(z: torch.Tensor, z_prior: torch.Tensor) -> torch.Tensor:
    """MMD with inverse multiquadratic kernels C/(C + ‖a − b‖²), C = 2·k·s over the paper's scales.

    Within-sample terms are U-statistics (diagonal excluded, divided by n² − n); the cross term
    is 2/n² Σ k(z_i, z̃_j).
    """
    n, k = z.shape
    m = z_prior.shape[0]
    d_zz = torch.cdist(z, z).pow(2)
    d_pp = torch.cdist(z_prior, z_prior).pow(2)
    d_zp = torch.cdist(z, z_prior).pow(2)
    off_z = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    off_p = 1.0 - torch.eye(m, dtype=z.dtype, device=z.device)
    total = z.new_zeros(())
    for scale in IMQ_SCALES:
        c = 2.0 * k * scale
        total = total + (c / (c + d_zz) * off_z).sum() / (n * n - n)
        total = total + (c / (c + d_pp) * off_p).sum() / (m * m - m)
        total = total - 2.0 * (c / (c + d_zp)).sum() / (n * m)
    return total


def moment_matching_loss(z: torch.Tensor) -> torch.Tensor:
    """Encoder pre-training: mean((m_q − 0)²) + mean((Cov_q − I)²) against the N(0, I) prior."""
    mean = z.mean(0)
    centred = z - mean
    cov = centred.T @ centred / (z.shape[0] - 1)
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    return mean.pow(2).mean() + (cov - eye).pow(2).mean()


def class_log_prior(counts: torch.Tensor) -> torch.Tensor:
    """log π_c of the training class counts (float32), the logit-adjustment offsets."""
    counts = torch.as_tensor(counts).double()
    return torch.log(counts / counts.sum()).float()


def classification_loss(logits: torch.Tensor, y: torch.Tensor, weight: float | None,
                        log_prior: torch.Tensor | None = None, tau: float = 0.0) -> torch.Tensor:
    """Cross-entropy, optionally logit-adjusted (logits + τ·log π, Menon et al. 2021).

    `weight=None` sums over the rows, as the official code does (its effective weight is the batch
    size); a number multiplies the mean instead.
    """
    if tau and log_prior is not None:
        logits = logits + tau * log_prior
    if weight is None:
        return F.cross_entropy(logits, y, reduction="sum")
    return weight * F.cross_entropy(logits, y)


def oversampling_index(y: torch.Tensor, train_counts: torch.Tensor, rate: float) -> torch.Tensor:
    """Row indices of a batch oversampled by class in latent space (METHOD §3).

    With ρ_c = r·(n_max − n_c)/n_c from the whole training set, the m_c rows of class c are
    repeated ⌈1 + ρ_c⌉ times (round-robin: every row once, then every row again, ...) and the
    first ⌊m_c·(1 + ρ_c)⌋ are kept, so each instance contributes about 1 + ρ_c codes.
    """
    counts = train_counts.to(torch.float64)
    rho = rate * (counts.max() - counts) / counts
    pieces = []
    for c in torch.unique(y).tolist():
        rows = torch.nonzero(y == c).flatten()
        factor = 1.0 + float(rho[c])
        repeated = rows.repeat(math.ceil(factor - 1e-9))
        pieces.append(repeated[: int(len(rows) * factor + 1e-9)])
    return torch.cat(pieces)
