"""Benchmark: the framework against hand-written loops, the exact OT solvers, and evaluation's share.

    python -m scripts.bench                 # full benchmark (about 10 minutes on 2 idle CPU cores)
    python -m scripts.bench --quick         # smoke run on tiny sizes; prints the report, writes nothing
    python -m scripts.bench --threads 1     # every measurement at 1 torch thread (a busy machine)
    python -m scripts.bench --out /tmp/perf.md
    python -m scripts.bench --profile       # also profile each framework step against the hand-written one
    python -m scripts.bench --device cuda   # the training rows and train.parallel_seeds on a GPU

Figures compared with a target are ratios of two measurements taken in the same process run, their
repetitions interleaved in rotating order, medians reported: on a shared machine absolute speeds drift
by a factor of several within minutes, the ratio of neighbouring measurements much less.

1. Training step: ``gan.trainer.train`` with evaluation pushed out of the loop (``eval.every`` >
   ``train.steps``) against a minimal hand-written PyTorch WGAN-GP loop built from the same composed
   config: on the toy data (``handwritten_loop_seconds``) and on mnist5k with the image MLP and the
   DCGAN models (``handwritten_image_loop``, which must end with the framework's exact parameters).
   Only the loop is timed: the framework's clock runs from the end of its step-0 evaluation to the
   start of its final one. Then the toy loop at 1 torch thread against torch's default, variants of
   the image loop that a careful user would try, and where the image loop's time goes
   (``torch.profiler``).
2. Exact W1: ``metrics.ot.solve`` with each solver over a grid of n and d, the values checked equal;
   solver and cost matrix timed apart.
3. The default runs and one short job of each image claim preset, each in its own subprocess:
   ``eval_s / elapsed_s`` from ``summary.json`` and the run's peak resident memory (``ru_maxrss``).

``--device cuda`` measures the training rows and ``train.parallel_seeds`` on a GPU instead
(:func:`bench_accelerator`) and writes its own section; without CUDA it stops before doing anything.
Every run writes the figures it measured, with their targets, to a JSON file beside the page
(``PERFORMANCE.figures.json``) and rewrites the page's closing section from it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import ot
import scipy
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

import gan.trainer
import metrics.ot
from gan.evaluation import eval_generator
from gan.runfolder import atomic_write_bytes
from metrics.ot import SOLVERS, _pick_solver, cost_matrix, solve
from scripts.page import cores, write_section

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
DEFAULT_OUT = ROOT / "docs" / "PERFORMANCE.md"
COMMAND = ".venv/bin/python -m scripts.bench"
DEVICE_COMMAND = f"{COMMAND} --device cuda"
# Section names on the page (and keys of the figures file): each command rewrites only its own.
SECTION = "scripts.bench"
DEVICE_SECTION = "scripts.bench --device cuda"
SUMMARY_SECTION = "scripts.bench summary"

T = TypeVar("T")

STEP_RATIO_TARGET = 0.95
AGREE_RTOL = 1e-9
PRESET_EVAL_SHARE_TARGET = 0.10


# --------------------------------------------------------------------------------------------------
# What is measured. Each list entry is one row of the report.


@dataclass(frozen=True)
class TrainCase:
    """A model for the framework-vs-hand-written comparison: overrides of the default config."""

    name: str
    overrides: tuple[str, ...]
    steps: int  # generator steps per timed repetition
    quick_steps: int = 3
    image: bool = False  # True: mnist5k and handwritten_image_loop; False: 8 Gaussians and the toy loop
    device_steps: int = 200  # on a GPU (bench_accelerator), where a step takes milliseconds


@dataclass(frozen=True)
class DefaultRun:
    """A default run measured end to end in a subprocess. ``overrides=None``: not measurable yet."""

    name: str
    overrides: tuple[str, ...] | None
    eval_share_target: float
    pending_note: str = ""


TRAIN_CASES = [
    TrainCase("default (conf/model/mlp.yaml)", (), steps=40),
    TrainCase("wide MLP", ("model.generator.width=512", "model.critic.width=512"), steps=12),
]

# The MLP of the image claim presets at their wider (_paper) width, and the DCGAN models of
# conf/model/dcgan.yaml at the presets' batch (64) and the default image run's (256).
IMAGE_MLP = (
    "data=mnist5k",
    "model=mlp",
    "model.latent_dim=32",
    "model.generator.width=512",
    "model.critic.width=512",
    "model.generator.depth=2",
    "model.critic.depth=2",
    "train.batch_size=64",
)
IMAGE_CASES = [
    TrainCase("image MLP of the claim presets", IMAGE_MLP, steps=16, image=True),
    TrainCase(
        "DCGAN (conf/model/dcgan.yaml)",
        ("data=mnist5k", "model=dcgan", "train.batch_size=64"),
        steps=4,
        quick_steps=2,
        image=True,
    ),  # fmt: skip
    TrainCase(
        "DCGAN (conf/model/dcgan.yaml)",
        ("data=mnist5k", "model=dcgan", "train.batch_size=256"),
        steps=2,
        quick_steps=1,
        image=True,
        device_steps=100,
    ),  # fmt: skip
]
# Image steps take a second where toy steps take 40 ms: fewer pairs (of the --reps default).
IMAGE_REPS_DIVISOR = 2

DEFAULT_RUNS = [
    DefaultRun("default toy run", (), 0.10),
    # About 40 CPU minutes, too long for `make bench`: timed on its own, docs/PERFORMANCE.md says how.
    DefaultRun("default image run", None, 0.15, pending_note='see "The default image run"'),
]

# Where an evaluation's time goes: ``eval`` keys changed from the default config (keys the config
# lacks are skipped). Each row removes one more piece.
EVAL_VARIANTS = [
    ("as configured", {}),
    ("without the converged-critic probe (`eval.probe_every=0`)", {"probe_every": 0}),
    (
        "… and large-sample metrics on 256 instead of `eval.large_n` points",
        {"probe_every": 0, "large_n": 256},
    ),
]

SOLVER_NS = (64, 256, 1024, 2048)
SOLVER_DS = (2, 784, 3072)
QUICK_NS = (16, 64)
QUICK_DS = (2, 784)

# The framework's evaluation is outside the timed window; these keep its two passes short.
# Only the keys the composed config has are overridden, so the bench survives config changes.
FRAMEWORK_EVAL_OFF = {
    "eval.large_n": 256,
    "eval.plot": "false",
    "eval.probe_every": 0,
    "eval.curve_every": 0,
    "train.progress": "false",
}
# ... and for image data: no classifier features, evaluation batches of 64.
IMAGE_EVAL_OFF = {"eval.image_quality": "false", "eval.batch_size": 64}
# Tiny models and budget for --quick.
QUICK_MODEL = ("model.generator.width=16", "model.critic.width=16", "train.batch_size=32")
QUICK_RUN_OVERRIDES = (
    *QUICK_MODEL,
    "train.steps=20",
    "eval.every=10",
    "eval.batch_size=64",
    "eval.large_n=128",
    "train.progress=false",
)

# The image claim presets: conf/experiment/<name>.yaml matching this pattern. One short job of each
# (the first job of its sweep), its evaluations where the preset has them, fewer steps in between.
PRESET_GLOB = "claim*_mnist*.yaml"
PRESET_SHORT_STEPS = 40  # training steps of the short job (the preset's schedule, compressed)
# Runs as experiments.claims runs the presets' jobs.
PRESET_JOB_OVERRIDES = ("train.threads=1", "train.progress=false")
QUICK_PRESET_OVERRIDES = (
    *QUICK_MODEL,
    "eval.batch_size=32",
    "eval.large_n=64",
    "eval.probe_steps=2",
    "eval.image_quality=false",
)


def _solver_reps(n: int) -> int:
    """Repetitions per case: several where a solve takes milliseconds, one where it takes seconds."""
    if n >= 2048:
        return 1
    return 3 if n >= 1024 else 5


# --------------------------------------------------------------------------------------------------
# Small helpers, pure.


def median_ratio(numerators, denominators) -> tuple[float, float, float]:
    """Median, min and max of the pairwise ratios ``numerators[i] / denominators[i]``."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"need equal, non-empty lists, got {len(numerators)} and {len(denominators)}")
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def interleaved(sides: dict[str, Callable[[], T]], *, reps: int, warmup: int = 1) -> dict[str, list[T]]:
    """Call every side ``warmup + reps`` times, rotating the order each round; return each side's
    counted results (``reps`` of them). Neighbouring calls see the same machine state, so the
    per-round ratio of two sides is far steadier than either side's absolute time."""
    names = list(sides)
    out: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(warmup + reps):
        k = round_ % len(names)
        for name in names[k:] + names[:k]:
            value = sides[name]()
            if round_ >= warmup:
                out[name].append(value)
    return out


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; every row must have one cell per header."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} headers")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def values_agree(values: dict[str, float], rtol: float = AGREE_RTOL) -> tuple[bool, float]:
    """Whether every solver's value equals the others' to ``rtol``; also the largest relative gap."""
    vals = list(values.values())
    scale = max(abs(v) for v in vals)
    gap = (max(vals) - min(vals)) / scale if scale > 0 else max(vals) - min(vals)
    return gap <= rtol, gap


def max_state_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest ``|a[k] - b[k]|`` over every entry of two state dicts (``inf`` where they do not match)."""
    if a.keys() != b.keys():
        return math.inf
    worst = 0.0
    for key, x in a.items():
        y = b[key]
        if x.shape != y.shape:
            return math.inf
        if x.numel():
            worst = max(worst, float((x.detach().cpu().double() - y.detach().cpu().double()).abs().max()))
    return worst


def _fmt_ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _fmt_diff(value: float | None) -> str:
    if value is None:
        return "—"
    return "0 (bit-identical)" if value == 0 else f"{value:.1e}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --------------------------------------------------------------------------------------------------
# 1. Training step: framework vs hand-written.


def compose_train(overrides) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


class Timing(NamedTuple):
    """Wall-clock seconds and this process's CPU seconds (all threads) over the same interval."""

    wall: float
    cpu: float


def _clock() -> Timing:
    return Timing(time.perf_counter(), time.process_time())


