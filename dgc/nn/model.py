"""The DGC model (METHOD §1): encoder q(z|x,y), image decoder p(x|z) and label head p(y|z).

    p(x, y, z) = N(z; 0, I) · p(x | z) · p(y | z)

or, with a learned mixture prior (DGCMM, METHOD §9), p(z) = Σ_c π_c N(z; m_c, s_c²).

The encoder's convolutional trunk sees the image alone; the label enters after the flatten, as
`Linear(concat(flat, onehot(y)))`, written here as `Linear(flat) + Embedding(y)` (the same map),
so the trunk runs once per image however many classes are scored. Convolutions use TensorFlow's
SAME padding, which gives the paper's 28 → 14 → 7 → 4 → 2 trunk. Feature vectors (an input shape
`(d,)` instead of `(H, W, C)`) get the same model with MLPs in place of the convolutions: the
trunk is one ReLU layer, and the decoder's output is linear, a unit-variance Gaussian p(x | z) on
standardised features, so ½‖x − G_X(z)‖² is still its negative log-likelihood up to a constant and
training and prediction need no change."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dgc.config import ModelConfig, RunConfig
from dgc.core.errors import DGCError
from dgc.nn.backbones import BN_EPS, BN_MOMENTUM, ResidualDecoder, encoder_depth, trunk
from dgc.nn.losses import batch_mean

LOGVAR_CLIP = 50.0


def images_to_tensor(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) in 0..255 → float32 (N, C, H, W) in [0, 1] on `device`, channels-last:
    the one place that scales. Floats are taken as already scaled (`DGCClassifier`'s images, in
    float64 where its model is)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
    if not tensor.is_floating_point():
        tensor = tensor.float().div_(255.0)
    return tensor.contiguous(memory_format=torch.channels_last)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """`images_to_tensor`'s way back: float (N, C, H, W) in [0, 1] → uint8 (N, H, W, C)."""
    return x.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Encoder(nn.Module):
    """q(z | x, y) = N(μ, diag σ²): trunk on x, then the label, then heads for μ, log σ²;
    `image_shape` is (H, W, C) for images (conv trunk) or (d,) for feature vectors (MLP trunk)."""

    def __init__(self, image_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig):
        super().__init__()
        self.trunk: nn.Module
        if len(image_shape) == 1:  # feature vectors: one ReLU layer
            self.trunk = nn.Sequential(nn.Linear(image_shape[0], cfg.width), nn.ReLU(inplace=True))
            flat = cfg.width
        else:
            self.trunk, flat = trunk(image_shape, cfg)
        self.hidden = nn.Linear(flat, cfg.hidden)
        self.label = nn.Embedding(n_classes, cfg.hidden)
        self.mu = nn.Linear(cfg.hidden, cfg.latent_dim)
        self.logvar = nn.Linear(cfg.hidden, cfg.latent_dim)
        self.label_in_mean = cfg.label_in_mean
        self.activation = nn.ReLU() if cfg.encoder_relu else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The label-free part: flattened trunk output followed by its linear map."""
        return self.hidden(self.trunk(x))

    def posterior(self, features: torch.Tensor, label_rows: torch.Tensor) -> tuple[torch.Tensor,
                                                                                  torch.Tensor]:
        """(μ, log σ²) for features (..., hidden) and matching label embeddings (..., hidden);
        with `label_in_mean` off, μ comes from the image alone and only σ sees the label."""
        with_label = self.activation(features + label_rows)
        mu = self.mu(with_label if self.label_in_mean else self.activation(features))
        logvar = self.logvar(with_label).clamp(-LOGVAR_CLIP, LOGVAR_CLIP)
        return mu, logvar

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.posterior(self.features(x), self.label(y))

    def all_classes(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of shape (N, C, k): every class for every image, trunk computed once."""
        return self.posterior(features[:, None, :], self.label.weight[None, :, :])


