"""Sample-quality metrics. Pure functions of tensors: no configuration, no I/O.

Toy mixtures: :func:`mode_coverage`. Any data: :func:`large_sample_w1`. Images, in the feature space of
a network (features -> statistics -> metric, the network itself lives in ``gan/classifier.py``):
:func:`frechet_distance` (FID), :func:`kernel_distance` (KID), :func:`precision_recall` and, from a
classifier's probabilities, :func:`label_statistics`. Images, in pixels: :func:`sharpness`. All
computed in float64.
"""

from __future__ import annotations

import numpy as np
import torch

from metrics.ot import wasserstein_counted

MODES_COVERED = "modes_covered"
HIGH_QUALITY_FRAC = "high_quality_frac"
W1_LARGE = "w1_large"
FID = "fid"
KID_MEAN = "kid_mean"
KID_STD = "kid_std"
PRECISION = "precision"
RECALL = "recall"
LABEL_ENTROPY = "label_entropy"
CLASSES_COVERED = "classes_covered"
PREDICTION_ENTROPY = "prediction_entropy"
SHARPNESS = "sharpness"

# KID defaults of Bińkowski et al. 2018 (and torch-fidelity): k(x, y) = (x·y / d + 1)^3, 100 subsets
# of 1,000; precision/recall with k = 3 neighbours (Kynkäänniemi et al. 2019).
KID_DEGREE = 3
KID_COEF = 1.0
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_NEIGHBOURS = 3
# Above this many entries per kernel matrix, KID computes each subset's kernels separately instead of
# the full matrices once (memory: 8 bytes per entry, three matrices).
_KID_FULL_KERNEL_MAX = 4096 * 4096


def mode_coverage(
    samples: torch.Tensor,
    modes: torch.Tensor,
    std: float,
    *,
    n_std: float = 3.0,
    min_share: float = 0.2,
) -> dict[str, float]:
    """Mode coverage of a sample from a mixture of isotropic Gaussians of equal weight.

    A sample is *high quality* when it lies within ``n_std`` standard deviations of its nearest
    mode. A mode is *covered* when it receives at least ``min_share`` of its expected number of
    samples, :math:`\\text{min\\_share} \\cdot N / K`, among the high-quality ones (with
    ``min_share = 0.2`` this is PacGAN's rule: fewer than 20 of 2,500 samples on 25 modes = lost).

    Parameters
    ----------
    samples : tensor, shape (N, d)
    modes : tensor, shape (K, d)
    std : float
        Standard deviation of each mixture component.

    Returns
    -------
    dict
        ``{MODES_COVERED: number of covered modes (0..K), HIGH_QUALITY_FRAC: share of high-quality
        samples in [0, 1]}``.
    """
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    samples = samples.detach().double().reshape(len(samples), -1).cpu()
    modes = modes.detach().double().reshape(len(modes), -1).cpu()
    dist, nearest = torch.cdist(samples, modes).min(dim=1)
    good = dist <= n_std * std
    counts = torch.bincount(nearest[good], minlength=len(modes))
    needed = min_share * len(samples) / len(modes)
    return {
        MODES_COVERED: int((counts >= needed).sum()),
        HIGH_QUALITY_FRAC: float(good.double().mean()),
    }


def large_sample_w1(
    fake: torch.Tensor, real_heldout: torch.Tensor, *, solver: str = "auto"
) -> dict[str, float]:
    """Exact W1 between a large generated sample and a held-out real sample of the same size.

    Less noisy than the minibatch W1, but still an upward-biased estimate of the population W1.

    Returns
    -------
    dict
        ``{W1_LARGE: W1(fake, real_heldout), OT_NONOPTIMAL: 1 if the solve stopped before
        optimality else 0}`` (``OT_NONOPTIMAL`` from :mod:`metrics.ot`).
    """
    return wasserstein_counted(fake, real_heldout, key=W1_LARGE, p=1, solver=solver)


