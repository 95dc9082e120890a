"""dgc.evaluation.shift: resampling to a prior, EM re-estimation of it, and DGCClassifier's
test_prior."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dgc import DGCClassifier
from dgc.core.errors import DGCError, DGCWarning
from dgc.evaluation.scoring import SplitScores
from dgc.evaluation.shift import resample_to_prior, shift_report, target_priors
from dgc.methods.family import family_of
from dgc.methods.registry import resolve_config
from dgc.nn.priors import adjust_posteriors, check_prior, em_prior, frequencies, trained_prior


def gaussian_posteriors(y: np.ndarray, source: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
    """Exact posteriors under `source` of 1-D unit Gaussians with means 0, 2, 4, ..."""
    means = 2.0 * np.arange(len(source))
    x = rng.normal(means[y], 1.0)
    log_joint = -0.5 * (x[:, None] - means[None]) ** 2 + np.log(source)
    prob = np.exp(log_joint - log_joint.max(1, keepdims=True))
    return prob / prob.sum(1, keepdims=True)


def test_em_recovers_a_shifted_prior() -> None:
    rng = np.random.default_rng(0)
    source = np.array([0.6, 0.3, 0.1])
    target = np.array([0.1, 0.3, 0.6])
    y = rng.choice(3, size=6000, p=target)
    prob = gaussian_posteriors(y, source, rng)
    estimate, adjusted = em_prior(prob, source)
    assert np.abs(estimate - target).sum() < 0.05
    assert np.allclose(adjusted.sum(1), 1.0)
    assert np.mean(adjusted.argmax(1) == y) > np.mean(prob.argmax(1) == y)
    assert np.allclose(adjust_posteriors(prob, source, source), prob)


def test_em_from_too_few_images_warns() -> None:
    """One image took EM to a near-certain prior without a word (issue 34)."""
    source, prob = np.array([0.5, 0.3, 0.2]), np.array([[0.6, 0.3, 0.1]])
    with pytest.warns(DGCWarning, match=r"from only 1 image, fewer than 10 per class \(30 here\)"):
        estimate, _ = em_prior(prob, source)
    assert estimate.max() > 0.99  # what the warning is for
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        em_prior(np.tile(prob, (30, 1)), source)
    with pytest.raises(DGCError, match="give some"):
        em_prior(prob[:0], source)
    # evaluate --prior-shift on a small test set (and no validation split): one warning
    y = np.repeat(np.arange(3), 4)
    test = np.log(gaussian_posteriors(y, source, np.random.default_rng(0)))
    with pytest.warns(DGCWarning) as caught:
        report = shift_report(SplitScores(y[:0], test[:0], y, test),
                              resolve_config("digits", "cpu", "ce"), [600, 300, 100])
    assert [str(w.message)[:34] for w in caught] == ["EM re-estimated the test prior fro"]
    assert list(report["train"]) == ["size", "prior", "none"]


def test_resampling_hits_the_prior_and_draws_each_image_once() -> None:
    y = np.repeat(np.arange(4), 100)
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    index = resample_to_prior(y, prior, np.random.default_rng(1))
    assert len(np.unique(index)) == len(index)
    assert np.bincount(y[index]).tolist() == [100, 75, 50, 25]
    tiny = resample_to_prior(y, np.array([0.997, 0.001, 0.001, 0.001]), np.random.default_rng(1))
    assert np.bincount(y[tiny]).tolist() == [100, 1, 1, 1]  # every class keeps one image


def test_target_and_trained_priors() -> None:
    counts = [40, 20, 10, 5]
    priors = target_priors(counts, seed=3)
    assert list(priors) == ["balanced", "train", "reversed", "dirichlet-1", "dirichlet-2",
                            "dirichlet-3"]
    assert np.allclose(priors["reversed"], priors["train"][::-1])
    assert all(np.isclose(p.sum(), 1.0) for p in priors.values())
    assert np.allclose(trained_prior(counts, 0.0), priors["train"])
    assert np.allclose(trained_prior(counts, 1.0), 0.25)
    assert np.allclose(trained_prior(counts, 0.0, balanced=True), 0.25)
    assert np.allclose(trained_prior(counts, 1.0, balanced=True), [1 / 15, 2 / 15, 4 / 15, 8 / 15])


@pytest.mark.parametrize(("method", "overrides", "prior"), [
    ("ce", [], "train"), ("dgc", [], "uniform"), ("logit-adjust", [], "uniform"),
    ("ros", [], "uniform"), ("smote", [], "uniform"), ("ldam-drw", [], "uniform"),
    ("logit-adjust", ["baseline.resample=ros"], "reversed"),
])
def test_a_run_s_posteriors_are_for_the_prior_its_training_balanced(
        method: str, overrides: list[str], prior: str) -> None:
    counts = [40, 20, 10, 5]  # 8:4:2:1, so π^(-1) is the reversed prior
    cfg = resolve_config("digits", "cpu", method, overrides=overrides)
    expected = {"train": frequencies(counts), "uniform": np.full(4, 0.25),
                "reversed": frequencies(counts)[::-1]}[prior]
    assert np.allclose(family_of(cfg).prior(cfg, counts), expected)
    with pytest.raises(DGCError, match="4 non-negative numbers summing to 1"):
        check_prior([0.5, 0.5], 4)


def test_estimator_predicts_for_a_test_prior() -> None:
    x, y = load_digits(return_X_y=True)
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in zip(range(3), (150, 40, 10),
                                                                       strict=True)])
    clf = DGCClassifier(epochs=10, random_state=0).fit(x[keep], y[keep])
    test = np.concatenate([np.flatnonzero(y == c)[-60:] for c in range(3)])
    plain = clf.predict_proba(x[test])
    # logit_adjust_tau = 1: the posteriors are for a balanced prior, which changes nothing
    assert np.allclose(clf.predict_proba(x[test], test_prior=[1 / 3] * 3), plain)
    skewed = clf.predict_proba(x[test], test_prior=[0.98, 0.01, 0.01])
    assert np.mean(skewed.argmax(1) == 0) > np.mean(plain.argmax(1) == 0)
    em = clf.predict_proba(x[test], test_prior="em")
    assert np.allclose(em.sum(1), 1.0) and em.shape == plain.shape
    assert clf.predict(x[test], test_prior="em").tolist() == clf.classes_[em.argmax(1)].tolist()
    # a batch drawn from a skewed prior (60/6/6): EM estimates it from the rows and re-weighs
    batch = np.concatenate([np.flatnonzero(y == 0)[-60:], np.flatnonzero(y == 1)[-6:],
                            np.flatnonzero(y == 2)[-6:]])
    plain, em = clf.predict_proba(x[batch]), clf.predict_proba(x[batch], test_prior="em")
    estimate, expected = em_prior(plain, trained_prior(clf.class_counts_, clf.logit_adjust_tau))
    assert np.allclose(em, expected) and not np.allclose(em, plain)
    assert estimate[0] > 0.6  # the batch's majority class is found
    with pytest.raises(DGCError, match="or 'em'"):
        clf.predict_proba(x[test], test_prior="uniform")
    with pytest.warns(DGCWarning, match="from only 2 images, fewer than 10 per class"):
        clf.predict(x[test[:2]], test_prior="em")


def test_em_after_temperature_scaling_starts_from_the_prior_the_training_balanced() -> None:
    rng = np.random.default_rng(0)
    counts = [600, 300, 100]
    train = frequencies(counts)
    balanced = np.full(3, 1 / 3)  # a logit-adjusted model's posteriors are for this prior
    y_val, y_test = rng.choice(3, size=1000, p=train), np.repeat(np.arange(3), 2000)
    scores = SplitScores(y_val, np.log(gaussian_posteriors(y_val, balanced, rng)),
                         y_test, np.log(gaussian_posteriors(y_test, balanced, rng)))
    report = shift_report(scores, resolve_config("digits", "cpu", "logit-adjust"), counts)
    for target in ("balanced", "train", "reversed"):
        for calibration in ("none", "temperature", "bcts"):
            r = report[target][calibration]
            # BCTS's biases, fitted on 1000 images, carry the prior less exactly
            assert r["prior_error_em"] < (0.15 if calibration == "bcts" else 0.05)
            assert r["em"]["accuracy"] >= r["as_is"]["accuracy"] - 0.01
