"""Critic diagnostics against independent truths: duality, a translated cloud, spectral normalisation."""

import math

import numpy as np
import ot
import pytest
import torch
from torch import nn

from gan.copies import Single
from gan.evaluation import critic_values
from gan.objectives import WGANSN, CEpsTransform, CTransform, c_transform, soft_c_transform
from metrics.critic import (
    CRITIC_ESTIMATE,
    CTRANSFORM_BOUND,
    GRAD_OT_COSINE,
    LIPSCHITZ_MAX,
    critic_vs_w1,
    ctransform_bound,
    grad_ot_cosine,
    input_gradients,
    lipschitz_max,
)
from metrics.ot import cost_matrix, torch_cost_matrix, wasserstein


class LinearCritic(nn.Module):
    """f(x) = <w, flatten(x)> + b, shape (B,)."""

    def __init__(self, in_features: int, weight=None):
        super().__init__()
        self.linear = nn.Linear(in_features, 1, dtype=torch.float64)
        if weight is not None:
            with torch.no_grad():
                self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float64).reshape(1, -1))

    def forward(self, x):
        return self.linear(x.flatten(1)).squeeze(1)


def _translated_cloud(n=96, d=3, seed=0):
    # Real = fake + m: the plan is the translation (unique for a generic cloud) and f(z) = <z, m/|m|>
    # is an optimal potential, so W1 = |m|.
    gen = torch.Generator().manual_seed(seed)
    fake = torch.randn(n, d, generator=gen, dtype=torch.float64)
    m = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)[:d]
    return fake + m, fake, m


@pytest.mark.parametrize("seed", range(12))
def test_ctransform_bound_never_exceeds_exact_w1(seed):
    # Any values f(x_i), Lipschitz or not, give a feasible dual pair (f, f^c), hence a lower bound.
    rng = np.random.default_rng(seed)
    n, m, d = rng.integers(2, 40), rng.integers(2, 40), rng.integers(1, 6)
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(n, d, generator=gen)
    shift = torch.from_numpy(rng.normal(size=d)).float()
    fake = torch.randn(m, d, generator=gen) * rng.uniform(0.2, 3) + shift
    w1 = wasserstein(real, fake, solver="emd")
    net = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 1))
    for f_real in (
        torch.randn(n, generator=gen) * 10 ** rng.uniform(-2, 2),
        net(real).squeeze(1),
        torch.zeros(n),
    ):
        assert ctransform_bound(f_real, real, fake)[CTRANSFORM_BOUND] <= w1 + 1e-12


def test_ctransform_bound_reaches_w1_at_the_optimal_dual_potential():
    # Strong duality: with POT's optimal potential u on the real points, (u, u^c) attains W1.
    gen = torch.Generator().manual_seed(3)
    real, fake = torch.randn(30, 2, generator=gen), torch.randn(40, 2, generator=gen) + 1
    cost = cost_matrix(real, fake)
    _, log = ot.emd(np.full(30, 1 / 30), np.full(40, 1 / 40), cost, log=True)
    bound = ctransform_bound(torch.from_numpy(log["u"]), real, fake)[CTRANSFORM_BOUND]
    assert bound == pytest.approx(wasserstein(real, fake, solver="emd"), abs=1e-9)


def test_optimal_critic_on_a_translation_gives_w1_and_cosine_one():
    real, fake, m = _translated_cloud()
    critic = LinearCritic(3, m / m.norm())
    w1 = wasserstein(real, fake)
    assert w1 == pytest.approx(float(m.norm()), rel=1e-9)
    with torch.no_grad():
        out = critic_vs_w1(critic(real), critic(fake), w1)
    assert out[CRITIC_ESTIMATE] == pytest.approx(w1, rel=1e-9)
    grad = input_gradients(critic, fake)
    assert grad_ot_cosine(grad, real, fake)[GRAD_OT_COSINE] == pytest.approx(1.0, abs=1e-12)
    assert grad_ot_cosine(-grad, real, fake)[GRAD_OT_COSINE] == pytest.approx(-1.0, abs=1e-12)
    assert lipschitz_max(critic, real, fake)[LIPSCHITZ_MAX] == pytest.approx(1.0, rel=1e-9)
    assert ctransform_bound(critic(real), real, fake)[CTRANSFORM_BOUND] == pytest.approx(w1, rel=1e-9)


@pytest.mark.parametrize("objective_cls", [CTransform, CEpsTransform])
def test_ctransform_objective_with_the_optimal_potential_moves_points_along_the_plan(objective_cls):
    # f = <., u> on the real points: f^c(y_j) = -<y_j, u>, attained at x_j, so the generator is pushed
    # straight at its partner. The hard transform's dual value is W1; the soft one lies within eps log n.
    real, fake, m = _translated_cloud(seed=1)
    critic = LinearCritic(3, m / m.norm())
    kwargs = {"eps": 1e-3} if objective_cls is CEpsTransform else {}
    objective = objective_cls(1, None, None, **kwargs)
    with torch.no_grad():
        f_real, f_fake = critic_values(objective, critic, real, fake)
    estimate = float(f_real.mean() - f_fake.mean())
    w1 = wasserstein(real, fake)
    tol = 1e-9 if objective_cls is CTransform else 1e-3 * math.log(len(real))
    assert abs(estimate - w1) <= tol
    grad = input_gradients(lambda y: critic_values(objective, critic, real, y)[1], fake)
    # The soft-min's gradient averages the directions to near-minimisers, weighted by exp(-gap / eps).
    assert grad_ot_cosine(grad, real, fake)[GRAD_OT_COSINE] == pytest.approx(1.0, abs=tol)


