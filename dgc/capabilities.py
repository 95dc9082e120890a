"""What a run offers beyond its decision, evaluated per run and tabulated over a benchmark.

`dgc evaluate RUN --calibration | --prior-shift | --ood SOURCES` writes one JSON each into the
run directory (`calibration.json`, `prior-shift.json`, `ood-<sources>.json`; a DGC run asked to
predict otherwise than its configuration adds the settings, e.g. `calibration-bayes-s10.json`)
and prints a Markdown summary; the scripts in benchmarks/ run the same functions over every run
of a `dgc bench` folder and tabulate them with `summary_table` (mean ± std over seeds) and
`test_table` (two-sided paired t-tests over the seeds both rows have).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dgc.benchmark import REFERENCE, markdown, paired, paired_p_value, summary_rows, values
from dgc.calibration import CALIBRATIONS, calibration_report
from dgc.config import PredictConfig, flatten
from dgc.data import ImbalancedData
from dgc.errors import DGCError
from dgc.experiment import Run, family_of, latent_tag, load_run, predict_tag, recorded_data
from dgc.io import read_json, write_json, write_text
from dgc.ood import SOURCES, ood_images, ood_report
from dgc.rundir import BEST, RunDir
from dgc.scoring import SplitScores, score_splits
from dgc.series import mean_std, number
from dgc.shift import shift_report

CALIBRATION_FILE = "calibration.json"
SHIFT_FILE = "prior-shift.json"
CALIBRATION_METRICS = (("ece", "ECE"), ("classwise_ece", "classwise ECE"), ("brier", "Brier"),
                       ("nll", "NLL"))
SHIFTS = ("balanced", "train", "reversed", "dirichlet")
DETECTION = (("auroc", "AUROC"), ("aupr", "AUPR"), ("fpr95", "FPR@95TPR"))


def with_prediction(run: Run, predict: PredictConfig) -> tuple[Run, str]:
    """The run predicting with `predict`, and the suffix its files then carry: none for its
    own settings (or a baseline, which has no others), else -<settings>, so that no result
    under other settings is replaced."""
    if not family_of(run.cfg).generative or predict == run.cfg.predict:
        return run, ""
    return (dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, predict=predict)),
            f"-{predict_tag(predict)}")


def ood_suffix(run: Run, predict: PredictConfig) -> str:
    """The suffix of an `ood-*.json` under `predict`: novelty scores use only the number of
    codes and a learned prior's weight, so only those name the file."""
    own = run.cfg.predict
    if not family_of(run.cfg).generative or (predict.samples, predict.latent_weight) == (
            own.samples, own.latent_weight):
        return ""
    return f"-s{predict.samples}{latent_tag(predict)}"


def evaluate_calibration(run_dir: str | Path, run: Run | None = None, suffix: str = "",
                         scores: SplitScores | None = None) -> tuple[dict[str, Any], Path]:
    """Test-set calibration before and after temperature scaling fitted on validation (only
    before for a run without a validation split), into calibration<suffix>.json."""
    run = run or load_run(run_dir)
    scores = scores or score_splits(run)
    report = calibration_report(scores.y_val, scores.val, scores.y_test, scores.test)
    return report, write_json(Path(run_dir) / CALIBRATION_FILE.replace(".json", f"{suffix}.json"),
                              report)


def evaluate_prior_shift(run_dir: str | Path, run: Run | None = None, suffix: str = "",
                         scores: SplitScores | None = None) -> tuple[dict[str, Any], Path]:
    """Outcomes on test sets resampled to other priors, with and without EM and calibration,
    into prior-shift<suffix>.json."""
    run = run or load_run(run_dir)
    report = shift_report(scores or score_splits(run), run.cfg, run.train_counts)
    return report, write_json(Path(run_dir) / SHIFT_FILE.replace(".json", f"{suffix}.json"), report)


def builtin_sources(run: Run, sources: Sequence[str],
                    data: ImbalancedData | None = None) -> dict[str, np.ndarray]:
    """The images of each named built-in novel set (`dgc.ood.SOURCES`)."""
    data = data or recorded_data(run)
    return {source: ood_images(source, run, data) for source in sources}


def evaluate_ood(run_dir: str | Path, novel: dict[str, np.ndarray], run: Run | None = None,
                 suffix: str = "", data: ImbalancedData | None = None,
                 limit: int | None = None) -> tuple[dict[str, Any], Path]:
    """Detection of each novel image set (name → uint8 images) against the test set, at most
    `limit` images of each, into `ood_file`."""
    report = ood_report(run or load_run(run_dir), novel, data, limit)
    return report, write_json(Path(run_dir) / ood_file(list(novel), suffix, limit), report)


