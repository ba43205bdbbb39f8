"""GAN training: the task :func:`gan.loop.run_loop` runs for ``python -m experiments.train``.

One update (:meth:`GANTraining.update`) is ``objective.critic_steps`` critic updates on fresh real and
generated batches (the generator held fixed), then one generator update on a fresh real batch and fresh
latents. Each evaluation (:func:`gan.evaluation.evaluate`) draws its own batches from a generator that
depends only on the seed and the step.

``train.parallel_seeds=K`` trains K copies at once, seeds ``seed, ..., seed + K - 1``:

    python -m experiments.train train.parallel_seeds=8                            # seeds 0, 1, ..., 7
    python -m experiments.train train.parallel_seeds=4 seed=10 data=mnist5k       # seeds 10, ..., 13

Copy ``k`` is the run ``python -m experiments.train seed=<seed + k>`` would be: the same initial weights
(built after :func:`seed_everything` with its seed), the same batches, latents and interpolation
weights (drawn from its own ``torch.Generator``, seeded as that run's, in the same order), the same
evaluations. Only the arithmetic is batched (:class:`gan.copies.Stacked`). A copy's numbers do not
depend on K or on the other copies (bit for bit, on the CPU); against a separate run they agree to
float rounding, not bit for bit: a few batched matrix products round differently from their unbatched
versions (differences of 1e-11 in a gradient), and GAN training compounds such differences as it
would a perturbation of the initial weights (below 2e-7 relative after 20 small steps, about 1e-2 after
300 steps of the default run, the growth of a single run whose initial weights move by 3e-8).

With K > 1 the run folder holds one complete run folder per copy, ``<run>/seed_<s>/`` (its ``.hydra/``
is that of the equivalent single run, so ``resume=true`` of that single run continues it), and
``<run>/summary.json`` describes the job (:func:`gan.runlog.job_summary`). Batched copies need the MLP
models (``model=mlp``): convolutional models with batch norm are not stacked.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from gan import checkpoint, runfolder
from gan.config import ConfigError, instantiate_or_fail, validate
from gan.copies import copies_of, per_copy
from gan.evaluation import curve_point, eval_generator, evaluate, sample_generator
from gan.image_eval import generator_grid, is_image_data, quality_networks, sample_grid
from gan.loop import Hook, run_loop
from gan.models import MLPCritic, MLPGenerator
from gan.objectives import minimise
from gan.plots import figure_title, toy_limits, toy_scatter
from gan.runlog import Run, group_choices, training_charts

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (third-party code may still draw from NumPy's global state)
    torch.manual_seed(seed)


def build_data(cfg: DictConfig):
    """The dataset; checks that the batches fit a finite (image) set's training split."""
    data = instantiate_or_fail(cfg.data, "data")
    size = getattr(data, "num_train", None)
    for key in ("train.batch_size", "eval.batch_size"):
        if size is not None and OmegaConf.select(cfg, key) > size:
            raise ConfigError(
                f"{key}={OmegaConf.select(cfg, key)}: larger than the {size} training images of this data"
            )
    return data


def build(cfg: DictConfig, device: torch.device, data=None):
    """Dataset (``data`` when given), generator, critic (``None`` for objectives without one), objective.

    ``model.generator`` gets the data-derived ``out_shape``, ``model.critic`` the ``in_shape``.
    """
    data = build_data(cfg) if data is None else data
    shape = tuple(data.shape)
    where = f"for data of shape {shape}"
    generator = instantiate_or_fail(cfg.model.generator, f"model.generator {where}", out_shape=shape)
    objective = instantiate_or_fail(cfg.objective, "objective")
    critic = None
    if objective.uses_critic:
        critic = instantiate_or_fail(cfg.model.critic, f"model.critic {where}", in_shape=shape)
        critic = objective.prepare_critic(critic.to(device))
    return data, generator.to(device), critic, objective


# ---------------------------------------------------------------------------------------------------
# The copies of a parallel-seeds job


