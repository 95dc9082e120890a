"""Typed configuration of a run, with the named presets `paper`, `cpu` and `images`.

A run is fully described by a `RunConfig`; `config.json` in every run directory is its `asdict`.
Presets give the architecture and schedule per dataset family; methods (see
`dgc.methods.registry`) then change what makes them differ from each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dgc.core.errors import DGCError
from dgc.data.folder import SIZE_RANGE
from dgc.data.registry import DATASETS

SCHEDULES = ("manual", "manual_smooth", "manual_released", "manual_smooth_released", "cosine",
             "constant")
INITS = ("paper", "released", "torch")
RULES = ("bayes", "label", "recon")
KEEP = ("best", "last")  # the epoch whose weights a run evaluates
VIEWS = ("image", "dihedral")  # what a prediction averages over: the image, or its 8 symmetries
BASELINE_LOSSES = ("ce", "focal", "ldam")  # dgc.nn.losses.LOSSES, torch-free
CLASS_WEIGHTINGS = ("none", "inverse", "effective")
RESAMPLERS = ("none", "ros", "smote", "dgc")
SECTIONS = ("model", "train", "predict", "baseline")
PRIORS = ("normal", "mixture", "class")
BACKBONES = ("conv", "resnet", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
PAPER_SAMPLES = 10  # S of METHOD §4
TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0"}
# The prefix of the methods with a decoder (dgc, dgc-faithful, dgcmm): the config layer cannot
# see the method registry, and a config.json's upgrade needs to know (`RunConfig.from_dict`).
DECODER_METHODS = "dgc"
# Settings that were renamed: the old name is refused with a message naming the new one.
RENAMED = {"baseline.logit_tau": "train.logit_adjust_tau (logit adjustment, for every method)"}
# Settings with their own command-line option, named by it in messages.
OPTIONS = {"seed": "--seed", "threads": "--threads", "profile": "--profile",
           "device": "--device", "train.epochs": "--epochs", "train.lr": "--lr",
           "train.sampling_rate": "--sampling-rate", "train.val_fraction": "--val-fraction",
           "train.grad_clip": "--grad-clip", "predict.samples": "--samples",
           "predict.rule": "--rule", "predict.top_k": "--top-k", "predict.views": "--views",
           "image_size": "--image-size", "test_fraction": "--test-fraction",
           "model.backbone": "--backbone",
           "letterbox": "--letterbox"}
# The least optimiser steps of a small dataset's cpu preset, measured on digits' validation
# split (docs/results/digits-default.md).
SMALL_DATA_STEPS = 2500
# The `images` preset's image size and epochs, chosen on ELPV's validation split
# (docs/results/real-images.md).
IMAGES_SIZE = 96
IMAGES_EPOCHS = 20
# The least image side a pretrained EfficientNet-Lite takes: its five halvings reduce less to
# nothing.
PRETRAINED_MIN_SIZE = 16


@dataclass
class ModelConfig:
    """Architecture of METHOD §1; `width`/`decoder_width`: first layer's filters (paper: 128).

    `encoder_relu`: a ReLU after the encoder's hidden layer, where the label joins the image.
    Off, the path from the flattened trunk to μ and log σ² is linear, as in the authors'
    released code, so the label adds a class offset to both. `init`: "paper" draws every weight
    from N(0, 0.01²); "released" as the released code, the encoder's convolutions from that
    normal truncated at two standard deviations; "torch" is PyTorch's default.

    `backbone` is the image trunk of the encoder and of the baselines' network
    (`dgc.nn.backbones`): "conv" (METHOD §1), "resnet" (from scratch) or an ImageNet-trained
    "efficientnet-lite0|1|2"; DGC's decoder mirrors the residual one for all but "conv".
    `decoder_crop` makes that decoder start at 4×4 and crop what overshoots the image, as it did
    before it started at the size that doubles up to the image exactly: a config.json written
    then, which lacks the field, gets it on for the methods with a decoder, so that its weights
    still fit.

    `prior` is p(z): "normal" N(0, I) as METHOD §1; "mixture" a learned Gaussian mixture with one
    component per class (DGCMM, METHOD §9); "class" the same mixture with component c tied to
    class c, i.e. a learned class-conditional prior p(z | y = c).
    """

    latent_dim: int = 64
    width: int = 128
    decoder_width: int = 128
    hidden: int = 4096
    head_hidden: tuple[int, ...] = ()
    kernel: int = 4
    label_in_mean: bool = True
    encoder_relu: bool = True
    init: str = "paper"
    prior: str = "normal"
    backbone: str = "conv"
    decoder_crop: bool = False


@dataclass
class TrainConfig:
    """Objective (METHOD §2), latent oversampling (§3) and schedule of training.

    `prior_weight` weighs the KL of q(z|x,y) to a learned prior (`model.prior` other than
    "normal"), the DGCMM regulariser that stands beside (or, with `mmd_weight` 0, replaces) the
    MMD to N(0, I).
    `bf16` runs the training steps' forward passes under bfloat16 autocast (`dgc.core.precision`).
    `held_out` lists classes (of the full dataset) left out of training and testing, whose
    test images `dgc evaluate --ood heldout` scores as novel (`dgc.data.heldout`).
    `steps`, when set, is the least number of optimiser steps: a run trains `epochs`, or more
    whole epochs where its training split needs them to reach `steps` (`with_steps`), so a
    small dataset gets enough updates whatever its size; setting `epochs` (`--epochs`) clears
    it.
    With `augment`, `dihedral`, `rotate` (degrees) and `jitter` (brightness and contrast) add
    the transformations of `dgc.train.augment` for data whose classes they do not change.
    The long-tail recipe (Alshammari et al. 2022; Zhang et al. 2018): `weight_decay` is AdamW's
    decoupled decay, `max_norm` caps the norm of every class's weights in the last layer (the
    label head's for DGC) after each step, and `mixup` is the Beta(α, α) of mixup, of the images
    for the baselines and of the latent codes of DGC's oversampled head step.
    `keep` names the epoch whose weights the run evaluates: "best", the best validation ACSA's
    (the last epoch's without a validation split), or "last", the last epoch's even with one;
    experiments/checkpoint_rule.py compares the two on validation images that did not choose.
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
    held_out: tuple[int, ...] = ()
    dihedral: bool = False
    rotate: float = 0.0
    jitter: float = 0.0
    weight_decay: float = 0.0
    max_norm: float | None = None
    mixup: float = 0.0
    keep: str = "best"


@dataclass
class PredictConfig:
    """Bayes-rule prediction of METHOD §4.

    `top_k` spends the decoder only on the K classes the cheap terms (the label term, and a
    learned prior's) rank best (None: all, as METHOD §4); `importance` adds log p(z) − log q(z|x,y)
    to every sample's weight (Eq. 9 leaves it out; a learned prior's log p(z) is already there,
    so it adds − log q); `latent_weight` scales a learned prior's log p(z) in the score (DGCMM;
    1 is Bayes' rule); `decode_batch` bounds memory as the number of codes per decoder pass;
    `bf16` predicts (and validates) under bfloat16 autocast.
    `mmd_term` adds λ · MMD between each class's codes and N(0, I), computed over chunks of
    `mmd_images` images as the released code's evaluation does; it depends on the rest of the
    chunk, so it is off by default.
    `views` = "dihedral" averages the class probabilities over the eight symmetries of a square
    (mirrors and 90° rotations) of each image, for any method trained on them
    (`train.dihedral`); validation, calibration, label shift, novelty scores and a
    decomposition of the rule's terms see the image alone.
    """

    samples: int = PAPER_SAMPLES
    rule: str = "bayes"
    top_k: int | None = None
    mmd_term: bool = False
    mmd_images: int = 10
    importance: bool = False
    decode_batch: int = 4096
    bf16: bool = False
    latent_weight: float = 1.0
    views: str = "image"


@dataclass
class BaselineConfig:
    """Loss, class weights and resampling of the discriminative baselines (`dgc.train.classifier`).

    DGC runs ignore this section. `weighting` multiplies each example's loss by its class's
    weight from the epoch `weights_from · epochs` on (0: always; LDAM-DRW: 0.8). The defaults
    are the published ones:

    - `focal_gamma` = 2: focal loss, Lin et al. 2017 (their best γ);
    - `cb_beta` = 0.9999: "effective number" class weights, Cui et al. 2019, the value Cao et
      al. 2019 also use for deferred re-weighting;
    - `ldam_max_margin` = 0.5 and `ldam_scale` = 30: LDAM, Cao et al. 2019, with deferred
      re-weighting from 80 % of the epochs (their epoch 160 of 200);
    - `smote_k` = 5: SMOTE's neighbours, Chawla et al. 2002 (imbalanced-learn's default),
      lowered to the smallest class's size − 1 where that is smaller.

    `resample` "dgc" grows every class with images that the DGC run `generator` (a folder;
    `{seed}` in it stands for the run's seed) decodes from its posteriors (`dgc.nn.generation`).
    """

    loss: str = "ce"
    weighting: str = "none"
    weights_from: float = 0.0
    resample: str = "none"
    focal_gamma: float = 2.0
    cb_beta: float = 0.9999
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    smote_k: int = 5
    generator: str | None = None


@dataclass
class RunConfig:
    """Everything that determines a run's numbers, plus where it writes them.

    `image_size`, `test_fraction` and `letterbox` are the class-folder dataset's reading settings
    (None: its defaults, see `dgc.data.folder`).
    """

    exp: str = "fashion"
    seed: int = 1
    method: str = "dgc"
    preset: str = "cpu"
    data_dir: str | None = None
    profile: tuple[int, ...] | None = None
    image_size: int | None = None
    test_fraction: float | None = None
    letterbox: bool | None = None
    out: str | None = None
    device: str = "cpu"
    threads: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    @property
    def out_dir(self) -> str:
        """The run's folder: `out`, or `default_out`'s when none was given."""
        return self.out or default_out(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config from `to_dict` output (JSON turns tuples into lists).

        A config.json written before the `baseline` section existed gets its defaults, and one
        written before `model.decoder_crop` the decoder its weights were trained in.
        """
        flat = {k: v for k, v in data.items() if k not in SECTIONS}
        if flat.get("profile") is not None:
            flat["profile"] = tuple(flat["profile"])
        model = dict(data["model"], head_hidden=tuple(data["model"]["head_hidden"]))
        model.setdefault("decoder_crop", model.get("backbone", "conv") != "conv"
                         and str(data.get("method", "dgc")).startswith(DECODER_METHODS))
        train = dict(data["train"], held_out=tuple(data["train"].get("held_out", ())))
        baseline = dict(data.get("baseline", {}))
        if baseline.get("loss") == "logit-adjust":  # a run from before the one τ setting
            baseline["loss"] = "ce"
            train["logit_adjust_tau"] = baseline.get("logit_tau", 1.0)
        baseline.pop("logit_tau", None)
        return cls(**flat, model=ModelConfig(**model), train=TrainConfig(**train),
                   predict=PredictConfig(**data["predict"]), baseline=BaselineConfig(**baseline))


def family(exp: str) -> str:
    """The architecture and schedule family a dataset's registry entry names."""
    if exp not in DATASETS:
        raise DGCError(f"unknown dataset {exp!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[exp].family


@dataclass(frozen=True)
class Preset:
    """A named preset's settings for one dataset; `image_size` (None: the data's own size) is
    what a run gets where `--image-size` is not given."""

    model: ModelConfig
    train: TrainConfig
    predict: PredictConfig
    image_size: int | None = None


def paper_preset(exp: str) -> Preset:
    """METHOD §1/§2 as published: the MNIST-like setting, or CelebA's (k = 128, MLP head)."""
    if family(exp) == "celeba":
        return Preset(
            ModelConfig(latent_dim=128, kernel=5, head_hidden=(500, 500)),
            TrainConfig(epochs=30, batch_size=25, lr=5e-5, schedule="manual_smooth", lvo=False,
                        pretrain_batch=256),
            PredictConfig(),
        )
    return Preset(ModelConfig(), TrainConfig(), PredictConfig())


def cpu_preset(exp: str) -> Preset:
    """A narrow network and short schedule: one Fashion-MNIST seed in minutes on two cores.

    Same objective and prediction as `paper`; only width, epochs and learning rate differ
    (lr 1e-5 is too slow for a short schedule, 1e-3 is unstable: METHOD §9). Digits and class
    folders, which can be small, train at least `SMALL_DATA_STEPS` optimiser steps; digits' 8×8
    images get no crop (a one-pixel shift is an eighth of the image) and a network twice as wide
    as its first one (docs/results/digits-default.md).
    """
    paper = paper_preset(exp)
    if family(exp) == "digits":
        return dataclasses.replace(
            paper,
            model=dataclasses.replace(paper.model, latent_dim=16, width=32, decoder_width=8,
                                      hidden=256),
            train=dataclasses.replace(paper.train, epochs=30, steps=SMALL_DATA_STEPS,
                                      batch_size=50, lr=1e-3, pretrain_batch=500, crop_pad=0))
    steps = SMALL_DATA_STEPS if family(exp) == "folder" else None
    return dataclasses.replace(
        paper,
        model=dataclasses.replace(paper.model, width=32, decoder_width=8, hidden=512),
        train=dataclasses.replace(paper.train, epochs=40, steps=steps, lr=1e-4))


def images_preset(exp: str) -> Preset:
    """Class folders and ELPV: the ImageNet-pretrained EfficientNet-Lite0 as every method's
    image network, fine-tuned for `IMAGES_EPOCHS` epochs at `IMAGES_SIZE` px,
    with mirrors and 90° rotations where the dataset says they keep the class (and predicting
    with the mean over them), evaluating the last epoch's weights: on a validation split this
    small the best of twenty noisy epochs is partly noise (experiments/checkpoint_rule.py).

    The `cpu` preset's 32-filter network at 64 px was chosen for Fashion-MNIST; on ELPV's defect
    images it memorises its training set. Network, size and schedule were chosen on ELPV's
    validation split (docs/results/real-images.md). Encoder pre-training takes 200 images a
    step, as a batch of 1 000 at this size does not fit a 24 GB machine."""
    if family(exp) != "folder":
        raise DGCError(f"the images preset is for class folders and ELPV; {exp}'s small images "
                       f"take the cpu or paper preset")
    cpu, dihedral = cpu_preset(exp), DATASETS[exp].dihedral
    return Preset(dataclasses.replace(cpu.model, backbone="efficientnet-lite0"),
                  dataclasses.replace(cpu.train, epochs=IMAGES_EPOCHS, steps=None,
                                      pretrain_batch=200, dihedral=dihedral, keep="last"),
                  dataclasses.replace(cpu.predict, views="dihedral" if dihedral else "image"),
                  image_size=IMAGES_SIZE)


PRESETS = {"paper": paper_preset, "cpu": cpu_preset, "images": images_preset}


def default_preset(exp: str, cuda: bool) -> str:
    """`images` for class folders and ELPV, else `paper` with a CUDA device and `cpu` without."""
    return "images" if family(exp) == "folder" else "paper" if cuda else "cpu"


def build_config(exp: str, preset: str, **run_fields: Any) -> RunConfig:
    """The preset's configuration for a dataset, before a method adjusts it, with the preset's
    image size where none is given."""
    if preset not in PRESETS:
        raise DGCError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = PRESETS[preset](exp)
    if run_fields.get("image_size") is None:
        run_fields = {**run_fields, "image_size": chosen.image_size}
    return RunConfig(exp=exp, preset=preset, model=chosen.model, train=chosen.train,
                     predict=chosen.predict, **run_fields)


def apply_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply `section.field=value` settings (e.g. `train.lvo=false`, `model.width=32`), each
    converted to its field's type (see `convert`)."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        section, _, name = key.strip().partition(".")
        if key.strip() in RENAMED:
            raise DGCError(f"{key.strip()} is now {RENAMED[key.strip()]}; set that instead")
        if not sep or section not in SECTIONS or not name:
            raise DGCError(f"--set takes section.field=value with section model, train, "
                           f"predict or baseline, got {assignment!r}")
        part = getattr(cfg, section)
        kinds = typing.get_type_hints(type(part))
        if name not in kinds:
            known = ", ".join(f.name for f in dataclasses.fields(part))
            raise DGCError(f"{section} has no setting {name!r}; known: {known}")
        cfg = with_settings(cfg, {f"{section}.{name}": convert(text, kinds[name],
                                                               f"--set {section}.{name}")})
    return cfg


def with_settings(cfg: RunConfig, settings: Mapping[str, Any]) -> RunConfig:
    """The configuration with `section.field` settings set to values of their types; setting
    `train.epochs` clears `train.steps`, which it replaces."""
    for key, value in settings.items():
        section, _, name = key.partition(".")
        changes = {name: value, **({"steps": None} if key == "train.epochs" else {})}
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section),
                                                                       **changes)})
    return cfg


