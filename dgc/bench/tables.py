"""What a benchmark's methods offer beyond their decision, tabulated over every run of a
`dgc bench` folder: `dgc evaluate BENCH --calibration | --prior-shift | --ood SOURCES |
--oversampling OTHER`.

Each run is evaluated as `dgc evaluate RUN` would (`dgc.evaluation.capabilities`, its JSON
written into the run), or its JSON is reused when newer than its weights; the tables, mean ±
sample std over seeds per method and paired t-tests of `dgc` against each other method, go
into the benchmark folder as NAME.json and NAME.md under the name of the runs' own files
(`calibration`, `prior-shift`, `ood-<sources>[-n<N>]`), so no table replaces another's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dgc.bench.benchmark import REFERENCE
from dgc.config import flatten
from dgc.core.io import read_json, write_json, write_text
from dgc.core.tables import (
    TESTED,
    markdown,
    mean_std,
    number,
    paired,
    paired_p_value,
    summary_rows,
)
from dgc.core.tables import values as row_values
from dgc.evaluation.calibration import CALIBRATIONS
from dgc.evaluation.capabilities import (
    CALIBRATION_FILE,
    CALIBRATION_METRICS,
    DETECTION,
    SHIFT_FILE,
    SHIFTS,
    builtin_sources,
    evaluate_calibration,
    evaluate_ood,
    evaluate_prior_shift,
    ood_file,
)
from dgc.run.finished import Run, load_run
from dgc.run.folder import BEST, RunDir

Rows = list[dict[str, Any]]
CALIBRATION_TITLES = {"none": "As predicted",
                      "temperature": "Temperature scaling (fitted on validation)",
                      "bcts": "Bias-corrected temperature scaling (fitted on validation)"}
SHIFT_COLUMNS = (("none.as_is.accuracy", "accuracy"), ("none.em.accuracy", "accuracy, EM"),
                 ("temperature.em.accuracy", "accuracy, TS + EM"),
                 ("bcts.em.accuracy", "accuracy, BCTS + EM"), ("bcts.em.acsa", "ACSA, BCTS + EM"),
                 ("none.as_is.ece", "ECE"), ("bcts.em.ece", "ECE, BCTS + EM"),
                 ("none.prior_error_em", "prior error, EM"),
                 ("bcts.prior_error_em", "prior error, BCTS + EM"))
OVERSAMPLING_COMPARED = ("ros", "smote")


def bench_runs(bench_dir: str | Path) -> list[tuple[str, int, Path]]:
    """(method, seed, run directory) of every finished run a `dgc bench` folder lists."""
    results = read_json(Path(bench_dir) / "results.json")
    return [(run["method"], run["seed"], Path(bench_dir) / f"{run['method']}-s{run['seed']}")
            for run in results["runs"]]


def flat_row(method: str, seed: int, report: dict[str, Any]) -> dict[str, Any]:
    """A run's report as a row for `summary_table` / `test_table` (keys joined by '.')."""
    numbers = {k: v for k, v in flatten(report).items() if isinstance(v, int | float)}
    return {"method": method, "seed": seed, "metrics": numbers}


