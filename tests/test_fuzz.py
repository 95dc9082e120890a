"""Fuzzing of the file readers: random bytes, truncations and bit flips of a valid small file.

Whatever a damaged file holds, the IDX, SVHN `.mat` and `.npz` readers and the checkpoint loader
either read it or raise DGCError; a loaded checkpoint is the one that was saved. The number of
examples is bounded so the whole file runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import savemat

from dgc import data
from dgc.cli import load_array
from dgc.core.errors import DGCError
from dgc.core.io import load_checkpoint, save_checkpoint

FUZZ = settings(max_examples=50, deadline=None)


def idx_file(compress: bool) -> bytes:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    raw = bytes([0, 0, 0x08, 3]) + np.array(images.shape, dtype=">u4").tobytes() + images.tobytes()
    return gzip.compress(raw) if compress else raw


def mat_file(compress: bool) -> bytes:
    buffer = io.BytesIO()
    x = np.arange(32 * 32 * 3 * 2, dtype=np.uint32).astype(np.uint8).reshape(32, 32, 3, 2)
    savemat(buffer, {"X": x, "y": np.array([[1], [10]], dtype=np.uint8)},
            do_compression=compress)
    return buffer.getvalue()


def npz_file(compress: bool) -> bytes:
    buffer = io.BytesIO()
    save = np.savez_compressed if compress else np.savez
    save(buffer, x_train=np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3),
         y_train=np.array([0, 1, 1, 0]), x_test=np.zeros((2, 3, 3), np.float32),
         y_test=np.array([1, 0]), class_names=np.array(["a", "b"]))
    return buffer.getvalue()


def checkpoint_file() -> tuple[bytes, dict]:
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "best": {"score": 0.5}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


@st.composite
def damaged(draw: st.DrawFn, valid: bytes) -> bytes:
    """Random bytes, a truncation, or one to four bit flips (half of them in the first 512 bytes,
    where the headers are) of `valid`."""
    kind = draw(st.sampled_from(["random", "truncate", "flip"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "truncate":
        return valid[:draw(st.integers(0, len(valid) - 1))]
    content = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        end = draw(st.sampled_from([min(512, len(valid)), len(valid)]))
        content[draw(st.integers(0, end - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(content)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_fuzz(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"

    @FUZZ
    @given(damaged(idx_file(compress)))
    def check(content: bytes) -> None:
        path.write_bytes(content)
        with contextlib.suppress(DGCError):
            data.read_idx(path)

    check()


@pytest.mark.parametrize("compress", [True, False])
def test_svhn_mat_reader_fuzz(tmp_path: Path, compress: bool) -> None:
    valid = mat_file(compress)
    for name in data.SVHN_FILES:
        (tmp_path / name).write_bytes(valid)

    @FUZZ
    @given(damaged(valid))
    def check(content: bytes) -> None:
        (tmp_path / data.SVHN_FILES[0]).write_bytes(content)
        with contextlib.suppress(DGCError):
            data.load_svhn(tmp_path)

    check()


@pytest.mark.parametrize("reader", [data.load_npz, load_array], ids=["--data", "predict"])
@pytest.mark.parametrize("compress", [True, False])
def test_npz_loader_fuzz(tmp_path: Path, compress: bool, reader: Callable[[Path], Any]) -> None:
    """Both readers of a user's .npz: a training set (`--data`) and `dgc predict --input`."""
    path = tmp_path / "mine.npz"

    @FUZZ
    @given(damaged(npz_file(compress)))
    def check(content: bytes) -> None:
        path.write_bytes(content)
        with contextlib.suppress(DGCError):
            reader(path)

    check()


def test_checkpoint_loader_fuzz(tmp_path: Path) -> None:
    """A damaged checkpoint is refused, or it loads as exactly what was saved: never silently
    different weights."""
    valid, state = checkpoint_file()
    path = tmp_path / "checkpoint.pt"

    @FUZZ
    @given(damaged(valid))
    def check(content: bytes) -> None:
        path.write_bytes(content)
        try:
            loaded = load_checkpoint(path)
        except DGCError:
            return
        assert torch.equal(loaded["model"]["w"], state["model"]["w"])
        assert {k: v for k, v in loaded.items() if k != "model"} == {
            k: v for k, v in state.items() if k != "model"}

    check()


def test_fuzzed_files_are_valid_to_begin_with(tmp_path: Path) -> None:
    """The seeds of the fuzzing read correctly, so the fuzz tests start from real files."""
    for compress in (True, False):
        path = tmp_path / "idx.gz"
        path.write_bytes(idx_file(compress))
        assert data.read_idx(path).shape == (3, 4, 5)
        for name in data.SVHN_FILES:
            (tmp_path / name).write_bytes(mat_file(compress))
        assert data.load_svhn(tmp_path).y_train.tolist() == [1, 0]
        (tmp_path / "mine.npz").write_bytes(npz_file(compress))
        assert data.load_npz(tmp_path / "mine.npz").class_names == ("a", "b")
    save_checkpoint(tmp_path / "c.pt", checkpoint_file()[1])
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 3
