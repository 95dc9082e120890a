"""What a benchmark's methods offer beyond their decision, over every run of a `dgc bench` folder:
`dgc evaluate BENCH --calibration | --prior-shift | --ood SOURCES | --oversampling OTHER`.

Each run is evaluated as `dgc evaluate RUN` would, or its JSON reused when newer than its weights;
the tables (mean ± sample std over seeds, paired t-tests of `dgc` against each method) go into the
benchmark folder as NAME.json and NAME.md, NAME being that of the runs' own files (`calibration`,
`prior-shift`, `ood-<sources>[-n<N>]`), so that no table replaces another."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgc.bench.benchmark import REFERENCE, summarise
from dgc.config import flatten
from dgc.core.io import read_json, write_json, write_text
from dgc.core.progress import steps
from dgc.core.tables import TESTED, markdown, number, paired, paired_p_value, values
from dgc.core.tables import summary_rows as rows_of
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


def evaluate_bench(bench_dir: str | Path, evaluate: Callable[[Path, Run], dict[str, Any]],
                   what: str, file: str, recompute: bool = False
                   ) -> list[tuple[str, int, dict[str, Any]]]:
    """(method, seed, report) of `evaluate(run_dir, run)` for every finished run of a benchmark,
    each run's folder locked while its files are written, as `dgc evaluate` does. A run's
    `file` written after its `best.pt` is that report, read instead of recomputed (unless
    `recompute`): DGC's exact novelty scores take tens of minutes a run."""
    reports = []
    for run in steps(read_json(Path(bench_dir) / "results.json")["runs"], what, "runs", True):
        run_dir = Path(bench_dir) / f"{run['method']}-s{run['seed']}"
        with RunDir(run_dir).lock():
            saved = run_dir / file
            fresh = saved.is_file() and saved.stat().st_mtime >= (run_dir / BEST).stat().st_mtime
            report = read_json(saved) if fresh and not recompute else evaluate(
                run_dir, load_run(run_dir))
        reports.append((run["method"], run["seed"], report))
    return reports


def write_tables(out: Path, name: str, title: str, intro: str,
                 sections: Sequence[dict[str, Any]], runs: Rows) -> Path:
    """`name`.json and `name`.md in `out`: per section (heading, rows, columns, lower, pairs)
    mean ± std of each column per row and, for each pair (a, b), the mean difference a − b
    with its paired t-test over the seeds both have; returns the Markdown's path."""
    record: dict[str, Any] = {"runs": list(runs), "sections": {}}
    lines = [f"# {title}", "", intro, "",
             "Cells: mean ± sample standard deviation over the n seeds; **bold**: the best "
             "mean per column. Differences: mean over the paired seeds, with the two-sided p of "
             "a paired t-test (n/a below two pairs).", ""]
    for section in sections:
        columns, labels = section["columns"], [label for _, label in section["columns"]]
        summary = summarise(runs, section["rows"], [key for key, _ in columns])
        tests: dict[str, Any] = {}
        cells = []
        for a, b in section.get("pairs", []):
            tests[f"{a} vs {b}"] = {}
            cells.append([f"`{a}` − `{b}`"])
            for key, _ in columns:
                ours, theirs = paired(runs, a, b, key)
                diff = float(np.mean(np.subtract(ours, theirs))) if ours else None
                p = paired_p_value(ours, theirs)
                tests[f"{a} vs {b}"][key] = {"difference": diff, "p": p, "n": len(ours)}
                cells[-1].append("n/a" if diff is None else f"{diff:+.4f} (p {number(p, '.3g')})")
        record["sections"][section["heading"]] = {"summary": summary, "tests": tests}
        lines += [f"## {section['heading']}", "",
                  *markdown(["row", "n", *labels], rows_of(summary, columns, section["lower"])),
                  ""]
        if cells:
            lines += [*markdown(["difference", *labels], cells), ""]
    write_json(out / f"{name}.json", record)
    return write_text(out / f"{name}.md", "\n".join(lines))


