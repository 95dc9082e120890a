"""Tests for dgc.train.classifier: losses against hand computations, resampling, the shared network,
and short training runs of every baseline on the offline digits set."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dgc.bench.benchmark import bench_config
from dgc.cli import main
from dgc.config import (
    BASELINE_LOSSES,
    BaselineConfig,
    RunConfig,
    apply_overrides,
    build_config,
    validate,
)
from dgc.core.errors import DGCError
from dgc.core.metrics import acsa
from dgc.data import ImbalancedData
from dgc.methods.family import FAMILIES, build_model
from dgc.methods.registry import METHODS, get_method
from dgc.nn.classifier import Classifier, build_classifier
from dgc.nn.losses import (
    LOSSES,
    BaselineLoss,
    cross_entropy,
    effective_number_weights,
    focal_loss,
    inverse_frequency_weights,
    ldam_loss,
    ldam_margins,
    logit_adjusted,
)
from dgc.nn.model import DGC, count_parameters
from dgc.run.finished import load_run, to_train_data
from dgc.run.train import train_run
from dgc.train.classifier import ClassifierTrainer, balanced_order, smote

CLASSIFIERS = [name for name, m in METHODS.items() if m.family == "classifier"]
LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-0.5, 1.5, 0.0], [1.0, -2.0, 3.0]]
LABELS = [0, 2, 1, 2]


def quiet(_: str) -> None:
    pass


def log_softmax_rows(logits: list[list[float]]) -> list[list[float]]:
    """Plain-Python log softmax, so the expected values do not come from torch."""
    out = []
    for row in logits:
        top = max(row)
        total = math.log(sum(math.exp(v - top) for v in row)) + top
        out.append([v - total for v in row])
    return out


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS), torch.tensor(LABELS)


# -- class weights and margins ----------------------------------------------------------------

def test_inverse_frequency_weights_by_hand() -> None:
    weights = inverse_frequency_weights(torch.tensor([100, 10, 1]))
    inverse = [0.01, 0.1, 1.0]
    expected = [3 * v / sum(inverse) for v in inverse]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert float(weights.mean()) == pytest.approx(1.0)


def test_effective_number_weights_by_hand() -> None:
    weights = effective_number_weights(torch.tensor([100, 10, 1]), beta=0.9)
    raw = [(1 - 0.9) / (1 - 0.9**n) for n in (100, 10, 1)]
    assert weights.tolist() == pytest.approx([3 * r / sum(raw) for r in raw], rel=1e-6)
    assert float(weights.sum()) == pytest.approx(3.0)
    # β = 0 weighs every class alike; β → 1 tends to inverse frequency (Cui et al. 2019)
    assert effective_number_weights(torch.tensor([100, 10, 1]), 0.0).tolist() == [1.0] * 3
    near_one = effective_number_weights(torch.tensor([100, 10, 1]), 1 - 1e-9)
    assert near_one.tolist() == pytest.approx(
        inverse_frequency_weights(torch.tensor([100, 10, 1])).tolist(), rel=1e-5)


def test_ldam_margins_follow_inverse_fourth_root() -> None:
    counts = torch.tensor([4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40])
    margins = ldam_margins(counts, 0.5)
    scaled = margins.double() * counts.double().pow(0.25)
    assert torch.allclose(scaled, scaled[0].expand_as(scaled), rtol=1e-6)
    assert float(margins.max()) == pytest.approx(0.5) and int(margins.argmax()) == 9
    assert ldam_margins(torch.tensor([16, 81, 1]), 0.5).tolist() == pytest.approx(
        [0.25, 0.5 / 3, 0.5])


# -- losses against hand computations on a tiny batch ------------------------------------------

def test_weighted_cross_entropy_by_hand() -> None:
    logits, y = tensors()
    weights = [0.5, 1.0, 2.0]
    logp = log_softmax_rows(LOGITS)
    plain = -sum(logp[i][c] for i, c in enumerate(LABELS)) / 4
    weighted = -sum(weights[c] * logp[i][c] for i, c in enumerate(LABELS)) / 4
    assert float(cross_entropy(logits, y)) == pytest.approx(plain, rel=1e-6)
    assert float(cross_entropy(logits, y, torch.tensor(weights))) == pytest.approx(weighted,
                                                                                 rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_loss_by_hand(gamma: float) -> None:
    logits, y = tensors()
    logp = log_softmax_rows(LOGITS)
    terms = [-(1 - math.exp(logp[i][c])) ** gamma * logp[i][c] for i, c in enumerate(LABELS)]
    assert float(focal_loss(logits, y, gamma)) == pytest.approx(sum(terms) / 4, rel=1e-6)
    weights = [2.0, 1.0, 0.25]
    weighted = sum(weights[c] * t for c, t in zip(LABELS, terms, strict=True)) / 4
    assert float(focal_loss(logits, y, gamma, torch.tensor(weights))) == pytest.approx(
        weighted, rel=1e-6)


def test_ldam_loss_by_hand() -> None:
    logits, y = tensors()
    margins, scale = [0.25, 0.5 / 3, 0.5], 30.0
    shifted = [[v - (scale * margins[c] if j == c else 0.0) for j, v in enumerate(row)]
               for row, c in zip(LOGITS, LABELS, strict=True)]
    logp = log_softmax_rows(shifted)
    expected = -sum(logp[i][c] for i, c in enumerate(LABELS)) / 4
    assert float(ldam_loss(logits, y, torch.tensor(margins), scale)) == pytest.approx(
        expected, rel=1e-6)


def test_logit_adjusted_loss_by_hand() -> None:
    logits, y = tensors()
    prior = [0.7, 0.2, 0.1]
    tau = 1.0
    adjusted = [[v + tau * math.log(p) for v, p in zip(row, prior, strict=True)]
                for row in LOGITS]
    logp = log_softmax_rows(adjusted)
    expected = -sum(logp[i][c] for i, c in enumerate(LABELS)) / 4
    log_prior = torch.log(torch.tensor(prior))
    assert float(cross_entropy(logit_adjusted(logits, log_prior, tau), y)) == pytest.approx(
        expected, rel=1e-6)


def test_baseline_loss_defers_reweighting() -> None:
    """LDAM-DRW: no weights before 80 % of the epochs, effective-number weights after."""
    counts = torch.tensor([300, 30, 3])
    settings = BaselineConfig(loss="ldam", weighting="effective", weights_from=0.8)
    loss = BaselineLoss(settings, counts, epochs=10)
    assert [loss.weights_at(e) is None for e in range(10)] == [True] * 8 + [False] * 2
    assert torch.equal(loss.weights_at(8), effective_number_weights(counts, 0.9999))
    logits, y = tensors()
    margins = ldam_margins(counts, 0.5)
    assert float(loss(logits, y, 7)) == pytest.approx(float(ldam_loss(logits, y, margins, 30.0)))
    assert float(loss(logits, y, 8)) == pytest.approx(
        float(ldam_loss(logits, y, margins, 30.0, effective_number_weights(counts, 0.9999))))
    always = BaselineLoss(BaselineConfig(weighting="inverse"), counts, epochs=10)
    assert always.weights_at(0) is not None


def test_baseline_loss_dispatch_matches_the_functions() -> None:
    counts = torch.tensor([300, 30, 3])
    logits, y = tensors()
    log_prior = torch.log(counts.double() / counts.sum()).float()
    cases = {
        ("ce", 0.0): cross_entropy(logits, y),
        ("focal", 0.0): focal_loss(logits, y, 2.0),
        ("ce", 1.0): cross_entropy(logit_adjusted(logits, log_prior, 1.0), y),
        ("focal", 0.5): focal_loss(logit_adjusted(logits, log_prior, 0.5), y, 2.0),
    }
    for (name, tau), expected in cases.items():
        loss = BaselineLoss(BaselineConfig(loss=name), counts, epochs=5, tau=tau)
        assert float(loss(logits, y, 0)) == pytest.approx(float(expected)), name


def test_loss_registry_names_the_configurable_losses() -> None:
    """config validates `baseline.loss` against names it keeps free of torch: the registry's."""
    assert tuple(LOSSES) == BASELINE_LOSSES


