"""Benchmark: K seeds batched in one process (``train.parallel_seeds=K``) against K runs one after another.

    python -m scripts.bench_parallel                    # K = 1, 4, 16, default toy config, 1 torch thread
    python -m scripts.bench_parallel --quick            # smoke run: tiny models, K = 1, 2
    python -m scripts.bench_parallel --ks 1 8 --steps 100 --reps 5 --threads 2

``python -m scripts.bench --device cuda`` runs the same comparison on a GPU for K = 1, 4, 16, 64 on the
toy and the image MLP (:func:`bench` with ``device`` and ``in_turn="once"``).

For each K, the same total work two ways: ``gan.trainer.train`` with ``train.parallel_seeds=K`` (seeds
0..K-1), and ``gan.trainer.train`` once per seed, in turn. Evaluation runs only at step 0 and at the
last step (``eval.every`` above ``train.steps``) and is left out of the clock: each side is timed from
the end of its step-0 evaluations to the start of its final ones, so the figures are training steps
only (batches, losses, optimiser steps, loss logging). Throughput is in copy-steps per second (one
generator step of one seed, with its critic steps); speed-up = parallel throughput ÷ sequential
throughput, the median over repetitions in which the two sides alternate (first one, then the other,
in rotating order), because on a shared machine neighbouring measurements drift together. The last
column checks that the work is the same: the largest relative difference between a parallel copy's
final metrics and the separate run's with its seed. It is not 0: batched matrix products round a few
values differently, and training compounds that (see ``gan/trainer.py``); the largest relative
differences are in metrics close to 0 (``grad_ot_cosine``, ``ctransform_bound``).

With ``in_turn="once"`` the K runs in turn are timed as K times one run (seed 0's): the copies are the
same work, and K separate runs of a large K would take most of the benchmark's time; the last column
then compares copy 0 with that run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import gan.trainer
from gan.runfolder import SUMMARY
from scripts.bench import (
    DEFAULT_OUT,
    EvaluationClock,
    compose_train,
    interleaved,
    machine_info,
    markdown_table,
    median_ratio,
)
from scripts.page import write_section

COMMAND = ".venv/bin/python -m scripts.bench_parallel"
SECTION_INTRO = (
    "K copies of the default toy run batched in one process (`train.parallel_seeds=K`) against the same K "
    "runs one after another (`gan.trainer.train`), training steps only; speed-up = batched ÷ in-turn "
    "copy-steps per second, median over alternating repetitions. The last column is the largest "
    "relative difference between a copy's final metrics and the separate run's (batched products round "
    "differently; training compounds it, see `gan/trainer.py`)."
)
# Evaluation is outside the clock; these keep the two evaluations per run short.
EVAL_AT_ENDS = (
    "eval.large_n=256",
    "eval.plot=false",
    "eval.probe_every=0",
    "eval.image_quality=false",
    "train.progress=false",
)
QUICK_MODEL = ("model.generator.width=16", "model.critic.width=16", "train.batch_size=32")


def run_job(overrides, seed: int, k: int) -> tuple[float, list[dict]]:
    """Seconds in the loop (between the step-0 and the final evaluations) and each copy's final metrics,
    for ``train.parallel_seeds=k`` from ``seed``."""
    cfg = compose_train([*overrides, f"seed={seed}", f"train.parallel_seeds={k}"])
    clock = EvaluationClock(cfg.device)  # on a GPU it waits for the queued steps
    with tempfile.TemporaryDirectory(prefix="bench_par_") as tmp:
        summary = gan.trainer.train(cfg, tmp, hook=clock)
        if summary["status"] != "completed":
            raise RuntimeError(f"train.parallel_seeds={k}: status {summary['status']}")
        dirs = [Path(tmp) / f"seed_{seed + i}" for i in range(k)] if k > 1 else [Path(tmp)]
        finals = [json.loads((d / SUMMARY).read_text())["final"] for d in dirs]
    return clock.between_first_two().wall, finals


def run_parallel(overrides, k: int) -> tuple[float, list[dict]]:
    """Seconds in the loop and each copy's final metrics, for ``train.parallel_seeds=k``."""
    return run_job(overrides, 0, k)


def run_sequential(overrides, k: int) -> tuple[float, list[dict]]:
    """Seconds in the loops of ``k`` single runs with seeds 0..k-1, summed, and their final metrics."""
    seconds, finals = 0.0, []
    for seed in range(k):
        loop, rows = run_job(overrides, seed, 1)
        seconds += loop
        finals += rows
    return seconds, finals


def run_once(overrides, k: int) -> tuple[float, list[dict]]:
    """``k`` times the seconds in the loop of the single run with seed 0, and its final metrics."""
    seconds, finals = run_job(overrides, 0, 1)
    return k * seconds, finals


def max_rel_difference(a: list[dict], b: list[dict]) -> float:
    """Largest ``|x - y| / |y|`` over every metric of every pair of final rows (0 where both are 0)."""
    worst = 0.0
    for row_a, row_b in zip(a, b, strict=True):
        for key, y in row_b.items():
            x = row_a[key]
            if x != y:
                worst = max(worst, abs(x - y) / abs(y) if y else math.inf)
    return worst


def _timed(run, overrides, k: int, finals: dict, name: str) -> float:
    seconds, rows = run(overrides, k)
    finals.setdefault(name, rows)  # the first repetition's, for the agreement check
    return seconds


