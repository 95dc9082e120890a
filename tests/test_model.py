"""Tests for dgc.nn.model: shapes of METHOD §1's networks, SAME padding, init and the label
input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from dgc.config import ModelConfig
from dgc.core.errors import DGCError
from dgc.nn.backbones import encoder_depth, same_pad
from dgc.nn.model import DGC, Encoder, MixturePrior, images_to_tensor, tensor_to_images

SMALL = ModelConfig(latent_dim=8, width=4, decoder_width=2, hidden=32)


@pytest.mark.parametrize(
    ("shape", "kernel"),
    [((28, 28, 1), 4), ((32, 32, 3), 4), ((64, 64, 3), 5), ((8, 8, 1), 4), ((30, 20, 1), 4),
     ((30, 20, 1), 5), ((9, 13, 3), 3)],
)
def test_forward_shapes(shape: tuple[int, int, int], kernel: int) -> None:
    n_classes, batch = 5, 3
    cfg = ModelConfig(latent_dim=8, width=4, decoder_width=2, hidden=32, kernel=kernel)
    model = DGC(shape, n_classes, cfg)
    height, width, channels = shape
    x = torch.rand(batch, channels, height, width)
    y = torch.tensor([0, 4, 2])
    with torch.no_grad():
        out = model(x, y, torch.randn(batch, cfg.latent_dim))
    assert out["recon"].shape == (batch, channels, height, width)
    assert out["logits"].shape == (batch, n_classes)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (batch, cfg.latent_dim)
    assert float(out["recon"].min()) >= 0.0 and float(out["recon"].max()) <= 1.0
    with torch.no_grad():
        decoded = model.decoder(torch.randn(7, cfg.latent_dim))
    assert decoded.shape == (7, channels, height, width)


def trunk_sizes(encoder: Encoder, x: torch.Tensor) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = [tuple(x.shape[-2:])]
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
             for m in encoder.trunk if isinstance(m, nn.Conv2d)]
    encoder.trunk(x)
    for hook in hooks:
        hook.remove()
    return sizes


def test_encoder_trunk_uses_same_padding() -> None:
    encoder = Encoder((28, 28, 1), 10, SMALL)
    assert trunk_sizes(encoder, torch.rand(2, 1, 28, 28)) == [(28, 28), (14, 14), (7, 7), (4, 4),
                                                            (2, 2)]
    convs = [m for m in encoder.trunk if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 32]  # width · 2^i (paper: 128 → 1024)
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert encoder.hidden.in_features == 2 * 2 * 32

    celeba = Encoder((64, 64, 3), 5, ModelConfig(latent_dim=8, width=2, hidden=16, kernel=5))
    assert trunk_sizes(celeba, torch.rand(1, 3, 64, 64)) == [(64, 64), (32, 32), (16, 16), (8, 8),
                                                            (4, 4), (2, 2)]
    odd = Encoder((30, 20, 1), 3, SMALL)
    assert trunk_sizes(odd, torch.rand(1, 1, 30, 20)) == [(30, 20), (15, 10), (8, 5), (4, 3),
                                                         (2, 2)]


def test_same_pad_matches_tensorflow() -> None:
    # TF: out = ceil(n / s); total pad = max((out - 1)·s + k − n, 0), the odd pixel after.
    assert same_pad(28, 4, 2) == (14, 1, 1)
    assert same_pad(7, 4, 2) == (4, 1, 2)
    assert same_pad(4, 4, 2) == (2, 1, 1)
    assert same_pad(64, 5, 2) == (32, 1, 2)
    assert same_pad(5, 1, 2) == (3, 0, 0)
    assert [encoder_depth(n) for n in (2, 3, 4, 7, 8, 28, 32, 64)] == [1, 1, 1, 2, 2, 4, 4, 5]


def test_paper_init() -> None:
    model = DGC((28, 28, 1), 10, ModelConfig(latent_dim=16, width=8, decoder_width=4, hidden=256))
    weighted = [m for m in model.modules()
                if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding))]
    assert len(weighted) >= 12
    for module in weighted:
        w = module.weight.detach()
        if w.numel() >= 2000:
            assert abs(float(w.std()) - 0.01) < 0.0015, module
            assert abs(float(w.mean())) < 0.002, module
        assert float(w.abs().max()) < 0.1, module  # no default (Kaiming) init survived
        if getattr(module, "bias", None) is not None:
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), module
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    for bn in norms:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
        assert bn.eps == 1e-5 and bn.momentum == pytest.approx(0.1)  # TF decay 0.9

    torch_init = DGC((28, 28, 1), 10, ModelConfig(latent_dim=16, width=8, decoder_width=4,
                                                  hidden=256, init="torch"))
    assert float(torch_init.encoder.hidden.weight.detach().std()) > 0.012


def test_all_classes_equals_one_pass_per_class(tiny_model_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    n_classes = 4
    encoder = Encoder((8, 8, 1), n_classes, tiny_model_cfg).eval()
    x = torch.rand(5, 1, 8, 8)
    mu, logvar = encoder.all_classes(encoder.features(x))
    assert mu.shape == logvar.shape == (5, n_classes, tiny_model_cfg.latent_dim)
    for c in range(n_classes):
        mu_c, logvar_c = encoder(x, torch.full((5,), c))
        torch.testing.assert_close(mu[:, c], mu_c)
        torch.testing.assert_close(logvar[:, c], logvar_c)
    # the label matters: classes get different posteriors
    assert not torch.allclose(mu[:, 0], mu[:, 1], atol=1e-3)


def test_label_in_mean_false_keeps_label_out_of_mu(tiny_model_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**tiny_model_cfg.__dict__, "label_in_mean": False})
    encoder = Encoder((8, 8, 1), 3, cfg).eval()
    x = torch.rand(4, 1, 8, 8)
    mu0, logvar0 = encoder(x, torch.zeros(4, dtype=torch.long))
    mu2, logvar2 = encoder(x, torch.full((4,), 2))
    torch.testing.assert_close(mu0, mu2, rtol=0, atol=0)
    assert (logvar0 - logvar2).abs().max() > 1e-3
    mu_all, logvar_all = encoder.all_classes(encoder.features(x))
    torch.testing.assert_close(mu_all, mu0[:, None].expand_as(mu_all))
    assert (logvar_all[:, 0] - logvar_all[:, 1]).abs().max() > 1e-3


def test_linear_encoder_path_makes_the_label_a_class_offset(tiny_model_cfg: ModelConfig) -> None:
    """Without the ReLU (the released code), μ(x, c) − μ(x, c') is the same for every image."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    offsets = {}
    for relu in (False, True):
        encoder = Encoder((8, 8, 1), 3, dataclasses.replace(tiny_model_cfg, encoder_relu=relu))
        mu, logvar = encoder.eval().all_classes(encoder.features(x))
        offsets[relu] = (mu[:, 1] - mu[:, 0], logvar[:, 2] - logvar[:, 0])
    for offset in offsets[False]:
        torch.testing.assert_close(offset, offset[:1].expand_as(offset))
    assert (offsets[True][0] - offsets[True][0][:1]).abs().max() > 1e-4


def test_released_init_truncates_the_encoder_convolutions() -> None:
    cfg = ModelConfig(latent_dim=16, width=8, decoder_width=4, hidden=256, init="released")
    torch.manual_seed(0)
    model = DGC((28, 28, 1), 10, cfg)
    convs = [m for m in model.encoder.trunk.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    for conv in convs:
        assert float(conv.weight.detach().abs().max()) <= 0.02
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    inner = torch.cat([c.weight.detach().flatten() for c in convs])
    assert 0.007 < float(inner.std()) < 0.0095  # a normal truncated at 2σ has std 0.88σ
    assert float(model.decoder.project.weight.detach().abs().max()) > 0.03  # not truncated


def test_logvar_is_clipped() -> None:
    encoder = Encoder((8, 8, 1), 2, SMALL).eval()
    with torch.no_grad():
        encoder.logvar.bias.fill_(1e4)
    _, logvar = encoder(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    assert torch.all(logvar == 50.0)


def test_images_to_tensor() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 5, 4, 2), dtype=np.uint8)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 0, 255
    copy = images.copy()
    x = images_to_tensor(images)
    assert x.dtype == torch.float32
    assert x.shape == (3, 2, 5, 4)
    assert float(x[0, 0, 0, 0]) == 0.0 and float(x[0, 1, 0, 0]) == 1.0
    expected = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    torch.testing.assert_close(x, expected)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    np.testing.assert_array_equal(images, copy)
    np.testing.assert_array_equal(tensor_to_images(x), images)  # the way back is exact
    scaled = images.astype(np.float32) / 255.0  # floats are taken as already scaled
    assert torch.equal(images_to_tensor(scaled), torch.from_numpy(scaled).permute(0, 3, 1, 2))


# -- the learned mixture prior (DGCMM) --------------------------------------------------------

def mixture_prior(tied: bool) -> MixturePrior:
    torch.manual_seed(3)
    prior = MixturePrior(n_classes=3, latent_dim=5, tied=tied)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([1.0, 0.0, -1.0]))
        prior.logvar.normal_(0.0, 0.5)
    return prior


