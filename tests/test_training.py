"""Tests for dgc.train and dgc.run.train: schedules, pre-training, the loop, run files, resume.

Every run is a few epochs of the small offline digits set on one thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_bad_input import snapshot

import dgc.nn.losses
import dgc.run.predict
import dgc.train.dgc
from dgc.bench.benchmark import trained_on
from dgc.config import RunConfig, apply_overrides, build_config, validate
from dgc.core.errors import DGCError
from dgc.core.precision import native_bf16
from dgc.data import ImbalancedData
from dgc.data.files import write_cache
from dgc.methods.family import build_model
from dgc.methods.registry import get_method
from dgc.reporting.report import evaluated_epoch
from dgc.run.finished import load_run, to_train_data
from dgc.run.folder import RUN_FACTS
from dgc.run.predict import evaluate_run, prediction_key
from dgc.run.train import cpu_model, same_environment, train_run
from dgc.train.dgc import Trainer
from dgc.train.loop import TrainData, learning_rate

METRIC_KEYS = {"acsa", "f_macro", "g_macro", "r_mi", "p_ma", "accuracy", "precision_macro",
               "recall_macro", "specificity_macro", "f_micro", "g_micro", "per_class",
               "ece", "seconds_train", "seconds_predict"}
SECONDS = ("seconds_train", "seconds_predict")


def quiet(_: str) -> None:
    pass


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def without_seconds(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in SECONDS}


def epoch_records(history: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history["epochs"]]


# -- learning-rate schedules ------------------------------------------------------------------

def schedule(name: str, lr: float = 1.0, epochs: int = 60) -> RunConfig:
    return apply_overrides(build_config("digits", "cpu"),
                           [f'train.schedule="{name}"', f"train.lr={lr}", f"train.epochs={epochs}"])


def test_manual_schedule() -> None:
    cfg = schedule("manual", lr=2e-3)
    for epoch in (0, 1, 15.5, 29, 29.99):
        assert learning_rate(cfg, epoch) == pytest.approx(2e-3)
    for epoch in (30, 30.5, 40, 49.99):
        assert learning_rate(cfg, epoch) == pytest.approx(1e-3)
    for epoch in (50, 55, 100):
        assert learning_rate(cfg, epoch) == pytest.approx(2e-4)


def test_manual_smooth_schedule() -> None:
    cfg = schedule("manual_smooth", lr=5e-5, epochs=10)
    rates = [learning_rate(cfg, e) for e in range(11)]
    assert rates[0] == pytest.approx(5e-5)
    assert rates[10] == pytest.approx(5e-7)  # 100× lower after the E epochs
    for before, after in zip(rates[:-1], rates[1:], strict=True):
        assert after / before == pytest.approx(100 ** (-1 / 10))
    assert learning_rate(cfg, 3.7) == learning_rate(cfg, 3)  # changes once per epoch


def test_released_schedules_recompute_their_decay_every_epoch() -> None:
    """The authors' code: `manual` is halved in epoch 30 alone, `manual_smooth` never falls."""
    cfg = schedule("manual_released", lr=1e-5, epochs=50)
    rates = {e: learning_rate(cfg, e) for e in (0, 29, 29.9, 30, 30.5, 31, 49, 49.9)}
    assert rates.pop(30) == rates.pop(30.5) == pytest.approx(5e-6)
    assert all(rate == pytest.approx(1e-5) for rate in rates.values())
    smooth = schedule("manual_smooth_released", lr=5e-5, epochs=30)
    for epoch in (0, 1, 15.5, 29):
        assert learning_rate(smooth, epoch) == pytest.approx(5e-5 * 100 ** (-1 / 30))
    assert learning_rate(smooth, 0) == pytest.approx(4.3e-5, rel=0.01)


def test_cosine_and_constant_schedules() -> None:
    cfg = schedule("cosine", lr=1e-3, epochs=20)
    assert learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 10) == pytest.approx(5e-4)
    assert learning_rate(cfg, 20) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(cfg, 5) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    rates = [learning_rate(cfg, e / 4) for e in range(81)]
    assert all(b < a for a, b in zip(rates[:-1], rates[1:], strict=True))
    constant = schedule("constant", lr=3e-4, epochs=5)
    assert {learning_rate(constant, e) for e in (0, 2.5, 5, 60)} == {3e-4}


# -- the Trainer on a small slice of digits ---------------------------------------------------

