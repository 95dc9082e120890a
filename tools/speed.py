"""Speed of DGC against the CE baseline: training and prediction images/s, peak memory.

One run trains DGC (the `dgc` method) and the `ce` baseline with the same preset on the same
data, then predicts the whole test set: DGC with the exact Bayes rule (METHOD §4: every class,
S = 10) and with its default setting (the label term's two best classes, S = 1), CE with its
softmax. Each phase runs in a fresh process, so its peak resident memory (ru_maxrss) is its own:
the table shows how far the phase raised it above where the process stood before it (Python,
torch, the data and the model); the JSON also holds the total, and the peak GPU memory on CUDA.

Times are wall-clock (time.perf_counter). Training images/s is the images of an epoch × epochs
over the epochs' time (the steps and the per-epoch validation; DGC's one-off encoder
pre-training is reported apart, as `pretrain_seconds`). Prediction images/s is over the full
test set, through the library's `predict_images`, after an untimed warm-up batch.

    python tools/speed.py                           # Fashion-MNIST, cpu preset, 2 epochs
    python tools/speed.py --exp digits --epochs 1   # a quick smoke run
    python tools/speed.py --preset paper --device cuda --bf16   # tools/gpu_check.sh
    python tools/speed.py --training --exp elpv --preset images --epochs 1 --threads 2

`--training` measures instead DGC's training alone under each of `TRAINING_VARIANTS` side by
side (the code before the fused optimiser, float32, bfloat16 autocast, channels-first memory,
and for a residual or pretrained trunk the decoder that up-samples 4×4 and crops,
`model.decoder_crop`; `--batch-sizes` adds float32 and bfloat16 rows at other batch sizes),
with the work of a training step counted by
torch's FLOP counter, the GFLOP/s achieved, and the machine's measured
matrix-product peak in float32 and bfloat16 (2048 × 2048 products at the same thread count).

`--prediction` measures instead DGC's exact rule (every class, S = 10) and its novelty scores
(`dgc evaluate --ood`'s, at the run's S) on the whole test set with the prediction code as it was
before issue 35 (`previous_prediction`: the decoder's BatchNorm and last convolution unfused, and
each batch's C × S codes decoded in one pass) and as it is now, side by side on one trained
model in one run, each in its own process, and checks that both give the same numbers:

    python tools/speed.py --prediction --threads 2 --out runs/speed-prediction.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgc.config import PAPER_SAMPLES, PredictConfig, RunConfig, apply_overrides
from dgc.core.io import load_checkpoint, save_checkpoint
from dgc.core.metrics import compute_metrics
from dgc.core.precision import native_bf16
from dgc.data import dataset_names
from dgc.methods.family import build_model, family_of
from dgc.methods.registry import resolve_config
from dgc.nn.model import images_to_tensor
from dgc.run.finished import run_data, to_train_data
from dgc.run.predict import predict_images
from dgc.run.train import cpu_model, quiet

METHODS = ("dgc", "ce")
TRAINING_VARIANTS = {
    "before": "float32, Adam's per-parameter loop (the trainer before the fused optimiser)",
    "float32": "float32, fused Adam",
    "bf16": "bfloat16 autocast, fused Adam",
    "nchw": "float32, fused Adam, channels-first memory (the other rows are channels-last)",
    "crop": "float32, fused Adam, DGC's residual decoder from 4×4 and cropped",
}
PREDICTION_PHASES = ("exact_before", "exact", "novelty_before", "novelty")
PEAK_SIZE = 2048
WARMUP = 256  # test images predicted once, untimed, before the timed pass


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def configure(method: str, args: argparse.Namespace) -> RunConfig:
    """The run configuration `dgc train` would build for these options."""
    settings = [f"train.epochs={args.epochs}", *args.set]
    if args.bf16:
        settings += ["train.bf16=true", "predict.bf16=true"]
    return resolve_config("npz" if args.data else args.exp, args.preset, method,
                          overrides=settings, seed=args.seed, data_dir=args.data or args.data_dir,
                          device=args.device, threads=args.threads)


def prediction_settings(cfg: RunConfig) -> dict[str, PredictConfig]:
    """DGC's exact rule and its default setting; a classifier has its softmax only."""
    if not family_of(cfg).rescores:
        return {"predict": cfg.predict}
    exact = dataclasses.replace(cfg.predict, rule="bayes", top_k=None, samples=PAPER_SAMPLES)
    return {"predict_exact": exact, "predict_default": cfg.predict}


