"""Label-preserving image augmentation shared by every method (`train.augment`): a random crop
with padding and a mirror where the dataset allows it, and, where the data's classes do not
depend on orientation or lighting (solar cells, tissue, defects), the options the run's settings
turn on: the eight symmetries of a square (`train.dihedral`), small rotations (`train.rotate`
degrees) and brightness/contrast jitter (`train.jitter`). Each is vectorised over the batch and
draws from the run's generator only when it is on, so a run without it is unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dgc.config import TrainConfig
from dgc.core.errors import DGCError


def augment_batch(x: torch.Tensor, t: TrainConfig, hflip: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """The batch transformed as `t` asks, each image independently."""
    n, _, height, width = x.shape
    if t.crop_pad > 0:  # a random translation: zero padding, then one gather back to the size
        pad = t.crop_pad
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
        rows = (dy + torch.arange(height)).to(x.device)
        cols = (dx + torch.arange(width)).to(x.device)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2).contiguous()
    if hflip or t.dihedral:
        x = flipped(x, torch.rand(n, generator=generator) < 0.5, -1)
    if t.dihedral:
        if height != width:
            raise DGCError(f"train.dihedral rotates images by 90°, which needs square ones, not "
                           f"{height}×{width}; resize them (--image-size) or turn it off")
        x = flipped(x, torch.rand(n, generator=generator) < 0.5, -2)
        turn = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(turn[:, None, None, None], x.transpose(-1, -2), x)  # with both flips: 8
    if t.rotate:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(t.rotate)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1),
                             torch.stack([sin, cos, torch.zeros(n)], 1)], 1).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if t.jitter:
        shift = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * t.jitter
        scale = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * t.jitter
        mean = x.mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * scale.to(x) + mean + shift.to(x)).clamp(0, 1)
    return x


def flipped(x: torch.Tensor, which: torch.Tensor, dim: int) -> torch.Tensor:
    """`x` with the images `which` mirrored along `dim`."""
    return torch.where(which.to(x.device)[:, None, None, None], x.flip(dim), x)


def dihedral_views(x: torch.Tensor, dims: tuple[int, int] = (-2, -1)) -> list[torch.Tensor]:
    """The eight symmetries of a square of a batch whose rows and columns are `dims`: the batch
    itself first, then its mirror (columns reversed), then the other six (`predict.views`)."""
    rows, cols = dims
    views = []
    for turned in (x, x.transpose(rows, cols)):
        for flips in ((), (cols,), (rows,), (rows, cols)):
            views.append(turned.flip(flips) if flips else turned)
    return views
