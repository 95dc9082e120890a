"""A finished run as the commands that use it see it: its model, settings and data. None of this
imports the training stack's orchestration, so a calibration or a report loads a run cheaply."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from dgc.config import RunConfig
from dgc.core.errors import DGCError
from dgc.core.io import load_checkpoint, load_weights
from dgc.data import DATASETS, ImbalancedData, load_imbalanced, split_validation
from dgc.data.heldout import hold_out
from dgc.methods.family import Family, family_of
from dgc.nn.model import DGC, images_to_tensor
from dgc.run.folder import BEST, CONFIG, FINGERPRINTS, RunDir, check_fingerprints
from dgc.train.loop import TrainData


@dataclass
class Run:
    """A trained model with what is needed to use it: classes, counts and configuration."""

    model: nn.Module
    cfg: RunConfig
    class_names: tuple[str, ...]
    train_counts: np.ndarray
    fingerprints: dict[str, str | None] = dataclasses.field(default_factory=dict)
    directory: Path | None = None

    @property
    def family(self) -> Family:
        return family_of(self.cfg)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) of the images the model takes."""
        return cast(tuple[int, ...], self.model.image_shape)

    @property
    def generator(self) -> DGC:
        """The model as a DGC, for work that needs its encoder and decoder."""
        return self.generative("give a DGC run")

    def generative(self, instead: str) -> DGC:
        """The model as a DGC; a classifier's run is refused with `instead`, what to give in
        its place."""
        model = self.family.generator(self.model)
        if model is None:
            raise DGCError(f"{self.directory or 'this run'} holds a {self.cfg.method} "
                           f"classifier, which has no encoder or decoder; {instead}")
        return model


def full_data(cfg: RunConfig) -> ImbalancedData:
    """The imbalanced dataset a run's configuration names (its dataset, seed, folder, profile
    and folder reading settings), held-out classes included."""
    return load_imbalanced(cfg.exp, cfg.seed, cfg.data_dir, cfg.profile,
                           image_size=cfg.image_size, test_fraction=cfg.test_fraction,
                           letterbox=cfg.letterbox)


def run_data(cfg: RunConfig) -> ImbalancedData:
    """The data a run trains and tests on: `full_data` without the classes it holds out."""
    return hold_out(full_data(cfg), cfg.train.held_out)


def data_fingerprints(data: ImbalancedData) -> dict[str, str]:
    """What a run records of its data, to refuse other data later."""
    return {key: getattr(data, key) for key in FINGERPRINTS}


def describe_source(cfg: RunConfig) -> str:
    return f"{cfg.data_dir}" if cfg.data_dir else f"the {cfg.exp} dataset"


def recorded_data(run: Run) -> ImbalancedData:
    """The data a trained run names, refused when it is no longer what the run recorded."""
    data = run_data(run.cfg)
    check_fingerprints(run.fingerprints, data_fingerprints(data), run.directory or Path("."),
                       describe_source(run.cfg))
    return data


def to_train_data(data: ImbalancedData, cfg: RunConfig) -> TrainData:
    """The training rows and the stratified validation split of `train.val_fraction`, as
    tensors on the run's device: the one place a run's split is made."""
    x, y, x_val, y_val = split_validation(data.x_train, data.y_train, cfg.train.val_fraction,
                                          cfg.seed)
    return TrainData(
        x=images_to_tensor(x, cfg.device), y=torch.from_numpy(y).long().to(cfg.device),
        train_counts=torch.as_tensor(data.train_counts, dtype=torch.long),
        x_val=images_to_tensor(x_val, cfg.device),
        y_val=torch.from_numpy(y_val).long().to(cfg.device),
        hflip=data.hflip,
    )


def validation_split(run: Run, data: ImbalancedData | None = None) -> TrainData:
    """The rows a finished run trained on and its validation split, as its trainer saw them
    (`data`: its `recorded_data`, when already read)."""
    return to_train_data(data or recorded_data(run), run.cfg)


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
    model = family_of(cfg).build(cfg, shape, len(names))
    load_weights(model, load_checkpoint(folder / BEST)["model"], folder / BEST)
    return Run(model.to(cfg.device).eval(), cfg, names, counts,
               folder.fingerprints(raw), folder.path)


def load_generative_run(run_dir: str | Path, instead: str) -> Run:
    """`load_run` for work that needs DGC's encoder and decoder; a classifier's run is refused
    with `instead`, what to give in its place."""
    run = load_run(run_dir)
    run.generative(instead)
    return run


def generator_run(cfg: RunConfig) -> DGC:
    """The DGC model of `baseline.generator`, refused unless it trained on this run's split."""
    path = Path(str(cfg.baseline.generator).format(seed=cfg.seed))
    run = load_generative_run(path, "give a DGC run as baseline.generator")
    same = ("exp", "seed", "profile", "image_size", "test_fraction", "letterbox",
            *(("data_dir",) if DATASETS[cfg.exp].user_data else ()))
    ours, theirs = ([getattr(c, k) for k in same] + [c.train.val_fraction, list(c.train.held_out)]
                    for c in (cfg, run.cfg))
    if ours != theirs:
        raise DGCError(f"baseline.generator {path} trained on another split ({', '.join(same)}, "
                       f"validation share, held-out classes: {theirs} vs {ours}); give the DGC "
                       "run of this seed's benchmark")
    return run.generator.to(cfg.device)
