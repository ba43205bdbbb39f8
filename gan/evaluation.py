"""One evaluation: fresh batches, exact OT beside the critic's estimate, and sample quality."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from gan.image_eval import image_quality, is_image_data
from metrics.critic import (
    GRAD_OT_COSINE,
    critic_vs_w1,
    ctransform_bound,
    grad_ot_cosine,
    input_gradients,
    lipschitz_max,
    probe_vs_w1,
)
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


def _draw_seed(rng: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=rng, device=rng.device))


def probe_critic(
    objective,
    critic: nn.Module,
    real,
    fake,
    *,
    steps: int,
    rng: torch.Generator,
    lr: float | None = None,
    train_mode: bool = True,
) -> nn.Module:
    """A copy of ``critic`` trained ``steps`` more steps with ``objective`` on the fixed batches.

    The copy trains in ``train_mode`` (the mode the training critic is in between evaluations) and is
    returned in ``eval()`` mode. It gets its own fresh optimiser (the objective's critic optimiser,
    its learning rate replaced by ``lr`` when given); the training critic, its optimiser and the
    generator are not touched, and every random draw (interpolation weights) comes from ``rng``.

    On these batches the best 1-Lipschitz critic's estimate is exactly their W1, so the probe's
    distance to W1 is what the objective itself gives up, separated from how far the training critic
    is from its optimum (as far as ``steps`` steps get).
    """
    probe = copy.deepcopy(critic).train(train_mode)
    for param in probe.parameters():
        param.grad = None
    kwargs = {} if lr is None else {"lr": lr}
    opt = objective.critic_optimizer(probe.parameters(), **kwargs)
    real, fake = real.detach(), fake.detach()
    with torch.enable_grad():
        for _ in range(steps):
            loss = objective.critic_loss(probe, real, fake, rng)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            objective.after_critic_step(probe)
    return probe.eval()


def critic_diagnostics(
    objective, critic: nn.Module, real, fake, row: dict, eval_cfg, *, rng, index: int, train_mode: bool
) -> dict[str, float]:
    """``ctransform_bound``, ``lipschitz_max``, ``grad_ot_cosine`` and, every ``probe_every``
    evaluations, ``probe_estimate`` / ``probe_gap`` (definitions in :mod:`metrics.critic`)."""
    out = ctransform_bound(critic(real), real, fake)
    out.update(lipschitz_max(critic, real, fake, seed=_draw_seed(rng)))
    # The generator's update moves y along the gradient of the critic's value on generated points
    # (for the c-transform objectives, of -f^c over the real batch).
    grad = input_gradients(lambda y: objective.critic_values(critic, real, y)[1], fake)
    cosine = grad_ot_cosine(grad, real, fake, solver=eval_cfg.solver)
    if math.isfinite(cosine[GRAD_OT_COSINE]):  # NaN only when the plan moves no point: left out
        out.update(cosine)
    if eval_cfg.probe_every and eval_cfg.probe_steps and index % eval_cfg.probe_every == 0:
        probe = probe_critic(
            objective,
            critic,
            real,
            fake,
            steps=eval_cfg.probe_steps,
            rng=rng,
            lr=eval_cfg.probe_lr,
            train_mode=train_mode,
        )
        out.update(probe_vs_w1(*objective.critic_values(probe, real, fake), row[W1_EXACT]))
    return out


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
    classifier: nn.Module | None = None,
) -> dict[str, float]:
    """Metrics of the current models on fresh batches drawn from ``rng``.

    On one real batch ``x``, a second real batch ``x'`` and a generated batch ``y`` (all of
    ``eval_cfg.batch_size``): ``w1_exact = W1(x, y)``, ``w2_exact``, ``w1_real_real = W1(x, x')`` and,
    when there is a critic, its estimate against ``w1_exact`` (``objective.critic_values``). Then
    quality on ``eval_cfg.large_n`` generated samples against as many held-out real ones. Then, when
    there is a critic, the critic diagnostics on ``x`` and ``y`` (:func:`critic_diagnostics`); the
    converged-critic probe runs when ``index`` (evaluations counted from 0) is a multiple of
    ``eval_cfg.probe_every``. Objectives without a critic get no critic keys at all.

    The models are put in ``eval()`` mode for the evaluation and restored after it; nothing here
    changes their parameters, buffers or optimisers.
    """
    batch_size, large_n, solver = eval_cfg.batch_size, eval_cfg.large_n, eval_cfg.solver
    if is_image_data(data):  # a finite held-out split: no repeated images in the real sample
        large_n = min(large_n, data.num_heldout)
    modes = [(m, m.training) for m in (generator, critic) if m is not None]
    critic_mode = critic is not None and critic.training
    for module, _ in modes:
        module.eval()
    try:
        real = data.sample(batch_size, rng)
        real_other = data.sample(batch_size, rng)
        fake = sample_generator(generator, batch_size, rng)
        row = batch_distances(real, fake, solver=solver)
        row[W1_REAL_REAL] = wasserstein(real, real_other, p=1, solver=solver)
        if critic is not None:
            row.update(critic_vs_w1(*objective.critic_values(critic, real, fake), row[W1_EXACT]))

        fake_large = sample_generator(generator, large_n, rng)
        real_large = data.sample_heldout(large_n, rng)
        row.update(large_sample_w1(fake_large, real_large, solver=solver))
        if classifier is not None:  # FID, KID, precision/recall, label entropy (no draws from rng)
            row.update(image_quality(fake_large, real_large, classifier=classifier))
        if getattr(data, "modes", None) is not None:
            row.update(mode_coverage(fake_large, data.modes, data.std))

        # Drawn last from rng, so the metrics above do not depend on whether these run.
        if critic is not None:
            diagnostics = critic_diagnostics(
                objective, critic, real, fake, row, eval_cfg, rng=rng, index=index, train_mode=critic_mode
            )
            row.update(diagnostics)
    finally:
        for module, was_training in modes:
            module.train(was_training)
    return row
