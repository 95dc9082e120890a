"""Your own images in class folders: `DIR/train/<class>/*` and `DIR/test/<class>/*`, or
`DIR/<class>/*` with a stratified test split.

Class names are the folder names, sorted. Every image is read at 8 bits per channel (deeper
images scaled, never clipped; several frames, transparency or values out of range refused,
naming the file), converted to the majority mode of the set (grayscale or RGB) and resized to
one square size: stretched, or with `letterbox` scaled to fit and padded with black. The log
says which images were converted, the size, and how many were stretched out of shape. A class
folder holding another's images is refused; a file with the same content as another (in train
and test, under two classes, twice in one class) is warned of, naming both. Hidden files, files
that are not images and anything nested deeper than a class folder are ignored. Decoding is the
slow part, so the arrays are cached, keyed by every file's path and content (SHA-256).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dgc.core.errors import DGCError, DGCWarning
from dgc.core.io import one_line
from dgc.core.progress import stage
from dgc.data.base import DatasetInfo, PathLike, RawData
from dgc.data.files import ARRAYS, read_cache, write_cache

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}
MAX_DEFAULT_SIZE = 64  # the default size is the median longer side, capped here
SIZE_RANGE = (4, 1024)
DEFAULT_TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0  # the same test set for every run seed, as for digits
# The modes deeper than 8 bits, with the value each scales to 255 (32-bit integers as 16-bit).
DEEP_MODES = {**dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N", "I"), 65535), "F": 1.0}
MAX_ASPECT = 2.0  # stretching an image longer than this to a square is reported
SHOWN = 3  # files a message names, at most
DUPLICATES = ("in both the training and the test set, which inflates every test metric",
              "under two classes", "twice in one class")
CACHE_NAME = ".dgc-cache.npz"
# Bumped whenever the decoding changes, so stale caches are rebuilt instead of reused.
_CACHE_VERSION = "2"


def image_files(directory: Path) -> list[Path]:
    """The image files directly in `directory`, sorted; hidden files and others are skipped."""
    return sorted(p for p in directory.iterdir()
                  if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file())


def class_dirs(directory: Path) -> dict[str, list[Path]]:
    """Each class folder of `directory` (not hidden) with its image files."""
    return {d.name: image_files(d) for d in sorted(directory.iterdir())
            if d.is_dir() and not d.name.startswith(".")}


def unreadable(path: Path, why: str, fix: str = "fix or remove the file") -> DGCError:
    return DGCError(f"cannot read image {path}: {why}; {fix}")


def eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """`image` at 8 bits per channel, wherever that is faithful: deeper values scaled from their
    range (`DEEP_MODES`) and an opaque alpha channel dropped; several frames, transparent pixels
    (whose colour the file leaves open) and values beyond that range are refused."""
    if (frames := getattr(image, "n_frames", 1)) > 1:
        raise unreadable(path, f"it holds {frames} frames (an animation or a multi-page "
                         "file)", "save the one you mean as an image of its own")
    if image.has_transparency_data:
        rgba = None if image.mode in DEEP_MODES else image.convert("RGBA")
        if rgba is None or np.asarray(rgba.getchannel("A")).min() < 255:
            raise unreadable(path, f"it has transparent pixels (mode {image.mode}), whose colour "
                             "is undefined", "flatten it onto the background you mean")
        image = rgba
    if image.mode in DEEP_MODES:
        top = DEEP_MODES[image.mode]
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        if not 0 <= low <= high <= top:  # NaN fails too
            raise unreadable(path, f"its {image.mode} pixels run from {low:g} to {high:g}, beyond "
                             f"0..{top:g}", "save it with 8 or 16 bits per channel, or as "
                             "floats in [0, 1]")
        image = Image.fromarray(np.rint(values * (255 / top)).astype(np.uint8))
    return image


def read_image(path: Path, mode: str, size: tuple[int, int],
               letterbox: bool | None = False) -> np.ndarray:
    """One image as uint8 (H, W, C) in `mode` ("L" or "RGB") at `size` (H, W), at 8 bits by
    `eight_bit`: stretched to the size, or with `letterbox` scaled to fit and padded with black."""
    target = (size[1], size[0])
    try:
        with Image.open(path) as opened:
            image = eight_bit(opened, path).convert(mode)
            if letterbox:
                image = ImageOps.pad(image, target, Image.Resampling.LANCZOS, color=0)
            elif image.size != target:
                image = image.resize(target, Image.Resampling.LANCZOS)
            pixels = np.asarray(image, dtype=np.uint8)
    except DGCError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise unreadable(path, one_line(str(error))) from error
    return pixels.reshape(*size, 1 if mode == "L" else 3)


def _scan(files: list[Path]) -> tuple[dict[Path, str], list[str], list[tuple[int, int]]]:
    """Each file's SHA-256, and its mode and (width, height) from its header."""
    digests, modes, sizes = {}, [], []
    for path in stage(files, "scan images", "images"):
        try:
            digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            with Image.open(path) as image:
                modes.append(image.mode)
                sizes.append(image.size)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise unreadable(path, one_line(str(error))) from error
    return digests, modes, sizes


