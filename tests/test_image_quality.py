"""Image-quality metrics (metrics/quality.py) against closed forms and references written here."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.ndimage import gaussian_filter
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd

import metrics.quality as quality
from gan.data import Digits, MNIST5k
from metrics.quality import (
    CLASSES_COVERED,
    FID,
    KID_MEAN,
    KID_STD,
    LABEL_ENTROPY,
    PRECISION,
    PREDICTION_ENTROPY,
    RECALL,
    SHARPNESS,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    gradient_energy,
    kernel_distance,
    label_statistics,
    polynomial_kernel,
    precision_recall,
    sharpness,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _random_cov(d, seed):
    a = _randn(d, d, seed=seed)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Fréchet distance -------------------------------------------------------------------------------


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
    # Commuting covariances: d² = ‖μ1 − μ2‖² + Σ_k (√a_k − √b_k)².
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 1.0, -2.0])
    expected = float((m1 - m2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d", [1, 5, 32])
def test_frechet_distance_matches_the_sqrtm_formula_and_torchmetrics(d):
    # The classic form tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) with scipy's general matrix square root, and
    # torchmetrics' eigenvalue form: two independent references for the symmetric form used here.
    s1, s2 = _random_cov(d, 1), _random_cov(d, 2)
    m1, m2 = _randn(d, seed=3), _randn(d, seed=4)
    cross = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    reference = float((m1 - m2).square().sum()) + np.trace(s1.numpy() + s2.numpy() - 2 * cross)
    value = frechet_distance(m1, s1, m2, s2)
    assert value == pytest.approx(reference, rel=1e-9)
    assert value == pytest.approx(float(_compute_fid(m1, s1, m2, s2)), rel=1e-9)
    assert value == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-9)  # symmetric


def test_feature_statistics_match_numpy():
    f = _randn(50, 4, seed=5)
    mu, sigma = feature_statistics(f)
    np.testing.assert_allclose(mu.numpy(), f.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(f.numpy(), rowvar=False), rtol=1e-12)


def test_fid_of_a_sample_with_itself_is_zero_and_a_translation_gives_its_squared_length():
    f = _randn(300, 16, seed=6)
    assert fid_from_features(f, f)[FID] == pytest.approx(0.0, abs=1e-9)
    # Same covariance, means apart by m: FID = ‖m‖² exactly (a singular-covariance case too: n < d).
    shift = torch.linspace(-1, 1, 16, dtype=torch.float64)
    assert fid_from_features(f, f + shift)[FID] == pytest.approx(float(shift.square().sum()), rel=1e-9)
    g = f[:10]
    assert fid_from_features(g, g + shift)[FID] == pytest.approx(float(shift.square().sum()), rel=1e-7)


# --- KID --------------------------------------------------------------------------------------------


def _unbiased_mmd2_loops(x, y, degree=3, coef=1.0):
    """The unbiased MMD² written out with explicit sums over i ≠ j (Gretton et al. 2012, Lemma 6)."""
    x, y = x.numpy(), y.numpy()
    d, m = x.shape[1], len(x)

    def k(a, b):
        return (a @ b / d + coef) ** degree

    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (kxx + kyy) / (m * (m - 1)) - 2 * kxy / m**2


def test_kid_on_whole_sets_matches_loops_and_torchmetrics():
    # subset_size = n = m: every subset is the whole set, so the mean is the full-sample estimate.
    x, y = _randn(30, 4, seed=7), _randn(30, 4, seed=8) + 0.3
    out = kernel_distance(x, y, subsets=3, subset_size=30)
    assert out[KID_MEAN] == pytest.approx(_unbiased_mmd2_loops(x, y), rel=1e-10)
    assert out[KID_MEAN] == pytest.approx(float(poly_mmd(x, y)), rel=1e-10)
    assert out[KID_STD] == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_from_full_kernels_equal_subsets_computed_one_by_one(monkeypatch):
    x, y = _randn(80, 6, seed=9), _randn(60, 6, seed=10) * 1.2
    full = kernel_distance(x, y, subsets=20, subset_size=25, seed=3)
    monkeypatch.setattr(quality, "_KID_FULL_KERNEL_MAX", 0)
    one_by_one = kernel_distance(x, y, subsets=20, subset_size=25, seed=3)
    assert one_by_one[KID_MEAN] == pytest.approx(full[KID_MEAN], rel=1e-10)
    assert one_by_one[KID_STD] == pytest.approx(full[KID_STD], rel=1e-8)
    assert full[KID_STD] > 0
    assert kernel_distance(x, y, subsets=20, subset_size=25, seed=3) == one_by_one  # seeded: reproducible


def test_kid_unbiased_estimator_has_the_known_population_value():
    # d = 1: k(x, y) = (x y + 1)³ = x³y³ + 3x²y² + 3xy + 1, so for independent samples
    # MMD² = (E X³ − E Y³)² + 3 (E X² − E Y²)² + 3 (E X − E Y)². With X ~ U[−1, 1] and Y = X' + s:
    # E Y − E X = s, E Y² − E X² = s², E Y³ − E X³ = 3 s E X² + s³ = s + s³.
    s = 0.25
    truth = (s + s**3) ** 2 + 3 * (s**2) ** 2 + 3 * s**2
    reps, n = 1000, 50
    gen = torch.Generator().manual_seed(11)
    unbiased, biased = [], []
    for _ in range(reps):  # independent replicates: the mean of an unbiased estimator converges to truth
        x = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 - 1
        y = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 - 1 + s
        unbiased.append(kernel_distance(x, y, subsets=1, subset_size=n)[KID_MEAN])
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        biased.append(float(k_xx.mean() + k_yy.mean() - 2 * k_xy.mean()))  # keeps the i = j terms
    se = np.std(unbiased, ddof=1) / math.sqrt(reps)
    # 4 standard errors: a correct estimator fails by chance with p < 1e-4 ...
    assert abs(np.mean(unbiased) - truth) < 4 * se
    # ... and the test has the power to see the bias of the estimator that keeps the diagonal.
    assert np.mean(biased) - truth > 4 * se


def test_polynomial_kernel_defaults():
    x, y = _randn(3, 4, seed=12), _randn(2, 4, seed=13)
    np.testing.assert_allclose(polynomial_kernel(x, y).numpy(), ((x @ y.T / 4 + 1) ** 3).numpy(), rtol=1e-12)


# --- precision and recall ---------------------------------------------------------------------------


def _precision_recall_loops(real, fake, k):
    real, fake = real.numpy(), fake.numpy()

    def radii(a):
        d = np.linalg.norm(a[:, None] - a[None], axis=2)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    r_real, r_fake = radii(real), radii(fake)
    cross = np.linalg.norm(fake[:, None] - real[None], axis=2)  # (m, n)
    precision = np.mean([any(cross[j, i] <= r_real[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(cross[j, i] <= r_fake[j] for j in range(len(fake))) for i in range(len(real))])
    return precision, recall


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_matches_the_definition(k):
    real, fake = _randn(60, 3, seed=14), _randn(50, 3, seed=15) * 0.7 + 0.8
    out = precision_recall(real, fake, k=k)
    assert (out[PRECISION], out[RECALL]) == pytest.approx(_precision_recall_loops(real, fake, k), abs=1e-12)
    assert precision_recall(real, fake, k=k, chunk=7) == out  # chunking changes memory only


def test_precision_recall_separates_quality_from_coverage():
    real = _randn(400, 2, seed=16)
    assert precision_recall(real, real) == {PRECISION: 1.0, RECALL: 1.0}
    assert precision_recall(real, real + 100.0) == {PRECISION: 0.0, RECALL: 0.0}
    # A generator that only produces the left half of the real data: realistic but not diverse.
    left = real[real[:, 0] < 0]
    out = precision_recall(real, left)
    assert out[PRECISION] == 1.0 and 0.35 < out[RECALL] < 0.7


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="dimension"):
        fid_from_features(_randn(10, 3), _randn(10, 4))
    with pytest.raises(ValueError, match="k=10"):
        precision_recall(_randn(10, 3), _randn(10, 3), k=10)
    with pytest.raises(ValueError, match="non-finite"):
        kernel_distance(torch.full((5, 2), float("nan")), _randn(5, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        label_statistics(torch.ones(4, 3))


# --- label statistics -------------------------------------------------------------------------------


def test_label_statistics_of_balanced_collapsed_and_unsure_predictions():
    k = 10
    balanced = torch.eye(k).repeat(20, 1)
    assert label_statistics(balanced) == pytest.approx(
        {LABEL_ENTROPY: math.log(k), CLASSES_COVERED: k, PREDICTION_ENTROPY: 0.0}
    )
    collapsed = torch.eye(k)[torch.zeros(200, dtype=torch.long)]
    assert label_statistics(collapsed) == pytest.approx(
        {LABEL_ENTROPY: 0.0, CLASSES_COVERED: 1, PREDICTION_ENTROPY: 0.0}
    )
    unsure = torch.full((50, k), 1.0 / k)
    out = label_statistics(unsure)
    assert out[LABEL_ENTROPY] == pytest.approx(math.log(k)) and out[PREDICTION_ENTROPY] == pytest.approx(
        math.log(k)
    )
    # Classes 0..4 get 30 images each, 5..9 get 10 (200 in all): a class needs min_share · 200 / 10,
    # 4 images with min_share = 0.2 and 12 with min_share = 0.6.
    labels = torch.cat([torch.arange(5).repeat(30), torch.arange(5, 10).repeat(10)])
    assert label_statistics(torch.eye(k)[labels])[CLASSES_COVERED] == 10
    assert label_statistics(torch.eye(k)[labels], min_share=0.6)[CLASSES_COVERED] == 5


# --- on real images (pixel features): the scale the tests in test_images.py rely on ------------------


def test_fid_and_kid_between_real_halves_are_far_below_real_against_noise():
    data = Digits()
    real, _ = data.split("train")
    real = real.flatten(1).double()
    half_a, half_b = real[: len(real) // 2], real[len(real) // 2 :]
    noise = torch.rand(len(half_b), real.shape[1], generator=torch.Generator().manual_seed(0)) * 2 - 1
    fid_halves, fid_noise = fid_from_features(half_a, half_b)[FID], fid_from_features(half_a, noise)[FID]
    kid_halves = kernel_distance(half_a, half_b, subset_size=300)[KID_MEAN]
    kid_noise = kernel_distance(half_a, noise, subset_size=300)[KID_MEAN]
    assert fid_halves < fid_noise / 20
    assert abs(kid_halves) < kid_noise / 50
    assert fid_from_features(half_a, half_a)[FID] == pytest.approx(0.0, abs=1e-8)


# --- sharpness --------------------------------------------------------------------------------------


def test_gradient_energy_of_known_images():
    # A vertical edge of height 2 between columns 1 and 2 of a 3x4 image: one squared step of 4 in each
    # of the 3 rows, among 3 x 3 horizontal neighbour pairs (mean 4/3); no change down the columns.
    edge = torch.tensor([[-1.0, -1.0, 1.0, 1.0]]).repeat(3, 1)
    assert gradient_energy(edge[None]).tolist() == pytest.approx([4 / 3])
    assert gradient_energy(edge[None, None] + 5.0).tolist() == pytest.approx([4 / 3])  # offsets cancel
    assert gradient_energy(torch.zeros(2, 1, 4, 4)).tolist() == [0.0, 0.0]
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2  # every neighbour differs by 1
    assert gradient_energy(checker[None, None].double()).tolist() == pytest.approx([2.0])
    with pytest.raises(ValueError, match="H, W >= 2"):
        gradient_energy(torch.zeros(3, 1, 1, 8))
    with pytest.raises(ValueError, match="no gradient energy"):
        sharpness(edge[None, None], torch.zeros(2, 1, 3, 4))


def _blurred(images, sigma):
    """Gaussian blur of each image (scipy, independent of the code under test), reflecting at borders."""
    return torch.from_numpy(gaussian_filter(images.numpy(), sigma=(0, 0, sigma, sigma)))


@pytest.mark.parametrize("cls", [MNIST5k, Digits])
def test_sharpness_is_near_one_for_real_images_and_falls_as_they_blur(cls):
    data = cls()
    real, _ = data.split("train")
    heldout, _ = data.split("heldout")
    gen = torch.Generator().manual_seed(0)
    a, b = (real[torch.randperm(len(real), generator=gen)][: len(real) // 2 * 2]).double().chunk(2)
    # Two disjoint real samples: the ratio of their mean energies is 1 up to sampling noise. Its standard
    # error is about cv * sqrt(1/n_a + 1/n_b), with cv the coefficient of variation of one image's energy
    # (0.22 on mnist5k, 0.14 on digits): 0.0069 for the 2,000 + 2,000 images of mnist5k, 0.0074 for
    # digits' 719 + 719. A tolerance of 0.06 is 8 standard errors: a correct metric fails it by chance
    # with probability far below 1e-6, while the mildest blur below moves the ratio by more than 0.35.
    energy = gradient_energy(real)
    standard_error = float(energy.std() / energy.mean()) * math.sqrt(1 / len(a) + 1 / len(b))
    assert 8 * standard_error < 0.06
    assert sharpness(a, b)[SHARPNESS] == pytest.approx(1.0, abs=0.06)
    assert sharpness(heldout, real)[SHARPNESS] == pytest.approx(1.0, abs=0.06)
    assert sharpness(real, real)[SHARPNESS] == pytest.approx(1.0, abs=1e-12)
    # Blur the held-out images more and more: strictly less sharp than real data at every step.
    values = [sharpness(_blurred(heldout, sigma), real)[SHARPNESS] for sigma in (0.5, 1.0, 2.0)]
    assert 1.0 - 0.35 > values[0] > values[1] > values[2] > 0
    # Contrast halved (images pulled towards mid-grey): energy scales with the square, so 1/4.
    assert sharpness(heldout * 0.5, heldout)[SHARPNESS] == pytest.approx(0.25, rel=1e-12)
