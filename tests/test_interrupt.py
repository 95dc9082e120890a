"""Interrupted runs lose at most the epoch in progress, and resume to the same numbers.

Two `dgc train` runs on digits start as subprocesses; once its first epoch is checkpointed, one
is killed (SIGKILL) and the other interrupted (SIGINT, as Ctrl-C sends it). `--resume` then
finishes each in-process, and its metrics must equal those of an uninterrupted run with the
same seed. A benchmark is
stopped with SIGTERM, as a job scheduler would, and resumed the same way.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dgc.run.predict
import dgc.train.dgc
from dgc.cli import main
from dgc.core.io import load_checkpoint
from dgc.train.loop import EpochTrainer

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--exp", "digits", "--seed", "1", "--epochs", "6", "--samples", "1",
         "--quiet", "--no-report", "--threads", "1", "--set", "train.pretrain_batch=200"]
RESUME_HINT = ("dgc: interrupted; rerun the same command with --resume to continue from the "
               "last complete epoch")


def metrics(run_dir: Path) -> dict[str, Any]:
    saved = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in saved.items() if not k.startswith("seconds_")}


def epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv's rows without the seconds, which no two runs share."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, uninterrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def straight(straight_run: Path) -> dict[str, Any]:
    """The metrics of the same run, uninterrupted."""
    return metrics(straight_run)


def start_training(out: Path, *options: str) -> subprocess.Popen[str]:
    """`python -m dgc train ...` with Ctrl-C's default behaviour, whatever the caller ignores."""
    return subprocess.Popen(
        [sys.executable, "-m", "dgc", *TRAIN, *options, "--out", str(out)], cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_after_first_checkpoint(processes: dict[Path, subprocess.Popen[str]],
                                actions: dict[Path, Callable[[subprocess.Popen[str]], None]]
                                ) -> None:
    """Signal each run as soon as its own first epoch is saved, whichever comes first, so a
    fast run is not left to finish while a slow one starts."""
    deadline = time.monotonic() + 300
    pending = dict(actions)
    while pending:
        for out, act in list(pending.items()):
            if (out / "checkpoint.pt").exists():
                act(processes[out])
                del pending[out]
            else:
                assert processes[out].poll() is None, processes[out].communicate()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)


