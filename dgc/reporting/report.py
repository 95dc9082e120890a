"""What a trained run shows: its figures, a Markdown report, and new images of one class.

`write_report(run_dir)` rebuilds `report.md` and `figures/` from the run's files (config.json,
history.json, metrics.json, best.pt and, when present, predictions.npz) and the dataset, so a report
can be regenerated without retraining. Every random choice (which training images, which codes,
t-SNE) is seeded by the run's seed, so the same run gives the same report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from dgc.core.errors import DGCError
from dgc.core.io import load_checkpoint, read_json, staged, write_text
from dgc.core.metrics import compute_metrics, confusion_matrix, format_metrics
from dgc.core.progress import bar as progress_bar
from dgc.data import ImbalancedData
from dgc.evaluation.capabilities import CALIBRATION_FILE, calibration_markdown, evaluate_calibration
from dgc.evaluation.scoring import score_splits
from dgc.nn.generation import decode, generate, generated, posterior
from dgc.nn.model import DGC, machine_memory, tensor_to_images
from dgc.reporting import plots
from dgc.run.finished import Run, load_generative_run, load_run, recorded_data, validation_split
from dgc.run.folder import BEST, HISTORY, METRICS, PREDICTIONS
from dgc.run.predict import predict_images, save_predictions

REPORT = "report.md"
FIGURES = "figures"
GENERATED_PER_CLASS = 10
# The t-SNE subsample: at most this many images per class and in total, whatever the dataset.
TSNE_PER_CLASS = 100
TSNE_TOTAL = 1000
SAMPLE_CHUNK = 10_000  # images `sample_class` generates at a time


@dataclass
class TrainingSplit:
    """The images the model was trained on (after the validation split), uint8 (N, H, W, C)."""

    x: np.ndarray
    y: np.ndarray


def training_split(run: Run, data: ImbalancedData) -> TrainingSplit:
    """The rows the trainer saw (`validation_split`'s, in its order) as uint8 images, so that
    history's trace indices point at the right images."""
    split = validation_split(run, data)
    return TrainingSplit(tensor_to_images(split.x), split.y.cpu().numpy())


def pick(indices: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n of the indices at random; with replacement only when there are fewer than n."""
    return rng.choice(indices, size=n, replace=n > len(indices))


def class_index(class_names: tuple[str, ...], name: str) -> int:
    """The index of a class given by name (exact, else the one case-insensitive match)."""
    if name in class_names:
        return class_names.index(name)
    folded = [i for i, c in enumerate(class_names) if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise DGCError(f"this run has no class {name!r}; its classes are "
                   + ", ".join(repr(c) for c in class_names))


def sample_class(run_dir: str | Path, class_name: str, n: int,
                 seed: int | None = None) -> tuple[np.ndarray, str, np.ndarray]:
    """N new images of one class, uint8 (N, H, W, C), from codes of q(z | x, y = c) of its
    training images; with the class's name and the training-split indices of the images whose
    posteriors were sampled (with replacement only when the class has fewer than N). `seed`
    defaults to the run's. Generated a chunk at a time; N beyond the machine's memory is refused
    before any work."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DGCError(f"the number of images must be a positive integer, got {n!r}")
    run = load_generative_run(run_dir, "sample from a DGC run")
    # each image, and the int64 index of the training image it was drawn from
    need, have = n * (int(np.prod(run.image_shape)) + 8), machine_memory("cpu")
    if need > have:
        raise DGCError(f"{n:,} images of {'×'.join(map(str, run.image_shape))} take about "
                       f"{need / 2**30:.1f} GiB of memory, but this machine has "
                       f"{have / 2**30:.1f} GiB; ask for fewer at a time (another seed each)")
    c = class_index(run.class_names, class_name)
    seed = run.cfg.seed if seed is None else seed
    split = training_split(run, recorded_data(run))
    members = np.flatnonzero(split.y == c)
    if not len(members):
        raise DGCError(f"class {run.class_names[c]!r} has no training images in this run, so "
                       "there is no posterior to sample from")
    sources = pick(members, n, np.random.default_rng(seed))
    images = np.empty((n, *split.x.shape[1:]), dtype=np.uint8)
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, SAMPLE_CHUNK):  # the working memory of one chunk at a time
        part = sources[start:start + SAMPLE_CHUNK]
        images[start:start + len(part)] = tensor_to_images(
            generated(run.generator, split.x[part], c, generator, run.cfg.device))
    return images, run.class_names[c], sources


def stratified_subsample(labels: np.ndarray, n_classes: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Sorted indices: up to min(TSNE_PER_CLASS, TSNE_TOTAL // C) random images of each class."""
    per_class = max(1, min(TSNE_PER_CLASS, TSNE_TOTAL // n_classes))
    parts = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(n_classes)]
    return np.sort(np.concatenate(parts))


def tsne(points: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE with PCA initialisation; perplexity 30, or less for very few points. It runs on one
    OpenMP thread: that keeps it deterministic, and on cores busy with other work (training runs)
    more threads made it over ten times slower."""
    from sklearn.manifold import TSNE  # imported here: it slows every `dgc` start

    perplexity = min(30.0, max(1.0, (len(points) - 1) / 3))
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(points.astype(np.float64))


def load_test_predictions(run_dir: Path, run: Run, data: ImbalancedData,
                          stage: Path) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) of the test set: predictions.npz, or a fresh prediction saved into
    `stage` (to join the run with the report)."""
    path = run_dir / PREDICTIONS
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as saved:
                y_true, y_pred = saved["y_true"], saved["y_pred"]
        except (OSError, ValueError, KeyError) as error:
            raise DGCError(f"{path} is damaged ({error}); delete it and the report will "
                           "predict the test set again") from error
        if np.array_equal(y_true, data.y_test):
            return y_true, y_pred
    probs = predict_images(run.model, data.x_test, run.cfg, run.cfg.predict)
    save_predictions(stage / PREDICTIONS, data.y_test, probs)
    return data.y_test, probs.argmax(1)


def evaluated_epoch(run_dir: Path, keep: str) -> str:
    """Which epoch's weights best.pt holds, and why (`train.keep`)."""
    best = load_checkpoint(run_dir / BEST)
    if best.get("epoch") is None:
        return "unknown"
    score = best.get("score")
    if keep == "last":
        scored = "" if score is None else f", validation ACSA {score:.4f}"
        return f"epoch {best['epoch']} (the last, as train.keep asks{scored})"
    return (f"epoch {best['epoch']} (best validation ACSA {score:.4f})" if score is not None
            else f"epoch {best['epoch']} (the last; no validation split)")


def figure_section(title: str, png: str, caption: str) -> list[str]:
    data = plots.data_path(png).as_posix()
    return [f"## {title}", "", caption, "", f"![{title}]({png})", "",
            f"Plotted numbers: [{data}]({data})", ""]


def outcome_sections(run_dir: Path, run: Run, data: ImbalancedData, stage: Path,
                     steps: tqdm) -> list[str]:
    """Per-class recall against training count, and the confusion matrix, of the test set."""
    names, figures = run.class_names, stage / FIGURES
    y_true, y_pred = load_test_predictions(run_dir, run, data, stage)
    recall = [row["recall"] if row["support"] else None  # no test images: no recall
              for row in compute_metrics(y_true, y_pred, run.train_counts, names)["per_class"]]
    plots.plot_recall_vs_count(run.train_counts, recall, names, figures / "recall_vs_count.png")
    steps.update()
    plots.plot_confusion(confusion_matrix(y_true, y_pred, len(names)), names,
                         figures / "confusion.png")
    steps.update()
    return [
        *figure_section(
            "Per-class recall against training count", f"{FIGURES}/recall_vs_count.png",
            "Test recall of every class against how many training images it had (log scale); "
            "the dashed line is ACSA. Minority classes sit on the left."),
        *figure_section(
            "Confusion matrix", f"{FIGURES}/confusion.png",
            f"Test set ({len(y_true)} images), each row normalised by the true class's size."),
    ]


def generative_sections(run: Run, model: DGC, split: TrainingSplit, history: dict[str, Any],
                        figures: Path, steps: tqdm) -> list[str]:
    """A generator's own figures: generated images, reconstructions, t-SNE and the μ/σ trace."""
    cfg, names = run.cfg, run.class_names
    rng = np.random.default_rng(cfg.seed)
    members = [np.flatnonzero(split.y == c) for c in range(len(names))]
    present = [c for c in range(len(names)) if len(members[c])]
    sources = [pick(members[c], GENERATED_PER_CLASS, rng) for c in present]
    samples = [generate(model, split.x[s], c, cfg.seed + c, cfg.device)
               for c, s in zip(present, sources, strict=True)]
    plots.plot_generated(samples, [names[c] for c in present], figures / "generated.png",
                         sources)
    steps.update()

    originals = np.array([s[0] for s in sources])
    labels = np.array(present)
    mu, _ = posterior(model, split.x[originals], labels, cfg.device)
    plots.plot_reconstructions(split.x[originals], decode(model, mu), labels, names,
                               figures / "reconstructions.png")
    steps.update()

    chosen = stratified_subsample(split.y, len(names), rng)
    mu, _ = posterior(model, split.x[chosen], split.y[chosen], cfg.device)
    inputs = split.x[chosen].reshape(len(chosen), -1) / 255.0
    plots.plot_tsne(tsne(inputs, cfg.seed), tsne(mu.cpu().numpy(), cfg.seed), split.y[chosen],
                    names, figures / "tsne.png", chosen)
    steps.update()
    sections = [
        *figure_section(
            "Generated images (paper Fig. 6)", f"{FIGURES}/generated.png",
            f"Each row: {GENERATED_PER_CLASS} images decoded from one code z = μ + σ·ε drawn "
            "from q(z | x, y = class) of a random training image of that class."),
        *figure_section(
            "Reconstructions", f"{FIGURES}/reconstructions.png",
            "One training image per class (top) and the decoding of its posterior mean μ "
            "(bottom)."),
        *figure_section(
            "t-SNE of inputs and latent codes (paper Fig. 5)", f"{FIGURES}/tsne.png",
            f"A stratified subsample of {len(chosen)} training images (at most "
            f"{TSNE_PER_CLASS} per class): raw pixels (left) and latent means μ of q(z | x, y) "
            "(right)."),
    ]
    title = "Posterior of two training points over the epochs (paper Fig. 4)"
    if any("trace" in r for r in history["epochs"]):
        point_classes = [names[int(split.y[i])] for i in history["trace_points"]]
        plots.plot_trace(history, point_classes, figures / "trace.png")
        sections += figure_section(
            title, f"{FIGURES}/trace.png",
            "μ and σ of the first latent coordinate of q(z | x, y) for the first training "
            "image of the largest and of the smallest class, after every epoch.")
    else:
        sections += [f"## {title}", "", "Not available: this run's history.json holds no μ/σ "
                     "trace.", ""]
    steps.update()
    return sections


def calibration_section(run_dir: Path, run: Run, data: ImbalancedData,
                        stage: Path) -> list[str]:
    """Reliability diagrams from calibration.json, written first (into `stage`) when `dgc
    evaluate` has not."""
    path = run_dir / CALIBRATION_FILE
    report = (read_json(path) if path.is_file()
              else evaluate_calibration(stage, run, scores=score_splits(run, data))[0])
    plots.plot_reliability(report, stage / FIGURES / "reliability.png")
    fitted = (", after temperature scaling and after bias-corrected temperature scaling, both "
              "fitted on the validation split" if len(report) > 1 else "")
    caption = ("Test-set accuracy against the top-class probability in 15 bins: as predicted"
               f"{fitted} (a Bayes rule pruned to its top classes is scored over every class "
               "here).")
    return [*figure_section("Calibration", f"{FIGURES}/reliability.png", caption),
            calibration_markdown(report), ""]


def write_report(run_dir: str | Path, progress: bool = False) -> Path:
    """Write `report.md` and its figures into a run directory; returns the report's path. A
    baseline classifier's run gets the figures that apply to it (test outcome and training
    curves); a DGC run also its generated images, reconstructions, t-SNE and μ/σ trace. Every
    file is written into a temporary folder first and moved into the run once all are there, so
    a failure (a full disk) changes no file of the run."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    history = read_json(run_dir / HISTORY)
    metrics = read_json(run_dir / METRICS)
    data = recorded_data(run)
    try:
        with staged(run_dir) as stage:
            text = report_text(run_dir, run, data, history, metrics, stage, progress)
            write_text(stage / REPORT, text)
    except DGCError as error:
        raise DGCError(f"no report written into {run_dir}, and none of its files changed: "
                       f"{error}") from error
    return run_dir / REPORT


def report_text(run_dir: Path, run: Run, data: ImbalancedData, history: dict[str, Any],
                metrics: dict[str, Any], stage: Path, progress: bool) -> str:
    """report.md, its figures drawn into `stage`."""
    cfg, figures = run.cfg, stage / FIGURES
    generator = run.family.generator(run.model)
    steps = progress_bar(None, progress, total=4 if generator is None else 8, desc="report",
                         unit="figure")
    sections = outcome_sections(run_dir, run, data, stage, steps)
    sections += calibration_section(run_dir, run, data, stage)
    steps.update()
    plots.plot_training_curves(history, figures / "curves.png")
    steps.update()
    sections += figure_section(
        "Training curves", f"{FIGURES}/curves.png",
        "Per-epoch means of every loss term, and ACSA / F_macro / G_macro on the validation "
        "split (the library scores the test set only once, after training).")
    if generator is not None:
        sections += generative_sections(run, generator, training_split(run, data), history,
                                        figures, steps)
    steps.close()

    head = [
        f"# Report: {cfg.method} on {cfg.exp}, seed {cfg.seed}", "",
        f"- preset `{cfg.preset}`, {len(history['epochs'])} of {cfg.train.epochs} epochs trained;"
        f" evaluated weights: {evaluated_epoch(run_dir, cfg.train.keep)}",
        f"- training counts per class: {', '.join(map(str, run.train_counts))}",
        f"- prediction: {run.family.describe(cfg.predict)}",
    ]
    if "seconds_train" in metrics:
        head.append(f"- training {metrics['seconds_train']:.0f} s, test prediction "
                    f"{metrics.get('seconds_predict', 0):.0f} s")
    return "\n".join([*head, "", format_metrics(metrics, title="Test metrics"), "", *sections])
