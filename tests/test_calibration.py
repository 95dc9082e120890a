"""dgc.evaluation.calibration: the metrics against hand-computed values, and temperature scaling
recovering a known temperature and bias."""

from __future__ import annotations

import numpy as np
import pytest

from dgc.core.errors import DGCError
from dgc.core.metrics import expected_calibration_error
from dgc.evaluation.calibration import (
    Temperature,
    brier_score,
    calibration_metrics,
    calibration_report,
    classwise_ece,
    fit_temperature,
    reliability_bins,
    softmax,
)

PROB = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
Y = np.array([0, 1, 1, 1])


def test_brier_and_classwise_ece_by_hand() -> None:
    # (0.1² + 0.1²) + (0.6² + 0.6²) + (0.2² + 0.2²) + (0.3² + 0.3²) = 1.0, over 4 rows
    assert brier_score(Y, PROB) == pytest.approx(0.25)
    # two bins: class 0 has p 0.9 (hit) | 0.6 (miss), 0.2, 0.3 (misses); class 1 mirrors it
    bins = 2
    class0 = (abs(1 - 0.9 - 0.6) + abs(0 - 0.2 - 0.3)) / 4
    class1 = (abs(2 - 0.8 - 0.7) + abs(1 - 0.1 - 0.4)) / 4
    assert classwise_ece(Y, PROB, bins) == pytest.approx((class0 + class1) / 2)
    with pytest.raises(DGCError, match="rows"):
        brier_score(Y[:3], PROB)


def test_reliability_bins_add_up_to_the_ece() -> None:
    rng = np.random.default_rng(0)
    prob = softmax(rng.normal(size=(300, 4)) * 2)
    y = rng.integers(0, 4, 300)
    bins = reliability_bins(y, prob)
    count = np.array(bins["count"])
    assert count.sum() == 300 and len(bins["edges"]) == len(count) + 1
    gaps = [n * abs(a - c) for n, a, c in zip(count, bins["accuracy"], bins["confidence"],
                                              strict=True) if n]
    assert sum(gaps) / 300 == pytest.approx(expected_calibration_error(y, prob))
    assert all(a is None for n, a in zip(count, bins["accuracy"], strict=True) if n == 0)


def draw_labels(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    prob = softmax(logits)
    return np.array([rng.choice(prob.shape[1], p=row) for row in prob])


def test_temperature_and_bias_are_recovered() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(4000, 3)) * 3
    y = draw_labels(scores / 2.0, rng)  # the scores are twice too confident
    fitted = fit_temperature(scores, y)
    assert fitted.temperature == pytest.approx(2.0, rel=0.1) and fitted.bias == []
    bias = np.array([1.0, 0.0, -1.0])
    y = draw_labels(scores / 2.0 + bias, rng)
    both = fit_temperature(scores, y, bias=True)
    assert both.temperature == pytest.approx(2.0, rel=0.1)
    assert np.allclose(both.bias, bias, atol=0.15)
    before = calibration_metrics(y, softmax(scores))
    after = calibration_metrics(y, both(scores))
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]


def test_report_without_validation_is_only_as_predicted() -> None:
    rng = np.random.default_rng(2)
    scores = np.log(softmax(rng.normal(size=(50, 3))))
    y = rng.integers(0, 3, 50)
    report = calibration_report(y[:0], scores[:0], y, scores)
    assert list(report) == ["none"] and report["none"]["temperature"] == 1.0
    assert np.allclose(Temperature()(scores), softmax(scores))
    with pytest.raises(DGCError, match="validation split"):
        fit_temperature(scores[:0], y[:0])
