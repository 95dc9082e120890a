"""scikit-learn's 8x8 digits: a small offline set for quick runs and tests."""

from __future__ import annotations

import numpy as np

from dgc.data.base import DIGIT_NAMES, DatasetInfo, PathLike, RawData

DIGITS_TEST_PER_CLASS = 50


def load_digits(data_dir: PathLike | None = None) -> RawData:
    """scikit-learn's 8x8 digits with a fixed test set of 50 per class; data_dir is unused.

    The test split uses its own RandomState(0), so it is identical for every experiment seed;
    everything not in the test set is the training pool the protocol draws from.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.RandomState(0)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]
    test = np.sort(np.concatenate([idx[:DIGITS_TEST_PER_CLASS] for idx in per_class]))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return RawData(images[train], labels[train], images[test], labels[test], DIGIT_NAMES)


# Not in the paper: a small offline set (IR 20) for quick runs and tests.
DIGITS = DatasetInfo("digits", load_digits, (120, 90, 70, 50, 35, 25, 18, 12, 8, 6), (8, 8, 1),
                     class_names=DIGIT_NAMES, family="digits")
