"""A small, defensive reader of the numeric arrays in a MATLAB v5 `.mat` file (SVHN's format).

scipy.io.loadmat crashes the interpreter with a segmentation fault on some damaged files (found
by tests/test_fuzz.py), which no `except` can catch. This reader checks every tag, length, type
and shape it reads and raises DGCError instead. It knows the layout of the MAT-File Format
(MathWorks, level 5): a 128-byte header, then data elements (tag + body, or the "small" form
with both in 8 bytes), each variable an miMATRIX element, possibly inside an miCOMPRESSED one.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dgc.core.errors import DGCError

HEADER_BYTES = 128
MI_INT8, MI_UINT32, MI_INT32, MI_MATRIX, MI_COMPRESSED = 1, 6, 5, 14, 15
# Data element type -> how its bytes are stored.
ELEMENT_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
                  12: "i8", 13: "u8"}
NUMERIC_CLASSES = range(6, 16)  # mxDOUBLE_CLASS .. mxUINT64_CLASS
COMPLEX_FLAG = 0x800


class Damaged(Exception):
    """A structural problem inside the file; `read_mat_arrays` names the file."""


def read_mat_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The real numeric variables among `names` that the MAT v5 file at `path` holds.

    Each keeps its stored dtype and MATLAB's shape, as scipy.io.loadmat returns it, and may be
    a read-only view of the file's bytes; other variables are skipped.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DGCError(f"cannot read {path}: {error.strerror or error}") from error
    order = {b"IM": "<", b"MI": ">"}.get(raw[126:128])
    if len(raw) < HEADER_BYTES or order is None or not raw.startswith(b"MATLAB"):
        raise DGCError(f"{path} is not a MATLAB v5 .mat file (v4 and v7.3/HDF5 files are not "
                       "read); save it with MATLAB's -v7 option or scipy.io.savemat")
    found: dict[str, np.ndarray] = {}
    try:
        for kind, body in elements(raw, HEADER_BYTES, order, padded=False):
            if kind == MI_COMPRESSED:
                kind, body = only_element(inflate(body), order)
            if kind != MI_MATRIX:
                continue
            name, array = matrix(body, order)
            if name in names and array is not None:
                found[name] = array
    except Damaged as error:
        raise DGCError(f"{path} is a damaged .mat file ({error}); download it again") from error
    return found


def elements(buffer: bytes, offset: int, order: str, padded: bool) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each data element from `offset` on; bodies inside a variable are padded
    to 8 bytes, top-level elements are not."""
    while offset < len(buffer):
        if len(buffer) - offset < 8:
            raise Damaged(f"a data element at byte {offset} is cut off")
        first, second = (int(v) for v in
                         np.frombuffer(buffer, dtype=f"{order}u4", count=2, offset=offset))
        if first >> 16:  # the small form: byte count in the upper half, body in the tag
            size, kind = first >> 16, first & 0xFFFF
            if size > 4:
                raise Damaged(f"a small data element at byte {offset} claims {size} bytes")
            yield kind, buffer[offset + 4:offset + 4 + size]
            offset += 8
            continue
        kind, size, start = first, second, offset + 8
        if start + size > len(buffer):
            raise Damaged(f"a data element at byte {offset} needs {size} bytes but only "
                          f"{len(buffer) - start} follow")
        yield kind, buffer[start:start + size]
        offset = start + (size + 7) // 8 * 8 if padded else start + size


def only_element(buffer: bytes, order: str) -> tuple[int, bytes]:
    parts = list(elements(buffer, 0, order, padded=True))
    if len(parts) != 1:
        raise Damaged(f"a compressed element holds {len(parts)} elements instead of one")
    return parts[0]


def inflate(body: bytes) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error as error:
        raise Damaged(f"a compressed element does not decompress: {error}") from error


def matrix(body: bytes, order: str) -> tuple[str, np.ndarray | None]:
    """The name of an miMATRIX variable and its array (None unless a real numeric array)."""
    parts = elements(body, 0, order, padded=True)
    flags = expect(parts, MI_UINT32, "array flags")
    dims = expect(parts, MI_INT32, "dimensions")
    name = expect(parts, MI_INT8, "array name").decode("latin-1")
    if len(flags) != 8 or len(dims) % 4 or len(dims) < 8:
        raise Damaged(f"variable {name!r} has malformed array flags or dimensions")
    flag_word = int(np.frombuffer(flags, dtype=f"{order}u4", count=1)[0])
    if flag_word & 0xFF not in NUMERIC_CLASSES or flag_word & COMPLEX_FLAG:
        return name, None
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=f"{order}i4"))
    if min(shape) < 0:
        raise Damaged(f"variable {name!r} has negative dimensions {shape}")
    kind, data = next(parts, (None, b""))
    if kind not in ELEMENT_DTYPES:
        raise Damaged(f"variable {name!r} stores its data as unknown type {kind}")
    dtype = np.dtype(f"{order}{ELEMENT_DTYPES[kind]}")
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise Damaged(f"variable {name!r} of shape {shape} holds {len(data)} bytes of "
                      f"{dtype.name}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F")
    return name, array.astype(dtype.newbyteorder("="), copy=False)


def expect(parts: Iterator[tuple[int, bytes]], kind: int, what: str) -> bytes:
    found, body = next(parts, (None, b""))
    if found != kind:
        raise Damaged(f"expected the {what} of a variable (type {kind}), found type {found}")
    return body
