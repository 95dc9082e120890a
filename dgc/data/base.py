"""What every dataset module returns and declares: `RawData` and `DatasetInfo`.

Every loader returns uint8 images shaped (N, H, W, C) and int64 labels 0..C-1, so the rest of
the library never needs to know where a dataset came from or how it was stored on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

PathLike = str | os.PathLike[str]

DIGIT_NAMES = tuple(str(i) for i in range(10))
# The paper's Tables 2 and 3 for one dataset: method -> metric -> mean (Table 3 gives R_MI and
# P_MA only for DGC and for the best baseline of each column).
Published = dict[str, dict[str, float]]


@dataclass
class RawData:
    """A dataset exactly as published: full training and test sets, nothing removed."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the library needs to know about one dataset, kept in a single registry entry.

    `loader(data_dir, **options)` reads it, `options` naming the keywords it takes besides the
    folder; `profile` is the training count per class the protocol keeps (None: the training
    set as given); `family` picks the presets' architecture and schedule (`dgc.config`);
    `published` holds the paper's numbers for it and `published_std` its DGC row's spread;
    `user_data` marks the user's own data, whose folder or file *is* the dataset (so another
    `--data-dir` is other data, not another copy); `dihedral` says that mirrors and 90°
    rotations keep every image's class (the `images` preset then trains with them).
    None and empty mean not known before the files are read, or not published.
    """

    name: str
    loader: Callable[..., RawData]
    profile: tuple[int, ...] | None = None
    image_shape: tuple[int, int, int] | None = None
    hflip: bool = False
    class_names: tuple[str, ...] | None = None
    family: str = "mnist"
    published: Published = field(default_factory=dict)
    published_std: dict[str, float] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    user_data: bool = False
    dihedral: bool = False


def published_table(text: str) -> Published:
    """The paper's table as printed: a header of metric names, then one row per method with
    "-" where the paper gives no number."""
    header, *rows = (line.split() for line in text.strip().splitlines())
    return {method: {key: float(v) for key, v in zip(header, values, strict=True) if v != "-"}
            for method, *values in rows}
