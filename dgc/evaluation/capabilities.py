"""What a run offers beyond its decision, one run at a time: `dgc evaluate RUN --calibration |
--prior-shift | --ood SOURCES` writes one JSON each into the run directory (`calibration.json`,
`prior-shift.json`, `ood-<sources>.json` (`ood_file`); a DGC run asked to predict otherwise than
its configuration adds the settings, e.g. `calibration-bayes-s10.json`) and a Markdown summary of
it."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgc.config import PredictConfig
from dgc.core.errors import DGCError
from dgc.core.io import write_json
from dgc.core.tables import markdown
from dgc.data import ImbalancedData
from dgc.evaluation.calibration import CALIBRATIONS, calibration_report
from dgc.evaluation.ood import SOURCES, ood_images, ood_report
from dgc.evaluation.scoring import SplitScores, score_splits
from dgc.evaluation.shift import shift_report
from dgc.run.finished import Run, load_run, recorded_data

CALIBRATION_FILE = "calibration.json"
SHIFT_FILE = "prior-shift.json"
CALIBRATION_METRICS = (("ece", "ECE"), ("classwise_ece", "classwise ECE"), ("brier", "Brier"),
                       ("nll", "NLL"))
SHIFTS = ("balanced", "train", "reversed", "dirichlet")
DETECTION = (("auroc", "AUROC"), ("aupr", "AUPR"), ("fpr95", "FPR@95TPR"))
NO_VALIDATION = ("As predicted only: this run has no validation split to fit a calibration on "
                 "(train.val_fraction = 0).")


def with_prediction(run: Run, predict: PredictConfig) -> tuple[Run, str]:
    """The run predicting with `predict`, and the suffix its files then carry (`Family.suffix`),
    so that no result under other settings is replaced."""
    suffix = run.family.suffix(run.cfg.predict, predict)
    if not suffix:
        return run, ""
    return dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, predict=predict)), suffix


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
    """The images of each named built-in novel set (`dgc.evaluation.ood.SOURCES`)."""
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
    """The name of a run's report on these novel sets, at most `limit` images of each:
    ood-<names>[-n<limit>]<suffix>.json. A built-in set is named as such, a file or folder
    `file-<stem>-<hash of its absolute path>`, so that it never takes the name of a built-in
    set or of another file of the same stem."""
    names = [name if name in SOURCES else "file-{}-{}".format(Path(name).stem, hashlib.sha256(
        str(Path(name).resolve()).encode()).hexdigest()[:8]) for name in sources]
    cap = f"-n{limit}" if limit is not None else ""
    return f"ood-{'-'.join(names)}{cap}{suffix}.json"


def parse_sources(text: str) -> list[str]:
    """'heldout,noise' → ['heldout', 'noise'] (names or paths, in order, without repeats)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise DGCError(f"--ood needs a comma-separated list of novel sets: {', '.join(SOURCES)}"
                       ", or .npy/.npz files or image folders")
    return list(dict.fromkeys(names))


def calibration_markdown(report: dict[str, Any]) -> str:
    rows = [[name, f"{report[name]['temperature']:.3g}",
             *(f"{report[name][key]:.4f}" for key, _ in CALIBRATION_METRICS)]
            for name in report]
    return "\n".join(markdown(["calibration (fitted on validation)", "T",
                               *(label for _, label in CALIBRATION_METRICS)], rows)) + unfitted(
        report)


def unfitted(report: dict[str, Any]) -> str:
    """A note under a table of a run without a validation split, which has no calibration."""
    return "" if "temperature" in report else f"\n\n{NO_VALIDATION}"


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
    return "\n".join(markdown(header, rows)) + unfitted(report["balanced"])


def ood_markdown(report: dict[str, Any]) -> str:
    rows = [[source, score, *(f"{detection[score][key]:.4f}" for key, _ in DETECTION)]
            for source, detection in report["sources"].items() for score in report["scores"]]
    return "\n".join(markdown(["novel set", "score", *(label for _, label in DETECTION)], rows))
