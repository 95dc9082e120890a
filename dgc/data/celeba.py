"""CelebA's hair-colour subset at 64x64, cached as an .npz beside the data after one pass.

Two readings: `celeba` keeps the paper's five non-overlapping classes (images with exactly one
of the hair attributes) and center-crops each face to a square; `celeba-released` does what the
authors' released code does: every image with a hair attribute set, once per attribute (an
image with two appears twice, with two labels), the 178x218 image resized without a crop.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from dgc.core.errors import DGCError
from dgc.core.progress import stage
from dgc.data.base import DatasetInfo, PathLike, RawData, published_table
from dgc.data.files import candidate_dirs, read_cache, show_dirs, write_cache

CELEBA_ATTR_FILE = "list_attr_celeba.txt"
CELEBA_PARTITION_FILE = "list_eval_partition.txt"
CELEBA_IMAGE_DIR = "img_align_celeba"
CELEBA_CACHE_FILE = "dgc_cache_celeba64.npz"
CELEBA_RELEASED_CACHE_FILE = "dgc_cache_celeba64_released.npz"
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_HAIR = ("Blond_Hair", "Black_Hair", "Bald", "Brown_Hair", "Gray_Hair")
CELEBA_SIZE = 64
# Bumped whenever the preprocessing changes, so stale caches are rebuilt instead of reused.
_CELEBA_CACHE_VERSION = "1"


def _celeba_fingerprint(directory: Path, released: bool) -> str:
    """Identify the source lists and the reading so a cache built otherwise is never reused."""
    digest = hashlib.sha256(f"{_CELEBA_CACHE_VERSION} released={released}".encode())
    for name in (CELEBA_ATTR_FILE, CELEBA_PARTITION_FILE):
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()


def _parse_celeba_lists(directory: Path,
                        released: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Return (filenames, hair class, partition) for images carrying exactly one hair class,
    or (`released`) one row per image and hair class it carries."""
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
    if released:
        keep, labels = np.nonzero(hair)  # row-major: image by image, classes in order
    else:
        keep = np.flatnonzero(hair.sum(axis=1) == 1)
        labels = hair[keep].argmax(axis=1)

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
    return files, labels.astype(np.int64), partition


def _load_celeba_image(path: Path, crop: bool = True) -> np.ndarray:
    """Center-crop to a square (178x218 -> 178x178, the face is centered) and resize to 64x64;
    without `crop`, resize the whole image as the released code does."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if crop:
                w, h = image.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                image = image.crop((left, top, left + side, top + side))
            image = image.resize((CELEBA_SIZE, CELEBA_SIZE), Image.Resampling.LANCZOS)
            return np.asarray(image, dtype=np.uint8)
    except OSError as exc:
        raise DGCError(f"cannot read CelebA image {path}: {exc}") from exc


def _build_celeba(directory: Path, released: bool) -> dict[str, np.ndarray]:
    files, labels, partition = _parse_celeba_lists(directory, released)
    # Partition 1 (validation) is dropped: the paper uses the official train (0) / test (2) split.
    used = np.flatnonzero(partition != 1)
    images = np.empty((len(used), CELEBA_SIZE, CELEBA_SIZE, 3), dtype=np.uint8)
    for out, i in enumerate(stage(used.tolist(), "CelebA 64x64", "images")):
        images[out] = _load_celeba_image(directory / CELEBA_IMAGE_DIR / files[i],
                                         crop=not released)
    train = partition[used] == 0
    return {
        "x_train": images[train],
        "y_train": labels[used][train],
        "x_test": images[~train],
        "y_test": labels[used][~train],
    }


def load_celeba(data_dir: PathLike | None = None) -> RawData:
    """CelebA hair-colour subset at 64x64, cached as an .npz next to the data after one pass.

    Keeps images with exactly one of CELEBA_HAIR, uses the official partition (0 = train,
    2 = test; 1 = validation is unused, as in the paper) and center-crops each 178x218 image to
    178x178 before resizing, so faces are not squashed.
    """
    return _load(data_dir, released=False)


def load_celeba_released(data_dir: PathLike | None = None) -> RawData:
    """CelebA's hair classes as the authors' released code reads them (module docstring): every
    image with a hair attribute, once per attribute, resized without a crop."""
    return _load(data_dir, released=True)


def _load(data_dir: PathLike | None, released: bool) -> RawData:
    """Either reading, from its own cache or from the images and lists."""
    searched = candidate_dirs("celeba", data_dir)
    cache_file = CELEBA_RELEASED_CACHE_FILE if released else CELEBA_CACHE_FILE
    sources = (CELEBA_ATTR_FILE, CELEBA_PARTITION_FILE, CELEBA_IMAGE_DIR)
    directory = next(
        (
            d
            for d in searched
            if (d / cache_file).is_file() or all((d / f).exists() for f in sources)
        ),
        None,
    )
    if directory is None:
        raise DGCError(
            f"CelebA not found: need {', '.join(sources)} in one directory. "
            f"Searched: {show_dirs(searched)}. Get the aligned images and the two lists from "
            f"{CELEBA_URL} and pass their directory with --data-dir, or put them in "
            "$DGC_DATA/celeba"
        )
    cache_path = directory / cache_file
    has_lists = all((directory / f).is_file() for f in sources[:2])
    fingerprint = _celeba_fingerprint(directory, released) if has_lists else None
    arrays = read_cache(cache_path, fingerprint)
    if arrays is None:
        if fingerprint is None or not (directory / CELEBA_IMAGE_DIR).is_dir():
            raise DGCError(
                f"CelebA cache {cache_path} is unreadable or out of date and the sources "
                f"{', '.join(sources)} are not all in {directory} to rebuild it; restore them"
            )
        arrays = _build_celeba(directory, released)
        write_cache(cache_path, arrays, fingerprint)
    return RawData(
        arrays["x_train"],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"],
        arrays["y_test"].astype(np.int64),
        CELEBA_HAIR,
    )


CELEBA = DatasetInfo(
    "celeba", load_celeba, (15000, 1500, 750, 300, 150), (CELEBA_SIZE, CELEBA_SIZE, 3),
    hflip=True, class_names=CELEBA_HAIR, family="celeba",
    published=published_table("""
                 acsa    f_macro  g_macro  r_mi    p_ma
        BAGAN    0.5972  0.5152   0.6554   -       -
        DFBS     0.2109  0.1335   0.2664   -       -
        GAMO     0.6409  0.5903   0.7472   0.2302  0.6687
        BayesCNN 0.5517  0.4936   0.6534   -       -
        mmDGMs   0.3760  0.0618   0.3754   -       -
        DGC      0.6755  0.6454   0.7779   0.2987  0.7603
    """),
    published_std={"acsa": 0.03, "f_macro": 0.02, "g_macro": 0.03},
)

# The paper's numbers were produced by the authors' code, so its reading shares them.
CELEBA_RELEASED = dataclasses.replace(CELEBA, name="celeba-released", loader=load_celeba_released)
