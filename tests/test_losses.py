"""Tests for dgc.nn.losses: METHOD §2's objective terms and §3's latent oversampling rule."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from dgc.nn.losses import (
    IMQ_SCALES,
    classification_loss,
    imq_mmd,
    moment_matching_loss,
    oversampling_index,
    reconstruction_loss,
)


def test_reconstruction_loss_by_hand() -> None:
    x = torch.zeros(2, 1, 2, 2)
    recon = torch.zeros(2, 1, 2, 2)
    recon[0] = 1.0                  # ½ · 4 · 1² = 2
    recon[1, 0, 1, 0] = 0.5         # ½ · 0.5² = 0.125
    assert float(reconstruction_loss(x, recon)) == pytest.approx((2.0 + 0.125) / 2)
    # summed over pixels and channels, not averaged: doubling the image doubles the loss
    x3 = torch.rand(4, 3, 5, 5)
    r3 = torch.rand(4, 3, 5, 5)
    expected = 0.5 * ((x3 - r3) ** 2).sum() / 4
    assert float(reconstruction_loss(x3, r3)) == pytest.approx(float(expected), rel=1e-5)
    assert float(reconstruction_loss(x3, x3)) == 0.0


def slow_imq_mmd(z: torch.Tensor, p: torch.Tensor) -> float:
    """METHOD §2 written out with explicit loops."""
    n, k = z.shape
    m = p.shape[0]
    total = 0.0
    for s in IMQ_SCALES:
        c = 2.0 * k * s

        def kern(a: torch.Tensor, b: torch.Tensor, c: float = c) -> float:
            return c / (c + float(((a - b) ** 2).sum()))

        zz = sum(kern(z[i], z[j]) for i in range(n) for j in range(n) if i != j) / (n * n - n)
        pp = sum(kern(p[i], p[j]) for i in range(m) for j in range(m) if i != j) / (m * m - m)
        zp = sum(kern(z[i], p[j]) for i in range(n) for j in range(m))
        total += zz + pp - 2.0 * zp / (n * m)
    return total


def test_imq_mmd_matches_explicit_loops() -> None:
    assert IMQ_SCALES == (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(5, 3, generator=gen, dtype=torch.float64) * 2 + 0.5
    p = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    assert float(imq_mmd(z, p)) == pytest.approx(slow_imq_mmd(z, p), rel=1e-10, abs=1e-12)
    q = torch.randn(4, 3, generator=gen, dtype=torch.float64)  # unequal sizes
    assert float(imq_mmd(z, q)) == pytest.approx(slow_imq_mmd(z, q), rel=1e-10, abs=1e-12)


def test_imq_mmd_separates_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 8, generator=gen)
    b = torch.randn(400, 8, generator=gen)
    shifted = torch.randn(400, 8, generator=gen) + 1.0
    same = float(imq_mmd(a, b))
    different = float(imq_mmd(a, shifted))
    assert math.isfinite(same) and math.isfinite(different)
    assert abs(same) < 0.01
    assert different > 0.3
    assert different > 30 * abs(same)
    a64, b64, s64 = a.double(), b.double(), shifted.double()
    assert float(imq_mmd(a64, b64)) == pytest.approx(float(imq_mmd(b64, a64)), abs=1e-12)
    assert float(imq_mmd(a64, s64)) == pytest.approx(float(imq_mmd(s64, a64)), abs=1e-12)
    assert float(imq_mmd(a, b)) == pytest.approx(float(imq_mmd(b, a)), abs=1e-5)
    # identical points (distance 0 everywhere) stay finite
    point = torch.zeros(6, 4)
    assert torch.isfinite(imq_mmd(point, point))


def test_imq_mmd_is_differentiable() -> None:
    z = torch.randn(10, 4, requires_grad=True)
    imq_mmd(z, torch.randn(10, 4)).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_moment_matching_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    prior_like = torch.randn(50_000, 4, generator=gen)
    assert float(moment_matching_loss(prior_like)) < 2e-3
    # hand check: mean (1, 2), covariance diag(4/3, 0)
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]) + torch.tensor([1.0, 2.0])
    mean_term = (1.0 + 4.0) / 2
    cov_term = ((4 / 3 - 1) ** 2 + 0 + 0 + (0 - 1) ** 2) / 4
    assert float(moment_matching_loss(z)) == pytest.approx(mean_term + cov_term, rel=1e-6)


def test_classification_loss_weighting() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    per_row = F.cross_entropy(logits, y, reduction="none")
    assert float(classification_loss(logits, y, None)) == pytest.approx(float(per_row.sum()))
    assert float(classification_loss(logits, y, 2.5)) == pytest.approx(2.5 * float(per_row.mean()))
    # without tau the prior is ignored
    log_prior = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    assert float(classification_loss(logits, y, None, log_prior, 0.0)) == pytest.approx(
        float(per_row.sum()))


def test_classification_loss_logit_adjustment_by_hand() -> None:
    logits = torch.zeros(1, 2)
    y = torch.tensor([0])
    log_prior = torch.log(torch.tensor([0.75, 0.25]))
    # logits + 1·log π = log(0.75), log(0.25): the softmax is the prior itself
    assert float(classification_loss(logits, y, None, log_prior, 1.0)) == pytest.approx(
        -math.log(0.75))
    assert float(classification_loss(logits, torch.tensor([1]), None, log_prior, 1.0)) == \
        pytest.approx(-math.log(0.25))
    # tau = 2: logits 2·log π, softmax ∝ π²
    expected = -math.log(0.25**2 / (0.75**2 + 0.25**2))
    assert float(classification_loss(logits, torch.tensor([1]), 3.0, log_prior, 2.0)) == \
        pytest.approx(3.0 * expected)


def test_oversampling_index_counts_by_hand() -> None:
    counts = torch.tensor([100, 50, 10])
    # rows of class 0: 1, 3, 6; class 1: 2, 5; class 2: 0, 4
    y = torch.tensor([2, 0, 1, 0, 2, 1, 0])
    # ρ = 0.6·(100 − n)/n = [0, 0.6, 5.4]
    # class 0 keeps its 3 rows; class 1: ⌊2·1.6⌋ = 3; class 2: ⌊2·6.4⌋ = 12
    index = oversampling_index(y, counts, 0.6)
    assert index.dtype == torch.long
    per_class = Counter(y[index].tolist())
    assert per_class == {0: 3, 1: 3, 2: 12}
    per_row = Counter(index.tolist())
    assert {r: per_row[r] for r in (1, 3, 6)} == {1: 1, 3: 1, 6: 1}
    assert sorted(per_row[r] for r in (2, 5)) == [1, 2]
    # round-robin: each instance of class 2 gives about 1 + ρ = 6.4 codes (6 and 6, not 7 and 5)
    assert sorted(per_row[r] for r in (0, 4)) == [6, 6]
    assert set(index.tolist()) <= set(range(len(y)))


def test_oversampling_index_edges() -> None:
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    counts = torch.tensor([100, 40])
    # rate 0: every row exactly once
    assert sorted(oversampling_index(y, counts, 0.0).tolist()) == list(range(len(y)))
    # ρ_1 = 0.6·60/40 = 0.9: ⌊10·1.9⌋ = 19 (no float round-down to 18)
    index = oversampling_index(y, counts, 0.6)
    assert Counter(y[index].tolist()) == {0: 4, 1: 19}
    # ρ = 1 exactly: every row twice
    index = oversampling_index(y, torch.tensor([80, 40]), 1.0)
    assert Counter(index.tolist()) == {**{i: 1 for i in (0, 3, 5, 6)},
                                       **{i: 2 for i in range(len(y)) if y[i] == 1}}
    # a batch holding only the smallest class
    only = torch.tensor([1, 1, 1])
    assert len(oversampling_index(only, counts, 0.6)) == 5  # ⌊3·1.9⌋


def test_oversampling_index_rows_have_their_class() -> None:
    gen = torch.Generator().manual_seed(1)
    counts = torch.tensor([120, 90, 70, 50, 35, 25, 18, 12, 8, 6])
    for rate in (0.2, 0.6, 1.0):
        y = torch.randint(0, 10, (50,), generator=gen)
        index = oversampling_index(y, counts, rate)
        rho = rate * (counts.max() - counts).double() / counts.double()
        for c in torch.unique(y).tolist():
            rows = torch.nonzero(y == c).flatten().tolist()
            picked = [int(i) for i in index if int(y[i]) == c]
            assert len(picked) == math.floor(len(rows) * (1 + float(rho[c])) + 1e-9)
            assert set(picked) == set(rows)
            assert max(Counter(picked).values()) - min(Counter(picked).values()) <= 1
        assert torch.equal(y[index].unique(), y.unique())


def test_row_weights_in_every_dgc_loss() -> None:
    """Weights of 1 change nothing (the cross-entropy: to rounding, the order of its sum);
    integer weights are repeated rows where the loss is a sum or
    a moment (the summed cross-entropy, the pre-training moments); a weight of 0 removes the row
    from the MMD; the weighted mean is (1/B) Σ w ℓ."""
    from dgc.nn.losses import (
        classification_loss,
        imq_mmd,
        moment_matching_loss,
        reconstruction_loss,
    )

    generator = torch.Generator().manual_seed(0)
    z, prior = torch.randn(6, 3, generator=generator), torch.randn(8, 3, generator=generator)
    x, recon = torch.rand(6, 1, 4, 4, generator=generator), torch.rand(6, 1, 4, 4,
                                                                      generator=generator)
    logits, y = torch.randn(6, 3, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2])
    ones, counts = torch.ones(6), torch.tensor([1.0, 2.0, 3.0, 1.0, 0.0, 2.0])
    repeated = torch.repeat_interleave(torch.arange(6), counts.long())
    assert torch.equal(reconstruction_loss(x, recon, ones), reconstruction_loss(x, recon))
    assert torch.equal(imq_mmd(z, prior, ones), imq_mmd(z, prior))
    assert torch.equal(moment_matching_loss(z, ones), moment_matching_loss(z))
    torch.testing.assert_close(classification_loss(logits, y, None, weights=ones),
                               classification_loss(logits, y, None))
    torch.testing.assert_close(classification_loss(logits, y, None, weights=counts),
                               classification_loss(logits[repeated], y[repeated], None))
    torch.testing.assert_close(moment_matching_loss(z, counts),
                               moment_matching_loss(z[repeated]))
    kept = counts > 0
    torch.testing.assert_close(imq_mmd(z, prior, kept.float()), imq_mmd(z[kept], prior))
    per_row = 0.5 * (x - recon).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_loss(x, recon, counts), (per_row * counts).mean())
