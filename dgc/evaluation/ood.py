"""Out-of-distribution flags: how well a run's novelty scores (`dgc.nn.novelty`; a DGC run's under
the exact Bayes rule, every class and the run's S) detect novel images, the novel ones as positives:
AUROC, AUPR and the share of in-distribution test images flagged when 95 % of the novel ones are
(FPR at 95 % TPR).

Built-in novel sets need no download (`ood_images`): `heldout` (the test images of classes the run
held out, `train.held_out`), `digits` (scikit-learn's digits scaled to the run's image size), and
the run's own test images `inverted`, as uniform `noise`, or `blur`red. Deep generative likelihoods
can rank some novel sets as *more* likely (Nalisnick et al. 2019): measure before trusting a score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from dgc.core.errors import DGCError
from dgc.data import ImbalancedData
from dgc.data.heldout import held_out_test_images
from dgc.nn.model import images_to_tensor
from dgc.run.finished import Run, full_data, load_run, recorded_data

SOURCES = ("heldout", "digits", "inverted", "noise", "blur")
BLUR_SIGMA = 1.5
TPR = 0.95


def score_ood(run: Run | str | Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Novelty scores (higher = more novel) of uint8 images (N, H, W, C) in the run's shape:
    `msp` and `energy` for a baseline; `msp`, `evidence`, `recon` and `latent` for DGC."""
    run = run if isinstance(run, Run) else load_run(run)
    images = np.asarray(images)
    shape = run.image_shape
    if len(images) == 0 or images.ndim != 4 or images.shape[1:] != shape \
            or images.dtype != np.uint8:
        raise DGCError(f"score_ood takes uint8 images of shape (N, {', '.join(map(str, shape))}),"
                       f" got {images.dtype} {images.shape}")
    scores = run.family.novelty(run.model, images_to_tensor(images, run.cfg.device), run.cfg)
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
        return resize(pixels, run.image_shape)
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