def method_tables(bench: Path, evaluate: Callable[[Path, Run], dict[str, Any]], file: str,
                  title: str, intro: str, recompute: bool,
                  sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> Path:
    """One row per method, `dgc` tested against each other method, a section per (heading,
    columns); lower is better for ECE, NLL, Brier and prior errors."""
    reports = evaluate_bench(bench, evaluate, Path(file).stem, file, recompute)
    runs = [{"method": method, "seed": seed, "metrics": {
        k: v for k, v in flatten(report).items() if isinstance(v, int | float)}}
        for method, seed, report in reports]
    methods = list(dict.fromkeys(method for method, _, _ in reports))
    pairs = [(REFERENCE, m) for m in methods if m != REFERENCE and REFERENCE in methods]
    lower = ("ece", "nll", "brier", "prior_error")
    return write_tables(bench, Path(file).stem, f"{title}: {bench}", intro, [
        {"heading": heading, "rows": methods, "pairs": pairs, "columns": columns,
         "lower": [key for key, _ in columns if any(word in key for word in lower)]}
        for heading, columns in sections], runs)


def calibration_tables(bench: Path, recompute: bool = False) -> Path:
    """ECE, classwise ECE, Brier and NLL of every method, as predicted and after temperature
    scaling (plain and bias-corrected) fitted on each run's validation split."""
    return method_tables(
        bench, lambda d, run: evaluate_calibration(d, run)[0], CALIBRATION_FILE,
        "Calibration of the test set", "Lower is better in every column.", recompute,
        [(CALIBRATION_TITLES[name], [(f"{name}.{key}", label) for key, label in
                                     CALIBRATION_METRICS]) for name in CALIBRATIONS])


def shift_tables(bench: Path, recompute: bool = False) -> Path:
    """Every method on test sets resampled to other class priors, with and without EM."""
    return method_tables(
        bench, lambda d, run: evaluate_prior_shift(d, run)[0], SHIFT_FILE,
        "Test sets resampled to other class priors",
        "EM: posteriors re-weighted to the EM estimate of the test prior. TS / BCTS: (bias-"
        "corrected) temperature scaling fitted on validation. Prior error: L1 distance of the "
        "EM estimate to the test set's prior. Lower is better for ECE and prior error, higher "
        "for the rest.", recompute,
        [(f"Test prior: {shift}", [(f"{shift}.{key}", label) for key, label in SHIFT_COLUMNS])
         for shift in SHIFTS])


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
        auroc = {row: np.mean(list(values(runs, row, f"{source}.auroc").values()))
                 for row in rows if not row.startswith(f"{REFERENCE}/")}
        best = max(auroc, key=lambda row: auroc[row]) if auroc else None
        sections.append({"heading": f"Novel set: {source}", "rows": rows,
                         "pairs": [(row, best) for row in rows
                                   if row.startswith(f"{REFERENCE}/") and best],
                         "columns": [(f"{source}.{key}", label) for key, label in DETECTION],
                         "lower": [f"{source}.fpr95"]})
    scored = ("all of the test set and of each novel set." if limit is None else
              f"the same fixed random {limit} of the test set and of each novel set (all of a "
              "smaller set).")
    return write_tables(bench, Path(file).stem, f"Novel images flagged: {bench}",
                        "Rows are method/score; the novel images are the positives. Higher "
                        "AUROC and AUPR, lower FPR@95TPR are better. The differences test each "
                        f"`{REFERENCE}` score against the baseline score of best mean AUROC. "
                        f"Images scored per run: {scored}", sections, runs)


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
    return write_tables(generated, "oversampling",
                        f"Generated minority images ({generated}) against {bench}",
                        "`M+dgc`: method M trained on its training split grown with images "
                        "decoded from the same seed's DGC run; the other rows resample the real "
                        "images only.", [{"heading": "Test metrics", "rows": rows, "pairs": pairs,
                                          "columns": list(TESTED), "lower": ["ece"]}],
                        runs + base)
