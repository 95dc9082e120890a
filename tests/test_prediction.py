"""Tests for dgc.nn.prediction: METHOD §4's Bayes rule by importance sampling, against a slow
loop."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from dgc.config import ModelConfig, PredictConfig, latent_tag, predict_tag
from dgc.nn.losses import imq_mmd
from dgc.nn.model import DGC
from dgc.nn.prediction import chunk_mmd, class_scores, decompose, predict_proba

N_CLASSES = 3
SHAPE = (8, 8, 1)


@pytest.fixture
def model(tiny_model_cfg: ModelConfig) -> DGC:
    """A tiny model in training mode whose BatchNorm running statistics are not the defaults."""
    torch.manual_seed(0)
    net = DGC(SHAPE, N_CLASSES, tiny_model_cfg)
    with torch.no_grad():
        for _ in range(3):  # move the running statistics away from (0, 1)
            net(torch.rand(16, 1, 8, 8) * 3, torch.randint(0, N_CLASSES, (16,)),
                torch.randn(16, tiny_model_cfg.latent_dim))
    return net.train()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(5))


def slow_scores(model: DGC, x: torch.Tensor, samples: int, seed: int,
                rule: str = "bayes") -> torch.Tensor:
    """METHOD §4 one image, one class, one sample at a time (model in eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(samples, model.cfg.latent_dim, generator=generator)
    model.eval()
    scores = torch.empty(len(x), model.n_classes)
    with torch.no_grad():
        for i in range(len(x)):
            for c in range(model.n_classes):
                log_w = []
                for s in range(samples):
                    mu, logvar = model.encoder(x[i:i + 1], torch.tensor([c]))
                    z = mu + torch.sqrt(1e-8 + torch.exp(logvar)) * noise[s]
                    recon = -0.5 * float(((x[i:i + 1] - model.decoder(z)) ** 2).sum())
                    label = float(torch.log_softmax(model.head(z), dim=1)[0, c])
                    log_w.append({"bayes": recon + label, "recon": recon, "label": label}[rule])
                scores[i, c] = torch.logsumexp(torch.tensor(log_w, dtype=torch.float64), 0) \
                    - math.log(samples)
    return scores


@pytest.mark.parametrize("rule", ["bayes", "label", "recon"])
def test_class_scores_match_slow_computation(model: DGC, images: torch.Tensor, rule: str) -> None:
    cfg = PredictConfig(samples=4, rule=rule)
    fast = class_scores(model, images, cfg, seed=7)
    assert model.training  # the mode is restored
    slow = slow_scores(model, images, samples=4, seed=7, rule=rule)
    assert fast.shape == (len(images), N_CLASSES)
    torch.testing.assert_close(fast, slow, atol=2e-4, rtol=1e-5)
    # the scores really vary with the class (the comparison is not between constants)
    assert float((slow.max(1).values - slow.min(1).values).min()) > 1e-3


def test_seed_determines_scores(model: DGC, images: torch.Tensor) -> None:
    cfg = PredictConfig(samples=3)
    first = class_scores(model, images, cfg, seed=11)
    assert torch.equal(first, class_scores(model, images, cfg, seed=11))
    assert not torch.equal(first, class_scores(model, images, cfg, seed=12))


def test_scores_do_not_depend_on_the_batch(model: DGC, images: torch.Tensor) -> None:
    cfg = PredictConfig(samples=3)
    full = class_scores(model, images, cfg, seed=2)
    rows = [4, 1]
    torch.testing.assert_close(class_scores(model, images[rows], cfg, seed=2), full[rows],
                               atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(class_scores(model, images[3:4], cfg, seed=2), full[3:4],
                               atol=1e-5, rtol=1e-6)
    for decode_batch in (1, 7, 10**6):
        other = PredictConfig(samples=3, decode_batch=decode_batch)
        torch.testing.assert_close(class_scores(model, images, other, seed=2), full,
                                   atol=1e-5, rtol=1e-6)


def test_top_k(model: DGC, images: torch.Tensor) -> None:
    exact = class_scores(model, images, PredictConfig(samples=2), seed=3)
    all_k = class_scores(model, images, PredictConfig(samples=2, top_k=N_CLASSES), seed=3)
    torch.testing.assert_close(all_k, exact)
    beyond = class_scores(model, images, PredictConfig(samples=2, top_k=N_CLASSES + 5), seed=3)
    torch.testing.assert_close(beyond, exact)

    one = class_scores(model, images, PredictConfig(samples=2, top_k=1), seed=3)
    label = class_scores(model, images, PredictConfig(samples=2, rule="label"), seed=3)
    finite = torch.isfinite(one)
    assert finite.sum(1).tolist() == [1] * len(images)
    assert torch.all(one[~finite] == -math.inf)
    assert torch.equal(one.argmax(1), label.argmax(1))
    # the class that is kept gets its exact score
    torch.testing.assert_close(one[finite], exact[finite])

    two = class_scores(model, images, PredictConfig(samples=2, top_k=2), seed=3)
    assert torch.isfinite(two).sum(1).tolist() == [2] * len(images)
    torch.testing.assert_close(two[torch.isfinite(two)], exact[torch.isfinite(two)])
    worst = label.argmin(1)
    assert torch.all(two[torch.arange(len(images)), worst] == -math.inf)


def test_rules_are_the_two_terms(model: DGC, images: torch.Tensor) -> None:
    one = dict(samples=1)
    bayes = class_scores(model, images, PredictConfig(**one, rule="bayes"), seed=4)
    label = class_scores(model, images, PredictConfig(**one, rule="label"), seed=4)
    recon = class_scores(model, images, PredictConfig(**one, rule="recon"), seed=4)
    torch.testing.assert_close(bayes, label + recon, atol=1e-5, rtol=1e-6)
    assert torch.all(label <= 0)  # log-probabilities
    assert torch.all(recon <= 0)  # minus half a squared error
    # with S = 1 each term is a single draw: the label term is a log-softmax over classes
    assert not torch.allclose(label, recon)


def test_predict_proba(model: DGC) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    probs = predict_proba(model, images, PredictConfig(samples=2), seed=1)
    assert probs.shape == (5, N_CLASSES)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    scores = class_scores(model, x, PredictConfig(samples=2), seed=1)
    np.testing.assert_allclose(probs, torch.softmax(scores, 1).numpy(), atol=1e-6)
    # pruned classes get probability 0, and rows still sum to 1
    pruned = predict_proba(model, images, PredictConfig(samples=2, top_k=2), seed=1)
    assert np.all((pruned == 0).sum(1) == 1)
    np.testing.assert_allclose(pruned.sum(1), 1.0, atol=1e-5)


# -- a learned mixture prior (DGCMM) ----------------------------------------------------------

@pytest.mark.parametrize("prior", ["mixture", "class"])
def test_bayes_rule_adds_the_learned_prior(tiny_model_cfg: ModelConfig, images: torch.Tensor,
                                           prior: str) -> None:
    """The fast rule equals METHOD §4's slow loop plus log p(z) (class c's component when tied)."""
    torch.manual_seed(0)
    model = DGC(SHAPE, N_CLASSES, dataclasses.replace(tiny_model_cfg, prior=prior))
    with torch.no_grad():
        model.prior.logits.copy_(torch.tensor([0.5, -0.2, 0.1]))
        model.prior.logvar.normal_(0.0, 0.3)
        model.encoder.logvar.bias.fill_(-1.0)  # σ ≈ 0.6, so the samples really differ
    fast = class_scores(model, images, PredictConfig(samples=3), seed=4)

    generator = torch.Generator().manual_seed(4)
    noise = torch.randn(3, model.cfg.latent_dim, generator=generator)
    model.eval()
    components = torch.distributions.Normal(model.prior.means.detach(),
                                            model.prior.logvar.detach().mul(0.5).exp())
    log_pi = torch.log_softmax(model.prior.logits.detach(), 0)
    const = 0.5 * model.cfg.latent_dim * math.log(2 * math.pi)  # dropped by the model
    slow = torch.empty(len(images), N_CLASSES)
    with torch.no_grad():
        for i in range(len(images)):
            for c in range(N_CLASSES):
                mu, logvar = model.encoder(images[i:i + 1], torch.tensor([c]))
                z = mu + torch.sqrt(1e-8 + logvar.exp()) * noise  # (S, k)
                recon = -0.5 * (images[i:i + 1] - model.decoder(z)).pow(2).flatten(1).sum(1)
                label = torch.log_softmax(model.head(z), dim=1)[:, c]
                per_component = components.log_prob(z[:, None, :]).sum(-1) + const  # (S, C)
                latent = (per_component[:, c] if prior == "class"
                          else torch.logsumexp(log_pi + per_component, dim=1))
                slow[i, c] = torch.logsumexp(recon + label + latent, 0) - math.log(3)
    torch.testing.assert_close(fast, slow, atol=2e-4, rtol=1e-5)


def test_top_k_ranks_by_label_and_latent_terms(tiny_model_cfg: ModelConfig,
                                               images: torch.Tensor) -> None:
    """Pruning keeps the classes the cheap terms (label + class-tied prior) rank best."""
    torch.manual_seed(0)
    model = DGC(SHAPE, N_CLASSES, dataclasses.replace(tiny_model_cfg, prior="class"))
    cheap = class_scores(model, images, PredictConfig(samples=2), seed=1,
                         terms=("label", "latent"))
    pruned = class_scores(model, images, PredictConfig(samples=2, top_k=1), seed=1)
    assert torch.equal(torch.isfinite(pruned).nonzero()[:, 1], cheap.argmax(1))


@pytest.mark.parametrize("prior", ["normal", "class"])
def test_decompose_scores_each_term_alone(tiny_model_cfg: ModelConfig, images: torch.Tensor,
                                          prior: str) -> None:
    torch.manual_seed(0)
    model = DGC(SHAPE, N_CLASSES, dataclasses.replace(tiny_model_cfg, prior=prior))
    y = np.array([0, 1, 2, 0, 1, 2])
    report = decompose(model, images, y, PredictConfig(samples=2, top_k=1), seed=3)
    expected = ["label", "recon", "prior", "recon+label", "recon+label+prior"]
    if prior != "normal":
        expected[3:3] = ["latent", "label+latent", "recon+label+latent"]
    assert list(report) == expected
    for terms, row in report.items():
        # every class is scored (no pruning), so the ACSA is the score's own
        score = class_scores(model, images, PredictConfig(samples=2), seed=3,
                             terms=tuple(terms.split("+")))
        recalls = [np.mean(score.argmax(1).numpy()[y == c] == c) for c in range(N_CLASSES)]
        assert row["acsa"] == pytest.approx(np.mean(recalls))
        assert row["spread"] == pytest.approx(float((score.max(1).values
                                                     - score.min(1).values).mean()))
        assert row["spread"] > 0


def test_latent_weight_scales_the_learned_prior(tiny_model_cfg: ModelConfig,
                                                images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = DGC(SHAPE, N_CLASSES, dataclasses.replace(tiny_model_cfg, prior="mixture"))
    with torch.no_grad():
        model.encoder.logvar.bias.fill_(-1.0)
    without = class_scores(model, images, PredictConfig(samples=1, latent_weight=0.0), seed=2)
    torch.testing.assert_close(without, class_scores(model, images, PredictConfig(samples=1),
                                                     seed=2, terms=("recon", "label")))
    # with one sample the score is the sum of its terms, so the weight scales the prior's part
    latent = class_scores(model, images, PredictConfig(samples=1), seed=2, terms=("latent",))
    doubled = class_scores(model, images, PredictConfig(samples=1, latent_weight=2.0), seed=2)
    torch.testing.assert_close(doubled, without + 2.0 * latent, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("prior", ["normal", "mixture"])
def test_importance_counts_log_prior_once(tiny_model_cfg: ModelConfig, images: torch.Tensor,
                                          prior: str) -> None:
    """With one sample the importance score is recon + label + log p(z) − log q(z|x,c),
    whether log p(z) is the standard normal's or a learned prior's (weighted) `latent` term."""
    torch.manual_seed(0)
    model = DGC(SHAPE, N_CLASSES, dataclasses.replace(tiny_model_cfg, prior=prior))
    with torch.no_grad():
        model.encoder.logvar.bias.fill_(-1.0)
    cfg = PredictConfig(samples=1, latent_weight=2.0)
    scored = class_scores(model, images, dataclasses.replace(cfg, importance=True), seed=2)

    noise = torch.randn(1, model.cfg.latent_dim, generator=torch.Generator().manual_seed(2))
    model.eval()
    expected = torch.empty(len(images), N_CLASSES)
    with torch.no_grad():
        for c in range(N_CLASSES):
            mu, logvar = model.encoder(images, torch.full((len(images),), c))
            std = torch.sqrt(1e-8 + logvar.exp())
            z = mu + std * noise
            recon = -0.5 * (images - model.decoder(z)).pow(2).flatten(1).sum(1)
            label = torch.log_softmax(model.head(z), dim=1)[:, c]
            if prior == "normal":
                log_p = -0.5 * z.pow(2).sum(1)
            else:
                log_p = 2.0 * model.prior.log_density(z[:, None, None, :],
                                                      torch.tensor(c).view(1, 1, 1))[:, 0, 0]
            log_q = -0.5 * noise.pow(2).sum(1) - std.log().sum(1)
            expected[:, c] = recon + label + log_p - log_q
    torch.testing.assert_close(scored, expected, atol=2e-4, rtol=1e-5)


def test_mmd_term_adds_the_released_per_chunk_offset(model: DGC, images: torch.Tensor) -> None:
    """+ MMD of each chunk of `mmd_images` images' codes, the same however the batches fall."""
    cfg = PredictConfig(samples=2)
    plain = class_scores(model, images, cfg, seed=4)
    with_mmd = [class_scores(model, images, dataclasses.replace(
        cfg, mmd_term=True, mmd_images=3, decode_batch=decode), seed=4) for decode in (6, 4096)]
    torch.testing.assert_close(with_mmd[0], with_mmd[1])
    offset = with_mmd[0] - plain
    assert (offset > 0).all()  # the released code adds it: an MMD estimate is mostly positive
    torch.testing.assert_close(offset[:3], offset[:1].expand(3, -1))  # one offset per chunk
    assert not torch.allclose(offset[0], offset[3])

    codes = torch.randn(5, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    mmd = chunk_mmd(codes, 2, torch.Generator().manual_seed(1))
    prior = torch.Generator().manual_seed(1)
    first = torch.randn(6, 4, generator=prior)
    assert mmd.shape == (5, 2)
    torch.testing.assert_close(mmd[0, 1], imq_mmd(codes[:2, 1].reshape(-1, 4), first))
    single = chunk_mmd(codes[:1, :, :1], 1, torch.Generator().manual_seed(1))
    assert torch.equal(single, torch.zeros(1, 2))  # one code has no MMD


def test_prediction_file_names_carry_every_setting_that_changes_the_scores() -> None:
    """Every setting that changes the scores appears in the tag, so two such settings write two
    eval-*.json files; a learned prior's weight appears only when it departs from Bayes' rule."""
    assert predict_tag(PredictConfig(samples=10)) == "bayes-s10"
    assert latent_tag(PredictConfig()) == ""
    every = PredictConfig(samples=1, top_k=2, mmd_term=True, importance=True, bf16=True,
                          latent_weight=0.5)
    assert predict_tag(every) == "bayes-s1-top2-mmd-importance-bf16-latent0.5"
    assert latent_tag(PredictConfig(latent_weight=2.0)) == "-latent2"


@pytest.mark.parametrize(("shape", "kernel", "prior"), [
    ((28, 28, 1), 4, "normal"), ((8, 8, 1), 4, "class"), ((32, 32, 3), 4, "mixture"),
    ((64, 64, 3), 5, "normal"), ((30, 26, 1), 4, "normal")])
def test_the_fast_prediction_equals_the_code_before_it(
        shape: tuple[int, ...], kernel: int, prior: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 35's prediction (BatchNorm folded into the decoder's transposed convolutions, the
    last convolution as one product over its taps, codes decoded 256 at a time) gives the exact
    rule's scores and the novelty scores of the code before it (the training-mode modules
    applied in evaluation mode, every code of a batch decoded in one pass) to float rounding,
    with BatchNorm statistics far from their initial values."""
    import dgc.nn.model
    import dgc.nn.prediction
    from dgc.nn.novelty import dgc_scores

    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=6, width=8, decoder_width=4, hidden=32, kernel=kernel,
                      init="torch", prior=prior)
    model = DGC(shape, 5, cfg).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1.0, 0.2)
            module.bias.data.normal_()
    x = torch.rand(7, shape[2], shape[0], shape[1]).contiguous(memory_format=torch.channels_last)
    exact = PredictConfig(samples=10)
    new_scores = class_scores(model, x, exact, seed=3)
    new_novelty = dgc_scores(model, x, exact, seed=3)
    monkeypatch.setattr(dgc.nn.prediction, "DECODER_PASS", 2**62)
    monkeypatch.setattr(dgc.nn.model.Decoder, "evaluation_body", lambda self, h: self.body(h))
    torch.testing.assert_close(new_scores, class_scores(model, x, exact, seed=3),
                               rtol=1e-5, atol=1e-4)
    for name, value in dgc_scores(model, x, exact, seed=3).items():
        torch.testing.assert_close(new_novelty[name], value, rtol=1e-5, atol=1e-4)
