"""The two method families, and everything that differs between them, in one place.

`dgc` is the generative classifier (encoder, decoder and label head; the Bayes rule), and
`classifier` the baselines' discriminative network (the softmax of its logits). A `Family` builds
the model and its trainer, turns images into probabilities, log-posteriors and novelty scores,
names the class prior its posteriors stand for, and hands out its generator where it has one: no
code outside this module tells the two apart.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dgc.config import PredictConfig, RunConfig, latent_tag, predict_tag
from dgc.core.io import CheckpointFiles
from dgc.methods.registry import get_method
from dgc.nn.backbones import with_pretrained
from dgc.nn.classifier import Classifier, build_classifier, classifier_logits, classifier_proba
from dgc.nn.losses import LOSSES
from dgc.nn.model import DGC
from dgc.nn.novelty import dgc_scores, score_novelty
from dgc.nn.prediction import class_scores, predict_proba
from dgc.nn.priors import trained_prior
from dgc.train.classifier import ClassifierTrainer
from dgc.train.dgc import Trainer
from dgc.train.loop import EpochTrainer, TrainData

Log = Callable[[str], None]


def views_words(predict: PredictConfig) -> str:
    """What `predict.views` adds to a family's description of its prediction."""
    return (", averaged over each image's eight mirrors and 90° rotations"
            if predict.views == "dihedral" else "")


