"""Evaluation metrics for class-imbalanced classification (METHOD §6).

Every metric comes from the one-vs-rest counts of each class c in the confusion matrix: TP_c, FP_c
(predicted c, truly another class), FN_c (truly c, predicted another) and TN_c. Plain accuracy hides
the minority classes, so the headline metrics (``HEADLINE``) are class-balanced:

* ACSA = mean_c recall_c; F_macro = mean_c F1_c; G_macro = mean_c sqrt(recall_c · specificity_c);
* R_MI = recall of the class with the smallest training count, P_MA = precision of the class with
  the largest training count. Ties go to the lowest class index.

0/0 conventions. Imbalanced test sets hit these often, so they are fixed here instead of giving NaN
(per class they match scikit-learn with ``zero_division=0`` and ``labels=range(C)``; its macro
means differ only where a class is absent from the test set, which it averages in):

* precision of a class that is never predicted (TP + FP = 0) is 0;
* a class absent from the test set (TP + FN = 0) has no recall: its per-class row shows 0, it is
  left out of every macro mean (ACSA, F_macro, G_macro and the macro precision, recall and
  specificity), R_MI is taken over the classes present, and ``absent_classes`` names it (the
  printed report says so). Averaging it in as recall 0 would lower ACSA by 1/C for no error;
* R_MI's and P_MA's classes are fixed by the training counts alone, except as just said;
* specificity with TN + FP = 0 (every test sample belongs to that class) is 0;
* F1 = 2PR/(P + R) = 2TP/(2TP + FP + FN) is 0 when P + R = 0; G is 0 when either factor is 0;
* the micro rates follow the same rule.

imbalanced-learn's ``geometric_mean_score(average="macro")`` is sqrt(mean recall · mean
specificity), which is *not* G_macro; the mean of its ``average=None`` output equals G_macro."""

from collections.abc import Mapping, Sequence

import numpy as np

from dgc.core.errors import DGCError

HEADLINE = ("acsa", "f_macro", "g_macro", "r_mi", "p_ma")

_SUMMARY = (("acsa", "ACSA"), ("f_macro", "F_macro"), ("g_macro", "G_macro"), ("r_mi", "R_MI"),
            ("p_ma", "P_MA"), ("accuracy", "accuracy"), ("f_micro", "F_micro"),
            ("g_micro", "G_micro"), ("ece", "ECE"))
_PER_CLASS = (("class", "class"), ("train_count", "train count"), ("support", "test support"),
              ("precision", "precision"), ("recall", "recall"), ("specificity", "specificity"),
              ("f1", "F1"), ("g", "G"))


def _labels(values, name: str, n_classes: int, bound: str) -> np.ndarray:
    """Check that ``values`` is a non-empty 1-D array of class indices in 0..n_classes-1."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DGCError(f"{name} must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.size == 0:
        raise DGCError(f"{name} is empty; metrics need at least one sample")
    if arr.dtype.kind not in "iuf":
        raise DGCError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise DGCError(f"{name} must hold integer class indices, got non-integer values")
    out = arr.astype(np.int64)
    bad = (out < 0) | (out >= n_classes)
    if bad.any():
        raise DGCError(f"{name} holds label {out[bad][0]}, outside 0..{n_classes - 1} "
                       f"({bound} = {n_classes})")
    return out


def _pair(y_true, y_pred, n_classes: int, bound: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate true and predicted labels together, since they must line up sample by sample."""
    t = _labels(y_true, "y_true", n_classes, bound)
    p = _labels(y_pred, "y_pred", n_classes, bound)
    if t.size != p.size:
        raise DGCError(f"y_true has {t.size} samples but y_pred has {p.size}")
    return t, p