def _reading(root: Path, files: list[Path], modes: list[str], sizes: list[tuple[int, int]],
             image_size: int | None, letterbox: bool | None) -> tuple[str, int]:
    """The mode of most images ("L" or "RGB") and the size of all (`image_size`, else the median
    longer side, capped), said in the log with what is converted and what is stretched."""
    gray = sum(Image.getmodebase(m) == "L" for m in modes)
    mode, kind = ("L", "grayscale") if gray > len(modes) - gray else ("RGB", "RGB")
    median = int(np.median([max(s) for s in sizes]))
    size = image_size or min(median, MAX_DEFAULT_SIZE)
    why = ("--image-size" if image_size else "the median longer side, capped" if size < median
           else "the median longer side")
    log.warning("dgc: %d images read as %d×%d %s (%s)%s", len(files), size, size, kind, why,
                ", letterboxed" if letterbox else "")
    if converted := Counter(m for m in modes if m != mode):
        log.warning("dgc: converted %d of them to 8-bit %s: %s", sum(converted.values()), kind,
                    ", ".join(f"{n} from {m}" + (f" (scaled from 0..{DEEP_MODES[m]:g})"
                                                 if m in DEEP_MODES else "")
                              for m, n in converted.most_common()))
    stretched = [f"{p.relative_to(root)} ({w}×{h})" for p, (w, h) in zip(files, sizes, strict=True)
                 if max(w, h) > MAX_ASPECT * min(w, h)]
    if stretched and not letterbox:
        log.warning("dgc: stretching them to squares distorts %d of them, over %g times as long "
                    "one way as the other: %s; --letterbox pads them instead", len(stretched),
                    MAX_ASPECT, shortened(stretched))
    return mode, size


def shortened(items: list[str]) -> str:
    """The first `SHOWN` of a list, for a message."""
    return ", ".join(items[:SHOWN]) + (", ..." if len(items) > SHOWN else "")


def _layout(root: Path, test_fraction: float | None) -> tuple[dict[str, list[Path]],
                                                             dict[str, list[Path]] | None]:
    """(train classes, test classes or None for a split of the train classes). `train/` and
    `test/` are the two splits when they hold folders, not images; holding images, classes."""
    if not root.is_dir():
        problem = "it is a file" if root.exists() else "no such folder"
        raise DGCError(f"cannot read class folders in {root}: {problem}; give a folder holding "
                       "train/<class>/ and test/<class>/, or one folder per class")
    folders = class_dirs(root)
    splits = [part for part in ("train", "test") if part in folders and not folders[part]]
    beside = [name for name, files in folders.items() if files]
    if not splits:
        return folders, None
    if beside:
        raise DGCError(f"{root} mixes two layouts: {' and '.join(f'{s}/' for s in splits)} of "
                       f"class folders beside class folders of images ({shortened(beside)}); put "
                       f"every class folder under train/ and test/, or every one directly in "
                       f"{root} (a folder holding images is a class, even one named train)")
    if len(splits) == 1:
        there, missing = splits[0], "test" if splits[0] == "train" else "train"
        raise DGCError(f"{root} has {there}/ but no {missing}/; add {root / missing} with one "
                       f"folder per class, or move the class folders of {there}/ into {root} to "
                       "split a test set off them")
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


def _refuse_copies(root: Path, train: dict[str, list[Path]], test: dict[str, list[Path]] | None,
                   digests: dict[Path, str]) -> None:
    """Refuse two class folders that hold the same images: one links to the other, or copies
    it, so one class would be trained as two (or tested on its training images)."""
    parts = {"": train} if test is None else {"train": train, "test": test}
    seen: dict[frozenset[str], Path] = {}
    for part, classes in parts.items():
        for name, files in classes.items():
            contents, folder = frozenset(digests[p] for p in files), root / part / name
            if contents in seen:
                raise DGCError(f"{seen[contents]} and {folder} hold the same {len(files)} images "
                               "(one is a link to the other, or a copy of it); every class "
                               "folder must hold images of its own: remove one")
            seen[contents] = folder


