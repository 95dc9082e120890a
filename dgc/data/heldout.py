"""Classes held out of training, so that their test images can serve as truly novel inputs.

`train.held_out` names classes (indices of the full dataset) that a run never sees: they leave
the training set and the test set, and the remaining classes are renumbered 0..K−1 in order.
`dgc evaluate RUN --ood heldout` then scores the held-out classes' test images as novel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dgc.core.errors import DGCError
from dgc.data.protocol import ImbalancedData


def check_held_out(classes: Sequence[int], n_classes: int) -> np.ndarray:
    """The held-out class indices, refused unless distinct, in range and leaving two classes."""
    held = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(set(held.tolist())) != len(held) or np.any((held < 0) | (held >= n_classes)) \
            or n_classes - len(held) < 2:
        raise DGCError(f"train.held_out must list distinct class indices in 0..{n_classes - 1} "
                       f"and leave at least two classes to train on, got {list(classes)}")
    return held


def hold_out(data: ImbalancedData, classes: Sequence[int]) -> ImbalancedData:
    """`data` without the held-out classes, the rest renumbered in order (unchanged if none)."""
    if not len(classes):
        return data
    held = check_held_out(classes, data.num_classes)
    kept = np.setdiff1d(np.arange(data.num_classes), held)
    renumber = np.full(data.num_classes, -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    train, test = np.isin(data.y_train, kept), np.isin(data.y_test, kept)
    return dataclasses.replace(
        data, x_train=data.x_train[train], y_train=renumber[data.y_train[train]],
        x_test=data.x_test[test], y_test=renumber[data.y_test[test]],
        class_names=tuple(data.class_names[c] for c in kept),
        train_counts=data.train_counts[kept])


def held_out_test_images(data: ImbalancedData, classes: Sequence[int]) -> np.ndarray:
    """The test images of the held-out classes, from the full dataset `data`."""
    held = check_held_out(classes, data.num_classes)
    return data.x_test[np.isin(data.y_test, held)]
