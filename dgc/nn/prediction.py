"""Prediction by Bayes' rule with importance sampling (METHOD §4, paper Eq. 9).

For every image x and class c, S codes z_c^s ~ q(z | x, y = c) are scored by

    log w_c^s = −½‖x − G_X(z_c^s)‖²  +  log softmax(G_Y(z_c^s))_c
    score_c   = log mean_s exp(log w_c^s),     p(y | x) = softmax_c(score_c)

With a learned mixture prior (DGCMM) the rule also adds log p(z_c^s | y = c) (class-tied) or
the mixture's log p(z_c^s) to log w_c^s: the `latent` term. The trunk runs once per image, every
(class, sample) code of a batch of images goes through the decoder in one pass, and the noise
ε^s is drawn once per call from a seeded generator and shared by all images and classes, so the
same model gives the same answer for an image whatever else is in the batch. `rule="label"`
keeps only the label term, `rule="recon"` only the reconstruction."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dgc.config import PredictConfig
from dgc.core.metrics import acsa
from dgc.core.precision import autocast
from dgc.core.progress import steps
from dgc.nn.losses import imq_mmd
from dgc.nn.model import DGC, images_to_tensor, std_from_logvar

DECODER_PASS = 256  # codes per decoder pass (`reconstruction`)
RULE_TERMS = {"bayes": ("recon", "label"), "label": ("label",), "recon": ("recon",)}


def class_scores(model: DGC, x: torch.Tensor, cfg: PredictConfig, seed: int = 0,
                 terms: tuple[str, ...] | None = None, progress: bool = False) -> torch.Tensor:
    """Unnormalised log p(y = c | x) for a float batch (N, C, H, W); pruned classes get −inf.
    `terms` overrides the ones `cfg.rule` and `cfg.importance` choose (see `sample_terms`)."""
    if terms is None:
        terms = rule_terms(model, cfg)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(cfg.samples, model.cfg.latent_dim, generator=generator).to(x.device)
    kept = model.n_classes if cfg.top_k is None else min(cfg.top_k, model.n_classes)
    decoded = kept * cfg.samples if "recon" in terms else 0
    per_batch = max(1, cfg.decode_batch // decoded) if decoded else 4096
    if cfg.mmd_term:  # whole MMD chunks in every batch, so a chunk never depends on the batching
        per_batch = max(1, per_batch // cfg.mmd_images) * cfg.mmd_images
    was_training = model.training
    model.eval()
    scores = []
    with torch.inference_mode(), autocast(cfg.bf16, x.device.type):
        starts = range(0, len(x), per_batch)
        for start in steps(starts, "predict", "batch", progress and len(starts) > 1):
            score, codes = rule_scores(model, x[start:start + per_batch], noise, terms, kept,
                                       cfg.latent_weight)
            if cfg.mmd_term:
                score = score + chunk_mmd(codes, cfg.mmd_images, generator)
            scores.append(score)
    model.train(was_training)
    return torch.cat(scores)


def rule_scores(model: DGC, x: torch.Tensor, noise: torch.Tensor, terms: tuple[str, ...],
                kept: int, latent_weight: float = 1.0,
                one_pass: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's unnormalised log p(y = c | x), (B, C), and its codes (B, C, S, k): the log-mean
    over the S samples of the sum of the rule's `terms` (`sample_terms`)."""
    weights, codes = sample_terms(model, x, noise, terms, kept, latent_weight, one_pass)
    log_weight = functools.reduce(torch.add, weights.values())  # every rule has a term
    return torch.logsumexp(log_weight, dim=2) - math.log(noise.shape[0]), codes


def rule_terms(model: DGC, cfg: PredictConfig) -> tuple[str, ...]:
    """The terms of `cfg.rule`: a learned prior's `latent` term joins the full Bayes rule."""
    terms = RULE_TERMS[cfg.rule]
    if cfg.rule == "bayes" and model.prior is not None:
        terms += ("latent",)
    return terms + (("prior",) if cfg.importance else ())


def latent_term(model: DGC, codes: torch.Tensor) -> torch.Tensor:
    """log p(z) of codes (B, C, S, k) under the model's prior, class c's for row c when tied;
    up to a constant shared by every class."""
    if model.prior is None:
        return -0.5 * codes.pow(2).sum(-1)
    classes = torch.arange(codes.shape[1], device=codes.device).view(1, -1, 1)
    return model.prior.log_density(codes, classes)


