"""Typed configuration of a run, with the named presets `paper` and `cpu`.

A run is fully described by a `RunConfig`; `config.json` in every run directory is its `asdict`.
Presets give the architecture and schedule per dataset family; methods (see `dgc.methods`) then
change what makes them differ from each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from dgc.data.folder import SIZE_RANGE
from dgc.data.registry import DATASETS
from dgc.errors import DGCError

SCHEDULES = ("manual", "manual_smooth", "cosine", "constant")
RULES = ("bayes", "label", "recon")
BASELINE_LOSSES = ("ce", "focal", "ldam", "logit-adjust")
CLASS_WEIGHTINGS = ("none", "inverse", "effective")
RESAMPLERS = ("none", "ros", "smote")
SECTIONS = ("model", "train", "predict", "baseline")
PRIORS = ("normal", "mixture", "class")
SPEC_SAMPLES = 10  # S of SPEC §4
# The least optimiser steps of a small dataset's cpu preset, measured on digits' validation
# split (docs/RESULTS.md, "The quick default").
SMALL_DATA_STEPS = 2500
BF16_NEEDS_CUDA = ("--bf16 (bfloat16 autocast) is for CUDA devices: on the CPU it is slower than "
                   "float32 and only changes the numbers; drop --bf16 or use --device cuda")


@dataclass
class ModelConfig:
    """Architecture of SPEC §1; `width`/`decoder_width`: first layer's filters (paper: 128).

    `prior` is p(z): "normal" N(0, I) as SPEC §1; "mixture" a learned Gaussian mixture with one
    component per class (DGCMM, SPEC §9); "class" the same mixture with component c tied to
    class c, i.e. a learned class-conditional prior p(z | y = c).
    """

    latent_dim: int = 64
    width: int = 128
    decoder_width: int = 128
    hidden: int = 4096
    head_hidden: tuple[int, ...] = ()
    kernel: int = 4
    label_in_mean: bool = True
    init: str = "paper"
    prior: str = "normal"


@dataclass
class TrainConfig:
    """Objective (SPEC §2), latent oversampling (§3) and schedule of training.

    `prior_weight` weighs the KL of q(z|x,y) to a learned prior (`model.prior` other than
    "normal"), the DGCMM regulariser that stands beside (or, with `mmd_weight` 0, replaces) the
    MMD to N(0, I).
    `bf16` runs the training steps' forward passes under bfloat16 autocast (CUDA only).
    `steps`, when set, is the least number of optimiser steps: a run trains `epochs`, or more
    whole epochs where its training split needs them to reach `steps` (`with_steps`), so a
    small dataset gets enough updates whatever its size; setting `epochs` (`--epochs`) clears
    it.
    """

    epochs: int = 50
    steps: int | None = None
    batch_size: int = 100
    lr: float = 1e-5
    schedule: str = "manual"
    beta1: float = 0.5
    mmd_weight: float = 1.0
    prior_weight: float = 1.0
    cls_weight: float | None = None
    logit_adjust_tau: float = 0.0
    lvo: bool = True
    sampling_rate: float = 0.6
    pretrain_steps: int = 200
    pretrain_batch: int = 1000
    pretrain_tol: float = 0.1
    augment: bool = False
    crop_pad: int = 2
    grad_clip: float | None = None
    val_fraction: float = 0.0
    eval_every: int = 1
    val_samples: int = 1
    bf16: bool = False


@dataclass
class PredictConfig:
    """Bayes-rule prediction of SPEC §4.

    `top_k` spends the decoder only on the K classes the cheap terms (the label term, and a
    learned prior's) rank best (None: all, as SPEC §4); `importance` adds log p(z) − log q(z|x,y)
    to every sample's weight (Eq. 9 leaves it out); `latent_weight` scales a learned prior's
    log p(z) in the score (DGCMM; 1 is Bayes' rule); `decode_batch` bounds memory as the number
    of codes per decoder pass; `bf16` predicts (and validates) under bfloat16 autocast (CUDA
    only).
    """

    samples: int = SPEC_SAMPLES
    rule: str = "bayes"
    top_k: int | None = None
    mmd_term: bool = False
    importance: bool = False
    decode_batch: int = 4096
    bf16: bool = False
    latent_weight: float = 1.0


@dataclass
class BaselineConfig:
    """Loss, class weights and resampling of the discriminative baselines (`dgc.baselines`).

    DGC runs ignore this section. `weighting` multiplies each example's loss by its class's
    weight from the epoch `weights_from · epochs` on (0: always; LDAM-DRW: 0.8). The defaults
    are the published ones:

    - `focal_gamma` = 2: focal loss, Lin et al. 2017 (their best γ);
    - `cb_beta` = 0.9999: "effective number" class weights, Cui et al. 2019, the value Cao et
      al. 2019 also use for deferred re-weighting;
    - `ldam_max_margin` = 0.5 and `ldam_scale` = 30: LDAM, Cao et al. 2019, with deferred
      re-weighting from 80 % of the epochs (their epoch 160 of 200);
    - `logit_tau` = 1: logit adjustment, Menon et al. 2021;
    - `smote_k` = 5: SMOTE's neighbours, Chawla et al. 2002 (imbalanced-learn's default),
      lowered to the smallest class's size − 1 where that is smaller.
    """

    loss: str = "ce"
    weighting: str = "none"
    weights_from: float = 0.0
    resample: str = "none"
    focal_gamma: float = 2.0
    cb_beta: float = 0.9999
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    logit_tau: float = 1.0
    smote_k: int = 5


@dataclass
class RunConfig:
    """Everything that determines a run's numbers, plus where it writes them.

    `image_size` and `test_fraction` are the class-folder dataset's reading settings (None: its
    defaults, see `dgc.data.folder`).
    """

    exp: str = "fashion"
    seed: int = 1
    method: str = "dgc"
    preset: str = "cpu"
    data_dir: str | None = None
    profile: tuple[int, ...] | None = None
    image_size: int | None = None
    test_fraction: float | None = None
    out: str | None = None
    device: str = "cpu"
    threads: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config from `to_dict` output (JSON turns tuples into lists).

        A config.json written before the `baseline` section existed gets its defaults.
        """
        flat = {k: v for k, v in data.items() if k not in SECTIONS}
        if flat.get("profile") is not None:
            flat["profile"] = tuple(flat["profile"])
        model = dict(data["model"], head_hidden=tuple(data["model"]["head_hidden"]))
        return cls(**flat, model=ModelConfig(**model), train=TrainConfig(**data["train"]),
                   predict=PredictConfig(**data["predict"]),
                   baseline=BaselineConfig(**data.get("baseline", {})))


