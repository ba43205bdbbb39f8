"""The critic bench: train only a critic between two distributions whose W1 and optimal potential are
known (:mod:`gan.problems`), and measure it against that truth; the task :func:`gan.loop.run_loop`
runs for ``python -m experiments.critic_bench``.

``Q`` is the **real** distribution and ``P`` the **generated** one, so ``critic_estimate = mean f(Q) −
mean f(P)`` and the optimal critic is the known potential ``u``. One update is one critic update on a
fresh batch of ``Q`` and an independent fresh batch of ``P``; there is no generator, so
``objective.critic_steps`` (critic updates per generator update) is not used.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig

from gan import checkpoint
from gan.config import ConfigError, instantiate_or_fail, validate
from gan.copies import Single
from gan.evaluation import add_counted, critic_values, draw_seed, eval_generator, eval_mode, pair_metrics
from gan.loop import Hook, run_loop
from gan.plots import figure_title, toy_scatter
from gan.runlog import COMPARE_TAG, Run, group_choices, tb_tag
from gan.trainer import seed_everything
from metrics import known
from metrics.critic import (
    CRITIC_ESTIMATE,
    GRAD_OT_COSINE,
    LIPSCHITZ_MAX,
    ctransform_bound,
    grad_ot_cosine,
    input_gradients,
    lipschitz_max,
)
from metrics.ot import W1_EXACT

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(critic, problem, objective, eval_cfg, truth: dict[str, float], *, rng) -> dict[str, float]:
    """The critic against the truth and against exact minibatch OT, on fresh samples from ``rng``.

    In this order from ``rng``: a batch ``x`` of ``Q``, an independent batch ``y`` of ``P`` and a
    second batch ``x'`` of ``Q`` (``eval_cfg.batch_size`` each), the interpolation weights, then
    ``eval_cfg.box_points`` random points of the problem's box. Keys:

    * ``w1_true`` (``w1_true_ci95``: 0 when exact), the distance between the *distributions*;
    * ``w1_exact``, ``w2_exact``, ``ot_nonoptimal``, ``w1_real_real``: exact minibatch OT on
      ``(x, y)`` and ``(x, x')``, whose distance to ``w1_true`` is the minibatch bias;
    * ``critic_estimate``, ``critic_gap``, ``critic_rel_error`` (against ``w1_exact``),
      ``critic_true_gap``, ``critic_true_rel_error`` (against ``w1_true``), ``ctransform_bound``;
    * ``grad_true_cosine``, ``grad_error`` at the points of ``y``, and ``grad_ot_cosine`` (against the
      exact minibatch plan), for the gradient a generator update would follow
      (``objective.critic_values``: ``∇f``, or ``−∇f^c`` for the c-transform objectives);
    * ``lipschitz_max`` over ``x``, ``y``, their interpolates and the box points;
      ``lipschitz_max_box`` over the box points alone.

    The critic is put in ``eval()`` mode for the evaluation and restored after it.
    """
    solver = eval_cfg.solver
    with eval_mode(critic):
        real, real_other, fake = _batches(problem, eval_cfg.batch_size, rng)
        row = pair_metrics(objective, critic, real, real_other, fake, solver=solver) | truth
        row |= known.estimate_vs_truth(row[CRITIC_ESTIMATE], truth[known.W1_TRUE])
        row |= ctransform_bound(critic(real), real, fake)

        grad = input_gradients(lambda y: critic_values(objective, critic, real, y)[1], fake)
        grad_true = problem.grad_true(fake)
        row |= known.grad_true_cosine(grad, grad_true)
        row |= known.grad_error(grad, grad_true)
        cosine = grad_ot_cosine(grad, real, fake, solver=solver)
        if not math.isfinite(cosine[GRAD_OT_COSINE]):  # NaN only when the plan moves no point
            del cosine[GRAD_OT_COSINE]
        add_counted(row, cosine, GRAD_OT_COSINE)

        lip_samples = lipschitz_max(critic, real, fake, seed=draw_seed(rng))[LIPSCHITZ_MAX]
        low, high = problem.bounds()
        box = known.box_points(eval_cfg.box_points, low=low, high=high, generator=rng)
        lip_box = known.lipschitz_max_at(critic, [box])[LIPSCHITZ_MAX]
        row[LIPSCHITZ_MAX] = max(lip_samples, lip_box)
        row[known.LIPSCHITZ_MAX_BOX] = lip_box
    return row


def _batches(problem, n: int, rng: torch.Generator):
    """A batch ``x`` of ``Q``, a second one ``x'`` and a batch ``y`` of ``P``, drawn in the order
    ``x``, ``y``, ``x'``."""
    _, real = problem.sample(n, rng)
    fake, _ = problem.sample(n, rng)
    _, real_other = problem.sample(n, rng)
    return real, real_other, fake


@torch.no_grad()
def curve(critic, problem, objective, eval_cfg, *, rng) -> dict[str, float]:
    """The per-batch keys that cost milliseconds, on the batches :func:`evaluate` draws first from the
    same ``rng``."""
    with eval_mode(critic):
        real, real_other, fake = _batches(problem, eval_cfg.batch_size, rng)
        return pair_metrics(objective, critic, real, real_other, fake, solver=eval_cfg.solver, w2=False)


# ---------------------------------------------------------------------------------------------------
# The task


# The critic's estimate, the true W1, the minibatch W1 and the noise floor, in four colours on one chart.
BENCH_COMPARED = (CRITIC_ESTIMATE, known.W1_TRUE, W1_EXACT, "w1_real_real")


def bench_charts() -> dict:
    direction = [tb_tag(k) for k in (known.GRAD_TRUE_COSINE, GRAD_OT_COSINE)]
    gradient = [tb_tag(k) for k in (known.GRAD_ERROR, LIPSCHITZ_MAX, known.LIPSCHITZ_MAX_BOX)]
    return {
        "critic vs known truth": {
            "critic estimate, true W1, minibatch W1, real-vs-real W1": ["Multiline", [COMPARE_TAG]],
            "cosine of the critic's gradient to the true one and to the minibatch plan": [
                "Multiline",
                direction,
            ],
            "gradient error and largest gradient norm": ["Multiline", gradient],
        }
    }


class CriticBench:
    """One critic trained on ``cfg.problem`` (:class:`gan.loop.Task`, K = 1)."""

    owner = ("experiments.critic_bench", lambda state: state.get("kind") == "critic_bench")

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.device = cfg, torch.device(cfg.device)
        seed_everything(cfg.seed)
        self.objective = instantiate_or_fail(cfg.objective, "objective")
        if not getattr(self.objective, "estimates_w1", False):
            raise ConfigError(
                f"objective={getattr(self.objective, 'name', cfg.objective._target_)} trains no W1 critic; "
                f"choose one of: {', '.join(w1_critic_objectives())}"
            )
        self.problem = instantiate_or_fail(cfg.problem, "problem", device=str(self.device))
        shape = (self.problem.dim,)
        critic = instantiate_or_fail(
            cfg.model.critic, f"model.critic for dim={self.problem.dim}", in_shape=shape
        )
        self.critic = Single(self.objective.prepare_critic(critic.to(self.device)))
        self.opt_c = self.objective.critic_optimizer(self.critic.parameters())
        self.rngs = [torch.Generator(self.device).manual_seed(cfg.seed)]
        self.batch_size = int(cfg.train.batch_size)  # a plain int: read at every step
        self.truth = self.problem.truth()
        choices, charts = group_choices(cfg), bench_charts()
        self.runs = [Run(run_dir, cfg, cfg.seed, charts=charts, choices=choices, compared=BENCH_COMPARED)]
        log.info("true W1 = %.6g ± %.2g (95%%)", self.truth[known.W1_TRUE], self.truth[known.W1_TRUE_CI95])

    def update(self) -> dict[str, torch.Tensor]:
        _, real = self.problem.sample(self.batch_size, self.rngs[0])
        fake, _ = self.problem.sample(self.batch_size, self.rngs[0])
        return self.objective.critic_step(self.critic, self.opt_c, real[None], fake[None], self.rngs)

    def finite(self) -> list[bool]:
        return self.critic.finite()

    def evaluate(self, k: int, step: int) -> dict:
        rng = eval_generator(self.cfg.seed, step, self.device)
        return evaluate(
            self.critic.module(0), self.problem, self.objective, self.cfg.eval, self.truth, rng=rng
        )

    def curve(self, k: int, step: int) -> dict:
        rng = eval_generator(self.cfg.seed, step, self.device)
        return curve(self.critic.module(0), self.problem, self.objective, self.cfg.eval, rng=rng)

    def figures(self, k: int, step: int, writer) -> None:
        if self.cfg.eval.plot and self.problem.dim == 2:
            fake, real = self.problem.sample(512, eval_generator(self.cfg.seed, step, self.device))
            low, high = (b.double().cpu() for b in self.problem.bounds())  # the problem's box, and a margin
            limits = (low - 0.05 * (high - low), high + 0.05 * (high - low))
            title = figure_title(self.runs[0].final)
            fig = toy_scatter(real, fake, self.critic.module(0), limits=limits, title=title)
            writer.add_figure("samples/Q_real_vs_P_generated", fig, step)

    def state(self, k: int) -> dict:
        return {
            "kind": "critic_bench",
            "critic": self.critic.module(0).state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "train_rng": self.rngs[0].get_state(),
        }

    def restore(self, states: list[dict]) -> None:
        with checkpoint.fitting("the critic of this config"):
            self.critic.load_states([states[0]["critic"]])
            self.opt_c.load_state_dict(states[0]["opt_c"])
            self.rngs[0].set_state(states[0]["train_rng"])
        torch.set_rng_state(states[0]["torch_rng"])


def w1_critic_objectives() -> list[str]:
    """The ``objective=`` options whose critic is meant to estimate W1 (``estimates_w1``)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from gan.config import CONF_DIR, group_options

    names = []
    for name in group_options("objective"):
        target = OmegaConf.load(CONF_DIR / "objective" / f"{name}.yaml")._target_
        if getattr(get_class(target), "estimates_w1", False):
            names.append(name)
    return names


def run(cfg: DictConfig, run_dir: str | Path, *, hook: Hook | None = None) -> dict:
    """Train one critic on ``cfg.problem`` as ``cfg`` says, writing everything into ``run_dir``;
    returns the summary.

    Raises :class:`gan.config.ConfigError` from setup, before anything is written, when the config or
    the run folder cannot be used.
    """
    validate(cfg)
    if cfg.train.threads:  # set per job: launcher workers are reused from one job to the next
        torch.set_num_threads(cfg.train.threads)
    return run_loop(CriticBench(cfg, Path(run_dir)), cfg, hook=hook)
