"""One training run end to end: settings → run folder (checked, locked) → data (checked: two classes
at least, the recorded fingerprints on resume, the model's expected memory) → split → model →
trainer → best weights → test metrics → files."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgc.config import RunConfig, validate, with_steps
from dgc.core import distributed
from dgc.core.errors import DGCError
from dgc.core.io import load_checkpoint, load_newest_checkpoint, save_checkpoint, write_json
from dgc.core.metrics import compute_metrics
from dgc.core.precision import native_bf16
from dgc.data import ImbalancedData
from dgc.methods.family import build_model, family_of
from dgc.nn.model import check_fits, count_parameters
from dgc.run.finished import (
    data_fingerprints,
    describe_source,
    generator_run,
    run_data,
    to_train_data,
)
from dgc.run.folder import (
    BEST,
    CHECKPOINT,
    CONFIG,
    HISTORY,
    METRICS,
    PARTIAL_PREDICTIONS,
    PREDICTIONS,
    PREVIOUS,
    RunDir,
    check_fingerprints,
    check_resume,
)
from dgc.run.predict import predict_test_set, save_predictions
from dgc.train.logs import check_tensorboard
from dgc.train.loop import EpochTrainer


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name: another CPU gives the same seed other numbers, so runs record it
    (`platform.processor()` is empty on Linux, hence /proc/cpuinfo)."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip() or None
    return platform.processor() or None


def environment(cfg: RunConfig) -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "device": cfg.device, "threads": torch.get_num_threads(),
            "processes": distributed.world_size(),
            "machine": platform.machine(), "processor": cpu_model(),
            "bf16_instructions": native_bf16()}


def same_environment(now: dict[str, Any], then: dict[str, Any]) -> bool:
    """Equal on every fact both record: a run started before a fact was recorded (e.g.
    `bf16_instructions`) is not taken for a move to another machine."""
    return all(now[key] == then[key] for key in now.keys() & then.keys())


def environments(out: RunDir, resume: bool, now: dict[str, Any]) -> dict[str, Any]:
    """config.json's record of where the run trained: the `environment` it started in, and
    under `resumed_in` each other one a resume continued it in (threads may change on resume)."""
    if not (resume and (out / CONFIG).is_file()):
        return {"environment": now}
    recorded = out.config()
    first, others = recorded.get("environment") or now, list(recorded.get("resumed_in", []))
    if not any(same_environment(now, then) for then in [first, *others]):
        others.append(now)
    return {"environment": first, **({"resumed_in": others} if others else {})}


def train_run(cfg: RunConfig, resume: bool = False, progress: bool = True,
              log: Any = print, overwrite: bool = False,
              tensorboard: bool = False) -> dict[str, Any]:
    """Train, evaluate on the test set, and write the run directory; returns the metrics. Every
    epoch adds a row to metrics.csv, and, with `tensorboard`, scalars to TensorBoard's event files
    under tensorboard/ (`dgc.train.logs`). A folder
    that already holds a run is refused unless `resume` continues it or `overwrite` moves it aside
    (to `NAME.old-K`, once every setting and the data are checked); the folder is locked while the
    run lives. Under torchrun every process trains, and process 0 alone validates, logs, writes
    the files and returns the metrics; the others return {} after training."""
    validate(cfg)
    if tensorboard:
        check_tensorboard()
    out = RunDir(cfg.out_dir)
    main = distributed.is_main()
    if not main:  # process 0 owns the folder and its lock, and alone shows progress and logs
        distributed.share_refusal(None)
        return train_locked(cfg, out, resume, False, quiet, main)
    with contextlib.ExitStack() as locked:
        try:  # checked under the lock, so no other command can start a run between
            locked.enter_context(out.lock())
            out.refuse_existing(resume, overwrite)
            if resume:
                out.check_resumable(cfg)
        except DGCError as refusal:
            distributed.share_refusal(refusal)
            raise
        distributed.share_refusal(None)
        return train_locked(cfg, out, resume, progress, log, main, overwrite, tensorboard)


def train_locked(cfg: RunConfig, out: RunDir, resume: bool, progress: bool, log: Any,
                 main: bool, overwrite: bool = False,
                 tensorboard: bool = False) -> dict[str, Any]:
    """`train_run` once the folder is checked and locked: data, model, training, files."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = checked_data(cfg, out, resume)
    model = build_model(cfg, data.x_train.shape[1:], len(data.class_names))
    train_data = to_train_data(data, cfg)
    cfg = with_steps(cfg, len(train_data.y), distributed.world_size())
    if not main:
        train_data = dataclasses.replace(train_data, x_val=train_data.x_val[:0],
                                         y_val=train_data.y_val[:0])
    generator = generator_run(cfg) if cfg.baseline.resample == "dgc" else None
    trainer = family_of(cfg).trainer(model, cfg, train_data,
                                     out.files(tensorboard) if main else None, progress, log,
                                     generator)
    if overwrite and out.holds_run():  # only now: building the trainer checks the last settings
        log(f"dgc: moved the earlier run in {out.path} to {out.move_aside()}")
    if resume:
        resume_trainer(trainer, out.path, cfg, log)
    if main:
        write_json(out / CONFIG, {
            **cfg.to_dict(), **environments(out, resume, environment(cfg)),
            **data_fingerprints(data),
            "n_params": count_parameters(model),
            "data": {"class_names": list(data.class_names),
                     "image_shape": list(data.x_train.shape[1:]),
                     "train_counts": data.train_counts.tolist()}})
    log(f"dgc: {cfg.method} on {cfg.exp} seed {cfg.seed}, preset {cfg.preset}, "
        f"{count_parameters(model):,} parameters, writing to {out.path}")
    log(f"dgc: training counts per class {', '.join(map(str, data.train_counts))} "
        f"({len(data.y_train)} images, {cfg.train.val_fraction:.0%} held out for validation); "
        f"test counts {', '.join(map(str, np.bincount(data.y_test)))}")
    if distributed.world_size() > 1:
        log(f"dgc: {distributed.world_size()} torchrun processes, each training on "
            f"{cfg.train.batch_size} of the {distributed.world_size() * cfg.train.batch_size} "
            f"images of every step")
    try:
        return finish_run(cfg, out.path, trainer, data, main)
    except KeyboardInterrupt:
        saved = (f"{out / CHECKPOINT} holds the last complete epoch"
                 if (out / CHECKPOINT).is_file() else "no epoch had finished, nothing is saved")
        log(f"dgc: interrupted; {saved}")
        raise


