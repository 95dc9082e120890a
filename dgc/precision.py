"""Optional bf16 autocast (`--bf16`: the `train.bf16` and `predict.bf16` settings).

Autocast runs convolutions and matrix products in bfloat16 and keeps reductions, losses and the
weights in float32. Only forward passes run under it, as PyTorch recommends, and bfloat16 has
float32's range, so no gradient scaling is needed. Runs refuse it on the CPU (`config.validate`),
where bfloat16 is slower than float32 on most processors and only changes the numbers.
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