def family(exp: str) -> str:
    """The architecture and schedule family a dataset's registry entry names."""
    if exp not in DATASETS:
        raise DGCError(f"unknown dataset {exp!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[exp].family


def paper_preset(exp: str) -> tuple[ModelConfig, TrainConfig, PredictConfig]:
    """SPEC §1/§2 as published: the MNIST-like setting, or CelebA's (k = 128, MLP head)."""
    if family(exp) == "celeba":
        return (
            ModelConfig(latent_dim=128, kernel=5, head_hidden=(500, 500)),
            TrainConfig(epochs=30, batch_size=25, lr=5e-5, schedule="manual_smooth", lvo=False,
                        pretrain_batch=256),
            PredictConfig(),
        )
    return ModelConfig(), TrainConfig(), PredictConfig()


def cpu_preset(exp: str) -> tuple[ModelConfig, TrainConfig, PredictConfig]:
    """A narrow network and short schedule: one Fashion-MNIST seed in minutes on two cores.

    Same objective and prediction as `paper`; only width, epochs and learning rate differ
    (lr 1e-5 is too slow for a short schedule, 1e-3 is unstable: SPEC §9). Digits and class
    folders, which can be small, train at least `SMALL_DATA_STEPS` optimiser steps; digits' 8×8
    images get no crop (a one-pixel shift is an eighth of the image) and a network twice as wide
    as its first one (docs/RESULTS.md, "The quick default").
    """
    model, train, predict = paper_preset(exp)
    if family(exp) == "digits":
        return (
            dataclasses.replace(model, latent_dim=16, width=32, decoder_width=8, hidden=256),
            dataclasses.replace(train, epochs=30, steps=SMALL_DATA_STEPS, batch_size=50, lr=1e-3,
                                pretrain_batch=500, crop_pad=0),
            predict,
        )
    steps = SMALL_DATA_STEPS if family(exp) == "folder" else None
    return (
        dataclasses.replace(model, width=32, decoder_width=8, hidden=512),
        dataclasses.replace(train, epochs=40, steps=steps, lr=1e-4),
        predict,
    )


PRESETS = {"paper": paper_preset, "cpu": cpu_preset}


def build_config(exp: str, preset: str, **run_fields: Any) -> RunConfig:
    """The preset's configuration for a dataset, before a method adjusts it."""
    if preset not in PRESETS:
        raise DGCError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    model, train, predict = PRESETS[preset](exp)
    return RunConfig(exp=exp, preset=preset, model=model, train=train, predict=predict,
                     **run_fields)


def apply_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply `section.field=value` settings (e.g. `train.lvo=false`, `model.width=32`).

    Values are parsed as JSON (numbers, true/false, null, [lists]); anything else is a string.
    """
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        section, _, name = key.strip().partition(".")
        if not sep or section not in SECTIONS or not name:
            raise DGCError(f"--set takes section.field=value with section model, train, "
                           f"predict or baseline, got {assignment!r}")
        part = getattr(cfg, section)
        if name not in {f.name for f in dataclasses.fields(part)}:
            known = ", ".join(f.name for f in dataclasses.fields(part))
            raise DGCError(f"{section} has no setting {name!r}; known: {known}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, list):
            value = tuple(value)
        changes = {name: value, **({"steps": None} if key.strip() == "train.epochs" else {})}
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(part, **changes)})
    return cfg


def with_steps(cfg: RunConfig, rows: int) -> RunConfig:
    """The configuration with its epochs raised to reach `train.steps` on `rows` training rows."""
    t = cfg.train
    if t.steps is None:
        return cfg
    per_epoch = max(1, math.ceil(rows / t.batch_size))
    return dataclasses.replace(cfg, train=dataclasses.replace(
        t, epochs=max(t.epochs, math.ceil(t.steps / per_epoch))))


def as_asked(settings: dict[str, Any]) -> dict[str, Any]:
    """A config dict without what `with_steps` derives (the epochs, when `train.steps` is set),
    to compare a finished run's settings with a new request."""
    if settings.get("train", {}).get("steps") is None:
        return settings
    return {**settings, "train": {**settings["train"], "epochs": None}}


def validate(cfg: RunConfig) -> None:
    """Refuse settings that cannot work, before any data is loaded or anything is written."""
    t, p, m = cfg.train, cfg.predict, cfg.model
    checks = [
        (t.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {t.schedule!r}"),
        (p.rule in RULES, f"prediction rule must be one of {RULES}, got {p.rule!r}"),
        (t.epochs >= 1, f"--epochs must be at least 1, got {t.epochs}"),
        (t.steps is None or t.steps >= 1, f"train.steps must be at least 1, got {t.steps}"),
        (t.batch_size >= 2, f"batch size must be at least 2 (MMD needs pairs), got {t.batch_size}"),
        (t.lr > 0, f"learning rate must be positive, got {t.lr}"),
        (t.sampling_rate >= 0, f"--sampling-rate must be >= 0, got {t.sampling_rate}"),
        (0 <= t.val_fraction < 1, f"--val-fraction must be in [0, 1), got {t.val_fraction}"),
        (p.samples >= 1, f"--samples must be at least 1, got {p.samples}"),
        (p.latent_weight >= 0, f"predict.latent_weight must be >= 0, got {p.latent_weight}"),
        (p.top_k is None or p.top_k >= 1, f"top_k must be at least 1, got {p.top_k}"),
        (m.latent_dim >= 1 and m.width >= 1 and m.decoder_width >= 1,
         "latent size and widths must be positive"),
        (m.init in ("paper", "torch"), f"init must be 'paper' or 'torch', got {m.init!r}"),
        (m.prior in PRIORS, f"model.prior must be one of {PRIORS}, got {m.prior!r}"),
        (t.mmd_weight >= 0 and t.prior_weight >= 0, "train.mmd_weight and train.prior_weight "
                                                    "must be >= 0"),
        (cfg.threads is None or cfg.threads >= 1, f"--threads must be >= 1, got {cfg.threads}"),
        (cfg.image_size is None or SIZE_RANGE[0] <= cfg.image_size <= SIZE_RANGE[1],
         f"--image-size must be in {SIZE_RANGE[0]}..{SIZE_RANGE[1]}, got {cfg.image_size}"),
        (cfg.test_fraction is None or 0 < cfg.test_fraction < 1,
         f"--test-fraction must be in (0, 1), got {cfg.test_fraction}"),
        (not (t.bf16 or p.bf16) or cfg.device.startswith("cuda"), BF16_NEEDS_CUDA),
        *baseline_checks(cfg.baseline),
    ]
    for ok, message in checks:
        if not ok:
            raise DGCError(message)


def baseline_checks(b: BaselineConfig) -> list[tuple[bool, str]]:
    """(condition, message) pairs for the baseline section, as in `validate`."""
    return [
        (b.loss in BASELINE_LOSSES, f"baseline.loss must be one of {BASELINE_LOSSES}, "
                                    f"got {b.loss!r}"),
        (b.weighting in CLASS_WEIGHTINGS, f"baseline.weighting must be one of "
                                          f"{CLASS_WEIGHTINGS}, got {b.weighting!r}"),
        (b.resample in RESAMPLERS, f"baseline.resample must be one of {RESAMPLERS}, "
                                   f"got {b.resample!r}"),
        (0 <= b.weights_from <= 1, f"baseline.weights_from is a fraction of the epochs in "
                                   f"[0, 1], got {b.weights_from}"),
        (0 <= b.cb_beta < 1, f"baseline.cb_beta must be in [0, 1), got {b.cb_beta}"),
        (b.focal_gamma >= 0, f"baseline.focal_gamma must be >= 0, got {b.focal_gamma}"),
        (b.ldam_max_margin >= 0 and b.ldam_scale > 0,
         "baseline.ldam_max_margin must be >= 0 and baseline.ldam_scale > 0"),
        (b.smote_k >= 1, f"baseline.smote_k must be at least 1, got {b.smote_k}"),
    ]
