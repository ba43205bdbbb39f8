"""The critic benchmark: train only a critic between two distributions whose W1 and optimal potential
are known (:mod:`metrics.known`), and measure it against that truth. Read it top to bottom: the
problems, one evaluation, then the loop.

``Q`` is the **real** distribution and ``P`` the **generated** one, so ``critic_estimate = mean f(Q) −
mean f(P)`` and the optimal critic is the known potential ``u``; its gradient at a point of ``P``
points to that point's partner in ``Q``.

At step ``s`` (the critic after ``s`` updates), in this order:
  1. a stop was requested (Ctrl-C, SIGTERM, SLURM pre-emption): save a checkpoint and stop;
  2. every ``train.checkpoint_every`` steps: save ``checkpoints/last.pt``;
  3. every ``eval.every`` steps and at the last step: evaluate on fresh samples, append a line to
     ``metrics.jsonl``, log to TensorBoard;
  4. one critic update on a fresh batch of ``Q`` and an independent fresh batch of ``P``.

There is no generator, so ``objective.critic_steps`` (critic updates per generator update) is not used.
A resumed run starts at the checkpoint's step with every state restored and redoes the evaluation of
that step, so it writes the same lines as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from gan import checkpoint
from gan.app import instantiate_or_fail
from gan.config import ConfigError
from gan.evaluation import eval_generator
from gan.plots import toy_scatter
from gan.runlog import close_run, is_finite_row, tb_tag
from gan.trainer import Diverged, seed_everything
from metrics import known
from metrics.critic import (
    CRITIC_ESTIMATE,
    GRAD_OT_COSINE,
    LIPSCHITZ_MAX,
    critic_vs_w1,
    ctransform_bound,
    grad_ot_cosine,
    input_gradients,
    lipschitz_max,
)
from metrics.ot import W1_EXACT, batch_distances, wasserstein

log = logging.getLogger(__name__)

W1_REAL_REAL = "w1_real_real"
# The objectives that train a critic meant to estimate W1 (the others have none, or a classifier).
CRITIC_OBJECTIVES = ("wgan_gp", "wgan_clip", "wgan_lp", "wgan_sn", "ctransform", "c_eps")


# ---------------------------------------------------------------------------------------------------
# Problems: thin, configurable wrappers around the pure functions of metrics.known.


def _positive_int(key: str, value) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ConfigError(f"problem.{key}={value!r}: must be a positive integer")
    return value


def _positive_float(key: str, value) -> float:
    if not (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"problem.{key}={value!r}: must be a positive number")
    return float(value)


class Translation:
    """``P`` uniform on ``[−box, box]^dim``, ``Q = P + m`` with ``m = shift · (1, ..., 1)/√dim``.

    ``W1 = shift`` exactly; ``u(x) = ⟨x, m⟩/‖m‖``; ``∇u = m/‖m‖``. Random probe points for
    ``lipschitz_max_box`` come from the smallest box holding both supports.
    """

    def __init__(self, dim: int, shift: float = 1.0, box: float = 1.0, device: str = "cpu"):
        self.dim = _positive_int("dim", dim)
        self.shift = _positive_float("shift", shift)
        self.box = _positive_float("box", box)
        self.m = known.translation_vector(self.dim, self.shift).to(device)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Coupled pairs ``(p, q)``, each (n, dim)."""
        return known.sample_translation(n, m=self.m, box=self.box, generator=generator)

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        return known.translation_potential(x, self.m)

    def grad_true(self, x: torch.Tensor) -> torch.Tensor:
        return known.translation_potential_grad(x, self.m)

    def truth(self) -> dict[str, float]:
        return known.translation_w1(self.m)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return known.translation_bounds(self.m, self.box)


