"""Typed configuration of a run, with the named presets `paper` and `cpu`.

A run is fully described by a `RunConfig`; `config.json` in every run directory is its `asdict`.
Presets give the architecture and schedule per dataset family; methods (see `dgc.methods`) then
change what makes them differ from each other.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dgc.errors import DGCError

SCHEDULES = ("manual", "manual_smooth", "cosine", "constant")
RULES = ("bayes", "label", "recon")


@dataclass
class ModelConfig:
    """Architecture of SPEC §1; `width`/`decoder_width`: first layer's filters (paper: 128)."""

    latent_dim: int = 64
    width: int = 128
    decoder_width: int = 128
    hidden: int = 4096
    head_hidden: tuple[int, ...] = ()
    kernel: int = 4
    label_in_mean: bool = True
    init: str = "paper"


@dataclass
class TrainConfig:
    """Objective (SPEC §2), latent oversampling (§3) and schedule of training."""

    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-5
    schedule: str = "manual"
    beta1: float = 0.5
    mmd_weight: float = 1.0
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


@dataclass
class PredictConfig:
    """Bayes-rule prediction of SPEC §4.

    `top_k` spends the decoder only on the K classes the label term ranks best (None: all, as
    SPEC §4); `decode_batch` bounds memory as the number of codes per decoder pass.
    """

    samples: int = 10
    rule: str = "bayes"
    top_k: int | None = None
    mmd_term: bool = False
    decode_batch: int = 4096


@dataclass
class RunConfig:
    """Everything that determines a run's numbers, plus where it writes them."""

    exp: str = "fashion"
    seed: int = 1
    method: str = "dgc"
    preset: str = "cpu"
    data_dir: str | None = None
    profile: tuple[int, ...] | None = None
    out: str | None = None
    device: str = "cpu"
    threads: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config from `to_dict` output (JSON turns tuples into lists)."""
        flat = {k: v for k, v in data.items()
                if k not in ("model", "train", "predict")}
        if flat.get("profile") is not None:
            flat["profile"] = tuple(flat["profile"])
        model = dict(data["model"], head_hidden=tuple(data["model"]["head_hidden"]))
        return cls(**flat, model=ModelConfig(**model), train=TrainConfig(**data["train"]),
                   predict=PredictConfig(**data["predict"]))


def family(exp: str) -> str:
    """Datasets that share a paper architecture and schedule."""
    return {"celeba": "celeba", "digits": "digits"}.get(exp, "mnist")


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
    (lr 1e-5 is too slow for a short schedule, 1e-3 is unstable: SPEC §9).
    """
    model, train, predict = paper_preset(exp)
    if family(exp) == "digits":
        return (
            dataclasses.replace(model, latent_dim=16, width=16, decoder_width=4, hidden=128),
            dataclasses.replace(train, epochs=30, batch_size=50, lr=1e-3, pretrain_batch=500),
            predict,
        )
    return (
        dataclasses.replace(model, width=32, decoder_width=8, hidden=512),
        dataclasses.replace(train, epochs=30, lr=1e-4),
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
        if not sep or section not in ("model", "train", "predict") or not name:
            raise DGCError(f"--set takes section.field=value with section model, train or "
                           f"predict, got {assignment!r}")
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
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(part, **{name: value})})
    return cfg


def validate(cfg: RunConfig) -> None:
    """Refuse settings that cannot work, before any data is loaded or anything is written."""
    t, p, m = cfg.train, cfg.predict, cfg.model
    checks = [
        (t.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {t.schedule!r}"),
        (p.rule in RULES, f"prediction rule must be one of {RULES}, got {p.rule!r}"),
        (t.epochs >= 1, f"--epochs must be at least 1, got {t.epochs}"),
        (t.batch_size >= 2, f"batch size must be at least 2 (MMD needs pairs), got {t.batch_size}"),
        (t.lr > 0, f"learning rate must be positive, got {t.lr}"),
        (t.sampling_rate >= 0, f"--sampling-rate must be >= 0, got {t.sampling_rate}"),
        (0 <= t.val_fraction < 1, f"--val-fraction must be in [0, 1), got {t.val_fraction}"),
        (p.samples >= 1, f"--samples must be at least 1, got {p.samples}"),
        (p.top_k is None or p.top_k >= 1, f"top_k must be at least 1, got {p.top_k}"),
        (m.latent_dim >= 1 and m.width >= 1 and m.decoder_width >= 1,
         "latent size and widths must be positive"),
        (m.init in ("paper", "torch"), f"init must be 'paper' or 'torch', got {m.init!r}"),
        (cfg.threads is None or cfg.threads >= 1, f"--threads must be >= 1, got {cfg.threads}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DGCError(message)
