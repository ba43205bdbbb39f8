"""Sample-quality metrics. Pure functions of tensors: no configuration, no I/O."""

from __future__ import annotations

import torch

from metrics.ot import wasserstein

MODES_COVERED = "modes_covered"
HIGH_QUALITY_FRAC = "high_quality_frac"
W1_LARGE = "w1_large"


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
        ``{W1_LARGE: W1(fake, real_heldout)}``.
    """
    return {W1_LARGE: wasserstein(fake, real_heldout, p=1, solver=solver)}
