"""Tests for dgc.core.io: atomic writes under faults, checkpoint integrity, the previous
generation."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_bad_input import snapshot

import dgc.core.io
from dgc.config import RunConfig
from dgc.core.errors import DGCError
from dgc.core.io import (
    atomic_write,
    load_checkpoint,
    load_newest_checkpoint,
    save_checkpoint,
    write_json,
)
from dgc.run.train import train_run


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_unwritable_folder_is_one_clear_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(dgc.core.io.tempfile, "mkstemp", refuse)
    with pytest.raises(DGCError, match=r"could not write .*a\.json: Permission denied.*"
                                       r"make .* writable"):
        write_json(tmp_path / "a.json", {"a": 1})
    assert files(tmp_path) == []


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"),
                                   KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path,
                                                          fault: BaseException) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"old": True})

    def half_then_fail(handle: Any) -> None:
        handle.write(b'{"new": tr')
        raise fault

    expected = DGCError if isinstance(fault, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        atomic_write(path, half_then_fail)
    if expected is DGCError:
        assert "No space left on device" in str(info.value)
        assert "free some space" in str(info.value)
    assert json.loads(path.read_text()) == {"old": True}
    assert files(tmp_path) == ["metrics.json"]


def test_checkpoint_keeps_its_previous_generation(tmp_path: Path) -> None:
    path, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    save_checkpoint(path, {"model": {}, "epoch": 1}, previous=previous)
    assert files(tmp_path) == ["checkpoint.pt"]
    save_checkpoint(path, {"model": {}, "epoch": 2}, previous=previous)
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(previous)["epoch"] == 1


def damage(path: Path, how: str) -> None:
    content = bytearray(path.read_bytes())
    if how == "truncated":
        content = content[: len(content) // 2]
    elif how == "bit flip":  # in the stored weights, which torch.load alone would not notice
        content[len(content) // 2] ^= 0x10
    else:
        content = bytearray(b"not a checkpoint")
    path.write_bytes(bytes(content))


@pytest.mark.parametrize(("how", "message"), [("truncated", "damaged"),
                                              ("bit flip", "fails its CRC-32 check"),
                                              ("foreign", "damaged")])
def test_damaged_checkpoint_is_detected(tmp_path: Path, how: str, message: str) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(10000.0)}})
    damage(path, how)
    with pytest.raises(DGCError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    path, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    logs: list[str] = []
    assert load_newest_checkpoint(path, previous, logs.append) is None
    for epoch in (1, 2):
        save_checkpoint(path, {"model": {"w": torch.zeros(100)}, "epoch": epoch},
                        previous=previous)
    damage(path, "bit flip")
    assert load_newest_checkpoint(path, previous, logs.append)["epoch"] == 1
    assert "moved it to checkpoint.pt.damaged" in logs[-1] and "(epoch 1)" in logs[-1]
    assert files(tmp_path) == ["checkpoint.prev.pt", "checkpoint.pt.damaged"]
    assert load_newest_checkpoint(path, previous, logs.append)["epoch"] == 1
    assert "it is missing" in logs[-1]
    damage(previous, "truncated")
    with pytest.raises(DGCError, match="neither checkpoint.pt nor its previous generation"):
        load_newest_checkpoint(path, previous, logs.append)


def test_resume_from_the_previous_generation_ends_like_a_straight_run(
        digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    """A corrupted checkpoint.pt: --resume redoes the last epoch from checkpoint.prev.pt and
    ends with the same metrics and history (validation predictions included) as the run that
    wrote it."""
    cfg = digits_config(tmp_path / "run", 'train.schedule="constant"', "train.epochs=2",
                        "train.pretrain_steps=0", "train.val_fraction=0.2")
    straight = train_run(cfg, progress=False, log=lambda _: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    damage(tmp_path / "run" / "checkpoint.pt", "bit flip")
    logs: list[str] = []
    resumed = train_run(cfg, resume=True, progress=False, log=logs.append)
    assert any("Resuming from the previous checkpoint checkpoint.prev.pt (epoch 1)" in line
               for line in logs)
    seconds = ("seconds_train", "seconds_predict")
    assert {k: v for k, v in resumed.items() if k not in seconds} == {
        k: v for k, v in straight.items() if k not in seconds}
    again = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again["epochs"]] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in history["epochs"]]
    assert again["validation"] == history["validation"]


def test_resume_rewrites_a_best_file_of_another_epoch(
        digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    """best.pt from an epoch the checkpoint never recorded (a run stopped between its two saves
    of an epoch) is rewritten from the checkpoint's copy of the best weights; a checkpoint too
    old to carry that copy refuses to resume rather than evaluate the wrong weights."""
    run = tmp_path / "run"
    cfg = digits_config(run, 'train.schedule="constant"', "train.epochs=2",
                        "train.pretrain_steps=0", "train.val_fraction=0.1", "train.eval_every=1")
    straight = train_run(cfg, progress=False, log=lambda _: None)
    best = load_checkpoint(run / "best.pt")
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["best"]["epoch"] == best["epoch"]
    for name, weights in best["model"].items():
        assert torch.equal(state["best_model"][name], weights)

    def unfinish_with_stray_best() -> None:
        save_checkpoint(run / "best.pt", {"model": {k: torch.zeros_like(v) for k, v in
                                                    best["model"].items()},
                                          "score": 1.0, "epoch": 7})
        for name in ("metrics.json", "predictions.npz"):
            (run / name).unlink()

    unfinish_with_stray_best()
    logs: list[str] = []
    resumed = train_run(cfg, resume=True, progress=False, log=logs.append)
    assert any(f"holds epoch 7; rewrote it with the best epoch ({best['epoch']})" in line
               for line in logs)
    rewritten = load_checkpoint(run / "best.pt")
    assert rewritten["epoch"] == best["epoch"]
    for name, weights in best["model"].items():
        assert torch.equal(rewritten["model"][name], weights)
    seconds = ("seconds_train", "seconds_predict")
    assert {k: v for k, v in resumed.items() if k not in seconds} == {
        k: v for k, v in straight.items() if k not in seconds}

    del state["best_model"]  # as checkpoints were written before they carried it
    save_checkpoint(run / "checkpoint.pt", state)
    unfinish_with_stray_best()
    before = snapshot(run)
    with pytest.raises(DGCError, match="best.pt holds epoch 7, but the checkpoint's best is "
                                       "epoch .*older checkpoint does not keep"):
        train_run(cfg, resume=True, progress=False, log=lambda _: None)
    assert snapshot(run) == before  # every file byte-identical
    save_checkpoint(run / "best.pt", best)  # an older checkpoint beside its own best.pt
    again = train_run(cfg, resume=True, progress=False, log=lambda _: None)
    assert {k: v for k, v in again.items() if k not in seconds} == {
        k: v for k, v in straight.items() if k not in seconds}


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_take_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    before = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(2)})
    finally:
        os.umask(before)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {
        "a.json": mode, "c.pt": mode}