# -- resampling -------------------------------------------------------------------------------

def test_balanced_order_draws_n_rows_with_equal_classes() -> None:
    y = torch.tensor([0] * 12 + [1] * 5 + [2] * 2)
    first = balanced_order(y, len(y), torch.Generator().manual_seed(3))
    assert len(first) == len(y)
    counts = torch.bincount(y[first]).tolist()
    assert sorted(counts) == [6, 6, 7]
    # a small class repeats only after all its rows were drawn; a large one has no repeats
    assert set(first[y[first] == 2].tolist()) == {17, 18}
    assert set(first[y[first] == 1].tolist()) == set(range(12, 17))
    majority = first[y[first] == 0]
    assert len(set(majority.tolist())) == len(majority)
    again = balanced_order(y, len(y), torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    generator = torch.Generator().manual_seed(3)
    balanced_order(y, len(y), generator)
    assert not torch.equal(first, balanced_order(y, len(y), generator))  # redrawn every epoch


def test_balanced_order_handles_missing_classes_and_exact_quotas() -> None:
    y = torch.tensor([0] * 9 + [2] * 3)
    order = balanced_order(y, 12, torch.Generator().manual_seed(0))
    assert torch.bincount(y[order], minlength=3).tolist() == [6, 0, 6]


def test_smote_balances_with_in_range_synthetic_images() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((26, 1, 4, 4), dtype=np.float32))
    y = torch.tensor([0] * 20 + [1] * 4 + [2] * 2)
    new_x, new_y = smote(x, y, k=5, seed=1)
    assert torch.bincount(new_y).tolist() == [20, 20, 20]
    assert new_x.shape == (60, 1, 4, 4) and new_x.dtype == torch.float32
    assert torch.equal(new_x[:26], x) and torch.equal(new_y[:26], y)
    assert float(new_x.min()) >= 0.0 and float(new_x.max()) <= 1.0
    # class 2 has two images, so each synthetic one lies on the segment between them
    a, b = x[24].flatten(), x[25].flatten()
    for image in new_x[new_y == 2][2:]:
        t = torch.dot(image.flatten() - a, b - a) / torch.dot(b - a, b - a)
        assert torch.allclose(image.flatten(), a + t * (b - a), atol=1e-5)
    again_x, _ = smote(x, y, k=5, seed=1)
    assert torch.equal(new_x, again_x)
    with pytest.raises(DGCError, match="at least two training images"):
        smote(x[:21], y[:21], k=5, seed=1)