def test_grad_ot_cosine_orthogonal_zero_and_unequal_sizes():
    real, fake, m = _translated_cloud(n=64)
    u = m / m.norm()
    ortho = torch.linalg.svd(u[None, :]).Vh[1]  # a unit vector orthogonal to the displacement
    assert grad_ot_cosine(ortho.expand(64, 3), real, fake)[GRAD_OT_COSINE] == pytest.approx(0, abs=1e-12)
    assert grad_ot_cosine(torch.zeros(64, 3), real, fake)[GRAD_OT_COSINE] == 0.0
    assert math.isnan(grad_ot_cosine(torch.ones(64, 3), fake, fake)[GRAD_OT_COSINE])
    # Two real points per generated one, both shifted by m: the barycentric partner is still y + m.
    doubled = torch.cat([real, real])
    assert grad_ot_cosine(u.expand(64, 3), doubled, fake)[GRAD_OT_COSINE] == pytest.approx(1.0, abs=1e-9)


def test_lipschitz_max_takes_the_norm_over_all_non_batch_dimensions():
    weight = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    critic = LinearCritic(24, 3 * weight / weight.norm())
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(8, 2, 3, 4, generator=gen, dtype=torch.float64)
    fake = torch.randn(8, 2, 3, 4, generator=gen, dtype=torch.float64)
    assert lipschitz_max(critic, real, fake)[LIPSCHITZ_MAX] == pytest.approx(3.0, rel=1e-12)


def test_lipschitz_max_sees_interpolated_points():
    # A tent on (0, 1): autograd gives slope 0 at the real (x = 1) and generated (x = 0) points, where
    # the relu's argument is 0, and slope 1 in between, where only the interpolates fall.
    def critic(x):
        return torch.relu(0.5 - (x - 0.5).abs()).flatten(1).sum(1)

    real, fake = torch.ones(32, 1, dtype=torch.float64), torch.zeros(32, 1, dtype=torch.float64)
    assert lipschitz_max(critic, real, fake, seed=0)[LIPSCHITZ_MAX] == 1.0


def test_spectral_normalisation_keeps_a_linear_critic_1_lipschitz():
    d = 5
    critic = LinearCritic(d, torch.arange(1.0, d + 1) * 3)  # |w| ≈ 22 before normalisation
    objective = WGANSN(1, None, None, power_iterations=1)
    critic = objective.prepare_critic(critic)
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(64, d, generator=gen, dtype=torch.float64) + 2
    fake = torch.randn(64, d, generator=gen, dtype=torch.float64)
    assert lipschitz_max(critic, real, fake)[LIPSCHITZ_MAX] <= 1 + 1e-9
    opt = torch.optim.Adam(critic.parameters(), lr=0.05)
    copies, real1, fake1 = Single(critic), real[None], fake[None]
    for _ in range(20):
        objective.critic_step(copies, opt, real1, fake1, [gen])
        # For a 1 x d weight one power iteration is exact, so the bound holds to round-off.
        assert lipschitz_max(critic, real, fake)[LIPSCHITZ_MAX] <= 1 + 1e-9
    # Outside after_critic_step the power-iteration state is left alone (evaluation, plots, generator).
    state = {k: v.clone() for k, v in critic.state_dict().items()}
    critic(real)
    objective.critic_loss(copies, real1, fake1, [gen])
    objective.generator_loss(copies, real1, fake1)["loss"].sum().backward()
    assert all(torch.equal(state[k], v) for k, v in critic.state_dict().items())


def test_entropic_c_transform_tends_to_the_c_transform():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 2, generator=gen, dtype=torch.float64), torch.randn(40, 2, generator=gen)
    cost = torch_cost_matrix(x, y.double())
    f = torch.randn(50, generator=gen, dtype=torch.float64)
    hard = c_transform(f, cost)
    assert torch.allclose(hard, (cost - f[:, None]).min(0).values)
    errors = []
    for eps in (1.0, 0.1, 1e-2, 1e-3, 1e-4):
        soft = soft_c_transform(f, cost, eps)
        # A soft-min, not a soft-max: between the min and the min plus eps log n.
        assert torch.all(soft >= hard - 1e-12)
        assert torch.all(soft <= hard + eps * math.log(50) + 1e-12)
        errors.append(float((soft - hard).abs().max()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3
    # The hard transform in float64 gives exactly the logged c-transform bound.
    bound = ctransform_bound(f, x, y)[CTRANSFORM_BOUND]
    assert float(f.mean() + hard.mean()) == pytest.approx(bound, abs=1e-12)
