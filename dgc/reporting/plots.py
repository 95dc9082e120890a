"""Figures of a run (the paper's Figures 4–7 and the diagnostics around them) on matplotlib's Agg
canvas.

Every `plot_*` writes a PNG of a fixed pixel size (`SIZES` × `DPI`) and the plotted numbers beside
it as JSON (`data_path`), so a figure can be checked and re-drawn without the model: they take plain
arrays and dicts, never a model (`dgc.reporting.report` computes what to plot). A class keeps one
colour in every figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dgc.core.errors import DGCError
from dgc.core.io import atomic_write, make_folder, write_json

DPI = 100
# Figure sizes in inches; a PNG is exactly SIZES[name] × DPI pixels.
SIZES: dict[str, tuple[float, float]] = {
    "generated": (8.0, 8.0),
    "reconstructions": (10.0, 2.8),
    "tsne": (13.0, 6.0),
    "trace": (11.0, 4.0),
    "curves": (16.0, 8.0),
    "confusion": (8.0, 7.0),
    "recall_vs_count": (8.0, 5.0),
    "sweep": (8.0, 5.0),
    "bench": (11.0, 5.0),
    "grid": (8.0, 8.0),
    "reliability": (12.0, 4.5),
}
# Loss terms of history.json in the order they are drawn, with what each one is.
LOSS_TERMS = {
    "loss": "total objective L (joint step)",
    "recon": "reconstruction 0.5·||x − G_X(z)||²",
    "mmd": "IMQ-MMD of the codes to N(0, I)",
    "prior_kl": "KL of q(z|x,y) to the learned mixture prior",
    "cls": "cross-entropy term of L",
    "head_cls": "label-head step on oversampled codes",
    "lvo": "extra encoder (LVO) step: L",
}
VALIDATION_METRICS = {"acsa": "ACSA", "f_macro": "F_macro", "g_macro": "G_macro"}
NOT_LOSSES = {"epoch", "step", "lr", "seconds", "trace", "val"}


def pixel_size(name: str) -> tuple[int, int]:
    """(width, height) in pixels of the PNGs drawn with `SIZES[name]`."""
    width, height = SIZES[name]
    return round(width * DPI), round(height * DPI)


def data_path(png: str | Path) -> Path:
    """Where the numbers plotted in `png` are saved."""
    return Path(png).with_suffix(".json")


def class_colours(n_classes: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class: tab10 or tab20, a sampled hue wheel beyond twenty."""
    if n_classes <= 10:
        return [colormaps["tab10"](i) for i in range(n_classes)]
    if n_classes <= 20:
        return [colormaps["tab20"](i) for i in range(n_classes)]
    return [colormaps["hsv"](i / n_classes) for i in range(n_classes)]


def new_figure(name: str) -> Figure:
    figure = Figure(figsize=SIZES[name], dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str | Path, data: Any) -> Any:
    """Write the plotted numbers, then the PNG (at exactly the figure's size), atomically;
    returns the numbers, which every `plot_*` returns."""
    path = Path(path)
    make_folder(path.parent)
    if data is not None:
        write_json(data_path(path), data)
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=DPI))
    return data