def with_steps(cfg: RunConfig, rows: int, processes: int = 1) -> RunConfig:
    """The configuration with its epochs raised to reach `train.steps` on `rows` training rows;
    under torchrun a step takes a batch from each of the `processes`."""
    t = cfg.train
    if t.steps is None:
        return cfg
    per_epoch = max(1, math.ceil(rows / (t.batch_size * processes)))
    return dataclasses.replace(cfg, train=dataclasses.replace(
        t, epochs=max(t.epochs, math.ceil(t.steps / per_epoch))))


def predict_tag(predict: PredictConfig) -> str:
    """The prediction settings in a file name, e.g. bayes-s10 or bayes-s1-top2."""
    tag = f"{predict.rule}-s{predict.samples}" + (f"-top{predict.top_k}" if predict.top_k else "")
    tag += ("-mmd" if predict.mmd_term else "") + ("-importance" if predict.importance else "")
    tag += ("-bf16" if predict.bf16 else "") + latent_tag(predict)
    return tag + ("-dihedral" if predict.views == "dihedral" else "")


def latent_tag(predict: PredictConfig) -> str:
    """A learned prior's weight in a file name, e.g. -latent0.5; empty at the usual 1."""
    return f"-latent{predict.latent_weight:g}" if predict.latent_weight != 1.0 else ""


