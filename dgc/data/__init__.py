"""Datasets: one module per dataset family, one registry, and the paper's protocol.

Every loader returns uint8 images shaped (N, H, W, C) and int64 labels 0..C-1, so the rest of
the library never needs to know where a dataset came from or how it was stored on disk. Adding
a dataset is one module (its reader and its `DatasetInfo` entry) plus one line in `registry`;
docs/ARCHITECTURE.md walks through an example.
"""

from dgc.core.errors import DGCError
from dgc.data.base import DIGIT_NAMES, DatasetInfo, PathLike, Published, RawData
from dgc.data.celeba import (
    CELEBA_ATTR_FILE,
    CELEBA_CACHE_FILE,
    CELEBA_HAIR,
    CELEBA_IMAGE_DIR,
    CELEBA_PARTITION_FILE,
    CELEBA_SIZE,
    CELEBA_URL,
    load_celeba,
    load_celeba_released,
)
from dgc.data.digits import DIGITS_TEST_PER_CLASS, load_digits
from dgc.data.files import (
    DOWNLOAD_TIMEOUT_S,
    NUMPY_MAGICS,
    is_numpy_file,
    open_numpy,
    read_member,
)
from dgc.data.folder import load_folder
from dgc.data.mnist import (
    DEBIAN_FASHION_DIR,
    DOWNLOAD_URLS,
    FASHION_NAMES,
    IDX_FILES,
    MD5SUMS,
    load_fashion,
    load_mnist,
    read_idx,
)
from dgc.data.npz import load_npz, uint8_images
from dgc.data.protocol import ImbalancedData, load_imbalanced, split_validation
from dgc.data.registry import DATASETS, dataset_names
from dgc.data.svhn import SVHN_FILES, SVHN_URL, load_svhn

__all__ = [
    "CELEBA_ATTR_FILE", "CELEBA_CACHE_FILE", "CELEBA_HAIR", "CELEBA_IMAGE_DIR",
    "CELEBA_PARTITION_FILE", "CELEBA_SIZE", "CELEBA_URL", "DATASETS", "DEBIAN_FASHION_DIR",
    "DGCError", "DIGITS_TEST_PER_CLASS", "DIGIT_NAMES", "DOWNLOAD_TIMEOUT_S", "DOWNLOAD_URLS",
    "FASHION_NAMES", "IDX_FILES", "MD5SUMS", "NUMPY_MAGICS", "DatasetInfo", "ImbalancedData",
    "PathLike", "Published", "RawData", "SVHN_FILES", "SVHN_URL", "dataset_names",
    "is_numpy_file", "load_celeba", "load_celeba_released", "load_digits", "load_fashion",
    "load_folder", "load_imbalanced",
    "load_mnist", "load_npz", "load_svhn", "open_numpy", "read_idx", "read_member",
    "split_validation", "uint8_images",
]
