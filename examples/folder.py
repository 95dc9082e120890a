"""Train on your own images in class folders, shown on a small imbalanced Fashion-MNIST folder.

Writes OUT/images/train/<class>/*.png with an imbalanced count per class (`--counts`, the
first classes of Fashion-MNIST in order) and OUT/images/test/<class>/*.png with `--test` images
of each, then runs the commands a user with such folders runs:

    dgc train --data-dir OUT/images --out OUT/run
    dgc predict OUT/run --input OUT/images/test/<last class> --out OUT/predictions.csv

    .venv/bin/python examples/folder.py                                  # into runs/folder-example
    .venv/bin/python examples/folder.py --counts 300,100,30 --epochs 5 --out /tmp/ex

It needs the Fashion-MNIST files (Debian's dataset-fashion-mnist, $DGC_DATA/fashion or a
download); a folder that already holds the images is reused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dgc.cli import main as dgc
from dgc.data import load_fashion


def write_folders(root: Path, counts: list[int], per_test: int) -> str:
    """The images as PNGs; returns the last (rarest) class's folder name."""
    raw = load_fashion()
    names = [name.replace("/", "-") for name in raw.class_names[:len(counts)]]
    for part, x, y, wanted in (("train", raw.x_train, raw.y_train, counts),
                               ("test", raw.x_test, raw.y_test, [per_test] * len(counts))):
        for c, (name, n) in enumerate(zip(names, wanted, strict=True)):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(y == c)[:n]:
                Image.fromarray(x[i, :, :, 0]).save(folder / f"{i}.png")
    return names[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="600,300,150,60,20",
                        help="training images per class, first classes first")
    parser.add_argument("--test", type=int, default=100, help="test images per class")
    parser.add_argument("--epochs", type=int, help="epochs (default: the preset's schedule)")
    parser.add_argument("--out", default="runs/folder-example")
    args = parser.parse_args()
    out = Path(args.out)
    rarest = write_folders(out / "images", [int(n) for n in args.counts.split(",")], args.test)
    train = ["train", "--data-dir", str(out / "images"), "--out", str(out / "run"), "--no-report"]
    code = dgc(train + (["--epochs", str(args.epochs)] if args.epochs else []))
    if code == 0:
        code = dgc(["predict", str(out / "run"), "--input", str(out / "images" / "test" / rarest),
                    "--out", str(out / "predictions.csv")])
    return code


if __name__ == "__main__":
    sys.exit(main())
