"""One training run end to end: data, model, training, final test prediction, files on disk.

The run directory's files, and what a run recorded in them, are `dgc.rundir`'s. The method's
`Family` (DGC or the baseline classifiers) builds, trains and predicts; `dgc.methods` only names
it, for configuration code imports it and not the models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgc import distributed
from dgc.baselines import Classifier, ClassifierTrainer, build_classifier, classifier_proba
from dgc.config import PredictConfig, RunConfig, validate, with_steps
from dgc.data import ImbalancedData, load_imbalanced, split_validation
from dgc.data.files import read_cache, write_cache
from dgc.errors import DGCError
from dgc.heldout import hold_out
from dgc.io import (
    atomic_write,
    load_checkpoint,
    load_newest_checkpoint,
    load_weights,
    save_checkpoint,
    write_json,
)
from dgc.methods import get_method
from dgc.metrics import compute_metrics
from dgc.model import DGC, check_fits, count_parameters, images_to_tensor
from dgc.precision import native_bf16
from dgc.prediction import decompose, predict_proba
from dgc.progress import steps
from dgc.rundir import (
    BEST,
    CHECKPOINT,
    CONFIG,
    FINGERPRINTS,
    HISTORY,
    METRICS,
    PARTIAL_PREDICTIONS,
    PREDICTIONS,
    PREVIOUS,
    RunDir,
    check_fingerprints,
    check_resume,
)
from dgc.training import EpochTrainer, TrainData, Trainer

PREDICT_CHUNK = 1000  # test images predicted between two saves of PARTIAL_PREDICTIONS


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


@dataclass
class Run:
    """A trained model with what is needed to use it: classes, counts and configuration."""

    model: DGC | Classifier
    cfg: RunConfig
    class_names: tuple[str, ...]
    train_counts: np.ndarray
    fingerprints: dict[str, str | None] = dataclasses.field(default_factory=dict)
    directory: Path | None = None

    @property
    def generator(self) -> DGC:
        """The model as a DGC, for work that needs its encoder and decoder."""
        if not isinstance(self.model, DGC):
            raise DGCError(f"{self.directory or 'this run'} holds a {self.cfg.method} "
                           "classifier, which has no encoder or decoder; give a DGC run")
        return self.model

    @property
    def classifier(self) -> Classifier:
        """The model as a baseline classifier, for work that needs its logits."""
        if not isinstance(self.model, Classifier):
            raise DGCError(f"{self.directory or 'this run'} holds a {self.cfg.method} model, "
                           "which is not a baseline classifier; give a baseline's run")
        return self.model


@dataclass(frozen=True)
class Family:
    """What a method family brings to a run (`Method.family` names one of `FAMILIES`):
    `build_model(cfg, image_shape, n_classes)` a fresh model, `trainer` its trainer, and
    `proba(model, images, cfg, predict, progress)` class probabilities (N, C) of uint8 images;
    `generative`: the model has a decoder and predicts by the Bayes rule."""

    generative: bool
    build_model: Callable[[RunConfig, tuple[int, ...], int], DGC | Classifier]
    trainer: type[EpochTrainer]
    proba: Callable[[Any, np.ndarray, RunConfig, PredictConfig, bool], np.ndarray]


FAMILIES: dict[str, Family] = {
    "dgc": Family(True, lambda cfg, shape, n_classes: DGC(shape, n_classes, cfg.model), Trainer,
                  lambda model, images, cfg, predict, progress: predict_proba(
                      model, images, predict, cfg.seed, cfg.device, progress)),
    "classifier": Family(False, build_classifier, ClassifierTrainer,
                         lambda model, images, cfg, predict, _: classifier_proba(
                             model, images, cfg.device, predict.bf16)),
}


def family_of(cfg: RunConfig) -> Family:
    return FAMILIES[get_method(cfg.method).family]


def build_model(cfg: RunConfig, image_shape: tuple[int, ...],
                n_classes: int) -> DGC | Classifier:
    """A freshly initialised model of the run's method family, seeded, on the run's device."""
    seed_everything(cfg.seed)
    return family_of(cfg).build_model(cfg, image_shape, n_classes).to(cfg.device)


def predict_images(model: DGC | Classifier, images: np.ndarray, cfg: RunConfig,
                   predict: PredictConfig, progress: bool = False) -> np.ndarray:
    """Class probabilities (N, C) of uint8 images: DGC's Bayes rule, or a classifier's softmax."""
    return family_of(cfg).proba(model, images, cfg, predict, progress)


def train_run(cfg: RunConfig, resume: bool = False, progress: bool = True,
              log: Any = print, overwrite: bool = False) -> dict[str, Any]:
    """Train, evaluate on the test set, and write the run directory; returns the metrics.

    A folder that already holds a run is refused unless `resume` continues it or `overwrite`
    moves it aside (to `NAME.old-K`, once every setting and the data are checked); the folder
    is locked while the run lives. Under torchrun (`dgc.distributed`) every process trains, and
    process 0 alone validates, logs, writes the files and returns the metrics; the others
    return {} after training.
    """
    validate(cfg)
    main = distributed.is_main()
    if not main:
        progress, log = False, quiet
    out = RunDir(cfg.out_dir)
    if not main:  # process 0 owns the folder and its lock
        distributed.share_refusal(None)
        return train_locked(cfg, out, resume, progress, log, main)
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
        return train_locked(cfg, out, resume, progress, log, main, overwrite)


def train_locked(cfg: RunConfig, out: RunDir, resume: bool, progress: bool, log: Any,
                 main: bool, overwrite: bool = False) -> dict[str, Any]:
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
    trainer = family_of(cfg).trainer(model, cfg, train_data, out.path if main else None,
                                     progress=progress, log=log)
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
    check_fits(lambda: family_of(cfg).build_model(cfg, shape, n_classes), shape, cfg)
    return data


def data_fingerprints(data: ImbalancedData) -> dict[str, str]:
    """What a run records of its data, to refuse other data later."""
    return {key: getattr(data, key) for key in FINGERPRINTS}


def describe_source(cfg: RunConfig) -> str:
    return f"{cfg.data_dir}" if cfg.data_dir else f"the {cfg.exp} dataset"


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
    seconds_predict = time.perf_counter() - started
    metrics = compute_metrics(data.y_test, probs.argmax(1), data.train_counts, data.class_names,
                              y_prob=probs)
    metrics.update(seconds_train=round(trainer.seconds, 2), seconds_predict=round(seconds_predict,
                                                                                   2))
    if resumed:  # seconds_predict then counts only the images this process predicted
        metrics["predict_resumed_after"] = resumed
    save_predictions(out / PREDICTIONS, data.y_test, probs)
    write_json(out / METRICS, metrics)
    (out / PARTIAL_PREDICTIONS).unlink(missing_ok=True)
    return metrics


def predict_test_set(model: DGC | Classifier, images: np.ndarray, cfg: RunConfig, out: Path,
                     progress: bool, log: Any) -> tuple[np.ndarray, int]:
    """The test set's class probabilities, and how many images an earlier process had done.

    The exact rule of the `paper` preset takes hours on a CPU, so every `PREDICT_CHUNK` images
    are saved to `PARTIAL_PREDICTIONS` and a resumed run starts at the chunk it stopped in;
    chunks saved for other weights, settings or images are never reused. The released code's
    MMD term depends on which images share a batch, so with it the test set is one chunk.
    """
    path, key = out / PARTIAL_PREDICTIONS, prediction_key(model, cfg, images)
    saved = read_cache(path, key, keys=("probs",))
    parts = [saved["probs"]] if saved else []
    done = len(parts[0]) if parts else 0
    if done:
        log(f"dgc: resuming the test prediction after {done} of {len(images)} images")
    chunk = len(images) if cfg.predict.mmd_term else PREDICT_CHUNK
    starts = range(done, len(images), chunk)
    for start in steps(starts, "predict", "chunk", progress and len(starts) > 1):
        parts.append(predict_images(model, images[start:start + chunk], cfg, cfg.predict,
                                    progress and len(starts) == 1))
        if start + chunk < len(images):
            write_cache(path, {"probs": np.concatenate(parts)}, key)
    return np.concatenate(parts), done


def prediction_key(model: DGC | Classifier, cfg: RunConfig, images: np.ndarray) -> str:
    """SHA-256 of what a test prediction depends on: the weights, the images and the settings."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(json.dumps({"predict": asdict(cfg.predict), "seed": cfg.seed,
                              "device": cfg.device}, sort_keys=True).encode())
    return digest.hexdigest()