def _features(name: str, features) -> torch.Tensor:
    t = torch.as_tensor(features).detach().to(device="cpu", dtype=torch.float64)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got {tuple(t.shape)}")
    if len(t) < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {len(t)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite values")
    return t


def _pair(real, fake) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = _features("real", real), _features("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    return real, fake


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (unbiased, ``n − 1``) of a feature set, float64.

    Parameters
    ----------
    features : tensor or array, shape (n, d)

    Returns
    -------
    mu : tensor, shape (d,)
    sigma : tensor, shape (d, d)
    """
    f = _features("features", features)
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between two Gaussians, i.e. their squared W2 distance (FID from statistics).

    .. math::
        d^2 = \\|\\mu_1 - \\mu_2\\|^2 + \\operatorname{tr}\\Big(\\Sigma_1 + \\Sigma_2
              - 2 \\big(\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}\\big)^{1/2}\\Big)

    The trace of the cross term equals :math:`\\operatorname{tr}(\\Sigma_1 \\Sigma_2)^{1/2}` of the
    usual formula; the symmetric form is computed with two symmetric eigendecompositions (negative
    round-off eigenvalues set to 0), so it stays real and needs no inverse of a singular covariance.

    Parameters
    ----------
    mu1, mu2 : tensor or array, shape (d,)
    sigma1, sigma2 : tensor or array, shape (d, d)
        Symmetric positive semi-definite.

    Returns
    -------
    float
        :math:`d^2 \\ge 0` (a round-off negative is returned as 0).

    References
    ----------
    Dowson & Landau 1982; Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to
    a local Nash equilibrium" (FID).
    """
    mu1, mu2, sigma1, sigma2 = (
        torch.as_tensor(a).detach().to(device="cpu", dtype=torch.float64) for a in (mu1, mu2, sigma1, sigma2)
    )
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shapes do not match: mu1 {tuple(mu1.shape)}, mu2 {tuple(mu2.shape)}, "
            f"sigma1 {tuple(sigma1.shape)}, sigma2 {tuple(sigma2.shape)}"
        )
    root1 = _psd_sqrt(sigma1)
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross
    return max(float(value), 0.0)


def fid_from_features(real, fake) -> dict[str, float]:
    """Fréchet distance between Gaussians fitted to two feature sets (FID in that feature space).

    Biased upward for finite samples (the bias falls like 1/n): compare values at equal sizes.

    Parameters
    ----------
    real : tensor or array, shape (n, d)
    fake : tensor or array, shape (m, d)

    Returns
    -------
    dict
        ``{FID: frechet_distance(*feature_statistics(real), *feature_statistics(fake))}``.
    """
    real, fake = _pair(real, fake)
    return {FID: frechet_distance(*feature_statistics(real), *feature_statistics(fake))}


def polynomial_kernel(x, y, *, degree: int = KID_DEGREE, gamma: float | None = None, coef: float = KID_COEF):
    """:math:`k(x, y) = (\\gamma\\, x \\cdot y + c)^{\\text{degree}}`, with :math:`\\gamma = 1/d` by default.

    Returns
    -------
    tensor, shape (n, m), float64
    """
    x, y = _as64(x), _as64(y)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef) ** degree


def _as64(a) -> torch.Tensor:
    return torch.as_tensor(a).detach().to(device="cpu", dtype=torch.float64)