def _warn_duplicates(root: Path, train: dict[str, list[Path]], test: dict[str, list[Path]],
                     digests: dict[Path, str]) -> None:
    """Warn of files with the same content as another (true duplicates happen in real data, so
    they are not refused), naming them: in both the training and the test set, under two
    classes, or twice in one class."""
    first: dict[str, tuple[str, str, Path]] = {}
    found: dict[str, list[str]] = {kind: [] for kind in DUPLICATES}
    for split, classes in (("train", train), ("test", test)):
        for name, files in classes.items():
            for path in files:
                there = first.setdefault(digests[path], (split, name, path))
                if there[2] != path:
                    kind = DUPLICATES[0 if there[0] != split else 1 if there[1] != name else 2]
                    found[kind].append(f"{path.relative_to(root)} = {there[2].relative_to(root)}")
    if any(found.values()):
        warnings.warn("images with the same content as another: " + "; ".join(
            f"{len(pairs)} {kind} ({shortened(pairs)})" for kind, pairs in found.items() if pairs)
            + "; remove the copies if they are not meant (docs/USAGE.md)", DGCWarning,
            stacklevel=3)


def _fingerprint(root: Path, digests: dict[Path, str], settings: tuple[Any, ...]) -> str:
    """The cache's key: the reading settings and every file's path and content."""
    digest = hashlib.sha256(f"{_CACHE_VERSION} {settings}".encode())
    for path, content in digests.items():
        digest.update(f"{path.relative_to(root)}\0{content}\n".encode())
    return digest.hexdigest()


def cache_path(root: Path) -> Path:
    """Beside the data (`DIR/.dgc-cache.npz`), or under `$DGC_CACHE` when that is set."""
    cache_dir = os.environ.get("DGC_CACHE")
    if not cache_dir:
        return root / CACHE_NAME
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"folder-{key}.npz"


def _decode(train: dict[str, list[Path]], test: dict[str, list[Path]], names: list[str],
            mode: str, size: int, letterbox: bool | None) -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test, decoded in one stage."""
    rows = [(p, names.index(c)) for split in (train, test) for c, ps in split.items() for p in ps]
    images = np.stack([read_image(p, mode, (size, size), letterbox)
                       for p, _ in stage(rows, "decode images", "images")])
    labels = np.array([label for _, label in rows], dtype=np.int64)
    n = sum(map(len, train.values()))
    return images[:n], labels[:n], images[n:], labels[n:]


def load_folder(data_dir: PathLike | None = None, image_size: int | None = None,
                test_fraction: float | None = None, letterbox: bool | None = None) -> RawData:
    """Class folders read into arrays: train/ and test/ as given, or one folder per class with
    `test_fraction` (default 0.2) of each class held out as the test set (seed 0); `letterbox`
    pads images to squares instead of stretching them."""
    if data_dir is None:
        raise DGCError("the folder dataset needs --data-dir DIR, DIR holding train/<class>/ and "
                       "test/<class>/ folders of images, or one folder per class")
    root = Path(data_dir).expanduser()
    train, test = _layout(root, test_fraction)
    _check_classes(root, train, test)
    every = sorted(p for group in (train, test or {}) for ps in group.values() for p in ps)
    digests, modes, sizes = _scan(every)
    _refuse_copies(root, train, test, digests)
    if test is None:
        train, test = _split(train, DEFAULT_TEST_FRACTION if test_fraction is None
                             else test_fraction, root)
    _warn_duplicates(root, train, test, digests)
    mode, size = _reading(root, every, modes, sizes, image_size, letterbox)
    fingerprint = _fingerprint(root, digests, (image_size, test_fraction, letterbox))
    cache = cache_path(root)
    if (cached := read_cache(cache, fingerprint, (*ARRAYS, "class_names"))) is not None:
        return RawData(cached["x_train"], cached["y_train"], cached["x_test"], cached["y_test"],
                       tuple(str(n) for n in cached["class_names"]))
    names = sorted(train)
    x_train, y_train, x_test, y_test = _decode(train, test, names, mode, size, letterbox)
    raw = RawData(x_train, y_train, x_test, y_test, tuple(names))
    write_cache(cache, {"x_train": x_train, "y_train": y_train, "x_test": x_test,
                        "y_test": y_test, "class_names": np.array(names)}, fingerprint)
    return raw


# The user's own images; classes, sizes and counts are only known once the folders are read.
FOLDER = DatasetInfo("folder", load_folder, family="folder",
                     options=("image_size", "test_fraction", "letterbox"), user_data=True)
