"""Bad input and faults while saving, through the command line (docs/RELIABILITY.md).

Every case runs `dgc train` into the directory of an earlier finished run (with `--overwrite`
or `--resume`, without which the folder is refused) and checks the one line on stderr, exit
code 2, and that the earlier run's files are byte-identical afterwards (or, where the fault
comes after training, that the file being written is), with no temporary file left behind. CI
runs as root, where permissions do not stop writes, so "not writable" and "disk full" are
injected by patching the write.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.io import savemat

import dgc.core.io
import dgc.run.folder
import dgc.train.dgc
from dgc.cli import main
from dgc.core.errors import DGCError
from dgc.data import IDX_FILES, SVHN_FILES
from dgc.run.folder import RunDir

TRAIN = ["train", "--seed", "1", "--samples", "1", "--quiet", "--no-report", "--threads", "1",
         "--set", "train.pretrain_batch=200", "--set", "train.schedule=constant"]
DIGITS = [*TRAIN, "--exp", "digits"]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch digits run: the output a failing command must not destroy."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    assert main([*DIGITS, "--epochs", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_dir(earlier_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the earlier run, in an empty working directory without $DGC_DATA."""
    monkeypatch.delenv("DGC_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copytree(earlier_run, tmp_path / "run"))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def fails_with(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command; it must exit 2 with one `dgc: error:` line containing `message`."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dgc: error: "), lines
    assert message in lines[0], lines[0]
    return lines[0]


def write_npz(path: Path, **changes: np.ndarray) -> Path:
    arrays = {"x_train": np.zeros((6, 8, 8), np.uint8), "y_train": np.array([0, 1, 2] * 2),
              "x_test": np.zeros((3, 8, 8), np.uint8), "y_test": np.array([0, 1, 2])}
    np.savez(path, **(arrays | changes))
    return path


def idx_dir(directory: Path, last_label: int = 2) -> Path:
    """Four valid gzip IDX files of six images each, the last one labelled `last_label`."""
    directory.mkdir()
    for name in IDX_FILES:
        array = (np.zeros((6, 4, 4), np.uint8) if "images" in name
                 else np.array([0, 1, 2, 0, 1, last_label], np.uint8))
        header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
        (directory / name).write_bytes(gzip.compress(header + array.tobytes()))
    return directory


def svhn_dir(directory: Path, content: Callable[[Path], object]) -> Path:
    directory.mkdir()
    for name in SVHN_FILES:
        content(directory / name)
    return directory


def not_idx(directory: Path) -> Path:
    directory.mkdir()
    for name in IDX_FILES:
        (directory / name).write_text("<html>404 not found</html>")
    return directory


def truncated_idx(directory: Path) -> Path:
    images = idx_dir(directory) / IDX_FILES[0]
    images.write_bytes(images.read_bytes()[:-20])
    return directory


def not_npz(path: Path) -> Path:
    path.write_bytes(b"PK, but not a zip archive")
    return path


def wrong_mat(path: Path) -> None:
    savemat(path, {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.array([[1], [2]])})


# case: (options of `dgc train` made in a temporary folder, a piece of the message)
BAD_DATA: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing folder": (lambda t: ["--exp", "svhn", "--data-dir", str(t / "nowhere")],
                       "SVHN files train_32x32.mat, test_32x32.mat not found"),
    "missing npz": (lambda t: ["--data", str(t / "nowhere.npz")], "no such file"),
    "not IDX": (lambda t: ["--exp", "mnist", "--data-dir", str(not_idx(t / "m"))],
                "neither a gzip file nor a plain IDX file"),
    "truncated IDX": (lambda t: ["--exp", "mnist", "--data-dir", str(truncated_idx(t / "m"))],
                      "corrupt or truncated gzip"),
    "IDX labels out of range": (
        lambda t: ["--exp", "mnist", "--data-dir", str(idx_dir(t / "m", last_label=12))],
        "labels must be in 0..9"),
    "not mat": (lambda t: ["--exp", "svhn", "--data-dir", str(svhn_dir(
        t / "s", lambda p: p.write_text("MATLAB? no, text")))], "is not a MATLAB v5 .mat file"),
    "mat wrong shape": (lambda t: ["--exp", "svhn", "--data-dir", str(svhn_dir(
        t / "s", wrong_mat))], "expected uint8 of shape (32, 32, 3, N)"),
    "not npz": (lambda t: ["--data", str(not_npz(t / "d.npz"))],
                "neither an .npz archive nor an .npy file"),
    "npz wrong shape": (lambda t: ["--data", str(write_npz(
        t / "d.npz", x_train=np.zeros((6, 64), np.uint8)))], "x_train has shape (6, 64)"),
    "npz wrong dtype": (lambda t: ["--data", str(write_npz(
        t / "d.npz", x_train=np.zeros((6, 8, 8), np.int32)))], "x_train has dtype int32"),
    "npz float labels": (lambda t: ["--data", str(write_npz(
        t / "d.npz", y_train=np.array([0.0, 1, 2] * 2)))], "labels must be a 1-D integer"),
    "npz negative label": (lambda t: ["--data", str(write_npz(
        t / "d.npz", y_test=np.array([0, -1, 2])))], "negative label -1"),
    "npz label out of range": (lambda t: ["--data", str(write_npz(
        t / "d.npz", y_test=np.array([0, 1, 2**40])))], "never occur (max label 1099511627776)"),
    "NaN pixels": (lambda t: ["--data", str(write_npz(
        t / "d.npz", x_test=np.full((3, 8, 8), np.nan)))], "x_test contains NaN"),
}


