"""Optional bf16 autocast (`--bf16`: the `train.bf16` and `predict.bf16` settings).

Autocast runs convolutions and matrix products in bfloat16 and keeps reductions, losses and the
weights in float32. Only forward passes run under it, as PyTorch recommends, and bfloat16 has
float32's range, so no gradient scaling is needed. It pays on CUDA and on CPUs with native
bfloat16 instructions (AVX-512 BF16, AMX) at one thread per run: a `cpu`-preset DGC training
step runs 1.40x faster there on this project's two-core AMD EPYC, while at two threads it gains
1.14x (docs/RESULTS.md, "Training speed"); on other CPUs it is slower.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch


def autocast(enabled: bool, device_type: str) -> AbstractContextManager[Any]:
    """A bfloat16 autocast region on `device_type` ("cuda", "cpu") when enabled, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)
