"""One evaluation: fresh batches, exact OT beside the critic's estimate, and sample quality."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metrics.critic import critic_vs_w1
from metrics.ot import W1_EXACT, batch_distances, wasserstein
from metrics.quality import large_sample_w1, mode_coverage

W1_REAL_REAL = "w1_real_real"


def eval_generator(seed: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator that depends on ``(seed, step)`` only: an evaluation's batches do not depend on
    the evaluation cadence, on earlier evaluations, or on whether the run was resumed."""
    state = np.random.SeedSequence([seed, step, 0xE7A1]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device).manual_seed(int(state & 0x7FFF_FFFF_FFFF_FFFF))


def sample_generator(generator: nn.Module, n: int, rng: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, generator.latent_dim, generator=rng, device=rng.device)
    return generator(z)


@torch.no_grad()
def evaluate(
    generator: nn.Module,
    critic: nn.Module | None,
    data,
    objective,
    eval_cfg,
    *,
    rng: torch.Generator,
    index: int,
) -> dict[str, float]:
    """Metrics of the current models on fresh batches drawn from ``rng``.

    On one real batch ``x``, a second real batch ``x'`` and a generated batch ``y`` (all of
    ``eval_cfg.batch_size``): ``w1_exact = W1(x, y)``, ``w2_exact``, ``w1_real_real = W1(x, x')`` and,
    when there is a critic, its estimate against ``w1_exact``. Then quality on ``eval_cfg.large_n``
    generated samples against as many held-out real ones. ``index`` counts evaluations from 0
    (for work done only every k-th evaluation).
    """
    batch_size, large_n, solver = eval_cfg.batch_size, eval_cfg.large_n, eval_cfg.solver
    was_training = generator.training
    generator.eval()
    try:
        real = data.sample(batch_size, rng)
        real_other = data.sample(batch_size, rng)
        fake = sample_generator(generator, batch_size, rng)
        row = batch_distances(real, fake, solver=solver)
        row[W1_REAL_REAL] = wasserstein(real, real_other, p=1, solver=solver)
        if critic is not None:
            row.update(critic_vs_w1(critic(real), critic(fake), row[W1_EXACT]))

        fake_large = sample_generator(generator, large_n, rng)
        row.update(large_sample_w1(fake_large, data.sample_heldout(large_n, rng), solver=solver))
        if getattr(data, "modes", None) is not None:
            row.update(mode_coverage(fake_large, data.modes, data.std))
    finally:
        generator.train(was_training)
    return row