def resume(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main([*TRAIN, "--resume", "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out


def test_sigkill_and_sigint_mid_run_then_resume(tmp_path: Path, straight: dict[str, Any],
                                                straight_run: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs at once (each pays for starting Python): one killed, one interrupted. Each
    metrics.csv ends with the straight run's rows, every epoch once."""
    killed, interrupted = tmp_path / "killed", tmp_path / "interrupted"
    processes = {killed: start_training(killed), interrupted: start_training(interrupted)}
    stop_after_first_checkpoint(processes, {
        killed: lambda process: process.kill(),
        interrupted: lambda process: process.send_signal(signal.SIGINT)})

    processes[killed].communicate(timeout=300)
    assert processes[killed].returncode == -signal.SIGKILL
    assert 1 <= load_checkpoint(killed / "checkpoint.pt")["epoch"] < 6

    stdout, stderr = processes[interrupted].communicate(timeout=300)
    assert processes[interrupted].returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == RESUME_HINT
    assert "checkpoint.pt holds the last complete epoch" in stdout
    assert "Traceback" not in stderr
    assert not list(interrupted.glob(".*.tmp"))  # the epoch in progress was not saved half-way

    for out in (killed, interrupted):
        assert not (out / "metrics.json").exists()
        resume(out, capsys)
        assert metrics(out) == straight
        assert epoch_rows(out) == epoch_rows(straight_run)
        assert [row["epoch"] for row in epoch_rows(out)] == [str(e) for e in range(1, 7)]


def test_a_kill_between_the_epoch_log_and_the_checkpoint_neither_repeats_nor_loses_a_row(
        tmp_path: Path, straight_run: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Stopped after epoch 3's row reached metrics.csv and TensorBoard but before its checkpoint:
    the resumed run redoes epoch 3 and both logs hold every epoch once, as the straight run's
    metrics.csv does; TensorBoard's own reader reads the scalars back."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing."
                                            "event_accumulator")
    real_save = EpochTrainer.save

    def killed_before_saving_epoch_three(self: EpochTrainer) -> None:
        if self.epoch == 3:
            raise KeyboardInterrupt
        real_save(self)

    monkeypatch.setattr(EpochTrainer, "save", killed_before_saving_epoch_three)
    out = tmp_path / "run"
    assert main([*TRAIN, "--tensorboard", "--out", str(out)]) == 130
    assert [row["epoch"] for row in epoch_rows(out)] == ["1", "2", "3"]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2

    monkeypatch.undo()
    capsys.readouterr()
    assert main([*TRAIN, "--tensorboard", "--resume", "--out", str(out)]) == 0
    rows = epoch_rows(out)
    assert rows == epoch_rows(straight_run)
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train_loss", "train_recon", "val_acsa", "lr", "epoch"} <= set(
        events.Tags()["scalars"])
    loss = events.Scalars("train_loss")
    assert [event.step for event in loss] == [int(row["step"]) for row in rows]
    assert [event.value for event in loss] == pytest.approx(
        [float(row["train_loss"]) for row in rows], rel=1e-6)


def test_ctrl_c_mid_epoch_discards_that_epoch_only(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C halfway through epoch 2, before any validation (every second epoch) chose a best
    model: the checkpoint holds epoch 1, and the resumed run ends like a straight one."""
    train = [*TRAIN, "--epochs", "2", "--set", "train.eval_every=2"]
    real_step = dgc.train.dgc.Trainer.train_step

    def interrupted_in_epoch_two(self: dgc.train.dgc.Trainer, index: Any) -> dict[str, float]:
        if self.epoch == 1 and self.step == 12:
            raise KeyboardInterrupt
        return real_step(self, index)

    monkeypatch.setattr(dgc.train.dgc.Trainer, "train_step", interrupted_in_epoch_two)
    out = tmp_path / "run"
    assert main([*train, "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == RESUME_HINT
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"], state["best"]["epoch"]) == (1, 8, None)
    assert not (out / "best.pt").exists()

    monkeypatch.undo()
    assert main([*train, "--resume", "--out", str(out)]) == 0
    assert main([*train, "--out", str(tmp_path / "straight")]) == 0
    assert metrics(out) == metrics(tmp_path / "straight")


def test_ctrl_c_during_test_prediction_keeps_the_trained_model(
        tmp_path: Path, straight: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C after the last epoch, while the test set is scored: the message still points at
    the checkpoint, and --resume only predicts."""
    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(dgc.run.predict, "predict_images", interrupted)
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "checkpoint.pt holds the last complete epoch" in captured.out
    assert captured.err.strip() == RESUME_HINT
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 6
    assert not (out / "metrics.json").exists()

    monkeypatch.undo()
    resume(out, capsys)
    assert metrics(out) == straight


def test_sigterm_stops_a_benchmark_which_then_resumes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bench = ["bench", "--exp", "digits", "--methods", "dgc", "--seeds", "1", "--epochs", "2",
             "--threads", "1", "--quiet", "--set", "train.pretrain_batch=200"]
    real_step = dgc.train.dgc.Trainer.train_step

    def terminated_in_epoch_two(self: dgc.train.dgc.Trainer, index: Any) -> dict[str, float]:
        if self.epoch == 1 and self.step == 12:  # halfway through the second epoch
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
            signal.raise_signal(signal.SIGTERM)
        return real_step(self, index)

    monkeypatch.setattr(dgc.train.dgc.Trainer, "train_step", terminated_in_epoch_two)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "bench"
    assert main([*bench, "--out", str(out)]) == 143
    assert signal.getsignal(signal.SIGTERM) == before
    assert "rerun the same command to continue" in capsys.readouterr().err
    assert load_checkpoint(out / "dgc-s1" / "checkpoint.pt")["epoch"] == 1
    assert not (out / "results.json").exists()

    monkeypatch.undo()
    assert main([*bench, "--out", str(out)]) == 0
    assert main([*bench, "--out", str(tmp_path / "straight")]) == 0
    assert metrics(out / "dgc-s1") == metrics(tmp_path / "straight" / "dgc-s1")


def test_a_second_train_into_a_running_run_is_refused(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Two `dgc train` into one --out at once: the second is refused, with or without
    --resume, while the first (a long run, stopped by Ctrl-C afterwards) holds the lock."""
    out = tmp_path / "run"
    process = start_training(out, "--epochs", "1000")
    deadline = time.monotonic() + 300
    while not (out / ".dgc.lock").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no lock after 300 s"
        time.sleep(0.01)
    for options in ([], ["--epochs", "1000", "--resume"]):
        capsys.readouterr()
        assert main([*TRAIN, *options, "--out", str(out)]) == 2
        assert f"is in use by process {process.pid}" in capsys.readouterr().err
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 130, process.communicate()
    assert not (out / ".dgc.lock").exists()
