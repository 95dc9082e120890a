"""Log-posteriors of any run, DGC or baseline, on its validation split and its test set.

Calibration (`dgc.evaluation.calibration`) and label shift (`dgc.evaluation.shift`) judge every
method from the same numbers: the log of the probabilities the method predicts with, i.e. the
log-softmax of a baseline's logits, or of DGC's Bayes-rule scores under the run's own prediction
settings but over every class (a rule pruned to its top K classes gives the others no probability
to calibrate or re-weigh). They are kept as logs so that temperature scaling sees the scores, not
probabilities rounded to 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dgc.data import ImbalancedData
from dgc.nn.model import images_to_tensor
from dgc.run.finished import Run, recorded_data, validation_split


@dataclass
class SplitScores:
    """Labels and log-posteriors of a run's validation split and test set."""

    y_val: np.ndarray
    val: np.ndarray
    y_test: np.ndarray
    test: np.ndarray


def score_splits(run: Run, data: ImbalancedData | None = None) -> SplitScores:
    """The run's validation split (as it trained; none for a run trained without one) and test
    set, each scored once."""
    data = data or recorded_data(run)
    split = validation_split(run, data)
    family, cfg = run.family, run.cfg
    test = family.log_posteriors(run.model, images_to_tensor(data.x_test, cfg.device), cfg,
                                 cfg.predict)
    val = (family.log_posteriors(run.model, split.x_val, cfg, cfg.predict) if len(split.y_val)
           else test[:0])
    return SplitScores(split.y_val.cpu().numpy(), val, data.y_test, test)