class Funnels:
    """``u(x) = min_k (‖x − c_k‖ + b_k)``; ``Q`` uniform on ``[−box, box]^dim``; ``P``: each point of
    ``Q`` moved towards its active centre by a fraction ``s ~ U[move_min, move_max]`` of its distance.

    The ``n_funnels`` centres (uniform in the box) and offsets (uniform in ``[0, offset]``) are drawn
    from ``layout_seed``, not from the run's ``seed``: runs with different seeds train on the same
    problem. ``W1 = E‖q − p‖`` is estimated once, by Monte Carlo over ``mc_samples`` pairs drawn from
    the same layout generator, with its 95% interval (``w1_true_ci95``).
    """

    def __init__(
        self,
        dim: int,
        n_funnels: int = 4,
        box: float = 1.0,
        offset: float = 0.5,
        move_min: float = 0.25,
        move_max: float = 0.75,
        layout_seed: int = 0,
        mc_samples: int = 200_000,
        device: str = "cpu",
    ):
        self.dim = _positive_int("dim", dim)
        self.box = _positive_float("box", box)
        _positive_int("n_funnels", n_funnels)
        if not (isinstance(offset, int | float) and math.isfinite(offset) and offset >= 0):
            raise ConfigError(f"problem.offset={offset!r}: must be a number >= 0")
        if not (0 <= move_min <= move_max < 1 and move_max > 0):
            raise ConfigError(
                f"problem.move_min={move_min!r}, problem.move_max={move_max!r}: "
                "need 0 <= move_min <= move_max < 1 and move_max > 0"
            )
        if not (isinstance(layout_seed, int) and layout_seed >= 0):
            raise ConfigError(f"problem.layout_seed={layout_seed!r}: must be an integer >= 0")
        if not (isinstance(mc_samples, int) and mc_samples >= 2):
            raise ConfigError(f"problem.mc_samples={mc_samples!r}: must be an integer >= 2")
        self.move_min, self.move_max = float(move_min), float(move_max)
        layout_rng = torch.Generator().manual_seed(layout_seed)
        centres, offsets = known.funnel_layout(
            dim=dim, n_funnels=n_funnels, box=self.box, offset=float(offset), generator=layout_rng
        )
        self._truth = known.funnels_w1(
            centres=centres,
            offsets=offsets,
            box=self.box,
            move_min=self.move_min,
            move_max=self.move_max,
            n=mc_samples,
            generator=layout_rng,
        )
        self.centres, self.offsets = centres.to(device), offsets.to(device)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Coupled pairs ``(p, q)``, each (n, dim)."""
        p, q, _ = known.sample_funnels(
            n,
            centres=self.centres,
            offsets=self.offsets,
            box=self.box,
            move_min=self.move_min,
            move_max=self.move_max,
            generator=generator,
        )
        return p, q

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        return known.funnel_potential(x, self.centres, self.offsets)

    def grad_true(self, x: torch.Tensor) -> torch.Tensor:
        return known.funnel_potential_grad(x, self.centres, self.offsets)

    def truth(self) -> dict[str, float]:
        return dict(self._truth)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        full = torch.full((self.dim,), self.box)
        return -full, full


class KnownPotential(torch.nn.Module):
    """A problem's true potential ``u`` as a critic: the reference a trained critic is measured against."""

    def __init__(self, problem):
        super().__init__()
        self.problem = problem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.problem.potential(x.flatten(1))


# ---------------------------------------------------------------------------------------------------
# One evaluation


def _draw_seed(rng: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=rng, device=rng.device))


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
    n, solver = eval_cfg.batch_size, eval_cfg.solver
    was_training = critic.training
    critic.eval()
    try:
        _, real = problem.sample(n, rng)
        fake, _ = problem.sample(n, rng)
        _, real_other = problem.sample(n, rng)
        row = batch_distances(real, fake, solver=solver)
        row[W1_REAL_REAL] = wasserstein(real, real_other, p=1, solver=solver)
        row |= truth
        row |= critic_vs_w1(*objective.critic_values(critic, real, fake), row[W1_EXACT])
        row |= known.estimate_vs_truth(row[CRITIC_ESTIMATE], truth[known.W1_TRUE])
        row |= ctransform_bound(critic(real), real, fake)

        grad = input_gradients(lambda y: objective.critic_values(critic, real, y)[1], fake)
        grad_true = problem.grad_true(fake)
        row |= known.grad_true_cosine(grad, grad_true)
        row |= known.grad_error(grad, grad_true)
        cosine = grad_ot_cosine(grad, real, fake, solver=solver)
        if math.isfinite(cosine[GRAD_OT_COSINE]):  # NaN only when the plan moves no point
            row |= cosine

        lip_samples = lipschitz_max(critic, real, fake, seed=_draw_seed(rng))[LIPSCHITZ_MAX]
        low, high = problem.bounds()
        box = known.box_points(eval_cfg.box_points, low=low, high=high, generator=rng)
        lip_box = known.lipschitz_max_at(critic, [box])[LIPSCHITZ_MAX]
        row[LIPSCHITZ_MAX] = max(lip_samples, lip_box)
        row[known.LIPSCHITZ_MAX_BOX] = lip_box
    finally:
        critic.train(was_training)
    return row


