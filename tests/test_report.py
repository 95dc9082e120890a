"""Tests for dgc.reporting.report and the `report` / `sample` commands, on tiny digits runs.

`dgc train` writes the report of its run unless --no-report; the report is rebuilt from the
run's files alone, links only files that exist, and the numbers beside its figures are the run's.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import dgc.cli
import dgc.reporting.report
from dgc.cli import main
from dgc.core.errors import DGCError
from dgc.data import FASHION_NAMES, load_imbalanced
from dgc.reporting import plots
from dgc.reporting.report import (
    FIGURES,
    REPORT,
    class_index,
    load_test_predictions,
    sample_class,
    training_split,
)
from dgc.run.finished import load_run
from dgc.run.folder import PREDICTIONS

NAMES = [str(i) for i in range(10)]
DGC_FIGURES = ("recall_vs_count", "confusion", "reliability", "curves", "generated",
               "reconstructions", "tsne", "trace")
FAST = ["--exp", "digits", "--seed", "1", "--samples", "1", "--quiet",
        "--set", "train.pretrain_batch=200"]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def small_tsne() -> Iterator[None]:
    """A t-SNE of at most 30 images per class keeps these tests fast."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dgc.reporting.report, "TSNE_PER_CLASS", 30)
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dgc train` of a 3-epoch digits DGC run, which writes its report at the end."""
    out = tmp_path_factory.mktemp("report") / "run"
    code, stdout, stderr = run_cli(["train", *FAST, "--epochs", "3", "--out", str(out)])
    assert code == 0, stderr
    assert f"report written to {out / REPORT}" in stdout
    return out


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def linked(report: Path) -> list[str]:
    """Every target of a Markdown link or image in the report."""
    return re.findall(r"\]\(([^)\s]+)\)", report.read_text())


def figure_data(run_dir: Path) -> dict[str, Any]:
    return {p.name: read(p) for p in sorted((run_dir / FIGURES).glob("*.json"))}


def test_report_links_only_files_that_exist(run_dir: Path) -> None:
    targets = linked(run_dir / REPORT)
    for name in DGC_FIGURES:
        assert f"{FIGURES}/{name}.png" in targets
        assert f"{FIGURES}/{name}.json" in targets
    assert all((run_dir / t).is_file() for t in targets), targets
    for name in DGC_FIGURES:
        with Image.open(run_dir / FIGURES / f"{name}.png") as image:
            assert image.size == plots.pixel_size(name)


def test_report_shows_the_metrics(run_dir: Path) -> None:
    text = (run_dir / REPORT).read_text()
    metrics = read(run_dir / "metrics.json")
    assert text.startswith("# Report: dgc on digits, seed 1")
    assert f"| ACSA     | {metrics['acsa']:.4f} |" in text
    assert "3 of 3 epochs trained" in text and "validation" in text


def test_report_figures_hold_the_runs_numbers(run_dir: Path) -> None:
    run = load_run(run_dir)
    split = training_split(run, load_imbalanced("digits", 1))
    history, metrics = read(run_dir / "history.json"), read(run_dir / "metrics.json")
    figures = run_dir / FIGURES

    recall = read(figures / "recall_vs_count.json")
    assert recall["recall"] == [r["recall"] for r in metrics["per_class"]]
    assert recall["train_counts"] == [r["train_count"] for r in metrics["per_class"]]
    assert recall["acsa"] == pytest.approx(metrics["acsa"])
    confusion = read(figures / "confusion.json")
    assert np.array(confusion["counts"]).sum(1).tolist() == [50] * 10
    assert np.allclose(np.diag(confusion["normalised"]), recall["recall"])

    reliability = read(figures / "reliability.json")
    calibration = read(run_dir / "calibration.json")  # written by the report, as by evaluate
    assert list(reliability) == ["none", "temperature", "bcts"]
    assert reliability["none"]["temperature"] == 1.0
    for name, panel in reliability.items():
        assert sum(panel["reliability"]["count"]) == 500
        assert panel["ece"] == calibration[name]["ece"]

    curves = read(figures / "curves.json")
    for term, values in curves["terms"].items():
        assert values == [r[term] for r in history["epochs"]]
    assert curves["validation"]["acsa"] == [r["val"]["acsa"] for r in history["epochs"]]

    generated = read(figures / "generated.json")
    assert [row["class"] for row in generated["rows"]] == NAMES
    for c, row in enumerate(generated["rows"]):
        assert len(row["images"]) == 10 and len(row["images"][0]) == 64
        assert all(split.y[i] == c for i in row["train_indices"])
        assert min(min(image) for image in row["images"]) >= 0
        assert max(max(image) for image in row["images"]) <= 255

    reconstructions = read(figures / "reconstructions.json")
    assert reconstructions["labels"] == list(range(10))
    assert np.array(reconstructions["reconstructions"]).shape == (10, 64)

    tsne = read(figures / "tsne.json")
    expected = np.minimum(np.bincount(split.y, minlength=10), 30)
    assert tsne["counts"] == expected.tolist()
    assert tsne["labels"] == split.y[tsne["train_indices"]].tolist()
    assert np.isfinite(tsne["inputs"]).all() and np.isfinite(tsne["latent"]).all()

    trace = read(figures / "trace.json")
    assert [p["train_index"] for p in trace["points"]] == history["trace_points"]
    assert [p["class"] for p in trace["points"]] == [NAMES[split.y[i]]
                                                     for i in history["trace_points"]]
    assert trace["points"][1]["sigma"] == [r["trace"]["sigma"][1] for r in history["epochs"]]


def test_missing_predictions_are_made_again(run_dir: Path) -> None:
    run = load_run(run_dir)
    data = load_imbalanced("digits", 1)
    with np.load(run_dir / PREDICTIONS) as saved:
        before = {k: saved[k] for k in saved.files}
    (run_dir / PREDICTIONS).unlink()
    y_true, y_pred = load_test_predictions(run_dir, run, data, run_dir)
    assert np.array_equal(y_true, data.y_test) and np.array_equal(y_pred, before["y_pred"])
    with np.load(run_dir / PREDICTIONS) as saved:
        assert all(np.array_equal(saved[k], before[k]) for k in before)


def test_report_command_rebuilds_the_same_report(run_dir: Path) -> None:
    before, text = figure_data(run_dir), (run_dir / REPORT).read_text()
    code, stdout, stderr = run_cli(["report", str(run_dir), "--quiet"])
    assert code == 0, stderr
    assert "report written" in stdout
    assert figure_data(run_dir) == before
    assert (run_dir / REPORT).read_text() == text


def test_sample_command(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "nines.npz"
    # class 9 has 5 training images after the validation split: 7 draws reuse some of them
    code, stdout, stderr = run_cli(["sample", str(run_dir), "--class", "9", "--n", "7",
                                    "--out", str(out)])
    assert code == 0, stderr
    assert "7 images of class 9" in stdout
    with np.load(out, allow_pickle=False) as saved:
        assert saved["x"].shape == (7, 8, 8, 1) and saved["x"].dtype == np.uint8
        assert str(saved["class_name"]) == "9"
        sources = saved["source_indices"]
    split = training_split(load_run(run_dir), load_imbalanced("digits", 1))
    assert (split.y[sources] == 9).all()
    with Image.open(out.with_suffix(".png")) as grid:
        assert grid.size == plots.pixel_size("grid")
    images, name, _ = sample_class(run_dir, "9", 7)
    assert name == "9" and np.array_equal(images, np.load(out)["x"])  # seeded by the run
    with pytest.MonkeyPatch.context() as patch:  # generated a chunk at a time, deterministically
        patch.setattr(dgc.reporting.report, "SAMPLE_CHUNK", 3)
        chunked, _, chunked_sources = sample_class(run_dir, "9", 7)
        assert np.array_equal(chunked, sample_class(run_dir, "9", 7)[0])
    assert chunked.shape == images.shape and np.array_equal(chunked_sources, sources)


def test_sample_refuses_bad_requests(run_dir: Path, tmp_path: Path) -> None:
    code, _, stderr = run_cli(["sample", str(run_dir), "--class", "Sandal", "--n", "3",
                               "--out", str(tmp_path / "s.npz")])
    assert code == 2
    assert "no class 'Sandal'" in stderr and "'0', '1'" in stderr
    code, _, stderr = run_cli(["sample", str(run_dir), "--class", "3", "--n", "3",
                               "--out", str(tmp_path / "s.png")])
    assert code == 2 and ".npz" in stderr
    with pytest.raises(DGCError, match="positive integer"):
        sample_class(run_dir, "3", 0)
    assert not list(tmp_path.iterdir())


def test_class_index() -> None:
    assert class_index(FASHION_NAMES, "Sandal") == 5
    assert class_index(FASHION_NAMES, "ankle boot") == 9
    with pytest.raises(DGCError, match="its classes are 'T-shirt/top'"):
        class_index(FASHION_NAMES, "Sneakers")


def test_no_report_and_a_classifier_report(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-report skips the report; a baseline's report has only the figures that apply."""
    out = tmp_path / "ce"

    def no_report(*_: Any, **__: Any) -> None:
        raise AssertionError("--no-report still wrote a report")

    with monkeypatch.context() as patch:
        patch.setattr(dgc.cli, "write_report", no_report)
        code, _, stderr = run_cli(["train", *FAST, "--method", "ce", "--epochs", "1",
                                   "--no-report", "--out", str(out)])
    assert code == 0, stderr
    assert not (out / REPORT).exists()
    code, _, stderr = run_cli(["report", str(out), "--quiet"])
    assert code == 0, stderr
    targets = linked(out / REPORT)
    assert sorted(Path(t).stem for t in targets if t.endswith(".png")) == [
        "confusion", "curves", "recall_vs_count", "reliability"]
    assert all((out / t).is_file() for t in targets)
    code, _, stderr = run_cli(["sample", str(out), "--class", "1", "--n", "2",
                               "--out", str(tmp_path / "s.npz")])
    assert code == 2 and "classifier" in stderr


def test_a_run_without_validation_reports_and_evaluates(tmp_path: Path) -> None:
    """`--val-fraction 0` is allowed, yet the report after training, `evaluate --calibration
    / --prior-shift` and `dgc report` crashed on the empty split (issue 34): calibration is
    now as predicted only, said so, and the report has no fitted curves."""
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(["train", *FAST, "--epochs", "1", "--val-fraction", "0",
                                    "--out", str(out)])
    assert code == 0, stderr
    text = (out / REPORT).read_text()
    assert "As predicted only: this run has no validation split to fit a calibration on" in text
    assert "evaluated weights: epoch 1 (the last; no validation split)" in text
    assert list(read(out / "calibration.json")) == ["none"]
    assert list(read(out / FIGURES / "reliability.json")) == ["none"]
    (out / "calibration.json").unlink()
    code, stdout, stderr = run_cli(["evaluate", str(out), "--calibration", "--prior-shift"])
    assert code == 0, stderr
    assert list(read(out / "calibration.json")) == ["none"]
    assert list(read(out / "prior-shift.json")["balanced"]) == ["size", "prior", "none"]
    assert "| balanced | none |" in stdout and stdout.count("As predicted only: this run") == 2
    code, _, stderr = run_cli(["report", str(out), "--quiet"])
    assert code == 0, stderr
    assert (out / REPORT).read_text() == text
