"""Tests for dgc.core.metrics: hand-computed cases, agreement with sklearn/imblearn, ECE, errors."""

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imblearn.metrics import geometric_mean_score, specificity_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, precision_score, recall_score

from dgc.core.errors import DGCError
from dgc.core.metrics import (
    HEADLINE,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    format_metrics,
)

# Hand example, rows = true class, columns = predicted class; class 2 is never predicted.
#   [[3, 1, 0],
#    [1, 2, 0],
#    [1, 1, 0]]
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 1, 0, 1, 1, 0, 1]
# One-vs-rest counts (N = 9):
#   class 0: TP 3, FP 2, FN 1, TN 3  -> P 3/5, R 3/4, S 3/5, F1 6/9,  G sqrt(9/20)
#   class 1: TP 2, FP 2, FN 1, TN 4  -> P 1/2, R 2/3, S 4/6, F1 4/7,  G 2/3
#   class 2: TP 0, FP 0, FN 2, TN 7  -> P 0 (0/0), R 0, S 1, F1 0,  G 0
PRECISION = [3 / 5, 1 / 2, 0.0]
RECALL = [3 / 4, 2 / 3, 0.0]
SPECIFICITY = [3 / 5, 2 / 3, 1.0]
F1 = [2 / 3, 4 / 7, 0.0]
G = [math.sqrt(9 / 20), 2 / 3, 0.0]

METRIC_KEYS = [
    "acsa", "f_macro", "g_macro", "r_mi", "p_ma", "accuracy", "precision_macro", "recall_macro",
    "specificity_macro", "f_micro", "g_micro",
]


def test_confusion_matrix_hand_example():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(cm, [[3, 1, 0], [1, 2, 0], [1, 1, 0]])


def test_confusion_matrix_keeps_unseen_classes():
    np.testing.assert_array_equal(confusion_matrix([1, 1], [1, 0], 4).sum(axis=0), [1, 1, 0, 0])
    assert confusion_matrix([1, 1], [1, 0], 4).shape == (4, 4)


def test_hand_example_per_class():
    m = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50], class_names=["cat", "dog", "eel"])
    rows = m["per_class"]
    assert [r["class"] for r in rows] == ["cat", "dog", "eel"]
    assert [r["train_count"] for r in rows] == [5, 500, 50]
    assert [r["support"] for r in rows] == [4, 3, 2]
    for key, expected in [
        ("precision", PRECISION), ("recall", RECALL), ("specificity", SPECIFICITY),
        ("f1", F1), ("g", G),
    ]:
        assert [r[key] for r in rows] == pytest.approx(expected), key


def test_hand_example_aggregates():
    m = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50])
    assert m["acsa"] == pytest.approx(17 / 36)  # (3/4 + 2/3 + 0) / 3
    assert m["recall_macro"] == m["acsa"]
    assert m["f_macro"] == pytest.approx(26 / 63)  # (2/3 + 4/7 + 0) / 3
    assert m["g_macro"] == pytest.approx((math.sqrt(9 / 20) + 2 / 3) / 3)
    assert m["precision_macro"] == pytest.approx(11 / 30)  # (3/5 + 1/2 + 0) / 3
    assert m["specificity_macro"] == pytest.approx(34 / 45)  # (3/5 + 2/3 + 1) / 3
    assert m["accuracy"] == pytest.approx(5 / 9)
    # Sums over classes: TP 5, FP 4, FN 4, TN 14.
    assert m["f_micro"] == pytest.approx(10 / 18)  # 2·5 / (2·5 + 4 + 4)
    assert m["g_micro"] == pytest.approx(math.sqrt(5 / 9 * 14 / 18))
    # Smallest training class is 0 (5 images), largest is 1 (500 images).
    assert m["r_mi"] == pytest.approx(3 / 4)
    assert m["p_ma"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    ("train_counts", "r_mi", "p_ma"),
    [
        ([50, 500, 5], 0.0, 1 / 2),  # R_MI of the never-predicted class 2 is its recall, 0
        ([500, 5, 50], 2 / 3, 3 / 5),
        ([100, 7, 7], 2 / 3, 3 / 5),  # tie for smallest: lowest index (1) wins
        ([10, 10, 10], 3 / 4, 3 / 5),  # all tied: class 0 for both
        ([1, 9, 9], 3 / 4, 1 / 2),  # tie for largest: class 1
    ],
)
def test_r_mi_and_p_ma_follow_train_counts(train_counts, r_mi, p_ma):
    m = compute_metrics(Y_TRUE, Y_PRED, train_counts)
    assert m["r_mi"] == pytest.approx(r_mi)
    assert m["p_ma"] == pytest.approx(p_ma)


