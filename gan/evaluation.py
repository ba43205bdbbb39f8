"""One evaluation: fresh batches, exact OT beside the critic's estimate, and sample quality."""

from __future__ import annotations

import contextlib
import copy
import logging
import math

import numpy as np
import torch
from torch import nn

from gan.copies import Single
from gan.image_eval import image_quality, inception_fid, is_image_data
from metrics.critic import (
    CRITIC_ESTIMATE,
    CRITIC_GAP,
    CRITIC_REL_ERROR,
    CTRANSFORM_BOUND,
    GRAD_OT_COSINE,
    LIPSCHITZ_MAX,
    critic_vs_w1,
    ctransform_bound,
    grad_ot_cosine,
    input_gradients,
    lipschitz_max,
    probe_vs_w1,
)
from metrics.ot import OT_NONOPTIMAL, W1_EXACT, W2_EXACT, batch_distances, wasserstein_counted
from metrics.quality import large_sample_w1, mode_coverage
from metrics.stats import CI95_SUFFIX, t_interval

log = logging.getLogger(__name__)

W1_REAL_REAL = "w1_real_real"
# Measured on each pair of evaluation batches: with eval.draws > 1, averaged over the draws with a 95%
# interval beside the mean. Counters are summed instead. Every other key is measured once per evaluation.
PER_DRAW_KEYS = (
    W1_EXACT, W2_EXACT, W1_REAL_REAL, CRITIC_ESTIMATE, CRITIC_GAP, CRITIC_REL_ERROR,
    CTRANSFORM_BOUND, LIPSCHITZ_MAX, GRAD_OT_COSINE,
)  # fmt: skip
SUMMED_KEYS = (OT_NONOPTIMAL,)


