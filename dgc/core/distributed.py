"""Training in several processes under torchrun: `torchrun --nproc_per_node=N -m dgc train …`.
torchrun starts N copies of the command with WORLD_SIZE, RANK and LOCAL_RANK set; `session` joins
them into one process group (NCCL with one GPU per process on CUDA, gloo on the CPU).

Every process holds the whole training split and the same model. Each step takes the next N ×
batch_size rows of an epoch order that all processes draw alike, and each process trains on its own
strided share of them (batch_size rows, so every per-batch quantity of METHOD §2–§3 keeps its
single-process meaning, and latent oversampling still uses the whole set's class counts). Gradients
are averaged before every optimiser step and BatchNorm statistics after every epoch, so the
processes keep identical weights; `check_replicas` verifies that at the end. Process 0 alone
validates, checkpoints, logs and writes the run's files. Without torchrun every function here is the
single-process identity, so one code path serves both."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dgc.core.errors import DGCError

# Process 0 tests and reports alone at the end while the others wait at a barrier for it.
GROUP_TIMEOUT = timedelta(hours=6)


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process validates, logs and writes files (always, without torchrun)."""
    return rank() == 0


@contextmanager
def session(device: str) -> Iterator[None]:
    """Join torchrun's process group for the block; without torchrun, do nothing."""
    if not launched() or dist.is_initialized():
        yield
        return
    if device == "cuda":
        local, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= count:
            raise DGCError(f"torchrun started more processes on this machine than its {count} "
                           f"CUDA devices; use --nproc_per_node={count} or fewer")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=GROUP_TIMEOUT)
    try:
        yield
    finally:
        try:  # no process tears the group down while another still talks to it
            dist.barrier()
        finally:
            dist.destroy_process_group()


def share_refusal(refusal: DGCError | None) -> None:
    """Process 0's verdict on the run folder, raised in every process: only it checks the
    folder, and the others must not start training (and wait in a collective) when it refused."""
    if world_size() == 1:
        return
    message = [None if refusal is None else str(refusal)]
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None and rank() != 0:
        raise DGCError(message[0])


def derived_seed(seed: int, *keys: int) -> int:
    """A seed for (run seed, *keys), the same in every process and every Python session."""
    return random.Random("/".join(map(str, (seed, *keys)))).getrandbits(63)


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the processes, in one all-reduce."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view(grad.shape))
        offset += grad.numel()


def average_buffers(module: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm's running statistics) over the processes."""
    if world_size() == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world_size()


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the processes, so that they all take the same decision."""
    if world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def fingerprint(state: dict[str, torch.Tensor], *extra: bytes) -> str:
    """SHA-256 of a state dict's names and values (bfloat16 too), then of the `extra` bytes."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    for data in extra:
        digest.update(data)
    return digest.hexdigest()


def check_replicas(module: nn.Module) -> dict[str, Any] | None:
    """Refuse to go on if the processes' weights differ; their fingerprints (None alone)."""
    if world_size() == 1:
        return None
    fingerprints: list[Any] = [None] * world_size()
    dist.all_gather_object(fingerprints, fingerprint(module.state_dict()))
    if len(set(fingerprints)) > 1:
        raise DGCError(f"the {world_size()} torchrun processes ended training with different "
                       f"weights, so they do not form one model and no metrics were written; "
                       f"rerun the command, or train in one process")
    return {"processes": world_size(), "backend": dist.get_backend(),
            "weights_sha256": fingerprints}