# ---------------------------------------------------------------------------------------------------
# Setup, checkpoints, TensorBoard


def check(cfg: DictConfig) -> None:
    """The benchmark's own keys (``gan.config.validate`` checks the shared ones by name)."""
    points = cfg.eval.box_points
    if not (isinstance(points, int) and not isinstance(points, bool) and points >= 1):
        raise ConfigError(f"eval.box_points={points!r}: must be a positive integer")


def build(cfg: DictConfig, device: torch.device):
    """Problem, critic (after ``objective.prepare_critic``), objective and the critic's optimiser."""
    objective = instantiate_or_fail(cfg.objective, "objective")
    if getattr(objective, "name", None) not in CRITIC_OBJECTIVES:
        raise ConfigError(
            f"objective={getattr(objective, 'name', cfg.objective._target_)} trains no W1 critic; "
            f"choose one of: {', '.join(CRITIC_OBJECTIVES)}"
        )
    problem = instantiate_or_fail(cfg.problem, "problem", device=str(device))
    shape = (problem.dim,)
    critic = instantiate_or_fail(cfg.model.critic, f"model.critic for dim={problem.dim}", in_shape=shape)
    critic = objective.prepare_critic(critic.to(device))
    opt_c = objective.critic_optimizer(critic.parameters())
    return problem, critic, objective, opt_c


CHECKPOINT_OWNER = ("experiments.critic_bench", lambda state: state.get("kind") == "critic_bench")


def open_writer(run_dir: Path, purge_step: int | None = None) -> SummaryWriter:
    writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)
    tags = {
        "estimates": [CRITIC_ESTIMATE, known.W1_TRUE, W1_EXACT, W1_REAL_REAL],
        "direction": [known.GRAD_TRUE_COSINE, GRAD_OT_COSINE],
        "gradient": [known.GRAD_ERROR, LIPSCHITZ_MAX, known.LIPSCHITZ_MAX_BOX],
    }
    writer.add_custom_scalars(
        {
            "critic vs known truth": {
                "critic estimate, true W1, minibatch W1, real-vs-real W1": [
                    "Multiline",
                    [tb_tag(k) for k in tags["estimates"]],
                ],
                "cosine of the critic's gradient to the true one and to the minibatch plan": [
                    "Multiline",
                    [tb_tag(k) for k in tags["direction"]],
                ],
                "gradient error and largest gradient norm": [
                    "Multiline",
                    [tb_tag(k) for k in tags["gradient"]],
                ],
            }
        }
    )
    return writer


