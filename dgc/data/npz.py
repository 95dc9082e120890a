"""The user's own arrays: an .npz with x_train, y_train, x_test, y_test, optional class_names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgc.core.errors import DGCError
from dgc.data.base import DatasetInfo, PathLike, RawData
from dgc.data.files import open_numpy, read_member


def uint8_images(x: np.ndarray, what: str) -> np.ndarray:
    """The user's images as uint8: uint8 as given, floats in [0, 1] scaled to 0..255 and rounded,
    anything else refused, naming `what` (the file, and the array in it)."""
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DGCError(f"{what} has dtype {x.dtype}; images must be uint8 (0..255) or float in "
                       "[0, 1]")
    if not np.isfinite(x).all():
        raise DGCError(f"{what} contains NaN or infinite values; clean the images first")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DGCError(f"{what} spans {x.min()}..{x.max()}; float images must lie in [0, 1] "
                       "(divide 0..255 data by 255 or store it as uint8)")
    return np.rint(x * 255.0).astype(np.uint8)


def _npz_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DGCError(
            f"{path}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C 1 or 3"
        )
    return uint8_images(x, f"{path}: {key}")


def _npz_labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DGCError(
            f"{path}: {key} is {y.dtype} of shape {y.shape}; labels must be a 1-D integer array "
            "(e.g. y.astype(np.int64))"
        )
    if y.size and y.min() < 0:
        raise DGCError(f"{path}: {key} contains negative label {y.min()}; labels must be 0..C-1")
    if y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise DGCError(f"{path}: {key} contains label {y.max()}; labels must be 0..C-1")
    return y.astype(np.int64)


def load_npz(data_dir: PathLike | None = None) -> RawData:
    """A user's own dataset: an .npz with x_train, y_train, x_test, y_test, optional class_names."""
    if data_dir is None:
        raise DGCError("the npz dataset needs the path of your .npz file (pass it as --data-dir)")
    path = Path(data_dir).expanduser()
    if not path.is_file():
        problem = "it is a folder" if path.is_dir() else "no such file"
        raise DGCError(f"cannot read {path}: {problem}; give the path of your .npz file")
    keys = ("x_train", "y_train", "x_test", "y_test")
    npz = open_numpy(path, "save your arrays with np.savez")
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DGCError(f"{path} is a single .npy array; save your arrays with np.savez")
    with npz:
        absent = [k for k in keys if k not in npz.files]
        if absent:
            raise DGCError(
                f"{path} lacks the arrays {', '.join(absent)}; it must hold "
                f"{', '.join(keys)} (and optionally class_names)"
            )
        arrays = {k: read_member(npz, k, path) for k in keys}
        names = read_member(npz, "class_names", path) if "class_names" in npz.files else None

    x_train = _npz_images(arrays["x_train"], "x_train", path)
    x_test = _npz_images(arrays["x_test"], "x_test", path)
    y_train = _npz_labels(arrays["y_train"], "y_train", path)
    y_test = _npz_labels(arrays["y_test"], "y_test", path)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise DGCError(f"{path}: x_{split} has {len(x)} images but y_{split} {len(y)} labels")
        if len(x) == 0:
            raise DGCError(f"{path}: the {split} set is empty")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DGCError(
            f"{path}: train images are {x_train.shape[1:]} but test images {x_test.shape[1:]}; "
            "both must share (H, W, C)"
        )
    present = np.union1d(y_train, y_test)
    num_classes = int(present.max()) + 1
    if len(present) != num_classes:
        # at most ten of the gaps, found without enumerating a range as large as the max label
        gaps = np.setdiff1d(np.arange(min(num_classes, len(present) + 10)), present)[:10]
        more = ", ..." if num_classes - len(present) > len(gaps) else ""
        raise DGCError(
            f"{path}: labels must form a contiguous range 0..C-1 across train and test, but "
            f"[{', '.join(map(str, gaps))}{more}] never occur (max label {num_classes - 1}); "
            "renumber the classes"
        )
    unseen = sorted(set(range(num_classes)) - set(np.unique(y_train).tolist()))
    if unseen:
        raise DGCError(f"{path}: classes {unseen} have no training images")
    if names is None:
        class_names = tuple(str(c) for c in range(num_classes))
    elif names.ndim != 1 or len(names) != num_classes or names.dtype.kind not in "US":
        raise DGCError(
            f"{path}: class_names must be {num_classes} strings (one per class), got "
            f"{names.dtype} of shape {names.shape}"
        )
    else:
        class_names = tuple(str(n) for n in names.astype(str))
    return RawData(x_train, y_train, x_test, y_test, class_names)


# The user's own data; its class count is only known once the file is read.
NPZ = DatasetInfo("npz", load_npz, user_data=True)
