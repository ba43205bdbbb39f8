"""The training loop. Read it top to bottom: setup, then one loop over generator steps.

At step ``s`` (the state after ``s`` generator updates), in this order:
  1. a stop was requested (Ctrl-C, SIGTERM, SLURM pre-emption): save a checkpoint and stop;
  2. every ``train.checkpoint_every`` steps: save ``checkpoints/last.pt``;
  3. every ``eval.every`` steps and at the last step: evaluate on fresh batches, append a line to
     ``metrics.jsonl``, log to TensorBoard;
  4. ``objective.critic_steps`` critic updates, then one generator update.

A resumed run starts at the checkpoint's step with every state restored and redoes the evaluation
of that step, so it writes the same lines as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from gan import checkpoint
from gan.app import instantiate_or_fail
from gan.config import ConfigError
from gan.evaluation import eval_generator, evaluate, sample_generator
from gan.image_eval import generator_grid, is_image_data, quality_networks, sample_grid
from gan.plots import toy_scatter
from gan.runlog import close_run, is_finite_row, open_writer, tb_tag

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """A loss, a parameter or a metric became NaN or infinite at ``step``."""

    def __init__(self, step: int, what: str):
        super().__init__(f"non-finite {what} at step {step}")
        self.step = step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (third-party code may still draw from NumPy's global state)
    torch.manual_seed(seed)


def build(cfg: DictConfig, device: torch.device):
    """Dataset, generator, critic (``None`` for objectives without one), objective, optimisers.

    ``model.generator`` gets the data-derived ``out_shape``, ``model.critic`` the ``in_shape``.
    """
    data = instantiate_or_fail(cfg.data, "data")
    size = getattr(data, "num_train", None)  # finite (image) sets: a batch must fit in the split
    for key in ("train.batch_size", "eval.batch_size"):
        if size is not None and OmegaConf.select(cfg, key) > size:
            raise ConfigError(
                f"{key}={OmegaConf.select(cfg, key)}: larger than the {size} training images of this data"
            )
    shape = tuple(data.shape)
    where = f"for data of shape {shape}"
    generator = instantiate_or_fail(cfg.model.generator, f"model.generator {where}", out_shape=shape)
    objective = instantiate_or_fail(cfg.objective, "objective")
    critic = None
    if objective.uses_critic:
        critic = instantiate_or_fail(cfg.model.critic, f"model.critic {where}", in_shape=shape)
        critic = objective.prepare_critic(critic.to(device))
    opt_g, opt_c = objective.optimizers(generator.to(device), critic)
    return data, generator, critic, objective, opt_g, opt_c


def _all_finite(*modules) -> bool:
    return all(torch.isfinite(p).all() for m in modules if m is not None for p in m.parameters())


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train one GAN as ``cfg`` says, writing everything into ``run_dir``; returns the summary.

    Raises :class:`gan.config.ConfigError` from setup, before anything is written, when the config,
    the data or the run folder cannot be used.
    """
    run_dir = Path(run_dir)
    started = time.perf_counter()
    if cfg.train.threads:  # set per job: launcher workers are reused from one job to the next
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    data, generator, critic, objective, opt_g, opt_c = build(cfg, device)
    classifier, inception = quality_networks(data, cfg.eval, device=device)  # None for toy data or when off
    train_rng = torch.Generator(device).manual_seed(cfg.seed)
    steps, batch = cfg.train.steps, cfg.train.batch_size
    latent = generator.latent_dim
    metrics_path = run_dir / "metrics.jsonl"

    start, elapsed_before, eval_before, rows_written = 0, 0.0, 0.0, 0
    state = checkpoint.prepare_run_dir(run_dir, cfg)
    if state is not None:
        checkpoint.restore(
            state, generator=generator, critic=critic, opt_g=opt_g, opt_c=opt_c, train_rng=train_rng
        )
        start, elapsed_before, eval_before = state["step"], state["elapsed"], state["eval_s"]
        rows_written = checkpoint.truncate_metrics(metrics_path, before_step=start)
        log.info("resuming at step %d (%d evaluation lines kept)", start, rows_written)

    def save_checkpoint(at_step: int) -> None:
        checkpoint.save(
            run_dir, step=at_step, generator=generator, critic=critic, opt_g=opt_g, opt_c=opt_c,
            train_rng=train_rng, cfg=cfg, elapsed=elapsed_before + time.perf_counter() - started,
            eval_s=eval_s, metrics_rows=rows_written,
        )  # fmt: skip

    writer = open_writer(run_dir, purge_step=start if start else None)
    metrics_file = metrics_path.open("a")
    status, step, final, eval_s, error, nonoptimal = "failed", start, {}, eval_before, None, 0
    bar = tqdm(
        total=steps, initial=start, desc="train", unit="step", disable=not cfg.train.progress, mininterval=1
    )
    stop = checkpoint.StopRequests()
    try:
        with stop:
            for step in range(start, steps + 1):
                if stop.requested:
                    status = "interrupted"
                    break
                if step % cfg.train.checkpoint_every == 0 and step > start:
                    save_checkpoint(step)

                if step % cfg.eval.every == 0 or step == steps:
                    t0 = time.perf_counter()
                    row = {"step": step} | evaluate(
                        generator,
                        critic,
                        data,
                        objective,
                        cfg.eval,
                        rng=eval_generator(cfg.seed, step, device),
                        index=step // cfg.eval.every,
                        classifier=classifier,
                        inception=inception,
                    )
                    if not is_finite_row(row):
                        raise Diverged(step, f"metric: {row}")
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    rows_written += 1
                    for key, value in row.items():
                        if key != "step":
                            writer.add_scalar(tb_tag(key), value, step)
                    if cfg.eval.plot and data.shape == (2,):
                        plot_rng = eval_generator(cfg.seed, step, device)
                        fig = toy_scatter(
                            data.sample(512, plot_rng), sample_generator(generator, 512, plot_rng), critic
                        )
                        writer.add_figure("samples/real_vs_generated", fig, step)
                    if cfg.eval.plot and is_image_data(data):
                        plot_rng = eval_generator(cfg.seed, step, device)
                        grid = generator_grid(generator, plot_rng, value_range=data.pixel_range)
                        writer.add_image("samples/generated", grid, step)
                        if step == start:
                            real = sample_grid(data.sample(64, plot_rng), value_range=data.pixel_range)
                            writer.add_image("samples/real", real, step)
                    if row.get("ot_nonoptimal"):
                        nonoptimal += row["ot_nonoptimal"]
                        log.warning(
                            "step %d: %d exact OT solve(s) stopped before optimality", step, nonoptimal
                        )
                    final = row
                    eval_s += time.perf_counter() - t0
                    bar.set_postfix(
                        w1=f"{row['w1_exact']:.3f}", critic=f"{row.get('critic_estimate', np.nan):.3f}"
                    )
                if step == steps:
                    status = "completed"
                    break

                # Critic updates on fresh real and generated batches (the generator is held fixed).
                for _ in range(objective.critic_steps):
                    real = data.sample(batch, train_rng)
                    with torch.no_grad():
                        fake = generator(torch.randn(batch, latent, generator=train_rng, device=device))
                    losses_c = objective.critic_loss(critic, real, fake, train_rng)
                    opt_c.zero_grad(set_to_none=True)
                    losses_c["loss"].backward()
                    opt_c.step()
                    objective.after_critic_step(critic)

                # One generator update.
                real = data.sample(batch, train_rng)
                fake = generator(torch.randn(batch, latent, generator=train_rng, device=device))
                losses_g = objective.generator_loss(critic, real, fake)
                opt_g.zero_grad(set_to_none=True)
                losses_g["loss"].backward()
                opt_g.step()
                bar.update(1)

                if (step + 1) % cfg.train.log_every == 0:
                    losses = losses_g | (losses_c if objective.critic_steps else {})
                    values = {k: v.item() for k, v in losses.items() if k != "loss"}
                    if not (is_finite_row(values) and _all_finite(generator, critic)):
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
            save_checkpoint(step)
        summary = close_run(
            run_dir, writer, cfg, status=status, steps_done=step,
            elapsed=elapsed_before + time.perf_counter() - started, eval_s=eval_s, nonoptimal=nonoptimal,
            final=final, error=error, saved=saved,
        )  # fmt: skip
    if error == "KeyboardInterrupt":
        raise SystemExit(130)
    stop.forward()  # after an interrupt: hand the signal on (submitit requeues) or exit with 128 + signal
    return summary
