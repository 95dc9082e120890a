"""Tests for class-folder datasets (dgc.data.folder) on folders of tiny images the tests write,
and for them in `dgc train`, `evaluate`, `predict` and `bench`."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgc import DGCClassifier
from dgc.cli import main
from dgc.config import apply_overrides, build_config, with_steps
from dgc.core.errors import DGCError
from dgc.data import folder, load_folder, load_imbalanced


def write_image(path: Path, value: int, size: tuple[int, int] = (6, 6), mode: str = "L") -> None:
    """A flat image of one grey level (in every channel); the level tells images apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, value, value)
    Image.new(mode, size, colour).save(path)


def write_classes(root: Path, counts: dict[str, int], start: int = 0) -> None:
    """`counts[name]` images per class folder, class c's levels 60·c + i."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            write_image(root / name / f"{i:03d}.png", 60 * c + i + start)


@pytest.fixture(autouse=True)
def no_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DGC_CACHE", raising=False)


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    """train/ (imbalanced: 8, 4, 2) and test/ (3 each) folders of classes a, b, c."""
    root = tmp_path / "data"
    write_classes(root / "train", {"a": 8, "b": 4, "c": 2})
    write_classes(root / "test", {"a": 3, "b": 3, "c": 3}, start=30)
    return root


# --------------------------------------------------------------------------------------------
# The reader


def test_train_and_test_folders_are_read_as_given(split_dir: Path) -> None:
    raw = load_folder(split_dir)
    assert raw.class_names == ("a", "b", "c")
    assert raw.x_train.shape == (14, 6, 6, 1) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(raw.y_train), [8, 4, 2])
    np.testing.assert_array_equal(np.bincount(raw.y_test), [3, 3, 3])
    assert raw.y_train.dtype == np.int64
    np.testing.assert_array_equal(raw.x_train[:, 0, 0, 0], [*range(8), *range(60, 64), 120, 121])
    subset = load_imbalanced("folder", 3, split_dir)  # its own imbalance, every seed alike
    np.testing.assert_array_equal(subset.train_counts, [8, 4, 2])


def test_hidden_files_junk_and_nested_folders_are_ignored(split_dir: Path) -> None:
    (split_dir / "train" / "a" / ".hidden.png").write_bytes(b"not an image")
    (split_dir / "train" / "a" / "notes.txt").write_text("ignore me")
    (split_dir / "train" / ".DS_Store").write_bytes(b"\0\1")
    write_image(split_dir / "train" / "a" / "nested" / "deep.png", 255)
    write_image(split_dir / "train" / ".trash" / "x.png", 255)
    raw = load_folder(split_dir)
    assert raw.class_names == ("a", "b", "c") and len(raw.y_train) == 14
    assert raw.x_train.max() < 255


def test_mixed_modes_go_to_the_majority_and_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    write_classes(root, {"a": 4, "b": 4})
    write_image(root / "a" / "colour.png", 200, mode="RGB")
    with caplog.at_level(logging.WARNING):
        raw = load_folder(root)
    assert raw.x_train.shape[-1] == 1
    assert "8 images are grayscale and 1 colour; all are converted to grayscale" in caplog.text
    for name in ("c0", "c1", "c2"):
        write_image(root / "b" / f"{name}.png", 100, mode="RGB")
    write_image(root / "b" / "c3.png", 100, mode="RGB")  # now 8 grey against 5... still grey
    for i in range(4):
        write_image(root / "a" / f"rgb{i}.png", 100, mode="RGB")
    assert load_folder(root).x_train.shape[-1] == 3  # 9 colour against 8 grey


def test_sizes_default_to_the_median_capped_and_obey_image_size(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i, side in enumerate((5, 9, 9, 12, 200)):
        write_image(root / "a" / f"{i}.png", 10, size=(side, side))
        write_image(root / "b" / f"{i}.png", 90, size=(side, side // 2 + 1))
    assert load_folder(root).x_train.shape[1:] == (9, 9, 1)
    assert load_folder(root, image_size=16).x_test.shape[1:] == (16, 16, 1)
    for i in range(11):  # now the median side is 300
        write_image(root / "c" / f"{i}.png", 50, size=(300, 300))
    assert load_folder(root).x_train.shape[1:3] == (folder.MAX_DEFAULT_SIZE,) * 2


def test_flat_folders_get_a_fixed_stratified_test_split(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_classes(root, {"cat": 10, "dog": 5, "eel": 2})
    raw = load_folder(root)
    np.testing.assert_array_equal(np.bincount(raw.y_test), [2, 1, 1])
    np.testing.assert_array_equal(np.bincount(raw.y_train), [8, 4, 1])
    levels = set(raw.x_train[:, 0, 0, 0].tolist()) | set(raw.x_test[:, 0, 0, 0].tolist())
    assert len(levels) == 17  # every image once
    again = load_folder(root, test_fraction=0.5)
    np.testing.assert_array_equal(np.bincount(again.y_test), [5, 2, 1])
    np.testing.assert_array_equal(load_folder(root).x_test, raw.x_test)


@pytest.mark.parametrize(("setup", "message"), [
    (lambda r: write_classes(r, {"only": 3}), "only the class 'only'.*at least two"),
    (lambda r: (write_classes(r, {"a": 3, "b": 3}), (r / "empty").mkdir()),
     "class folder 'empty' .* holds no images"),
    (lambda r: write_classes(r, {"a": 3, "b": 1}), "class 'b' .* has one image"),
    (lambda r: write_classes(r / "train", {"a": 3, "b": 3}), "has train/ but no test/"),
    (lambda r: (write_classes(r / "train", {"a": 3, "b": 3}),
                write_classes(r / "test", {"a": 1, "b": 1, "z": 1})),
     "class 'z' has test images but no folder in .*train"),
    (lambda r: (write_classes(r / "train", {"a": 3, "b": 3}), write_classes(r / "test", {"a": 1})),
     "class 'b' has no folder in .*test"),
    (lambda r: (write_classes(r, {"a": 3, "b": 3}),
                (r / "b" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")),
     r"cannot read image .*b/002\.png"),
])
def test_bad_folders_give_one_clear_error(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    setup(root)
    with pytest.raises(DGCError, match=message):
        load_folder(root)


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_classes(root, {"a": 3, "b": 3})
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 251).save(
        root / "a" / "big.png")
    damaged = root / "a" / "big.png"
    damaged.write_bytes(damaged.read_bytes()[:60])
    with pytest.raises(DGCError, match=f"cannot read image {damaged}"):
        load_folder(root)


def test_settings_that_do_not_apply_are_refused(split_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DGCError, match="has its own test/ folder, so --test-fraction"):
        load_folder(split_dir, test_fraction=0.3)
    with pytest.raises(DGCError, match="needs --data-dir"):
        load_folder(None)
    with pytest.raises(DGCError, match="no such folder"):
        load_folder(tmp_path / "absent")
    with pytest.raises(DGCError, match=r"digits dataset has no setting image_size; only the "
                                       r"elpv, elpv-binary, elpv-types, folder dataset\(s\)"):
        load_imbalanced("digits", 1, image_size=8)


def test_dgc_classifier_fits_the_arrays_of_class_folders(split_dir: Path) -> None:
    raw = load_folder(split_dir)
    clf = DGCClassifier(latent_dim=4, width=4, hidden=16, epochs=2, batch_size=8, samples=1,
                        random_state=0).fit(raw.x_train, np.array(raw.class_names)[raw.y_train])
    assert clf.input_shape_ == (6, 6, 1) and list(clf.classes_) == ["a", "b", "c"]
    assert set(clf.predict(raw.x_test)) <= {"a", "b", "c"}


# --------------------------------------------------------------------------------------------
# The cache


def test_second_load_comes_from_the_cache(split_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_folder(split_dir)
    assert (split_dir / folder.CACHE_NAME).is_file()
    monkeypatch.setattr(folder, "read_image", lambda *_: pytest.fail("decoded again"))
    second = load_folder(split_dir)
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)
    assert second.class_names == first.class_names


def test_cache_is_rebuilt_when_a_file_changes(split_dir: Path) -> None:
    assert load_folder(split_dir).x_train[0, 0, 0, 0] == 0
    changed = split_dir / "train" / "a" / "000.png"
    stat = changed.stat()
    write_image(changed, 77)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_folder(split_dir).x_train[0, 0, 0, 0] == 77
    (split_dir / "train" / "a" / "007.png").unlink()
    assert len(load_folder(split_dir).y_train) == 13
    assert load_folder(split_dir, image_size=4).x_train.shape[1:] == (4, 4, 1)


def test_damaged_cache_is_rebuilt(split_dir: Path) -> None:
    first = load_folder(split_dir)
    cache = split_dir / folder.CACHE_NAME
    cache.write_bytes(cache.read_bytes()[:200])
    np.testing.assert_array_equal(load_folder(split_dir).x_train, first.x_train)
    assert cache.stat().st_size > 200


def test_dgc_cache_wins_over_beside_the_data(
    split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DGC_CACHE", str(tmp_path / "cache"))
    load_folder(split_dir)
    assert not (split_dir / folder.CACHE_NAME).exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.cache_path(split_dir).name]


def test_unwritable_cache_place_still_loads(split_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DGC_CACHE", str(blocker / "cache"))
    assert len(load_folder(split_dir).y_train) == 14


# --------------------------------------------------------------------------------------------
# Schedules in optimiser steps


def test_steps_raise_the_epochs_of_small_training_sets() -> None:
    cfg = build_config("digits", "cpu")
    assert cfg.train.steps is not None
    assert with_steps(cfg, 390).train.epochs == -(-cfg.train.steps // 8)  # 8 batches of 50
    assert with_steps(cfg, 10**6).train.epochs == cfg.train.epochs  # never fewer epochs
    assert with_steps(cfg, 800, processes=2).train.epochs == -(-cfg.train.steps // 8)  # torchrun
    assert apply_overrides(cfg, ["train.epochs=3"]).train.steps is None
    assert build_config("fashion", "cpu").train.steps is None
    assert build_config("folder", "cpu").train.steps is not None


# --------------------------------------------------------------------------------------------
# The command line


def test_train_evaluate_predict_and_bench_on_class_folders(
    split_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(split_dir), "--epochs", "2", "--samples", "1",
                 "--image-size", "8", "--quiet", "--no-report", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["exp"] == "folder" and config["image_size"] == 8
    assert config["data"]["class_names"] == ["a", "b", "c"]
    assert config["data"]["image_shape"] == [8, 8, 1]
    assert config["data"]["train_counts"] == [8, 4, 2]
    per_class = json.loads((run / "metrics.json").read_text())["per_class"]
    assert [(c["class"], c["support"]) for c in per_class] == [("a", 3), ("b", 3), ("c", 3)]

    assert main(["evaluate", str(run), "--samples", "1"]) == 0
    assert "ACSA" in capsys.readouterr().out
    assert main(["report", str(run), "--quiet"]) == 0
    assert "a" in (run / "report.md").read_text() and (run / "figures" / "confusion.png").is_file()

    new = tmp_path / "new"
    write_image(new / "x.png", 5, size=(20, 30), mode="RGB")
    write_image(new / "y.jpg", 200, size=(3, 3))
    (new / ".hidden.png").write_bytes(b"junk")
    assert main(["predict", str(run), "--input", str(new), "--out", str(tmp_path / "p.csv")]) == 0
    with (tmp_path / "p.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["input", "predicted", "p_a", "p_b", "p_c"]
    assert [r[0] for r in rows[1:]] == ["x.png", "y.jpg"]
    assert all(r[1] in "abc" for r in rows[1:])

    bench = tmp_path / "bench"
    assert main(["bench", "--data-dir", str(split_dir), "--methods", "dgc,ce", "--seeds", "1",
                 "--epochs", "1", "--image-size", "8", "--quiet", "--out", str(bench)]) == 0
    results = json.loads((bench / "results.json").read_text())
    assert {r["method"] for r in results["runs"]} == {"dgc", "ce"}
    assert "`dgc`" in (bench / "table.md").read_text()

    # the same folder spelled another way is the same data: the finished runs are reused
    finished = {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")}
    respelled = f"{split_dir}/../{split_dir.name}/"
    assert main(["bench", "--data-dir", respelled, "--methods", "dgc,ce", "--seeds", "1",
                 "--epochs", "1", "--image-size", "8", "--quiet", "--out", str(bench)]) == 0
    assert {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")} == finished

    # the folder is the data: another folder's finished runs are not counted as this one's
    other = tmp_path / "other"
    write_classes(other / "train", {"a": 8, "b": 4, "c": 2}, start=60)
    write_classes(other / "test", {"a": 3, "b": 3, "c": 3}, start=90)
    capsys.readouterr()
    assert main(["bench", "--data-dir", str(other), "--methods", "dgc,ce", "--seeds", "1",
                 "--epochs", "1", "--image-size", "8", "--quiet", "--out", str(bench)]) == 2
    assert "data_dir" in capsys.readouterr().err


def test_cli_folder_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    write_classes(root, {"a": 3})
    assert main(["train", "--data-dir", str(root), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "at least two class folders" in error
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert main(["train", "--data-dir", str(idx), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    assert "holds no class folders" in capsys.readouterr().err
    assert main(["train", "--exp", "digits", "--image-size", "8", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--image-size is a setting of the folder dataset" in capsys.readouterr().err
    bench = tmp_path / "bench"  # refused before a benchmark writes anything
    assert main(["bench", "--exp", "digits", "--test-fraction", "0.3", "--methods", "ce",
                 "--seeds", "1", "--epochs", "1", "--quiet", "--out", str(bench)]) == 2
    assert "--test-fraction is a setting" in capsys.readouterr().err and not bench.exists()