def test_tied_prior_kl_is_the_gaussian_kl_to_the_label_component() -> None:
    prior = mixture_prior(tied=True)
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5) * 0.3
    y = torch.tensor([0, 2, 1, 2])
    q = torch.distributions.Normal(mu, logvar.mul(0.5).exp())
    p = torch.distributions.Normal(prior.means[y], prior.logvar[y].mul(0.5).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    torch.testing.assert_close(prior.kl(mu, logvar, mu, y), expected)


def test_mixture_kl_reduces_to_one_component_when_all_are_equal() -> None:
    """VaDE's regulariser: identical components and uniform π give the plain Gaussian KL."""
    prior = mixture_prior(tied=False)
    with torch.no_grad():
        prior.logits.zero_()
        prior.means.copy_(prior.means[:1].expand(3, -1))
        prior.logvar.copy_(prior.logvar[:1].expand(3, -1))
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5) * 0.3
    q = torch.distributions.Normal(mu, logvar.mul(0.5).exp())
    p = torch.distributions.Normal(prior.means[0], prior.logvar[0].mul(0.5).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    z = mu + torch.randn(4, 5)
    torch.testing.assert_close(prior.kl(mu, logvar, z, torch.zeros(4, dtype=torch.long)),
                               expected)
    # distinct components: Σ γ_c (KL_c + log γ_c − log π_c) ≥ −log Σ π_c exp(−KL_c) (Gibbs),
    # with equality at γ_c ∝ π_c exp(−KL_c)
    prior = mixture_prior(tied=False)
    with torch.no_grad():
        p = torch.distributions.Normal(prior.means, prior.logvar.mul(0.5).exp())
        per_component = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu[:, None, :], logvar[:, None, :].mul(0.5).exp()),
            p).sum(-1)
        log_pi = torch.log_softmax(prior.logits, 0)
        bound = -torch.logsumexp(log_pi - per_component, dim=1).mean()
        kl = prior.kl(mu, logvar, z, torch.zeros(4, dtype=torch.long))
    assert float(kl) >= float(bound) - 1e-5


