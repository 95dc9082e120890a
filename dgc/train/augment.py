"""Label-preserving image augmentation shared by every method: random crop with padding, flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, pad: int, hflip: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """Random `pad`-pixel translation (zero padding, then crop back) and optional mirror. Vectorised
    over the batch: one gather, no per-image Python loop."""
    n, _, height, width = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
        rows = (dy + torch.arange(height)).to(x.device)
        cols = (dx + torch.arange(width)).to(x.device)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2).contiguous()
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x
