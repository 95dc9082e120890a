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
from dgc.config import (
    IMAGES_EPOCHS,
    IMAGES_SIZE,
    apply_overrides,
    build_config,
    default_preset,
    with_steps,
)
from dgc.core.errors import DGCError, DGCWarning
from dgc.core.progress import quiet
from dgc.data import folder, load_folder, load_imbalanced
from dgc.data.files import ARRAYS, read_cache
from dgc.methods.registry import resolve_config


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
    assert "converted 1 of them to 8-bit grayscale: 1 from RGB" in caplog.text
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


def save(path: Path, image: Image.Image, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def test_16_bit_and_other_deep_modes_are_scaled_not_clipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 16-bit PNG was clipped to 255 everywhere (issue 34): blank images, exit 0."""
    root = tmp_path / "data"
    for c, level in enumerate((10000, 50000)):
        for i in range(3):
            deep = Image.fromarray(np.full((6, 6), level + i, np.uint16))
            save(root / f"c{c}" / f"{i}.png", deep)
    save(root / "c0" / "int.tif", Image.fromarray(np.full((6, 6), 1000, np.int32)))
    save(root / "c1" / "float.tif", Image.fromarray(np.full((6, 6), 0.5, np.float32)))
    with caplog.at_level(logging.WARNING):
        raw = load_folder(root)
    levels = sorted(set(raw.x_train[:, 0, 0, 0].tolist()) | set(raw.x_test[:, 0, 0, 0].tolist()))
    assert levels == [4, 39, 128, 195]  # 1000, 10000, 0.5, 50000 scaled; never all 255
    assert ("converted 8 of them to 8-bit grayscale: 6 from I;16 (scaled from 0..65535), 1 from I "
            "(scaled from 0..65535), 1 from F (scaled from 0..1)") in caplog.text
    assert "dgc: 8 images read as 6×6 grayscale (the median longer side)" in caplog.text


@pytest.mark.parametrize(("mode", "value", "options", "expected"), [
    ("LA", (100, 255), {}, [100, 100, 100]),               # opaque alpha: dropped
    ("RGBA", (100, 50, 20, 255), {}, [100, 50, 20]),
    ("CMYK", (0, 0, 0, 0), {}, [255, 255, 255]),            # converted by Pillow, as documented
    ("P", 1, {"transparency": 0}, [200, 100, 50]),          # the transparent index unused
    ("1", 1, {}, [255, 255, 255]),
])
def test_modes_that_convert_faithfully(tmp_path: Path, mode: str, value: object,
                                       options: dict, expected: list[int]) -> None:
    image = Image.new(mode, (6, 6), value)  # type: ignore[arg-type]
    if mode == "P":
        image.putpalette([10, 20, 30, 200, 100, 50])
    path = save(tmp_path / f"x.{'tif' if mode == 'CMYK' else 'png'}", image, **options)
    assert folder.read_image(path, "RGB", (6, 6))[0, 0].tolist() == expected


@pytest.mark.parametrize(("name", "make", "message"), [
    ("i.tif", lambda: Image.fromarray(np.full((6, 6), 70000, np.int32)),
     r"its I pixels run from 70000 to 70000, beyond 0\.\.65535"),
    ("f.tif", lambda: Image.fromarray(np.full((6, 6), 2.0, np.float32)),
     r"its F pixels run from 2 to 2, beyond 0\.\.1"),
    ("nan.tif", lambda: Image.fromarray(np.full((6, 6), np.nan, np.float32)),
     "its F pixels run from nan to nan"),
    ("la.png", lambda: Image.new("LA", (6, 6), (100, 0)), r"it has transparent pixels \(mode LA\)"),
    ("rgba.png", lambda: Image.new("RGBA", (6, 6), (1, 2, 3, 128)),
     r"it has transparent pixels \(mode RGBA\)"),
    ("p.png", lambda: Image.new("P", (6, 6), 0), r"it has transparent pixels \(mode P\)"),
])
def test_modes_that_cannot_convert_faithfully_are_refused(tmp_path: Path, name: str, make,
                                                          message: str) -> None:
    image = make()
    options = {"transparency": 0} if image.mode == "P" else {}
    path = save(tmp_path / name, image, **options)
    with pytest.raises(DGCError, match=f"cannot read image {path}: {message}"):
        folder.read_image(path, "L", (6, 6))


def test_several_frames_are_refused(tmp_path: Path) -> None:
    frames = [Image.new("L", (6, 6), 10), Image.new("L", (6, 6), 200)]
    for name in ("anim.gif", "pages.tif"):
        path = save(tmp_path / name, frames[0], save_all=True, append_images=frames[1:])
        with pytest.raises(DGCError, match=f"{name}: it holds 2 frames"):
            folder.read_image(path, "L", (6, 6))


def test_stretched_images_are_reported_and_letterbox_pads_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    write_classes(root, {"a": 3, "b": 3})
    write_image(root / "a" / "tall.png", 200, size=(2, 12))
    write_image(root / "b" / "wide.png", 200, size=(12, 2))
    with caplog.at_level(logging.WARNING):
        stretched = load_folder(root)
    assert ("stretching them to squares distorts 2 of them, over 2 times as long one way as the "
            "other: a/tall.png (2×12), b/wide.png (12×2); --letterbox pads them instead"
            ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        padded = load_folder(root, letterbox=True)
    assert "read as 6×6 grayscale (the median longer side), letterboxed" in caplog.text
    assert "stretching" not in caplog.text
    tall = [x for x in (*stretched.x_train, *stretched.x_test) if x.min() == 200]
    assert len(tall) == 2  # stretched: every pixel is the image's
    boxed = sorted((x[..., 0] == 200).sum() for x in (*padded.x_train, *padded.x_test)
                   if x.max() == 200)
    assert boxed == [6, 6]  # one row or column of 6 pixels, the rest black padding


def test_a_class_folder_linked_to_another_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_classes(root, {"a": 3, "b": 3})
    (root / "c").symlink_to(root / "a")
    with pytest.raises(DGCError, match=r"data/a and .*data/c hold the same 3 images \(one is a "
                                       "link to the other, or a copy of it\\)"):
        load_folder(root)
    split = tmp_path / "split"
    write_classes(split / "train", {"a": 3, "b": 3})
    write_classes(split / "test", {"a": 2})
    (split / "test" / "b").symlink_to(split / "train" / "b")
    with pytest.raises(DGCError, match="train/b and .*test/b hold the same 3 images"):
        load_folder(split)


def test_duplicate_images_are_warned_of_by_name(split_dir: Path) -> None:
    """Byte-identical images in train and test inflate every metric; real data holds true
    duplicates, so a warning names them rather than a refusal."""
    (split_dir / "test" / "a" / "leak.png").write_bytes(
        (split_dir / "train" / "a" / "000.png").read_bytes())
    (split_dir / "train" / "c" / "link.png").symlink_to(split_dir / "train" / "b" / "001.png")
    (split_dir / "train" / "b" / "again.png").symlink_to(split_dir / "train" / "b" / "002.png")
    with pytest.warns(DGCWarning) as caught:
        load_folder(split_dir)
    assert str(caught[0].message) == (
        "images with the same content as another: 1 in both the training and the test set, which "
        "inflates every test metric (test/a/leak.png = train/a/000.png); 1 under two classes "
        "(train/c/link.png = train/b/001.png); 1 twice in one class (train/b/again.png = "
        "train/b/002.png); remove the copies if they are not meant (docs/USAGE.md)")


def test_folders_named_train_or_test_are_classes_when_they_hold_images(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_classes(root, {"cat": 3, "dog": 3, "train": 3})
    assert load_folder(root).class_names == ("cat", "dog", "train")
    mixed = tmp_path / "mixed"
    write_classes(mixed / "train", {"a": 3, "b": 3})
    write_classes(mixed, {"cat": 3})
    with pytest.raises(DGCError, match=r"mixes two layouts: train/ of class folders beside class "
                                       r"folders of images \(cat\)"):
        load_folder(mixed)


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


def test_cache_is_keyed_by_content(split_dir: Path) -> None:
    """Two images of one size swapped between classes, their times kept: a cache keyed by names,
    sizes and times was reused (issue 34), and `evaluate` scored the old arrays."""
    a, b = split_dir / "train" / "a" / "x.bmp", split_dir / "train" / "b" / "x.bmp"
    write_image(a, 210)
    write_image(b, 240)
    first = load_folder(split_dir)
    stats = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    contents = a.read_bytes(), b.read_bytes()
    assert len(contents[0]) == len(contents[1])
    a.write_bytes(contents[1])
    b.write_bytes(contents[0])
    for path, times in zip((a, b), stats, strict=True):
        os.utime(path, ns=times)
    again = load_folder(split_dir)
    before, after = ({int(x[0, 0, 0]) for x, y in zip(raw.x_train, raw.y_train, strict=True)
                      if y == 0} for raw in (first, again))  # class a's levels
    assert 210 in before and 240 in after and 210 not in after


def test_any_damage_to_the_cache_means_decoding_again(split_dir: Path) -> None:
    """Every one-bit flip of a cache: its arrays exactly, or None (decoded again), never an
    error; numpy's zip reader raised RuntimeError or NotImplementedError for some (issue 34)."""
    first = load_folder(split_dir)
    cache = split_dir / folder.CACHE_NAME
    good = cache.read_bytes()
    with np.load(cache) as saved:
        fingerprint = str(saved["fingerprint"])
    damaged = cache.with_name("damaged.npz")
    for position in range(len(good)):
        flipped = bytearray(good)
        flipped[position] ^= 1 << position % 8
        damaged.write_bytes(bytes(flipped))
        arrays = read_cache(damaged, fingerprint)
        assert arrays is None or all(np.array_equal(arrays[k], getattr(first, k))
                                     for k in ARRAYS), position
    cache.write_bytes(good[:30] + bytes([good[30] ^ 1]) + good[31:])
    np.testing.assert_array_equal(load_folder(split_dir).x_test, first.x_test)
    assert cache.read_bytes() == good  # rebuilt


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
                 "--image-size", "8", "--letterbox", "--preset", "cpu", "--quiet", "--no-report",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["exp"] == "folder" and config["image_size"] == 8 and config["letterbox"]
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
                 "--preset", "cpu", "--epochs", "1", "--image-size", "8", "--quiet",
                 "--out", str(bench)]) == 0
    results = json.loads((bench / "results.json").read_text())
    assert {r["method"] for r in results["runs"]} == {"dgc", "ce"}
    assert "`dgc`" in (bench / "table.md").read_text()

    # the same folder spelled another way is the same data: the finished runs are reused
    finished = {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")}
    respelled = f"{split_dir}/../{split_dir.name}/"
    assert main(["bench", "--data-dir", respelled, "--methods", "dgc,ce", "--seeds", "1",
                 "--preset", "cpu", "--epochs", "1", "--image-size", "8", "--quiet",
                 "--out", str(bench)]) == 0
    assert {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")} == finished

    # the folder is the data: another folder's finished runs are not counted as this one's
    other = tmp_path / "other"
    write_classes(other / "train", {"a": 8, "b": 4, "c": 2}, start=60)
    write_classes(other / "test", {"a": 3, "b": 3, "c": 3}, start=90)
    capsys.readouterr()
    assert main(["bench", "--data-dir", str(other), "--methods", "dgc,ce", "--seeds", "1",
                 "--preset", "cpu", "--epochs", "1", "--image-size", "8", "--quiet",
                 "--out", str(bench)]) == 2
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


def test_reading_logs_one_line_per_stage_and_errors_stay_on_their_own_line(
    split_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal, the scan and decode bars wrote carriage returns into logs, and an error
    line was glued to a bar, so `grep '^dgc: error'` missed it (issue 34)."""
    load_folder(split_dir)
    assert capsys.readouterr().err.splitlines() == ["dgc: scan images: 23 images",
                                                    "dgc: decode images: 23 images"]
    with quiet():
        load_folder(split_dir)
    assert capsys.readouterr().err == ""
    (split_dir / "test" / "c" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    train = ["train", "--data-dir", str(split_dir), "--epochs", "1", "--out", str(tmp_path / "r")]
    for quietly, before in (([], ["dgc: scan images: 23 images"]), (["--quiet"], [])):
        assert main([*train, *quietly]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[:-1] == before and lines[-1].startswith("dgc: error: cannot read image ")
        assert "\r" not in "".join(lines)


def test_class_folders_take_the_images_preset_unless_another_is_named() -> None:
    """Defect photos need more than the Fashion-MNIST network: folders get the pretrained one
    at `IMAGES_SIZE` px, without mirrors (a folder's classes may not survive them), keeping the
    last epoch (a small validation split's best epoch is partly noise); an explicit
    size or preset wins, and 28-pixel benchmarks keep their presets."""
    cfg = resolve_config("folder", default_preset("folder", cuda=False), "dgc")
    assert (cfg.preset, cfg.image_size, cfg.model.backbone) == ("images", IMAGES_SIZE,
                                                                "efficientnet-lite0")
    assert cfg.train.epochs == IMAGES_EPOCHS and not cfg.train.dihedral
    assert cfg.train.keep == "last" and resolve_config("fashion", "cpu", "dgc").train.keep == "best"
    assert resolve_config("folder", "images", "ce", image_size=64).image_size == 64
    cpu = resolve_config("folder", "cpu", "dgc")
    assert (cpu.model.backbone, cpu.image_size) == ("conv", None)
    assert (default_preset("fashion", cuda=False), default_preset("fashion", cuda=True)) == (
        "cpu", "paper")
    with pytest.raises(DGCError, match="images preset is for class folders and ELPV"):
        resolve_config("fashion", "images", "dgc")
    with pytest.raises(DGCError, match=r"--image-size 8 is too small for --backbone "
                                       r"efficientnet-lite0 \(the images preset's network\)"):
        resolve_config("folder", "images", "dgc", image_size=8)