def ood_file(sources: Sequence[str], suffix: str = "", limit: int | None = None) -> str:
    """The name of a run's report on these novel sets (files and folders by their stem), at
    most `limit` images of each: ood-<names>[-n<limit>]<suffix>.json."""
    cap = f"-n{limit}" if limit is not None else ""
    return f"ood-{'-'.join(Path(name).stem for name in sources)}{cap}{suffix}.json"


def parse_sources(text: str) -> list[str]:
    """'heldout,noise' → ['heldout', 'noise'] (names or paths, in order, without repeats)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise DGCError(f"--ood needs a comma-separated list of novel sets: {', '.join(SOURCES)}"
                       ", or .npy/.npz files or image folders")
    return list(dict.fromkeys(names))


# -- one run's summaries ----------------------------------------------------------------------

def calibration_markdown(report: dict[str, Any]) -> str:
    rows = [[name, f"{report[name]['temperature']:.3g}",
             *(f"{report[name][key]:.4f}" for key, _ in CALIBRATION_METRICS)]
            for name in report]
    return "\n".join(markdown(["calibration (fitted on validation)", "T",
                               *(label for _, label in CALIBRATION_METRICS)], rows))


def shift_markdown(report: dict[str, Any]) -> str:
    rows = []
    for shift in SHIFTS:
        for calibration in (c for c in CALIBRATIONS if c in report[shift]):
            r = report[shift][calibration]
            rows.append([shift, calibration, *(f"{r[mode]['accuracy']:.4f}"
                                               for mode in ("as_is", "em", "oracle")),
                         f"{r['em']['acsa']:.4f}", f"{r['em']['ece']:.4f}",
                         f"{r['prior_error_em']:.3f}", f"{r['prior_error_source']:.3f}"])
    header = ["test prior", "calibration", "accuracy", "accuracy, EM", "accuracy, true prior",
              "ACSA, EM", "ECE, EM", "prior L1 error, EM", "prior L1 error, trained"]
    return "\n".join(markdown(header, rows))


def ood_markdown(report: dict[str, Any]) -> str:
    rows = [[source, score, *(f"{detection[score][key]:.4f}" for key, _ in DETECTION)]
            for source, detection in report["sources"].items() for score in report["scores"]]
    return "\n".join(markdown(["novel set", "score", *(label for _, label in DETECTION)], rows))


# -- tables over a benchmark ------------------------------------------------------------------

def bench_runs(bench_dir: str | Path) -> list[tuple[str, int, Path]]:
    """(method, seed, run directory) of every finished run a `dgc bench` folder lists."""
    results = read_json(Path(bench_dir) / "results.json")
    return [(run["method"], run["seed"], Path(bench_dir) / f"{run['method']}-s{run['seed']}")
            for run in results["runs"]]


def flat_row(method: str, seed: int, report: dict[str, Any]) -> dict[str, Any]:
    """A run's report as a row for `summary_table` / `test_table` (keys joined by '.')."""
    numbers = {k: v for k, v in flatten(report).items() if isinstance(v, int | float)}
    return {"method": method, "seed": seed, "metrics": numbers}


def summary_table(runs: Sequence[dict[str, Any]], rows: Sequence[str],
                  columns: Sequence[tuple[str, str]], lower: Sequence[str] = ()
                  ) -> tuple[dict[str, Any], list[str]]:
    """Mean ± std over seeds of each column for each row (a method, or method/score); the
    best mean per column (lowest for the keys in `lower`) in bold."""
    summary = {row: {key: mean_std(list(values(runs, row, key).values())) for key, _ in columns}
               for row in rows}
    return summary, markdown(["row", "n", *(label for _, label in columns)],
                             summary_rows(summary, columns, lower))


def test_table(runs: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]],
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
                 sections: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> Path:
    """`name`.json and `name`.md in `out`: per section (heading, rows, columns, lower, pairs)
    a `summary_table` and, when it has pairs, a `test_table`; returns the Markdown's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    write_json(out / f"{name}.json", record)
    return write_text(out / f"{name}.md", "\n".join(lines))


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every capability script takes: the benchmark, --out, --threads and
    --recompute."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("bench", help="a `dgc bench` folder (results.json and its runs)")
    parser.add_argument("--out", help="folder for the tables (default: the bench folder)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--recompute", action="store_true",
                        help="score every run again, even one whose report is newer than its "
                             "best.pt")
    return parser


def reference_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(`dgc`, m) for every other method m, when `dgc` is among them."""
    return [(REFERENCE, m) for m in methods if m != REFERENCE and REFERENCE in methods]


def run_script(name: str, body: Callable[[argparse.Namespace], Path],
               parser: argparse.ArgumentParser) -> None:
    """Parse the arguments, run `body`, print the Markdown it wrote; a DGCError exits with
    its one-line message."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        print(body(args).read_text())
    except DGCError as error:
        sys.exit(f"{name}: {error}")
