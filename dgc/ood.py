"""Out-of-distribution flags: a per-image novelty score for any run, and how well it detects.

`score_ood` returns scores where higher means more novel. Every method gets the standard
discriminative ones from the probabilities it predicts with: `msp` (minus the maximum softmax
probability, Hendrycks & Gimpel 2017) and `energy` (minus log Σ_c exp of its logits, Liu et al.
2020). A DGC run is scored with the exact Bayes rule (every class, the run's S) and adds what
only a generative model has:

* `evidence`: −log Σ_c exp score_c, the Bayes rule's evidence (DGC's energy);
* `recon`: the reconstruction error ½‖x − G_X(z)‖² under the best class, −max_c log-mean-exp_s;
* `latent`: −max_c log-mean-exp_s log p(z_c^s), the codes' density under the prior (N(0, I),
  or the learned mixture / class-conditional prior of DGCMM).

Detection is scored with the novel images as positives: AUROC, AUPR and the share of
in-distribution test images flagged when 95 % of the novel ones are (FPR at 95 % TPR).
Built-in novel sets need no download (`ood_images`): `heldout` (the test images of classes the
run held out, `train.held_out`), `digits` (scikit-learn's digits scaled to the run's image
size), and the run's own test images `inverted`, as uniform `noise`, or `blur`red.
Deep generative likelihoods can rank some novel sets as *more* likely (Nalisnick et al. 2019):
measure before trusting a score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dgc.baselines import classifier_logits
from dgc.config import PredictConfig
from dgc.data import ImbalancedData
from dgc.errors import DGCError
from dgc.experiment import Run, family_of, full_data, load_run, recorded_data
from dgc.heldout import held_out_test_images
from dgc.model import DGC, images_to_tensor
from dgc.prediction import sample_terms

SOURCES = ("heldout", "digits", "inverted", "noise", "blur")
BLUR_SIGMA = 1.5
TPR = 0.95


def _log_mean_exp(terms: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(terms, dim=-1) - math.log(terms.shape[-1])


def _from_scores(scores: torch.Tensor, energy: str) -> dict[str, torch.Tensor]:
    return {"msp": -torch.softmax(scores, dim=1).max(dim=1).values,
            energy: -torch.logsumexp(scores, dim=1)}


def dgc_scores(model: DGC, x: torch.Tensor, predict: PredictConfig,
               seed: int) -> dict[str, torch.Tensor]:
    """DGC's novelty scores of a float batch, every class's S codes decoded in passes of at
    most `predict.decode_batch` codes."""
    noise = torch.randn(predict.samples, model.cfg.latent_dim,
                        generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype)
    per_batch = max(1, predict.decode_batch // (model.n_classes * predict.samples))
    parts = []
    with torch.inference_mode():
        for start in range(0, len(x), per_batch):
            terms, _ = sample_terms(model, x[start:start + per_batch], noise,
                                    ("recon", "label", "latent"), model.n_classes)
            bayes = terms["recon"] + terms["label"]
            if model.prior is not None:  # a learned prior's density is part of its Bayes rule
                bayes = bayes + predict.latent_weight * terms["latent"]
            parts.append({**_from_scores(_log_mean_exp(bayes), "evidence"),
                          "recon": -_log_mean_exp(terms["recon"]).max(dim=1).values,
                          "latent": -_log_mean_exp(terms["latent"]).max(dim=1).values})
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def score_ood(run: Run | str | Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Novelty scores (higher = more novel) of uint8 images (N, H, W, C) in the run's shape:
    `msp` and `energy` for a baseline; `msp`, `evidence`, `recon` and `latent` for DGC."""
    run = run if isinstance(run, Run) else load_run(run)
    images = np.asarray(images)
    if len(images) == 0 or images.ndim != 4 or images.shape[1:] != tuple(run.model.image_shape) \
            or images.dtype != np.uint8:
        shape = ", ".join(map(str, run.model.image_shape))
        raise DGCError(f"score_ood takes uint8 images of shape (N, {shape}), got "
                       f"{images.dtype} {images.shape}")
    x = images_to_tensor(images, run.cfg.device)
    if family_of(run.cfg).generative:
        model = run.generator.eval()
        scores = dgc_scores(model, x, run.cfg.predict, run.cfg.seed)
    else:
        scores = _from_scores(classifier_logits(run.classifier, x).double(), "energy")
    return {name: value.double().cpu().numpy() for name, value in scores.items()}


