"""Tests for dgc.reporting.plots: every figure function on the data of one tiny trained digits run.

Each figure must come out at its fixed pixel size, and the numbers saved beside it must be the
ones it was given (right classes, right counts, finite values, curves equal to history.json).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from dgc.config import RunConfig
from dgc.core.errors import DGCError
from dgc.core.metrics import confusion_matrix
from dgc.data import load_imbalanced
from dgc.nn.generation import decode, generate, posterior
from dgc.nn.model import tensor_to_images
from dgc.reporting import plots
from dgc.reporting.report import TrainingSplit, training_split, tsne
from dgc.run.finished import Run, load_run, to_train_data
from dgc.run.train import train_run

NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory,
            digits_config: Callable[..., RunConfig]) -> tuple[Path, Run, TrainingSplit]:
    """A 2-epoch digits run (LVO on, 10 % validation split), loaded back, with its training
    split."""
    out = tmp_path_factory.mktemp("plots") / "run"
    train_run(digits_config(out, "train.epochs=2", "train.val_fraction=0.1"), progress=False,
              log=lambda _: None)
    run = load_run(out)
    data = load_imbalanced("digits", 1)
    return out, run, training_split(run, data)


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def check_png(path: Path, name: str, expected: tuple[int, int]) -> None:
    assert plots.pixel_size(name) == expected
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == expected
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5, "the figure is blank"


def all_finite(values: Any) -> bool:
    return bool(np.all(np.isfinite(np.asarray(values, dtype=float))))


def test_training_split_matches_the_trained_indices(trained) -> None:
    run_dir, run, split = trained
    history = read(run_dir / "history.json")
    assert split.x.dtype == np.uint8 and split.x.shape[1:] == (8, 8, 1)
    # 10 % of every class is held out for validation, the rest is what training indexed.
    assert len(split.y) < int(run.train_counts.sum())
    first, last = history["trace_points"]
    counts = np.bincount(split.y)
    assert split.y[first] == np.argmax(counts) and split.y[last] == np.argmin(counts)


def test_training_split_is_what_training_saw(trained) -> None:
    """Taken from split_validation's rows, it equals the training tensors turned back to uint8."""
    _, run, split = trained
    train = to_train_data(load_imbalanced("digits", 1), run.cfg)
    np.testing.assert_array_equal(split.x, tensor_to_images(train.x))
    np.testing.assert_array_equal(split.y, train.y.numpy())


def test_generated(trained, tmp_path: Path) -> None:
    _, run, split = trained
    samples, sources = [], []
    for c in range(10):
        index = np.flatnonzero(split.y == c)[:4]
        sources.append(index)
        samples.append(generate(run.model, split.x[index], c, seed=c))
    png = tmp_path / "generated.png"
    plots.plot_generated(samples, NAMES, png, sources)
    check_png(png, "generated", (800, 800))
    data = read(plots.data_path(png))
    assert data["class_names"] == NAMES and data["image_shape"] == [8, 8, 1]
    assert [row["class"] for row in data["rows"]] == NAMES
    for row, sample, index in zip(data["rows"], samples, sources, strict=True):
        assert np.array_equal(np.array(row["images"]).reshape(sample.shape), sample)
        assert row["train_indices"] == index.tolist()
    assert all(sample.dtype == np.uint8 and sample.shape == (4, 8, 8, 1) for sample in samples)


def test_generate_is_seeded_and_samples_the_posterior(trained) -> None:
    _, run, split = trained
    images = split.x[np.flatnonzero(split.y == 3)[:5]]
    same = generate(run.model, images, 3, seed=7)
    assert np.array_equal(same, generate(run.model, images, 3, seed=7))
    mu, sigma = posterior(run.model, images, np.full(5, 3), "cpu")
    assert mu.shape == sigma.shape == (5, run.cfg.model.latent_dim)
    assert bool((sigma > 0).all())
    noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(same, decode(run.model, mu + sigma * noise))  # z = μ + σ ε, decoded


def test_reconstructions(trained, tmp_path: Path) -> None:
    _, run, split = trained
    index = np.array([np.flatnonzero(split.y == c)[0] for c in range(10)])
    mu, _ = posterior(run.model, split.x[index], split.y[index], "cpu")
    recon = decode(run.model, mu)
    png = tmp_path / "reconstructions.png"
    plots.plot_reconstructions(split.x[index], recon, split.y[index], NAMES, png)
    check_png(png, "reconstructions", (1000, 280))
    data = read(plots.data_path(png))
    assert data["labels"] == list(range(10))
    assert np.array_equal(np.array(data["originals"]).reshape(10, 8, 8, 1), split.x[index])
    assert np.array_equal(np.array(data["reconstructions"]).reshape(10, 8, 8, 1), recon)
    with pytest.raises(DGCError, match="originals"):
        plots.plot_reconstructions(split.x[index], recon[:3], split.y[index], NAMES, png)


