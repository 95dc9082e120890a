"""SVHN cropped digits, read from the two MATLAB `.mat` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgc.core.errors import DGCError
from dgc.data.base import DIGIT_NAMES, DatasetInfo, PathLike, RawData, published_table
from dgc.data.files import candidate_dirs, find_dir, show_dirs
from dgc.data.matfile import read_mat_arrays

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    arrays = read_mat_arrays(path, ("X", "y"))
    if "X" not in arrays or "y" not in arrays:
        raise DGCError(f"SVHN file {path} lacks the arrays 'X' and 'y'; is it a *_32x32.mat file?")
    x, y = arrays["X"], arrays["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DGCError(
            f"SVHN file {path}: X is {x.dtype} of shape {x.shape}; expected uint8 of shape "
            "(32, 32, 3, N)"
        )
    n = x.shape[3]
    whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.array_equal(y, np.round(y)))
    if y.shape not in ((n, 1), (n,)) or not whole:
        raise DGCError(
            f"SVHN file {path}: y is {y.dtype} of shape {y.shape}; expected whole numbers of "
            f"shape ({n}, 1) to match X"
        )
    y = y.reshape(n)
    if n and (y.min() < 1 or y.max() > 10):
        raise DGCError(
            f"SVHN file {path}: labels span {y.min()}..{y.max()}; the format uses 1..10 "
            "(10 stands for digit 0)"
        )
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y.astype(np.int64) % 10


def load_svhn(data_dir: PathLike | None = None) -> RawData:
    """SVHN cropped digits from train_32x32.mat / test_32x32.mat; label 10 becomes 0."""
    searched = candidate_dirs("svhn", data_dir)
    directory = find_dir(searched, SVHN_FILES)
    if directory is None:
        raise DGCError(
            f"SVHN files {', '.join(SVHN_FILES)} not found. Searched: {show_dirs(searched)}. "
            f"Download them from {SVHN_URL} into one directory and pass it with --data-dir, "
            "or put them in $DGC_DATA/svhn"
        )
    x_train, y_train = _read_svhn_mat(directory / SVHN_FILES[0])
    x_test, y_test = _read_svhn_mat(directory / SVHN_FILES[1])
    return RawData(x_train, y_train, x_test, y_test, DIGIT_NAMES)


SVHN = DatasetInfo(
    "svhn", load_svhn, (4500, 2000, 1000, 800, 600, 500, 400, 250, 150, 80), (32, 32, 3),
    class_names=DIGIT_NAMES,
    published=published_table("""
                 acsa    f_macro  g_macro  r_mi    p_ma
        BAGAN    0.6785  0.6719   0.7876   -       -
        DFBS     0.4788  0.4745   0.6539   -       -
        GAMO     0.6474  0.6457   0.7784   -       -
        BayesCNN 0.5511  0.5392   0.6998   -       -
        mmDGMs   0.7220  0.7291   0.8291   0.3740  0.4301
        DGC      0.7493  0.7535   0.8501   0.4882  0.5348
    """),
    published_std={"acsa": 0.01, "f_macro": 0.01, "g_macro": 0.00},
)