def copy_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of the single run a copy is: its seed, one copy."""
    out = copy.deepcopy(cfg)
    out.seed = seed
    out.train.parallel_seeds = 1
    return out


def copy_overrides(run_dir: Path, seed: int) -> list[str]:
    """The job's command-line overrides (from Hydra's ``overrides.yaml``, when there is one) as the
    single run's: ``seed`` set to the copy's, ``train.parallel_seeds`` left out."""
    path = run_dir / runfolder.OVERRIDES
    job = list(OmegaConf.load(path)) if path.is_file() else []
    keep = [o for o in job if o.lstrip("+~").partition("=")[0] not in ("seed", "train.parallel_seeds")]
    return [*keep, f"seed={seed}"]


def check_batchable(cfg: DictConfig) -> None:
    """One-line :class:`ConfigError` unless K copies of the config's models can be stacked."""
    try:
        models = get_class(cfg.model.generator._target_), get_class(cfg.model.critic._target_)
    except Exception as exc:  # a target that does not import: building the models reports it
        raise ConfigError(f"train.parallel_seeds: the model classes cannot be loaded ({exc})") from None
    if not (issubclass(models[0], MLPGenerator) and issubclass(models[1], MLPCritic)):
        raise ConfigError(
            f"train.parallel_seeds={cfg.train.parallel_seeds} batches the MLP models only (model=mlp)"
        )


def _stored_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / runfolder.SUMMARY).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------------
# The task


