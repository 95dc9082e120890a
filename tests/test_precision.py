"""Tests for the GPU path and bfloat16: `--device cuda` and tools/gpu_check.sh stop clearly
without CUDA, and the bfloat16 code paths run on the CPU."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dgc.cli import main
from dgc.config import RunConfig, apply_overrides, validate
from dgc.core import precision
from dgc.core.errors import DGCWarning
from dgc.data import ImbalancedData
from dgc.methods.family import build_model
from dgc.methods.registry import get_method
from dgc.nn.classifier import classifier_proba
from dgc.nn.prediction import class_scores
from dgc.run.finished import to_train_data
from dgc.run.predict import predict_images
from dgc.train.classifier import ClassifierTrainer
from dgc.train.dgc import Trainer

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusals")


def quiet(_: str) -> None:
    pass


@no_cuda
def test_cuda_is_refused_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--exp", "digits", "--epochs", "1", "--out", str(out),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err
    assert not out.exists()


@no_cuda
def test_gpu_check_script_stops_clearly_without_cuda(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "sees no CUDA device" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing was generated or trained


def test_bf16_runs_on_the_cpu(digits_config: Callable[..., RunConfig], tmp_path: Path,
                             digits_data: ImbalancedData) -> None:
    """--bf16 is a CPU setting too: it validates, and predicts close to float32 but not equal."""
    cfg = digits_config(tmp_path, "train.bf16=true", "predict.bf16=true")
    validate(cfg)
    model = build_model(cfg, digits_data.x_train.shape[1:], 10).eval()
    half = predict_images(model, digits_data.x_test, cfg, cfg.predict)
    full = predict_images(model, digits_data.x_test, cfg,
                          dataclasses.replace(cfg.predict, bf16=False))
    assert half.dtype == full.dtype and not np.array_equal(half, full)
    assert np.abs(half - full).max() < 0.05


@pytest.mark.parametrize("method", ["dgc-faithful", "ce"])
def test_bf16_training_and_prediction_run_under_autocast(
        method: str, digits_config: Callable[..., RunConfig], tmp_path: Path,
        digits_data: ImbalancedData) -> None:
    cfg = get_method(method).configure(digits_config(tmp_path, method=method))
    cfg = apply_overrides(cfg, ["train.epochs=1", "train.pretrain_steps=2", "train.pretrain_tol=0",
                                "train.val_fraction=0.1", "train.bf16=true", "predict.bf16=true"])
    model = build_model(cfg, digits_data.x_train.shape[1:], 10)
    trainer_type = ClassifierTrainer if method == "ce" else Trainer
    trainer = trainer_type(model, cfg, to_train_data(digits_data, cfg), log=quiet)
    record = trainer.fit()["epochs"][0]
    assert all(np.isfinite(v) for k, v in record.items() if isinstance(v, float))
    assert "val" in record
    assert all(p.dtype == torch.float32 for p in model.parameters())

    x = trainer.data.x_val
    if method == "ce":
        probs = classifier_proba(model, digits_data.x_test, bf16=True)
        assert probs.dtype == np.float64 and np.allclose(probs.sum(1), 1.0)
        return
    exact = dataclasses.replace(cfg.predict, samples=2, top_k=None, importance=True)
    half = class_scores(model, x, exact, seed=1)
    full = class_scores(model, x, dataclasses.replace(exact, bf16=False), seed=1)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert not torch.equal(half, full)  # autocast did run in bfloat16
    assert torch.allclose(half, full, rtol=0.05, atol=1.0)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU's flags say whether autocast is native; where it is emulated, the user is told."""
    assert precision.bf16_in_cpuinfo("model name\t: Xeon\nflags\t\t: fpu avx2 avx512f\n") is False
    assert precision.bf16_in_cpuinfo("model name\t: EPYC\nflags\t: avx512f avx512_bf16\n") is True
    assert precision.bf16_in_cpuinfo("Features\t: fp asimd bf16\n") is True
    assert precision.bf16_in_cpuinfo("model name\t: unknown\n") is None
    for native, warns in ((False, True), (True, False), (None, False)):
        monkeypatch.setattr(precision, "native_bf16", lambda native=native: native)
        precision.warn_emulated_bf16.cache_clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # even so, once per process: not every step
            for _ in range(3):
                with precision.autocast(True, "cpu"):
                    assert torch.get_autocast_dtype("cpu") == torch.bfloat16
            precision.autocast(False, "cpu")
        assert [w.category for w in caught] == ([DGCWarning] if warns else [])


@pytest.mark.parametrize("native", [False, True])
def test_the_command_line_says_once_when_bf16_is_emulated(
        native: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One `dgc: warning:` line for the whole command (training and prediction), only where
    bfloat16 is emulated."""
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    precision.warn_emulated_bf16.cache_clear()
    assert main(["train", "--exp", "digits", "--epochs", "1", "--bf16", "--quiet", "--no-report",
                 "--threads", "1", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.count("dgc: warning: bfloat16 autocast on a CPU without") == (0 if native else 1)