def _since(start: Timing) -> Timing:
    now = _clock()
    return Timing(now.wall - start.wall, now.cpu - start.cpu)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on a CUDA ``device`` (a clock read before it would stop early)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class EvaluationClock:
    """A :data:`gan.loop.Hook` recording the clocks at the start and end of every evaluation phase.

    On a CUDA ``device`` it first waits for the queued work, so that the steps before an evaluation
    are counted when they finish, not when they were launched.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.starts: list[Timing] = []
        self.ends: list[Timing] = []

    def __call__(self, event: str, step: int) -> None:
        if event not in ("eval_start", "eval_end"):  # curve points are not evaluation phases
            return
        synchronize(self.device)
        (self.starts if event == "eval_start" else self.ends).append(_clock())

    def between_first_two(self) -> Timing:
        """From the end of the first evaluation phase to the start of the second."""
        if len(self.starts) != 2:
            raise RuntimeError(f"{len(self.starts)} evaluation phases (the bench times the loop between two)")
        return Timing(self.starts[1].wall - self.ends[0].wall, self.starts[1].cpu - self.ends[0].cpu)


class ProfiledLoop:
    """A :data:`gan.loop.Hook` that runs ``torch.profiler`` from the end of the step-0 evaluation to
    the start of the final one: the framework's steps and nothing else."""

    def __init__(self):
        from torch.profiler import ProfilerActivity, profile

        self.profiler = profile(activities=[ProfilerActivity.CPU])
        self.running = False

    def __call__(self, event: str, step: int) -> None:
        if event == "eval_end" and not self.running and step == 0:
            self.profiler.start()
            self.running = True
        elif event == "eval_start" and self.running:
            self.profiler.stop()
            self.running = False


@dataclass
class FrameworkRun:
    loop: Timing  # between the two evaluations
    train_s: float  # the run's train_s from its summary
    states: dict[str, dict]  # the final "generator" and "critic" state dicts, from its checkpoint


def framework_run(cfg, *, hook=None) -> FrameworkRun:
    """Run ``gan.trainer.train`` on ``cfg`` (no evaluation inside the loop: ``eval.every >
    train.steps``); the time between its two evaluations, its ``train_s`` and its final models."""
    if cfg.eval.every <= cfg.train.steps:
        raise ValueError("eval.every must exceed train.steps so that only steps 0 and the last are evaluated")
    clock = EvaluationClock(cfg.device)

    def observe(event: str, step: int) -> None:
        clock(event, step)
        if hook is not None:
            hook(event, step)

    with tempfile.TemporaryDirectory(prefix="bench_train_") as run_dir:
        summary = gan.trainer.train(cfg, run_dir, hook=observe)
        if summary["status"] != "completed":
            raise RuntimeError(f"framework run: status {summary['status']}")
        saved = torch.load(Path(run_dir) / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    states = {name: saved[name] for name in ("generator", "critic") if saved.get(name) is not None}
    return FrameworkRun(clock.between_first_two(), summary["train_s"], states)


def framework_loop_seconds(cfg) -> tuple[Timing, float]:
    """Run ``gan.trainer.train``; return the time between its two evaluations and its ``train_s``.

    ``cfg`` must put no evaluation inside the loop (``eval.every > train.steps``).
    """
    run = framework_run(cfg)
    return run.loop, run.train_s


def _mlp(in_features: int, width: int, depth: int, out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, out_features))