def detection_metrics(known: np.ndarray, novel: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR and FPR at 95 % TPR of novelty scores, the novel images as positives."""
    y = np.r_[np.zeros(len(known)), np.ones(len(novel))]
    scores = np.r_[known, novel]
    fpr, tpr, _ = roc_curve(y, scores)
    return {"auroc": float(roc_auc_score(y, scores)),
            "aupr": float(average_precision_score(y, scores)),
            "fpr95": float(fpr[np.searchsorted(tpr, TPR, side="left")])}


def resize(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 grey images (N, h, w) scaled bilinearly to (N, H, W, C) (grey repeated)."""
    height, width, channels = shape
    scaled = [np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
              for image in images]
    return np.repeat(np.stack(scaled)[..., None], channels, axis=3)


def ood_images(source: str, run: Run, data: ImbalancedData) -> np.ndarray:
    """A built-in novel set (`SOURCES`) for a run whose test data (held-out classes removed)
    is `data`, as uint8 images in the run's shape."""
    cfg = run.cfg
    shape = tuple(run.model.image_shape)
    if source == "heldout":
        if not len(cfg.train.held_out):
            raise DGCError("--ood heldout: this run held out no classes; train one with "
                           "--set train.held_out=[8,9] (class indices of the full dataset)")
        return held_out_test_images(full_data(cfg), cfg.train.held_out)
    if source == "digits":
        if cfg.exp == "digits":
            raise DGCError("--ood digits: this run was trained on digits; choose another source")
        from sklearn.datasets import load_digits

        pixels = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
        return resize(pixels, shape)
    if source == "inverted":
        return 255 - data.x_test
    if source == "noise":
        rng = np.random.default_rng(cfg.seed)
        return rng.integers(0, 256, size=data.x_test.shape, dtype=np.uint8)
    if source == "blur":
        blurred = gaussian_filter(data.x_test.astype(np.float64), (0, BLUR_SIGMA, BLUR_SIGMA, 0))
        return np.rint(blurred).clip(0, 255).astype(np.uint8)
    raise DGCError(f"unknown OOD source {source!r}; choose from {', '.join(SOURCES)} or give "
                   "a .npy/.npz file or a folder of images")


def subsample(images: np.ndarray, limit: int | None) -> np.ndarray:
    """A fixed random `limit` of the images (all of them when fewer), in their order: the same
    rows for every run of a benchmark, so methods and seeds are compared on one subset."""
    if limit is None or len(images) <= limit:
        return images
    return images[np.sort(np.random.default_rng(0).choice(len(images), limit, replace=False))]


def ood_report(run: Run, novel: dict[str, np.ndarray], data: ImbalancedData | None = None,
               limit: int | None = None) -> dict[str, Any]:
    """Detection metrics of every score, the run's test set against each novel set, each
    `subsample`d to `limit` images: DGC's exact scores cost ~50 ms an image on one CPU thread."""
    data = data or recorded_data(run)
    known = score_ood(run, subsample(data.x_test, limit))
    report: dict[str, Any] = {"n_known": len(known["msp"]), "limit": limit,
                              "scores": list(known), "sources": {}}
    for name, images in novel.items():
        images = subsample(images, limit)
        scores = score_ood(run, images)
        report["sources"][name] = {"n_novel": len(images), **{
            score: detection_metrics(known[score], scores[score]) for score in known}}
    return report
