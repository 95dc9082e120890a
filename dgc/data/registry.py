"""The registry of datasets: one `DatasetInfo` entry per name, from the dataset modules."""

from __future__ import annotations

from dgc.data.base import DatasetInfo
from dgc.data.celeba import CELEBA, CELEBA_RELEASED
from dgc.data.digits import DIGITS
from dgc.data.elpv import ELPV, ELPV_BINARY, ELPV_TYPES
from dgc.data.folder import FOLDER
from dgc.data.mnist import FASHION, MNIST
from dgc.data.npz import NPZ
from dgc.data.svhn import SVHN

DATASETS: dict[str, DatasetInfo] = {
    info.name: info for info in (MNIST, FASHION, SVHN, CELEBA, CELEBA_RELEASED, DIGITS, ELPV,
                                 ELPV_BINARY, ELPV_TYPES, NPZ, FOLDER)
}


def dataset_names() -> list[str]:
    """Names accepted by load_imbalanced, in registry order."""
    return list(DATASETS)