def sample_terms(model: DGC, x: torch.Tensor, noise: torch.Tensor, terms: tuple[str, ...],
                 kept: int, latent_weight: float = 1.0,
                 one_pass: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-sample log-weight terms, each (B, C, S), and the codes (B, C, S, k).
    `label` = log softmax(G_Y(z))_c, `recon` = −½‖x − G_X(z)‖², `latent` = log p(z) under the
    model's prior (`latent_term`) times `latent_weight`, `prior` = log p(z) − log q(z|x,c) (the
    importance correction Eq. 9 leaves out), only − log q(z|x,c) beside `latent`, so that
    log p(z) is counted once. Classes outside the `kept` best by the cheap terms (label, and
    latent when it is used) are −inf. The codes are decoded `DECODER_PASS` at a time
    (`reconstruction`), or all in `one_pass`, as an exported graph does."""
    mu, logvar = model.encoder.all_classes(model.encoder.features(x))
    std = std_from_logvar(logvar)
    codes = mu[:, :, None, :] + std[:, :, None, :] * noise
    batch, n_classes, samples, k = codes.shape
    log_probs = torch.log_softmax(model.head(codes), dim=-1, dtype=x.dtype)  # float32 in bf16
    own = torch.arange(n_classes, device=x.device).view(1, n_classes, 1, 1)
    label = log_probs.gather(-1, own.expand(batch, n_classes, samples, 1)).squeeze(-1)
    out: dict[str, torch.Tensor] = {}
    if "label" in terms:
        out["label"] = label
    if "latent" in terms or "prior" in terms:
        latent = latent_term(model, codes)
        if "latent" in terms:
            out["latent"] = latent_weight * latent
        if "prior" in terms:  # − log N(z; μ, σ²) up to the same constant as `latent`
            out["prior"] = 0.5 * noise.pow(2).sum(-1) + torch.log(std).sum(-1)[:, :, None]
            if "latent" not in terms:  # else log p(z) is already in the sum, weighted
                out["prior"] = out["prior"] + latent
    ranking = torch.logsumexp(label + out.get("latent", 0.0), dim=2)
    if "recon" in terms:
        classes = torch.arange(n_classes, device=x.device).expand(batch, n_classes)
        if kept < n_classes:
            classes = ranking.topk(kept, dim=1).indices
        index = classes[:, :, None].expand(batch, kept, samples)
        chosen = codes.gather(1, classes[:, :, None, None].expand(batch, kept, samples, k))
        error = reconstruction(model, x, chosen, one_pass)
        out["recon"] = torch.full_like(label, -math.inf).scatter(1, index, error)
    elif kept < n_classes:
        dropped = ranking.topk(n_classes - kept, dim=1, largest=False).indices
        for name in out:
            out[name] = out[name].scatter(1, dropped[:, :, None].expand(-1, -1, samples),
                                          -math.inf)
    return out, codes


def reconstruction(model: DGC, x: torch.Tensor, codes: torch.Tensor,
                   one_pass: bool = False) -> torch.Tensor:
    """−½‖x − G_X(z)‖² of codes (B, K, S, k) of images x (B, ...), (B, K, S): decoded a few
    images at a time, about `DECODER_PASS` codes a pass, so that the decoder's activations stay
    in a core's cache, or all in `one_pass`. On a CPU with several torch threads, in inference
    mode and float32, the passes run side by side, one thread each, as small operations split
    over threads gain little (docs/results/prediction-speed.md); each pass's numbers are its own
    either way."""
    batch, kept, samples, k = codes.shape
    per_pass = batch if one_pass else max(1, DECODER_PASS // (kept * samples))

    def error(start: int) -> torch.Tensor:
        recon = model.decoder(codes[start:start + per_pass].reshape(-1, k))
        recon = recon.view(-1, kept, samples, *x.shape[1:])
        return -0.5 * (recon - x[start:start + per_pass, None, None]).pow(2).flatten(3).sum(-1)

    starts = range(0, batch, per_pass)
    threads = torch.get_num_threads()
    if (len(starts) == 1 or threads == 1 or codes.device.type != "cpu"
            or not torch.is_inference_mode_enabled() or torch.is_autocast_enabled("cpu")):
        errors = [error(start) for start in starts]
    else:
        errors = side_by_side(error, starts, threads)
    return torch.cat(errors) if len(errors) > 1 else errors[0]


def side_by_side(work: Callable[[int], torch.Tensor], items: Sequence[int],
                 threads: int) -> list[torch.Tensor]:
    """`work` of every item, in order, by `threads` Python threads running one torch thread each
    (torch's operators release the GIL), in inference mode; torch's thread count is restored."""
    def run(item: int) -> torch.Tensor:
        with torch.inference_mode():
            return work(item)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(threads)


def decompose(model: DGC, x: torch.Tensor, y: np.ndarray, cfg: PredictConfig,
              seed: int = 0) -> dict[str, dict[str, float]]:
    """How much of the decision each term makes: its ACSA alone and its spread across classes,
    the mean over images of max_c − min_c of the term's score, in nats."""
    exact = dataclasses.replace(cfg, top_k=None, mmd_term=False)
    report = {}
    combinations = [("label",), ("recon",), ("prior",), ("recon", "label"),
                    ("recon", "label", "prior")]
    if model.prior is not None:
        combinations[3:3] = [("latent",), ("label", "latent"), ("recon", "label", "latent")]
    for terms in combinations:
        score = class_scores(model, x, exact, seed, terms)
        report["+".join(terms)] = {"acsa": acsa(y, score.argmax(1).cpu().numpy()),
                        "spread": float((score.max(1).values - score.min(1).values).mean())}
    return report


def chunk_mmd(codes: torch.Tensor, images: int, generator: torch.Generator) -> torch.Tensor:
    """The released code's offset to the score, (B, C): for each chunk of `images` images and
    each class, + MMD between the chunk's codes of that class (images × S) and as many draws
    of N(0, I), with λ = 1 as that code fixes it. It is nearly constant across classes and
    depends on which images share the chunk, so it is off by default
    (`PredictConfig.mmd_term`); a one-code chunk has no MMD and adds 0."""
    batch, n_classes, samples, k = codes.shape
    offsets = []
    for start in range(0, batch, images):
        chunk = codes[start:start + images]
        n = len(chunk) * samples
        prior = torch.randn(n, k, generator=generator).to(codes.device)
        row = (torch.stack([imq_mmd(chunk[:, c].reshape(-1, k), prior)
                            for c in range(n_classes)]) if n > 1 else codes.new_zeros(n_classes))
        offsets.append(row.expand(len(chunk), n_classes))
    return torch.cat(offsets)


def predict_proba(model: DGC, images: np.ndarray, cfg: PredictConfig, seed: int = 0,
                  device: str = "cpu", progress: bool = False) -> np.ndarray:
    """Class probabilities (N, C) for uint8 images (N, H, W, C)."""
    scores = class_scores(model, images_to_tensor(images, device), cfg, seed,
                          progress=progress)
    return torch.softmax(scores, dim=1).cpu().numpy()