def quiet(_: str) -> None:
    """A log that drops its messages (the other torchrun processes)."""


def save_predictions(path: Path, y_true: np.ndarray, probs: np.ndarray) -> None:
    """Test labels, predicted labels and probabilities, so figures need no re-prediction."""
    atomic_write(path, lambda f: np.savez_compressed(
        f, y_true=np.asarray(y_true, dtype=np.int64), y_pred=probs.argmax(1).astype(np.int64),
        probs=probs.astype(np.float32)))


def to_train_data(data: ImbalancedData, cfg: RunConfig) -> TrainData:
    x, y, x_val, y_val = split_validation(data.x_train, data.y_train, cfg.train.val_fraction,
                                          cfg.seed)
    return TrainData(
        x=images_to_tensor(x, cfg.device), y=torch.from_numpy(y).long().to(cfg.device),
        train_counts=torch.as_tensor(data.train_counts, dtype=torch.long),
        x_val=images_to_tensor(x_val, cfg.device),
        y_val=torch.from_numpy(y_val).long().to(cfg.device),
        hflip=data.hflip,
    )


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
    """Make `best.pt` hold the best epoch the checkpoint records.

    A run stopped between its two saves of an epoch, or resumed from the previous checkpoint
    generation, can find `best.pt` from another epoch; the checkpoint's own copy of the best
    weights rewrites it. Checkpoints written before they carried that copy use `best.pt` when
    its epoch agrees, and are refused when it does not.
    """
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
    if trainer.run_dir is not None:  # process 0 alone writes the run's files
        save_checkpoint(path, {"model": trainer.best_weights, **trainer.best})
        log(f"dgc: {path} {what}; rewrote it with the best epoch ({epoch}) from the checkpoint")