class Family(ABC):
    """What a method family brings to a run; `rescores`: its prediction has settings of its own
    (`PredictConfig`) that `dgc evaluate` can change, beside `predict.views`, which every family
    honours."""

    rescores: bool

    @abstractmethod
    def build(self, cfg: RunConfig, image_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        """A freshly initialised model (not seeded here: see `build_model`)."""

    @abstractmethod
    def trainer(self, model: Any, cfg: RunConfig, data: TrainData,
                files: CheckpointFiles | None = None, progress: bool = False,
                log: Log = print, generator: DGC | None = None) -> EpochTrainer:
        """The model's trainer; `generator` is the DGC of `baseline.resample=dgc`."""

    @abstractmethod
    def proba(self, model: Any, images: np.ndarray, cfg: RunConfig, predict: PredictConfig,
              progress: bool = False) -> np.ndarray:
        """Class probabilities (N, C) of uint8 images (N, H, W, C): the decision's numbers."""

    @abstractmethod
    def log_posteriors(self, model: Any, x: torch.Tensor, cfg: RunConfig,
                       predict: PredictConfig) -> np.ndarray:
        """log p(y | x) (N, C) in float64 of a float batch, every class scored (for calibration)."""

    @abstractmethod
    def novelty(self, model: Any, x: torch.Tensor, cfg: RunConfig) -> dict[str, torch.Tensor]:
        """Novelty scores of a float batch under the run's prediction settings."""

    @abstractmethod
    def prior(self, cfg: RunConfig, train_counts: Sequence[int] | np.ndarray) -> np.ndarray:
        """The class prior the uncalibrated posteriors are for (`dgc.nn.priors.trained_prior`)."""

    @abstractmethod
    def describe(self, predict: PredictConfig) -> str:
        """How it predicts, in words (the report says it)."""

    def generator(self, model: Any) -> DGC | None:
        """The model as a generator of images, where it is one."""
        return None

    def suffix(self, own: PredictConfig, predict: PredictConfig) -> str:
        """What the files of a result under `predict` add to their name, so that no result under
        other prediction settings is replaced: nothing for the run's own settings."""
        return ""

    def novelty_suffix(self, own: PredictConfig, predict: PredictConfig) -> str:
        """`suffix` for novelty scores, which depend on fewer settings."""
        return ""

    def prediction_tag(self, predict: PredictConfig) -> str:
        """The settings a test prediction depends on, in a file name: a classifier's depend on
        its views alone (`image` or `dihedral`)."""
        return predict.views


class GenerativeFamily(Family):
    """DGC: `Trainer` (METHOD §2–§3) and the Bayes rule (METHOD §4)."""

    rescores = True

    def build(self, cfg: RunConfig, image_shape: tuple[int, ...], n_classes: int) -> DGC:
        return DGC(image_shape, n_classes, cfg.model)

    def trainer(self, model: DGC, cfg: RunConfig, data: TrainData,
                files: CheckpointFiles | None = None, progress: bool = False,
                log: Log = print, generator: DGC | None = None) -> Trainer:
        return Trainer(model, cfg, data, files, progress, log)

    def proba(self, model: DGC, images: np.ndarray, cfg: RunConfig, predict: PredictConfig,
              progress: bool = False) -> np.ndarray:
        return predict_proba(model, images, predict, cfg.seed, cfg.device, progress)

    def log_posteriors(self, model: DGC, x: torch.Tensor, cfg: RunConfig,
                       predict: PredictConfig) -> np.ndarray:
        scores = class_scores(model, x, dataclasses.replace(predict, top_k=None), seed=cfg.seed)
        return torch.log_softmax(scores.double(), dim=1).cpu().numpy()

    def novelty(self, model: DGC, x: torch.Tensor, cfg: RunConfig) -> dict[str, torch.Tensor]:
        return dgc_scores(model, x, cfg.predict, cfg.seed)

    def prior(self, cfg: RunConfig, train_counts: Sequence[int] | np.ndarray) -> np.ndarray:
        """The label head's: trained on the rows as drawn, logit-adjusted by τ."""
        return trained_prior(train_counts, cfg.train.logit_adjust_tau)

    def describe(self, predict: PredictConfig) -> str:
        classes = ("every class" if predict.top_k is None
                   else f"the {predict.top_k} classes the cheap terms rank best")
        return (f"rule `{predict.rule}` on {classes}, S = {predict.samples} samples per class"
                + views_words(predict))

    def generator(self, model: DGC) -> DGC:
        return model

    def suffix(self, own: PredictConfig, predict: PredictConfig) -> str:
        """The calibration, label shift and novelty results it names see the image alone, so
        `predict.views` does not tell them apart."""
        same = dataclasses.replace(predict, views=own.views) == own
        return "" if same else f"-{predict_tag(dataclasses.replace(predict, views='image'))}"

    def prediction_tag(self, predict: PredictConfig) -> str:
        return predict_tag(predict)

    def novelty_suffix(self, own: PredictConfig, predict: PredictConfig) -> str:
        """Novelty scores use only the number of codes and a learned prior's weight."""
        if (predict.samples, predict.latent_weight) == (own.samples, own.latent_weight):
            return ""
        return f"-s{predict.samples}{latent_tag(predict)}"


class ClassifierFamily(Family):
    """The baselines of METHOD §8: `ClassifierTrainer`, and the softmax whatever the settings."""

    rescores = False

    def build(self, cfg: RunConfig, image_shape: tuple[int, ...],
              n_classes: int) -> Classifier:
        return build_classifier(cfg, image_shape, n_classes)

    def trainer(self, model: Classifier, cfg: RunConfig, data: TrainData,
                files: CheckpointFiles | None = None, progress: bool = False,
                log: Log = print, generator: DGC | None = None) -> ClassifierTrainer:
        return ClassifierTrainer(model, cfg, data, files, progress, log, generator)

    def proba(self, model: Classifier, images: np.ndarray, cfg: RunConfig,
              predict: PredictConfig, progress: bool = False) -> np.ndarray:
        return classifier_proba(model, images, cfg.device, predict.bf16)

    def describe(self, predict: PredictConfig) -> str:
        return "the softmax of its logits" + views_words(predict)

    def log_posteriors(self, model: Classifier, x: torch.Tensor, cfg: RunConfig,
                       predict: PredictConfig) -> np.ndarray:
        return torch.log_softmax(classifier_logits(model, x).double(), dim=1).cpu().numpy()

    def novelty(self, model: Classifier, x: torch.Tensor,
                cfg: RunConfig) -> dict[str, torch.Tensor]:
        return score_novelty(classifier_logits(model, x).double())

    def prior(self, cfg: RunConfig, train_counts: Sequence[int] | np.ndarray) -> np.ndarray:
        """Trained on rows drawn (or weighted) class-balanced when it resamples or re-weighs,
        logit-adjusted by τ and by what its loss declares (`dgc.nn.losses.Loss.tau`)."""
        b = cfg.baseline
        return trained_prior(train_counts, cfg.train.logit_adjust_tau + LOSSES[b.loss].tau,
                             balanced=b.resample != "none" or b.weighting != "none")


FAMILIES: dict[str, Family] = {"dgc": GenerativeFamily(), "classifier": ClassifierFamily()}


def family_of(cfg: RunConfig) -> Family:
    """The family of a run's method (`Method.family` names it)."""
    return FAMILIES[get_method(cfg.method).family]


def build_model(cfg: RunConfig, image_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A freshly initialised model of the run's method family, seeded, with the ImageNet weights
    of a pretrained backbone, on the run's device."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return with_pretrained(family_of(cfg).build(cfg, image_shape, n_classes)).to(cfg.device)
