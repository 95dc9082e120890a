"""`dgc export`: onnxruntime and TorchScript reproduce `dgc predict` on digits runs (DGC's default
rule, DGCMM's exact rule with S = 3, a baseline; DGC and a baseline averaging over the eight
symmetries of each image), the `evidence` output reproduces `score_ood`,
docs/USAGE.md's onnxruntime script classifies a folder, and bad input gets one clear error."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgc.cli import main
from dgc.evaluation.ood import score_ood
from dgc.run.finished import load_run, recorded_data
from dgc.run.predict import predict_images
from dgc.train.augment import dihedral_views

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--exp", "digits", "--seed", "1", "--epochs", "2", "--quiet", "--no-report",
         "--set", "train.pretrain_batch=200"]
RUNS = {"dgc": ["--method", "dgc"],  # top-2 classes, S = 1
        "dgcmm-exact": ["--method", "dgcmm", "--exact", "--samples", "3"],
        "ce": ["--method", "ce"],
        "dgc-dihedral": ["--method", "dgc", "--set", "train.dihedral=true", "--views", "dihedral"],
        "ce-dihedral": ["--method", "ce", "--set", "train.dihedral=true", "--views", "dihedral"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    made = {}
    for name, options in RUNS.items():
        assert main([*TRAIN, *options, "--out", str(folder / name)]) == 0
        made[name] = folder / name
    return made


@pytest.fixture(scope="module")
def test_images(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[np.ndarray, Path]:
    """The digits test set, and the same images as an .npy for `dgc predict`."""
    images = recorded_data(load_run(runs["dgc"])).x_test
    path = tmp_path_factory.mktemp("images") / "test.npy"
    np.save(path, images)
    return images, path


def predicted(run: Path, images: Path, out: Path) -> np.ndarray:
    """`dgc predict`'s probabilities (its CSV has six decimals)."""
    assert main(["predict", str(run), "--input", str(images), "--out", str(out)]) == 0
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return np.array([[float(value) for value in row[2:]] for row in rows])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", list(RUNS))
def test_onnxruntime_and_torchscript_reproduce_dgc_predict(
        name: str, runs: dict[str, Path], test_images: tuple[np.ndarray, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    images, npy = test_images
    expected = predicted(runs[name], npy, tmp_path / "predict.csv")
    assert main(["export", str(runs[name]), "--format", "onnx",
                 "--out", str(tmp_path / "model.onnx")]) == 0
    said = capsys.readouterr().out
    assert "(N, 8, 8, 1) -> probabilities" in said
    assert ("noise ε fixed by the run's seed" in said) == (not name.startswith("ce"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == [str(c) for c in range(10)]
    assert json.loads(meta["image_shape"]) == [8, 8, 1]
    assert meta["rule"].endswith("eight mirrors and 90° rotations") == name.endswith("dihedral")
    onnx_probs = np.concatenate([session.run(None, {"images": images[i:i + 97]})[0]
                                 for i in range(0, len(images), 97)])  # any batch size
    assert (onnx_probs.argmax(1) == expected.argmax(1)).mean() >= 0.999
    np.testing.assert_allclose(onnx_probs, expected, atol=1e-4)

    assert main(["export", str(runs[name]), "--format", "torchscript",
                 "--out", str(tmp_path / "model.pt")]) == 0
    extra = {"dgc.json": ""}
    module = torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    assert json.loads(extra["dgc.json"])["method"] == runs[name].name.split("-")[0]
    with torch.no_grad():
        script_probs = module(torch.from_numpy(images[:123])).numpy()
    np.testing.assert_allclose(script_probs, expected[:123], atol=1e-4)


def test_the_novelty_output_is_dgc_evaluates_evidence(
        runs: dict[str, Path], test_images: tuple[np.ndarray, Path], tmp_path: Path) -> None:
    images = test_images[0][:200]
    out = tmp_path / "novelty.onnx"
    assert main(["export", str(runs["dgc"]), "--format", "onnx", "--novelty",
                 "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "evidence"]
    _, evidence = session.run(None, {"images": images})
    np.testing.assert_allclose(evidence, score_ood(runs["dgc"], images)["evidence"],
                               rtol=1e-5, atol=1e-4)


def test_the_documented_onnxruntime_script_classifies_a_folder(
        runs: dict[str, Path], test_images: tuple[np.ndarray, Path], tmp_path: Path) -> None:
    usage = (ROOT / "docs" / "USAGE.md").read_text()
    section = usage[usage.index("## Exporting a model"):]
    script = re.search(r"```python\n(.*?)```", section, re.S)
    assert script is not None
    assert len(script.group(1).strip().splitlines()) <= 11
    (tmp_path / "classify.py").write_text(script.group(1))
    folder = tmp_path / "images"
    folder.mkdir()
    images = test_images[0][:20]
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(folder / f"{i:02d}.png")
    model = tmp_path / "model.onnx"
    assert main(["export", str(runs["dgc"]), "--format", "onnx", "--out", str(model)]) == 0
    result = subprocess.run([sys.executable, str(tmp_path / "classify.py"), str(model),
                             str(folder)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    expected = predicted(runs["dgc"], folder, tmp_path / "predict.csv").argmax(1)
    assert [line.split()[1] for line in lines] == [str(c) for c in expected]


def test_bad_input_gets_one_clear_error(runs: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs["dgc"] / "config.json", unfinished / "config.json")
    existing = tmp_path / "existing.onnx"
    existing.write_text("mine")
    cases = [
        ([str(unfinished), "--format", "onnx", "--out", str(tmp_path / "a.onnx")],
         "has no best.pt"),
        ([str(runs["dgc"]), "--format", "tflite", "--out", str(tmp_path / "a.tflite")],
         "unknown export format 'tflite'; choose one of onnx, torchscript"),
        ([str(runs["dgc"]), "--format", "onnx", "--out", str(existing)],
         "already exists; pass --overwrite"),
        ([str(runs["ce"]), "--format", "onnx", "--novelty", "--out", str(tmp_path / "b.onnx")],
         "has no generative novelty score"),
        ([str(tmp_path / "nowhere"), "--format", "onnx", "--out", str(tmp_path / "c.onnx")],
         "does not exist"),
    ]
    for arguments, message in cases:
        capsys.readouterr()
        assert main(["export", *arguments]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dgc: error:") and message in err[0], err
    assert existing.read_text() == "mine"
    assert not any(tmp_path.glob("*.onnx.*")) and not (tmp_path / "a.onnx").exists()


def test_dihedral_views_average_the_eight_single_view_predictions(
        runs: dict[str, Path], test_images: tuple[np.ndarray, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    run = load_run(runs["ce-dihedral"])
    images = test_images[0]
    alone = dataclasses.replace(run.cfg.predict, views="image")
    singles = [predict_images(run.model, view.numpy(), run.cfg, alone)
               for view in dihedral_views(torch.from_numpy(images), dims=(1, 2))]
    averaged = predict_images(run.model, images, run.cfg, run.cfg.predict)
    np.testing.assert_allclose(averaged, np.mean(singles, axis=0), atol=1e-6)
    metrics = json.loads((runs["ce-dihedral"] / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(np.mean(averaged.argmax(1) == recorded_data(
        run).y_test))  # the test metrics are the averaged prediction's
    assert main(["evaluate", str(runs["ce-dihedral"]), "--views", "image"]) == 0
    alone_metrics = json.loads((runs["ce-dihedral"] / "eval-image.json").read_text())
    assert alone_metrics["accuracy"] == pytest.approx(np.mean(singles[0].argmax(1) == recorded_data(
        run).y_test))
    capsys.readouterr()
    assert main(["evaluate", str(runs["dgc-dihedral"]), "--decompose", "--views",
                 "dihedral"]) == 2
    assert "--decompose scores each term on the image alone" in capsys.readouterr().err
