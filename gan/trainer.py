"""The training loop. Read it top to bottom: setup, then one loop over generator steps.

At step ``s`` (the state after ``s`` generator updates), in this order:
  1. every ``train.checkpoint_every`` steps: save ``checkpoints/last.pt``;
  2. every ``eval.every`` steps and at the last step: evaluate on fresh batches, append a line to
     ``metrics.jsonl``, log to TensorBoard;
  3. ``objective.critic_steps`` critic updates, then one generator update.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from gan.evaluation import eval_generator, evaluate, sample_generator
from gan.plots import toy_scatter
from gan.runlog import atomic_torch_save, atomic_write_json, is_finite_row, open_writer, tb_tag, write_hparams

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """A loss or a metric became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (third-party code may still draw from NumPy's global state)
    torch.manual_seed(seed)


def build(cfg: DictConfig, device: torch.device):
    """Dataset, generator, critic (``None`` for objectives without one), objective, optimisers.

    ``model.generator`` gets the data-derived ``out_shape``, ``model.critic`` the ``in_shape``.
    """
    data = instantiate(cfg.data)
    generator = instantiate(cfg.model.generator, out_shape=data.shape).to(device)
    objective = instantiate(cfg.objective)
    critic = None
    if objective.uses_critic:
        critic = objective.prepare_critic(instantiate(cfg.model.critic, in_shape=data.shape).to(device))
    opt_g, opt_c = objective.optimizers(generator, critic)
    return data, generator, critic, objective, opt_g, opt_c


def _state(step, generator, critic, opt_g, opt_c, train_rng, cfg, elapsed) -> dict:
    return {
        "step": step,
        "generator": generator.state_dict(),
        "critic": None if critic is None else critic.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_c": None if opt_c is None else opt_c.state_dict(),
        "train_rng": train_rng.get_state(),
        "torch_rng": torch.get_rng_state(),
        "elapsed": elapsed,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train one GAN as ``cfg`` says, writing everything into ``run_dir``; returns the summary."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    data, generator, critic, objective, opt_g, opt_c = build(cfg, device)
    train_rng = torch.Generator(device).manual_seed(cfg.seed)
    steps, batch = cfg.train.steps, cfg.train.batch_size
    latent = generator.latent_dim
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    metrics_path = run_dir / "metrics.jsonl"

    writer = open_writer(run_dir)
    metrics_file = metrics_path.open("a")
    status, step, final, eval_s, error = "failed", 0, {}, 0.0, None
    losses: dict[str, torch.Tensor] = {}
    bar = tqdm(total=steps, desc="train", unit="step", disable=not cfg.train.progress, mininterval=1.0)
    try:
        for step in range(0, steps + 1):
            if step % cfg.train.checkpoint_every == 0 and step > 0:
                atomic_torch_save(
                    ckpt_path,
                    _state(
                        step, generator, critic, opt_g, opt_c, train_rng, cfg, time.perf_counter() - started
                    ),
                )

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
                )
                if not is_finite_row(row):
                    raise Diverged(f"non-finite metric at step {step}: {row}")
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                for key, value in row.items():
                    if key != "step":
                        writer.add_scalar(tb_tag(key), value, step)
                if cfg.eval.plot and data.shape == (2,):
                    plot_rng = eval_generator(cfg.seed, step, device)
                    fig = toy_scatter(
                        data.sample(512, plot_rng), sample_generator(generator, 512, plot_rng), critic
                    )
                    writer.add_figure("samples/real_vs_generated", fig, step)
                final = row
                eval_s += time.perf_counter() - t0
                bar.set_postfix(
                    w1=f"{row['w1_exact']:.3f}", critic=f"{row.get('critic_estimate', float('nan')):.3f}"
                )
            if step == steps:
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
                losses = {k: v for k, v in (losses_c if critic is not None else {}).items() if k != "loss"}
                losses |= {k: v for k, v in losses_g.items() if k != "loss"}
                values = {k: v.item() for k, v in losses.items()}
                if not is_finite_row(values):
                    raise Diverged(f"non-finite loss at step {step + 1}: {values}")
                for key, value in values.items():
                    writer.add_scalar(f"loss/{key}", value, step + 1)
        status = "completed"
    except Diverged as exc:
        status, error = "diverged", str(exc)
        log.error("run diverged: %s", exc)
        if cfg.train.on_nan == "raise":
            raise
    except KeyboardInterrupt:
        status = "interrupted"
        log.warning("interrupted at step %d", step)
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        bar.close()
        metrics_file.close()
        elapsed = time.perf_counter() - started
        if status in ("completed", "interrupted"):
            atomic_torch_save(
                ckpt_path, _state(step, generator, critic, opt_g, opt_c, train_rng, cfg, elapsed)
            )
        summary = {
            "status": status,
            "steps_done": step,
            "elapsed_s": round(elapsed, 3),
            "train_s": round(elapsed - eval_s, 3),
            "eval_s": round(eval_s, 3),
            "final": final,
        }
        if error:
            summary["error"] = error
        atomic_write_json(run_dir / "summary.json", summary)
        write_hparams(writer, cfg, final, status)
        writer.close()
    log.info("%s after %d steps in %.1fs (evaluation %.1fs)", status, step, elapsed, eval_s)
    return summary
