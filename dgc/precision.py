"""Optional bf16 autocast (`--bf16`: the `train.bf16` and `predict.bf16` settings).

Autocast runs convolutions and matrix products in bfloat16 and keeps reductions, losses and the
weights in float32. Only forward passes run under it, as PyTorch recommends, and bfloat16 has
float32's range, so no gradient scaling is needed. It pays on CUDA and on CPUs with native
bfloat16 instructions (AVX-512 BF16, AMX) at one thread per run: a `cpu`-preset DGC training
step runs 1.40x faster there on this project's two-core AMD EPYC, while at two threads it gains
1.14x (docs/RESULTS.md, "Training speed"); on other CPUs it is slower (a paper-preset step
0.61x on a two-core Xeon without them), so it warns there.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from dgc.errors import DGCWarning

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
        warnings.warn("bfloat16 autocast on a CPU without bfloat16 instructions (AVX-512 BF16, "
                      "AMX): it runs slower than float32 here (docs/RESULTS.md, \"Training "
                      "speed\"); leave out --bf16",
                      DGCWarning, stacklevel=1)  # one location for every caller: shown once
    return torch.autocast(device_type, dtype=torch.bfloat16)