# -- the network ------------------------------------------------------------------------------

def test_classifier_shares_the_encoder_trunk() -> None:
    cfg = build_config("digits", "cpu")
    dgc_model = DGC((8, 8, 1), 10, cfg.model)
    classifier = Classifier((8, 8, 1), 10, cfg.model)
    shapes = {k: v.shape for k, v in classifier.trunk.state_dict().items()}
    assert shapes == {k: v.shape for k, v in dgc_model.encoder.trunk.state_dict().items()}
    logits = classifier(torch.rand(5, 1, 8, 8))
    assert logits.shape == (5, 10)
    ldam = build_classifier(get_method("ldam-drw").configure(cfg), (8, 8, 1), 10)
    cosine = ldam(torch.rand(5, 1, 8, 8))
    assert float(cosine.detach().abs().max()) <= 30.0 + 1e-4  # s · cos
    assert count_parameters(ldam) == count_parameters(classifier) - 10  # no bias


# -- configuration ----------------------------------------------------------------------------

def test_methods_registry_and_configuration() -> None:
    assert {m.family for m in METHODS.values()} <= set(FAMILIES)
    assert set(CLASSIFIERS) == {"ce", "reweight", "cb", "focal", "ldam-drw", "logit-adjust",
                                "ros", "smote"}
    cfg = get_method("ldam-drw").configure(build_config("fashion", "cpu"))
    assert (cfg.train.lr, cfg.train.beta1, cfg.train.val_fraction) == (1e-3, 0.9, 0.1)
    b = cfg.baseline
    assert (b.loss, b.weighting, b.weights_from, b.ldam_max_margin, b.ldam_scale,
            b.cb_beta) == ("ldam", "effective", 0.8, 0.5, 30.0, 0.9999)
    assert get_method("focal").configure(build_config("fashion", "cpu")).baseline.focal_gamma == 2
    assert apply_overrides(cfg, ["baseline.focal_gamma=1.5"]).baseline.focal_gamma == 1.5
    with pytest.raises(DGCError, match="baseline.loss must be one of"):
        validate(apply_overrides(cfg, ['baseline.loss="hinge"']))
    with pytest.raises(DGCError, match="weights_from"):
        validate(apply_overrides(cfg, ["baseline.weights_from=1.5"]))


def test_old_config_without_baseline_section_loads() -> None:
    cfg = build_config("digits", "cpu")
    old = cfg.to_dict()
    del old["baseline"]
    assert RunConfig.from_dict(json.loads(json.dumps(old))) == cfg


# -- training ---------------------------------------------------------------------------------

def short_config(out: Path, method: str, *overrides: str, epochs: int = 10) -> RunConfig:
    """The benchmark's configuration for digits without the recipe, a few epochs."""
    return bench_config("digits", method, 1, out, recipe=False,
                        overrides=[f"train.epochs={epochs}", *overrides])