@pytest.mark.parametrize("kind", list(BAD_DATA))
def test_bad_data(kind: str, run_dir: Path, tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_dir)
    options, message = BAD_DATA[kind]
    fails_with([*TRAIN, *options(tmp_path), "--overwrite", "--out", str(run_dir)], message,
               capsys)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(("profile", "message"), [
    ("500,90,70,50,35,25,18,12,8,6", "asks for 500 training images of class 0 (0)"),
    ("120,90,70", "profile has 3 counts but digits has 10 classes"),
])
def test_profile_larger_than_the_data(profile: str, message: str, run_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_dir)
    fails_with([*DIGITS, "--profile", profile, "--overwrite", "--out", str(run_dir)], message,
               capsys)
    assert snapshot(run_dir) == before


def test_output_directory_cannot_be_created(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    fails_with([*DIGITS, "--epochs", "1", "--out", str(tmp_path / "file" / "run")],
               "cannot create the output directory", capsys)
    assert (tmp_path / "file").read_text() == "a file, not a folder"


def test_output_directory_not_writable(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_dir)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(dgc.core.io.tempfile, "mkstemp", refuse)
    line = fails_with([*DIGITS, "--epochs", "3", "--resume", "--out", str(run_dir)],
                      "config.json: Permission denied", capsys)
    assert "make" in line and "writable" in line
    assert snapshot(run_dir) == before


def fill_disk_at(monkeypatch: pytest.MonkeyPatch, name: str, at: str = "fsync") -> None:
    """Writes of `name` fail with ENOSPC, as on a full disk, at its `fsync` or at a `write`
    once its first kilobyte is written (inside torch.save for a checkpoint); other files are
    written."""
    real_mkstemp, real_fsync, real_fdopen = tempfile.mkstemp, os.fsync, os.fdopen
    temporary: dict[int, str] = {}
    full = OSError(errno.ENOSPC, "No space left on device")

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, path = real_mkstemp(*args, **kwargs)
        temporary[fd] = Path(path).name
        return fd, path

    def hit(fd: int) -> bool:
        return temporary.get(fd, "").startswith(f".{name}.")

    def fsync(fd: int) -> None:
        if at == "fsync" and hit(fd):
            raise full
        real_fsync(fd)

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        if at != "write" or not hit(fd):
            return handle

        class Full:  # the file, on a disk that fills after its first kilobyte
            written = 0

            def __getattr__(self, attribute: str) -> Any:
                return getattr(handle, attribute)

            def __enter__(self) -> Full:
                return self

            def __exit__(self, *exc: object) -> None:
                handle.close()

            def write(self, data: bytes) -> int:
                self.written += len(data)
                if self.written > 1024:
                    raise full
                return handle.write(data)

        return Full()

    monkeypatch.setattr(dgc.core.io.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(dgc.core.io.os, "fsync", fsync)
    monkeypatch.setattr(dgc.core.io.os, "fdopen", fdopen)


@pytest.mark.parametrize(("name", "at"), [("checkpoint.pt", "fsync"), ("checkpoint.pt", "write"),
                                          ("metrics.json", "fsync")])
def test_disk_full_while_saving(name: str, at: str, run_dir: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Resuming the earlier run for one more epoch with a full disk while `name` is written. A
    write failing inside torch.save was torch's RuntimeError, a traceback (issue 34)."""
    before = snapshot(run_dir)
    fill_disk_at(monkeypatch, name, at)
    line = fails_with([*DIGITS, "--epochs", "3", "--resume", "--out", str(run_dir)],
                      f"{name}: No space left on device", capsys)
    assert "free some space" in line
    after = snapshot(run_dir)
    assert after[name] == before[name]
    assert not [p for p in after if p.endswith(".tmp")]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == (
        2 if name == "checkpoint.pt" else 3)


def test_disk_full_while_reporting_changes_nothing(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A report that fails half-way (here at the t-SNE figure, then at report.md over an
    earlier report) left some of its files in the finished run (issue 34): now none."""
    for name in ("tsne.png", "report.md"):
        before = snapshot(run_dir)
        with monkeypatch.context() as patch:
            fill_disk_at(patch, name, "write")
            line = fails_with(["report", str(run_dir), "--quiet"],
                              f"{name}: No space left on device", capsys)
        assert line.startswith(f"dgc: error: no report written into {run_dir}, and none of its "
                               "files changed: could not write ")
        assert snapshot(run_dir) == before
        assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []
        assert main(["report", str(run_dir), "--quiet"]) == 0  # with the disk freed


def test_the_run_folder_deleted_while_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Deleting the folder of a running `dgc train` gave a FileNotFoundError traceback."""
    out = tmp_path / "run"
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if kwargs.get("prefix") == ".checkpoint.pt.":
            shutil.rmtree(out)
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(dgc.core.io.tempfile, "mkstemp", mkstemp)
    line = fails_with([*DIGITS, "--epochs", "2", "--out", str(out)],
                      "checkpoint.pt: No such file or directory", capsys)
    assert f"{out} is gone (deleted or moved while dgc ran?)" in line
    assert not out.exists()


def test_a_full_disk_while_taking_the_lock_leaves_no_lock(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock's few bytes not written: an empty lock file stayed and refused every later
    command ("in use by process ? on ?")."""
    real_fdopen = os.fdopen

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        real_fdopen(fd, *args, **kwargs).close()
        return Full()

    with monkeypatch.context() as patch:
        patch.setattr(dgc.run.folder.os, "fdopen", fdopen)
        with pytest.raises(DGCError, match=r"\.dgc\.lock: No space left on device"), \
                RunDir(tmp_path / "run").lock():
            pass
    assert not (tmp_path / "run").exists()
    with RunDir(tmp_path / "run").lock():
        assert (tmp_path / "run" / ".dgc.lock").is_file()


def test_non_finite_loss(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN loss while resuming: one line naming the term and step; the checkpoint is kept."""
    before = snapshot(run_dir)
    real = dgc.train.dgc.reconstruction_loss
    monkeypatch.setattr(dgc.train.dgc, "reconstruction_loss",
                        lambda x, recon, weights: real(x, recon, weights) * math.nan)
    line = fails_with([*DIGITS, "--epochs", "3", "--resume", "--out", str(run_dir)],
                      "the reconstruction loss became nan at epoch 3, step 17", capsys)
    assert "checkpoint.pt keeps epoch 2" in line and "--grad-clip" in line
    after = snapshot(run_dir)
    assert json.loads(after.pop("config.json"))["train"]["epochs"] == 3  # the command's settings
    assert after == {k: v for k, v in before.items() if k != "config.json"}