# ---------------------------------------------------------------------------------------------------
# The loop


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train one critic on ``cfg.problem`` as ``cfg`` says, writing everything into ``run_dir``;
    returns the summary.

    Raises :class:`gan.config.ConfigError` from setup, before anything is written, when the config or
    the run folder cannot be used.
    """
    run_dir = Path(run_dir)
    started = time.perf_counter()
    check(cfg)
    if cfg.train.threads:  # set per job: launcher workers are reused from one job to the next
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    problem, critic, objective, opt_c = build(cfg, device)
    truth = problem.truth()
    train_rng = torch.Generator(device).manual_seed(cfg.seed)
    steps, batch = cfg.train.steps, cfg.train.batch_size
    metrics_path = run_dir / "metrics.jsonl"

    start, elapsed_before, eval_before, rows_written = 0, 0.0, 0.0, 0
    state = checkpoint.prepare_run_dir(run_dir, cfg, CHECKPOINT_OWNER)
    if state is not None:
        try:
            critic.load_state_dict(state["critic"])
            opt_c.load_state_dict(state["opt_c"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"checkpoint does not fit the critic of this config: {first}") from None
        train_rng.set_state(state["train_rng"])
        torch.set_rng_state(state["torch_rng"])
        start, elapsed_before, eval_before = state["step"], state["elapsed"], state["eval_s"]
        rows_written = checkpoint.truncate_metrics(metrics_path, before_step=start)
        log.info("resuming at step %d (%d evaluation lines kept)", start, rows_written)
    log.info("true W1 = %.6g ± %.2g (95%%)", truth[known.W1_TRUE], truth[known.W1_TRUE_CI95])

    def save(at_step: int) -> None:
        checkpoint.save(
            run_dir, step=at_step, kind="critic_bench", critic=critic, opt_c=opt_c, train_rng=train_rng,
            cfg=cfg, elapsed=elapsed_before + time.perf_counter() - started, eval_s=eval_s,
            metrics_rows=rows_written,
        )  # fmt: skip

    writer = open_writer(run_dir, purge_step=start if start else None)
    metrics_file = metrics_path.open("a")
    status, step, final, eval_s, error, nonoptimal = "failed", start, {}, eval_before, None, 0
    bar = tqdm(
        total=steps, initial=start, desc="critic", unit="step", disable=not cfg.train.progress, mininterval=1
    )
    stop = checkpoint.StopRequests()
    try:
        with stop:
            for step in range(start, steps + 1):
                if stop.requested:
                    status = "interrupted"
                    break
                if step % cfg.train.checkpoint_every == 0 and step > start:
                    save(step)

                if step % cfg.eval.every == 0 or step == steps:
                    t0 = time.perf_counter()
                    rng = eval_generator(cfg.seed, step, device)
                    row = {"step": step} | evaluate(critic, problem, objective, cfg.eval, truth, rng=rng)
                    if not is_finite_row(row):
                        raise Diverged(step, f"metric: {row}")
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    rows_written += 1
                    for key, value in row.items():
                        if key != "step":
                            writer.add_scalar(tb_tag(key), value, step)
                    if cfg.eval.plot and problem.dim == 2:
                        plot_rng = eval_generator(cfg.seed, step, device)
                        fake, real = problem.sample(512, plot_rng)
                        writer.add_figure(
                            "samples/Q_real_vs_P_generated", toy_scatter(real, fake, critic), step
                        )
                    if row.get("ot_nonoptimal"):
                        nonoptimal += row["ot_nonoptimal"]
                        log.warning(
                            "step %d: %d exact OT solve(s) stopped before optimality", step, nonoptimal
                        )
                    final = row
                    eval_s += time.perf_counter() - t0
                    bar.set_postfix(true=f"{row[known.W1_TRUE]:.3f}", critic=f"{row[CRITIC_ESTIMATE]:.3f}")
                if step == steps:
                    status = "completed"
                    break

                # One critic update on fresh, independent batches of Q (real) and P (generated).
                _, real = problem.sample(batch, train_rng)
                fake, _ = problem.sample(batch, train_rng)
                losses = objective.critic_loss(critic, real, fake, train_rng)
                opt_c.zero_grad(set_to_none=True)
                losses["loss"].backward()
                opt_c.step()
                objective.after_critic_step(critic)
                bar.update(1)

                if (step + 1) % cfg.train.log_every == 0:
                    values = {k: v.item() for k, v in losses.items() if k != "loss"}
                    finite = all(torch.isfinite(p).all() for p in critic.parameters())
                    if not (is_finite_row(values) and finite):
                        raise Diverged(step + 1, f"loss or parameter: {values}")
                    for key, value in values.items():
                        writer.add_scalar(f"loss/{key}", value, step + 1)
    except Diverged as exc:
        status, error, step = "diverged", str(exc), exc.step
        log.error("run diverged: %s", exc)
        if cfg.train.on_nan == "raise":
            raise
    except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the last periodic checkpoint stays
        status, error = "interrupted", "KeyboardInterrupt"
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        bar.close()
        metrics_file.close()
        saved = status == "completed" or (status == "interrupted" and error is None)
        if saved:
            save(step)
        summary = close_run(
            run_dir, writer, cfg, status=status, steps_done=step,
            elapsed=elapsed_before + time.perf_counter() - started, eval_s=eval_s, nonoptimal=nonoptimal,
            final=final, error=error, saved=saved,
        )  # fmt: skip
    if error == "KeyboardInterrupt":
        raise SystemExit(130)
    stop.forward()  # after an interrupt: hand the signal on (submitit requeues) or exit with 128 + signal
    return summary
