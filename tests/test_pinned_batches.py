"""Every per-batch metric pinned to the batches of the exact W1, and the transport partner of
``grad_ot_cosine`` pinned by plans that are not the identity.

The truths do not come from the code under test: closed forms on constructed batches, scipy's
assignment solver for plans and W1, and recomputation on the batches recorded while the evaluation
draws them (which batch is ``x`` and which ``y`` is found from ``w1_exact``, not from the draw order).
"""

import functools
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from scipy.optimize import linear_sum_assignment
from torch import nn

from gan.critic_bench import evaluate as bench_evaluate
from gan.evaluation import evaluate
from gan.problems import Funnels, Translation
from metrics import known
from metrics.critic import GRAD_OT_COSINE, grad_ot_cosine
from metrics.stats import t_interval
from tests.conftest import compose_train

N = 24  # evaluation batch size; the other batch sizes differ so that recorded batches can be told apart
LARGE_N, BOX_POINTS = 40, 20
CRITIC_KEYS = ("critic_estimate", "critic_gap", "ctransform_bound", "grad_ot_cosine", "lipschitz_max")


@functools.cache
def _eval_cfg(draws):
    """The run's eval config at the test budget, with ``draws`` draws and no probe."""
    overrides = f"eval.draws={draws}", f"eval.batch_size={N}", f"eval.large_n={LARGE_N}", "eval.probe_every=0"
    return compose_train(*overrides).eval


@pytest.fixture(scope="module")
def objective():
    """The WGAN-GP objective as a run builds it: ``critic_values`` is ``(f(x), f(y))``."""
    return instantiate(compose_train("objective=wgan_gp").objective)


# ---------------------------------------------------------------------------------------------------
# Independent truths on given batches


def _np(t) -> np.ndarray:
    return torch.as_tensor(t).detach().double().reshape(len(t), -1).cpu().numpy()


def _cost(x, y) -> np.ndarray:
    return np.linalg.norm(_np(x)[:, None, :] - _np(y)[None, :, :], axis=-1)


def _assignment(x, y) -> tuple[float, np.ndarray]:
    """Exact W1 of equal-size clouds (scipy) and, for each generated point y_j, its real partner's index."""
    cost = _cost(x, y)
    rows, cols = linear_sum_assignment(cost)
    partner = np.empty(len(cols), dtype=int)
    partner[cols] = rows
    return float(cost[rows, cols].mean()), partner


def _mean_cosine(g, v) -> float:
    g, v = _np(g), _np(v)
    return float(np.mean((g * v).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(v, axis=1))))


def _rotate(v: np.ndarray, theta) -> np.ndarray:
    """Rows of ``v`` (k, 2) rotated by ``theta`` (scalar or (k,))."""
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], axis=1)