def kernel_distance(
    real,
    fake,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    degree: int = KID_DEGREE,
    gamma: float | None = None,
    coef: float = KID_COEF,
    seed: int = 0,
) -> dict[str, float]:
    """Kernel distance (KID): the unbiased estimator of MMD² with a polynomial kernel, over subsets.

    For each of ``subsets`` draws, ``s = min(subset_size, n, m)`` real features :math:`x_i` and ``s``
    fake features :math:`y_j` are chosen without replacement, and

    .. math::
        \\widehat{\\mathrm{MMD}}^2_u = \\frac{1}{s(s-1)} \\sum_{i \\ne j} k(x_i, x_j)
            + \\frac{1}{s(s-1)} \\sum_{i \\ne j} k(y_i, y_j) - \\frac{2}{s^2} \\sum_{i, j} k(x_i, y_j),
        \\qquad k(x, y) = (\\gamma\\, x \\cdot y + c)^{\\text{degree}}

    with :math:`\\gamma = 1/d` by default. Its expectation is the population MMD² for any ``s``, so the
    value is not biased by the sample size (unlike FID), and it can be negative when the two
    distributions are close. When ``s`` equals both ``n`` and ``m`` every draw is the whole set and
    the standard deviation is 0.

    Parameters
    ----------
    real : tensor or array, shape (n, d)
    fake : tensor or array, shape (m, d)
    subsets : int
    subset_size : int
    degree, gamma, coef
        The polynomial kernel (defaults: 3, 1/d, 1, as in Bińkowski et al. 2018).
    seed : int
        Seeds the local generator that draws the subsets.

    Returns
    -------
    dict
        ``{KID_MEAN: mean over subsets, KID_STD: their standard deviation (ddof 0)}``.

    References
    ----------
    Bińkowski, Sutherland, Arbel & Gretton 2018, "Demystifying MMD GANs"; Gretton et al. 2012,
    "A kernel two-sample test" (the unbiased estimator, Lemma 6).
    """
    real, fake = _pair(real, fake)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    n, m = len(real), len(fake)
    s = min(subset_size, n, m)
    rng = np.random.default_rng(seed)
    draws_x = np.stack([rng.choice(n, s, replace=False) for _ in range(subsets)])
    draws_y = np.stack([rng.choice(m, s, replace=False) for _ in range(subsets)])

    def kernel(a, b):
        return polynomial_kernel(a, b, degree=degree, gamma=gamma, coef=coef)

    if max(n, m) ** 2 <= _KID_FULL_KERNEL_MAX:
        # Every subset's block sums from the full kernel matrices: sum over I x J of K = a_I^T K b_J
        # for 0/1 indicator rows a_I, b_J, all subsets at once as one matrix product.
        ind_x = torch.zeros(subsets, n, dtype=torch.float64)
        ind_y = torch.zeros(subsets, m, dtype=torch.float64)
        ind_x.scatter_(1, torch.from_numpy(draws_x), 1.0)
        ind_y.scatter_(1, torch.from_numpy(draws_y), 1.0)
        k_xx, k_yy, k_xy = kernel(real, real), kernel(fake, fake), kernel(real, fake)
        sum_xx = ((ind_x @ k_xx) * ind_x).sum(1) - ind_x @ k_xx.diagonal()
        sum_yy = ((ind_y @ k_yy) * ind_y).sum(1) - ind_y @ k_yy.diagonal()
        sum_xy = ((ind_x @ k_xy) * ind_y).sum(1)
    else:
        sums = []
        for ix, iy in zip(draws_x, draws_y, strict=True):
            x, y = real[torch.from_numpy(ix)], fake[torch.from_numpy(iy)]
            k_xx, k_yy = kernel(x, x), kernel(y, y)
            sums.append((k_xx.sum() - k_xx.trace(), k_yy.sum() - k_yy.trace(), kernel(x, y).sum()))
        sum_xx, sum_yy, sum_xy = (torch.stack(t) for t in zip(*sums, strict=True))
    mmd2 = (sum_xx + sum_yy) / (s * (s - 1)) - 2 * sum_xy / s**2
    return {KID_MEAN: float(mmd2.mean()), KID_STD: float(mmd2.std(correction=0))}


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for start in range(0, len(features), chunk):
        dist = torch.cdist(features[start : start + chunk], features)
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the point itself
    return torch.cat(radii)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    inside = []
    for start in range(0, len(points), chunk):
        dist = torch.cdist(points[start : start + chunk], centres)
        inside.append((dist <= radii).any(dim=1))
    return torch.cat(inside)


def precision_recall(real, fake, *, k: int = PR_NEIGHBOURS, chunk: int = 2048) -> dict[str, float]:
    """Improved precision and recall of a generated sample (Kynkäänniemi et al. 2019).

    Each feature set approximates its distribution's support by a union of balls, one around each
    point with the radius of its ``k``-th nearest neighbour in the same set:

    .. math::
        \\Omega(\\Phi) = \\bigcup_{\\phi \\in \\Phi}
            B\\big(\\phi, \\|\\phi - \\mathrm{NN}_k(\\phi, \\Phi)\\|\\big),
        \\quad
        \\text{precision} = \\frac{1}{m} \\sum_j [\\phi_g^j \\in \\Omega(\\Phi_r)], \\quad
        \\text{recall} = \\frac{1}{n} \\sum_i [\\phi_r^i \\in \\Omega(\\Phi_g)]

    Precision is the share of generated samples that look real (quality); recall the share of real
    samples the generator covers (diversity). Duplicates in a set give zero radii: draw without
    replacement.

    Parameters
    ----------
    real : tensor or array, shape (n, d)
    fake : tensor or array, shape (m, d)
    k : int
        Neighbour defining each ball's radius (3 in the paper); needs ``k < min(n, m)``.
    chunk : int
        Rows of the distance matrices formed at once (memory only, not the result).

    Returns
    -------
    dict
        ``{PRECISION: in [0, 1], RECALL: in [0, 1]}``.

    References
    ----------
    Kynkäänniemi, Karras, Laine, Lehtinen & Aila 2019, "Improved precision and recall metric for
    assessing generative models".
    """
    real, fake = _pair(real, fake)
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k={k} must be in [1, min(n, m) - 1] = [1, {min(len(real), len(fake)) - 1}]")
    real_radii = _kth_neighbour_radii(real, k, chunk)
    fake_radii = _kth_neighbour_radii(fake, k, chunk)
    return {
        PRECISION: float(_covered(fake, real, real_radii, chunk).double().mean()),
        RECALL: float(_covered(real, fake, fake_radii, chunk).double().mean()),
    }


