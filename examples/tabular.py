"""DGCClassifier on imbalanced tables, against logistic regression and a random forest.

For every seed, a real table shipped with scikit-learn is split into a stratified 70 % training
and 30 % test part; imbalanced-learn's `make_imbalance` then keeps, in order of class index,
n_c = n_min · IR^(−c / (C − 1)) training rows of class c (n_min: the smallest class's training
rows, IR: the imbalance ratio), as METHOD §5 orders the paper's profiles. The test part stays as
it is. Each method is fitted on the same rows, scored with METHOD §6's metrics
(`dgc.core.metrics.compute_metrics`), and the mean ± std over the seeds is printed as a Markdown
table.

    .venv/bin/python examples/tabular.py                      # wine and digits, seeds 1-5
    .venv/bin/python examples/tabular.py --datasets wine --seeds 1 2 --json wine.json

DGCClassifier runs with its defaults; the baselines standardise the features as it does.
Torch runs on one thread unless --threads says otherwise: networks this small gain nothing from
more, and on a busy machine extra threads wait on each other far longer than they compute.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from imblearn.datasets import make_imbalance
from sklearn.base import ClassifierMixin
from sklearn.datasets import load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from dgc import DGCClassifier, DGCError
from dgc.core.io import write_json
from dgc.core.metrics import compute_metrics

DATASETS: dict[str, Callable[..., Any]] = {"wine": load_wine, "digits": load_digits}
METRICS = ("acsa", "f_macro", "g_macro")
HEADERS = {"acsa": "ACSA", "f_macro": "F_macro", "g_macro": "G_macro"}
TEST_SIZE = 0.3


def methods(seed: int) -> dict[str, ClassifierMixin]:
    """The compared classifiers, each seeded by the split's seed."""
    return {
        "DGCClassifier": DGCClassifier(random_state=seed),
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        "logistic regression, balanced": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced")),
        "random forest": RandomForestClassifier(n_estimators=300, random_state=seed),
    }


def imbalanced_split(name: str, seed: int,
                     ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/test split, then the training part made imbalanced in class order."""
    x, y = DATASETS[name](return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, stratify=y,
                                                        random_state=seed)
    n_classes = len(np.unique(y))
    n_min = int(np.bincount(y_train).min())
    counts = {c: max(1, int(n_min * ratio ** (-c / (n_classes - 1)))) for c in range(n_classes)}
    x_train, y_train = make_imbalance(x_train, y_train, sampling_strategy=counts,
                                      random_state=seed)
    return x_train, y_train, x_test, y_test


def run(datasets: list[str], seeds: list[int], ratio: float) -> dict[str, Any]:
    """Every method on every dataset and seed; per-seed metrics and the training counts."""
    results: dict[str, Any] = {}
    jobs = [(name, seed) for name in datasets for seed in seeds]
    for name, seed in tqdm(jobs, desc="fits", unit="split", file=sys.stderr):
        x_train, y_train, x_test, y_test = imbalanced_split(name, seed, ratio)
        counts = np.bincount(y_train)
        entry = results.setdefault(name, {"train_counts": counts.tolist(),
                                          "test_counts": np.bincount(y_test).tolist(),
                                          "runs": {}})
        for method, model in methods(seed).items():
            prediction = model.fit(x_train, y_train).predict(x_test)
            metrics = compute_metrics(y_test, prediction, counts)
            entry["runs"].setdefault(method, []).append(
                {"seed": seed, **{k: metrics[k] for k in METRICS}})
    return results


def markdown(results: dict[str, Any], ratio: float) -> str:
    """One row per dataset and method: mean ± std over the seeds (population std)."""
    lines = [f"| dataset | method | {' | '.join(HEADERS[k] for k in METRICS)} |",
             "|---|---|" + "---|" * len(METRICS)]
    for name, entry in results.items():
        label = f"{name} (IR {ratio:g}, train {'/'.join(map(str, entry['train_counts']))})"
        for method, runs in entry["runs"].items():
            cells = []
            for key in METRICS:
                values = np.array([run[key] for run in runs])
                cells.append(f"{values.mean():.4f} ± {values.std():.4f}")
            lines.append(f"| {label} | {method} | {' | '.join(cells)} |")
    seeds = sorted({run["seed"] for entry in results.values()
                    for runs in entry["runs"].values() for run in runs})
    lines.append("")
    lines.append(f"Seeds {', '.join(map(str, seeds))}; test part: a stratified {TEST_SIZE:.0%} of "
                 "each table, not made imbalanced.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--ratio", type=float, default=10.0,
                        help="imbalance ratio: largest / smallest training class (default 10)")
    parser.add_argument("--json", help="also write the per-seed metrics to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    try:
        if args.ratio < 1:
            raise DGCError(f"--ratio must be at least 1, got {args.ratio}")
        if args.threads < 1:
            raise DGCError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        results = run(args.datasets, args.seeds, args.ratio)
        if args.json:
            write_json(args.json, {"ratio": args.ratio, "test_size": TEST_SIZE,
                                   "results": results})
    except DGCError as error:
        print(f"tabular.py: error: {error}", file=sys.stderr)
        return 2
    print(markdown(results, args.ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
