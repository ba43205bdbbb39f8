"""The run loop, written once. Read it top to bottom: resume, then one loop over steps, then the end.

A *task* (:class:`Task`) says what one update is, what an evaluation measures and what a checkpoint
holds; GAN training (:mod:`gan.trainer`) and the known-truth critic bench (:mod:`gan.critic_bench`) are
tasks. A task trains K ≥ 1 copies in step (``train.parallel_seeds``), each with its own run folder
(:class:`gan.runlog.Run`); a single run is K = 1.

At step ``s`` (the state after ``s`` updates), in this order:
  1. a stop was requested (Ctrl-C, SIGTERM, SLURM pre-emption): save a checkpoint and stop;
  2. every ``train.checkpoint_every`` steps: save each copy's ``checkpoints/last.pt``;
  3. every ``eval.every`` steps and at the last step: evaluate each copy on fresh batches, append a
     line to its ``metrics.jsonl``, log to TensorBoard; at the other multiples of ``eval.curve_every``,
     only the per-batch metrics that cost milliseconds (``curves.jsonl`` and TensorBoard);
  4. one update of every copy, its losses logged (and checked) every ``train.log_every`` steps.

A copy whose losses, parameters or metrics become NaN or infinite is recorded as ``diverged`` and
drops out; the others go on. A resumed run starts at the checkpoint's step with every state restored
and redoes that step's evaluation, so it writes the same lines as an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from gan import checkpoint, runfolder
from gan.config import ConfigError
from gan.runlog import Run, is_finite_row, job_summary
from metrics.ot import OT_CAPPED, OT_NONOPTIMAL

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """A loss, a parameter or a metric became NaN or infinite at ``step``."""

    def __init__(self, step: int, what: str):
        super().__init__(f"non-finite {what} at step {step}")
        self.step = step


class Task(Protocol):
    """What the loop needs from a kind of run. Copies are numbered ``k = 0, ..., K - 1`` as in ``runs``."""

    runs: list[Run]  # the copies this job trains
    owner: tuple  # whose checkpoints these are: (entry point, predicate on a loaded checkpoint)

    def update(self) -> dict[str, torch.Tensor]:
        """One step of every copy; the losses, each of shape (K,) (``"loss"`` is not logged)."""

    def finite(self) -> list[bool]:
        """Per copy: every parameter is finite."""

    def evaluate(self, k: int, step: int) -> dict:
        """Copy ``k``'s metrics at ``step`` (without ``step``)."""

    def curve(self, k: int, step: int) -> dict:
        """Copy ``k``'s cheap per-batch metrics at ``step`` (:data:`gan.runlog.CURVE_KEYS`)."""

    def figures(self, k: int, step: int, writer) -> None:
        """Copy ``k``'s figures for TensorBoard at ``step``."""

    def state(self, k: int) -> dict:
        """What copy ``k``'s checkpoint holds besides the loop's own keys."""

    def restore(self, states: list[dict]) -> None:
        """Every copy's state from its checkpoint (a :meth:`state` as loaded)."""


# An optional observer of the loop's phases, called as ``hook(event, step)`` with event one of
# "eval_start", "eval_end", "curve_start", "curve_end" (the benchmarks time the updates with it).
Hook = Callable[[str, int], None]


def resume(task: Task, cfg: DictConfig) -> int:
    """Check every copy's folder and restore the copies from their checkpoints; returns the first step.

    Raises :class:`ConfigError` before anything is written when a folder already holds a run (and
    ``resume`` is false), a checkpoint does not fit, or the copies' checkpoints are at different steps.
    """
    states = [checkpoint.prepare_run_dir(run.dir, run.cfg, task.owner) for run in task.runs]
    at = {run.dir.name: (state or {"step": 0})["step"] for run, state in zip(task.runs, states, strict=True)}
    if len(set(at.values())) > 1:
        raise ConfigError(f"cannot resume: the copies' checkpoints are at different steps ({at})")
    start = next(iter(at.values()))
    if start:
        task.restore(states)
        for run, state in zip(task.runs, states, strict=True):
            run.elapsed_before, run.eval_before = state["elapsed"], state["eval_s"]
            rows = checkpoint.truncate_metrics(run.dir / runfolder.METRICS, before_step=start)
            curves = checkpoint.truncate_metrics(run.dir / runfolder.CURVES, before_step=start)
            run.rows_written = len(rows)
            counted = curves if (run.dir / runfolder.CURVES).exists() else rows  # curves: every solve
            run.nonoptimal = sum(row.get(OT_NONOPTIMAL, 0) for row in counted) + state.get(OT_CAPPED, 0)
            run.capped = state.get(OT_CAPPED, 0)
        log.info("resuming at step %d (%d evaluation lines kept)", start, task.runs[0].rows_written)
    for run in task.runs:
        run.eval_s, run.steps_done = run.eval_before, start
    return start


def run_loop(
    task: Task,
    cfg: DictConfig,
    *,
    job_dir: Path | None = None,
    copy_dirs: list[Path] = (),
    hook: Hook | None = None,
) -> dict:
    """Run ``task`` to ``cfg.train.steps`` as the module docstring says; returns the summary.

    The summary is the run's ``summary.json`` for one copy. For a job of several, each copy's folder
    gets its own and ``job_dir/summary.json`` describes the whole job (:func:`gan.runlog.job_summary`
    over ``copy_dirs``, which may include copies that diverged in an earlier part of the job).

    Every folder it writes is locked for this process (:func:`gan.runfolder.owned`) from before the
    resume checks to the end.
    """
    folders = [run.dir for run in task.runs] + ([job_dir] if job_dir is not None else [])
    with runfolder.owned(*folders):
        return _run_loop(task, cfg, job_dir, copy_dirs, hook)


