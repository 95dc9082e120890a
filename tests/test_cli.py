"""Tests for the `dgc` command line, called in-process through `dgc.cli.main`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgc.cli import build_parser, main
from dgc.core.errors import DGCError
from dgc.run.finished import load_run

CLASS_NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`dgc --exp digits --seed 1 ...` with no command trains (two epochs, S = 1).

    Returns the run directory and what the command printed.
    """
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--exp", "digits", "--seed", "1", "--epochs", "2", "--samples", "1",
                     "--quiet", "--out", str(out)])
    assert code == 0
    return out, stdout.getvalue()


@pytest.fixture
def run_dir(trained: tuple[Path, str]) -> Path:
    return trained[0]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def check_predictions(path: Path, names: list[str]) -> np.ndarray:
    rows = read_csv(path)
    assert rows[0] == ["input", "predicted", *(f"p_{c}" for c in CLASS_NAMES)]
    assert [r[0] for r in rows[1:]] == names
    probs = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    assert probs.shape == (len(names), 10)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [r[1] for r in rows[1:]] == [CLASS_NAMES[i] for i in probs.argmax(1)]
    return probs


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dgc: error:"), err
    return lines[0]


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "predict"):
        assert command in out
    assert main([]) == 0
    assert "evaluate" in capsys.readouterr().out


def test_version_and_help_cite_the_projects_docs(capsys: pytest.CaptureFixture[str]) -> None:
    import dgc

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"dgc {dgc.__version__}\n"
    texts = [build_parser().format_help()]
    for command in ("train", "evaluate", "bench", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts.append(capsys.readouterr().out)
    assert "docs/METHOD.md" in texts[0] and "docs/METHOD.md §4" in texts[1]  # dgc, dgc train
    assert not any("SPEC" in text for text in texts)


def test_python_m_dgc_help() -> None:
    result = subprocess.run([sys.executable, "-m", "dgc", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage: dgc" in result.stdout
    assert all(c in result.stdout for c in ("train", "evaluate", "predict"))


def test_training_without_a_command(trained: tuple[Path, str]) -> None:
    run_dir, printed = trained
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["exp"], config["seed"], config["method"]) == ("digits", 1, "dgc")
    assert config["train"]["epochs"] == 2 and config["predict"]["samples"] == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["acsa"] <= 1.0
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["epochs"]) == 2
    assert "preset cpu" in printed and "dgc on digits, seed 1" in printed
    assert f"{metrics['acsa']:.4f}" in printed


def test_evaluate_writes_a_new_file(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics_before = (run_dir / "metrics.json").read_bytes()
    assert main(["evaluate", str(run_dir), "--samples", "2"]) == 0
    written = run_dir / "eval-bayes-s2-top2.json"  # the run's default keeps top-2
    assert written.is_file()
    assert str(written) in capsys.readouterr().out
    assert (run_dir / "metrics.json").read_bytes() == metrics_before
    evaluation = json.loads(written.read_text())
    assert evaluation["predict"]["samples"] == 2 and evaluation["predict"]["rule"] == "bayes"
    assert 0.0 <= evaluation["acsa"] <= 1.0


def test_a_run_trained_on_a_gpu_predicts_on_a_cpu(run_dir: Path, tmp_path: Path) -> None:
    """A run folder from a GPU machine (config device "cuda", bf16 on) is usable here."""
    copy = tmp_path / "gpu-run"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["device"], config["train"]["bf16"], config["predict"]["bf16"] = "cuda", True, True
    (copy / "config.json").write_text(json.dumps(config))
    run = load_run(copy)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert run.cfg.device == expected and next(run.model.parameters()).device.type == expected
    assert run.cfg.predict.bf16 == (expected == "cuda")
    images = tmp_path / "x.npy"
    np.save(images, np.zeros((3, 8, 8, 1), dtype=np.uint8))
    out = tmp_path / "p.csv"
    assert main(["predict", str(copy), "--input", str(images), "--out", str(out)]) == 0
    assert len(read_csv(out)) == 4
    assert main(["evaluate", str(copy), "--samples", "1"]) == 0


def test_predict_from_npy(run_dir: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "x.npy"),
                 "--out", str(out)]) == 0
    assert "7 predictions" in capsys.readouterr().out
    probs = check_predictions(out, [str(i) for i in range(7)])

    # (N, H, W) without a channel axis, and floats in [0, 1], give the same answers
    np.save(tmp_path / "gray.npy", images[..., 0])
    np.save(tmp_path / "float.npy", images.astype(np.float64) / 255)
    for name in ("gray.npy", "float.npy"):
        other = tmp_path / f"{name}.csv"
        assert main(["predict", str(run_dir), "--input", str(tmp_path / name),
                     "--out", str(other)]) == 0
        np.testing.assert_allclose(check_predictions(other, [str(i) for i in range(7)]), probs,
                                   atol=2e-6)


