"""ELPV: 2 624 electroluminescence images of solar cells, 300×300 grayscale, each graded by the
probability that the cell is defective (0, ⅓, ⅔ or 1) and typed mono- or polycrystalline
(Buerhop-Zwieber et al. 2018; Deitsch et al. 2019). Real defect images, the data `dgc` is for.

The images are CC BY-NC-SA 4.0, so `dgc` never carries them: they are read from the installed
`elpv-dataset` package (`pip install elpv-dataset`), or from a copy of its data folder
(`labels.csv` beside `images/`) named with --data-dir. Three datasets read the same files:
`elpv`, the four grades; `elpv-binary`, defective when p ≥ 0.5; `elpv-types`, grade × cell type.

The protocol is fixed: one stratified 75/25 split by grade and cell type (seed 0), the same for
every labelling, method and run seed, so every table scores the same 654 test images; the
validation split comes from the training part. Images are resized to `image_size` (default 64,
as for class folders); the native 300 px is there for networks that can use it.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from dgc.core.errors import DGCError
from dgc.core.progress import stage
from dgc.data.base import DatasetInfo, PathLike, RawData
from dgc.data.files import candidate_dirs, find_dir, show_dirs
from dgc.data.folder import read_image

PACKAGE = ("elpv-dataset", "elpv_dataset/data/labels.csv")  # (distribution, file in it)
LABELS = "labels.csv"
GRADES = (0.0, 1 / 3, 2 / 3, 1.0)
GRADE_NAMES = ("0", "1/3", "2/3", "1")
TYPES = ("mono", "poly")
BINARY_NAMES = ("functional", "defective")
TYPE_NAMES = tuple(f"{g} {t}" for g in GRADE_NAMES for t in TYPES)
TEST_FRACTION = 0.25
SPLIT_SEED = 0
DEFAULT_SIZE = 64
NATIVE_SIZE = 300


@dataclass(frozen=True)
class Cells:
    """What labels.csv says of each image: its file, defect grade (an index into `GRADES`) and
    cell type (an index into `TYPES`)."""

    files: list[Path]
    grade: np.ndarray
    cell_type: np.ndarray


def package_folder() -> Path | None:
    """The data folder of the installed `elpv-dataset` package, where it is installed."""
    try:
        files = importlib.metadata.files(PACKAGE[0]) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(str(f.locate())).parent for f in files if str(f) == PACKAGE[1]]
    return found[0] if found else None


def find_folder(data_dir: PathLike | None) -> Path:
    """The folder holding labels.csv: the one named (or its elpv/), else $DGC_DATA/elpv,
    ./data/elpv and the installed package's."""
    installed = package_folder()
    searched = candidate_dirs("elpv", data_dir, [installed] if installed else [])
    found = find_dir(searched, (LABELS,))
    if found is None:
        raise DGCError(f"ELPV's {LABELS} not found (searched {show_dirs(searched)}). Install "
                       f"it with `pip install {PACKAGE[0]}` (its images are CC BY-NC-SA 4.0, "
                       "so dgc does not carry them), or name a copy of its data folder, "
                       f"{LABELS} beside images/, with --data-dir")
    return found


def read_labels(folder: Path) -> Cells:
    """labels.csv: one image a line, `images/cellNNNN.png  probability  type`, each checked."""
    path = folder / LABELS
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DGCError(f"cannot read {path}: {error}; reinstall {PACKAGE[0]}") from error
    files, grades, types = [], [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}, line {number}"
        try:
            probability = float(fields[1]) if len(fields) == 3 else None
        except ValueError:
            probability = None
        if probability is None:
            raise DGCError(f"{where} is {line.strip()!r}; expected an image path, a defect "
                           "probability and a cell type (mono or poly); the file is damaged")
        grade = int(np.argmin([abs(probability - g) for g in GRADES]))
        if abs(probability - GRADES[grade]) > 1e-3:
            raise DGCError(f"{where}: unknown grade {fields[1]}; ELPV's grades are 0, 1/3, "
                           "2/3 and 1")
        if fields[2] not in TYPES:
            raise DGCError(f"{where}: unknown cell type {fields[2]!r}; expected mono or poly")
        image = folder / fields[0]
        if not image.is_file():
            raise DGCError(f"{where} lists {image}, which is missing; restore it or "
                           f"reinstall {PACKAGE[0]}")
        files.append(image)
        grades.append(grade)
        types.append(TYPES.index(fields[2]))
    if not files:
        raise DGCError(f"{path} lists no images; the file is damaged")
    return Cells(files, np.array(grades, dtype=np.int64), np.array(types, dtype=np.int64))


def test_rows(cells: Cells) -> np.ndarray:
    """A boolean mask of the test images: `TEST_FRACTION` of every (grade, cell type) stratum
    (at least one where it has two), drawn once with `SPLIT_SEED`."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(cells.files), dtype=bool)
    for stratum in np.unique(cells.grade * len(TYPES) + cells.cell_type):
        rows = np.flatnonzero(cells.grade * len(TYPES) + cells.cell_type == stratum)
        n_test = min(max(1, round(TEST_FRACTION * len(rows))), len(rows) - 1)
        test[rng.permutation(rows)[:n_test]] = True
    return test


def decoded(cells: Cells, size: int) -> np.ndarray:
    """Every image as uint8 (N, size, size, 1); about 5 s for all of them, so not cached."""
    return np.stack([read_image(file, "L", (size, size))
                     for file in stage(cells.files, "decode images", "images")])


def load_elpv(data_dir: PathLike | None = None, image_size: int | None = None,
              labels: str = "grades") -> RawData:
    """ELPV's fixed split, labelled by `labels`: "grades", "binary" or "types"."""
    folder = find_folder(data_dir)
    cells = read_labels(folder)
    images = decoded(cells, image_size or DEFAULT_SIZE)
    y = {"grades": cells.grade, "binary": (cells.grade >= 2).astype(np.int64),
         "types": cells.grade * len(TYPES) + cells.cell_type}[labels]
    names = {"grades": GRADE_NAMES, "binary": BINARY_NAMES, "types": TYPE_NAMES}[labels]
    test = test_rows(cells)
    return RawData(images[~test], y[~test], images[test], y[test], names)


def info(name: str, labels: str, names: tuple[str, ...]) -> DatasetInfo:
    """A dataset entry of ELPV under one labelling: its own imbalance, the class-folder preset
    family, mirrored and turned cells allowed (a mirrored or turned crack is still a crack)."""
    return DatasetInfo(name, partial(load_elpv, labels=labels), image_shape=None, hflip=True,
                       class_names=names, family="folder", options=("image_size",),
                       dihedral=True)


ELPV = info("elpv", "grades", GRADE_NAMES)
ELPV_BINARY = info("elpv-binary", "binary", BINARY_NAMES)
ELPV_TYPES = info("elpv-types", "types", TYPE_NAMES)