def full_data(cfg: RunConfig) -> ImbalancedData:
    """The imbalanced dataset a run's configuration names (its dataset, seed, folder, profile
    and folder reading settings), held-out classes included."""
    return load_imbalanced(cfg.exp, cfg.seed, cfg.data_dir, cfg.profile,
                           image_size=cfg.image_size, test_fraction=cfg.test_fraction)


def run_data(cfg: RunConfig) -> ImbalancedData:
    """The data a run trains and tests on: `full_data` without the classes it holds out."""
    return hold_out(full_data(cfg), cfg.train.held_out)


def recorded_data(run: Run) -> ImbalancedData:
    """The data a trained run names, refused when it is no longer what the run recorded."""
    data = run_data(run.cfg)
    check_fingerprints(run.fingerprints, data_fingerprints(data), run.directory or Path("."),
                       describe_source(run.cfg))
    return data


def load_run(run_dir: str | Path) -> Run:
    """The evaluated model (`best.pt`) of a run directory, ready to predict: on the device it
    was trained on, or on the CPU where that is a GPU this machine lacks (and then in float32:
    bfloat16 on a CPU gives other numbers than the GPU's, slower on most CPUs)."""
    folder = RunDir(run_dir)
    if not folder.path.is_dir():
        raise DGCError(f"run directory {run_dir} does not exist")
    raw = folder.config()
    cfg = folder.settings(raw)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        cfg = dataclasses.replace(cfg, device="cpu",
                                  train=dataclasses.replace(cfg.train, bf16=False),
                                  predict=dataclasses.replace(cfg.predict, bf16=False))
    try:
        facts = raw["data"]
        shape, names = tuple(facts["image_shape"]), tuple(facts["class_names"])
        counts = np.asarray(facts["train_counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise DGCError(f"{folder / CONFIG} lacks the run's data facts ({error}); restore it "
                       "or train a new run") from error
    model = family_of(cfg).build_model(cfg, shape, len(names))
    load_weights(model, load_checkpoint(folder / BEST)["model"], folder / BEST)
    return Run(model.to(cfg.device).eval(), cfg, names, counts,
               folder.fingerprints(raw), folder.path)


def load_generative_run(run_dir: str | Path, instead: str) -> Run:
    """`load_run` for work that needs DGC's encoder and decoder; a classifier's run is refused
    with `instead`, what to give in its place."""
    run = load_run(run_dir)
    if not family_of(run.cfg).generative:
        raise DGCError(f"{run_dir} holds a {run.cfg.method} classifier, which has no encoder "
                       f"or decoder; {instead}")
    return run


def evaluate_run(run_dir: str | Path, predict: PredictConfig, run: Run | None = None,
                 progress: bool = False) -> tuple[dict[str, Any], Path]:
    """Re-score a run's model (`run`, if already loaded) on the test set into a new
    `eval-*.json` (never metrics.json)."""
    run = run or load_run(run_dir)
    data = recorded_data(run)
    started = time.perf_counter()
    probs = predict_images(run.model, data.x_test, run.cfg, predict, progress)
    seconds = time.perf_counter() - started
    metrics = compute_metrics(data.y_test, probs.argmax(1), data.train_counts, data.class_names,
                              y_prob=probs)
    metrics.update(seconds_predict=round(seconds, 2), predict=asdict(predict))
    return metrics, write_json(Path(run_dir) / f"eval-{predict_tag(predict)}.json", metrics)


def predict_tag(predict: PredictConfig) -> str:
    """The prediction settings in a file name, e.g. bayes-s10 or bayes-s1-top2."""
    tag = f"{predict.rule}-s{predict.samples}" + (f"-top{predict.top_k}" if predict.top_k else "")
    tag += ("-mmd" if predict.mmd_term else "") + ("-importance" if predict.importance else "")
    return tag + ("-bf16" if predict.bf16 else "") + latent_tag(predict)


def latent_tag(predict: PredictConfig) -> str:
    """A learned prior's weight in a file name, e.g. -latent0.5; empty at the usual 1."""
    return f"-latent{predict.latent_weight:g}" if predict.latent_weight != 1.0 else ""


def decompose_run(run_dir: str | Path, predict: PredictConfig,
                  run: Run | None = None) -> tuple[dict[str, Any], Path]:
    """ACSA and cross-class spread of each Bayes-rule term alone on the test set (`run`, if
    already loaded, is the run's model)."""
    run = run or load_run(run_dir)
    data = recorded_data(run)
    x = images_to_tensor(data.x_test, run.cfg.device)
    report = decompose(run.generator, x, data.y_test, predict, seed=run.cfg.seed)
    # named by the settings a decomposition uses (it scores every class, without the MMD term)
    tag = f"s{predict.samples}" + ("-bf16" if predict.bf16 else "") + latent_tag(predict)
    return report, write_json(Path(run_dir) / f"decomposition-{tag}.json", report)
