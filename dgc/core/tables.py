"""The one way tables are made: Markdown, mean ± sample std over seeds, and paired t-tests.

A row of measurements is a dict with "method", "seed" and "metrics" (a run of a benchmark, or a
report flattened to one); `values` and `paired` read such rows."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from scipy import stats

LOWER_IS_BETTER = frozenset({"ece"})
# The columns of the paper's Tables 2 and 3 (metric key, label), ECE added to the second.
TABLE2 = (("acsa", "ACSA"), ("f_macro", "F_macro"), ("g_macro", "G_macro"))
TABLE3 = (("r_mi", "R_MI"), ("p_ma", "P_MA"), ("ece", "ECE"))
TESTED = (*TABLE2, *TABLE3)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def number(value: float | None, spec: str = ".4f") -> str:
    """A number as the tables show it (a mean or standard deviation by default): "n/a" for None."""
    return "n/a" if value is None else f"{value:{spec}}"


def plus_minus(stats: dict[str, Any]) -> str:
    """A `mean_std` as the tables show it: "mean ± std"."""
    return f"{number(stats['mean'])} ± {number(stats['std'])}"


def mean_std(numbers: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof = 1; None below two values)."""
    n = len(numbers)
    return {"mean": float(np.mean(numbers)) if n else None,
            "std": float(np.std(numbers, ddof=1)) if n >= 2 else None, "n": n}


def values(runs: Sequence[dict[str, Any]], method: str, key: str) -> dict[int, float]:
    """seed → value of `key` (a metric or a seconds_* field) for one method's rows."""
    found = ((run["seed"], run["metrics"].get(key, run.get(key))) for run in runs
             if run["method"] == method)
    return {seed: float(value) for seed, value in found if value is not None}


def paired(runs: Sequence[dict[str, Any]], a: str, b: str,
           key: str) -> tuple[list[float], list[float]]:
    """The values of `key` for rows `a` and `b` over the seeds both have, in seed order."""
    ours, theirs = values(runs, a, key), values(runs, b, key)
    seeds = sorted(set(ours) & set(theirs))
    return [ours[s] for s in seeds], [theirs[s] for s in seeds]


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided paired t-test (scipy.stats.ttest_rel); None with fewer than two pairs or when
    every difference is zero (no evidence either way)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    with warnings.catch_warnings():  # scipy warns when the differences are (nearly) constant
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(a, b).pvalue)
    return None if math.isnan(p) else p


def summary_rows(summary: dict[str, Any], columns: Sequence[tuple[str, str]],
                 lower: Collection[str] = LOWER_IS_BETTER, ranked: bool = True) -> list[list[str]]:
    """A table row per entry of `summary` (name → key → `mean_std`): the name, n, and each
    column's mean ± std ("—" without runs); when `ranked`, the best mean of a column at the
    table's precision (the lowest for the keys in `lower`) is bold."""
    best = {}
    for key, _ in columns if ranked else ():
        means = [s[key]["mean"] for s in summary.values() if s[key]["mean"] is not None]
        best[key] = number((min if key in lower else max)(means)) if means else None
    rows = []
    for name, stat in summary.items():
        cells = [f"`{name}`", str(max(stat[key]["n"] for key, _ in columns))]
        for key, _ in columns:
            mean = stat[key]["mean"]
            cell = "—" if mean is None else plus_minus(stat[key])
            cells.append(f"**{cell}**" if mean is not None and number(mean) == best.get(key)
                         else cell)
        rows.append(cells)
    return rows