@dataclass
class Result:
    k: int
    steps: int
    parallel_s: list[float]
    sequential_s: list[float]
    max_rel_diff: float
    in_turn: str = "all"  # "all": K runs timed in turn; "once": K times seed 0's run

    def throughput(self, seconds: list[float]) -> float:
        return self.k * self.steps / statistics.median(seconds)


def bench(
    ks, *, steps: int, reps: int, quick: bool, log, base=(), device: str = "cpu", in_turn: str = "all"
) -> list[Result]:
    """For each K: ``train.parallel_seeds=K`` against the K runs in turn (``in_turn="all"``) or K times
    one run (``"once"``), on ``base`` overrides of the default config and ``device``."""
    if in_turn not in ("all", "once"):
        raise ValueError(f"in_turn={in_turn!r}: must be 'all' or 'once'")
    overrides = [*base, f"device={device}", f"train.steps={steps}", f"eval.every={steps + 1}", *EVAL_AT_ENDS]
    if device != "cpu":
        overrides.append("eval.batch_size=64")  # evaluated per copy, twice per run
    if quick:
        overrides += [*QUICK_MODEL, "eval.batch_size=32"]
    sequential = run_sequential if in_turn == "all" else run_once
    run_sequential(overrides, 1)  # warm-up: imports, first-call allocations
    results = []
    for k in ks:
        finals: dict[str, list[dict]] = {}
        sides = {
            name: functools.partial(_timed, fn, overrides, k, finals, name)
            for name, fn in (("parallel", run_parallel), ("sequential", sequential))
        }
        times = interleaved(sides, reps=reps, warmup=0)
        compared = len(finals["sequential"])
        result = Result(
            k,
            steps,
            times["parallel"],
            times["sequential"],
            max_rel_difference(finals["parallel"][:compared], finals["sequential"]),
            in_turn,
        )
        speedup = median_ratio(result.sequential_s, result.parallel_s)[0]
        log(f"  K={k}: speed-up {speedup:.2f}, max rel. difference {result.max_rel_diff:.1e}")
        results.append(result)
    return results


def table(results: list[Result]) -> str:
    rows = []
    for r in results:
        med, lo, hi = median_ratio(r.sequential_s, r.parallel_s)
        rows.append(
            [
                r.k,
                f"{r.steps} × {len(r.parallel_s)}",
                f"{r.throughput(r.sequential_s):.1f}",
                f"{r.throughput(r.parallel_s):.1f}",
                f"{r.steps / statistics.median(r.parallel_s):.1f}",
                f"**{med:.2f}** ({lo:.2f}–{hi:.2f})",
                f"{r.max_rel_diff:.1e}",
            ]
        )
    in_turn = "K runs in turn" if all(r.in_turn == "all" for r in results) else "K × one run"
    headers = [
        "K",
        "steps per copy × reps",
        f"{in_turn}: copy-steps/s",
        "K copies batched: copy-steps/s",
        "batched: steps/s per copy",
        "speed-up, median (min–max)",
        "max rel. difference of final metrics",
    ]
    return markdown_table(headers, rows)


def describe(steps: int, quick: bool) -> str:
    cfg = compose_train(QUICK_MODEL if quick else ())
    g, c, o = cfg.model.generator, cfg.model.critic, cfg.objective
    return (
        f"{cfg.data._target_.rsplit('.', 1)[-1]}, {o._target_.rsplit('.', 1)[-1]} ({o.critic_steps} critic "
        f"steps), MLP generator {g.depth}×{g.width}, critic {c.depth}×{c.width}, "
        f"batch {cfg.train.batch_size}, {steps} steps per copy"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny models, K = 1, 2, 3 steps, one repetition")
    parser.add_argument("--ks", type=int, nargs="+", help="numbers of copies (default 1 4 16; quick 1 2)")
    parser.add_argument("--steps", type=int, help="generator steps per copy (default 40; quick 3)")
    parser.add_argument("--reps", type=int, help="repetitions per side (default 3; quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--out", type=Path, help=f"page to write the section into (default {DEFAULT_OUT}; none with --quick)"
    )
    args = parser.parse_args(argv)
    ks = args.ks or ([1, 2] if args.quick else [1, 4, 16])
    steps = args.steps or (3 if args.quick else 40)
    reps = args.reps or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    log(f"K = {ks}: batched copies against runs in turn")
    results = bench(ks, steps=steps, reps=reps, quick=args.quick, log=log)
    info = [[key, value] for key, value in machine_info().items()]
    info += [
        ["date", date],
        ["command", f"`{shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])}`"],
        ["config", describe(steps, args.quick)],
        ["benchmark wall time", f"{(time.perf_counter() - started) / 60:.1f} min"],
        ["load average (1 min) at start / end", f"{load_start:.1f} / {os.getloadavg()[0]:.1f}"],
    ]
    report = f"""## Many seeds in one process: `train.parallel_seeds`

Written by `{shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])}`, which rewrites
this section. {SECTION_INTRO}

{markdown_table(["", ""], info)}

{table(results)}
"""
    out = args.out if args.out is not None or args.quick else DEFAULT_OUT
    if out is None:
        print(report)
    else:
        write_section(Path(out), "scripts.bench_parallel", report)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