def label_statistics(probs, *, min_share: float = 0.2) -> dict[str, float]:
    """Mode coverage of generated images read from a classifier's class probabilities.

    With :math:`\\bar p = \\frac1N \\sum_i p(\\cdot \\mid x_i)`:

    .. math::
        \\text{label\\_entropy} = -\\sum_c \\bar p_c \\log \\bar p_c, \\qquad
        \\text{prediction\\_entropy}
            = -\\frac1N \\sum_i \\sum_c p(c \\mid x_i) \\log p(c \\mid x_i)

    ``label_entropy`` (nats) reaches :math:`\\log K` when the classes are used equally and falls as
    the generator drops modes; ``prediction_entropy`` is low when each image is classified
    confidently. A class is *covered* when it is the most probable class of at least
    ``min_share · N / K`` images (the rule of :func:`mode_coverage`).

    Parameters
    ----------
    probs : tensor or array, shape (N, K)
        Rows are probability vectors (non-negative, summing to 1 within 1e-4).
    min_share : float

    Returns
    -------
    dict
        ``{LABEL_ENTROPY: in [0, log K], CLASSES_COVERED: 0..K, PREDICTION_ENTROPY: in [0, log K]}``.
    """
    p = _features("probs", probs)
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise ValueError("probs must be non-negative rows that sum to 1 (pass softmax outputs)")
    n, classes = p.shape

    def entropy(q):
        return -(q * q.clamp(min=1e-300).log()).sum(-1)  # 0 log 0 = 0

    counts = torch.bincount(p.argmax(1), minlength=classes)
    return {
        LABEL_ENTROPY: float(entropy(p.mean(0))),
        CLASSES_COVERED: int((counts >= min_share * n / classes).sum()),
        PREDICTION_ENTROPY: float(entropy(p).mean()),
    }


def gradient_energy(images) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels of each image, float64.

    For an image :math:`x` with channels :math:`c`, rows :math:`i` and columns :math:`j`:

    .. math::
        G(x) = \\operatorname{mean}_{c,i,j} (x_{c,i+1,j} - x_{c,i,j})^2
             + \\operatorname{mean}_{c,i,j} (x_{c,i,j+1} - x_{c,i,j})^2

    the energy of its discrete image gradient per pixel. Blurring removes high spatial frequencies and
    lowers it; an offset of every pixel leaves it unchanged.

    Parameters
    ----------
    images : tensor or array, shape (N, C, H, W) or (N, H, W), with H, W >= 2

    Returns
    -------
    tensor, shape (N,), float64
    """
    x = torch.as_tensor(images).detach().to(device="cpu", dtype=torch.float64)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or min(x.shape[-2:]) < 2:
        raise ValueError(f"images must have shape (N, C, H, W) with H, W >= 2, got {tuple(x.shape)}")
    rows = x.diff(dim=-2).square().mean(dim=(1, 2, 3))
    cols = x.diff(dim=-1).square().mean(dim=(1, 2, 3))
    return rows + cols


def sharpness(fake, real) -> dict[str, float]:
    """Sharpness of generated images relative to real ones: the ratio of their mean gradient energies.

    .. math::
        \\text{sharpness} = \\frac{\\frac1m \\sum_k G(y_k)}{\\frac1n \\sum_k G(x_k)}

    with :math:`G` of :func:`gradient_energy`, generated images :math:`y` and real ones :math:`x` in the
    same pixel range. About 1 for real images against other real ones (up to sampling noise); it falls
    towards 0 as images blur (blurry, centroid-like averages have little energy at high spatial
    frequencies) or lose contrast, and exceeds 1 for noisier images than the real ones.

    Parameters
    ----------
    fake : tensor or array, shape (m, C, H, W)
    real : tensor or array, shape (n, C, H, W)
        Held-out real images; their mean gradient energy must be positive.

    Returns
    -------
    dict
        ``{SHARPNESS: ratio >= 0}``.
    """
    fake_energy, real_energy = gradient_energy(fake), gradient_energy(real)
    if fake_energy.shape[0] == 0 or real_energy.shape[0] == 0:
        raise ValueError("sharpness needs at least one generated and one real image")
    reference = real_energy.mean()
    if not reference > 0:
        raise ValueError("the real images have no gradient energy (constant images): sharpness is undefined")
    return {SHARPNESS: float(fake_energy.mean() / reference)}
