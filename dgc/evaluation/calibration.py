"""Probabilities to trust: calibration metrics, and temperature scaling fitted on validation.

A posterior is only as useful as its calibration: the prior-shift EM of `dgc.evaluation.shift` and
any threshold a user sets read the probabilities, not just their argmax. Every method is judged and
recalibrated the same way, on the log-posteriors of `dgc.evaluation.scoring`:

* ECE of the top-class probability (`dgc.core.metrics.expected_calibration_error`), the
  classwise ECE (Kull et al. 2019), the Brier score and the negative log-likelihood;
* temperature scaling (Guo et al. 2017), softmax(s / T), and its bias-corrected form (BCTS,
  Alexandari et al. 2020), softmax(s / T + b), both fitted by minimising the NLL on the
  validation split, the one part of the data a run may learn such choices from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dgc.core.errors import DGCError
from dgc.core.metrics import _checked, expected_calibration_error

N_BINS = 15
CALIBRATIONS = ("none", "temperature", "bcts")


def brier_score(y_true, y_prob) -> float:
    """Mean over images of Σ_c (p_c − 1[y = c])²: 0 is perfect, 2 the worst."""
    y, prob = _checked(y_true, y_prob)
    return float(((prob - np.eye(prob.shape[1])[y]) ** 2).sum(axis=1).mean())


def reliability_bins(y_true, y_prob, n_bins: int = N_BINS) -> dict[str, list]:
    """Per equal-width bin of the top-class probability: its count, mean confidence and
    accuracy (None where empty), the numbers a reliability diagram plots."""
    y, prob = _checked(y_true, y_prob)
    conf = prob.max(axis=1)
    correct = prob.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    def means(sums: np.ndarray) -> list[float | None]:
        return [float(s / n) if n else None for s, n in zip(sums, count, strict=True)]

    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": means(conf_sum),
            "accuracy": means(acc_sum)}


def classwise_ece(y_true, y_prob, n_bins: int = N_BINS) -> float:
    """Kull et al. 2019: mean over classes c of the binned |E[1[y = c]] − p_c| (all images)."""
    y, prob = _checked(y_true, y_prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for c in range(prob.shape[1]):
        bins = np.searchsorted(edges[1:-1], prob[:, c], side="left")
        hit = np.bincount(bins, weights=(y == c).astype(np.float64), minlength=n_bins)
        conf = np.bincount(bins, weights=prob[:, c], minlength=n_bins)
        total += np.abs(hit - conf).sum() / y.size
    return float(total / prob.shape[1])


def calibration_metrics(y_true, y_prob) -> dict[str, float]:
    """ECE, classwise ECE, Brier score and NLL of probabilities (N, C)."""
    y, prob = _checked(y_true, y_prob)
    nll = -np.log(np.clip(prob[np.arange(y.size), y], 1e-300, None)).mean()
    return {"ece": expected_calibration_error(y, prob), "classwise_ece": classwise_ece(y, prob),
            "brier": brier_score(y, prob), "nll": float(nll)}


def softmax(log_scores: np.ndarray) -> np.ndarray:
    shifted = log_scores - log_scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class Temperature:
    """softmax(s / T + b): T = 1 and b = 0 leave the probabilities as they are."""

    temperature: float = 1.0
    bias: list[float] = field(default_factory=list)

    def __call__(self, log_scores: np.ndarray) -> np.ndarray:
        scaled = np.asarray(log_scores, dtype=np.float64) / self.temperature
        return softmax(scaled + (np.asarray(self.bias) if self.bias else 0.0))


def fit_temperature(log_scores: np.ndarray, y: np.ndarray, bias: bool = False) -> Temperature:
    """T (and with `bias` a per-class b) minimising the NLL of softmax(s / T + b) on (s, y). L-BFGS
    in float64 on log T and b, each with a standard normal prior (the penalty (log² T + ‖b‖²) / 2N):
    negligible on a validation split of hundreds of images, it keeps one of a few dozen, which the
    biases can separate, from driving T to 0 (test NLL of 60 on digits without it)."""
    scores = np.asarray(log_scores, dtype=np.float64)
    if len(scores) == 0:
        raise DGCError("temperature scaling needs a validation split; train with "
                       "--val-fraction 0.1 (dgc bench always does)")
    s = torch.from_numpy(scores)
    target = torch.as_tensor(y, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(s.shape[1], dtype=torch.float64, requires_grad=bias)
    params = [log_t, b] if bias else [log_t]
    optimiser = torch.optim.LBFGS(params, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        penalty = (log_t.pow(2) + b.pow(2).sum()) / (2 * len(target))
        loss = torch.nn.functional.cross_entropy(s / log_t.exp() + b, target) + penalty
        loss.backward()
        return loss

    optimiser.step(closure)
    shift = (b - b.mean()).detach().tolist() if bias else []
    return Temperature(float(log_t.detach().exp()), shift)


def calibrators(val_log_scores: np.ndarray, y_val: np.ndarray) -> dict[str, Temperature]:
    """`CALIBRATIONS` fitted on validation: none, temperature, bias-corrected temperature
    (only none for a run trained without a validation split)."""
    if len(y_val) == 0:
        return {"none": Temperature()}
    return {"none": Temperature(),
            "temperature": fit_temperature(val_log_scores, y_val),
            "bcts": fit_temperature(val_log_scores, y_val, bias=True)}


def calibration_report(y_val: np.ndarray, val_log_scores: np.ndarray, y_test: np.ndarray,
                       test_log_scores: np.ndarray) -> dict[str, dict]:
    """Test-set calibration metrics and reliability bins before and after each calibration."""
    report = {}
    for name, calibrate in calibrators(val_log_scores, y_val).items():
        prob = calibrate(test_log_scores)
        report[name] = {**calibration_metrics(y_test, prob),
                        "temperature": calibrate.temperature, "bias": calibrate.bias,
                        "reliability": reliability_bins(y_test, prob)}
    return report
