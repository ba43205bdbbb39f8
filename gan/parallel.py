"""Many seeds in one process: ``train.parallel_seeds=K`` trains K independent copies of a small GAN at once.

    python -m experiments.train train.parallel_seeds=8                            # seeds 0, 1, ..., 7
    python -m experiments.train train.parallel_seeds=4 seed=10 objective=wgan_lp  # seeds 10, ..., 13

Copy ``k`` has seed ``seed + k`` and is the run ``python -m experiments.train seed=<seed + k>`` would
be: the same initial weights (built after :func:`gan.trainer.seed_everything` with its seed), the same
batches, latents and interpolation weights (drawn from its own ``torch.Generator``, seeded as that
run's, in the same order), the same evaluations (:func:`gan.evaluation.evaluate` on plain modules
holding its weights, with ``eval_generator(seed + k, step)``). Only the arithmetic is batched: the K
generators and the K critics each run as one ``torch.func.vmap`` over parameters stacked along a
leading dimension, and one optimiser updates the stacked tensors. The loss minimised is the sum of the
copies' losses, so copy k's slice of the gradient is the gradient of its own loss, and Adam and RMSprop
act elementwise: one optimiser over the stacked tensors is K optimisers.

A copy's numbers do not depend on K or on the other copies (bit for bit, on the CPU). Against a
separate run they agree to float rounding, not bit for bit: a few batched matrix products round
differently from their unbatched versions (differences of 1e-11 in a gradient), and GAN training
compounds such differences as it would a perturbation of the initial weights. ``tests/test_parallel.py``
bounds the difference on a small budget (below 2e-7 relative after 20 steps); on the default config
it grows to about 1e-3 relative after 40 steps and 1e-2 after 300, the same growth as a single run
whose initial weights are perturbed by 3e-8.

The run folder holds one complete run folder per copy, ``<run>/seed_<s>/``: ``.hydra/`` with the config
and overrides of the equivalent single run (its seed, ``train.parallel_seeds: 1``), ``metrics.jsonl``,
``summary.json``, ``checkpoints/last.pt`` (the same contents a single run saves, so ``resume=true`` of
that single run continues it) and ``tb/`` (``tensorboard --logdir <run>`` shows the copies side by
side). ``<run>/summary.json`` describes the whole job: ``status`` (``completed`` when every copy
completed, else failed, interrupted or diverged, in that order of precedence), ``runs`` (each copy's
status), ``final`` (the mean over the completed copies of their final metrics) and the summed times.
A copy's ``elapsed_s`` is its own evaluation time plus a 1/K share of the batched training, so the
copies' times add up to the job's.

Supported: ``model=mlp`` on the toy sets, with :data:`LOSSES`' objectives; any other config stops with
one line before anything is written. A copy whose losses, parameters or metrics become non-finite is
recorded as diverged and drops out (its slice of the stacked tensors goes on being computed, and
cannot reach the others'); the rest go on. ``resume=true`` continues every copy from its checkpoint
(they must all be at one step) and leaves a copy that diverged as it ended.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
import torch.nn.functional as F
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from gan import checkpoint
from gan.config import ConfigError
from gan.data import ImageDataset
from gan.evaluation import eval_generator, evaluate, sample_generator
from gan.models import MLPCritic, MLPGenerator
from gan.objectives import NSGAN, WGANGP, WGANLP, WGANClip, random_interpolates
from gan.plots import toy_scatter
from gan.runlog import (
    atomic_write_bytes,
    atomic_write_json,
    is_finite_row,
    open_writer,
    run_summary,
    tb_tag,
    write_hparams,
)
from gan.trainer import Diverged, build, seed_everything

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# The K copies' losses. ``critic`` maps (K, B, ...) to (K, B); every loss is returned per copy, shape
# (K,), with the formula and the reductions of the objective's own method for one copy.


def _input_grad_norms(critic, points: torch.Tensor) -> torch.Tensor:
    """``‖∇f_k(p)‖₂`` per copy and point, shape (K, B): the copies are independent, so the gradient of
    the sum over all of them gives each copy's own input gradients."""
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    return grad.flatten(2).norm(dim=2)


# WGANGP.penalty and WGANLP.penalty per copy, from the gradient norms at the interpolates (K, B).
PENALTIES = {
    WGANGP: lambda norms: ((norms - 1) ** 2).mean(1),
    WGANLP: lambda norms: F.relu(norms - 1).pow(2).mean(1),
}


