"""The baselines' network: the image trunk of DGC's encoder (`dgc.nn.backbones`, the same
`model.backbone`) followed by one linear layer, so that a comparison with DGC is about the method,
not the network; LDAM's scale assumes a normalised (cosine) last layer instead.

A classifier predicts with the softmax of its logits."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dgc.config import ModelConfig, RunConfig
from dgc.core.precision import autocast
from dgc.nn.backbones import trunk
from dgc.nn.model import images_to_tensor, initialise

PREDICT_BATCH = 1024


class CosineLinear(nn.Module):
    """s · cos(feature, w_c): the normalised last layer LDAM's scale s assumes (Cao et al.'s code);
    as many weights as a linear layer, without the bias."""

    def __init__(self, n_in: int, n_out: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.normal_(self.weight, 0.0, 0.01)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


class Classifier(nn.Module):
    """DGC's encoder trunk plus a linear layer (cosine with `cosine_scale`); `image_shape` is
    (H, W, C). Initialised like DGC (`ModelConfig.init`)."""

    def __init__(self, image_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig,
                 cosine_scale: float | None = None):
        super().__init__()
        self.image_shape, self.n_classes, self.cfg = tuple(image_shape), n_classes, cfg
        self.trunk, flat = trunk(self.image_shape, cfg)
        self.head: nn.Module = (nn.Linear(flat, n_classes) if cosine_scale is None
                                else CosineLinear(flat, n_classes, cosine_scale))
        initialise(self, self.trunk, cfg)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as DGC

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def build_classifier(cfg: RunConfig, image_shape: tuple[int, ...],
                     n_classes: int) -> Classifier:
    """The baseline network of a run: cosine last layer for LDAM, linear otherwise."""
    scale = cfg.baseline.ldam_scale if cfg.baseline.loss == "ldam" else None
    return Classifier(image_shape, n_classes, cfg.model, cosine_scale=scale)


def classifier_logits(model: Classifier, x: torch.Tensor, batch: int = PREDICT_BATCH,
                      bf16: bool = False) -> torch.Tensor:
    """Logits (N, C) of a float batch in evaluation mode, in its dtype even under bf16 autocast."""
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(bf16, x.device.type):
        logits = [model(x[i:i + batch]).to(x.dtype) for i in range(0, len(x), batch)]
    model.train(was_training)
    return torch.cat(logits) if logits else torch.empty(0, model.n_classes, device=x.device)


def classifier_proba(model: Classifier, images: np.ndarray, device: str = "cpu",
                     bf16: bool = False) -> np.ndarray:
    """Class probabilities (N, C), the softmax of the logits, for uint8 images (N, H, W, C)."""
    logits = classifier_logits(model, images_to_tensor(images, device), bf16=bf16)
    return torch.softmax(logits.double(), dim=1).cpu().numpy()
