"""Tests for dgc.core.distributed: `torchrun -m dgc train` in two CPU processes, and the
single-process identities that keep a run without torchrun unchanged."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgc.cli import main
from dgc.core import distributed
from dgc.core.io import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["best.pt", "checkpoint.prev.pt", "checkpoint.pt", "config.json", "history.json",
             "metrics.csv", "metrics.json", "predictions.npz"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_trains_two_processes_into_one_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port", str(free_port()), "-m", "dgc", "train", "--exp", "digits",
               "--seed", "1", "--epochs", "2", "--threads", "1", "--quiet", "--no-report",
               "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("(test set)") == 1  # process 0 alone reports
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES  # written once, no stray files
    assert json.loads((out / "metrics.json").read_text())["acsa"] >= 0

    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]
    assert all("val" in r for r in history["epochs"])
    replicas = history["distributed"]
    assert replicas["processes"] == 2 and replicas["backend"] == "gloo"
    first, second = replicas["weights_sha256"]
    assert first == second  # the two processes ended with identical weights
    final_weights = load_checkpoint(out / "checkpoint.pt")["model"]
    assert distributed.fingerprint(final_weights) == first
    config = json.loads((out / "config.json").read_text())
    assert config["environment"]["processes"] == 2

    # the same command again: process 0 refuses the folder, and so does every other process
    # (before, they went on to train and waited for process 0 in a collective)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode != 0
    assert again.stderr.count("holds a finished run; continue it with --resume") == 2
    # torchrun itself reports its failed children with a traceback of its own; none from dgc
    assert not re.search(r'File ".*[/\\]dgc[/\\]\w+\.py"', again.stderr)
    assert "DGCError" not in again.stderr and "(test set)" not in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # a folder in use by another (live) process: refused the same way, under process 0's lock
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / ".dgc.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    command[command.index("--master_port") + 1] = str(free_port())
    command[-1] = str(locked)
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert refused.returncode != 0
    assert refused.stderr.count(f"is in use by process {os.getpid()}") == 2
    assert [p.name for p in locked.iterdir()] == [".dgc.lock"]


def test_without_torchrun_everything_is_one_process() -> None:
    assert not distributed.launched()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(4, 3)).sum().backward()
    before = layer.weight.grad.clone()
    distributed.average_gradients(layer.parameters())
    assert torch.equal(layer.weight.grad, before)
    value = torch.tensor(1.5)
    assert distributed.mean(value) is value
    assert distributed.check_replicas(layer) is None
    with distributed.session("cpu"):
        assert distributed.world_size() == 1


def test_derived_seeds_differ_by_key_and_repeat() -> None:
    seeds = {distributed.derived_seed(1, 0), distributed.derived_seed(1, 1),
             distributed.derived_seed(2, 0), distributed.derived_seed(1, 0, 1)}
    assert len(seeds) == 4
    assert distributed.derived_seed(1, 3, 1) == distributed.derived_seed(1, 3, 1)


def test_fingerprint_sees_any_change() -> None:
    state = torch.nn.Linear(3, 2).state_dict()
    same = {k: v.clone() for k, v in state.items()}
    assert distributed.fingerprint(state) == distributed.fingerprint(same)
    same["bias"][0] += 1e-7
    assert distributed.fingerprint(state) != distributed.fingerprint(same)


def test_only_train_runs_under_torchrun(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["report", "runs/none"]) == 2
    assert "only `dgc train` runs under torchrun" in capsys.readouterr().err


def test_processes_that_end_with_different_weights_are_refused(tmp_path: Path) -> None:
    """check_replicas compares the processes' weight fingerprints: here they differ."""
    script = tmp_path / "replicas.py"
    script.write_text(
        "import torch, torch.distributed as dist\n"
        "from dgc.core import distributed\n"
        "from dgc.core.errors import DGCError\n"
        "dist.init_process_group('gloo')\n"
        "torch.manual_seed(dist.get_rank())  # each process its own weights\n"
        "layer = torch.nn.Linear(3, 2)\n"
        "try:\n"
        "    distributed.check_replicas(layer)\n"
        "    verdict = 'accepted'\n"
        "except DGCError as error:\n"
        "    verdict = f'refused: {error}'\n"
        f"open(f'{tmp_path}/rank{{dist.get_rank()}}.txt', 'w').write(verdict)\n"
        "dist.destroy_process_group()\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port", str(free_port()), str(script)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # each process its own file: their prints would interleave
        assert (tmp_path / f"rank{rank}.txt").read_text().startswith(
            "refused: the 2 torchrun processes ended training with different weights")