def eval_generator(seed: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator that depends on ``(seed, step)`` only: an evaluation's batches do not depend on
    the evaluation cadence, on earlier evaluations, or on whether the run was resumed."""
    state = np.random.SeedSequence([seed, step, 0xE7A1]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device).manual_seed(int(state & 0x7FFF_FFFF_FFFF_FFFF))


def sample_generator(generator: nn.Module, n: int, rng: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, generator.latent_dim, generator=rng, device=rng.device)
    return generator(z)


def draw_seed(rng: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=rng, device=rng.device))


def add_counted(row: dict, part: dict, what: str | None) -> dict:
    """``row`` updated with ``part``, whose count of exact solves that stopped before optimality
    (``OT_NONOPTIMAL``) is added to the row's instead of replacing it; such solves are logged with
    ``what`` they were for (``None``: logged already). Returns ``row``."""
    capped = part.pop(OT_NONOPTIMAL, 0)
    if capped and what:
        log.warning("%d exact OT solve(s) for %s stopped before optimality", capped, what)
    row.update(part)
    row[OT_NONOPTIMAL] = row.get(OT_NONOPTIMAL, 0) + capped
    return row


def critic_values(objective, critic: nn.Module, real, fake) -> tuple[torch.Tensor, torch.Tensor]:
    """``objective.critic_values`` of one plain critic on (n, ...) and (m, ...) batches: shapes (n,), (m,)."""
    f_real, f_fake = objective.critic_values(Single(critic), real[None], fake[None])
    return f_real[0], f_fake[0]


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
    real, fake, copies = real.detach()[None], fake.detach()[None], Single(probe)
    with torch.enable_grad():
        for _ in range(steps):
            objective.critic_step(copies, opt, real, fake, [rng])
    return probe.eval()


def critic_diagnostics(
    objective, critic: nn.Module, real, fake, row: dict, eval_cfg, *, rng, probe: bool, train_mode: bool
) -> dict[str, float]:
    """``ctransform_bound``, ``lipschitz_max``, ``grad_ot_cosine`` and, when ``probe`` is set,
    ``probe_estimate`` / ``probe_gap`` against ``row[w1_exact]`` (definitions in :mod:`metrics.critic`)."""
    out = ctransform_bound(critic(real), real, fake)
    out.update(lipschitz_max(critic, real, fake, seed=draw_seed(rng)))
    # The generator's update moves y along the gradient of the critic's value on generated points
    # (for the c-transform objectives, of -f^c over the real batch).
    grad = input_gradients(lambda y: critic_values(objective, critic, real, y)[1], fake)
    cosine = grad_ot_cosine(grad, real, fake, solver=eval_cfg.solver)
    if not math.isfinite(cosine[GRAD_OT_COSINE]):  # NaN only when the plan moves no point: left out
        del cosine[GRAD_OT_COSINE]
    add_counted(out, cosine, GRAD_OT_COSINE)
    if probe:
        probe_net = probe_critic(
            objective,
            critic,
            real,
            fake,
            steps=eval_cfg.probe_steps,
            rng=rng,
            lr=eval_cfg.probe_lr,
            train_mode=train_mode,
        )
        out.update(probe_vs_w1(*critic_values(objective, probe_net, real, fake), row[W1_EXACT]))
    return out


def pair_metrics(objective, critic, real, real_other, fake, *, solver: str, w2: bool = True) -> dict:
    """``w1_exact`` (and, unless ``w2=False``, ``w2_exact``) between ``real`` and ``fake``,
    ``w1_real_real`` between ``real`` and ``real_other``, ``ot_nonoptimal``, and with a critic its
    estimate against ``w1_exact`` on the same two batches."""
    if w2:
        row = add_counted({}, batch_distances(real, fake, solver=solver), f"{W1_EXACT}, {W2_EXACT}")
    else:
        row = add_counted({}, wasserstein_counted(real, fake, key=W1_EXACT, solver=solver), W1_EXACT)
    add_counted(row, wasserstein_counted(real, real_other, key=W1_REAL_REAL, solver=solver), W1_REAL_REAL)
    if critic is not None:
        row.update(critic_vs_w1(*critic_values(objective, critic, real, fake), row[W1_EXACT]))
    return row


def _batch_pair(generator, critic, data, objective, eval_cfg, rng, *, w2: bool = True):
    """Metrics of one pair of batches drawn from ``rng`` (real ``x``, ``x'``, generated ``y``), and x, y."""
    real = data.sample(eval_cfg.batch_size, rng)
    real_other = data.sample(eval_cfg.batch_size, rng)
    fake = sample_generator(generator, eval_cfg.batch_size, rng)
    return pair_metrics(objective, critic, real, real_other, fake, solver=eval_cfg.solver, w2=w2), real, fake


def combine_draws(rows: list[dict]) -> dict:
    """One row from the rows of several draws: :data:`PER_DRAW_KEYS` averaged, with ``<key>_ci95`` (the
    half-width of the 95% Student-t interval, :func:`metrics.stats.t_interval`) right after each mean
    when at least two draws have the key; :data:`SUMMED_KEYS` summed; any other key from the first draw
    that has it. Keys keep the order in which the draws first give them."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    out = {}
    for key in keys:
        values = [row[key] for row in rows if key in row]
        if key in SUMMED_KEYS:
            out[key] = sum(values)
        elif key in PER_DRAW_KEYS and len(values) > 1:
            out[key], out[key + CI95_SUFFIX] = t_interval(values)
        else:
            out[key] = values[0]
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
    inception: nn.Module | None = None,
) -> dict[str, float]:
    """Metrics of the current models on fresh batches drawn from ``rng``.

    On one real batch ``x``, a second real batch ``x'`` and a generated batch ``y`` (all of
    ``eval_cfg.batch_size``): ``w1_exact = W1(x, y)``, ``w2_exact``, ``w1_real_real = W1(x, x')`` and,
    when there is a critic, its estimate against ``w1_exact`` (``objective.critic_values``). Then
    quality on ``eval_cfg.large_n`` generated samples against as many held-out real ones (FID and the
    other classifier metrics when ``classifier`` is given, ``fid_inception`` when ``inception`` is).
    Then, when there is a critic, the critic diagnostics on ``x`` and ``y`` (:func:`critic_diagnostics`);
    the converged-critic probe runs when ``index`` (evaluations counted from 0) is a multiple of
    ``eval_cfg.probe_every``. Objectives without a critic get no critic keys at all.

    With ``eval_cfg.draws = k > 1``, ``k - 1`` more triples of batches follow from ``rng``, each with
    the per-batch metrics and critic diagnostics, and the row reports (:func:`combine_draws`):

    * averaged over the ``k`` draws, each with ``<key>_ci95``, the half-width of the two-sided 95%
      Student-t interval for the mean (t with ``k - 1`` degrees of freedom times the standard error):
      ``w1_exact``, ``w2_exact``, ``w1_real_real``, ``critic_estimate``, ``critic_gap``,
      ``critic_rel_error`` (the mean of the per-draw ratios), ``ctransform_bound``, ``lipschitz_max``
      and ``grad_ot_cosine`` (over the draws where it is defined);
    * summed over the draws: ``ot_nonoptimal``;
    * measured once, on the first draw: the large-sample quality (``w1_large``, mode coverage, image
      quality, ``fid_inception``), already averaged over ``large_n`` samples, and the probe (trained on
      the first draw's batches, so ``probe_gap`` is against that draw's ``w1_exact``, not the mean).

    The first draw takes the same random numbers whatever ``draws`` is, so a ``draws = 1`` row is
    exactly the first draw's metrics, with no ``_ci95`` keys.

    The models are put in ``eval()`` mode for the evaluation and restored after it; nothing here
    changes their parameters, buffers or optimisers.
    """
    large_n, solver = eval_cfg.large_n, eval_cfg.solver
    if is_image_data(data):  # a finite held-out split: no repeated images in the real sample
        large_n = min(large_n, data.num_heldout)
    probe = bool(eval_cfg.probe_every and eval_cfg.probe_steps and index % eval_cfg.probe_every == 0)
    critic_mode = critic is not None and critic.training
    with eval_mode(generator, critic):
        row, real, fake = _batch_pair(generator, critic, data, objective, eval_cfg, rng)

        fake_large = sample_generator(generator, large_n, rng)
        real_large = data.sample_heldout(large_n, rng)
        add_counted(row, large_sample_w1(fake_large, real_large, solver=solver), "w1_large")
        if classifier is not None:  # FID, KID, precision/recall, label entropy (no draws from rng)
            row.update(image_quality(fake_large, real_large, classifier=classifier))
        if inception is not None:
            row.update(
                inception_fid(fake_large, real_large, extractor=inception, value_range=data.pixel_range)
            )
        if getattr(data, "modes", None) is not None:
            row.update(mode_coverage(fake_large, data.modes, data.std))

        def diagnose(row, real, fake, probe):
            return critic_diagnostics(
                objective, critic, real, fake, row, eval_cfg, rng=rng, probe=probe, train_mode=critic_mode
            )

        # Drawn last from rng, so the metrics above do not depend on whether these run.
        if critic is not None:
            add_counted(row, diagnose(row, real, fake, probe), None)

        draws = [row]
        for _ in range(1, eval_cfg.draws):
            more, real, fake = _batch_pair(generator, critic, data, objective, eval_cfg, rng)
            if critic is not None:
                add_counted(more, diagnose(more, real, fake, probe=False), None)
            draws.append(more)
    return row if len(draws) == 1 else combine_draws(draws)


@torch.no_grad()
def curve_point(generator, critic, data, objective, eval_cfg, *, rng: torch.Generator) -> dict[str, float]:
    """The per-batch keys that cost milliseconds (``w1_exact``, ``w1_real_real``, the critic's estimate
    and its error, ``ot_nonoptimal``), on the batches :func:`evaluate` draws first from the same ``rng``:
    at a step where both run, they give the same values (with ``eval.draws=1``)."""
    with eval_mode(generator, critic):
        row, _, _ = _batch_pair(generator, critic, data, objective, eval_cfg, rng, w2=False)
    return row


@contextlib.contextmanager
def eval_mode(*modules):
    """The modules (``None`` skipped) in ``eval()`` mode inside, back in the mode each had after."""
    modes = [(m, m.training) for m in modules if m is not None]
    for module, _ in modes:
        module.eval()
    try:
        yield
    finally:
        for module, was_training in modes:
            module.train(was_training)