class Decoder(nn.Module):
    """p(x | z) = G_X(z): linear to a small map, stride-2 transposed convolutions, sigmoid."""

    def __init__(self, image_shape: tuple[int, ...], cfg: ModelConfig):
        super().__init__()
        height, width, channels = image_shape
        ups = max(1, encoder_depth(max(height, width)) - 2)
        self.start = (math.ceil(height / 2**ups), math.ceil(width / 2**ups))
        self.out_size = (height, width)
        self.filters = filters = cfg.decoder_width * 8
        if filters < 2**ups:  # each up-sampling halves the filters: none may reach zero
            raise DGCError(f"images of {height}×{width} need {ups} up-sampling layers in the "
                           f"decoder, which halve its {filters} filters to none; resize the "
                           "images (e.g. to 32×32 or 64×64) or widen the decoder to "
                           f"model.decoder_width={max(1, 2**ups // 8)} or more (DGCClassifier: "
                           f"width={4 * max(1, 2**ups // 8)} or more)")
        self.project = nn.Linear(cfg.latent_dim, self.start[0] * self.start[1] * filters)
        pad = math.ceil((cfg.kernel - 2) / 2)
        layers: list[nn.Module] = []
        for _ in range(ups):
            layers += [
                nn.ConvTranspose2d(filters, filters // 2, cfg.kernel, stride=2, padding=pad,
                                   output_padding=2 * pad - cfg.kernel + 2),
                nn.BatchNorm2d(filters // 2, momentum=BN_MOMENTUM, eps=BN_EPS),
                nn.ReLU(inplace=True),
            ]
            filters //= 2
        before = (cfg.kernel - 1) // 2
        after = cfg.kernel - 1 - before
        layers += [nn.ZeroPad2d((before, after, before, after)),
                   nn.Conv2d(filters, channels, cfg.kernel)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.project(z)).view(-1, self.filters, *self.start)
        image = torch.sigmoid(self.body(h) if self.training else self.evaluation_body(h))
        height, width = self.out_size
        if image.shape[-2:] != (height, width):
            top = (image.shape[-2] - height) // 2
            left = (image.shape[-1] - width) // 2
            image = image[..., top:top + height, left:left + width]
        return image

    def evaluation_body(self, h: torch.Tensor) -> torch.Tensor:
        """`body` in evaluation mode, the same function in fewer, larger operations (the exact
        rule decodes C × S codes an image, docs/results/speed.md): each BatchNorm folded into the
        transposed convolution before it, and the last, padded convolution (a few output
        channels, which the CPU's convolution runs slowly) as one matrix product over its k × k
        taps followed by k² shifted sums. Equal to `body` to float32 rounding (~1e-6)."""
        layers = list(self.body)
        for up, batch_norm in zip(layers[0:-2:3], layers[1:-2:3], strict=True):
            convolution, norm = cast(nn.ConvTranspose2d, up), cast(nn.BatchNorm2d, batch_norm)
            mean, var = cast(torch.Tensor, norm.running_mean), cast(torch.Tensor, norm.running_var)
            scale = norm.weight * torch.rsqrt(var + norm.eps)
            shift = norm.bias - mean * scale
            if convolution.bias is not None:
                shift = shift + convolution.bias * scale
            h = F.conv_transpose2d(
                h, (convolution.weight * scale.view(1, -1, 1, 1)).contiguous(
                    memory_format=torch.channels_last), shift, convolution.stride,
                cast(tuple[int, int], convolution.padding), convolution.output_padding).relu_()
        pad, last = cast(nn.ZeroPad2d, layers[-2]), cast(nn.Conv2d, layers[-1])
        before = pad.padding[0]
        n, channels, height, width = h.shape
        kernel, out_channels = last.kernel_size[0], last.out_channels
        # (k, k, C_out, N, H, W): each tap's map is contiguous, so the shifted sums stream
        taps = (last.weight.permute(2, 3, 0, 1).reshape(-1, channels)
                @ h.permute(1, 0, 2, 3).reshape(channels, -1))
        taps = taps.view(kernel, kernel, out_channels, n, height, width)
        bias = cast(torch.Tensor, last.bias)
        out = bias.view(-1, 1, 1, 1).expand(out_channels, n, height, width).clone()
        for ty in range(kernel):
            for tx in range(kernel):
                dy, dx = ty - before, tx - before
                top, bottom = max(0, -dy), min(height, height - dy)
                left, right = max(0, -dx), min(width, width - dx)
                out[:, :, top:bottom, left:right] += taps[ty, tx, :, :, top + dy:bottom + dy,
                                                          left + dx:right + dx]
        return out.permute(1, 0, 2, 3)


class MLPDecoder(nn.Module):
    """p(x | z) for feature vectors: one ReLU layer of `decoder_width` units, linear output."""

    def __init__(self, n_features: int, cfg: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.decoder_width),
                                 nn.ReLU(inplace=True), nn.Linear(cfg.decoder_width, n_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LabelHead(nn.Module):
    """p(y | z) = G_Y(z): one linear layer, or an MLP (CelebA: 500-500)."""

    def __init__(self, n_classes: int, cfg: ModelConfig):
        super().__init__()
        sizes = (cfg.latent_dim, *cfg.head_hidden)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-1], n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MixturePrior(nn.Module):
    """A learned p(z) = Σ_c π_c N(z; m_c, diag s_c²) with one component per class (DGCMM). Untied
    ("mixture"), the components are free and q(z|x,y) is pulled towards them by the VaDE
    regulariser, each in proportion to its responsibility for the code. Tied ("class"), component c
    is class c's prior p(z | y = c): the regulariser is the KL to the label's own component, and the
    Bayes rule scores a class's codes under that class's component, so the latent geometry takes
    part in the decision. Densities omit the −(k/2)·log 2π they all share."""

    def __init__(self, n_classes: int, latent_dim: int, tied: bool):
        super().__init__()
        self.tied = tied
        self.logits = nn.Parameter(torch.zeros(n_classes))
        self.means = nn.Parameter(torch.randn(n_classes, latent_dim))
        self.logvar = nn.Parameter(torch.zeros(n_classes, latent_dim))

    def components(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; m_c, s_c²) for every component: (..., k) → (..., C)."""
        logvar = self.logvar.clamp(-LOGVAR_CLIP, LOGVAR_CLIP)
        distance = (z[..., None, :] - self.means).pow(2) / logvar.exp()
        return -0.5 * (distance + logvar).sum(-1)

    def log_density(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(z | y) when tied, else the mixture's log p(z); `y` broadcasts against z[..., 0]."""
        per_component = self.components(z)
        if self.tied:
            index = y.expand(per_component.shape[:-1])[..., None]
            return per_component.gather(-1, index).squeeze(-1)
        return torch.logsumexp(torch.log_softmax(self.logits, 0) + per_component, dim=-1)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor,
           y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Batch mean of KL(q(z|x,y) ‖ prior): to the label's component when tied, else VaDE's
        responsibility-weighted KL plus the KL of the responsibilities to π; weighted by row
        `weights` where given (`dgc.nn.losses.batch_mean`)."""
        prior_logvar = self.logvar.clamp(-LOGVAR_CLIP, LOGVAR_CLIP)
        # (B, C): KL(N(μ, σ²) ‖ N(m_c, s_c²)) for every component
        per_component = 0.5 * (prior_logvar - logvar[:, None, :]
                               + (logvar.exp()[:, None, :] + (mu[:, None, :] - self.means).pow(2))
                               / prior_logvar.exp() - 1.0).sum(-1)
        if self.tied:
            per_row = per_component.gather(1, y[:, None]).squeeze(1)
        else:
            log_pi = torch.log_softmax(self.logits, 0)
            log_gamma = torch.log_softmax(log_pi + self.components(z), dim=1)
            per_row = (log_gamma.exp() * (per_component + log_gamma - log_pi)).sum(1)
        return batch_mean(per_row, weights)


class DGC(nn.Module):
    """The whole generative classifier; `image_shape` is (H, W, C), or (d,) for feature vectors."""

    def __init__(self, image_shape: tuple[int, ...], n_classes: int, cfg: ModelConfig):
        super().__init__()
        self.image_shape, self.n_classes, self.cfg = tuple(image_shape), n_classes, cfg
        self.encoder = Encoder(self.image_shape, n_classes, cfg)
        if len(self.image_shape) == 1:
            self.decoder: nn.Module = MLPDecoder(self.image_shape[0], cfg)
        elif cfg.backbone == "conv":
            self.decoder = Decoder(self.image_shape, cfg)
        else:
            self.decoder = ResidualDecoder(self.image_shape, cfg.latent_dim, cfg.decoder_width,
                                           cfg.decoder_crop)
        self.head = LabelHead(n_classes, cfg)
        self.prior = (MixturePrior(n_classes, cfg.latent_dim, tied=cfg.prior == "class")
                      if cfg.prior != "normal" else None)
        initialise(self, self.encoder.trunk, cfg)
        # faster convolutions on the CPU (Module.to takes memory_format; its stub omits it)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> dict[str,
                                                                                   torch.Tensor]:
        """One reparameterised pass: z = μ + σ ⊙ ε with the given ε."""
        mu, logvar = self.encoder(x, y)
        z = reparameterise(mu, logvar, noise)
        return {"mu": mu, "logvar": logvar, "z": z, "recon": self.decoder(z),
                "logits": self.head(z)}


def std_from_logvar(logvar: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(1e-8 + torch.exp(logvar))


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return mu + std_from_logvar(logvar) * noise


def initialise(model: nn.Module, trunk: nn.Module, cfg: ModelConfig) -> None:
    """`ModelConfig.init`: "paper" (`paper_init`), "released" (the same, but the convolutions of
    the encoder trunk from N(0, 0.01²) truncated at two standard deviations, TensorFlow's
    truncated normal in the authors' code) or "torch" (PyTorch's defaults, left as they are).
    A residual or pretrained trunk keeps PyTorch's He-scaled defaults (or its ImageNet weights)
    whatever `init` says: at N(0, 0.01²) a deep residual network's signal dies out."""
    if cfg.init == "torch":
        return
    kept = set() if cfg.backbone == "conv" else set(trunk.modules())
    for module in model.modules():
        if module not in kept:
            paper_init(module)
    if cfg.init == "released":
        for module in trunk.modules():
            if isinstance(module, nn.Conv2d) and module not in kept:
                nn.init.trunc_normal_(module.weight, 0.0, 0.01, -0.02, 0.02)


def paper_init(module: nn.Module) -> None:
    """Weights from N(0, 0.01²), biases 0, BatchNorm scale 1 and shift 0 (METHOD §1)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.01)
        if isinstance(bias := getattr(module, "bias", None), torch.Tensor):
            nn.init.zeros_(bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def activation_numel(build: Callable[[], nn.Module], image_shape: tuple[int, ...]) -> int:
    """Values one example leaves in the model's trunk (the decoder mirrors it), counted by a pass
    on torch's meta device, whatever the backbone."""
    total = [math.prod(image_shape)]

    def count(_: nn.Module, __: object, out: torch.Tensor) -> None:
        total[0] += out.numel()

    with torch.device("meta"):
        model = build()
        trunk = cast(nn.Module, getattr(model, "encoder", model).trunk).eval()
        handles = [m.register_forward_hook(count) for m in trunk.modules()
                   if not list(m.children())]
        shape = image_shape if len(image_shape) == 1 else (image_shape[2], *image_shape[:2])
        trunk(torch.empty(1, *shape))
    for handle in handles:
        handle.remove()
    return total[0]


def machine_memory(device: str) -> int:
    """Bytes of memory of the device a model would train on."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(build: Callable[[], nn.Module], image_shape: tuple[int, ...],
               cfg: RunConfig) -> None:
    """Refuse, before allocating anything, a model and batch that cannot fit in the device's
    memory: the conv nets grow with the image (a 2000×2000 input asks for tens of GB), so the
    fix is to resize the images. `build` makes the model; it runs on torch's meta device. The
    estimate: weights, gradients and Adam's two moments (4 × 4 bytes a parameter), plus the
    batch's activations of encoder and decoder kept for the backward pass (about 8 float32
    values per trunk value)."""
    with torch.device("meta"):
        params = count_parameters(build())
    batch, device = max(cfg.train.batch_size, cfg.train.pretrain_batch), cfg.device
    need = 16 * params + 8 * batch * activation_numel(build, image_shape)
    have = machine_memory(device)
    if need > have:
        shape = "×".join(map(str, image_shape))
        raise DGCError(f"inputs of shape {shape} need about {need / 2**30:.0f} GiB with this "
                       f"architecture ({params:,} parameters, batch {batch}) but the {device} has "
                       f"{have / 2**30:.0f} GiB; resize the images (e.g. to 32×32 or 64×64) or "
                       "choose a smaller model.width / model.hidden")