@pytest.mark.parametrize("method", CLASSIFIERS)
def test_each_baseline_beats_the_majority_class(method: str, tmp_path: Path) -> None:
    metrics = train_run(short_config(tmp_path, method), progress=False, log=quiet)
    # predicting the majority class everywhere gives ACSA 0.1 and F_macro ≈ 0.018
    assert metrics["acsa"] > 0.5, metrics["acsa"]
    assert metrics["f_macro"] > 0.4
    assert 0.0 <= metrics["ece"] <= 1.0


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, dict[str, Any]]:
    cfg = short_config(tmp_path_factory.mktemp("ce"), "ce", epochs=3)
    return cfg, train_run(cfg, progress=False, log=quiet)


def test_classifier_run_records_split_and_size(ce_run: tuple[RunConfig, dict[str, Any]],
                                               digits_data: ImbalancedData) -> None:
    cfg, metrics = ce_run
    config = json.loads((Path(cfg.out) / "config.json").read_text())
    assert config["split_sha256"] == digits_data.split_sha256
    run = load_run(cfg.out)
    assert isinstance(run.model, Classifier) and not run.model.training
    assert run.family.generator(run.model) is None  # a classifier generates nothing
    with pytest.raises(DGCError, match="holds a ce classifier, which has no encoder or decoder"):
        _ = run.generator
    assert config["n_params"] == count_parameters(run.model)
    assert config["baseline"]["loss"] == "ce" and config["method"] == "ce"
    history = json.loads((Path(cfg.out) / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3]
    assert all("val" in r and math.isfinite(r["loss"]) for r in history["epochs"])
    validation = history["validation"]  # each validation image's prediction, every epoch
    labels = np.asarray(validation["labels"])
    assert validation["epochs"] == [1, 2, 3] and len(labels) == len(validation["predicted"][0])
    assert [acsa(labels, np.asarray(p)) for p in validation["predicted"]] == pytest.approx(
        [r["val"]["acsa"] for r in history["epochs"]])
    assert "ece" in metrics


def test_classifier_run_predicts_and_refuses_evaluate(
        ce_run: tuple[RunConfig, dict[str, Any]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = ce_run
    images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    assert main(["predict", cfg.out, "--input", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 6
    probs = np.array([[float(v) for v in row.split(",")[2:]] for row in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert main(["evaluate", cfg.out]) == 2
    assert "baseline run" in capsys.readouterr().err


def test_classifier_resume_continues_exactly(tmp_path: Path) -> None:
    def config(out: str, epochs: int) -> RunConfig:
        return short_config(tmp_path / out, "ros", 'train.schedule="constant"', epochs=epochs)

    straight = train_run(config("a", 3), progress=False, log=quiet)
    train_run(config("b", 2), progress=False, log=quiet)
    resumed = train_run(config("b", 3), resume=True, progress=False, log=quiet)
    drop = ("seconds_train", "seconds_predict")
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in straight.items() if k not in drop}


def test_smote_trainer_grows_only_the_training_split(digits_data: ImbalancedData,
                                                      tmp_path: Path) -> None:
    cfg = short_config(tmp_path, "smote", epochs=1)
    data = to_train_data(digits_data, cfg)
    logs: list[str] = []
    trainer = ClassifierTrainer(build_model(cfg, (8, 8, 1), 10), cfg, data, log=logs.append)
    counts = torch.bincount(trainer.data.y)
    assert counts.tolist() == [int(torch.bincount(data.y).max())] * 10
    assert torch.equal(trainer.data.x_val, data.x_val)
    assert torch.equal(trainer.data.train_counts, data.train_counts)
    assert any("SMOTE" in line for line in logs)
    assert len(trainer.epoch_order()) == len(data.y)  # same steps per epoch as every method


def test_logit_adjustment_is_one_setting_for_every_method(
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = get_method("logit-adjust").configure(build_config("digits", "cpu"))
    assert (cfg.baseline.loss, cfg.train.logit_adjust_tau) == ("ce", 1.0)
    with pytest.raises(DGCError, match=r"baseline.logit_tau is now train.logit_adjust_tau"):
        apply_overrides(cfg, ["baseline.logit_tau=0.5"])
    assert main(["train", "--exp", "digits", "--set", "baseline.logit_tau=1"]) == 2
    assert "set that instead" in capsys.readouterr().err
    # a config.json written before: the loss "logit-adjust" with its own tau reads as the same run
    old = cfg.to_dict()
    old["train"]["logit_adjust_tau"] = 0.0
    old["baseline"].update(loss="logit-adjust", logit_tau=0.5)
    assert RunConfig.from_dict(old) == dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, logit_adjust_tau=0.5))
