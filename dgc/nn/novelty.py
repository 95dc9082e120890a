"""Novelty scores of a batch, higher = more novel (`dgc.evaluation.ood` measures how well they
detect): `msp` (minus the maximum softmax probability, Hendrycks & Gimpel 2017) and the energy
(minus log Σ_c exp of the class scores, Liu et al. 2020) of any class scores, and what only a
generative model has:

* `evidence`: −log Σ_c exp score_c, the Bayes rule's evidence (DGC's energy);
* `recon`: the reconstruction error ½‖x − G_X(z)‖² under the best class, −max_c log-mean-exp_s;
* `latent`: −max_c log-mean-exp_s log p(z_c^s), the codes' density under the prior (N(0, I),
  or the learned mixture / class-conditional prior of DGCMM)."""

from __future__ import annotations

import math

import torch

from dgc.config import PredictConfig
from dgc.nn.model import DGC
from dgc.nn.prediction import sample_terms


def log_mean_exp(terms: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(terms, dim=-1) - math.log(terms.shape[-1])


def score_novelty(scores: torch.Tensor, energy: str = "energy") -> dict[str, torch.Tensor]:
    """`msp` and the energy, named `energy`, of class scores (N, C)."""
    return {"msp": -torch.softmax(scores, dim=1).max(dim=1).values,
            energy: -torch.logsumexp(scores, dim=1)}


def dgc_scores(model: DGC, x: torch.Tensor, predict: PredictConfig,
               seed: int) -> dict[str, torch.Tensor]:
    """DGC's novelty scores of a float batch (`msp`, `evidence`, `recon`, `latent`), every
    class's S codes decoded in passes of at most `predict.decode_batch` codes."""
    noise = torch.randn(predict.samples, model.cfg.latent_dim,
                        generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype)
    per_batch = max(1, predict.decode_batch // (model.n_classes * predict.samples))
    parts = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), per_batch):
            parts.append(batch_novelty(model, x[start:start + per_batch], noise,
                                       predict.latent_weight))
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def batch_novelty(model: DGC, x: torch.Tensor, noise: torch.Tensor, latent_weight: float = 1.0,
                  one_pass: bool = False) -> dict[str, torch.Tensor]:
    """`dgc_scores` of one batch, every class's codes drawn with `noise` (S, k)."""
    terms, _ = sample_terms(model, x, noise, ("recon", "label", "latent"), model.n_classes,
                            one_pass=one_pass)
    bayes = terms["recon"] + terms["label"]
    if model.prior is not None:  # a learned prior's density is part of its Bayes rule
        bayes = bayes + latent_weight * terms["latent"]
    return {**score_novelty(log_mean_exp(bayes), "evidence"),
            "recon": -log_mean_exp(terms["recon"]).max(dim=1).values,
            "latent": -log_mean_exp(terms["latent"]).max(dim=1).values}
