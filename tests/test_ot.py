"""metrics.ot against truths independent of it: closed forms, 1D quantiles, a second solver, duality."""

import math
import warnings

import numpy as np
import pytest
import torch

from metrics.ot import OT_NONOPTIMAL, W1_EXACT, W2_EXACT, batch_distances, cost_matrix, solve, wasserstein


def quantile_wasserstein_1d(x, y, p):
    """W_p between uniform 1D clouds of any sizes: (∫_0^1 |F_x^{-1}(t) − F_y^{-1}(t)|^p dt)^{1/p},
    integrated exactly over the merged breakpoints k/n and l/m of the two step quantile functions."""
    x, y = np.sort(np.asarray(x, float)), np.sort(np.asarray(y, float))
    n, m = len(x), len(y)
    cuts = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        mid = (lo + hi) / 2
        total += (hi - lo) * abs(x[min(int(mid * n), n - 1)] - y[min(int(mid * m), m - 1)]) ** p
    return total ** (1 / p)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("d", [1, 2, 50, 784])
def test_translation_gives_the_shift_norm(p, d):
    # W_p(μ, μ + m) = ‖m‖ for every p: moving each point by m is optimal (cyclical monotonicity).
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(64, d, generator=gen, dtype=torch.float64)
    shift = torch.randn(d, generator=gen, dtype=torch.float64)
    shift *= 0.3 / shift.norm()  # small against the spread, so the problem is not trivially separated
    assert wasserstein(x, x + shift, p=p) == pytest.approx(0.3, rel=1e-9)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize(("n", "m"), [(50, 50), (37, 80), (1, 9)])
def test_one_dimension_matches_quantile_formula(p, n, m):
    rng = np.random.default_rng(n * 100 + m)
    x, y = rng.normal(size=(n, 1)), rng.exponential(size=(m, 1))
    assert wasserstein(x, y, p=p) == pytest.approx(quantile_wasserstein_1d(x[:, 0], y[:, 0], p), rel=1e-9)


def test_one_dimension_sorted_pairs_for_equal_sizes():
    # For equal sizes the quantile formula is the mean over sorted pairs.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=200), rng.normal(loc=1.0, scale=2.0, size=200)
    expected = np.mean(np.abs(np.sort(x) - np.sort(y)))
    for solver in ("emd", "assignment"):
        assert wasserstein(x[:, None], y[:, None], solver=solver) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize(("n", "d"), [(10, 2), (100, 2), (100, 64), (300, 3072)])
def test_network_simplex_and_assignment_agree(p, n, d):
    rng = np.random.default_rng(n + d)
    x, y = rng.normal(size=(n, d)), rng.normal(loc=0.2, size=(n, d))
    emd = solve(x, y, p=p, solver="emd")
    lsa = solve(x, y, p=p, solver="assignment")
    assert emd.converged and lsa.converged
    assert emd.cost == pytest.approx(lsa.cost, rel=1e-10)
    for plan in (emd.plan, lsa.plan):
        np.testing.assert_allclose(plan.sum(axis=1), 1 / n, atol=1e-12)
        np.testing.assert_allclose(plan.sum(axis=0), 1 / n, atol=1e-12)


def test_gaussian_closed_form_bounds_minibatch_w2():
    # W2²(N(μ1, Σ1), N(μ2, Σ2)) = ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ2^½ Σ1 Σ2^½)^½); with diagonal
    # covariances the last term is Σ_k (σ1k − σ2k)². W2² is jointly convex, so the mean minibatch value
    # is at least the population value, and the excess shrinks as n grows.
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, -0.5])
    s1, s2 = np.array([1.0, 0.5]), np.array([0.7, 1.2])
    truth = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    rng = np.random.default_rng(0)

    def mean_minibatch_w2sq(n, draws):
        vals = [
            wasserstein(mu1 + s1 * rng.normal(size=(n, 2)), mu2 + s2 * rng.normal(size=(n, 2)), p=2) ** 2
            for _ in range(draws)
        ]
        return np.mean(vals), np.std(vals) / math.sqrt(draws)

    small, small_se = mean_minibatch_w2sq(32, 60)
    large, large_se = mean_minibatch_w2sq(512, 10)
    assert small - 3 * small_se > truth  # biased upward at small n
    assert large + 3 * large_se > truth  # never significantly below the population value
    assert large < small  # and the bias shrinks
    assert abs(large - truth) < 0.1 * truth


def test_duality_lower_bound_for_one_lipschitz_functions():
    # Any 1-Lipschitz f gives mean f(x) − mean f(y) ≤ W1(x, y).
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(80, 5)), rng.normal(loc=0.5, size=(80, 5))
    w1 = wasserstein(x, y)
    for _ in range(20):
        c = rng.normal(size=5)
        u = rng.normal(size=5)
        u /= np.linalg.norm(u)
        for f in (lambda z, u=u: z @ u, lambda z, c=c: -np.linalg.norm(z - c, axis=1)):
            assert f(x).mean() - f(y).mean() <= w1 + 1e-12


def test_basic_properties():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    assert wasserstein(x, x) == 0.0
    assert wasserstein(x, y) == pytest.approx(wasserstein(y, x), rel=1e-12)
    assert wasserstein(x, y, p=1) <= wasserstein(x, y, p=2) + 1e-12  # Jensen
    # Images are flattened; numpy and torch give the same value.
    imgs = torch.as_tensor(rng.normal(size=(40, 1, 2, 3)))
    assert wasserstein(imgs, imgs.flip(0) + 1) == pytest.approx(
        wasserstein(imgs.flatten(1), imgs.flatten(1) + 1)
    )


def test_cost_matrix_is_euclidean_not_squared():
    c = cost_matrix(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]))
    assert c[0, 0] == pytest.approx(5.0)
    assert cost_matrix(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]), p=2)[0, 0] == pytest.approx(25.0)


def test_iteration_cap_is_reported_not_silent():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    with pytest.warns(RuntimeWarning, match="did not reach optimality") as caught:
        capped = solve(x, y, solver="emd", max_iter=1)
    assert any("numItermax" in str(w.message) for w in caught)  # POT's own warning is not swallowed
    assert not capped.converged
    # A capped solve is simply wrong: here its plan is not even feasible, and its cost is off the optimum.
    assert capped.cost != pytest.approx(solve(x, y, solver="assignment").cost, rel=1e-3)


def test_batch_distances_keys_and_values():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converged solve warns about nothing
        out = batch_distances(x, y)
    assert set(out) == {W1_EXACT, W2_EXACT, OT_NONOPTIMAL}
    assert out[OT_NONOPTIMAL] == 0
    assert out[W1_EXACT] == pytest.approx(wasserstein(x, y, solver="assignment"))
    assert out[W2_EXACT] == pytest.approx(wasserstein(x, y, p=2, solver="assignment"))


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="same number of features"):
        wasserstein(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="equal sizes"):
        solve(np.zeros((3, 2)), np.zeros((4, 2)), solver="assignment")
    with pytest.raises(ValueError, match="solver must be one of"):
        solve(np.zeros((3, 2)), np.zeros((3, 2)), solver="sinkhorn")