def test_mixture_log_density_matches_torch_distributions() -> None:
    prior = mixture_prior(tied=False)
    z = torch.randn(7, 5)
    components = torch.distributions.Independent(
        torch.distributions.Normal(prior.means, prior.logvar.mul(0.5).exp()), 1)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=prior.logits), components)
    const = 0.5 * 5 * math.log(2 * math.pi)
    torch.testing.assert_close(prior.log_density(z, torch.zeros(7, dtype=torch.long)),
                               mixture.log_prob(z) + const)
    tied = mixture_prior(tied=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    torch.testing.assert_close(tied.log_density(z, y),
                               components.log_prob(z[:, None, :])[torch.arange(7), y] + const)


def test_models_have_a_prior_only_when_asked() -> None:
    cfg = ModelConfig(latent_dim=4, width=4, decoder_width=2, hidden=16)
    assert DGC((8, 8, 1), 3, cfg).prior is None
    model = DGC((8, 8, 1), 3, dataclasses.replace(cfg, prior="class"))
    assert model.prior.tied and model.prior.means.shape == (3, 4)
    assert not DGC((8, 8, 1), 3, dataclasses.replace(cfg, prior="mixture")).prior.tied


def test_a_decoder_whose_filters_would_reach_zero_is_refused() -> None:
    """Each up-sampling halves the filters: 8 × decoder_width must cover 2^ups."""
    cfg = ModelConfig(latent_dim=4, width=4, decoder_width=8, hidden=8)
    DGC((512, 512, 1), 2, cfg)  # 6 up-samplings of 64 filters: 1 left
    with pytest.raises(DGCError, match="need 7 up-sampling layers in the decoder, which halve "
                                       "its 64 filters to none.*model.decoder_width=16 or more"):
        DGC((1024, 1024, 1), 2, cfg)