def test_predict_from_npz(run_dir: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(4, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "plain.npy", images)
    reference = tmp_path / "plain.csv"
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "plain.npy"),
                 "--out", str(reference)]) == 0
    expected = check_predictions(reference, ["0", "1", "2", "3"])
    # one array of any name; the images under "x" beside other arrays, in any order
    variants = {"single": {"whatever": images},
                "with-labels": {"x": images, "y": np.zeros(4, dtype=np.int64)},
                "labels-first": {"y": np.zeros(4, dtype=np.int64), "x": images},
                "with-test": {"x": images, "x_test": np.zeros((2, 3), dtype=np.uint8)}}
    for name, arrays in variants.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        out = tmp_path / f"{name}.csv"
        code = main(["predict", str(run_dir), "--input", str(tmp_path / f"{name}.npz"),
                     "--out", str(out)])
        assert code == 0, (name, capsys.readouterr().err)
        np.testing.assert_allclose(check_predictions(out, ["0", "1", "2", "3"]), expected,
                                   atol=2e-6)
    # several arrays and none named as images: ask for "x"
    np.savez(tmp_path / "ambiguous.npz", a=images, b=images)
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "ambiguous.npz"),
                 "--out", str(tmp_path / "never.csv")]) == 2
    assert "'x'" in one_error_line(capsys.readouterr().err)


def test_predict_from_png_folder(run_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
    folder = tmp_path / "pngs"
    folder.mkdir()
    names = ["a.png", "b.png", "c.png"]
    for name, image in zip(names, images, strict=True):
        Image.fromarray(image, mode="L").save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "folder.csv"
    assert main(["predict", str(run_dir), "--input", str(folder), "--out", str(out)]) == 0
    probs = check_predictions(out, names)

    np.save(tmp_path / "same.npy", images[..., None])
    same = tmp_path / "same.csv"
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "same.npy"),
                 "--out", str(same)]) == 0
    np.testing.assert_allclose(check_predictions(same, ["0", "1", "2"]), probs, atol=2e-6)


def make_bad_input(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.npy"
    if kind == "missing":
        return path
    if kind == "wrong-shape":
        np.save(path, np.zeros((2, 9, 9, 1), dtype=np.uint8))
    elif kind == "rgb":
        np.save(path, np.zeros((2, 8, 8, 3), dtype=np.uint8))
    elif kind == "out-of-range":
        np.save(path, np.full((2, 8, 8, 1), 3.0))
    elif kind == "not-numpy":
        path.write_text("hello")
    elif kind == "damaged-npz":  # a good zip directory over a corrupted deflate stream
        path = tmp_path / "damaged.npz"
        np.savez_compressed(path, x=np.arange(2 * 64, dtype=np.uint8).reshape(2, 8, 8, 1) * 7)
        data = bytearray(path.read_bytes())
        data[60:120] = bytes(b ^ 0x5A for b in data[60:120])
        path.write_bytes(bytes(data))
    elif kind == "empty-folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif kind == "broken-png":
        path = tmp_path / "broken"
        path.mkdir()
        (path / "x.png").write_bytes(b"not a png")
    elif kind == "no-images":
        np.save(path, np.zeros((0, 8, 8, 1), dtype=np.uint8))
    return path


@pytest.mark.parametrize("kind", ["missing", "wrong-shape", "rgb", "out-of-range", "not-numpy",
                                  "damaged-npz", "empty-folder", "broken-png", "no-images"])
def test_predict_bad_input(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           kind: str) -> None:
    source = make_bad_input(kind, tmp_path)
    out = tmp_path / "never.csv"
    assert main(["predict", str(run_dir), "--input", str(source), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(source.name) in line or kind == "no-images"
    assert not out.exists()


def test_predict_unwritable_output(run_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), dtype=np.uint8))
    missing = tmp_path / "no" / "such"
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "x.npy"),
                 "--out", str(missing / "dir.csv")]) == 2
    assert f"--out: the folder {missing} does not exist" in one_error_line(
        capsys.readouterr().err)
    # refused before anything is read: a missing run is not what it reports
    for command in (["predict", str(tmp_path / "nothing"), "--input", str(tmp_path / "x.npy")],
                    ["sample", str(tmp_path / "nothing"), "--class", "0", "--n", "4"]):
        assert main([*command, "--out", str(missing / "out.npz")]) == 2
        assert "--out: the folder" in one_error_line(capsys.readouterr().err)
    (tmp_path / "file").write_text("")
    assert main(["predict", str(run_dir), "--input", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "file" / "p.csv")]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)