def test_class_absent_from_test_set_is_left_out_of_the_macro_means():
    # Class 2 is predicted once but never occurs: TP 0, FP 1, FN 0 -> P 0, R 0/0 = 0, F1 0.
    m = compute_metrics([0, 0, 1, 1], [0, 2, 1, 1], [10, 10, 3], class_names=["a", "b", "c"])
    absent = m["per_class"][2]
    assert absent["support"] == 0
    assert absent["precision"] == 0.0
    assert absent["recall"] == 0.0
    assert absent["f1"] == 0.0
    assert absent["specificity"] == pytest.approx(3 / 4)
    assert m["acsa"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["f_macro"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["absent_classes"] == ["c"]
    assert m["r_mi"] == pytest.approx(1 / 2)  # class 2 is the rarest but absent: class 0's
    assert "left out of the macro means and R_MI: c." in format_metrics(m)
    assert "absent_classes" not in compute_metrics([0, 1, 2], [0, 1, 1], [3, 2, 1])


def test_specificity_zero_when_every_sample_is_one_class():
    # All test samples are class 0, so TN + FP = 0 for class 0 -> specificity 0, G 0.
    m = compute_metrics([0, 0, 0], [0, 0, 1], [3, 3])
    assert m["per_class"][0]["specificity"] == 0.0
    assert m["per_class"][0]["g"] == 0.0
    assert m["per_class"][0]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"][1]["specificity"] == pytest.approx(2 / 3)


def test_perfect_prediction():
    y = [0, 1, 2, 2, 1, 0]
    m = compute_metrics(y, y, [1, 2, 3])
    for key in METRIC_KEYS:
        assert m[key] == pytest.approx(1.0), key


def test_output_keys_types_and_json():
    m = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50])
    assert list(m) == [*METRIC_KEYS, "per_class"]
    assert set(HEADLINE) <= set(m)
    assert all(type(m[key]) is float for key in METRIC_KEYS)
    for row in m["per_class"]:
        assert type(row["class"]) is str
        assert type(row["train_count"]) is int and type(row["support"]) is int
        assert all(type(row[k]) is float for k in ("precision", "recall", "specificity", "f1", "g"))
    assert [r["class"] for r in m["per_class"]] == ["0", "1", "2"]
    json.dumps(m)

    prob = np.full((9, 3), 1 / 3)
    with_ece = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50], y_prob=prob)
    assert list(with_ece) == [*METRIC_KEYS, "per_class", "ece"]
    assert type(with_ece["ece"]) is float
    json.dumps(with_ece)


def test_accepts_numpy_and_integral_float_labels():
    y_true, y_pred = np.array(Y_TRUE, dtype=np.uint8), np.array(Y_PRED, dtype=float)
    expected = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50])
    assert compute_metrics(y_true, y_pred, (5, 500, 50)) == expected


@st.composite
def labelled(draw):
    n_classes = draw(st.integers(2, 6))
    n = draw(st.integers(1, 60))
    labels = st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)
    return n_classes, np.array(draw(labels)), np.array(draw(labels))