def _run_loop(task: Task, cfg: DictConfig, job_dir, copy_dirs, hook) -> dict:
    started = time.perf_counter()
    runs, steps = task.runs, cfg.train.steps
    # The schedule as plain ints, read once: a DictConfig lookup costs tens of microseconds per step.
    checkpoint_every, log_every = cfg.train.checkpoint_every, cfg.train.log_every
    eval_every, curve_every = cfg.eval.every, cfg.eval.curve_every
    start = resume(task, cfg)
    hook = hook or (lambda event, step: None)

    def elapsed(run: Run) -> float:
        """The run's own evaluation time plus its share of the copies' common updates."""
        own = [r.eval_s - r.eval_before for r in runs]
        shared = time.perf_counter() - started - sum(own)
        return run.elapsed_before + shared / len(runs) + run.eval_s - run.eval_before

    def save(at_step: int) -> None:
        for k, run in enumerate(runs):
            if run.running:
                checkpoint.save(
                    run.dir, step=at_step, cfg=run.cfg, elapsed=elapsed(run), eval_s=run.eval_s,
                    metrics_rows=run.rows_written, **{OT_CAPPED: run.capped}, **task.state(k),
                )  # fmt: skip

    def diverge(run: Run, exc: Diverged) -> None:
        run.status, run.steps_done, run.error = "diverged", exc.step, str(exc)
        log.error("%s diverged: %s", run.dir.name, exc)
        if cfg.train.on_nan == "raise":
            raise exc

    for run in runs:
        run.open(purge_step=start if start else None)
    outcome, step, error = "failed", start, None
    bar = tqdm(
        total=steps, initial=start, desc="train" if len(runs) == 1 else f"train x{len(runs)}", unit="step",
        disable=not cfg.train.progress, mininterval=1,
    )  # fmt: skip
    stop = checkpoint.StopRequests()
    try:
        with stop:
            for step in range(start, steps + 1):
                if stop.requested:
                    outcome = "interrupted"
                    break
                if step % checkpoint_every == 0 and step > start:
                    save(step)

                evaluation = step % eval_every == 0 or step == steps
                if evaluation or (curve_every and step % curve_every == 0):
                    hook("eval_start" if evaluation else "curve_start", step)
                    for k, run in enumerate(runs):
                        if run.running:
                            t0 = time.perf_counter()
                            row = {"step": step} | (task.evaluate if evaluation else task.curve)(k, step)
                            if not is_finite_row(row):
                                diverge(run, Diverged(step, f"metric: {row}"))
                            elif evaluation:
                                run.record(row)
                                task.figures(k, step, run.writer)
                            else:
                                run.record_curve(row)
                            run.eval_s += time.perf_counter() - t0
                    hook("eval_end" if evaluation else "curve_end", step)
                    shown = runs[0].final
                    bar.set_postfix(
                        {k: f"{shown[k]:.3f}" for k in ("w1_exact", "critic_estimate") if k in shown}
                    )
                if step == steps:
                    outcome = "completed"
                    break
                if not any(run.running for run in runs):
                    break

                losses = task.update()
                bar.update(1)
                if OT_CAPPED in losses:  # objective=exact_ot: did each copy's exact solve stop early?
                    for run, capped in zip(runs, losses[OT_CAPPED].tolist(), strict=True):
                        run.count_capped(capped, step + 1)

                if (step + 1) % log_every == 0:
                    values = {key: v.tolist() for key, v in losses.items() if key != "loss"}
                    finite = task.finite()
                    for k, run in enumerate(runs):
                        mine = {key: v[k] for key, v in values.items()}
                        if run.running and not (is_finite_row(mine) and finite[k]):
                            diverge(run, Diverged(step + 1, f"loss or parameter: {mine}"))
                        elif run.running:
                            run.log_losses(mine, step + 1)
    except Diverged as exc:  # train.on_nan=raise
        outcome, error = "failed", f"stopped: a run diverged and train.on_nan=raise ({exc})"
        raise
    except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the last periodic checkpoint stays
        outcome, error = "interrupted", "KeyboardInterrupt"
    except BaseException as exc:
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        bar.close()
        saved = outcome == "completed" or (outcome == "interrupted" and error is None)
        if saved:
            save(step)
        summaries = []
        for run in runs:
            run.end(outcome, step, error)
            summaries.append(run.close(elapsed(run)))
            log.info(
                "%s: %s after %d steps in %.1fs (evaluation %.1fs); %s",
                run.dir.name, run.status, run.steps_done, summaries[-1]["elapsed_s"], run.eval_s,
                "checkpoint saved" if saved and run.status == outcome else "no new checkpoint",
            )  # fmt: skip
        summary = summaries[0]
        if job_dir is not None:
            summary = job_summary(list(copy_dirs), steps_done=step)
            runfolder.atomic_write_json(job_dir / runfolder.SUMMARY, summary)
            log.info(
                "job %s after %d steps: %s", summary["status"], step,
                ", ".join(f"{name} {status}" for name, status in summary["runs"].items()),
            )  # fmt: skip
    if error == "KeyboardInterrupt":
        raise SystemExit(130)
    stop.forward()  # after an interrupt: hand the signal on (submitit requeues) or exit with 128 + signal
    return summary