def checked_data(cfg: RunConfig, out: RunDir, resume: bool) -> ImbalancedData:
    """The run's data, refused when it cannot train (one class, a model too large for the
    images) or, on resume, when it is not the data the run recorded."""
    data = run_data(cfg)
    if data.num_classes < 2:
        raise DGCError(f"{describe_source(cfg)} has one class ({data.class_names[0]}); a "
                       "classifier needs at least two classes in its training set")
    if resume and (out / CONFIG).is_file():
        check_fingerprints(out.fingerprints(), data_fingerprints(data), out.path,
                           describe_source(cfg))
    shape, n_classes = data.x_train.shape[1:], len(data.class_names)
    check_fits(lambda: family_of(cfg).build(cfg, shape, n_classes), shape, cfg)
    return data


def finish_run(cfg: RunConfig, out: Path, trainer: EpochTrainer,
               data: ImbalancedData, main: bool) -> dict[str, Any]:
    """Train, then (process 0 only) predict the test set and write history, predictions and
    metrics: the part of a run that Ctrl-C may interrupt at any point."""
    trainer.fit()
    replicas = distributed.check_replicas(trainer.model)
    if not main:
        return {}
    if replicas:
        trainer.history["distributed"] = replicas
    write_json(out / HISTORY, trainer.history)
    model = trainer.restore_best()
    started = time.perf_counter()
    probs, resumed = predict_test_set(model, data.x_test, cfg, out, trainer.progress, trainer.log)
    seconds_predict = round(time.perf_counter() - started, 2)
    metrics = compute_metrics(data.y_test, probs.argmax(1), data.train_counts, data.class_names,
                              y_prob=probs)
    metrics.update(seconds_train=round(trainer.seconds, 2), seconds_predict=seconds_predict)
    if resumed:  # seconds_predict then counts only the images this process predicted
        metrics["predict_resumed_after"] = resumed
    save_predictions(out / PREDICTIONS, data.y_test, probs)
    write_json(out / METRICS, metrics)
    (out / PARTIAL_PREDICTIONS).unlink(missing_ok=True)
    return metrics


def quiet(_: str) -> None:
    """A log that drops its messages (the other torchrun processes)."""


def resume_trainer(trainer: EpochTrainer, out: Path, cfg: RunConfig, log: Any) -> None:
    """Continue from `checkpoint.pt` (or the generation before it, should it be damaged),
    refusing a configuration that changes the result."""
    state = load_newest_checkpoint(out / CHECKPOINT, out / PREVIOUS, log)
    if state is None:
        log(f"dgc: no checkpoint in {out} yet; starting from scratch")
        return
    try:  # settings added since the checkpoint was written get their defaults
        saved = RunConfig.from_dict(state["config"]).to_dict()
    except (KeyError, TypeError) as error:
        raise DGCError(f"cannot resume: {out / CHECKPOINT} holds a configuration this version "
                       f"cannot read ({error}); use another --out") from error
    check_resume(saved, cfg.to_dict(), "the checkpoint's")
    trainer.load_state_dict(state)
    if trainer.best["epoch"] is not None:  # no best yet before the first validated epoch
        restore_best_file(trainer, out / BEST, log)
    log(f"dgc: resuming {out} after epoch {trainer.epoch} of {cfg.train.epochs}")


def restore_best_file(trainer: EpochTrainer, path: Path, log: Any) -> None:
    """Make `best.pt` hold the best epoch the checkpoint records: a run stopped between its two
    saves of an epoch, or resumed from the previous checkpoint generation, can find `best.pt`
    from another epoch, which the checkpoint's own copy of the best weights rewrites.
    Checkpoints written before they carried that copy use `best.pt` when its epoch agrees, and
    are refused when it does not."""
    epoch = trainer.best["epoch"]
    try:
        found = load_checkpoint(path)
    except DGCError:
        found = None
    if found is not None and found.get("epoch") == epoch:
        if trainer.best_weights is None:
            trainer.best_weights = found["model"]
        return
    what = "is missing or damaged" if found is None else f"holds epoch {found.get('epoch')}"
    if trainer.best_weights is None:
        raise DGCError(f"cannot resume: {path} {what}, but the checkpoint's best is epoch "
                       f"{epoch}, whose weights this older checkpoint does not keep; start "
                       "again with --overwrite, or another --out")
    if trainer.files is not None:  # process 0 alone writes the run's files
        save_checkpoint(path, {"model": trainer.best_weights, **trainer.best})
        log(f"dgc: {path} {what}; rewrote it with the best epoch ({epoch}) from the checkpoint")


