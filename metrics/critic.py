"""How a critic relates to the exact transport problem on the batches it sees.

Pure functions of tensors: no configuration, no I/O. Definitions follow ``DESIGN.md``.
"""

from __future__ import annotations

import torch

CRITIC_ESTIMATE = "critic_estimate"
CRITIC_GAP = "critic_gap"
CRITIC_REL_ERROR = "critic_rel_error"


def critic_vs_w1(f_real: torch.Tensor, f_fake: torch.Tensor, w1_exact: float) -> dict[str, float]:
    """Compare a critic's Kantorovich–Rubinstein estimate with the exact W1 of the same batches.

    .. math::
        \\hat W = \\frac1n \\sum_i f(x_i) - \\frac1m \\sum_j f(y_j), \\qquad
        \\text{gap} = \\hat W - W_1, \\qquad \\text{rel\\_error} = |\\text{gap}| / W_1

    No penalty term enters :math:`\\hat W`. For a 1-Lipschitz ``f``, :math:`\\hat W \\le W_1`
    (Kantorovich duality); a critic that is not 1-Lipschitz can exceed it.

    Parameters
    ----------
    f_real : tensor, shape (n,) or (n, 1)
        Critic values on the real batch.
    f_fake : tensor, shape (m,) or (m, 1)
        Critic values on the generated batch.
    w1_exact : float
        Exact W1 between the two batches (:func:`metrics.ot.wasserstein`).

    Returns
    -------
    dict
        Keys ``CRITIC_ESTIMATE``, ``CRITIC_GAP``, ``CRITIC_REL_ERROR``; ``rel_error`` is ``inf``
        when ``w1_exact`` is 0 and the gap is not.
    """
    estimate = float(f_real.detach().double().mean() - f_fake.detach().double().mean())
    gap = estimate - w1_exact
    if w1_exact > 0:
        rel = abs(gap) / w1_exact
    else:
        rel = 0.0 if gap == 0 else float("inf")
    return {CRITIC_ESTIMATE: estimate, CRITIC_GAP: gap, CRITIC_REL_ERROR: rel}