def default_out(cfg: RunConfig) -> str:
    return str(Path("runs") / f"{cfg.exp}-{cfg.method}-s{cfg.seed}")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict (a config's, a report's) as one level of `section.field` keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def as_asked(settings: dict[str, Any]) -> dict[str, Any]:
    """A config dict without what `with_steps` derives (the epochs, when `train.steps` is set),
    to compare a finished run's settings with a new request."""
    if settings.get("train", {}).get("steps") is None:
        return settings
    return {**settings, "train": {**settings["train"], "epochs": None}}


def convert(text: str, kind: Any, key: str) -> Any:
    """`text` as a value of the type `kind`: bool (true/false, yes/no, on/off, 1/0), int,
    finite float, str, `tuple[int, ...]` (`[32, 32]` or `32,32`) or `X | None` (`null`/`none`).

    Hand-written rather than a config library's: these five types are all a run has, and the
    messages name the setting and say what it takes."""
    word = text.strip()
    args = typing.get_args(kind)
    if type(None) in args:
        if word.lower() in ("null", "none"):
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        if word.lower() in TRUE_WORDS | FALSE_WORDS:
            return word.lower() in TRUE_WORDS
        raise DGCError(f"{key} is true or false, got {text!r}")
    if typing.get_origin(kind) is tuple:
        items = word.removeprefix("[").removesuffix("]").removeprefix("(").removesuffix(")")
        return tuple(convert(item, typing.get_args(kind)[0], key)
                     for item in items.split(",") if item.strip())
    if kind is int:
        try:
            return int(word)
        except ValueError:
            raise DGCError(f"{key} takes a whole number, got {text!r}") from None
    if kind is float:
        try:
            value = float(word)
        except ValueError:
            raise DGCError(f"{key} takes a number, got {text!r}") from None
        if not math.isfinite(value):
            raise DGCError(f"{key} must be a finite number, got {text!r}")
        return value
    return json.loads(word) if len(word) > 1 and word[0] == word[-1] == '"' else word