def _wgan_critic(objective, critic, real, fake, mixed):
    term = critic(fake).mean(1) - critic(real).mean(1)
    if mixed is None:  # weight clipping: no penalty
        return {"loss": term, "critic": term}
    penalty = PENALTIES[type(objective)](_input_grad_norms(critic, mixed))
    return {"loss": term + objective.penalty_weight * penalty, "critic": term, "penalty": penalty}


def _wgan_generator(objective, critic, fake):
    loss = -critic(fake).mean(1)
    return {"loss": loss, "generator": loss}


def _ns_critic(objective, critic, real, fake, mixed):
    loss = F.softplus(-critic(real)).mean(1) + F.softplus(critic(fake)).mean(1)
    return {"loss": loss, "critic": loss}


def _ns_generator(objective, critic, fake):
    loss = F.softplus(-critic(fake)).mean(1)
    return {"loss": loss, "generator": loss}


# Objective class -> (critic losses, generator losses). ``mixed`` is None unless it is in PENALTIES.
LOSSES = {
    WGANGP: (_wgan_critic, _wgan_generator),
    WGANLP: (_wgan_critic, _wgan_generator),
    WGANClip: (_wgan_critic, _wgan_generator),
    NSGAN: (_ns_critic, _ns_generator),
}


def check_supported(cfg: DictConfig) -> None:
    """One-line :class:`ConfigError` unless the copies can be batched: an MLP on toy data, an objective
    of :data:`LOSSES`. Reads classes from the config only; builds nothing."""
    try:
        objective = get_class(cfg.objective._target_)
        models = get_class(cfg.model.generator._target_), get_class(cfg.model.critic._target_)
        data = get_class(cfg.data._target_)
    except Exception as exc:  # a target that does not import: the single-run path reports it
        raise ConfigError(f"train.parallel_seeds: the config's classes cannot be loaded ({exc})") from None
    names = ", ".join(sorted(kind.name for kind in LOSSES))
    if (
        objective not in LOSSES
        or not (issubclass(models[0], MLPGenerator) and issubclass(models[1], MLPCritic))
        or issubclass(data, ImageDataset)
    ):
        raise ConfigError(
            f"train.parallel_seeds={cfg.train.parallel_seeds} supports objective in {{{names}}} "
            "with model=mlp on toy data (gaussians8, gaussians25, swissroll)"
        )


# --------------------------------------------------------------------------------------------------
# Stacked modules and optimiser states.


class Stacked:
    """K modules of one architecture as parameters stacked along a new leading dimension.

    ``stacked(x)`` maps inputs of shape (K, B, ...) to the K modules' outputs (K, B, ...) in one
    ``vmap``; ``detach=True`` keeps the parameters out of the graph (input gradients still flow).
    :meth:`parameters` yields the stacked tensors, for one optimiser or for weight clipping;
    :meth:`to_copies` writes them back into the plain modules ``copies`` (for evaluation and checkpoints).
    """

    def __init__(self, copies: list[nn.Module]):
        params, buffers = stack_module_state(copies)
        if buffers:
            raise ValueError("modules with buffers are not stacked here")
        self.copies = copies
        self.names = list(params)
        self.params = list(params.values())  # leaves that require grad
        template = copy.deepcopy(copies[0]).to("meta")  # the architecture, without storage
        self._batched = vmap(lambda p, x: functional_call(template, p, (x,)))

    def parameters(self):
        return iter(self.params)

    def __call__(self, x: torch.Tensor, *, detach: bool = False) -> torch.Tensor:
        params = zip(self.names, self.params, strict=True)
        return self._batched({name: p.detach() if detach else p for name, p in params}, x)

    @torch.no_grad()
    def to_copies(self) -> None:
        for k, module in enumerate(self.copies):
            for param, stacked in zip(module.parameters(), self.params, strict=True):
                param.copy_(stacked[k])

    @torch.no_grad()
    def finite(self) -> list[bool]:
        """Per copy: every parameter finite."""
        ok = torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.params]).all(0)
        return ok.tolist()


def _param_shapes(opt: torch.optim.Optimizer) -> list[torch.Size]:
    return [p.shape for group in opt.param_groups for p in group["params"]]


def split_optimizer_state(stacked: torch.optim.Optimizer, k: int, into: torch.optim.Optimizer) -> None:
    """Load copy ``k``'s slice of ``stacked``'s state into ``into``, the same optimiser over copy k's
    module: per-parameter tensors are sliced, anything else (Adam's step count) is shared."""
    state, shapes = stacked.state_dict(), _param_shapes(stacked)
    sliced = {
        i: {key: v[k].clone() if torch.is_tensor(v) and v.shape == shapes[i] else copy.deepcopy(v)
            for key, v in entry.items()}
        for i, entry in state["state"].items()
    }  # fmt: skip
    into.load_state_dict({"state": sliced, "param_groups": state["param_groups"]})