def handwritten_loop_seconds(cfg, *, profiler=None) -> Timing:
    """Time ``cfg.train.steps`` generator steps of a minimal WGAN-GP loop in plain PyTorch.

    Sizes, data and hyperparameters are read from ``cfg`` (a ring of Gaussians, MLPs with
    ``depth`` hidden ReLU layers, Adam for both networks); the code is what one writes by hand.
    ``profiler`` (a ``torch.profiler.profile``) runs around the steps only.
    """
    m, o, data = cfg.model, cfg.objective, cfg.data
    if data.get("layout") != "ring":
        raise ValueError("the hand-written loop samples a ring of Gaussians (data=gaussians8)")
    # Plain Python values, as a script would have them (a DictConfig lookup costs microseconds).
    steps, batch, latent = int(cfg.train.steps), int(cfg.train.batch_size), int(m.latent_dim)
    critic_steps, penalty_weight = int(o.critic_steps), float(o.penalty_weight)
    n_modes, scale, std = int(data.n_modes), float(data.scale), float(data.std)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = torch.Generator(device).manual_seed(cfg.seed)
    gen = _mlp(latent, m.generator.width, m.generator.depth, 2).to(device)
    critic = _mlp(2, m.critic.width, m.critic.depth, 1).to(device)
    opt_g = torch.optim.Adam(
        gen.parameters(), lr=float(o.generator_optimizer.lr), betas=tuple(o.generator_optimizer.betas)
    )
    opt_c = torch.optim.Adam(
        critic.parameters(), lr=float(o.critic_optimizer.lr), betas=tuple(o.critic_optimizer.betas)
    )
    angles = torch.arange(n_modes) * (2 * math.pi / n_modes)
    modes = (scale * torch.stack([angles.cos(), angles.sin()], dim=1)).to(device)

    def real_batch():
        which = torch.randint(n_modes, (batch,), generator=rng, device=device)
        return modes[which] + std * torch.randn(batch, 2, generator=rng, device=device)

    if profiler is not None:
        profiler.start()
    synchronize(device)
    start = _clock()
    for _ in range(steps):
        for _ in range(critic_steps):
            real = real_batch()
            with torch.no_grad():
                fake = gen(torch.randn(batch, latent, generator=rng, device=device))
            t = torch.rand(batch, 1, generator=rng, device=device)
            mixed = (t * real + (1 - t) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
            penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
            loss_c = critic(fake).mean() - critic(real).mean() + penalty_weight * penalty
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_c.step()
        loss_g = -critic(gen(torch.randn(batch, latent, generator=rng, device=device))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    synchronize(device)
    timing = _since(start)
    if profiler is not None:
        profiler.stop()
    return timing


# -- the image loop ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandOptions:
    """What a careful user might change in the hand-written image loop (the defaults: the framework's
    arithmetic). ``pool``: ``"uint8"`` gathers each batch from the 8-bit levels and scales it, as
    ``gan.data`` does; ``"float"`` scales the whole training split once and gathers floats."""

    pool: str = "uint8"
    channels_last: bool = False  # models and images in torch.channels_last
    mkldnn: bool = True  # torch.backends.mkldnn.enabled (oneDNN kernels for CPU convolutions)
    joint_critic: bool = False  # the critic on real and generated batches in one call (torch.cat)
    threads: int | None = None  # torch intra-op threads for the loop (None: as set)


PLAIN = HandOptions()


@functools.lru_cache(maxsize=4)
def _image_pool(data_yaml: str) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The training split of ``cfg.data`` as a user holds it: 8-bit levels (N, C, H, W) and, scaled
    once, floats in ``[low, high]``; with ``low`` and ``high``. Cached per data config."""
    data_cfg = OmegaConf.create(data_yaml)
    data = instantiate(data_cfg)
    images = data.split("train")[0]
    low, high = (float(v) for v in data.pixel_range)
    levels = ((images - low) * (255 / (high - low))).round().to(torch.uint8)
    if not torch.equal(_scale_levels(levels, low, high), images):
        raise ValueError(f"{data_cfg._target_}: pixels are not 8-bit levels scaled to [low, high]")
    return levels, images, low, high


def _scale_levels(levels: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """8-bit levels to floats in ``[low, high]``: the same arithmetic as ``gan.data``'s scaling."""
    return levels.float() * ((high - low) / 255.0) + low


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _mkldnn(enabled: bool):
    """``torch.backends.mkldnn.enabled`` set inside (``torch.backends.mkldnn.flags`` would also set
    oneDNN's TF32 switch, with a warning on CPUs)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


# The phases of one generator step that the profile reports (record_function labels, in order).
PHASES = (
    "real batch (draw and gather)",
    "generator forward (no grad)",
    "critic forward, real and generated",
    "penalty: critic forward and input gradient",
    "critic backward (incl. double backward)",
    "critic Adam step",
    "generator step (forward, backward, Adam)",
)


@dataclass
class HandRun:
    timing: Timing
    generator: nn.Module
    critic: nn.Module

    @property
    def states(self) -> dict[str, dict]:
        return {"generator": self.generator.state_dict(), "critic": self.critic.state_dict()}


def handwritten_image_loop(cfg, options: HandOptions = PLAIN, *, profiler=None) -> HandRun:
    """``cfg.train.steps`` generator steps of WGAN-GP on an image set, written as a user would.

    Models and optimisers come from the composed config (``model.generator`` and ``model.critic``
    instantiated with the data's shape after ``torch.manual_seed(seed)``, ``objective.*_optimizer``);
    each batch is a random permutation's first ``batch_size`` images of the training split, scaled
    from its 8-bit levels to the config's pixel range; one ``torch.Generator`` seeded with ``seed``
    draws every batch, latent and interpolation weight. The framework draws a real batch for the
    generator step too (WGAN-GP's generator loss does not use it) and holds the critic's parameters
    fixed for it; so does this loop, so that with :data:`PLAIN` options it ends with the framework's
    exact parameters. ``profiler`` (a ``torch.profiler.profile``) runs around the steps only, each
    phase of a step under its :data:`PHASES` label.
    """
    o, m = cfg.objective, cfg.model
    if o._target_.rsplit(".", 1)[-1] != "WGANGP":
        raise ValueError(f"the hand-written image loop is WGAN-GP, not {o._target_}")
    steps, batch = int(cfg.train.steps), int(cfg.train.batch_size)
    critic_steps, penalty_weight = int(o.critic_steps), float(o.penalty_weight)
    device = torch.device(cfg.device)
    levels, images, low, high = _image_pool(OmegaConf.to_yaml(cfg.data))
    layout = torch.channels_last if options.channels_last else torch.contiguous_format
    levels, images = levels.to(device, memory_format=layout), images.to(device, memory_format=layout)
    shape, n = tuple(images.shape[1:]), len(images)
    torch.manual_seed(cfg.seed)
    gen = instantiate(m.generator, out_shape=shape).to(device, memory_format=layout)
    critic = instantiate(m.critic, in_shape=shape).to(device, memory_format=layout)
    opt_g = instantiate(o.generator_optimizer)(gen.parameters())
    opt_c = instantiate(o.critic_optimizer)(critic.parameters())
    rng = torch.Generator(device).manual_seed(cfg.seed)
    latent = int(gen.latent_dim)
    label = (
        torch.profiler.record_function if profiler is not None else (lambda name: contextlib.nullcontext())
    )

    def real_batch() -> torch.Tensor:
        index = torch.randperm(n, generator=rng, device=device)[:batch]
        if options.pool == "float":
            return images[index]
        return _scale_levels(levels[index], low, high)

    def latents() -> torch.Tensor:
        return torch.randn(batch, latent, generator=rng, device=device)

    with _threads(options.threads), _mkldnn(options.mkldnn):
        if profiler is not None:
            profiler.start()
        synchronize(device)
        start = _clock()
        for _ in range(steps):
            for _ in range(critic_steps):
                with label(PHASES[0]):
                    real = real_batch()
                with label(PHASES[1]), torch.no_grad():
                    fake = gen(latents())
                with label(PHASES[2]):
                    if options.joint_critic:
                        values = critic(torch.cat([fake, real]))
                        term = values[:batch].mean() - values[batch:].mean()
                    else:
                        term = critic(fake).mean() - critic(real).mean()
                with label(PHASES[3]):
                    t = torch.rand(batch, *(1,) * len(shape), generator=rng, device=device)
                    mixed = (t * real + (1 - t) * fake).requires_grad_(True)
                    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
                    penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
                with label(PHASES[4]):
                    loss_c = term + penalty_weight * penalty
                    opt_c.zero_grad(set_to_none=True)
                    loss_c.backward()
                with label(PHASES[5]):
                    opt_c.step()
            with label(PHASES[6]):
                real_batch()  # drawn and unused, as in the framework's generator step
                fake = gen(latents())
                critic.requires_grad_(False)
                loss_g = -critic(fake).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                critic.requires_grad_(True)
        synchronize(device)
        timing = _since(start)
        if profiler is not None:
            profiler.stop()
    return HandRun(timing, gen, critic)


@dataclass
class TrainResult:
    case: TrainCase
    model: str
    steps: int
    framework: list[Timing]
    handwritten: list[Timing]
    fixed_s: list[float]  # framework train_s minus its loop: setup and teardown
    max_diff: float | None = None  # image cases: framework's final parameters against the hand-written

    def ratio(self, clock: str = "wall") -> tuple[float, float, float]:
        """Framework steps/s ÷ hand-written steps/s (= hand-written time ÷ framework time), per pair."""
        return median_ratio(
            [getattr(t, clock) for t in self.handwritten], [getattr(t, clock) for t in self.framework]
        )


def case_config(case: TrainCase, *, quick: bool, steps: int | None = None, device: str = "cpu"):
    steps = steps or (case.quick_steps if quick else case.steps)
    overrides = [*case.overrides, f"train.steps={steps}", f"eval.every={steps + 1}", f"device={device}"]
    if quick:
        overrides += QUICK_MODEL
    base = compose_train(overrides)
    off = FRAMEWORK_EVAL_OFF | (IMAGE_EVAL_OFF if case.image else {})
    eval_off = [f"{k}={v}" for k, v in off.items() if OmegaConf.select(base, k) is not None]
    return compose_train([*overrides, *eval_off])


def _framework_side(cfg, fixed: list[float], states: list) -> Timing:
    run = framework_run(cfg)
    fixed.append(run.train_s - run.loop.wall)
    states.append(run.states)
    return run.loop


def _handwritten_side(cfg, states: list, options: HandOptions = PLAIN) -> Timing:
    run = handwritten_image_loop(cfg, options)
    states.append(run.states)
    return run.timing


def _handwritten_at(cfg, threads: int) -> float:
    with _threads(threads):
        return handwritten_loop_seconds(cfg).wall


def case_batch(case: TrainCase) -> str:
    """The case's ``train.batch_size`` override, or the default config's."""
    given = [o.split("=", 1)[1] for o in case.overrides if o.startswith("train.batch_size=")]
    return given[-1] if given else str(compose_train([]).train.batch_size)


def _describe(cfg) -> str:
    m = cfg.model
    if "width" in m.generator and "depth" in m.generator:
        models = f"G {m.generator.depth}×{m.generator.width}, D {m.critic.depth}×{m.critic.width}"
    else:
        models = f"G width {m.generator.width}, D width {m.critic.width}"
    return f"{models}, latent {m.latent_dim}, batch {cfg.train.batch_size}"


def _states_difference(framework: list[dict], handwritten: list[dict]) -> float:
    """The largest parameter or buffer difference over every pair of runs of the same config."""
    return max(
        max_state_difference(f[name], h[name])
        for f, h in zip(framework, handwritten, strict=True)
        for name in ("generator", "critic")
    )


def bench_training(
    cases, *, reps: int, quick: bool, log, device: str = "cpu", steps_of=None
) -> list[TrainResult]:
    """Framework and hand-written loop on each case, interleaved, after one warm-up round.

    For image cases every pair's final parameters are compared (``TrainResult.max_diff``); on the
    CPU they must be equal. ``steps_of(case)`` picks the steps (default: ``case.steps``).
    """
    results = []
    for case in cases:
        steps = steps_of(case) if steps_of is not None and not quick else None
        cfg = case_config(case, quick=quick, steps=steps, device=device)
        fixed: list[float] = []
        states: dict[str, list] = {"framework": [], "handwritten": []}
        hand = (
            functools.partial(_handwritten_side, cfg, states["handwritten"])
            if case.image
            else functools.partial(handwritten_loop_seconds, cfg)
        )
        sides = {"framework": functools.partial(_framework_side, cfg, fixed, states["framework"]),
                 "handwritten": hand}  # fmt: skip
        times = interleaved(sides, reps=reps)
        diff = _states_difference(states["framework"], states["handwritten"]) if case.image else None
        # fixed[0] is the warm-up round's
        result = TrainResult(
            case, _describe(cfg), cfg.train.steps, times["framework"], times["handwritten"], fixed[1:], diff
        )
        log(
            f"  {case.name}, {result.model}: framework ÷ hand-written steps/s = "
            f"{result.ratio('wall')[0]:.3f} (CPU time: {result.ratio('cpu')[0]:.3f})"
            + (f", parameters max |Δ| = {diff:.1e}" if diff is not None else "")
        )
        results.append(result)
    return results


# -- what a careful user would try, and where the time goes -------------------------------------------

VARIANTS = [
    ("as the framework computes it", PLAIN),
    ("whole split scaled to floats once; batches gathered from it", HandOptions(pool="float")),
    ("models and images in `torch.channels_last`", HandOptions(channels_last=True)),
    ("`torch.backends.mkldnn` disabled", HandOptions(mkldnn=False)),
    ("critic on the real and generated batches in one call", HandOptions(joint_critic=True)),
    ("1 intra-op thread", HandOptions(threads=1)),
]
# (case, steps per repetition) for the variants and for the profile.
VARIANT_CASES = ((IMAGE_CASES[1], 2), (IMAGE_CASES[0], 8))
VARIANT_REPS = 3


@dataclass
class VariantResult:
    case: TrainCase
    model: str
    steps: int
    name: str
    seconds: list[float]
    plain_s: list[float]
    max_diff: float  # final parameters against the plain loop's

    def speed(self) -> tuple[float, float, float]:
        """This variant's steps/s ÷ the plain loop's, per interleaved pair."""
        return median_ratio(self.plain_s, self.seconds)


def bench_variants(cases=VARIANT_CASES, *, reps: int, quick: bool, log) -> list[VariantResult]:
    """Each :data:`VARIANTS` entry of the hand-written image loop against the plain one, interleaved;
    the last column checks whether the numbers stay the same (final parameters, same seed)."""
    results = []
    for case, steps in cases:
        cfg = case_config(case, quick=quick, steps=steps)
        states: dict[str, list] = {name: [] for name, _ in VARIANTS}
        sides = {
            name: functools.partial(_handwritten_side, cfg, states[name], options)
            for name, options in VARIANTS
        }
        times = interleaved(sides, reps=reps)
        plain = [t.wall for t in times[VARIANTS[0][0]]]
        model = _describe(cfg)
        for name, _ in VARIANTS:
            diff = _states_difference(states[VARIANTS[0][0]], states[name])
            results.append(
                VariantResult(case, model, cfg.train.steps, name, [t.wall for t in times[name]], plain, diff)
            )
        log(f"  {case.name}, {model}: " + ", ".join(
            f"{r.speed()[0]:.2f}" for r in results[-len(VARIANTS):]))  # fmt: skip
    return results


def variants_table(results: list[VariantResult]) -> str:
    rows = []
    for r in results:
        med, lo, hi = r.speed()
        rows.append(
            [
                f"{r.case.name}: {r.model}",
                r.name,
                f"{r.steps} × {len(r.seconds)}",
                f"{r.steps / statistics.median(r.seconds):.2f}",
                f"**{med:.2f}** ({lo:.2f}–{hi:.2f})",
                _fmt_diff(r.max_diff),
            ]
        )
    headers = [
        "model",
        "hand-written loop",
        "steps × reps",
        "steps/s",
        "speed ÷ the first row's, median (min–max)",
        "parameters after the steps: max |Δ| from the first row's",
    ]
    return markdown_table(headers, rows)


@dataclass
class StepProfile:
    case: TrainCase
    model: str
    steps: int
    phases: list[tuple[str, float]]  # (label, CPU ms per step, children included)
    ops: list[tuple[str, float, float]]  # (op, calls per step, self CPU ms per step)
    total_ms: float  # self CPU ms per step over every op
    groups: dict[str, float] = field(default_factory=dict)  # share of total_ms by kind of op


OP_GROUPS = {
    "convolutions (forward, backward, double backward)": ("conv",),
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"),
}


def _events(profiler) -> dict[str, tuple[int, float, float]]:
    """``{name: (calls, self CPU µs, total CPU µs)}`` from a finished profile."""
    return {e.key: (e.count, e.self_cpu_time_total, e.cpu_time_total) for e in profiler.key_averages()}


def profile_image_step(case: TrainCase, steps: int, *, quick: bool, top: int = 8) -> StepProfile:
    """``torch.profiler`` over the plain hand-written image loop: CPU time per phase of a step and the
    ops that take it (after one unprofiled step, which creates the oneDNN kernels)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = case_config(case, quick=quick, steps=steps)
    handwritten_image_loop(case_config(case, quick=quick, steps=1))
    profiler = profile(activities=[ProfilerActivity.CPU])
    handwritten_image_loop(cfg, profiler=profiler)
    events = _events(profiler)
    phases = [(name, events[name][2] / 1e3 / steps) for name in PHASES if name in events]
    ops = {name: ev for name, ev in events.items() if name not in PHASES}
    total = sum(ev[1] for ev in ops.values())
    ranked = sorted(ops.items(), key=lambda item: -item[1][1])[:top]
    groups = {
        group: sum(ev[1] for name, ev in ops.items() if any(p in name for p in patterns)) / total
        for group, patterns in OP_GROUPS.items()
    }
    return StepProfile(
        case, _describe(cfg), steps,
        phases, [(name, ev[0] / steps, ev[1] / 1e3 / steps) for name, ev in ranked], total / 1e3 / steps,
        groups,
    )  # fmt: skip


def profile_table(profiles: list[StepProfile]) -> str:
    blocks = []
    for p in profiles:
        phase_total = sum(ms for _, ms in p.phases)
        phases = markdown_table(
            [
                "phase of one generator step (5 critic steps, then the generator's)",
                "CPU ms per step",
                "share",
            ],
            [[name, f"{ms:.1f}", f"{ms / phase_total:.0%}"] for name, ms in p.phases],
        )
        ops = markdown_table(
            ["op (self CPU time)", "calls per step", "ms per step", "share of all ops"],
            [[f"`{name}`", f"{calls:g}", f"{ms:.1f}", f"{ms / p.total_ms:.0%}"] for name, calls, ms in p.ops],
        )
        kinds = "; ".join(f"{group}: **{share:.0%}**" for group, share in p.groups.items())
        blocks.append(
            f"**{p.case.name}: {p.model}** ({p.steps} steps profiled; of all ops' self CPU time: {kinds})\n\n"
            f"{phases}\n\n{ops}"
        )
    return "\n\n".join(blocks)


@dataclass
class ProfileComparison:
    case: TrainCase
    model: str
    steps: int
    rows: list[tuple[str, float, float, float, float]]  # op, calls/step and self ms/step: fw, hand
    totals: tuple[float, float]  # self CPU ms per step: framework, hand-written


def profile_framework(case: TrainCase, *, quick: bool, steps: int | None = None, top: int = 10):
    """``torch.profiler`` over the framework's steps (:class:`ProfiledLoop`) and over the hand-written
    loop's, same config. The rows: first the ops that the two call a different number of times (what
    the framework does besides the hand-written loop's work), by time; then the costliest common ops."""
    from torch.profiler import ProfilerActivity, profile

    cfg = case_config(case, quick=quick, steps=steps)
    hook = ProfiledLoop()
    framework_run(cfg, hook=hook)
    hand_profiler = profile(activities=[ProfilerActivity.CPU])
    hand = handwritten_image_loop if case.image else handwritten_loop_seconds
    hand(cfg, profiler=hand_profiler)
    fw, hw = _events(hook.profiler), _events(hand_profiler)
    n, none = cfg.train.steps, (0, 0.0, 0.0)
    names = [name for name in set(fw) | set(hw) if name not in PHASES and not name.startswith("ProfilerStep")]

    def row(name):
        a, b = fw.get(name, none), hw.get(name, none)
        return (name, a[0] / n, b[0] / n, a[1] / 1e3 / n, b[1] / 1e3 / n)

    rows = [row(name) for name in names]
    differ = sorted((r for r in rows if r[1] != r[2]), key=lambda r: -max(r[3], r[4]))
    common = sorted((r for r in rows if r[1] == r[2]), key=lambda r: -max(r[3], r[4]))
    picked = differ[: top - 3] + common[: max(3, top - len(differ))]
    totals = (
        sum(ev[1] for name, ev in fw.items() if name in names) / 1e3 / n,
        sum(ev[1] for name, ev in hw.items() if name in names) / 1e3 / n,
    )
    return ProfileComparison(case, _describe(cfg), n, picked, totals)


def comparison_table(comparisons: list[ProfileComparison]) -> str:
    blocks = []
    for c in comparisons:
        table = markdown_table(
            ["op", "framework calls/step", "hand-written calls/step", "framework ms/step",
             "hand-written ms/step"],
            [[f"`{name}`", f"{a:g}", f"{b:g}", f"{x:.2f}", f"{y:.2f}"] for name, a, b, x, y in c.rows],
        )  # fmt: skip
        blocks.append(
            f"**{c.case.name}: {c.model}** ({c.steps} steps; all ops' self CPU time per step: framework "
            f"{c.totals[0]:.1f} ms, hand-written {c.totals[1]:.1f} ms; first the ops called a different "
            "number of times, then the costliest common ones)\n\n"
            f"{table}"
        )
    return "\n\n".join(blocks)


@dataclass
class ThreadResult:
    case: TrainCase
    model: str
    steps: int
    threads: int
    one_thread_s: list[float]
    default_s: list[float]


def bench_threads(cases, *, threads: int, reps: int, quick: bool, log) -> list[ThreadResult]:
    """The hand-written loop at 1 intra-op thread against ``threads``."""
    results = []
    for case in cases:
        # Half the main comparison's steps and fewer pairs: this one only has to show a direction.
        cfg = case_config(case, quick=quick, steps=None if quick else max(1, case.steps // 2))
        sides = {
            "one": functools.partial(_handwritten_at, cfg, 1),
            "default": functools.partial(_handwritten_at, cfg, threads),
        }
        times = interleaved(sides, reps=reps)
        result = ThreadResult(case, _describe(cfg), cfg.train.steps, threads, times["one"], times["default"])
        ratio = median_ratio(result.default_s, result.one_thread_s)[0]
        log(f"  {case.name}: steps/s at 1 thread / at {threads} = {ratio:.3f}")
        results.append(result)
    return results


def threads_table(results: list[ThreadResult]) -> str:
    rows = []
    for r in results:
        med, lo, hi = median_ratio(r.default_s, r.one_thread_s)
        rows.append(
            [
                f"{r.case.name}: {r.model}",
                f"{r.steps} × {len(r.default_s)}",
                f"{r.steps / statistics.median(r.one_thread_s):.1f}",
                f"{r.steps / statistics.median(r.default_s):.1f}",
                f"**{med:.2f}** ({lo:.2f}–{hi:.2f})",
            ]
        )
    n = results[0].threads if results else "?"
    headers = [
        "model",
        "steps × reps",
        "steps/s, 1 thread",
        f"steps/s, {n} threads",
        f"ratio 1 ÷ {n} threads",
    ]
    return markdown_table(headers, rows)


def training_table(results: list[TrainResult], *, image: bool = False) -> str:
    """The toy rows, or (``image``) the image rows with the check of their final parameters."""
    rows = []
    for r in results:
        med, lo, hi = r.ratio("wall")
        cpu_med, cpu_lo, cpu_hi = r.ratio("cpu")
        rows.append(
            [
                f"{r.case.name}: {r.model}",
                f"{r.steps} × {len(r.framework)}",
                f"{r.steps / statistics.median(t.wall for t in r.framework):.3g}",
                f"{r.steps / statistics.median(t.wall for t in r.handwritten):.3g}",
                f"**{med:.3f}** ({lo:.3f}–{hi:.3f})",
                _yes(med >= STEP_RATIO_TARGET),
                f"{cpu_med:.3f} ({cpu_lo:.3f}–{cpu_hi:.3f})",
                f"{statistics.median(r.fixed_s):.2f}",
            ]
            + ([_fmt_diff(r.max_diff)] if image else [])
        )
    data = "mnist5k" if image else "8 Gaussians"
    headers = [
        f"model ({data}; WGAN-GP: 5 critic steps, λ = 10, Adam)",
        "steps × reps",
        "framework steps/s",
        "hand-written steps/s",
        "ratio (wall), median (min–max)",
        f"≥ {STEP_RATIO_TARGET}",
        "ratio (CPU time)",
        "framework setup + teardown per run (s)",
    ]
    if image:
        headers.append("parameters after the steps: max |Δ| framework − hand-written")
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------------------------------
# 2. Exact W1 solvers.


def solver_inputs(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A real-like and a generated-like batch: 8 Gaussians vs a blob in 2D, pixel-like vectors above."""
    g = torch.Generator().manual_seed(seed + 1000 * n + d)
    if d == 2:
        angles = torch.randint(8, (n,), generator=g) * (2 * math.pi / 8)
        x = 2 * torch.stack([angles.cos(), angles.sin()], 1) + 0.02 * torch.randn(n, 2, generator=g)
        y = torch.randn(n, 2, generator=g)
    else:
        x = torch.rand(n, d, generator=g)
        y = (0.5 + 0.3 * torch.randn(n, d, generator=g)).clamp(0, 1)
    return x, y


@dataclass
class SolverResult:
    n: int
    d: int
    seconds: dict[str, list[float]]
    values: dict[str, float]
    cost_s: list[float]
    auto_picks: str

    @property
    def agree(self) -> tuple[bool, float]:
        return values_agree(self.values)

    def median_s(self, solver: str) -> float:
        return statistics.median(self.seconds[solver])

    @property
    def fastest(self) -> str:
        """The faster of the two solvers, by the median of their interleaved time ratios."""
        return "emd" if median_ratio(self.seconds["emd"], self.seconds["assignment"])[0] < 1 else "assignment"


@contextlib.contextmanager
def _reused_cost_matrix(cost: np.ndarray):
    """Make ``metrics.ot.solve`` take ``cost`` as its cost matrix, so that only its solver is timed."""
    original, calls = metrics.ot.cost_matrix, []

    def reused(x, y, *, p=1):
        calls.append(p)
        return cost if p == 1 else cost**p

    metrics.ot.cost_matrix = reused
    try:
        yield
    finally:
        metrics.ot.cost_matrix = original
    if not calls:
        raise RuntimeError("metrics.ot.solve no longer calls metrics.ot.cost_matrix; update scripts/bench.py")


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def bench_solver_case(n: int, d: int, *, reps: int) -> SolverResult:
    """W1 by each solver through ``metrics.ot.solve``: values from one unmodified call per solver,
    then solver-only times on a shared cost matrix, and the cost matrix's own time, interleaved."""
    x, y = solver_inputs(n, d)
    values = {s: solve(x, y, p=1, solver=s).cost for s in SOLVERS}
    cost = cost_matrix(x, y, p=1)

    def solver_only(solver: str) -> float:
        with _reused_cost_matrix(cost):
            return _timed(solve, x, y, p=1, solver=solver)[0]

    sides = {s: functools.partial(solver_only, s) for s in SOLVERS}
    sides["cost"] = lambda: _timed(cost_matrix, x, y, p=1)[0]
    times = interleaved(sides, reps=reps, warmup=0)
    cost_s = times.pop("cost")
    return SolverResult(n, d, times, values, cost_s, _pick_solver("auto", n, n, d))


def bench_solvers(ns, ds, *, quick: bool, log) -> list[SolverResult]:
    results = []
    # Small problems first: they are cheap and warm up POT and scipy.
    for n in ns:
        for d in ds:
            res = bench_solver_case(n, d, reps=1 if quick else _solver_reps(n))
            ok, gap = res.agree
            log(f"  n={n} d={d}: emd {_fmt_ms(res.median_s('emd'))} ms, assignment "
                f"{_fmt_ms(res.median_s('assignment'))} ms, values agree: {ok} ({gap:.1e})")  # fmt: skip
            results.append(res)
    return results


def solver_table(results: list[SolverResult]) -> str:
    rows = []
    for r in results:
        ratio, lo, hi = median_ratio(r.seconds["emd"], r.seconds["assignment"])
        ok, gap = r.agree
        auto_best = r.auto_picks == r.fastest
        rows.append(
            [
                r.n,
                r.d,
                len(r.cost_s),
                _fmt_ms(statistics.median(r.cost_s)),
                _fmt_ms(r.median_s("emd")),
                _fmt_ms(r.median_s("assignment")),
                f"{_fmt_ms(r.median_s('auto'))} ({r.auto_picks})",
                f"{ratio:.2f}" + (f" ({lo:.2f}–{hi:.2f})" if len(r.cost_s) > 1 else ""),
                r.fastest,
                _yes(auto_best),
                f"{_yes(ok)} ({gap:.0e})",
            ]
        )
    headers = [
        "n",
        "d",
        "reps",
        "cost matrix (ms)",
        "emd solver (ms)",
        "assignment solver (ms)",
        "auto solver (ms, picks)",
        "emd ÷ assignment time",
        "fastest",
        "auto picks fastest",
        f"values agree (rel ≤ {AGREE_RTOL:.0e}; max gap)",
    ]
    return markdown_table(headers, rows)


def solver_summary(results: list[SolverResult]) -> str:
    """One paragraph: where the current ``auto`` rule loses, and by how much."""
    misses = [r for r in results if r.auto_picks != r.fastest]
    if not misses:
        return f"`auto` picked the faster solver in all {len(results)} cases."
    parts = []
    for r in misses:
        slowdown = r.median_s(r.auto_picks) / r.median_s(r.fastest)
        parts.append(f"n={r.n}, d={r.d} ({r.auto_picks} is {slowdown:.1f}× slower than {r.fastest})")
    return (
        f"`auto` picked the faster solver in {len(results) - len(misses)} of {len(results)} cases; "
        f"it lost in: {'; '.join(parts)}."
    )


# --------------------------------------------------------------------------------------------------
# 3a. One evaluation, piece by piece.


@dataclass
class EvalResult:
    name: str
    changes: dict
    seconds: list[float]


def _evaluate_once(cfg, models, changes: dict) -> float:
    data, generator, critic, objective = models
    eval_cfg = OmegaConf.merge(cfg.eval, {k: v for k, v in changes.items() if k in cfg.eval})
    rng = eval_generator(cfg.seed, 0, torch.device(cfg.device))
    start = time.perf_counter()
    gan.trainer.evaluate(generator, critic, data, objective, eval_cfg, rng=rng, index=0)
    return time.perf_counter() - start


def bench_evaluation(*, reps: int, quick: bool, log) -> list[EvalResult]:
    """Time one evaluation of the default config (models as built, untrained) in each variant."""
    cfg = compose_train(QUICK_RUN_OVERRIDES if quick else ())
    data, generator, critic, objective = gan.trainer.build(cfg, torch.device(cfg.device))
    models = (data, generator, critic, objective)
    sides = {name: functools.partial(_evaluate_once, cfg, models, changes) for name, changes in EVAL_VARIANTS}
    times = interleaved(sides, reps=reps)
    results = [EvalResult(name, changes, times[name]) for name, changes in EVAL_VARIANTS]
    log("  " + ", ".join(f"{statistics.median(r.seconds):.2f} s" for r in results))
    return results


def evaluation_table(results: list[EvalResult]) -> str:
    full = statistics.median(results[0].seconds)
    rows = [
        [
            r.name,
            len(r.seconds),
            f"{statistics.median(r.seconds):.2f}",
            f"{statistics.median(r.seconds) / full:.0%}",
        ]
        for r in results
    ]
    return markdown_table(
        ["one evaluation (default config, step 0)", "reps", "seconds", "of the full one"], rows
    )


# --------------------------------------------------------------------------------------------------
# 3. Default runs: evaluation share and peak memory.


@dataclass
class RunResult:
    run: DefaultRun
    command: str
    elapsed_s: float | None = None
    eval_s: float | None = None
    wall_s: float | None = None
    max_rss_mib: float | None = None

    @property
    def eval_share(self) -> float | None:
        return None if self.elapsed_s is None else self.eval_s / self.elapsed_s


# Runs argv[2:] and writes its peak RSS (KiB) to argv[1]. The measured command must not be started
# from the benchmark process itself: on Linux a child's ru_maxrss starts at the high-water mark of the
# process it was forked from (it is carried over at exec), so every child of this large process would
# report at least this process's own peak. A small interpreter in between starts the count afresh.
_PEAK_RSS_WRAPPER = """\
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_child(cmd: list[str], *, log_path: Path, threads: int | None = None) -> tuple[int, float, float]:
    """Run ``cmd`` from the repository root, output to ``log_path``; return its exit code, wall
    seconds and peak resident memory in MiB (``ru_maxrss``, KiB on Linux)."""
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    rss_path = log_path.with_suffix(".maxrss")
    wrapped = [sys.executable, "-c", _PEAK_RSS_WRAPPER, str(rss_path), *cmd]
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        code = subprocess.call(wrapped, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - start
    rss = int(rss_path.read_text()) / 1024 if rss_path.exists() else math.nan
    return code, wall, rss


def imports_rss(*, threads: int | None = None) -> float:
    """Peak RSS (MiB) of a process that only imports the trainer: the floor under every run."""
    with tempfile.TemporaryDirectory(prefix="bench_rss_") as tmp:
        cmd = [sys.executable, "-c", "import gan.trainer"]
        code, _, rss = run_child(cmd, log_path=Path(tmp) / "log", threads=threads)
    if code != 0:
        raise RuntimeError("python -c 'import gan.trainer' failed")
    return rss


def run_train(args, *, threads: int | None = None) -> tuple[dict, float, float]:
    """Run ``python -m experiments.train *args`` into a temporary run folder; return its
    ``summary.json``, the process's wall seconds and its peak RSS (MiB)."""
    shown = shlex.join(["python", "-m", "experiments.train", *args])
    with tempfile.TemporaryDirectory(prefix="bench_run_") as tmp:
        run_dir, log_path = Path(tmp) / "run", Path(tmp) / "output.log"
        cmd = [sys.executable, "-m", "experiments.train", *args, f"hydra.run.dir={run_dir}"]
        code, wall, rss = run_child(cmd, log_path=log_path, threads=threads)
        if code != 0:
            raise RuntimeError(f"{shown} exited with {code}:\n{log_path.read_text(errors='replace')[-2000:]}")
        return json.loads((run_dir / "summary.json").read_text()), wall, rss


def run_default(run: DefaultRun, *, extra: tuple[str, ...] = (), threads: int | None = None) -> RunResult:
    """Run ``python -m experiments.train`` with ``run.overrides`` into a temporary run folder."""
    if run.overrides is None:
        return RunResult(run, "—")
    args = [*run.overrides, *extra]
    summary, wall, rss = run_train(args, threads=threads)
    shown = shlex.join(["python", "-m", "experiments.train", *args])
    return RunResult(run, shown, summary["elapsed_s"], summary["eval_s"], wall, rss)


def runs_table(results: list[RunResult], imports_mib: float | None = None) -> str:
    rows = []
    for r in results:
        if r.elapsed_s is None:
            rows.append(
                [r.run.name, "—", "—", "—", "—", f"≤ {r.run.eval_share_target:.0%}", "—", "—",
                 f"**not measured by this command: {r.run.pending_note}**"]
            )  # fmt: skip
            continue
        rows.append(
            [
                r.run.name,
                f"`{r.command}`",
                f"{r.elapsed_s:.1f}",
                f"{r.eval_s:.1f}",
                f"**{r.eval_share:.1%}**",
                f"≤ {r.run.eval_share_target:.0%}",
                _yes(r.eval_share <= r.run.eval_share_target),
                f"{r.max_rss_mib:.0f}",
                f"process wall {r.wall_s:.1f} s",
            ]
        )
    if imports_mib is not None:
        command = '`python -c "import gan.trainer"`'
        note = "the floor under every run: torch and the other libraries loaded"
        rows.append(["imports only", command, "—", "—", "—", "—", "—", f"{imports_mib:.0f}", note])
    headers = [
        "run",
        "command",
        "elapsed_s",
        "eval_s",
        "eval share",
        "target",
        "meets",
        "peak RSS (MiB)",
        "note",
    ]
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------------------------------
# 3b. The image claim presets: evaluation's share of one job each.


def image_presets() -> list[str]:
    """The image claim presets: ``conf/experiment/`` files matching :data:`PRESET_GLOB`, sorted."""
    return sorted(path.stem for path in (CONF_DIR / "experiment").glob(PRESET_GLOB))


def first_job(params) -> tuple[str, ...]:
    """The first job of a Hydra sweep: ``key=<first value>`` for each entry of ``hydra.sweeper.params``."""
    parser = OverridesParser.create()
    job = []
    for key, value in (params or {}).items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
        else:
            value = override.get_value_element_as_str()
        job.append(f"{key}={value}")
    return tuple(job)


def compressed_schedule(steps: int, every: int, target: int = PRESET_SHORT_STEPS) -> tuple[int, int]:
    """``(short_steps, short_every)``: the evaluations of a ``steps``-step run evaluated every ``every``
    steps (and at the end), the same ones in the same order, with about ``target`` steps in all.

    Each evaluation keeps its index (so the probe, every ``eval.probe_every``-th, runs at the same
    ones); only the number of training steps between evaluations shrinks.
    """
    if steps <= target:
        return steps, every
    if steps % every == 0:
        intervals = steps // every
        short_every = max(1, round(target / intervals))
        return intervals * short_every, short_every
    common = math.gcd(steps, every)
    factor = max((d for d in range(1, common + 1) if common % d == 0 and steps // d >= target), default=1)
    return steps // factor, every // factor


def preset_eval_share(eval_s: float, elapsed_s: float, factor: float) -> float:
    """Evaluation's share of a run ``factor`` times longer than the one measured between the same
    evaluations: ``eval_s / (eval_s + factor · (elapsed_s − eval_s))``."""
    return eval_s / (eval_s + factor * (elapsed_s - eval_s))


OFFLINE_DATA = ("MNIST5k", "Digits")


@dataclass
class PresetResult:
    preset: str
    job: tuple[str, ...]  # the first job of the preset's sweep
    steps: int  # the preset's
    every: int
    short_steps: int
    short_every: int
    pending: str = ""  # why it is not run here
    same_as: str = ""  # a preset whose first job is this one's (measured once)
    command: str = ""
    elapsed_s: float | None = None
    eval_s: float | None = None
    max_rss_mib: float | None = None
    config: str = field(default="", repr=False)  # the composed job config, to find identical jobs

    @property
    def factor(self) -> float:
        return self.steps / self.short_steps

    @property
    def short_share(self) -> float | None:
        return None if self.elapsed_s is None else self.eval_s / self.elapsed_s

    @property
    def eval_share(self) -> float | None:
        """Estimated at the preset's length (:func:`preset_eval_share`)."""
        return None if self.elapsed_s is None else preset_eval_share(self.eval_s, self.elapsed_s, self.factor)


def _compose_with_hydra(overrides) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def plan_preset(preset: str, *, quick: bool = False) -> PresetResult:
    """The short job of ``preset``'s first sweep job: its overrides, schedule and whether it can run here
    (presets on data that needs a download, the ``_paper`` twins, are for a GPU or a cluster)."""
    cfg = _compose_with_hydra([f"experiment={preset}"])
    job = first_job(OmegaConf.select(cfg, "hydra.sweeper.params"))
    cfg = compose_train([f"experiment={preset}", *job])
    steps, every = int(cfg.train.steps), int(cfg.eval.every)
    short_steps, short_every = compressed_schedule(steps, every, target=4 if quick else PRESET_SHORT_STEPS)
    data = cfg.data._target_.rsplit(".", 1)[-1]
    pending = ""
    if data not in OFFLINE_DATA:
        name = cfg.data.get("name", data)
        pending = f"data={name} (a download) at a GPU or cluster budget ({steps} steps); not run here"
    return PresetResult(preset, job, steps, every, short_steps, short_every, pending=pending,
                        config=OmegaConf.to_yaml(cfg))  # fmt: skip


def bench_presets(names, *, quick: bool, log, threads: int | None = None) -> list[PresetResult]:
    """One short job per preset (:func:`plan_preset`) in a subprocess, run as ``experiments.claims``
    runs the presets' jobs (``train.threads=1``); jobs identical to one already run are not rerun."""
    results: list[PresetResult] = []
    for name in names:
        result = plan_preset(name, quick=quick)
        done = next((r for r in results if r.config == result.config and r.elapsed_s is not None), None)
        if result.pending:
            log(f"  {name}: not run ({result.pending})")
        elif done is not None:
            result = replace(result, same_as=done.preset, command=done.command, elapsed_s=done.elapsed_s,
                             eval_s=done.eval_s, max_rss_mib=done.max_rss_mib)  # fmt: skip
            log(f"  {name}: its first job is {done.preset}'s")
        else:
            args = [f"experiment={name}", *result.job, f"train.steps={result.short_steps}",
                    f"eval.every={result.short_every}", *PRESET_JOB_OVERRIDES,
                    *(QUICK_PRESET_OVERRIDES if quick else ())]  # fmt: skip
            summary, _, rss = run_train(args, threads=threads or 1)
            result = replace(
                result, command=shlex.join(["python", "-m", "experiments.train", *args]),
                elapsed_s=summary["elapsed_s"], eval_s=summary["eval_s"], max_rss_mib=rss,
            )  # fmt: skip
            log(f"  {name}: eval share {result.short_share:.1%} in {result.short_steps} steps, "
                f"{result.eval_share:.1%} estimated at {result.steps}")  # fmt: skip
        results.append(result)
    return results


def presets_table(results: list[PresetResult]) -> str:
    rows = []
    target = f"≤ {PRESET_EVAL_SHARE_TARGET:.0%}"
    for r in results:
        job = " ".join(r.job) or "—"
        schedule = f"{r.steps}, every {r.every}"
        if r.elapsed_s is None:
            rows.append([f"`{r.preset}`", f"`{job}`", schedule, "—", "—", "—", "—", "—", target, "—",
                         f"**not measured: {r.pending}**"])  # fmt: skip
            continue
        note = f"the job of `{r.same_as}`, measured once" if r.same_as else f"`{r.command}`"
        rows.append(
            [
                f"`{r.preset}`",
                f"`{job}`",
                schedule,
                f"{r.short_steps}, every {r.short_every}",
                f"{r.elapsed_s:.1f}",
                f"{r.eval_s:.1f}",
                f"{r.short_share:.1%}",
                f"**{r.eval_share:.1%}**",
                target,
                _yes(r.eval_share <= PRESET_EVAL_SHARE_TARGET),
                note,
            ]
        )
    headers = [
        "preset",
        "its first job",
        "preset: steps, evaluations",
        "short job: steps, evaluations",
        "elapsed_s",
        "eval_s",
        "eval share of the short job",
        "eval share at the preset's length (estimate)",
        "target",
        "meets",
        "short job's command",
    ]
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------------------------------
# The report.


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "cores available": str(cores()),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} intra-op threads, "
        f"{torch.get_num_interop_threads()} inter-op)",
        "POT / scipy / NumPy": f"{ot.__version__} / {scipy.__version__} / {np.__version__}",
        "Python": platform.python_version(),
    }


def _image_section(image_training, variants, profiles, comparisons) -> str:
    if not image_training and not variants and not profiles:
        return ""
    steps_note = ", ".join(f"{r.case.name} at batch {case_batch(r.case)}: {r.steps}"
                           for r in image_training)  # fmt: skip
    out = f"""## Training step on images: the framework against a hand-written loop

The same comparison on mnist5k (4,000 training images of 28×28, pixels scaled to [-1, 1]) with the
image MLP of the claim presets (`{" ".join(IMAGE_MLP[1:])}`) and the DCGAN models of
`conf/model/dcgan.yaml` (width 16) at the presets' batch of 64 and the default image run's 256; the
framework's two evaluations also skip the classifier features (`eval.image_quality=false`,
`eval.batch_size=64`), outside the clock. The hand-written loop (`handwritten_image_loop` in
`scripts/bench.py`) instantiates the models and the optimisers from the same composed config after
`torch.manual_seed(seed)`, draws every batch as the first `batch_size` of a random permutation of the
training split from one seeded `torch.Generator`, scales its 8-bit levels to the pixel range, and
is otherwise the textbook WGAN-GP step. It does the framework's work exactly: the last column is the
largest difference between the framework's final parameters and buffers (from its checkpoint) and
the hand-written loop's, same seed, over every pair of the run. An image step takes about a second
here, so the rows have fewer steps per repetition ({steps_note}) and fewer pairs.

{training_table(image_training, image=True) if image_training else "(not run)"}
"""
    if profiles:
        out += f"""
### Where a hand-written image step's time goes

`torch.profiler` over the plain hand-written loop, after one unprofiled step (CPU time; the profiler
adds a little to every op). The phases are labelled spans of one generator step: five critic steps,
then the generator's. The critic's backward runs through the penalty's input gradient, which was
built with `create_graph=True`: a double backward, which for a convolution is more convolutions.

{profile_table(profiles)}
"""
    if variants:
        out += f"""
### What a careful user would try in the hand-written loop

One change at a time against the plain loop (the first row of each model), interleaved, one warm-up
round and {len(variants[0].seconds)} pairs. The last column says whether the numbers stay the same
(the final parameters after the same steps from the same seed); only a change that keeps them
identical can go into the framework without changing every run's results. Batches are already
gathered per batch in the plain loop (one index, one copy), and neither loop reads a value back to
Python inside a step (`.item()`): the framework reads the losses once every `train.log_every` steps.

{variants_table(variants)}
"""
    if comparisons:
        out += f"""
### The framework's step under the profiler

`torch.profiler` over the framework's steps (started by the loop's hook at the end of the step-0
evaluation, stopped at the start of the final one) and over the hand-written loop's, same config:
the ops whose self CPU time differs most. Run for the rows that fell short of the target, or for all
with `--profile`.

{comparison_table(comparisons)}
"""
    return out


def _presets_section(presets: list[PresetResult]) -> str:
    if not presets:
        return ""
    return f"""
## Evaluation's share in the image claim presets

One job of each image claim preset (`conf/experiment/{PRESET_GLOB}`): the first job of its sweep (the
first value of each swept key; the presets list their longest jobs first), started as
`python -m experiments.train experiment=<preset> <job> {" ".join(PRESET_JOB_OVERRIDES)}`, as
`python -m experiments.claims` runs them, with all of the preset's evaluations (as many, with the same
indices, so the converged-critic probe runs at the same ones) but fewer training steps between them:
`train.steps` and `eval.every` divided by the same factor f. Its share at the preset's length is then
estimated as `eval_s / (eval_s + f · (elapsed_s − eval_s))`: the training time scaled back up, the
evaluations as measured (their cost does not grow with training, apart from the exact solvers'
data-dependent time). A preset whose first job is another preset's is measured once.

{presets_table(presets)}
"""


def render_report(
    *,
    machine: dict[str, str],
    date: str,
    command: str,
    duration_s: float,
    load: tuple[float, float],
    training: list[TrainResult],
    threads: list[ThreadResult],
    solvers: list[SolverResult],
    evaluation: list[EvalResult],
    runs: list[RunResult],
    imports_mib: float | None = None,
    image_training: list[TrainResult] = (),
    variants: list[VariantResult] = (),
    profiles: list[StepProfile] = (),
    comparisons: list[ProfileComparison] = (),
    presets: list[PresetResult] = (),
) -> str:
    info = [[k, v] for k, v in machine.items()]
    info += [
        ["date", date],
        ["command", f"`{command}`"],
        ["benchmark wall time", f"{duration_s / 60:.1f} min"],
        ["load average (1 min) at start / end", f"{load[0]:.1f} / {load[1]:.1f}"],
    ]
    n = threads[0].threads if threads else torch.get_num_threads()
    return f"""# Performance

Written by `{command}`; `make bench` runs `{COMMAND}` and rewrites this part of the page
(the sections after it are written by the commands they name). Every figure that is compared with a
target is a ratio of measurements taken in the same run, their repetitions interleaved, and the
median is quoted: the machine is shared, so absolute speeds drift, ratios much less.

{markdown_table(["", ""], info)}

## Training step: the framework against a hand-written loop

`gan.trainer.train` on the composed default config (`data=gaussians8`, `objective=wgan_gp`) with
`eval.every` above `train.steps`, so that only step 0 and the last step are evaluated; its clock
runs from the end of the step-0 evaluation to the start of the final one, which includes everything
the loop does per step (batches, losses, optimiser steps, the progress counter, loss logging every
`train.log_every` steps, checkpoints every `train.checkpoint_every`). The hand-written loop
(`handwritten_loop_seconds` in `scripts/bench.py`) is a minimal PyTorch WGAN-GP with the same layers,
data, penalty, optimiser and batch, read from the same config. Ratio = framework steps/s ÷
hand-written steps/s, median over interleaved pairs (after one warm-up pair). The same ratio in
process CPU time (all threads) is less sensitive to other processes on a shared machine; with
several torch threads it also counts threads spinning while they wait. The "framework setup +
teardown" column is the framework's fixed cost per run outside the loop and outside evaluation
(`train_s` minus the loop: building the models, opening TensorBoard, the final checkpoint and hparams).

{training_table(training)}

### Intra-op threads

The hand-written loop at 1 torch thread (`train.threads`' default) against torch's default of {n}
(one per core, `train.threads=null`). Small layers gain little from a second thread, and while other
work keeps the cores busy every parallel region waits for its slowest thread, so a ratio above 1
here says that one thread is the faster setting (compare the load average above).

{threads_table(threads)}

{_image_section(image_training, variants, profiles, comparisons)}
## Exact W1: network simplex against the assignment solver

`metrics.ot.solve(x, y, p=1, solver=...)` on a real-like and a generated-like batch of `n` points each
(2D: 8 Gaussians against a standard normal blob; d = 784, 3072: uniform pixels against clipped
Gaussian pixels). The values come from one unmodified call per solver and must agree. The times
are split: "cost matrix" is `metrics.ot.cost_matrix` (float64 Euclidean distances, the same for
every solver), the solver columns are `solve()` handed that matrix, so that the comparison is not
buried in the cost matrix's noise; a call of `solve()` costs their sum. Solvers and cost matrix are
timed in rotating order; times and ratios are medians. "auto" is the solver
`metrics.ot._pick_solver` chooses today (`assignment` when n = m and d > 16, else `emd`).

{solver_table(solvers)}

{solver_summary(solvers)}

## The default runs: evaluation's share of wall time and peak memory

Each run is started as `python -m experiments.train` (plus `hydra.run.dir` to a temporary folder) in
its own process. Eval share = `eval_s / elapsed_s` from its `summary.json` (`elapsed_s` is measured
inside `train`, after imports and Hydra start-up; the process wall time includes them). Peak RSS is
the run's `ru_maxrss`, read by a small launcher process in between (a process forked straight from
the benchmark would inherit the benchmark's own high-water mark). RSS counts every resident page of
the shared libraries the process maps (most of the "imports only" floor), so it moves by a hundred
MiB or so with what the page cache holds.

{runs_table(runs, imports_mib)}

Where one evaluation's time goes, timed in this process on the default config's models as built
(untrained, step 0; the other evaluations of a run differ with the models), in rotating order:

{evaluation_table(evaluation)}
{_presets_section(presets)}"""


# --------------------------------------------------------------------------------------------------
# 4. On a GPU: the training rows and train.parallel_seeds (``--device cuda``).

DEVICE_REPS = 5
DEVICE_EVAL_OFF = {"eval.batch_size": 64}
PARALLEL_KS = (1, 4, 16, 64)
QUICK_PARALLEL_KS = (1, 2)
PARALLEL_STEPS = 100
PARALLEL_REPS = 3
PARALLEL_MODELS = (
    ("toy MLP (conf/model/mlp.yaml, 8 Gaussians)", ()),
    ("image MLP of the claim presets (mnist5k)", IMAGE_MLP),
)
DEVICE_MINUTES = 8  # what one run of the command is planned to take on one GPU


def cuda_missing() -> str | None:
    """Why ``--device cuda`` cannot run here, or ``None`` when it can."""
    if not torch.cuda.is_available():
        return (
            f"--device cuda: CUDA is not available on this machine (torch {torch.__version__}: "
            "torch.cuda.is_available() is False); run it on a machine with a CUDA GPU"
        )
    return None


@dataclass
class DeviceResult:
    device: str  # the accelerator, in words
    training: list[TrainResult]
    parallel: list[tuple[str, list]]  # (model, scripts.bench_parallel.Result per K)


def bench_accelerator(device: str = "cuda", *, quick: bool, reps: int, log) -> DeviceResult:
    """The training rows (toy and image, framework against hand-written) and ``train.parallel_seeds``
    for each K of :data:`PARALLEL_KS` on the toy and the image MLP, all on ``device``.

    The K runs in turn are timed as K times one run (seed 0's), the copies being the same work; the
    agreement column compares copy 0 with that run. Runs on the CPU too (the tests do, at --quick).
    """
    from scripts import bench_parallel

    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else cpu_model()
    log(f"1/2 training step on {name}: framework vs hand-written")
    training = bench_training(
        [*TRAIN_CASES, *IMAGE_CASES], reps=reps, quick=quick, log=log, device=device,
        steps_of=lambda case: case.device_steps,
    )  # fmt: skip
    parallel = []
    ks = QUICK_PARALLEL_KS if quick else PARALLEL_KS
    for model, overrides in PARALLEL_MODELS:
        log(f"2/2 train.parallel_seeds, {model}: K = {list(ks)}")
        results = bench_parallel.bench(
            ks, steps=3 if quick else PARALLEL_STEPS, reps=1 if quick else PARALLEL_REPS, quick=quick,
            log=log, base=overrides, device=device, in_turn="once",
        )  # fmt: skip
        parallel.append((model, results))
    return DeviceResult(name, training, parallel)


def _device_intro() -> str:
    cases = "; ".join(f"{c.name} ({c.device_steps} steps)" for c in [*TRAIN_CASES, *IMAGE_CASES])
    return (
        f"`{DEVICE_COMMAND}` measures on one GPU, in one command of about {DEVICE_MINUTES} minutes: the "
        f"training rows of `{COMMAND}` (framework ÷ hand-written steps/s, {DEVICE_REPS} interleaved pairs "
        f"after a warm-up pair; {cases}; both clocks wait for the GPU before they are read), and "
        f"`train.parallel_seeds=K` for K = {', '.join(map(str, PARALLEL_KS))} on the toy MLP and on the "
        f"image MLP of the claim presets ({PARALLEL_STEPS} steps per copy; the K runs in turn timed as K "
        "times seed 0's run, the agreement column comparing copy 0 with it). On a machine without CUDA "
        "it stops before doing anything, with exit code 2."
    )


def render_device_section(result: DeviceResult | None, *, date: str, command: str = DEVICE_COMMAND,
                          duration_s: float | None = None, load=None) -> str:  # fmt: skip
    """The GPU section: the figures of ``result``, or (``None``) what the command would measure."""
    title = "## On a GPU: the training step and `train.parallel_seeds`"
    if result is None:
        return f"""{title}

**Not measured: no accelerator was available.** `torch.cuda.is_available()` was false where
`{COMMAND}` last wrote this page ({date}), so this section holds no figures; the targets at the end
of the page list the GPU rows as not measured. {_device_intro()}
"""
    from scripts import bench_parallel

    info = [[k, v] for k, v in machine_info().items()]
    info += [["GPU", result.device], ["date", date], ["command", f"`{command}`"]]
    if duration_s is not None:
        info.append(["benchmark wall time", f"{duration_s / 60:.1f} min"])
    if load is not None:
        info.append(["load average (1 min) at start / end", f"{load[0]:.1f} / {load[1]:.1f}"])
    toy = [r for r in result.training if not r.case.image]
    image = [r for r in result.training if r.case.image]
    parallel = "\n\n".join(f"**{model}**\n\n{bench_parallel.table(rows)}" for model, rows in result.parallel)
    return f"""{title}

{_device_intro()} On a GPU the image rows' parameters need not be bit-identical (the convolution
kernels' reductions run in a nondeterministic order).

{markdown_table(["", ""], info)}

### Training step: the framework against a hand-written loop

{training_table(toy)}

{training_table(image, image=True)}

### Many seeds in one process: `train.parallel_seeds`

{parallel}
"""


# --------------------------------------------------------------------------------------------------
# 5. The figures with targets: stored beside the page, listed in its closing section.


def figures_path(page: Path) -> Path:
    """The JSON file beside ``page`` that holds the last measured figures of each command."""
    return page.with_suffix(".figures.json")


def _figure(name: str, value, shown: str, target: str, met) -> dict:
    return {"figure": name, "value": value, "measured": shown, "target": target, "met": met}


def training_figures(results: list[TrainResult], where: str = "") -> list[dict]:
    out = []
    for r in results:
        med = r.ratio("wall")[0]
        out.append(_figure(f"framework ÷ hand-written steps/s{where}, {r.case.name}: {r.model}", med,
                           f"{med:.3f}", f"≥ {STEP_RATIO_TARGET}", med >= STEP_RATIO_TARGET))  # fmt: skip
    return out


def cpu_figures(*, training, image_training, runs, presets, solvers) -> list[dict]:
    """Every figure of a CPU run that has a target."""
    out = training_figures([*training, *image_training])
    for r in runs:
        name, target = f"evaluation's share, {r.run.name}", f"≤ {r.run.eval_share_target:.0%}"
        if r.eval_share is None:
            out.append(
                _figure(name, None, f"not measured by this command ({r.run.pending_note})", target, None)
            )
        else:
            out.append(_figure(name, r.eval_share, f"{r.eval_share:.1%}", target,
                               r.eval_share <= r.run.eval_share_target))  # fmt: skip
    for r in presets:
        name = f"evaluation's share, one job of `{r.preset}` (at its length)"
        target = f"≤ {PRESET_EVAL_SHARE_TARGET:.0%}"
        if r.eval_share is None:
            out.append(_figure(name, None, f"not measured ({r.pending})", target, None))
        else:
            out.append(_figure(name, r.eval_share, f"{r.eval_share:.1%}", target,
                               r.eval_share <= PRESET_EVAL_SHARE_TARGET))  # fmt: skip
    if solvers:
        agree = sum(r.agree[0] for r in solvers)
        out.append(_figure("exact W1: the solvers' values agree", agree, f"{agree} of {len(solvers)} cases",
                           f"all, to rel {AGREE_RTOL:.0e}", agree == len(solvers)))  # fmt: skip
    return out


def device_figures(result: DeviceResult | None) -> list[dict]:
    """The GPU run's figures with a target; without a result, the same rows marked not measured."""
    if result is not None:
        return training_figures(result.training, " on a GPU")
    pending = "not measured (no accelerator was available)"
    return [
        _figure(f"framework ÷ hand-written steps/s on a GPU, {c.name}"
                + (f" (batch {case_batch(c)})" if c.image else ""),
                None, pending, f"≥ {STEP_RATIO_TARGET}", None)
        for c in [*TRAIN_CASES, *IMAGE_CASES]
    ]  # fmt: skip


def load_figures(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_figures(path: Path, store: dict) -> None:
    atomic_write_bytes(path, (json.dumps(store, indent=1, ensure_ascii=False) + "\n").encode())


def render_summary(store: dict, figures_file: str) -> str:
    """The closing section: every stored figure with a target, whether it is met, and its command."""
    rows = []
    for entry in store.values():
        when = entry.get("date") or "—"
        for f in entry.get("figures", []):
            met = "—" if f["met"] is None else _yes(f["met"])
            rows.append([f["figure"], f"**{f['measured']}**" if f["met"] is not None else f["measured"],
                         f["target"], met, f"`{entry['command']}`", when])  # fmt: skip
    counted = [r for r in rows if r[3] != "—"]
    met = sum(r[3] == "yes" for r in counted)
    table = markdown_table(["figure", "measured", "target", "met", "measured by", "when"], rows)
    return f"""## Targets: which figures meet them

Written by `{COMMAND}` and `{DEVICE_COMMAND}` from the figures each of them measured last, kept in
`{figures_file}` beside this page (each command replaces its own entries and rewrites this section).
{met} of the {len(counted)} measured figures meet their target; rows marked "—" were not measured.

{table}
"""


def publish(
    out: Path, section: str, text: str, entry: dict, *, device_placeholder: str | None = None
) -> None:
    """Write ``section`` into the page ``out``, store ``entry`` (its figures) beside it, and rewrite the
    closing section from every stored entry. ``device_placeholder``: the GPU section to write when the
    stored figures hold no GPU measurement."""
    write_section(out, section, text)
    path = figures_path(out)
    store = load_figures(path)
    store[section] = entry
    if device_placeholder is not None and not store.get(DEVICE_SECTION, {}).get("measured"):
        store[DEVICE_SECTION] = {"command": DEVICE_COMMAND, "date": None, "measured": False,
                                 "figures": device_figures(None)}  # fmt: skip
        write_section(out, DEVICE_SECTION, device_placeholder)
    store = {key: store[key] for key in sorted(store, key=lambda k: (k != SECTION, k))}
    save_figures(path, store)
    write_section(out, SUMMARY_SECTION, render_summary(store, path.name), at_end=True)


# --------------------------------------------------------------------------------------------------
# The command.


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _command_line(argv) -> str:
    return shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])


def main_device(args, out: Path | None, argv) -> int:
    """``--device cuda``: :func:`bench_accelerator`, written into its own section."""
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    reps = args.reps or (1 if args.quick else DEVICE_REPS)
    result = bench_accelerator(args.device, quick=args.quick, reps=reps, log=_log)
    command = _command_line(argv)
    text = render_device_section(
        result, date=date, command=command, duration_s=time.perf_counter() - started,
        load=(load_start, os.getloadavg()[0]),
    )  # fmt: skip
    if out is None:
        print(text)
    else:
        entry = {"command": command, "date": date, "measured": True, "figures": device_figures(result)}
        publish(out, DEVICE_SECTION, text, entry)
        _log(f"wrote {out} in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; prints the report unless --out")
    parser.add_argument("--out", type=Path, help=f"report path (default {DEFAULT_OUT}; none with --quick)")
    parser.add_argument(
        "--reps", type=int,
        help=f"repetitions per side (default 11, image rows half; quick 1; --device cuda {DEVICE_REPS})",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, help="torch threads for all measurements (default: torch's own)"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="cuda: the training rows and train.parallel_seeds on a GPU, written into their own section",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="profile every row's framework step against the hand-written one (default: rows below target)",
    )  # fmt: skip
    parser.add_argument(
        "--presets", nargs="*", metavar="NAME",
        help=f"image claim presets to measure (default: every conf/experiment/{PRESET_GLOB})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.device == "cuda" and (reason := cuda_missing()):
        print(f"error: {reason}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None or args.quick else DEFAULT_OUT
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        return main_device(args, out, argv)
    # Many short pairs rather than a few long ones: bursts of other work on a shared machine last
    # seconds, and a median over many pairs sets the few disturbed ones aside.
    reps = args.reps or (1 if args.quick else 11)
    threads_now = torch.get_num_threads()
    log = _log

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    log("1/8 training step: framework vs hand-written")
    training = bench_training(TRAIN_CASES, reps=reps, quick=args.quick, log=log)
    log(f"2/8 training step: 1 thread vs {threads_now}")
    threads = bench_threads(
        TRAIN_CASES, threads=threads_now, reps=max(1, reps // 3), quick=args.quick, log=log
    )
    log("3/8 training step on images: framework vs hand-written")
    image_training = bench_training(
        IMAGE_CASES, reps=max(1, reps // IMAGE_REPS_DIVISOR), quick=args.quick, log=log
    )
    short = [r for r in [*training, *image_training] if args.profile or r.ratio()[0] < STEP_RATIO_TARGET]
    comparisons = []
    for r in short:
        log(f"  profiling {r.case.name}, {r.model}: framework against hand-written")
        comparisons.append(profile_framework(r.case, quick=args.quick, steps=r.steps))
    log("4/8 the hand-written image loop: what a careful user would try, and a profile")
    variants = bench_variants(reps=1 if args.quick else VARIANT_REPS, quick=args.quick, log=log)
    profiles = [profile_image_step(case, steps, quick=args.quick) for case, steps in VARIANT_CASES]
    log("5/8 exact W1 solvers")
    ns, ds = (QUICK_NS, QUICK_DS) if args.quick else (SOLVER_NS, SOLVER_DS)
    solvers = bench_solvers(ns, ds, quick=args.quick, log=log)
    log("6/8 one evaluation, piece by piece")
    evaluation = bench_evaluation(reps=1 if args.quick else 2, quick=args.quick, log=log)
    log("7/8 default runs")
    runs, imports_mib = [], imports_rss(threads=args.threads)
    for run in DEFAULT_RUNS:
        result = run_default(run, extra=QUICK_RUN_OVERRIDES if args.quick else (), threads=args.threads)
        if result.eval_share is not None:
            log(f"  {run.name}: eval share {result.eval_share:.1%}, peak RSS {result.max_rss_mib:.0f} MiB")
        runs.append(result)
    log("8/8 image claim presets: one short job each")
    names = image_presets() if args.presets is None else args.presets
    presets = bench_presets(names, quick=args.quick, log=log, threads=args.threads)

    command = _command_line(argv)
    load = (load_start, os.getloadavg()[0])
    report = render_report(
        machine=machine_info(),
        date=date,
        command=command,
        duration_s=time.perf_counter() - started,
        load=load,
        training=training,
        threads=threads,
        solvers=solvers,
        evaluation=evaluation,
        runs=runs,
        imports_mib=imports_mib,
        image_training=image_training,
        variants=variants,
        profiles=profiles,
        comparisons=comparisons,
        presets=presets,
    )
    figures = cpu_figures(
        training=training, image_training=image_training, runs=runs, presets=presets, solvers=solvers
    )
    if out is None:
        print(report)
    else:
        entry = {"command": command, "date": date, "load": [round(x, 2) for x in load], "figures": figures}
        publish(out, SECTION, report, entry, device_placeholder=render_device_section(None, date=date))
        log(f"wrote {out} in {(time.perf_counter() - started) / 60:.1f} min")
    disagree = [(r.n, r.d) for r in solvers if not r.agree[0]]
    if disagree:
        log(f"error: exact solvers disagree beyond rel {AGREE_RTOL:g} at (n, d) = {disagree}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
