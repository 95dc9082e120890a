"""Tests for dgc.data.matfile, the MAT v5 reader behind the SVHN loader."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from dgc.core.errors import DGCError
from dgc.data.matfile import read_mat_arrays


def element(order: str, kind: int, body: bytes) -> bytes:
    """A padded data element: tag, body, zeros up to a multiple of 8 bytes."""
    return struct.pack(f"{order}II", kind, len(body)) + body + bytes(-len(body) % 8)


def hand_made(order: str, array: np.ndarray, name: bytes = b"X", class_code: int = 9,
              kind: int = 2) -> bytes:
    """One variable written by hand, in either byte order (scipy writes only the native one)."""
    header = b"MATLAB 5.0 MAT-file, hand made".ljust(124) + struct.pack(f"{order}H", 0x0100)
    header += b"IM" if order == "<" else b"MI"
    body = (element(order, 6, struct.pack(f"{order}II", class_code, 0))
            + element(order, 5, np.array(array.shape, dtype=f"{order}i4").tobytes())
            + element(order, 1, name)
            + element(order, kind, array.astype(array.dtype.newbyteorder(order))
                      .tobytes(order="F")))
    return header + element(order, 14, body)


@pytest.mark.parametrize("compress", [True, False])
def test_reads_what_scipy_writes(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    variables = {"X": rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8),
                 "y": np.array([[1], [10], [3], [4], [5]], dtype=np.uint8),
                 "f": rng.normal(size=(3, 4)), "i": np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
                 "text": "a string", "cell": np.array([1, "a"], dtype=object)}
    path = tmp_path / "a.mat"
    savemat(path, variables, do_compression=compress)
    arrays = read_mat_arrays(path, ("X", "y", "f", "i", "text", "cell"))
    assert set(arrays) == {"X", "y", "f", "i"}  # strings and cells are not numeric arrays
    expected = loadmat(path)
    for name, array in arrays.items():
        assert array.dtype == expected[name].dtype
        np.testing.assert_array_equal(array, expected[name])


@pytest.mark.parametrize("order", ["<", ">"])
def test_both_byte_orders_and_column_major_data(tmp_path: Path, order: str) -> None:
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    path = tmp_path / "a.mat"
    path.write_bytes(hand_made(order, array, class_code=12, kind=5))
    got = read_mat_arrays(path, ("X",))["X"]
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a MATLAB v5 .mat file"),
    (b"\x89HDF\r\n" + bytes(600), "not a MATLAB v5 .mat file"),
    (hand_made("<", np.zeros((2, 2), np.uint8), kind=0x202), "unknown type 514"),
    (hand_made("<", np.zeros((2, 2), np.uint8), kind=0), "unknown type 0"),
    (hand_made("<", np.zeros((2, 2), np.uint8))[:-9], "byte 128 needs 64 bytes but only 55 follow"),
    (hand_made("<", np.zeros((2, 2), np.uint8), kind=4), "holds 4 bytes of uint16"),
])
def test_damaged_files(tmp_path: Path, content: bytes, message: str) -> None:
    """Among them the element types that make scipy.io.loadmat crash with a segfault."""
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(content)
    with pytest.raises(DGCError, match=message) as info:
        read_mat_arrays(path, ("X",))
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DGCError, match="cannot read"):
        read_mat_arrays(tmp_path / "nope.mat", ("X",))


def test_compressed_element_must_inflate(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    savemat(buffer, {"X": np.zeros((4, 4), np.uint8)}, do_compression=True)
    content = bytearray(buffer.getvalue())
    content[140] ^= 0xFF  # inside the zlib stream
    path = tmp_path / "a.mat"
    path.write_bytes(bytes(content))
    with pytest.raises(DGCError, match="damaged .mat file"):
        read_mat_arrays(path, ("X",))
