"""Checkpoints and resuming: what a run needs to continue exactly where it stopped."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
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


def load(path: Path, owner=TRAIN_CHECKPOINT, *, steps: int | None = None) -> dict:
    """Load a checkpoint with ``weights_only=True``; one-line :class:`ConfigError` when it cannot be read,
    is not written by ``owner`` (a pair: entry point's name, predicate on the loaded dict), holds
    values of other types than a run saves (:func:`check_state`), or is at a step beyond ``steps``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any bytes: torch, zipfile and the unpickler raise a dozen different errors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"checkpoint {path} cannot be read (truncated or corrupt?): {reason}") from None
    name, is_ours = owner
    if not isinstance(state, dict) or not is_ours(state):
        raise ConfigError(f"checkpoint {path} is not a checkpoint of {name}")
    problem = check_state(state)
    if problem:
        raise ConfigError(f"checkpoint {path} is damaged: {problem}")
    if steps is not None and state["step"] > steps:
        raise ConfigError(f"checkpoint {path} is at step {state['step']}, beyond train.steps={steps}")
    return state


def _is_state(value) -> bool:
    """A value of a state dict: tensors, numbers, strings, None, and lists, tuples or dicts of them."""
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _is_state(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_is_state(v) for v in value)
    return value is None or isinstance(value, torch.Tensor | int | float | str | bool)


def _is_rng_state(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def check_state(state: dict) -> str | None:
    """What is wrong with a loaded checkpoint's types and values, or ``None``."""
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"step={step!r}, not an integer >= 0"
    for key in ("elapsed", "eval_s", "metrics_rows"):
        value = state.get(key, 0)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < float("inf"):
            return f"{key}={value!r}, not a number >= 0"
    if not isinstance(state.get("config"), dict):
        return "no config"
    for key in ("torch_rng", "train_rng"):
        if key in state and not _is_rng_state(state[key]):
            return f"{key} is not a random-generator state"
    for key in ("generator", "critic"):  # module state dicts
        value = state.get(key)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())
        ):
            return f"{key} is not a module's state"
    for key in ("opt_g", "opt_c"):  # optimiser state dicts
        value = state.get(key)
        if value is not None and not (
            isinstance(value, dict)
            and isinstance(value.get("state"), dict)
            and isinstance(value.get("param_groups"), list)
            and value["param_groups"]
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in value["param_groups"])
        ):
            return f"{key} is not an optimiser's state"
    bad = [key for key, value in state.items() if not _is_state(value)]
    return f"unexpected values in {', '.join(bad)}" if bad else None


# Keys added to the config after runs were first stored, with the value that reproduces what a run
# stored without them did: such a run still resumes when the key has that value.
ADDED_KEYS = {
    "eval.draws": 1, "eval.inception_weights": None, "train.parallel_seeds": 1, "eval.curve_every": 0,
}  # fmt: skip


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
    state = load(path, owner, steps=cfg.train.steps)
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
    except Exception as exc:  # whatever a damaged state dict makes load_state_dict raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"checkpoint does not fit {what}: {first}") from None


def truncate_metrics(path: Path, before_step: int) -> list[dict]:
    """Keep the evaluation lines with ``step < before_step``; returns them.

    A run killed while writing leaves half a last line, which is dropped; a line that cannot be read
    anywhere else means the file was damaged, and raises a one-line :class:`ConfigError`.
    """
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # cut by a kill
            more = len(lines) - number
            raise ConfigError(f"{path} line {number} is not valid JSON, and {more} line(s) follow") from None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int):
            raise ConfigError(f"{path} line {number} is not an evaluation (no integer step)")
        if step >= before_step:
            break
        kept.append((line, row))
    atomic_write_bytes(path, "".join(line + "\n" for line, _ in kept).encode())
    return [row for _, row in kept]


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