def check_images(images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DGCError(f"{what} must be uint8 images (N, H, W, 1 or 3), got "
                       f"{images.dtype} {images.shape}")
    return images


def mosaic(rows: Sequence[np.ndarray], columns: int, pad: int = 1) -> np.ndarray:
    """Tile rows of uint8 images (each (n ≤ columns, H, W, C)) into one image, white between."""
    height, width, channels = rows[0].shape[1:]
    out = np.full((len(rows) * (height + pad) - pad, columns * (width + pad) - pad, channels),
                  255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row[:columns]):
            top, left = r * (height + pad), c * (width + pad)
            out[top:top + height, left:left + width] = image
    return out


def show_mosaic(ax: Axes, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.tick_params(length=0)


def image_record(images: np.ndarray) -> list[list[int]]:
    """Images as JSON: one flat list of pixel values (H·W·C, row-major) per image."""
    return images.reshape(len(images), -1).astype(int).tolist()


def plot_generated(samples: Sequence[np.ndarray], class_names: Sequence[str], path: str | Path,
                   source_indices: Sequence[Sequence[int] | np.ndarray] | None = None
                   ) -> dict[str, Any]:
    """One row per class of images decoded from codes z ~ q(z | x, y = c) (paper Fig. 6)."""
    if len(samples) != len(class_names):
        raise DGCError(f"{len(samples)} rows of samples for {len(class_names)} classes")
    samples = [check_images(s, f"samples of class {name}") for s, name in
               zip(samples, class_names, strict=True)]
    columns = max(len(s) for s in samples)
    height = samples[0].shape[1]
    figure = new_figure("generated")
    ax = figure.add_subplot()
    show_mosaic(ax, mosaic(samples, columns))
    ax.set_yticks([r * (height + 1) + (height - 1) / 2 for r in range(len(samples))],
                  list(class_names))
    ax.set_xticks([])
    ax.set_title("Generated images: z ~ q(z | x, y = class) of training images, decoded")
    data = {"class_names": list(class_names), "image_shape": list(samples[0].shape[1:]),
            "rows": [{"class": name, "images": image_record(s),
                      **({"train_indices": list(map(int, source_indices[i]))}
                         if source_indices is not None else {})}
                     for i, (name, s) in enumerate(zip(class_names, samples, strict=True))]}
    return save(figure, path, data)


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray,
                         labels: Sequence[int] | np.ndarray, class_names: Sequence[str],
                         path: str | Path) -> dict[str, Any]:
    """Training images (top row) above their decoded posterior means G_X(μ) (bottom row)."""
    originals = check_images(originals, "originals")
    reconstructions = check_images(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape or len(labels) != len(originals):
        raise DGCError(f"{len(originals)} originals {originals.shape[1:]}, {len(reconstructions)} "
                       f"reconstructions {reconstructions.shape[1:]} and {len(labels)} labels")
    height, width = originals.shape[1:3]
    figure = new_figure("reconstructions")
    ax = figure.add_subplot()
    show_mosaic(ax, mosaic([originals, reconstructions], len(originals)))
    ax.set_yticks([(height - 1) / 2, height + 1 + (height - 1) / 2],
                  ["original", "reconstruction"])
    ax.set_xticks([c * (width + 1) + (width - 1) / 2 for c in range(len(labels))],
                  [class_names[int(y)] for y in labels], fontsize=8)
    ax.set_title("Reconstructions: training images and G_X(μ) of their codes q(z | x, y)")
    data = {"class_names": list(class_names), "labels": [int(y) for y in labels],
            "image_shape": list(originals.shape[1:]), "originals": image_record(originals),
            "reconstructions": image_record(reconstructions)}
    return save(figure, path, data)


def scatter_classes(ax: Axes, points: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str]) -> None:
    for c, colour in enumerate(class_colours(len(class_names))):
        mask = labels == c
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=8, color=colour,
                       label=f"{class_names[c]} ({int(mask.sum())})", alpha=0.85, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_tsne(inputs_2d: np.ndarray, latent_2d: np.ndarray,
              labels: Sequence[int] | np.ndarray, class_names: Sequence[str], path: str | Path,
              train_indices: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
    """t-SNE of raw inputs beside t-SNE of their latent means, coloured by class (paper Fig. 5)."""
    classes = np.asarray(labels, dtype=np.int64)
    inputs_2d, latent_2d = np.asarray(inputs_2d, float), np.asarray(latent_2d, float)
    if inputs_2d.shape != (len(classes), 2) or latent_2d.shape != (len(classes), 2):
        raise DGCError(f"t-SNE embeddings must be ({len(classes)}, 2), got {inputs_2d.shape} "
                       f"and {latent_2d.shape}")
    figure = new_figure("tsne")
    left, right = figure.subplots(1, 2)
    scatter_classes(left, inputs_2d, classes, class_names)
    left.set_title("t-SNE of the raw training images")
    scatter_classes(right, latent_2d, classes, class_names)
    right.set_title("t-SNE of their latent means μ of q(z | x, y)")
    right.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2,
                 title="class (points)")
    figure.suptitle(f"Training inputs and latent codes ({len(classes)} images, stratified "
                    "subsample)")
    data = {"class_names": list(class_names), "labels": classes.tolist(),
            "counts": np.bincount(classes, minlength=len(class_names)).tolist(),
            "inputs": inputs_2d.tolist(), "latent": latent_2d.tolist(),
            **({"train_indices": [int(i) for i in train_indices]}
               if train_indices is not None else {})}
    return save(figure, path, data)


def epoch_axis(ax: Axes) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_trace(history: dict[str, Any], point_classes: Sequence[str],
               path: str | Path) -> dict[str, Any]:
    """μ and σ of the first latent coordinate of two training points over epochs (paper Fig. 4):
    `history` is a run's history.json, its epochs' "trace" the values and its "trace_points"
    the two training-split indices, whose classes `point_classes` names."""
    records = [r for r in history["epochs"] if "trace" in r]
    if not records:
        raise DGCError("history.json holds no μ/σ trace; it was written by an older dgc")
    epochs = [int(r["epoch"]) for r in records]
    mu = np.array([r["trace"]["mu"] for r in records], dtype=float)
    sigma = np.array([r["trace"]["sigma"] for r in records], dtype=float)
    points = [int(i) for i in history["trace_points"]]
    figure = new_figure("trace")
    ax_mu, ax_sigma = figure.subplots(1, 2)
    for j, (index, name) in enumerate(zip(points, point_classes, strict=True)):
        label = f"training image {index} (class {name})"
        ax_mu.plot(epochs, mu[:, j], marker="o", markersize=3, label=label)
        ax_sigma.plot(epochs, sigma[:, j], marker="o", markersize=3, label=label)
    ax_mu.set_title("μ of latent coordinate 1")
    ax_sigma.set_title("σ of latent coordinate 1")
    if sigma.size and sigma.min() > 0 and sigma.max() > 10 * sigma.min():
        ax_sigma.set_yscale("log")
    for ax in (ax_mu, ax_sigma):
        epoch_axis(ax)
    ax_mu.legend(fontsize=8)
    figure.suptitle("Posterior q(z | x, y) of two training points during training")
    return save(figure, path, {"epoch": epochs, "points": [
        {"train_index": index, "class": name, "mu": mu[:, j].tolist(),
         "sigma": sigma[:, j].tolist()}
        for j, (index, name) in enumerate(zip(points, point_classes, strict=True))]})


def loss_terms(history: dict[str, Any]) -> list[str]:
    """Numeric per-epoch terms of history.json: the known ones first, then any others."""
    present: list[str] = []
    for record in history["epochs"]:
        for key, value in record.items():
            if key not in NOT_LOSSES and isinstance(value, int | float) and key not in present:
                present.append(key)
    return [t for t in LOSS_TERMS if t in present] + [t for t in present if t not in LOSS_TERMS]


def plot_training_curves(history: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Every loss term per epoch, and the periodic validation ACSA / F_macro / G_macro."""
    records = history["epochs"]
    if not records:
        raise DGCError("history.json holds no epochs; train the run first")
    epochs = [int(r["epoch"]) for r in records]
    terms = {t: [r.get(t) for r in records] for t in loss_terms(history)}
    validated = [r for r in records if "val" in r]
    validation = {"epoch": [int(r["epoch"]) for r in validated],
                  **{k: [r["val"][k] for r in validated] for k in VALIDATION_METRICS}}
    figure = new_figure("curves")
    columns = 4
    grid = figure.subplots(math.ceil((len(terms) + 1) / columns), columns, squeeze=False)
    axes = list(grid.flat)
    for ax, (term, values) in zip(axes, terms.items(), strict=False):
        xs = [e for e, v in zip(epochs, values, strict=True) if v is not None]
        ax.plot(xs, [v for v in values if v is not None], marker="o", markersize=3)
        ax.set_title(f"{term}: {LOSS_TERMS.get(term, 'per-epoch mean')}", fontsize=9)
        epoch_axis(ax)
    ax = axes[len(terms)]
    if validated:
        for key, label in VALIDATION_METRICS.items():
            ax.plot(validation["epoch"], validation[key], marker="o", markersize=3, label=label)
        ax.legend(fontsize=8)
        ax.set_title("validation split (the test set is scored only after training)",
                     fontsize=9)
    else:
        ax.text(0.5, 0.5, "no validation split in this run\n(train.val_fraction = 0)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_title("validation ACSA / F_macro / G_macro", fontsize=9)
    epoch_axis(ax)
    for ax in axes[len(terms) + 1:]:
        ax.set_axis_off()
    figure.suptitle("Training: per-epoch means of every loss term, and validation metrics")
    return save(figure, path, {"epoch": epochs, "terms": terms, "validation": validation})


def plot_confusion(counts: np.ndarray, class_names: Sequence[str],
                   path: str | Path) -> dict[str, Any]:
    """Test-set confusion matrix normalised by row: row c is where class c's images went."""
    counts = np.asarray(counts, dtype=np.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise DGCError(f"confusion matrix must be {n}×{n}, got {counts.shape}")
    totals = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure = new_figure("confusion")
    ax = figure.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for (i, j), value in np.ndenumerate(normalised):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 else "black")
    ax.set_xticks(range(n), list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), list(class_names), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Test confusion matrix, normalised by row (row = true class)")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return save(figure, path, {"class_names": list(class_names), "counts": counts.tolist(),
                               "normalised": normalised.tolist()})


