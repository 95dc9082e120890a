"""Prediction by Bayes' rule with importance sampling (SPEC §4, paper Eq. 9).

For every image x and class c, S codes z_c^s ~ q(z | x, y = c) are scored by

    log w_c^s = −½‖x − G_X(z_c^s)‖²  +  log softmax(G_Y(z_c^s))_c
    score_c   = log mean_s exp(log w_c^s),     p(y | x) = softmax_c(score_c)

The trunk runs once per image, every (class, sample) code of a batch of images goes through the
decoder in one pass, and the noise ε^s is drawn once per call from a seeded generator and shared
by all images and classes, so the same model gives the same answer for an image whatever else is
in the batch. `rule="label"` keeps only the label term, `rule="recon"` only the reconstruction.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dgc.config import PredictConfig
from dgc.losses import imq_mmd
from dgc.model import DGC, images_to_tensor, std_from_logvar


def class_scores(model: DGC, x: torch.Tensor, cfg: PredictConfig, seed: int = 0) -> torch.Tensor:
    """Unnormalised log p(y = c | x) for a float batch (N, C, H, W); pruned classes get −inf."""
    n_classes, k = model.n_classes, model.cfg.latent_dim
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(cfg.samples, k, generator=generator).to(x.device)
    kept = n_classes if cfg.top_k is None else min(cfg.top_k, n_classes)
    decoded = 0 if cfg.rule == "label" else kept * cfg.samples
    per_batch = max(1, cfg.decode_batch // decoded) if decoded else 4096
    was_training = model.training
    model.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, len(x), per_batch):
            xb = x[start:start + per_batch]
            terms, codes = sample_terms(model, xb, noise, cfg.rule, kept)
            score = torch.logsumexp(terms, dim=2) - math.log(cfg.samples)
            if cfg.mmd_term:
                score = score - batch_mmd(codes, generator)
            scores.append(score)
    model.train(was_training)
    return torch.cat(scores)


def sample_terms(model: DGC, x: torch.Tensor, noise: torch.Tensor, rule: str,
                 kept: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log w_c^s of shape (B, C, S) and the codes (B, C, S, k); unscored classes are −inf."""
    mu, logvar = model.encoder.all_classes(model.encoder.features(x))
    codes = mu[:, :, None, :] + std_from_logvar(logvar)[:, :, None, :] * noise
    batch, n_classes, samples, k = codes.shape
    log_probs = torch.log_softmax(model.head(codes), dim=-1)
    own = torch.arange(n_classes, device=x.device).view(1, n_classes, 1, 1)
    label = log_probs.gather(-1, own.expand(batch, n_classes, samples, 1)).squeeze(-1)
    if rule == "label":
        return label, codes
    classes = torch.arange(n_classes, device=x.device).expand(batch, n_classes)
    if kept < n_classes:
        ranking = torch.logsumexp(label, dim=2)
        classes = ranking.topk(kept, dim=1).indices
    chosen = codes.gather(1, classes[:, :, None, None].expand(batch, kept, samples, k))
    recon = model.decoder(chosen.reshape(-1, k)).view(batch, kept, samples, *x.shape[1:])
    terms = -0.5 * (recon - x[:, None, None]).pow(2).flatten(3).sum(-1)
    if rule == "bayes":
        terms = terms + label.gather(1, classes[:, :, None].expand(batch, kept, samples))
    full = torch.full_like(label, -math.inf)
    return full.scatter(1, classes[:, :, None].expand(batch, kept, samples), terms), codes


def batch_mmd(codes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The official code's per-class offset: MMD between a class's codes over the batch and N(0, I).

    It depends on the rest of the batch and is nearly constant across classes; off by default.
    """
    batch, n_classes, samples, k = codes.shape
    prior = torch.randn(batch * samples, k, generator=generator).to(codes.device)
    offsets = [imq_mmd(codes[:, c].reshape(-1, k), prior) for c in range(n_classes)]
    return torch.stack(offsets)[None, :] if batch * samples > 1 else codes.new_zeros(1, n_classes)


def predict_proba(model: DGC, images: np.ndarray, cfg: PredictConfig, seed: int = 0,
                  device: str = "cpu") -> np.ndarray:
    """Class probabilities (N, C) for uint8 images (N, H, W, C)."""
    scores = class_scores(model, images_to_tensor(images, device), cfg, seed)
    return torch.softmax(scores, dim=1).cpu().numpy()
