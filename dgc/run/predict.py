"""Scoring a run's test set: the resumable test prediction at the end of training, and
re-scoring a finished run under other prediction settings (`dgc evaluate`)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dgc.config import PredictConfig, RunConfig, latent_tag
from dgc.core.distributed import fingerprint
from dgc.core.io import atomic_write, write_json
from dgc.core.metrics import compute_metrics
from dgc.core.progress import steps
from dgc.data.files import read_cache, write_cache
from dgc.methods.family import family_of
from dgc.nn.model import images_to_tensor
from dgc.nn.prediction import decompose
from dgc.run.finished import Run, load_run, recorded_data
from dgc.run.folder import PARTIAL_PREDICTIONS
from dgc.train.augment import dihedral_views

PREDICT_CHUNK = 1000  # test images predicted between two saves of PARTIAL_PREDICTIONS


def predict_images(model: nn.Module, images: np.ndarray, cfg: RunConfig,
                   predict: PredictConfig, progress: bool = False) -> np.ndarray:
    """Class probabilities (N, C) of uint8 images under the run's family's rule, averaged over
    the views `predict.views` names."""
    family = family_of(cfg)
    if predict.views == "image":
        return family.proba(model, images, cfg, predict, progress)
    views = [view.numpy() for view in dihedral_views(torch.from_numpy(images), dims=(1, 2))]
    return np.mean([family.proba(model, view, cfg, predict, progress) for view in views], axis=0)


def predict_test_set(model: nn.Module, images: np.ndarray, cfg: RunConfig, out: Path,
                     progress: bool, log: Any) -> tuple[np.ndarray, int]:
    """The test set's class probabilities, and how many images an earlier process had done. The
    exact rule of the `paper` preset takes hours on a CPU, so every `PREDICT_CHUNK` images are saved
    to `PARTIAL_PREDICTIONS` and a resumed run starts at the chunk it stopped in; chunks saved for
    other weights, settings or images are never reused. The released code's MMD term depends on
    which images share a batch, so with it the test set is one chunk."""
    path, key = out / PARTIAL_PREDICTIONS, prediction_key(model, cfg, images)
    saved = read_cache(path, key, keys=("probs",))
    parts = [saved["probs"]] if saved else []
    done = len(parts[0]) if parts else 0
    if done:
        log(f"dgc: resuming the test prediction after {done} of {len(images)} images")
    chunk = len(images) if cfg.predict.mmd_term else PREDICT_CHUNK
    starts = range(done, len(images), chunk)
    for start in steps(starts, "predict", "chunk", progress and len(starts) > 1):
        parts.append(predict_images(model, images[start:start + chunk], cfg, cfg.predict,
                                    progress and len(starts) == 1))
        if start + chunk < len(images):
            write_cache(path, {"probs": np.concatenate(parts)}, key)
    return np.concatenate(parts), done


def prediction_key(model: nn.Module, cfg: RunConfig, images: np.ndarray) -> str:
    """SHA-256 of what a test prediction depends on: the weights, the images and the settings."""
    settings = {"predict": asdict(cfg.predict), "seed": cfg.seed, "device": cfg.device}
    return fingerprint(model.state_dict(), np.ascontiguousarray(images).tobytes(),
                       json.dumps(settings, sort_keys=True).encode())


def save_predictions(path: Path, y_true: np.ndarray, probs: np.ndarray) -> None:
    """Test labels, predicted labels and probabilities, so figures need no re-prediction."""
    atomic_write(path, lambda f: np.savez_compressed(
        f, y_true=np.asarray(y_true, dtype=np.int64), y_pred=probs.argmax(1).astype(np.int64),
        probs=probs.astype(np.float32)))


def evaluate_run(run_dir: str | Path, predict: PredictConfig, run: Run | None = None,
                 progress: bool = False) -> tuple[dict[str, Any], Path]:
    """Re-score the run (`run`, if loaded) on the test set into eval-*.json (never metrics.json)."""
    run = run or load_run(run_dir)
    data = recorded_data(run)
    started = time.perf_counter()
    probs = predict_images(run.model, data.x_test, run.cfg, predict, progress)
    seconds = time.perf_counter() - started
    metrics = compute_metrics(data.y_test, probs.argmax(1), data.train_counts, data.class_names,
                              y_prob=probs)
    metrics.update(seconds_predict=round(seconds, 2), predict=asdict(predict))
    tag = run.family.prediction_tag(predict)
    return metrics, write_json(Path(run_dir) / f"eval-{tag}.json", metrics)


def decompose_run(run_dir: str | Path, predict: PredictConfig,
                  run: Run | None = None) -> tuple[dict[str, Any], Path]:
    """ACSA and cross-class spread of each Bayes-rule term alone on the test set (`run`, if
    already loaded, is the run's model)."""
    run = run or load_run(run_dir)
    data = recorded_data(run)
    x = images_to_tensor(data.x_test, run.cfg.device)
    report = decompose(run.generator, x, data.y_test, predict, seed=run.cfg.seed)
    # named by the settings a decomposition uses (it scores every class, without the MMD term)
    tag = f"s{predict.samples}" + ("-bf16" if predict.bf16 else "") + latent_tag(predict)
    return report, write_json(Path(run_dir) / f"decomposition-{tag}.json", report)