@settings(max_examples=50, deadline=None)
@given(labelled())
def test_agrees_with_sklearn_and_imblearn(case):
    n_classes, y, p = case
    labels = list(range(n_classes))
    present = list(np.unique(y))  # the macro means leave out classes without test samples
    m = compute_metrics(y, p, np.arange(n_classes) + 1)
    rows = m["per_class"]

    np.testing.assert_array_equal(
        confusion_matrix(y, p, n_classes), sk_confusion_matrix(y, p, labels=labels)
    )
    assert m["acsa"] == pytest.approx(
        recall_score(y, p, labels=present, average="macro", zero_division=0)
    )
    assert m["f_macro"] == pytest.approx(
        f1_score(y, p, labels=present, average="macro", zero_division=0)
    )
    assert m["precision_macro"] == pytest.approx(
        precision_score(y, p, labels=present, average="macro", zero_division=0)
    )
    assert [r["precision"] for r in rows] == pytest.approx(
        precision_score(y, p, labels=labels, average=None, zero_division=0)
    )
    assert m["f_micro"] == pytest.approx(
        f1_score(y, p, labels=labels, average="micro", zero_division=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imblearn warns on its own 0/0 cases, which it sets to 0
        g_per_class = geometric_mean_score(y, p, labels=labels, average=None)
        spec_per_class = specificity_score(y, p, labels=labels, average=None)
    assert m["g_macro"] == pytest.approx(np.mean(g_per_class[present]))
    assert [r["g"] for r in rows] == pytest.approx(g_per_class)
    assert [r["specificity"] for r in rows] == pytest.approx(spec_per_class)
    assert m["specificity_macro"] == pytest.approx(np.mean(spec_per_class[present]))
    # R_MI / P_MA: train counts 1..C make class 0 the smallest present and class C-1 the largest.
    assert m["r_mi"] == rows[present[0]]["recall"]
    assert m["p_ma"] == rows[-1]["precision"]


def test_imblearn_macro_gmean_is_not_g_macro():
    # Documented pitfall: imblearn's average="macro" is sqrt(mean recall · mean specificity).
    m = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imb_macro = geometric_mean_score(Y_TRUE, Y_PRED, average="macro")
    assert imb_macro == pytest.approx(math.sqrt(m["recall_macro"] * m["specificity_macro"]))
    assert imb_macro != pytest.approx(m["g_macro"])


def test_ece_hand_computed():
    # Max probabilities 0.95, 0.95, 0.85, 0.55 fall in bins 14, 14, 12, 8 of 15.
    prob = np.array([[0.95, 0.05], [0.05, 0.95], [0.85, 0.15], [0.45, 0.55]])
    y = [0, 0, 0, 0]  # correct, wrong, correct, wrong
    # bin 14: 2/4 · |1/2 − 0.95| = 0.225; bin 12: 1/4 · |1 − 0.85| = 0.0375;
    # bin 8:  1/4 · |0 − 0.55| = 0.1375.  Total 0.4.
    assert expected_calibration_error(y, prob) == pytest.approx(0.4)
    # One bin: |accuracy − mean confidence| = |1/2 − 0.825|.
    assert expected_calibration_error(y, prob, n_bins=1) == pytest.approx(0.325)


def test_ece_zero_when_confidence_matches_accuracy():
    prob = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error([0, 0, 0, 1], prob) == pytest.approx(0.0)
    assert expected_calibration_error([0, 1], np.eye(2)) == 0.0


def test_ece_small_for_calibrated_sampling():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(size=200_000)
    y = (rng.uniform(size=p1.size) < p1).astype(int)
    prob = np.stack([1 - p1, p1], axis=1)
    assert expected_calibration_error(y, prob) < 0.01


def test_compute_metrics_ece_matches_helper():
    rng = np.random.default_rng(1)
    prob = rng.dirichlet(np.ones(3), size=9)
    m = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50], y_prob=prob)
    assert m["ece"] == expected_calibration_error(Y_TRUE, prob)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "train_counts", "kwargs", "match"),
    [
        ([0, 1, 1], [0, 1], [2, 2], {}, "3 samples but y_pred has 2"),
        ([0, 2], [0, 1], [2, 2], {}, "label 2, outside 0..1"),
        ([0, 1], [0, -1], [2, 2], {}, "label -1, outside 0..1"),
        ([], [], [2, 2], {}, "empty"),
        ([0, 1], [0, 1], [], {}, "train_counts"),
        ([0, 1], [0, 1], [2, -1], {}, "non-negative"),
        ([0, 1], [0, 1], [[2, 2]], {}, "1-D"),
        ([0, 1.5], [0, 1], [2, 2], {}, "integer"),
        (["a", "b"], [0, 1], [2, 2], {}, "integer"),
        ([[0, 1]], [[0, 1]], [2, 2], {}, "1-D"),
        ([0, 1], [0, 1], [2, 2], {"class_names": ["a"]}, "class_names has 1"),
        ([0, 1], [0, 1], [2, 2], {"y_prob": np.full((2, 3), 1 / 3)}, "shape"),
        ([0, 1], [0, 1], [2, 2], {"y_prob": np.full((3, 2), 0.5)}, "shape"),
        ([0, 1], [0, 1], [2, 2], {"y_prob": [[2.0, -1.0], [0.5, 0.5]]}, r"\[0, 1\]"),
        ([0, 1], [0, 1], [2, 2], {"y_prob": [[0.2, 0.2], [0.5, 0.5]]}, "sum to 1"),
    ],
)
def test_compute_metrics_rejects_bad_input(y_true, y_pred, train_counts, kwargs, match):
    with pytest.raises(DGCError, match=match):
        compute_metrics(y_true, y_pred, train_counts, **kwargs)