def test_tsne(trained, tmp_path: Path) -> None:
    _, run, split = trained
    index = np.concatenate([np.flatnonzero(split.y == c)[:6] for c in range(10)])
    mu, _ = posterior(run.model, split.x[index], split.y[index], "cpu")
    inputs_2d = tsne(split.x[index].reshape(len(index), -1) / 255.0, seed=1)
    latent_2d = tsne(mu.numpy(), seed=1)
    png = tmp_path / "tsne.png"
    plots.plot_tsne(inputs_2d, latent_2d, split.y[index], NAMES, png, index)
    check_png(png, "tsne", (1300, 600))
    data = read(plots.data_path(png))
    assert data["class_names"] == NAMES
    assert data["counts"] == np.bincount(split.y[index], minlength=10).tolist()
    assert data["labels"] == split.y[index].tolist() and data["train_indices"] == index.tolist()
    for key in ("inputs", "latent"):
        assert np.array(data[key]).shape == (len(index), 2) and all_finite(data[key])
    assert np.allclose(data["latent"], latent_2d)
    with pytest.raises(DGCError, match="t-SNE"):
        plots.plot_tsne(inputs_2d[:5], latent_2d, split.y[index], NAMES, png)


def test_trace(trained, tmp_path: Path) -> None:
    run_dir, _, split = trained
    history = read(run_dir / "history.json")
    classes = [NAMES[int(split.y[i])] for i in history["trace_points"]]
    png = tmp_path / "trace.png"
    plots.plot_trace(history, classes, png)
    check_png(png, "trace", (1100, 400))
    data = read(plots.data_path(png))
    assert data["epoch"] == [1, 2]
    for j, point in enumerate(data["points"]):
        assert point["train_index"] == history["trace_points"][j]
        assert point["class"] == classes[j]
        assert point["mu"] == [r["trace"]["mu"][j] for r in history["epochs"]]
        assert point["sigma"] == [r["trace"]["sigma"][j] for r in history["epochs"]]
        assert all_finite(point["mu"]) and min(point["sigma"]) > 0
    old = {**history, "epochs": [{k: v for k, v in r.items() if k != "trace"}
                                 for r in history["epochs"]]}
    with pytest.raises(DGCError, match="trace"):
        plots.plot_trace(old, classes, tmp_path / "old.png")


def test_training_curves_match_history(trained, tmp_path: Path) -> None:
    run_dir, _, _ = trained
    history = read(run_dir / "history.json")
    png = tmp_path / "curves.png"
    plots.plot_training_curves(history, png)
    check_png(png, "curves", (1600, 800))
    data = read(plots.data_path(png))
    assert data["epoch"] == [1, 2]
    assert list(data["terms"]) == ["loss", "recon", "mmd", "cls", "head_cls", "lvo"]
    for term, values in data["terms"].items():
        assert values == [r[term] for r in history["epochs"]]
        assert all_finite(values)
    val = data["validation"]
    assert val["epoch"] == [1, 2]
    for key in ("acsa", "f_macro", "g_macro"):
        assert val[key] == [r["val"][key] for r in history["epochs"]]


def test_training_curves_without_validation_and_with_new_terms(tmp_path: Path) -> None:
    history = {"epochs": [{"epoch": e, "lr": 1e-3, "loss": 3.0 / e, "lvo": 2.5 / e,
                           "focal": 0.5 / e, "seconds": 1.0} for e in (1, 2, 3)]}
    png = tmp_path / "curves.png"
    data = plots.plot_training_curves(history, png)
    check_png(png, "curves", (1600, 800))
    assert list(data["terms"]) == ["loss", "lvo", "focal"]  # known terms first, then others
    assert data["terms"]["focal"] == [0.5, 0.25, 0.5 / 3]
    assert data["validation"] == {"epoch": [], "acsa": [], "f_macro": [], "g_macro": []}
    with pytest.raises(DGCError, match="no epochs"):
        plots.plot_training_curves({"epochs": []}, png)