def matches(value: Any, kind: Any) -> bool:
    """Whether a configuration value has its field's type (floats finite, bools not numbers)."""
    args = typing.get_args(kind)
    if type(None) in args:
        return value is None or matches(value, next(a for a in args if a is not type(None)))
    if typing.get_origin(kind) is tuple:
        return isinstance(value, tuple) and all(matches(v, args[0]) for v in value)
    if kind is bool:
        return isinstance(value, bool | np.bool_)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    if kind is float:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
                and math.isfinite(value))
    return isinstance(value, kind)


def typed_settings(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Every setting, named `field` or `section.field`, with its value and its field's type."""
    return {prefix + name: (getattr(part, name), kind)
            for prefix, part in (("", cfg), *((f"{s}.", getattr(cfg, s)) for s in SECTIONS))
            for name, kind in typing.get_type_hints(type(part)).items() if name not in SECTIONS}


def kind_name(kind: Any) -> str:
    """A field's type as the messages say it."""
    names = {bool: "true or false", int: "a whole number", float: "a finite number",
             str: "a string"}
    args = typing.get_args(kind)
    if type(None) in args:
        return kind_name(next(a for a in args if a is not type(None))) + " or null"
    if typing.get_origin(kind) is tuple:
        return f"a list of {kind_name(args[0])}s"
    return names.get(kind, str(kind))


def option(key: str) -> str:
    """How the user names a setting: its command-line option where it has one."""
    if key not in OPTIONS:
        return key
    return f"{OPTIONS[key]} ({key})" if "." in key else OPTIONS[key]


def type_error(key: str, value: Any, name: str) -> str | None:
    """What is wrong with the type of `value` for the setting `key`, calling it `name`."""
    kind = KINDS[key]
    return None if matches(value, kind) else f"{name} is {value!r}; expected {kind_name(kind)}"


def range_error(key: str, value: Any, name: str) -> str | None:
    """What is wrong with the range of a well-typed `value` for `key`, calling it `name`."""
    ok, wanted = RANGES.get(key, (lambda _: True, ""))
    return None if value is None or ok(value) else f"{name} must be {wanted}, got {value!r}"


def setting_error(key: str, value: Any, name: str) -> str | None:
    """The one check of a setting's value, for the command line, config.json and the
    estimator's parameters alike: its type, then its range; None when it is fine."""
    return type_error(key, value, name) or range_error(key, value, name)


def validate(cfg: RunConfig) -> None:
    """Refuse settings of the wrong type or outside their range, naming the option, before any
    data is loaded or anything is written."""
    settings = typed_settings(cfg)
    errors = [error for key, (value, _) in settings.items()
              if (error := type_error(key, value, option(key)))]
    if errors:
        raise DGCError("; ".join(errors))
    options = DATASETS[cfg.exp].options if cfg.exp in DATASETS else ()  # the estimator's own
    for name in ("image_size", "test_fraction", "letterbox"):
        if getattr(cfg, name) is not None and name not in options:
            others = [n for n, info in DATASETS.items() if name in info.options and n != "folder"]
            also = f" (and of {', '.join(others)})" if others else ""
            raise DGCError(f"{option(name)} is a setting of the folder dataset{also}; the "
                           f"{cfg.exp} dataset does not take it")
    for key, (value, _) in settings.items():
        if error := range_error(key, value, option(key)):
            raise DGCError(error)
    if (cfg.model.backbone.startswith("efficientnet") and cfg.image_size is not None
            and cfg.image_size < PRETRAINED_MIN_SIZE):
        whose = " (the images preset's network)" if cfg.preset == "images" else ""
        raise DGCError(f"--image-size {cfg.image_size} is too small for --backbone "
                       f"{cfg.model.backbone}{whose}, which halves images five times: give "
                       f"{PRETRAINED_MIN_SIZE} or more, or --preset cpu for small images")
    if cfg.predict.views == "dihedral" and not cfg.train.dihedral:
        raise DGCError("--views dihedral (predict.views) averages over mirrors and 90° rotations, "
                       "which this run never saw in training (train.dihedral is false); predict "
                       "with --views image (--set predict.views=image in bench and sweep), or "
                       "train with --set train.dihedral=true")
    if (cfg.baseline.resample == "dgc") != (cfg.baseline.generator is not None):
        raise DGCError("baseline.resample=dgc and baseline.generator=RUN (a DGC run of the same "
                       "training split; {seed} stands for the seed) go together")


Range = tuple[Callable[[Any], bool], str]  # (test, what the value must be)


def at_least(low: int) -> Range:
    return (lambda value: value >= low), f"at least {low}"


def one_of(choices: tuple[str, ...]) -> Range:
    return (lambda value: value in choices), f"one of {', '.join(choices)}"


POSITIVE: Range = ((lambda value: value > 0), "a positive number")
NON_NEGATIVE: Range = ((lambda value: value >= 0), ">= 0")
FRACTION: Range = ((lambda value: 0 <= value < 1), "in [0, 1)")
COUNTS = ("threads", "model.latent_dim", "model.width", "model.decoder_width", "model.hidden",
          "model.kernel", "train.epochs", "train.eval_every", "train.val_samples",
          "predict.samples", "predict.decode_batch", "predict.mmd_images", "baseline.smote_k")
WEIGHTS = ("train.mmd_weight", "train.prior_weight", "train.logit_adjust_tau",
           "train.weight_decay", "train.mixup",
           "train.sampling_rate", "train.pretrain_steps", "train.pretrain_tol", "train.crop_pad",
           "predict.latent_weight", "baseline.focal_gamma", "baseline.ldam_max_margin")
# Every setting with a range; None (where the type allows it) is always fine.
RANGES: dict[str, Range] = {
    **dict.fromkeys(COUNTS, at_least(1)),
    **dict.fromkeys(WEIGHTS, NON_NEGATIVE),
    **dict.fromkeys(("train.beta1", "train.val_fraction", "baseline.cb_beta"), FRACTION),
    **dict.fromkeys(("train.lr", "baseline.ldam_scale"), POSITIVE),
    "seed": ((lambda v: 0 <= v < 2**32), "in 0..2**32-1"),
    "device": ((lambda v: re.fullmatch(r"(cpu|cuda|mps|xpu)(:\d+)?", v) is not None),
               "a torch device such as cpu, cuda or cuda:1"),
    "profile": ((lambda v: len(v) > 0 and min(v) >= 1), "positive counts, one per class"),
    "train.held_out": ((lambda v: min(v, default=0) >= 0), "class indices such as [8,9]"),
    "train.steps": at_least(1),
    "image_size": ((lambda v: SIZE_RANGE[0] <= v <= SIZE_RANGE[1]),
                   f"in {SIZE_RANGE[0]}..{SIZE_RANGE[1]}"),
    "test_fraction": ((lambda v: 0 < v < 1), "in (0, 1)"),
    "model.head_hidden": ((lambda v: all(n >= 1 for n in v)), "positive layer sizes"),
    "model.init": one_of(INITS),
    "model.prior": one_of(PRIORS),
    "model.backbone": one_of(BACKBONES),
    "train.batch_size": (at_least(2)[0], "an integer >= 2 (the MMD needs pairs)"),
    "train.pretrain_batch": at_least(2),
    "train.schedule": one_of(SCHEDULES),
    "train.keep": one_of(KEEP),
    "predict.views": one_of(VIEWS),
    "train.cls_weight": (POSITIVE[0], "positive (or null: summed cross-entropy)"),
    "train.grad_clip": (POSITIVE[0], "positive (or null: no clipping)"),
    "train.max_norm": (POSITIVE[0], "positive (or null: no cap)"),
    "train.rotate": ((lambda v: 0 <= v <= 180), "degrees in [0, 180]"),
    "train.jitter": ((lambda v: 0 <= v < 1), "in [0, 1)"),
    "predict.rule": one_of(RULES),
    "predict.top_k": (at_least(1)[0], "at least 1 (or null: every class)"),
    "baseline.loss": one_of(BASELINE_LOSSES),
    "baseline.weighting": one_of(CLASS_WEIGHTINGS),
    "baseline.resample": one_of(RESAMPLERS),
    "baseline.weights_from": ((lambda v: 0 <= v <= 1), "a fraction of the epochs in [0, 1]"),
}
KINDS = {key: kind for key, (_, kind) in typed_settings(RunConfig()).items()}