def stack_optimizer_states(copies: list[torch.optim.Optimizer], stacked: torch.optim.Optimizer) -> None:
    """The reverse of :func:`split_optimizer_state`: the copies' states, stacked, into ``stacked``."""
    states, shapes = [o.state_dict()["state"] for o in copies], _param_shapes(copies[0])
    merged = {
        i: {key: torch.stack([s[i][key] for s in states]) if torch.is_tensor(v) and v.shape == shapes[i]
            else v for key, v in entry.items()}
        for i, entry in states[0].items()
    }  # fmt: skip
    stacked.load_state_dict({"state": merged, "param_groups": stacked.state_dict()["param_groups"]})


# --------------------------------------------------------------------------------------------------
# One copy's run folder.

RUNNING = "running"


def copy_dirname(seed: int) -> str:
    return f"seed_{seed}"


def copy_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of the single run this copy is: its seed, one copy."""
    out = copy.deepcopy(cfg)
    out.seed = seed
    out.train.parallel_seeds = 1
    return out


def copy_overrides(run_dir: Path, seed: int) -> list[str]:
    """The job's command-line overrides (from Hydra's ``overrides.yaml``, when there is one) as the
    single run's: ``seed`` set to the copy's, ``train.parallel_seeds`` left out."""
    path = run_dir / ".hydra" / "overrides.yaml"
    job = list(OmegaConf.load(path)) if path.is_file() else []
    keep = [o for o in job if o.lstrip("+~").partition("=")[0] not in ("seed", "train.parallel_seeds")]
    return [*keep, f"seed={seed}"]


@dataclass
class Copy:
    """One seed's models, random generator, run folder and outcome."""

    seed: int
    cfg: DictConfig
    dir: Path
    generator: nn.Module
    critic: nn.Module
    opt_g: torch.optim.Optimizer  # hold this copy's slice of the stacked state when it is saved
    opt_c: torch.optim.Optimizer
    rng: torch.Generator
    status: str = RUNNING
    steps_done: int = 0
    error: str | None = None
    final: dict = field(default_factory=dict)
    rows_written: int = 0
    nonoptimal: int = 0
    elapsed_before: float = 0.0
    eval_before: float = 0.0
    eval_s: float = 0.0
    metrics_file: TextIO | None = None
    writer: SummaryWriter | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING


def _stored_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _job_summary(summaries: list[dict], *, steps_done: int, runs: dict[str, str]) -> dict:
    statuses = [s["status"] for s in summaries]
    status = next((s for s in ("failed", "interrupted", "diverged") if s in statuses), "completed")
    finals = [s["final"] for s in summaries if s["status"] == "completed" and s["final"]]
    keys = [k for k in finals[0] if all(k in f for f in finals)] if finals else []
    summary = run_summary(
        status=status,
        steps_done=steps_done,
        elapsed=sum(s["elapsed_s"] for s in summaries),
        eval_s=sum(s["eval_s"] for s in summaries),
        nonoptimal=sum(s["ot_nonoptimal_total"] for s in summaries),
        final={k: finals[0][k] if k == "step" else sum(f[k] for f in finals) / len(finals) for k in keys},
    )
    return summary | {"parallel_seeds": len(summaries), "runs": runs}