class GANTraining:
    """K ≥ 1 copies of the GAN ``cfg`` describes, trained in step (:class:`gan.loop.Task`)."""

    owner = checkpoint.TRAIN_CHECKPOINT

    def __init__(self, cfg: DictConfig, run_dir: Path):
        k_copies = cfg.train.parallel_seeds
        if k_copies > 1:
            check_batchable(cfg)
            if not cfg.resume:
                checkpoint.prepare_run_dir(run_dir, cfg)  # the job's folder must not hold a single run
        self.cfg, self.device = cfg, torch.device(cfg.device)
        self.data = build_data(cfg)
        self.copy_dirs = [run_dir / f"seed_{cfg.seed + k}" for k in range(k_copies)] if k_copies > 1 else []
        runs, generators, critics = [], [], []
        for k in range(k_copies):
            seed = cfg.seed + k
            if k_copies == 1:
                run = Run(run_dir, cfg, seed)
            else:
                run = Run(self.copy_dirs[k], copy_config(cfg, seed), seed, copy_overrides(run_dir, seed))
                if cfg.resume and _stored_status(run.dir) == "diverged":
                    continue  # it ended there in an earlier part of the job; the others go on without it
            seed_everything(seed)
            _, generator, critic, self.objective = build(run.cfg, self.device, self.data)
            runs.append(run)
            generators.append(generator)
            critics.append(critic)
        if not runs:
            raise ConfigError(f"cannot resume {run_dir}: every copy diverged")
        self.runs = runs
        self.generator = copies_of(generators)
        self.critic = copies_of(critics) if self.objective.uses_critic else None
        self.opt_g = self.objective.generator_optimizer(self.generator.parameters())
        self.opt_c = (
            self.objective.critic_optimizer(self.critic.parameters()) if self.critic is not None else None
        )
        self.rngs = [torch.Generator(self.device).manual_seed(run.seed) for run in runs]
        # Plain ints for the per-step draws: a DictConfig lookup costs tens of microseconds.
        self.batch_size, self.latent_dim = int(cfg.train.batch_size), generators[0].latent_dim
        self.classifier, self.inception = quality_networks(self.data, cfg.eval, device=self.device)
        if self.data.shape == (2,):  # fixed axes for the run's figures, from the data's extent
            self.limits = toy_limits(self.data.sample(4096, torch.Generator(self.device).manual_seed(0)))
        choices = group_choices(cfg)
        for run in runs:
            run.charts, run.choices = training_charts(), choices

    # -- one update ---------------------------------------------------------------------------------

    def _real(self) -> torch.Tensor:
        return per_copy(self.rngs, lambda g: self.data.sample(self.batch_size, g))

    def _latents(self) -> torch.Tensor:
        size = (self.batch_size, self.latent_dim)
        return per_copy(self.rngs, lambda g: torch.randn(size, generator=g, device=self.device))

    def update(self) -> dict[str, torch.Tensor]:
        losses_c = {}
        for _ in range(self.objective.critic_steps):  # the generator held fixed
            real = self._real()
            with torch.no_grad():
                fake = self.generator(self._latents())
            losses_c = self.objective.critic_step(self.critic, self.opt_c, real, fake, self.rngs)
        real = self._real()
        fake = self.generator(self._latents())
        if self.critic is None:
            losses_g = self.objective.generator_loss(None, real, fake)
        else:
            with self.critic.frozen():  # gradients for the generator only
                losses_g = self.objective.generator_loss(self.critic, real, fake)
        minimise(self.opt_g, losses_g)
        return losses_g | losses_c

    def finite(self) -> list[bool]:
        ok = self.generator.finite()
        if self.critic is not None:
            ok = [a and b for a, b in zip(ok, self.critic.finite(), strict=True)]
        return ok

    # -- evaluation ---------------------------------------------------------------------------------

    def _models(self, k: int):
        return self.generator.module(k), self.critic.module(k) if self.critic is not None else None

    def evaluate(self, k: int, step: int) -> dict:
        generator, critic = self._models(k)
        return evaluate(
            generator, critic, self.data, self.objective, self.cfg.eval,
            rng=eval_generator(self.runs[k].seed, step, self.device), index=step // self.cfg.eval.every,
            classifier=self.classifier, inception=self.inception,
        )  # fmt: skip

    def curve(self, k: int, step: int) -> dict:
        generator, critic = self._models(k)
        rng = eval_generator(self.runs[k].seed, step, self.device)
        return curve_point(generator, critic, self.data, self.objective, self.cfg.eval, rng=rng)

    def figures(self, k: int, step: int, writer) -> None:
        if not self.cfg.eval.plot:
            return
        generator, critic = self._models(k)
        rng = eval_generator(self.runs[k].seed, step, self.device)
        if self.data.shape == (2,):
            real, fake = self.data.sample(512, rng), sample_generator(generator, 512, rng)
            fig = toy_scatter(real, fake, critic, limits=self.limits, title=figure_title(self.runs[k].final))
            writer.add_figure("samples/real_vs_generated", fig, step)
        elif is_image_data(self.data):
            grid = generator_grid(generator, rng, value_range=self.data.pixel_range)
            writer.add_image("samples/generated", grid, step)
            if self.runs[k].rows_written == 1:  # the run's first evaluation
                real = sample_grid(self.data.sample(64, rng), value_range=self.data.pixel_range)
                writer.add_image("samples/real", real, step)

    # -- checkpoints --------------------------------------------------------------------------------

    def state(self, k: int) -> dict:
        generator, critic = self._models(k)
        return {
            "generator": generator.state_dict(),
            "critic": critic.state_dict() if critic is not None else None,
            "opt_g": self.generator.optimizer_state(self.opt_g, k),
            "opt_c": self.critic.optimizer_state(self.opt_c, k) if self.critic is not None else None,
            "train_rng": self.rngs[k].get_state(),
        }

    def restore(self, states: list[dict]) -> None:
        with checkpoint.fitting("the models of this config"):
            self.generator.load_states([s["generator"] for s in states])
            self.generator.load_optimizer_states(self.opt_g, [s["opt_g"] for s in states])
            if self.critic is not None:
                self.critic.load_states([s["critic"] for s in states])
                self.critic.load_optimizer_states(self.opt_c, [s["opt_c"] for s in states])
            for rng, state in zip(self.rngs, states, strict=True):
                rng.set_state(state["train_rng"])
        torch.set_rng_state(states[-1]["torch_rng"])


def train(cfg: DictConfig, run_dir: str | Path, *, hook: Hook | None = None) -> dict:
    """Train the GAN ``cfg`` describes (``train.parallel_seeds`` copies of it), writing everything into
    ``run_dir``; returns the summary (the job's, for several copies).

    Raises :class:`gan.config.ConfigError` from setup, before anything is written, when the config,
    the data or the run folder cannot be used.
    """
    run_dir = Path(run_dir)
    validate(cfg)
    if cfg.train.threads:  # set per job: launcher workers are reused from one job to the next
        torch.set_num_threads(cfg.train.threads)
    task = GANTraining(cfg, run_dir)
    job = {"job_dir": run_dir, "copy_dirs": task.copy_dirs} if task.copy_dirs else {}
    return run_loop(task, cfg, hook=hook, **job)
