"""Your own images in class folders: `DIR/train/<class>/*` and `DIR/test/<class>/*`, or
`DIR/<class>/*` with a stratified test split.

Class names are the folder names, sorted. Every image is converted to the majority mode of the
set (grayscale or RGB; a mix is reported) and resized to one square size, so the rest of the
library sees arrays as for any other dataset. Hidden files, files that are not images and
anything nested deeper than a class folder are ignored. Decoding is the slow part, so the arrays
are cached, keyed by every file's name, size and modification time.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from dgc.core.errors import DGCError
from dgc.core.io import one_line
from dgc.data.base import DatasetInfo, PathLike, RawData
from dgc.data.files import ARRAYS, read_cache, write_cache

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}
MAX_DEFAULT_SIZE = 64  # the default size is the median longer side, capped here
SIZE_RANGE = (4, 1024)
DEFAULT_TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0  # the same test set for every run seed, as for digits
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
CACHE_NAME = ".dgc-cache.npz"
# Bumped whenever the decoding changes, so stale caches are rebuilt instead of reused.
_CACHE_VERSION = "1"


def image_files(directory: Path) -> list[Path]:
    """The image files directly in `directory`, sorted; hidden files and others are skipped."""
    return sorted(p for p in directory.iterdir()
                  if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file())


def class_dirs(directory: Path) -> dict[str, list[Path]]:
    """Each class folder of `directory` (not hidden) with its image files."""
    return {d.name: image_files(d) for d in sorted(directory.iterdir())
            if d.is_dir() and not d.name.startswith(".")}


def read_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 (H, W, C) in `mode` ("L" or "RGB") at `size` (H, W)."""
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.LANCZOS)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise DGCError(f"cannot read image {path}: {one_line(str(error))}; fix or remove the "
                       "file") from error
    return pixels.reshape(*size, 1 if mode == "L" else 3)


def _survey(files: list[Path]) -> tuple[str, int]:
    """The majority mode ("L" or "RGB", said when mixed) and the median longer side."""
    gray, sides = 0, []
    for path in tqdm(files, desc="scan images", unit="img", leave=False):
        try:
            with Image.open(path) as image:
                gray += image.mode in GRAY_MODES
                sides.append(max(image.size))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise DGCError(f"cannot read image {path}: {one_line(str(error))}; fix or remove "
                           "the file") from error
    mode = "L" if gray > len(files) - gray else "RGB"
    if 0 < gray < len(files):
        log.warning("dgc: %d images are grayscale and %d colour; all are converted to %s",
                    gray, len(files) - gray, "grayscale" if mode == "L" else "RGB")
    return mode, int(np.median(sides))


def _layout(root: Path, test_fraction: float | None) -> tuple[dict[str, list[Path]],
                                                             dict[str, list[Path]] | None]:
    """(train classes, test classes or None for a split of the train classes)."""
    if not root.is_dir():
        problem = "it is a file" if root.exists() else "no such folder"
        raise DGCError(f"cannot read class folders in {root}: {problem}; give a folder holding "
                       "train/<class>/ and test/<class>/, or one folder per class")
    has = {part: (root / part).is_dir() for part in ("train", "test")}
    if has["train"] != has["test"]:
        there, missing = ("train", "test") if has["train"] else ("test", "train")
        raise DGCError(f"{root} has {there}/ but no {missing}/; give both, each with one folder "
                       "per class, or put the class folders directly in it")
    if not has["train"]:
        return class_dirs(root), None
    if test_fraction is not None:
        raise DGCError(f"{root} has its own test/ folder, so --test-fraction does not apply; "
                       "drop it")
    return class_dirs(root / "train"), class_dirs(root / "test")