def test_confusion_and_recall(trained, tmp_path: Path) -> None:
    run_dir, run, _ = trained
    metrics = read(run_dir / "metrics.json")
    with np.load(run_dir / "predictions.npz") as saved:
        y_true, y_pred, probs = saved["y_true"], saved["y_pred"], saved["probs"]
    assert np.array_equal(y_pred, probs.argmax(1))
    counts = confusion_matrix(y_true, y_pred, 10)
    png = tmp_path / "confusion.png"
    plots.plot_confusion(counts, NAMES, png)
    check_png(png, "confusion", (800, 700))
    data = read(plots.data_path(png))
    assert data["counts"] == counts.tolist()
    assert np.array(data["counts"]).sum(1).tolist() == [50] * 10  # digits: 50 test images each
    assert np.allclose(np.array(data["normalised"]).sum(1), 1.0)
    assert np.allclose(np.diag(data["normalised"]), [r["recall"] for r in metrics["per_class"]])

    recall = [r["recall"] for r in metrics["per_class"]]
    png = tmp_path / "recall.png"
    plots.plot_recall_vs_count(run.train_counts, recall, NAMES, png)
    check_png(png, "recall_vs_count", (800, 500))
    data = read(plots.data_path(png))
    assert data["train_counts"] == [120, 90, 70, 50, 35, 25, 18, 12, 8, 6]
    assert data["recall"] == recall and data["class_names"] == NAMES
    assert data["acsa"] == pytest.approx(metrics["acsa"])
    with pytest.raises(DGCError, match="one training count"):
        plots.plot_recall_vs_count(run.train_counts[:3], recall, NAMES, png)
    # a class without test images is not drawn at recall 0, nor averaged into ACSA
    absent = [None, *recall[1:]]
    plots.plot_recall_vs_count(run.train_counts, absent, NAMES, png)
    data = read(plots.data_path(png))
    assert data["recall"] == absent and data["acsa"] == pytest.approx(np.mean(recall[1:]))


def test_confusion_of_a_class_absent_from_the_test_set(tmp_path: Path) -> None:
    counts = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 4]])
    data = plots.plot_confusion(counts, ["a", "b", "c"], tmp_path / "c.png")
    assert data["normalised"][1] == [0.0, 0.0, 0.0]
    assert data["normalised"][0] == [0.75, 0.25, 0.0]


def test_sweep_plot(tmp_path: Path) -> None:
    summary = [{"value": v, "n": 2, **{k: {"mean": 0.5 + v / 10, "std": 0.01}
                                       for k in ("acsa", "f_macro", "g_macro", "r_mi", "p_ma")}}
               for v in (0.2, 0.6, 1.0)]
    record = {"exp": "digits", "method": "dgc", "param": "sampling-rate", "seeds": [1, 2],
              "summary": summary}
    png = tmp_path / "sweep.png"
    plots.plot_sweep(record, png)
    check_png(png, "sweep", (800, 500))
    assert read(plots.data_path(png)) == record
    with pytest.raises(DGCError, match="no finished runs"):
        plots.plot_sweep({**record, "summary": []}, png)


def test_image_grid_and_colours(trained, tmp_path: Path) -> None:
    _, _, split = trained
    png = tmp_path / "grid.png"
    plots.render_image_grid(split.x[:130], "130 digits", png)
    check_png(png, "grid", (800, 800))
    assert not plots.data_path(png).exists()
    tiled = plots.mosaic([split.x[:3], split.x[3:5]], 3)
    assert tiled.shape == (2 * 9 - 1, 3 * 9 - 1, 1)
    assert np.array_equal(tiled[9:17, 9:17], split.x[4])
    assert (tiled[8] == 255).all() and (tiled[9:17, 18:] == 255).all()  # gaps and empty slot
    with pytest.raises(DGCError, match="uint8"):
        plots.render_image_grid(split.x.astype(np.float32), "floats", png)
    for n in (2, 10, 20, 30):
        colours = plots.class_colours(n)
        assert len(set(colours)) == n and all(math.isfinite(v) for c in colours for v in c)


def test_the_curves_plot_losses_not_the_step_count() -> None:
    """history.json's records carry the optimiser `step` (for metrics.csv); it is no loss."""
    history = {"epochs": [{"epoch": 1, "step": 8, "lr": 1e-3, "seconds": 1.0, "loss": 2.0,
                           "recon": 1.0, "cls": 1.0, "val": {"acsa": 0.5}}]}
    assert "step" not in plots.loss_terms(history)
    assert set(plots.loss_terms(history)) == {"loss", "recon", "cls"}
