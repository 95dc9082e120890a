"""New images from a trained DGC, the one place they are made: encode a real image x of class c by
q(z | x, y = c), draw z = μ + σ·ε, decode it (paper Fig. 6).

`oversample` grows every class to the largest one's count with them, like SMOTE but in the learned
latent space."""

from __future__ import annotations

import numpy as np
import torch

from dgc.nn.model import DGC, images_to_tensor, std_from_logvar, tensor_to_images

BATCH = 500


def posterior(model: DGC, x: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
              device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """μ and σ of q(z | x, y) batch by batch, for uint8 images (N, H, W, C) or a float batch
    (N, C, H, W) in [0, 1], and their labels."""
    model.eval()
    mus, sigmas = [], []
    with torch.inference_mode():
        for start in range(0, len(x), BATCH):
            part = x[start:start + BATCH]
            batch = images_to_tensor(part, device) if isinstance(part, np.ndarray) else part
            y = torch.as_tensor(labels[start:start + BATCH], dtype=torch.long,
                                device=batch.device)
            mu, logvar = model.encoder(batch, y)
            mus.append(mu)
            sigmas.append(std_from_logvar(logvar))
    return torch.cat(mus), torch.cat(sigmas)


def decoded(model: DGC, z: torch.Tensor) -> torch.Tensor:
    """G_X(z) batch by batch, in the decoder's output space."""
    model.eval()
    with torch.inference_mode():
        return torch.cat([model.decoder(z[i:i + BATCH]) for i in range(0, len(z), BATCH)])


def decode(model: DGC, z: torch.Tensor) -> np.ndarray:
    """G_X(z) as uint8 images (N, H, W, C)."""
    return tensor_to_images(decoded(model, z))


def generated(model: DGC, x: np.ndarray | torch.Tensor, c: int,
              generator: torch.Generator, device: str = "cpu") -> torch.Tensor:
    """One decoded code z = μ + σ·ε of q(z | x, y = c) for each image of `x`."""
    mu, sigma = posterior(model, x, np.full(len(x), c, dtype=np.int64), device)
    noise = torch.randn(mu.shape, generator=generator).to(mu.device, mu.dtype)
    return decoded(model, mu + sigma * noise)


def generate(model: DGC, images: np.ndarray, class_index: int, seed: int,
             device: str = "cpu") -> np.ndarray:
    """`generated` for uint8 images, as uint8 images, its noise seeded by `seed`."""
    return tensor_to_images(generated(model, images, class_index,
                                      torch.Generator().manual_seed(seed), device))


def oversample(model: DGC, x: torch.Tensor, y: torch.Tensor,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class grown to the largest one's count with images generated from its real ones
    (each used once before any is used again); the originals come first."""
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    counts = torch.bincount(y.cpu(), minlength=model.n_classes)
    xs, ys = [x], [y]
    for c, count in enumerate(counts.tolist()):
        if 0 < count < counts.max():
            wanted = int(counts.max()) - count
            members = x[y == c]
            order = torch.cat([torch.randperm(count, generator=generator)
                               for _ in range(-(-wanted // count))])[:wanted]
            xs.append(generated(model, members[order], c, generator).to(x.dtype))
            ys.append(torch.full((wanted,), c, dtype=y.dtype, device=y.device))
    model.train(was_training)
    return torch.cat(xs), torch.cat(ys)