def test_other_functions_reject_bad_input():
    with pytest.raises(DGCError, match="n_classes"):
        confusion_matrix([0], [0], 0)
    with pytest.raises(DGCError, match="outside 0..1"):
        confusion_matrix([0, 2], [0, 0], 2)
    with pytest.raises(DGCError, match="n_bins"):
        expected_calibration_error([0], [[1.0, 0.0]], n_bins=0)
    with pytest.raises(DGCError, match="rows"):
        expected_calibration_error([0, 1], [[1.0, 0.0]])
    with pytest.raises(DGCError, match="outside 0..1"):
        expected_calibration_error([2], [[1.0, 0.0]])
    with pytest.raises(DGCError, match="lacks"):
        format_metrics({"acsa": 0.5})


def test_error_is_a_value_error():
    with pytest.raises(ValueError):
        compute_metrics([0], [0, 0], [1])


def test_format_metrics_report():
    names = ["airplane", "bird", "cat|dog"]
    prob = np.full((9, 3), 1 / 3)
    m = compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50], class_names=names, y_prob=prob)
    text = format_metrics(m, title="CIFAR run")
    assert text.startswith("## CIFAR run")
    for name in ("airplane", "bird", r"cat\|dog"):
        assert name in text
    for label in ("ACSA", "F_macro", "G_macro", "R_MI", "P_MA", "accuracy", "F_micro", "G_micro",
                  "ECE", "train count", "test support", "specificity"):
        assert label in text
    for key in (*HEADLINE, "accuracy", "f_micro", "g_micro", "ece"):
        assert f"{m[key]:.4f}" in text
    bird_row = next(line for line in text.splitlines() if line.startswith("| bird"))
    assert [cell.strip() for cell in bird_row.split("|")[1:4]] == ["bird", "500", "3"]
    assert "0.5714" in text  # F1 of class 1 = 4/7

    plain = format_metrics(compute_metrics(Y_TRUE, Y_PRED, [5, 500, 50]))
    assert "ECE" not in plain and "##" not in plain
    lines = plain.splitlines()
    assert len({len(line) for line in lines if line}) == 2  # each table's rows line up
