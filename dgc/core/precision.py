"""Optional bf16 autocast (`--bf16`: the `train.bf16` and `predict.bf16` settings).

Autocast runs convolutions and matrix products in bfloat16 and keeps reductions, losses and the
weights in float32. Only forward passes run under it, as PyTorch recommends, and bfloat16 has
float32's range, so no gradient scaling is needed. It pays on CUDA and on CPUs with native bfloat16
instructions (AVX-512 BF16, AMX) at one thread per run: a `cpu`-preset DGC training step ran 1.40x
faster on a two-core AMD EPYC with them, 1.14x at two threads (docs/results/training-speed.md); on
other CPUs it is slower (a paper-preset epoch took 1.8 times as long on a two-core Xeon without
them), so it warns there, once per process."""

from __future__ import annotations

import contextlib
import functools
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from dgc.core import distributed
from dgc.core.errors import DGCWarning

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 flags; arm64 "Features"


@functools.cache
def native_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions; None where /proc/cpuinfo does not say."""
    cpuinfo = Path("/proc/cpuinfo")
    return bf16_in_cpuinfo(cpuinfo.read_text(errors="replace")) if cpuinfo.is_file() else None


def bf16_in_cpuinfo(text: str) -> bool | None:
    """Whether the first CPU's flags in a /proc/cpuinfo text name a bfloat16 instruction set."""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return bool(BF16_FLAGS & set(line.partition(":")[2].split()))
    return None


def autocast(enabled: bool, device_type: str) -> AbstractContextManager[Any]:
    """A bfloat16 autocast region on `device_type` ("cuda", "cpu") when enabled, else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    if device_type == "cpu" and native_bf16() is False:
        warn_emulated_bf16()
    return torch.autocast(device_type, dtype=torch.bfloat16)


@functools.cache  # once per process, whatever the warning filters (`-W always`) say
def warn_emulated_bf16() -> None:
    """Tell the user (process 0 of a torchrun group) that their bf16 setting costs time here."""
    if distributed.is_main():
        warnings.warn("bfloat16 autocast on a CPU without bfloat16 instructions (AVX-512 BF16, "
                      "AMX) runs slower than float32 (docs/results/training-speed.md); "
                      "train and predict without --bf16 (train.bf16, predict.bf16) on this CPU",
                      DGCWarning, stacklevel=3)