def summary_table(runs: Rows, rows: Sequence[str], columns: Sequence[tuple[str, str]],
                  lower: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """Mean ± std over seeds of each column for each row (a method, or method/score); the
    best mean per column (lowest for the keys in `lower`) in bold."""
    summary = {row: {key: mean_std(list(row_values(runs, row, key).values()))
                     for key, _ in columns} for row in rows}
    return summary, markdown(["row", "n", *(label for _, label in columns)],
                             summary_rows(summary, columns, lower))


def test_table(runs: Rows, pairs: Sequence[tuple[str, str]],
               columns: Sequence[tuple[str, str]]) -> tuple[dict[str, Any], list[str]]:
    """Two-sided paired t-tests (scipy's ttest_rel) of row a against row b per column, over
    the seeds both have, with the mean difference a − b."""
    tests: dict[str, Any] = {}
    lines = []
    for a, b in pairs:
        cells = [f"`{a}` − `{b}`"]
        tests[f"{a} vs {b}"] = {}
        for key, _ in columns:
            ours, theirs = paired(runs, a, b, key)
            diff = float(np.mean(np.subtract(ours, theirs))) if ours else None
            p = paired_p_value(ours, theirs)
            tests[f"{a} vs {b}"][key] = {"difference": diff, "p": p, "n": len(ours)}
            cells.append("n/a" if diff is None else f"{diff:+.4f} (p {number(p, '.3g')})")
        lines.append(cells)
    return tests, markdown(["difference", *(label for _, label in columns)], lines)


def evaluate_bench(bench_dir: str | Path, evaluate: Callable[[Path, Run], dict[str, Any]],
                   what: str, file: str, recompute: bool = False
                   ) -> list[tuple[str, int, dict[str, Any]]]:
    """(method, seed, report) of `evaluate(run_dir, run)` for every run of a benchmark, each
    run's folder locked while its files are written, as `dgc evaluate` does. A run's `file`
    written after its `best.pt` is that report, read instead of recomputed (unless
    `recompute`): DGC's exact novelty scores take tens of minutes a run, and a benchmark grows
    by seeds."""
    reports = []
    for method, seed, run_dir in tqdm(bench_runs(bench_dir), desc=what, unit="run"):
        with RunDir(run_dir).lock():
            saved = run_dir / file
            if not recompute and saved.is_file() \
                    and saved.stat().st_mtime >= (run_dir / BEST).stat().st_mtime:
                reports.append((method, seed, read_json(saved)))
            else:
                reports.append((method, seed, evaluate(run_dir, load_run(run_dir))))
    return reports


def write_tables(out: str | Path, name: str, title: str, intro: Sequence[str],
                 sections: Sequence[dict[str, Any]], runs: Rows) -> Path:
    """`name`.json and `name`.md in `out`: per section (heading, rows, columns, lower, pairs)
    a `summary_table` and, when it has pairs, a `test_table`; returns the Markdown's path."""
    record: dict[str, Any] = {"runs": list(runs), "sections": {}}
    lines = [f"# {title}", "", *intro, "",
             "Cells: mean ± sample standard deviation over the n seeds; **bold**: the best "
             "mean per column. Differences: mean over the paired seeds, with the two-sided p of "
             "a paired t-test (n/a below two pairs).", ""]
    for section in sections:
        columns, pairs = section["columns"], section.get("pairs", [])
        summary, table = summary_table(runs, section["rows"], columns, section.get("lower", ()))
        tests, test_lines = test_table(runs, pairs, columns)
        record["sections"][section["heading"]] = {"summary": summary, "tests": tests}
        lines += [f"## {section['heading']}", "", *table, ""]
        if pairs:
            lines += [*test_lines, ""]
    write_json(Path(out) / f"{name}.json", record)
    return write_text(Path(out) / f"{name}.md", "\n".join(lines))


def reference_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(`dgc`, m) for every other method m, when `dgc` is among them."""
    return [(REFERENCE, m) for m in methods if m != REFERENCE and REFERENCE in methods]


def method_rows(bench: Path, evaluate: Callable[[Path, Run], dict[str, Any]], what: str,
                file: str, recompute: bool) -> tuple[Rows, list[str]]:
    """Every run's report under `file` as a row, and the methods in order."""
    reports = evaluate_bench(bench, evaluate, what, file, recompute)
    return ([flat_row(method, seed, report) for method, seed, report in reports],
            list(dict.fromkeys(method for method, _, _ in reports)))


def calibration_tables(bench: Path, recompute: bool = False) -> Path:
    """ECE, classwise ECE, Brier and NLL of every method, as predicted and after (bias-
    corrected) temperature scaling fitted on each run's validation split."""
    runs, methods = method_rows(bench, lambda d, run: evaluate_calibration(d, run)[0],
                                "calibration", CALIBRATION_FILE, recompute)
    sections = [{"heading": CALIBRATION_TITLES[name], "rows": methods,
                 "pairs": reference_pairs(methods),
                 "columns": [(f"{name}.{key}", label) for key, label in CALIBRATION_METRICS],
                 "lower": [f"{name}.{key}" for key, _ in CALIBRATION_METRICS]}
                for name in CALIBRATIONS]
    return write_tables(bench, Path(CALIBRATION_FILE).stem,
                        f"Calibration of the test set: {bench}",
                        ["Lower is better in every column."], sections, runs)


def shift_tables(bench: Path, recompute: bool = False) -> Path:
    """Every method on test sets resampled to other class priors, with and without EM."""
    runs, methods = method_rows(bench, lambda d, run: evaluate_prior_shift(d, run)[0],
                                "label shift", SHIFT_FILE, recompute)
    sections = []
    for shift in SHIFTS:
        columns = [(f"{shift}.{key}", label) for key, label in SHIFT_COLUMNS]
        sections.append({"heading": f"Test prior: {shift}", "rows": methods,
                         "pairs": reference_pairs(methods), "columns": columns,
                         "lower": [key for key, _ in columns
                                   if "ece" in key or "prior_error" in key]})
    return write_tables(bench, Path(SHIFT_FILE).stem,
                        f"Test sets resampled to other class priors: {bench}",
                        ["EM: posteriors re-weighted to the EM estimate of the test prior. TS / "
                         "BCTS: (bias-corrected) temperature scaling fitted on validation. "
                         "Prior error: L1 distance of the EM estimate to the test set's prior. "
                         "Lower is better for ECE and prior error, higher for the rest."],
                        sections, runs)


def best_baseline(runs: Rows, rows: Sequence[str], source: str) -> str | None:
    """The row of another method with the highest mean AUROC on `source`."""
    means = {row: np.mean(list(row_values(runs, row, f"{source}.auroc").values()))
             for row in rows if not row.startswith(f"{REFERENCE}/")}
    return max(means, key=lambda row: means[row]) if means else None


def ood_tables(bench: Path, sources: Sequence[str], limit: int | None = None,
               recompute: bool = False) -> Path:
    """Detection of each built-in novel set by every method/score; each `dgc` score is
    tested against the baseline score of best mean AUROC."""
    file = ood_file(sources, limit=limit)
    reports = evaluate_bench(bench, lambda d, run: evaluate_ood(
        d, builtin_sources(run, sources), run, limit=limit)[0], "ood", file, recompute)
    runs = [{"method": f"{method}/{score}", "seed": seed,
             "metrics": flatten({source: report["sources"][source][score]
                                 for source in sources})}
            for method, seed, report in reports for score in report["scores"]]
    rows = list(dict.fromkeys(str(run["method"]) for run in runs))
    sections = []
    for source in sources:
        best = best_baseline(runs, rows, source)
        pairs = [(row, best) for row in rows if row.startswith(f"{REFERENCE}/") and best]
        sections.append({"heading": f"Novel set: {source}", "rows": rows, "pairs": pairs,
                         "columns": [(f"{source}.{key}", label) for key, label in DETECTION],
                         "lower": [f"{source}.fpr95"]})
    scored = ("all of the test set and of each novel set." if limit is None else
              f"the same fixed random {limit} of the test set and of each novel set (all of a "
              "smaller set).")
    return write_tables(bench, Path(file).stem, f"Novel images flagged: {bench}",
                        ["Rows are method/score; the novel images are the positives. Higher "
                         "AUROC and AUPR, lower FPR@95TPR are better. The differences test "
                         f"each `{REFERENCE}` score against the baseline score of best mean "
                         "AUROC.", f"Images scored per run: {scored}"], sections, runs)


def oversampling_table(generated: Path, bench: Path) -> Path:
    """The methods of `generated` (trained with `baseline.resample=dgc`) against random
    oversampling, SMOTE and themselves on real images only, from `bench` of the same seeds."""
    runs = [{**run, "method": f"{run['method']}+dgc"}
            for run in read_json(generated / "results.json")["runs"]]
    given = list(dict.fromkeys(run["method"] for run in runs))
    base = [run for run in read_json(bench / "results.json")["runs"]
            if run["method"] in OVERSAMPLING_COMPARED or f"{run['method']}+dgc" in given]
    rows = given + list(dict.fromkeys(run["method"] for run in base))
    pairs = [(ours, other) for ours in given for other in rows if other not in given]
    section = {"heading": "Test metrics", "rows": rows, "pairs": pairs, "columns": list(TESTED),
               "lower": ["ece"]}
    return write_tables(generated, "oversampling",
                        f"Generated minority images ({generated}) against {bench}",
                        ["`M+dgc`: method M trained on its training split grown with images "
                         "decoded from the same seed's DGC run; the other rows resample the "
                         "real images only."], [section], runs + base)
