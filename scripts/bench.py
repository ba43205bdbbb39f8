"""Benchmark: the framework against a hand-written loop, the exact OT solvers, and evaluation's share.

    python -m scripts.bench                 # full benchmark (under 10 minutes on 2 idle CPU cores)
    python -m scripts.bench --quick         # smoke run on tiny sizes; prints the report, writes nothing
    python -m scripts.bench --threads 1     # every measurement at 1 torch thread (a busy machine)
    python -m scripts.bench --out /tmp/perf.md

Figures compared with a target are ratios of two measurements taken in the same process run, their
repetitions interleaved in rotating order, medians reported: on a shared machine absolute speeds drift
by a factor of several within minutes, the ratio of neighbouring measurements much less.

1. Training step: ``gan.trainer.train`` with evaluation pushed out of the loop (``eval.every`` >
   ``train.steps``) against a minimal hand-written PyTorch WGAN-GP loop built from the same composed
   config (same layers, objective, optimiser, batch and data). Only the loop is timed: the framework's
   clock runs from the end of its step-0 evaluation to the start of its final one. Then the
   hand-written loop at 1 torch thread against torch's default.
2. Exact W1: ``metrics.ot.solve`` with each solver over a grid of n and d, the values checked equal;
   solver and cost matrix timed apart.
3. The default runs, each in its own subprocess: ``eval_s / elapsed_s`` from ``summary.json`` and the
   run's peak resident memory (``ru_maxrss``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import ot
import scipy
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from torch import nn

import gan.trainer
import metrics.ot
from gan.evaluation import eval_generator
from gan.runfolder import atomic_write_bytes
from metrics.ot import SOLVERS, _pick_solver, cost_matrix, solve

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
DEFAULT_OUT = ROOT / "docs" / "PERFORMANCE.md"
COMMAND = ".venv/bin/python -m scripts.bench"

T = TypeVar("T")

STEP_RATIO_TARGET = 0.95
AGREE_RTOL = 1e-9


# --------------------------------------------------------------------------------------------------
# What is measured. Each list entry is one row of the report.


@dataclass(frozen=True)
class TrainCase:
    """A model for the framework-vs-hand-written comparison: overrides of the default config."""

    name: str
    overrides: tuple[str, ...]
    steps: int  # generator steps per timed repetition
    quick_steps: int = 3


@dataclass(frozen=True)
class DefaultRun:
    """A default run measured end to end in a subprocess. ``overrides=None``: not measurable yet."""

    name: str
    overrides: tuple[str, ...] | None
    eval_share_target: float
    pending_note: str = ""


TRAIN_CASES = [
    TrainCase("default (conf/model/mlp.yaml)", (), steps=40),
    TrainCase("issue 7's MLP", ("model.generator.width=512", "model.critic.width=512"), steps=12),
]

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
    "train.progress": "false",
}
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


def _fmt_ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


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


class EvaluationClock:
    """A :data:`gan.loop.Hook` recording the clocks at the start and end of every evaluation phase."""

    def __init__(self):
        self.starts: list[Timing] = []
        self.ends: list[Timing] = []

    def __call__(self, event: str, step: int) -> None:
        (self.starts if event == "eval_start" else self.ends).append(_clock())

    def between_first_two(self) -> Timing:
        """From the end of the first evaluation phase to the start of the second."""
        if len(self.starts) != 2:
            raise RuntimeError(f"{len(self.starts)} evaluation phases (the bench times the loop between two)")
        return Timing(self.starts[1].wall - self.ends[0].wall, self.starts[1].cpu - self.ends[0].cpu)


def framework_loop_seconds(cfg) -> tuple[Timing, float]:
    """Run ``gan.trainer.train``; return the time between its two evaluations and its ``train_s``.

    ``cfg`` must put no evaluation inside the loop (``eval.every > train.steps``).
    """
    if cfg.eval.every <= cfg.train.steps:
        raise ValueError("eval.every must exceed train.steps so that only steps 0 and the last are evaluated")
    clock = EvaluationClock()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as run_dir:
        summary = gan.trainer.train(cfg, run_dir, hook=clock)
    if summary["status"] != "completed":
        raise RuntimeError(f"framework run: status {summary['status']}")
    return clock.between_first_two(), summary["train_s"]


def _mlp(in_features: int, width: int, depth: int, out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, out_features))


def handwritten_loop_seconds(cfg) -> Timing:
    """Time ``cfg.train.steps`` generator steps of a minimal WGAN-GP loop in plain PyTorch.

    Sizes, data and hyperparameters are read from ``cfg`` (a ring of Gaussians, MLPs with
    ``depth`` hidden ReLU layers, Adam for both networks); the code is what one writes by hand.
    """
    m, o, data = cfg.model, cfg.objective, cfg.data
    if data.get("layout") != "ring":
        raise ValueError("the hand-written loop samples a ring of Gaussians (data=gaussians8)")
    # Plain Python values, as a script would have them (a DictConfig lookup costs microseconds).
    steps, batch, latent = int(cfg.train.steps), int(cfg.train.batch_size), int(m.latent_dim)
    critic_steps, penalty_weight = int(o.critic_steps), float(o.penalty_weight)
    n_modes, scale, std = int(data.n_modes), float(data.scale), float(data.std)
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    gen = _mlp(latent, m.generator.width, m.generator.depth, 2)
    critic = _mlp(2, m.critic.width, m.critic.depth, 1)
    opt_g = torch.optim.Adam(
        gen.parameters(), lr=float(o.generator_optimizer.lr), betas=tuple(o.generator_optimizer.betas)
    )
    opt_c = torch.optim.Adam(
        critic.parameters(), lr=float(o.critic_optimizer.lr), betas=tuple(o.critic_optimizer.betas)
    )
    angles = torch.arange(n_modes) * (2 * math.pi / n_modes)
    modes = scale * torch.stack([angles.cos(), angles.sin()], dim=1)

    def real_batch():
        which = torch.randint(n_modes, (batch,), generator=rng)
        return modes[which] + std * torch.randn(batch, 2, generator=rng)

    start = _clock()
    for _ in range(steps):
        for _ in range(critic_steps):
            real = real_batch()
            with torch.no_grad():
                fake = gen(torch.randn(batch, latent, generator=rng))
            t = torch.rand(batch, 1, generator=rng)
            mixed = (t * real + (1 - t) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
            penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
            loss_c = critic(fake).mean() - critic(real).mean() + penalty_weight * penalty
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_c.step()
        loss_g = -critic(gen(torch.randn(batch, latent, generator=rng))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return _since(start)


@dataclass
class TrainResult:
    case: TrainCase
    model: str
    steps: int
    framework: list[Timing]
    handwritten: list[Timing]
    fixed_s: list[float]  # framework train_s minus its loop: setup and teardown

    def ratio(self, clock: str = "wall") -> tuple[float, float, float]:
        """Framework steps/s ÷ hand-written steps/s (= hand-written time ÷ framework time), per pair."""
        return median_ratio(
            [getattr(t, clock) for t in self.handwritten], [getattr(t, clock) for t in self.framework]
        )


def case_config(case: TrainCase, *, quick: bool, steps: int | None = None):
    steps = steps or (case.quick_steps if quick else case.steps)
    overrides = [*case.overrides, f"train.steps={steps}", f"eval.every={steps + 1}"]
    if quick:
        overrides += QUICK_MODEL
    base = compose_train(overrides)
    eval_off = [f"{k}={v}" for k, v in FRAMEWORK_EVAL_OFF.items() if OmegaConf.select(base, k) is not None]
    return compose_train([*overrides, *eval_off])


def _framework_side(cfg, fixed: list[float]) -> Timing:
    loop, train_s = framework_loop_seconds(cfg)
    fixed.append(train_s - loop.wall)
    return loop


def _handwritten_at(cfg, threads: int) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return handwritten_loop_seconds(cfg).wall
    finally:
        torch.set_num_threads(before)


def _describe(cfg) -> str:
    m = cfg.model
    return (
        f"G {m.generator.depth}×{m.generator.width}, D {m.critic.depth}×{m.critic.width}, "
        f"latent {m.latent_dim}, batch {cfg.train.batch_size}"
    )


def bench_training(cases, *, reps: int, quick: bool, log) -> list[TrainResult]:
    """Framework and hand-written loop on each case, interleaved, after one warm-up round."""
    results = []
    for case in cases:
        cfg = case_config(case, quick=quick)
        fixed: list[float] = []
        sides = {
            "framework": functools.partial(_framework_side, cfg, fixed),
            "handwritten": functools.partial(handwritten_loop_seconds, cfg),
        }
        times = interleaved(sides, reps=reps)
        # fixed[0] is the warm-up round's
        result = TrainResult(
            case, _describe(cfg), cfg.train.steps, times["framework"], times["handwritten"], fixed[1:]
        )
        log(
            f"  {case.name}: framework ÷ hand-written steps/s = {result.ratio('wall')[0]:.3f} "
            f"(CPU time: {result.ratio('cpu')[0]:.3f})"
        )
        results.append(result)
    return results


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


def training_table(results: list[TrainResult]) -> str:
    rows = []
    for r in results:
        med, lo, hi = r.ratio("wall")
        cpu_med, cpu_lo, cpu_hi = r.ratio("cpu")
        rows.append(
            [
                f"{r.case.name}: {r.model}",
                f"{r.steps} × {len(r.framework)}",
                f"{r.steps / statistics.median(t.wall for t in r.framework):.1f}",
                f"{r.steps / statistics.median(t.wall for t in r.handwritten):.1f}",
                f"**{med:.3f}** ({lo:.3f}–{hi:.3f})",
                _yes(med >= STEP_RATIO_TARGET),
                f"{cpu_med:.3f} ({cpu_lo:.3f}–{cpu_hi:.3f})",
                f"{statistics.median(r.fixed_s):.2f}",
            ]
        )
    headers = [
        "model (8 Gaussians; WGAN-GP: 5 critic steps, λ = 10, Adam)",
        "steps × reps",
        "framework steps/s",
        "hand-written steps/s",
        "ratio (wall), median (min–max)",
        f"≥ {STEP_RATIO_TARGET}",
        "ratio (CPU time)",
        "framework setup + teardown per run (s)",
    ]
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


def run_default(run: DefaultRun, *, extra: tuple[str, ...] = (), threads: int | None = None) -> RunResult:
    """Run ``python -m experiments.train`` with ``run.overrides`` into a temporary run folder."""
    if run.overrides is None:
        return RunResult(run, "—")
    shown = shlex.join(["python", "-m", "experiments.train", *run.overrides, *extra])
    with tempfile.TemporaryDirectory(prefix="bench_run_") as tmp:
        run_dir, log_path = Path(tmp) / "run", Path(tmp) / "output.log"
        cmd = [sys.executable, "-m", "experiments.train", *run.overrides, *extra, f"hydra.run.dir={run_dir}"]
        code, wall, rss = run_child(cmd, log_path=log_path, threads=threads)
        if code != 0:
            raise RuntimeError(f"{shown} exited with {code}:\n{log_path.read_text(errors='replace')[-2000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
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
# The report.


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": cpu_model(),
        "cores available": str(cores),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} intra-op threads, "
        f"{torch.get_num_interop_threads()} inter-op)",
        "POT / scipy / NumPy": f"{ot.__version__} / {scipy.__version__} / {np.__version__}",
        "Python": platform.python_version(),
    }


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
several torch threads it also counts threads spinning while they wait. The last column is the
framework's fixed cost per run outside the loop and outside evaluation (`train_s` minus the loop:
building the models, opening TensorBoard, the final checkpoint and hparams).

{training_table(training)}

### Intra-op threads

The hand-written loop at 1 torch thread against torch's default of {n} (one per core, what the
runs use). Small layers gain little from a second thread, and while other
work keeps the cores busy every parallel region waits for its slowest thread, so a ratio above 1
here says that the runs would be faster pinned to one thread (compare the load average above).

{threads_table(threads)}

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
"""


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between ``name``'s begin/end markers in ``path``, keeping everything outside them, so
    that several benchmark commands can each own a part of one page. A section not yet on the page is
    appended; a page with no sections at all (new, or from before them) becomes this one section."""
    begin, end = f"<!-- begin {name}: rewritten by the command below -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        block = head + block + rest.split(end, 1)[1]
    elif "<!-- begin " in old:
        block = f"{old.rstrip()}\n\n{block}"
    atomic_write_bytes(path, block.encode())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; prints the report unless --out")
    parser.add_argument("--out", type=Path, help=f"report path (default {DEFAULT_OUT}; none with --quick)")
    parser.add_argument("--reps", type=int, help="training repetitions per side (default 11, quick 1)")
    parser.add_argument(
        "--threads", type=int, help="torch threads for all measurements (default: torch's own)"
    )
    args = parser.parse_args(argv)
    out = args.out if args.out is not None or args.quick else DEFAULT_OUT
    # Many short pairs rather than a few long ones: bursts of other work on a shared machine last
    # seconds, and a median over many pairs sets the few disturbed ones aside.
    reps = args.reps or (1 if args.quick else 11)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    log("1/5 training step: framework vs hand-written")
    training = bench_training(TRAIN_CASES, reps=reps, quick=args.quick, log=log)
    log(f"2/5 training step: 1 thread vs {default_threads}")
    threads = bench_threads(
        TRAIN_CASES, threads=default_threads, reps=max(1, reps // 3), quick=args.quick, log=log
    )
    log("3/5 exact W1 solvers")
    ns, ds = (QUICK_NS, QUICK_DS) if args.quick else (SOLVER_NS, SOLVER_DS)
    solvers = bench_solvers(ns, ds, quick=args.quick, log=log)
    log("4/5 one evaluation, piece by piece")
    evaluation = bench_evaluation(reps=1 if args.quick else 2, quick=args.quick, log=log)
    log("5/5 default runs")
    runs, imports_mib = [], imports_rss(threads=args.threads)
    for run in DEFAULT_RUNS:
        result = run_default(run, extra=QUICK_RUN_OVERRIDES if args.quick else (), threads=args.threads)
        if result.eval_share is not None:
            log(f"  {run.name}: eval share {result.eval_share:.1%}, peak RSS {result.max_rss_mib:.0f} MiB")
        runs.append(result)

    report = render_report(
        machine=machine_info(),
        date=date,
        command=shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)]),
        duration_s=time.perf_counter() - started,
        load=(load_start, os.getloadavg()[0]),
        training=training,
        threads=threads,
        solvers=solvers,
        evaluation=evaluation,
        runs=runs,
        imports_mib=imports_mib,
    )
    if out is None:
        print(report)
    else:
        write_section(Path(out), "scripts.bench", report)
        log(f"wrote {out} in {(time.perf_counter() - started) / 60:.1f} min")
    disagree = [(r.n, r.d) for r in solvers if not r.agree[0]]
    if disagree:
        log(f"error: exact solvers disagree beyond rel {AGREE_RTOL:g} at (n, d) = {disagree}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
