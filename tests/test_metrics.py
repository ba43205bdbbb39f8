"""Critic and quality metrics against closed forms."""

import math

import pytest
import torch

from gan.data import MixtureOfGaussians
from gan.objectives import gradient_norms, random_interpolates
from metrics.critic import CRITIC_ESTIMATE, CRITIC_GAP, CRITIC_REL_ERROR, critic_vs_w1
from metrics.ot import wasserstein
from metrics.quality import HIGH_QUALITY_FRAC, MODES_COVERED, mode_coverage


def test_optimal_linear_critic_on_a_translation_recovers_w1():
    # Real = fake + m: the potential f(z) = <z, m/‖m‖> is optimal, so its estimate is W1 = ‖m‖.
    gen = torch.Generator().manual_seed(0)
    fake = torch.randn(128, 3, generator=gen, dtype=torch.float64)
    m = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    real = fake + m
    u = m / m.norm()
    out = critic_vs_w1(real @ u, fake @ u, wasserstein(real, fake))
    assert out[CRITIC_ESTIMATE] == pytest.approx(float(m.norm()), rel=1e-9)
    assert abs(out[CRITIC_GAP]) < 1e-9
    assert out[CRITIC_REL_ERROR] < 1e-8


def test_critic_gap_sign_and_relative_error():
    out = critic_vs_w1(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), 4.0)
    assert out == {CRITIC_ESTIMATE: 1.0, CRITIC_GAP: -3.0, CRITIC_REL_ERROR: 0.75}
    assert critic_vs_w1(torch.ones(2), torch.ones(2), 0.0)[CRITIC_REL_ERROR] == 0.0


def test_mode_coverage_of_the_true_mixture():
    # Each sample is within 3σ of its mode with probability P(χ²₂ ≤ 9) = 1 − e^{−4.5} in 2D.
    data = MixtureOfGaussians("grid", 25, 2.0, 0.05)
    samples = data.sample(20000, torch.Generator().manual_seed(0))
    out = mode_coverage(samples, data.modes, data.std)
    assert out[MODES_COVERED] == 25
    expected = 1 - math.exp(-4.5)
    assert out[HIGH_QUALITY_FRAC] == pytest.approx(
        expected, abs=4 * math.sqrt(expected * (1 - expected) / 20000)
    )


def test_mode_coverage_of_a_collapsed_sample():
    data = MixtureOfGaussians("ring", 8, 2.0, 0.02)
    collapsed = data.modes[3].expand(500, 2).clone()
    assert mode_coverage(collapsed, data.modes, data.std) == {MODES_COVERED: 1, HIGH_QUALITY_FRAC: 1.0}
    far = collapsed + 10.0
    assert mode_coverage(far, data.modes, data.std) == {MODES_COVERED: 0, HIGH_QUALITY_FRAC: 0.0}


def test_gradient_norm_is_over_all_non_batch_dimensions():
    # f(x) = <w, x> on (B, C, H, W) inputs has ‖∇f‖ = ‖w‖ at every point.
    weight = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))

    def critic(x):
        return (x * weight).flatten(1).sum(1)

    def copies(x):  # two copies of the critic, the second scaled by 2: (K, B, ...) -> (K, B)
        return torch.stack([critic(x[0]), 2 * critic(x[1])])

    norms = gradient_norms(copies, torch.randn(2, 5, 2, 3, 4))
    torch.testing.assert_close(norms, torch.stack([weight.norm().expand(5), 2 * weight.norm().expand(5)]))


def test_interpolation_weight_is_drawn_per_sample():
    real, fake = torch.ones(2, 64, 1, 2, 2), torch.zeros(2, 64, 1, 2, 2)
    rngs = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    mix = random_interpolates(real, fake, rngs)
    per_sample = mix.flatten(2)
    assert torch.all(per_sample == per_sample[..., :1])  # one weight within a sample
    assert per_sample[..., 0].unique().numel() == 128  # a different weight for each sample and copy
    # Each copy's weights come from its own generator, as a single run with that generator draws them.
    alone = random_interpolates(real[1:], fake[1:], [torch.Generator().manual_seed(1)])
    assert torch.equal(alone[0], mix[1])