def start_gpu_peak(cfg: RunConfig) -> None:
    if cfg.device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def measured(cfg: RunConfig, before: float, seconds: float, images: int) -> dict[str, Any]:
    peak = peak_rss_mib()
    numbers = {"images": images, "seconds": round(seconds, 3),
               "images_per_s": round(images / seconds, 1), "peak_rss_mib": round(peak, 1),
               "rss_increase_mib": round(peak - before, 1)}
    if cfg.device == "cuda":
        numbers["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return numbers


def train_phase(cfg: RunConfig, weights: Path) -> dict[str, Any]:
    """Train as `train_run` does (no files but the weights), timing the epochs."""
    data = run_data(cfg)
    model = build_model(cfg, data.x_train.shape[1:], len(data.class_names))
    trainer = family_of(cfg).trainer(model, cfg, to_train_data(data, cfg), log=quiet)
    before = peak_rss_mib()
    start_gpu_peak(cfg)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    save_checkpoint(weights, {"model": trainer.best_weights})
    numbers = measured(cfg, before, trainer.seconds, len(trainer.data.y) * cfg.train.epochs)
    return {**numbers, "pretrain_seconds": round(seconds - trainer.seconds, 3)}


def predict_phase(cfg: RunConfig, weights: Path, setting: str) -> dict[str, Any]:
    """Predict the whole test set with one setting, after a warm-up batch."""
    predict = prediction_settings(cfg)[setting]
    data = run_data(cfg)
    model = build_model(cfg, data.x_train.shape[1:], len(data.class_names))
    model.load_state_dict(load_checkpoint(weights)["model"])
    before = peak_rss_mib()
    start_gpu_peak(cfg)
    predict_images(model, data.x_test[:WARMUP], cfg, predict)
    started = time.perf_counter()
    probs = predict_images(model, data.x_test, cfg, predict)
    seconds = time.perf_counter() - started
    acsa = compute_metrics(data.y_test, probs.argmax(1), data.train_counts)["acsa"]
    return {**measured(cfg, before, seconds, len(data.x_test)), "acsa": round(acsa, 4),
            "setting": dataclasses.asdict(predict)}


def previous_prediction() -> None:
    """Make prediction run as it did before issue 35: the decoder's evaluation-mode body the
    training-mode modules (BatchNorm apart, the last convolution a convolution) and every code of
    a `class_scores` batch decoded in one pass."""
    from dgc.nn import model as nn_model
    from dgc.nn import prediction

    prediction.DECODER_PASS = 2**62
    setattr(nn_model.Decoder, "evaluation_body", lambda decoder, h: decoder.body(h))  # noqa: B010


def prediction_phase(cfg: RunConfig, weights: Path, phase: str,
                     limit: int | None) -> dict[str, Any]:
    """`--prediction`: the exact rule's probabilities or the novelty scores of the test set (its
    first `limit` images, where given), timed after a warm-up batch; the numbers go to a file
    beside the weights for `main` to compare."""
    if phase.endswith("_before"):
        previous_prediction()
    data = run_data(cfg)
    test = data.x_test[:limit]
    model = build_model(cfg, data.x_train.shape[1:], len(data.class_names))
    model.load_state_dict(load_checkpoint(weights)["model"])
    model.eval()
    family = family_of(cfg)
    exact = dataclasses.replace(cfg.predict, rule="bayes", top_k=None, samples=PAPER_SAMPLES)
    if phase.startswith("exact"):
        def run(images: Any) -> dict[str, Any]:
            return {"probs": predict_images(model, images, cfg, exact)}
    else:
        def run(images: Any) -> dict[str, Any]:
            scores = family.novelty(model, images_to_tensor(images, cfg.device), cfg)
            return {name: value.double().cpu().numpy() for name, value in scores.items()}
    before = peak_rss_mib()
    run(test[:WARMUP])
    started = time.perf_counter()
    numbers = run(test)
    seconds = time.perf_counter() - started
    np.savez(weights.with_name(f"{phase}.npz"), **numbers)
    return {**measured(cfg, before, seconds, len(test)),
            "setting": dataclasses.asdict(exact if phase.startswith("exact") else cfg.predict)}


def prediction_comparison(args: argparse.Namespace, out: Path, results: dict[str, Any]) -> None:
    """`--prediction`: train DGC once, then time every `PREDICTION_PHASES` on its test set and
    compare the numbers before and after."""
    cfg = configure("dgc", args)
    with tempfile.TemporaryDirectory() as work:
        print(f"speed.py: dgc: training {args.epochs} epochs ...", flush=True)
        results["train"] = run_phase("train", cfg, Path(work))
        results["phases"] = {}
        for phase in PREDICTION_PHASES:
            print(f"speed.py: dgc: {phase} ...", flush=True)
            results["phases"][phase] = run_phase(phase, cfg, Path(work), args.limit)
        saved = {phase: dict(np.load(Path(work) / f"{phase}.npz"))
                 for phase in PREDICTION_PHASES}
    phases = results["phases"]
    lines = ["| quantity | before | after | speed-up | largest difference |",
             "|---|---:|---:|---:|---:|"]
    results["comparison"] = {}
    for name, label in (("exact", "exact rule (all classes, S = 10)"),
                        ("novelty", f"novelty scores (S = {cfg.predict.samples})")):
        old, new = saved[f"{name}_before"], saved[name]
        differences = {key: float(np.abs(new[key] - old[key]).max()) for key in new}
        speedup = ratio(phases[f"{name}_before"]["seconds"], phases[name]["seconds"])
        comparison: dict[str, Any] = {"speedup": speedup, "max_abs_difference": differences}
        if name == "exact":
            comparison["same_prediction"] = float(
                (new["probs"].argmax(1) == old["probs"].argmax(1)).mean())
        results["comparison"][name] = comparison
        largest = max(differences.values())
        lines.append(f"| {label}, images/s | {phases[f'{name}_before']['images_per_s']:,.1f} | "
                     f"{phases[name]['images_per_s']:,.1f} | {speedup} | {largest:.1e} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['exp']}, preset {args.preset}, {args.device}, {args.epochs} epochs of "
          f"DGC, threads {args.threads or torch.get_num_threads()}, "
          f"{phases['exact']['images']} test images\n")
    print("\n".join(lines))
    print(f"\nlargest difference: of a probability (exact rule) or a score (novelty), after "
          f"against before; the exact rule's decision agrees on "
          f"{results['comparison']['exact']['same_prediction']:.2%} of the images. "
          f"Numbers in {out}")


def loop_adam() -> None:
    """Make `torch.optim.Adam` the per-parameter loop the trainer used before `fused=True`."""
    class LoopAdam(torch.optim.Adam):
        def __init__(self, params: Any, *args: Any, fused: bool | None = None, **kwargs: Any):
            super().__init__(params, *args, foreach=False, **kwargs)

    torch.optim.Adam = LoopAdam  # type: ignore[misc]  # the trainer looks Adam up when it runs


def channels_first() -> None:
    """Keep every tensor and model in channels-first memory: the library asks for
    `torch.channels_last` by name each time it converts one."""
    torch.channels_last = torch.contiguous_format  # type: ignore[misc]


def convolution_backward_flop(grad_out_shape: list[int], x_shape: list[int],
                              w_shape: list[int], _bias: Any, _stride: Any, _padding: Any,
                              _dilation: Any, transposed: bool, _output_padding: Any,
                              _groups: int, output_mask: list[bool], *_: Any, **__: Any) -> int:
    """Each gradient of a convolution costs what its forward pass does. torch's own formula
    counts the weight gradient of a grouped convolution as a dense one: EfficientNet-Lite's
    depthwise layers made a step 12× its work."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed) * sum(
        map(bool, output_mask[:2]))


# Training phases that change the library in their own process before they train.
PATCHED_PHASES = {"train-before": loop_adam, "train-nchw": channels_first}


def step_flops(cfg: RunConfig) -> dict[str, Any]:
    """The floating-point operations of one DGC training step (every pass it makes)."""
    from torch.utils.flop_counter import FlopCounterMode

    data = run_data(cfg)
    model = build_model(cfg, data.x_train.shape[1:], len(data.class_names))
    trainer = family_of(cfg).trainer(model, cfg, to_train_data(data, cfg), log=quiet)
    backward = {torch.ops.aten.convolution_backward: convolution_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=backward) as counter:
        trainer.train_step(trainer.epoch_order()[:cfg.train.batch_size])
    return {"gflop_per_step": round(counter.get_total_flops() / 1e9, 3),
            "steps_per_epoch": -(-len(trainer.data.y) // cfg.train.batch_size)}


def matmul_peak() -> dict[str, float]:
    """GFLOP/s of square float32 and bfloat16 matrix products at the current thread count."""
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = (torch.randn(PEAK_SIZE, PEAK_SIZE, dtype=dtype) for _ in range(2))
        for _ in range(3):
            a @ b
        started, repeats = time.perf_counter(), 20
        for _ in range(repeats):
            a @ b
        seconds = (time.perf_counter() - started) / repeats
        peaks[str(dtype).removeprefix("torch.")] = round(2 * PEAK_SIZE**3 / seconds / 1e9, 1)
    return peaks


def run_phase(phase: str, cfg: RunConfig, work: Path, limit: int | None = None) -> dict[str, Any]:
    """One phase in a fresh Python process; its numbers come back as JSON on stdout."""
    config = work / f"{cfg.method}.json"
    config.write_text(json.dumps(cfg.to_dict()))
    command = [sys.executable, __file__, "--phase", phase, "--config", str(config)]
    command += ["--limit", str(limit)] if limit else []
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"speed.py: the {cfg.method} {phase} phase failed (exit code "
                         f"{result.returncode}); its error is above")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def table(results: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The rows (quantity, DGC, CE, DGC / CE) and the Markdown table of them."""
    dgc, ce = results["dgc"], results["ce"]
    exact, default = dgc["predict_exact"]["setting"], dgc["predict_default"]["setting"]
    default_name = (f"top-{default['top_k']}" if default["top_k"] else "all classes")
    names = {"predict_exact": f"exact (all classes, S = {exact['samples']})",
             "predict_default": f"default ({default_name}, S = {default['samples']})"}
    rows = [("training, images/s", dgc["train"]["images_per_s"], ce["train"]["images_per_s"])]
    rows += [(f"prediction, DGC {names[key]}, images/s", dgc[key]["images_per_s"],
              ce["predict"]["images_per_s"]) for key in names]
    rows.append(("training, peak memory, MiB", dgc["train"]["rss_increase_mib"],
                 ce["train"]["rss_increase_mib"]))
    rows += [(f"prediction, DGC {names[key]}, peak memory, MiB", dgc[key]["rss_increase_mib"],
              ce["predict"]["rss_increase_mib"]) for key in names]
    if "peak_gpu_mib" in dgc["train"]:
        rows.append(("training, peak GPU memory, MiB", dgc["train"]["peak_gpu_mib"],
                     ce["train"]["peak_gpu_mib"]))
    records = [{"quantity": q, "dgc": a, "ce": b, "dgc_over_ce": ratio(a, b)} for q, a, b in rows]
    lines = ["| quantity | DGC | CE | DGC / CE |", "|---|---:|---:|---:|"]
    lines += [f"| {r['quantity']} | {r['dgc']:,.1f} | {r['ce']:,.1f} | {r['dgc_over_ce']} |"
              for r in records]
    return records, "\n".join(lines)


def batch_sizes(text: str) -> list[int]:
    """`--batch-sizes 100,200`: positive integers, refused otherwise before anything runs."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive batch sizes, "
                                         "e.g. 100,200")
    return sizes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", default="fashion", choices=dataset_names())
    parser.add_argument("--data", help="your own FILE.npz instead of --exp (as `dgc train`)")
    parser.add_argument("--data-dir", help="folder holding the dataset's files")
    parser.add_argument("--preset", default="cpu", choices=("cpu", "paper", "images"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast in training and prediction (CUDA, or a CPU "
                             "with native bfloat16, as `dgc train --bf16`)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other setting, as `dgc train --set`")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--out", help="JSON file (default runs/speed-<exp>-<preset>-<device>.json)")
    parser.add_argument("--training", action="store_true",
                        help="DGC's training alone under each variant, with GFLOP/s")
    parser.add_argument("--prediction", action="store_true",
                        help="DGC's exact rule and novelty scores, before and after issue 35")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="with --prediction: the first N test images (default: all)")
    parser.add_argument("--batch-sizes", type=batch_sizes, metavar="B1,B2,...",
                        help="with --training: also time these batch sizes (float32 and bf16)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.phase:  # a child process: one phase of one method
        cfg = RunConfig.from_dict(json.loads(Path(args.config).read_text()))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        weights = Path(args.config).with_suffix(".pt")
        if patch := PATCHED_PHASES.get(args.phase):
            patch()
        phases = {"train": train_phase, **dict.fromkeys(PATCHED_PHASES, train_phase),
                  "flops": lambda cfg, _: step_flops(cfg), "peak": lambda *_: matmul_peak()}
        if args.phase in PREDICTION_PHASES:
            numbers = prediction_phase(cfg, weights, args.phase, args.limit)
        elif args.phase in phases:
            numbers = phases[args.phase](cfg, weights)
        else:
            numbers = predict_phase(cfg, weights, args.phase)
        print(json.dumps(numbers))
        return
    if args.batch_sizes and not args.training:
        raise SystemExit("speed.py: --batch-sizes times training variants; add --training")
    if args.training and args.prediction:
        raise SystemExit("speed.py: --training and --prediction are two measurements; "
                         "choose one")
    if args.limit is not None and (not args.prediction or args.limit < 1):
        raise SystemExit("speed.py: --limit takes a positive number of images, with "
                         "--prediction")
    if args.bf16 and args.training:
        raise SystemExit("speed.py: --training times float32 and bfloat16 side by side; "
                         "leave out --bf16")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("speed.py: --device cuda, but torch sees no CUDA device")
    exp = "npz" if args.data else args.exp
    out = Path(args.out or f"runs/speed-{exp}-{args.preset}-{args.device}.json")
    results: dict[str, Any] = {
        "exp": exp, "preset": args.preset, "device": args.device, "bf16": args.bf16,
        "epochs": args.epochs, "seed": args.seed, "threads": args.threads,
        **({"limit": args.limit} if args.limit else {}),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "processor": cpu_model(),
                        "bf16_instructions": native_bf16(), "cpus": os.cpu_count(),
                        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}}
    if args.training:
        return training_variants(args, out, results)
    if args.prediction:
        return prediction_comparison(args, out, results)
    with tempfile.TemporaryDirectory() as work:
        for method in METHODS:
            cfg = configure(method, args)
            print(f"speed.py: {method}: training {args.epochs} epochs ...", flush=True)
            results[method] = {"train": run_phase("train", cfg, Path(work))}
            for setting in prediction_settings(cfg):
                print(f"speed.py: {method}: {setting} ...", flush=True)
                results[method][setting] = run_phase(setting, cfg, Path(work))
    results["table"], markdown = table(results)
    default = results["dgc"]["predict_default"]["images_per_s"]
    slowdown = results["ce"]["predict"]["images_per_s"] / default
    results["targets"] = {"dgc_default_images_per_s": default,
                          "dgc_default_prediction_time_over_ce": round(slowdown, 2)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{exp}, preset {args.preset}, {args.device}{' bf16' if args.bf16 else ''}, "
          f"{args.epochs} epochs, threads {args.threads or torch.get_num_threads()}\n")
    print(markdown)
    print("\npeak memory: the resident memory a phase added to its process (which holds Python, "
          "torch, the data and the model before it starts)")
    print(f"\nDGC default prediction: {default:,.0f} images/s (target >= 1000); its prediction "
          f"time is {slowdown:.1f}x CE's (target <= 10x). Numbers in {out}")


def training_variants(args: argparse.Namespace, out: Path, results: dict[str, Any]) -> None:
    """`--training`: DGC's training under every variant, each in its own process.

    `before` and the float32 / bf16 rows use the preset's batch; every other size of
    `--batch-sizes` adds a float32 and a bf16 row (`float32-b200`, ...), its own FLOPs counted.
    Their numbers go under `variants`, by row name."""
    cfg = configure("dgc", args)
    preset_batch = cfg.train.batch_size
    variants = {"before": (preset_batch, "before")}
    for batch in args.batch_sizes or [preset_batch]:
        suffix = "" if batch == preset_batch else f"-b{batch}"
        variants.update({f"float32{suffix}": (batch, "float32"), f"bf16{suffix}": (batch, "bf16")})
    variants["nchw"] = (preset_batch, "nchw")
    if cfg.model.backbone != "conv":
        variants["crop"] = (preset_batch, "crop")
    with tempfile.TemporaryDirectory() as work:
        results["peak_gflop_s"] = run_phase("peak", cfg, Path(work))
        works = {batch: run_phase("flops", apply_overrides(cfg, [f"train.batch_size={batch}"]),
                                  Path(work))
                 for batch in dict.fromkeys(batch for batch, _ in variants.values())}
        results["work"] = works[preset_batch]
        results["variants"] = {}
        for name, (batch, precision) in variants.items():
            print(f"speed.py: dgc training, {TRAINING_VARIANTS[precision]}, batch {batch} ...",
                  flush=True)
            variant = apply_overrides(cfg, [f"train.bf16={precision == 'bf16'}",
                                            f"train.batch_size={batch}",
                                            f"model.decoder_crop={precision == 'crop'}"])
            phase = f"train-{precision}" if f"train-{precision}" in PATCHED_PHASES else "train"
            counted = (run_phase("flops", variant, Path(work)) if precision == "crop"
                       else works[batch])  # the cropping decoder does more work
            results["variants"][name] = {**run_phase(phase, variant, Path(work)),
                                         "batch_size": batch, **counted}
    peak = results["peak_gflop_s"]
    lines = ["| variant | batch | images/s | s/epoch | speed-up | GFLOP/s | % of float32 peak | "
             "% of bfloat16 peak |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (batch, precision) in variants.items():
        numbers = results["variants"][name]
        epoch = numbers["seconds"] / args.epochs
        gflops = numbers["gflop_per_step"] * numbers["steps_per_epoch"] / epoch
        numbers.update(seconds_per_epoch=round(epoch, 2), gflop_s=round(gflops, 1),
                       speedup=ratio(results["variants"]["before"]["seconds"],
                                     numbers["seconds"]))  # same images: unrounded times
        lines.append(f"| {TRAINING_VARIANTS[precision]} | {batch} | "
                     f"{numbers['images_per_s']:,.1f} | {epoch:.2f} | {numbers['speedup']:.2f} | "
                     f"{gflops:.1f} | {100 * gflops / peak['float32']:.0f} | "
                     f"{100 * gflops / peak['bfloat16']:.0f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    work = results["work"]
    print(f"\n{results['exp']}, preset {args.preset}, {args.epochs} epochs of DGC training, "
          f"threads {args.threads or torch.get_num_threads()}; a step of batch {preset_batch} is "
          f"{work['gflop_per_step']} GFLOP, {work['steps_per_epoch']} steps an epoch; matrix-"
          f"product peak {peak['float32']} GFLOP/s in float32, {peak['bfloat16']} in "
          f"bfloat16\n")
    print("\n".join(lines))
    print(f"\nNumbers in {out}")


if __name__ == "__main__":
    main()