def _check_classes(root: Path, train: dict[str, list[Path]],
                   test: dict[str, list[Path]] | None) -> None:
    if len(train) < 2:
        found = f"only the class {next(iter(train))!r}" if train else "no class folders"
        raise DGCError(f"{root} holds {found}; a classifier needs at least two class folders "
                       "(one per class, named after it); for a built-in dataset's files there, "
                       "name it with --exp (e.g. --exp fashion)")
    for name, files in {**train, **(test or {})}.items():
        if not files:
            raise DGCError(f"class folder {name!r} in {root} holds no images (PNG, JPEG, BMP, "
                           "TIFF); add some or remove the folder")
    if test is not None:
        for name in test:
            if name not in train:
                raise DGCError(f"class {name!r} has test images but no folder in "
                               f"{root / 'train'}; every test class needs training images")
        for name in train:
            if name not in test:
                raise DGCError(f"class {name!r} has no folder in {root / 'test'}; every class "
                               "is scored on the test set, so give it test images")


def _split(files: dict[str, list[Path]], fraction: float,
           root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Stratified: round(fraction · n) test images per class, at least one, never all."""
    rng = np.random.default_rng(TEST_SPLIT_SEED)
    train, test = {}, {}
    for name, paths in files.items():
        if len(paths) < 2:
            raise DGCError(f"class {name!r} in {root} has one image; the test split needs at "
                           "least two per class (or give train/ and test/ folders)")
        n_test = min(max(1, round(fraction * len(paths))), len(paths) - 1)
        chosen = set(rng.permutation(len(paths))[:n_test].tolist())
        test[name] = [p for i, p in enumerate(paths) if i in chosen]
        train[name] = [p for i, p in enumerate(paths) if i not in chosen]
    return train, test


def _fingerprint(root: Path, files: list[Path], image_size: int | None,
                 test_fraction: float | None) -> str:
    digest = hashlib.sha256(f"{_CACHE_VERSION} {image_size} {test_fraction}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_path(root: Path) -> Path:
    """Beside the data (`DIR/.dgc-cache.npz`), or under `$DGC_CACHE` when that is set."""
    cache_dir = os.environ.get("DGC_CACHE")
    if not cache_dir:
        return root / CACHE_NAME
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"folder-{key}.npz"


def _decode(files: dict[str, list[Path]], names: list[str], mode: str,
            size: int) -> tuple[np.ndarray, np.ndarray]:
    paths = [(p, names.index(c)) for c, ps in files.items() for p in ps]
    images = np.stack([read_image(p, mode, (size, size))
                       for p, _ in tqdm(paths, desc="decode images", unit="img", leave=False)])
    return images, np.array([label for _, label in paths], dtype=np.int64)


def load_folder(data_dir: PathLike | None = None, image_size: int | None = None,
                test_fraction: float | None = None) -> RawData:
    """Class folders read into arrays: train/ and test/ as given, or one folder per class with
    `test_fraction` (default 0.2) of each class held out as the test set (seed 0)."""
    if data_dir is None:
        raise DGCError("the folder dataset needs --data-dir DIR, DIR holding train/<class>/ and "
                       "test/<class>/ folders of images, or one folder per class")
    root = Path(data_dir).expanduser()
    train, test = _layout(root, test_fraction)
    _check_classes(root, train, test)
    if test is None:
        train, test = _split(train, DEFAULT_TEST_FRACTION if test_fraction is None
                             else test_fraction, root)
    every = sorted(p for group in (train, test) for ps in group.values() for p in ps)
    fingerprint = _fingerprint(root, every, image_size, test_fraction)
    cache = cache_path(root)
    if (cached := read_cache(cache, fingerprint, (*ARRAYS, "class_names"))) is not None:
        return RawData(cached["x_train"], cached["y_train"], cached["x_test"], cached["y_test"],
                       tuple(str(n) for n in cached["class_names"]))
    mode, median = _survey(every)
    size = image_size or min(median, MAX_DEFAULT_SIZE)
    names = sorted(train)
    x_train, y_train = _decode(train, names, mode, size)
    x_test, y_test = _decode(test, names, mode, size)
    raw = RawData(x_train, y_train, x_test, y_test, tuple(names))
    write_cache(cache, {"x_train": x_train, "y_train": y_train, "x_test": x_test,
                        "y_test": y_test, "class_names": np.array(names)}, fingerprint)
    return raw


# The user's own images; classes, sizes and counts are only known once the folders are read.
FOLDER = DatasetInfo("folder", load_folder, family="folder",
                     options=("image_size", "test_fraction"), user_data=True)
