"""Checkpoints and resuming: what a run needs to continue exactly where it stopped."""

from __future__ import annotations

import contextlib
import json
import pickle
import signal
import threading
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gan.config import ConfigError, flatten
from gan.runfolder import CHECKPOINT, METRICS, RUN_FILES, atomic_torch_save, atomic_write_bytes

# Keys that may change between a run and its resumption: budgets and presentation, nothing that
# changes the numbers computed up to the checkpoint.
RESUMABLE_KEYS = {"resume", "train.steps", "train.checkpoint_every", "train.progress", "train.on_nan"}


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def save(run_dir: Path, *, step, cfg, elapsed, eval_s, metrics_rows, **parts):
    """Everything needed to continue: ``parts`` (the task's state: networks' and optimisers' state
    dicts, its random generators' states), the step, torch's global random state, the time spent so far
    and the number of evaluation lines written before ``step``."""
    state = {"step": step, **parts}
    state |= {
        "torch_rng": torch.get_rng_state(),
        "elapsed": elapsed,
        "eval_s": eval_s,
        "metrics_rows": metrics_rows,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    atomic_torch_save(checkpoint_path(run_dir), state)


TRAIN_CHECKPOINT = (
    "experiments.train",
    lambda state: {"step", "generator", "opt_g", "train_rng", "config"} <= set(state),
)


def load(path: Path, owner=TRAIN_CHECKPOINT) -> dict:
    """Load a checkpoint with ``weights_only=True``; one-line :class:`ConfigError` when unreadable or not
    written by ``owner``, a pair (entry point's name, predicate on the loaded dict)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {path} cannot be read (truncated or corrupt?): {reason}") from None
    name, is_ours = owner
    if not isinstance(state, dict) or not is_ours(state):
        raise ConfigError(f"checkpoint {path} is not a checkpoint of {name}")
    return state


# Keys added to the config after runs were first stored, with the value that reproduces what a run
# stored without them did: such a run still resumes when the key has that value.
ADDED_KEYS = {"eval.draws": 1, "eval.inception_weights": None, "train.parallel_seeds": 1}


def config_differences(stored: dict, cfg: DictConfig) -> list[str]:
    """Dotted keys whose values differ between a stored config and ``cfg``, budget keys excepted."""
    now = flatten(OmegaConf.to_container(cfg, resolve=True))
    before = {k: v for k, v in ADDED_KEYS.items() if k in now} | flatten(stored)
    return sorted(
        k for k in now.keys() | before.keys() if k not in RESUMABLE_KEYS and now.get(k) != before.get(k)
    )


def prepare_run_dir(run_dir: Path, cfg: DictConfig, owner=TRAIN_CHECKPOINT) -> dict | None:
    """Check the run folder before training; returns the checkpoint to resume from, or ``None``.

    * ``resume=false`` and the folder already holds a run: refuse (never mix two runs in one folder).
    * ``resume=true`` with a checkpoint: load it and check the config matches the stored one.
    * ``resume=true`` without a checkpoint: start fresh (a requeued job that never reached one).
    """
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not cfg.resume:
        if existing:
            raise ConfigError(
                f"{run_dir} already holds a run ({', '.join(existing)}); "
                "pass resume=true to continue it, or choose another hydra.run.dir"
            )
        return None
    path = checkpoint_path(run_dir)
    if not path.exists():
        (run_dir / METRICS).unlink(missing_ok=True)  # lines written before any checkpoint are redone
        return None
    state = load(path, owner)
    diff = config_differences(state["config"], cfg)
    if diff:
        raise ConfigError(
            f"cannot resume {run_dir}: the config differs from the stored run in: {', '.join(diff)}"
        )
    return state


@contextlib.contextmanager
def fitting(what: str):
    """Turn a failure to load a state into one line: the checkpoint does not fit ``what``."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"checkpoint does not fit {what}: {first}") from None


def truncate_metrics(path: Path, before_step: int) -> int:
    """Keep the evaluation lines with ``step < before_step`` (a killed run may have written more, or
    half a line); returns how many lines are kept."""
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by a kill, and nothing after it is trusted
        if row.get("step", before_step) >= before_step:
            break
        kept.append(line)
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
    return len(kept)


class StopRequests:
    """Turns SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 into a flag the loop reads between steps, so the run
    stops on a step boundary with a checkpoint. A second Ctrl-C interrupts at once.

    After the run has saved, :meth:`forward` hands the signal to the handler that was installed before
    (for example submitit's, which requeues the job on SLURM pre-emption), or exits with 128 + signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def forward(self) -> None:
        if self.signum is None:
            return
        previous = self._previous.get(self.signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.signum, None)  # submitit's: requeues (and exits) on its pre-emption signal
            return
        raise SystemExit(128 + self.signum)
