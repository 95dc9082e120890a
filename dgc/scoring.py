"""Log-posteriors of any run, DGC or baseline, on its validation split and its test set.

Calibration (`dgc.calibration`) and label shift (`dgc.shift`) judge every method from the same
numbers: the log of the probabilities the method predicts with, i.e. the log-softmax of a
baseline's logits, or of DGC's Bayes-rule scores under the run's own prediction settings but
over every class (a rule pruned to its top K classes gives the others no probability to
calibrate or re-weigh). They are kept as logs so that temperature scaling sees the scores, not
probabilities rounded to 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from dgc.baselines import classifier_logits
from dgc.config import PredictConfig
from dgc.data import ImbalancedData
from dgc.experiment import Run, family_of, recorded_data, to_train_data
from dgc.model import images_to_tensor
from dgc.prediction import class_scores


def log_posteriors(run: Run, x: torch.Tensor, predict: PredictConfig | None = None) -> np.ndarray:
    """log p(y | x) (N, C) in float64 for a float batch (N, C, H, W), every class scored."""
    if family_of(run.cfg).generative:
        every = dataclasses.replace(predict or run.cfg.predict, top_k=None)
        scores = class_scores(run.generator, x, every, seed=run.cfg.seed)
    else:
        scores = classifier_logits(run.classifier, x)
    return torch.log_softmax(scores.double(), dim=1).cpu().numpy()


@dataclass
class SplitScores:
    """Labels and log-posteriors of a run's validation split and test set."""

    y_val: np.ndarray
    val: np.ndarray
    y_test: np.ndarray
    test: np.ndarray


def score_splits(run: Run, data: ImbalancedData | None = None) -> SplitScores:
    """The run's validation split (as it trained) and test set, each scored once."""
    data = data or recorded_data(run)
    split = to_train_data(data, run.cfg)
    return SplitScores(split.y_val.cpu().numpy(), log_posteriors(run, split.x_val),
                       data.y_test, log_posteriors(run, images_to_tensor(data.x_test,
                                                                         run.cfg.device)))
