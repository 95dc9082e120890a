"""Shared fixtures for the DGC core tests: one CPU thread, tiny models and short digits runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from dgc.config import ModelConfig, RunConfig, apply_overrides, build_config
from dgc.data import ImbalancedData, load_imbalanced


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """The tests run beside other jobs on two cores; one thread also keeps runs deterministic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model_cfg() -> ModelConfig:
    """A model small enough to loop over by hand; PyTorch's init so outputs are not all ~0."""
    return ModelConfig(latent_dim=4, width=4, decoder_width=2, hidden=16, init="torch")


@pytest.fixture(scope="session")
def digits_config() -> Callable[..., RunConfig]:
    """`digits_config(out, *overrides, **run_fields)`: a short digits run writing to `out`.

    The cpu preset (seed 1) with 3 epochs, S = 1 prediction and a 200-image pre-training batch;
    the overrides are `section.field=value` strings as for `--set`, applied after those.
    """

    def make(out: str | Path, *overrides: str, **run_fields) -> RunConfig:
        cfg = build_config("digits", "cpu", seed=1, out=str(out))
        cfg = apply_overrides(cfg, ["train.epochs=3", "train.pretrain_batch=200",
                                    "predict.samples=1", *overrides])
        return dataclasses.replace(cfg, **run_fields)

    return make


@pytest.fixture(scope="session")
def digits_data() -> ImbalancedData:
    return load_imbalanced("digits", 1)