def plot_recall_vs_count(train_counts: Sequence[int] | np.ndarray,
                         recall: Sequence[float | None] | np.ndarray,
                         class_names: Sequence[str], path: str | Path) -> dict[str, Any]:
    """Per-class test recall against the class's training count (log x), ACSA as a line. A class
    without test images has no recall (None or NaN): it is not drawn and, as in
    `dgc.core.metrics`, not part of ACSA; the legend names it."""
    counts = np.asarray(train_counts, dtype=np.int64)
    recalls = np.asarray([np.nan if r is None else r for r in recall], dtype=float)
    if counts.shape != (len(class_names),) or recalls.shape != counts.shape:
        raise DGCError(f"need one training count and one recall per class ({len(class_names)}),"
                       f" got {counts.shape} and {recalls.shape}")
    present = ~np.isnan(recalls)
    if not present.any():
        raise DGCError("no class has test images, so there is no recall to plot")
    figure = new_figure("recall_vs_count")
    ax = figure.add_subplot()
    colours = class_colours(len(class_names))
    for c in np.flatnonzero(present).tolist():
        ax.scatter(counts[c], recalls[c], s=40, color=colours[c], zorder=3)
        ax.annotate(class_names[c], (counts[c], recalls[c]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    acsa = float(recalls[present].mean())
    ax.axhline(acsa, color="grey", linestyle="--", label=f"ACSA {acsa:.4f}")
    if absent := [class_names[c] for c in np.flatnonzero(~present).tolist()]:
        ax.plot([], [], " ", label=f"no test images: {', '.join(absent)}")
    ax.set_xscale("log")
    ax.margins(x=0.12)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test recall")
    ax.set_title("Per-class test recall against training count")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    data = {"class_names": list(class_names), "train_counts": counts.tolist(),
            "recall": [float(r) if ok else None for r, ok in zip(recalls, present, strict=True)],
            "acsa": acsa}
    return save(figure, path, data)


def plot_reliability(report: dict[str, dict[str, Any]], path: str | Path) -> dict[str, Any]:
    """Reliability diagrams, one panel per calibration of `calibration_report`: accuracy against
    mean confidence per confidence bin, the diagonal being perfect."""
    figure = new_figure("reliability")
    axes = figure.subplots(1, len(report), squeeze=False)[0]
    for ax, (name, entry) in zip(axes, report.items(), strict=True):
        bins = entry["reliability"]
        edges = np.asarray(bins["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        accuracy = [np.nan if a is None else a for a in bins["accuracy"]]
        confidence = [np.nan if c is None else c for c in bins["confidence"]]
        ax.bar(centres, accuracy, width=width * 0.9, color="tab:blue", alpha=0.8,
               label="accuracy")
        ax.plot(centres, confidence, "o", color="tab:red", markersize=4,
                label="mean confidence")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-class probability")
        ax.set_title(f"{name}: ECE {entry['ece']:.3f}, Brier {entry['brier']:.3f}", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    axes[0].set_ylabel("share correct")
    figure.suptitle("Reliability on the test set, before and after calibration fitted on "
                    "validation" if len(report) > 1 else "Reliability on the test set, as "
                    "predicted (no validation split to fit a calibration on)")
    data = {name: {key: entry[key] for key in ("ece", "classwise_ece", "brier", "nll",
                                               "temperature", "reliability")}
            for name, entry in report.items()}
    return save(figure, path, data)


def plot_sweep(record: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """ACSA / F_macro / G_macro mean ± std against the swept value (paper Fig. 7). `record`,
    the sweep's summary (`dgc.bench.sweep`), is saved whole as the figure's data. A value
    without finished runs has no point, and one seed no error bar."""
    rows = [row for row in record["summary"] if row["n"]]
    if not rows:
        raise DGCError("the sweep has no finished runs to plot")
    values = [row["value"] for row in rows]
    figure = new_figure("sweep")
    ax = figure.add_subplot()
    for key, label in VALIDATION_METRICS.items():
        ax.errorbar(values, [row[key]["mean"] for row in rows],
                    yerr=[row[key]["std"] or 0.0 for row in rows], marker="o", capsize=4,
                    label=label)
    ax.set_xlabel(record["param"])
    ax.set_ylabel("test metric (mean ± std over seeds)")
    seeds = ", ".join(map(str, record["seeds"]))
    ax.set_title(f"{record['method']} on {record['exp']}: {record['param']} sweep "
                 f"(seeds {seeds})")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(figure, path, record)


def plot_bench(results: dict[str, Any], path: str | Path,
               published: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """The benchmark's Table 2 as grouped bars: ACSA, F_macro and G_macro per method, mean ± std
    over seeds, with the paper's published values (no error bars) after the measured methods.
    `results` is the benchmark's results.json; the plotted rows are saved as the figure's data."""
    rows = [{"method": method, "published": False,
             **{key: stat[key]["mean"] for key in VALIDATION_METRICS},
             **{f"{key}_std": stat[key]["std"] for key in VALIDATION_METRICS},
             "seeds": stat["acsa"]["n"]}
            for method, stat in results["summary"].items() if stat["acsa"]["n"]]
    if not rows:
        raise DGCError("the benchmark has no finished runs to plot")
    rows += [{"method": f"{name} (published)", "published": True,
              **{key: values.get(key) for key in VALIDATION_METRICS}}
             for name, values in (published or {}).items()]
    figure = new_figure("bench")
    ax = figure.add_subplot()
    width = 0.8 / len(VALIDATION_METRICS)
    for i, (key, label) in enumerate(VALIDATION_METRICS.items()):
        where = [j + (i - 1) * width for j, row in enumerate(rows) if row[key] is not None]
        shown = [row for row in rows if row[key] is not None]
        bars = ax.bar(where, [row[key] for row in shown], width, label=label,
                      color=colormaps["tab10"](i))
        for x, bar, row in zip(where, bars, shown, strict=True):
            if row["published"]:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
            elif row.get(f"{key}_std") is not None:
                ax.errorbar(x, row[key], yerr=row[f"{key}_std"], color="black", capsize=2)
    ax.set_xticks(range(len(rows)), [row["method"] for row in rows], rotation=30, ha="right")
    lowest = min(row[key] for row in rows for key in VALIDATION_METRICS if row[key] is not None)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
    ax.set_ylabel("test metric (mean ± std over seeds)")
    seeds = ", ".join(map(str, results["seeds"]))
    ax.set_title(f"{results['exp']}, preset {results['preset']}, seeds {seeds}: Table 2 "
                 "(hatched: published)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=len(VALIDATION_METRICS), loc="upper center")  # one row, above the bars
    return save(figure, path, {"rows": rows})


def render_image_grid(images: np.ndarray, title: str, path: str | Path,
                      columns: int = 10) -> None:
    """A grid of up to `columns`² images in a fixed-size PNG (their numbers live elsewhere)."""
    images = check_images(images, "images")[: columns * columns]
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    figure = new_figure("grid")
    ax = figure.add_subplot()
    show_mosaic(ax, mosaic(rows, min(columns, len(images))))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    save(figure, path, None)
