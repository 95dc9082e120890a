"""dgc.estimators.sampler: DGCSampler in an imbalanced-learn pipeline, and baselines trained on
the images of a DGC run (`baseline.resample=dgc`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from imblearn.pipeline import make_pipeline
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dgc import DGCClassifier
from dgc.bench.benchmark import bench_config
from dgc.cli import main
from dgc.config import validate
from dgc.core.errors import DGCError
from dgc.estimators.sampler import DGCSampler
from dgc.run.train import train_run

ROOT = Path(__file__).resolve().parents[1]


def quiet(_: str) -> None:
    pass


def imbalanced_digits(images: bool) -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    keep = np.concatenate([np.flatnonzero(bunch.target == c)[:n]
                           for c, n in zip(range(3), (90, 30, 8), strict=True)])
    x = bunch.images[keep] if images else bunch.data[keep]
    return (np.rint(x * 255 / 16).astype(np.uint8) if images else x), bunch.target[keep]


def test_sampler_balances_tables_inside_a_pipeline() -> None:
    x, y = imbalanced_digits(images=False)
    sampler = DGCSampler(DGCClassifier(epochs=5), random_state=0)
    x_res, y_res = sampler.fit_resample(x, y)
    assert np.bincount(y_res).tolist() == [90, 90, 90]
    assert np.array_equal(x_res[:len(x)], x) and np.array_equal(y_res[:len(y)], y)
    new = x_res[len(x):]
    assert np.isfinite(new).all() and not (new[:, None] == x[None]).all(-1).any()  # all new
    again = DGCSampler(DGCClassifier(epochs=5), random_state=0).fit_resample(x, y)
    assert np.array_equal(again[0], x_res)  # seeded: the same examples
    pipeline = make_pipeline(DGCSampler(DGCClassifier(epochs=5), random_state=0),
                             StandardScaler(), LogisticRegression()).fit(x, y)
    assert pipeline.score(x, y) > 0.8


def test_sampler_keeps_uint8_images() -> None:
    x, y = imbalanced_digits(images=True)
    x_res, y_res = DGCSampler(DGCClassifier(epochs=3, width=4, cls_weight=None),
                              random_state=1).fit_resample(x, y)
    assert x_res.dtype == np.uint8 and x_res.shape == (270, 8, 8)
    assert np.bincount(y_res).tolist() == [90, 90, 90]


def test_a_baseline_trains_on_a_dgc_runs_images(tmp_path: Path) -> None:
    fast = ["train.epochs=2", "train.pretrain_batch=200", "predict.samples=1"]
    dgc = bench_config("digits", "dgc", 1, tmp_path, overrides=fast)
    train_run(dgc, progress=False, log=quiet)
    generator = f"baseline.generator={tmp_path}/dgc-s{{seed}}"
    cfg = bench_config("digits", "logit-adjust", 1, tmp_path / "la",
                       overrides=[*fast, "baseline.resample=dgc", generator])
    messages: list[str] = []
    metrics = train_run(cfg, progress=False, log=messages.append)
    grew = [m for m in messages if "grew the training split" in m]
    # 10 classes × 108 images, the largest class's count after the 10 % validation split
    assert grew == ["dgc: the DGC generator grew the training split from 390 to 1080 images"]
    assert 0 <= metrics["acsa"] <= 1
    other_seed = dataclasses.replace(cfg, seed=2, out=str(tmp_path / "la2"), baseline=(
        dataclasses.replace(cfg.baseline, generator=str(tmp_path / "dgc-s1"))))
    with pytest.raises(DGCError, match="trained on another split"):
        train_run(other_seed, progress=False, log=quiet)
    classifier = dataclasses.replace(cfg, out=str(tmp_path / "la3"), baseline=(
        dataclasses.replace(cfg.baseline, generator=str(cfg.out_dir))))
    with pytest.raises(DGCError, match="holds a logit-adjust classifier, which has no encoder "
                                       "or decoder; give a DGC run as baseline.generator"):
        train_run(classifier, progress=False, log=quiet)
    with pytest.raises(DGCError, match="go together"):
        validate(dataclasses.replace(cfg, baseline=dataclasses.replace(cfg.baseline,
                                                                       generator=None)))


def test_evaluate_oversampling_compares_generated_with_ros(tmp_path: Path) -> None:
    """`dgc bench --set baseline.resample=dgc` with a {seed} generator, then
    `dgc evaluate GENERATED --oversampling BENCH`."""
    bench, generated = tmp_path / "bench", tmp_path / "generated"
    common = ["--exp", "digits", "--seeds", "1-2", "--epochs", "1", "--set",
              "predict.samples=1", "--set", "train.pretrain_batch=200", "--threads", "1",
              "--quiet"]
    assert main(["bench", "--methods", "dgc,ros", *common, "--out", str(bench)]) == 0
    assert main(["bench", "--methods", "ce", *common, "--set", "baseline.resample=dgc",
                 "--set", f"baseline.generator={bench}/dgc-s{{seed}}",
                 "--out", str(generated)]) == 0
    assert main(["evaluate", str(generated), "--oversampling", str(bench)]) == 0
    text = (generated / "oversampling.md").read_text()
    assert "| `ce+dgc` | 2 |" in text and "| `ros` | 2 |" in text and "`dgc` |" not in text
    tests = json.loads((generated / "oversampling.json").read_text())["sections"]
    assert list(tests["Test metrics"]["tests"]) == ["ce+dgc vs ros"]
    assert tests["Test metrics"]["tests"]["ce+dgc vs ros"]["acsa"]["n"] == 2
