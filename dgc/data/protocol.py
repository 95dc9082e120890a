"""The paper's imbalanced-subset protocol and the stratified validation split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dgc.core.errors import DGCError
from dgc.data.base import PathLike
from dgc.data.registry import DATASETS


@dataclass(frozen=True, eq=False)
class ImbalancedData:
    """An imbalanced training subset plus the full test set, as every method must see them."""

    name: str
    seed: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    train_counts: np.ndarray
    hflip: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_sha256(self) -> str:
        """Fingerprint of the training split, to prove two methods trained on the same data."""
        return images_sha256(self.x_train, self.y_train)

    @property
    def test_sha256(self) -> str:
        """Fingerprint of the test set, to refuse scoring a run on other test data."""
        return images_sha256(self.x_test, self.y_test)


def images_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of uint8 images and int64 labels."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _protocol_shuffle(x: np.ndarray, y: np.ndarray, seed: int) -> None:
    """METHOD §5: reseeding before each shuffle applies one permutation to images and labels."""
    np.random.seed(seed)
    np.random.shuffle(x)
    np.random.seed(seed)
    np.random.shuffle(y)


def _check_profile(
    profile: Sequence[int], available: np.ndarray, class_names: Sequence[str], name: str
) -> tuple[int, ...]:
    counts = tuple(profile)
    if len(counts) != len(available):
        raise DGCError(
            f"profile has {len(counts)} counts but {name} has {len(available)} classes; "
            "give one training count per class"
        )
    for c, (want, have) in enumerate(zip(counts, available, strict=True)):
        if isinstance(want, bool) or not isinstance(want, int | np.integer) or want <= 0:
            raise DGCError(
                f"profile count for class {c} ({class_names[c]}) is {want!r}; "
                "counts must be positive integers"
            )
        if want > have:
            raise DGCError(
                f"profile asks for {want} training images of class {c} ({class_names[c]}) but "
                f"{name} has only {have}; lower that count"
            )
    return tuple(int(n) for n in counts)


def load_imbalanced(
    name: str,
    seed: int,
    data_dir: PathLike | None = None,
    profile: Sequence[int] | None = None,
    **options: Any,
) -> ImbalancedData:
    """Build the imbalanced training subset of METHOD §5 and pair it with the full test set.

    profile=None takes the dataset's default; for npz that means its training set as given.
    `options` are the dataset's own reading settings (`DatasetInfo.options`, e.g. the image
    size of class folders); None leaves one at the dataset's default.
    The caller's global numpy RNG state is restored afterwards, although the protocol itself
    has to go through np.random.seed to reproduce the paper's subsets.
    """
    if name not in DATASETS:
        raise DGCError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise DGCError(f"seed must be an integer in 0..2**32-1, got {seed!r}")
    info = DATASETS[name]
    given = {key: value for key, value in options.items() if value is not None}
    foreign = [key for key in given if key not in info.options]
    if foreign:
        takers = [n for n, i in DATASETS.items() if set(foreign) <= set(i.options)]
        raise DGCError(f"the {name} dataset has no setting {', '.join(foreign)}; only the "
                       f"{', '.join(takers) or 'no'} dataset(s) take it")
    raw = info.loader(data_dir, **given)
    class_names = tuple(raw.class_names)
    available = np.bincount(raw.y_train, minlength=len(class_names))
    wanted = profile if profile is not None else info.profile
    if wanted is None:
        x_train, y_train = raw.x_train, raw.y_train
    else:
        counts = _check_profile(wanted, available, class_names, name)
        x, y = raw.x_train.copy(), raw.y_train.copy()
        state = np.random.get_state()
        try:
            _protocol_shuffle(x, y, int(seed))
            keep = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in enumerate(counts)])
            x_train, y_train = x[keep], y[keep]
            _protocol_shuffle(x_train, y_train, int(seed))
        finally:
            np.random.set_state(state)
    return ImbalancedData(
        name=name,
        seed=int(seed),
        x_train=x_train,
        y_train=y_train,
        x_test=raw.x_test,
        y_test=raw.y_test,
        class_names=class_names,
        train_counts=np.bincount(y_train, minlength=len(class_names)).astype(np.int64),
        hflip=info.hflip,
    )


def split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified hold-out: round(fraction * n_c) per class, at least one, never the last one.

    A class with a single image stays in training only, since a class absent from training
    cannot be learnt. Both parts keep the input order.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating):
        raise DGCError(f"validation fraction must be a number in [0, 1), got {fraction!r}")
    if not 0 <= fraction < 1:
        raise DGCError(f"validation fraction must be in [0, 1), got {fraction}")
    if len(x) != len(y):
        raise DGCError(f"cannot split {len(x)} images with {len(y)} labels; lengths must match")
    rng = np.random.default_rng(seed)
    val_parts = []
    if fraction > 0:
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            n_val = min(max(1, round(fraction * len(idx))), len(idx) - 1)
            val_parts.append(rng.permutation(idx)[:n_val])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(y)), val)
    return x[train], y[train], x[val], y[val]