def test_evaluate_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)


def test_unknown_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--exp", "digits", "--epochs", "2", "--quiet", "--out", str(tmp_path / "r"),
                 "--set", "train.nonsense=1"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "train has no setting 'nonsense'" in line and "epochs" in line
    assert not (tmp_path / "r").exists()
    assert main(["train", "--exp", "digits", "--out", str(tmp_path / "r"),
                 "--set", "nonsense"]) == 2
    assert "section.field=value" in one_error_line(capsys.readouterr().err)


def test_invalid_value_is_refused_before_training(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--exp", "digits", "--epochs", "0", "--quiet",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--epochs (train.epochs) must be at least 1" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_unknown_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--exp", "nosuch", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_default_prediction_is_top2_and_exact_restores_spec(tmp_path: Path) -> None:
    from dgc.cli import build_parser, option_settings, predict_settings
    from dgc.config import PredictConfig, apply_overrides, build_config, with_settings
    from dgc.methods.registry import get_method

    cfg = get_method("dgc").configure(build_config("fashion", "cpu"))
    assert (cfg.predict.top_k, cfg.predict.samples) == (2, 1)
    faithful = get_method("dgc-faithful").configure(build_config("fashion", "cpu"))
    assert (faithful.predict.top_k, faithful.predict.samples) == (None, 10)
    assert (faithful.model.encoder_relu, faithful.model.init) == (False, "released")
    assert faithful.train.schedule == "manual_released"
    celeba = get_method("dgc-faithful").configure(build_config("celeba", "paper"))
    assert celeba.train.schedule == "manual_smooth_released"
    parser = build_parser()
    exact = predict_settings(parser.parse_args(["evaluate", "run", "--exact"]), cfg)
    assert exact == PredictConfig(samples=10, top_k=None, rule="bayes")
    fewer = predict_settings(parser.parse_args(["evaluate", "run", "--exact", "--samples", "3"]),
                             cfg)
    assert (fewer.top_k, fewer.samples) == (None, 3)
    args = parser.parse_args(["bench", "--exact", "--epochs", "3", "--set", "train.lr=0.01"])
    changed = apply_overrides(with_settings(cfg, option_settings(args)), args.set)
    assert (changed.predict.top_k, changed.predict.samples, changed.predict.rule) == (
        None, 10, "bayes")
    assert (changed.train.epochs, changed.train.lr) == (3, 0.01)
    assert option_settings(parser.parse_args(["sweep", "--values", "1"])) == {}


@pytest.mark.parametrize("argv", [
    ["--debug", "--exp", "digits", "--set", "train.nonsense=1"],
    ["--exp", "digits", "--set", "train.nonsense=1", "--debug"],
    ["train", "--exp", "digits", "--debug", "--set", "train.nonsense=1"],
])
def test_debug_shows_the_traceback_wherever_it_is_given(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DGCError, match="train has no setting 'nonsense'"):
        main([*argv, "--out", str(tmp_path / "r")])
    assert main([a for a in argv if a != "--debug"] + ["--out", str(tmp_path / "r")]) == 2
    assert "train has no setting" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_debug_with_help_is_the_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--debug", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dgc [-h]") and "COMMAND" in out and "--seed" not in out


def test_the_paper_is_quoted_only_for_runs_on_its_protocol() -> None:
    import dataclasses

    from dgc.cli import published_dgc
    from dgc.config import apply_overrides, build_config

    fashion = build_config("fashion", "cpu")
    assert published_dgc(fashion)["acsa"] == 0.8364
    assert published_dgc(build_config("digits", "cpu")) is None  # not in the paper
    assert published_dgc(dataclasses.replace(fashion, profile=(100,) * 10)) is None
    held_out = apply_overrides(fashion, ["train.held_out=[8,9]"])
    assert published_dgc(held_out) is None