class _Critic(nn.Module):
    """``fn`` applied in float64 to flattened inputs; keeps a copy of every batch it is evaluated on."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.value(x)

    def value(self, x):  # unrecorded: for the expected values
        return self.fn(x.double().flatten(1)).reshape(-1)

    def grad(self, points):
        with torch.enable_grad():
            p = points.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.value(p).sum(), p)
        return g


def _mlp_critic(dim: int, seed: int = 0) -> _Critic:
    """A small tanh network with fixed random weights: a gradient that differs from point to point."""
    net = nn.Sequential(
        nn.Linear(dim, 16, dtype=torch.float64), nn.Tanh(), nn.Linear(16, 1, dtype=torch.float64)
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float64))
    return _Critic(net)


def _interpolates(seen, x, y, tol=1e-5):
    """Recorded batches other than ``x`` and ``y`` whose every row lies on the segment [y_i, x_i]."""
    out = []
    xs, ys = _np(x), _np(y)
    d = xs - ys
    for b in seen:
        if b.shape != x.shape or torch.equal(b, x) or torch.equal(b, y):
            continue
        t = ((_np(b) - ys) * d).sum(1) / (d * d).sum(1)
        resid = np.linalg.norm(_np(b) - ys - t[:, None] * d, axis=1)
        if np.all((t > -tol) & (t < 1 + tol) & (resid < tol * (1 + np.linalg.norm(d, axis=1)))):
            out.append(b)
    return out


def _expected(critic: _Critic, x, y) -> dict[str, float]:
    """The critic metrics of one pair of batches, recomputed: scipy W1 and plan, our own c-transform,
    gradients, cosines and gradient norms (at x, y and the interpolates of them the critic saw)."""
    w1, partner = _assignment(x, y)
    with torch.no_grad():
        fx, fy = critic.value(x).numpy(), critic.value(y).numpy()
    estimate = float(fx.mean() - fy.mean())
    g = critic.grad(y)
    mixed = _interpolates(critic.seen, x, y)
    assert mixed, "lipschitz_max: the critic never saw interpolates of the batches of w1_exact"
    norms = [np.linalg.norm(_np(critic.grad(p)), axis=1).max() for p in (x, y, *mixed)]
    return {
        "w1_exact": w1,
        "critic_estimate": estimate,
        "critic_gap": estimate - w1,
        "ctransform_bound": float(fx.mean() + (_cost(x, y) - fx[:, None]).min(0).mean()),
        "grad_ot_cosine": _mean_cosine(g, _np(x)[partner] - _np(y)),
        "lipschitz_max": float(max(norms)),
    }


def _pair_up(reals, fakes, w1_exact: float, draws: int):
    """The ``draws`` (real, generated) pairs of distinct recorded batches whose mean scipy W1 is the row's
    ``w1_exact``: the batches the evaluation compared, found without assuming the order of its draws."""
    w1 = {(i, j): _assignment(r, f)[0] for i, r in enumerate(reals) for j, f in enumerate(fakes)}
    found = [
        c
        for c in itertools.combinations(w1, draws)
        if len({i for i, _ in c}) == len({j for _, j in c}) == draws
        and abs(np.mean([w1[p] for p in c]) - w1_exact) <= 1e-12 * (1 + w1_exact)
    ]
    assert len(found) == 1, f"w1_exact={w1_exact} is the W1 of {len(found)} sets of recorded batches"
    return [(reals[i], fakes[j]) for i, j in found[0]]


# ---------------------------------------------------------------------------------------------------
# gan.evaluation.evaluate: a critic whose estimate on the evaluation's own batches is known exactly


E = torch.tensor([0.6, 0.8], dtype=torch.float64)  # a unit vector: all points lie on its line


class _LineData:
    """Real points ``s e`` with ``s ~ U[2, 3]``: on one line, every real point beyond every generated
    one, so any coupling costs ``mean s − mean t`` and ``u(z) = <z, e>`` is an optimal potential for
    *every* pair of batches: W1(x, y) = mean u(x) − mean u(y)."""

    shape, modes, std = (2,), None, None

    def sample(self, n, generator):
        return (2 + torch.rand(n, 1, generator=generator, dtype=torch.float64)) * E

    sample_heldout = sample


class _LineGenerator(nn.Module):
    """Generated points ``t e`` with ``t ~ U[0, 1]`` (the normal CDF of the latent)."""

    latent_dim = 1

    def forward(self, z):
        return torch.special.ndtr(z.double()) * E


@pytest.mark.parametrize("draws", [1, 3])
@pytest.mark.parametrize("slope", [1.0, 0.5, 1.75])
def test_critic_gap_of_a_known_critic_on_the_evaluations_own_batches(objective, draws, slope):
    # f = slope · u + 0.7: on the pair (x, y) of w1_exact its estimate is slope · W1(x, y), so the gap is
    # (slope − 1) · w1_exact and the relative error |slope − 1| in every draw (a zero ci95 says each draw
    # agrees). On any other real or generated batch the estimate moves with that batch's mean.
    critic = _Critic(lambda z: slope * (z @ E) + 0.7)
    rng = torch.Generator().manual_seed(11)
    row = evaluate(_LineGenerator(), critic, _LineData(), objective, _eval_cfg(draws), rng=rng, index=0)
    w1 = row["w1_exact"]
    assert row["critic_gap"] == pytest.approx((slope - 1) * w1, abs=1e-12), (
        f"critic_gap={row['critic_gap']!r} is not (slope - 1) * w1_exact = {(slope - 1) * w1!r}: "
        "the estimate is taken on other batches than the exact W1"
    )
    assert row["critic_rel_error"] == pytest.approx(abs(slope - 1), abs=1e-12), "critic_rel_error"
    assert row["critic_estimate"] == pytest.approx(slope * w1, abs=1e-12), "critic_estimate"
    assert row["lipschitz_max"] == pytest.approx(slope, abs=1e-12), "lipschitz_max"
    assert row["grad_ot_cosine"] == pytest.approx(1.0, abs=1e-12), "grad_ot_cosine"
    if slope == 1:  # (u, u^c) is an optimal dual pair on any two batches of the line
        assert row["ctransform_bound"] - w1 == pytest.approx(0.0, abs=1e-12), "ctransform_bound - w1_exact"
    if draws > 1:
        assert row["critic_rel_error_ci95"] == pytest.approx(0.0, abs=1e-12), (
            "critic_rel_error_ci95: some draw's estimate is not on that draw's batches of w1_exact"
        )
        if slope == 1:
            assert row["critic_gap_ci95"] == pytest.approx(0.0, abs=1e-12), "critic_gap_ci95"


# ---------------------------------------------------------------------------------------------------
# gan.evaluation.evaluate: every critic metric recomputed on the recorded batches


class _GaussianData:
    """2D Gaussian real points; keeps every batch it hands out."""

    shape, modes, std = (2,), None, None

    def __init__(self):
        self.batches, self.heldout = [], []

    def _draw(self, n, generator, into):
        x = torch.randn(n, 2, generator=generator, dtype=torch.float64) * 0.8 + torch.tensor([1.0, -0.5])
        into.append(x.clone())
        return x

    def sample(self, n, generator):
        return self._draw(n, generator, self.batches)

    def sample_heldout(self, n, generator):
        return self._draw(n, generator, self.heldout)


class _AffineGenerator(nn.Module):
    """An affine map of the latent; keeps every batch it generates."""

    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, z):
        y = z.double() @ torch.tensor([[0.7, 0.2], [-0.3, 0.9]], dtype=torch.float64) - 0.4
        self.batches.append(y.clone())
        return y


@pytest.mark.parametrize("draws", [1, 3])
def test_every_critic_metric_is_measured_on_the_batches_of_w1_exact(objective, draws):
    data, generator, critic = _GaussianData(), _AffineGenerator(), _mlp_critic(2)
    rng = torch.Generator().manual_seed(draws)
    row = evaluate(generator, critic, data, objective, _eval_cfg(draws), rng=rng, index=0)

    reals = [b for b in data.batches if len(b) == N]
    pairs = _pair_up(reals, [b for b in generator.batches if len(b) == N], row["w1_exact"], draws)
    per_draw = [_expected(critic, x, y) for x, y in pairs]
    for key in CRITIC_KEYS:
        values = [d[key] for d in per_draw]
        assert row[key] == pytest.approx(float(np.mean(values)), abs=1e-12), (
            f"{key}={row[key]!r}, but {float(np.mean(values))!r} on the batches of w1_exact"
        )
        if draws > 1:  # the spread pins each draw's value, not only their mean
            assert row[key + "_ci95"] == pytest.approx(t_interval(values)[1], abs=1e-12), f"{key}_ci95"
    w2 = []  # w2_exact on the same pairs: scipy on the squared cost
    for x, y in pairs:
        cost = _cost(x, y) ** 2
        rows, cols = linear_sum_assignment(cost)
        w2.append(math.sqrt(cost[rows, cols].mean()))
    assert row["w2_exact"] == pytest.approx(np.mean(w2), abs=1e-12), "w2_exact"
    # w1_real_real is W1 from each x to the draw's other real batch (some matching of the rest).
    others = [r for r in reals if not any(r is x for x, _ in pairs)]
    assert len(others) == draws
    candidates = [
        np.mean([_assignment(x, o)[0] for (x, _), o in zip(pairs, order, strict=True)])
        for order in itertools.permutations(others)
    ]
    assert min(abs(c - row["w1_real_real"]) for c in candidates) <= 1e-12, "w1_real_real"
    # Nothing else went through the critic: only the pairs of w1_exact and their interpolates.
    allowed = [b for x, y in pairs for b in (x, y, *_interpolates(critic.seen, x, y))]
    stray = [b for b in critic.seen if not any(torch.equal(b, a) for a in allowed)]
    assert not stray, f"the critic saw {len(stray)} batches that are not (x, y) of w1_exact or interpolates"


# ---------------------------------------------------------------------------------------------------
# grad_ot_cosine with plans that are not the identity
#
# Clusters 10 apart, each holding one generated point y_j and its real partner(s) within distance 1:
# any mass sent across clusters costs more than 7, so the optimal plan keeps each cluster's mass in it
# and is the cluster pairing (no potential needed; scipy confirms it).


def _clusters(k: int, seed: int):
    rng = np.random.default_rng(seed)
    grid = 10.0 * np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(-1, 2)[:k]
    y = grid + rng.uniform(-0.5, 0.5, (k, 2))
    angle = rng.uniform(0, 2 * np.pi, k)
    e = np.stack([np.cos(angle), np.sin(angle)], axis=1)  # unit direction from y_j to its partner(s)
    return rng, y, e, rng.uniform(0.5, 1.0, k)


FIELDS = {  # name -> angle between the field and the true direction (as a function of rng, k)
    "true": lambda rng, k: np.zeros(k),
    "rotated": lambda rng, k: np.full(k, 0.7),
    "per_point": lambda rng, k: rng.uniform(0, np.pi, k),
    "opposite": lambda rng, k: np.full(k, np.pi),
}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("solver", ["emd", "assignment", "auto"])
def test_grad_ot_cosine_follows_a_shuffled_permutation_plan(solver, field):
    k = 12
    rng, y, e, delta = _clusters(k, seed=1)
    order = rng.permutation(k)
    perm = np.empty(k, dtype=int)
    perm[order] = np.roll(order, 1)  # one k-cycle: no point keeps its index
    real = torch.from_numpy((y + delta[:, None] * e)[perm])  # real[i] is the partner of y[perm[i]]
    fake = torch.from_numpy(y)
    partner = np.argsort(perm)
    assert np.array_equal(_assignment(real, fake)[1], partner), "scipy disagrees with the cluster plan"
    assert np.all(partner != np.arange(k)), "the plan must not be the identity"
    theta = FIELDS[field](rng, k)
    grad = torch.from_numpy(_rotate(e, theta) * rng.uniform(0.5, 3.0, (k, 1)))  # lengths do not count
    cosine = grad_ot_cosine(grad, real, fake, solver=solver)[GRAD_OT_COSINE]
    assert cosine == pytest.approx(float(np.cos(theta).mean()), abs=1e-12), (
        f"grad_ot_cosine={cosine!r}, expected {float(np.cos(theta).mean())!r} for the shuffled partners"
    )


@pytest.mark.parametrize("solver", ["emd", "auto"])
def test_grad_ot_cosine_uses_the_barycentre_of_a_split_plan(solver):
    # Two real points per generated one, at angles ±φ_j from e_j and distance δ_j: the plan splits y_j's
    # mass between them and the partner is their mean, y_j + δ_j cos φ_j e_j. A field along e_j rotated
    # by θ_j gives mean cos θ_j; one pointing at a single partner (θ_j = φ_j) gives mean cos φ_j, not 1.
    k = 10
    rng, y, e, delta = _clusters(k, seed=2)
    phi = rng.uniform(0.3, 1.2, k)
    plus, minus = (y + delta[:, None] * _rotate(e, s * phi) for s in (1, -1))
    shuffle = rng.permutation(2 * k)
    real = torch.from_numpy(np.concatenate([plus, minus])[shuffle])
    fake = torch.from_numpy(y)
    # scipy on y_j twice (mass 1/(2k) each): the copies of y_j go to plus_j and minus_j (indices j, j + k).
    _, partner = _assignment(real, torch.from_numpy(np.repeat(y, 2, axis=0)))
    pairs = np.sort(shuffle[partner].reshape(k, 2), axis=1)
    assert np.array_equal(pairs, np.stack([np.arange(k), np.arange(k) + k], 1)), (
        "scipy disagrees with the plan"
    )
    for theta in (np.zeros(k), np.full(k, 0.4), rng.uniform(0, np.pi, k), phi):
        grad = torch.from_numpy(_rotate(e, theta))
        cosine = grad_ot_cosine(grad, real, fake, solver=solver)[GRAD_OT_COSINE]
        expected = float(np.cos(theta).mean())
        assert cosine == pytest.approx(expected, abs=1e-12), (
            f"grad_ot_cosine={cosine!r}, expected {expected!r} against the barycentric partner"
        )


# ---------------------------------------------------------------------------------------------------
# The critic bench's evaluate


BENCH_CFG = SimpleNamespace(batch_size=N, solver="auto", box_points=BOX_POINTS)


class _RecordingProblem:
    """A critic-bench problem that keeps every coupled batch pair ``(p, q)`` it samples."""

    def __init__(self, problem):
        self.problem = problem
        self.batches = []

    def sample(self, n, generator):
        p, q = self.problem.sample(n, generator)
        self.batches.append((p.clone(), q.clone()))
        return p, q

    def __getattr__(self, name):
        return getattr(self.problem, name)


@pytest.mark.parametrize(
    "make",
    [lambda: Translation(dim=3, shift=0.8), lambda: Funnels(dim=3, mc_samples=2000)],
    ids=["translation", "funnels"],
)
def test_bench_metrics_are_measured_on_the_batches_of_w1_exact(objective, make):
    problem = _RecordingProblem(make())
    truth = problem.truth()
    critic = _mlp_critic(3)
    row = bench_evaluate(critic, problem, objective, BENCH_CFG, truth, rng=torch.Generator().manual_seed(5))

    reals, fakes = [q for _, q in problem.batches], [p for p, _ in problem.batches]
    [(x, y)] = _pair_up(reals, fakes, row["w1_exact"], 1)
    expected = _expected(critic, x, y)
    box = [b for b in critic.seen if len(b) == BOX_POINTS]
    assert len(box) == 1, "the critic should see one batch of box points"
    lip_box = float(np.linalg.norm(_np(critic.grad(box[0])), axis=1).max())
    g, g_true = _np(critic.grad(y)), _np(problem.grad_true(y))
    w1_true = truth[known.W1_TRUE]
    expected |= {
        "lipschitz_max": max(expected["lipschitz_max"], lip_box),
        known.LIPSCHITZ_MAX_BOX: lip_box,
        known.TRUE_GAP: expected["critic_estimate"] - w1_true,
        known.TRUE_REL_ERROR: abs(expected["critic_estimate"] - w1_true) / w1_true,
        known.GRAD_TRUE_COSINE: _mean_cosine(g, g_true),
        known.GRAD_ERROR: float(((g - g_true) ** 2).sum() / (g_true**2).sum()),
    }
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-12), (
            f"{key}={row[key]!r}, but {value!r} on the batches of w1_exact"
        )
    allowed = [x, y, *_interpolates(critic.seen, x, y), *box]
    stray = [b for b in critic.seen if not any(torch.equal(b, a) for a in allowed)]
    assert not stray, f"the critic saw {len(stray)} batches that are not (x, y) of w1_exact or interpolates"


class _FinitePairs:
    """``P`` and ``Q`` uniform on ``N`` fixed pairs ``(p_i, q_i)`` of an optimal coupling; each sample is
    the whole set in a fresh random order. Any batch of ``Q`` against any batch of ``P`` then has the
    distributions' own W1, ``mean ‖q_i − p_i‖``, as exact minibatch W1, and the pairing as plan: a
    permutation, not the identity when the two orders differ."""

    def __init__(self, p, q, grad_true):
        self.p, self.q, self.grad_true = p, q, grad_true
        self.perms = []

    def sample(self, n, generator):
        assert n == len(self.p)
        perm = torch.randperm(n, generator=generator)
        self.perms.append(perm)
        return self.p[perm], self.q[perm]

    def bounds(self):
        both = torch.cat([self.p, self.q])
        return both.min(0).values, both.max(0).values

    def truth(self):
        return {known.W1_TRUE: float((self.q - self.p).norm(dim=1).mean()), known.W1_TRUE_CI95: 0.0}


def _bench_on_pairs(objective, problem, critic):
    row = bench_evaluate(
        critic, problem, objective, BENCH_CFG, problem.truth(), rng=torch.Generator().manual_seed(0)
    )
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(problem.perms, 2)), "identity plan"
    return row


@pytest.mark.parametrize(("scale", "theta"), [(1.0, 0.0), (0.5, 0.0), (2.0, 0.0), (1.0, 0.6), (1.5, 2.0)])
def test_bench_scaled_and_rotated_translation_potential(objective, scale, theta):
    # u(z) = <z, e> with e = m/|m|, |m| = 1; the critic scale · <z, R_θ e> has the constant gradient
    # scale · R_θ e: cosine cos θ to the truth and to every move of the plan (all equal to m), estimate
    # scale · cos θ on any pair of batches of the set, so critic_true_rel_error = |scale cos θ − 1|.
    m = torch.tensor([0.6, 0.8], dtype=torch.float64)
    p = 2 * torch.rand(N, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) - 1
    problem = _FinitePairs(p, p + m, lambda z: m.to(z).expand_as(z))
    direction = torch.from_numpy(_rotate(m[None].numpy(), theta)[0])
    row = _bench_on_pairs(objective, problem, _Critic(lambda z: scale * (z @ direction)))
    cos = math.cos(theta)
    assert row["w1_exact"] == pytest.approx(1.0, abs=1e-12), "w1_exact"
    assert row[known.TRUE_REL_ERROR] == pytest.approx(abs(scale * cos - 1), abs=1e-12), known.TRUE_REL_ERROR
    assert row["critic_rel_error"] == pytest.approx(abs(scale * cos - 1), abs=1e-12), "critic_rel_error"
    assert row[known.GRAD_TRUE_COSINE] == pytest.approx(cos, abs=1e-12), known.GRAD_TRUE_COSINE
    assert row[known.GRAD_ERROR] == pytest.approx(scale**2 - 2 * scale * cos + 1, abs=1e-12), known.GRAD_ERROR
    assert row["grad_ot_cosine"] == pytest.approx(cos, abs=1e-12), (
        f"grad_ot_cosine={row['grad_ot_cosine']!r}, expected cos θ = {cos!r} along the permutation plan"
    )


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_bench_scaled_funnel_potential(objective, scale):
    # The pairs move along rays of slope 1 of u, so on any pair of batches of the set c · u estimates
    # c · W1 and its gradient points along every move of the plan: relative errors |c − 1|, cosines 1.
    centres, offsets = known.funnel_layout(dim=3, n_funnels=3, generator=torch.Generator().manual_seed(4))
    p, q, _ = known.sample_funnels(
        N, centres=centres, offsets=offsets, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    problem = _FinitePairs(p, q, lambda z: known.funnel_potential_grad(z, centres, offsets))
    row = _bench_on_pairs(
        objective, problem, _Critic(lambda z: scale * known.funnel_potential(z, centres, offsets))
    )
    w1 = problem.truth()[known.W1_TRUE]
    assert row["w1_exact"] == pytest.approx(w1, abs=1e-12), "w1_exact"
    assert row[known.TRUE_REL_ERROR] == pytest.approx(abs(scale - 1), abs=1e-12), known.TRUE_REL_ERROR
    assert row["critic_gap"] == pytest.approx((scale - 1) * w1, abs=1e-12), "critic_gap"
    assert row[known.GRAD_TRUE_COSINE] == pytest.approx(1.0, abs=1e-12), known.GRAD_TRUE_COSINE
    assert row["grad_ot_cosine"] == pytest.approx(1.0, abs=1e-12), (
        f"grad_ot_cosine={row['grad_ot_cosine']!r}, expected 1 along the permutation plan"
    )
