"""Dataset readers and the paper's imbalanced-subset protocol (METHOD §5).

Every loader returns uint8 images shaped (N, H, W, C) and int64 labels 0..C-1, so the rest of
the library never needs to know where a dataset came from or how it was stored on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgc.errors import DGCError
from dgc.matfile import read_mat_arrays

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DOWNLOAD_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
# Checked only on fresh downloads: repackaged copies (e.g. Debian's) are recompressed, so local
# files are validated by parsing them instead.
MD5SUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 60.0

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

CELEBA_ATTR_FILE = "list_attr_celeba.txt"
CELEBA_PARTITION_FILE = "list_eval_partition.txt"
CELEBA_IMAGE_DIR = "img_align_celeba"
CELEBA_CACHE_FILE = "dgc_cache_celeba64.npz"
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_HAIR = ("Blond_Hair", "Black_Hair", "Bald", "Brown_Hair", "Gray_Hair")
CELEBA_SIZE = 64
# Bumped whenever the preprocessing changes, so stale caches are rebuilt instead of reused.
_CELEBA_CACHE_VERSION = "1"

DIGITS_TEST_PER_CLASS = 50

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


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
    """Everything the library needs to know about one dataset, kept in a single registry entry."""

    name: str
    loader: Callable[[PathLike | None], RawData]
    profile: tuple[int, ...] | None
    image_shape: tuple[int, int, int] | None
    hflip: bool
    class_names: tuple[str, ...] | None


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
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.x_train, dtype=np.uint8).tobytes())
        digest.update(np.ascontiguousarray(self.y_train, dtype=np.int64).tobytes())
        return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# IDX


def read_idx(path: PathLike) -> np.ndarray:
    """Parse a gzip-compressed or plain IDX file into a native-endian numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DGCError(f"cannot read IDX file {path}: {exc.strerror or exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DGCError(
                f"IDX file {path} is a corrupt or truncated gzip file ({exc}); "
                "delete it and download it again"
            ) from exc
    return _parse_idx(raw, path)


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        kind = "not an IDX file"
        if path.suffix == ".gz":
            kind = "neither a gzip file nor a plain IDX file"
        raise DGCError(
            f"{path} is {kind}: bad magic number {data[:4].hex() or '(empty file)'} "
            "(expected two zero bytes, a type code such as 08 for uint8, and the number of "
            "dimensions); check that this is the right file"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    if ndim == 0:
        raise DGCError(f"IDX file {path} declares zero dimensions; the file is damaged")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DGCError(
            f"IDX file {path} is truncated: its header needs {header} bytes but the file has "
            f"{len(data)}; download it again"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize  # Python ints: a damaged header cannot overflow
    found = len(data) - header
    if found < expected:
        raise DGCError(
            f"IDX file {path} is truncated: dimensions {dims} need {expected} data bytes but "
            f"only {found} are present; download it again"
        )
    if found > expected:
        raise DGCError(
            f"IDX file {path} has the wrong size: dimensions {dims} need {expected} data bytes "
            f"but {found} are present; the file is damaged or not an IDX file"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------------------------
# Locating files


def _candidate_dirs(name: str, data_dir: PathLike | None, extra: Sequence[Path] = ()) -> list[Path]:
    """Directories searched for a dataset, in priority order."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get("DGC_DATA")
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs.append(Path("data", name))
    dirs.extend(extra)
    return dirs


def _find_dir(candidates: Sequence[Path], files: Sequence[str]) -> Path | None:
    for directory in candidates:
        if all((directory / f).exists() for f in files):
            return directory
    return None


def _show_dirs(dirs: Sequence[Path]) -> str:
    return ", ".join(str(d.absolute()) for d in dirs)


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch url to dest through a temporary file, so a bad download never looks like data."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DGCError(
                f"download of {url} is corrupt: MD5 {digest.hexdigest()} does not match the "
                f"published {md5}; the partial file was deleted, try again or fetch {dest.name} "
                "by hand"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _locate_idx(name: str, data_dir: PathLike | None) -> Path:
    """Find a directory holding the four IDX files, downloading them if none does."""
    extra = [DEBIAN_FASHION_DIR] if name == "fashion" else []
    searched = _candidate_dirs(name, data_dir, extra)
    found = _find_dir(searched, IDX_FILES)
    if found is not None:
        return found
    target = Path(data_dir).expanduser() if data_dir is not None else Path("data", name)
    base = DOWNLOAD_URLS[name]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for filename in IDX_FILES:
            if not (target / filename).is_file():
                log.info("downloading %s%s to %s", base, filename, target)
                _download(base + filename, target / filename, MD5SUMS[name][filename])
    except (OSError, http.client.HTTPException) as exc:
        missing = [f for f in IDX_FILES if not (target / f).is_file()]
        debian = "run `apt-get install dataset-fashion-mnist`, or " if name == "fashion" else ""
        raise DGCError(
            f"{name} data not found and the download from {base} failed ({exc}). "
            f"Missing files: {', '.join(missing)}. Searched: {_show_dirs(searched)}. "
            f"To fix: {debian}download {', '.join(base + f for f in IDX_FILES)} into one "
            f"directory and pass it with --data-dir, or put them in $DGC_DATA/{name}"
        ) from exc
    return target


def _load_idx_dataset(
    name: str, data_dir: PathLike | None, class_names: tuple[str, ...]
) -> RawData:
    directory = _locate_idx(name, data_dir)
    arrays = []
    for images_file, labels_file in (IDX_FILES[:2], IDX_FILES[2:]):
        images = read_idx(directory / images_file)
        labels = read_idx(directory / labels_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DGCError(
                f"{directory / images_file} holds {images.dtype} data of shape {images.shape}; "
                "expected uint8 images of shape (N, rows, cols)"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != len(images):
            raise DGCError(
                f"{directory / labels_file} holds {labels.dtype} data of shape {labels.shape}; "
                f"expected {len(images)} uint8 labels to match {images_file}"
            )
        if labels.size and labels.max() >= len(class_names):
            raise DGCError(
                f"{directory / labels_file} contains label {labels.max()}; "
                f"{name} labels must be in 0..{len(class_names) - 1}"
            )
        arrays += [images[..., None], labels.astype(np.int64)]
    return RawData(*arrays, class_names=class_names)


def load_mnist(data_dir: PathLike | None = None) -> RawData:
    """MNIST from the four canonical IDX files (found locally or downloaded)."""
    return _load_idx_dataset("mnist", data_dir, DIGIT_NAMES)


def load_fashion(data_dir: PathLike | None = None) -> RawData:
    """Fashion-MNIST from the four canonical IDX files (found locally or downloaded)."""
    return _load_idx_dataset("fashion", data_dir, FASHION_NAMES)


# --------------------------------------------------------------------------------------------
# SVHN


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
    searched = _candidate_dirs("svhn", data_dir)
    directory = _find_dir(searched, SVHN_FILES)
    if directory is None:
        raise DGCError(
            f"SVHN files {', '.join(SVHN_FILES)} not found. Searched: {_show_dirs(searched)}. "
            f"Download them from {SVHN_URL} into one directory and pass it with --data-dir, "
            "or put them in $DGC_DATA/svhn"
        )
    x_train, y_train = _read_svhn_mat(directory / SVHN_FILES[0])
    x_test, y_test = _read_svhn_mat(directory / SVHN_FILES[1])
    return RawData(x_train, y_train, x_test, y_test, DIGIT_NAMES)


# --------------------------------------------------------------------------------------------
# CelebA


def _celeba_fingerprint(directory: Path) -> str:
    """Identify the source lists so a cache built from other lists is never reused."""
    digest = hashlib.sha256(_CELEBA_CACHE_VERSION.encode())
    for name in (CELEBA_ATTR_FILE, CELEBA_PARTITION_FILE):
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()


def _parse_celeba_lists(directory: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return (filenames, hair class, partition) for images carrying exactly one hair class."""
    attr_path = directory / CELEBA_ATTR_FILE
    lines = attr_path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DGCError(
            f"{attr_path} does not start with an image count and a line of attribute names"
        )
    names = lines[1].split()
    missing = [h for h in CELEBA_HAIR if h not in names]
    if missing:
        raise DGCError(f"{attr_path} lacks the attribute columns {', '.join(missing)}")
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != int(lines[0]):
        raise DGCError(f"{attr_path} announces {int(lines[0])} images but lists {len(rows)}")
    bad = next((r for r in rows if len(r) != len(names) + 1), None)
    if bad is not None:
        raise DGCError(
            f"{attr_path}: the row for {bad[0]} has {len(bad) - 1} values; expected {len(names)}"
        )
    try:
        values = np.array([r[1:] for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise DGCError(f"{attr_path} has a non-integer attribute value: {exc}") from exc
    if not np.isin(values, (-1, 1)).all():
        raise DGCError(f"{attr_path} has attribute values other than 1 and -1")
    hair = values[:, [names.index(h) for h in CELEBA_HAIR]] == 1
    keep = np.flatnonzero(hair.sum(axis=1) == 1)

    part_path = directory / CELEBA_PARTITION_FILE
    partition_of: dict[str, int] = {}
    for line in part_path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DGCError(f"{part_path}: bad line {line!r}; expected 'filename 0|1|2'")
        partition_of[fields[0]] = int(fields[1])
    files = [rows[i][0] for i in keep]
    absent = [f for f in files if f not in partition_of]
    if absent:
        raise DGCError(f"{part_path} gives no partition for {absent[0]} ({len(absent)} in all)")
    partition = np.array([partition_of[f] for f in files], dtype=np.int64)
    return files, hair[keep].argmax(axis=1).astype(np.int64), partition


def _load_celeba_image(path: Path) -> np.ndarray:
    """Center-crop to a square (178x218 -> 178x178, the face is centered) and resize to 64x64."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
            image = image.resize((CELEBA_SIZE, CELEBA_SIZE), Image.Resampling.LANCZOS)
            return np.asarray(image, dtype=np.uint8)
    except OSError as exc:
        raise DGCError(f"cannot read CelebA image {path}: {exc}") from exc


def _build_celeba(directory: Path) -> dict[str, np.ndarray]:
    from tqdm import tqdm

    files, labels, partition = _parse_celeba_lists(directory)
    # Partition 1 (validation) is dropped: the paper uses the official train (0) / test (2) split.
    used = np.flatnonzero(partition != 1)
    images = np.empty((len(used), CELEBA_SIZE, CELEBA_SIZE, 3), dtype=np.uint8)
    for out, i in enumerate(tqdm(used, desc="CelebA 64x64", unit="img")):
        images[out] = _load_celeba_image(directory / CELEBA_IMAGE_DIR / files[i])
    train = partition[used] == 0
    return {
        "x_train": images[train],
        "y_train": labels[used][train],
        "x_test": images[~train],
        "y_test": labels[used][~train],
    }


def _read_celeba_cache(path: Path, fingerprint: str | None) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as cache:
            if fingerprint is not None and str(cache["fingerprint"]) != fingerprint:
                return None
            return {k: cache[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _write_celeba_cache(path: Path, arrays: dict[str, np.ndarray], fingerprint: str) -> None:
    """Write atomically; an unwritable directory just means no cache."""
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as out:
            np.savez(out, fingerprint=np.array(fingerprint), **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        log.info("not caching CelebA at %s: %s", path, exc)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def load_celeba(data_dir: PathLike | None = None) -> RawData:
    """CelebA hair-colour subset at 64x64, cached as an .npz next to the data after one pass.

    Keeps images with exactly one of CELEBA_HAIR, uses the official partition (0 = train,
    2 = test; 1 = validation is unused, as in the paper) and center-crops each 178x218 image to
    178x178 before resizing, so faces are not squashed.
    """
    searched = _candidate_dirs("celeba", data_dir)
    sources = (CELEBA_ATTR_FILE, CELEBA_PARTITION_FILE, CELEBA_IMAGE_DIR)
    directory = next(
        (
            d
            for d in searched
            if (d / CELEBA_CACHE_FILE).is_file() or all((d / f).exists() for f in sources)
        ),
        None,
    )
    if directory is None:
        raise DGCError(
            f"CelebA not found: need {', '.join(sources)} in one directory. "
            f"Searched: {_show_dirs(searched)}. Get the aligned images and the two lists from "
            f"{CELEBA_URL} and pass their directory with --data-dir, or put them in "
            "$DGC_DATA/celeba"
        )
    cache_path = directory / CELEBA_CACHE_FILE
    has_lists = all((directory / f).is_file() for f in sources[:2])
    fingerprint = _celeba_fingerprint(directory) if has_lists else None
    arrays = _read_celeba_cache(cache_path, fingerprint) if cache_path.is_file() else None
    if arrays is None:
        if fingerprint is None or not (directory / CELEBA_IMAGE_DIR).is_dir():
            raise DGCError(
                f"CelebA cache {cache_path} is unreadable or out of date and the sources "
                f"{', '.join(sources)} are not all in {directory} to rebuild it; restore them"
            )
        arrays = _build_celeba(directory)
        _write_celeba_cache(cache_path, arrays, fingerprint)
    return RawData(
        arrays["x_train"],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"],
        arrays["y_test"].astype(np.int64),
        CELEBA_HAIR,
    )


# --------------------------------------------------------------------------------------------
# scikit-learn digits


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


# --------------------------------------------------------------------------------------------
# User .npz


def _npz_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DGCError(
            f"{path}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C) with C 1 or 3"
        )
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DGCError(
            f"{path}: {key} has dtype {x.dtype}; images must be uint8 (0..255) or float in [0, 1]"
        )
    if not np.isfinite(x).all():
        raise DGCError(f"{path}: {key} contains NaN or infinite values; clean the images first")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DGCError(
            f"{path}: {key} spans {x.min()}..{x.max()}; float images must lie in [0, 1] "
            "(divide 0..255 data by 255 or store it as uint8)"
        )
    return np.rint(x * 255.0).astype(np.uint8)


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


# How .npz (zip, possibly empty) and .npy files start; np.load takes anything else for a pickle.
NUMPY_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")


def is_numpy_file(path: Path) -> bool:
    """Whether `path` starts like an .npz or .npy file (it must exist and be readable)."""
    with path.open("rb") as handle:
        return handle.read(6).startswith(NUMPY_MAGICS)


# What numpy and zipfile raise for a damaged .npz: a bad deflate stream (zlib.error), an unknown
# compression method (NotImplementedError), a stray encryption flag (RuntimeError), a size field
# asking for more memory than there is (MemoryError), besides the usual types.
_ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                   NotImplementedError, RuntimeError, MemoryError)


def open_numpy(path: Path, hint: str) -> np.ndarray | np.lib.npyio.NpzFile:
    """np.load of an .npy or .npz file without pickles; a file that is neither, or is damaged,
    is a DGCError naming it (`hint` says how to save a good one)."""
    try:
        loaded = np.load(path, allow_pickle=False) if is_numpy_file(path) else None
    except _ARCHIVE_ERRORS as exc:
        raise DGCError(f"cannot read {path} as an .npz archive or .npy file: {exc}") from exc
    if loaded is None:
        raise DGCError(f"cannot read {path}: it is neither an .npz archive nor an .npy file; "
                       f"{hint}")
    return loaded


def read_member(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz; a damaged member is a DGCError naming the file."""
    try:
        member = npz[key]
    except _ARCHIVE_ERRORS as exc:
        raise DGCError(f"cannot read the array {key!r} in {path}: {exc}") from exc
    if not isinstance(member, np.ndarray):  # numpy hands a zip's non-.npy member over as bytes
        raise DGCError(f"{path}: {key!r} is not a numpy array (is this a zip of other files?); "
                       "save your arrays with np.savez")
    return member


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


# --------------------------------------------------------------------------------------------
# Registry


_PAPER_MNIST_PROFILE = (4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40)

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="mnist",
            loader=load_mnist,
            profile=_PAPER_MNIST_PROFILE,
            image_shape=(28, 28, 1),
            hflip=False,
            class_names=DIGIT_NAMES,
        ),
        DatasetInfo(
            name="fashion",
            loader=load_fashion,
            profile=_PAPER_MNIST_PROFILE,
            image_shape=(28, 28, 1),
            hflip=True,
            class_names=FASHION_NAMES,
        ),
        DatasetInfo(
            name="svhn",
            loader=load_svhn,
            profile=(4500, 2000, 1000, 800, 600, 500, 400, 250, 150, 80),
            image_shape=(32, 32, 3),
            hflip=False,
            class_names=DIGIT_NAMES,
        ),
        DatasetInfo(
            name="celeba",
            loader=load_celeba,
            profile=(15000, 1500, 750, 300, 150),
            image_shape=(CELEBA_SIZE, CELEBA_SIZE, 3),
            hflip=True,
            class_names=CELEBA_HAIR,
        ),
        # Not in the paper: a small offline set (IR 20) for quick runs and tests.
        DatasetInfo(
            name="digits",
            loader=load_digits,
            profile=(120, 90, 70, 50, 35, 25, 18, 12, 8, 6),
            image_shape=(8, 8, 1),
            hflip=False,
            class_names=DIGIT_NAMES,
        ),
        # The user's own data; its class count is only known once the file is read.
        DatasetInfo(
            name="npz",
            loader=load_npz,
            profile=None,
            image_shape=None,
            hflip=False,
            class_names=None,
        ),
    )
}


def dataset_names() -> list[str]:
    """Names accepted by load_imbalanced, in registry order."""
    return list(DATASETS)


# --------------------------------------------------------------------------------------------
# Protocol


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
) -> ImbalancedData:
    """Build the imbalanced training subset of METHOD §5 and pair it with the full test set.

    profile=None takes the dataset's default; for npz that means its training set as given.
    The caller's global numpy RNG state is restored afterwards, although the protocol itself
    has to go through np.random.seed to reproduce the paper's subsets.
    """
    if name not in DATASETS:
        raise DGCError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise DGCError(f"seed must be an integer in 0..2**32-1, got {seed!r}")
    info = DATASETS[name]
    raw = info.loader(data_dir)
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