def small_trainer(cfg: RunConfig, data: ImbalancedData, n: int = 120) -> Trainer:
    full = to_train_data(data, cfg)
    part = TrainData(x=full.x[:n], y=full.y[:n], train_counts=full.train_counts,
                     x_val=full.x_val, y_val=full.y_val, hflip=False)
    return Trainer(build_model(cfg, data.x_train.shape[1:], 10), cfg, part, log=quiet)


def encoder_weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.encoder.parameters()]


def test_pretraining_stops_once_below_tol(digits_config: Callable[..., RunConfig],
                                          digits_data: ImbalancedData, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = digits_config(tmp_path, "train.pretrain_tol=1e9", "train.pretrain_batch=50")
    trainer = small_trainer(cfg, digits_data)
    before = encoder_weights(trainer)
    assert trainer.pretrain()["steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, encoder_weights(trainer), strict=True))

    cfg = digits_config(tmp_path, "train.pretrain_tol=-1", "train.pretrain_steps=3",
                        "train.pretrain_batch=50")
    trainer = small_trainer(cfg, digits_data)
    before = encoder_weights(trainer)
    result = trainer.pretrain()
    assert result["steps"] == 3 and math.isfinite(result["loss"])
    assert not all(torch.equal(a, b) for a, b in zip(before, encoder_weights(trainer),
                                                     strict=True))

    # a loss that falls 1.0, 0.5, 0.05: two steps are taken, then it stops below tol = 0.1
    values = iter([1.0, 0.5, 0.05, 0.01, 0.01])
    real = dgc.train.dgc.moment_matching_loss
    monkeypatch.setattr(dgc.train.dgc, "moment_matching_loss",
                        lambda z, weights: real(z, weights) * 0 + next(values))
    cfg = digits_config(tmp_path, "train.pretrain_tol=0.1", "train.pretrain_steps=200",
                        "train.pretrain_batch=50")
    result = small_trainer(cfg, digits_data).pretrain()
    assert result["steps"] == 2 and result["loss"] == pytest.approx(0.05)


def test_fit_follows_the_schedule(digits_config: Callable[..., RunConfig],
                                  digits_data: ImbalancedData, tmp_path: Path) -> None:
    cfg = digits_config(tmp_path, 'train.schedule="manual_smooth"', "train.epochs=2",
                        "train.lr=0.001", "train.pretrain_steps=0")
    trainer = small_trainer(cfg, digits_data)
    history = trainer.fit()
    assert history["pretrain"]["steps"] == 0
    assert [r["lr"] for r in history["epochs"]] == pytest.approx([1e-3, 1e-3 * 100 ** -0.5])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert trainer.epoch == 2 and trainer.step == 2 * math.ceil(120 / 50)
    for record in history["epochs"]:
        for key in ("recon", "mmd", "cls", "loss", "lvo", "head_cls"):
            assert math.isfinite(record[key]), key


def test_restore_best_loads_the_kept_weights(digits_config: Callable[..., RunConfig],
                                             digits_data: ImbalancedData, tmp_path: Path) -> None:
    cfg = digits_config(tmp_path, "train.epochs=2", "train.pretrain_steps=0")
    trainer = small_trainer(cfg, digits_data)
    with pytest.raises(DGCError, match="has not finished an epoch"):
        trainer.restore_best()
    trainer.fit()
    assert trainer.best_weights is not None
    kept = {k: v.clone() for k, v in trainer.best_weights.items()}
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(1.0)
    model = trainer.restore_best()
    assert model is trainer.model
    assert all(torch.equal(value, model.state_dict()[k]) for k, value in kept.items())


@pytest.mark.parametrize(("keep", "kept"), [("best", [1, 1, 3, 3]), ("last", [1, 2, 3, 4])])
def test_the_kept_epoch_follows_train_keep(digits_config: Callable[..., RunConfig],
                                           digits_data: ImbalancedData, tmp_path: Path,
                                           keep: str, kept: list[int]) -> None:
    """With a validation split, "best" keeps the best ACSA's epoch (an epoch not validated
    changes nothing), "last" every epoch's."""
    cfg = digits_config(tmp_path, f'train.keep="{keep}"', "train.val_fraction=0.2")
    trainer = small_trainer(cfg, digits_data)
    assert len(trainer.data.y_val)
    epochs = []
    for epoch, record in enumerate([{"val": {"acsa": 0.5}}, {"val": {"acsa": 0.4}},
                                    {"val": {"acsa": 0.6}}, {}], start=1):
        trainer.epoch = epoch
        trainer.keep_best(record)
        epochs.append(trainer.best["epoch"])
    assert epochs == kept


def test_a_run_that_keeps_its_last_epoch_says_so(digits_config: Callable[..., RunConfig],
                                                 tmp_path: Path) -> None:
    cfg = digits_config(tmp_path / "run", 'train.keep="last"', "train.val_fraction=0.2",
                        "train.epochs=2", "train.pretrain_steps=0")
    train_run(cfg, progress=False, log=quiet)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == 2
    assert evaluated_epoch(tmp_path / "run", "last") == (
        f"epoch 2 (the last, as train.keep asks, validation ACSA "
        f"{history['epochs'][-1]['val']['acsa']:.4f})")
    with pytest.raises(DGCError, match="train.keep must be one of best, last"):
        validate(apply_overrides(cfg, ['train.keep="final"']))


@pytest.mark.parametrize(("target", "term"), [("reconstruction_loss", "reconstruction"),
                                              ("imq_mmd", "MMD")])
def test_non_finite_loss_raises(digits_config: Callable[..., RunConfig],
                                digits_data: ImbalancedData, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, target: str, term: str) -> None:
    real = getattr(dgc.train.dgc, target)
    monkeypatch.setattr(dgc.train.dgc, target,
                        lambda a, b, weights: real(a, b, weights) * math.nan)
    trainer = small_trainer(digits_config(tmp_path, "train.pretrain_steps=0"), digits_data)
    with pytest.raises(DGCError, match=rf"the {term} loss became nan at epoch 1"):
        trainer.fit()


def test_non_finite_pretraining_head_and_baseline_losses_raise(
        digits_config: Callable[..., RunConfig], digits_data: ImbalancedData, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The other three terms RELIABILITY.md lists: pre-training, the oversampled head step
    (the second cross-entropy of a step without LVO) and a baseline's loss."""
    real_moments = dgc.train.dgc.moment_matching_loss
    monkeypatch.setattr(dgc.train.dgc, "moment_matching_loss",
                        lambda z, weights: real_moments(z, weights) * math.nan)
    trainer = small_trainer(digits_config(tmp_path / "a"), digits_data)
    with pytest.raises(DGCError, match="the pre-training moment-matching loss became nan"):
        trainer.fit()
    monkeypatch.undo()

    calls = {"n": 0}
    real_cls = dgc.train.dgc.classification_loss

    def second_is_nan(*args: Any) -> torch.Tensor:
        calls["n"] += 1
        return real_cls(*args) * (math.nan if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(dgc.train.dgc, "classification_loss", second_is_nan)
    trainer = small_trainer(digits_config(tmp_path / "b", "train.pretrain_steps=0",
                                          "train.lvo=false"), digits_data)
    with pytest.raises(DGCError, match="the oversampled cross-entropy loss became nan at "
                                       "epoch 1, step 1"):
        trainer.fit()
    monkeypatch.undo()

    monkeypatch.setattr(dgc.nn.losses.BaselineLoss, "__call__",
                        lambda self, logits, y, epoch: logits.sum() * math.nan)
    ce = dataclasses.replace(get_method("ce").configure(digits_config(tmp_path / "c")),
                             method="ce")
    with pytest.raises(DGCError, match="the ce training loss became nan at epoch 1, step 1"):
        train_run(ce, progress=False, log=quiet)
    assert not (tmp_path / "c" / "metrics.json").exists()


def test_non_finite_loss_keeps_last_good_checkpoint(digits_config: Callable[..., RunConfig],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = dgc.train.dgc.reconstruction_loss

    def failing_later(x: torch.Tensor, recon: torch.Tensor, weights: Any) -> torch.Tensor:
        calls["n"] += 1  # two calls a step (LVO and joint); digits has 9 batches an epoch
        return real(x, recon, weights) * (math.inf if calls["n"] > 25 else 1.0)

    monkeypatch.setattr(dgc.train.dgc, "reconstruction_loss", failing_later)
    cfg = digits_config(tmp_path / "run", "train.pretrain_steps=0")
    with pytest.raises(DGCError, match=r"reconstruction loss became inf at epoch 2"):
        train_run(cfg, progress=False, log=quiet)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


# -- whole runs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory,
            digits_config: Callable[..., RunConfig]) -> tuple[RunConfig, dict[str, Any]]:
    """Ten epochs of the cpu preset at lr 3e-3: enough to learn digits well."""
    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = digits_config(out, "train.epochs=10", "train.lr=0.003")
    return cfg, train_run(cfg, progress=False, log=quiet)


def test_short_training_beats_majority_class(trained: tuple[RunConfig, dict[str, Any]]) -> None:
    _, metrics = trained
    # predicting the majority class everywhere gives ACSA 1/10 and F_macro ≈ 0.018
    assert metrics["acsa"] > 0.5
    assert metrics["f_macro"] > 0.4
    assert metrics["r_mi"] > 0.0  # the 6-image class is not ignored


def test_cpu_model_reads_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    monkeypatch.setattr(platform, "processor", lambda: "")
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # no model name (e.g. ARM)
    assert cpu_model(cpuinfo) is None
    assert cpu_model(tmp_path / "missing") is None


def test_run_directory_files(trained: tuple[RunConfig, dict[str, Any]],
                             digits_data: ImbalancedData) -> None:
    cfg, metrics = trained
    out = Path(cfg.out)
    config = read(out / "config.json")
    assert config["split_sha256"] == digits_data.split_sha256
    assert config["test_sha256"] == digits_data.test_sha256
    env = config["environment"]
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__
    assert env["processor"] == cpu_model()  # the CPU's name, where Linux gives one
    assert env["bf16_instructions"] == native_bf16()  # whether --bf16 can pay here
    assert config["data"]["train_counts"] == digits_data.train_counts.tolist()
    assert config["data"]["image_shape"] == [8, 8, 1]
    settings = {k: v for k, v in config.items() if k not in RUN_FACTS}
    assert RunConfig.from_dict(settings) == cfg

    saved = read(out / "metrics.json")
    assert set(saved) == METRIC_KEYS
    assert saved == json.loads(json.dumps(metrics))
    assert len(saved["per_class"]) == 10
    assert saved["seconds_train"] > 0 and saved["seconds_predict"] >= 0

    history = read(out / "history.json")
    assert len(history["epochs"]) == cfg.train.epochs == 10
    assert [r["epoch"] for r in history["epochs"]] == list(range(1, 11))
    for record in history["epochs"]:
        for key in ("recon", "mmd", "cls", "loss", "head_cls", "lvo", "lr"):
            assert math.isfinite(record[key]), key
    assert history["epochs"][-1]["recon"] < history["epochs"][0]["recon"]
    assert history["pretrain"]["steps"] >= 0
    assert (out / "checkpoint.pt").is_file() and (out / "best.pt").is_file()


def test_evaluate_run_reproduces_metrics(trained: tuple[RunConfig, dict[str, Any]]) -> None:
    cfg, metrics = trained
    metrics_file = Path(cfg.out) / "metrics.json"
    before = metrics_file.read_bytes()
    again, path = evaluate_run(cfg.out, cfg.predict)
    assert path.name == "eval-bayes-s1.json" and path.is_file()
    assert metrics_file.read_bytes() == before
    for key in ("acsa", "f_macro", "g_macro", "r_mi", "p_ma", "per_class"):
        assert again[key] == metrics[key], key
    run = load_run(cfg.out)
    assert run.class_names == tuple(str(i) for i in range(10)) and not run.model.training
    assert run.generator is run.model and run.family.generator(run.model) is run.model


def test_same_seed_same_numbers(digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    for name in ("a", "b"):
        train_run(digits_config(tmp_path / name, "train.epochs=2"), progress=False, log=quiet)
    a, b = tmp_path / "a", tmp_path / "b"
    assert without_seconds(read(a / "metrics.json")) == without_seconds(read(b / "metrics.json"))
    assert epoch_records(read(a / "history.json")) == epoch_records(read(b / "history.json"))
    train_run(digits_config(tmp_path / "c", "train.epochs=2", seed=2), progress=False, log=quiet)
    assert epoch_records(read(tmp_path / "c" / "history.json")) != epoch_records(
        read(a / "history.json"))


def test_resume_continues_exactly(digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    settings = ("train.val_fraction=0.2",)
    straight = train_run(digits_config(tmp_path / "straight", *settings, "train.epochs=4"),
                         progress=False, log=quiet)

    split = tmp_path / "split"
    train_run(digits_config(split, *settings, "train.epochs=2"), progress=False, log=quiet)
    before = snapshot(split)
    with pytest.raises(DGCError, match=r"train\.lr: 0\.001 -> 0\.002"):
        train_run(digits_config(split, *settings, "train.epochs=4", "train.lr=0.002"),
                  resume=True, progress=False, log=quiet)
    assert snapshot(split) == before  # every file byte-identical

    logs: list[str] = []
    resumed = train_run(digits_config(split, *settings, "train.epochs=4"), resume=True,
                        progress=False, log=logs.append)
    assert any("resuming" in line and "after epoch 2" in line for line in logs)
    assert without_seconds(resumed) == without_seconds(straight)
    assert epoch_records(read(split / "history.json")) == epoch_records(
        read(tmp_path / "straight" / "history.json"))
    assert "val" in read(split / "history.json")["epochs"][-1]


def test_resume_without_checkpoint_starts_from_scratch(
        digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    logs: list[str] = []
    fresh = train_run(digits_config(tmp_path / "fresh", "train.epochs=2"), resume=True,
                      progress=False, log=logs.append)
    assert any("no checkpoint" in line for line in logs)
    plain = train_run(digits_config(tmp_path / "plain", "train.epochs=2"), progress=False,
                      log=quiet)
    assert without_seconds(fresh) == without_seconds(plain)
    assert len(read(tmp_path / "fresh" / "history.json")["epochs"]) == 2


def test_resume_a_run_whose_epochs_come_from_its_steps(digits_config: Callable[..., RunConfig],
                                                       tmp_path: Path) -> None:
    """With `train.steps` the recorded epochs are derived (here 1 asked, 2 needed for 16 steps
    of 8 a epoch), so --resume compares what was asked, even under a cosine schedule."""
    cfg = digits_config(tmp_path / "run", 'train.schedule="cosine"', "train.epochs=1",
                        "train.steps=16", "train.pretrain_steps=0")
    first = train_run(cfg, progress=False, log=quiet)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["epochs"] == 2
    again = train_run(cfg, resume=True, progress=False, log=quiet)
    assert without_seconds(again) == without_seconds(first)


def test_a_fact_recorded_since_a_run_started_is_not_another_machine() -> None:
    then = {"python": "3.11.7", "threads": 2}  # a config.json from before bf16_instructions
    assert same_environment({**then, "bf16_instructions": False}, then)
    assert not same_environment({**then, "threads": 1, "bf16_instructions": False}, then)


def test_resume_in_other_threads_keeps_where_the_run_started(
        digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    """config.json keeps the first environment and lists each other one a resume ran in, so a
    benchmark table says the run mixed thread counts."""
    threads = torch.get_num_threads()
    settings = ('train.schedule="constant"', "train.epochs=1", "train.pretrain_steps=0")
    try:
        train_run(digits_config(tmp_path, *settings, threads=1), progress=False, log=quiet)
        for _ in range(2):  # the second resume adds nothing new
            train_run(digits_config(tmp_path, *settings, threads=2), resume=True,
                      progress=False, log=quiet)
    finally:
        torch.set_num_threads(threads)
    config = read(tmp_path / "config.json")
    assert config["environment"]["threads"] == 1
    assert [e["threads"] for e in config["resumed_in"]] == [2]
    assert trained_on(config) == "cpu (1 and 2 threads)"
    assert trained_on({**config, "resumed_in": []}) == "cpu (1 thread)"
    assert load_run(tmp_path).cfg.threads == 2  # a fact, not a setting: the run still loads


@pytest.mark.parametrize("name", ["cosine", "manual_smooth", "manual_smooth_released"])
def test_resume_to_more_epochs_with_epoch_dependent_schedule(
        digits_config: Callable[..., RunConfig], tmp_path: Path, name: str) -> None:
    """These schedules depend on E, so 2 epochs then 3 is not a 3-epoch run: it is refused."""
    settings = (f'train.schedule="{name}"', "train.pretrain_steps=0")
    train_run(digits_config(tmp_path / "split", *settings, "train.epochs=2"), progress=False,
              log=quiet)
    with pytest.raises(DGCError, match="train.epochs"):
        train_run(digits_config(tmp_path / "split", *settings, "train.epochs=3"),
                  resume=True, progress=False, log=quiet)



@pytest.mark.parametrize("prior", ["mixture", "class"])
def test_mixture_prior_trains_and_replaces_the_mmd(digits_config: Callable[..., RunConfig],
                                                   tmp_path: Path, prior: str) -> None:
    """A mixture prior (untied, or tied to the classes) is learned, logs its KL, skips the MMD."""
    dgcmm = get_method("dgcmm").configure(build_config("fashion", "cpu"))
    assert (dgcmm.model.prior, dgcmm.train.mmd_weight, dgcmm.train.prior_weight) == \
        ("mixture", 0.0, 0.1)
    cfg = digits_config(tmp_path, "train.epochs=10", "train.lr=0.003", f"model.prior={prior}",
                        "train.mmd_weight=0")
    metrics = train_run(cfg, progress=False, log=quiet)
    assert metrics["acsa"] > 0.3  # a majority-class predictor has 0.1
    epochs = read(tmp_path / "history.json")["epochs"]
    assert all("prior_kl" in e and "mmd" not in e for e in epochs)
    assert all(math.isfinite(e["prior_kl"]) for e in epochs)
    learned = load_run(tmp_path).model.prior  # log-variances start at 0, weights uniform
    assert float(learned.logvar.detach().abs().max()) > 1e-3
    if prior == "mixture":
        assert float(learned.logits.detach().abs().max()) > 1e-4


def test_an_interrupted_test_prediction_resumes_at_its_last_saved_chunk(
        digits_config: Callable[..., RunConfig], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train_run(digits_config(tmp_path / "straight"), progress=False, log=quiet)
    expected = np.load(tmp_path / "straight" / "predictions.npz")["probs"]
    n_test = len(expected)
    monkeypatch.setattr(dgc.run.predict, "PREDICT_CHUNK", 64)
    predict, chunks = dgc.run.predict.predict_images, []

    class Stopped(Exception):
        """The process dying while it predicts its third chunk."""

    def stopping(model: Any, images: np.ndarray, *args: Any) -> np.ndarray:
        chunks.append(len(images))
        if len(chunks) == 3:
            raise Stopped
        return predict(model, images, *args)

    def counting(model: Any, images: np.ndarray, *args: Any) -> np.ndarray:
        chunks.append(len(images))
        return predict(model, images, *args)

    run = tmp_path / "run"
    monkeypatch.setattr(dgc.run.predict, "predict_images", stopping)
    with pytest.raises(Stopped):
        train_run(digits_config(run), progress=False, log=quiet)
    assert (run / "predictions.partial.npz").is_file() and not (run / "metrics.json").exists()

    chunks.clear()
    monkeypatch.setattr(dgc.run.predict, "predict_images", counting)
    logs: list[str] = []
    resumed = train_run(digits_config(run), resume=True, progress=False, log=logs.append)
    assert any(f"resuming the test prediction after 128 of {n_test} images" in line
               for line in logs)
    assert chunks == [64] * ((n_test - 128) // 64) + ([(n_test - 128) % 64] if n_test % 64 else [])
    assert resumed.pop("predict_resumed_after") == 128
    np.testing.assert_allclose(np.load(run / "predictions.npz")["probs"], expected, atol=1e-6)
    assert without_seconds(resumed) == without_seconds(straight)
    assert not (run / "predictions.partial.npz").exists()


def test_the_prediction_key_sees_weights_images_and_settings(
        digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    """Saved test chunks are reused only under this key: any change to what a prediction
    depends on must change it."""
    cfg = digits_config(tmp_path)
    model = build_model(cfg, (8, 8, 1), 10)
    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    key = prediction_key(model, cfg, images)
    twin = build_model(cfg, (8, 8, 1), 10)  # seeded: the same weights
    assert prediction_key(twin, cfg, images) == key
    with torch.no_grad():
        next(twin.parameters()).view(-1)[0] += 1e-6
    assert prediction_key(twin, cfg, images) != key
    changed = images.copy()
    changed[0, 0, 0, 0] = 1
    assert prediction_key(model, cfg, changed) != key
    assert prediction_key(model, apply_overrides(cfg, ["predict.samples=2"]), images) != key
    assert prediction_key(model, dataclasses.replace(cfg, seed=2), images) != key


def test_saved_test_chunks_of_other_weights_are_not_reused(
        digits_config: Callable[..., RunConfig], tmp_path: Path) -> None:
    straight = train_run(digits_config(tmp_path / "straight"), progress=False, log=quiet)
    run = tmp_path / "run"
    run.mkdir()
    stale = np.full((64, 10), 0.1, dtype=np.float32)
    write_cache(run / "predictions.partial.npz", {"probs": stale}, "weights of another run")
    logs: list[str] = []
    fresh = train_run(digits_config(run), progress=False, log=logs.append)
    assert not any("resuming the test prediction" in line for line in logs)
    assert "predict_resumed_after" not in fresh
    assert without_seconds(fresh) == without_seconds(straight)
    assert not (run / "predictions.partial.npz").exists()