def _confusion(t: np.ndarray, p: np.ndarray, n_classes: int) -> np.ndarray:
    """Count (true, predicted) pairs of already validated labels."""
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 wherever den is 0 (the module's 0/0 convention)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _probs(y_prob, n_samples: int | None = None, n_classes: int | None = None) -> np.ndarray:
    """Check that ``y_prob`` is an N×C matrix of probabilities whose rows sum to 1."""
    prob = np.asarray(y_prob)
    if prob.ndim != 2 or prob.dtype.kind not in "iuf" or prob.size == 0:
        raise DGCError(f"y_prob must be a non-empty N×C array of probabilities, got shape "
                       f"{prob.shape} and dtype {prob.dtype}")
    expected = (n_samples or prob.shape[0], n_classes or prob.shape[1])
    if prob.shape != expected:
        raise DGCError(f"y_prob has shape {prob.shape}, expected {expected} (samples × classes)")
    prob = prob.astype(np.float64)
    if not np.all(np.isfinite(prob)) or prob.min() < 0 or prob.max() > 1:
        raise DGCError("y_prob must hold probabilities in [0, 1] (pass softmax output, not logits)")
    if not np.allclose(prob.sum(axis=1), 1.0, atol=1e-3):
        raise DGCError("every row of y_prob must sum to 1")
    return prob


def _checked(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of the same N samples, each checked."""
    prob = _probs(y_prob)
    y = _labels(y_true, "y_true", prob.shape[1], "columns of y_prob")
    if y.size != prob.shape[0]:
        raise DGCError(f"y_true has {y.size} samples but y_prob has {prob.shape[0]} rows")
    return y, prob


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Return the C×C count matrix, rows = true class, columns = predicted class."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 1:
        raise DGCError(f"n_classes must be a positive integer, got {n_classes!r}")
    n_classes = int(n_classes)
    t, p = _pair(y_true, y_pred, n_classes, "n_classes")
    return _confusion(t, p, n_classes)


def expected_calibration_error(y_true, y_prob, n_bins: int = 15) -> float:
    """Expected calibration error of the top-class probability. Samples are grouped into ``n_bins``
    equal-width bins (lo, hi] of their maximum probability (the first bin also takes 0);
    ECE = Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|, where a sample is correct when the argmax of its
    row (lowest index on ties) equals its label."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise DGCError(f"n_bins must be a positive integer, got {n_bins!r}")
    y, prob = _checked(y_true, y_prob)
    conf = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")
    # |B|/N · |acc − conf| = |Σ_B correct − Σ_B conf| / N, and empty bins add nothing.
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / y.size)


def _train_counts(train_counts) -> np.ndarray:
    """Check that ``train_counts`` is a non-empty 1-D array of non-negative integers."""
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise DGCError(f"train_counts must be a non-empty 1-D array (one count per class), "
                       f"got shape {counts.shape}")
    if counts.dtype.kind not in "iuf":
        raise DGCError(f"train_counts must hold numbers, got dtype {counts.dtype}")
    if not np.all(np.isfinite(counts) & (counts == np.round(counts)) & (counts >= 0)):
        raise DGCError("train_counts must hold non-negative integers")
    return counts.astype(np.int64)


def acsa(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true`: a quick ACSA when the class count and
    the training counts of `compute_metrics` are not at hand (validation splits, decompositions)."""
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def compute_metrics(y_true, y_pred, train_counts: Sequence[int] | np.ndarray,
                    class_names: Sequence[str] | None = None, y_prob=None) -> dict:
    """Compute every METHOD §6 metric; the number of classes C is ``len(train_counts)``. Returns a
    JSON-serialisable dict: the metric values are Python floats, ``per_class`` is a list of one dict
    per class (``class`` name, int ``train_count`` and ``support``, ``precision``, ``recall``,
    ``specificity``, ``f1``, ``g``), and ``ece`` is present only when ``y_prob`` (N×C probabilities)
    is given; ECE judges the argmax of ``y_prob``, which normally is ``y_pred``. See the module
    docstring for the 0/0 conventions."""
    counts = _train_counts(train_counts)
    n_classes = counts.size
    if class_names is None:
        names = [str(c) for c in range(n_classes)]
    else:
        names = [str(name) for name in class_names]
        if len(names) != n_classes:
            raise DGCError(f"class_names has {len(names)} entries but train_counts has "
                           f"{n_classes} classes")
    t, p = _pair(y_true, y_pred, n_classes, "len(train_counts)")
    n = t.size
    cm = _confusion(t, p, n_classes)

    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    g = np.sqrt(recall * specificity)
    rates = {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1, "g": g}

    s_tp, s_fp, s_fn, s_tn = tp.sum(), fp.sum(), fn.sum(), tn.sum()
    f_micro = _ratio(2 * s_tp, 2 * s_tp + s_fp + s_fn)
    g_micro = np.sqrt(_ratio(s_tp, s_tp + s_fn) * _ratio(s_tn, s_tn + s_fp))

    present = (tp + fn) > 0
    rarest_present = np.flatnonzero(present)[np.argmin(counts[present])]
    result = {
        "acsa": float(recall[present].mean()),
        "f_macro": float(f1[present].mean()),
        "g_macro": float(g[present].mean()),
        "r_mi": float(recall[rarest_present]),
        "p_ma": float(precision[np.argmax(counts)]),
        "accuracy": float(s_tp / n),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "specificity_macro": float(specificity[present].mean()),
        "f_micro": float(f_micro),
        "g_micro": float(g_micro),
        "per_class": [{"class": names[c], "train_count": int(counts[c]),
                       "support": int(tp[c] + fn[c]), **{k: float(v[c]) for k, v in rates.items()}}
                      for c in range(n_classes)],
    }
    if not present.all():
        result["absent_classes"] = [names[c] for c in np.flatnonzero(~present)]
    if y_prob is not None:
        _probs(y_prob, n, n_classes)
        result["ece"] = expected_calibration_error(t, y_prob)
    return result


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table padded into aligned columns so it also reads well as plain text."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        rest = zip(cells[1:], widths[1:], strict=True)
        padded = [cells[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in rest]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return [line(header), rule, *(line(row) for row in rows)]


def _cell(value) -> str:
    """Format a table cell: 4 decimals for rates, escaped pipes for names."""
    if isinstance(value, float | np.floating):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def format_metrics(metrics: Mapping, title: str | None = None) -> str:
    """Render ``compute_metrics`` output as a plain-text report made of two Markdown tables."""
    missing = [key for key, _ in _SUMMARY if key != "ece" and key not in metrics]
    if missing or "per_class" not in metrics:
        raise DGCError(f"metrics lacks {missing or ['per_class']}; pass compute_metrics' output")
    summary = [(label, _cell(float(metrics[key]))) for key, label in _SUMMARY if key in metrics]
    per_class = [[_cell(row[key]) for key, _ in _PER_CLASS] for row in metrics["per_class"]]
    lines = [f"## {title}", ""] if title else []
    lines += _table(("metric", "value"), summary)
    lines.append("")
    lines += _table([label for _, label in _PER_CLASS], per_class)
    if metrics.get("absent_classes"):
        lines += ["", f"Classes without test images, left out of the macro means and R_MI: "
                      f"{', '.join(metrics['absent_classes'])}."]
    return "\n".join(lines)