# --------------------------------------------------------------------------------------------------
# The loop.


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train ``cfg.train.parallel_seeds`` copies of the GAN ``cfg`` describes, seeds ``cfg.seed``,
    ``cfg.seed + 1``, ...; write each copy's run folder and the job's ``summary.json`` into ``run_dir``
    and return the job's summary.

    Raises :class:`gan.config.ConfigError` from setup, before anything is written, when the config is
    not supported (:func:`check_supported`) or a folder cannot be used. The loop is
    :func:`gan.trainer.train`'s, in the same order, for K copies at once.
    """
    run_dir = Path(run_dir)
    started = time.perf_counter()
    check_supported(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = torch.device(cfg.device)
    seeds = [cfg.seed + k for k in range(cfg.train.parallel_seeds)]
    copies = []
    for seed in seeds:
        cfg_k = copy_config(cfg, seed)
        seed_everything(seed)
        data, g, f, objective, opt_g, opt_c = build(cfg_k, device)
        rng = torch.Generator(device).manual_seed(seed)
        copies.append(Copy(seed, cfg_k, run_dir / copy_dirname(seed), g, f, opt_g, opt_c, rng))
    critic_losses, generator_losses = LOSSES[type(objective)]
    interpolates = type(objective) in PENALTIES
    steps, batch, latent = cfg.train.steps, cfg.train.batch_size, copies[0].generator.latent_dim

    # Folders: checked (and checkpoints loaded) for every copy before anything is written.
    if not cfg.resume:
        checkpoint.prepare_run_dir(run_dir, cfg)  # the job's folder must not hold a single run
    states = {}
    for c in copies:
        if cfg.resume and _stored_status(c.dir) == "diverged":
            c.status = "diverged"  # it ended there; the others go on without it
        else:
            states[c.seed] = checkpoint.prepare_run_dir(c.dir, c.cfg)
    live = [c for c in copies if c.running]
    if not live:
        raise ConfigError(f"cannot resume {run_dir}: every copy diverged")
    at = {c.dir.name: (states[c.seed] or {"step": 0})["step"] for c in live}
    if len(set(at.values())) > 1:
        raise ConfigError(f"cannot resume {run_dir}: its copies' checkpoints are at different steps ({at})")
    start = next(iter(at.values()))
    for c in live:
        hydra_dir = c.dir / ".hydra"
        atomic_write_bytes(hydra_dir / "config.yaml", OmegaConf.to_yaml(c.cfg).encode())
        atomic_write_bytes(
            hydra_dir / "overrides.yaml", OmegaConf.to_yaml(copy_overrides(run_dir, c.seed)).encode()
        )
        state = states[c.seed]
        if state is not None:
            checkpoint.restore(
                state, generator=c.generator, critic=c.critic, opt_g=c.opt_g, opt_c=c.opt_c, train_rng=c.rng
            )
            c.elapsed_before, c.eval_before = state["elapsed"], state["eval_s"]
            c.rows_written = checkpoint.truncate_metrics(c.dir / "metrics.jsonl", before_step=start)
        c.eval_s, c.steps_done = c.eval_before, start
    if start:
        log.info("resuming %d copies at step %d", len(live), start)

    generator = Stacked([c.generator for c in live])
    critic = Stacked([c.critic for c in live])
    opt_g = objective.generator_optimizer(generator.parameters())
    opt_c = objective.critic_optimizer(critic.parameters())
    stack_optimizer_states([c.opt_g for c in live], opt_g)
    stack_optimizer_states([c.opt_c for c in live], opt_c)

    def elapsed(c: Copy) -> float:
        batched = time.perf_counter() - started - sum(d.eval_s - d.eval_before for d in live)
        return c.elapsed_before + batched / len(live) + c.eval_s - c.eval_before

    def save_checkpoints(at_step: int) -> None:
        generator.to_copies()
        critic.to_copies()
        for k, c in enumerate(live):
            if c.running:
                split_optimizer_state(opt_g, k, c.opt_g)
                split_optimizer_state(opt_c, k, c.opt_c)
                checkpoint.save(
                    c.dir, step=at_step, generator=c.generator, critic=c.critic, opt_g=c.opt_g,
                    opt_c=c.opt_c, train_rng=c.rng, cfg=c.cfg, elapsed=elapsed(c), eval_s=c.eval_s,
                    metrics_rows=c.rows_written,
                )  # fmt: skip

    def diverge(c: Copy, at_step: int, what: str) -> None:
        exc = Diverged(at_step, what)
        c.status, c.steps_done, c.error = "diverged", at_step, str(exc)
        log.error("%s diverged: %s", c.dir.name, exc)
        if cfg.train.on_nan == "raise":
            raise exc

    def evaluate_copy(c: Copy, step: int) -> None:
        t0 = time.perf_counter()
        row = {"step": step} | evaluate(
            c.generator, c.critic, data, objective, cfg.eval,
            rng=eval_generator(c.seed, step, device), index=step // cfg.eval.every,
        )  # fmt: skip
        if not is_finite_row(row):
            diverge(c, step, f"metric: {row}")
            return
        c.metrics_file.write(json.dumps(row) + "\n")
        c.metrics_file.flush()
        c.rows_written += 1
        for key, value in row.items():
            if key != "step":
                c.writer.add_scalar(tb_tag(key), value, step)
        if cfg.eval.plot:
            plot_rng = eval_generator(c.seed, step, device)
            fig = toy_scatter(
                data.sample(512, plot_rng), sample_generator(c.generator, 512, plot_rng), c.critic
            )
            c.writer.add_figure("samples/real_vs_generated", fig, step)
        if row.get("ot_nonoptimal"):
            c.nonoptimal += row["ot_nonoptimal"]
            log.warning(
                "%s step %d: %d exact OT solve(s) stopped before optimality", c.dir.name, step, c.nonoptimal
            )
        c.final = row
        c.eval_s += time.perf_counter() - t0

    def draw(sample) -> torch.Tensor:
        """One draw per copy from its own generator, in copy order, stacked: (K, ...)."""
        return torch.stack([sample(c.rng) for c in live])

    for c in live:
        c.writer = open_writer(c.dir, purge_step=start if start else None)
        c.metrics_file = (c.dir / "metrics.jsonl").open("a")
    outcome, step, error = "failed", start, None
    bar = tqdm(
        total=steps, initial=start, desc=f"train x{len(live)}", unit="step", disable=not cfg.train.progress,
        mininterval=1,
    )  # fmt: skip
    stop = checkpoint.StopRequests()
    try:
        with stop:
            for step in range(start, steps + 1):
                if stop.requested:
                    outcome = "interrupted"
                    break
                if step % cfg.train.checkpoint_every == 0 and step > start:
                    save_checkpoints(step)

                if step % cfg.eval.every == 0 or step == steps:
                    generator.to_copies()
                    critic.to_copies()
                    for c in live:
                        if c.running:
                            evaluate_copy(c, step)
                if step == steps:
                    outcome = "completed"
                    break

                # Critic updates: each copy draws its batch, latents and interpolation weights from
                # its own generator, in the order a single run draws them.
                for _ in range(objective.critic_steps):
                    real = draw(lambda rng: data.sample(batch, rng))
                    z = draw(lambda rng: torch.randn(batch, latent, generator=rng, device=device))
                    with torch.no_grad():
                        fake = generator(z)
                    mixed = None
                    if interpolates:
                        mixed = torch.stack(
                            [random_interpolates(real[k], fake[k], c.rng) for k, c in enumerate(live)]
                        )
                    losses_c = critic_losses(objective, critic, real, fake, mixed)
                    opt_c.zero_grad(set_to_none=True)
                    losses_c["loss"].sum().backward()
                    opt_c.step()
                    objective.after_critic_step(critic)

                # One generator update.
                real = draw(lambda rng: data.sample(batch, rng))  # drawn as a single run draws it
                fake = generator(draw(lambda rng: torch.randn(batch, latent, generator=rng, device=device)))
                losses_g = generator_losses(objective, lambda x: critic(x, detach=True), fake)
                opt_g.zero_grad(set_to_none=True)
                losses_g["loss"].sum().backward()
                opt_g.step()
                bar.update(1)

                if (step + 1) % cfg.train.log_every == 0:
                    losses = losses_g | losses_c
                    values = {key: v.tolist() for key, v in losses.items() if key != "loss"}
                    finite = [a and b for a, b in zip(generator.finite(), critic.finite(), strict=True)]
                    for k, c in enumerate(live):
                        mine = {key: v[k] for key, v in values.items()}
                        if c.running and not (is_finite_row(mine) and finite[k]):
                            diverge(c, step + 1, f"loss or parameter: {mine}")
                        elif c.running:
                            for key, value in mine.items():
                                c.writer.add_scalar(f"loss/{key}", value, step + 1)
                if not any(c.running for c in live):
                    break
    except Diverged:  # train.on_nan=raise
        outcome, error = "failed", "stopped: another copy diverged and train.on_nan=raise"
        raise
    except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the last periodic checkpoints stay
        outcome, error = "interrupted", "KeyboardInterrupt"
    except BaseException as exc:
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        bar.close()
        if outcome == "completed" or (outcome == "interrupted" and error is None):
            save_checkpoints(step)
        summaries, runs = [], {}
        for c in copies:
            if c in live:
                if c.running:
                    c.status, c.steps_done, c.error = outcome, step, error
                c.metrics_file.close()
                summary = run_summary(
                    status=c.status, steps_done=c.steps_done, elapsed=elapsed(c), eval_s=c.eval_s,
                    nonoptimal=c.nonoptimal, final=c.final, error=c.error,
                )  # fmt: skip
                atomic_write_json(c.dir / "summary.json", summary)
                write_hparams(c.writer, c.cfg, c.final, c.status)
                c.writer.close()
            else:
                summary = json.loads((c.dir / "summary.json").read_text())
            summaries.append(summary)
            runs[c.dir.name] = summary["status"]
        job = _job_summary(summaries, steps_done=step, runs=runs)
        log.info(
            "%s after %d steps in %.1fs (evaluation %.1fs): %s",
            job["status"], step, job["elapsed_s"], job["eval_s"],
            ", ".join(f"{name} {status}" for name, status in runs.items()),
        )  # fmt: skip
        atomic_write_json(run_dir / "summary.json", job)
    if error == "KeyboardInterrupt":
        raise SystemExit(130)
    stop.forward()
    return job
